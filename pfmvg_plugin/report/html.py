"""The report page: one static HTML file, PNGs referenced relatively (copy the folder to share it)."""

from __future__ import annotations

import json
from collections import Counter
from datetime import datetime, timezone
from html import escape
from pathlib import Path

from pfmvg_plugin import __version__
from pfmvg_plugin.metrics import DEFAULT_THRESHOLDS

#: Rows of the missing-image table shown in the page (all of them are in summary.json).
MAX_MISSING_ROWS = 200
_STATS = [(f"acc@{t:g}", f"Acc@{t:g}") for t in DEFAULT_THRESHOLDS] + [("miou", "mIoU"), ("mdice", "mDice")]

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px;color:#222;max-width:1400px}
h1{font-size:22px} h2{font-size:19px;border-bottom:2px solid #ddd;padding-bottom:4px;margin-top:36px}
h3{font-size:15px;margin-top:22px} table{border-collapse:collapse;margin:8px 0 14px}
th,td{border:1px solid #ccc;padding:4px 8px;text-align:right;vertical-align:top;font-size:13px}
th{background:#f3f3f3} td.l,th.l{text-align:left} .ci{color:#666;font-size:11px;white-space:nowrap}
.note{background:#fff8e1;border-left:4px solid #f0b400;padding:6px 10px;margin:6px 0;font-size:13px}
.muted{color:#666;font-size:12px} img{max-width:100%;border:1px solid #ddd;margin:4px 0}
code{background:#f5f5f5;padding:1px 4px;font-size:12px;word-break:break-all}
"""


def _num(v, digits: int = 3) -> str:
    return "—" if v is None else f"{v:.{digits}f}"


def _ci(bounds) -> str:
    return "" if not bounds else f"[{bounds[0]:.3f}, {bounds[1]:.3f}]"


def _stat_cell(task: str, key: str, value, bounds) -> str:
    ci = _ci(bounds)
    attrs = f' data-task="{escape(task)}" data-key="{escape(key)}" data-value="{"" if value is None else repr(value)}"'
    if bounds:
        attrs += f' data-ci="{escape(json.dumps(bounds))}"'
    return f"<td{attrs}>{_num(value)}" + (f'<br><span class="ci">{ci}</span>' if ci else "") + "</td>"


def _failures(summary: dict) -> str:
    fails = summary.get("parse_failures") or {}
    if summary.get("parse_failure_rate") is None:
        return "—"
    detail = ", ".join(f"{escape(k)} {v}" for k, v in fails.items())
    return f"{summary['parse_failure_rate']:.1%}" + (f'<br><span class="ci">{detail}</span>' if detail else "")


def _overview(reports) -> str:
    head = "".join(f"<th>{name}<br><span class=ci>95% CI</span></th>" for _, name in _STATS)
    rows = []
    for r in reports:
        s = r.summary
        cells = "".join(_stat_cell(r.task, key, s.get(key), (s.get("ci") or {}).get(key)) for key, _ in _STATS)
        many = len(r.conventions) > 1
        conv = ", ".join(escape(k) + (f" ({v})" if many else "") for k, v in r.conventions.items())
        rows.append(
            f'<tr><td class="l"><a href="#task-{escape(_anchor(r.task))}">{escape(r.task)}</a></td>'
            f'<td data-task="{escape(r.task)}" data-key="n" data-value="{s["n"]}">{s["n"]}</td>{cells}'
            f'<td data-key="parse_failure_rate" data-value="{s.get("parse_failure_rate")!r}">{_failures(s)}</td>'
            f'<td data-key="generation_errors">{r.generation_errors}</td>'
            f'<td data-key="missing_images">{len(r.missing)}</td>'
            f'<td class="l">{escape(str(s.get("mode")))}</td><td class="l">{conv or "—"}</td></tr>')
    return ('<table class="headline"><tr><th class="l">task</th><th>n</th>' + head +
            "<th>parse failures<br><span class=ci>rate; by status</span></th><th>generation errors</th>"
            "<th>missing images</th><th class=l>multi-box mode</th><th class=l>prompt convention</th></tr>"
            + "".join(rows) + "</table>")


def _anchor(task: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in task)


def _model_info(r) -> str:
    res = r.results
    if not res:
        return '<p class="muted">no lmms-eval results.json beside the samples file</p>'
    config = res.get("config") or {}
    items = [("model", config.get("model")), ("model_args", config.get("model_args")),
             ("model backend", config.get("model_backend")), ("model_name", res.get("model_name")),
             ("date", _date(res.get("date"))), ("lmms-eval", res.get("lmms_eval_version")),
             ("limit", config.get("limit")), ("gen_kwargs", config.get("gen_kwargs")),
             ("n-samples", (res.get("n-samples") or {}).get(r.task)),
             ("evaluation time (s)", res.get("total_evaluation_time_seconds"))]
    rows = "".join(f'<tr><th class="l">{escape(k)}</th><td class="l"><code>{escape(_text(v))}</code></td></tr>'
                   for k, v in items if v not in (None, "", {}, []))
    out = f'<h3>Model (<code>{escape(r.results_path.name)}</code>)</h3><table>{rows}</table>'
    own = {k: v for k, v in r.lmms_results.items() if k != "alias"}
    if own:
        body = "".join(f'<tr><td class="l">{escape(k)}</td><td>{escape(_text(v))}</td></tr>' for k, v in own.items())
        out += ("<h3>lmms-eval's own numbers</h3><p class=muted>as aggregated by lmms-eval (its stderr, not our "
                f"bootstrap)</p><table><tr><th class=l>metric,filter</th><th>value</th></tr>{body}</table>")
    else:
        out += f'<p class="muted">results.json has no entry for task {escape(r.task)}</p>'
    return out


def _date(v):
    if isinstance(v, (int, float)) and not isinstance(v, bool):  # lmms-eval writes a POSIX timestamp
        try:
            return datetime.fromtimestamp(v, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
        except (OverflowError, OSError, ValueError):
            return v
    return v


def _text(v) -> str:
    if isinstance(v, float):
        return f"{v:.4f}"
    if isinstance(v, (dict, list)):
        s = json.dumps(v, default=str)
        return s if len(s) <= 400 else s[:400] + "…"
    return str(v)


def _detail(r) -> str:
    s = r.summary
    rows = "".join(f"<tr><td class=l>{name}</td>{_stat_cell(r.task, key, s.get(key), (s.get('ci') or {}).get(key))}"
                   "</tr>" for key, name in _STATS)
    n = s["n"] or 0
    fails = "".join(f"<tr><td class=l>{escape(k)}</td><td>{v}</td><td>{v / n:.1%}</td></tr>"
                    for k, v in (s.get("parse_failures") or {}).items()) if n else ""
    out = (f"<table><tr><th class=l>metric (n={n})</th><th>value<br><span class=ci>95% bootstrap CI, "
           f"{s.get('n_bootstrap')} resamples</span></th></tr>{rows}</table>")
    rate = s.get("parse_failure_rate")
    rate = "—" if rate is None else f"{rate:.1%}"
    out += (f"<p>Parse failures: <b>{rate}</b> (scored IoU 0); generation errors: <b>{r.generation_errors}"
            f"</b>; multi-box mode <code>{escape(str(s.get('mode')))}</code>; IoU convention "
            f"<code>{'MiniGPT-v2 +1 px' if s.get('plus_one') else 'continuous'}</code>; prompt convention "
            f"<code>{escape(', '.join(f'{k} ({v})' for k, v in r.conventions.items()) or '—')}</code></p>")
    if fails:
        out += f"<table><tr><th class=l>status</th><th>count</th><th>share of n</th></tr>{fails}</table>"
    return out


def _reading(r) -> str:
    st = r.stats
    out = (f'<p class="muted">samples file <code>{escape(str(r.samples_path))}</code>: {st.lines} lines, '
           f"{st.records} grounding records, {st.n_skipped} lines skipped</p>")
    if st.skipped:
        rows = "".join(f"<tr><td class=l>{escape(k)}</td><td>{v}</td><td class=l>"
                       f"{escape(', '.join(map(str, st.skipped_lines.get(k, []))))}</td></tr>"
                       for k, v in st.skipped.items())
        out += f"<table><tr><th class=l>skipped because</th><th>lines</th><th class=l>first line numbers</th></tr>" \
               f"{rows}</table>"
    return out


def _per_category(r) -> str:
    cats = r.summary.get("per_category") or {}
    if not cats:
        return '<p class="muted">no categories in the records</p>'
    keys = [k for k, _ in _STATS if k != "mdice"]
    head = "".join(f"<th>{name}</th>" for k, name in _STATS if k in keys)
    rows = "".join(
        f'<tr><td class="l">{escape(c)}</td><td>{v["n"]}</td>'
        + "".join(f'<td data-task="{escape(r.task)}" data-category="{escape(c)}" data-key="{k}" '
                  f'data-value="{v.get(k)!r}">{_num(v.get(k))}</td>' for k in keys) + "</tr>"
        for c, v in sorted(cats.items(), key=lambda kv: (-kv[1]["n"], kv[0])))
    return f"<table><tr><th class=l>category</th><th>n</th>{head}</tr>{rows}</table>"


def _missing(r) -> str:
    if not r.missing:
        return '<p class="muted">all images found</p>'
    by_reason = Counter(m.reason for m in r.missing)
    out = "<p>" + "; ".join(f"{escape(k)}: <b>{v}</b>" for k, v in by_reason.most_common()) + "</p>"
    rows = "".join(f"<tr><td class=l>{escape(m.id)}</td><td class=l><code>{escape(m.image)}</code></td>"
                   f"<td class=l>{escape(m.reason)}</td><td class=l><code>{escape(m.dataset_dir)}</code></td></tr>"
                   for m in r.missing[:MAX_MISSING_ROWS])
    more = len(r.missing) - MAX_MISSING_ROWS
    out += ("<table class=missing><tr><th class=l>id</th><th class=l>image</th><th class=l>reason</th>"
            f"<th class=l>dataset dir</th></tr>{rows}</table>")
    if more > 0:
        out += f'<p class="muted">… and {more} more (all listed in summary.json)</p>'
    return out


def _section(r) -> str:
    parts = [f'<section id="task-{escape(_anchor(r.task))}"><h2>{escape(r.task)}</h2>']
    parts += [f'<div class="note">{escape(n)}</div>' for n in r.notes]
    parts += [_reading(r), "<h3>Headline</h3>", _detail(r), _model_info(r)]
    if "iou_histogram" in r.figures:
        parts.append(f'<h3>IoU distribution</h3><img src="{escape(r.figures["iou_histogram"])}" alt="IoU histogram">')
    parts += ["<h3>Per category</h3>", _per_category(r)]
    if "per_category" in r.figures:
        parts.append(f'<img src="{escape(r.figures["per_category"])}" alt="per-category bars">')
    parts.append(f"<h3>Missing images ({len(r.missing)})</h3>" + _missing(r))
    parts.append("<h3>Best and worst cases per category</h3><p class=muted>green: ground truth, red: prediction; "
                 "top row best, bottom row worst by IoU; failures show the raw answer</p>")
    for cat, n, png in r.sheets:
        parts.append(f'<h3>{escape(cat)} <span class="muted">(n={n})</span></h3>'
                     f'<img src="{escape(png)}" alt="overlays {escape(cat)}">')
    parts.append("</section>")
    return "\n".join(parts)


def render_page(reports, source: Path, notes: list[str]) -> str:
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    body = [f"<h1>pfmvg report: {escape(source.name or str(source))}</h1>",
            f'<p class="muted">input <code>{escape(str(source))}</code> · generated {now} by pfmvg_plugin '
            f"{escape(__version__)} · numbers from <code>pfmvg_plugin.metrics.aggregate</code> over the logged "
            "per-sample records</p>"]
    body += [f'<div class="note">{escape(n)}</div>' for n in notes]
    body += ["<h2>Headline</h2>", _overview(reports)]
    body += [_section(r) for r in reports]
    return ('<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>pfmvg report</title>'
            f"<style>{CSS}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")


def write_page(path: Path, reports, source: Path, notes: list[str]) -> Path:
    path.write_text(render_page(reports, source, notes), encoding="utf-8")
    return path
