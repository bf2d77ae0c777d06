"""The library side of our lmms-eval grounding tasks (``tasks/grounding/*.yaml`` call into this module).

Docs come from a prepared dataset under ``$PFMVG_DATA_ROOT/<dataset>`` (:func:`pfmvg_plugin.data.store.data_root`).
Missing data fails at task construction with the exact command to run, not a ``datasets`` stack trace: the YAML
loads a shipped one-row ``stub.jsonl`` (always resolvable), :func:`process_docs` replaces it with our docs or, when
that fails, with one error row (it runs inside lmms-eval's 5x-retried ``download`` and must not raise), and
:func:`doc_to_text` raises the message on that row (lmms-eval calls it once at task construction, outside the retry).
That contract, shared with the VQA and report tasks, lives in :mod:`pfmvg_plugin.lmms.task_data`.
``synthcxr`` needs no preparation: when missing it is generated once with the library defaults.

Prompts and box formats follow the model (``lmms_eval_specific_kwargs`` -> :mod:`pfmvg_plugin.lmms.state`).
:func:`process_results` never raises. It returns, per doc:

* ``grounding_sample``: the full per-sample record (id, dataset_dir, image, width, height, phrase, category,
  gt_boxes, pred_boxes, iou, dice, parsed, status, convention, mode, answer, source, split) -- logged with
  ``--log_samples``, not aggregated (``pfmvg report`` reads it; lmms-eval writes ``"grounding_sample,none": []``
  into results.json for a key without aggregation and leaves it out of its table);
* one compact score ``{iou, dice, parsed, status, mode}`` under each headline metric (:data:`HEADLINE_METRICS`);
* per-category keys ``acc@0.5/<category>`` and ``miou/<category>`` for the dataset's categories
  (:data:`CATEGORIES_BY_SOURCE`): the compact score for the doc's own category, None for the others, so every key
  has one value per doc (lmms-eval takes a task's sample count from whichever key it aggregates last);
* ``multibox_mode``, ``prompt_convention`` and ``protocol`` (``native`` / ``uniform``) as strings, shown as rows
  of the results table;
* ``n_scored`` (the docs every metric is over) and ``image_errors``: a doc whose image cannot be read is left out of
  every metric (None under each score key, status ``image_error`` in its record), never scored as a wrong answer,
  and counted there, with one stderr line at the end.

Aggregations turn a key's values into one number through :func:`pfmvg_plugin.metrics.aggregate`; lmms-eval prints
non-floats verbatim and sizes its table column to the widest cell, so every aggregate is a scalar.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

from pfmvg_plugin.data.store import data_root
from pfmvg_plugin.lmms import served, state, task_data
from pfmvg_plugin.lmms.answers import is_error_answer
from pfmvg_plugin.lmms.task_data import ERROR_DOC_ID, DataNotPreparedError, check_doc, one_label
from pfmvg_plugin.metrics import (
    FORMAT_CLASSES,
    GENERATION_ERROR,
    SampleScore,
    aggregate,
    format_compliance,
    score_sample,
    score_text,
)
from pfmvg_plugin.prompts import build_prompt, convention_codec

#: Re-exported from :mod:`.task_data` (tests and ``tasks/grounding/utils.py`` reach them through this module).
__all__ = ["ERROR_DOC_ID", "DataNotPreparedError", "one_label"]

#: Status of a doc that could not be scored at all (bad ground truth): IoU 0, counted as a parse failure.
SCORING_ERROR = "scoring_error"
#: Status of a doc whose image cannot be read: left out of every metric and counted in ``image_errors``.
IMAGE_ERROR = "image_error"
#: Several GT boxes for one phrase: score the first predicted box against its best GT box (docs/ARCHITECTURE.md §3).
MULTIBOX_MODE = "max"
#: The raw answer is kept in the per-sample record up to this many characters.
ANSWER_CHARS = 500
#: Key of the full per-sample record in ``process_results`` (and so in the samples log).
SAMPLE_KEY = "grounding_sample"
#: Keyword arguments for :func:`pfmvg_plugin.data.synth.generate_synthcxr` when synthcxr is generated on demand
#: (empty: the library defaults).
SYNTHCXR_KWARGS: dict = {}

#: The commands that create each dataset (shown when it is missing).
PREPARE_COMMANDS = {
    "mscxr": "pfmvg data prepare mscxr --annotations <MS_CXR_Local_Alignment_v1.1.0.csv> --images <MIMIC-CXR-JPG root>",
    "chestxray8": "pfmvg data prepare chestxray8 --bbox-csv <BBox_List_2017.csv> --images <ChestX-ray8 image folder>",
    "vindr": "pfmvg data prepare vindr --annotations <train.csv | annotations_train.csv annotations_test.csv> "
             "--images <VinDr-CXR image root>",
    "slake_grounding": "pfmvg data prepare slake_grounding --root <Slake1.0 folder>",
    "synthcxr": "pfmvg data synth",
}

#: Headline metrics, one scalar row each in the results table.
HEADLINE_METRICS = ("acc@0.1", "acc@0.3", "acc@0.5", "miou", "mdice", "parse_failure_rate", "generation_error_rate",
                    "format/ok", "format/no_box", "format/wrong_format", "format/out_of_range")

#: Metrics reported per category.
CATEGORY_METRICS = ("acc@0.5", "miou")
#: Per-category bucket for VinDr classes outside the listed ones (the PhysioNet release has more local labels).
OTHER_CATEGORIES = "(other classes)"


def _categories() -> dict[str, tuple[str, ...]]:
    from pfmvg_plugin.data.converters import chestxray8, mscxr
    from pfmvg_plugin.data.synth import CATEGORIES as SYNTH_CATEGORIES

    vindr = ("Aortic enlargement", "Atelectasis", "Calcification", "Cardiomegaly", "Consolidation", "ILD",
             "Infiltration", "Lung Opacity", "Nodule/Mass", "Other lesion", "Pleural effusion", "Pleural thickening",
             "Pneumothorax", "Pulmonary fibrosis")
    return {
        "mscxr": tuple(mscxr.CATEGORIES),
        "chestxray8": tuple(chestxray8.LABELS),
        "vindr": (*vindr, OTHER_CATEGORIES),
        "synthcxr": tuple(sorted(SYNTH_CATEGORIES.values())),
    }


#: Categories with their own rows in each dataset's results (the task YAMLs declare the same keys).
CATEGORIES_BY_SOURCE: dict[str, tuple[str, ...]] = _categories()


def category_key(metric: str, category: str) -> str:
    return f"{metric}/{category}"


def metric_names(source: str) -> list[str]:
    """Every aggregated metric key of a dataset's task, in the order the task YAMLs list them."""
    per_category = [category_key(m, c) for m in CATEGORY_METRICS for c in CATEGORIES_BY_SOURCE.get(source, ())]
    return [*HEADLINE_METRICS, "n_scored", "image_errors", *per_category, "multibox_mode", "prompt_convention",
            "protocol"]


