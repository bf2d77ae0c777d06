"""PathVQA split files -> canonical VQA records (``pfmvg data prepare pathvqa``).

Input: one JSON list (or JSON Lines) file per split, ``--train``/``--val``/``--test`` (at least one), whose items have
``image`` (``train_0422``, with or without extension, or a path relative to ``--images``), ``question`` and ``answer``
(the keys of the released ``{train,val,test}_qa`` files; the pickle and Hugging Face releases are not read: export
them to JSON first). ``answer_type`` is derived: a yes/no answer is ``closed``, any other ``open``.

Images: a bare name is looked up as ``<name>.jpg``/``.jpeg``/``.png`` anywhere under ``--images`` (the release's
``images`` folder holding ``train/``, ``val/``, ``test/``); a question whose image is missing is skipped (``image
missing``, listed in ``prepare_report.json``). Record ids are ``pathvqa-<split>-<index in the file>``.
"""

from __future__ import annotations

import argparse
from pathlib import Path, PurePosixPath
from typing import Any

from pfmvg_plugin.data.converters.common import (
    ImageFinder,
    ImageSizes,
    RowError,
    invalid_record,
    is_plain_name,
    read_json,
    safe_relpath,
    text_value,
    vqa_record,
)
from pfmvg_plugin.data.converters.registry import Conversion, ConversionError, ConverterSpec, register_converter
from pfmvg_plugin.data.skips import SkipLog
from pfmvg_plugin.progress import progress

SOURCE = "pathvqa"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
CLOSED_ANSWERS = ("yes", "no")


def answer_type_of(answer: str) -> str:
    """PathVQA has no answer_type: yes/no answers are ``closed``, every other answer ``open``."""
    return "closed" if answer.strip().lower().rstrip(".") in CLOSED_ANSWERS else "open"


def convert_pathvqa(files: dict[str, Path | None], images: Path, *, skips: SkipLog) -> Conversion:
    """Convert PathVQA split files (``{"train": path, "val": path, "test": path}``, None = absent).

    Bad items and questions whose image is missing under ``images`` go to ``skips`` (``item: "[i]"``).
    """
    images = Path(images)
    given = {split: Path(p) for split, p in files.items() if p is not None}
    if not given:
        raise ConversionError("give at least one of --train, --val, --test (PathVQA split files)")
    if not images.is_dir():
        raise ConversionError(f"image folder {images} does not exist or is not a directory")
    finder = ImageFinder(images, IMAGE_SUFFIXES)
    sizes = ImageSizes(images)
    records: list[dict] = []
    for split, path in given.items():
        data = read_json(path, "a PathVQA split file (a list of {image, question, answer})")
        if not isinstance(data, list):
            raise ConversionError(f"{path} is not a PathVQA split file: expected a list of questions, "
                                  f"got {type(data).__name__}")
        for i, item in enumerate(progress(data, desc=f"pathvqa {path.name}", unit="question")):
            where = f"[{i}]"
            try:
                rec, size, looked_for = _record(item, split, i, finder, sizes)
            except RowError as e:
                skips.skip(path, None, str(e), item=where)
                continue
            if size is None:
                skips.image_missing(path, None, rec["image"], images, looked_for=looked_for, item=where)
                continue
            skips.image_found(rec["image"])
            reason = invalid_record(rec)
            if reason:
                skips.skip(path, None, reason, item=where)
                continue
            records.append(rec)
    return Conversion(
        records=records,
        image_root=images,
        inputs={"files": {s: str(p) for s, p in given.items()}, "images": str(images)},
        extra={"split_policy": "official (one file per split)", "answer_type": "derived: yes/no = closed"},
    )


def _record(item: Any, split: str, index: int, finder: ImageFinder,
            sizes: ImageSizes) -> tuple[dict, tuple[int, int] | None, str]:
    """The record (without a size when its image is missing), the size, and how a bare name was looked for."""
    if not isinstance(item, dict):
        raise RowError(f"unreadable item: {type(item).__name__}, not an object")
    question, answer = text_value(item, "question"), text_value(item, "answer")
    name = text_value(item, "image")
    size, looked_for = None, ""
    if is_plain_name(name) and PurePosixPath(name).suffix.lower() not in IMAGE_SUFFIXES:
        found = finder.find(name)
        if isinstance(found, str):
            raise RowError(found)
        if found is None:
            image = f"{split}/{name}.jpg"
            looked_for = f"nor {name}{'/'.join(IMAGE_SUFFIXES)} in any folder below it"
        else:
            image, size = found[0], (found[1], found[2])
    else:
        image = safe_relpath(name)
        size = sizes.size(image)
    meta = {"index": index, "image_name": name}
    rec = vqa_record(record_id=f"{SOURCE}-{split}-{index}", source=SOURCE, split=split, image=image,
                     question=question, answer=answer, answer_type=answer_type_of(answer), size=size, meta=meta)
    return rec, size, looked_for


def add_arguments(parser: argparse.ArgumentParser) -> None:
    for split in ("train", "val", "test"):
        parser.add_argument(f"--{split}", type=Path, default=None, metavar="JSON",
                            help=f"PathVQA {split} questions: JSON list or JSON Lines of {{image, question, answer}}")
    parser.add_argument("--images", type=Path, required=True, metavar="DIR",
                        help="PathVQA images folder (holding train/, val/, test/ with <image>.jpg)")


register_converter(ConverterSpec(
    name=SOURCE,
    help="PathVQA pathology VQA (one JSON/JSONL file per split + images); yes/no answers are closed",
    add_arguments=add_arguments,
    run=lambda args, skips: convert_pathvqa({"train": args.train, "val": args.val, "test": args.test},
                                            args.images, skips=skips),
    checks_images=True,
))
