"""``pfmvg data …``: prepare real releases, synthesise the default dataset, validate JSONL files."""

from __future__ import annotations

import argparse
from pathlib import Path

from pfmvg_plugin.data.converters import load_converters
from pfmvg_plugin.data.schema import read_records
from pfmvg_plugin.data.skips import SkipLog
from pfmvg_plugin.data.store import dataset_dir, write_dataset


def add_parser(commands: argparse._SubParsersAction) -> None:
    data = commands.add_parser("data", help="prepare, synthesise and validate datasets",
                               description="Prepare, synthesise and validate datasets in the canonical JSONL schema.")
    sub = data.add_subparsers(dest="data_command", metavar="ACTION", required=True)

    prepare = sub.add_parser(
        "prepare", help="convert a real dataset release into canonical JSONL",
        description="Convert a dataset release, as downloaded, into canonical JSONL under --out or "
                    "$PFMVG_DATA_ROOT/<dataset> (default ~/.cache/pfmvg/<dataset>). Skipped rows are listed "
                    "with file, line and reason in prepare_report.json.")
    datasets = prepare.add_subparsers(dest="dataset", metavar="DATASET", required=True)
    for spec in load_converters().values():
        p = datasets.add_parser(spec.name, help=spec.help, description=spec.help)
        spec.add_arguments(p)
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
    summary = write_dataset(out, spec.name, conversion.records, conversion.image_root, skips,
                            inputs=conversion.inputs, extra=conversion.extra)
    return summary


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