# ---- docs -----------------------------------------------------------------------------------------------------------
@contextlib.contextmanager
def _exclusive(lock_path: Path):
    """An exclusive inter-process lock where ``fcntl`` exists (POSIX); a no-op elsewhere."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: the atomic rename alone keeps the result whole
        yield
        return
    with open(lock_path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_synthcxr(path: str | os.PathLike | None = None) -> Path:
    """Generate the synthcxr dataset at ``path`` (default ``$PFMVG_DATA_ROOT/synthcxr``) unless it exists.

    Safe when several processes (ranks) call it at once: one generates into a temporary folder beside ``path`` under
    a lock and renames it into place; the others wait and find it done.
    """
    from pfmvg_plugin.data.synth import NAME, generate_synthcxr

    path = Path(path) if path is not None else data_root() / NAME
    if (path / "dataset.json").is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    with _exclusive(path.parent / f".{path.name}.lock"):
        if (path / "dataset.json").is_file():  # made by another process while we waited
            return path
        if path.exists() and any(path.iterdir()):
            raise DataNotPreparedError(f"{path} exists but is not a prepared dataset (no dataset.json); remove it "
                                       f"or run `{PREPARE_COMMANDS['synthcxr']} --out {path}`")
        print(f"pfmvg_plugin: generating the synthcxr dataset under {path} (once)", file=sys.stderr)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
        try:
            generate_synthcxr(tmp, **SYNTHCXR_KWARGS)
            if path.exists():
                path.rmdir()  # an empty leftover folder
            try:
                os.rename(tmp, path)
            except OSError:
                if not (path / "dataset.json").is_file():  # not just another process finishing first
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return path


def _doc(record: Mapping, dataset_dir: str) -> dict:
    """The plain columns lmms-eval gets for one grounding record (no nested ``meta``: Arrow infers one schema)."""
    return {
        "id": str(record["id"]),
        "source": str(record["source"]),
        "split": str(record["split"]),
        "image": str(record["image"]),
        "width": int(record["width"]),
        "height": int(record["height"]),
        "phrase": str(record["phrase"]),
        "category": None if record.get("category") is None else str(record["category"]),
        "boxes": [[float(v) for v in box] for box in record["boxes"]],
        "dataset_dir": dataset_dir,
    }


#: Datasets a task generates on first use instead of asking for ``pfmvg data prepare``.
GENERATED: dict[str, Callable[[Path], Path]] = {"synthcxr": ensure_synthcxr}


def load_docs(dataset: str, split: str) -> list[dict]:
    """The grounding docs of a prepared dataset's split; raises :class:`DataNotPreparedError` with the fix.

    ``synthcxr`` (synthetic, offline) is generated on first use.
    """
    return task_data.load_docs(dataset, split, "grounding", _doc, PREPARE_COMMANDS, GENERATED)


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


# ---- prompts and visuals ----------------------------------------------------------------------------------------
def doc_to_text(doc: Mapping, lmms_eval_specific_kwargs: Mapping | None = None) -> str:
    """The refer prompt in the convention the task kwargs select for the model; records that convention."""
    check_doc(doc)
    kwargs = dict(lmms_eval_specific_kwargs or {})
    protocol = str(kwargs.get("protocol") or "native")
    if protocol not in state.PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r} in the task's kwargs; choose one of "
                         f"{', '.join(state.PROTOCOLS)}")
    if kwargs.get("convention") == served.SERVED:  # a generic backend: the family of the model it serves
        model_args = task_data.cli_model_args()
        kwargs["convention"] = served.served_convention(model_args)
        if served.known_convention(model_args) is None:
            protocol = "uniform"  # an unknown model is asked the uniform prompt: the results say so
    convention = state.resolve_convention(kwargs)
    accepted = convention_codec(convention).options()  # frame options only where the codec has a frame
    frame_options = {k: v for k, v in task_data.codec_frame(kwargs).items() if k in accepted}
    state.note_prompt_convention(convention, doc, kwargs.get("frame"), frame_options, protocol)
    return build_prompt("refer", convention, phrase=doc["phrase"])


doc_to_visual = task_data.doc_to_visual


def doc_to_target(doc: Mapping) -> str:
    """The ground-truth boxes written in the prompts' box format (the ``target`` of the samples log)."""
    check_doc(doc)
    try:
        codec = state.answer_codec(task=doc)
        return codec.encode([tuple(b) for b in doc["boxes"]], (int(doc["width"]), int(doc["height"])))
    except Exception:
        return ""


