"""Fixture writers and checks shared by the converter tests (small real files: CSV, PNG/JPG, DICOM)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
from PIL import Image

from pfmvg_plugin.data.skips import SkipLog

CR_STORAGE = "1.2.840.10008.5.1.4.1.1.1"  # Computed Radiography Image Storage


def write_csv(path: Path, header: str, rows: list[str]) -> Path:
    """A CSV file: ``header`` on line 1, then ``rows`` (already comma-joined) on lines 2, 3, ..."""
    path.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    return path


def write_images(root: Path, sizes: Mapping[str, tuple[int, int]], color: int = 0) -> Path:
    """One grey image per ``relative path -> (width, height)`` under ``root`` (format from the suffix)."""
    for rel, size in sizes.items():
        target = root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        Image.new("L", size, color=color).save(target)
    return root


def write_dicom(path: Path, width: int, height: int, photometric: str = "MONOCHROME2") -> np.ndarray:
    """A small real DICOM (CR, 16 bits allocated, 12 stored) whose raw values rise from left to right."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    arr = np.tile(np.linspace(0, 4095, width).astype(np.uint16), (height, 1))
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CR_STORAGE
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = CR_STORAGE, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.PatientID, ds.BodyPartExamined, ds.ViewPosition = "CR", path.stem, "CHEST", "PA"
    ds.Rows, ds.Columns = height, width
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = arr.tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        ds.save_as(path, enforce_file_format=True)
    except TypeError:  # pydicom < 3
        ds.save_as(path, write_like_original=False)
    return arr


def check_skips(skips: SkipLog, expected: Mapping[int, str], file: Path) -> dict[int, str]:
    """Assert that exactly the ``expected`` lines of ``file`` were skipped, each reason starting as given.

    Returns ``line -> reason`` for further checks.
    """
    got = {s["line"]: s["reason"] for s in skips.skipped}
    assert set(got) == set(expected)
    for line, reason in expected.items():
        assert got[line].startswith(reason), (line, got[line])
    assert all(s["file"] == str(file) for s in skips.skipped)
    return got
