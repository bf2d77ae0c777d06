"""``pfmvg data …``: prepare real releases, synthesise the default dataset, validate JSONL files."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pfmvg_plugin.data.converters import Conversion, ConversionError, load_converters
from pfmvg_plugin.data.converters.registry import add_image_check_arguments
from pfmvg_plugin.data.schema import SPLITS, read_records
from pfmvg_plugin.data.skips import DEFAULT_MAX_MISSING_IMAGES_FRACTION, SkipLog
from pfmvg_plugin.data.store import REPORT_NAME, dataset_dir, write_dataset, write_prepare_report


def add_parser(commands: argparse._SubParsersAction) -> None:
    data = commands.add_parser("data", help="prepare, synthesise and validate datasets",
                               description="Prepare, synthesise and validate datasets in the canonical JSONL schema.")
    sub = data.add_subparsers(dest="data_command", metavar="ACTION", required=True)

    prepare = sub.add_parser(
        "prepare", help="convert a real dataset release into canonical JSONL",
        description="Convert a dataset release, as downloaded, into canonical JSONL under --out or "
                    "$PFMVG_DATA_ROOT/<dataset> (default ~/.cache/pfmvg/<dataset>). Skipped rows are listed "
                    "with file, line and reason in prepare_report.json, and counted on stderr at the end. A row "
                    "whose image file is missing is skipped, never kept; too many missing images, or no record "
                    "left, is an error.")
    datasets = prepare.add_subparsers(dest="dataset", metavar="DATASET", required=True)
    for spec in load_converters().values():
        p = datasets.add_parser(spec.name, help=spec.help, description=spec.help)
        spec.add_arguments(p)
        if spec.checks_images:
            add_image_check_arguments(p)
        p.add_argument("--out", type=Path, default=None,
                       help=f"output directory (default $PFMVG_DATA_ROOT/{spec.name})")
        p.set_defaults(handler=_run_prepare, spec=spec)

    try:
        from pfmvg_plugin.data import synth
    except ImportError:  # pragma: no cover - synth ships with the package
        synth = None
    if synth is not None:
        s = sub.add_parser("synth", help="generate the synthetic chest-radiograph grounding dataset",
                           description=synth.__doc__.strip().splitlines()[0])
        synth.add_arguments(s)
        s.add_argument("--vqa", action="store_true",
                       help="also build synthcxr_vqa (questions about the same images and splits) beside --out")
        s.set_defaults(handler=_run_synth)
        from pfmvg_plugin.data.synth import vqa as synth_vqa

        v = sub.add_parser("synth-vqa", help="build synthcxr_vqa: Med-VQA questions about the synthcxr images",
                           description=synth_vqa.DESCRIPTION)
        synth_vqa.add_arguments(v)
        v.set_defaults(handler=synth_vqa.run_cli)
        from pfmvg_plugin.data.synth import shapes

        g = sub.add_parser("shapes", help="generate synthshapes: generic grounding pretraining data (named shapes)",
                           description=shapes.__doc__.strip().splitlines()[0])
        shapes.add_arguments(g)
        g.set_defaults(handler=shapes.run_cli)

    validate = sub.add_parser("validate", help="check canonical JSONL files against the schema",
                              description="Check canonical JSONL files; errors name file, line and reason.")
    validate.add_argument("files", nargs="+", type=Path, help="JSONL files to check")
    validate.set_defaults(handler=_run_validate)


def _run_prepare(args: argparse.Namespace) -> dict:
    spec = args.spec
    skips = SkipLog()
    conversion = spec.run(args, skips)
    out = dataset_dir(spec.name, args.out)
    error = refusal(spec.name, conversion, skips, out,
                    max_missing_fraction=getattr(args, "max_missing_images_fraction",
                                                 DEFAULT_MAX_MISSING_IMAGES_FRACTION),
                    allow_missing=getattr(args, "allow_missing_images", False))
    if error:
        if (out / "dataset.json").is_file():
            error += (f" The dataset already in {out} is from an earlier run and was left as it was; it may hold "
                      "records whose image is missing.")
        write_prepare_report(out, spec.name, skips, inputs=conversion.inputs, error=error)
        print(prepare_summary(spec.name, out, {}, skips, n_refused=len(conversion.records)), file=sys.stderr)
        raise ConversionError(error)
    summary = write_dataset(out, spec.name, conversion.records, conversion.image_root, skips,
                            inputs=conversion.inputs, extra=conversion.extra)
    print(prepare_summary(spec.name, out, summary["splits"], skips), file=sys.stderr)
    return summary


def refusal(name: str, conversion: Conversion, skips: SkipLog, out: Path, *,
            max_missing_fraction: float = DEFAULT_MAX_MISSING_IMAGES_FRACTION,
            allow_missing: bool = False) -> str | None:
    """Why ``pfmvg data prepare`` must not write ``conversion``, or None.

    No record left is always an error; more than ``max_missing_fraction`` of the images missing is one unless
    ``allow_missing``.
    """
    report = out / REPORT_NAME
    if not conversion.records:
        counts = ", ".join(f"{kind} {n}" for kind, n in skips.by_reason().items())
        why = f"{len(skips.skipped)} rows skipped ({counts})" if skips.skipped else "the input holds no rows"
        hint = ""
        if skips.n_images_missing:
            hint = (f" {skips.n_images_missing} of {skips.n_images_checked} images are missing, e.g. "
                    f"{', '.join(skips.missing_examples())}: check --images.")
        return f"no {name} record left to write: {why}.{hint} Every skip is listed in {report}."
    error = skips.missing_images_error(max_missing_fraction, allow_missing)
    return f"{error} Nothing was written; every missing image is listed in {report}." if error else None


def prepare_summary(name: str, out: Path, written: dict[str, int], skips: SkipLog,
                    n_refused: int | None = None) -> str:
    """The short human summary ``pfmvg data prepare`` prints on stderr: records written, skips, the report.

    ``n_refused`` is the number of records converted but not written because the run was refused.
    """
    splits = ", ".join(f"{split} {written[split]}" for split in SPLITS if written.get(split))
    if n_refused is not None:
        lines = [f"{name}: wrote nothing ({n_refused} records converted; refused, see the error below)"]
    else:
        lines = [f"{name}: wrote {sum(written.values())} records ({splits}) to {out}"]
    if skips.skipped:
        counts = ", ".join(f"{kind} {n}" for kind, n in skips.by_reason().items())
        lines.append(f"  skipped {len(skips.skipped)} rows: {counts}")
    else:
        lines.append("  skipped no rows")
    if skips.n_images_checked:
        lines.append(f"  images: {skips.n_images_checked} looked for, {skips.n_images_missing} missing")
    if skips.warnings:
        counts = ", ".join(f"{kind} {n}" for kind, n in skips.warnings_by_kind().items())
        lines.append(f"  warnings {len(skips.warnings)}: {counts}")
    lines.append(f"  full list (file, line, reason): {out / REPORT_NAME}")
    return "\n".join(lines)


def _run_synth(args: argparse.Namespace) -> dict:
    from pfmvg_plugin.data import synth
    from pfmvg_plugin.data.synth import vqa as synth_vqa

    summary = synth.run_cli(args)
    if not args.vqa:
        return summary
    out = Path(summary["dir"])
    return {synth.NAME: summary,
            synth_vqa.NAME: synth_vqa.generate_synthcxr_vqa(out, out.parent / synth_vqa.NAME, seed=args.seed)}


def _run_validate(args: argparse.Namespace) -> dict:
    return {str(path): len(read_records(path)) for path in args.files}