# ---- scoring ------------------------------------------------------------------------------------------------------
def _compact(score: SampleScore) -> dict:
    """What the aggregations need of one score (enough for :meth:`SampleScore.from_dict`)."""
    return {"iou": score.iou, "dice": score.dice, "parsed": score.parsed, "status": score.status, "mode": score.mode}


def _box_list(boxes: Iterable) -> list[list[float]]:
    return [[float(v) for v in box] for box in boxes]


def score_answer(doc: Mapping, answer: object, convention: str | None = None) -> tuple[SampleScore, dict]:
    """Score one model answer for ``doc``: ``(score, per-sample record)``. Never raises."""
    convention = convention or state.prompt_convention(doc)
    size = (int(doc.get("width") or 0), int(doc.get("height") or 0))
    gt_boxes = doc.get("boxes") or []
    pred_boxes: list[list[float]] = []
    try:
        if is_error_answer(answer):
            score = score_sample(None, gt_boxes, MULTIBOX_MODE, status=GENERATION_ERROR)
        else:
            codec = state.answer_codec(convention, doc)
            score = score_text(answer, gt_boxes, size, codec, MULTIBOX_MODE)
            pred_boxes = _box_list(codec.decode(answer, size).boxes)
    except Exception:  # bad ground truth: lmms-eval retries process_results 5x on exceptions, so score it 0
        score = SampleScore(0.0, 0.0, False, SCORING_ERROR, None, MULTIBOX_MODE)
    text = answer if isinstance(answer, str) else repr(answer)
    record = {
        "id": doc.get("id"),
        "dataset_dir": doc.get("dataset_dir"),
        "image": doc.get("image"),
        "width": size[0],
        "height": size[1],
        "phrase": doc.get("phrase"),
        "category": doc.get("category"),
        "gt_boxes": _box_list(gt_boxes) if _is_box_list(gt_boxes) else gt_boxes,
        "pred_boxes": pred_boxes,
        "iou": score.iou,
        "dice": score.dice,
        "parsed": score.parsed,
        "status": score.status,
        "convention": convention,
        "protocol": state.protocol(doc),
        "mode": score.mode,
        "answer": text[:ANSWER_CHARS],
        "source": doc.get("source"),
        "split": doc.get("split"),
    }
    return score, record


