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
import os
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

from pfmvg_plugin.data.images import load_image, pad_to_square
from pfmvg_plugin.data.store import DATA_ROOT_ENV, PreparedDataset, data_root
from pfmvg_plugin.lmms.state import TASK_KEY

__all__ = [
    "ERROR_DOC_ID",
    "DataNotPreparedError",
    "answer_text",
    "as_text",
    "check_doc",
    "codec_frame",
    "count_image_errors",
    "count_scored",
    "data_problem",
    "docs_function",
    "doc_image",
    "doc_to_visual",
    "guarded_aggregation",
    "doc_image_problem",
    "image_accounting",
    "image_problem",
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
    problem = data_problem(dataset, split, commands)
    if problem is not None:
        raise DataNotPreparedError(problem)
    prepared = PreparedDataset(path)
    dataset_dir = str(path.resolve())
    docs = [make_doc(r, dataset_dir) for r in prepared.records(split) if r.get("task") == task]
    if not docs:
        raise DataNotPreparedError(missing_data_message(dataset, split, path, command,
                                                        f"the split has no {task} records"))
    return docs


def data_problem(dataset: str, split: str, commands: Mapping[str, str],
                 generators: Mapping[str, Callable] | None = None) -> str | None:
    """Why ``split`` of ``dataset`` is not prepared (the message :func:`load_docs` raises), or None. A dataset in
    ``generators`` is ready: it is created on first use. Reads no records."""
    if dataset in (generators or {}):
        return None
    command = commands.get(dataset, f"pfmvg data prepare {dataset} ...")
    path = data_root() / dataset
    if not (path / "dataset.json").is_file():
        return missing_data_message(dataset, split, path, command)
    prepared = PreparedDataset(path)
    if not prepared.split_path(split).is_file():
        have = ", ".join(sorted(prepared.meta.get("splits", {}))) or "none"
        return missing_data_message(dataset, split, path, command, f"it has the splits: {have}")
    return None


def docs_function(process: Callable[..., object], problem: Callable[[str, str], str | None], dataset: str,
                  split: str, name: str | None = None, **kwargs) -> Callable[[object], object]:
    """A task YAML's ``process_docs`` for ``split`` of ``dataset``: ``process(docs, dataset, split, **kwargs)``.

    Every doc gets the task's key (``pfmvg_task``: ``name``, default ``<dataset>/<split>`` plus ``kwargs``), under
    which the task's prompt convention is recorded (:mod:`pfmvg_plugin.lmms.state`): a task variant on the same data
    (another convention, another protocol) needs its own ``name``. The function also carries what the data check
    before the run needs (:mod:`pfmvg_plugin.lmms.preflight`): ``pfmvg_data`` (dataset, split) and
    ``pfmvg_data_problem()``, ``problem(dataset, split)`` without loading anything.
    """
    key = name or "/".join([dataset, split, *(f"{k}={v}" for k, v in sorted(kwargs.items()))])

    def docs(dataset_arg):
        out = process(dataset_arg, dataset, split, **kwargs)
        return out.add_column(TASK_KEY, [key] * len(out))

    docs.pfmvg_data = (dataset, split)
    docs.pfmvg_data_problem = functools.partial(problem, dataset, split)
    docs.__name__ = docs.__qualname__ = f"{dataset}_{split}_docs"
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


def image_problem(doc: Mapping, image: str | None = None) -> str | None:
    """Why the doc's image cannot be read (missing, outside its root, not readable), or None. A stat, no decode."""
    try:
        path = _prepared(doc["dataset_dir"]).image_path({"image": image or doc["image"]})
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    if not path.is_file():
        return f"image missing: {path}"
    if not os.access(path, os.R_OK):
        return f"image not readable: {path}"
    return None


def image_accounting(doc: Mapping, problem: str | None) -> dict:
    """The per-doc values of ``n_scored`` and ``image_errors`` (``problem``: :func:`image_problem`'s answer)."""
    if problem is None:
        return {"n_scored": 1, "image_errors": None}
    dataset = Path(str(doc.get("dataset_dir") or "")).name
    return {"n_scored": 0, "image_errors": {"dataset": dataset, "id": doc.get("id"), "problem": problem}}


def doc_image_problem(doc: Mapping) -> str | None:
    """:func:`image_problem` for a doc of a prepared dataset (docs without ``dataset_dir`` are not checked)."""
    return image_problem(doc) if doc.get("dataset_dir") and doc.get("image") else None


def count_image_errors(items: list) -> int:
    """lmms-eval aggregation of ``image_errors``: how many docs had no readable image; says so on stderr.

    Those docs are left out of every other metric (never scored as wrong answers); ``n_scored`` counts the rest.
    """
    errors = [item for item in items if isinstance(item, Mapping)]
    if errors:
        datasets = sorted({str(e.get("dataset")) for e in errors})
        print(f"pfmvg_plugin: {len(errors)} of {len(items)} docs of {', '.join(datasets)} had no readable image "
              f"(e.g. {errors[0].get('problem')}); they are left out of every metric, which are over the other "
              f"{len(items) - len(errors)} docs (n_scored). Prepare the dataset again with its images "
              "(`pfmvg data prepare …` skips and lists records whose image is missing).", file=sys.stderr)
    return len(errors)


def count_scored(items: list) -> int:
    """lmms-eval aggregation of ``n_scored``: the docs the other metrics were computed over."""
    return sum(1 for item in items if item)


# ---- answers --------------------------------------------------------------------------------------------------------
#: LLaVA-1.5's expand2square fill: its CLIP image processor's mean colour.
LLAVA15_PAD_FILL = (122, 116, 104)


def doc_to_visual(doc: Mapping, lmms_eval_specific_kwargs: Mapping | None = None) -> list:
    """lmms-eval ``doc_to_visual``: the doc's image as an RGB Pillow image (joined safely under its image root);
    padded to a centred square with LLaVA-1.5's fill when the task's kwargs say ``frame: pad``."""
    check_doc(doc)
    image = doc_image(doc)
    if (lmms_eval_specific_kwargs or {}).get("frame") == "pad":
        image = pad_to_square(image, LLAVA15_PAD_FILL)
    return [image]


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


#: Task kwargs that place a convention's box codec in the model's input frame: the pixel budget within which a
#: built-in Qwen2.5-VL (lmms-eval's ``qwen2_5_vl``) resizes images, whose boxes are pixels of the resized input.
FRAME_KWARGS = ("min_pixels", "max_pixels")


def cli_model_args(argv: Sequence[str] | None = None) -> dict:
    """``--model_args`` of the ``lmms-eval`` command line this process runs (``{}`` elsewhere)."""
    argv = list(sys.argv if argv is None else argv)
    if not argv or os.path.basename(argv[0]) not in ("lmms-eval", "lmms_eval", "__main__.py"):
        return {}
    for i, arg in enumerate(argv[1:], 1):
        value = arg.split("=", 1)[1] if arg.startswith("--model_args=") else (
            argv[i + 1] if arg == "--model_args" and i + 1 < len(argv) else None)
        if value is not None:
            from lmms_eval.utils import simple_parse_args_string

            return simple_parse_args_string(value)
    return {}


def codec_frame(kwargs: Mapping | None, argv: Sequence[str] | None = None) -> dict:
    """The codec options a task's kwargs give for this model (:data:`FRAME_KWARGS`), each overridden by the same name
    in the command line's ``--model_args``, since the model resizes with those."""
    kwargs = kwargs or {}
    frame = {k: int(kwargs[k]) for k in FRAME_KWARGS if kwargs.get(k) is not None}
    if frame:
        given = cli_model_args(argv)
        frame.update({k: int(given[k]) for k in FRAME_KWARGS if given.get(k)})
    return frame
