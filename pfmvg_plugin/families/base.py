"""The family contract: everything the recipe and the evaluators need to know about one multimodal model family.

A family knows which checkpoints are its own (``model_types``), how to load model and processor, which modules LoRA
targets (the language model only), which are trained fully (the projector) or stay frozen (the vision tower), how its
prompts and box targets are written (``prompt_convention`` and :meth:`Family.codec`), the ONE image function that
turns an image into model input for training and evaluation alike (:class:`ImageTransform`), and how an (image,
instruction, answer) triple becomes tensors with the loss on the answer only.

Families are registered in :mod:`pfmvg_plugin.families`; each lives in one module of this package.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pfmvg_plugin.codecs import BoxCodec, get_codec
from pfmvg_plugin.data.images import pad_to_square
from pfmvg_plugin.geometry import Box, Size
from pfmvg_plugin.training_record import IMAGE_RESIZES

IGNORE_INDEX = -100
"""Label value the loss ignores (prompt, image and padding tokens)."""




@dataclass(frozen=True)
class ImageTransform:
    """Box-consistent resizing of an image to the model input.

    ``squash`` resizes to ``size`` (no crop, no padding), so a box normalised to the ORIGINAL image is also normalised
    to the model input: targets need no change (``llava`` and ``minigptv2`` codecs). ``pad`` first pads to a centred
    square of side ``max(W, H)`` with ``fill`` (LLaVA's ``expand2square``) then resizes: targets must be normalised
    to the padded square, i.e. the ``llava_pad`` codec. ``native`` leaves the image to the processor (``size`` is
    None: it differs per image); the family's codec knows that frame (e.g. Qwen2.5-VL's ``smart_resize``).
    :meth:`codec` hands out the matching codec and refuses a convention whose format cannot express the frame.
    """

    size: Size | None  # (width, height) of the model input; None for ``native``
    mode: str = "squash"
    fill: tuple[int, int, int] = (0, 0, 0)

    def __post_init__(self) -> None:
        if self.mode not in IMAGE_RESIZES:
            raise ValueError(f"image_resize must be one of {', '.join(IMAGE_RESIZES)}, got {self.mode!r}")
        if (self.size is None) != (self.mode == "native"):
            raise ValueError(f"image_resize {self.mode!r} needs {'no' if self.mode == 'native' else 'an'} input size")

    def __call__(self, image):
        """PIL image of any size -> PIL image of ``size`` (``native``: the image itself)."""
        from PIL import Image

        if self.mode == "native":
            return image
        if self.mode == "pad":
            image = pad_to_square(image, self.fill)
        if image.size != tuple(self.size):
            image = image.resize(tuple(self.size), Image.BICUBIC)
        return image

    def map_box(self, box: Sequence[float], size: Size) -> Box:
        """Where a pixel box of the original image (of ``size``) lands in the transformed image."""
        if self.mode == "native":
            raise ValueError("image_resize 'native': the input size is the processor's choice, per image")
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
        if self.mode in ("squash", "native"):
            return get_codec(name)
        if name in ("llava", "llava_pad"):
            return get_codec("llava_pad")
        raise ValueError(f"image_resize 'pad' needs a box format normalised to the padded square (llava_pad); the "
                         f"{convention!r} convention writes {name!r} boxes relative to the original image: use "
                         "image_resize 'squash' (as MiniGPT-v2 does)")


class Family(ABC):
    """A multimodal model family: what training, evaluation and conversion share."""

    #: Registry name (``model.backbone`` in the YAML).
    name: str = ""
    #: Prompt convention of :mod:`pfmvg_plugin.prompts` (``llava``, ``minigptv2``): templates and box codec.
    prompt_convention: str = "llava"
    #: ``config.json`` ``model_type`` values of the checkpoints this family loads (how a checkpoint is recognised).
    model_types: tuple[str, ...] = ()
    #: ``data.image_resize`` when the config sets none.
    default_image_resize: str = "squash"
    #: Encoded pixels are one fixed-size tensor per image that a horizontal flip of the tensor mirrors, so the data
    #: pipeline may cache (and flip) them; otherwise (tiles, patch sequences) it keeps the images.
    cache_pixels: bool = True

    def __init__(self) -> None:
        self.model = None
        self.processor = None

    def load(self, model_path: str, dtype: Any, **kwargs) -> tuple[Any, Any]:
        """Load ``(model, processor)`` (transformers' auto classes) and :meth:`attach` them. ``kwargs``:
        ``quantization_config``, ``device_map``, ``attn_implementation``."""
        from transformers import AutoModelForImageTextToText

        model = AutoModelForImageTextToText.from_pretrained(model_path, **from_pretrained_kwargs(dtype, **kwargs))
        processor = self.load_processor(model_path)
        self.attach(model, processor)
        return model, processor

    def load_processor(self, path: str | os.PathLike):
        """The processor saved in ``path`` (a checkpoint, or an adapter our recipe wrote)."""
        from transformers import AutoProcessor

        return AutoProcessor.from_pretrained(str(path))

    @abstractmethod
    def attach(self, model, processor) -> None:
        """Use an already loaded model (or ``None``: data preparation and evaluation need only the processor) and
        processor."""

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
    def image_transform(self, mode: str | None = None) -> ImageTransform:
        """How images are resized for this model (``mode``: ``squash`` / ``pad`` / ``native``; None: the default)."""

    def codec(self, convention: str, transform: ImageTransform) -> BoxCodec:
        """The codec of box targets and answers in ``convention`` for images shown through ``transform``."""
        return transform.codec(convention)

    @classmethod
    def build_tiny(cls, out_dir, **kwargs):
        """Write a tiny random checkpoint of this family to ``out_dir`` (tests, demo, ``model.path: tiny``)."""
        raise NotImplementedError(f"family {cls.name!r} has no tiny checkpoint builder")

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

    def configure_processor(self, **settings) -> None:
        """Apply image-processor ``settings`` (``model.processor`` in a recipe); raises ``ValueError`` for any this
        family does not have."""
        if settings:
            raise ValueError(f"the {self.name} family has no processor settings (got {sorted(settings)})")


#: Files a saved processor leaves in a directory.
PROCESSOR_FILES = ("processor_config.json", "preprocessor_config.json", "pfmvg_minigptv2_processor.json")


def processor_dir(adapter: str | os.PathLike | None, pretrained: str | os.PathLike) -> str:
    """Where the processor a model was trained with lives: the adapter directory when the recipe saved it there
    (with its ``model.processor`` settings), else the base checkpoint."""
    if adapter and any((Path(adapter) / name).is_file() for name in PROCESSOR_FILES):
        return str(adapter)
    return str(pretrained)


def right_padded_text(examples: Sequence[dict], pad_id: int | None) -> dict:
    """``input_ids``, ``attention_mask`` and ``labels`` of :meth:`Family.build_example` outputs, right-padded
    (training needs no generation alignment)."""
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
    return {"input_ids": input_ids, "attention_mask": attention, "labels": labels}


def right_padded_batch(examples: Sequence[dict], pad_id: int | None) -> dict:
    """A batch of fixed-size images: right-padded text and the pixel tensors stacked."""
    import torch

    return {**right_padded_text(examples, pad_id), "pixel_values": torch.stack([e["pixel_values"] for e in examples])}


def from_pretrained_kwargs(dtype: Any, **kwargs) -> dict:
    """``from_pretrained`` keyword arguments shared by the families' :meth:`Family.load`."""
    out: dict[str, Any] = {"dtype": dtype}
    if kwargs.get("quantization_config") is not None:
        out["quantization_config"] = kwargs["quantization_config"]
        out["device_map"] = kwargs.get("device_map")
    if kwargs.get("attn_implementation"):
        out["attn_implementation"] = kwargs["attn_implementation"]
    return out
