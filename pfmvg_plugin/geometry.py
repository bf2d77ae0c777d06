"""Box geometry on plain tuples: ``(x1, y1, x2, y2)`` in absolute pixels, top-left origin, continuous coordinates.

A box covers ``[x1, x2) x [y1, y2)``; its area is ``(x2 - x1) * (y2 - y1)``. The legacy MiniGPT-v2 convention
(inclusive pixel indices, ``+1`` on widths) is available where metrics need it, nowhere else.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

Box = tuple[float, float, float, float]
"""An axis-aligned box ``(x1, y1, x2, y2)`` in absolute pixels."""

Size = tuple[int, int]
"""An image size ``(width, height)`` in pixels."""


def xywh_to_xyxy(x: float, y: float, w: float, h: float) -> Box:
    """Convert a top-left + width/height box (COCO, MS-CXR, ChestX-ray8, RSNA) to corners."""
    return (float(x), float(y), float(x) + float(w), float(y) + float(h))


def xyxy_to_xywh(box: Sequence[float]) -> tuple[float, float, float, float]:
    x1, y1, x2, y2 = box
    return (x1, y1, x2 - x1, y2 - y1)


def is_finite(box: Sequence[float]) -> bool:
    return all(math.isfinite(v) for v in box)


def order_corners(box: Sequence[float]) -> Box:
    """Swap corners so that ``x1 <= x2`` and ``y1 <= y2`` (models sometimes emit them reversed)."""
    x1, y1, x2, y2 = box
    return (min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2))


def clip_box(box: Sequence[float], size: Size) -> Box:
    """Clip a box to the image ``[0, W] x [0, H]``."""
    w, h = size
    x1, y1, x2, y2 = box
    return (min(max(x1, 0.0), w), min(max(y1, 0.0), h), min(max(x2, 0.0), w), min(max(y2, 0.0), h))


def box_area(box: Sequence[float], plus_one: bool = False) -> float:
    """Area of a box; ``plus_one`` uses the legacy inclusive-pixel convention ``(x2 - x1 + 1) * (y2 - y1 + 1)``."""
    x1, y1, x2, y2 = box
    extra = 1.0 if plus_one else 0.0
    return max(0.0, x2 - x1 + extra) * max(0.0, y2 - y1 + extra)


def intersection(a: Sequence[float], b: Sequence[float]) -> Box | None:
    """The overlap of two boxes, or ``None`` when they do not overlap with positive area."""
    x1, y1 = max(a[0], b[0]), max(a[1], b[1])
    x2, y2 = min(a[2], b[2]), min(a[3], b[3])
    if x2 <= x1 or y2 <= y1:
        return None
    return (x1, y1, x2, y2)


def intersection_area(a: Sequence[float], b: Sequence[float]) -> float:
    """Area of the overlap of two boxes (0 when they do not overlap)."""
    inter = intersection(a, b)
    return 0.0 if inter is None else box_area(inter)


def from_inclusive(box: Sequence[float]) -> Box:
    """MiniGPT-v2's inclusive-pixel box ``[x1, x2] x [y1, y2]`` as the continuous box it covers."""
    return (box[0], box[1], box[2] + 1.0, box[3] + 1.0)


def box_iou(a: Sequence[float], b: Sequence[float], plus_one: bool = False) -> float:
    """Intersection over union of two boxes (0 when both have zero area).

    ``plus_one`` reproduces MiniGPT-v2's ``computeIoU`` (eval_ref.py): ``+1`` on every width and height of the boxes
    and of their intersection, i.e. corners are inclusive pixel indices. Boxes are expected with ``x1 <= x2`` and
    ``y1 <= y2``; a reversed box has zero area.
    """
    if plus_one:
        a, b = from_inclusive(a), from_inclusive(b)
    inter = intersection_area(a, b)
    union = box_area(a) + box_area(b) - inter
    return inter / union if union > 0 else 0.0


def enclosing_box(boxes: Iterable[Sequence[float]]) -> Box:
    """The smallest box containing all ``boxes`` (raises ``ValueError`` on an empty input)."""
    boxes = list(boxes)
    if not boxes:
        raise ValueError("enclosing_box() needs at least one box")
    return (
        min(b[0] for b in boxes),
        min(b[1] for b in boxes),
        max(b[2] for b in boxes),
        max(b[3] for b in boxes),
    )


def union_area(boxes: Sequence[Sequence[float]]) -> float:
    """Exact area covered by the union of boxes (coordinate compression; fine for the handful per phrase)."""
    boxes = [b for b in boxes if b[2] > b[0] and b[3] > b[1]]
    if not boxes:
        return 0.0
    if len(boxes) == 1:
        return box_area(boxes[0])
    xs = sorted({v for b in boxes for v in (b[0], b[2])})
    total = 0.0
    for left, right in zip(xs, xs[1:]):
        # y-intervals of boxes spanning this x-slab, merged.
        spans = sorted((b[1], b[3]) for b in boxes if b[0] <= left and b[2] >= right)
        covered, cur_lo, cur_hi = 0.0, None, None
        for lo, hi in spans:
            if cur_hi is None or lo > cur_hi:
                if cur_hi is not None:
                    covered += cur_hi - cur_lo
                cur_lo, cur_hi = lo, hi
            else:
                cur_hi = max(cur_hi, hi)
        if cur_hi is not None:
            covered += cur_hi - cur_lo
        total += covered * (right - left)
    return total


def scale_box(box: Sequence[float], sx: float, sy: float) -> Box:
    return (box[0] * sx, box[1] * sy, box[2] * sx, box[3] * sy)


def hflip_box(box: Sequence[float], width: float) -> Box:
    """Mirror a box horizontally (note: this also swaps the patient's left and right)."""
    return (width - box[2], box[1], width - box[0], box[3])
