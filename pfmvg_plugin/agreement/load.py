"""Read raters and per-sample metrics into named variables keyed by sample id.

A *source* is one file given as ``PATH`` or ``NAME=PATH`` (the name defaults to the file stem):

* ratings (``--ratings``): CSV/TSV or JSONL. The id is the first of ``id``, ``sample_id``, ``*.id`` (a record's or
  lmms-eval's ``doc.id``), ``doc_id`` (or ``--id-field``). Long format -- a ``rater`` (or ``annotator``) column plus
  ``rating`` -- gives one variable per rater (``NAME:rater``); wide format gives ``NAME`` from a ``rating`` column,
  else one variable per numeric column (``NAME:column``). ``pfmvg judge`` output reads as it is (unrated samples have
  ``rating: null``). A long file may rate several models' outputs and tasks (``pfmvg rate export``: ``task`` and
  ``model`` columns): a column of :data:`UNIT_COLUMNS` that holds more than one value becomes part of the unit, whose id
  is then ``task/model/id`` (only the varying parts), so each output is one unit and nothing counts as a duplicate.
* metrics (``--metrics``): a per-sample metrics CSV/JSONL (every numeric column is a metric), or lmms-eval
  ``--log_samples`` JSONL, whose numeric and boolean (0/1) per-sample fields (top level and inside per-sample record
  dicts such as ``vqa_sample``, not ``doc``) are metrics. Where a JSONL line carries prediction and reference texts
  (the paths of :mod:`pfmvg_plugin.judge.samples`), per-sample text metrics are computed too (``text_metrics``):
  ``report`` = sentence BLEU-1/4, ROUGE-L, METEOR (this package's Java-free one), CIDEr-D (IDF over the file's
  references); ``vqa`` = exact match, token recall; ``auto`` = none for grounding samples (lines with an ``iou``),
  ``vqa`` when the lines carry a question, else ``report``. A field the file logs wins over a computed metric of the
  same name (e.g. ``report_sample.rouge_l``, which follows the task's own ``max_words`` cut): the computed one is
  left out and the report says so under ``shadowed``. A generation-error answer is scored as an empty text, as the
  tasks do; a sample whose image could not be read (status ``image_error``) is left out, as the tasks leave it out
  of every metric, and counted (``image_errors_left_out``).

Ratings are on the 1-5 scale: a value off it (``7``, ``0``) is an error naming the file, line and value, unless
``any_scale`` (``--any-scale``) says the file rates on another scale. Values on the scale that are not integers
(``3.5``, two readers averaged) are kept; such raters get correlations only. Empty cells, ``NA``/``nan``/``null`` are
*missing*, text that is not a number is *invalid*; both are counted per variable, as are duplicate ids (the first
value is kept). Nothing is dropped silently.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from pfmvg_plugin.agreement.stats import SCALE
from pfmvg_plugin.judge.samples import DEFAULT_PATHS, as_text, first_value
from pfmvg_plugin.lmms.answers import is_error_answer
from pfmvg_plugin.report.samples import IMAGE_ERROR, line_kind

ID_COLUMNS = ("id", "sample_id", "doc_id")
#: Where a row's id is looked for: plain columns first, then a record's / lmms-eval ``doc``'s id, then ``doc_id``.
ID_PATHS = ("id", "sample_id", "*.id", "doc_id")
RATER_COLUMNS = ("rater", "annotator", "reader")
#: Columns of a long ratings file that, when they vary, tell apart units sharing a sample id (``pfmvg rate export``).
UNIT_COLUMNS = ("task", "model")
MISSING_TEXT = {"", "na", "n/a", "nan", "null", "none", "-"}
#: Numeric fields of lmms-eval samples lines that are bookkeeping, not metrics.
NOT_METRICS = {"doc_id", "id", "width", "height", "line", "attempts", "max_words", "n_scored"}
TEXT_METRIC_SETS = ("auto", "report", "vqa", "none")
#: Off-scale ratings quoted in the error (all are counted).
_OFF_SCALE_SHOWN = 5


@dataclass
class Variable:
    """One rater or metric: ``values`` maps sample id -> value (None = missing)."""

    name: str
    kind: str  # "rater" or "metric"
    source: str
    values: dict[str, float | None] = field(default_factory=dict)
    missing: int = 0
    invalid: int = 0
    invalid_examples: list[str] = field(default_factory=list)
    duplicates: int = 0

    def add(self, sample_id: str, raw: object) -> None:
        if sample_id in self.values:
            self.duplicates += 1
            return
        value, problem = to_number(raw)
        if problem == "invalid":
            self.invalid += 1
            if len(self.invalid_examples) < 5:
                self.invalid_examples.append(f"{sample_id}: {raw!r}")
        elif problem == "missing":
            self.missing += 1
        self.values[sample_id] = value

    @property
    def present(self) -> dict[str, float]:
        return {k: v for k, v in self.values.items() if v is not None}

    def report(self) -> dict:
        return {"name": self.name, "kind": self.kind, "source": self.source, "ids": len(self.values),
                "values": len(self.present), "missing": self.missing, "invalid": self.invalid,
                "invalid_examples": self.invalid_examples, "duplicate_ids": self.duplicates}


def to_number(raw: object) -> tuple[float | None, str | None]:
    """``(value, None)``, ``(None, "missing")`` or ``(None, "invalid")`` for a cell or JSON value."""
    if raw is None:
        return None, "missing"
    if isinstance(raw, bool):
        return None, "invalid"
    if isinstance(raw, (int, float)):
        return (float(raw), None) if math.isfinite(raw) else (None, "missing")
    if isinstance(raw, str):
        text = raw.strip()
        if text.lower() in MISSING_TEXT:
            return None, "missing"
        try:
            value = float(text)
        except ValueError:
            return None, "invalid"
        return (value, None) if math.isfinite(value) else (None, "missing")
    return None, "invalid"


def split_spec(spec: str) -> tuple[str, Path]:
    """``NAME=PATH`` or ``PATH`` -> ``(name, path)``."""
    if "=" in spec and not Path(spec).exists():
        name, path = spec.split("=", 1)
        if name and path:
            return name, Path(path)
    path = Path(spec)
    return path.stem, path


def read_numbered_rows(path: Path) -> list[tuple[int, dict]]:
    """``(line number, row)`` of a CSV/TSV (dicts of strings; the line a record ends on) or JSONL (dicts) file."""
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    if path.suffix.lower() in (".csv", ".tsv"):
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f, delimiter="\t" if path.suffix.lower() == ".tsv" else ",")
            return [(reader.line_num, dict(r)) for r in reader]
    rows = []
    with open(path, encoding="utf-8") as f:
        for lineno, text in enumerate(f, start=1):
            if not text.strip():
                continue
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{lineno} is not JSON ({exc.msg}); give CSV, TSV or JSONL files") from None
            if not isinstance(obj, dict):
                raise ValueError(f"{path}:{lineno} is not a JSON object")
            rows.append((lineno, obj))
    return rows


def read_rows(path: Path) -> list[dict]:
    """Rows of a CSV/TSV (dicts of strings) or JSONL (dicts) file."""
    return [row for _, row in read_numbered_rows(path)]


def off_scale_error(path: Path, found: list[str]) -> ValueError:
    """The error for ratings off the 1-5 scale (``found``: ``"line 3 (rating): 7"``)."""
    shown = "; ".join(found[:_OFF_SCALE_SHOWN]) + (f"; and {len(found) - _OFF_SCALE_SHOWN} more"
                                                   if len(found) > _OFF_SCALE_SHOWN else "")
    return ValueError(
        f"{path}: {len(found)} rating(s) off the {SCALE[0]}-{SCALE[-1]} scale: {shown}. Fix them or leave the cells "
        "empty (missing); give a column that is not a rating with --metrics; or pass --any-scale if this file rates "
        "on another scale (its raters then get correlations only).")


def _row_id(row: dict, id_field: str | None) -> str | None:
    if id_field:
        return as_text(first_value(row, (id_field,)))
    return as_text(first_value(row, ID_PATHS))


def _columns(rows: Iterable[dict]) -> list[str]:
    seen: dict[str, None] = {}
    for row in rows:
        seen.update(dict.fromkeys(row))
    return list(seen)


def _numeric_column(rows: list[dict], column: str) -> bool:
    values = [to_number(r.get(column)) for r in rows]
    return any(v is not None for v, _ in values) and all(p != "invalid" for _, p in values)


def load_ratings(spec: str, id_field: str | None = None, any_scale: bool = False) -> tuple[list[Variable], dict]:
    """The rater variables of one ratings file and a report of what was read.

    A rating off the 1-5 scale raises ``ValueError`` naming the file, line and value unless ``any_scale``.
    """
    name, path = split_spec(spec)
    numbered = read_numbered_rows(path)
    rows = [row for _, row in numbered]
    columns = _columns(rows)
    lower = {c.lower(): c for c in columns}
    rater_col = next((lower[c] for c in RATER_COLUMNS if c in lower), None)
    rating_col = lower.get("rating")
    no_id = 0
    variables: dict[str, Variable] = {}
    off_scale: list[str] = []

    def take(var: Variable, sample_id: str, raw: object, line: int, label: str) -> None:
        value, _ = to_number(raw)
        if value is not None and not SCALE[0] <= value <= SCALE[-1] and not any_scale:
            off_scale.append(f"line {line} ({label}): {raw if isinstance(raw, str) else json.dumps(raw)}")
        var.add(sample_id, raw)

    if rater_col and rating_col:
        unit_cols = [lower[c] for c in UNIT_COLUMNS if c in lower and len({r.get(lower[c]) for r in rows}) > 1]
        for line, row in numbered:
            sample_id = _row_id(row, id_field)
            if sample_id is None:
                no_id += 1
                continue
            sample_id = "/".join([*(str(row.get(c)) for c in unit_cols), sample_id])
            rater = f"{name}:{row.get(rater_col)}"
            take(variables.setdefault(rater, Variable(rater, "rater", str(path))), sample_id, row.get(rating_col),
                 line, f"rater {row.get(rater_col)}")
    else:
        id_cols = {id_field} if id_field else set(ID_COLUMNS)
        if rating_col:
            value_cols = [rating_col]
        else:
            value_cols = [c for c in columns if c not in id_cols and _numeric_column(rows, c)]
        if not value_cols:
            raise ValueError(f"{path}: no rating column (want 'rating', a 'rater'+'rating' long format, or numeric "
                             f"columns next to the id); columns: {', '.join(columns) or 'none'}")
        names = {c: name if len(value_cols) == 1 else f"{name}:{c}" for c in value_cols}
        for c in value_cols:
            variables[names[c]] = Variable(names[c], "rater", str(path))
        for line, row in numbered:
            sample_id = _row_id(row, id_field)
            if sample_id is None:
                no_id += 1
                continue
            for c in value_cols:
                take(variables[names[c]], sample_id, row.get(c), line, f"column {c}")
    if off_scale:
        raise off_scale_error(path, off_scale)
    return list(variables.values()), {"source": name, "path": str(path), "rows": len(rows), "rows_without_id": no_id}


def _numeric_fields(row: dict) -> dict[str, float]:
    """Numeric scalar fields of an lmms-eval samples line: top level and one level into record dicts (not ``doc``)."""
    found: dict[str, float] = {}

    def take(key: str, value: object) -> None:
        if key in NOT_METRICS or key in found:
            return
        if isinstance(value, (int, float)) and math.isfinite(value):  # booleans count as 0/1
            found[key] = float(value)

    for key, value in row.items():
        take(key, value)
    for key, value in row.items():
        if isinstance(value, dict) and key != "doc":
            for inner_key, inner in value.items():
                take(inner_key, inner)
    return found


def text_metric_values(predictions: list[str], references: list[str], which: str) -> dict[str, list[float]]:
    """Per-sample text metrics: ``report`` (bleu1, bleu4, rouge_l, meteor, cider) or ``vqa`` (exact, token_recall)."""
    if which == "vqa":
        from pfmvg_plugin.metrics.vqa import open_exact, token_recall

        return {"exact": [float(open_exact(p, r)) for p, r in zip(predictions, references)],
                "token_recall": [token_recall(p, r) for p, r in zip(predictions, references)]}
    from pfmvg_plugin.metrics import text

    hyps = [text.tokenize(p) for p in predictions]
    refs = [[text.tokenize(r)] for r in references]
    sentence_bleu = [text.bleu([h], [r]) for h, r in zip(hyps, refs)]
    return {"bleu1": [b[0] for b in sentence_bleu], "bleu4": [b[3] for b in sentence_bleu],
            "rouge_l": text.rouge_l(hyps, refs)[1], "meteor": text.meteor(hyps, refs)[1],
            "cider": text.cider_d(hyps, refs)[1]}


def _text_metric_set(choice: str, rows: list[dict], fields: list[dict]) -> str | None:
    """Which text metrics to compute for a JSONL metrics file (see the module docstring), or None."""
    if choice == "none":
        return None
    if choice != "auto":
        return choice
    if any("iou" in f for f in fields):  # grounding samples: box strings are not texts to compare
        return None
    return "vqa" if any(first_value(r, DEFAULT_PATHS["question"]) is not None for r in rows) else "report"


def load_metrics(spec: str, id_field: str | None = None, columns: list[str] | None = None,
                 text_metrics: str = "auto") -> tuple[list[Variable], dict]:
    """The metric variables of one metrics file and a report of what was read."""
    if text_metrics not in TEXT_METRIC_SETS:
        raise ValueError(f"text metrics must be one of {', '.join(TEXT_METRIC_SETS)}")
    name, path = split_spec(spec)
    rows = read_rows(path)
    is_csv = path.suffix.lower() in (".csv", ".tsv")
    image_errors = 0
    if not is_csv:  # samples whose image could not be read: the tasks leave them out of every metric
        kept = [r for r in rows if (found := line_kind(r)) is None or found[1].get("status") != IMAGE_ERROR]
        image_errors, rows = len(rows) - len(kept), kept
    ids = [_row_id(row, id_field) for row in rows]
    per_row = ([{c: v for c, v in r.items() if c not in ID_COLUMNS and c != id_field} for r in rows] if is_csv
               else [_numeric_fields(r) for r in rows])
    all_cols = _columns(per_row)
    if is_csv:
        all_cols = [c for c in all_cols if _numeric_column(per_row, c)]
    chosen = columns or all_cols
    variables = {c: Variable(c, "metric", str(path)) for c in chosen if c in all_cols}
    for sample_id, values in zip(ids, per_row):
        if sample_id is not None:
            for c, var in variables.items():
                var.add(sample_id, values.get(c))
    computed = None if is_csv else _text_metric_set(text_metrics, rows, per_row)
    shadowed: dict[str, str] = {}
    if computed:
        pairs = [(i, as_text(first_value(r, DEFAULT_PATHS["prediction"])),
                  as_text(first_value(r, DEFAULT_PATHS["reference"]), join=True)) for i, r in zip(ids, rows)]
        pairs = [(i, "" if is_error_answer(p) else p, r) for i, p, r in pairs
                 if i is not None and p is not None and r is not None]
        values = text_metric_values([p for _, p, _ in pairs], [r for _, _, r in pairs], computed) if pairs else {}
        for metric, scores in values.items():
            if columns and metric not in columns:
                continue
            if metric in variables:  # the file logs it: the task's own value wins (e.g. its max_words cut)
                shadowed[metric] = f"the file's own per-sample {metric} is used; the recomputed one is not"
                continue
            var = variables[metric] = Variable(metric, "metric", f"{path} (computed)")
            for (sample_id, _, _), score in zip(pairs, scores):
                var.add(sample_id, score)
        computed = computed if values else None
    unknown = [c for c in chosen if c not in variables]
    if not variables and not columns:  # with --metric-columns the caller reports columns found in no file
        raise ValueError(f"{path}: no numeric per-sample metric found; give a CSV/JSONL with an id and numeric "
                         "columns, or lmms-eval samples with prediction/reference texts")
    report = {"source": name, "path": str(path), "rows": len(rows), "rows_without_id": ids.count(None),
              "unknown_columns": unknown, "text_metrics": computed, "shadowed": shadowed,
              "image_errors_left_out": image_errors}
    return list(variables.values()), report
