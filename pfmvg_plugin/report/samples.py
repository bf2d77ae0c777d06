"""Read lmms-eval ``--log_samples`` output: find the samples files of a run and pull our per-sample records out.

lmms-eval 0.7.3 writes ``--output_path D --log_samples`` as ``D[/<subdir>]/<date>_results.json`` and
``D[/<subdir>]/<date>_samples_<task>.jsonl`` (``<subdir>`` comes from ``--model_args``; ``<date>`` is
``YYYYMMDD_HHMMSS``). Each samples line is one document: ``doc_id``, ``target``, ``filtered_resps``, ``input`` … plus
the metric keys our ``process_results`` returned. The *kind* of a line is the kind of task that logged it, told by its
per-sample record (:data:`RECORD_KEYS`): ``grounding_sample`` (or, for older logs, any top-level dict with ``iou`` and
``gt_boxes``: every metric key holds the same record; one is used), ``vqa_sample`` or ``report_sample``. A record with
status ``image_error`` (the doc's image could not be read at evaluation time) is left out of every metric by the
tasks, so the readers here skip it and count it under :data:`IMAGE_ERROR_SKIP`.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

SAMPLES_GLOB = "*_samples_*.jsonl"
#: Kind of task -> key of the per-sample record it logs (``SAMPLE_KEY`` of ``pfmvg_plugin.lmms.<kind>_task``).
RECORD_KEYS = {"grounding": "grounding_sample", "vqa": "vqa_sample", "report": "report_sample"}
#: Record status of a doc whose image could not be read when it was evaluated (see the module docstring).
IMAGE_ERROR = "image_error"
#: Why such a record is skipped.
IMAGE_ERROR_SKIP = "image_error: no readable image when evaluated (left out of every metric, as the task does)"
#: How each kind is called in messages.
KIND_LABELS = {"grounding": "grounding (boxes)", "vqa": "VQA", "report": "report generation"}
_SAMPLES_NAME = re.compile(r"^(?P<date>.+?)_samples_(?P<task>.+)\.jsonl$")

#: Keys :func:`pfmvg_plugin.metrics.aggregate` needs in every record.
SCORE_KEYS = ("iou", "dice", "parsed", "status", "mode")
#: How many skipped line numbers are remembered per reason (the counts are always complete).
_KEEP_LINES = 20


@dataclass
class ReadStats:
    """What :func:`iter_grounding_samples` saw besides the records it yielded."""

    lines: int = 0
    records: int = 0
    skipped: Counter = field(default_factory=Counter)  # reason -> count
    skipped_lines: dict[str, list[int]] = field(default_factory=dict)  # reason -> first line numbers

    def skip(self, reason: str, line: int) -> None:
        self.skipped[reason] += 1
        kept = self.skipped_lines.setdefault(reason, [])
        if len(kept) < _KEEP_LINES:
            kept.append(line)

    @property
    def n_skipped(self) -> int:
        return sum(self.skipped.values())

    def to_dict(self) -> dict:
        return {"lines": self.lines, "records": self.records, "skipped": dict(self.skipped),
                "skipped_lines": self.skipped_lines}


def parse_samples_name(path: str | Path) -> tuple[str | None, str]:
    """``(date, task)`` of a ``<date>_samples_<task>.jsonl`` file name; ``(None, stem)`` for any other name."""
    name = Path(path).name
    m = _SAMPLES_NAME.match(name)
    if m:
        return m["date"], m["task"]
    return None, Path(name).stem


def find_sample_files(path: str | Path, notes: list[str] | None = None) -> dict[str, Path]:
    """Map task name -> samples file for an lmms-eval output dir (searched recursively) or a single ``.jsonl``.

    When a task has several samples files (several runs into one output dir) the newest date wins and a line saying
    so is appended to ``notes``. Raises ``FileNotFoundError`` for a missing path or a dir without samples files.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist; give an lmms-eval --output_path dir (run with --log_samples) "
                                "or one of its <date>_samples_<task>.jsonl files")
    if path.is_file():
        return {parse_samples_name(path)[1]: path}
    found: dict[str, list[tuple[str, float, Path]]] = {}
    for f in sorted(path.rglob(SAMPLES_GLOB)):
        if f.is_file():
            date, task = parse_samples_name(f)
            found.setdefault(task, []).append((date or "", f.stat().st_mtime, f))
    if not found:
        raise FileNotFoundError(f"no lmms-eval samples files ({SAMPLES_GLOB}) under {path}; "
                                "run lmms-eval with --output_path DIR --log_samples")
    chosen = {}
    for task in sorted(found):
        runs = sorted(found[task], key=lambda r: (r[0], r[1], str(r[2])))
        chosen[task] = runs[-1][2]
        if len(runs) > 1 and notes is not None:
            older = ", ".join(str(_rel(r[2], path)) for r in runs[:-1])
            notes.append(f"task {task}: {len(runs)} samples files; using the newest, {_rel(runs[-1][2], path)} "
                         f"(ignored: {older})")
    return chosen


