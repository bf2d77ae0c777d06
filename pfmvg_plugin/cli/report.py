"""``pfmvg report``: turn an lmms-eval run (``--output_path D --log_samples``) into an HTML page with PNGs.

Only argparse here; the report code (numpy, Pillow, matplotlib) is imported when the command runs.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "report", help="HTML report of an lmms-eval run: grounding (charts, box overlays), VQA, report generation",
        description="Write an HTML page and PNGs for an lmms-eval --output_path dir (run with --log_samples) or one "
                    "<date>_samples_<task>.jsonl. Every task gets the section of its kind, told by the per-sample "
                    "records it logged, with lmms-eval's own numbers and the model from results.json. Grounding: "
                    "the headline numbers with 95% bootstrap CIs (recomputed from the records), parse failures by "
                    "status, an IoU histogram, per-category bars, and the best and worst cases per category drawn "
                    "on the images (green: ground truth, red: prediction). VQA: overall/closed/open accuracy and "
                    "open recall with CIs, accuracy per answer type and per the dataset's question type, and the "
                    "worst and best answers (question, reference, prediction, image thumbnail). Report generation: "
                    "the corpus metrics (BLEU, ROUGE-L, METEOR, CIDEr-D), and the worst, typical and best reports "
                    "by ROUGE-L, reference and generated side by side with the image. Missing images are listed, "
                    "never fatal. With two or more runs: a comparison page instead (compare.html): per grounding "
                    "task a table with a row per run (model, the box language it was asked in, Acc@0.5 and mIoU "
                    "with CIs, parse failures, format compliance) and one overlay grid of the same queries, a row "
                    "per run.")
    p.add_argument("path", type=Path, nargs="+",
                   help="lmms-eval output dir (searched recursively) or a samples .jsonl file; several: compare them")
    p.add_argument("--out", type=Path, default=None,
                   help="output dir for index.html, summary.json and PNGs (default <path>/pfmvg_report, "
                        "or next to a samples file; for several runs <first run>/../pfmvg_comparison)")
    p.add_argument("--task", default=None, help="report only this task (default: every task found)")
    p.add_argument("--per-category", type=int, default=3, metavar="K",
                   help="grounding: best and worst cases drawn per category (default 3 each)")
    p.add_argument("--examples", type=int, default=5, metavar="N",
                   help="VQA and report generation: worst, best (and, for reports, typical) examples shown per "
                        "task (default 5 each)")
    p.add_argument("--n-bootstrap", type=int, default=1000, help="bootstrap resamples for the CIs (default 1000)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    p.add_argument("--tile", type=int, default=256, help="grounding: overlay tile size in pixels (default 256)")
    p.add_argument("--queries", type=int, default=6, metavar="K",
                   help="several runs: queries in each task's overlay grid, the same for every run (default 6)")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> dict:
    if len(args.path) > 1:
        from pfmvg_plugin.report.compare import build_comparison

        return build_comparison(args.path, out=args.out, task=args.task, queries=args.queries,
                                n_bootstrap=args.n_bootstrap, seed=args.seed, tile=args.tile)
    from pfmvg_plugin.report import build_report

    return build_report(args.path[0], out=args.out, task=args.task, per_category=args.per_category,
                        n_bootstrap=args.n_bootstrap, seed=args.seed, tile=args.tile, examples=args.examples)
