"""Build the report: read every task's samples, aggregate with :mod:`pfmvg_plugin.metrics`, draw, write the page."""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from pfmvg_plugin.metrics import DEFAULT_THRESHOLDS, aggregate
from pfmvg_plugin.progress import progress
from pfmvg_plugin.report.overlays import NO_CATEGORY, ImageResolver, Missing, category_sheet
from pfmvg_plugin.report.samples import ReadStats, find_sample_files, iter_grounding_samples, results_file_for

DEFAULT_DIRNAME = "pfmvg_report"


@dataclass
class TaskReport:
    """Everything the page shows for one task (paths in ``figures`` / ``sheets`` are relative to the page)."""

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

    @property
    def lmms_results(self) -> dict:
        return ((self.results or {}).get("results") or {}).get(self.task) or {}

    def to_dict(self) -> dict:
        return {
            "samples_file": str(self.samples_path),
            "results_file": str(self.results_path) if self.results_path else None,
            "aggregate": self.summary,
            "generation_errors": self.generation_errors,
            "conventions": self.conventions,
            "lmms_eval_results": self.lmms_results,
            "read": self.stats.to_dict(),
            "missing_images": [vars(m) for m in self.missing],
            "figures": self.figures,
            "overlays": {c: p for c, _, p in self.sheets},
            "notes": self.notes,
        }


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


def report_task(task: str, samples_path: Path, out_dir: Path, per_category: int = 3, n_bootstrap: int = 1000,
                seed: int = 0, tile: int = 256, charts: bool = True) -> TaskReport:
    """Read, score and draw one task; PNGs go to ``out_dir/<task>/``."""
    stats = ReadStats()
    resolver = ImageResolver()
    records, paths = [], []
    with open(samples_path, "rb") as f:
        n_lines = sum(1 for _ in f)  # the bar's total (an upper bound: skipped lines yield nothing)
    for rec in progress(iter_grounding_samples(samples_path, stats), desc=f"report {task}", total=n_lines,
                        unit="sample"):
        records.append(rec)
        paths.append(resolver.resolve(rec))
    try:
        summary = aggregate(records, [r.get("category") for r in records], n_bootstrap=n_bootstrap, seed=seed)
    except ValueError as e:
        raise ValueError(f"task {task} ({samples_path}): {e}") from None
    results_path = results_file_for(samples_path)
    rep = TaskReport(
        task=task, samples_path=samples_path, stats=stats, summary=summary,
        generation_errors=summary["generation_errors"],
        conventions=dict(Counter(str(r.get("convention")) for r in records).most_common()),
        results_path=results_path,
    )
    rep.results = _load_results(results_path, rep.notes)
    if not records:
        rep.notes.append(f"no grounding records in {samples_path.name}: is this a grounding task?")
    task_dir = out_dir / slug(task)
    task_dir.mkdir(parents=True, exist_ok=True)
    if charts and records:
        rep.figures.update(_charts(rep, records, task_dir, out_dir))
    unreadable: list[tuple[dict, str]] = []
    groups: dict[str, list[int]] = {}
    for i, r in enumerate(records):
        groups.setdefault(str(r["category"]) if r.get("category") is not None else NO_CATEGORY, []).append(i)
    for name in progress(sorted(groups, key=lambda c: (c == NO_CATEGORY, c)), desc=f"overlays {task}", unit="cat"):
        idx = groups[name]
        n = len(idx)
        title = f"{task} - {name} (n={n}): top row best {per_category}, bottom row worst {per_category} by IoU " \
                f"(green: ground truth, red: prediction)"
        sheet = category_sheet([records[i] for i in idx], [paths[i] for i in idx], per_category, title, tile,
                               unreadable)
        if sheet is None:
            rep.notes.append(f"category {name}: no image available for the overlays")
            continue
        png = task_dir / f"overlays_{slug(name)}.png"
        while png.relative_to(out_dir).as_posix() in {p for _, _, p in rep.sheets}:  # "A/B" and "A_B"
            png = png.with_name(png.stem + "_.png")
        sheet.save(png)
        rep.sheets.append((name, n, png.relative_to(out_dir).as_posix()))
    rep.missing = resolver.missing + [Missing(str(r.get("id")), str(r.get("image")), why, str(r.get("dataset_dir")))
                                      for r, why in unreadable]
    return rep


def _charts(rep: TaskReport, records: list[dict], task_dir: Path, out_dir: Path) -> dict[str, str]:
    try:
        from pfmvg_plugin.report import figures
    except ImportError as e:  # pragma: no cover - numpy is a core dependency
        rep.notes.append(str(e))
        return {}
    made = {}
    try:
        made["iou_histogram"] = figures.iou_histogram(
            [r["iou"] for r in records], [bool(r["parsed"]) for r in records], DEFAULT_THRESHOLDS,
            task_dir / "iou_histogram.png", f"{rep.task}: per-sample IoU (n={len(records)})")
        if rep.summary["per_category"]:
            made["per_category"] = figures.category_bars(
                rep.summary["per_category"], task_dir / "per_category.png",
                f"{rep.task}: Acc@0.5 and mIoU per category", overall=rep.summary)
    except ImportError as e:
        rep.notes.append(f"charts skipped: {e}")
    return {k: p.relative_to(out_dir).as_posix() for k, p in made.items()}


def build_report(path: str | Path, out: str | Path | None = None, task: str | None = None, per_category: int = 3,
                 n_bootstrap: int = 1000, seed: int = 0, tile: int = 256) -> dict:
    """Write ``index.html``, ``summary.json`` and PNGs for an lmms-eval output dir or samples file; returns a summary.

    ``out`` defaults to ``<dir>/pfmvg_report`` (for a file: next to it). Missing images are listed, never fatal.
    """
    from pfmvg_plugin.report.html import write_page

    if per_category < 1:
        raise ValueError(f"--per-category must be at least 1, got {per_category}")
    path = Path(path)
    notes: list[str] = []
    files = find_sample_files(path, notes)
    if task is not None:
        if task not in files:
            raise FileNotFoundError(f"no samples file for task {task!r} in {path} (tasks: {', '.join(files)})")
        files = {task: files[task]}
    out_dir = Path(out) if out else (path if path.is_dir() else path.parent) / DEFAULT_DIRNAME
    out_dir.mkdir(parents=True, exist_ok=True)
    reports = [report_task(name, f, out_dir, per_category, n_bootstrap, seed, tile) for name, f in files.items()]
    html_path = write_page(out_dir / "index.html", reports, source=path, notes=notes)
    summary = {"input": str(path), "html": str(html_path), "notes": notes,
               "tasks": {r.task: r.to_dict() for r in reports}}
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    return {
        "html": str(html_path),
        "summary": str(out_dir / "summary.json"),
        "notes": notes,
        "tasks": {r.task: {"n": r.summary["n"], "acc@0.5": r.summary["acc@0.5"], "miou": r.summary["miou"],
                           "parse_failure_rate": r.summary["parse_failure_rate"], "missing_images": len(r.missing),
                           "skipped_lines": r.stats.n_skipped} for r in reports},
    }
