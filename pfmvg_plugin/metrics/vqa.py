"""Med-VQA metrics (VQA-RAD, SLAKE, PathVQA) with one explicitly stated protocol. numpy + stdlib only.

Published Med-VQA numbers mix protocols (exact match vs. "answer appears in the output", recall vs. accuracy on open
questions; see LLaVA-Med issue #28), so this module states its protocol and reports the open-question numbers of
both common protocols separately instead of mixing them into one:

1. **Normalisation** (:func:`normalize_answer`), applied to predictions and ground truths alike: lowercase; every
   character that is not a letter, digit or whitespace becomes a space, except a ``.`` between digits ("2.5");
   articles ``a``/``an``/``the`` are dropped; number words ``zero``..``twenty`` become digits; the informal yes/no
   words in :data:`YES_NO_SYNONYMS` (``yeah``/``yep``/``yup`` -> ``yes``, ``nope``/``nah`` -> ``no``) become
   ``yes``/``no``; whitespace is collapsed. Nothing else (no stemming, no synonyms of medical terms).
2. **Closed questions** (``answer_type`` "closed": yes/no and multiple choice) -- accuracy: a prediction is correct
   when its normalised text equals the normalised ground truth. When the ground truth is ``yes`` or ``no``, a
   prediction whose tokens contain exactly one of ``yes``/``no`` counts as that answer ("Yes, there is a mass." ->
   ``yes``); a prediction containing both counts as neither.
3. **Open questions** (``answer_type`` "open") -- two numbers, reported separately:
   (a) ``open_exact``: exact match of the normalised texts;
   (b) ``open_recall``: token recall, the share of ground-truth tokens that occur in the prediction (counts clipped:
   a ground-truth token occurring twice must occur twice) -- the LLaVA-Med open-question protocol. It rewards long
   answers that contain the right words, so it is not an accuracy.
4. **Overall** accuracy = the per-question correctness of rules 2 (closed) and 3a (open) averaged over all questions.

Confidence intervals are percentile bootstrap intervals of each mean (questions resampled with replacement, within
each subset), from :func:`pfmvg_plugin.metrics.grounding.bootstrap_means`.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence

import numpy as np

from pfmvg_plugin.metrics.grounding import bootstrap_means

ARTICLES = frozenset({"a", "an", "the"})
NUMBER_WORDS = {
    w: str(i)
    for i, w in enumerate(
        ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve")
        + ("thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen", "twenty")
    )
}
#: Informal answers mapped to ``yes``/``no``; deliberately minimal ("true"/"false", "present"/"absent" are not).
YES_NO_SYNONYMS = {"yeah": "yes", "yep": "yes", "yup": "yes", "nope": "no", "nah": "no"}

CLOSED, OPEN = "closed", "open"
_PUNCT_RE = re.compile(r"(?!(?<=\d)\.(?=\d))[^\w\s]|_")


def answer_tokens(text: str) -> list[str]:
    """Tokens of the normalised answer (see the module docstring, rule 1)."""
    words = _PUNCT_RE.sub(" ", str(text).lower()).split()
    out = []
    for w in words:
        if w in ARTICLES:
            continue
        out.append(YES_NO_SYNONYMS.get(w, NUMBER_WORDS.get(w, w)))
    return out


def normalize_answer(text: str) -> str:
    """Normalised answer text: :func:`answer_tokens` joined by single spaces."""
    return " ".join(answer_tokens(text))


def closed_correct(prediction: str, answer: str) -> bool:
    """Rule 2: exact match after normalisation; for a yes/no ground truth, a prediction with exactly one of yes/no."""
    gt = normalize_answer(answer)
    pred = answer_tokens(prediction)
    if " ".join(pred) == gt:
        return True
    if gt in ("yes", "no"):
        said = {t for t in pred if t in ("yes", "no")}
        return said == {gt}
    return False


def open_exact(prediction: str, answer: str) -> bool:
    """Rule 3a: exact match of the normalised texts."""
    return normalize_answer(prediction) == normalize_answer(answer)


def token_recall(prediction: str, answer: str) -> float:
    """Rule 3b: share of normalised ground-truth tokens present in the prediction (clipped counts).

    An answer with no tokens after normalisation (e.g. "the") has recall 1 when the prediction is empty too, else 0.
    """
    gt = Counter(answer_tokens(answer))
    pred = Counter(answer_tokens(prediction))
    total = sum(gt.values())
    if total == 0:
        return float(not pred)
    return sum(min(c, pred[t]) for t, c in gt.items()) / total


def _answer_type(value: str) -> str:
    t = str(value).strip().lower()
    if t not in (CLOSED, OPEN):
        raise ValueError(f"answer_type must be 'closed' or 'open' (any case), got {value!r}")
    return t


def _mean_ci(values: list[float], n_bootstrap: int, seed: int, ci: float) -> tuple[float | None, list[float] | None]:
    if not values:
        return None, None
    arr = np.asarray(values, dtype=np.float64)
    if n_bootstrap <= 0:
        return float(arr.mean()), None
    lo, hi = bootstrap_means(arr[:, None], n_bootstrap, seed, ci)[0]
    return float(arr.mean()), [float(lo), float(hi)]


def score_vqa(
    predictions: Sequence[str],
    answers: Sequence[str],
    answer_types: Sequence[str],
    n_bootstrap: int = 1000,
    seed: int = 0,
    ci: float = 0.95,
) -> dict:
    """Score Med-VQA answers by the protocol of the module docstring.

    Returns ``overall``, ``closed_acc``, ``open_exact``, ``open_recall`` (``None`` when the subset is empty),
    ``n``, ``n_closed``, ``n_open``, ``<metric>_ci`` (``[lo, hi]`` or ``None`` when ``n_bootstrap=0`` or the subset is
    empty), ``ci`` and ``protocol`` (a one-line statement of the protocol, to store alongside the numbers).
    """
    if not len(predictions) == len(answers) == len(answer_types):
        raise ValueError(
            f"lengths differ: {len(predictions)} predictions, {len(answers)} answers, {len(answer_types)} types"
        )
    types = [_answer_type(t) for t in answer_types]
    overall, closed, exact, recall = [], [], [], []
    for pred, gt, t in zip(predictions, answers, types):
        if t == CLOSED:
            ok = closed_correct(pred, gt)
            closed.append(float(ok))
        else:
            ok = open_exact(pred, gt)
            exact.append(float(ok))
            recall.append(token_recall(pred, gt))
        overall.append(float(ok))
    out: dict = {"n": len(types), "n_closed": len(closed), "n_open": len(exact)}
    for name, values in (("overall", overall), ("closed_acc", closed), ("open_exact", exact), ("open_recall", recall)):
        out[name], out[f"{name}_ci"] = _mean_ci(values, n_bootstrap, seed, ci)
    out["ci"] = ci
    out["protocol"] = (
        "normalised (lowercase, no punctuation/articles, number words->digits, yeah/nope->yes/no); closed: exact "
        "match, yes/no GT matched by a prediction with exactly one of yes/no; open_exact: exact match; open_recall: "
        "share of GT tokens in the prediction (LLaVA-Med); overall: exact-match accuracy over all"
    )
    return out
