"""Converters on real release files, not just files written to look like them.

``fixtures/real/BBox_List_2017.csv.gz`` is the NIH ChestX-ray8 box list exactly as released (a US-government
work; this copy comes from the torchxrayvision 1.5.7 wheel's ``data/`` folder).
"""

from __future__ import annotations

import gzip
import json
from collections import Counter
from pathlib import Path

from pfmvg_plugin.cli.main import main as pfmvg
from pfmvg_plugin.data.store import PreparedDataset

REAL = Path(__file__).parent / "fixtures" / "real"


def test_nih_bbox_list_as_released(tmp_path):
    csv_path = tmp_path / "BBox_List_2017.csv"
    csv_path.write_bytes(gzip.decompress((REAL / "BBox_List_2017.csv.gz").read_bytes()))
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
