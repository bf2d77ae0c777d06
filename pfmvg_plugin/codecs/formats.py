"""The box text formats of the model families we support (docs/ARCHITECTURE.md §2); each class names its source."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence

from pfmvg_plugin.codecs.base import INTEGER, NUMBER, WHITESPACE, BoxCodec, ParseStatus, _Tally
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

    def options(self) -> dict:
        return {"min_pixels": self.min_pixels, "max_pixels": self.max_pixels, "factor": self.factor}

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


# ---- the native formats of other MLLM families ----------------------------------------------------------------------
class _ScaledIntCodec(BoxCodec):
    """Integers ``round(c * scale)`` of the original width / height (``c`` in 0-1), written at most ``top``.

    ``order`` is the order the four values are written in: ``(0, 1, 2, 3)`` for x1 y1 x2 y2, ``(1, 0, 3, 2)`` for the
    y-first families. Between text and pixels the values are always held x-first, so the range check of
    :class:`BoxCodec` compares each value with its own axis.
    """

    scale: int = 1000
    top: int = 1000
    order: tuple[int, int, int, int] = (0, 1, 2, 3)
    separator = ", "
    pattern = re.compile(_LIST4)
    start_pattern = re.compile(rb"\[[-+.\d]")

    def unit_range(self, size: Size) -> tuple[float, float]:
        return (float(self.scale), float(self.scale))

    def max_error(self, size: Size) -> tuple[float, float]:
        steps = max(0.5, self.scale - self.top)  # rounding; clipping 1.0 to ``top`` when top < scale
        return (steps * size[0] / self.scale, steps * size[1] / self.scale)

    def to_units(self, box: Sequence[float], size: Size) -> tuple[float, float, float, float]:
        w, h = size
        s = self.scale
        vals = (box[0] / w * s, box[1] / h * s, box[2] / w * s, box[3] / h * s)
        return tuple(min(max(_round_half_up(v), 0), self.top) for v in vals)

    def from_units(self, values: Sequence[float], size: Size) -> Box:
        w, h = size
        s = self.scale
        return (values[0] / s * w, values[1] / s * h, values[2] / s * w, values[3] / s * h)

    def candidates(self, data: bytes):
        for m in self.pattern.finditer(data):
            groups = m.groups()
            yield tuple(groups[i].decode("ascii", "replace") for i in self.order)

    def written(self, values: Sequence[float]) -> list[int]:
        """The four integers in the order the format writes them."""
        return [int(values[i]) for i in self.order]

    def _list(self, values: Sequence[float], sep: str = ", ") -> str:
        return "[" + sep.join(str(v) for v in self.written(values)) + "]"


class InternVLCodec(_ScaledIntCodec):
    """InternVL 2 / 2.5 / 3: ``<ref>phrase</ref><box>[[x1, y1, x2, y2]]</box>``, integers 0-1000, xyxy.

    Source: OpenGVLab/InternVL ``internvl_chat/eval/refcoco/evaluate_grounding.py`` (reads ``[..]`` lists, divides by
    1000). ``<box>`` is a special token that ``skip_special_tokens`` removes, so decoding reads the bare lists, as that
    evaluation does. Several boxes: ``<box>[[..], [..]]</box>``.
    """

    name = "internvl"
    start_pattern = re.compile(rb"<box>|\[[-+.\d]")

    def format_units(self, values: Sequence[float], label: str | None = None) -> str:
        return self._list(values)

    def encode(self, boxes, size: Size, label: str | None = None) -> str:
        ref = f"<ref>{label}</ref>" if label else ""
        return f"{ref}<box>[{super().encode(boxes, size)}]</box>"

    def describe(self) -> str:
        return ("Answer with <box>[[x1, y1, x2, y2]]</box>: integers from 0 to 1000 giving the left, top, right and "
                "bottom edges relative to the image width and height.")


_WS_TO_COMMA = bytes.maketrans(WHITESPACE, b"," * len(WHITESPACE))
_GAP = b",{1,32}"


class MiniCPMVCodec(_ScaledIntCodec):
    """MiniCPM-V 2.5 / 2.6 / 4.5: ``<ref>phrase</ref><box>x1 y1 x2 y2</box>``, integers 0-1000 separated by spaces.

    Source: the maintainers' answers in OpenBMB/MiniCPM-V issues #185 and #982 (no official document). The numbers
    carry no brackets, so ``<box>`` is required on decode (MiniCPM-V's own ``chat`` keeps it); commas are accepted
    between the numbers as well as whitespace. Several boxes: one ``<box>`` each.
    """

    name = "minicpmv"
    separator = ""
    pattern = re.compile(b"<box>,{0,32}" + NUMBER + _GAP + NUMBER + _GAP + NUMBER + _GAP + NUMBER + b",{0,32}</box>")
    start_pattern = re.compile(rb"<box>")

    def prepare(self, text: str) -> bytes:
        # Whitespace separates the numbers here: map it to commas instead of deleting it.
        return text.encode("utf-8", "surrogatepass").translate(_WS_TO_COMMA)

    def format_units(self, values: Sequence[float], label: str | None = None) -> str:
        return "<box>" + " ".join(str(v) for v in self.written(values)) + "</box>"

    def encode(self, boxes, size: Size, label: str | None = None) -> str:
        ref = f"<ref>{label}</ref>" if label else ""
        return ref + super().encode(boxes, size)

    def describe(self) -> str:
        return ("Answer with <box>x1 y1 x2 y2</box>: integers from 0 to 1000 separated by spaces, giving the left, "
                "top, right and bottom edges relative to the image width and height.")


class DeepSeekVL2Codec(_ScaledIntCodec):
    """DeepSeek-VL2: ``<|ref|>phrase<|/ref|><|det|>[[x1, y1, x2, y2]]<|/det|>``, integers 0-999 (divided by 999).

    Source: deepseek-ai/DeepSeek-VL2 README and ``serve/app_modules/utils.py``. ``<|det|>`` is optional on decode
    (``skip_special_tokens`` removes it). Several boxes: ``[[..], [..]]``.
    """

    name = "deepseekvl2"
    scale = 999
    top = 999
    start_pattern = re.compile(rb"<\|det\|>|\[[-+.\d]")

    def format_units(self, values: Sequence[float], label: str | None = None) -> str:
        return self._list(values)

    def encode(self, boxes, size: Size, label: str | None = None) -> str:
        ref = f"<|ref|>{label}<|/ref|>" if label else ""
        return f"{ref}<|det|>[{super().encode(boxes, size)}]<|/det|>"

    def describe(self) -> str:
        return ("Answer with <|det|>[[x1, y1, x2, y2]]<|/det|>: integers from 0 to 999 giving the left, top, right "
                "and bottom edges relative to the image width and height.")


_LOC = rb"<loc(\d{1,4})>"


class PaliGemmaCodec(_ScaledIntCodec):
    """PaliGemma / PaliGemma 2: ``<locYMIN><locXMIN><locYMAX><locXMAX> label``, tokens ``<loc0000>``-``<loc1023>``.

    **y first.** Encoding is big_vision's ``round(c * 1023)`` (``pp/proj/paligemma/segmentation.py``); decoding divides
    by 1023 to match it (Google's inference notebooks divide by 1024: at most 0.1 % of the side apart). Several
    detections are joined by `` ; ``.
    """

    name = "paligemma"
    scale = 1023
    top = 1023
    order = (1, 0, 3, 2)
    separator = " ; "
    pattern = re.compile(_LOC * 4)
    start_pattern = re.compile(rb"<loc\d")

    def format_units(self, values: Sequence[float], label: str | None = None) -> str:
        locs = "".join(f"<loc{v:04d}>" for v in self.written(values))
        return f"{locs} {label}" if label else locs

    def describe(self) -> str:
        return ("Answer with four location tokens <locYMIN><locXMIN><locYMAX><locXMAX>, each from <loc0000> to "
                "<loc1023>: top, left, bottom and right edges relative to the image height and width.")


class CogVLMCodec(_ScaledIntCodec):
    """CogVLM grounding: ``[[x0,y0,x1,y1]]``, three zero-padded digits 000-999 of 1000, ``;`` between boxes.

    Source: THUDM/CogVLM README and ``utils/utils/grounding_parser.py`` (``int(v) / 1000``). 1.0 is written as 999.
    """

    name = "cogvlm"
    top = 999
    separator = ";"
    start_pattern = re.compile(rb"\[[-+.\d]")

    def prepare(self, text: str) -> bytes:
        return super().prepare(text).replace(b";", b"][")  # [[a;b]] -> [[a][b]]: one list per box

    def format_units(self, values: Sequence[float], label: str | None = None) -> str:
        return ",".join(f"{v:03d}" for v in self.written(values))

    def encode(self, boxes, size: Size, label: str | None = None) -> str:
        boxes_text = f"[[{super().encode(boxes, size)}]]"
        return f"{label} {boxes_text}" if label else boxes_text

    def describe(self) -> str:
        return ("Answer with [[x0,y0,x1,y1]]: three-digit integers from 000 to 999 giving the left, top, right and "
                "bottom edges in thousandths of the image width and height; separate several boxes with ';'.")


class GLM4VCodec(_ScaledIntCodec):
    """GLM-4.1V / 4.5V: ``<|begin_of_box|>[x1,y1,x2,y2]<|end_of_box|>``, integers 0-1000.

    Source: zai-org/GLM-V README, which says 0-1000 (one other document says 0-999; 1000 is used here, the README's
    scale: the two differ by 0.1 % of the side). The box tokens are optional on decode.
    """

    name = "glm4v"
    start_pattern = re.compile(rb"<\|begin_of_box\|>|\[[-+.\d]")

    def format_units(self, values: Sequence[float], label: str | None = None) -> str:
        return f"<|begin_of_box|>{self._list(values, ',')}<|end_of_box|>"

    def encode(self, boxes, size: Size, label: str | None = None) -> str:
        text = super().encode(boxes, size)
        return f"{label} {text}" if label else text

    def describe(self) -> str:
        return ("Answer with <|begin_of_box|>[x1,y1,x2,y2]<|end_of_box|>: integers from 0 to 1000 giving the left, "
                "top, right and bottom edges relative to the image width and height.")


class _JsonBoxCodec(_ScaledIntCodec):
    """A JSON list ``[{"<key>": [4 integers], "label": ...}]`` (single quotes tolerated, ```json fences ignored)."""

    key = ""
    translation = bytes.maketrans(b"'", b'"')

    def format_units(self, values: Sequence[float], label: str | None = None) -> str:
        item: dict = {self.key: self.written(values)}
        if label:
            item["label"] = label
        return json.dumps(item)

    def encode(self, boxes, size: Size, label: str | None = None) -> str:
        return "[" + super().encode(boxes, size, label) + "]"


class GeminiCodec(_JsonBoxCodec):
    """Gemini 2.x: JSON ``[{"box_2d": [ymin, xmin, ymax, xmax], "label": ...}]``, integers 0-1000, **y first**.

    Source: Vertex AI "bounding box detection" documentation. Often inside a ```json fence, which decoding ignores.
    """

    name = "gemini"
    key = "box_2d"
    order = (1, 0, 3, 2)
    pattern = re.compile(rb'"box_2d":' + _LIST4, re.IGNORECASE)
    start_pattern = re.compile(rb'"box_2d', re.IGNORECASE)

    def describe(self) -> str:
        return ('Answer in JSON as [{"box_2d": [ymin, xmin, ymax, xmax], "label": "..."}] with integers from 0 to '
                "1000 relative to the image height (y) and width (x).")


class Qwen3VLCodec(_JsonBoxCodec):
    """Qwen3-VL / Qwen3.5: Qwen2.5-VL's JSON ``{"bbox_2d": [x1, y1, x2, y2], "label": ...}`` but relative 0-1000.

    Source: Qwen3-VL ``evaluation/ODinW-13`` (divides by 1000), not pixels of the resized input as Qwen2.5-VL.
    """

    name = "qwen3vl"
    key = "bbox_2d"
    pattern = re.compile(rb'"bbox_2d":' + _LIST4, re.IGNORECASE)
    start_pattern = re.compile(rb"bbox_2d", re.IGNORECASE)

    def describe(self) -> str:
        return ('Answer in JSON as [{"bbox_2d": [x1, y1, x2, y2], "label": "..."}] with integers from 0 to 1000 '
                "relative to the image width and height.")


class FerretCodec(_ScaledIntCodec):
    """Ferret: ``phrase [x1, y1, x2, y2]``, integers on a 0-1000 grid of the original image.

    Source: apple/ml-ferret ``ferret/eval/eval_refexp.py`` (``VOCAB_IMAGE_W = VOCAB_IMAGE_H = 1000``).
    """

    name = "ferret"

    def format_units(self, values: Sequence[float], label: str | None = None) -> str:
        return self._list(values)

    def encode(self, boxes, size: Size, label: str | None = None) -> str:
        text = super().encode(boxes, size)
        return f"{label} {text}" if label else text

    def describe(self) -> str:
        return ("Answer with [x1, y1, x2, y2]: integers from 0 to 1000 giving the left, top, right and bottom edges "
                "relative to the image width and height.")


class Florence2Codec(BoxCodec):
    """Florence-2: ``phrase<loc_x1><loc_y1><loc_x2><loc_y2>``, 1000 bins per axis (0-999), xyxy.

    Source: ``processing_florence2.py`` BoxQuantizer: encoding is ``floor(c * 1000)`` clipped to 999, decoding the bin
    centre ``(bin + 0.5) / 1000``. Several boxes of one phrase follow each other without a separator.
    """

    name = "florence2"
    bins = 1000
    separator = ""
    pattern = re.compile(rb"<loc_(\d{1,4})><loc_(\d{1,4})><loc_(\d{1,4})><loc_(\d{1,4})>")
    start_pattern = re.compile(rb"<loc_")

    def unit_range(self, size: Size) -> tuple[float, float]:
        return (float(self.bins - 1), float(self.bins - 1))

    def max_error(self, size: Size) -> tuple[float, float]:
        return (0.5 * size[0] / self.bins, 0.5 * size[1] / self.bins)

    def to_units(self, box: Sequence[float], size: Size) -> tuple[float, float, float, float]:
        w, h = size
        n = self.bins
        vals = (box[0] / w * n, box[1] / h * n, box[2] / w * n, box[3] / h * n)
        return tuple(min(max(math.floor(v), 0), n - 1) for v in vals)

    def from_units(self, values: Sequence[float], size: Size) -> Box:
        w, h = size
        n = self.bins
        return ((values[0] + 0.5) / n * w, (values[1] + 0.5) / n * h,
                (values[2] + 0.5) / n * w, (values[3] + 0.5) / n * h)

    def format_units(self, values: Sequence[float], label: str | None = None) -> str:
        return "".join(f"<loc_{int(v)}>" for v in values)

    def encode(self, boxes, size: Size, label: str | None = None) -> str:
        return (label or "") + super().encode(boxes, size)

    def describe(self) -> str:
        return ("Answer with <loc_x1><loc_y1><loc_x2><loc_y2>: bins from 0 to 999 of the image width and height for "
                "the left, top, right and bottom edges.")


class Kosmos2Codec(BoxCodec):
    """Kosmos-2: ``<phrase>…</phrase><object><patch_index_AAAA><patch_index_BBBB></object>`` on a 32×32 grid.

    ``AAAA`` is the patch holding the top-left corner, ``BBBB`` the one holding the bottom-right corner (index
    ``row * 32 + col``). Source: transformers ``processing_kosmos2.py``: encoding is ``coordinate_to_patch_index``,
    decoding ``patch_index_to_coordinate`` (from microsoft/unilm's ``decode_string.py``): the centres of the two
    patches, or the whole patches when they share a row or a column. Several boxes inside one ``<object>`` are
    separated by ``</delimiter_of_multi_objects/>``; each pair is read wherever it stands.

    ``to_units`` gives the corner patches ``(col, row, col, row)``; ``from_units`` takes corners in grid units (0-32).
    """

    name = "kosmos2"
    grid = 32
    separator = "</delimiter_of_multi_objects/>"
    pattern = re.compile(rb"<patch_index_(\d{1,8})><patch_index_(\d{1,8})>")
    start_pattern = re.compile(rb"<patch_index_|<object>")

    def unit_range(self, size: Size) -> tuple[float, float]:
        return (float(self.grid), float(self.grid))

    def max_error(self, size: Size) -> tuple[float, float]:
        return (size[0] / self.grid, size[1] / self.grid)  # a whole patch when the corners share a row or column

    def to_units(self, box: Sequence[float], size: Size) -> tuple[float, float, float, float]:
        w, h = size
        n = self.grid
        cells = (math.floor(box[0] / w * n), math.floor(box[1] / h * n),
                 math.ceil(box[2] / w * n - 1), math.ceil(box[3] / h * n - 1))
        return tuple(min(max(v, 0), n - 1) for v in cells)

    def from_units(self, values: Sequence[float], size: Size) -> Box:
        w, h = size
        n = self.grid
        return (values[0] / n * w, values[1] / n * h, values[2] / n * w, values[3] / n * h)

    def format_units(self, values: Sequence[float], label: str | None = None) -> str:
        n = self.grid
        first, last = int(values[1]) * n + int(values[0]), int(values[3]) * n + int(values[2])
        return f"<patch_index_{first:04d}><patch_index_{last:04d}>"

    def encode(self, boxes, size: Size, label: str | None = None) -> str:
        phrase = f"<phrase>{label}</phrase>" if label else ""
        return f"{phrase}<object>{super().encode(boxes, size)}</object>"

    def corners(self, first: int, last: int) -> tuple[float, float, float, float]:
        """Grid coordinates of the box two patch indices stand for (transformers' ``patch_index_to_coordinate``)."""
        n = self.grid
        x1, y1, x2, y2 = first % n, first // n, last % n, last // n
        if x1 == x2 or y1 == y2:
            return (x1, y1, x2 + 1, y2 + 1)
        return (x1 + 0.5, y1 + 0.5, x2 + 0.5, y2 + 0.5)

    def _read_one(self, raw: Sequence[str], size: Size, tally: _Tally) -> None:
        first, last = int(raw[0]), int(raw[1])  # the pattern only lets digits through
        top = self.grid * self.grid - 1
        if not (0 <= first <= top and 0 <= last <= top):
            tally.reject(ParseStatus.OUT_OF_RANGE, f"patch index outside [0, {top}] in {list(raw)}")
            return
        super()._read_one([repr(float(v)) for v in self.corners(first, last)], size, tally)

    def describe(self) -> str:
        return ("Answer with <object><patch_index_AAAA><patch_index_BBBB></object>: the indices (row * 32 + column) "
                "of the 32x32 grid patches holding the top-left and bottom-right corners.")


class ShikraCodec(NormalizedCodec):
    """Shikra: ``[x0,y0,x1,y1]`` floats with 3 decimals in 0-1, several boxes as ``[x0,y0,x1,y1;x0,y0,x1,y1]``.

    Source: shikras/shikra ``mllm/dataset/process_function/box_process_function.py`` (PlainBoxFormatter). Shikra's
    pipeline pads every image to a square first (``transforms=dict(type='Expand2square')`` in
    ``config/_base_/model/shikra.py``, offset ``(side - w) // 2`` in ``mllm/dataset/utils/transform.py``), so by
    default the floats are relative to that square, not to the original image; ``pad_to_square=False`` reads them as
    relative to the original image (e.g. for a server that does not pad).
    """

    name = "shikra"
    separator = ";"

    def __init__(self, pad_to_square: bool = True) -> None:
        super().__init__(decimals=3, pad_to_square=pad_to_square)

    def _frame(self, size: Size) -> tuple[float, float, float, float]:
        w, h = size
        if not self.pad_to_square:
            return (0.0, 0.0, float(w), float(h))
        side = max(w, h)
        return (float((side - w) // 2), float((side - h) // 2), float(side), float(side))

    def prepare(self, text: str) -> bytes:
        return super().prepare(text).replace(b";", b"][")  # [a;b] -> [a][b]: one list per box

    def format_units(self, values: Sequence[float], label: str | None = None) -> str:
        return ",".join(f"{v:.3f}" for v in values)

    def encode(self, boxes, size: Size, label: str | None = None) -> str:
        return "[" + super().encode(boxes, size) + "]"

    def describe(self) -> str:
        return ("Answer in [x0,y0,x1,y1] format: the left, top, right and bottom edges as decimal numbers between 0 "
                "and 1 with 3 decimals.")
