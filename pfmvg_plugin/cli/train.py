"""``pfmvg train``: the training recipe as a console command (``pfmvg_plugin.training.launch``).

Only argparse here; torch, transformers, peft and deepspeed are imported when training starts. ``pfmvg train`` hands
its arguments to the launch entry unparsed, so ``pfmvg train --help`` is that entry's own help.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

HELP = "fine-tune with LoRA under DeepSpeed or plain torch (`pfmvg train --help`; shipped configs by name)"


def add_parser(commands: argparse._SubParsersAction) -> None:
    """List ``train`` among the commands (its arguments are parsed by :func:`run`)."""
    p = commands.add_parser("train", help=HELP, add_help=False)
    p.add_argument("args", nargs=argparse.REMAINDER)
    p.set_defaults(handler=lambda args: run(args.args))


def run(argv: Sequence[str]) -> int:
    from pfmvg_plugin.training.launch import main

    return main(list(argv), prog="pfmvg train")
