"""One task's section of the report: the :class:`TaskReport` every kind fills in, and what the kinds share (reading
the records, lmms-eval's results.json)."""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from pfmvg_plugin.progress import progress
from pfmvg_plugin.report.overlays import Missing
from pfmvg_plugin.report.samples import ReadStats, iter_records, results_file_for

#: The numbers ``pfmvg report`` prints per VQA / report-generation task (grounding: Acc@0.5, mIoU, parse failures).
HEADLINE = {"vqa": ("overall_acc", "closed_acc", "open_exact_acc", "open_recall", "generation_error_rate"),
            "report": ("bleu4", "rouge_l", "meteor_simple", "cider_d", "generation_error_rate")}


@dataclass
class TaskReport:
    """Everything the page shows for one task (paths in ``figures`` / ``sheets`` / ``examples`` are relative to the
    page). ``summary`` holds the kind's numbers: :func:`pfmvg_plugin.metrics.aggregate` for grounding, the metrics of
    :mod:`pfmvg_plugin.report.text` for ``vqa`` and ``report``."""

    task: str
    samples_path: Path
    stats: ReadStats
    summary: dict
    generation_errors: int
    conventions: dict[str, int]
    results_path: Path | None = None
    results: dict | None = None  # the whole results.json
    figures: dict[str, str] = field(default_factory=dict)
    sheets: list[tuple[str, int, str]] = field(default_factory=list)  # (category, n, relative png)
    missing: list[Missing] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    kind: str = "grounding"
    groups: dict[str, dict] = field(default_factory=dict)  # vqa: {"answer_type": {...}, "question_type": {...}}
    examples: dict[str, list[dict]] = field(default_factory=dict)  # worst / typical / best -> shown records

    @property
    def lmms_results(self) -> dict:
        return ((self.results or {}).get("results") or {}).get(self.task) or {}

    def to_dict(self) -> dict:
        out = {
            "kind": self.kind,
            "samples_file": str(self.samples_path),
            "results_file": str(self.results_path) if self.results_path else None,
            "generation_errors": self.generation_errors,
            "conventions": self.conventions,
            "lmms_eval_results": self.lmms_results,
            "read": self.stats.to_dict(),
            "missing_images": [vars(m) for m in self.missing],
            "notes": self.notes,
        }
        if self.kind == "grounding":
            return {**out, "aggregate": self.summary, "figures": self.figures,
                    "overlays": {c: p for c, _, p in self.sheets}}
        out["metrics"] = self.summary
        out.update({f"per_{by}": groups for by, groups in self.groups.items()})
        out["examples"] = {which: [str(r.get("id")) for r in shown] for which, shown in self.examples.items()}
        return out

    def headline(self) -> dict:
        """The few numbers ``pfmvg report`` prints for this task."""
        out = {"kind": self.kind, "n": self.summary.get("n")}
        if self.kind == "grounding":
            out.update({k: self.summary.get(k) for k in ("acc@0.5", "miou", "parse_failure_rate")})
        else:
            out.update({k: self.summary.get(k) for k in HEADLINE[self.kind]})
        return {**out, "missing_images": len(self.missing), "skipped_lines": self.stats.n_skipped}


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "x"


def _load_results(path: Path | None, notes: list[str]) -> dict | None:
    if path is None:
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        notes.append(f"could not read {path.name}: {e}")
        return None
    return data if isinstance(data, dict) else None


def read_task(task: str, samples_path: Path, kind: str, stats: ReadStats) -> list[dict]:
    """Every record of ``kind`` in a samples file, with a progress bar."""
    with open(samples_path, "rb") as f:
        n_lines = sum(1 for _ in f)  # the bar's total (an upper bound: skipped lines yield nothing)
    return list(progress(iter_records(samples_path, kind, stats), desc=f"report {task}", total=n_lines,
                         unit="sample"))


def new_task_report(task: str, samples_path: Path, kind: str, stats: ReadStats, records: list[dict], summary: dict,
                    generation_errors: int) -> TaskReport:
    """A :class:`TaskReport` with what every kind shares: conventions and lmms-eval's results.json."""
    results_path = results_file_for(samples_path)
    rep = TaskReport(task=task, samples_path=samples_path, stats=stats, summary=summary,
                     generation_errors=generation_errors,
                     conventions=dict(Counter(str(r.get("convention")) for r in records).most_common()),
                     results_path=results_path, kind=kind)
    rep.results = _load_results(results_path, rep.notes)
    return rep
