"""The backbone interface: what the training loop needs from a multimodal model family, and a registry.

A backbone knows how to load its checkpoint, which modules LoRA targets (the language model only), which modules are
trained fully (the projector) or frozen (the vision tower), how its prompts and box targets are written
(``prompt_convention``), how an image becomes model input without breaking box targets (:class:`ImageTransform`), and
how one (image, instruction, answer) triple becomes tensors with the loss restricted to the answer.

``llava`` (LLaVA-1.5 family through ``transformers``) is implemented in :mod:`pfmvg_plugin.training.llava`. A
MiniGPT-v2 backbone (a transformers-style model with the ``<s>[INST] <Img><ImageHere></Img> {instruction} [/INST]``
prompt and the ``minigptv2`` box codec) plugs in by subclassing :class:`Backbone` and calling
:func:`register_backbone`.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pfmvg_plugin.codecs import BoxCodec, get_codec
from pfmvg_plugin.data.images import pad_to_square
from pfmvg_plugin.geometry import Box, Size

IGNORE_INDEX = -100
"""Label value the loss ignores (prompt, image and padding tokens)."""


@dataclass(frozen=True)
class ImageTransform:
    """Box-consistent resizing of an image to the model input.

    ``squash`` resizes to ``size`` (no crop, no padding), so a box normalised to the ORIGINAL image is also normalised
    to the model input: targets need no change (``llava`` and ``minigptv2`` codecs). ``pad`` first pads to a centred
    square of side ``max(W, H)`` with ``fill`` (LLaVA's ``expand2square``) then resizes: targets must be normalised
    to the padded square, i.e. the ``llava_pad`` codec. :meth:`codec` hands out the matching codec and refuses a
    convention whose format cannot express the padded frame.
    """

    size: Size  # (width, height) of the model input
    mode: str = "squash"
    fill: tuple[int, int, int] = (0, 0, 0)

    def __post_init__(self) -> None:
        if self.mode not in ("squash", "pad"):
            raise ValueError(f"image_resize must be 'squash' or 'pad', got {self.mode!r}")

    def __call__(self, image):
        """PIL image of any size -> PIL image of ``size``."""
        from PIL import Image

        if self.mode == "pad":
            image = pad_to_square(image, self.fill)
        if image.size != tuple(self.size):
            image = image.resize(tuple(self.size), Image.BICUBIC)
        return image

    def map_box(self, box: Sequence[float], size: Size) -> Box:
        """Where a pixel box of the original image (of ``size``) lands in the transformed image."""
        w, h = size
        ox = oy = 0.0
        if self.mode == "pad":
            side = float(max(w, h))
            ox, oy, w, h = (side - w) / 2.0, (side - h) / 2.0, side, side
        sx, sy = self.size[0] / w, self.size[1] / h
        return ((box[0] + ox) * sx, (box[1] + oy) * sy, (box[2] + ox) * sx, (box[3] + oy) * sy)

    def codec(self, convention: str) -> BoxCodec:
        """The box codec whose numbers are relative to what the model sees, for prompts in ``convention``."""
        from pfmvg_plugin.prompts import get_prompts

        name = get_prompts(convention).codec
        if self.mode == "squash":
            return get_codec(name)
        if name in ("llava", "llava_pad"):
            return get_codec("llava_pad")
        raise ValueError(f"image_resize 'pad' needs a box format normalised to the padded square (llava_pad); the "
                         f"{convention!r} convention writes {name!r} boxes relative to the original image: use "
                         "image_resize 'squash' (as MiniGPT-v2 does)")


class Backbone(ABC):
    """A multimodal model family the recipe can fine-tune."""

    #: Registry name (``model.backbone`` in the YAML).
    name: str = ""
    #: Prompt convention of :mod:`pfmvg_plugin.prompts` (``llava``, ``minigptv2``): templates and box codec.
    prompt_convention: str = "llava"

    def __init__(self) -> None:
        self.model = None
        self.processor = None

    @abstractmethod
    def load(self, model_path: str, dtype: Any, **kwargs) -> tuple[Any, Any]:
        """Load ``(model, processor)``; keeps them on ``self`` too. ``kwargs``: ``quantization_config``,
        ``attn_implementation``."""

    @abstractmethod
    def lora_target_regex(self, names: Sequence[str]) -> str:
        """A regex (PEFT ``target_modules`` as a string, full match) selecting ``names`` in the language model only."""

    @abstractmethod
    def trainable_modules(self) -> list[str]:
        """Modules trained fully and saved with the adapter (the projector)."""

    @abstractmethod
    def frozen_modules(self) -> list[str]:
        """Modules that stay frozen whatever LoRA matches (the vision tower)."""

    @abstractmethod
    def image_transform(self, mode: str = "squash") -> ImageTransform:
        """How images are resized for this model (``mode``: ``squash`` / ``pad``)."""

    @abstractmethod
    def encode_image(self, image) -> Any:
        """A PIL image already at the model input size -> the pixel tensor of one image (no batch dimension)."""

    @abstractmethod
    def build_example(self, image, instruction: str, answer: str) -> dict:
        """Tensors of one training example: ``input_ids``, ``attention_mask``, ``labels`` (``IGNORE_INDEX`` except on
        the answer tokens and the end-of-answer token) and ``pixel_values``. ``image`` is a PIL image at the model
        input size or an already encoded pixel tensor."""

    @abstractmethod
    def collate(self, examples: Sequence[dict]) -> dict:
        """Pad a list of examples into a batch (labels padded with ``IGNORE_INDEX``)."""

    def save_processor(self, out_dir) -> None:
        if self.processor is not None:
            self.processor.save_pretrained(out_dir)


_BACKBONES: dict[str, Callable[[], Backbone]] = {}


def register_backbone(name: str, factory: Callable[[], Backbone]) -> None:
    if name in _BACKBONES:
        raise ValueError(f"backbone {name!r} is already registered")
    _BACKBONES[name] = factory


def available_backbones() -> list[str]:
    _load_builtin()
    return sorted(_BACKBONES)


def get_backbone(name: str) -> Backbone:
    _load_builtin()
    try:
        factory = _BACKBONES[name]
    except KeyError:
        raise ValueError(f"unknown backbone {name!r}; choose one of {', '.join(sorted(_BACKBONES))}") from None
    return factory()


def _load_builtin() -> None:
    if "llava" not in _BACKBONES:
        from pfmvg_plugin.training.llava import LlavaBackbone

        register_backbone("llava", LlavaBackbone)
    if "minigptv2" not in _BACKBONES:
        from pfmvg_plugin.training.minigptv2 import MiniGPTv2Backbone

        register_backbone("minigptv2", MiniGPTv2Backbone)


def language_model_regex(names: Sequence[str], scope: str = r"language_model") -> str:
    """``.*language_model\\..*\\.(q_proj|v_proj)`` style regex for PEFT (full match against module names).

    Works with both module layouts of transformers' LLaVA (``model.language_model.layers.N...`` in v5,
    ``language_model.model.layers.N...`` in v4).
    """
    alternatives = "|".join(re.escape(n) for n in names)
    return rf".*{scope}\..*\.({alternatives})"


def right_padded_batch(examples: Sequence[dict], pad_id: int | None) -> dict:
    """Stack :meth:`Backbone.build_example` outputs, right-padded (training needs no generation alignment)."""
    import torch

    pad_id = 0 if pad_id is None else pad_id
    n = max(len(e["input_ids"]) for e in examples)
    batch = len(examples)
    input_ids = torch.full((batch, n), pad_id, dtype=torch.long)
    attention = torch.zeros((batch, n), dtype=torch.long)
    labels = torch.full((batch, n), IGNORE_INDEX, dtype=torch.long)
    for i, e in enumerate(examples):
        k = len(e["input_ids"])
        input_ids[i, :k] = e["input_ids"]
        attention[i, :k] = e["attention_mask"]
        labels[i, :k] = e["labels"]
    return {"input_ids": input_ids, "attention_mask": attention, "labels": labels,
            "pixel_values": torch.stack([e["pixel_values"] for e in examples])}
