"""SLAKE release -> canonical VQA records (``pfmvg data prepare slake``) and grounding records (``slake_grounding``).

Input: the ``Slake1.0`` folder as released: ``train.json``, ``validate.json``, ``test.json`` (lists of questions with
``img_id, img_name, question, answer, q_lang, location, modality, answer_type, base_type, content_type, qid``) and
``imgs/xmlabN/{source.jpg, mask.png, detection.json}``. ``img_name`` (``xmlab0/source.jpg``) is relative to ``imgs/``,
which is the dataset's image root. A missing split file is a warning; all three missing is an error.

``slake``: one VQA record per question (id ``slake-<qid>``), split from the file (``validate`` -> val). SLAKE is
bilingual: ``--lang en`` (default) keeps English questions, ``zh`` Chinese, ``all`` both; questions of the other
language are counted in ``dataset.json`` (``n_other_language``), not reported as skipped. ``answer_type`` is
OPEN/CLOSED in the release (lower-cased here); a question whose image is missing is skipped (``image missing``).

``slake_grounding``: one grounding record per (image, label) from ``imgs/xmlabN/detection.json`` (a list of
``{label: [x, y, w, h]}`` in pixels of ``source.jpg``); all boxes of a label form one record, phrase = category =
label. The image's split is the split of its questions in the JSON files; an image no JSON file names is hashed with
``--split-ratios`` (by folder name) and reported as a warning. The boxes of a missing ``source.jpg`` are skipped.
"""

from __future__ import annotations

