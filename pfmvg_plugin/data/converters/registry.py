"""How a converter plugs into ``pfmvg data prepare``: a name, its arguments and a function to run."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pfmvg_plugin.data.skips import SkipLog


class ConversionError(RuntimeError):
    """An input that cannot be converted at all (unreadable file, wrong format); the message says what to fix."""


@dataclass
class Conversion:
    """What a converter produced: canonical records, where their images live, and what it was given."""

    records: list[dict]
    image_root: Path
    inputs: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)


@dataclass(frozen=True)
class ConverterSpec:
    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace, SkipLog], Conversion]


CONVERTERS: dict[str, ConverterSpec] = {}


def register_converter(spec: ConverterSpec) -> ConverterSpec:
    if spec.name in CONVERTERS:
        raise ValueError(f"converter {spec.name!r} is already registered")
    CONVERTERS[spec.name] = spec
    return spec


def add_split_arguments(parser: argparse.ArgumentParser, default: str = "0.7,0.1,0.2") -> None:
    """``--split-ratios`` and ``--seed`` for releases without an official split (grouped by image/patient)."""
    parser.add_argument("--split-ratios", default=default, metavar="TRAIN,VAL,TEST",
                        help=f"fractions for a deterministic, image-grouped split (default {default})")
    parser.add_argument("--seed", type=int, default=0, help="seed of the split hash (default 0)")
