"""Qwen2-VL and Qwen2.5-VL through ``transformers``: dynamic resolution, ChatML prompts, their own box languages.

- Images go to Qwen's processor as they are (``image_resize: native``): it ``smart_resize``-s each one to multiples
  of 28 px within its ``min_pixels`` / ``max_pixels`` budget and cuts it into 14-px patches, so the number of image
  tokens differs per image. Training and evaluation call the same processor on the same image.
- Boxes: Qwen2-VL writes ``<|box_start|>(x1,y1),(x2,y2)<|box_end|>`` in 0-1000 of the image (frame-free, since the
  resize neither crops nor pads); Qwen2.5-VL writes ``{"bbox_2d": [x1, y1, x2, y2]}`` in pixels of the *resized input*,
  so its codec is built with this processor's budget (:meth:`Qwen2VLFamily.codec`) and the training record carries it
  (``box_codec_options``) to the evaluator.
- LoRA on the language model only; the vision merger (the projector) trained and saved with the adapter; the ViT
  blocks frozen.
"""

from __future__ import annotations

from collections.abc import Sequence

from pfmvg_plugin.codecs import BoxCodec, get_codec
from pfmvg_plugin.families.base import (
    IGNORE_INDEX,
    Family,
    ImageTransform,
    right_padded_text,
)
from pfmvg_plugin.families.chat import ChatRenderer
from pfmvg_plugin.models.lora_targets import language_model_regex


def _fallback(instruction: str, answer: str) -> tuple[str, str]:
    """ChatML with Qwen's default system turn, for a processor that ships no chat template."""
    from pfmvg_plugin.models.tiny_qwen2vl import SYSTEM

    prompt = (f"<|im_start|>system\n{SYSTEM}<|im_end|>\n<|im_start|>user\n"
              f"<|vision_start|><|image_pad|><|vision_end|>{instruction}<|im_end|>\n<|im_start|>assistant\n")
    return prompt, f"{answer}<|im_end|>\n"


def processor_frame(image_processor) -> dict:
    """The ``smart_resize`` settings of a Qwen image processor: the frame Qwen2.5-VL's pixel boxes refer to."""
    size = getattr(image_processor, "size", None) or {}
    get = size.get if isinstance(size, dict) else (lambda k, d=None: getattr(size, k, d))
    min_pixels = get("shortest_edge") or getattr(image_processor, "min_pixels", None)
    max_pixels = get("longest_edge") or getattr(image_processor, "max_pixels", None)
    if not (min_pixels and max_pixels):
        raise ValueError(f"cannot read min/max pixels from {type(image_processor).__name__} (size={size!r})")
    factor = int(image_processor.patch_size) * int(image_processor.merge_size)
    return {"min_pixels": int(min_pixels), "max_pixels": int(max_pixels), "factor": factor}


