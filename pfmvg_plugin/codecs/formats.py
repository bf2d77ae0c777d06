"""The box text formats of the model families we support (DESIGN §3)."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence

from pfmvg_plugin.codecs.base import INTEGER, NUMBER, BoxCodec
from pfmvg_plugin.geometry import Box, Size

_BRACKETS = bytes.maketrans(b"()", b"[]")
_LIST4 = rb"\[" + NUMBER + b"," + NUMBER + b"," + NUMBER + b"," + NUMBER + rb"\]"


def _round_half_up(v: float) -> int:
    return int(math.floor(v + 0.5))


class MiniGPTv2Codec(BoxCodec):
    """MiniGPT-v2 / PeFoMed / PFMVG: ``{<x1><y1><x2><y2>}``, integers 0-100 of the original width/height.

    Encoding truncates with ``int()`` as the reference datasets do; decoding strips ``<unk>`` and whitespace as the
    reference ``eval_ref.py`` does, and also accepts boxes whose braces were lost or whose numbers carry decimals.
    Several boxes are joined by ``<delim>``.
    """

    name = "minigptv2"
    scale = 100
    separator = "<delim>"
    # Braces are optional on decode: they carry no information and are sometimes lost.
    pattern = re.compile(b"<" + INTEGER + b"><" + INTEGER + b"><" + INTEGER + b"><" + INTEGER + b">")
    start_pattern = re.compile(rb"<[-+.\d]")
    drop_tokens = (b"<unk>",)

    def unit_range(self, size: Size) -> tuple[float, float]:
        return (self.scale, self.scale)

    def to_units(self, box: Sequence[float], size: Size) -> tuple[float, float, float, float]:
        w, h = size
        s = self.scale
        x1, y1, x2, y2 = (int(box[0] / w * s), int(box[1] / h * s), int(box[2] / w * s), int(box[3] / h * s))
        return tuple(min(max(v, 0), s) for v in (x1, y1, x2, y2))

    def from_units(self, values: Sequence[float], size: Size) -> Box:
        w, h = size
        s = self.scale
        return (values[0] / s * w, values[1] / s * h, values[2] / s * w, values[3] / s * h)

    def format_units(self, values: Sequence[float], label: str | None = None) -> str:
        return "{" + "".join(f"<{int(v)}>" for v in values) + "}"

    def describe(self) -> str:
        return ("Answer with the box as {<x1><y1><x2><y2>}: integers from 0 to 100 giving the left, top, right and "
                "bottom edges as a percentage of the image width and height.")


class NormalizedCodec(BoxCodec):
    """LLaVA-1.5 style (and lmms-eval refcoco): ``[x1, y1, x2, y2]`` floats in 0-1.

    ``pad_to_square`` reproduces LLaVA's ``expand2square`` preprocessing: coordinates are relative to the centred
    square canvas of side ``max(W, H)``, not to the original image (LLaVA issues #606, #822).
    """

    name = "llava"
    separator = ", "
    translation = _BRACKETS  # (x1, y1, x2, y2) is read like [x1, y1, x2, y2]
    pattern = re.compile(_LIST4)  # NUMBER already lists both cases; IGNORECASE would slow every attempt
    start_pattern = re.compile(rb"\[[-+.\d]")

    def __init__(self, decimals: int = 2, pad_to_square: bool = False) -> None:
        if not 1 <= decimals <= 6:
            raise ValueError("decimals must be between 1 and 6")
        self.decimals = decimals
        self.pad_to_square = pad_to_square

    def _frame(self, size: Size) -> tuple[float, float, float, float]:
        """(offset_x, offset_y, scale_x, scale_y) of the canvas the floats are relative to."""
        w, h = size
        if not self.pad_to_square:
            return (0.0, 0.0, float(w), float(h))
        side = float(max(w, h))
        return ((side - w) / 2.0, (side - h) / 2.0, side, side)

    def unit_range(self, size: Size) -> tuple[float, float]:
        return (1.0, 1.0)

    def max_error(self, size: Size) -> tuple[float, float]:
        _, _, sx, sy = self._frame(size)
        q = 0.5 * 10.0 ** -self.decimals
        return (q * sx, q * sy)

    def to_units(self, box: Sequence[float], size: Size) -> tuple[float, float, float, float]:
        ox, oy, sx, sy = self._frame(size)
        vals = ((box[0] + ox) / sx, (box[1] + oy) / sy, (box[2] + ox) / sx, (box[3] + oy) / sy)
        return tuple(min(max(round(v, self.decimals), 0.0), 1.0) for v in vals)

    def from_units(self, values: Sequence[float], size: Size) -> Box:
        ox, oy, sx, sy = self._frame(size)
        return (values[0] * sx - ox, values[1] * sy - oy, values[2] * sx - ox, values[3] * sy - oy)

    def format_units(self, values: Sequence[float], label: str | None = None) -> str:
        return "[" + ", ".join(f"{v:.{self.decimals}f}" for v in values) + "]"

    def describe(self) -> str:
        return ("Answer with the bounding box as [x1, y1, x2, y2]: the left, top, right and bottom edges as decimal "
                f"numbers between 0 and 1 relative to the image width and height, with {self.decimals} decimals.")


class PixelCodec(NormalizedCodec):
    """Absolute pixel coordinates of the original image: ``[x1, y1, x2, y2]`` (integers by default)."""

    name = "pixel"

    def __init__(self, decimals: int = 0) -> None:
        self.decimals = decimals
        self.pad_to_square = False

    def unit_range(self, size: Size) -> tuple[float, float]:
        return (float(size[0]), float(size[1]))

    def max_error(self, size: Size) -> tuple[float, float]:
        q = 0.5 * 10.0 ** -self.decimals
        return (q, q)

    def to_units(self, box: Sequence[float], size: Size) -> tuple[float, float, float, float]:
        w, h = size
        lim = (w, h, w, h)
        return tuple(min(max(round(v, self.decimals), 0.0), m) for v, m in zip(box, lim))

    def from_units(self, values: Sequence[float], size: Size) -> Box:
        return tuple(float(v) for v in values)

    def format_units(self, values: Sequence[float], label: str | None = None) -> str:
        if self.decimals == 0:
            return "[" + ", ".join(str(int(v)) for v in values) + "]"
        return super().format_units(values, label)

    def describe(self) -> str:
        return "Answer with the bounding box as [x1, y1, x2, y2] in pixels of the original image."


class Qwen2VLCodec(BoxCodec):
    """Qwen2-VL: ``<|box_start|>(x1,y1),(x2,y2)<|box_end|>`` with integers 0-1000.

    The special tokens are optional on decode, since ``skip_special_tokens=True`` removes them.
    """

    name = "qwen2vl"
    scale = 1000
    separator = ""
    pattern = re.compile(rb"\(" + INTEGER + b"," + INTEGER + rb"\),?\(" + INTEGER + b"," + INTEGER + rb"\)")
    start_pattern = re.compile(rb"<\|box_start\|>|\([-+.\d]{1,12},")

    def unit_range(self, size: Size) -> tuple[float, float]:
        return (self.scale, self.scale)

    def max_error(self, size: Size) -> tuple[float, float]:
        return (0.5 * size[0] / self.scale, 0.5 * size[1] / self.scale)

    def to_units(self, box: Sequence[float], size: Size) -> tuple[float, float, float, float]:
        w, h = size
        s = self.scale
        vals = (box[0] / w * s, box[1] / h * s, box[2] / w * s, box[3] / h * s)
        return tuple(min(max(_round_half_up(v), 0), s) for v in vals)

    def from_units(self, values: Sequence[float], size: Size) -> Box:
        w, h = size
        s = self.scale
        return (values[0] / s * w, values[1] / s * h, values[2] / s * w, values[3] / s * h)

    def format_units(self, values: Sequence[float], label: str | None = None) -> str:
        x1, y1, x2, y2 = (int(v) for v in values)
        box = f"<|box_start|>({x1},{y1}),({x2},{y2})<|box_end|>"
        return f"<|object_ref_start|>{label}<|object_ref_end|>{box}" if label else box

    def describe(self) -> str:
        return ("Answer with the box as (x1,y1),(x2,y2): integers from 0 to 1000 giving the top-left and bottom-right "
                "corners relative to the image width and height.")


def qwen_smart_resize(
    height: int, width: int, factor: int = 28, min_pixels: int = 56 * 56, max_pixels: int = 28 * 28 * 1280
) -> tuple[int, int]:
    """The (height, width) Qwen2.5-VL's processor resizes an image to: multiples of ``factor``, pixel budget kept."""
    if max(height, width) / max(1, min(height, width)) > 200:
        raise ValueError(f"aspect ratio of {width}x{height} is beyond what Qwen2.5-VL accepts")
    h_bar = max(factor, round(height / factor) * factor)
    w_bar = max(factor, round(width / factor) * factor)
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


class Qwen25VLCodec(BoxCodec):
    """Qwen2.5-VL: JSON ``{"bbox_2d": [x1, y1, x2, y2], "label": ...}`` in pixels of the *resized model input*.

    The model-input size follows the processor's ``smart_resize`` with the given pixel budget, so boxes map back to
    the original image exactly as the model saw it.
    """

    name = "qwen25vl"
    separator = ", "
    translation = bytes.maketrans(b"'", b'"')
    pattern = re.compile(rb'"bbox_2d":' + _LIST4, re.IGNORECASE)
    start_pattern = re.compile(rb"bbox_2d", re.IGNORECASE)

    def __init__(self, min_pixels: int = 56 * 56, max_pixels: int = 28 * 28 * 1280, factor: int = 28) -> None:
        self.min_pixels, self.max_pixels, self.factor = min_pixels, max_pixels, factor

    def input_size(self, size: Size) -> Size:
        """(width, height) of the model input for an original image of ``size``."""
        h, w = qwen_smart_resize(size[1], size[0], self.factor, self.min_pixels, self.max_pixels)
        return (w, h)

    def unit_range(self, size: Size) -> tuple[float, float]:
        iw, ih = self.input_size(size)
        return (float(iw), float(ih))

    def max_error(self, size: Size) -> tuple[float, float]:
        iw, ih = self.input_size(size)
        return (0.5 * size[0] / iw, 0.5 * size[1] / ih)

    def to_units(self, box: Sequence[float], size: Size) -> tuple[float, float, float, float]:
        iw, ih = self.input_size(size)
        sx, sy = iw / size[0], ih / size[1]
        lim = (iw, ih, iw, ih)
        vals = (box[0] * sx, box[1] * sy, box[2] * sx, box[3] * sy)
        return tuple(min(max(_round_half_up(v), 0), m) for v, m in zip(vals, lim))

    def from_units(self, values: Sequence[float], size: Size) -> Box:
        iw, ih = self.input_size(size)
        sx, sy = size[0] / iw, size[1] / ih
        return (values[0] * sx, values[1] * sy, values[2] * sx, values[3] * sy)

    def format_units(self, values: Sequence[float], label: str | None = None) -> str:
        item = {"bbox_2d": [int(v) for v in values]}
        if label:
            item["label"] = label
        return json.dumps(item)

    def encode(self, boxes, size: Size, label: str | None = None) -> str:
        """A JSON list of objects, as Qwen2.5-VL answers grounding prompts."""
        return "[" + super().encode(boxes, size, label) + "]"

    def describe(self) -> str:
        return ('Answer in JSON as [{"bbox_2d": [x1, y1, x2, y2], "label": "..."}] with pixel coordinates of the '
                "image as you see it.")
