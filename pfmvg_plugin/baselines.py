"""Image-blind baselines for grounding: what a model must beat to show it looks at the image.

- ``mean_box``: the mean training box (in coordinates normalised by image size), the same for every query.
- ``category_prior``: the mean box of the query's category.
- ``phrase_prior``: the mean box of training queries with the same category, side and zone words in the phrase,
  backing off to category, then to the global mean. This reads the phrase but never the image.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Sequence

import numpy as np

from pfmvg_plugin.geometry import Box

_SIDE = re.compile(r"\b(left|right|bilateral)\b", re.IGNORECASE)
_ZONE = re.compile(r"\b(upper|middle|mid|lower|apical|apex|basal|base)\b", re.IGNORECASE)
_ZONE_ALIASES = {"mid": "middle", "apex": "apical", "basal": "lower", "base": "lower"}

BASELINES = ("mean_box", "category_prior", "phrase_prior")


def phrase_keys(phrase: str) -> tuple[str | None, str | None]:
    """(side, zone) words of a phrase, lower-cased, or None when absent."""
    side = _SIDE.search(phrase)
    zone = _ZONE.search(phrase)
    z = zone.group(1).lower() if zone else None
    return (side.group(1).lower() if side else None, _ZONE_ALIASES.get(z, z))


def _normalised(rec: dict) -> np.ndarray:
    w, h = rec["width"], rec["height"]
    return np.array([[b[0] / w, b[1] / h, b[2] / w, b[3] / h] for b in rec["boxes"]], dtype=np.float64)


class PriorBaseline:
    """Mean normalised boxes per key level, fitted on training records."""

    def __init__(self, kind: str = "phrase_prior") -> None:
        if kind not in BASELINES:
            raise ValueError(f"unknown baseline {kind!r}; choose one of {BASELINES}")
        self.kind = kind
        self._means: dict[tuple, np.ndarray] = {}

    def _keys(self, rec: dict) -> list[tuple]:
        """Most to least specific keys for a record."""
        if self.kind == "mean_box":
            return [()]
        cat = rec.get("category")
        if self.kind == "category_prior":
            return [(cat,), ()]
        side, zone = phrase_keys(rec["phrase"])
        return [(cat, side, zone), (cat, side), (cat,), ()]

    def fit(self, records: Iterable[dict]) -> PriorBaseline:
        sums: dict[tuple, list] = defaultdict(list)
        for rec in records:
            boxes = _normalised(rec)
            for key in self._keys(rec):
                sums[key].append(boxes)
        if () not in sums:
            raise ValueError("cannot fit a baseline on zero training records")
        self._means = {k: np.concatenate(v).mean(axis=0) for k, v in sums.items()}
        return self

    def predict(self, rec: dict) -> Box:
        """The baseline's box for a query, in pixels of the record's image."""
        for key in self._keys(rec):
            if key in self._means:
                x1, y1, x2, y2 = self._means[key]
                w, h = rec["width"], rec["height"]
                return (float(x1 * w), float(y1 * h), float(x2 * w), float(y2 * h))
        raise RuntimeError("baseline used before fit()")

    def predict_all(self, records: Sequence[dict]) -> list[Box]:
        return [self.predict(r) for r in records]
