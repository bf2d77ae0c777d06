"""``pfmvg agree``: join raters and metrics on sample id, compute every pair's agreement, write table/JSON/CSV/PNGs.

Pairs: every two variables (rater-rater, rater-metric, metric-metric) over the ids where both have a value.
Spearman, Kendall tau-b and Pearson for every pair; quadratic-weighted kappa and ordinal Krippendorff's alpha only
when both variables are raters whose values are all integers 1-5. With at least two such raters, one ordinal alpha
over all of them (missing ratings allowed). Ids that are not in every variable are counted per variable. A value
that cannot be computed is shown as ``- (why)`` and kept under ``undefined`` in the JSON (``<stat>_why`` in the CSV):
fewer than :data:`~pfmvg_plugin.agreement.stats.MIN_N` common ids, a constant variable, or not two 1-5 raters.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from itertools import combinations
from pathlib import Path

import numpy as np

from pfmvg_plugin.agreement.load import Variable, load_metrics, load_ratings
from pfmvg_plugin.agreement.stats import CORRELATIONS, MIN_N, ORDINAL, is_likert, overall_alpha, pair_statistics

LABELS = {"spearman": "Spearman rho", "kendall": "Kendall tau-b", "pearson": "Pearson r",
          "kappa_quadratic": "kappa (quadratic)", "alpha_ordinal": "alpha (ordinal)"}


def _unique_names(variables: list[Variable]) -> None:
    counts: dict[str, int] = {}
    for v in variables:
        counts[v.name] = counts.get(v.name, 0) + 1
    for v in variables:
        if counts[v.name] > 1:
            v.name = f"{Path(v.source.split(' ')[0]).stem}:{v.name}"
    names = [v.name for v in variables]
    if len(set(names)) != len(names):
        raise ValueError(f"variable names clash: {names}; name the sources (NAME=PATH)")


def coverage(variables: Sequence[Variable]) -> dict:
    """Ids per variable and how many of them the other variables lack (matching report)."""
    all_ids = set().union(*(v.values for v in variables)) if variables else set()
    with_value = [set(v.present) for v in variables]
    common = set.intersection(*with_value) if with_value else set()
    per = {}
    for v, ids in zip(variables, with_value):
        others = set().union(*(w for u, w in zip(variables, with_value) if u is not v)) if len(variables) > 1 else ids
        per[v.name] = {**v.report(), "ids_not_in_others": len(ids - others),
                       "examples_not_in_others": sorted(ids - others)[:5],
                       "ids_missing_here": len(all_ids - ids)}
    return {"ids_total": len(all_ids), "ids_in_all": len(common), "variables": per}


def _aligned(a: Variable, b: Variable) -> tuple[list[str], np.ndarray, np.ndarray]:
    pa, pb = a.present, b.present
    ids = sorted(set(pa) & set(pb))
    return ids, np.array([pa[i] for i in ids], dtype=float), np.array([pb[i] for i in ids], dtype=float)


def _constant(variables: Sequence[Variable], arrays: Sequence[np.ndarray]) -> str | None:
    """``constant ratings: a; constant values: b`` for the variables whose values do not vary, else None."""
    names: dict[str, list[str]] = {}
    for v, values in zip(variables, arrays):
        if values.size and np.all(values == values[0]):
            names.setdefault("ratings" if v.kind == "rater" else "values", []).append(v.name)
    return "; ".join(f"constant {noun}: {', '.join(n)}" for noun, n in names.items()) or None


def why_undefined(a: Variable, b: Variable, x: np.ndarray, y: np.ndarray, stats: dict, ordinal: bool) -> dict:
    """``{stat: reason}`` for every statistic of the pair that has no value."""
    why = {}
    for name in CORRELATIONS + ORDINAL:
        if name in ORDINAL and not ordinal:
            why[name] = "not two 1-5 raters"
        elif stats.get(name) is None:
            if x.size < MIN_N:
                why[name] = f"fewer than {MIN_N} pairs: {x.size}"
            else:
                why[name] = _constant((a, b), (x, y)) or "undefined for these values"
    return why


def _why_no_alpha(data: np.ndarray, units: int) -> str:
    """Why the overall alpha of a raters x units matrix (NaN = missing) has no value."""
    if units < MIN_N:
        return f"fewer than {MIN_N} units rated by two or more raters: {units}"
    finite = data[np.isfinite(data)]
    return f"constant ratings: every rating is {finite[0]:g}" if np.all(finite == finite[0]) else \
        "undefined for these ratings"


def agreement(variables: list[Variable], n_bootstrap: int = 1000, seed: int = 0, level: float = 0.95) -> dict:
    """Every pair's statistics (and why any is missing) plus the overall ordinal alpha of the Likert raters."""
    _unique_names(variables)
    likert = {v.name: v.kind == "rater" and is_likert(list(v.present.values())) for v in variables}
    pairs = []
    for k, (a, b) in enumerate(combinations(variables, 2)):
        ids, x, y = _aligned(a, b)
        ordinal = likert[a.name] and likert[b.name]
        stats = pair_statistics(x, y, ordinal, n_bootstrap=n_bootstrap, seed=seed + k, level=level)
        pairs.append({"x": a.name, "y": b.name, "kinds": f"{a.kind}-{b.kind}", "ordinal": ordinal, **stats,
                      "undefined": why_undefined(a, b, x, y, stats, ordinal)})
    raters = [v for v in variables if likert[v.name]]
    overall = None
    if len(raters) >= 2:
        ids = sorted(set().union(*(v.present for v in raters)))
        data = np.array([[v.present.get(i, np.nan) for i in ids] for v in raters], dtype=float)
        overall = {"raters_used": [v.name for v in raters], **overall_alpha(data, n_bootstrap, seed, level)}
        if overall["alpha_ordinal"] is None:
            overall["undefined"] = _why_no_alpha(data, overall["units"])
    not_likert = [v.name for v in variables if v.kind == "rater" and not likert[v.name]]
    return {"pairs": pairs, "overall": overall, "likert_raters": [v.name for v in raters],
            "raters_not_likert": not_likert, "coverage": coverage(variables),
            "bootstrap": {"n": n_bootstrap, "seed": seed, "level": level, "method": "percentile, units resampled"}}


