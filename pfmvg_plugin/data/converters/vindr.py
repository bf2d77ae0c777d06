"""VinDr-CXR -> canonical grounding records (``pfmvg data prepare vindr``).

Accepted annotation files (columns found by header name, in any order; ``.csv``, ``.csv.gz`` or a ``.zip`` holding
one CSV):

- Kaggle (VinBigData) ``train.csv``: ``image_id,class_name,class_id,rad_id,x_min,y_min,x_max,y_max``. No official
  split: images are hashed into train/val/test by ``image_id`` with ``--split-ratios`` (default 0.7,0.1,0.2).
- PhysioNet ``annotations/annotations_{train,test}.csv``: ``image_id,rad_id,class_name,x_min,y_min,x_max,y_max``.
  The split comes from the file name. Given ``--split-ratios TRAIN,VAL,TEST``, a val split is carved from the
  train images by hash (an image goes to val with probability VAL / (TRAIN + VAL); TEST is ignored because the
  release's test split is kept as it is); without it, train stays whole and there is no val split.

Images are found by name anywhere under ``--images``: ``<image_id>.dicom``/``.dcm`` (Kaggle ``train/``, PhysioNet
``train/`` and ``test/``; size from the DICOM header) or a PNG/JPG export ``<image_id>.png|.jpg|.jpeg`` (size from
the file; boxes stay in the original DICOM pixels, so a resized export makes its boxes fall outside and be skipped).
The CSVs carry no image size; the rows of an image not found are skipped (``image missing``, listed in
``prepare_report.json``), and ``pfmvg data prepare`` fails when too many are missing.

Every radiologist's box is one row; "No finding" rows have empty coordinates and are counted as skipped
("no finding"), not as errors. One record per (image, class) holds that class's boxes after fusion across
radiologists (:mod:`pfmvg_plugin.data.fusion`); the phrase is the class name in lower case (abbreviations spelled
out), the category the class name as released.
"""

from __future__ import annotations

import argparse
import re
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
from pfmvg_plugin.data.converters.registry import Conversion, ConversionError, ConverterSpec, register_converter
from pfmvg_plugin.data.fusion import FUSION_METHODS, fuse_boxes
from pfmvg_plugin.data.schema import grounding_record
from pfmvg_plugin.data.skips import SkipLog
from pfmvg_plugin.data.splits import as_ratios, assign_split, parse_ratios, ratios_text
from pfmvg_plugin.progress import progress

SOURCE = "vindr"
REQUIRED_COLUMNS = ("image_id", "class_name", "x_min", "y_min", "x_max", "y_max")
OPTIONAL_COLUMNS = ("rad_id", "class_id")
COORDS = ("x_min", "y_min", "x_max", "y_max")
NO_FINDING = "no finding"
IMAGE_SUFFIXES = (".dicom", ".dcm", ".png", ".jpg", ".jpeg")  # preference order when several exist
DEFAULT_RATIOS = (0.7, 0.1, 0.2)
PHRASE_OVERRIDES = {"ILD": "interstitial lung disease"}
_PHYSIONET_NAME = re.compile(r"annotations_(train|test)\b", re.IGNORECASE)


def class_phrase(class_name: str) -> str:
    """The grounding phrase of a VinDr class: its name in lower case, abbreviations spelled out."""
    return PHRASE_OVERRIDES.get(class_name, class_name).lower()


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_") or "x"


def release_split(path: Path) -> str | None:
    """``train``/``test`` for a PhysioNet ``annotations_{train,test}.csv``; ``None`` (no official split) otherwise."""
    m = _PHYSIONET_NAME.search(path.name)
    return m.group(1).lower() if m else None


def _carve_val(image_id: str, ratios: Sequence[float], seed: int) -> str:
    t, v = ratios[0], ratios[1]
    return "val" if assign_split(image_id, (t / (t + v), v / (t + v), 0.0), seed) == "val" else "train"


