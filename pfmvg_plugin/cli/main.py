"""``pfmvg``: prepare datasets, make the synthetic default, and (with extras) train, report, convert, export, merge,
judge."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from pfmvg_plugin import __version__
from pfmvg_plugin.cli import agree as agree_cli
from pfmvg_plugin.cli import convert as convert_cli
from pfmvg_plugin.cli import data as data_cli
from pfmvg_plugin.cli import export as export_cli
from pfmvg_plugin.cli import judge as judge_cli
from pfmvg_plugin.cli import merge as merge_cli
from pfmvg_plugin.cli import rate as rate_cli
from pfmvg_plugin.cli import report as report_cli
from pfmvg_plugin.cli import train as train_cli


class UserError(Exception):
    """An error the user can fix; printed without a traceback."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pfmvg",
        description="Medical visual grounding, Med-VQA and report generation tools (PFMVG / PeFoMed).",
    )
    parser.add_argument("--version", action="version", version=f"pfmvg_plugin {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    data_cli.add_parser(commands)
    report_cli.add_parser(commands)
    convert_cli.add_parser(commands)
    export_cli.add_parser(commands)
    judge_cli.add_parser(commands)
    merge_cli.add_parser(commands)
    train_cli.add_parser(commands)
    agree_cli.add_parser(commands)
    rate_cli.add_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["train"]:  # the training entry parses its own arguments (and its own --help)
        return train_cli.run(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        result = args.handler(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (UserError, FileNotFoundError, ValueError, RuntimeError, ImportError) as e:
        print(f"pfmvg: error: {e}", file=sys.stderr)
        return 1
    if isinstance(result, dict):
        print(json.dumps(result, indent=2))
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())
