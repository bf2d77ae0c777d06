"""``pfmvg rate``: a local web app where readers rate model outputs 1-5 (blinded, resumable), and its CSV export.

Only argparse here; the web app (aiohttp, Jinja2: the ``[rate]`` extra) is imported when ``serve`` runs.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

_EXTRA_HINT = "pfmvg rate serve needs the [rate] extra: pip install 'pfmvg_plugin[rate]'"
TOKEN_ENV = "PFMVG_RATE_TOKEN"


def add_parser(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "rate", help="a local web app where readers rate reports / VQA answers / boxes 1-5, blinded; CSV export",
        description="Human rating of model outputs for `pfmvg agree`: `serve` opens a small web app (loopback by "
                    "default) where each reader signs in by name and rates every item on the rubric's 1-5 scale "
                    "(the anchors `pfmvg judge` uses), blinded: the outputs of several models for one document come "
                    "in a random order per reader, model names hidden. Every answer is committed to SQLite as it is "
                    "given, so a reader resumes where they stopped. `export` writes the long CSV `pfmvg agree "
                    "--ratings` reads.")
    sub = p.add_subparsers(dest="rate_command", metavar="{serve,export}", required=True)
    s = sub.add_parser(
        "serve", help="start the rating web app",
        description="Serve the items of the samples files for rating. Report and VQA items show the image (zoom, "
                    "window/level), the reference, the model's text, the rubric's anchors and a comment box; "
                    "grounding items show the predicted box (and the ground truth with --review) and let the reader "
                    "draw a corrected box, saved in pixels of the original image. Keys: 1-5 rate, n/Enter next.")
    s.add_argument("--samples", action="append", required=True, metavar="[MODEL=]FILE",
                   help="lmms-eval --log_samples JSONL (or its output dir), pfmvg judge output or a plain JSONL with "
                        "id/prediction/reference (repeatable). The model name defaults to the run's results.json "
                        "config.model, else the file's folder; name it when two runs would share one")
    s.add_argument("--rubric", default=None, metavar="report|vqa|grounding|FILE",
                   help="what is rated: report, vqa or grounding (samples files of another kind of task are refused), "
                        "or a rubric file as for `pfmvg judge --rubric-file` for every text item (default: each "
                        "item on its own kind's scale, the anchors `pfmvg judge` uses; grounding: the box scale)")
    s.add_argument("--db", type=Path, required=True, help="SQLite file for the ratings (created if missing)")
    s.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1: this machine only). Any other address needs an "
                        f"access token in ${TOKEN_ENV} (or --token-env) that every reader enters at sign-in")
    s.add_argument("--port", type=int, default=8765, help="port (default 8765; 0 = any free port)")
    s.add_argument("--token-env", default=TOKEN_ENV, metavar="VAR",
                   help=f"environment variable holding the access token (default {TOKEN_ENV}); when set, readers "
                        "must enter it, also on loopback")
    s.add_argument("--review", action="store_true",
                   help="unblinded review: show model names and ground-truth boxes (not for blinded rating)")
    s.set_defaults(handler=run_serve)
    e = sub.add_parser("export", help="write the ratings as a long CSV for `pfmvg agree --ratings`",
                       description="One row per (rater, item): id, rater, model, task, rating, comment, box_x1..y2 "
                                   "(pixels of the original image), rated_at. `pfmvg agree --ratings FILE` reads it "
                                   "as it is: one variable per rater; with several models or tasks in the file, "
                                   "each (task, model, id) is one unit.")
    e.add_argument("--db", type=Path, required=True, help="the SQLite file `pfmvg rate serve` wrote")
    e.add_argument("--out", type=Path, required=True, help="CSV to write")
    e.add_argument("--model", default=None, help="only this model's ratings (ids then join a `pfmvg judge` output)")
    e.add_argument("--task", default=None, help="only this task's ratings")
    e.set_defaults(handler=run_export)


def run_serve(args: argparse.Namespace) -> int:
    try:
        import aiohttp  # noqa: F401
        import jinja2  # noqa: F401
    except ImportError as exc:
        raise ImportError(f"{_EXTRA_HINT} ({exc})") from None
    from pfmvg_plugin.rate.app import Settings, is_loopback
    from pfmvg_plugin.rate.items import load_items, resolve_scales
    from pfmvg_plugin.rate.server import serve

    token = os.environ.get(args.token_env) or None
    if not is_loopback(args.host):
        print(f"pfmvg rate: WARNING: --host {args.host} makes the app reachable from other machines; readers must "
              f"enter the access token from ${args.token_env}, and traffic is plain HTTP (use a VPN or an SSH "
              "tunnel for patient data)", file=sys.stderr)
        if not token:
            raise ValueError(f"--host {args.host} needs an access token: set {args.token_env} (e.g. "
                             f"`export {args.token_env}=$(python -c 'import secrets; print(secrets.token_urlsafe())')`)"
                             " and tell your readers, or keep the default --host 127.0.0.1")
    items = load_items(args.samples, kind=args.rubric if args.rubric in ("report", "vqa", "grounding") else None)
    settings = Settings(items=items, scales=resolve_scales(args.rubric), db_path=args.db, host=args.host,
                        token=token, review=args.review)
    serve(settings, args.port)
    return 0


def run_export(args: argparse.Namespace) -> int:
    from pfmvg_plugin.rate.export import export_csv

    result = export_csv(args.db, args.out, model=args.model, task=args.task)
    print(f"wrote {result['rows']} ratings of {len(result['raters'])} rater(s) to {result['out']}; next: "
          f"pfmvg agree --ratings {result['out']}", file=sys.stderr)
    return 0
