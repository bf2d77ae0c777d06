"""What our lmms-eval tasks share: docs from a prepared dataset, the error-row contract, aggregation plumbing.

Used by :mod:`.grounding_task`, :mod:`.vqa_task` and :mod:`.report_task`, and the single owner of the error-row
contract: the YAML loads a shipped one-row ``stub.jsonl``; :func:`process_docs` replaces it with the docs of a
prepared dataset under ``$PFMVG_DATA_ROOT/<dataset>`` or, when that fails, with one error row (id
:data:`ERROR_DOC_ID`; it runs inside lmms-eval's 5x-retried ``download`` and must not raise); ``doc_to_text`` /
``doc_to_visual`` / ``doc_to_target`` call :func:`check_doc`, which raises :class:`DataNotPreparedError` with the
message on that row, so a missing dataset stops the run at once with the exact ``pfmvg data prepare ...`` command.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TypeVar

from pfmvg_plugin.data.images import load_image
from pfmvg_plugin.data.store import DATA_ROOT_ENV, PreparedDataset, data_root

__all__ = [
    "ERROR_DOC_ID",
    "DataNotPreparedError",
    "answer_text",
    "as_text",
    "check_doc",
    "doc_image",
    "doc_to_visual",
    "guarded_aggregation",
    "load_docs",
    "mapping_items",
    "missing_data_message",
    "one_label",
    "process_docs",
]

#: Id of the error row :func:`process_docs` returns when the data cannot be loaded.
ERROR_DOC_ID = "__pfmvg_data_error__"

T = TypeVar("T")


# ---- docs -----------------------------------------------------------------------------------------------------------
class DataNotPreparedError(FileNotFoundError):
    """A task's dataset is not where the task looks for it; the message names the command that creates it."""


def missing_data_message(dataset: str, split: str, where, command: str, detail: str = "") -> str:
    """What is missing, where, and the command that creates it."""
    detail = f" ({detail})" if detail else ""
    return (f"{dataset}: no prepared {split!r} split at {where}{detail}. Run `{command}` "
            f"(or set {DATA_ROOT_ENV} to the folder that holds the prepared '{dataset}' directory)")


def load_docs(dataset: str, split: str, task: str, make_doc: Callable[[Mapping, str], dict],
              commands: Mapping[str, str], generators: Mapping[str, Callable] | None = None) -> list[dict]:
    """Docs (``make_doc(record, dataset_dir)``) of the ``task`` records of a prepared dataset's ``split``.

    Raises :class:`DataNotPreparedError` naming the dataset's command in ``commands`` (default
    ``pfmvg data prepare <dataset> ...``) when the dataset, the split or its ``task`` records are missing. A dataset in
    ``generators`` is created by ``generators[dataset](path)`` when missing (synthetic data).
    """
    command = commands.get(dataset, f"pfmvg data prepare {dataset} ...")
    generate = (generators or {}).get(dataset)
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


# ---- answers --------------------------------------------------------------------------------------------------------
def doc_to_visual(doc: Mapping) -> list:
    """lmms-eval ``doc_to_visual``: the doc's image as an RGB Pillow image (joined safely under its image root)."""
    check_doc(doc)
    return [doc_image(doc)]


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


# ---- aggregation ----------------------------------------------------------------------------------------------------
def mapping_items(items: Iterable) -> list[Mapping]:
    """The per-doc values of an aggregated key that are mappings (the compact scores), in order."""
    return [item for item in items if isinstance(item, Mapping)]


def guarded_aggregation(name: str, compute: Callable[[list], T], about: str) -> Callable[[list], T | None]:
    """The lmms-eval aggregation ``pfmvg_<name>``: ``compute(items)``, or None (reported on stderr) if it raises.

    ``about`` completes its docstring ("lmms-eval aggregation: <about>").
    """
    def aggregation(items: list) -> T | None:
        try:
            return compute(items)
        except Exception as exc:  # an exception here would discard the whole evaluation after generation
            print(f"pfmvg_plugin: could not aggregate {name}: {type(exc).__name__}: {exc}", file=sys.stderr)
            return None

    aggregation.__name__ = aggregation.__qualname__ = f"pfmvg_{name}"
    aggregation.__doc__ = f"lmms-eval aggregation: {about}"
    return aggregation


def one_label(items: list) -> str | None:
    """lmms-eval aggregation for string rows (mode, convention, max_words): the value, or the distinct values joined
    by '+'."""
    values = sorted({str(v) for v in items if v is not None})
    return "+".join(values) if values else None
