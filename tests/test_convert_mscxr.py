"""MS-CXR converter: real CSV v1.1.0 / v1.0.0 and COCO JSON layouts, messy rows, image checks, splits, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers_data import check_skips, write_csv, write_images
from PIL import Image

from pfmvg_plugin.cli.main import main
from pfmvg_plugin.data.converters.mscxr import convert_mscxr, record_id
from pfmvg_plugin.data.schema import check_record, read_records
from pfmvg_plugin.data.skips import SkipLog
from pfmvg_plugin.data.splits import assign_split

HEADER_V110 = "dicom_id,category_name,label_text,path,x,y,w,h,image_width,image_height,split"
HEADER_V100 = "dicom_id,category_name,label_text,path,x,y,w,h,image_width,image_height"

D1 = "02aa804e-bde0afdd-112c0b34-7bc16630-4e384014"
D2 = "174413ec-4ec4c1f7-34ea26b7-c5f994f8-79ef1962"
D3 = "2a2277a9-b0ded155-c0de8eb9-c124d10e-82c5caab"
D4 = "68b5c4b1-227d0485-9cc38c3f-7b84ab51-4b472714"
D5 = "7a8b1c2d-3e4f5a6b-7c8d9e0f-1a2b3c4d-5e6f7a8b"
D6 = "9e1f2a3b-4c5d6e7f-8a9b0c1d-2e3f4a5b-6c7d8e9f"
D7 = "b1c2d3e4-f5a6b7c8-d9e0f1a2-b3c4d5e6-f7a8b9c0"
D8 = "c0ffee00-11223344-55667788-99aabbcc-ddeeff00"
D9 = "d0d0d0d0-11223344-55667788-99aabbcc-ddeeff00"


def mimic_path(dicom_id: str, subject: str, study: str) -> str:
    return f"files/p{subject[:2]}/p{subject}/s{study}/{dicom_id}.jpg"


P1 = mimic_path(D1, "10000032", "50414267")
P2 = mimic_path(D2, "10000764", "57375967")
P3 = mimic_path(D3, "11000011", "51029426")
P4 = mimic_path(D4, "12000013", "52000013")
P6 = mimic_path(D6, "16000016", "56000016")
P7 = mimic_path(D7, "17000017", "57000017")
P8 = mimic_path(D8, "18000018", "58000018")
P9 = mimic_path(D9, "19000019", "59000019")

# (line, row) of the v1.1.0 file; the header is line 1
ROWS_V110 = [
    f"{D1},Pneumonia,Patchy consolidation in the right lower lobe,{P1},10,20,30,40,300,400,train",  # 2
    f"{D1},Pneumonia,Patchy consolidation in the right lower lobe,{P1},100,120,50,60,300,400,train",  # 3
    f"{D1},Pleural Effusion,Small left pleural effusion,{P1},200,300,90,99,300,400,train",  # 4
    f"{D2},Cardiomegaly,Cardiomegaly,{P2},50,60,200,150,320,256,val",  # 5
    f'{D3},Lung Opacity,"Opacity at the left base, likely atelectasis",{P3},0,0,64,64,256,256,test',  # 6
    f"{D4},Edema,Mild pulmonary edema,{P4},,30,40,50,256,256,train",  # 7 missing x
    f"{D4},Edema,Mild pulmonary edema,{P4},20,30,abc,50,256,256,train",  # 8 text in a number
    f"{D4},Edema,Mild pulmonary edema,{P4},20,30,0,50,256,256,train",  # 9 zero width
    f"{D4},Edema,Mild pulmonary edema,{P4},200,30,100,50,256,256,train",  # 10 box outside the image
    f"{D5},Pneumothorax,Small apical pneumothorax,../../etc/{D5}.jpg,10,10,20,20,256,256,test",  # 11 unsafe path
    f"{D6},Atelectasis,Bibasilar atelectasis,{P6},10,10,20,20,512,512,train",  # 12 image file is 256x256
    f"{D7},Consolidation,Left lower lobe consolidation,{P7},10,10",  # 13 too few fields
    f"{D2},Cardiomegaly,Cardiomegaly,{P2},270,100,51,50,320,256,val",  # 14 overshoots by 1 px: clipped
    f"{D8},Pneumonia,Right upper lobe pneumonia,{P8},5,5,10,10,256,256,validate",  # 15
    f"{D9},Edema,Mild edema,{P9},5,5,10,10,256,256,test",  # 16 image file missing
]
EXPECTED_SKIPS = {
    7: "missing value: x",
    8: "unreadable number: w='abc'",
    9: "non-positive box size: w=0",
    10: "box outside image:",
    11: "unsafe image path:",
    12: "image size mismatch:",
    13: "missing value: w",
    16: f"image missing: {P9} not found under",
}
IMAGE_SIZES = {P1: (300, 400), P2: (320, 256), P3: (256, 256), P4: (256, 256), P6: (256, 256), P7: (256, 256),
               P8: (256, 256)}


@pytest.fixture
def release(tmp_path: Path) -> tuple[Path, Path]:
    """A v1.1.0 CSV with messy rows and a MIMIC-CXR-JPG root holding all images but D9's."""
    csv_path = write_csv(tmp_path / "MS_CXR_Local_Alignment_v1.1.0.csv", HEADER_V110, ROWS_V110)
    return csv_path, write_images(tmp_path / "mimic-cxr-jpg", IMAGE_SIZES)