# ---- output -------------------------------------------------------------------------------------------------------
def _cell(value: float | None, ci: list[float] | None, why: str | None = None) -> str:
    if value is None:
        return f"- ({why})" if why else "-"
    return f"{value:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else f"{value:.3f}"


def _ids(n: int) -> str:
    return f"{n} id" if n == 1 else f"{n} ids"


def format_table(result: dict) -> str:
    """A Markdown table of the pairs, the overall alpha and the matching counts."""
    stats = CORRELATIONS + ORDINAL
    level = round(result["bootstrap"]["level"] * 100)
    head = ["x", "y", "n"] + [f"{LABELS[s]} [{level}% CI]" for s in stats]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for p in result["pairs"]:
        why = p.get("undefined") or {}
        cells = [p["x"], p["y"], str(p["n"])] + [_cell(p.get(s), p.get(f"{s}_ci"), why.get(s)) for s in stats]
        lines.append("| " + " | ".join(cells) + " |")
    overall = result["overall"]
    if overall:
        lines.append("")
        alpha = _cell(overall["alpha_ordinal"], overall["alpha_ordinal_ci"], overall.get("undefined"))
        lines.append(f"Krippendorff's alpha (ordinal) over {len(overall['raters_used'])} raters, "
                     f"{overall['units']} units: {alpha}")
    cov = result["coverage"]
    lines.append("")
    lines.append(f"ids: {cov['ids_total']} in total, {cov['ids_in_all']} with a value in every variable")
    for name, c in cov["variables"].items():
        extra = []
        if c["missing"]:
            extra.append(f"{c['missing']} missing")
        if c["invalid"]:
            extra.append(f"{c['invalid']} invalid")
        if c["duplicate_ids"]:
            extra.append(f"{c['duplicate_ids']} duplicate ids (first kept)")
        if c["ids_not_in_others"]:
            extra.append(f"{_ids(c['ids_not_in_others'])} in no other variable")
        if c["ids_missing_here"]:
            extra.append(f"no value for {_ids(c['ids_missing_here'])} others have")
        lines.append(f"  {name} ({c['kind']}): {c['values']} values" + (f"; {', '.join(extra)}" if extra else ""))
    if result["raters_not_likert"]:
        lines.append(f"not 1-5 integer ratings (correlations only): {', '.join(result['raters_not_likert'])}")
    shadowed = [(name, why, src["source"]) for src in result.get("sources", [])
                for name, why in (src.get("shadowed") or {}).items()]
    if shadowed:
        lines.append("logged and recomputed metrics of the same name:")
        lines += [f"  {name}: {why} ({source})" for name, why, source in shadowed]
    for src in result.get("sources", []):
        if src.get("image_errors_left_out"):
            lines.append(f"{src['source']}: {src['image_errors_left_out']} samples without a readable image when "
                         "evaluated left out (status image_error; the task leaves them out of every metric)")
    return "\n".join(lines)


