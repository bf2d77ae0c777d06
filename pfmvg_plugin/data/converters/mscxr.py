"""MS-CXR (PhysioNet) release files -> canonical grounding records (``pfmvg data prepare mscxr``).

Accepted as downloaded: ``MS_CXR_Local_Alignment_v1.1.0.csv`` (with the official ``split`` column),
``MS_CXR_Local_Alignment_v1.0.0.csv`` (without it) or the COCO-style JSON twin. One CSV row (one COCO annotation) is
one ``x,y,w,h`` box in original pixels; rows sharing ``(dicom_id, category_name, label_text)`` become one record whose
``phrase`` is the label text, so an image with several phrases gives several records with distinct ids.

Images are MIMIC-CXR-JPG files addressed by ``path`` relative to the MIMIC-CXR-JPG root (``--images``, the folder
holding ``files/``). With ``--images`` each image's header size is checked against the annotation and the rows of a
missing image are skipped (``image missing``); without it (or with ``--no-check-images``) nothing on disk is checked
and the dataset's image root is the annotation file's folder.

Split: ``--split-file`` (CSV ``dicom_id,split``) when given, else the official ``split`` column/key when present, else
a deterministic hash split keyed by ``dicom_id`` (all phrases of an image share a split).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from pfmvg_plugin.data.converters.common import (
    RowError,
    fit_box,
    invalid_record,
    open_text,
    parse_box_size,
    parse_number,
    parse_size,
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
from pfmvg_plugin.data.images import UnsafePathError, safe_join
from pfmvg_plugin.data.schema import grounding_record, normalize_split
from pfmvg_plugin.data.skips import SkipLog
from pfmvg_plugin.data.splits import as_ratios, assign_split, parse_ratios, ratios_text
from pfmvg_plugin.progress import progress

SOURCE = "mscxr"
COLUMNS_V100 = ("dicom_id", "category_name", "label_text", "path", "x", "y", "w", "h", "image_width", "image_height")
COLUMNS_V110 = (*COLUMNS_V100, "split")
CATEGORIES = ("Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Lung Opacity", "Pleural Effusion",
              "Pneumonia", "Pneumothorax")
_MIMIC_PATH = re.compile(r"(?:^|/)p\d+/p(?P<subject>\d+)/s(?P<study>\d+)/")


@dataclass
class _Row:
    """One box as read from the CSV or the COCO JSON, before image checks and grouping."""

    line: int | None
    item: str | None  # "annotations[3]" for COCO input (JSON has no useful line numbers)
    dicom_id: str
    category: str
    label: str
    path: str
    xywh: tuple[float, float, float, float]
    size: tuple[int, int]
    split: str | None  # the official split as written (checked only when used); None when the file has none
    ids: dict = field(default_factory=dict)  # COCO image_id / category_id / annotation_id


def _skip(skips: SkipLog, file: Path, row: _Row, reason: str) -> None:
    skips.skip(file, row.line, reason, **_item(row))


def _item(row: _Row) -> dict:
    return {"item": row.item} if row.item else {}


def _warn(skips: SkipLog, file: Path, row: _Row, message: str) -> None:
    skips.warn(file, row.line, message, **_item(row))


def detect_format(path: Path) -> str:
    """``coco-json`` for a JSON file (by suffix or a leading ``{``), else ``csv`` (version read from the header)."""
    if path.suffix.lower() == ".json":
        return "coco-json"
    with open_text(path, "MS-CXR annotation file") as f:
        try:
            head = f.read(1024).lstrip()
        except UnicodeDecodeError:
            raise ConversionError(f"{path} is not a text file; expected the MS-CXR CSV or COCO JSON") from None
    return "coco-json" if head.startswith("{") else "csv"


def _read_csv(path: Path, skips: SkipLog) -> tuple[list[_Row], str]:
    rows: list[_Row] = []
    with open_text(path, "MS-CXR annotation file") as f:
        reader = csv.DictReader(f, restkey="\0extra", restval=None)
        try:
            header = reader.fieldnames
            if not header:
                raise ConversionError(f"{path} is empty; expected an MS-CXR CSV with header {','.join(COLUMNS_V110)}")
            reader.fieldnames = [name.strip() for name in header]
            missing = [c for c in COLUMNS_V100 if c not in reader.fieldnames]
            if missing:
                raise ConversionError(
                    f"{path} is not an MS-CXR annotation CSV: missing column(s) {', '.join(missing)} "
                    f"(header is {','.join(reader.fieldnames)!r}; expected {','.join(COLUMNS_V110)!r})")
            has_split = "split" in reader.fieldnames
            for raw in progress(reader, desc="mscxr rows", unit="row"):
                line = reader.line_num
                if all(v is None or (isinstance(v, str) and not v.strip()) for v in raw.values()):
                    continue  # a line of empty fields
                try:
                    rows.append(_parse_csv_row(raw, line, has_split, len(reader.fieldnames)))
                except RowError as e:
                    skips.skip(path, line, str(e))
        except csv.Error as e:
            raise ConversionError(f"{path}:{reader.line_num}: malformed CSV ({e})") from None
    return rows, "csv-v1.1.0" if has_split else "csv-v1.0.0"


def _parse_csv_row(raw: dict, line: int, has_split: bool, n_columns: int) -> _Row:
    extra = raw.get("\0extra")
    if extra and any(v.strip() for v in extra):
        raise RowError(f"too many fields: {n_columns + len(extra)} instead of {n_columns} (unquoted comma?)")
    for col in COLUMNS_V100:
        value = raw.get(col)
        if value is None or not value.strip():
            raise RowError(f"missing value: {col}")
    relpath = safe_relpath(raw["path"])
    x, y = parse_number(raw["x"], "x"), parse_number(raw["y"], "y")
    w, h = parse_box_size(raw["w"], raw["h"])
    size = parse_size(raw["image_width"], "image_width"), parse_size(raw["image_height"], "image_height")
    split = raw["split"].strip() if has_split else None  # checked when the official split is used
    return _Row(line, None, raw["dicom_id"].strip(), raw["category_name"].strip(), raw["label_text"].strip(),
                relpath, (x, y, w, h), size, split)


def _parse_split(value: Any) -> str:
    if value is None or not str(value).strip():
        raise RowError("missing value: split")
    try:
        return normalize_split(str(value))
    except ValueError:
        raise RowError(f"unknown split: {value!r}") from None


def _read_coco(path: Path, skips: SkipLog) -> tuple[list[_Row], bool]:
    with open_text(path, "MS-CXR annotation file") as f:
        try:
            data = json.load(f)
        except json.JSONDecodeError as e:
            raise ConversionError(f"{path} is not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})") from None
    bad = [k for k in ("images", "annotations", "categories") if not isinstance(data, dict)
           or not isinstance(data.get(k), list)]
    if bad:
        raise ConversionError(f"{path} is not an MS-CXR COCO JSON: missing or non-list key(s) {', '.join(bad)}")

    categories: dict[Any, str] = {}
    for cat in data["categories"]:
        if isinstance(cat, dict) and isinstance(cat.get("name"), str) and cat["name"].strip():
            categories[cat.get("id")] = cat["name"].strip()
    has_split = any(isinstance(im, dict) and "split" in im for im in data["images"])
    images: dict[Any, dict | str] = {}  # id -> parsed image, or the reason it is unusable
    for i, im in enumerate(data["images"]):
        if not isinstance(im, dict) or "id" not in im:
            continue
        try:
            file_name = im.get("file_name") or im.get("path")
            if not isinstance(file_name, str) or not file_name.strip():
                raise RowError("missing value: file_name")
            images[im["id"]] = {
                "dicom_id": PurePosixPath(file_name.strip().replace("\\", "/")).stem,
                "path": safe_relpath(im.get("path") or file_name),
                "size": (parse_size(im.get("width"), "width"), parse_size(im.get("height"), "height")),
                "split": str(im.get("split") or "").strip() if has_split else None,
            }
        except RowError as e:
            images[im["id"]] = f"{e} (images[{i}])"

    rows: list[_Row] = []
    for i, ann in enumerate(progress(data["annotations"], desc="mscxr annotations", unit="box")):
        item = f"annotations[{i}]"
        try:
            rows.append(_parse_coco_annotation(ann, images, categories))
        except RowError as e:
            ann_id = ann.get("id") if isinstance(ann, dict) else None
            skips.skip(path, None, str(e), item=item, **({"annotation_id": ann_id} if ann_id is not None else {}))
        else:
            rows[-1].item = item
    return rows, has_split


def _parse_coco_annotation(ann: Any, images: dict, categories: dict) -> _Row:
    if not isinstance(ann, dict):
        raise RowError(f"unreadable annotation: {type(ann).__name__}, not an object")
    for key in ("image_id", "category_id", "bbox", "label_text"):
        if ann.get(key) is None or (isinstance(ann[key], str) and not ann[key].strip()):
            raise RowError(f"missing value: {key}")
    image = images.get(ann["image_id"])
    if image is None:
        raise RowError(f"unknown image_id: {ann['image_id']!r}")
    if isinstance(image, str):
        raise RowError(image)
    category = categories.get(ann["category_id"])
    if category is None:
        raise RowError(f"unknown category_id: {ann['category_id']!r}")
    if not isinstance(ann["label_text"], str):
        raise RowError(f"unreadable label_text: {ann['label_text']!r}")
    bbox = ann["bbox"]
    if not isinstance(bbox, list) or len(bbox) != 4:
        raise RowError(f"unreadable bbox: {bbox!r} is not [x, y, w, h]")
    x, y = parse_number(bbox[0], "x"), parse_number(bbox[1], "y")
    w, h = parse_box_size(bbox[2], bbox[3])
    ids = {"image_id": ann["image_id"], "category_id": ann["category_id"], "annotation_id": ann.get("id")}
    return _Row(None, None, image["dicom_id"], category, ann["label_text"].strip(), image["path"], (x, y, w, h),
                image["size"], image["split"], ids)


def read_split_file(path: Path) -> dict[str, str]:
    """``dicom_id -> split`` from a CSV with ``dicom_id`` and ``split`` columns (split names normalised)."""
    splits: dict[str, str] = {}
    with open_text(path, "split file") as f:
        reader = csv.DictReader(f)
        names = [n.strip() for n in reader.fieldnames or []]
        if "dicom_id" not in names or "split" not in names:
            raise ConversionError(f"split file {path} needs a header with columns dicom_id,split (got {names})")
        reader.fieldnames = names
        try:
            for raw in reader:
                dicom_id, split = (raw.get("dicom_id") or "").strip(), (raw.get("split") or "").strip()
                if not dicom_id and not split:
                    continue
                try:
                    split = normalize_split(split)
                except ValueError as e:
                    raise ConversionError(f"{path}:{reader.line_num}: {e}") from None
                if splits.get(dicom_id, split) != split:
                    raise ConversionError(f"{path}:{reader.line_num}: dicom_id {dicom_id} is in both "
                                          f"{splits[dicom_id]} and {split}")
                splits[dicom_id] = split
        except (csv.Error, UnicodeDecodeError) as e:
            raise ConversionError(f"{path}:{reader.line_num}: unreadable split file ({e})") from None
    return splits


def record_id(dicom_id: str, category: str, label_text: str) -> str:
    """Stable id of one image-phrase pair: unique even when an image carries several phrases."""
    digest = hashlib.sha1(f"{category}|{label_text}".encode()).hexdigest()[:12]
    return f"{SOURCE}-{dicom_id}-{digest}"


def convert_mscxr(
    annotations: Path,
    images: Path | None,
    *,
    split_file: Path | None = None,
    split_ratios: Sequence[float] | str = (0.7, 0.1, 0.2),
    seed: int = 0,
    check_images: bool = True,
    skips: SkipLog,
) -> Conversion:
    """Convert an MS-CXR CSV (v1.0.0/v1.1.0) or COCO JSON into grounding records, one per image-phrase pair.

    Bad rows are skipped into ``skips`` with file, line and reason; a group keeps its good boxes. ``images`` is the
    MIMIC-CXR-JPG root (sizes checked and rows of missing images skipped when ``check_images``); when None the image
    root is ``annotations.parent``.
    """
    annotations = Path(annotations)
    ratios = as_ratios(split_ratios)
    if images is not None and not Path(images).is_dir():
        raise ConversionError(f"image root {images} is not a directory (expected the MIMIC-CXR-JPG root)")
    fmt = detect_format(annotations)
    if fmt == "coco-json":
        rows, has_official = _read_coco(annotations, skips)
    else:
        rows, fmt = _read_csv(annotations, skips)
        has_official = fmt == "csv-v1.1.0"

    if split_file is not None:
        table = read_split_file(Path(split_file))
        split_method = "split_file"

        def split_of(row: _Row) -> str:
            if row.dicom_id not in table:
                raise RowError(f"not in split file: dicom_id {row.dicom_id}")
            return table[row.dicom_id]
    elif has_official:
        split_method = "official"

        def split_of(row: _Row) -> str:
            return _parse_split(row.split)
    else:
        split_method = f"hash(seed={seed}, ratios={ratios_text(ratios)}, key=dicom_id)"

        def split_of(row: _Row) -> str:
            return assign_split(row.dicom_id, ratios, seed)

    root = Path(images) if images is not None else annotations.parent
    records, n_images = _build_records(rows, annotations, Path(images) if images is not None else None,
                                       check_images, split_of, skips)
    inputs = {"annotations": str(annotations), "format": fmt, "images": str(images) if images is not None else None,
              "split_file": str(split_file) if split_file is not None else None, "n_boxes_read": len(rows)}
    extra = {"split_method": split_method, "images_checked": images is not None and check_images,
             "n_images": n_images}
    return Conversion(records=records, image_root=root, inputs=inputs, extra=extra)


def _build_records(rows: list[_Row], file: Path, images: Path | None, check_images: bool,
                   split_of: Callable[[_Row], str], skips: SkipLog) -> tuple[list[dict], int]:
    by_image: dict[str, list[_Row]] = {}
    for row in rows:
        by_image.setdefault(row.dicom_id, []).append(row)
    groups: dict[tuple[str, str, str], list[tuple[_Row, list[float], str]]] = {}
    for dicom_id, image_rows in progress(by_image.items(), desc="mscxr images", total=len(by_image), unit="image"):
        first = image_rows[0]
        kept = []
        for row in image_rows:
            if row.path != first.path:
                _skip(skips, file, row, f"inconsistent image path within group: dicom_id {dicom_id} is "
                                        f"{first.path!r} on {_where(first)}, {row.path!r} here")
            else:
                kept.append(row)
        try:
            real_size, missing = _check_image(images, first, check_images)
        except RowError as e:
            for row in kept:
                _skip(skips, file, row, str(e))
            continue
        if missing:
            for row in kept:
                skips.image_missing(file, row.line, row.path, images, **_item(row))
            continue
        if real_size:
            skips.image_found(first.path)
        ref_size = real_size or first.size
        for row in kept:
            if row.size != ref_size:
                if real_size:
                    reason = (f"image size mismatch: annotation says {row.size[0]}x{row.size[1]}, "
                              f"{row.path} is {real_size[0]}x{real_size[1]}")
                else:
                    reason = (f"inconsistent image size within group: dicom_id {dicom_id} is {ref_size[0]}x"
                              f"{ref_size[1]} on {_where(first)}, {row.size[0]}x{row.size[1]} here")
                _skip(skips, file, row, reason)
                continue
            try:
                box, clipped = fit_box(row.xywh, *ref_size)
                split = split_of(row)
            except RowError as e:
                _skip(skips, file, row, str(e))
                continue
            if clipped:
                _warn(skips, file, row, clipped)
            groups.setdefault((dicom_id, row.category, row.label), []).append((row, box, split))
    records = []
    for (dicom_id, category, label), members in groups.items():
        split = members[0][2]
        good = []
        for row, box, row_split in members:
            if row_split != split:
                _skip(skips, file, row, f"inconsistent split within group: {row_split} here, {split} on "
                                        f"{_where(members[0][0])}")
            else:
                good.append((row, box))
        rec = _record(dicom_id, category, label, split, good)
        reason = invalid_record(rec)
        if reason:
            for row, _ in good:
                _skip(skips, file, row, reason)
            continue
        records.append(rec)
    return records, len(by_image)


def _where(row: _Row) -> str:
    return f"line {row.line}" if row.line is not None else str(row.item)


def _check_image(images: Path | None, row: _Row, check: bool) -> tuple[tuple[int, int] | None, bool]:
    """(real size or None, missing?) of a row's image; unsafe or unreadable images raise :class:`RowError`."""
    if images is None:
        return None, False
    try:
        target = safe_join(images, row.path)
    except UnsafePathError as e:
        raise RowError(f"unsafe image path: {e}") from None
    if not check:
        return None, False
    if not target.is_file():
        return None, True
    return read_image_size(target), False


def _record(dicom_id: str, category: str, label: str, split: str, members: list[tuple[_Row, list[float]]]) -> dict:
    first = members[0][0]
    meta: dict[str, Any] = {"dicom_id": dicom_id}
    match = _MIMIC_PATH.search(first.path)
    if match:
        meta["subject_id"], meta["study_id"] = match["subject"], match["study"]
    if first.line is not None:
        meta["lines"] = [row.line for row, _ in members]
    if first.ids:
        meta["image_id"], meta["category_id"] = first.ids["image_id"], first.ids["category_id"]
        meta["annotation_ids"] = [row.ids.get("annotation_id") for row, _ in members]
    return grounding_record(record_id=record_id(dicom_id, category, label), source=SOURCE, split=split,
                            image=first.path, width=first.size[0], height=first.size[1], phrase=label,
                            boxes=[box for _, box in members], category=category, meta=meta)


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--annotations", type=Path, required=True, metavar="FILE",
                        help="MS_CXR_Local_Alignment_v1.1.0.csv / v1.0.0.csv, or the COCO JSON twin")
    parser.add_argument("--images", type=Path, default=None, metavar="DIR",
                        help="MIMIC-CXR-JPG root (holding files/p10/...); image sizes are checked against the "
                             "annotations. Without it nothing is checked and the image root is the annotation folder")
    parser.add_argument("--split-file", type=Path, default=None, metavar="CSV",
                        help="CSV with dicom_id,split columns; overrides the official split column")
    parser.add_argument("--no-check-images", dest="check_images", action="store_false",
                        help="do not open the images (no size check; no row is skipped for a missing image)")
    add_split_arguments(parser, "image (dicom_id)")


def _run(args: argparse.Namespace, skips: SkipLog) -> Conversion:
    return convert_mscxr(args.annotations, args.images, split_file=args.split_file,
                         split_ratios=parse_ratios(args.split_ratios), seed=args.seed,
                         check_images=args.check_images, skips=skips)


register_converter(ConverterSpec(
    name=SOURCE,
    help="MS-CXR phrase grounding (PhysioNet CSV v1.0.0/v1.1.0 or COCO JSON; images from MIMIC-CXR-JPG)",
    add_arguments=_add_arguments,
    run=_run,
    checks_images=True,
))
