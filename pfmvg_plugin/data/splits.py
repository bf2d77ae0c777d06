"""Deterministic split assignment for releases without an official split."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from pfmvg_plugin.data.schema import SPLITS


def parse_ratios(text: str) -> tuple[float, float, float]:
    """``"0.7,0.1,0.2"`` -> (train, val, test) fractions summing to 1."""
    try:
        parts = tuple(float(p) for p in text.split(","))
    except ValueError:
        raise ValueError(f"split ratios must be three numbers like 0.7,0.1,0.2, got {text!r}") from None
    if len(parts) != 3 or any(p < 0 for p in parts) or sum(parts) <= 0:
        raise ValueError(f"split ratios must be three non-negative numbers like 0.7,0.1,0.2, got {text!r}")
    total = sum(parts)
    return tuple(p / total for p in parts)


def as_ratios(value: str | Sequence[float]) -> tuple[float, float, float]:
    """(train, val, test) fractions from ``"0.7,0.1,0.2"`` (see :func:`parse_ratios`) or from three numbers.

    Numbers must be non-negative with a positive sum; they are kept as given (:func:`assign_split` needs no sum of 1).
    """
    if isinstance(value, str):
        return parse_ratios(value)
    ratios = tuple(float(r) for r in value)
    if len(ratios) != 3 or any(r < 0 for r in ratios) or sum(ratios) <= 0:
        raise ValueError(f"split ratios must be three non-negative fractions, got {value!r}")
    return ratios  # type: ignore[return-value]  # three, checked above


def ratios_text(ratios: Sequence[float], sep: str = ",") -> str:
    """``0.7,0.1,0.2``: ratios for reports (``sep="/"`` gives ``0.7/0.1/0.2``)."""
    return sep.join(f"{r:g}" for r in ratios)


def assign_split(group_key: str, ratios: Sequence[float] = (0.7, 0.1, 0.2), seed: int = 0) -> str:
    """Split of a group (an image or a patient) from a hash of its key: stable across runs and machines.

    All records sharing ``group_key`` land in the same split, so no image leaks between train and test.
    """
    digest = hashlib.sha1(f"{seed}:{group_key}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64
    acc = 0.0
    for name, r in zip(SPLITS, ratios):
        acc += r
        if u < acc:
            return name
    return SPLITS[-1]
