"""VinDr-CXR converter on small files in the real Kaggle and PhysioNet layouts (DICOM via pydicom, PNG exports)."""

from __future__ import annotations

import gzip
import hashlib
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from helpers_data import write_dicom, write_images

from pfmvg_plugin.cli.main import main
from pfmvg_plugin.data.converters import ConversionError, load_converters
from pfmvg_plugin.data.converters.vindr import class_phrase, convert_vindr, release_split
from pfmvg_plugin.data.images import image_size, load_image
from pfmvg_plugin.data.schema import read_records, validate_record
from pfmvg_plugin.data.skips import SkipLog

pydicom = pytest.importorskip("pydicom")

KAGGLE_HEADER = "image_id,class_name,class_id,rad_id,x_min,y_min,x_max,y_max"
PHYSIONET_HEADER = "image_id,rad_id,class_name,x_min,y_min,x_max,y_max"


def image_id(name: str) -> str:
    """A 32-hex id like VinDr's (md5 of a readable name, so the tests stay legible)."""
    return hashlib.md5(name.encode()).hexdigest()


A, B, C, D = (image_id(n) for n in ("a", "b", "c", "d"))


@pytest.fixture(scope="module")
def kaggle(tmp_path_factory):
    """Kaggle layout: train.csv + train/<id>.dicom, one PNG export elsewhere, one image missing."""
    root = tmp_path_factory.mktemp("vinbigdata")
    write_dicom(root / "train" / f"{A}.dicom", 600, 500)
    write_dicom(root / "train" / f"{B}.dicom", 400, 300, "MONOCHROME1")
    write_images(root, {f"exports/png/{C}.png": (2500, 2048)})
    lines = [
        KAGGLE_HEADER,                                                   # 1
        f"{A},Aortic enlargement,0,R10,264.0,143.0,411.0,319.0",        # 2
        f"{B},No finding,14,R1,,,,",                                     # 3
        f"{A},Aortic enlargement,0,R8,270.0,150.0,400.0,310.0",         # 4
        f"{A},Cardiomegaly,3,R9,191.0,375.0,553.0,431.0",                # 5
        f"{A},Aortic enlargement,0,R9,258.0,139.0,405.0,322.0",         # 6
        f"{B},No finding,14,R2,,,,",                                     # 7
        f"{A},Pleural effusion,10,R8,20.0,300.0,120.0,420.0",            # 8
        f"{A},Pleural effusion,10,R8,480.0,310.0,590.0,430.0",           # 9
        f"{A},Pleural effusion,10,R10,25.0,305.0,118.0,425.0",           # 10
        f"{B},No finding,14,R3,,,,",                                     # 11
        f"{C},Nodule/Mass,8,R9,557.0,1352.0,675.0,1484.0",               # 12
        f"{C},ILD,5,R17,1347.0,245.0,2188.0,1969.0",                     # 13
        f"{D},Cardiomegaly,3,R8,691.0,1375.0,1653.0,1831.0",             # 14 image missing
        f"{A},Lung Opacity,7,R10,abc,150.0,300.0,250.0",                 # 15 unreadable number
        f"{A},Lung Opacity,7,R9,300.0,150.0,200.0,250.0",                # 16 x_max < x_min
        f"{A},Lung Opacity,7,R8,300.0,150.0,700.0,250.0",                # 17 outside 600x500
        "",                                                              # 18 blank line
        f"{A},Calcification,2,R8,10.0",                                  # 19 truncated row
        f"{A},Infiltration,6,R9,,,,",                                    # 20 finding without coordinates
        "../../etc/passwd,Cardiomegaly,3,R8,1.0,1.0,2.0,2.0",            # 21 escapes the root
        ",Cardiomegaly,3,R8,1.0,1.0,2.0,2.0",                            # 22 no image id
        f"{C},Nodule/Mass,8,R10,100.0,100.0,200.0,200.0",               # 23
    ]
    csv_path = root / "train.csv"
    csv_path.write_text("\n".join(lines) + "\n")
    return root, csv_path


def by_key(records):
    return {(r["meta"]["image_id"], r["category"]): r for r in records}


def test_registered():
    assert {"vindr", "rsna"} <= set(load_converters())


