"""The report page: one static HTML file, PNGs referenced relatively (copy the folder to share it).

One headline table per kind of task and one section per task, in its kind: grounding (IoU numbers, charts, box
overlays), VQA and report generation (metric table, per-type accuracy, worst / typical / best examples with image
thumbnails). Every text that comes from a model, a dataset or a file is HTML-escaped.
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import datetime, timezone
from html import escape
from pathlib import Path

from pfmvg_plugin import __version__
from pfmvg_plugin.metrics import DEFAULT_THRESHOLDS
from pfmvg_plugin.report.samples import KIND_LABELS
from pfmvg_plugin.report.task import HEADLINE

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
td.txt{text-align:left;white-space:pre-wrap;max-width:520px} img.thumb{max-width:160px;margin:0}
.ok{color:#2e7d32} .bad{color:#c62828}
"""
#: Names of the VQA and report-generation numbers on the page.
LABELS = {"overall_acc": "overall acc", "closed_acc": "closed acc", "open_exact_acc": "open exact acc",
          "open_recall": "open recall (not an accuracy)", "generation_error_rate": "generation error rate",
          "bleu1": "BLEU-1", "bleu2": "BLEU-2", "bleu3": "BLEU-3", "bleu4": "BLEU-4", "rouge_l": "ROUGE-L",
          "meteor_simple": "METEOR (simple, not 1.5)", "cider_d": "CIDEr-D",
          "rouge_l_mean": "mean per-sample ROUGE-L", "prediction_words_mean": "mean generated words",
          "reference_words_mean": "mean reference words", "accuracy": "accuracy", "n": "n", "n_closed": "closed n",
          "n_open": "open n"}
#: Rows of the VQA / report-generation metric tables.
TEXT_ROWS = {"vqa": ("overall_acc", "closed_acc", "open_exact_acc", "open_recall", "generation_error_rate"),
             "report": ("bleu1", "bleu2", "bleu3", "bleu4", "rouge_l", "meteor_simple", "cider_d", "rouge_l_mean",
                        "prediction_words_mean", "reference_words_mean", "generation_error_rate")}
#: Headings of the example tables.
EXAMPLE_TITLES = {"worst": "Worst", "typical": "Typical (around the median)", "best": "Best"}


def _num(v, digits: int = 3) -> str:
    return "—" if v is None else f"{v:.{digits}f}"


def _ci(bounds) -> str:
    return "" if not bounds else f"[{bounds[0]:.3f}, {bounds[1]:.3f}]"


def _stat_cell(task: str, key: str, value, bounds=None, group: tuple[str, str] | None = None) -> str:
    """A number cell with ``data-*`` attributes for scripts and tests (``group``: ``(by, name)`` of a per-type row)."""
    ci = _ci(bounds)
    attrs = (f' data-by="{escape(group[0])}"' if group else "") + f' data-task="{escape(task)}"'
    attrs += f' data-group="{escape(group[1])}"' if group else ""
    attrs += f' data-key="{escape(key)}" data-value="{"" if value is None else repr(value)}"'
    if bounds:
        attrs += f' data-ci="{escape(json.dumps(bounds))}"'
    shown = str(value) if isinstance(value, int) and not isinstance(value, bool) else _num(value)
    return f"<td{attrs}>{shown}" + (f'<br><span class="ci">{ci}</span>' if ci else "") + "</td>"


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
           f"{st.records} {escape(KIND_LABELS[r.kind])} records, {st.n_skipped} lines skipped</p>")
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
        return f'<p class="muted">all images {"of the examples " if r.kind != "grounding" else ""}found</p>'
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
    if r.kind != "grounding":
        return _text_section(r)
    parts = [_section_head(r)]
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


def _section_head(r) -> str:
    return "\n".join([f'<section id="task-{escape(_anchor(r.task))}" data-kind="{escape(r.kind)}">'
                      f"<h2>{escape(r.task)} <span class=muted>({escape(KIND_LABELS[r.kind])})</span></h2>"]
                     + [f'<div class="note">{escape(n)}</div>' for n in r.notes])


