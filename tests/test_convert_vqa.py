"""VQA converters (VQA-RAD, SLAKE and SLAKE's detection boxes) on small files in the real release layouts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers_data import write_images

from pfmvg_plugin.cli.main import main
from pfmvg_plugin.data.converters.pathvqa import convert_pathvqa
from pfmvg_plugin.data.converters.slake import convert_slake, convert_slake_grounding, grounding_id
from pfmvg_plugin.data.converters.vqarad import convert_vqarad
from pfmvg_plugin.data.schema import read_records, validate_record
from pfmvg_plugin.data.skips import SkipLog


def _write_json(path: Path, data) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    return path


def _rad(qid, image, question, answer, answer_type, phrase_type="freeform", **extra):
    """One question of 'VQA_RAD Dataset Public.json', with the release's keys."""
    return {"qid": qid, "phrase_type": phrase_type, "qid_linked_id": f"03f451ca-de62-4617-9679-{qid:012d}"
            if isinstance(qid, int) else None, "image_case_url": "https://medpix.nlm.nih.gov/case?id=x",
            "image_name": image, "image_organ": "HEAD", "evaluation": "not evaluated", "question": question,
            "question_rephrase": "NULL", "question_relation": "NULL", "question_frame": "NULL",
            "question_type": "PRES", "answer": answer, "answer_type": answer_type, **extra}


RAD_ITEMS = [
    _rad(1, "synpic54610.jpg", "Are regions of the brain infarcted?", "Yes", "CLOSED"),          # [0]
    _rad(2, "synpic54610.jpg", "What is the location of the lesion?", "Left temporal lobe", "OPEN",
         phrase_type="test_freeform"),                                                            # [1]
    _rad(3, "synpic29265.jpg", "How many lesions are there?", 2, "OPEN ", phrase_type="test_para"),  # [2]
    _rad(4, "synpic100132.jpg", "Is there a pneumothorax?", "No", "CLOSED", phrase_type="para"),  # [3] image missing
    _rad(5, "synpic54610.jpg", "Is this an MRI?", "", "CLOSED"),                                  # [4] no answer
    _rad(6, "synpic54610.jpg", "   ", "Yes", "CLOSED"),                                           # [5] empty question
    _rad(7, "synpic54610.jpg", "Is this an axial image?", "Yes", "YES/NO"),                       # [6] bad type
    _rad(8, "../../etc/passwd", "Is this normal?", "Yes", "CLOSED"),                              # [7] unsafe path
    _rad(1, "synpic29265.jpg", "Duplicate qid?", "Yes", "CLOSED"),                                # [8] duplicate
    "not an object",                                                                              # [9]
    _rad(9, "synpic_broken.jpg", "Is this readable?", "No", "CLOSED"),                            # [10] corrupt image
]


@pytest.fixture
def vqarad(tmp_path):
    images = write_images(tmp_path / "VQA_RAD Image Folder", {"synpic54610.jpg": (64, 48), "synpic29265.jpg": (32, 32)})
    (images / "synpic_broken.jpg").write_bytes(b"not a jpeg")
    return _write_json(tmp_path / "VQA_RAD Dataset Public.json", RAD_ITEMS), images


def test_vqarad_records_splits_and_skips(vqarad):
    ann, images = vqarad
    skips = SkipLog()
    conv = convert_vqarad(ann, images, skips=skips)
    recs = {r["id"]: r for r in conv.records}
    assert set(recs) == {"vqarad-1", "vqarad-2", "vqarad-3"}  # vqarad-4's image is missing
    assert all(validate_record(r) == [] for r in conv.records)
    r1 = recs["vqarad-1"]
    assert (r1["task"], r1["source"], r1["split"], r1["image"]) == ("vqa", "vqarad", "train", "synpic54610.jpg")
    assert (r1["width"], r1["height"], r1["answer"], r1["answer_type"]) == (64, 48, "Yes", "closed")
    assert r1["meta"]["question_type"] == "PRES" and r1["meta"]["qid"] == "1"
    assert recs["vqarad-2"]["split"] == "test" and recs["vqarad-2"]["answer_type"] == "open"
    assert recs["vqarad-3"]["split"] == "test" and recs["vqarad-3"]["answer"] == "2"  # a JSON number
    got = {s["item"]: s["reason"] for s in skips.skipped}
    assert all(s["file"] == str(ann) and s["line"] is None for s in skips.skipped)
    assert got == {
        "[4]": "missing value: answer",
        "[5]": "missing value: question",
        "[6]": "bad answer_type: 'YES/NO' (expected OPEN or CLOSED)",
        "[7]": got["[7]"],
        "[8]": "duplicate qid: 1 (first at VQA_RAD Dataset Public.json[0])",
        "[9]": "unreadable item: str, not an object",
        "[10]": got["[10]"],
        "[3]": f"image missing: synpic100132.jpg not found under {images}",
    }
    assert got["[7]"].startswith("unsafe image path") and got["[10]"].startswith("unreadable image: synpic_broken")
    assert [s["image"] for s in skips.skipped if s["item"] == "[3]"] == ["synpic100132.jpg"]
    assert skips.warnings == []