def write_csv(result: dict, path: Path) -> None:
    stats = CORRELATIONS + ORDINAL
    fields = ["x", "y", "kinds", "n"]
    for s in stats:
        fields += [s, f"{s}_ci_low", f"{s}_ci_high"] + ([f"{s}_p"] if s in CORRELATIONS else []) + [f"{s}_why"]
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        for p in result["pairs"]:
            row = {k: p.get(k) for k in ("x", "y", "kinds", "n")}
            for s in stats:
                ci = p.get(f"{s}_ci") or [None, None]
                row.update({s: p.get(s), f"{s}_ci_low": ci[0], f"{s}_ci_high": ci[1],
                            f"{s}_why": (p.get("undefined") or {}).get(s)})
                if s in CORRELATIONS:
                    row[f"{s}_p"] = p.get(f"{s}_p")
            writer.writerow(row)


def run_agreement(ratings: Sequence[str], metrics: Sequence[str] = (), out: Path | None = None,
                  id_field: str | None = None, metric_columns: list[str] | None = None,
                  text_metrics: str = "auto", n_bootstrap: int = 1000, seed: int = 0, level: float = 0.95,
                  plots: bool = True, any_scale: bool = False) -> dict:
    """Load the sources, compute the agreement, write ``agreement.{json,csv,md}`` and PNGs under ``out``.

    ``any_scale``: ratings need not be on the 1-5 scale (else a value off it is an error).
    """
    variables: list[Variable] = []
    sources = []
    for spec in ratings:
        found, report = load_ratings(spec, id_field, any_scale=any_scale)
        variables += found
        sources.append({"role": "ratings", **report})
    for spec in metrics:
        found, report = load_metrics(spec, id_field, metric_columns, text_metrics)
        variables += found
        sources.append({"role": "metrics", **report})
    if metric_columns:
        found = {v.name for v in variables if v.kind == "metric"}
        absent = [c for c in metric_columns if c not in found]
        if absent:
            raise ValueError(f"--metric-columns {', '.join(absent)} not found in the metrics files "
                             f"(found: {', '.join(sorted(found)) or 'none'})")
    if len(variables) < 2:
        raise ValueError("need at least two variables (raters or metrics) to compare: give more --ratings / "
                         "--metrics files, or a ratings file with several rater columns")
    result = agreement(variables, n_bootstrap=n_bootstrap, seed=seed, level=level)
    result["sources"] = sources
    result["table"] = format_table(result)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        files = {"json": out / "agreement.json", "csv": out / "agreement.csv", "table": out / "agreement.md"}
        write_csv(result, files["csv"])
        files["table"].write_text(result["table"] + "\n", encoding="utf-8")
        if plots:
            from pfmvg_plugin.agreement.figures import correlation_heatmap, scatter_grid

            files["heatmap"] = correlation_heatmap(variables, out / "agreement_heatmap.png")
            files["scatter"] = scatter_grid(result["pairs"], variables, out / "agreement_scatter.png", seed=seed)
        result["files"] = {k: str(v) for k, v in files.items()}
        files["json"].write_text(json.dumps({k: v for k, v in result.items() if k != "table"}, indent=2) + "\n",
                                 encoding="utf-8")
    return result
