"""Evaluation metrics (numpy + stdlib only; no torch).

>>> from pfmvg_plugin.metrics import score_text, aggregate
>>> s = score_text("{<25><10><75><50>}", [(100, 50, 300, 250)], size=(400, 500), codec="minigptv2")
>>> round(s.iou, 6), s.parsed
(1.0, True)
>>> aggregate([s], n_bootstrap=0)["acc@0.5"]
1.0
"""

from pfmvg_plugin.metrics.grounding import (
    DEFAULT_THRESHOLDS,
    FORMAT_CLASSES,
    GENERATION_ERROR,
    MultiBoxMode,
    SampleScore,
    aggregate,
    bootstrap_means,
    dice,
    format_compliance,
    iou,
    score_sample,
    score_text,
    union_overlap,
)

__all__ = [
    "DEFAULT_THRESHOLDS",
    "FORMAT_CLASSES",
    "GENERATION_ERROR",
    "MultiBoxMode",
    "SampleScore",
    "aggregate",
    "bootstrap_means",
    "dice",
    "format_compliance",
    "iou",
    "score_sample",
    "score_text",
    "union_overlap",
]

# ---- report generation and Med-VQA (appended) -------------------------------------------------------------------
from pfmvg_plugin.metrics.text import (  # noqa: E402
    bleu,
    cider_d,
    meteor,
    rouge_l,
    score_reports,
    sentence_meteor,
    sentence_rouge_l,
    tokenize,
)
from pfmvg_plugin.metrics.vqa import (  # noqa: E402
    closed_correct,
    normalize_answer,
    open_exact,
    score_vqa,
    token_recall,
)

__all__ += [
    "bleu",
    "cider_d",
    "closed_correct",
    "meteor",
    "normalize_answer",
    "open_exact",
    "rouge_l",
    "score_reports",
    "score_vqa",
    "sentence_meteor",
    "sentence_rouge_l",
    "token_recall",
    "tokenize",
]
