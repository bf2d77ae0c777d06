"""The library side of our Med-VQA lmms-eval tasks (``tasks/vqa/*.yaml`` call into this module).

Tasks: ``pfmvg_vqarad``, ``pfmvg_slake``, ``pfmvg_pathvqa`` (the test split of the datasets
``pfmvg data prepare vqarad|slake|pathvqa`` writes under ``$PFMVG_DATA_ROOT/<dataset>``; the ``pfmvg_`` prefix keeps
them apart from lmms-eval's built-in ``slake`` group, which would shadow a task of that name) and ``synthcxr_vqa``
(synthetic questions about the synthcxr radiographs, generated offline on first use); group ``med_vqa``. Missing data
stops the run at once with the exact command to run (:mod:`pfmvg_plugin.lmms.task_data`).

Scoring is :mod:`pfmvg_plugin.metrics.vqa`, whose protocol is stated there and repeated here because published
Med-VQA numbers mix protocols (LLaVA-Med issue #28):

* both texts are normalised (:func:`~pfmvg_plugin.metrics.vqa.normalize_answer`: lowercase, punctuation and articles
  dropped, number words -> digits, yeah/nope -> yes/no);
* ``closed_acc`` -- closed questions (yes/no, multiple choice): exact match; a yes/no ground truth is also matched by
  a prediction that contains exactly one of yes/no ("Yes, there is." counts as yes);
* ``open_exact_acc`` -- open questions: exact match of the normalised texts (an accuracy);
* ``open_recall`` -- open questions: share of the ground-truth tokens present in the prediction (the LLaVA-Med
  protocol; rewards long answers, *not* an accuracy, never mix it with the other two);
* ``overall_acc`` -- closed rule and open exact match averaged over all questions.

A model output carrying :data:`~pfmvg_plugin.lmms.answers.GENERATION_ERROR_MARKER` is wrong (recall 0) and counted in
``generation_error_rate``; :func:`process_results` never raises. Per doc it returns the full record under
``vqa_sample`` (logged with ``--log_samples``, not aggregated: id, question, answer, answer_type, question_type,
prediction, the normalised forms, correct, recall, status, convention, ...) and one compact score
``{answer_type, correct, recall, status}`` under every aggregated key; ``n_closed`` / ``n_open`` count the questions
of each kind and ``prompt_convention`` names the prompt convention (:mod:`pfmvg_plugin.lmms.state`).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from pfmvg_plugin.lmms import state, task_data
from pfmvg_plugin.lmms.answers import is_error_answer
from pfmvg_plugin.lmms.task_data import DataNotPreparedError, check_doc, mapping_items, one_label
from pfmvg_plugin.metrics.vqa import CLOSED, OPEN, closed_correct, normalize_answer, open_exact, token_recall
from pfmvg_plugin.prompts import build_prompt

__all__ = ["DataNotPreparedError"]

#: Key of the full per-sample record in ``process_results`` (and so in the samples log).
SAMPLE_KEY = "vqa_sample"
#: The prediction is kept in the per-sample record up to this many characters (scoring uses all of it).
ANSWER_CHARS = 500
OK, GENERATION_ERROR, SCORING_ERROR, IMAGE_ERROR = "ok", "generation_error", "scoring_error", "image_error"

#: The commands that create each dataset (shown when it is missing).
PREPARE_COMMANDS = {
    "vqarad": "pfmvg data prepare vqarad --annotations <'VQA_RAD Dataset Public.json'> "
              "--images <'VQA_RAD Image Folder'>",
    "slake": "pfmvg data prepare slake --root <Slake1.0 folder> [--lang en]",
    "pathvqa": "pfmvg data prepare pathvqa --test <PathVQA test split file (JSON/JSONL)> [--train F --val F] "
               "--images <PathVQA images folder>",
    "synthcxr_vqa": "pfmvg data synth --vqa",
}
#: Aggregated keys, in the order the task YAMLs list them.
METRICS = ("overall_acc", "closed_acc", "open_exact_acc", "open_recall", "generation_error_rate", "n_closed",
           "n_open", "n_scored", "image_errors", "prompt_convention")
#: The keys that get each doc's compact score (None for a doc whose image cannot be read).
SCORE_METRICS = METRICS[:7]
#: ``meta`` keys giving a record's question type: VQA-RAD's question_type, SLAKE's content_type, synthcxr_vqa's family.
QUESTION_TYPE_META = ("question_type", "content_type", "family")


# ---- docs -----------------------------------------------------------------------------------------------------------
def _doc(record: Mapping, dataset_dir: str) -> dict:
    """The plain columns lmms-eval gets for one VQA record (strings only: Arrow infers one schema)."""
    meta = record.get("meta") or {}
    question_type = next((str(meta[k]) for k in QUESTION_TYPE_META if meta.get(k) not in (None, "")), "")
    return {
        "id": str(record["id"]),
        "source": str(record["source"]),
        "split": str(record["split"]),
        "image": str(record["image"]),
        "question": str(record["question"]),
        "answer": str(record["answer"]),
        "answer_type": str(record["answer_type"]),
        "question_type": question_type,
        "dataset_dir": dataset_dir,
    }


def ensure_synthcxr_vqa(path: Path) -> Path:
    """Build ``synthcxr_vqa`` at ``path`` unless it exists: from the synthcxr dataset beside it, itself generated
    first when missing (with the grounding tasks' settings, under their inter-process lock)."""
    if (path / "dataset.json").is_file():
        return path
    from pfmvg_plugin.data.synth.vqa import ensure_synthcxr_vqa as build
    from pfmvg_plugin.lmms.grounding_task import ensure_synthcxr

    source = ensure_synthcxr(path.parent / "synthcxr")
    print(f"pfmvg_plugin: building the synthcxr_vqa dataset under {path} (once)", file=sys.stderr)
    return build(path, source=source)


#: Datasets a task generates on first use instead of asking for ``pfmvg data prepare``.
GENERATED: dict[str, Callable[[Path], Path]] = {"synthcxr_vqa": ensure_synthcxr_vqa}


def load_docs(dataset: str, split: str) -> list[dict]:
    """The VQA docs of a prepared dataset's split; raises :class:`DataNotPreparedError` with the fix.

    ``synthcxr_vqa`` (synthetic, offline) is generated on first use.
    """
    return task_data.load_docs(dataset, split, "vqa", _doc, PREPARE_COMMANDS, GENERATED)


def process_docs(dataset, name: str, split: str):
    """lmms-eval ``process_docs`` (the shipped stub replaced by our docs, or by one error row). Never raises."""
    return task_data.process_docs(name, split, lambda: load_docs(name, split))


def data_problem(dataset: str, split: str) -> str | None:
    """Why ``split`` of ``dataset`` is not prepared, or None (generated datasets are always ready)."""
    return task_data.data_problem(dataset, split, PREPARE_COMMANDS, GENERATED)


def docs_for(dataset: str, split: str, name: str | None = None):
    """The ``process_docs`` function of a task YAML (``utils.<dataset>_<split>_docs``); ``name``: the task's key when
    another task reads the same data (:func:`pfmvg_plugin.lmms.task_data.docs_function`)."""
    return task_data.docs_function(process_docs, data_problem, dataset, split, name)


# ---- prompts, visuals, targets -----------------------------------------------------------------------------------
def doc_to_text(doc: Mapping, lmms_eval_specific_kwargs: Mapping | None = None) -> str:
    """The VQA prompt in the convention the task kwargs select for the model; records that convention."""
    check_doc(doc)
    convention = state.resolve_convention(lmms_eval_specific_kwargs)
    state.note_prompt_convention(convention, doc)
    return build_prompt("vqa", convention, question=doc["question"])


doc_to_visual = task_data.doc_to_visual


def doc_to_target(doc: Mapping) -> str:
    check_doc(doc)
    return str(doc.get("answer", ""))


# ---- scoring ------------------------------------------------------------------------------------------------------
def score_answer(doc: Mapping, answer: object, convention: str | None = None) -> tuple[dict, dict]:
    """Score one model answer for ``doc``: ``(compact score, per-sample record)``. Never raises."""
    convention = convention or state.prompt_convention(doc)
    prediction = task_data.as_text(answer)
    truth = str(doc.get("answer", ""))
    answer_type = str(doc.get("answer_type", "")).strip().lower()
    correct, recall, status, error = False, None, OK, None
    try:
        if answer_type not in (CLOSED, OPEN):
            raise ValueError(f"answer_type must be 'closed' or 'open', got {doc.get('answer_type')!r}")
        if is_error_answer(prediction):
            status, recall = GENERATION_ERROR, (0.0 if answer_type == OPEN else None)
        elif answer_type == CLOSED:
            correct = closed_correct(prediction, truth)
        else:
            correct, recall = open_exact(prediction, truth), token_recall(prediction, truth)
        normalized = "" if status == GENERATION_ERROR else normalize_answer(prediction)
        truth_normalized = normalize_answer(truth)
    except Exception as exc:  # bad ground truth: lmms-eval retries process_results 5x on exceptions
        status, correct, recall, normalized, truth_normalized = SCORING_ERROR, False, None, "", ""
        error = f"{type(exc).__name__}: {exc}"[:ANSWER_CHARS]
        answer_type = answer_type if answer_type in (CLOSED, OPEN) else None
    compact = {"answer_type": answer_type, "correct": bool(correct), "recall": recall, "status": status}
    record = {
        "id": doc.get("id"),
        "dataset_dir": doc.get("dataset_dir"),
        "image": doc.get("image"),
        "question": doc.get("question"),
        "answer": truth,
        "answer_type": answer_type,
        "question_type": doc.get("question_type") or None,
        "prediction": prediction[:ANSWER_CHARS],
        "prediction_normalized": normalized[:ANSWER_CHARS],
        "answer_normalized": truth_normalized,
        "correct": bool(correct),
        "recall": recall,
        "status": status,
        "error": error,
        "convention": convention,
        "source": doc.get("source"),
        "split": doc.get("split"),
    }
    return compact, record


def process_results(doc: Mapping, results: Sequence) -> dict:
    """lmms-eval ``process_results``: the per-sample record and the compact score under every aggregated key.

    Never raises: lmms-eval retries it 5x on an exception and then aborts the evaluation.
    """
    convention = state.prompt_convention(doc)
    problem = task_data.doc_image_problem(doc)
    if problem is not None:  # no image, no question asked: left out of every metric, counted apart
        record = {"id": doc.get("id"), "question": doc.get("question"), "image": doc.get("image"),
                  "status": IMAGE_ERROR, "error": problem, "convention": convention}
        out = {SAMPLE_KEY: record, **{name: None for name in SCORE_METRICS}}
        out.update(prompt_convention=convention, **task_data.image_accounting(doc, problem))
        return out
    try:
        compact, record = score_answer(doc, task_data.answer_text(results), convention)
    except Exception as exc:  # pragma: no cover - score_answer already catches; keep the run alive regardless
        compact = {"answer_type": None, "correct": False, "recall": None, "status": SCORING_ERROR}
        record = {"id": doc.get("id"), "status": SCORING_ERROR, "error": f"{type(exc).__name__}: {exc}"}
    out: dict = {SAMPLE_KEY: record}
    out.update({name: compact for name in SCORE_METRICS})
    out.update(prompt_convention=convention, **task_data.image_accounting(doc, None))
    return out


# ---- aggregation --------------------------------------------------------------------------------------------------
def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _guarded(name: str, compute: Callable[[list[dict]], float | int | None]) -> Callable[[list], float | int | None]:
    return task_data.guarded_aggregation(name, lambda items: compute(mapping_items(items)),
                                         f"{name} of the compact VQA scores (None when there are none).")


def _of_type(items: list[dict], answer_type: str) -> list[dict]:
    return [s for s in items if s.get("answer_type") == answer_type]


overall_acc = _guarded("overall_acc", lambda items: _mean([float(s["correct"]) for s in items]))
closed_acc = _guarded("closed_acc", lambda items: _mean([float(s["correct"]) for s in _of_type(items, CLOSED)]))
open_exact_acc = _guarded("open_exact_acc",
                          lambda items: _mean([float(s["correct"]) for s in _of_type(items, OPEN)]))
open_recall = _guarded("open_recall",
                       lambda items: _mean([float(s["recall"] or 0.0) for s in _of_type(items, OPEN)]))
generation_error_rate = _guarded("generation_error_rate",
                                 lambda items: _mean([float(s.get("status") == GENERATION_ERROR) for s in items]))
n_closed = _guarded("n_closed", lambda items: len(_of_type(items, CLOSED)))
n_open = _guarded("n_open", lambda items: len(_of_type(items, OPEN)))


#: Aggregation function per metric (the YAMLs reference these through ``utils.py``).
AGGREGATIONS: dict[str, Callable] = {
    "overall_acc": overall_acc,
    "closed_acc": closed_acc,
    "open_exact_acc": open_exact_acc,
    "open_recall": open_recall,
    "generation_error_rate": generation_error_rate,
    "n_closed": n_closed,
    "n_open": n_open,
    "n_scored": task_data.count_scored,
    "image_errors": task_data.count_image_errors,
    "prompt_convention": one_label,
}
