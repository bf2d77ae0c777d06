"""Model families: one module each, registered here by name (``model.backbone`` in a recipe YAML).

A family (:class:`~pfmvg_plugin.families.base.Family`) is everything that is true of one MLLM family: which
checkpoints are its own, loading, chat rendering, the image function training and evaluation share, the box frame and
codec, LoRA targets, and a tiny builder for tests. Adding a family is one module and one line in :data:`BUILTIN`.

Importing this package is light: family modules are imported when first asked for, and import torch and transformers
only inside their methods.
"""

from __future__ import annotations

import importlib
import json
import os
from collections.abc import Callable
from pathlib import Path

from pfmvg_plugin.families.base import Family

#: Built-in families: registry name -> ``module:Class``.
BUILTIN = {
    "llava": "pfmvg_plugin.families.llava:LlavaFamily",
    "minigptv2": "pfmvg_plugin.families.minigptv2:MiniGPTv2Family",
    "qwen2vl": "pfmvg_plugin.families.qwen2vl:Qwen2VLFamily",
    "qwen25vl": "pfmvg_plugin.families.qwen2vl:Qwen25VLFamily",
}

_REGISTRY: dict[str, Callable[[], Family]] = {}


def register_family(name: str, factory: Callable[[], Family]) -> None:
    """Make a family available under ``name`` (a :class:`Family` subclass or any callable returning one)."""
    if name in _REGISTRY or name in BUILTIN:
        raise ValueError(f"model family {name!r} is already registered")
    _REGISTRY[name] = factory


def available_families() -> list[str]:
    return sorted({*BUILTIN, *_REGISTRY})


def _factory(name: str) -> Callable[[], Family]:
    if name in _REGISTRY:
        return _REGISTRY[name]
    if name not in BUILTIN:
        raise ValueError(f"unknown model family {name!r}; choose one of {', '.join(available_families())}")
    module, _, cls = BUILTIN[name].partition(":")
    return getattr(importlib.import_module(module), cls)


def get_family(name: str) -> Family:
    """A fresh instance of the family registered as ``name``."""
    return _factory(name)()


def family_for_model_type(model_type: str | None) -> str | None:
    """The registered family whose checkpoints have ``config.json`` ``model_type`` (None when no family claims it)."""
    if not model_type:
        return None
    for name in available_families():
        if model_type in getattr(_factory(name), "model_types", ()):
            return name
    return None


def family_for_checkpoint(path: str | os.PathLike) -> str | None:
    """The family of a local checkpoint directory, from its ``config.json``; None for hub ids and unknown types.
    An original LLaVA / LLaVA-Med checkpoint raises ValueError saying how to convert it."""
    from pfmvg_plugin.models.llava_original.layout import unconverted_message

    problem = unconverted_message(path)
    if problem:
        raise ValueError(problem)
    try:
        model_type = json.loads((Path(path) / "config.json").read_text()).get("model_type")
    except (OSError, ValueError, AttributeError):
        return None
    return family_for_model_type(model_type)


__all__ = ["BUILTIN", "Family", "available_families", "family_for_checkpoint", "family_for_model_type",
           "get_family", "register_family"]
