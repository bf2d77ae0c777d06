"""The canonical record schema (one JSON object per line) and its validation.

Every record has ``id`` (stable, unique), ``task`` (``grounding`` | ``vqa`` | ``report``), ``source`` (dataset name),
``split`` (``train`` | ``val`` | ``test``) and ``image`` (a path relative to the dataset's image root). Per task:

- grounding: ``width``, ``height`` (original pixels), ``phrase``, ``boxes`` (list of ``[x1, y1, x2, y2]`` absolute
  pixels, at least one), ``category`` (string or null)
- vqa: ``question``, ``answer``, ``answer_type`` (``closed`` | ``open``)
- report: ``report``; ``images`` may list further views

``meta`` (a dict) carries anything source-specific (DICOM ids, radiologist ids, fusion method, ...).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

TASKS = ("grounding", "vqa", "report")
SPLITS = ("train", "val", "test")
ANSWER_TYPES = ("closed", "open")

_SPLIT_ALIASES = {
    "train": "train", "training": "train",
    "val": "val", "valid": "val", "validate": "val", "validation": "val", "dev": "val",
    "test": "test", "testing": "test",
}


class RecordError(ValueError):
    """A record that breaks the schema; names the file, line and reason."""

    def __init__(self, path: str | Path, line: int, reason: str) -> None:
        self.path, self.line, self.reason = str(path), line, reason
        super().__init__(f"{path}:{line}: {reason}")


def normalize_split(name: str) -> str:
    """Map a release's split name (``validate``, ``validation``, ``dev`` ...) to ``train``/``val``/``test``."""
    key = str(name).strip().lower()
    if key not in _SPLIT_ALIASES:
        raise ValueError(f"unknown split {name!r}; expected one of {', '.join(sorted(_SPLIT_ALIASES))}")
    return _SPLIT_ALIASES[key]


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _nonempty_str(v: Any) -> bool:
    return isinstance(v, str) and v.strip() != ""


def validate_record(rec: Any) -> list[str]:
    """All the ways ``rec`` breaks the schema (empty when it is valid)."""
    if not isinstance(rec, dict):
        return [f"record is {type(rec).__name__}, not an object"]
    problems = []
    for key in ("id", "task", "source", "split", "image"):
        if not _nonempty_str(rec.get(key)):
            problems.append(f"missing or empty {key!r}")
    task = rec.get("task")
    if _nonempty_str(task) and task not in TASKS:
        problems.append(f"task {task!r} is not one of {TASKS}")
    if _nonempty_str(rec.get("split")) and rec["split"] not in SPLITS:
        problems.append(f"split {rec['split']!r} is not one of {SPLITS}")
    image = rec.get("image")
    if _nonempty_str(image) and (image.startswith(("/", "\\")) or ".." in Path(image).parts):
        problems.append(f"image path {image!r} must be relative and stay inside the image root")
    if task == "grounding":
        problems += _grounding_problems(rec)
    elif task == "vqa":
        for key in ("question", "answer"):
            if not _nonempty_str(rec.get(key)):
                problems.append(f"missing or empty {key!r}")
        if rec.get("answer_type") not in ANSWER_TYPES:
            problems.append(f"answer_type must be one of {ANSWER_TYPES}, got {rec.get('answer_type')!r}")
    elif task == "report" and not _nonempty_str(rec.get("report")):
        problems.append("missing or empty 'report'")
    if "meta" in rec and not isinstance(rec["meta"], dict):
        problems.append("'meta' must be an object")
    return problems


def grounding_record(*, record_id: str, source: str, split: str, image: str, width: int, height: int, phrase: str,
                     boxes: list[list[float]], category: str | None, meta: dict) -> dict:
    """A grounding record with the schema's keys in canonical order (not validated: see :func:`validate_record`)."""
    return {"id": record_id, "task": "grounding", "source": source, "split": split, "image": image, "width": width,
            "height": height, "phrase": phrase, "boxes": boxes, "category": category, "meta": meta}


def _grounding_problems(rec: dict) -> list[str]:
    problems = []
    w, h = rec.get("width"), rec.get("height")
    if not (isinstance(w, int) and isinstance(h, int) and w > 0 and h > 0):
        problems.append(f"width/height must be positive integers, got {w!r}x{h!r}")
        w = h = None
    if not _nonempty_str(rec.get("phrase")):
        problems.append("missing or empty 'phrase'")
    cat = rec.get("category")
    if cat is not None and not isinstance(cat, str):
        problems.append("'category' must be a string or null")
    boxes = rec.get("boxes")
    if not isinstance(boxes, list) or not boxes:
        return problems + ["'boxes' must be a non-empty list of [x1, y1, x2, y2]"]
    for i, box in enumerate(boxes):
        if not (isinstance(box, list) and len(box) == 4 and all(_is_number(v) for v in box)):
            problems.append(f"box {i} is not four finite numbers: {box!r}")
            continue
        x1, y1, x2, y2 = box
        if x2 <= x1 or y2 <= y1:
            problems.append(f"box {i} has no area: {box!r}")
        if w is not None and (x1 < 0 or y1 < 0 or x2 > w or y2 > h):
            problems.append(f"box {i} {box!r} lies outside the {w}x{h} image")
    return problems


def check_record(rec: Any, path: str | Path = "<records>", line: int = 0) -> dict:
    """Return ``rec`` if valid, else raise :class:`RecordError` naming file, line and every problem."""
    problems = validate_record(rec)
    if problems:
        raise RecordError(path, line, "; ".join(problems))
    return rec


def iter_records(path: str | Path, validate: bool = True) -> Iterator[dict]:
    """Yield the records of a JSONL file; a bad line raises :class:`RecordError` with its line number."""
    path = Path(path)
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise RecordError(path, lineno, f"not valid JSON ({e.msg} at column {e.colno})") from None
            yield check_record(rec, path, lineno) if validate else rec


def read_records(path: str | Path, validate: bool = True) -> list[dict]:
    """All records of a JSONL file, validated; duplicate ids are an error."""
    records, seen = [], {}
    for lineno, rec in enumerate(iter_records(path, validate), start=1):
        rid = rec.get("id")
        if rid in seen:
            raise RecordError(path, lineno, f"duplicate id {rid!r} (first at record {seen[rid]})")
        seen[rid] = lineno
        records.append(rec)
    return records


def write_records(path: str | Path, records: Iterable[dict]) -> int:
    """Write records as JSONL (validated first); returns how many were written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    tmp = path.with_suffix(path.suffix + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for rec in records:
            check_record(rec, path, n + 1)
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")
            n += 1
    tmp.replace(path)
    return n