# ---- VQA and report generation -----------------------------------------------------------------------------------
def _text_overview(reports, kind: str) -> str:
    keys = HEADLINE[kind]
    head = "".join(f"<th>{escape(LABELS[k])}</th>" for k in keys)
    rows = "".join(
        f'<tr><td class="l"><a href="#task-{escape(_anchor(r.task))}">{escape(r.task)}</a></td>'
        + _stat_cell(r.task, "n", r.summary["n"])
        + "".join(_stat_cell(r.task, k, r.summary.get(k), (r.summary.get("ci") or {}).get(k)) for k in keys)
        + f'<td data-key="missing_images">{len(r.missing)}</td></tr>' for r in reports)
    return (f'<table class="headline-{kind}"><tr><th class="l">task</th><th>n</th>{head}'
            f"<th>missing images<br><span class=ci>of the examples</span></th></tr>{rows}</table>")


def _text_detail(r) -> str:
    s = r.summary
    rows = "".join(f"<tr><td class=l>{escape(LABELS[k])}</td>"
                   f"{_stat_cell(r.task, k, s.get(k), (s.get('ci') or {}).get(k))}</tr>" for k in TEXT_ROWS[r.kind])
    out = (f"<table><tr><th class=l>metric (n={s['n']})</th><th>value<br><span class=ci>95% bootstrap CI, "
           f"{s.get('n_bootstrap')} resamples, where shown</span></th></tr>{rows}</table>")
    if r.kind == "vqa":
        out += (f"<p>Closed questions: <b>{s['n_closed']}</b>, open: <b>{s['n_open']}</b>; generation errors "
                f"<b>{r.generation_errors}</b>, scoring errors <b>{s['scoring_errors']}</b> (both count as wrong). "
                "Closed: exact match after normalisation (a yes/no truth also matches an answer with exactly one "
                "of yes/no); open exact: exact match; open recall: share of the reference tokens in the answer.</p>")
    else:
        cut = "none" if s.get("max_words") is None else f"first {s['max_words']} words"
        out += (f"<p>Corpus metrics over all (generated, reference) pairs, recomputed as the task aggregates them "
                f"(no CI); cut: <b>{escape(cut)}</b>; generation errors <b>{r.generation_errors}</b> (scored as empty "
                f"reports), scoring errors <b>{s['scoring_errors']}</b>.</p>")
    return out


def _group_table(r, by: str, groups: dict) -> str:
    keys = ("n", "accuracy", "n_closed", "closed_acc", "n_open", "open_exact_acc", "open_recall")
    head = "".join(f"<th>{escape(LABELS[k])}</th>" for k in keys)
    rows = "".join(f'<tr><td class="l">{escape(name)}</td>'
                   + "".join(_stat_cell(r.task, k, g.get(k), group=(by, name)) for k in keys) + "</tr>"
                   for name, g in groups.items())
    return f'<table class="groups" data-by="{escape(by)}"><tr><th class=l>{escape(by)}</th>{head}</tr>{rows}</table>'


def _thumb(record: dict) -> str:
    if record.get("_thumb"):
        return f'<td><img class="thumb" src="{escape(record["_thumb"])}" alt="{escape(str(record.get("id")))}"></td>'
    return f'<td class="l"><span class="muted">no image: {escape(str(record.get("_no_thumb", "")))}</span></td>'