class Qwen2VLFamily(Family):
    name = "qwen2vl"
    prompt_convention = "qwen2vl"
    model_types = ("qwen2_vl",)
    default_image_resize = "native"
    cache_pixels = False
    variant = "qwen2_vl"

    def __init__(self) -> None:
        super().__init__()
        self._render: ChatRenderer | None = None

    # ---- loading ----------------------------------------------------------------------------------------------------
    def attach(self, model, processor) -> None:
        """Use an already loaded model (or ``None``) and processor."""
        self.model, self.processor = model, processor
        self._render = ChatRenderer(processor, _fallback)

    @classmethod
    def build_tiny(cls, out_dir, **kwargs):
        from pfmvg_plugin.models.tiny_qwen2vl import build_tiny_qwen2vl

        return build_tiny_qwen2vl(out_dir, **{"variant": cls.variant, **kwargs})

    # ---- module selection -------------------------------------------------------------------------------------------
    def lora_target_regex(self, names: Sequence[str]) -> str:
        return language_model_regex(names)

    def trainable_modules(self) -> list[str]:
        return ["merger"]

    def frozen_modules(self) -> list[str]:
        return ["visual.patch_embed", "visual.blocks"]

    # ---- images and boxes ---------------------------------------------------------------------------------------
    def image_transform(self, mode: str | None = None) -> ImageTransform:
        mode = mode or self.default_image_resize
        if mode != "native":
            raise ValueError(f"the {self.name} family shows images at their own resolution (Qwen's smart_resize): "
                             f"use image_resize 'native', not {mode!r}")
        return ImageTransform(size=None, mode="native")

    def configure_processor(self, **settings) -> None:
        """``min_pixels`` / ``max_pixels``: the pixel budget every image is ``smart_resize``-d within."""
        unknown = sorted(set(settings) - {"min_pixels", "max_pixels"})
        if unknown:
            raise ValueError(f"the {self.name} family's processor settings are min_pixels and max_pixels, "
                             f"not {unknown}")
        ip = self.processor.image_processor
        frame = self.frame()
        low = int(settings.get("min_pixels", frame["min_pixels"]))
        high = int(settings.get("max_pixels", frame["max_pixels"]))
        if not 0 < low <= high:
            raise ValueError(f"need 0 < min_pixels <= max_pixels, got {low} and {high}")
        ip.size = {"shortest_edge": low, "longest_edge": high}
        for name, value in (("min_pixels", low), ("max_pixels", high)):
            if hasattr(ip, name):
                setattr(ip, name, value)

    def frame(self) -> dict:
        """This processor's ``smart_resize`` settings (min/max pixels, factor)."""
        return processor_frame(self.processor.image_processor)

    def codec(self, convention: str, transform: ImageTransform) -> BoxCodec:
        from pfmvg_plugin.prompts import get_prompts

        name = get_prompts(convention).codec
        return get_codec(name, **self.frame()) if name == "qwen25vl" else transform.codec(convention)

    def encode_image(self, image) -> dict:
        """``pixel_values`` (patches x features) and ``image_grid_thw`` of one image, as the processor makes them."""
        out = self.processor.image_processor(images=image.convert("RGB"), return_tensors="pt")
        return {"pixel_values": out["pixel_values"], "image_grid_thw": out["image_grid_thw"]}

    # ---- text -----------------------------------------------------------------------------------------------------
    @property
    def image_token(self) -> str:
        return getattr(self.processor, "image_token", None) or "<|image_pad|>"

    def prompt_and_answer(self, instruction: str, answer: str) -> tuple[str, str]:
        """The ChatML prompt (ending with ``<|im_start|>assistant\\n``) and the answer text the template appends."""
        return self._render(instruction, answer)

    def build_example(self, image, instruction: str, answer: str) -> dict:
        import torch

        vision = image if isinstance(image, dict) else self.encode_image(image)
        merge = int(self.processor.image_processor.merge_size)
        n_tokens = int(vision["image_grid_thw"][0].prod()) // (merge * merge)
        prompt, answer_text = self.prompt_and_answer(instruction, answer)
        prompt = prompt.replace(self.image_token, self.image_token * n_tokens)
        tok = self.processor.tokenizer
        prompt_ids = tok(prompt, add_special_tokens=False)["input_ids"]
        answer_ids = tok(answer_text, add_special_tokens=False)["input_ids"]
        ids = torch.tensor(prompt_ids + answer_ids, dtype=torch.long)
        labels = ids.clone()
        labels[: len(prompt_ids)] = IGNORE_INDEX
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels, **vision}

    def collate(self, examples: Sequence[dict]) -> dict:
        """Right-padded text; the images' patches concatenated, as Qwen's forward takes them."""
        import torch

        return {**right_padded_text(examples, self.processor.tokenizer.pad_token_id),
                "pixel_values": torch.cat([e["pixel_values"] for e in examples]),
                "image_grid_thw": torch.cat([e["image_grid_thw"] for e in examples])}


class Qwen25VLFamily(Qwen2VLFamily):
    name = "qwen25vl"
    prompt_convention = "qwen25vl"
    model_types = ("qwen2_5_vl",)
    variant = "qwen2_5_vl"
