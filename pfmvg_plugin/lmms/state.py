"""Which prompt convention (and so which box format) the current lmms-eval run uses.

lmms-eval runs one model per process. Our model classes announce their own convention when constructed
(:func:`set_model_convention`); a task's ``doc_to_text`` resolves the convention for the model being evaluated
(:func:`resolve_convention`) and records it, so that ``process_results`` — which lmms-eval calls without the
model-specific kwargs — decodes answers in exactly the format the prompt asked for (:func:`prompt_convention`).
"""

from __future__ import annotations

from collections.abc import Mapping

from pfmvg_plugin.codecs import BoxCodec, available_codecs, get_codec
from pfmvg_plugin.prompts import CONVENTIONS, convention_codec

#: Convention used when a task's kwargs name none (LLaVA-1.5 floats, as lmms-eval's refcoco tasks use).
DEFAULT_CONVENTION = "llava"
#: The kwargs value meaning "whatever the model under evaluation says".
FROM_MODEL = "model"

_model_convention: str | None = None
_model_codec: str | None = None
_prompt_convention: str | None = None


def set_model_convention(convention: str | None, codec: str | None = None) -> None:
    """Called by our lmms-eval model classes with the convention their ``box_format`` argument selects.

    ``codec`` names the box codec the model was trained to answer in when it differs from the convention's default
    (e.g. ``llava_pad`` after training on padded images); answers to prompts in that convention are decoded with it.
    """
    global _model_convention, _model_codec
    if convention is not None and convention not in CONVENTIONS:
        raise ValueError(f"unknown prompt convention {convention!r}; choose one of {', '.join(CONVENTIONS)}")
    if codec is not None and codec not in available_codecs():
        raise ValueError(f"unknown box codec {codec!r}; choose one of {', '.join(available_codecs())}")
    _model_convention, _model_codec = convention, codec


def model_convention() -> str | None:
    return _model_convention


def resolve_convention(kwargs: Mapping | None) -> str:
    """The convention for a task's ``lmms_eval_specific_kwargs`` (``convention: model`` defers to our model)."""
    convention = (kwargs or {}).get("convention") or DEFAULT_CONVENTION
    if convention == FROM_MODEL:
        convention = _model_convention or DEFAULT_CONVENTION
    if convention not in CONVENTIONS:
        raise ValueError(f"unknown prompt convention {convention!r}; choose one of {', '.join(CONVENTIONS)}")
    return convention


def note_prompt_convention(convention: str) -> None:
    """Record the convention prompts were written in (called from ``doc_to_text``)."""
    global _prompt_convention
    _prompt_convention = convention


def prompt_convention() -> str:
    """The convention prompts of this run were written in; answers are decoded with its codec."""
    return _prompt_convention or _model_convention or DEFAULT_CONVENTION


def answer_codec(convention: str | None = None) -> BoxCodec:
    """The codec answers to prompts in ``convention`` (default: this run's) are decoded with."""
    convention = convention or prompt_convention()
    if _model_codec is not None and convention == _model_convention:
        return get_codec(_model_codec)
    return convention_codec(convention)


def reset() -> None:
    """Forget everything (tests)."""
    global _model_convention, _model_codec, _prompt_convention
    _model_convention = _model_codec = _prompt_convention = None