def by_key(records: list[dict]) -> dict[tuple[str, str], dict]:
    return {(r["meta"]["dicom_id"], r["category"]): r for r in records}


def test_csv_v110_groups_boxes_and_uses_official_split(release):
    csv_path, images = release
    skips = SkipLog()
    conv = convert_mscxr(csv_path, images, skips=skips)
    recs = by_key(conv.records)
    assert set(recs) == {(D1, "Pneumonia"), (D1, "Pleural Effusion"), (D2, "Cardiomegaly"), (D3, "Lung Opacity"),
                         (D8, "Pneumonia")}
    for rec in conv.records:
        check_record(rec)
    pneu = recs[D1, "Pneumonia"]
    assert pneu["boxes"] == [[10.0, 20.0, 40.0, 60.0], [100.0, 120.0, 150.0, 180.0]]  # two rows -> one record
    assert pneu["phrase"] == "Patchy consolidation in the right lower lobe"
    assert (pneu["image"], pneu["width"], pneu["height"]) == (P1, 300, 400)
    assert pneu["meta"] == {"dicom_id": D1, "subject_id": "10000032", "study_id": "50414267", "lines": [2, 3]}
    assert recs[D1, "Pleural Effusion"]["boxes"] == [[200.0, 300.0, 290.0, 399.0]]
    assert recs[D3, "Lung Opacity"]["phrase"] == "Opacity at the left base, likely atelectasis"
    assert recs[D2, "Cardiomegaly"]["boxes"] == [[50.0, 60.0, 250.0, 210.0], [270.0, 100.0, 320.0, 150.0]]  # clipped
    # two phrases of one image: two distinct, stable ids (keying by image id is the bug to avoid)
    ids = [r["id"] for r in conv.records]
    assert len(set(ids)) == len(ids)
    assert pneu["id"] == record_id(D1, "Pneumonia", "Patchy consolidation in the right lower lobe")
    assert {k: r["split"] for k, r in recs.items()} == {
        (D1, "Pneumonia"): "train", (D1, "Pleural Effusion"): "train", (D2, "Cardiomegaly"): "val",
        (D3, "Lung Opacity"): "test", (D8, "Pneumonia"): "val"}  # 'validate' normalised
    assert conv.extra["split_method"] == "official"
    assert conv.inputs["format"] == "csv-v1.1.0"
    assert conv.inputs["annotations"] == str(csv_path)
    assert conv.image_root == images


