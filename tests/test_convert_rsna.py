"""RSNA Pneumonia converter on a small stage_2_train_labels.csv in the real format, with real DICOM files."""

from __future__ import annotations

import json
import uuid
import zipfile

import numpy as np
import pytest
from helpers_data import write_dicom, write_images

from pfmvg_plugin.cli.main import main
from pfmvg_plugin.data.converters import ConversionError
from pfmvg_plugin.data.converters.rsna import convert_rsna
from pfmvg_plugin.data.images import load_image
from pfmvg_plugin.data.schema import read_records, validate_record
from pfmvg_plugin.data.skips import SkipLog

pydicom = pytest.importorskip("pydicom")

HEADER = "patientId,x,y,width,height,Target"


def pid(name: str) -> str:
    """A patientId in RSNA's form (a UUID), derived from a readable name."""
    return str(uuid.uuid5(uuid.NAMESPACE_DNS, name))


P1, P2, P3, NEG, NEG2 = (pid(n) for n in ("p1", "p2", "p3", "neg", "neg2"))


@pytest.fixture(scope="module")
def rsna(tmp_path_factory):
    root = tmp_path_factory.mktemp("rsna")
    images = root / "stage_2_train_images"
    write_dicom(images / f"{P1}.dcm", 1024, 1024)
    write_dicom(images / f"{P2}.dcm", 800, 600, "MONOCHROME1")  # not 1024: the size must come from the header
    rows = [
        HEADER,                                    # 1
        f"{NEG},,,,,0",                            # 2
        f"{P1},264.0,152.0,213.0,379.0,1",         # 3
        f"{P1},562.0,152.0,256.0,453.0,1",         # 4
        f"{NEG2},,,,,0",                           # 5
        f"{P2},323.0,177.0,160.0,104.0,1",         # 6
        f"{P2},695.0,175.0,162.0,137.0,1",         # 7 695 + 162 > 800: outside
        f"{P3},100.0,200.0,300.0,400.0,1",         # 8 no image: skipped
        f"{P1},900.0,200.0,200.0,100.0,1",         # 9 900 + 200 > 1024: outside
        f"{P1},10.0,10.0,20.0,20.0,2",             # 10 bad Target
        f"{P1},12a,10.0,20.0,20.0,1",              # 11 unreadable number
        f"{P1},10.0,10.0,0.0,20.0,1",              # 12 zero width
        f"{P1},10.0,10.0,20.0,-5.0,1",             # 13 negative height
        f"{P1},10.0,10.0",                         # 14 short row
        "../../etc/passwd,1.0,1.0,2.0,2.0,1",      # 15 escapes the root
        f"{P2},,,,,1",                             # 16 positive without coordinates
        f"{P3},1.0,2.0,3.0,4.0,",                  # 17 empty Target
        ",1.0,2.0,3.0,4.0,1",                      # 18 no patientId
        f"{NEG},,,,,0",                            # 19
    ]
    labels = root / "stage_2_train_labels.csv"
    labels.write_text("\n".join(rows) + "\n")
    return root, labels


def test_records_grouping_and_sizes(rsna):
    root, labels = rsna
    skips = SkipLog()
    conv = convert_rsna(labels, root, skips=skips)
    recs = {r["meta"]["patient_id"]: r for r in conv.records}
    assert set(recs) == {P1, P2}  # P3's image is missing: its rows are skipped, not kept with a guessed size
    for r in conv.records:
        assert validate_record(r) == []
        assert (r["phrase"], r["category"], r["source"], r["task"]) == ("pneumonia", "Pneumonia", "rsna", "grounding")
        assert r["id"] == f"rsna-{r['meta']['patient_id']}"
    p1 = recs[P1]
    assert p1["image"] == f"stage_2_train_images/{P1}.dcm" and (p1["width"], p1["height"]) == (1024, 1024)
    assert p1["boxes"] == [[264.0, 152.0, 477.0, 531.0], [562.0, 152.0, 818.0, 605.0]]
    assert p1["meta"]["lines"] == [3, 4]
    p2 = recs[P2]
    assert (p2["width"], p2["height"]) == (800, 600) and p2["boxes"] == [[323.0, 177.0, 483.0, 281.0]]
    assert (root / p1["image"]).is_file()


def test_skip_report_and_warnings(rsna):
    root, labels = rsna
    skips = SkipLog()
    convert_rsna(labels, root, skips=skips)
    got = {s["line"]: s["reason"] for s in skips.skipped}
    assert len(got) == len(skips.skipped) and all(s["file"] == str(labels) for s in skips.skipped)
    assert {ln for ln, r in got.items() if r == "negative (Target=0)"} == {2, 5, 19}
    assert got[7].startswith("box outside image") and "800x600" in got[7]
    assert got[8].startswith(f"image missing: stage_2_train_images/{P3}.dcm not found under {root}")
    assert got[9].startswith("box outside image") and "1024x1024" in got[9]
    assert got[10] == "bad Target: '2' (expected 0 or 1)"
    assert got[11] == "unreadable number: x='12a'"
    assert got[12].startswith("zero or negative size") and got[13].startswith("zero or negative size")
    assert got[14].startswith("missing columns: width, height, Target")
    assert got[15].startswith("path escapes the image root")
    assert got[16].startswith("missing coordinates")
    assert got[17].startswith("bad Target: ''")
    assert got[18] == "missing patientId"
    assert set(got) == {2, 5, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19}
    assert skips.by_reason()["negative (Target=0)"] == 3 and skips.by_reason()["image missing"] == 1
    assert skips.warnings == [] and list(skips.missing_images) == [f"stage_2_train_images/{P3}.dcm"]


