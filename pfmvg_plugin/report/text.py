"""VQA and report-generation sections of ``pfmvg report`` (the PeFoMed tasks), from their logged per-sample records.

* **VQA** (``vqa_sample``, :mod:`pfmvg_plugin.lmms.vqa_task`): overall / closed / open exact accuracy and open recall
  as the task aggregates them (means of the logged ``correct`` / ``recall``; a generation or scoring error counts as
  wrong), with seeded bootstrap CIs; the same per answer type (closed / open) and per the dataset's question type
  where one is logged (VQA-RAD ``question_type``, SLAKE ``content_type``, synthcxr_vqa ``family``). Examples are
  ranked wrong before right, then by token recall.
* **Report generation** (``report_sample``, :mod:`pfmvg_plugin.lmms.report_task`): the task's corpus metrics
  recomputed the way its aggregation does (same names, same ``max_words`` cut, a generation error scored as an
  empty report), the mean per-sample ROUGE-L with its CI and the lengths; examples are ranked by the record's own
  per-sample ROUGE-L.

Examples (worst, typical, best; never the same sample twice) leave out generation and scoring errors, which the
numbers count. Each shows a thumbnail of the sample's image when its prepared dataset is readable, else the reason.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from pfmvg_plugin.report.overlays import ImageResolver, Missing
from pfmvg_plugin.report.samples import ReadStats
from pfmvg_plugin.report.task import TaskReport, new_task_report, read_task, slug

#: Longest side of a thumbnail, in pixels.
THUMB = 160
OK, GENERATION_ERROR = "ok", "generation_error"
#: Group of records that log no answer type / question type.
NO_GROUP = "(none)"


def mean_ci(values: list[float], n_bootstrap: int, seed: int) -> tuple[float | None, list[float] | None]:
    """Mean of ``values`` and its 95% percentile bootstrap CI (None when empty; no CI when ``n_bootstrap`` is 0)."""
    from pfmvg_plugin.metrics import bootstrap_means

    if not values:
        return None, None
    arr = np.asarray(values, dtype=float)
    if n_bootstrap <= 0 or arr.size < 2:
        return float(arr.mean()), None
    lo, hi = bootstrap_means(arr[:, None], n_bootstrap, seed, 0.95)[0]
    return float(arr.mean()), [float(lo), float(hi)]


def _rate(records: list[dict], status: str) -> float | None:
    return sum(r.get("status") == status for r in records) / len(records) if records else None


# ---- VQA -----------------------------------------------------------------------------------------------------------
def vqa_group(records: list[dict]) -> dict:
    """``n``, ``accuracy`` and the closed / open split of some VQA records (None where a subset is empty)."""
    closed = [r for r in records if r.get("answer_type") == "closed"]
    opened = [r for r in records if r.get("answer_type") == "open"]

    def acc(rs: list[dict]) -> float | None:
        return sum(bool(r.get("correct")) for r in rs) / len(rs) if rs else None

    return {"n": len(records), "accuracy": acc(records), "n_closed": len(closed), "closed_acc": acc(closed),
            "n_open": len(opened), "open_exact_acc": acc(opened),
            "open_recall": sum(float(r.get("recall") or 0.0) for r in opened) / len(opened) if opened else None}


def vqa_numbers(records: list[dict], n_bootstrap: int, seed: int) -> dict:
    """The task's headline numbers from the logged records, with bootstrap CIs."""
    closed = [r for r in records if r.get("answer_type") == "closed"]
    opened = [r for r in records if r.get("answer_type") == "open"]
    series = {"overall_acc": [float(bool(r.get("correct"))) for r in records],
              "closed_acc": [float(bool(r.get("correct"))) for r in closed],
              "open_exact_acc": [float(bool(r.get("correct"))) for r in opened],
              "open_recall": [float(r.get("recall") or 0.0) for r in opened]}
    out: dict = {"n": len(records), "n_closed": len(closed), "n_open": len(opened), "ci": {},
                 "n_bootstrap": n_bootstrap}
    for name, values in series.items():
        out[name], out["ci"][name] = mean_ci(values, n_bootstrap, seed)
    out["generation_error_rate"] = _rate(records, GENERATION_ERROR)
    out["scoring_errors"] = sum(r.get("status") not in (OK, GENERATION_ERROR) for r in records)
    return out


def vqa_groups(records: list[dict]) -> dict[str, dict]:
    """Per answer type and, where logged, per question type: :func:`vqa_group` of each."""
    out = {}
    for by in ("answer_type", "question_type"):
        groups: dict[str, list[dict]] = {}
        for r in records:
            groups.setdefault(str(r.get(by) or NO_GROUP), []).append(r)
        if set(groups) != {NO_GROUP}:
            out[by] = {g: vqa_group(groups[g]) for g in sorted(groups, key=lambda g: (g == NO_GROUP, g))}
    return out


def vqa_score(record: dict) -> float:
    """Rank of an answer: wrong before right, then by token recall (closed questions: none)."""
    return 2.0 * bool(record.get("correct")) + float(record.get("recall") or 0.0)