def test_every_bad_row_is_reported_with_file_line_and_reason(release):
    csv_path, images = release
    skips = SkipLog()
    convert_mscxr(csv_path, images, skips=skips)
    got = check_skips(skips, EXPECTED_SKIPS, csv_path)
    assert "512x512" in got[12] and "256x256" in got[12]
    warnings = {w["line"]: w["message"] for w in skips.warnings}
    assert list(warnings) == [14] and warnings[14].startswith("box clipped:")
    assert [s["image"] for s in skips.skipped if s["line"] == 16] == [P9]


def test_missing_image_is_skipped_and_no_checks_without_images_root(release):
    csv_path, images = release
    skips = SkipLog()
    conv = convert_mscxr(csv_path, images, skips=skips)
    assert (D9, "Edema") not in by_key(conv.records)
    assert (skips.n_images_checked, list(skips.missing_images)) == (7, [P9])
    skips = SkipLog()
    conv = convert_mscxr(csv_path, None, skips=skips)
    assert conv.image_root == csv_path.parent
    assert skips.n_images_checked == 0 and "image missing" not in skips.by_reason()
    assert 12 not in {s["line"] for s in skips.skipped}  # no image file is opened, so no size mismatch
    assert {(D6, "Atelectasis"), (D9, "Edema")} <= set(by_key(conv.records))
    skips = SkipLog()
    conv = convert_mscxr(csv_path, images, check_images=False, skips=skips)
    assert skips.n_images_checked == 0 and (D9, "Edema") in by_key(conv.records)


def test_inconsistent_image_size_within_group(tmp_path):
    rows = [f"{D1},Pneumonia,Right lower lobe pneumonia,{P1},10,20,30,40,300,400,train",
            f"{D1},Pneumonia,Right lower lobe pneumonia,{P1},50,60,30,40,310,400,train"]
    skips = SkipLog()
    conv = convert_mscxr(write_csv(tmp_path / "a.csv", HEADER_V110, rows), None, skips=skips)
    assert [r["boxes"] for r in conv.records] == [[[10.0, 20.0, 40.0, 60.0]]]
    assert [(s["line"], s["reason"].split(":")[0]) for s in skips.skipped] == [
        (3, "inconsistent image size within group")]


def test_symlinks_the_user_placed_in_the_image_root_are_followed(tmp_path):
    """Only the annotation's path text is policed (no absolute paths, no ``..``); a data root whose ``files/``
    is a symlink to another disk is the user's choice and works."""
    outside = tmp_path / "other_disk" / "x.jpg"
    outside.parent.mkdir()
    Image.new("L", (300, 400)).save(outside, "JPEG")
    link = tmp_path / "root" / P1
    link.parent.mkdir(parents=True)
    link.symlink_to(outside)
    rows = [f"{D1},Pneumonia,Right lower lobe pneumonia,{P1},10,20,30,40,300,400,train",
            f"{D1},Edema,Edema,../other_disk/x.jpg,10,20,30,40,300,400,train"]
    skips = SkipLog()
    conv = convert_mscxr(write_csv(tmp_path / "a.csv", HEADER_V110, rows), tmp_path / "root", skips=skips)
    assert [r["image"] for r in conv.records] == [P1]
    assert skips.skipped[0]["line"] == 3 and skips.skipped[0]["reason"].startswith("unsafe image path:")


def many_rows_v100(n_images: int = 40) -> list[str]:
    rows = []
    for i in range(n_images):
        dicom = f"{i:08x}-00000000-11111111-22222222-33333333"
        path = mimic_path(dicom, f"{10000000 + i}", f"{50000000 + i}")
        rows.append(f"{dicom},Pneumonia,Left basilar opacity,{path},10,10,20,20,256,256")
        rows.append(f"{dicom},Pleural Effusion,Small right effusion,{path},30,40,50,60,256,256")
    return rows


