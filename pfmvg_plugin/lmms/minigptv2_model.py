"""``pfmvg_minigptv2``: an lmms-eval simple model for MiniGPT-v2 / PeFoMed / PFMVG checkpoints.

::

    pfmvg convert minigptv2 --llama Llama-2-7b-chat-hf --eva eva_vit_g.pth --ckpt minigptv2_checkpoint.pth --out M
    lmms-eval --model pfmvg_minigptv2 --model_args pretrained=M/model,adapter=M/adapter,batch_size=8 \\
        --tasks mscxr_grounding --output_path runs --log_samples

Everything :class:`~pfmvg_plugin.lmms.llava_model.PfmvgLlava` does (``adapter=`` / ``merge_adapter=``, batched
left-padded greedy decoding with answers back in request order, ``until``, a failed generation answered
``<<pfmvg:generation_error>> …`` and counted, safetensors-only loading, data parallel under ``accelerate launch``),
for a directory written by ``pfmvg convert minigptv2``, the training recipe (``backbone: minigptv2``) or
:func:`~pfmvg_plugin.models.minigptv2.tiny.build_tiny_minigptv2`. Prompts are MiniGPT-v2's
``[INST] <Img><ImageHere></Img> {instruction} [/INST]`` and the convention defaults to ``minigptv2`` (``[refer]``
prompts, ``{<x1><y1><x2><y2>}`` boxes), so tasks with ``convention: model`` ask and score in MiniGPT-v2's format.
Images are squashed to the model's input size (448 px bicubic), never padded or cropped.
"""

from __future__ import annotations

from typing import Any

import torch
from loguru import logger

from pfmvg_plugin.lmms.llava_model import _DTYPES, PfmvgLlava, check_safetensors
from pfmvg_plugin.training_record import read_training_meta

_ARGS = ("pretrained", "adapter", "merge_adapter", "box_format", "convention", "dtype", "device",
         "attn_implementation", "batch_size", "max_new_tokens", "use_safetensors", "max_batch_size")
DEFAULT_CONVENTION = "minigptv2"


class PfmvgMiniGPTv2(PfmvgLlava):
    """MiniGPT-v2 checkpoint (+ optional PEFT adapter) as an lmms-eval simple model.

    Model args (``--model_args k=v,...``): ``pretrained`` (our model directory), ``adapter``, ``merge_adapter``,
    ``box_format`` / ``convention`` (default ``minigptv2``, or what the adapter's ``pfmvg_training.json`` says),
    ``dtype`` (``auto``: bfloat16 on GPU, float32 on CPU), ``device``, ``attn_implementation``, ``batch_size``,
    ``max_new_tokens``, ``use_safetensors``.
    """

    model_id: str = "pfmvg_minigptv2"

    def __init__(self, pretrained: str, adapter: str | None = None, box_format: str | None = None,
                 convention: str | None = None, **kwargs: Any) -> None:
        unknown = sorted(set(kwargs) - set(_ARGS))
        if unknown:
            raise TypeError(f"{self.model_id}: unknown model_args {unknown}; accepted: {', '.join(_ARGS)}")
        if not pretrained:
            raise ValueError(f"{self.model_id}: pretrained=DIR is required")
        if not box_format and not convention:
            trained = read_training_meta(adapter, self.model_id) or read_training_meta(pretrained, self.model_id)
            box_format = trained.get("convention") or DEFAULT_CONVENTION
        super().__init__(pretrained=pretrained, adapter=adapter, box_format=box_format, convention=convention,
                         **kwargs)

    def _load(self, dtype: str, attn_implementation: str | None) -> None:
        from pfmvg_plugin.models.minigptv2.modeling import MiniGPTv2ForConditionalGeneration
        from pfmvg_plugin.models.minigptv2.processing import MiniGPTv2Processor

        if dtype == "auto":
            torch_dtype: Any = torch.bfloat16 if self._device.type == "cuda" else torch.float32
        elif dtype in _DTYPES:
            torch_dtype = _DTYPES[dtype]
        else:
            raise ValueError(f"{self.model_id}: dtype={dtype!r}; choose auto, float32, bfloat16 or float16")
        if not MiniGPTv2Processor.is_processor_dir(self.pretrained):
            raise ValueError(f"{self.model_id}: {self.pretrained} is not a MiniGPT-v2 directory (no "
                             "pfmvg_minigptv2_processor.json); write one with `pfmvg convert minigptv2`")
        if self.use_safetensors:
            check_safetensors(self.pretrained, "checkpoint", ("model",), self.model_id)
            if self.adapter:
                check_safetensors(self.adapter, "adapter", ("adapter_model",), self.model_id)
        load_kwargs: dict[str, Any] = {"dtype": torch_dtype, "use_safetensors": self.use_safetensors}
        if attn_implementation:
            load_kwargs["attn_implementation"] = str(attn_implementation)
        if self._device.type == "cuda":
            load_kwargs["device_map"] = str(self._device)
        model = MiniGPTv2ForConditionalGeneration.from_pretrained(self.pretrained, **load_kwargs)
        if self.adapter:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, self.adapter, is_trainable=False)
            if self.merge_adapter:
                model = model.merge_and_unload()
        self._model = model.to(self._device).eval()
        self._config = getattr(model, "config", None)
        self.processor = MiniGPTv2Processor.from_pretrained(self.pretrained)
        self._tokenizer = self.processor.tokenizer
        self.image_token = self.processor.image_placeholder
        self._set_frame()  # the minigptv2 family's 448 x 448 squash and codec
        logger.info(
            f"{self.model_id}: {self.pretrained}" + (f" + adapter {self.adapter}" if self.adapter else "")
            + (" (merged)" if self.adapter and self.merge_adapter else "")
            + f" on {self._device}, dtype {torch_dtype}, batch {self.batch_size_per_gpu}, box_format {self.convention}"
        )

    def build_prompt(self, context: str, n_images: int) -> str:
        """``[INST] <Img><ImageHere></Img> {context} [/INST]`` (a context that already places ``<ImageHere>`` -- or
        LLaVA's ``<image>`` -- keeps its placement)."""
        if "<image>" in context and self.image_token not in context:
            context = context.replace("<image>", self.processor.image_wrap.format(self.image_token))
        return self.processor.format_prompt(context, n_images)

    def _generate(self, prompts: list[str], images: list, settings: dict) -> list[str]:
        inputs = self.processor(prompts, images or None, padding_side="left").to(self._device)
        if "pixel_values" in inputs:
            inputs["pixel_values"] = inputs["pixel_values"].to(self.model.dtype)
        tok = self._tokenizer
        with torch.inference_mode():
            output = self.model.generate(**inputs, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                                         **settings)
        return self.processor.batch_decode(output[:, inputs["input_ids"].shape[1]:])