# ---- report generation ---------------------------------------------------------------------------------------------
def report_numbers(records: list[dict], n_bootstrap: int, seed: int) -> dict:
    """The task's corpus metrics recomputed from the logged records, plus mean per-sample ROUGE-L and lengths."""
    from pfmvg_plugin.lmms.report_task import ANSWER_CHARS, CORPUS_METRICS
    from pfmvg_plugin.metrics.text import score_reports

    scored = [r for r in records if isinstance(r.get("reference"), str)]
    cuts = {r.get("max_words") for r in scored}
    if len(cuts) > 1:
        raise ValueError(f"the samples disagree on max_words: {sorted(cuts, key=str)}")
    max_words = cuts.pop() if cuts else None
    out: dict = {"n": len(records), "max_words": max_words, "ci": {}, "n_bootstrap": n_bootstrap}
    if scored:
        predictions = ["" if r.get("status") == GENERATION_ERROR else str(r.get("prediction") or "") for r in scored]
        corpus = score_reports(predictions, [r["reference"] for r in scored], max_words=max_words)
        out.update({name: float(corpus[key]) for name, key in CORPUS_METRICS.items()})
        out["predictions_cut"] = sum(len(p) >= ANSWER_CHARS for p in predictions)
    else:
        out.update(dict.fromkeys(CORPUS_METRICS))
    rouge = [float(r["rouge_l"]) for r in records if isinstance(r.get("rouge_l"), (int, float))]
    out["rouge_l_mean"], out["ci"]["rouge_l_mean"] = mean_ci(rouge, n_bootstrap, seed)
    for key in ("prediction_words", "reference_words"):
        words = [r[key] for r in records if isinstance(r.get(key), int)]
        out[f"{key}_mean"] = float(np.mean(words)) if words else None
    out["generation_error_rate"] = _rate(records, GENERATION_ERROR)
    out["scoring_errors"] = sum(r.get("status") not in (OK, GENERATION_ERROR) for r in records)
    return out


def report_score(record: dict) -> float:
    """Rank of a generated report: its per-sample ROUGE-L."""
    return float(record["rouge_l"])


# ---- examples and thumbnails ---------------------------------------------------------------------------------------
def pick_examples(records: list[dict], score: Callable[[dict], float], k: int,
                  typical: bool = True) -> dict[str, list[dict]]:
    """The ``k`` worst, ``k`` typical (around the median) and ``k`` best records by ``score``, never one twice."""
    ranked = sorted(range(len(records)), key=lambda i: (score(records[i]), str(records[i].get("id"))))
    best = sorted(ranked, key=lambda i: (-score(records[i]), str(records[i].get("id"))))[:k]
    rest = [i for i in ranked if i not in set(best)]
    worst, rest = rest[:k], rest[k:]
    start = max(0, len(rest) // 2 - k // 2)
    out = {"worst": [records[i] for i in worst]}
    if typical:
        out["typical"] = [records[i] for i in rest[start:start + k]]
    out["best"] = [records[i] for i in best]
    return out


def add_thumbnails(examples: dict[str, list[dict]], task_dir: Path, out_dir: Path) -> list[Missing]:
    """Write a thumbnail of every shown record's image; set ``_thumb`` (path relative to the page) or ``_no_thumb``
    (why not) on the record. Returns the images that could not be shown."""
    from PIL import Image

    from pfmvg_plugin.data.images import load_image

    resolver = ImageResolver()
    unreadable: list[Missing] = []
    thumbs = task_dir / "thumbs"
    for n, record in enumerate(r for shown in examples.values() for r in shown):
        before = len(resolver.missing)
        path = resolver.resolve(record)
        if path is None:
            record["_no_thumb"] = resolver.missing[before].reason if len(resolver.missing) > before else "no image"
            continue
        try:
            image = load_image(path).convert("RGB")
            image.thumbnail((THUMB, THUMB), Image.LANCZOS)
            thumbs.mkdir(parents=True, exist_ok=True)
            png = thumbs / f"{n:03d}_{slug(str(record.get('id')))}.png"
            image.save(png)
        except (OSError, ValueError, ImportError) as e:
            record["_no_thumb"] = f"image unreadable ({e})"
            unreadable.append(Missing(str(record.get("id")), str(record.get("image")), record["_no_thumb"],
                                      str(record.get("dataset_dir"))))
            continue
        record["_thumb"] = png.relative_to(out_dir).as_posix()
    return resolver.missing + unreadable


# ---- the task ------------------------------------------------------------------------------------------------------
def report_text_task(task: str, kind: str, samples_path: Path, out_dir: Path, examples: int = 5,
                     n_bootstrap: int = 1000, seed: int = 0) -> TaskReport:
    """Read and score one VQA (``kind="vqa"``) or report-generation (``"report"``) task; thumbnails go to
    ``out_dir/<task>/thumbs/``."""
    stats = ReadStats()
    records = read_task(task, samples_path, kind, stats)
    try:
        summary = (vqa_numbers if kind == "vqa" else report_numbers)(records, n_bootstrap, seed)
    except ValueError as e:
        raise ValueError(f"task {task} ({samples_path}): {e}") from None
    errors = sum(r.get("status") == GENERATION_ERROR for r in records)
    rep = new_task_report(task, samples_path, kind, stats, records, summary, errors)
    if not records:
        rep.notes.append(f"no {kind} records in {samples_path.name}")
    if kind == "vqa":
        rep.groups = vqa_groups(records)
    elif summary.get("predictions_cut"):
        rep.notes.append(f"{summary['predictions_cut']} generated reports were cut in the log (the task keeps the "
                         "first characters): these corpus numbers can differ a little from lmms-eval's own")
    candidates = [r for r in records if r.get("status", OK) == OK
                  and (kind == "vqa" or isinstance(r.get("rouge_l"), (int, float)))]
    rep.examples = pick_examples(candidates, vqa_score if kind == "vqa" else report_score, examples,
                                 typical=kind == "report")
    rep.missing = add_thumbnails(rep.examples, out_dir / slug(task), out_dir)
    return rep
