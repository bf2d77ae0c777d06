"""Which prompt convention (and so which box format) each task of the current lmms-eval run uses.

lmms-eval hands ``doc_to_text`` the task's per-model kwargs but calls ``process_results`` with the doc and the
answers only, so the convention a prompt was written in must reach scoring some other way. It is recorded *per task*:
every doc carries its task's key (:data:`TASK_KEY`, a column :func:`pfmvg_plugin.lmms.task_data.docs_function`
adds), ``doc_to_text`` records the convention it resolved under that key (:func:`note_prompt_convention`), and
``process_results`` / ``doc_to_target`` read it back for the doc's own task (:func:`prompt_convention`). Two tasks of
different conventions in one run never decode with each other's format.

Our model classes announce the convention their ``box_format`` selects when constructed
(:func:`set_model_convention`): lmms-eval runs one model per process, and ``convention: model`` in a task's kwargs
defers to it (:func:`resolve_convention`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from pfmvg_plugin.codecs import BoxCodec, available_codecs, get_codec
from pfmvg_plugin.prompts import CONVENTIONS, convention_codec

#: Convention used when a task's kwargs name none (LLaVA-1.5 floats, as lmms-eval's refcoco tasks use).
DEFAULT_CONVENTION = "llava"
#: The kwargs value meaning "whatever the model under evaluation says".
FROM_MODEL = "model"
#: Environment variable naming a convention that every model of the run is asked in (explicit override).
OVERRIDE_ENV = "PFMVG_BOX_FORMAT"

#: Column of every doc naming its task (the key conventions are recorded under).
TASK_KEY = "pfmvg_task"

_model_convention: str | None = None
_model_codec: str | None = None
_model_codec_options: dict = {}
_prompt_conventions: dict[str, str] = {}  # task key -> the convention its prompts were written in
_frames: dict[str, str] = {}  # task key -> the image frame its images were shown in (FRAMES)
_codec_options: dict[str, dict] = {}  # task key -> the frame of its convention's codec (Qwen2.5-VL pixel budget)
_protocols: dict[str, str] = {}  # task key -> "native" (the model's own box language) or "uniform" (0-1 for all)
PROTOCOLS = ("native", "uniform")

#: How a task shows the model its images: as they are (the model's processor decides), or padded to a square first
#: (LLaVA-1.5's expand2square, so a centre-cropping processor keeps the whole image; boxes are then relative to the
#: square: the ``llava_pad`` codec).
FRAMES = ("original", "pad")


def set_model_convention(convention: str | None, codec: str | None = None,
                         codec_options: Mapping | None = None) -> None:
    """Called by our lmms-eval model classes with the convention their ``box_format`` argument selects.

    ``codec`` names the box codec the model was trained to answer in when it differs from the convention's default
    (e.g. ``llava_pad`` after training on padded images); answers to prompts in that convention are decoded with it,
    built with ``codec_options`` (its frame: e.g. the min/max pixels of a Qwen2.5-VL processor).
    """
    global _model_convention, _model_codec, _model_codec_options
    if convention is not None and convention not in CONVENTIONS:
        raise ValueError(f"unknown prompt convention {convention!r}; choose one of {', '.join(CONVENTIONS)}")
    if codec is not None and codec not in available_codecs():
        raise ValueError(f"unknown box codec {codec!r}; choose one of {', '.join(available_codecs())}")
    if codec is not None:
        get_codec(codec, **dict(codec_options or {}))  # fail here, not at scoring, on options the codec rejects
    _model_convention, _model_codec, _model_codec_options = convention, codec, dict(codec_options or {})


def model_convention() -> str | None:
    return _model_convention


def resolve_convention(kwargs: Mapping | None) -> str:
    """The convention for a task's ``lmms_eval_specific_kwargs`` (``convention: model`` defers to our model);
    :data:`OVERRIDE_ENV` in the environment wins over both."""
    convention = os.environ.get(OVERRIDE_ENV) or (kwargs or {}).get("convention") or DEFAULT_CONVENTION
    if convention == FROM_MODEL:
        convention = _model_convention or DEFAULT_CONVENTION
    if convention not in CONVENTIONS:
        raise ValueError(f"unknown prompt convention {convention!r}; choose one of {', '.join(CONVENTIONS)}")
    return convention


def _task_of(doc_or_task) -> str:
    if isinstance(doc_or_task, Mapping):
        return str(doc_or_task.get(TASK_KEY) or "")
    return str(doc_or_task or "")


def note_prompt_convention(convention: str, task: Mapping | str | None = None, frame: str | None = None,
                           codec_options: Mapping | None = None, protocol: str = "native") -> None:
    """Record the convention the prompts of ``task`` (a doc, or its task key) were written in, the frame its
    images were shown in, the options that place its codec in the model's input frame (``doc_to_text``; e.g. the
    min/max pixels of a built-in Qwen2.5-VL) and the protocol (``native``: the model's own box language; ``uniform``:
    one 0-1 prompt for every model). Raises ``ValueError`` for a frame the convention's box format cannot express,
    options its codec rejects or an unknown protocol."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; choose one of {', '.join(PROTOCOLS)}")
    frame = frame or "original"
    if frame not in FRAMES:
        raise ValueError(f"unknown image frame {frame!r}; choose one of {', '.join(FRAMES)}")
    if frame == "pad" and convention_codec(convention).name != "llava":
        raise ValueError(f"frame 'pad' needs boxes normalised to the padded square (LLaVA floats); the {convention!r} "
                         "convention writes another box format")
    options = dict(codec_options or {})
    if options:
        convention_codec(convention, **options)  # fail at the prompt, not at scoring
    _prompt_conventions[_task_of(task)] = convention
    _frames[_task_of(task)] = frame
    _codec_options[_task_of(task)] = options
    _protocols[_task_of(task)] = protocol


def frame(task: Mapping | str | None = None) -> str:
    """The image frame of ``task`` (a doc, or its task key): ``original`` unless its kwargs said ``pad``."""
    return _frames.get(_task_of(task), "original")


def protocol(task: Mapping | str | None = None) -> str:
    """The protocol ``task``'s prompts were asked in (``native`` unless recorded otherwise)."""
    return _protocols.get(_task_of(task), "native")


def prompt_convention(task: Mapping | str | None = None) -> str:
    """The convention the prompts of ``task`` (a doc, or its task key) were written in; answers are decoded with its
    codec. A task whose prompts were never rendered here falls back to the model's convention, then the default."""
    return _prompt_conventions.get(_task_of(task)) or _model_convention or DEFAULT_CONVENTION


def answer_codec(convention: str | None = None, task: Mapping | str | None = None) -> BoxCodec:
    """The codec answers to prompts in ``convention`` (default: the one ``task``'s prompts used) are decoded with."""
    convention = convention or prompt_convention(task)
    if _model_codec is not None and convention == _model_convention:
        return get_codec(_model_codec, **_model_codec_options)
    if convention == prompt_convention(task):
        if frame(task) == "pad":
            return get_codec("llava_pad")
        return convention_codec(convention, **_codec_options.get(_task_of(task), {}))
    return convention_codec(convention)


def reset() -> None:
    """Forget everything (tests)."""
    global _model_convention, _model_codec, _model_codec_options
    _model_convention = _model_codec = None
    _model_codec_options = {}
    _prompt_conventions.clear()
    _frames.clear()
    _codec_options.clear()
    _protocols.clear()