def test_v100_hash_split_is_stable_and_image_grouped(tmp_path):
    csv_path = write_csv(tmp_path / "MS_CXR_Local_Alignment_v1.0.0.csv", HEADER_V100, many_rows_v100())
    first = convert_mscxr(csv_path, None, skips=SkipLog())
    second = convert_mscxr(csv_path, None, skips=SkipLog())
    assert first.inputs["format"] == "csv-v1.0.0"
    assert first.extra["split_method"] == "hash(seed=0, ratios=0.7,0.1,0.2, key=dicom_id)"
    assert len(first.records) == 80
    assert [(r["id"], r["split"]) for r in first.records] == [(r["id"], r["split"]) for r in second.records]
    per_image: dict[str, set[str]] = {}
    for rec in first.records:
        per_image.setdefault(rec["meta"]["dicom_id"], set()).add(rec["split"])
        assert rec["split"] == assign_split(rec["meta"]["dicom_id"], (0.7, 0.1, 0.2), 0)
    assert all(len(s) == 1 for s in per_image.values())
    assert {r["split"] for r in first.records} == {"train", "val", "test"}
    reseeded = convert_mscxr(csv_path, None, seed=7, skips=SkipLog())
    assert [r["split"] for r in reseeded.records] != [r["split"] for r in first.records]
    all_test = convert_mscxr(csv_path, None, split_ratios="0,0,1", skips=SkipLog())
    assert {r["split"] for r in all_test.records} == {"test"}


def test_split_file_overrides_and_skips_unlisted_images(release, tmp_path):
    csv_path, images = release
    split_file = tmp_path / "medrpg_split.csv"
    split_file.write_text(f"dicom_id,split\n{D1},test\n{D3},train\n{D8},valid\n")
    skips = SkipLog()
    conv = convert_mscxr(csv_path, images, split_file=split_file, skips=skips)
    assert conv.extra["split_method"] == "split_file"
    assert {(r["meta"]["dicom_id"], r["split"]) for r in conv.records} == {(D1, "test"), (D3, "train"), (D8, "val")}
    unlisted = [s for s in skips.skipped if s["reason"].startswith("not in split file")]
    assert {s["line"] for s in unlisted} == {5, 14}


def coco_release(tmp_path: Path, with_split: bool) -> Path:
    images = [
        {"id": 1, "file_name": f"{D1}.jpg", "path": P1, "width": 300, "height": 400, "license": 0},
        {"id": 2, "file_name": f"{D2}.jpg", "path": P2, "width": 320, "height": 256},
        {"id": 3, "file_name": f"{D3}.jpg", "path": P3, "width": 256, "height": 256},
    ]
    if with_split:
        for im, split in zip(images, ("train", "val", "test"), strict=True):
            im["split"] = split
    categories = [{"id": 1, "name": "Pneumonia", "supercategory": "finding"}, {"id": 2, "name": "Pleural Effusion"},
                  {"id": 3, "name": "Cardiomegaly"}, {"id": 4, "name": "Lung Opacity"}]
    pneu = "Patchy consolidation in the right lower lobe"
    annotations = [
        {"id": 10, "image_id": 1, "category_id": 1, "bbox": [10, 20, 30, 40], "area": 1200, "iscrowd": 0,
         "label_text": pneu},
        {"id": 11, "image_id": 1, "category_id": 1, "bbox": [100, 120, 50, 60], "label_text": pneu},
        {"id": 12, "image_id": 1, "category_id": 2, "bbox": [200, 300, 90, 99],
         "label_text": "Small left pleural effusion"},
        {"id": 13, "image_id": 2, "category_id": 3, "bbox": [50, 60, 200, 150], "label_text": "Cardiomegaly"},
        {"id": 14, "image_id": 3, "category_id": 4, "bbox": [0, 0, 64, 64],
         "label_text": "Opacity at the left base, likely atelectasis"},
        {"id": 15, "image_id": 3, "category_id": 4, "bbox": [0, 0, "abc", 64], "label_text": "Opacity"},
        {"id": 16, "image_id": 99, "category_id": 4, "bbox": [0, 0, 5, 5], "label_text": "Opacity"},
    ]
    path = tmp_path / "MS_CXR_Local_Alignment_v1.0.0.json"
    path.write_text(json.dumps({"info": {"version": "1.0.0"}, "images": images, "annotations": annotations,
                                "categories": categories}))
    return path