def test_vqarad_val_carved_by_image(tmp_path):
    names = [f"synpic{i}.jpg" for i in range(40)]
    items = [_rad(i * 2 + k, n, f"Question {k}?", "Yes", "CLOSED") for i, n in enumerate(names) for k in (0, 1)]
    items.append(_rad(999, names[0], "Test?", "No", "CLOSED", phrase_type="test_freeform"))
    ann = _write_json(tmp_path / "VQA_RAD Dataset Public.json", items)
    write_images(tmp_path / "img", {n: (8, 8) for n in names})
    plain = convert_vqarad(ann, tmp_path / "img", skips=SkipLog())
    assert {r["split"] for r in plain.records} == {"train", "test"}
    conv = convert_vqarad(ann, tmp_path / "img", split_ratios="0.5,0.5,0", skips=SkipLog())
    by_image: dict[str, set] = {}
    for r in conv.records:
        if r["id"] != "vqarad-999":
            by_image.setdefault(r["image"], set()).add(r["split"])
    assert all(len(s) == 1 for s in by_image.values())  # both questions of an image share a split
    assert {s for v in by_image.values() for s in v} == {"train", "val"}
    assert next(r for r in conv.records if r["id"] == "vqarad-999")["split"] == "test"
    again = convert_vqarad(ann, tmp_path / "img", split_ratios="0.5,0.5,0", skips=SkipLog())
    assert [r["split"] for r in again.records] == [r["split"] for r in conv.records]


def test_vqarad_cli_and_unreadable_file(vqarad, tmp_path, capsys):
    ann, images = vqarad
    out = tmp_path / "out"
    args = ["data", "prepare", "vqarad", "--annotations", str(ann), "--images", str(images), "--out", str(out)]
    assert main(args) == 1  # 1 of 3 images missing
    assert "synpic100132.jpg" in capsys.readouterr().err
    assert main([*args, "--allow-missing-images"]) == 0, capsys.readouterr().err
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["task"] == "vqa" and meta["splits"] == {"train": 1, "test": 2}
    assert len(read_records(out / "test.jsonl")) == 2
    report = json.loads((out / "prepare_report.json").read_text())
    assert report["n_skipped"] == 8 and report["skipped_by_reason"]["missing value"] == 2
    assert report["skipped_by_reason"]["image missing"] == 1
    bad = tmp_path / "bad.json"
    bad.write_text("[{\"qid\": 1,")
    assert main(["data", "prepare", "vqarad", "--annotations", str(bad), "--images", str(images),
                 "--out", str(out)]) == 1
    assert "bad.json is not valid JSON" in capsys.readouterr().err
    obj = _write_json(tmp_path / "obj.json", {"qid": 1})
    assert main(["data", "prepare", "vqarad", "--annotations", str(obj), "--images", str(images),
                 "--out", str(out)]) == 1
    assert "expected a JSON list" in capsys.readouterr().err


# --- SLAKE ----------------------------------------------------------------------------------------------------------

def _slake(qid, img, question, answer, answer_type="CLOSED", lang="en", **extra):
    """One question of SLAKE's train/validate/test.json, with the release's keys."""
    return {"img_id": int(img.removeprefix("xmlab")), "img_name": f"{img}/source.jpg", "question": question,
            "answer": answer, "q_lang": lang, "location": "Lung", "modality": "X-Ray", "answer_type": answer_type,
            "base_type": "vqa", "content_type": "Organ", "triple": ["vhead", "_", "_"], "qid": qid, **extra}


