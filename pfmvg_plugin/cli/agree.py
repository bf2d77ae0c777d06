"""``pfmvg agree``: agreement between raters (human, LLM judge) and per-sample metrics, joined on sample id.

Only argparse here; the statistics (scipy, scikit-learn, krippendorff, matplotlib: the ``[agree]`` extra) are
imported when the command runs.
"""

from __future__ import annotations

import argparse
from pathlib import Path

_EXTRA_HINT = "pfmvg agree needs the [agree] extra: pip install 'pfmvg_plugin[agree]'"


def add_parser(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "agree", help="agreement between raters and metrics (Spearman, Kendall, Pearson, kappa, alpha, CIs)",
        description="Join raters (--ratings: human CSVs, pfmvg judge output) and per-sample metrics (--metrics: "
                    "lmms-eval --log_samples files or per-sample metric CSV/JSONL) on sample id and report, for "
                    "every pair, Spearman rho, Kendall tau-b and Pearson r, plus quadratic-weighted Cohen's kappa "
                    "and ordinal Krippendorff's alpha when both are 1-5 raters, each with a seeded percentile "
                    "bootstrap CI. Prints a table; with --out writes agreement.json/.csv/.md, a Spearman heatmap and "
                    "a scatter grid. Missing ratings and ids that do not match are counted, never silently dropped; "
                    "a value that cannot be computed shows as '- (why)', e.g. constant ratings or fewer than 3 "
                    "pairs. Ratings are on the 1-5 scale: one off it (e.g. 7) is an error naming file, line and "
                    "value. A metric the samples log under the name of a recomputed one (rouge_l) is taken from "
                    "the file, and the output says so.")
    p.add_argument("--ratings", action="append", default=[], metavar="[NAME=]FILE",
                   help="a ratings CSV/TSV/JSONL (repeatable): id + 'rating', id + one column per rater, long "
                        "format id/rater/rating, or pfmvg judge output; 1-5 ratings (non-integers such as 3.5 "
                        "allowed: correlations only)")
    p.add_argument("--any-scale", action="store_true",
                   help="ratings on another scale than 1-5 (e.g. 0-100) are fine: they get correlations only "
                        "(default: a rating off 1-5 is an error)")
    p.add_argument("--metrics", action="append", default=[], metavar="[NAME=]FILE",
                   help="per-sample metrics (repeatable): lmms-eval samples JSONL or a CSV/JSONL with an id and "
                        "numeric columns")
    p.add_argument("--out", type=Path, default=None, help="directory for agreement.json/.csv/.md and the PNGs")
    p.add_argument("--id-field", default=None,
                   help="id column / dotted path (default: id, sample_id, doc_id; lmms-eval: doc.id, doc_id)")
    p.add_argument("--metric-columns", default=None, metavar="A,B",
                   help="use only these metric columns (default: every numeric one)")
    p.add_argument("--text-metrics", choices=["auto", "report", "vqa", "none"], default="auto",
                   help="per-sample text metrics computed from the prediction/reference texts of JSONL metrics "
                        "files: report = sentence BLEU-1/4, ROUGE-L, METEOR, CIDEr-D; vqa = exact match, token "
                        "recall; auto = vqa when the lines carry a question, else report (default auto). A metric "
                        "the file logs under the same name wins (e.g. the task's rouge_l)")
    p.add_argument("--n-bootstrap", type=int, default=1000, help="bootstrap resamples, 0 = no CIs (default 1000)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    p.add_argument("--ci", type=float, default=0.95, help="confidence level (default 0.95)")
    p.add_argument("--no-plots", action="store_true", help="skip the PNGs")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> None:
    try:
        import krippendorff  # noqa: F401
        import scipy  # noqa: F401
        import sklearn  # noqa: F401
    except ImportError as exc:
        raise ImportError(f"{_EXTRA_HINT} ({exc})") from None
    from pfmvg_plugin.agreement.run import run_agreement

    if not args.ratings and not args.metrics:
        raise ValueError("give at least one --ratings file (and more --ratings or --metrics to compare it with)")
    if not 0 < args.ci < 1:
        raise ValueError("--ci must be between 0 and 1")
    columns = [c.strip() for c in args.metric_columns.split(",") if c.strip()] if args.metric_columns else None
    result = run_agreement(args.ratings, args.metrics, out=args.out, id_field=args.id_field, metric_columns=columns,
                           text_metrics=args.text_metrics, n_bootstrap=args.n_bootstrap, seed=args.seed,
                           level=args.ci, plots=not args.no_plots, any_scale=args.any_scale)
    print(result["table"])
    if args.out is not None:
        print("\nwrote " + ", ".join(result["files"].values()))
