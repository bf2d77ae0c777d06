"""MiniGPT-v2 (EVA ViT-g/14 + LLaMA-2-chat) as a transformers model, its processor, converter and tiny builder.

Imports are lazy: ``import pfmvg_plugin.models.minigptv2`` costs nothing; the names below load torch/transformers
when first used.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "EvaVisionConfig": "configuration",
    "MiniGPTv2Config": "configuration",
    "minigptv2_7b_config": "configuration",
    "llama2_7b_text_config": "configuration",
    "EvaVisionTransformer": "eva_vit",
    "interpolate_pos_embed": "eva_vit",
    "MiniGPTv2ForConditionalGeneration": "modeling",
    "MiniGPTv2Processor": "processing",
    "MiniGPTv2ImageProcessor": "processing",
    "build_tiny_minigptv2": "tiny",
    "write_tiny_release_files": "tiny",
    "build_meta_minigptv2_7b": "meta",
    "count_minigptv2_parameters": "meta",
    "convert_minigptv2": "convert",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
