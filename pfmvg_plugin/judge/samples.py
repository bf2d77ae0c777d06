"""Read (id, prediction, reference[, question]) items from lmms-eval ``--log_samples`` files or plain JSONL.

lmms-eval 0.7.3 writes one JSON object per document: ``doc_id``, ``doc`` (the document without images), ``target``
(``doc_to_target``), ``resps`` / ``filtered_resps`` (the model's answers) and whatever ``process_results`` returned,
e.g. our per-sample record dicts. Fields are found by *dotted paths* (``doc.id``, ``filtered_resps.0``); ``*`` as the
first part stands for any top-level value that is a dict (a per-sample record, whatever its key). Without an explicit
path the first path of the defaults that exists wins:

==========  ======================================================================================================
id          ``id``, ``*.id``, ``doc_id``
prediction  ``prediction``, ``*.prediction``, ``pred``, ``*.pred``, ``filtered_resps``, ``resps``
reference   ``reference``, ``*.reference``, ``references``, ``*.references``, ``target``
question    ``question``, ``*.question``
==========  ======================================================================================================

so a plain JSONL with ``id``/``prediction``/``reference`` fields works as it is. Lines without a usable prediction or
reference are skipped and counted by reason (with their first line numbers), never silently dropped; so are samples
whose image could not be read at evaluation time (record status ``image_error``: the tasks leave them out of every
metric, and so does the judge).

:func:`select_files` keeps a rubric to the samples it is meant for: a file whose per-sample records say it comes from
another kind of task (a grounding run judged with the report rubric would send boxes as reference reports) is an
error when named, and skipped with a note when found in a directory, unless forced.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pfmvg_plugin.report.samples import (
    IMAGE_ERROR,
    IMAGE_ERROR_SKIP,
    KIND_LABELS,
    RECORD_KEYS,
    file_kind,
    line_kind,
    parse_samples_name,
)

DEFAULT_PATHS: dict[str, tuple[str, ...]] = {
    "id": ("id", "*.id", "doc_id"),
    "prediction": ("prediction", "*.prediction", "pred", "*.pred", "filtered_resps", "resps"),
    "reference": ("reference", "*.reference", "references", "*.references", "target"),
    "question": ("question", "*.question"),
}
SAMPLES_GLOB = "*_samples_*.jsonl"
_KEEP_LINES = 20
_MISSING = object()


@dataclass(frozen=True)
class Item:
    """One thing to judge. ``reference`` joins several references with blank lines."""

    id: str
    prediction: str
    reference: str
    question: str | None = None
    where: str = ""  # file:line


@dataclass
class ReadStats:
    """What the reader saw besides the items it returned."""

    files: list[str] = field(default_factory=list)
    lines: int = 0
    items: int = 0
    skipped: Counter = field(default_factory=Counter)
    skipped_at: dict[str, list[str]] = field(default_factory=dict)
    duplicate_ids: int = 0
    skipped_files: list[dict] = field(default_factory=list)  # files of another task kind (see select_files)

    def skip(self, reason: str, where: str) -> None:
        self.skipped[reason] += 1
        kept = self.skipped_at.setdefault(reason, [])
        if len(kept) < _KEEP_LINES:
            kept.append(where)

    def to_dict(self) -> dict:
        return {"files": self.files, "lines": self.lines, "items": self.items, "skipped": dict(self.skipped),
                "skipped_at": self.skipped_at, "duplicate_ids": self.duplicate_ids,
                "skipped_files": self.skipped_files}


def get_path(obj: object, path: str) -> object:
    """The value at dotted ``path`` in ``obj`` (list indexes as integers, ``*`` = any dict value), else a sentinel."""
    head, _, rest = path.partition(".")
    if head == "*":
        if not isinstance(obj, dict):
            return _MISSING
        for value in obj.values():
            if isinstance(value, dict):
                found = get_path(value, rest) if rest else value
                if found is not _MISSING and found is not None:
                    return found
        return _MISSING
    if isinstance(obj, dict):
        value = obj.get(head, _MISSING)
    elif isinstance(obj, (list, tuple)) and head.lstrip("-").isdigit():
        index = int(head)
        value = obj[index] if -len(obj) <= index < len(obj) else _MISSING
    else:
        return _MISSING
    return get_path(value, rest) if rest and value is not _MISSING else value


def first_value(obj: object, paths: Sequence[str]) -> object:
    """The value of the first path in ``paths`` that exists and is not None, else None."""
    for path in paths:
        value = get_path(obj, path)
        if value is not _MISSING and value is not None:
            return value
    return None


def as_text(value: object, join: bool = False) -> str | None:
    """A string from a field value: strings as they are, nested lists unwrapped (the first element, or all strings
    joined by blank lines when ``join``), numbers and booleans printed; None for anything else."""
    while isinstance(value, (list, tuple)):
        if not value:
            return None
        if join and all(isinstance(v, str) for v in value):
            return "\n\n".join(value)
        value = value[0]
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, bool):
        return "yes" if value else "no"
    return None


def resolve_paths(overrides: dict[str, str | None] | None = None) -> dict[str, tuple[str, ...]]:
    """The default paths with the user's choices (``{"prediction": "vqa_sample.pred"}``) put in their place."""
    paths = dict(DEFAULT_PATHS)
    for name, path in (overrides or {}).items():
        if path:
            if name not in paths:
                raise ValueError(f"unknown field {name!r}; known: {', '.join(paths)}")
            paths[name] = (path,)
    return paths


