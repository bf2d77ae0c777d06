"""Docs of the Med-VQA and report-generation lmms-eval tasks, shared by :mod:`.vqa_task` and :mod:`.report_task`.

Same contract as the grounding tasks (:mod:`pfmvg_plugin.lmms.grounding_task`): the YAML loads a shipped one-row
``stub.jsonl``; ``process_docs`` replaces it with the docs of a prepared dataset under ``$PFMVG_DATA_ROOT/<dataset>``
or, when that fails, with one error row (it runs inside lmms-eval's 5x-retried ``download`` and must not raise);
``doc_to_text`` / ``doc_to_visual`` raise the message on that row, so a missing dataset stops the run at once with
the exact ``pfmvg data prepare ...`` command. The error class and the error-row id are the grounding tasks' own.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence

from pfmvg_plugin.data.images import load_image
from pfmvg_plugin.data.store import DATA_ROOT_ENV, PreparedDataset, data_root
from pfmvg_plugin.lmms.grounding_task import ERROR_DOC_ID, DataNotPreparedError

__all__ = [
    "ERROR_DOC_ID",
    "DataNotPreparedError",
    "answer_text",
    "as_text",
    "check_doc",
    "doc_image",
    "load_docs",
    "missing_data_message",
    "process_docs",
]


def missing_data_message(dataset: str, split: str, where, command: str, detail: str = "") -> str:
    """The grounding tasks' wording: what is missing, where, and the command that creates it."""
    detail = f" ({detail})" if detail else ""
    return (f"{dataset}: no prepared {split!r} split at {where}{detail}. Run `{command}` "
            f"(or set {DATA_ROOT_ENV} to the folder that holds the prepared '{dataset}' directory)")


def load_docs(dataset: str, split: str, task: str, make_doc: Callable[[Mapping, str], dict], command: str,
              generate: Callable | None = None) -> list[dict]:
    """Docs (``make_doc(record, dataset_dir)``) of the ``task`` records of a prepared dataset's ``split``.

    Raises :class:`DataNotPreparedError` naming ``command`` when the dataset, the split or its ``task`` records are
    missing. ``generate(path)``, when given, creates a missing dataset first (synthetic data).
    """
    path = data_root() / dataset
    if generate is not None:
        generate(path)
    if not (path / "dataset.json").is_file():
        raise DataNotPreparedError(missing_data_message(dataset, split, path, command))
    prepared = PreparedDataset(path)
    if not prepared.split_path(split).is_file():
        have = ", ".join(sorted(prepared.meta.get("splits", {}))) or "none"
        raise DataNotPreparedError(missing_data_message(dataset, split, path, command, f"it has the splits: {have}"))
    dataset_dir = str(path.resolve())
    docs = [make_doc(r, dataset_dir) for r in prepared.records(split) if r.get("task") == task]
    if not docs:
        raise DataNotPreparedError(missing_data_message(dataset, split, path, command,
                                                        f"the split has no {task} records"))
    return docs


def process_docs(name: str, split: str, loader: Callable[[], list[dict]]):
    """lmms-eval ``process_docs``: ``loader()``'s docs as a ``datasets.Dataset``, or one row carrying the error.

    Never raises (lmms-eval retries ``download`` five times on any exception and then loses the message).
    """
    import datasets

    try:
        return datasets.Dataset.from_list(loader())
    except DataNotPreparedError as exc:
        message = str(exc)
    except Exception as exc:
        message = f"{name}: could not load the {split!r} split from {data_root() / name}: {type(exc).__name__}: {exc}"
    return datasets.Dataset.from_list([{"id": ERROR_DOC_ID, "error": message}])


def check_doc(doc: Mapping) -> None:
    """Raise the data error carried by the error row (called where lmms-eval does not retry)."""
    if doc.get("id") == ERROR_DOC_ID:
        raise DataNotPreparedError(doc.get("error") or "pfmvg task data could not be loaded")


@functools.lru_cache(maxsize=16)
def _prepared(dataset_dir: str) -> PreparedDataset:
    return PreparedDataset(dataset_dir)


def doc_image(doc: Mapping, image: str | None = None):
    """The doc's image (or ``image``, a path under the same image root) as an RGB Pillow image."""
    return load_image(_prepared(doc["dataset_dir"]).image_path({"image": image or doc["image"]}))


def answer_text(results: Sequence | object) -> object:
    """The model's answer from lmms-eval's ``results`` argument (one answer per request, maybe nested once)."""
    answer = results[0] if isinstance(results, (list, tuple)) and results else results
    if isinstance(answer, (list, tuple)) and answer:  # some models return one list per request
        answer = answer[0]
    return answer


def as_text(answer: object) -> str:
    """A model answer as text: None and empty lists are the empty answer, anything else its ``str``."""
    if isinstance(answer, str):
        return answer
    if answer is None or (isinstance(answer, (list, tuple)) and not answer):
        return ""
    return str(answer)
