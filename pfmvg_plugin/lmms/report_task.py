"""The library side of our report-generation lmms-eval tasks (``tasks/report/*.yaml`` call into this module).

Tasks: ``iuxray_report`` and ``mimiccxr_report``, the test split of the datasets ``pfmvg data prepare iuxray`` /
``pfmvg data prepare mimiccxr_reports`` write under ``$PFMVG_DATA_ROOT/<dataset>``, and ``synthcxr_report`` (short
synthetic findings paragraphs about the synthcxr radiographs, generated offline on first use); group ``med_report``.
``iuxray_report_50w`` / ``mimiccxr_report_50w`` score the same generations PeFoMed's way, with both the generated
and the reference report cut to their first 50 words. Missing data stops the run at once with the exact command to
run (:mod:`pfmvg_plugin.lmms.task_data`). The model sees the record's first view (``image``); all views are logged.

Scoring protocol (:mod:`pfmvg_plugin.metrics.text`, Java-free):

* **normalisation** -- :func:`~pfmvg_plugin.metrics.text.tokenize` on prediction and reference alike: lowercase, word
  tokens (letters/digits, internal ``-`` ``/`` and decimal points kept), punctuation dropped -- the stand-in for the
  COCO toolkit's PTBTokenizer step;
* **truncation** -- none unless the task says so (``max_words``: the ``*_50w`` tasks keep the first 50 tokens of
  both texts, as PeFoMed); the value is a row of every results table (``max_words``: ``none`` or ``50``);
* **corpus metrics**, computed in the aggregation over all (prediction, reference) pairs, never averaged per sample:
  ``bleu1``..``bleu4`` (corpus BLEU as ``pycocoevalcap.bleu.Bleu(4)``), ``rouge_l`` (as ``pycocoevalcap.rouge``),
  ``cider_d`` (CIDEr-D as ``pycocoevalcap.cider``, IDF from this corpus's references), all equal to pycocoevalcap on
  the same tokens; ``meteor_simple`` is :func:`~pfmvg_plugin.metrics.text.meteor`, an exact-match METEOR that is
  **not** METEOR 1.5 (no stemming/synonyms): do not compare it with published METEOR numbers.

A model output carrying :data:`~pfmvg_plugin.lmms.answers.GENERATION_ERROR_MARKER` is scored as an empty report and
counted in ``generation_error_rate``; :func:`process_results` never raises. Per doc it returns the full record under
``report_sample`` (logged with ``--log_samples``, not aggregated: id, image(s), reference, prediction, both normalised
forms, their lengths, the sample's own ROUGE-L, status, ...) and the pair ``{id, prediction, reference, max_words,
status}`` under every aggregated key.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from pfmvg_plugin.lmms import state, task_data
from pfmvg_plugin.lmms.answers import is_error_answer
from pfmvg_plugin.lmms.task_data import DataNotPreparedError, check_doc, mapping_items, one_label
from pfmvg_plugin.metrics.text import score_reports, sentence_rouge_l, tokenize
from pfmvg_plugin.prompts import build_prompt

__all__ = ["DataNotPreparedError"]

#: Key of the full per-sample record in ``process_results`` (and so in the samples log).
SAMPLE_KEY = "report_sample"
#: The prediction is kept in the per-sample record up to this many characters (scoring uses all of it).
ANSWER_CHARS = 4000
#: PeFoMed's cut: both reports truncated to their first 50 words (the ``*_50w`` tasks).
PEFOMED_MAX_WORDS = 50
OK, GENERATION_ERROR, SCORING_ERROR, IMAGE_ERROR = "ok", "generation_error", "scoring_error", "image_error"

#: The commands that create each dataset (shown when it is missing).
PREPARE_COMMANDS = {
    "iuxray": "pfmvg data prepare iuxray --annotations <iu_xray/annotation.json> --images <iu_xray/images>",
    "mimiccxr_reports": "pfmvg data prepare mimiccxr_reports --annotations <mimic_cxr/annotation.json> "
                        "--images <MIMIC-CXR-JPG root>",
    "synthcxr_reports": "pfmvg data synth-vqa --reports",
}
#: Corpus metrics (key in the results -> key of :func:`pfmvg_plugin.metrics.text.score_reports`).
CORPUS_METRICS = {"bleu1": "bleu1", "bleu2": "bleu2", "bleu3": "bleu3", "bleu4": "bleu4", "rouge_l": "rouge_l",
                  "meteor_simple": "meteor", "cider_d": "cider"}
#: Aggregated keys, in the order the task YAMLs list them.
METRICS = (*CORPUS_METRICS, "generation_error_rate", "n_scored", "image_errors", "max_words", "prompt_convention")


# ---- docs -----------------------------------------------------------------------------------------------------------
def _doc(record: Mapping, dataset_dir: str, max_words: int | None) -> dict:
    """The plain columns lmms-eval gets for one report record."""
    image = str(record["image"])
    return {
        "id": str(record["id"]),
        "source": str(record["source"]),
        "split": str(record["split"]),
        "image": image,
        "images": [str(v) for v in (record.get("images") or [image])],
        "report": str(record["report"]),
        "max_words": max_words,
        "dataset_dir": dataset_dir,
    }


def ensure_synthcxr_reports(path: Path) -> Path:
    """Build ``synthcxr_reports`` at ``path`` unless it exists: from the synthcxr dataset beside it, itself generated
    first when missing (with the grounding tasks' settings, under their lock). Written to a temporary folder beside
    ``path`` and renamed into place, so a concurrent caller never sees a half-written dataset."""
    if (path / "dataset.json").is_file():
        return path
    from pfmvg_plugin.data.synth.vqa import generate_synthcxr_reports
    from pfmvg_plugin.lmms.grounding_task import ensure_synthcxr

    source = ensure_synthcxr(path.parent / "synthcxr")
    print(f"pfmvg_plugin: building the synthcxr_reports dataset under {path} (once)", file=sys.stderr)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        generate_synthcxr_reports(source, tmp)
        try:
            if path.exists() and not any(path.iterdir()):
                path.rmdir()
            os.rename(tmp, path)
        except OSError:
            if not (path / "dataset.json").is_file():  # not just another process finishing first
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path


#: Datasets a task generates on first use instead of asking for ``pfmvg data prepare``.
GENERATED: dict[str, Callable[[Path], Path]] = {"synthcxr_reports": ensure_synthcxr_reports}


def load_docs(dataset: str, split: str, max_words: int | None = None) -> list[dict]:
    """The report docs of a prepared dataset's split; raises :class:`DataNotPreparedError` with the fix.

    ``max_words`` (None: no cut) is stored in every doc: the scoring truncates both texts to that many tokens.
    ``synthcxr_reports`` (synthetic, offline) is generated on first use.
    """
    if max_words is not None and (isinstance(max_words, bool) or not isinstance(max_words, int) or max_words < 1):
        raise ValueError(f"max_words must be a positive integer or None, got {max_words!r}")
    return task_data.load_docs(dataset, split, "report", lambda r, d: _doc(r, d, max_words), PREPARE_COMMANDS,
                               GENERATED)


def process_docs(dataset, name: str, split: str, max_words: int | None = None):
    """lmms-eval ``process_docs`` (the shipped stub replaced by our docs, or by one error row). Never raises."""
    return task_data.process_docs(name, split, lambda: load_docs(name, split, max_words))


def data_problem(dataset: str, split: str) -> str | None:
    """Why ``split`` of ``dataset`` is not prepared, or None (generated datasets are always ready)."""
    return task_data.data_problem(dataset, split, PREPARE_COMMANDS, GENERATED)


def docs_for(dataset: str, split: str, max_words: int | None = None, name: str | None = None):
    """The ``process_docs`` function of a task YAML (``utils.<dataset>_<split>_docs``); ``name``: the task's key when
    another task reads the same data (:func:`pfmvg_plugin.lmms.task_data.docs_function`)."""
    return task_data.docs_function(process_docs, data_problem, dataset, split, name, max_words=max_words)


# ---- prompts, visuals, targets -----------------------------------------------------------------------------------
def doc_to_text(doc: Mapping, lmms_eval_specific_kwargs: Mapping | None = None) -> str:
    """The report prompt in the convention the task kwargs select for the model; records that convention."""
    check_doc(doc)
    convention = state.resolve_convention(lmms_eval_specific_kwargs)
    state.note_prompt_convention(convention, doc)
    return build_prompt("report", convention)


doc_to_visual = task_data.doc_to_visual


def doc_to_target(doc: Mapping) -> str:
    check_doc(doc)
    return str(doc.get("report", ""))


# ---- scoring ------------------------------------------------------------------------------------------------------
def _max_words(value: object) -> int | None:
    return None if value is None else int(value)


def score_answer(doc: Mapping, answer: object, convention: str | None = None) -> tuple[dict, dict]:
    """``(pair for the corpus metrics, per-sample record)`` for one generated report. Never raises."""
    convention = convention or state.prompt_convention(doc)
    prediction = task_data.as_text(answer)
    reference = str(doc.get("report", ""))
    status, error, scored = OK, None, prediction
    if is_error_answer(prediction):
        status, scored = GENERATION_ERROR, ""  # scored as an empty report
    try:
        max_words = _max_words(doc.get("max_words"))
        hyp, ref = tokenize(scored, max_words=max_words), tokenize(reference, max_words=max_words)
        rouge = sentence_rouge_l(hyp, [ref])
    except Exception as exc:  # a bad doc: lmms-eval retries process_results 5x on exceptions
        max_words, hyp, ref, rouge = None, [], [], None
        status, error = SCORING_ERROR, f"{type(exc).__name__}: {exc}"[:500]
    pair = {"id": doc.get("id"), "prediction": scored, "reference": reference, "max_words": max_words,
            "status": status}
    record = {
        "id": doc.get("id"),
        "dataset_dir": doc.get("dataset_dir"),
        "image": doc.get("image"),
        "images": list(doc.get("images") or []),
        "reference": reference,
        "prediction": prediction[:ANSWER_CHARS],
        "reference_normalized": " ".join(ref),
        "prediction_normalized": " ".join(hyp),
        "reference_words": len(ref),
        "prediction_words": len(hyp),
        "max_words": max_words,
        "rouge_l": rouge,
        "status": status,
        "error": error,
        "convention": convention,
        "source": doc.get("source"),
        "split": doc.get("split"),
    }
    return pair, record


def process_results(doc: Mapping, results: Sequence) -> dict:
    """lmms-eval ``process_results``: the per-sample record and the (prediction, reference) pair per corpus metric.

    Never raises: lmms-eval retries it 5x on an exception and then aborts the evaluation.
    """
    convention = state.prompt_convention(doc)
    problem = task_data.doc_image_problem(doc)
    if problem is not None:  # the view shown cannot be read: left out of every metric, counted apart
        record = {"id": doc.get("id"), "image": doc.get("image"), "status": IMAGE_ERROR, "error": problem,
                  "convention": convention}
        out = {SAMPLE_KEY: record, **{name: None for name in (*CORPUS_METRICS, "generation_error_rate")}}
        max_words = _max_words(doc.get("max_words"))
        out.update(max_words="none" if max_words is None else str(max_words), prompt_convention=convention,
                   **task_data.image_accounting(doc, problem))
        return out
    try:
        pair, record = score_answer(doc, task_data.answer_text(results), convention)
    except Exception as exc:  # pragma: no cover - score_answer already catches; keep the run alive regardless
        pair = {"id": doc.get("id"), "prediction": "", "reference": str(doc.get("report", "")), "max_words": None,
                "status": SCORING_ERROR}
        record = {"id": doc.get("id"), "status": SCORING_ERROR, "error": f"{type(exc).__name__}: {exc}"}
    out: dict = {SAMPLE_KEY: record}
    out.update({name: pair for name in (*CORPUS_METRICS, "generation_error_rate")})
    out["max_words"] = "none" if pair.get("max_words") is None else str(pair["max_words"])
    out["prompt_convention"] = convention
    out.update(task_data.image_accounting(doc, None))
    return out


# ---- aggregation --------------------------------------------------------------------------------------------------
_cache: dict[tuple, dict] = {}


def corpus_scores(items: list) -> dict | None:
    """:func:`~pfmvg_plugin.metrics.text.score_reports` over the pairs ``items`` (None when there are none).

    Every corpus metric of one task aggregates the same pairs, so the last result is cached by their content.
    All pairs must share one ``max_words``.
    """
    pairs = mapping_items(items)
    if not pairs:
        return None
    cuts = {p.get("max_words") for p in pairs}
    if len(cuts) != 1:
        raise ValueError(f"the samples disagree on max_words: {sorted(cuts, key=str)}")
    (max_words,) = cuts
    key = (max_words, tuple((str(p.get("prediction", "")), str(p.get("reference", ""))) for p in pairs))
    if key not in _cache:
        _cache.clear()
        _cache[key] = score_reports([k[0] for k in key[1]], [k[1] for k in key[1]], max_words=max_words)
    return _cache[key]


def _guarded(name: str, compute: Callable[[list], float | None]) -> Callable[[list], float | None]:
    return task_data.guarded_aggregation(name, compute, f"corpus {name} of the (prediction, reference) pairs.")


def _corpus(key: str) -> Callable[[list], float | None]:
    def compute(items: list) -> float | None:
        scores = corpus_scores(items)
        return None if scores is None else float(scores[key])

    return compute


def _error_rate(items: list) -> float | None:
    pairs = mapping_items(items)
    return sum(p.get("status") == GENERATION_ERROR for p in pairs) / len(pairs) if pairs else None


bleu1 = _guarded("bleu1", _corpus("bleu1"))
bleu2 = _guarded("bleu2", _corpus("bleu2"))
bleu3 = _guarded("bleu3", _corpus("bleu3"))
bleu4 = _guarded("bleu4", _corpus("bleu4"))
rouge_l = _guarded("rouge_l", _corpus("rouge_l"))
meteor_simple = _guarded("meteor_simple", _corpus("meteor"))
cider_d = _guarded("cider_d", _corpus("cider"))
generation_error_rate = _guarded("generation_error_rate", _error_rate)


#: Aggregation function per metric (the YAMLs reference these through ``utils.py``).
AGGREGATIONS: dict[str, Callable] = {
    "bleu1": bleu1,
    "bleu2": bleu2,
    "bleu3": bleu3,
    "bleu4": bleu4,
    "rouge_l": rouge_l,
    "meteor_simple": meteor_simple,
    "cider_d": cider_d,
    "generation_error_rate": generation_error_rate,
    "n_scored": task_data.count_scored,
    "image_errors": task_data.count_image_errors,
    "max_words": one_label,
    "prompt_convention": one_label,
}