def test_images_dir_itself_and_zip_labels(rsna, tmp_path):
    root, labels = rsna
    zipped = tmp_path / "stage_2_train_labels.csv.zip"
    with zipfile.ZipFile(zipped, "w") as zf:
        zf.write(labels, "stage_2_train_labels.csv")
    conv = convert_rsna(zipped, root / "stage_2_train_images", skips=SkipLog())
    recs = {r["meta"]["patient_id"]: r for r in conv.records}
    assert recs[P1]["image"] == f"{P1}.dcm" and recs[P2]["image"] == f"{P2}.dcm"
    assert conv.image_root == root / "stage_2_train_images"


def test_split_is_deterministic_and_per_patient(tmp_path):
    patients = [pid(f"patient{i}") for i in range(60)]
    write_images(tmp_path / "png", {"first.png": (800, 600)})
    for p in patients:  # PNG exports of the same name serve when there is no DICOM
        (tmp_path / "png" / f"{p}.png").write_bytes((tmp_path / "png" / "first.png").read_bytes())
    rows = [HEADER] + [f"{p},{100 + i}.0,200.0,150.0,300.0,1" for i, p in enumerate(patients)]
    rows += [f"{p},600.0,220.0,180.0,280.0,1" for p in patients[::2]]
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")

    def splits(**kw):
        conv = convert_rsna(tmp_path / "labels.csv", tmp_path, skips=SkipLog(), **kw)
        assert len(conv.records) == 60  # one record per patient, whatever the number of boxes
        return {r["meta"]["patient_id"]: r["split"] for r in conv.records}

    first = splits()
    assert first == splits() and set(first.values()) == {"train", "val", "test"}
    assert splits(seed=5) != first
    assert set(splits(split_ratios=(0.0, 0.0, 1.0)).values()) == {"test"}


def test_monochrome1_dicom_loads_inverted(rsna):
    root, _ = rsna
    px = np.asarray(load_image(root / "stage_2_train_images" / f"{P2}.dcm", mode="L"))
    assert px.shape == (600, 800)
    assert px[0, 0] > 250 and px[0, -1] < 5  # raw values rise left to right; MONOCHROME1 shows low as bright


def test_cli_end_to_end(rsna, tmp_path, capsys):
    root, labels = rsna
    out = tmp_path / "out"
    args = ["data", "prepare", "rsna", "--labels", str(labels), "--images", str(root),
            "--split-ratios", "0.6,0.2,0.2", "--seed", "1", "--out", str(out)]
    assert main(args) == 1  # 1 of 3 images missing
    assert "1 of 3 images (33.3%) are missing" in capsys.readouterr().err
    rc = main([*args, "--allow-missing-images"])
    assert rc == 0, capsys.readouterr().err
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["name"] == "rsna" and sum(meta["splits"].values()) == 2
    assert meta["categories"] == {"Pneumonia": 2}
    records = [r for split in meta["splits"] for r in read_records(out / f"{split}.jsonl")]
    assert sorted(r["meta"]["patient_id"] for r in records) == sorted([P1, P2])
    report = json.loads((out / "prepare_report.json").read_text())
    assert report["skipped_by_reason"]["negative (Target=0)"] == 3
    assert report["skipped_by_reason"]["image missing"] == 1 and report["warnings_by_kind"] == {}
    assert {"file": str(labels), "line": 11, "reason": "unreadable number: x='12a'", "patient_id": P1} \
        in report["skipped"]


def test_unreadable_inputs(rsna, tmp_path, capsys):
    root, _ = rsna
    out = str(tmp_path / "out")
    assert main(["data", "prepare", "rsna", "--labels", str(tmp_path / "nope.csv"), "--images", str(root),
                 "--out", out]) == 1
    assert "nope.csv" in capsys.readouterr().err
    details = tmp_path / "stage_2_detailed_class_info.csv"  # the other RSNA CSV, passed by mistake
    details.write_text("patientId,class\n0004cfab-14fd-4e49-80ba-63a80b6bddd6,No Lung Opacity / Not Normal\n")
    assert main(["data", "prepare", "rsna", "--labels", str(details), "--images", str(root), "--out", out]) == 1
    err = capsys.readouterr().err
    assert str(details) in err and "x, y, width, height, Target" in err
    assert main(["data", "prepare", "rsna", "--labels", str(details), "--images", str(root),
                 "--split-ratios", "a,b", "--out", out]) == 1
    assert "split ratios" in capsys.readouterr().err
    with pytest.raises(ConversionError, match="image folder"):
        convert_rsna(details, tmp_path / "no-images", skips=SkipLog())


def test_corrupt_dicom_is_skipped_not_fatal(tmp_path):
    images = tmp_path / "stage_2_train_images"
    images.mkdir()
    (images / f"{P1}.dcm").write_bytes(b"not a dicom file at all")
    (tmp_path / "labels.csv").write_text(f"{HEADER}\n{P1},264.0,152.0,213.0,379.0,1\n{P1},562.0,152.0,256.0,453.0,1\n")
    skips = SkipLog()
    conv = convert_rsna(tmp_path / "labels.csv", tmp_path, skips=skips)
    assert conv.records == []
    assert [(s["line"], s["reason"].split(":")[0]) for s in skips.skipped] == [(2, "unreadable image"),
                                                                              (3, "unreadable image")]
