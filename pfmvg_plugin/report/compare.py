"""``pfmvg report RUN RUN ...``: several lmms-eval runs side by side on the same grounding tasks.

One table per task (a row per run: its model, the box language it was asked in, Acc@0.5 / mIoU with CIs, parse
failures and format compliance, all recomputed from the logged per-sample records) and one overlay grid per task: the
same queries (doc ids every run answered) in every row, a row per run, so the eye compares models on equal terms.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from html import escape
from pathlib import Path

from pfmvg_plugin import __version__
from pfmvg_plugin.metrics import aggregate, format_compliance
from pfmvg_plugin.report.overlays import ImageResolver, panel_for
from pfmvg_plugin.report.samples import ReadStats, file_kind, find_sample_files, results_file_for
from pfmvg_plugin.report.task import read_task, slug
from pfmvg_plugin.viz import Panel, contact_sheet

DEFAULT_DIRNAME = "pfmvg_comparison"


@dataclass
class RunTask:
    """One run's records of one grounding task, scored."""

    label: str
    path: Path
    records: list[dict]
    summary: dict
    model: str = ""
    model_args: str = ""
    conventions: dict = field(default_factory=dict)

    def row(self) -> dict:
        s = self.summary
        statuses = [str(r.get("status")) for r in self.records if r.get("status") != "generation_error"]
        return {"run": self.label, "path": str(self.path), "model": self.model, "model_args": self.model_args,
                "convention": ", ".join(self.conventions), "n": s["n"], "acc@0.5": s.get("acc@0.5"),
                "miou": s.get("miou"), "ci": s.get("ci", {}), "parse_failure_rate": s.get("parse_failure_rate"),
                "generation_errors": s.get("generation_errors"),
                "format": format_compliance(statuses)}


def _asked_in(record: dict) -> str:
    """The box language a record's prompt used, with its protocol when the record says it (``qwen25vl (native)``)."""
    convention = str(record.get("convention"))
    return f"{convention} ({record['protocol']})" if record.get("protocol") else convention


def _model(samples_path: Path) -> tuple[str, str]:
    """(model, model_args) from the run's results.json; empty strings when there is none or it cannot be read."""
    results = results_file_for(samples_path)
    if results is None:
        return "", ""
    try:
        config = json.loads(results.read_text()).get("config") or {}
    except (OSError, ValueError, AttributeError):
        config = {}
    return str(config.get("model") or ""), str(config.get("model_args") or "")


def _read_runs(paths: list[Path], task: str | None, n_bootstrap: int, seed: int,
               notes: list[str]) -> dict[str, list[RunTask]]:
    by_task: dict[str, list[RunTask]] = {}
    for path in paths:
        files = find_sample_files(path, notes)
        for name, samples in files.items():
            if (task and name != task) or (file_kind(samples) or "grounding") != "grounding":
                continue
            records = read_task(name, samples, "grounding", ReadStats())
            if not records:
                notes.append(f"{path}: no grounding records for {name}")
                continue
            model, model_args = _model(samples)
            summary = aggregate(records, n_bootstrap=n_bootstrap, seed=seed)
            conventions = dict(Counter(_asked_in(r) for r in records).most_common())
            label = f"{model or 'model'} ({path.name or path})"
            by_task.setdefault(name, []).append(RunTask(label, path, records, summary, model, model_args,
                                                        conventions))
    return by_task


def shared_queries(runs: list[RunTask], k: int) -> list[str]:
    """``k`` doc ids every run answered, spread evenly over their sorted order (the same for every row)."""
    common = set.intersection(*({str(r.get("id")) for r in run.records} for run in runs))
    ordered = sorted(common)
    if len(ordered) <= k:
        return ordered
    step = len(ordered) / k
    return [ordered[int(i * step)] for i in range(k)]


def _grid(task: str, runs: list[RunTask], ids: list[str], tile: int, resolver: ImageResolver) -> object | None:
    panels = []
    for run in runs:
        by_id = {str(r.get("id")): r for r in run.records}
        for doc_id in ids:
            record = by_id[doc_id]
            path = resolver.resolve(record)
            try:
                panels.append(panel_for(record, path, run.model or run.label, tile) if path else None)
            except (OSError, ValueError):
                panels.append(None)
    if not any(panels):
        return None
    from PIL import Image

    filled = [p if p is not None else Panel(Image.new("RGB", (tile, tile), "white"), caption="(no image)")
              for p in panels]
    title = (f"{task}: the same {len(ids)} queries, one row per run ("
             + "; ".join(run.label for run in runs) + "); green: ground truth, red: prediction")
    return contact_sheet(filled, columns=len(ids), tile=tile, title=title)


def _num(v) -> str:
    return "—" if v is None else f"{v:.3f}"