def _is_box_list(boxes: object) -> bool:
    try:
        return all(len(b) == 4 for b in boxes) and bool(_box_list(boxes))
    except (TypeError, ValueError):
        return False


def process_results(doc: Mapping, results: Sequence) -> dict:
    """lmms-eval ``process_results``: the per-sample record, compact scores per metric, per-category keys.

    Never raises: lmms-eval retries it 5x on an exception and then aborts the evaluation.
    """
    convention = state.prompt_convention(doc)
    problem = task_data.doc_image_problem(doc)
    if problem is not None:  # no image, no question asked: left out of every metric, counted apart
        return _image_error_results(doc, results, convention, problem)
    try:
        score, record = score_answer(doc, task_data.answer_text(results), convention)
    except Exception as exc:  # pragma: no cover - score_answer already catches; keep the run alive regardless
        score = SampleScore(0.0, 0.0, False, SCORING_ERROR, None, MULTIBOX_MODE)
        record = {"id": doc.get("id"), "iou": 0.0, "gt_boxes": doc.get("boxes"), "status": SCORING_ERROR,
                  "error": f"{type(exc).__name__}: {exc}"}
    compact = _compact(score)
    out: dict = {SAMPLE_KEY: record}
    out.update({name: compact for name in HEADLINE_METRICS})
    categories = CATEGORIES_BY_SOURCE.get(str(doc.get("source")), ())
    own = doc.get("category")
    if OTHER_CATEGORIES in categories and own is not None and own not in categories:
        own = OTHER_CATEGORIES
    for metric in CATEGORY_METRICS:
        for category in categories:
            out[category_key(metric, category)] = compact if category == own else None
    out["multibox_mode"] = score.mode
    out["prompt_convention"] = convention
    out["protocol"] = state.protocol(doc)
    out.update(task_data.image_accounting(doc, None))
    return out


