"""Raster helpers for synthcxr: windows of a normalised coordinate grid, soft shapes, boxes from alpha masks."""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

from pfmvg_plugin.data.synth.vocab import _BOX_THRESHOLD, _ZONE_MARGIN, ZONES

Window = tuple[slice, slice]
"""Rows and columns of a rectangular part of the image; shapes are only computed inside their window."""


@lru_cache(maxsize=8)
def coordinate_grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates ``(X, Y)`` in [0, 1], float32, shape ``(size, size)``; computed once per size."""
    c = (np.arange(size, dtype=np.float32) + 0.5) / size
    xs, ys = np.meshgrid(c, c)
    xs.setflags(write=False)
    ys.setflags(write=False)
    return xs, ys


def window(size: int, x0: float, y0: float, x1: float, y1: float) -> Window:
    """The pixels covering the normalised rectangle ``[x0, x1] x [y0, y1]``, clipped to the image, never empty."""
    c0 = min(max(int(math.floor(x0 * size)), 0), size - 1)
    r0 = min(max(int(math.floor(y0 * size)), 0), size - 1)
    c1 = max(min(int(math.ceil(x1 * size)), size), c0 + 1)
    r1 = max(min(int(math.ceil(y1 * size)), size), r0 + 1)
    return slice(r0, r1), slice(c0, c1)


def grid_in(size: int, win: Window) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = coordinate_grid(size)
    return xs[win], ys[win]


def paste(size: int, win: Window, part: np.ndarray) -> np.ndarray:
    """A full-size float32 mask that is ``part`` inside ``win`` and 0 elsewhere."""
    full = np.zeros((size, size), dtype=np.float32)
    full[win] = part
    return full


def inside(f: np.ndarray, edge: float) -> np.ndarray:
    """Soft indicator of ``f < 0`` with a linear edge ``edge`` wide (1 inside, 0 outside)."""
    out = f * (-1.0 / edge)
    out += 0.5
    return np.clip(out, 0.0, 1.0, out=out)


def blend(img: np.ndarray, value, alpha: np.ndarray) -> np.ndarray:
    return img + alpha * (value - img)


def mask_box(alpha: np.ndarray, threshold: float = _BOX_THRESHOLD, win: Window | None = None) -> list[float] | None:
    """Pixel box ``[x1, y1, x2, y2]`` (exclusive right/bottom) of ``alpha >= threshold``; None when empty.

    ``alpha`` may be the part of an image inside ``win``; the box is then in whole-image pixels.
    """
    hit = alpha >= threshold
    cols, rows = np.flatnonzero(hit.any(axis=0)), np.flatnonzero(hit.any(axis=1))
    if cols.size == 0:
        return None
    dr, dc = (win[0].start, win[1].start) if win is not None else (0, 0)
    return [float(cols[0] + dc), float(rows[0] + dr), float(cols[-1] + 1 + dc), float(rows[-1] + 1 + dr)]


def zone_of(y: float, lung_box: list[float]) -> str:
    """Upper/middle/lower third of the lung's height that the pixel row ``y`` falls in."""
    frac = (y - lung_box[1]) / (lung_box[3] - lung_box[1])
    return ZONES[min(2, max(0, int(frac * 3)))]


def zone_ok(y: float, lung_box: list[float], zone: str | None = None) -> bool:
    """``y`` lies in ``zone`` (if given), inside the lung's height and away from the borders between zones."""
    frac = (y - lung_box[1]) / (lung_box[3] - lung_box[1])
    if not 0.0 <= frac <= 1.0 or min(abs(frac - 1 / 3), abs(frac - 2 / 3)) < _ZONE_MARGIN:
        return False
    return zone is None or zone_of(y, lung_box) == zone