def _example_row(kind: str, record: dict) -> str:
    cells = [_thumb(record), f'<td class="l">{escape(str(record.get("id")))}</td>']
    if kind == "vqa":
        types = ", ".join(str(record[k]) for k in ("answer_type", "question_type") if record.get(k))
        correct = bool(record.get("correct"))
        recall = record.get("recall")
        cells += [f'<td class="txt">{escape(str(record.get("question") or ""))}</td>',
                  f'<td class="l">{escape(types)}</td>']
        cells += [f'<td class="txt">{escape(str(record.get(k) or ""))}</td>' for k in ("answer", "prediction")]
        cells += [f'<td class="{"ok" if correct else "bad"}">{"right" if correct else "wrong"}</td>',
                  f"<td>{_num(recall, 2)}</td>"]
    else:
        cells += [f'<td class="txt">{escape(str(record.get(k) or ""))}</td>' for k in ("reference", "prediction")]
        cells += [f"<td>{_num(record.get('rouge_l'))}</td>",
                  f"<td>{record.get('prediction_words', '—')} / {record.get('reference_words', '—')}</td>"]
    return f'<tr data-id="{escape(str(record.get("id")))}">' + "".join(cells) + "</tr>"


def _examples(r) -> str:
    if r.kind == "vqa":
        head = ("<th>image</th><th class=l>id</th><th class=l>question</th><th class=l>type</th>"
                "<th class=l>reference</th><th class=l>prediction</th><th>correct</th><th>recall</th>")
        rank = "wrong answers before right ones, then by token recall"
    else:
        head = ("<th>image</th><th class=l>id</th><th class=l>reference</th><th class=l>generated</th>"
                "<th>ROUGE-L</th><th>words<br><span class=ci>generated / reference</span></th>")
        rank = "by the sample's own ROUGE-L"
    out = [f"<h3>Examples</h3><p class=muted>ranked {rank}; generation and scoring errors are counted above, not "
           "shown here</p>"]
    for which, shown in r.examples.items():
        if not shown:
            continue
        rows = "".join(_example_row(r.kind, rec) for rec in shown)
        out.append(f"<h3>{EXAMPLE_TITLES[which]} ({len(shown)})</h3>"
                   f'<table class="examples" data-which="{which}"><tr>{head}</tr>{rows}</table>')
    if not any(r.examples.values()):
        out.append('<p class="muted">no scored samples to show</p>')
    return "\n".join(out)


def _text_section(r) -> str:
    parts = [_section_head(r), _reading(r), "<h3>Headline</h3>", _text_detail(r), _model_info(r)]
    for by, groups in r.groups.items():
        title = "By answer type" if by == "answer_type" else "By question type (as the dataset logs it)"
        parts += [f"<h3>{title}</h3>", _group_table(r, by, groups)]
    parts.append(_examples(r))
    parts.append(f"<h3>Missing images among the examples ({len(r.missing)})</h3>" + _missing(r))
    parts.append("</section>")
    return "\n".join(parts)


def _headline(reports) -> str:
    kinds = [k for k in KIND_LABELS if any(r.kind == k for r in reports)]
    out = []
    for kind in kinds:
        mine = [r for r in reports if r.kind == kind]
        if len(kinds) > 1:
            label = KIND_LABELS[kind]
            out.append(f"<h3>{escape(label[0].upper() + label[1:])}</h3>")
        out.append(_overview(mine) if kind == "grounding" else _text_overview(mine, kind))
    return "\n".join(out)


def render_page(reports, source: Path, notes: list[str]) -> str:
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    body = [f"<h1>pfmvg report: {escape(source.name or str(source))}</h1>",
            f'<p class="muted">input <code>{escape(str(source))}</code> · generated {now} by pfmvg_plugin '
            f"{escape(__version__)} · numbers recomputed from the logged per-sample records (grounding: "
            "<code>pfmvg_plugin.metrics.aggregate</code>)</p>"]
    body += [f'<div class="note">{escape(n)}</div>' for n in notes]
    body += ["<h2>Headline</h2>", _headline(reports)]
    body += [_section(r) for r in reports]
    return ('<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>pfmvg report</title>'
            f"<style>{CSS}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")


def write_page(path: Path, reports, source: Path, notes: list[str]) -> Path:
    path.write_text(render_page(reports, source, notes), encoding="utf-8")
    return path
