"""Image-blind baselines, MS-CXR export round trip through the real converter, and box overlays."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from PIL import Image

from pfmvg_plugin.baselines import PriorBaseline, phrase_keys
from pfmvg_plugin.cli.main import main as pfmvg
from pfmvg_plugin.data.export import MSCXR_COLUMNS_V110, export_mscxr_csv
from pfmvg_plugin.data.store import PreparedDataset
from pfmvg_plugin.viz import GT_COLOR, PRED_COLOR, Panel, contact_sheet, draw_boxes


def rec(i, phrase, cat, box, split="train", w=200, h=100):
    return {"id": f"r{i}", "task": "grounding", "source": "t", "split": split, "image": f"images/{i}.png",
            "width": w, "height": h, "phrase": phrase, "boxes": [list(box)], "category": cat}


def test_phrase_keys():
    assert phrase_keys("Small nodule in the RIGHT upper zone") == ("right", "upper")
    assert phrase_keys("left basal effusion") == ("left", "lower")
    assert phrase_keys("cardiomegaly") == (None, None)


def test_priors_back_off_from_phrase_to_category_to_global():
    train = [
        rec(0, "nodule right upper", "Nodule", (0, 0, 20, 10)),
        rec(1, "nodule right upper", "Nodule", (20, 10, 40, 20)),
        rec(2, "nodule left lower", "Nodule", (100, 50, 120, 60)),
        rec(3, "effusion", "Effusion", (0, 50, 100, 100), w=100, h=100),
    ]
    phrase = PriorBaseline("phrase_prior").fit(train)
    # normalised means: (0,0,.1,.1) and (.1,.1,.2,.2) -> (.05,.05,.15,.15), scaled to a 400x200 image
    assert phrase.predict(rec(9, "nodule right upper", "Nodule", (0, 0, 1, 1), w=400, h=200)) == pytest.approx(
        (20, 10, 60, 30))
    # unseen side/zone backs off to the category mean over all three nodules
    cat_mean = np.array([[0, 0, .1, .1], [.1, .1, .2, .2], [.5, .5, .6, .6]]).mean(0) * [200, 100, 200, 100]
    assert phrase.predict(rec(9, "nodule", "Nodule", (0, 0, 1, 1))) == pytest.approx(tuple(cat_mean))
    glob = PriorBaseline("mean_box").fit(train)
    want = np.array([[0, 0, .1, .1], [.1, .1, .2, .2], [.5, .5, .6, .6], [0, .5, 1, 1]]).mean(0) * [200, 100, 200, 100]
    assert glob.predict(rec(9, "x", "Unknown", (0, 0, 1, 1))) == pytest.approx(tuple(want))
    with pytest.raises(ValueError, match="zero training records"):
        PriorBaseline().fit([])


def test_export_mscxr_round_trips_through_the_converter(tmp_path):
    images = tmp_path / "imgs"
    (images / "images").mkdir(parents=True)
    recs = [rec(0, "left effusion", "Pleural Effusion", (10, 20, 110, 80), "test"),
            rec(1, "right nodule", "Nodule", (30, 30, 50, 45), "train")]
    recs[0]["boxes"].append([120, 20, 180, 60])
    for r in recs:
        Image.new("L", (r["width"], r["height"])).save(images / r["image"])
    csv_path = tmp_path / "MS_CXR_Local_Alignment_v1.1.0.csv"
    assert export_mscxr_csv(recs, csv_path) == 3
    with csv_path.open() as f:
        assert tuple(next(csv.reader(f))) == MSCXR_COLUMNS_V110
    assert pfmvg(["data", "prepare", "mscxr", "--annotations", str(csv_path), "--images", str(images),
                  "--out", str(tmp_path / "out")]) == 0
    ds = PreparedDataset(tmp_path / "out")
    (test,), (train,) = ds.records("test"), ds.records("train")
    assert sorted(test["boxes"]) == [[10, 20, 110, 80], [120, 20, 180, 60]]
    assert train["phrase"] == "right nodule" and train["category"] == "Nodule"
    assert ds.image_path(test).is_file()


def test_overlay_colours_and_sheet_size():
    img = Image.new("L", (100, 50), 0)
    out = draw_boxes(img, gt_boxes=[(10, 10, 40, 40)], pred_boxes=[(60, 5, 90, 45)], width=2)
    assert out.getpixel((10, 20)) == GT_COLOR and out.getpixel((60, 20)) == PRED_COLOR
    assert out.getpixel((25, 25)) == (0, 0, 0)
    sheet = contact_sheet([Panel(img, caption="a very long caption " * 10)] * 5, columns=4, tile=64, title="t")
    assert sheet.width == 256 and sheet.height > 2 * 64