def test_coco_json_matches_csv_records(release, tmp_path):
    csv_path, images = release
    from_csv = by_key(convert_mscxr(csv_path, images, skips=SkipLog()).records)
    skips = SkipLog()
    conv = convert_mscxr(coco_release(tmp_path, with_split=True), images, skips=skips)
    assert conv.inputs["format"] == "coco-json"
    assert conv.extra["split_method"] == "official"
    recs = by_key(conv.records)
    assert set(recs) == {(D1, "Pneumonia"), (D1, "Pleural Effusion"), (D2, "Cardiomegaly"), (D3, "Lung Opacity")}
    for key, rec in recs.items():
        assert rec["id"] == from_csv[key]["id"]  # same pair, same id, whichever file it came from
        assert rec["image"] == from_csv[key]["image"]
        assert rec["split"] == from_csv[key]["split"]
    assert recs[D1, "Pneumonia"]["boxes"] == from_csv[D1, "Pneumonia"]["boxes"]
    assert recs[D1, "Pneumonia"]["meta"]["annotation_ids"] == [10, 11]
    assert [(s["item"], s["reason"]) for s in skips.skipped] == [
        ("annotations[5]", "unreadable number: w='abc'"), ("annotations[6]", "unknown image_id: 99")]
    assert all(s["line"] is None and s["file"].endswith(".json") for s in skips.skipped)


def test_coco_json_without_split_uses_hash(tmp_path):
    conv = convert_mscxr(coco_release(tmp_path, with_split=False), None, seed=3, skips=SkipLog())
    assert conv.extra["split_method"].startswith("hash(seed=3")
    for rec in conv.records:
        assert rec["split"] == assign_split(rec["meta"]["dicom_id"], (0.7, 0.1, 0.2), 3)


def test_cli_end_to_end(release, tmp_path, capsys):
    csv_path, images = release
    out = tmp_path / "out"
    args = ["data", "prepare", "mscxr", "--annotations", str(csv_path), "--images", str(images), "--out", str(out)]
    assert main(args) == 1  # 1 of 7 images missing
    assert P9 in capsys.readouterr().err
    rc = main([*args, "--allow-missing-images"])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["splits"] == {"train": 2, "val": 2, "test": 1}
    assert summary["n_skipped"] == len(EXPECTED_SKIPS)
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["name"] == "mscxr" and meta["task"] == "grounding" and meta["split_method"] == "official"
    assert meta["image_root"] == str(images.resolve())
    assert len(read_records(out / "train.jsonl")) == 2 and len(read_records(out / "test.jsonl")) == 1
    report = json.loads((out / "prepare_report.json").read_text())
    assert {s["line"] for s in report["skipped"]} == set(EXPECTED_SKIPS)
    assert report["inputs"]["format"] == "csv-v1.1.0"
    assert report["skipped_by_reason"]["missing value"] == 2


def test_cli_missing_file_fails_clearly(tmp_path, capsys):
    missing = tmp_path / "MS_CXR_Local_Alignment_v1.1.0.csv"
    rc = main(["data", "prepare", "mscxr", "--annotations", str(missing), "--out", str(tmp_path / "out")])
    assert rc != 0
    err = capsys.readouterr().err
    assert str(missing) in err and "does not exist" in err
    assert not (tmp_path / "out").exists()


def test_cli_wrong_header_names_missing_columns(tmp_path, capsys):
    bad = write_csv(tmp_path / "other.csv", "dicom_id,label,path,x,y,w,h", [f"{D1},Pneumonia,{P1},1,2,3,4"])
    rc = main(["data", "prepare", "mscxr", "--annotations", str(bad), "--out", str(tmp_path / "out")])
    assert rc != 0
    err = capsys.readouterr().err
    assert str(bad) in err and "category_name" in err and "image_width" in err


def test_cli_bad_json_fails_clearly(tmp_path, capsys):
    bad = tmp_path / "ms_cxr.json"
    bad.write_text('{"images": [}')
    assert main(["data", "prepare", "mscxr", "--annotations", str(bad), "--out", str(tmp_path / "out")]) != 0
    assert "not valid JSON" in capsys.readouterr().err