def _image_error_results(doc: Mapping, results: Sequence, convention: str, problem: str) -> dict:
    """``process_results`` for a doc whose image cannot be read: None under every score key, the reason logged."""
    answer = task_data.answer_text(results)
    record = {"id": doc.get("id"), "dataset_dir": doc.get("dataset_dir"), "image": doc.get("image"),
              "phrase": doc.get("phrase"), "category": doc.get("category"), "gt_boxes": doc.get("boxes"),
              "pred_boxes": [], "iou": None, "dice": None, "parsed": False, "status": IMAGE_ERROR,
              "convention": convention, "protocol": state.protocol(doc), "mode": MULTIBOX_MODE, "error": problem,
              "answer": (answer if isinstance(answer, str) else repr(answer))[:ANSWER_CHARS],
              "source": doc.get("source"), "split": doc.get("split")}
    out: dict = {SAMPLE_KEY: record}
    out.update({name: None for name in HEADLINE_METRICS})
    for metric in CATEGORY_METRICS:
        for category in CATEGORIES_BY_SOURCE.get(str(doc.get("source")), ()):
            out[category_key(metric, category)] = None
    out.update(multibox_mode=MULTIBOX_MODE, prompt_convention=convention, protocol=state.protocol(doc),
               **task_data.image_accounting(doc, problem))
    return out


# ---- aggregation --------------------------------------------------------------------------------------------------
def _aggregate(items: Iterable) -> dict | None:
    scores = [SampleScore.from_dict(item) for item in items if item is not None]
    return aggregate(scores, n_bootstrap=0) if scores else None


def _guarded(name: str, compute: Callable[[dict], float | None]) -> Callable[[list], float | None]:
    def of_summary(items: list) -> float | None:
        summary = _aggregate(items)
        return None if summary is None else compute(summary)

    return task_data.guarded_aggregation(name, of_summary, f"{name} of the compact scores (None values skipped).")


acc_at_0_1 = _guarded("acc@0.1", lambda s: s["acc@0.1"])
acc_at_0_3 = _guarded("acc@0.3", lambda s: s["acc@0.3"])
acc_at_0_5 = _guarded("acc@0.5", lambda s: s["acc@0.5"])
miou = _guarded("miou", lambda s: s["miou"])
mdice = _guarded("mdice", lambda s: s["mdice"])
parse_failure_rate = _guarded("parse_failure_rate", lambda s: s["parse_failure_rate"])
generation_error_rate = _guarded("generation_error_rate", lambda s: s["generation_error_rate"])
image_errors = task_data.count_image_errors
n_scored = task_data.count_scored


def _format_share(name: str) -> Callable[[list], float | None]:
    """``format/<name>``: the share of the scored answers in format class ``name`` (:data:`FORMAT_CLASSES`)."""

    def share(items: list) -> float | None:
        return format_compliance([str(item.get("status")) for item in items if isinstance(item, Mapping)])[name]

    return task_data.guarded_aggregation(f"format/{name}", share,
                                         f"share of the scored answers with status {', '.join(FORMAT_CLASSES[name])}.")


format_ok = _format_share("ok")
format_no_box = _format_share("no_box")
format_wrong_format = _format_share("wrong_format")
format_out_of_range = _format_share("out_of_range")


#: Aggregation function per metric (the YAMLs reference these through ``utils.py``).
AGGREGATIONS: dict[str, Callable] = {
    "acc@0.1": acc_at_0_1,
    "acc@0.3": acc_at_0_3,
    "acc@0.5": acc_at_0_5,
    "miou": miou,
    "mdice": mdice,
    "parse_failure_rate": parse_failure_rate,
    "generation_error_rate": generation_error_rate,
    "n_scored": n_scored,
    "image_errors": image_errors,
    "format/ok": format_ok,
    "format/no_box": format_no_box,
    "format/wrong_format": format_wrong_format,
    "format/out_of_range": format_out_of_range,
}

