"""The box codec contract: pixel boxes <-> model text, one implementation per model family's convention.

Every codec encodes *pixel* boxes of the original image into text and decodes text back into pixel boxes, so
prompts, training targets and scoring share one code path. Decoding never raises on model output: it returns the
boxes it could read plus a :class:`ParseStatus` and the reasons candidates were rejected. All patterns use bounded
quantifiers, so decoding is linear in the length of the text (see ``bench/bench_parser.py``).
"""

from __future__ import annotations

import math
import re
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from enum import Enum

from pfmvg_plugin.geometry import Box, Size, box_area, clip_box, order_corners

#: Whitespace removed before matching (the reference MiniGPT-v2 evaluation strips it too); no format needs it.
WHITESPACE = b" \t\n\r\x0b\x0c"
#: One number token as models write it (validated by ``float()`` afterwards, so ``nan``/``inf`` are caught there).
#: Bounded, so a failed match costs O(1) and decoding stays linear in the input length.
NUMBER = rb"([-+.\deEinfatyINFATY]{1,32})"
INTEGER = rb"([-+.\d]{1,12})"

#: Values up to this fraction of the unit range outside it are clamped; further out the box is rejected.
CLAMP_TOLERANCE = 0.05

#: At most this many boxes are read from one text; the rest are counted as rejected.
MAX_BOXES = 64


class ParseStatus(str, Enum):
    """Why a decode gave the boxes it gave. ``OK`` means at least one valid box."""

    OK = "ok"
    NO_BOX = "no_box"  # nothing that looks like a box in this format
    MALFORMED = "malformed"  # the start of a box, never completed
    OUT_OF_RANGE = "out_of_range"  # values far outside the format's range
    NON_FINITE = "non_finite"  # nan / inf
    ZERO_AREA = "zero_area"  # degenerate after ordering and clipping
    NOT_TEXT = "not_text"  # the model output was not a string


@dataclass(frozen=True)
class DecodeResult:
    """Boxes read from one model output (pixel xyxy of the original image) and how the read went."""

    boxes: tuple[Box, ...]
    status: ParseStatus
    rejected: tuple[str, ...] = ()
    clamped: int = 0

    @property
    def ok(self) -> bool:
        return self.status is ParseStatus.OK

    @property
    def box(self) -> Box | None:
        """The first valid box, or ``None``."""
        return self.boxes[0] if self.boxes else None

    def to_dict(self) -> dict:
        return {
            "boxes": [list(b) for b in self.boxes],
            "status": self.status.value,
            "rejected": list(self.rejected),
            "clamped": self.clamped,
        }


@dataclass
class _Tally:
    boxes: list[Box] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)
    first_failure: ParseStatus | None = None
    clamped: int = 0

    def reject(self, status: ParseStatus, reason: str) -> None:
        self.rejected.append(reason)
        if self.first_failure is None:
            self.first_failure = status


