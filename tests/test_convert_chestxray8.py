"""ChestX-ray8 converter: the real BBox_List_2017.csv layout, NIH image folder layouts, messy rows, missing images,
patient split."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers_data import check_skips, write_csv, write_images

from pfmvg_plugin.cli.main import main
from pfmvg_plugin.data.converters.chestxray8 import PHRASES, convert_chestxray8, patient_id
from pfmvg_plugin.data.schema import check_record, read_records
from pfmvg_plugin.data.skips import SkipLog
from pfmvg_plugin.data.splits import assign_split

HEADER = "Image Index,Finding Label,Bbox [x,y,w,h],,,"
ROWS = [  # the header is line 1
    "00013118_008.png,Atelectasis,225.084745762712,547.019216763771,86.7796610169491,79.1864406779661",  # 2
    "00014716_007.png,Atelectasis,686.101694915254,131.543461162119,185.491525423729,313.491525423729,,,",  # 3
    "00029817_009.png,Atelectasis,221.830508474576,317.053614263084,155.118644067797,216.949152542373",  # 4
    "00014687_001.png,Atelectasis,726.237288135593,494.95187165775,141.016949152542,55.322033898305,,,",  # 5 512px
    "00017877_001.png,Atelectasis,660.067796610169,569.780108883839,200.677966101695,78.4406779661017",  # 6 missing
    "00004911_010.png,Effusion,104.609523809524,450.844444444444,192.853333333333,206.506666666667,,,",  # 7
    "00013118_008.png,Infiltrate,592.0,200.0,180.0,250.0",  # 8
    "00013118_010.png,Nodule,305.7,611.2,49.1,50.3",  # 9 same patient as line 2
    "00013118_010.png,Nodule,700.0,400.5,40.0,38.0,,,",  # 10 same image and finding as line 9
    "00009999_000.png,Mass,abc,10,20,20",  # 11
    "00009999_000.png,Mass,10,10,0,5",  # 12
    "00009999_000.png,Pneumothorax,,10,5,5,,,",  # 13
    "00009999_000.png,Nodule,10,10",  # 14 fewer fields
    "../00009999_001.png,Mass,10,10,20,20",  # 15
    "00009999_000.png,Hernia,10,10,20,20",  # 16 not one of the 8 labels
    "00009999_000.png,Cardiomegaly,1000.0,10.0,30.0,20.0",  # 17 ends 6 px past the edge
    "00009999_000.png,Pneumonia,1000.0,10.0,24.5,20.0",  # 18 ends 0.5 px past the edge: clipped
]
EXPECTED_SKIPS = {
    5: "box outside image:",
    6: "image missing: 00017877_001.png not found under",
    11: "unreadable number: x='abc'",
    12: "non-positive box size: w=0",
    13: "missing value: x",
    14: "missing value: w",
    15: "unsafe image path:",
    16: "unknown finding label: 'Hernia'",
    17: "box outside image:",
}
IMAGES = {  # as the NIH tarballs and common re-packings lay them out
    "images_001/images/00013118_008.png": (1024, 1024),
    "images/00014716_007.png": (1024, 1024),
    "00029817_009.png": (1024, 1024),
    "images/00014687_001.png": (512, 512),  # a downsampled copy: its real size wins
    "images_002/images/00004911_010.png": (1024, 1024),
    "00013118_010.png": (1024, 1024),
    "images_003/images/00009999_000.png": (1024, 1024),
}  # 00017877_001.png (line 6) is missing


@pytest.fixture
def release(tmp_path: Path) -> tuple[Path, Path]:
    return write_csv(tmp_path / "BBox_List_2017.csv", HEADER, ROWS), write_images(tmp_path / "nih", IMAGES)


def by_key(records: list[dict]) -> dict[tuple[str, str], dict]:
    return {(r["meta"]["image_index"], r["category"]): r for r in records}


def test_records_grouped_located_and_labelled(release):
    csv_path, root = release
    conv = convert_chestxray8(csv_path, root, skips=SkipLog())
    recs = by_key(conv.records)
    assert set(recs) == {
        ("00013118_008.png", "Atelectasis"), ("00014716_007.png", "Atelectasis"), ("00029817_009.png", "Atelectasis"),
        ("00004911_010.png", "Effusion"), ("00013118_008.png", "Infiltration"), ("00013118_010.png", "Nodule"),
        ("00009999_000.png", "Pneumonia")}  # not 00017877_001.png: its image is missing, so its row is skipped
    for rec in conv.records:
        check_record(rec)
        assert rec["source"] == "chestxray8" and rec["phrase"] == PHRASES[rec["category"]]
    first = recs["00013118_008.png", "Atelectasis"]
    assert first["image"] == "images_001/images/00013118_008.png"
    assert (first["width"], first["height"]) == (1024, 1024)
    assert first["boxes"] == [pytest.approx([225.084745762712, 547.019216763771, 225.084745762712 + 86.7796610169491,
                                             547.019216763771 + 79.1864406779661])]
    assert recs["00014716_007.png", "Atelectasis"]["image"] == "images/00014716_007.png"
    assert recs["00029817_009.png", "Atelectasis"]["image"] == "00029817_009.png"
    assert recs["00004911_010.png", "Effusion"]["image"] == "images_002/images/00004911_010.png"
    assert recs["00004911_010.png", "Effusion"]["phrase"] == "pleural effusion"
    infil = recs["00013118_008.png", "Infiltration"]  # the file says Infiltrate
    assert infil["meta"]["finding_label"] == "Infiltrate" and infil["boxes"] == [[592.0, 200.0, 772.0, 450.0]]
    nodule = recs["00013118_010.png", "Nodule"]
    assert nodule["boxes"] == [pytest.approx([305.7, 611.2, 354.8, 661.5]), [700.0, 400.5, 740.0, 438.5]]
    assert nodule["meta"]["lines"] == [9, 10] and nodule["image"] == "00013118_010.png"
    assert recs["00009999_000.png", "Pneumonia"]["boxes"] == [[1000.0, 10.0, 1024.0, 30.0]]
    assert recs["00009999_000.png", "Pneumonia"]["image"] == "images_003/images/00009999_000.png"
    assert conv.extra["images_checked"] and conv.extra["n_images"] == 8
    assert conv.inputs["bbox_csv"] == str(csv_path) and conv.image_root == root
    ids = [r["id"] for r in conv.records]
    assert len(set(ids)) == len(ids)


def test_every_bad_row_is_reported_with_file_line_and_reason(release):
    csv_path, root = release
    skips = SkipLog()
    convert_chestxray8(csv_path, root, skips=skips)
    got = check_skips(skips, EXPECTED_SKIPS, csv_path)
    assert "512x512" in got[5]
    messages = {w["line"]: w["message"] for w in skips.warnings}
    assert list(messages) == [18] and messages[18].startswith("box clipped:")
    (missing,) = [s for s in skips.skipped if s["line"] == 6]
    assert missing["image"] == "00017877_001.png" and str(root) in missing["reason"]
    assert (skips.n_images_checked, skips.n_images_missing, list(skips.missing_images)) == (8, 1, ["00017877_001.png"])


def test_split_is_by_patient_and_stable(tmp_path):
    rows = [f"{p:08d}_{k:03d}.png,Nodule,{100 + k}.5,200.25,30.0,40.0" for p in range(1, 31) for k in range(3)]
    csv_path = write_csv(tmp_path / "BBox_List_2017.csv", HEADER, rows)
    first = convert_chestxray8(csv_path, None, skips=SkipLog())
    second = convert_chestxray8(csv_path, None, skips=SkipLog())
    assert len(first.records) == 90
    assert [(r["id"], r["split"]) for r in first.records] == [(r["id"], r["split"]) for r in second.records]
    per_patient: dict[str, set[str]] = {}
    for rec in first.records:
        assert rec["meta"]["patient_id"] == patient_id(rec["image"])
        assert rec["split"] == assign_split(rec["meta"]["patient_id"], (0.7, 0.1, 0.2), 0)
        per_patient.setdefault(rec["meta"]["patient_id"], set()).add(rec["split"])
    assert len(per_patient) == 30 and all(len(s) == 1 for s in per_patient.values())
    assert first.extra["split_method"] == "hash(seed=0, ratios=0.7,0.1,0.2, key=patient_id)"
    assert first.image_root == tmp_path and first.extra["images_checked"] is False
    assert {r["split"] for r in convert_chestxray8(csv_path, None, split_ratios="1,0,0", skips=SkipLog()).records} \
        == {"train"}


def test_same_patient_shares_a_split_in_the_release(release):
    csv_path, root = release
    recs = convert_chestxray8(csv_path, root, seed=5, skips=SkipLog()).records
    assert len({r["split"] for r in recs if r["meta"]["patient_id"] == "00013118"}) == 1


def test_cli_end_to_end(release, tmp_path, capsys):
    csv_path, root = release
    out = tmp_path / "out"
    args = ["data", "prepare", "chestxray8", "--bbox-csv", str(csv_path), "--images", str(root),
            "--split-ratios", "0.6,0.2,0.2", "--seed", "1", "--out", str(out)]
    assert main(args) == 1  # 1 of 8 images missing: more than the default 5 %
    assert "1 of 8 images (12.5%) are missing" in capsys.readouterr().err
    assert main([*args, "--max-missing-images-fraction", "0.2"]) == 0
    capsys.readouterr()
    rc = main([*args, "--allow-missing-images"])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out)
    assert sum(summary["splits"].values()) == 7 and summary["n_skipped"] == len(EXPECTED_SKIPS)
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["split_method"] == "hash(seed=1, ratios=0.6,0.2,0.2, key=patient_id)"
    assert meta["categories"]["Atelectasis"] == 3 and "Infiltrate" not in meta["categories"]
    records = [r for split in summary["splits"] for r in read_records(out / f"{split}.jsonl")]
    assert len(records) == 7 and all((root / r["image"]).is_file() for r in records)
    report = json.loads((out / "prepare_report.json").read_text())
    assert {s["line"] for s in report["skipped"]} == set(EXPECTED_SKIPS)


def test_cli_missing_file_fails_clearly(tmp_path, capsys):
    missing = tmp_path / "BBox_List_2017.csv"
    assert main(["data", "prepare", "chestxray8", "--bbox-csv", str(missing), "--out", str(tmp_path / "o")]) != 0
    err = capsys.readouterr().err
    assert str(missing) in err and "does not exist" in err


def test_cli_wrong_header_fails_clearly(tmp_path, capsys):
    # Data_Entry_2017.csv passed by mistake
    row = "00000001_000.png,Cardiomegaly,0,1,58,M,PA,2682,2749,0.143,0.143"
    header = ("Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
              "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y]")
    bad = write_csv(tmp_path / "Data_Entry_2017.csv", header, [row])
    assert main(["data", "prepare", "chestxray8", "--bbox-csv", str(bad), "--out", str(tmp_path / "o")]) != 0
    err = capsys.readouterr().err
    assert str(bad) in err and "Bbox [x,y,w,h]" in err
