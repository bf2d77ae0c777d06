"""Converters on real release files, not just files written to look like them.

``fixtures/real/BBox_List_2017.csv.gz`` is the NIH ChestX-ray8 box list exactly as released (a US-government
work; this copy comes from the torchxrayvision 1.5.7 wheel's ``data/`` folder).
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import random
import time
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

from pfmvg_plugin.cli.main import main as pfmvg
from pfmvg_plugin.data.store import PreparedDataset

REAL = Path(__file__).parent / "fixtures" / "real"


def _nih_csv(tmp_path: Path) -> Path:
    csv_path = tmp_path / "BBox_List_2017.csv"
    csv_path.write_bytes(gzip.decompress((REAL / "BBox_List_2017.csv.gz").read_bytes()))
    return csv_path


def test_nih_bbox_list_as_released(tmp_path):
    csv_path = _nih_csv(tmp_path)
    assert csv_path.read_text().splitlines()[0].startswith("Image Index,Finding Label,Bbox [x,y,w,h]")
    assert pfmvg(["data", "prepare", "chestxray8", "--bbox-csv", str(csv_path), "--out", str(tmp_path / "out")]) == 0
    ds = PreparedDataset(tmp_path / "out")
    records = [r for split in ds.meta["splits"] for r in ds.records(split)]
    report = json.loads((tmp_path / "out" / "prepare_report.json").read_text())
    # the release: 984 boxes on 880 images, 8 findings; each (image, finding) pair has one box
    assert report["n_skipped"] == 0
    assert sum(len(r["boxes"]) for r in records) == 984
    assert len({r["image"] for r in records}) == 880
    categories = Counter(r["category"] for r in records)
    assert set(categories) == {"Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule",
                               "Pneumonia", "Pneumothorax"}
    assert "Infiltrate" not in categories  # the file's spelling, mapped to the label list's
    for r in records:
        x1, y1, x2, y2 = r["boxes"][0]
        assert 0 <= x1 < x2 <= r["width"] and 0 <= y1 < y2 <= r["height"]
    # a patient never spans two splits
    split_of = {}
    for r in records:
        patient = Path(r["image"]).name.split("_")[0]
        assert split_of.setdefault(patient, r["split"]) == r["split"]



# --- a partial ChestX-ray8 download: the release is 12 tarballs, so only some images are there ----------------------

def _nih_rows(csv_path: Path) -> dict[int, str]:
    """CSV line -> image name of every data row of the real file."""
    with csv_path.open(newline="") as f:
        reader = csv.reader(f)
        next(reader)
        rows = {}
        for row in reader:
            if row:
                rows[reader.line_num] = row[0]
        return rows


def _write_nih_pngs(folder: Path, names: list[str]) -> None:
    """1024x1024 PNGs (the real size: boxes are checked against it) of ``names``, as the tarballs unpack them."""
    buf = io.BytesIO()
    Image.new("L", (1024, 1024)).save(buf, "PNG")
    (folder / "images_001" / "images").mkdir(parents=True)
    for name in names:
        (folder / "images_001" / "images" / name).write_bytes(buf.getvalue())


@pytest.fixture
def nih_partial(tmp_path):
    """The real BBox_List_2017.csv with the images of 60 of its 880 files present."""
    csv_path = _nih_csv(tmp_path)
    rows = _nih_rows(csv_path)
    names = sorted(set(rows.values()))
    assert len(names) == 880 and len(rows) == 984
    present = set(random.Random(0).sample(names, 60))
    _write_nih_pngs(tmp_path / "nih", sorted(present))
    return csv_path, tmp_path / "nih", rows, present


def test_nih_partial_download_fails_without_allow_missing_images(nih_partial, tmp_path, capsys):
    csv_path, images, rows, present = nih_partial
    out = tmp_path / "out"
    assert pfmvg(["data", "prepare", "chestxray8", "--bbox-csv", str(csv_path), "--images", str(images),
                  "--out", str(out)]) == 1
    err = capsys.readouterr().err
    absent_rows = {line for line, name in rows.items() if name not in present}
    assert "820 of 880 images (93.2%) are missing" in err
    assert "--allow-missing-images" in err and "--images" in err
    first_absent = rows[min(absent_rows)]
    assert str(images / first_absent) in err  # an example path
    assert f"skipped {len(absent_rows)} rows: image missing {len(absent_rows)}" in err
    assert str(out / "prepare_report.json") in err
    assert not (out / "dataset.json").exists() and not list(out.glob("*.jsonl"))  # nothing usable written
    report = json.loads((out / "prepare_report.json").read_text())
    assert report["error"].startswith("820 of 880 images") and report["written"] == {}
    assert {s["line"] for s in report["skipped"]} == absent_rows


def test_nih_partial_download_with_allow_missing_images(nih_partial, tmp_path, capsys):
    csv_path, images, rows, present = nih_partial
    out = tmp_path / "out"
    assert pfmvg(["data", "prepare", "chestxray8", "--bbox-csv", str(csv_path), "--images", str(images),
                  "--allow-missing-images", "--out", str(out)]) == 0
    err = capsys.readouterr().err
    absent_rows = {line: name for line, name in rows.items() if name not in present}
    present_rows = {line: name for line, name in rows.items() if name in present}
    # the report lists exactly the rows whose image is absent, each with file, row, image path and reason
    report = json.loads((out / "prepare_report.json").read_text())
    assert report["n_skipped"] == len(absent_rows) == 984 - len(present_rows)
    assert report["skipped_by_reason"] == {"image missing": len(absent_rows)}
    assert (report["n_images_checked"], report["n_images_missing"]) == (880, 820)
    assert set(report["missing_images"]) == set(absent_rows.values())
    for entry in report["skipped"]:
        assert entry["file"] == str(csv_path)
        assert entry["image"] == absent_rows[entry["line"]]  # the row's own image, by name
        assert entry["reason"] == f"image missing: {entry['image']} not found under {images} (nor in any folder " \
                                  "below it)"
    assert sorted(s["line"] for s in report["skipped"]) == sorted(absent_rows)
    # the dataset holds only records whose image is there
    ds = PreparedDataset(out)
    records = [r for split in ds.meta["splits"] for r in ds.records(split)]
    assert len(records) == len(present_rows)
    assert {r["meta"]["image_index"] for r in records} == present
    assert sorted(line for r in records for line in r["meta"]["lines"]) == sorted(present_rows)
    assert all(ds.image_path(r).is_file() and (r["width"], r["height"]) == (1024, 1024) for r in records)
    # the human summary on stderr
    written = ds.meta["splits"]
    assert f"chestxray8: wrote {len(records)} records (" in err
    assert ", ".join(f"{s} {written[s]}" for s in ("train", "val", "test") if s in written) in err
    assert f"skipped {len(absent_rows)} rows: image missing {len(absent_rows)}" in err
    assert "images: 880 looked for, 820 missing" in err and str(out / "prepare_report.json") in err


def test_nih_empty_image_folder_is_an_error_even_when_missing_images_are_allowed(tmp_path, capsys):
    csv_path = _nih_csv(tmp_path)
    (tmp_path / "empty").mkdir()
    out = tmp_path / "out"
    for flags in ([], ["--allow-missing-images"], ["--max-missing-images-fraction", "1"]):
        assert pfmvg(["data", "prepare", "chestxray8", "--bbox-csv", str(csv_path), "--images",
                      str(tmp_path / "empty"), "--out", str(out), *flags]) == 1
        err = capsys.readouterr().err
        assert "no chestxray8 record left to write" in err and "880 of 880 images are missing" in err
        assert not (out / "dataset.json").exists()
        assert json.loads((out / "prepare_report.json").read_text())["n_skipped"] == 984


def test_nih_full_release_with_image_check_is_fast(tmp_path, capsys):
    csv_path = _nih_csv(tmp_path)
    _write_nih_pngs(tmp_path / "nih", sorted(set(_nih_rows(csv_path).values())))
    start = time.perf_counter()
    assert pfmvg(["data", "prepare", "chestxray8", "--bbox-csv", str(csv_path), "--images", str(tmp_path / "nih"),
                  "--out", str(tmp_path / "out")]) == 0
    elapsed = time.perf_counter() - start
    assert "skipped no rows" in capsys.readouterr().err
    assert sum(PreparedDataset(tmp_path / "out").meta["splits"].values()) == 984
    assert elapsed < 5.0, f"prepare chestxray8 on the real file took {elapsed:.1f} s"

def _real_chest_cr() -> Path:
    import pytest

    pytest.importorskip("pydicom")
    from pydicom.data import get_testdata_file

    path = get_testdata_file("RG1_UNCR.dcm")  # shipped by the pydicom-data package ([dev] extra)
    if path is None:
        pytest.skip("pydicom-data is not installed")
    return Path(path)


def test_real_monochrome1_chest_radiograph_is_inverted_and_sized_from_the_header():
    import numpy as np
    import pydicom

    from pfmvg_plugin.data.images import image_size, load_image

    path = _real_chest_cr()
    ds = pydicom.dcmread(path)
    assert ds.PhotometricInterpretation == "MONOCHROME1" and ds.Modality == "CR"
    assert image_size(path) == (ds.Columns, ds.Rows)
    pixels = np.asarray(load_image(path, mode="L"), dtype=float)
    raw = ds.pixel_array.astype(float)
    assert pixels.shape == raw.shape
    # MONOCHROME1: a high stored value is dark, so the displayed image is the inverted (windowed) raw one
    assert np.corrcoef(raw.ravel()[::97], pixels.ravel()[::97])[0, 1] < -0.99


def test_rsna_converter_reads_the_size_of_a_real_dicom(tmp_path):
    path = _real_chest_cr()
    images = tmp_path / "stage_2_train_images"
    images.mkdir()
    (images / "RG1_UNCR.dcm").symlink_to(path)  # inside the images root; its target may live anywhere
    labels = tmp_path / "stage_2_train_labels.csv"
    labels.write_text("patientId,x,y,width,height,Target\nRG1_UNCR,300,400,500,600,1\nRG1_UNCR,1000,450,400,550,1\n")
    assert pfmvg(["data", "prepare", "rsna", "--labels", str(labels), "--images", str(tmp_path),
                  "--split-ratios", "0,0,1", "--out", str(tmp_path / "out")]) == 0
    (rec,) = PreparedDataset(tmp_path / "out").records("test")
    assert (rec["width"], rec["height"]) == (1841, 1955)
    assert rec["boxes"] == [[300, 400, 800, 1000], [1000, 450, 1400, 1000]]


def test_nih_bbox_list_all_in_test_split(tmp_path):
    """`--split-ratios 0,0,1` (README: how to score every ChestX-ray8 box) puts the whole release in the test split."""
    csv_path = tmp_path / "BBox_List_2017.csv"
    csv_path.write_bytes(gzip.decompress((REAL / "BBox_List_2017.csv.gz").read_bytes()))
    assert pfmvg(["data", "prepare", "chestxray8", "--bbox-csv", str(csv_path), "--split-ratios", "0,0,1",
                  "--out", str(tmp_path / "out")]) == 0
    ds = PreparedDataset(tmp_path / "out")
    assert set(ds.meta["splits"]) == {"test"}
    assert sum(len(r["boxes"]) for r in ds.records("test")) == 984