def _table(task: str, rows: list[dict]) -> str:
    head = ("<tr><th class=l>run</th><th class=l>model</th><th class=l>asked in</th><th>n</th><th>Acc@0.5</th>"
            "<th>mIoU</th><th>parse failures</th><th>format ok</th><th>no box</th><th>wrong format</th>"
            "<th>out of range</th><th>generation errors</th></tr>")
    body = []
    for r in rows:
        ci = r["ci"] or {}
        acc = _num(r["acc@0.5"]) + (f" <span class=ci>[{_num(ci['acc@0.5'][0])}, {_num(ci['acc@0.5'][1])}]</span>"
                                    if ci.get("acc@0.5") else "")
        f = r["format"]
        body.append(f'<tr data-task="{escape(task)}"><td class=l>{escape(r["run"])}</td>'
                    f'<td class=l><code>{escape(r["model"])}</code> <span class=ci>{escape(r["model_args"])}</span>'
                    f'</td><td class=l>{escape(r["convention"])}</td><td>{r["n"]}</td><td>{acc}</td>'
                    f'<td>{_num(r["miou"])}</td><td>{_num(r["parse_failure_rate"])}</td><td>{_num(f["ok"])}</td>'
                    f'<td>{_num(f["no_box"])}</td><td>{_num(f["wrong_format"])}</td><td>{_num(f["out_of_range"])}</td>'
                    f'<td>{r["generation_errors"]}</td></tr>')
    return f"<table>{head}{''.join(body)}</table>"


CSS = ("body{font-family:system-ui,sans-serif;margin:2em;max-width:1400px}table{border-collapse:collapse;margin:1em 0}"
       "td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}.l{text-align:left}.ci{color:#777;"
       "font-size:85%}.note{background:#fff3cd;padding:6px;margin:4px 0}img{max-width:100%}")


def build_comparison(paths: list[str | Path], out: str | Path | None = None, task: str | None = None,
                     queries: int = 6, n_bootstrap: int = 1000, seed: int = 0, tile: int = 192) -> dict:
    """Write ``compare.html``, ``comparison.json`` and one overlay grid PNG per task for several runs.

    ``out`` defaults to ``<first run>/../pfmvg_comparison``. Only grounding tasks are compared; a task found in one
    run only is still tabled. Returns the paths written and the rows per task.
    """
    paths = [Path(p) for p in paths]
    if len(paths) < 2:
        raise ValueError("a comparison needs two or more runs")
    if queries < 1:
        raise ValueError(f"--queries must be at least 1, got {queries}")
    notes: list[str] = []
    by_task = _read_runs(paths, task, n_bootstrap, seed, notes)
    if not by_task:
        raise FileNotFoundError(f"no grounding records in {', '.join(map(str, paths))} (run lmms-eval with "
                                "--log_samples on a pfmvg grounding task)")
    out_dir = Path(out) if out else paths[0].resolve().parent / DEFAULT_DIRNAME
    out_dir.mkdir(parents=True, exist_ok=True)
    resolver = ImageResolver()
    sections, summary = [], {"runs": [str(p) for p in paths], "notes": notes, "tasks": {}}
    for name, runs in sorted(by_task.items()):
        rows = [run.row() for run in runs]
        html = [f"<h2>{escape(name)}</h2>", _table(name, rows)]
        ids = shared_queries(runs, queries) if len(runs) > 1 else []
        grid_path = None
        if ids:
            grid = _grid(name, runs, ids, tile, resolver)
            if grid is not None:
                grid_path = out_dir / f"grid_{slug(name)}.png"
                grid.save(grid_path)
                html.append(f'<img src="{escape(grid_path.name)}" alt="overlays of {escape(name)}">')
        else:
            html.append('<p class="note">no query answered by every run: no overlay grid</p>')
        sections.append("\n".join(html))
        summary["tasks"][name] = {"rows": rows, "queries": ids, "grid": str(grid_path) if grid_path else None}
    page = ('<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>pfmvg comparison</title>'
            f"<style>{CSS}</style></head><body><h1>pfmvg comparison of {len(paths)} runs</h1>"
            f'<p class=ci>pfmvg_plugin {escape(__version__)}; numbers recomputed from the logged per-sample records '
            "(95% bootstrap CIs); format columns: shares of the scored answers</p>"
            + "".join(f'<div class="note">{escape(n)}</div>' for n in notes)
            + "\n".join(sections) + "</body></html>\n")
    html_path = out_dir / "compare.html"
    html_path.write_text(page, encoding="utf-8")
    (out_dir / "comparison.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    return {"html": str(html_path), "summary": str(out_dir / "comparison.json"),
            "tasks": {k: v["rows"] for k, v in summary["tasks"].items()}}
