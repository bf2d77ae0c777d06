"""RSNA Pneumonia Detection -> canonical grounding records (``pfmvg data prepare rsna``).

Input: ``stage_2_train_labels.csv`` (``.csv``, ``.csv.gz`` or a ``.zip`` holding it) with columns
``patientId,x,y,width,height,Target`` (matched by header name): one row per box, x/y/width/height in pixels of the
1024x1024 DICOM, top-left origin. Negatives (``Target`` 0) have empty coordinates and are counted as skipped
("negative (Target=0)"). One record per patient holds all its boxes; phrase ``pneumonia``, category ``Pneumonia``.

Images: ``<patientId>.dcm`` found by name under ``--images`` (the folder holding ``stage_2_train_images/`` or that
folder itself; a PNG/JPG export of the same name is used when there is no DICOM). The size comes from the DICOM
header; the rows of a patient whose image is missing are skipped (``image missing``, listed in
``prepare_report.json``), and ``pfmvg data prepare`` fails when too many are missing. There is no official split with
labels: patients are hashed into train/val/test by ``patientId``.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from pfmvg_plugin.data.converters.common import (
    ImageFinder,
    RowError,
    image_key,
    invalid_record,
    iter_csv_rows,
    parse_numbers,
)
from pfmvg_plugin.data.converters.registry import (
    Conversion,
    ConversionError,
    ConverterSpec,
    add_split_arguments,
    register_converter,
)
from pfmvg_plugin.data.schema import grounding_record
from pfmvg_plugin.data.skips import SkipLog
from pfmvg_plugin.data.splits import as_ratios, assign_split, parse_ratios, ratios_text
from pfmvg_plugin.geometry import xywh_to_xyxy
from pfmvg_plugin.progress import progress

SOURCE = "rsna"
REQUIRED_COLUMNS = ("patientId", "x", "y", "width", "height", "Target")
COORDS = ("x", "y", "width", "height")
IMAGE_DIR = "stage_2_train_images"
IMAGE_SUFFIXES = (".dcm", ".dicom", ".png", ".jpg", ".jpeg")
PHRASE = "pneumonia"
CATEGORY = "Pneumonia"


def convert_rsna(
    labels: str | Path,
    images: str | Path,
    *,
    split_ratios: Sequence[float] = (0.7, 0.1, 0.2),
    seed: int = 0,
    skips: SkipLog,
) -> Conversion:
    """Convert RSNA ``stage_2_train_labels.csv`` into one grounding record per positive patient.

    Patients are split by a hash of ``patientId`` with ``split_ratios`` (train, val, test). Negatives and bad rows
    go to ``skips`` with file, line and reason, and so do the rows of a patient whose image is missing under
    ``images``. An unreadable file or missing columns raise :class:`ConversionError`.
    """
    labels, images = Path(labels), Path(images)
    if not labels.is_file():
        raise ConversionError(f"RSNA labels file {labels} does not exist or is not a file")
    if not images.is_dir():
        raise ConversionError(f"image folder {images} does not exist or is not a directory")
    ratios = as_ratios(split_ratios)
    prefix = f"{IMAGE_DIR}/" if (images / IMAGE_DIR).is_dir() else ""
    finder = ImageFinder(images, IMAGE_SUFFIXES)

    located: dict[str, tuple[str, int, int] | str | None] = {}  # patientId -> (path, size), reason or missing

    def locate(pid: str) -> tuple[str, int, int] | str | None:
        if pid not in located:
            located[pid] = found = finder.find(pid)
            if isinstance(found, tuple):
                skips.image_found(found[0])
        return located[pid]

    groups: dict[str, list[tuple[list[float], int]]] = {}
    for line, fields, problem in iter_csv_rows(labels, REQUIRED_COLUMNS, desc=f"rsna {labels.name}"):
        if problem:
            skips.skip(labels, line, problem)
            continue
        try:
            pid = image_key(fields["patientId"], "patientId")
        except RowError as e:
            skips.skip(labels, line, str(e))
            continue
        target = fields["Target"]
        if target not in ("0", "1"):
            skips.skip(labels, line, f"bad Target: {target!r} (expected 0 or 1)", patient_id=pid)
            continue
        if target == "0":
            skips.skip(labels, line, "negative (Target=0)", patient_id=pid)
            continue
        if not any(fields[c] for c in COORDS):
            skips.skip(labels, line, "missing coordinates for Target=1", patient_id=pid)
            continue
        try:
            x, y, w, h = parse_numbers(fields, COORDS)
        except RowError as e:
            skips.skip(labels, line, str(e), patient_id=pid)
            continue
        if w <= 0 or h <= 0:
            skips.skip(labels, line, f"zero or negative size: width={w:g} height={h:g}", patient_id=pid)
            continue
        found = locate(pid)
        if found is None:
            skips.image_missing(labels, line, f"{prefix}{pid}.dcm", images, patient_id=pid,
                                looked_for=f"nor {pid}{'/'.join(IMAGE_SUFFIXES[1:])} in any folder below it")
            continue
        if isinstance(found, str):
            skips.skip(labels, line, found, patient_id=pid)
            continue
        rel, iw, ih = found
        box = list(xywh_to_xyxy(x, y, w, h))
        if box[0] < 0 or box[1] < 0 or box[2] > iw or box[3] > ih:
            skips.skip(labels, line, f"box outside image: {box} not inside {iw}x{ih}", patient_id=pid)
            continue
        groups.setdefault(pid, []).append((box, line))

    records = []
    for pid, rows in progress(sorted(groups.items()), desc="rsna records", unit="records"):
        rel, iw, ih = located[pid]  # type: ignore[misc]  # rows exist only for located images
        meta = {"patient_id": pid, "lines": [ln for _, ln in rows], "n_boxes": len(rows)}
        rec = grounding_record(record_id=f"{SOURCE}-{pid}", source=SOURCE, split=assign_split(pid, ratios, seed),
                               image=rel, width=iw, height=ih, phrase=PHRASE, boxes=[box for box, _ in rows],
                               category=CATEGORY, meta=meta)
        reason = invalid_record(rec)
        if reason:
            for _, ln in rows:
                skips.skip(labels, ln, reason, patient_id=pid)
            continue
        records.append(rec)
    return Conversion(
        records=records,
        image_root=images,
        inputs={"labels": str(labels), "images": str(images), "split_ratios": list(ratios), "seed": seed},
        extra={"split_policy": f"hash by patientId {ratios_text(ratios, '/')} (seed {seed})"},
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--labels", type=Path, required=True, metavar="CSV",
                        help="stage_2_train_labels.csv (patientId,x,y,width,height,Target)")
    parser.add_argument("--images", type=Path, required=True, metavar="DIR",
                        help=f"folder holding {IMAGE_DIR}/<patientId>.dcm, or that folder itself")
    add_split_arguments(parser, "patient (one image each)")


def _run(args: argparse.Namespace, skips: SkipLog) -> Conversion:
    return convert_rsna(args.labels, args.images, split_ratios=parse_ratios(args.split_ratios), seed=args.seed,
                        skips=skips)


register_converter(ConverterSpec(
    name=SOURCE,
    help="RSNA Pneumonia Detection (stage_2_train_labels.csv): one record per positive patient with all its boxes",
    add_arguments=add_arguments,
    run=_run,
    checks_images=True,
))
