"""The LLaVA family through ``transformers``: LLaVA-1.5 (``LlavaForConditionalGeneration``) and LLaVA-NeXT
(``LlavaNextForConditionalGeneration``, anyres tiling; each example carries its ``image_sizes``).

Prompts are rendered with the processor's chat template exactly as at inference (``USER: <image>\\n{text}
ASSISTANT:`` for LLaVA-1.5), the answer is what the template appends after the generation prompt (`` {answer}</s>``),
and only the answer tokens carry labels. Images are resized by our :class:`ImageTransform` to the processor's final
input size before the processor sees them, so its own resize / centre crop are no-ops and cannot cut a box off.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pfmvg_plugin.families.base import (
    IGNORE_INDEX,
    Family,
    ImageTransform,
    right_padded_batch,
)
from pfmvg_plugin.families.chat import ChatRenderer
from pfmvg_plugin.models.lora_targets import language_model_regex

#: LLaVA-1.5's conversation format, used when a processor ships no chat template.
FALLBACK_TEMPLATE = "USER: {image}\n{instruction} ASSISTANT:"


def _size_field(size: Any, key: str) -> int | None:
    if size is None:
        return None
    value = size.get(key) if isinstance(size, dict) else getattr(size, key, None)
    return int(value) if value else None


def processor_input_size(image_processor) -> tuple[int, int]:
    """(width, height) of the image the model finally sees (after the processor's resize and centre crop)."""
    if getattr(image_processor, "do_center_crop", False):
        crop = getattr(image_processor, "crop_size", None)
        h, w = _size_field(crop, "height"), _size_field(crop, "width")
        if h and w:
            return (w, h)
    size = getattr(image_processor, "size", None)
    h, w = _size_field(size, "height"), _size_field(size, "width")
    if h and w:
        return (w, h)
    edge = _size_field(size, "shortest_edge")
    if edge:
        return (edge, edge)  # our transform already made the image square
    raise ValueError(f"cannot tell the input size of {type(image_processor).__name__} (size={size!r})")


class LlavaFamily(Family):
    name = "llava"
    prompt_convention = "llava"
    model_types = ("llava", "llava_next")

    def __init__(self) -> None:
        super().__init__()
        self.anyres = False
        self._n_image_tokens: int | None = None
        self._input_size: tuple[int, int] | None = None
        self._render: ChatRenderer | None = None

    # ---- loading ----------------------------------------------------------------------------------------------------
    def load(self, model_path: str, dtype: Any, **kwargs) -> tuple[Any, Any]:
        from pfmvg_plugin.models.llava_original.layout import unconverted_message

        problem = unconverted_message(model_path)
        if problem:
            raise ValueError(problem)
        return super().load(model_path, dtype, **kwargs)

    def attach(self, model, processor) -> None:
        """Use an already loaded model (or ``None``: data preparation needs only the processor) and processor."""
        self.model, self.processor = model, processor
        self._input_size = processor_input_size(processor.image_processor)
        self._n_image_tokens = None
        self._render = ChatRenderer(processor, self._fallback)
        # LLaVA-NeXT's anyres: the image is tiled, and the model needs each image's size to undo the tiling; a
        # flipped tensor of tiles is not the flipped image, so the data pipeline keeps images, not tensors
        self.anyres = getattr(processor.image_processor, "image_grid_pinpoints", None) is not None
        self.cache_pixels = not self.anyres
        # a processor that pads to a square (LlavaImageProcessor do_pad: the original LLaVA's expand2square, as
        # `pfmvg convert llava` writes it) means the model was trained on padded squares
        self.default_image_resize = "pad" if getattr(processor.image_processor, "do_pad", False) else "squash"

    @classmethod
    def build_tiny(cls, out_dir, **kwargs):
        from pfmvg_plugin.models.tiny_llava import build_tiny_llava

        return build_tiny_llava(out_dir, **kwargs)

    # ---- module selection -------------------------------------------------------------------------------------------
    def lora_target_regex(self, names: Sequence[str]) -> str:
        return language_model_regex(names)

    def trainable_modules(self) -> list[str]:
        return ["multi_modal_projector"]

    def frozen_modules(self) -> list[str]:
        return ["vision_tower"]

    # ---- images ---------------------------------------------------------------------------------------------------
    def image_transform(self, mode: str | None = None) -> ImageTransform:
        mode = mode or self.default_image_resize
        if mode == "native":
            raise ValueError("image_resize 'native' would let the processor centre-crop (LLaVA-1.5's CLIP-336 does), "
                             "cutting boxes off: use 'squash' or 'pad'")
        ip = self.processor.image_processor
        mean = getattr(ip, "image_mean", None) or (0.0, 0.0, 0.0)
        fill = tuple(int(float(m) * 255) for m in mean)  # as expand2square and LlavaImageProcessor: (122, 116, 104)
        return ImageTransform(size=self._input_size, mode=mode, fill=fill)

    def encode_image(self, image):
        out = self.processor.image_processor(image, return_tensors="pt")
        return out["pixel_values"][0]

    # ---- text -----------------------------------------------------------------------------------------------------
    @property
    def image_token(self) -> str:
        return getattr(self.processor, "image_token", None) or "<image>"

    @property
    def n_image_tokens(self) -> int:
        """How many placeholder tokens the processor expands one image into (measured once on a blank image)."""
        if self._n_image_tokens is None:
            from PIL import Image

            tok = self.processor.tokenizer
            image_id = tok.convert_tokens_to_ids(self.image_token)
            out = self.processor(text=self.image_token, images=Image.new("RGB", self._input_size), return_tensors="pt")
            self._n_image_tokens = int((out["input_ids"][0] == image_id).sum())
        return self._n_image_tokens

    def _fallback(self, instruction: str, answer: str) -> tuple[str, str]:
        prompt = FALLBACK_TEMPLATE.format(image=self.image_token, instruction=instruction)
        return prompt, " " + answer + (self.processor.tokenizer.eos_token or "")

    def prompt_and_answer(self, instruction: str, answer: str) -> tuple[str, str]:
        """The rendered prompt (ending with the generation prompt, as at inference) and the answer text after it."""
        return self._render(instruction, answer)

    def build_example(self, image, instruction: str, answer: str) -> dict:
        import torch

        tok = self.processor.tokenizer
        pixel_values = image if isinstance(image, torch.Tensor) else self.encode_image(image)
        prompt, answer_text = self.prompt_and_answer(instruction, answer)
        prompt = prompt.replace(self.image_token, self.image_token * self.n_image_tokens)
        prompt_ids = tok(prompt, add_special_tokens=True)["input_ids"]
        answer_ids = tok(answer_text, add_special_tokens=False)["input_ids"]
        if tok.eos_token_id is not None and (not answer_ids or answer_ids[-1] != tok.eos_token_id):
            answer_ids.append(tok.eos_token_id)
        ids = torch.tensor(prompt_ids + answer_ids, dtype=torch.long)
        labels = ids.clone()
        labels[: len(prompt_ids)] = IGNORE_INDEX
        example = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels,
                   "pixel_values": pixel_values}
        if self.anyres:  # every image is at the input size already (the family's squash or pad)
            example["image_sizes"] = torch.tensor([self._input_size[1], self._input_size[0]])
        return example

    def collate(self, examples: Sequence[dict]) -> dict:
        import torch

        batch = right_padded_batch(examples, self.processor.tokenizer.pad_token_id)
        if self.anyres:
            batch["image_sizes"] = torch.stack([e["image_sizes"] for e in examples])
        return batch