def convert_vindr(
    annotations: Sequence[str | Path],
    images: str | Path,
    *,
    fuse: str = "wbf",
    iou_threshold: float = 0.4,
    split_ratios: Sequence[float] | None = None,
    seed: int = 0,
    skips: SkipLog,
) -> Conversion:
    """Convert VinDr-CXR annotation CSVs (Kaggle ``train.csv`` and/or PhysioNet ``annotations_{train,test}.csv``).

    One grounding record per (image, class) with the class's boxes fused across radiologists by ``fuse``
    (``"wbf"`` or ``"none"``, see :func:`pfmvg_plugin.data.fusion.fuse_boxes`). ``split_ratios`` (train, val, test)
    drives the hash split of Kaggle files (default 0.7/0.1/0.2) and, when given, carves val out of PhysioNet train.
    Bad rows go to ``skips`` with file, line and reason; unreadable files raise :class:`ConversionError`.
    """
    if fuse not in FUSION_METHODS:
        raise ValueError(f"unknown --fuse {fuse!r}; expected one of {', '.join(FUSION_METHODS)}")
    if not 0.0 < iou_threshold <= 1.0:
        raise ValueError(f"--iou-threshold must be in (0, 1], got {iou_threshold!r}")
    paths = [Path(p) for p in annotations]
    if not paths:
        raise ConversionError("no VinDr annotation file given (--annotations train.csv or annotations_*.csv)")
    seen: set[Path] = set()
    for p in paths:
        if not p.is_file():
            raise ConversionError(f"VinDr annotation file {p} does not exist or is not a file")
        if p.resolve() in seen:
            raise ConversionError(f"VinDr annotation file {p} is given twice")
        seen.add(p.resolve())
    images = Path(images)
    if not images.is_dir():
        raise ConversionError(f"image root {images} does not exist or is not a directory")
    if split_ratios is not None:
        split_ratios = as_ratios(split_ratios)
        if any(release_split(p) == "train" for p in paths) and split_ratios[0] + split_ratios[1] <= 0:
            raise ValueError("carving val from PhysioNet train needs TRAIN + VAL > 0 in --split-ratios")
    fusion_info = {"method": fuse, "iou_threshold": iou_threshold if fuse == "wbf" else None}

    finder = ImageFinder(images, IMAGE_SUFFIXES)
    groups: dict[tuple[str, str], list[tuple[tuple[float, float, float, float], str | None, str]]] = {}
    image_split: dict[str, tuple[str, str]] = {}  # image_id -> (split, file that set it)
    image_raters: dict[str, set[str]] = {}
    image_release: dict[str, str] = {}
    class_ids: dict[str, int | str] = {}
    for path in paths:
        official = release_split(path)
        release = "physionet" if official else "kaggle"
        for line, fields, problem in iter_csv_rows(path, REQUIRED_COLUMNS, OPTIONAL_COLUMNS, desc=f"vindr {path.name}"):
            if problem:
                skips.skip(path, line, problem)
                continue
            try:
                image_id = image_key(fields["image_id"], "image_id")
            except RowError as e:
                skips.skip(path, line, str(e))
                continue
            class_name = fields["class_name"]
            if not class_name:
                skips.skip(path, line, "missing class_name", image_id=image_id)
                continue
            if official is None:
                split = assign_split(image_id, split_ratios or DEFAULT_RATIOS, seed)
            elif official == "train" and split_ratios is not None:
                split = _carve_val(image_id, split_ratios, seed)
            else:
                split = official
            first = image_split.setdefault(image_id, (split, str(path)))
            if first[0] != split:
                skips.skip(path, line, f"split conflict: image {image_id} is already in {first[0]} (from {first[1]}), "
                                       f"this file puts it in {split}", image_id=image_id)
                continue
            image_release.setdefault(image_id, release)
            rater = fields.get("rad_id") or None
            if rater:
                image_raters.setdefault(image_id, set()).add(rater)
            if class_name.lower() == NO_FINDING:
                skips.skip(path, line, "no finding", image_id=image_id)
                continue
            if not any(fields[c] for c in COORDS):
                skips.skip(path, line, f"missing coordinates for {class_name!r}", image_id=image_id)
                continue
            try:
                x1, y1, x2, y2 = parse_numbers(fields, COORDS)
            except RowError as e:
                skips.skip(path, line, str(e), image_id=image_id)
                continue
            if x2 <= x1 or y2 <= y1:
                skips.skip(path, line, f"zero or negative size: box {[x1, y1, x2, y2]}", image_id=image_id)
                continue
            found = finder.find(image_id)
            if found is None:
                skips.image_missing(path, line, image_id, images, image_id=image_id,
                                    looked_for=f"no {image_id}{'/'.join(IMAGE_SUFFIXES)} in any folder below it")
                continue
            if isinstance(found, str):
                skips.skip(path, line, found, image_id=image_id)
                continue
            rel, w, h = found
            skips.image_found(rel)
            if x1 < 0 or y1 < 0 or x2 > w or y2 > h:
                hint = "" if rel.lower().endswith((".dicom", ".dcm")) else " (resized export? boxes are DICOM pixels)"
                skips.skip(path, line, f"box outside image: {[x1, y1, x2, y2]} not inside {w}x{h} {rel}{hint}",
                           image_id=image_id)
                continue
            if fields.get("class_id"):
                cid = fields["class_id"]
                class_ids.setdefault(class_name, int(cid) if cid.isdigit() else cid)
            groups.setdefault((image_id, class_name), []).append(((x1, y1, x2, y2), rater, f"{path.name}:{line}"))

    records = []
    for (image_id, class_name), rows in progress(sorted(groups.items()), desc="vindr fuse", unit="records"):
        rel, w, h = finder.find(image_id)  # type: ignore[misc]  # rows exist only for found images
        fused = fuse_boxes([r[0] for r in rows], [r[1] for r in rows], method=fuse, iou_threshold=iou_threshold)
        meta = {
            "image_id": image_id,
            "release": image_release[image_id],
            "rows": [r[2] for r in rows],
            "rad_ids": sorted({r[1] for r in rows if r[1]}),
            "image_rad_ids": sorted(image_raters.get(image_id, ())),
            "n_raw_boxes": len(rows),
            "box_support": [f.support for f in fused],
            "box_rad_ids": [list(f.raters) for f in fused],
            "box_fusion": dict(fusion_info),
        }
        if class_name in class_ids:
            meta["class_id"] = class_ids[class_name]
        rec = grounding_record(record_id=f"{SOURCE}-{image_id}-{_slug(class_name)}", source=SOURCE,
                               split=image_split[image_id][0], image=rel, width=w, height=h,
                               phrase=class_phrase(class_name), boxes=[list(f.box) for f in fused],
                               category=class_name, meta=meta)
        reason = invalid_record(rec)
        if reason:
            for r in rows:
                file, _, line = r[2].rpartition(":")
                skips.skip(file, int(line), reason, image_id=image_id)
            continue
        records.append(rec)

    ids = [r["id"] for r in records]
    if len(set(ids)) != len(ids):  # two class names with the same slug: make ids unique, deterministically
        counts: dict[str, int] = {}
        for rec in records:
            n = counts[rec["id"]] = counts.get(rec["id"], 0) + 1
            if n > 1:
                rec["id"] = f"{rec['id']}-{n}"
    if split_ratios is None:
        policy = "kaggle: hash by image_id 0.7/0.1/0.2; physionet: official train/test"
    else:
        val_fraction = split_ratios[1] / (split_ratios[0] + split_ratios[1] or 1.0)
        policy = (f"kaggle: hash by image_id {ratios_text(split_ratios, '/')}; physionet: official "
                  f"train/test, val carved from train by hash (fraction {val_fraction:g})")
    return Conversion(
        records=records,
        image_root=images,
        inputs={"annotations": [str(p) for p in paths], "images": str(images), "fuse": fuse,
                "iou_threshold": iou_threshold, "split_ratios": list(split_ratios) if split_ratios else None,
                "seed": seed},
        extra={"box_fusion": fusion_info, "split_policy": policy},
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--annotations", type=Path, nargs="+", required=True, metavar="CSV",
                        help="Kaggle train.csv, or PhysioNet annotations/annotations_train.csv annotations_test.csv")
    parser.add_argument("--images", type=Path, required=True, metavar="DIR",
                        help="image root: <image_id>.dicom (train/, test/) or PNG/JPG exports, found by name anywhere")
    parser.add_argument("--fuse", choices=FUSION_METHODS, default="wbf",
                        help="fuse the radiologists' duplicate boxes per (image, class): wbf = cluster by IoU and "
                             "average (default); none = keep every box")
    parser.add_argument("--iou-threshold", type=float, default=0.4, metavar="IOU",
                        help="IoU at or above which boxes join one cluster under --fuse wbf (default 0.4)")
    parser.add_argument("--split-ratios", default=None, metavar="TRAIN,VAL,TEST",
                        help="Kaggle train.csv: fractions of the image-grouped hash split (default 0.7,0.1,0.2). "
                             "PhysioNet: the official train/test split is kept; given this option, a val split "
                             "is carved from train images with fraction VAL/(TRAIN+VAL)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the split hash (default 0)")


def _run(args: argparse.Namespace, skips: SkipLog) -> Conversion:
    ratios = parse_ratios(args.split_ratios) if args.split_ratios else None
    return convert_vindr(args.annotations, args.images, fuse=args.fuse, iou_threshold=args.iou_threshold,
                         split_ratios=ratios, seed=args.seed, skips=skips)


register_converter(ConverterSpec(
    name=SOURCE,
    help="VinDr-CXR (Kaggle train.csv or PhysioNet annotations_{train,test}.csv): one record per image and "
         "class, radiologists' boxes fused",
    add_arguments=add_arguments,
    run=_run,
    checks_images=True,
))
