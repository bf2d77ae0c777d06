"""Fusing duplicate boxes drawn by several readers (radiologists) for one finding on one image.

``wbf`` is weighted-boxes-fusion style with equal weights: boxes are visited in a canonical order (sorted by
coordinates, then rater), each joins the cluster whose current fused box it overlaps most with IoU >= threshold (or
starts a new cluster), and a cluster's fused box is the mean of its members' coordinates. The canonical order makes
the result independent of the input order. ``none`` keeps every box as it is.

Support of a fused box is the number of distinct raters in its cluster; a box without a rater id counts as one rater
of its own.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from pfmvg_plugin.geometry import Box, box_iou

FUSION_METHODS = ("wbf", "none")
_EPS = 1e-9  # IoU equal to the threshold up to float rounding counts as a match


@dataclass(frozen=True)
class FusedBox:
    """A fused box, the raters who drew its members and how many raw boxes it merges."""

    box: Box
    raters: tuple[str, ...]
    n_boxes: int
    support: int


def _support(raters: Sequence[str | None]) -> int:
    named = {r for r in raters if r is not None}
    return len(named) + sum(1 for r in raters if r is None)


def _mean_box(members: list[tuple[Box, str | None]]) -> Box:
    n = len(members)
    # fsum is exactly rounded, so the mean does not depend on the order of the members
    return tuple(math.fsum(m[0][k] for m in members) / n for k in range(4))  # type: ignore[return-value]


def _fused(members: list[tuple[Box, str | None]]) -> FusedBox:
    raters = [r for _, r in members]
    return FusedBox(
        box=_mean_box(members),
        raters=tuple(sorted({r for r in raters if r is not None})),
        n_boxes=len(members),
        support=_support(raters),
    )


def fuse_boxes(
    boxes: Sequence[Sequence[float]],
    raters: Sequence[str | None] | None = None,
    *,
    method: str = "wbf",
    iou_threshold: float = 0.4,
) -> list[FusedBox]:
    """Fuse the boxes of one (image, finding) drawn by several raters; results sorted by coordinates.

    ``raters[i]`` names who drew ``boxes[i]`` (``None`` or omitted: unknown). ``method`` is ``"wbf"`` (cluster
    greedily by IoU >= ``iou_threshold`` against each cluster's running mean, average each cluster) or ``"none"``
    (every box kept, support 1).
    """
    if method not in FUSION_METHODS:
        raise ValueError(f"unknown box fusion method {method!r}; expected one of {', '.join(FUSION_METHODS)}")
    if not 0.0 < iou_threshold <= 1.0:
        raise ValueError(f"IoU threshold must be in (0, 1], got {iou_threshold!r}")
    if raters is None:
        raters = [None] * len(boxes)
    if len(raters) != len(boxes):
        raise ValueError(f"got {len(boxes)} boxes but {len(raters)} rater ids")
    items: list[tuple[Box, str | None]] = []
    for box, rater in zip(boxes, raters, strict=True):
        if len(box) != 4:
            raise ValueError(f"a box needs four coordinates x1, y1, x2, y2, got {list(box)!r}")
        items.append((tuple(float(v) for v in box), rater))  # type: ignore[arg-type]
    items.sort(key=lambda it: (it[0], it[1] is None, it[1] or ""))

    if method == "none":
        return [_fused([it]) for it in items]

    clusters: list[list[tuple[Box, str | None]]] = []
    means: list[Box] = []
    for it in items:
        best, best_iou = -1, -1.0
        for k, mean in enumerate(means):
            v = box_iou(it[0], mean)
            if v >= iou_threshold - _EPS and v > best_iou:
                best, best_iou = k, v
        if best < 0:
            clusters.append([it])
            means.append(it[0])
        else:
            clusters[best].append(it)
            means[best] = _mean_box(clusters[best])
    return sorted((_fused(c) for c in clusters), key=lambda f: (f.box, f.raters))
