"""NIH ChestX-ray8 ``BBox_List_2017.csv`` -> canonical grounding records (``pfmvg data prepare chestxray8``).

The file's header is literally ``Image Index,Finding Label,Bbox [x,y,w,h],,,``, so rows are read by position (the
first six fields; trailing empty fields are ignored). Boxes are float ``x,y,w,h`` pixels in the 1024x1024 PNGs.
Rows sharing (image, finding) become one record. The file says ``Infiltrate`` where the label list says
``Infiltration``; the record's category is always the canonical label.

Images are looked up under ``--images`` as ``<dir>/<name>``, ``<dir>/images/<name>`` or anywhere below (the NIH
tarballs unpack to ``images_001/images/...``; one directory walk builds a name index). A found image's real size is
used; the rows of a missing image are skipped (``image missing``, listed in ``prepare_report.json``): the release is
12 tarballs, so a partial download is common, and ``pfmvg data prepare`` fails when too many are missing. Without
``--images`` (or with ``--no-check-images``) nothing on disk is checked, sizes are taken as 1024x1024 and the image
root is the CSV's folder. The split is a deterministic hash keyed by patient id (the file name before ``_``), so a
patient never spans splits.
"""

from __future__ import annotations

import argparse
import csv
import os
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

from pfmvg_plugin.data.converters.common import (
    RowError,
    fit_box,
    invalid_record,
    open_text,
    parse_box_size,
    parse_number,
    read_image_size,
    safe_relpath,
)
from pfmvg_plugin.data.converters.registry import (
    Conversion,
    ConversionError,
    ConverterSpec,
    add_split_arguments,
    register_converter,
)
from pfmvg_plugin.data.images import UnsafePathError, index_files, safe_join
from pfmvg_plugin.data.schema import grounding_record
from pfmvg_plugin.data.skips import SkipLog
from pfmvg_plugin.data.splits import as_ratios, assign_split, parse_ratios, ratios_text
from pfmvg_plugin.progress import progress

SOURCE = "chestxray8"
HEADER = "Image Index,Finding Label,Bbox [x,y,w,h],,,"
FIELDS = ("Image Index", "Finding Label", "x", "y", "w", "h")
DEFAULT_SIZE = (1024, 1024)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
LABELS = ("Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia", "Pneumothorax")
LABEL_ALIASES = {**{label.lower(): label for label in LABELS}, "infiltrate": "Infiltration"}
PHRASES = {  # the grounding phrase of each finding (lowercase, radiology wording)
    "Atelectasis": "atelectasis",
    "Cardiomegaly": "cardiomegaly",
    "Effusion": "pleural effusion",
    "Infiltration": "infiltration",
    "Mass": "lung mass",
    "Nodule": "lung nodule",
    "Pneumonia": "pneumonia",
    "Pneumothorax": "pneumothorax",
}


def canonical_label(text: str) -> str:
    """``Infiltrate`` -> ``Infiltration``; any casing of the eight labels -> its canonical spelling."""
    label = LABEL_ALIASES.get(text.strip().lower())
    if label is None:
        raise RowError(f"unknown finding label: {text.strip()!r} (expected one of {', '.join(LABELS)})")
    return label


def patient_id(image_name: str) -> str:
    """``00013118_008.png`` -> ``00013118`` (the split key)."""
    stem = PurePosixPath(image_name).stem
    return stem.split("_", 1)[0]