class BoxCodec(ABC):
    """Base class of box text formats.

    Subclasses say how a pixel box maps to the format's units (:meth:`to_units` / :meth:`from_units`), the unit range
    for an image (:meth:`unit_range`), how to write units (:meth:`format_units`) and which regexes find boxes.
    """

    name: str = ""
    #: Finds complete boxes in the prepared bytes; each match yields the four coordinates as groups 1-4.
    #: Patterns start with a single literal byte or a longer literal, which keeps failed attempts cheap.
    pattern: re.Pattern[bytes]
    #: Finds the start of something box-like, to tell "malformed" from "no box".
    start_pattern: re.Pattern[bytes]
    #: Byte mapping applied before matching (e.g. ``(`` -> ``[``), and tokens removed before it (``<unk>``).
    translation: bytes = bytes.maketrans(b"", b"")
    drop_tokens: tuple[bytes, ...] = ()
    #: Joins several encoded boxes.
    separator: str = " "

    # ---- the unit mapping -------------------------------------------------------------------------------------
    @abstractmethod
    def unit_range(self, size: Size) -> tuple[float, float]:
        """Largest x and y value of the format for an image of ``size`` (the smallest is 0)."""

    @abstractmethod
    def to_units(self, box: Sequence[float], size: Size) -> tuple[float, float, float, float]:
        """Pixel box -> the numbers written in text (already quantised the way the format does)."""

    @abstractmethod
    def from_units(self, values: Sequence[float], size: Size) -> Box:
        """Numbers read from text -> pixel box of the original image."""

    @abstractmethod
    def format_units(self, values: Sequence[float], label: str | None = None) -> str:
        """Write one box's numbers as text."""

    def max_error(self, size: Size) -> tuple[float, float]:
        """Largest per-coordinate pixel error of an encode -> decode round trip (x, y)."""
        ux, uy = self.unit_range(size)
        return (size[0] / ux, size[1] / uy)

    def describe(self) -> str:
        """A sentence telling a model (or a person) how boxes are written in this format."""
        return ""

    def options(self) -> dict:
        """Constructor arguments that rebuild this codec with ``get_codec(self.name, **options)`` (its frame)."""
        return {}

    # ---- the public API ---------------------------------------------------------------------------------------
    def encode(self, boxes: Box | Sequence[Box], size: Size, label: str | None = None) -> str:
        """Write one box or several pixel boxes as text for an image of ``size = (width, height)``."""
        if boxes and not isinstance(boxes[0], (list, tuple)):
            boxes = [boxes]  # a single box
        if not boxes:
            raise ValueError("encode() needs at least one box")
        parts = []
        for box in boxes:
            if len(box) != 4 or not all(math.isfinite(float(v)) for v in box):
                raise ValueError(f"not a finite xyxy box: {box!r}")
            parts.append(self.format_units(self.to_units(order_corners(box), size), label))
        return self.separator.join(parts)

    def decode(self, text: object, size: Size) -> DecodeResult:
        """Read every box from model output ``text``; never raises on content."""
        if not isinstance(text, str):
            return DecodeResult((), ParseStatus.NOT_TEXT, (f"output is {type(text).__name__}, not str",))
        data = self.prepare(text)
        tally = _Tally()
        found = False
        for i, raw in enumerate(self.candidates(data)):
            found = True
            if i >= MAX_BOXES:
                tally.reject(ParseStatus.OK, f"more than {MAX_BOXES} boxes; the rest ignored")
                break
            self._read_one(raw, size, tally)
        if tally.boxes:
            status = ParseStatus.OK
        elif found:
            status = tally.first_failure or ParseStatus.MALFORMED
        elif self.start_pattern.search(data):
            status = ParseStatus.MALFORMED
            tally.rejected.append("box started but not completed in the expected format")
        else:
            status = ParseStatus.NO_BOX
        return DecodeResult(tuple(tally.boxes), status, tuple(tally.rejected), tally.clamped)

    # ---- hooks with defaults -----------------------------------------------------------------------------------
    def prepare(self, text: str) -> bytes:
        """Canonical bytes to match on: tokens dropped, whitespace deleted, bytes mapped (all C-speed, linear)."""
        data = text.encode("utf-8", "surrogatepass")
        for token in self.drop_tokens:
            data = data.replace(token, b"")
        return data.translate(self.translation, WHITESPACE)

    def candidates(self, data: bytes) -> Iterator[tuple[str, str, str, str]]:
        for m in self.pattern.finditer(data):
            yield tuple(g.decode("ascii", "replace") for g in m.groups()[:4])

    # ---- internals ----------------------------------------------------------------------------------------------
    def _read_one(self, raw: Sequence[str], size: Size, tally: _Tally) -> None:
        try:
            values = [float(v) for v in raw]
        except ValueError:
            tally.reject(ParseStatus.MALFORMED, f"unreadable number in {list(raw)}")
            return
        if not all(math.isfinite(v) for v in values):
            tally.reject(ParseStatus.NON_FINITE, f"non-finite value in {list(raw)}")
            return
        ux, uy = self.unit_range(size)
        limits = (ux, uy, ux, uy)
        clamped = False
        for j, (v, hi) in enumerate(zip(values, limits)):
            tol = CLAMP_TOLERANCE * hi
            if v < -tol or v > hi + tol:
                tally.reject(ParseStatus.OUT_OF_RANGE, f"value {raw[j]} outside [0, {hi:g}]")
                return
            if v < 0 or v > hi:
                values[j] = min(max(v, 0.0), hi)
                clamped = True
        box = clip_box(order_corners(self.from_units(values, size)), size)
        if box_area(box) <= 0:
            tally.reject(ParseStatus.ZERO_AREA, f"zero-area box {list(raw)}")
            return
        tally.clamped += int(clamped)
        tally.boxes.append(box)
