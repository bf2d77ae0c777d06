"""VQA-RAD release -> canonical VQA records (``pfmvg data prepare vqarad``).

Input: the public JSON release (``VQA_RAD Dataset Public.json``; also the ``trainset.json``/``testset.json`` files
derived from it), a list of objects with at least ``qid, image_name, question, answer, answer_type`` (``OPEN`` /
``CLOSED``); ``question_type``, ``phrase_type``, ``image_organ`` and any other key are kept in ``meta`` or ignored.
Several files may be given (``--annotations a.json b.json``); a ``qid`` seen twice is skipped the second time.

Images: ``image_name`` (``synpic12345.jpg``) relative to ``--images`` (``VQA_RAD Image Folder``). The size is read from
the image header; a question whose image is missing is skipped (``image missing``, listed in ``prepare_report.json``).

Split: the release's ``phrase_type`` marks the official test questions (``test_freeform``, ``test_para``); every
other question is train (an item without ``phrase_type`` is train). There is no official val: with
``--split-ratios TRAIN,VAL,TEST`` a val set is carved out of train by a hash of ``image_name`` with the TRAIN:VAL
ratio (all questions of an image stay together; TEST is ignored, the official test set is kept as released).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pfmvg_plugin.data.converters.common import (
    ImageSizes,
    RowError,
    carve_val,
    invalid_record,
    is_plain_name,
    parse_answer_type,
    read_json,
    safe_relpath,
    text_value,
    vqa_record,
)
from pfmvg_plugin.data.converters.registry import Conversion, ConversionError, ConverterSpec, register_converter
from pfmvg_plugin.data.skips import SkipLog
from pfmvg_plugin.data.splits import as_ratios, parse_ratios, ratios_text
from pfmvg_plugin.progress import progress

SOURCE = "vqarad"
TEST_PHRASE_TYPES = ("test_freeform", "test_para")
META_KEYS = ("question_type", "phrase_type", "image_organ", "qid_linked_id", "evaluation")


def convert_vqarad(
    annotations: Path | Sequence[Path],
    images: Path,
    *,
    split_ratios: Sequence[float] | str | None = None,
    seed: int = 0,
    skips: SkipLog,
) -> Conversion:
    """Convert VQA-RAD JSON file(s) into one VQA record per question (id ``vqarad-<qid>``).

    ``split_ratios`` (TRAIN,VAL,TEST) carves val out of the official train set by image; None keeps train/test only.
    Bad items and items whose image is missing go to ``skips`` (``line: null``, ``item: "[i]"``); an unreadable file
    raises :class:`ConversionError`.
    """
    files = [Path(annotations)] if isinstance(annotations, (str, Path)) else [Path(a) for a in annotations]
    images = Path(images)
    if not images.is_dir():
        raise ConversionError(f"image folder {images} does not exist or is not a directory "
                              "(expected the 'VQA_RAD Image Folder')")
    ratios = as_ratios(split_ratios) if split_ratios is not None else None
    sizes = ImageSizes(images)
    records: list[dict] = []
    seen: dict[str, str] = {}
    for path in files:
        data = read_json(path, "the VQA-RAD JSON release (a list of questions)")
        if not isinstance(data, list):
            raise ConversionError(f"{path} is not a VQA-RAD release: expected a JSON list of questions, "
                                  f"got {type(data).__name__}")
        if data and not any(isinstance(it, dict) and "phrase_type" in it for it in data):
            skips.warn(path, None, "no phrase_type: the file has no phrase_type key, so every question is train")
        for i, item in enumerate(progress(data, desc=f"vqarad {path.name}", unit="question")):
            where = f"[{i}]"
            try:
                rec = _record(item, ratios, seed)
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
            rec = vqa_record(record_id=rec["id"], source=SOURCE, split=rec["split"], image=rec["image"],
                             question=rec["question"], answer=rec["answer"], answer_type=rec["answer_type"],
                             size=size, meta=rec["meta"])
            reason = invalid_record(rec)
            if reason:
                skips.skip(path, None, reason, item=where)
                continue
            seen[rec["id"]] = f"{path.name}{where}"
            records.append(rec)
    policy = "official (phrase_type test_* = test, else train)"
    if ratios is not None:
        policy += (f"; val carved from train by hash of image_name, train:val {ratios_text(ratios[:2], ':')} "
                   f"(seed {seed})")
    return Conversion(
        records=records,
        image_root=images,
        inputs={"annotations": [str(p) for p in files], "images": str(images),
                "split_ratios": list(ratios) if ratios else None, "seed": seed},
        extra={"split_policy": policy},
    )


def _record(item: Any, ratios: Sequence[float] | None, seed: int) -> dict:
    if not isinstance(item, dict):
        raise RowError(f"unreadable item: {type(item).__name__}, not an object")
    qid = text_value(item, "qid")
    if not is_plain_name(qid):
        raise RowError(f"unreadable qid: {qid!r}")
    question, answer = text_value(item, "question"), text_value(item, "answer")
    answer_type = parse_answer_type(item.get("answer_type"))
    image = safe_relpath(item.get("image_name"))
    phrase_type = item.get("phrase_type")
    if isinstance(phrase_type, str) and phrase_type.strip().lower() in TEST_PHRASE_TYPES:
        split = "test"
    else:
        split = carve_val(image, ratios, seed) if ratios is not None else "train"
    meta = {"qid": qid, **{k: item[k] for k in META_KEYS if item.get(k) not in (None, "")}}
    return vqa_record(record_id=f"{SOURCE}-{qid}", source=SOURCE, split=split, image=image, question=question,
                      answer=answer, answer_type=answer_type, size=None, meta=meta)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--annotations", type=Path, nargs="+", required=True, metavar="JSON",
                        help="'VQA_RAD Dataset Public.json' (or trainset.json/testset.json)")
    parser.add_argument("--images", type=Path, required=True, metavar="DIR",
                        help="the 'VQA_RAD Image Folder' holding synpic*.jpg")
    parser.add_argument("--split-ratios", default=None, metavar="TRAIN,VAL,TEST",
                        help="carve a val set out of the official train set by image with the TRAIN:VAL ratio "
                             "(TEST is ignored: the official test set is kept); default: no val")
    parser.add_argument("--seed", type=int, default=0, help="seed of the val hash (default 0)")


def _run(args: argparse.Namespace, skips: SkipLog) -> Conversion:
    ratios = parse_ratios(args.split_ratios) if args.split_ratios is not None else None
    return convert_vqarad(args.annotations, args.images, split_ratios=ratios, seed=args.seed, skips=skips)


register_converter(ConverterSpec(
    name=SOURCE,
    help="VQA-RAD radiology VQA (the public JSON release + image folder); official train/test by phrase_type",
    add_arguments=add_arguments,
    run=_run,
    checks_images=True,
))
