"""Grounding metrics: IoU / Dice of pixel boxes, several-GT-box modes, Acc@t, mIoU, per-category and bootstrap CIs.

One code path serves lmms-eval ``process_results`` / aggregation, evaluation during training and ``pfmvg report``
(docs/ARCHITECTURE.md §3). Boxes are continuous xyxy pixel boxes (:mod:`pfmvg_plugin.geometry`). Pure numpy + stdlib.

Scoring model output never raises: text no codec can read scores IoU 0 / Dice 0 and counts as a parse failure under
its :class:`~pfmvg_plugin.codecs.ParseStatus`.

Several GT boxes for one phrase (:class:`MultiBoxMode`):

* ``max``   -- IoU of the first predicted box with its best-matching GT box (Dice with that same GT box).
* ``merge`` -- IoU of the first predicted box with the enclosing box of all GT boxes.
* ``union`` -- mask IoU of the union of *all* predicted boxes with the union of all GT boxes, by exact area
  arithmetic (no rasterisation).

``max`` and ``merge`` score only the first predicted box; further boxes in the output are ignored.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from enum import Enum

import numpy as np

from pfmvg_plugin.codecs import BoxCodec, ParseStatus, get_codec
from pfmvg_plugin.geometry import (
    Box,
    Size,
    box_area,
    box_iou,
    enclosing_box,
    from_inclusive,
    intersection,
    intersection_area,
    order_corners,
    union_area,
)

DEFAULT_THRESHOLDS: tuple[float, ...] = (0.1, 0.3, 0.5)

#: Upper bound on elements of one bootstrap resampling block (rows x samples x statistics), to bound memory.
_BOOTSTRAP_BLOCK = 4_000_000


#: Status of a query whose answer was never generated (the model failed on it). Scored IoU 0 like a parse failure,
#: but counted apart from parse failures: it says the run was broken, not that the model answered badly.
GENERATION_ERROR = "generation_error"

#: Format compliance: how an answer was written, whatever it points at. Parse statuses by class; generation and
#: scoring errors are in none. It tells a model that cannot write the format from one that cannot find the finding.
FORMAT_CLASSES: dict[str, tuple[str, ...]] = {
    "ok": ("ok",),
    "no_box": ("no_box",),
    "wrong_format": ("malformed", "non_finite", "not_text"),
    "out_of_range": ("out_of_range", "zero_area"),
}


def format_compliance(statuses: Sequence[str]) -> dict[str, float | None]:
    """Share of ``statuses`` (one per scored answer) in each :data:`FORMAT_CLASSES` class (None when empty)."""
    n = len(statuses)
    return {name: (sum(s in members for s in statuses) / n if n else None) for name, members in FORMAT_CLASSES.items()}


class MultiBoxMode(str, Enum):
    """How a prediction is scored against several GT boxes of one phrase (see the module docstring)."""

    MAX = "max"
    MERGE = "merge"
    UNION = "union"


# ---- single boxes ---------------------------------------------------------------------------------------------------
iou = box_iou  # ``iou(pred, gt, plus_one=False)``: the public name of :func:`pfmvg_plugin.geometry.box_iou`


def dice(pred: Sequence[float], gt: Sequence[float], plus_one: bool = False) -> float:
    """Dice coefficient ``2 * inter / (area_pred + area_gt)`` of two xyxy boxes (0 when both have zero area)."""
    if plus_one:
        pred, gt = from_inclusive(pred), from_inclusive(gt)
    total = box_area(pred) + box_area(gt)
    return 2.0 * intersection_area(pred, gt) / total if total > 0 else 0.0


# ---- several boxes ----------------------------------------------------------------------------------------------
def union_overlap(
    pred_boxes: Sequence[Sequence[float]], gt_boxes: Sequence[Sequence[float]], plus_one: bool = False
) -> tuple[float, float]:
    """``(iou, dice)`` of the union of ``pred_boxes`` against the union of ``gt_boxes`` as masks (exact areas)."""
    if plus_one:
        pred_boxes, gt_boxes = [from_inclusive(b) for b in pred_boxes], [from_inclusive(b) for b in gt_boxes]
    area_p, area_g = union_area(pred_boxes), union_area(gt_boxes)
    # (U p_i) n (U g_j) = U (p_i n g_j)
    overlaps = [inter for p in pred_boxes for g in gt_boxes if (inter := intersection(p, g)) is not None]
    inter = union_area(overlaps)
    union = area_p + area_g - inter
    iou_value = inter / union if union > 0 else 0.0
    dice_value = 2.0 * inter / (area_p + area_g) if area_p + area_g > 0 else 0.0
    return iou_value, dice_value


def _score_boxes(preds: Sequence[Box], gts: Sequence[Box], mode: MultiBoxMode, plus_one: bool) -> tuple[float, float]:
    if mode is MultiBoxMode.UNION:
        return union_overlap(preds, gts, plus_one)
    pred = preds[0]
    # max: the best GT box (the first of equals on ties); merge: the enclosing box of the GT boxes.
    target = enclosing_box(gts) if mode is MultiBoxMode.MERGE else max(gts, key=lambda g: iou(pred, g, plus_one))
    return iou(pred, target, plus_one), dice(pred, target, plus_one)


# ---- one sample -------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SampleScore:
    """The score of one query (one phrase). ``parsed`` is False when no usable box was read; then IoU = Dice = 0.

    ``pred_box`` is the first predicted box (the one scored in ``max`` / ``merge`` mode). ``status`` is a
    :class:`~pfmvg_plugin.codecs.ParseStatus` value. Use :meth:`to_dict` to hand scores through JSON (lmms-eval).
    """

    iou: float
    dice: float
    parsed: bool
    status: str
    pred_box: Box | None
    mode: str
    plus_one: bool = False

    def to_dict(self) -> dict:
        d = asdict(self)
        d["pred_box"] = None if self.pred_box is None else list(self.pred_box)
        return d

    @classmethod
    def from_dict(cls, d: Mapping) -> SampleScore:
        box = d.get("pred_box")
        return cls(
            iou=float(d["iou"]),
            dice=float(d["dice"]),
            parsed=bool(d["parsed"]),
            status=str(d["status"]),
            pred_box=None if box is None else tuple(float(v) for v in box),
            mode=str(d["mode"]),
            plus_one=bool(d.get("plus_one", False)),
        )


def _mode(mode: MultiBoxMode | str) -> MultiBoxMode:
    try:
        return MultiBoxMode(mode)
    except ValueError:
        choices = ", ".join(m.value for m in MultiBoxMode)
        raise ValueError(f"unknown multi-box mode {mode!r}; choose one of {choices}") from None


def _is_box(b: Sequence[float]) -> bool:
    return len(b) == 4 and all(math.isfinite(float(v)) for v in b)


def _gt_boxes(gt_boxes: Sequence[Sequence[float]]) -> list[Box]:
    if not gt_boxes or not all(_is_box(b) for b in gt_boxes):
        raise ValueError(f"a query needs one or more finite xyxy ground-truth boxes, got {gt_boxes!r}")
    return [order_corners([float(v) for v in b]) for b in gt_boxes]


def _failure_status(pred_boxes: Sequence | None, status: ParseStatus | str | None) -> str:
    if status is not None and status != ParseStatus.OK:
        return status.value if isinstance(status, ParseStatus) else str(status)
    return (ParseStatus.NON_FINITE if pred_boxes else ParseStatus.NO_BOX).value


def score_sample(
    pred_boxes: Sequence[Sequence[float]] | None,
    gt_boxes: Sequence[Sequence[float]],
    mode: MultiBoxMode | str = MultiBoxMode.MAX,
    plus_one: bool = False,
    status: ParseStatus | str | None = None,
) -> SampleScore:
    """Score predicted pixel boxes against the GT boxes of one phrase.

    ``pred_boxes`` None or empty (or only non-finite boxes) is a parse failure scoring 0; ``status`` (e.g. from
    :class:`~pfmvg_plugin.codecs.DecodeResult`) names the reason, defaulting to ``no_box``. Reversed corners of
    predicted boxes are reordered. Raises ``ValueError`` only for bad GT boxes or an unknown ``mode``.
    """
    mode = _mode(mode)
    gts = _gt_boxes(gt_boxes)
    preds = [order_corners([float(v) for v in b]) for b in (pred_boxes or ()) if _is_box(b)]
    if not preds:
        return SampleScore(0.0, 0.0, False, _failure_status(pred_boxes, status), None, mode.value, plus_one)
    iou_value, dice_value = _score_boxes(preds, gts, mode, plus_one)
    return SampleScore(iou_value, dice_value, True, ParseStatus.OK.value, preds[0], mode.value, plus_one)


def score_text(
    text: object,
    gt_boxes: Sequence[Sequence[float]],
    size: Size,
    codec: BoxCodec | str,
    mode: MultiBoxMode | str = MultiBoxMode.MAX,
    plus_one: bool = False,
) -> SampleScore:
    """Decode model output ``text`` with ``codec`` (a :class:`BoxCodec` or a registered name) and score it.

    ``size`` is the original image ``(width, height)``. Never raises on the content of ``text``: unreadable output
    scores 0 and is a parse failure carrying the decoder's status.
    """
    if isinstance(codec, str):
        codec = get_codec(codec)
    result = codec.decode(text, size)
    return score_sample(result.boxes, gt_boxes, mode, plus_one, status=result.status)


# ---- aggregation ------------------------------------------------------------------------------------------------
def _acc_key(t: float) -> str:
    return f"acc@{t:g}"


def _as_score(s: SampleScore | Mapping) -> SampleScore:
    return s if isinstance(s, SampleScore) else SampleScore.from_dict(s)


def _stat_matrix(ious: np.ndarray, dices: np.ndarray, thresholds: Sequence[float]) -> tuple[list[str], np.ndarray]:
    """Per-sample columns whose means are the reported statistics."""
    names = [_acc_key(t) for t in thresholds] + ["miou", "mdice"]
    cols = [(ious >= t).astype(float) for t in thresholds] + [ious, dices]
    return names, np.stack(cols, axis=1)


def bootstrap_means(values: np.ndarray, n_bootstrap: int, seed: int, ci: float) -> np.ndarray:
    """Percentile bootstrap CIs of the column means of ``values`` (n x k) -> array (k, 2) of ``[lo, hi]``.

    Resamples rows with replacement, vectorised in blocks; deterministic for a given ``seed`` and input.
    """
    n, k = values.shape
    rng = np.random.default_rng(seed)
    rows = max(1, _BOOTSTRAP_BLOCK // max(1, n * k))
    means = []
    for start in range(0, n_bootstrap, rows):
        idx = rng.integers(0, n, size=(min(rows, n_bootstrap - start), n))
        means.append(values[idx].mean(axis=1))
    alpha = (1.0 - ci) / 2.0
    return np.quantile(np.concatenate(means), [alpha, 1.0 - alpha], axis=0).T


def _summary(ious: np.ndarray, thresholds: Sequence[float]) -> dict:
    out: dict = {"n": int(ious.size)}
    for t in thresholds:
        out[_acc_key(t)] = float(np.mean(ious >= t)) if ious.size else None
    out["miou"] = float(ious.mean()) if ious.size else None
    return out


def _per_category(ious: np.ndarray, categories: Sequence[str | None], thresholds: Sequence[float]) -> dict:
    groups: dict[str, list[int]] = {}
    for i, c in enumerate(categories):
        if c is not None:
            groups.setdefault(str(c), []).append(i)
    return {name: _summary(ious[groups[name]], thresholds) for name in sorted(groups)}


def _common(scores: Sequence[SampleScore], field: str) -> object:
    values = {getattr(s, field) for s in scores}
    if len(values) > 1:
        raise ValueError(f"cannot aggregate scores with different {field} settings: {sorted(map(str, values))}")
    return values.pop() if values else None


def aggregate(
    samples: Sequence[SampleScore | Mapping],
    categories: Sequence[str | None] | None = None,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    n_bootstrap: int = 1000,
    seed: int = 0,
    ci: float = 0.95,
) -> dict:
    """Acc@t, mIoU, mDice, parse failures, per-category numbers and bootstrap CIs of scored queries (JSON-ready).

    ``samples`` are :class:`SampleScore` objects or their :meth:`~SampleScore.to_dict` form. ``categories`` (one per
    sample, None = uncategorised) gives ``per_category``. Undefined values (empty input, ``n_bootstrap=0``) are None.
    Raises ``ValueError`` when the samples mix multi-box modes or IoU conventions.
    """
    scores = [_as_score(s) for s in samples]
    if categories is not None and len(categories) != len(scores):
        raise ValueError(f"got {len(categories)} categories for {len(scores)} samples")
    if not 0.0 < ci < 1.0:
        raise ValueError("ci must be between 0 and 1")
    ious = np.array([s.iou for s in scores], dtype=float)
    dices = np.array([s.dice for s in scores], dtype=float)
    failures = Counter(s.status for s in scores if not s.parsed)
    generation_errors = failures.pop(GENERATION_ERROR, 0)
    n = len(scores)
    result = _summary(ious, thresholds)
    result.update(
        mode=_common(scores, "mode"),
        plus_one=_common(scores, "plus_one"),
        mdice=float(dices.mean()) if n else None,
        parse_failure_rate=sum(failures.values()) / n if n else None,
        parse_failures=dict(sorted(failures.items())),
        generation_error_rate=generation_errors / n if n else None,
        generation_errors=generation_errors,
        per_category=_per_category(ious, categories, thresholds) if categories is not None else {},
    )
    names, values = _stat_matrix(ious, dices, thresholds)
    if n and n_bootstrap > 0:
        bounds = bootstrap_means(values, n_bootstrap, seed, ci)
        result["ci"] = {name: [float(lo), float(hi)] for name, (lo, hi) in zip(names, bounds, strict=True)}
    else:
        result["ci"] = {name: None for name in names}
    result.update(ci_level=ci, n_bootstrap=int(n_bootstrap), seed=seed)
    return result
