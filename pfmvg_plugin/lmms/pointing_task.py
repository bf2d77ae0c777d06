"""Phrase pointing for models that answer with points, not boxes (Molmo): scored as points, never as fake boxes.

The ``*_pointing`` tasks read the same prepared grounding data as ``*_grounding``. The model is asked Molmo's own
"Point to {phrase}" and answers ``<point x=".." y="..">`` in percent of the image
(:class:`~pfmvg_plugin.codecs.points.MolmoPointCodec`); an answer scores a hit when its first point lies in a
ground-truth box (:func:`~pfmvg_plugin.codecs.points.point_hit`). Metrics: ``point_hit`` (the share of hits over
the scored docs), ``parse_failure_rate``, ``generation_error_rate``, ``n_scored`` and ``image_errors`` as in every
pfmvg task. The per-sample record is logged under :data:`SAMPLE_KEY`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from pfmvg_plugin.codecs.points import MolmoPointCodec, point_hit
from pfmvg_plugin.lmms import grounding_task, task_data
from pfmvg_plugin.lmms.answers import is_error_answer

SAMPLE_KEY = "pointing_sample"
#: Molmo's pointing prompt (allenai/molmo ``olmo/data/data_formatter.py``).
PROMPT = "Point to {phrase}"
METRICS = ("point_hit", "parse_failure_rate", "generation_error_rate")
GENERATION_ERROR = "generation_error"
ANSWER_CHARS = grounding_task.ANSWER_CHARS


def docs_for(dataset: str, split: str, name: str):
    """``process_docs`` of a pointing task: the grounding docs of ``dataset``/``split`` under the task's own key."""
    return grounding_task.docs_for(dataset, split, name=name)


def doc_to_text(doc: Mapping, lmms_eval_specific_kwargs: Mapping | None = None) -> str:
    task_data.check_doc(doc)
    return PROMPT.format(phrase=doc["phrase"])


doc_to_visual = task_data.doc_to_visual


def doc_to_target(doc: Mapping) -> str:
    """The centre of the first ground-truth box, written as Molmo writes a point."""
    task_data.check_doc(doc)
    try:
        x1, y1, x2, y2 = doc["boxes"][0]
        return MolmoPointCodec().encode(((x1 + x2) / 2, (y1 + y2) / 2), (int(doc["width"]), int(doc["height"])))
    except Exception:
        return ""


def score_answer(doc: Mapping, answer: object) -> dict:
    """The per-sample record of one answer: its points, whether the first one hits a box, and the parse status."""
    size = (int(doc.get("width") or 0), int(doc.get("height") or 0))
    points: list[list[float]] = []
    if is_error_answer(answer):
        status, hit = GENERATION_ERROR, False
    else:
        result = MolmoPointCodec().decode(answer, size)
        status = result.status.value
        points = [list(p) for p in result.points]
        hit = point_hit(result.point, doc.get("boxes") or [])
    text = answer if isinstance(answer, str) else repr(answer)
    return {"id": doc.get("id"), "dataset_dir": doc.get("dataset_dir"), "image": doc.get("image"),
            "width": size[0], "height": size[1], "phrase": doc.get("phrase"), "category": doc.get("category"),
            "gt_boxes": doc.get("boxes"), "points": points, "hit": hit, "status": status,
            "answer": text[:ANSWER_CHARS], "source": doc.get("source"), "split": doc.get("split")}


def process_results(doc: Mapping, results: Sequence) -> dict:
    """lmms-eval ``process_results``; never raises (lmms-eval retries it and then aborts)."""
    problem = task_data.doc_image_problem(doc)
    if problem is not None:  # left out of every metric, counted apart
        record = {"id": doc.get("id"), "status": "image_error", "error": problem}
        return {SAMPLE_KEY: record, **{m: None for m in METRICS}, **task_data.image_accounting(doc, problem)}
    try:
        record = score_answer(doc, task_data.answer_text(results))
    except Exception as exc:  # pragma: no cover - score_answer does not raise on model output
        record = {"id": doc.get("id"), "hit": False, "status": "scoring_error", "error": f"{type(exc).__name__}: {exc}"}
    compact = {"hit": record["hit"], "status": record["status"]}
    return {SAMPLE_KEY: record, **{m: compact for m in METRICS}, **task_data.image_accounting(doc, None)}


def _share(name: str, counts) -> object:
    def share(items: list) -> float | None:
        scored = [item for item in items if isinstance(item, Mapping)]
        return sum(1 for item in scored if counts(item)) / len(scored) if scored else None

    return task_data.guarded_aggregation(name, share, f"{name} over the scored docs.")


point_hit_rate = _share("point_hit", lambda item: item.get("hit") is True)
parse_failure_rate = _share("parse_failure_rate",
                            lambda item: item.get("status") not in ("ok", GENERATION_ERROR, "scoring_error"))
generation_error_rate = _share("generation_error_rate", lambda item: item.get("status") == GENERATION_ERROR)
n_scored = task_data.count_scored
image_errors = task_data.count_image_errors