def expand_inputs(paths: Iterable[str | Path]) -> list[Path]:
    """Files from ``paths``: a directory stands for every lmms-eval ``*_samples_*.jsonl`` under it."""
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(f for f in p.rglob(SAMPLES_GLOB) if f.is_file())
            if not found:
                raise FileNotFoundError(f"no lmms-eval samples files ({SAMPLES_GLOB}) under {p}; run lmms-eval "
                                        "with --output_path DIR --log_samples, or give JSONL files")
            files.extend(found)
        elif p.is_file():
            files.append(p)
        else:
            raise FileNotFoundError(f"{p} does not exist")
    return files


#: The rubric that fits each kind of samples (None: no judge rubric does).
RUBRIC_FOR_KIND = {"grounding": None, "vqa": "vqa", "report": "report"}
#: What the references of each kind are, and what a rubric of that kind takes them for.
_REFERENCES = {"grounding": "boxes", "vqa": "short answers", "report": "whole reports"}
_TAKEN_AS = {"vqa": "reference answers", "report": "reference reports"}


def mismatch_message(path: Path, kind: str, rubric: str) -> str:
    """Why ``path`` (samples of ``kind``) does not fit ``--rubric rubric``, and what to do instead."""
    task = parse_samples_name(path)[1]
    fits = RUBRIC_FOR_KIND[kind]
    instead = (f"Judge it with --rubric {fits}, or pass --force-rubric if you really mean --rubric {rubric}" if fits
               else "Grounding runs are scored by their boxes, not by a judge; pass --force-rubric if you really mean "
                    "to judge it")
    return (f"{path}: task {task} is a {KIND_LABELS[kind]} run ({RECORD_KEYS[kind]} records), but --rubric {rubric} "
            f"grades {KIND_LABELS[rubric]} outputs: the file's references ({_REFERENCES[kind]}) would be sent to the "
            f"judge as {_TAKEN_AS.get(rubric, 'references')}. {instead}.")


def select_files(inputs: Iterable[str | Path], task: str | None, force: bool = False) -> tuple[list[Path], list[dict]]:
    """``(files to judge, files skipped)`` for a rubric meant for ``task`` samples (None: any).

    A file of another kind (told by its per-sample records) raises ``ValueError`` naming it when it was named, and is
    skipped (``{"file", "kind", "why"}``) when a directory held it; ``force`` keeps every file. Files with none of our
    records (plain JSONL) always stay.
    """
    keep: list[Path] = []
    skipped: list[dict] = []
    refused: list[str] = []
    for given in map(Path, inputs):
        for path in expand_inputs([given]):
            kind = None if force or task is None else file_kind(path)
            if kind is None or kind == task:
                keep.append(path)
            elif given.is_dir():
                skipped.append({"file": str(path), "kind": kind, "why": mismatch_message(path, kind, task)})
            else:
                refused.append(mismatch_message(path, kind, task))
    if refused or (skipped and not keep):
        raise ValueError("\n".join(refused or [s["why"] for s in skipped]))
    return keep, skipped


def iter_lines(path: Path, stats: ReadStats) -> Iterator[tuple[str, dict]]:
    """``(file:line, object)`` for every JSON-object line of a JSONL file; other lines are counted as skipped."""
    stats.files.append(str(path))
    with open(path, encoding="utf-8") as f:
        for lineno, text in enumerate(f, start=1):
            if not text.strip():
                continue
            stats.lines += 1
            where = f"{path.name}:{lineno}"
            try:
                obj = json.loads(text)
            except json.JSONDecodeError:
                stats.skip("not JSON", where)
                continue
            if not isinstance(obj, dict):
                stats.skip("not a JSON object", where)
                continue
            yield where, obj


def read_items(paths: Iterable[str | Path], fields: dict[str, str | None] | None = None,
               need_question: bool = False, stats: ReadStats | None = None) -> list[Item]:
    """Every judgeable item of the input files (see the module docstring for how fields are found)."""
    stats = stats if stats is not None else ReadStats()
    spec = resolve_paths(fields)
    items: list[Item] = []
    seen: set[str] = set()
    for path in expand_inputs(paths):
        for where, obj in iter_lines(path, stats):
            raw_id = first_value(obj, spec["id"])
            item_id = as_text(raw_id)
            prediction = as_text(first_value(obj, spec["prediction"]))
            reference = as_text(first_value(obj, spec["reference"]), join=True)
            question = as_text(first_value(obj, spec["question"]))
            found = line_kind(obj)
            if found is not None and found[1].get("status") == IMAGE_ERROR:
                stats.skip(IMAGE_ERROR_SKIP, where)
            elif item_id is None:
                stats.skip(f"no id ({' / '.join(spec['id'])})", where)
            elif prediction is None:
                stats.skip(f"no prediction ({' / '.join(spec['prediction'])})", where)
            elif reference is None:
                stats.skip(f"no reference ({' / '.join(spec['reference'])})", where)
            elif need_question and question is None:
                stats.skip(f"no question ({' / '.join(spec['question'])})", where)
            else:
                if item_id in seen:
                    stats.duplicate_ids += 1
                seen.add(item_id)
                items.append(Item(item_id, prediction, reference, question, where))
    stats.items = len(items)
    return items