@pytest.fixture
def slake(tmp_path):
    root = tmp_path / "Slake1.0"
    write_images(root / "imgs", {"xmlab0/source.jpg": (100, 80), "xmlab1/source.jpg": (60, 60),
                                 "xmlab2/source.jpg": (50, 50), "xmlab9/source.jpg": (40, 40)})
    write_images(root / "imgs", {"xmlab0/mask.png": (100, 80)})
    _write_json(root / "train.json", [
        _slake(0, "xmlab0", "Is this a CT image?", "No"),                                     # [0]
        _slake(1, "xmlab0", "Where is the abnormality?", "Right Lung, Lower Left", "OPEN"),  # [1]
        _slake(2, "xmlab0", "这张图片是CT吗?", "不是", lang="zh"),                           # [2] zh
        _slake(3, "xmlab0", "Which organ is abnormal?", None, "OPEN"),                        # [3] no answer
        _slake(4, "xmlab0", "", "Yes"),                                                       # [4] empty question
        _slake(5, "xmlab0", "Is it normal?", "Yes", "OPENED"),                                # [5] bad type
        {**_slake(6, "xmlab0", "Is it?", "Yes"), "img_name": "../xmlab0/source.jpg"},         # [6] unsafe
    ])
    _write_json(root / "validate.json", [_slake(10, "xmlab1", "What modality is this?", "MRI", "OPEN"),
                                         _slake(11, "xmlab1", "这是什么模态?", "核磁共振", "OPEN", lang="zh")])
    _write_json(root / "test.json", [_slake(20, "xmlab2", "Is the liver healthy?", "Yes"),
                                     _slake(21, "xmlab3", "Is the heart enlarged?", "No")])  # [1] image missing
    _write_json(root / "imgs/xmlab0/detection.json", [{"Liver": [10, 20, 30, 40]}, {"Liver": [50, 20, 10, 10]},
                                                      {"Spleen": [60, 10, 20, 20]}, {"Kidney": [90, 10, 30, 20]},
                                                      {"Heart": [1, 2, "x", 4]}])
    _write_json(root / "imgs/xmlab1/detection.json", [{"Brain Edema": [5.5, 6, 20, 30]}])
    _write_json(root / "imgs/xmlab2/detection.json", [])
    _write_json(root / "imgs/xmlab9/detection.json", [{"Lung": [0, 0, 41, 40]}])  # no question: hashed; clipped
    return root


def test_slake_english_records_and_skips(slake):
    skips = SkipLog()
    conv = convert_slake(slake, skips=skips)
    recs = {r["id"]: r for r in conv.records}
    assert set(recs) == {"slake-0", "slake-1", "slake-10", "slake-20"}  # slake-21's image is missing
    assert all(validate_record(r) == [] for r in conv.records)
    r0 = recs["slake-0"]
    assert (r0["split"], r0["image"], r0["width"], r0["height"]) == ("train", "xmlab0/source.jpg", 100, 80)
    assert (r0["answer_type"], r0["meta"]["q_lang"], r0["meta"]["modality"]) == ("closed", "en", "X-Ray")
    assert recs["slake-1"]["answer_type"] == "open"
    assert recs["slake-10"]["split"] == "val" and recs["slake-20"]["split"] == "test"
    assert conv.image_root == slake / "imgs"
    assert conv.extra["n_other_language"] == {"zh": 2}
    got = {(Path(s["file"]).name, s["item"]): s["reason"] for s in skips.skipped}
    assert set(got) == {("train.json", f"[{i}]") for i in (3, 4, 5, 6)} | {("test.json", "[1]")}
    assert got[("test.json", "[1]")] == f"image missing: xmlab3/source.jpg not found under {slake / 'imgs'}"
    assert got[("train.json", "[3]")] == "missing value: answer"
    assert got[("train.json", "[4]")] == "missing value: question"
    assert got[("train.json", "[5]")].startswith("bad answer_type: 'OPENED'")
    assert got[("train.json", "[6]")].startswith("unsafe image path")
    assert skips.warnings == []


def test_slake_languages(slake):
    zh = convert_slake(slake, lang="zh", skips=SkipLog())
    assert sorted(r["id"] for r in zh.records) == ["slake-11", "slake-2"]
    assert {r["question"] for r in zh.records} == {"这张图片是CT吗?", "这是什么模态?"}
    both = convert_slake(slake, lang="all", skips=SkipLog())
    assert len(both.records) == 6 and both.extra["n_other_language"] == {}


def test_slake_missing_split_file_and_cli(slake, tmp_path, capsys):
    (slake / "validate.json").unlink()
    out = tmp_path / "out"
    args = ["data", "prepare", "slake", "--root", str(slake), "--lang", "all", "--out", str(out)]
    assert main(args) == 1  # xmlab3 missing: 1 of 3 images
    assert main([*args, "--allow-missing-images"]) == 0, capsys.readouterr().err
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["splits"] == {"train": 3, "test": 1} and meta["lang"] == "all"
    report = json.loads((out / "prepare_report.json").read_text())
    assert report["warnings_by_kind"] == {"split file missing": 1}
    assert report["skipped_by_reason"] == {"missing value": 2, "bad answer_type": 1, "unsafe image path": 1,
                                           "image missing": 1}
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["data", "prepare", "slake", "--root", str(empty), "--out", str(out)]) == 1
    assert "Slake1.0" in capsys.readouterr().err


