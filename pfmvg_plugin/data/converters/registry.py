"""How a converter plugs into ``pfmvg data prepare``: a name, its arguments and a function to run."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pfmvg_plugin.data.skips import DEFAULT_MAX_MISSING_IMAGES_FRACTION, SkipLog


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
    """A converter: ``checks_images`` when it looks for the image files (it then gets the missing-image flags)."""

    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace, SkipLog], Conversion]
    checks_images: bool = False


CONVERTERS: dict[str, ConverterSpec] = {}


def register_converter(spec: ConverterSpec) -> ConverterSpec:
    if spec.name in CONVERTERS:
        raise ValueError(f"converter {spec.name!r} is already registered")
    CONVERTERS[spec.name] = spec
    return spec


def add_split_arguments(parser: argparse.ArgumentParser, grouped_by: str, default: str = "0.7,0.1,0.2",
                        note: str = "") -> None:
    """``--split-ratios`` and ``--seed`` for releases without an official split; ``grouped_by`` names the key the
    hash splits on (``image``, ``patient``, ...), so the help says what never spans two splits."""
    parser.add_argument("--split-ratios", default=default, metavar="TRAIN,VAL,TEST",
                        help=f"fractions for a deterministic split grouped by {grouped_by}: one {grouped_by} never "
                             f"spans two splits (default {default}){note}")
    parser.add_argument("--seed", type=int, default=0, help="seed of the split hash (default 0)")


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a fraction between 0 and 1, got {text!r}")
    return value


def add_image_check_arguments(parser: argparse.ArgumentParser) -> None:
    """``--allow-missing-images`` and ``--max-missing-images-fraction``, for converters that check images."""
    default = DEFAULT_MAX_MISSING_IMAGES_FRACTION
    parser.add_argument("--allow-missing-images", action="store_true",
                        help="succeed however many images are missing: their records are still skipped, "
                             "never kept (listed in prepare_report.json); no record left is still an error")
    parser.add_argument("--max-missing-images-fraction", type=_fraction, default=default, metavar="F",
                        help=f"fail when more than this fraction of the images is missing (default {default:g}), "
                             "unless --allow-missing-images")