def test_kaggle_grouping_fusion_and_records(kaggle):
    root, csv_path = kaggle
    skips = SkipLog()
    conv = convert_vindr([csv_path], root, skips=skips)
    recs = by_key(conv.records)
    assert set(recs) == {(A, "Aortic enlargement"), (A, "Cardiomegaly"), (A, "Pleural effusion"),
                         (C, "Nodule/Mass"), (C, "ILD")}
    for r in conv.records:
        assert validate_record(r) == []
        assert r["source"] == "vindr" and r["task"] == "grounding"
        assert r["meta"]["box_fusion"] == {"method": "wbf", "iou_threshold": 0.4}
    aorta = recs[(A, "Aortic enlargement")]
    assert aorta["image"] == f"train/{A}.dicom"
    assert (aorta["width"], aorta["height"]) == (600, 500)  # Columns x Rows from the DICOM header
    assert aorta["phrase"] == "aortic enlargement"
    assert aorta["boxes"] == [pytest.approx([(264 + 270 + 258) / 3, (143 + 150 + 139) / 3,
                                             (411 + 400 + 405) / 3, (319 + 310 + 322) / 3])]
    assert aorta["meta"]["box_support"] == [3]
    assert aorta["meta"]["rad_ids"] == ["R10", "R8", "R9"]
    assert aorta["meta"]["class_id"] == 0
    assert aorta["meta"]["rows"] == ["train.csv:2", "train.csv:4", "train.csv:6"]
    effusion = recs[(A, "Pleural effusion")]
    assert effusion["phrase"] == "pleural effusion"
    assert effusion["boxes"] == [pytest.approx([22.5, 302.5, 119.0, 422.5]), [480.0, 310.0, 590.0, 430.0]]
    assert effusion["meta"]["box_support"] == [2, 1]
    assert effusion["meta"]["box_rad_ids"] == [["R10", "R8"], ["R8"]]
    nodule = recs[(C, "Nodule/Mass")]
    assert nodule["image"] == f"exports/png/{C}.png" and (nodule["width"], nodule["height"]) == (2500, 2048)
    assert nodule["phrase"] == "nodule/mass" and len(nodule["boxes"]) == 2
    assert recs[(C, "ILD")]["phrase"] == "interstitial lung disease" == class_phrase("ILD")
    assert len({r["id"] for r in conv.records}) == len(conv.records)
    assert conv.extra["box_fusion"] == {"method": "wbf", "iou_threshold": 0.4}


def test_kaggle_skip_report(kaggle):
    root, csv_path = kaggle
    skips = SkipLog()
    convert_vindr([csv_path], root, skips=skips)
    got = {s["line"]: s["reason"] for s in skips.skipped}
    assert all(s["file"] == str(csv_path) for s in skips.skipped)
    assert {ln for ln, r in got.items() if r == "no finding"} == {3, 7, 11}
    assert got[14].startswith(f"image missing: {D} not found under {root} (no {D}.dicom/.dcm/.png")
    assert [s["image"] for s in skips.skipped if s["line"] == 14] == [D]
    assert got[15].startswith("unreadable number: x_min='abc'")
    assert got[16].startswith("zero or negative size")
    assert got[17].startswith("box outside image") and "600x500" in got[17]
    assert got[19].startswith("missing columns: ")
    assert got[20].startswith("missing coordinates")
    assert got[21].startswith("path escapes the image root")
    assert got[22] == "missing image_id"
    assert 18 not in got and len(got) == len(skips.skipped) == 11
    counts = skips.by_reason()
    assert counts["no finding"] == 3 and counts["image missing"] == 1
    assert (skips.n_images_checked, list(skips.missing_images)) == (3, [D])  # B has only "No finding" rows


def test_fuse_none_and_threshold(kaggle):
    root, csv_path = kaggle
    conv = convert_vindr([csv_path], root, fuse="none", skips=SkipLog())
    aorta = by_key(conv.records)[(A, "Aortic enlargement")]
    assert len(aorta["boxes"]) == 3 and aorta["meta"]["box_support"] == [1, 1, 1]
    assert aorta["meta"]["box_fusion"] == {"method": "none", "iou_threshold": None}
    assert conv.extra["box_fusion"]["method"] == "none"
    strict = convert_vindr([csv_path], root, iou_threshold=0.95, skips=SkipLog())
    assert len(by_key(strict.records)[(A, "Aortic enlargement")]["boxes"]) == 3
    with pytest.raises(ValueError, match="iou-threshold"):
        convert_vindr([csv_path], root, iou_threshold=1.5, skips=SkipLog())