def test_slake_grounding(slake):
    skips = SkipLog()
    conv = convert_slake_grounding(slake, skips=skips)
    recs = {(r["meta"]["folder"], r["phrase"]): r for r in conv.records}
    assert set(recs) == {("xmlab0", "Liver"), ("xmlab0", "Spleen"), ("xmlab1", "Brain Edema"), ("xmlab9", "Lung")}
    assert all(validate_record(r) == [] for r in conv.records)
    liver = recs[("xmlab0", "Liver")]
    assert liver["id"] == grounding_id("xmlab0", "Liver") and liver["category"] == "Liver"
    assert (liver["task"], liver["image"], liver["width"], liver["height"]) == ("grounding", "xmlab0/source.jpg",
                                                                                100, 80)
    assert liver["boxes"] == [[10.0, 20.0, 40.0, 60.0], [50.0, 20.0, 60.0, 30.0]] and liver["split"] == "train"
    assert recs[("xmlab1", "Brain Edema")]["split"] == "val"
    assert recs[("xmlab1", "Brain Edema")]["boxes"] == [[5.5, 6.0, 25.5, 36.0]]
    assert recs[("xmlab9", "Lung")]["boxes"] == [[0.0, 0.0, 40.0, 40.0]]  # 1 px overshoot clipped
    got = {s["item"]: s["reason"] for s in skips.skipped}
    assert set(got) == {"[3]", "[4]"} and got["[3]"].startswith("box outside image")
    assert got["[4]"] == "unreadable number: w='x'"
    assert {w["message"].split(":")[0] for w in skips.warnings} == {"image in no split file", "box clipped"}


def test_slake_grounding_cli(slake, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["data", "prepare", "slake_grounding", "--root", str(slake), "--out", str(out)]) == 0, \
        capsys.readouterr().err
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["task"] == "grounding" and sum(meta["splits"].values()) == 4
    assert meta["categories"]["Liver"] == 1


# --- PathVQA --------------------------------------------------------------------------------------------------------

def test_pathvqa_split_files(tmp_path, capsys):
    images = write_images(tmp_path / "images", {"train/train_0422.jpg": (40, 30), "test/test_0001.jpg": (20, 20)})
    train = _write_json(tmp_path / "train_qa.json", [
        {"image": "train_0422", "question": "Does this image show necrosis?", "answer": "yes"},   # [0]
        {"image": "train_0422", "question": "What is present?", "answer": "Granuloma"},           # [1]
        {"image": "train_0423", "question": "Is it benign?", "answer": "No"},                     # [2] missing image
        {"image": "train_0422", "question": "How?", "answer": " "},                               # [3] no answer
        {"image": "../x.jpg", "question": "Is it?", "answer": "yes"},                              # [4] unsafe
    ])
    test = tmp_path / "test_qa.jsonl"
    test.write_text('{"image": "test_0001", "question": "Where?", "answer": "liver"}\n\n'
                    '{"image": "test/test_0001.jpg", "question": "Is this liver?", "answer": "yes"}\n')
    skips = SkipLog()
    conv = convert_pathvqa({"train": train, "val": None, "test": test}, images, skips=skips)
    recs = {r["id"]: r for r in conv.records}
    assert set(recs) == {"pathvqa-train-0", "pathvqa-train-1", "pathvqa-test-0", "pathvqa-test-1"}
    assert all(validate_record(r) == [] for r in conv.records)
    r0 = recs["pathvqa-train-0"]
    assert (r0["image"], r0["width"], r0["answer_type"]) == ("train/train_0422.jpg", 40, "closed")
    assert recs["pathvqa-train-1"]["answer_type"] == "open" and recs["pathvqa-test-1"]["answer_type"] == "closed"
    assert recs["pathvqa-test-1"]["image"] == "test/test_0001.jpg" and recs["pathvqa-test-1"]["split"] == "test"
    got = {s["item"]: s["reason"] for s in skips.skipped}
    assert got["[3]"] == "missing value: answer" and got["[4]"].startswith("unsafe image path") and len(got) == 3
    assert got["[2]"].startswith(f"image missing: train/train_0423.jpg not found under {images} (nor train_0423.jpg")
    assert skips.warnings == []
    out = tmp_path / "out"
    args = ["data", "prepare", "pathvqa", "--train", str(train), "--test", str(test), "--images", str(images),
            "--out", str(out)]
    assert main(args) == 1  # 1 of 3 images missing
    assert main([*args, "--allow-missing-images"]) == 0, capsys.readouterr().err
    assert json.loads((out / "dataset.json").read_text())["splits"] == {"train": 2, "test": 2}
    assert main(["data", "prepare", "pathvqa", "--images", str(images), "--out", str(out)]) == 1
    assert "--train" in capsys.readouterr().err
