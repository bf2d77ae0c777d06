"""Report converters (IU-Xray and MIMIC-CXR, R2Gen annotation.json) on small files in the real layout."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers_data import write_images

from pfmvg_plugin.cli.main import main
from pfmvg_plugin.data.converters.iuxray import convert_r2gen
from pfmvg_plugin.data.converters.mimiccxr_reports import convert_mimiccxr_reports
from pfmvg_plugin.data.schema import read_records, validate_record
from pfmvg_plugin.data.skips import SkipLog

REPORT = "The heart size and pulmonary vascularity appear within normal limits. No pneumothorax."


def _iu(rid, views, report=REPORT, split="train"):
    return {"id": rid, "report": report, "image_path": views, "split": split}


@pytest.fixture
def iuxray(tmp_path):
    root = tmp_path / "iu_xray"
    images = write_images(root / "images", {"CXR2384_IM-0942/0.png": (32, 32), "CXR2384_IM-0942/1.png": (32, 24),
                                            "CXR1000_IM-0003/0.png": (16, 16), "CXR3_IM-1384/0.png": (16, 16),
                                            "CXR8_IM-0001/1.png": (16, 16)})
    ann = root / "annotation.json"
    ann.write_text(json.dumps({
        "train": [
            _iu("CXR2384_IM-0942", ["CXR2384_IM-0942/0.png", "CXR2384_IM-0942/1.png"]),   # train[0]
            _iu("CXR2_IM-0652", ["CXR2_IM-0652/0.png", "CXR2_IM-0652/1.png"]),             # train[1] no view on disk
            _iu("CXR4_IM-2050", ["CXR4_IM-2050/0.png"], report="  "),                      # train[2] empty report
            _iu("CXR5_IM-2117", ["../../secret/0.png"]),                                   # train[3] unsafe
            _iu("CXR6_IM-2192", []),                                                       # train[4] no views
            {"report": REPORT, "image_path": ["CXR7/0.png"]},                              # train[5] no id
            _iu("CXR8_IM-0001", ["CXR8_IM-0001/0.png", "CXR8_IM-0001/1.png"]),             # train[6] view 0 missing
        ],
        "val": [_iu("CXR1000_IM-0003", ["CXR1000_IM-0003/0.png"], split="train")],         # val[0] split mismatch
        "test": [_iu("CXR3_IM-1384", ["CXR3_IM-1384/0.png"], split="test"),
                 _iu("CXR2384_IM-0942", ["CXR2384_IM-0942/0.png"], split="test")],         # test[1] duplicate id
    }))
    return ann, images


def test_iuxray_records_and_skips(iuxray):
    ann, images = iuxray
    skips = SkipLog()
    conv = convert_r2gen(ann, images, source="iuxray", skips=skips)
    recs = {r["id"]: r for r in conv.records}
    assert set(recs) == {"iuxray-CXR2384_IM-0942", "iuxray-CXR8_IM-0001", "iuxray-CXR1000_IM-0003",
                         "iuxray-CXR3_IM-1384"}
    assert all(validate_record(r) == [] for r in conv.records)
    r = recs["iuxray-CXR2384_IM-0942"]
    assert (r["task"], r["source"], r["split"], r["report"]) == ("report", "iuxray", "train", REPORT)
    assert r["image"] == "CXR2384_IM-0942/0.png" and r["images"] == ["CXR2384_IM-0942/0.png", "CXR2384_IM-0942/1.png"]
    assert recs["iuxray-CXR1000_IM-0003"]["split"] == "val" and recs["iuxray-CXR3_IM-1384"]["split"] == "test"
    got = {s["item"]: s["reason"] for s in skips.skipped}
    assert all(s["file"] == str(ann) and s["line"] is None for s in skips.skipped)
    assert set(got) == {"train[1]", "train[2]", "train[3]", "train[4]", "train[5]", "test[1]"}
    assert got["train[1]"] == (f"image missing: none of its 2 views was found under {images}: "
                               "CXR2_IM-0652/0.png, CXR2_IM-0652/1.png")
    assert got["train[2]"] == "missing value: report" and got["train[3]"].startswith("unsafe image path")
    assert got["train[4]"] == "missing value: image_path" and got["train[5]"] == "missing value: id"
    assert got["test[1]"] == "duplicate id: CXR2384_IM-0942 (first at train[0])"
    # a record keeps the views it has; the missing one is dropped with a warning
    partial = recs["iuxray-CXR8_IM-0001"]
    assert partial["image"] == "CXR8_IM-0001/1.png" and partial["images"] == ["CXR8_IM-0001/1.png"]
    assert partial["meta"]["missing_views"] == ["CXR8_IM-0001/0.png"]
    warns = [(w["item"], w["message"].split(":")[0]) for w in skips.warnings]
    assert warns == [("train[6]", "view dropped"), ("val[0]", "split mismatch")]
    assert skips.warnings[0]["image"] == "CXR8_IM-0001/0.png"
    assert (skips.n_images_checked, skips.n_images_missing) == (8, 3)


def test_iuxray_cli_and_bad_files(iuxray, tmp_path, capsys):
    ann, images = iuxray
    out = tmp_path / "out"
    args = ["data", "prepare", "iuxray", "--annotations", str(ann), "--images", str(images), "--out", str(out)]
    assert main(args) == 1  # 3 of 8 views missing
    assert "3 of 8 images (37.5%) are missing" in capsys.readouterr().err
    assert main([*args, "--allow-missing-images"]) == 0, capsys.readouterr().err
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["task"] == "report" and meta["splits"] == {"train": 2, "val": 1, "test": 1}
    assert read_records(out / "train.jsonl")[0]["images"][1] == "CXR2384_IM-0942/1.png"
    assert json.loads((out / "prepare_report.json").read_text())["n_skipped"] == 6
    for text, message in (("[1, 2]", "not an R2Gen annotation file"), ('{"training2": []}', "unknown split key"),
                          ('{"train": {}}', "not a list"), ("{", "not valid JSON")):
        bad = tmp_path / "bad.json"
        bad.write_text(text)
        assert main(["data", "prepare", "iuxray", "--annotations", str(bad), "--images", str(images),
                     "--out", str(out)]) == 1
        assert message in capsys.readouterr().err


def test_mimiccxr_reports_prefix_and_no_check(tmp_path):
    rel = "p10/p10000032/s50414267/02aa804e-bde0afdd-112c0b34-7bc16630-4e384014.jpg"
    root = write_images(tmp_path / "mimic-cxr-jpg", {f"files/{rel}": (24, 24)})
    ann = tmp_path / "annotation.json"
    ann.write_text(json.dumps({"train": [{"id": "02aa804e-bde0afdd-112c0b34-7bc16630-4e384014",
                                          "study_id": 50414267, "subject_id": 10000032, "report": REPORT,
                                          "image_path": [rel], "split": "train"}],
                               "val": [], "test": []}))
    skips = SkipLog()
    conv = convert_mimiccxr_reports(ann, root, skips=skips)
    (rec,) = conv.records
    assert rec["image"] == f"files/{rel}" and rec["source"] == "mimiccxr_reports"
    assert rec["meta"] == {"id": "02aa804e-bde0afdd-112c0b34-7bc16630-4e384014", "study_id": 50414267,
                           "subject_id": 10000032}
    assert (root / rec["image"]).is_file() and skips.warnings == []
    inner = convert_mimiccxr_reports(ann, root / "files", skips=SkipLog())
    assert inner.records[0]["image"] == rel
    elsewhere = SkipLog()
    (tmp_path / "empty").mkdir()
    assert len(convert_mimiccxr_reports(ann, tmp_path / "empty", check_images=False, skips=elsewhere).records) == 1
    assert elsewhere.warnings == [] and elsewhere.skipped == []
    assert convert_mimiccxr_reports(ann, tmp_path / "empty", skips=elsewhere).records == []
    (skip,) = elsewhere.skipped
    assert skip["reason"] == f"image missing: {rel} not found under {tmp_path / 'empty'}"
    assert (Path(skip["file"]), skip["item"], skip["image"]) == (ann, "train[0]", rel)
