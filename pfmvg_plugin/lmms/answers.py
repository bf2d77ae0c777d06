"""The answer our lmms-eval model classes give when generation failed, and how tasks recognise it.

lmms-eval needs one string per request, so a failed sample cannot simply be dropped; an empty string would be
scored as a model that answered nothing. Our models answer ``GENERATION_ERROR_MARKER <Type>: <message>`` instead,
and our tasks score it IoU 0 with status ``generation_error``, counted apart from parse failures.
"""

from __future__ import annotations

GENERATION_ERROR_MARKER = "<<pfmvg:generation_error>>"


def error_answer(exc: BaseException) -> str:
    """The answer recorded for a sample whose generation failed (one line, bounded length)."""
    message = " ".join(str(exc).split())[:500]
    return f"{GENERATION_ERROR_MARKER} {type(exc).__name__}: {message}"


def is_error_answer(answer: object) -> bool:
    return isinstance(answer, str) and answer.lstrip().startswith(GENERATION_ERROR_MARKER)
