"""Which box language a generic lmms-eval backend is asked in: from the model it serves.

``vllm``, ``sglang``, ``huggingface``, ``openai`` (``openai_compatible`` …) and ``litellm`` run any checkpoint or API
model; the family comes from the served model's name in ``--model_args`` (``model=``, ``model_version=`` or
``pretrained=``). A name no pattern knows is asked the uniform 0-1 prompt (``api``), said once on stderr.
``PFMVG_BOX_FORMAT=<convention>`` overrides the choice for every model
(:func:`pfmvg_plugin.lmms.state.resolve_convention`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from pfmvg_plugin.lmms.hook import say_once

#: The task-kwargs value meaning "the family of the model this backend serves".
SERVED = "served"
#: ``--model_args`` keys that name the served model, in the order they are tried.
NAME_KEYS = ("model", "model_version", "pretrained", "model_name")
#: Served-name patterns (lower case, searched) -> prompt convention; the first match wins, so specific names go first.
PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = tuple((re.compile(p), c) for p, c in (
    (r"qwen2\.5[-_]?vl|qwen2_5_vl", "qwen25vl"),
    (r"qwen2[-_]?vl", "qwen2vl"),
    (r"qwen3[-_]?vl|qwen3\.5", "qwen3vl"),
    (r"internvl", "internvl"),
    (r"minicpm[-_]?[vo]", "minicpmv"),
    (r"glm[-_]?4(\.\d+)?v", "glm4v"),
    (r"gemini", "gemini"),
    (r"cogvlm[-_]?grounding", "cogvlm"),
    (r"deepseek[-_]?vl2", "deepseekvl2"),
    (r"paligemma", "paligemma"),
    (r"florence[-_]?2", "florence2"),
    (r"kosmos[-_]?2", "kosmos2"),
    (r"shikra", "shikra"),
    (r"ferret", "ferret"),
    (r"llava", "llava"),
    (r"gpt|claude|grok|o[134]\b|o[134]-", "api"),
))


def served_name(model_args: Mapping) -> str | None:
    """The served model's name in ``--model_args`` (None when it names none)."""
    for key in NAME_KEYS:
        value = model_args.get(key)
        if value:
            return str(value)
    return None


def known_convention(model_args: Mapping) -> str | None:
    """The convention of the model a generic backend serves, when its name is one we know; else None."""
    name = served_name(model_args)
    for pattern, convention in PATTERNS:
        if name and pattern.search(name.lower()):
            return convention
    return None


def served_convention(model_args: Mapping) -> str:
    """The convention for the model a generic backend serves; ``api`` (uniform, said once) when it is unknown."""
    known = known_convention(model_args)
    if known is not None:
        return known
    name = served_name(model_args)
    say_once(f"no box language known for the served model {name!r}: it is asked the uniform 0-1 prompt (set "
             "PFMVG_BOX_FORMAT=<convention> to choose one)")
    return "api"
