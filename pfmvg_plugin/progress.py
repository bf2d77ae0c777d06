"""One progress-bar style for long work (rows converted, images written, samples scored)."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from typing import TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")


def progress(iterable: Iterable[T], desc: str, total: int | None = None, unit: str = "it") -> Iterator[T]:
    """Wrap ``iterable`` in a progress bar on stderr; ``PFMVG_NO_PROGRESS=1`` silences it (tests, CI logs)."""
    disable = os.environ.get("PFMVG_NO_PROGRESS", "") not in ("", "0")
    return iter(tqdm(iterable, desc=desc, total=total, unit=unit, disable=disable, leave=False, dynamic_ncols=True))
