"""Build the report: read every task's samples, score them by their kind, draw, write the page.

The kind of a task comes from its per-sample records (:func:`~pfmvg_plugin.report.samples.file_kind`): grounding
(here: :func:`pfmvg_plugin.metrics.aggregate`, IoU charts, box overlays), VQA and report generation
(:mod:`pfmvg_plugin.report.text`). A file with none of our records gets a grounding section saying so.
"""

from __future__ import annotations

import json
from pathlib import Path

from pfmvg_plugin.metrics import DEFAULT_THRESHOLDS, aggregate
from pfmvg_plugin.progress import progress
from pfmvg_plugin.report.overlays import NO_CATEGORY, ImageResolver, Missing, category_sheet
from pfmvg_plugin.report.samples import ReadStats, file_kind, find_sample_files
from pfmvg_plugin.report.task import TaskReport, new_task_report, read_task, slug

DEFAULT_DIRNAME = "pfmvg_report"
#: Best and worst examples shown per VQA / report-generation task (``--examples``).
DEFAULT_EXAMPLES = 5


def report_task(task: str, samples_path: Path, out_dir: Path, per_category: int = 3, n_bootstrap: int = 1000,
                seed: int = 0, tile: int = 256, charts: bool = True, examples: int = DEFAULT_EXAMPLES) -> TaskReport:
    """Read, score and draw one task by its kind; PNGs go to ``out_dir/<task>/``."""
    kind = file_kind(samples_path) or "grounding"
    if kind != "grounding":
        from pfmvg_plugin.report.text import report_text_task

        return report_text_task(task, kind, samples_path, out_dir, examples, n_bootstrap, seed)
    stats = ReadStats()
    resolver = ImageResolver()
    records = read_task(task, samples_path, kind, stats)
    paths = [resolver.resolve(rec) for rec in records]
    try:
        summary = aggregate(records, [r.get("category") for r in records], n_bootstrap=n_bootstrap, seed=seed)
    except ValueError as e:
        raise ValueError(f"task {task} ({samples_path}): {e}") from None
    rep = new_task_report(task, samples_path, kind, stats, records, summary, summary["generation_errors"])
    if not records:
        rep.notes.append(f"no grounding records in {samples_path.name}: is this a grounding task? (pfmvg report "
                         "reads the per-sample records our tasks log: grounding_sample, vqa_sample, report_sample)")
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
                 n_bootstrap: int = 1000, seed: int = 0, tile: int = 256, examples: int = DEFAULT_EXAMPLES) -> dict:
    """Write ``index.html``, ``summary.json`` and PNGs for an lmms-eval output dir or samples file; returns a summary.

    ``out`` defaults to ``<dir>/pfmvg_report`` (for a file: next to it). Every task gets the section of its kind
    (grounding, VQA, report generation). Missing images are listed, never fatal.
    """
    from pfmvg_plugin.report.html import write_page

    if per_category < 1:
        raise ValueError(f"--per-category must be at least 1, got {per_category}")
    if examples < 1:
        raise ValueError(f"--examples must be at least 1, got {examples}")
    path = Path(path)
    notes: list[str] = []
    files = find_sample_files(path, notes)
    if task is not None:
        if task not in files:
            raise FileNotFoundError(f"no samples file for task {task!r} in {path} (tasks: {', '.join(files)})")
        files = {task: files[task]}
    out_dir = Path(out) if out else (path if path.is_dir() else path.parent) / DEFAULT_DIRNAME
    out_dir.mkdir(parents=True, exist_ok=True)
    reports = [report_task(name, f, out_dir, per_category, n_bootstrap, seed, tile, examples=examples)
               for name, f in files.items()]
    html_path = write_page(out_dir / "index.html", reports, source=path, notes=notes)
    summary = {"input": str(path), "html": str(html_path), "notes": notes,
               "tasks": {r.task: r.to_dict() for r in reports}}
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    return {
        "html": str(html_path),
        "summary": str(out_dir / "summary.json"),
        "notes": notes,
        "tasks": {r.task: r.headline() for r in reports},
    }