def test_hash_split_is_deterministic_and_grouped_by_image(tmp_path):
    ids = [image_id(f"img{i}") for i in range(40)]
    write_images(tmp_path / "png", {f"{i}.png": (64, 64) for i in ids})
    rows = [KAGGLE_HEADER]
    for i in ids:
        for rad in ("R8", "R9", "R10"):
            rows.append(f"{i},Cardiomegaly,3,{rad},10.0,20.0,50.0,{40 + int(rad[1:])}.0")
        rows.append(f"{i},Aortic enlargement,0,R9,20.0,5.0,30.0,15.0")
    (tmp_path / "train.csv").write_text("\n".join(rows) + "\n")

    def splits(seed, ratios=None):
        conv = convert_vindr([tmp_path / "train.csv"], tmp_path, split_ratios=ratios, seed=seed, skips=SkipLog())
        out = {}
        for r in conv.records:
            assert out.setdefault(r["meta"]["image_id"], r["split"]) == r["split"]  # one split per image
        return out

    first = splits(0)
    assert first == splits(0) and len(first) == 40
    assert set(first.values()) == {"train", "val", "test"}
    assert splits(1) != first
    assert set(splits(0, (1.0, 0.0, 0.0)).values()) == {"train"}


@pytest.fixture
def physionet(tmp_path):
    """PhysioNet layout: annotations/annotations_{train,test}.csv (columns in another order in test), train/, test/."""
    train_ids = [image_id(f"tr{i}") for i in range(30)]
    test_ids = [image_id(f"te{i}") for i in range(3)]
    for i in train_ids:
        write_dicom(tmp_path / "train" / f"{i}.dicom", 64, 48)
    for i in test_ids:
        write_dicom(tmp_path / "test" / f"{i}.dicom", 80, 60, "MONOCHROME1")
    ann = tmp_path / "annotations"
    ann.mkdir()
    train = [PHYSIONET_HEADER]
    for i in train_ids:
        train += [f"{i},R2,Pleural thickening,10,5,30,12", f"{i},R3,Pleural thickening,11,5,31,13",
                  f"{i},R5,No finding,,,,"]
    train.append(f"{test_ids[0]},R2,Nodule/Mass,1,1,5,5")  # an image of the test split in train: conflict
    (ann / "annotations_train.csv").write_text("\r\n".join(train) + "\r\n")  # CRLF, as exported on Windows
    test = ["image_id,class_name,rad_ID,x_min,y_min,x_max,y_max"]
    test += [f"{i},Pulmonary fibrosis,R1,40.5,10.25,70.0,50.0" for i in test_ids]
    test.append(f"{test_ids[1]},No finding,R1,,,,")
    (ann / "annotations_test.csv").write_text("\n".join(test) + "\n")
    return tmp_path, ann, train_ids, test_ids


def test_physionet_official_split_and_val_carving(physionet):
    root, ann, train_ids, test_ids = physionet
    files = [ann / "annotations_test.csv", ann / "annotations_train.csv"]
    assert [release_split(f) for f in files] == ["test", "train"]
    skips = SkipLog()
    conv = convert_vindr(files, root, skips=skips)
    split_of = {r["meta"]["image_id"]: r["split"] for r in conv.records}
    assert {split_of[i] for i in train_ids} == {"train"} and {split_of[i] for i in test_ids} == {"test"}
    test_rec = next(r for r in conv.records if r["split"] == "test")
    assert test_rec["image"].startswith("test/") and (test_rec["width"], test_rec["height"]) == (80, 60)
    assert test_rec["boxes"] == [[40.5, 10.25, 70.0, 50.0]] and test_rec["meta"]["rad_ids"] == ["R1"]
    assert test_rec["meta"]["release"] == "physionet" and "class_id" not in test_rec["meta"]
    pt = next(r for r in conv.records if r["category"] == "Pleural thickening")
    assert pt["meta"]["box_support"] == [2] and pt["meta"]["image_rad_ids"] == ["R2", "R3", "R5"]
    conflict = [s for s in skips.skipped if s["reason"].startswith("split conflict")]
    assert len(conflict) == 1 and conflict[0]["line"] == 92 and conflict[0]["file"].endswith("annotations_train.csv")
    assert skips.by_reason()["no finding"] == 31

    carved = convert_vindr(files, root, split_ratios=(0.7, 0.3, 0.0), skips=SkipLog())
    split_of = {r["meta"]["image_id"]: r["split"] for r in carved.records}
    assert {split_of[i] for i in train_ids} == {"train", "val"}
    assert {split_of[i] for i in test_ids} == {"test"}  # the official test split is never touched
    assert "val carved from train" in carved.extra["split_policy"]


