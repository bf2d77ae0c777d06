"""The MiniGPT-v2 backbone (PFMVG / PeFoMed): our transformers-style model + processor under the training recipe.

- Model: :class:`~pfmvg_plugin.models.minigptv2.modeling.MiniGPTv2ForConditionalGeneration` (a directory written by
  ``pfmvg convert minigptv2`` or :func:`~pfmvg_plugin.models.minigptv2.tiny.build_tiny_minigptv2`;
  ``model.path: tiny-minigptv2`` builds the tiny one). LoRA targets the LLaMA only (``language_model``),
  ``llama_proj`` trains fully and is saved with the adapter, the EVA tower and ``ln_vision`` stay frozen.
- Prompt: ``<s>[INST] <Img><ImageHere></Img> {instruction} [/INST]`` with the ``minigptv2`` task identifiers and box
  codec (``{<x1><y1><x2><y2>}``, 0-100 of the original size); the answer is ``{answer}</s>`` and carries the only
  labels, exactly the tokens the reference trains on (prompt pieces and the answer tokenized separately).
- Images: squashed to 448 x 448 (bicubic, no crop, no flip), CLIP mean/std -- so boxes need no change.

Continue from a converted MiniGPT-v2 / PeFoMed checkpoint with ``lora.init_adapter: <out>/adapter`` (its LoRA rank
and targets apply; ``llama_proj`` comes with it).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pfmvg_plugin.families.base import (
    IGNORE_INDEX,
    Family,
    ImageTransform,
    from_pretrained_kwargs,
    right_padded_batch,
)
from pfmvg_plugin.models.lora_targets import language_model_regex


class MiniGPTv2Family(Family):
    name = "minigptv2"
    prompt_convention = "minigptv2"
    model_types = ("pfmvg_minigptv2",)

    # ---- loading ------------------------------------------------------------------------------------------------
    def load(self, model_path: str, dtype: Any, **kwargs):
        from pfmvg_plugin.models.minigptv2.modeling import MiniGPTv2ForConditionalGeneration

        model = MiniGPTv2ForConditionalGeneration.from_pretrained(model_path, **from_pretrained_kwargs(dtype, **kwargs))
        processor = self.load_processor(model_path)
        self.attach(model, processor)
        return model, processor

    def load_processor(self, path):
        from pfmvg_plugin.models.minigptv2.processing import MiniGPTv2Processor

        return MiniGPTv2Processor.from_pretrained(path)

    def attach(self, model, processor) -> None:
        """Use an already loaded model (or ``None``: data preparation needs only the processor) and processor."""
        self.model, self.processor = model, processor

    @classmethod
    def build_tiny(cls, out_dir, **kwargs):
        from pfmvg_plugin.models.minigptv2.tiny import build_tiny_minigptv2

        return build_tiny_minigptv2(out_dir, **kwargs)

    # ---- module selection -----------------------------------------------------------------------------------------
    def lora_target_regex(self, names: Sequence[str]) -> str:
        return language_model_regex(names)

    def trainable_modules(self) -> list[str]:
        return ["llama_proj"]

    def frozen_modules(self) -> list[str]:
        return ["vision_model", "ln_vision"]

    # ---- images ---------------------------------------------------------------------------------------------------
    def image_transform(self, mode: str | None = None) -> ImageTransform:
        mode = mode or self.default_image_resize
        if mode == "native":
            raise ValueError("MiniGPT-v2's processor squashes to 448 x 448 itself: use image_resize 'squash'")
        size = self.processor.image_processor.size
        mean = self.processor.image_processor.image_mean
        return ImageTransform(size=(size, size), mode=mode, fill=tuple(int(round(m * 255)) for m in mean))

    def encode_image(self, image):
        return self.processor.image_processor.preprocess(image)

    # ---- text -----------------------------------------------------------------------------------------------------
    def build_example(self, image, instruction: str, answer: str) -> dict:
        import torch

        pixel_values = image if isinstance(image, torch.Tensor) else self.encode_image(image)
        prompt_ids = self.processor.encode_prompt(self.processor.format_prompt(instruction))
        answer_ids = self.processor.encode_answer(answer)
        ids = torch.tensor(prompt_ids + answer_ids, dtype=torch.long)
        labels = ids.clone()
        labels[: len(prompt_ids)] = IGNORE_INDEX
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels,
                "pixel_values": pixel_values}

    def collate(self, examples: Sequence[dict]) -> dict:
        return right_padded_batch(examples, self.processor.tokenizer.pad_token_id)
