"""Every converter that checks images: a record whose image is missing is skipped (never kept), listed in
prepare_report.json, and ``pfmvg data prepare`` refuses too many missing images unless --allow-missing-images.

Each release below holds two records, one of whose image is absent (1 of 2 images missing: above the default 5 %).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers_data import write_csv, write_images

from pfmvg_plugin.cli.main import main
from pfmvg_plugin.data.converters import load_converters
from pfmvg_plugin.data.store import PreparedDataset


@dataclass
class Release:
    args: list[str]  # the converter's arguments (without --out)
    file: Path  # the annotation file the skipped entry names
    where: dict  # {"line": n} or {"item": "[i]"}: where the record sits in ``file``
    image: str  # the missing image's path as listed


def _json(path: Path, data) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


def chestxray8(tmp: Path) -> Release:
    csv_path = write_csv(tmp / "BBox_List_2017.csv", "Image Index,Finding Label,Bbox [x,y,w,h],,,",
                         ["00000001_000.png,Nodule,10,10,20,20", "00000002_000.png,Mass,10,10,20,20"])
    images = write_images(tmp / "nih", {"images_001/images/00000001_000.png": (64, 64)})
    return Release(["--bbox-csv", str(csv_path), "--images", str(images)], csv_path, {"line": 3}, "00000002_000.png")


def mscxr(tmp: Path) -> Release:
    paths = [f"files/p10/p1000000{i}/s5000000{i}/dicom{i}.jpg" for i in (1, 2)]
    csv_path = write_csv(tmp / "MS_CXR_Local_Alignment_v1.1.0.csv",
                         "dicom_id,category_name,label_text,path,x,y,w,h,image_width,image_height,split",
                         [f"dicom{i},Edema,Mild edema,{p},5,5,10,10,64,64,test" for i, p in zip((1, 2), paths)])
    images = write_images(tmp / "mimic-cxr-jpg", {paths[0]: (64, 64)})
    return Release(["--annotations", str(csv_path), "--images", str(images)], csv_path, {"line": 3}, paths[1])


def vindr(tmp: Path) -> Release:
    a, b = "a" * 32, "b" * 32
    csv_path = write_csv(tmp / "train.csv", "image_id,class_name,class_id,rad_id,x_min,y_min,x_max,y_max",
                         [f"{a},Cardiomegaly,3,R8,10,10,30,30", f"{b},Cardiomegaly,3,R8,10,10,30,30"])
    images = write_images(tmp / "vinbigdata", {f"train/{a}.png": (64, 64)})
    return Release(["--annotations", str(csv_path), "--images", str(images)], csv_path, {"line": 3}, b)


def rsna(tmp: Path) -> Release:
    p1, p2 = "00436515-870c-4b36-a041-de91049b9ab4", "00704310-78a8-4b38-8475-49f4573b2dbb"
    csv_path = write_csv(tmp / "stage_2_train_labels.csv", "patientId,x,y,width,height,Target",
                         [f"{p1},10,10,20,20,1", f"{p2},10,10,20,20,1"])
    images = write_images(tmp / "rsna", {f"stage_2_train_images/{p1}.png": (64, 64)})
    return Release(["--labels", str(csv_path), "--images", str(images)], csv_path, {"line": 3},
                   f"stage_2_train_images/{p2}.dcm")


def vqarad(tmp: Path) -> Release:
    items = [{"qid": i, "image_name": f"synpic{i}.jpg", "question": "Is this normal?", "answer": "Yes",
              "answer_type": "CLOSED", "phrase_type": "test_freeform"} for i in (1, 2)]
    ann = _json(tmp / "VQA_RAD Dataset Public.json", items)
    images = write_images(tmp / "VQA_RAD Image Folder", {"synpic1.jpg": (32, 32)})
    return Release(["--annotations", str(ann), "--images", str(images)], ann, {"item": "[1]"}, "synpic2.jpg")


def _slake_root(tmp: Path) -> Path:
    root = tmp / "Slake1.0"
    _json(root / "test.json", [{"qid": i, "img_id": i, "img_name": f"xmlab{i}/source.jpg", "question": "Is it CT?",
                                "answer": "No", "q_lang": "en", "answer_type": "CLOSED"} for i in (0, 1)])
    write_images(root / "imgs", {"xmlab0/source.jpg": (32, 32)})
    return root


def slake(tmp: Path) -> Release:
    root = _slake_root(tmp)
    return Release(["--root", str(root)], root / "test.json", {"item": "[1]"}, "xmlab1/source.jpg")


def slake_grounding(tmp: Path) -> Release:
    root = _slake_root(tmp)
    for i in (0, 1):
        _json(root / f"imgs/xmlab{i}/detection.json", [{"Liver": [2, 2, 10, 10]}])
    return Release(["--root", str(root)], root / "imgs/xmlab1/detection.json", {"item": "[0]"}, "xmlab1/source.jpg")


def pathvqa(tmp: Path) -> Release:
    train = _json(tmp / "train_qa.json", [{"image": f"train_000{i}", "question": "Is it benign?", "answer": "yes"}
                                          for i in (1, 2)])
    images = write_images(tmp / "images", {"train/train_0001.jpg": (32, 32)})
    return Release(["--train", str(train), "--images", str(images)], train, {"item": "[1]"}, "train/train_0002.jpg")


def iuxray(tmp: Path) -> Release:
    ann = _json(tmp / "iu_xray/annotation.json", {"train": [
        {"id": f"CXR{i}_IM-000{i}", "report": "No acute disease.", "image_path": [f"CXR{i}_IM-000{i}/0.png"]}
        for i in (1, 2)]})
    images = write_images(tmp / "iu_xray/images", {"CXR1_IM-0001/0.png": (32, 32)})
    return Release(["--annotations", str(ann), "--images", str(images)], ann, {"item": "train[1]"},
                   "CXR2_IM-0002/0.png")


def mimiccxr_reports(tmp: Path) -> Release:
    rels = [f"p10/p1000000{i}/s5000000{i}/dicom{i}.jpg" for i in (1, 2)]
    ann = _json(tmp / "mimic_cxr/annotation.json", {"test": [
        {"id": f"dicom{i}", "report": "No acute disease.", "image_path": [rel]} for i, rel in zip((1, 2), rels)]})
    root = write_images(tmp / "mimic-cxr-jpg", {f"files/{rels[0]}": (32, 32)})
    return Release(["--annotations", str(ann), "--images", str(root)], ann, {"item": "test[1]"}, f"files/{rels[1]}")


RELEASES: dict[str, Callable[[Path], Release]] = {f.__name__: f for f in (
    chestxray8, mscxr, vindr, rsna, vqarad, slake, slake_grounding, pathvqa, iuxray, mimiccxr_reports)}


def test_every_converter_that_checks_images_is_covered():
    assert {name for name, spec in load_converters().items() if spec.checks_images} == set(RELEASES)


@pytest.mark.parametrize("name", RELEASES)
def test_missing_image_is_skipped_listed_and_refused(name, tmp_path, capsys):
    release = RELEASES[name](tmp_path)
    out = tmp_path / "out"
    args = ["data", "prepare", name, *release.args, "--out", str(out)]

    assert main(args) == 1
    err = capsys.readouterr().err
    assert "1 of 2 images (50.0%) are missing" in err and release.image in err and "--allow-missing-images" in err
    assert not (out / "dataset.json").exists()

    assert main([*args, "--allow-missing-images"]) == 0
    err = capsys.readouterr().err
    assert f"{name}: wrote 1 records" in err and "image missing 1" in err and str(out / "prepare_report.json") in err
    report = json.loads((out / "prepare_report.json").read_text())
    (entry,) = [s for s in report["skipped"] if s["reason"].startswith("image missing")]
    assert entry["file"] == str(release.file) and entry["image"] == release.image
    assert {k: entry.get(k) for k in release.where} == release.where
    assert entry["reason"].startswith(f"image missing: {release.image} not found under ")
    ds = PreparedDataset(out)
    (record,) = [r for split in ds.meta["splits"] for r in ds.records(split)]
    assert ds.image_path(record).is_file() and record["image"] != release.image


def test_missing_image_fraction_flag(tmp_path, capsys):
    release = chestxray8(tmp_path)
    args = ["data", "prepare", "chestxray8", *release.args, "--out", str(tmp_path / "out")]
    assert main([*args, "--max-missing-images-fraction", "0.5"]) == 0  # exactly half: not more than allowed
    capsys.readouterr()
    assert main([*args, "--max-missing-images-fraction", "0.49"]) == 1
    assert "The dataset already in" in capsys.readouterr().err  # the earlier run's, left alone: say so
    with pytest.raises(SystemExit):
        main([*args, "--max-missing-images-fraction", "1.5"])
    assert "between 0 and 1" in capsys.readouterr().err
