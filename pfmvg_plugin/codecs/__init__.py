"""Box text codecs: one registry, one API for prompts, training targets and scoring.

>>> codec = get_codec("minigptv2")
>>> codec.encode((100, 50, 300, 250), size=(400, 500))
'{<25><10><75><50>}'
>>> codec.decode("<unk> {<25><10><75><50>}", size=(400, 500)).box
(100.0, 50.0, 300.0, 250.0)
"""

from __future__ import annotations

from collections.abc import Callable

from pfmvg_plugin.codecs.base import BoxCodec, DecodeResult, ParseStatus
from pfmvg_plugin.codecs.formats import (
    CogVLMCodec,
    DeepSeekVL2Codec,
    FerretCodec,
    Florence2Codec,
    GeminiCodec,
    GLM4VCodec,
    InternVLCodec,
    Kosmos2Codec,
    MiniCPMVCodec,
    MiniGPTv2Codec,
    NormalizedCodec,
    PaliGemmaCodec,
    PixelCodec,
    Qwen2VLCodec,
    Qwen3VLCodec,
    Qwen25VLCodec,
    ShikraCodec,
    qwen_smart_resize,
)
from pfmvg_plugin.codecs.points import MolmoPointCodec, PointResult, point_hit

_REGISTRY: dict[str, Callable[..., BoxCodec]] = {}


def register_codec(name: str, factory: Callable[..., BoxCodec]) -> None:
    """Make a codec available under ``name`` (a class or any callable returning a :class:`BoxCodec`)."""
    if name in _REGISTRY:
        raise ValueError(f"box codec {name!r} is already registered")
    _REGISTRY[name] = factory


def available_codecs() -> list[str]:
    return sorted(_REGISTRY)


def get_codec(name: str, **options) -> BoxCodec:
    """Build the codec registered as ``name``; ``options`` go to its constructor (e.g. ``decimals=3``)."""
    try:
        factory = _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown box format {name!r}; choose one of {', '.join(available_codecs())}") from None
    return factory(**options)


register_codec("minigptv2", MiniGPTv2Codec)
register_codec("llava", NormalizedCodec)
register_codec("llava_pad", lambda **kw: NormalizedCodec(pad_to_square=True, **kw))
register_codec("qwen2vl", Qwen2VLCodec)
register_codec("qwen25vl", Qwen25VLCodec)
register_codec("pixel", PixelCodec)
# The native box languages of other MLLM families (each class's docstring names its source).
register_codec("internvl", InternVLCodec)
register_codec("minicpmv", MiniCPMVCodec)
register_codec("deepseekvl2", DeepSeekVL2Codec)
register_codec("paligemma", PaliGemmaCodec)
register_codec("florence2", Florence2Codec)
register_codec("kosmos2", Kosmos2Codec)
register_codec("cogvlm", CogVLMCodec)
register_codec("glm4v", GLM4VCodec)
register_codec("gemini", GeminiCodec)
register_codec("qwen3vl", Qwen3VLCodec)
register_codec("shikra", ShikraCodec)
register_codec("ferret", FerretCodec)
# Molmo answers with points, not boxes: MolmoPointCodec (codecs/points.py) is deliberately not a box codec.

__all__ = [
    "BoxCodec",
    "DecodeResult",
    "MolmoPointCodec",
    "ParseStatus",
    "PointResult",
    "available_codecs",
    "get_codec",
    "point_hit",
    "qwen_smart_resize",
    "register_codec",
]