import argparse
import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pfmvg_plugin.data.converters.common import (
    ImageSizes,
    RowError,
    fit_box,
    invalid_record,
    is_plain_name,
    parse_answer_type,
    parse_box_size,
    parse_number,
    read_json,
    safe_relpath,
    text_value,
    vqa_record,
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
from pfmvg_plugin.progress import progress

SOURCE = "slake"
SPLIT_FILES = (("train", "train.json"), ("val", "validate.json"), ("test", "test.json"))
LANGS = ("en", "zh", "all")
IMAGE_DIR = "imgs"
SOURCE_IMAGE = "source.jpg"
DETECTION = "detection.json"
META_KEYS = ("img_id", "location", "modality", "content_type", "base_type")


def _check_root(root: Path) -> list[tuple[str, Path]]:
    if not root.is_dir():
        raise ConversionError(f"SLAKE folder {root} does not exist or is not a directory "
                              "(expected Slake1.0 holding train.json, validate.json, test.json and imgs/)")
    present = [(split, root / name) for split, name in SPLIT_FILES if (root / name).exists()]
    if not present:
        raise ConversionError(f"{root} holds none of {', '.join(n for _, n in SPLIT_FILES)}; "
                              "--root should be the Slake1.0 folder")
    return present


def _read_split_file(path: Path) -> list:
    data = read_json(path, "a SLAKE split file (a list of questions)")
    if not isinstance(data, list):
        raise ConversionError(f"{path} is not a SLAKE split file: expected a JSON list of questions, "
                              f"got {type(data).__name__}")
    return data


def _missing_split_files(root: Path, skips: SkipLog) -> None:
    for _, name in SPLIT_FILES:
        if not (root / name).exists():
            skips.warn(root / name, None, f"split file missing: {name} (its split will be empty)")


def convert_slake(root: Path, *, lang: str = "en", skips: SkipLog) -> Conversion:
    """Convert SLAKE's split files into VQA records of language ``lang`` (``en``, ``zh`` or ``all``).

    Bad items and questions whose image is missing under ``imgs/`` go to ``skips`` (``item: "[i]"``).
    """
    root = Path(root)
    if lang not in LANGS:
        raise ValueError(f"lang must be one of {', '.join(LANGS)}, got {lang!r}")
    present = _check_root(root)
    _missing_split_files(root, skips)
    images = root / IMAGE_DIR
    sizes = ImageSizes(images)
    records: list[dict] = []
    seen: dict[str, str] = {}
    other_lang: dict[str, int] = {}
    for split, path in present:
        for i, item in enumerate(progress(_read_split_file(path), desc=f"slake {path.name}", unit="question")):
            where = f"[{i}]"
            try:
                q_lang = _lang(item)
                if lang != "all" and q_lang != lang:
                    other_lang[q_lang] = other_lang.get(q_lang, 0) + 1
                    continue
                rec = _vqa(item, split, q_lang)
                if rec["id"] in seen:
                    raise RowError(f"duplicate qid: {rec['meta']['qid']} (first at {seen[rec['id']]})")
                size = sizes.size(rec["image"])
            except RowError as e:
                skips.skip(path, None, str(e), item=where)
                continue
            if size is None:
                skips.image_missing(path, None, rec["image"], images, item=where)
                continue
            skips.image_found(rec["image"])
            rec = vqa_record(**{k: rec[k] for k in ("source", "split", "image", "question", "answer",
                                                    "answer_type", "meta")}, record_id=rec["id"], size=size)
            reason = invalid_record(rec)
            if reason:
                skips.skip(path, None, reason, item=where)
                continue
            seen[rec["id"]] = f"{path.name}{where}"
            records.append(rec)
    return Conversion(
        records=records,
        image_root=images,
        inputs={"root": str(root), "files": [str(p) for _, p in present], "lang": lang},
        extra={"split_policy": "official (train.json, validate.json -> val, test.json)", "lang": lang,
               "n_other_language": other_lang},
    )


def _lang(item: Any) -> str:
    if not isinstance(item, dict):
        raise RowError(f"unreadable item: {type(item).__name__}, not an object")
    q_lang = item.get("q_lang")
    if not isinstance(q_lang, str) or not q_lang.strip():
        raise RowError("missing value: q_lang")
    return q_lang.strip().lower()


def _vqa(item: dict, split: str, q_lang: str) -> dict:
    qid = text_value(item, "qid")
    if not is_plain_name(qid):
        raise RowError(f"unreadable qid: {qid!r}")
    question, answer = text_value(item, "question"), text_value(item, "answer")
    answer_type = parse_answer_type(item.get("answer_type"))
    image = safe_relpath(item.get("img_name"))
    meta = {"qid": qid, "q_lang": q_lang, **{k: item[k] for k in META_KEYS if item.get(k) not in (None, "")}}
    return vqa_record(record_id=f"{SOURCE}-{qid}", source=SOURCE, split=split, image=image, question=question,
                      answer=answer, answer_type=answer_type, size=None, meta=meta)


# --- slake_grounding ------------------------------------------------------------------------------------------------

def grounding_id(folder: str, label: str) -> str:
    """Stable id of one (image, label) pair of SLAKE's detection.json."""
    return f"{SOURCE}-det-{folder}-{hashlib.sha1(label.encode()).hexdigest()[:10]}"


def _image_splits(root: Path, present: list[tuple[str, Path]], skips: SkipLog) -> dict[str, str]:
    """Image folder (``xmlab0``) -> split, from the questions of every language in the split files."""
    splits: dict[str, str] = {}
    for split, path in present:
        for item in _read_split_file(path):
            if not isinstance(item, dict) or not isinstance(item.get("img_name"), str):
                continue  # reported by `slake`; here only the image -> split map matters
            folder = item["img_name"].strip().replace("\\", "/").split("/")[0]
            if splits.setdefault(folder, split) != split:
                skips.warn(path, None, f"image in two splits: {folder} is {splits[folder]} and {split}; "
                                       f"keeping {splits[folder]}")
    return splits


def convert_slake_grounding(root: Path, *, split_ratios: Sequence[float] | str = (0.7, 0.1, 0.2), seed: int = 0,
                            skips: SkipLog) -> Conversion:
    """One grounding record per (image, label) of every ``imgs/<folder>/detection.json``."""
    root = Path(root)
    present = _check_root(root)
    ratios = as_ratios(split_ratios)
    images = root / IMAGE_DIR
    if not images.is_dir():
        raise ConversionError(f"{images} does not exist; SLAKE's detection.json files live in imgs/xmlabN/")
    image_split = _image_splits(root, present, skips)
    folders = sorted(p.name for p in images.iterdir() if (p / DETECTION).is_file())
    if not folders:
        raise ConversionError(f"no {IMAGE_DIR}/*/{DETECTION} under {root}")
    sizes = ImageSizes(images)
    records: list[dict] = []
    n_hashed = 0
    for folder in progress(folders, desc="slake detection", unit="image"):
        path = images / folder / DETECTION
        data = read_json(path, "a SLAKE detection.json (a list of {label: [x, y, w, h]})")
        if not isinstance(data, list):
            raise ConversionError(f"{path} is not a SLAKE detection.json: expected a list of {{label: [x, y, w, h]}}"
                                  f", got {type(data).__name__}")
        if not data:
            continue
        rel = f"{folder}/{SOURCE_IMAGE}"
        try:
            size = sizes.size(rel) if is_plain_name(folder) else None
        except RowError as e:
            for i in range(len(data)):
                skips.skip(path, None, str(e), item=f"[{i}]")
            continue
        if size is None:
            for i in range(len(data)):
                skips.image_missing(path, None, rel, images, item=f"[{i}]")
            continue
        skips.image_found(rel)
        split = image_split.get(folder)
        if split is None:
            split = assign_split(folder, ratios, seed)
            n_hashed += 1
            skips.warn(path, None, f"image in no split file: {folder}; split {split} by hash")
        groups: dict[str, list[tuple[list[float], str]]] = {}
        for i, entry in enumerate(data):
            try:
                for label, box, clipped in _detections(entry, size):
                    groups.setdefault(label, []).append((box, f"[{i}]"))
                    if clipped:
                        skips.warn(path, None, clipped, item=f"[{i}]")
            except RowError as e:
                skips.skip(path, None, str(e), item=f"[{i}]")
        for label, members in groups.items():
            rec = grounding_record(record_id=grounding_id(folder, label), source=SOURCE, split=split, image=rel,
                                   width=size[0], height=size[1], phrase=label, boxes=[b for b, _ in members],
                                   category=label, meta={"folder": folder, "items": [w for _, w in members]})
            reason = invalid_record(rec)
            if reason:
                for _, where in members:
                    skips.skip(path, None, reason, item=where)
                continue
            records.append(rec)
    return Conversion(
        records=records,
        image_root=images,
        inputs={"root": str(root), "files": [str(p) for _, p in present], "n_detection_files": len(folders)},
        extra={"split_policy": "split of the image's questions in train/validate/test.json; others by hash "
                               f"of the folder name {ratios_text(ratios, '/')} (seed {seed})",
               "n_hashed_images": n_hashed},
    )


def _detections(entry: Any, size: tuple[int, int]) -> list[tuple[str, list[float], str | None]]:
    """The ``(label, [x1, y1, x2, y2])`` boxes of one detection.json entry ``{label: [x, y, w, h]}``."""
    if not isinstance(entry, dict) or not entry:
        raise RowError(f"unreadable detection: {entry!r} is not {{label: [x, y, w, h]}}")
    out = []
    for label, xywh in entry.items():
        label = str(label).strip()
        if not label:
            raise RowError("missing value: label")
        if not isinstance(xywh, list) or len(xywh) != 4:
            raise RowError(f"unreadable bbox: {label}: {xywh!r} is not [x, y, w, h]")
        x, y = parse_number(xywh[0], "x"), parse_number(xywh[1], "y")
        w, h = parse_box_size(xywh[2], xywh[3])
        box, clipped = fit_box((x, y, w, h), *size)
        out.append((label, box, clipped))
    return out


# --- CLI ------------------------------------------------------------------------------------------------------------

def _add_root(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--root", type=Path, required=True, metavar="DIR",
                        help="the Slake1.0 folder (train.json, validate.json, test.json, imgs/xmlabN/)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    _add_root(parser)
    parser.add_argument("--lang", choices=LANGS, default="en",
                        help="question language to keep: en (default), zh or all")


def add_grounding_arguments(parser: argparse.ArgumentParser) -> None:
    _add_root(parser)
    add_split_arguments(parser, "image folder")


register_converter(ConverterSpec(
    name=SOURCE,
    help="SLAKE bilingual medical VQA (Slake1.0: train/validate/test.json + imgs/); English by default",
    add_arguments=add_arguments,
    run=lambda args, skips: convert_slake(args.root, lang=args.lang, skips=skips),
    checks_images=True,
))

register_converter(ConverterSpec(
    name="slake_grounding",
    help="SLAKE organ/lesion boxes (imgs/xmlabN/detection.json): one grounding record per image and label",
    add_arguments=add_grounding_arguments,
    run=lambda args, skips: convert_slake_grounding(args.root, split_ratios=parse_ratios(args.split_ratios),
                                                    seed=args.seed, skips=skips),
    checks_images=True,
))