def test_dicom_header_size_and_monochrome1_inverted(tmp_path):
    path = tmp_path / "x.dicom"
    raw = write_dicom(path, 40, 30, "MONOCHROME1")
    assert image_size(path) == (40, 30)
    im = load_image(path, mode="L")
    assert im.size == (40, 30)
    px = np.asarray(im)
    assert raw[0, 0] < raw[0, -1]
    assert px[0, 0] == 255 and px[0, -1] == 0  # MONOCHROME1: low raw value is displayed bright
    write_dicom(tmp_path / "y.dicom", 40, 30, "MONOCHROME2")
    px2 = np.asarray(load_image(tmp_path / "y.dicom", mode="L"))
    assert px2[0, 0] == 0 and px2[0, -1] == 255


def test_cli_end_to_end(kaggle, tmp_path, capsys):
    root, csv_path = kaggle
    gz = tmp_path / "train.csv.gz"
    gz.write_bytes(gzip.compress(csv_path.read_bytes()))
    out = tmp_path / "out"
    args = ["data", "prepare", "vindr", "--annotations", str(gz), "--images", str(root),
            "--fuse", "wbf", "--iou-threshold", "0.4", "--split-ratios", "0.5,0.25,0.25", "--seed", "3",
            "--out", str(out)]
    assert main(args) == 1  # D's image is missing: 1 of 3
    assert "1 of 3 images (33.3%) are missing" in capsys.readouterr().err
    rc = main([*args, "--allow-missing-images"])
    assert rc == 0, capsys.readouterr().err
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["name"] == "vindr" and meta["box_fusion"] == {"method": "wbf", "iou_threshold": 0.4}
    assert sum(meta["splits"].values()) == 5
    records = [r for split in meta["splits"] for r in read_records(out / f"{split}.jsonl")]
    assert Counter(r["category"] for r in records)["Nodule/Mass"] == 1
    assert (Path(meta["image_root"]) / records[0]["image"]).is_file()
    report = json.loads((out / "prepare_report.json").read_text())
    assert report["skipped_by_reason"]["no finding"] == 3
    assert [(s["line"], s["image"]) for s in report["skipped"] if s["reason"].startswith("image missing")] == [(14, D)]
    assert report["inputs"]["split_ratios"] == [0.5, 0.25, 0.25]


def test_cli_unreadable_inputs(kaggle, tmp_path, capsys):
    root, _ = kaggle
    out = str(tmp_path / "out")

    def run(csv_path: Path) -> str:
        rc = main(["data", "prepare", "vindr", "--annotations", str(csv_path), "--images", str(root), "--out", out])
        assert rc != 0
        return capsys.readouterr().err

    assert "does not exist" in run(tmp_path / "nope.csv")
    wrong = tmp_path / "image_labels_train.csv"
    wrong.write_text("image_id,rad_ID,Aortic enlargement,Atelectasis\nabc,R1,0,1\n")
    err = run(wrong)
    assert str(wrong) in err and "x_min" in err and "class_name" in err
    binary = tmp_path / "train.csv"
    binary.write_bytes(b"\xff\xfe\x00\x81garbage\x00\x9c")
    err = run(binary)
    assert "cannot read" in err and str(binary) in err
    empty = tmp_path / "annotations_train.csv"
    empty.write_text("")
    assert "is empty" in run(empty)
    assert not (tmp_path / "out" / "dataset.json").exists()


def test_missing_image_root_is_an_error(kaggle, tmp_path):
    _, csv_path = kaggle
    with pytest.raises(ConversionError, match="image root"):
        convert_vindr([csv_path], tmp_path / "missing", skips=SkipLog())
    with pytest.raises(ConversionError, match="given twice"):
        convert_vindr([csv_path, csv_path], tmp_path, skips=SkipLog())
