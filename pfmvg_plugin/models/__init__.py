"""Torch-side models: tiny offline checkpoints and backbone loading helpers.

Importing this package is light; torch, transformers and tokenizers are imported by the functions that need them.
"""

from __future__ import annotations

__all__ = ["build_tiny_llava"]


def __getattr__(name: str):
    if name == "build_tiny_llava":
        from pfmvg_plugin.models.tiny_llava import build_tiny_llava

        return build_tiny_llava
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
