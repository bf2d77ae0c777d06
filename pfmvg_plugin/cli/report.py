"""``pfmvg report``: turn an lmms-eval run (``--output_path D --log_samples``) into an HTML page with PNGs.

Only argparse here; the report code (numpy, Pillow, matplotlib) is imported when the command runs.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "report", help="HTML report (numbers, charts, box overlays) of an lmms-eval grounding run",
        description="Write an HTML page and PNGs for an lmms-eval --output_path dir (run with --log_samples) or one "
                    "<date>_samples_<task>.jsonl: per task the headline numbers with 95% bootstrap CIs (recomputed "
                    "from the logged per-sample records), parse failures by status, lmms-eval's own numbers and the "
                    "model from results.json, an IoU histogram, per-category bars, and the best and worst cases per "
                    "category drawn on the images (green: ground truth, red: prediction). Missing images are "
                    "listed, never fatal.")
    p.add_argument("path", type=Path, help="lmms-eval output dir (searched recursively) or a samples .jsonl file")
    p.add_argument("--out", type=Path, default=None,
                   help="output dir for index.html, summary.json and PNGs (default <path>/pfmvg_report, "
                        "or next to a samples file)")
    p.add_argument("--task", default=None, help="report only this task (default: every task found)")
    p.add_argument("--per-category", type=int, default=3, metavar="K",
                   help="best and worst cases drawn per category (default 3 each)")
    p.add_argument("--n-bootstrap", type=int, default=1000, help="bootstrap resamples for the CIs (default 1000)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    p.add_argument("--tile", type=int, default=256, help="overlay tile size in pixels (default 256)")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> dict:
    from pfmvg_plugin.report import build_report

    return build_report(args.path, out=args.out, task=args.task, per_category=args.per_category,
                        n_bootstrap=args.n_bootstrap, seed=args.seed, tile=args.tile)
