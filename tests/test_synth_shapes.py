"""synthshapes: the generic grounding pretraining set (named shapes, one or two per image, tight boxes)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from pfmvg_plugin.cli.main import main
from pfmvg_plugin.data.schema import read_records, validate_record
from pfmvg_plugin.data.store import PreparedDataset
from pfmvg_plugin.data.synth import shapes


@pytest.fixture(scope="module")
def shapes_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("shapes") / "synthshapes"
    shapes.generate_synthshapes(out, n=40, seed=3)
    return out


def _all(out):
    return [r for split in ("train", "val", "test") if (out / f"{split}.jsonl").is_file()
            for r in read_records(out / f"{split}.jsonl")]


def test_records_follow_the_schema_and_name_their_shape(shapes_dir):
    records = _all(shapes_dir)
    assert len({r["image"] for r in records}) == 40
    for r in records:
        assert validate_record(r) == []
        assert r["task"] == "grounding" and r["category"] in shapes.SHAPES
        assert r["category"] in r["phrase"] and (r["meta"]["size"] in r["phrase"] or "the " + r["category"] ==
                                                 r["phrase"])
    ds = PreparedDataset(shapes_dir)
    assert ds.name == "synthshapes" and sum(ds.meta["splits"].values()) == len(records)


def test_two_shapes_differ_in_kind_and_do_not_overlap(shapes_dir):
    by_image: dict[str, list[dict]] = {}
    for r in _all(shapes_dir):
        by_image.setdefault(r["image"], []).append(r)
    pairs = [rs for rs in by_image.values() if len(rs) == 2]
    assert pairs, "some images should hold two shapes"
    for a, b in pairs:
        assert a["category"] != b["category"]
        (ax1, ay1, ax2, ay2), (bx1, by1, bx2, by2) = a["boxes"][0], b["boxes"][0]
        assert ax2 <= bx1 or bx2 <= ax1 or ay2 <= by1 or by2 <= ay1


def test_boxes_are_tight_around_what_was_drawn(shapes_dir):
    """Inside the box the image is clearly brighter than in the 3-px frame just outside it."""
    for r in _all(shapes_dir)[:30]:
        img = np.asarray(Image.open(shapes_dir / r["image"]), dtype=np.float32)
        x1, y1, x2, y2 = (int(v) for v in r["boxes"][0])
        assert 0 <= x1 < x2 <= r["width"] and 0 <= y1 < y2 <= r["height"] and min(x2 - x1, y2 - y1) >= 2
        inside = img[y1:y2, x1:x2].mean()
        frame = np.zeros_like(img, dtype=bool)
        frame[max(0, y1 - 3):y2 + 3, max(0, x1 - 3):x2 + 3] = True
        frame[y1:y2, x1:x2] = False
        assert inside > img[frame].mean() + 20, r["id"]


def test_same_seed_same_bytes(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    shapes.generate_synthshapes(a, n=5, size=64, seed=7)
    shapes.generate_synthshapes(b, n=5, size=64, seed=7, workers=2)
    assert _all(a) == _all(b)
    for i in range(5):
        assert (a / "images" / f"{i:06d}.png").read_bytes() == (b / "images" / f"{i:06d}.png").read_bytes()


def test_cli_writes_the_dataset_and_rejects_bad_arguments(tmp_path, capsys):
    out = tmp_path / "cli"
    assert main(["data", "shapes", "--n", "4", "--size", "64", "--out", str(out)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["name"] == "synthshapes" and (out / "dataset.json").is_file()
    assert main(["data", "shapes", "--n", "0", "--out", str(tmp_path / "bad")]) == 1
    assert "--n must be at least 1" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["data", "shapes", "--help"])
