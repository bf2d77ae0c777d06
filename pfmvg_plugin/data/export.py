"""Write canonical grounding records back out in a release layout (MS-CXR CSV), e.g. to run the real converter path
on synthetic data, or to hand a subset to a tool that reads MS-CXR files."""

from __future__ import annotations

import csv
from collections.abc import Iterable
from pathlib import Path

MSCXR_COLUMNS_V110 = (
    "dicom_id", "category_name", "label_text", "path", "x", "y", "w", "h", "image_width", "image_height", "split",
)


def export_mscxr_csv(records: Iterable[dict], path: str | Path, version: str = "1.1.0") -> int:
    """Write grounding records as an MS-CXR ``MS_CXR_Local_Alignment_v<version>.csv`` (one row per box).

    Boxes are rounded to integer pixels as in the release; ``dicom_id`` is the image file's stem; v1.0.0 has no
    ``split`` column. Returns the number of rows written.
    """
    if version not in ("1.0.0", "1.1.0"):
        raise ValueError(f"MS-CXR CSV versions are 1.0.0 and 1.1.0, not {version!r}")
    columns = MSCXR_COLUMNS_V110 if version == "1.1.0" else MSCXR_COLUMNS_V110[:-1]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = 0
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        for rec in records:
            if rec.get("task") != "grounding":
                continue
            for x1, y1, x2, y2 in rec["boxes"]:
                x, y = round(x1), round(y1)
                w, h = max(1, round(x2) - x), max(1, round(y2) - y)
                row = [Path(rec["image"]).stem, rec.get("category") or "", rec["phrase"], rec["image"], x, y, w, h,
                       rec["width"], rec["height"], rec["split"]]
                writer.writerow(row[: len(columns)])
                rows += 1
    return rows
