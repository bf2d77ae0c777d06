"""IU-Xray (R2Gen release) -> canonical report records (``pfmvg data prepare iuxray``).

Input: R2Gen's ``iu_xray/annotation.json``, ``{"train": [...], "val": [...], "test": [...]}`` whose items are
``{id, report, image_path: [view, ...], split?}``; ``image_path`` entries (``CXR2384_IM-0942/0.png``) are relative to
``--images`` (``iu_xray/images``). One record per item: id ``iuxray-<id>``, ``image`` = the first view, ``images`` =
all views in order, ``report`` the text. The split is the list the item sits in (``validate``/``valid`` -> val); an
item's own ``split`` key, when it disagrees, only gives a warning. A view missing on disk is dropped from the record
(a ``view dropped`` warning); an item none of whose views exists is skipped (``image missing``). Both are listed in
``prepare_report.json``; ``--no-check-images`` skips the disk check. The raw OpenI XML reports (``NLMCXR_reports``)
are not read.

:func:`convert_r2gen` also serves ``mimiccxr_reports`` (the same file shape).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from pfmvg_plugin.data.converters.common import (
    RowError,
    invalid_record,
    is_plain_name,
    read_json,
    report_record,
    safe_relpath,
    text_value,
)
from pfmvg_plugin.data.converters.registry import Conversion, ConversionError, ConverterSpec, register_converter
from pfmvg_plugin.data.images import UnsafePathError, safe_join
from pfmvg_plugin.data.schema import normalize_split
from pfmvg_plugin.data.skips import SkipLog
from pfmvg_plugin.progress import progress

SOURCE = "iuxray"
META_KEYS = ("study_id", "subject_id")


def convert_r2gen(
    annotations: Path,
    images: Path,
    *,
    source: str,
    prefix: str = "",
    check_images: bool = True,
    skips: SkipLog,
) -> Conversion:
    """Convert an R2Gen-style ``annotation.json`` into report records of ``source`` (one per item).

    ``prefix`` is put before every ``image_path`` entry (MIMIC-CXR's ``files/``). Bad items go to ``skips`` with
    ``line: null`` and ``item: "train[12]"``; with ``check_images`` missing views are dropped and an item with no
    view on disk is skipped. An unreadable file raises :class:`ConversionError`.
    """
    annotations, images = Path(annotations), Path(images)
    if not images.is_dir():
        raise ConversionError(f"image folder {images} does not exist or is not a directory")
    data = read_json(annotations, 'an R2Gen annotation.json ({"train": [...], "val": [...], "test": [...]})')
    if not isinstance(data, dict) or not data:
        raise ConversionError(f"{annotations} is not an R2Gen annotation file: expected an object of split lists "
                              '{"train": [...], "val": [...], "test": [...]}')
    splits: dict[str, str] = {}
    for key, items in data.items():
        try:
            splits[key] = normalize_split(key)
        except ValueError:
            raise ConversionError(f"{annotations}: unknown split key {key!r}; expected train, val, test") from None
        if not isinstance(items, list):
            raise ConversionError(f"{annotations}: {key!r} is {type(items).__name__}, not a list of reports")
    records: list[dict] = []
    seen: dict[str, str] = {}
    for key, items in data.items():
        for i, item in enumerate(progress(items, desc=f"{source} {key}", unit="report")):
            where = f"{key}[{i}]"
            try:
                rec = _record(item, source, splits[key], prefix)
                if rec["id"] in seen:
                    raise RowError(f"duplicate id: {rec['meta']['id']} (first at {seen[rec['id']]})")
                targets = [safe_join(images, view) for view in rec["images"]]
            except UnsafePathError as e:
                skips.skip(annotations, None, f"unsafe image path: {e}", item=where)
                continue
            except RowError as e:
                skips.skip(annotations, None, str(e), item=where)
                continue
            reason = invalid_record(rec)
            if reason:
                skips.skip(annotations, None, reason, item=where)
                continue
            own = item.get("split")
            if isinstance(own, str) and own.strip() and own.strip().lower() not in (key.lower(), splits[key]):
                skips.warn(annotations, None, f"split mismatch: item says {own!r}, it sits in {key!r} (kept in "
                                              f"{splits[key]})", item=where)
            if check_images:
                present = [view for view, target in zip(rec["images"], targets, strict=True) if target.is_file()]
                if not present:
                    skips.image_missing(annotations, None, rec["images"], images, item=where)
                    continue
                for view in rec["images"]:
                    if view in present:
                        skips.image_found(view)
                    else:
                        skips.view_dropped(annotations, None, view, len(present), images, item=where)
                if len(present) < len(rec["images"]):
                    rec["meta"]["missing_views"] = [v for v in rec["images"] if v not in present]
                    rec["image"], rec["images"] = present[0], present
            seen[rec["id"]] = where
            records.append(rec)
    return Conversion(
        records=records,
        image_root=images,
        inputs={"annotations": str(annotations), "images": str(images), "check_images": check_images},
        extra={"split_policy": "official (the annotation file's train/val/test lists)"},
    )


def _record(item: Any, source: str, split: str, prefix: str) -> dict:
    if not isinstance(item, dict):
        raise RowError(f"unreadable item: {type(item).__name__}, not an object")
    rid = text_value(item, "id")
    if not is_plain_name(rid):
        raise RowError(f"unreadable id: {rid!r}")
    report = text_value(item, "report")
    views = item.get("image_path")
    if isinstance(views, str):
        views = [views]
    if not isinstance(views, list) or not views:
        raise RowError("missing value: image_path")
    paths = [prefix + safe_relpath(v) for v in views]
    meta = {"id": rid, **{k: item[k] for k in META_KEYS if item.get(k) not in (None, "")}}
    return report_record(record_id=f"{source}-{rid}", source=source, split=split, images=paths, report=report,
                         meta=meta)


def add_r2gen_arguments(parser: argparse.ArgumentParser, images_help: str) -> None:
    parser.add_argument("--annotations", type=Path, required=True, metavar="JSON",
                        help='R2Gen annotation.json ({"train": [...], "val": [...], "test": [...]})')
    parser.add_argument("--images", type=Path, required=True, metavar="DIR", help=images_help)
    parser.add_argument("--no-check-images", dest="check_images", action="store_false",
                        help="do not look for the image files on disk (no view is dropped, no item skipped for a "
                             "missing image)")


register_converter(ConverterSpec(
    name=SOURCE,
    help="IU-Xray (OpenI) radiology reports, R2Gen annotation.json + images: one report record per study",
    add_arguments=lambda p: add_r2gen_arguments(p, "iu_xray/images (holding CXR*_IM-*/0.png ...)"),
    run=lambda args, skips: convert_r2gen(args.annotations, args.images, source=SOURCE,
                                          check_images=args.check_images, skips=skips),
    checks_images=True,
))