def results_file_for(samples_path: str | Path) -> Path | None:
    """The ``<date>_results.json`` written with a samples file (same dir and date), else the newest one beside it."""
    samples_path = Path(samples_path)
    date, _ = parse_samples_name(samples_path)
    if date:
        same = samples_path.with_name(f"{date}_results.json")
        if same.is_file():
            return same
    beside = sorted(samples_path.parent.glob("*_results.json"))
    return beside[-1] if beside else None


def find_record(line: dict) -> dict | None:
    """The grounding record of one samples line: the first top-level dict value with ``iou`` and ``gt_boxes``."""
    for value in line.values():
        if isinstance(value, dict) and "iou" in value and "gt_boxes" in value:
            return value
    return None


def line_kind(line: dict) -> tuple[str, dict] | None:
    """``(kind, record)`` of one samples line (see the module docstring), or None when it holds none of ours."""
    for kind, key in RECORD_KEYS.items():
        if isinstance(line.get(key), dict):
            return kind, line[key]
    record = find_record(line)
    return ("grounding", record) if record is not None else None


def file_kind(path: str | Path) -> str | None:
    """The kind of the first line of a samples file that holds one of our records; None when no line does."""
    with open(path, encoding="utf-8") as f:
        for text in f:
            try:
                line = json.loads(text)
            except json.JSONDecodeError:
                continue
            found = line_kind(line) if isinstance(line, dict) else None
            if found is not None:
                return found[0]
    return None


def _problem(record: dict) -> str | None:
    missing = [k for k in SCORE_KEYS if k not in record]
    if missing:
        return f"record lacks {', '.join(missing)}"
    for key in ("iou", "dice"):
        v = record[key]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            return f"record has a non-numeric {key}"
    gts = record["gt_boxes"]
    if not isinstance(gts, list) or not gts or not all(isinstance(b, list) and len(b) == 4 for b in gts):
        return "record has no usable gt_boxes"
    return None


#: Why a line is skipped when it holds no record of the kind read.
NO_RECORD = {"grounding": "no grounding record (no dict with iou and gt_boxes)",
             "vqa": f"no VQA record (no {RECORD_KEYS['vqa']})",
             "report": f"no report record (no {RECORD_KEYS['report']})"}


def iter_records(path: str | Path, kind: str = "grounding", stats: ReadStats | None = None) -> Iterator[dict]:
    """Yield the per-sample record of ``kind`` (:data:`RECORD_KEYS`) of every line of a samples ``.jsonl``.

    Lines that are not JSON objects, lines without such a record and grounding records missing score fields are
    skipped and counted in ``stats`` by reason. Each yielded dict is a copy of the record plus ``_line`` (1-based
    line number) and ``_doc_id`` (lmms-eval's ``doc_id``).
    """
    stats = stats if stats is not None else ReadStats()
    with open(path, encoding="utf-8") as f:
        for lineno, text in enumerate(f, start=1):
            if not text.strip():
                continue
            stats.lines += 1
            try:
                line = json.loads(text)
            except json.JSONDecodeError:
                stats.skip("not JSON", lineno)
                continue
            if not isinstance(line, dict):
                stats.skip("not a JSON object", lineno)
                continue
            record = line.get(RECORD_KEYS[kind])
            if kind == "grounding" and not isinstance(record, dict):
                record = find_record(line)
            if not isinstance(record, dict):
                stats.skip(NO_RECORD[kind], lineno)
                continue
            if record.get("status") == IMAGE_ERROR:
                stats.skip(IMAGE_ERROR_SKIP, lineno)
                continue
            problem = _problem(record) if kind == "grounding" else None
            if problem:
                stats.skip(problem, lineno)
                continue
            stats.records += 1
            yield {**record, "_line": lineno, "_doc_id": line.get("doc_id")}


def iter_grounding_samples(path: str | Path, stats: ReadStats | None = None) -> Iterator[dict]:
    """:func:`iter_records` of the grounding records (the first top-level dict with ``iou`` and ``gt_boxes``)."""
    return iter_records(path, "grounding", stats)


def _rel(p: Path, root: Path) -> Path:
    try:
        return p.relative_to(root)
    except ValueError:
        return p
