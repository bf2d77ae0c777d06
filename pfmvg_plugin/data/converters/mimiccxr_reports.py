"""MIMIC-CXR reports (R2Gen release) -> canonical report records (``pfmvg data prepare mimiccxr_reports``).

Input: R2Gen's ``mimic_cxr/annotation.json`` (same shape as IU-Xray's: ``{"train": [...], "val": [...], "test":
[...]}`` with items ``{id, study_id, subject_id, report, image_path: [...], split}``) and the MIMIC-CXR-JPG root
(``--images``). ``image_path`` entries (``p10/p10000032/s50414267/<dicom_id>.jpg``) are relative to ``files/``: when
``--images`` holds ``files/``, records address ``files/p10/...``; when ``--images`` is ``files/`` itself, ``p10/...``.
Records: id ``mimiccxr_reports-<id>``, ``image`` the first view, ``images`` all, ``meta`` with study/subject ids.
Split: the annotation file's lists. See :mod:`pfmvg_plugin.data.converters.iuxray` for the rules on bad items and
missing views (dropped; an item with none on disk is skipped).
"""

from __future__ import annotations

from pathlib import Path

from pfmvg_plugin.data.converters.iuxray import add_r2gen_arguments, convert_r2gen
from pfmvg_plugin.data.converters.registry import Conversion, ConverterSpec, register_converter
from pfmvg_plugin.data.skips import SkipLog

SOURCE = "mimiccxr_reports"


def convert_mimiccxr_reports(annotations: Path, images: Path, *, check_images: bool = True,
                             skips: SkipLog) -> Conversion:
    """Convert R2Gen's MIMIC-CXR annotation.json into report records under the MIMIC-CXR-JPG root ``images``."""
    prefix = "files/" if (Path(images) / "files").is_dir() else ""
    conversion = convert_r2gen(annotations, images, source=SOURCE, prefix=prefix, check_images=check_images,
                               skips=skips)
    conversion.extra["image_prefix"] = prefix
    return conversion


register_converter(ConverterSpec(
    name=SOURCE,
    help="MIMIC-CXR reports, R2Gen annotation.json + MIMIC-CXR-JPG root: one report record per item",
    add_arguments=lambda p: add_r2gen_arguments(p, "MIMIC-CXR-JPG root (holding files/p10/...), or files/ itself"),
    run=lambda args, skips: convert_mimiccxr_reports(args.annotations, args.images, check_images=args.check_images,
                                                     skips=skips),
    checks_images=True,
))