class _ImageFinder:
    """Finds ``name`` under the image root directly, under ``images/``, or by a one-off walk of the tree."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._index: dict[str, str] | None = None

    def locate(self, relpath: str) -> str | None:
        name = PurePosixPath(relpath).name
        for candidate in dict.fromkeys((relpath, f"images/{relpath}", f"images/{name}")):
            try:
                if safe_join(self.root, candidate).is_file():
                    return candidate
            except UnsafePathError:
                raise RowError(f"unsafe image path: {relpath!r} resolves outside {self.root}") from None
        if self._index is None:
            self._index = {k: v.replace(os.sep, "/") for k, v in index_files(self.root, IMAGE_SUFFIXES).items()}
        return self._index.get(name)


def convert_chestxray8(
    bbox_csv: Path,
    images: Path | None,
    *,
    split_ratios: Sequence[float] | str = (0.7, 0.1, 0.2),
    seed: int = 0,
    check_images: bool = True,
    skips: SkipLog,
) -> Conversion:
    """Convert ``BBox_List_2017.csv`` into grounding records, one per (image, finding) with all its boxes.

    Bad rows are skipped into ``skips`` with file, line and reason; so are the rows of an image missing under
    ``images`` (the folder holding the PNGs, any NIH layout). When ``images`` is None (or ``check_images`` is false)
    images are not looked up and are assumed 1024x1024.
    """
    bbox_csv = Path(bbox_csv)
    ratios = as_ratios(split_ratios)
    if images is not None and not Path(images).is_dir():
        raise ConversionError(f"image root {images} is not a directory (expected the folder holding the NIH PNGs)")
    rows = _read_rows(bbox_csv, skips)

    finder = _ImageFinder(Path(images)) if images is not None and check_images else None
    resolved: dict[str, tuple[str, tuple[int, int]] | str | None] = {}  # name -> (relpath, size), reason, or missing
    groups: dict[tuple[str, str], list[tuple[int, list[float], str]]] = {}
    for line, name, label, raw_label, xywh in progress(rows, desc="chestxray8 boxes", unit="box"):
        if name not in resolved:
            try:
                resolved[name] = located = _resolve(finder, name)
            except RowError as e:
                resolved[name] = str(e)
            else:
                if finder is not None and located is not None:
                    skips.image_found(located[0])
        found = resolved[name]
        if found is None:
            skips.image_missing(bbox_csv, line, name, images, looked_for="nor in any folder below it")
            continue
        if isinstance(found, str):
            skips.skip(bbox_csv, line, found)
            continue
        relpath, size = found
        try:
            box, clipped = fit_box(xywh, *size)
        except RowError as e:
            skips.skip(bbox_csv, line, str(e))
            continue
        if clipped:
            skips.warn(bbox_csv, line, clipped)
        groups.setdefault((name, label), []).append((line, box, raw_label))

    records = []
    for (name, label), members in groups.items():
        relpath, size = resolved[name]
        rec = _record(name, relpath, size, label, members, ratios, seed)
        reason = invalid_record(rec)
        if reason:
            for line, _, _ in members:
                skips.skip(bbox_csv, line, reason)
            continue
        records.append(rec)
    inputs = {"bbox_csv": str(bbox_csv), "format": "BBox_List_2017.csv",
              "images": str(images) if images is not None else None, "n_boxes_read": len(rows)}
    extra = {"split_method": f"hash(seed={seed}, ratios={ratios_text(ratios)}, key=patient_id)",
             "images_checked": finder is not None, "n_images": len(resolved)}
    return Conversion(records=records, image_root=Path(images) if images is not None else bbox_csv.parent,
                      inputs=inputs, extra=extra)


def _resolve(finder: _ImageFinder | None, name: str) -> tuple[str, tuple[int, int]] | None:
    """(relpath under the image root, size): the real size, or 1024x1024 when not checked; None when missing."""
    if finder is None:
        return name, DEFAULT_SIZE
    relpath = finder.locate(name)
    if relpath is None:
        return None
    return relpath, read_image_size(safe_join(finder.root, relpath))


def _read_rows(path: Path, skips: SkipLog) -> list[tuple[int, str, str, str, tuple[float, float, float, float]]]:
    """Parsed rows ``(line, image name, canonical label, label as written, xywh)``; bad rows go to ``skips``."""
    rows = []
    with open_text(path, "ChestX-ray8 box file") as f:
        reader = csv.reader(f)
        try:
            header = next(reader, None)
            names = [h.strip() for h in header or []]
            if len(names) < 3 or names[0] != "Image Index" or names[1] != "Finding Label" \
                    or not names[2].startswith("Bbox"):
                raise ConversionError(f"{path} is not BBox_List_2017.csv: header is {','.join(header or [])!r}, "
                                      f"expected {HEADER!r}")
            for fields in progress(reader, desc="chestxray8 rows", unit="row"):
                line = reader.line_num
                if not any(v.strip() for v in fields):
                    continue  # blank line or a line of commas
                try:
                    rows.append((line, *_parse_row(fields)))
                except RowError as e:
                    skips.skip(path, line, str(e))
        except csv.Error as e:
            raise ConversionError(f"{path}: malformed CSV ({e})") from None
    return rows


def _parse_row(fields: list[str]) -> tuple[str, str, str, tuple[float, float, float, float]]:
    if any(v.strip() for v in fields[len(FIELDS):]):
        raise RowError(f"too many fields: {len(fields)} with values past the {len(FIELDS)}th; expected "
                       f"{','.join(FIELDS)}")
    for i, name in enumerate(FIELDS):
        if i >= len(fields) or not fields[i].strip():
            raise RowError(f"missing value: {name}")
    name = safe_relpath(fields[0])
    raw_label = fields[1].strip()
    label = canonical_label(raw_label)
    x, y = parse_number(fields[2], "x"), parse_number(fields[3], "y")
    w, h = parse_box_size(fields[4], fields[5])
    return name, label, raw_label, (x, y, w, h)


def _record(name: str, relpath: str, size: tuple[int, int], label: str, members: list[tuple[int, list[float], str]],
            ratios: Sequence[float], seed: int) -> dict:
    pid = patient_id(name)
    meta = {"image_index": name, "patient_id": pid, "finding_label": members[0][2],
            "lines": [line for line, _, _ in members]}
    return grounding_record(record_id=f"{SOURCE}-{PurePosixPath(name).stem}-{label.lower()}", source=SOURCE,
                            split=assign_split(pid, ratios, seed), image=relpath, width=size[0], height=size[1],
                            phrase=PHRASES[label], boxes=[box for _, box, _ in members], category=label, meta=meta)


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bbox-csv", type=Path, required=True, metavar="FILE", help="BBox_List_2017.csv as released")
    parser.add_argument("--images", type=Path, default=None, metavar="DIR",
                        help="folder holding the PNGs (flat, images/, or images_NNN/images/ as unpacked); without "
                             "it images are not looked up and the image root is the CSV's folder")
    parser.add_argument("--no-check-images", dest="check_images", action="store_false",
                        help="do not look up or open the images: no row is skipped for a missing image and sizes "
                             "are assumed 1024x1024")
    add_split_arguments(parser, "patient",
                        note="; 0,0,1 puts every box in the test split, which chestxray8_grounding scores")


def _run(args: argparse.Namespace, skips: SkipLog) -> Conversion:
    return convert_chestxray8(args.bbox_csv, args.images, split_ratios=parse_ratios(args.split_ratios),
                              seed=args.seed, check_images=args.check_images, skips=skips)


register_converter(ConverterSpec(
    name=SOURCE,
    help="NIH ChestX-ray8 boxes (BBox_List_2017.csv; 8 findings, 1024x1024 PNGs), split by patient",
    add_arguments=_add_arguments,
    run=_run,
    checks_images=True,
))
