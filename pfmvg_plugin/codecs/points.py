"""Points, not boxes: Molmo answers "Point to {phrase}" with ``<point x="…" y="…" alt="…">…</point>``.

Several points come as ``<points x1="…" y1="…" x2="…" y2="…" alt="…">…</points>``. Coordinates are percentages
(0-100) of the original width and height (allenai/molmo ``olmo/data/data_formatter.py``). A point carries no extent, so
it is scored as a point (:func:`point_hit`: does it lie in a ground-truth box?), never turned into a box; this is why
:class:`MolmoPointCodec` is not a registered box codec. Like the box codecs, decoding never raises and every pattern is
bounded, so it is linear in the length of the text.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from pfmvg_plugin.codecs.base import CLAMP_TOLERANCE, MAX_BOXES, ParseStatus
from pfmvg_plugin.geometry import Size, order_corners

Point = tuple[float, float]
"""A point ``(x, y)`` in pixels of the original image."""

#: One ``<point …>`` / ``<points …>`` opening tag; its attributes are group 1. ``[^<>]`` stops at the next tag, so
#: the scans of all attempts together stay linear.
_TAG = re.compile(r"<points?(?=[\s>])([^<>]{0,4000})>", re.IGNORECASE)
#: ``x="12.5"``, ``y2='40'`` … inside a tag: axis, index (empty for a single point), value.
_ATTR = re.compile(r"\b([xy])(\d{0,3})\s{0,8}=\s{0,8}[\"']([^\"'<>]{0,64})[\"']", re.IGNORECASE)
_START = re.compile(r"<points?\b", re.IGNORECASE)


@dataclass(frozen=True)
class PointResult:
    """Points read from one model output (pixels of the original image) and how the read went.

    ``status`` reuses :class:`ParseStatus`; ``NO_BOX`` means that nothing point-like was found.
    """

    points: tuple[Point, ...]
    status: ParseStatus
    rejected: tuple[str, ...] = ()
    clamped: int = 0

    @property
    def ok(self) -> bool:
        return self.status is ParseStatus.OK

    @property
    def point(self) -> Point | None:
        """The first valid point, or ``None``."""
        return self.points[0] if self.points else None

    def to_dict(self) -> dict:
        return {
            "points": [list(p) for p in self.points],
            "status": self.status.value,
            "rejected": list(self.rejected),
            "clamped": self.clamped,
        }


class MolmoPointCodec:
    """Molmo's point format: percentages 0-100 of the original width (x) and height (y), one decimal."""

    name = "molmo_point"
    scale = 100.0
    decimals = 1

    def max_error(self, size: Size) -> tuple[float, float]:
        """Largest per-coordinate pixel error of an encode -> decode round trip (x, y)."""
        q = 0.5 * 10.0 ** -self.decimals / self.scale
        return (q * size[0], q * size[1])

    def encode(self, points: Point | Sequence[Point], size: Size, label: str | None = None) -> str:
        """Write one point or several pixel points as Molmo does (``<point>`` for one, ``<points>`` for several)."""
        if points and not isinstance(points[0], (list, tuple)):
            points = [points]  # a single point
        if not points:
            raise ValueError("encode() needs at least one point")
        w, h = size
        coords = []
        for p in points:
            if len(p) != 2 or not all(math.isfinite(float(v)) for v in p):
                raise ValueError(f"not a finite (x, y) point: {p!r}")
            coords.append(tuple(min(max(v / s * self.scale, 0.0), self.scale) for v, s in zip(p, (w, h))))
        text = label or ""
        alt = f' alt="{text}"'
        if len(coords) == 1:
            x, y = coords[0]
            return f'<point x="{x:.{self.decimals}f}" y="{y:.{self.decimals}f}"{alt}>{text}</point>'
        attrs = " ".join(f'x{i}="{x:.{self.decimals}f}" y{i}="{y:.{self.decimals}f}"'
                         for i, (x, y) in enumerate(coords, start=1))
        return f"<points {attrs}{alt}>{text}</points>"

    def decode(self, text: object, size: Size) -> PointResult:
        """Read every point from model output ``text``; never raises on content."""
        if not isinstance(text, str):
            return PointResult((), ParseStatus.NOT_TEXT, (f"output is {type(text).__name__}, not str",))
        points: list[Point] = []
        rejected: list[str] = []
        first_failure: ParseStatus | None = None
        clamped = 0
        seen = 0
        for index, x, y in self._candidates(text):
            seen += 1
            if seen > MAX_BOXES:
                rejected.append(f"more than {MAX_BOXES} points; the rest ignored")
                break
            status, reason, point, was_clamped = self._read_one(index, x, y, size)
            if point is None:
                rejected.append(reason)
                first_failure = first_failure or status
                continue
            points.append(point)
            clamped += int(was_clamped)
        if points:
            status = ParseStatus.OK
        elif seen:
            status = first_failure or ParseStatus.MALFORMED
        elif _START.search(text):
            status = ParseStatus.MALFORMED
            rejected.append("point started but not completed in the expected format")
        else:
            status = ParseStatus.NO_BOX
        return PointResult(tuple(points), status, tuple(rejected), clamped)

    @staticmethod
    def _candidates(text: str) -> Iterator[tuple[str, str | None, str | None]]:
        """(index, x, y) of every point of every tag, x or y ``None`` where one is missing."""
        for tag in _TAG.finditer(text):
            xs: dict[str, str] = {}
            ys: dict[str, str] = {}
            for axis, index, value in _ATTR.findall(tag.group(1)):
                (xs if axis in "xX" else ys).setdefault(index, value)
            for index in sorted(set(xs) | set(ys), key=lambda i: int(i or 0)):
                yield index, xs.get(index), ys.get(index)

    def _read_one(
        self, index: str, x: str | None, y: str | None, size: Size
    ) -> tuple[ParseStatus, str, Point | None, bool]:
        if x is None or y is None:
            return ParseStatus.MALFORMED, f"x{index} and y{index} do not both appear", None, False
        try:
            values = [float(x), float(y)]
        except ValueError:
            return ParseStatus.MALFORMED, f"unreadable number in x{index}={x!r} y{index}={y!r}", None, False
        if not all(math.isfinite(v) for v in values):
            return ParseStatus.NON_FINITE, f"non-finite value in x{index}={x!r} y{index}={y!r}", None, False
        tol = CLAMP_TOLERANCE * self.scale
        if any(v < -tol or v > self.scale + tol for v in values):
            return ParseStatus.OUT_OF_RANGE, f"x{index}={x} y{index}={y} outside [0, {self.scale:g}]", None, False
        was_clamped = any(v < 0 or v > self.scale for v in values)
        px, py = (min(max(v, 0.0), self.scale) / self.scale * s for v, s in zip(values, size))
        return ParseStatus.OK, "", (px, py), was_clamped


def point_hit(point: Sequence[float] | None, gt_boxes: Sequence[float] | Sequence[Sequence[float]]) -> bool:
    """Whether ``point`` (pixels) lies in any ground-truth box (pixel xyxy, edges included).

    ``gt_boxes`` is one box or a list of boxes; corners may be reversed. ``None`` or a non-finite point misses.
    """
    if point is None or len(point) != 2 or not all(math.isfinite(float(v)) for v in point):
        return False
    if gt_boxes and not isinstance(gt_boxes[0], (list, tuple)):
        gt_boxes = [gt_boxes]  # a single box
    x, y = float(point[0]), float(point[1])
    for box in gt_boxes:
        x1, y1, x2, y2 = order_corners(box)
        if x1 <= x <= x2 and y1 <= y <= y2:
            return True
    return False
