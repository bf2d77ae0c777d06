"""synthcxr: the procedural chest-radiograph grounding dataset (determinism, schema, anatomy-consistent boxes, CLI)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pfmvg_plugin.cli.main import main
from pfmvg_plugin.data import synth
from pfmvg_plugin.data.schema import read_records, validate_record
from pfmvg_plugin.data.store import PreparedDataset
from pfmvg_plugin.data.synth import findings as synth_findings
from pfmvg_plugin.data.synth import raster as synth_raster

SIZE = 128  # small images keep the suite fast; geometry is resolution-independent
N_CASES = 160


def _files(root: Path) -> dict[str, bytes]:
    """Every JSONL and PNG under ``root`` (dataset.json carries a timestamp, so it is left out)."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.suffix in (".jsonl", ".png")}


@pytest.fixture(scope="module")
def cases():
    """(index, image array, reference array without findings, findings, masks) for a range of images."""
    out = []
    for i in range(N_CASES):
        image, findings, masks = synth.render_case(synth.image_rng(0, i), SIZE)
        ref, _, _ = synth.render_case(synth.image_rng(0, i), SIZE, draw_findings=False)
        out.append((i, np.asarray(image, dtype=np.float64), np.asarray(ref, dtype=np.float64), findings, masks))
    return out


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth") / "ds"
    summary = synth.generate_synthcxr(out, n=30, size=SIZE, seed=3)
    return out, summary


# ---------------------------------------------------------------------------------------------------------------------
# determinism


def test_same_seed_gives_identical_files_and_other_seed_differs(tmp_path):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    synth.generate_synthcxr(a, n=8, size=SIZE, seed=11)
    synth.generate_synthcxr(b, n=8, size=SIZE, seed=11)
    synth.generate_synthcxr(c, n=8, size=SIZE, seed=12)
    files_a, files_b, files_c = _files(a), _files(b), _files(c)
    assert len([k for k in files_a if k.endswith(".png")]) == 8
    assert files_a == files_b
    assert files_a.keys() == files_c.keys()
    assert all(files_a[k] != files_c[k] for k in files_a if k.endswith(".png"))
    assert files_a["train.jsonl"] != files_c["train.jsonl"]


def test_parallel_generation_matches_serial(tmp_path):
    synth.generate_synthcxr(tmp_path / "serial", n=10, size=SIZE, seed=5, workers=1)
    synth.generate_synthcxr(tmp_path / "parallel", n=10, size=SIZE, seed=5, workers=2)
    assert _files(tmp_path / "serial") == _files(tmp_path / "parallel")


def test_image_depends_only_on_seed_and_index():
    a, fa, _ = synth.render_case(synth.image_rng(7, 42), SIZE)
    b, fb, _ = synth.render_case(synth.image_rng(7, 42), SIZE)
    assert a.tobytes() == b.tobytes()
    assert [(f.phrase, f.box) for f in fa] == [(f.phrase, f.box) for f in fb]


# ---------------------------------------------------------------------------------------------------------------------
# dataset files and schema


def test_dataset_records_follow_the_schema(dataset):
    out, summary = dataset
    ds = PreparedDataset(out)
    assert ds.name == "synthcxr" and ds.meta["image_root"] == "."
    assert ds.meta["generator"] == {"n": 30, "size": SIZE, "seed": 3, "ratios": [0.8, 0.1, 0.1]}
    records = [r for split in ("train", "val", "test") for r in ds.records(split)]
    assert sum(summary["splits"].values()) == len(records) >= 30
    ids = [r["id"] for r in records]
    assert len(set(ids)) == len(ids)
    images = {r["image"] for r in records}
    assert images == {f"images/{i:06d}.png" for i in range(30)}  # every image has at least one finding
    for r in records:
        assert validate_record(r) == []
        assert r["task"] == "grounding" and r["source"] == "synthcxr"
        index = int(r["image"][len("images/"):-len(".png")])
        assert r["id"].startswith(f"synthcxr-{index:06d}-")
        assert (r["width"], r["height"]) == (SIZE, SIZE)
        assert len(r["boxes"]) == 1 and all(isinstance(v, float) for v in r["boxes"][0])
        assert r["category"] == synth.CATEGORIES[r["meta"]["finding"]]
        with Image.open(ds.image_path(r)) as im:
            assert im.mode == "L" and im.size == (SIZE, SIZE)


def test_each_image_stays_in_one_split(dataset):
    out, _ = dataset
    split_of: dict[str, set] = {}
    for split in ("train", "val", "test"):
        for r in read_records(out / f"{split}.jsonl"):
            split_of.setdefault(r["image"], set()).add(r["split"])
    assert all(len(s) == 1 for s in split_of.values())
    images_per_split = Counter(next(iter(s)) for s in split_of.values())
    assert images_per_split == {"train": 24, "val": 3, "test": 3}


def test_split_counts_follow_ratios():
    for n, ratios in ((1000, (0.8, 0.1, 0.1)), (1200, (0.7, 0.1, 0.2)), (37, (0.8, 0.1, 0.1))):
        splits = synth.assign_splits(n, ratios, seed=0)
        counts = Counter(splits)
        assert sum(counts.values()) == n
        for name, r in zip(("train", "val", "test"), ratios):
            assert abs(counts[name] - n * r) < 1.0
    assert synth.assign_splits(50, seed=1) == synth.assign_splits(50, seed=1)
    assert synth.assign_splits(50, seed=1) != synth.assign_splits(50, seed=2)
    with pytest.raises(ValueError):
        synth.assign_splits(10, (0.9, -0.1, 0.2))


# ---------------------------------------------------------------------------------------------------------------------
# boxes agree with anatomy and phrase


def test_every_box_is_inside_the_image_with_positive_area(cases):
    for _, _, _, findings, _ in cases:
        assert 1 <= len(findings) <= 2
        for f in findings:
            x1, y1, x2, y2 = f.box
            assert 0 <= x1 < x2 <= SIZE and 0 <= y1 < y2 <= SIZE


def test_all_finding_kinds_appear_and_second_findings_do_not_overlap(cases):
    kinds = Counter(f.kind for *_, findings, _ in cases for f in findings)
    assert set(kinds) == set(synth.CATEGORIES)
    pairs = [findings for *_, findings, _ in cases if len(findings) == 2]
    assert len(pairs) > N_CASES // 10
    for a, b in pairs:
        assert a.kind != b.kind
        assert not synth_findings.overlap(a.box, b.box, 0.0)


def test_laterality_is_the_patients(cases):
    """Patient's right = image left (PA view)."""
    sided = 0
    for _, _, _, findings, _ in cases:
        for f in findings:
            cx = (f.box[0] + f.box[2]) / 2
            if f.side == "right":
                assert cx < SIZE / 2 and "right" in f.phrase and "left" not in f.phrase
            elif f.side == "left":
                assert cx > SIZE / 2 and "left" in f.phrase and "right" not in f.phrase
            else:
                assert f.kind == "cardiomegaly"
                continue
            sided += 1
    assert sided > N_CASES // 2


def test_zone_matches_the_box_position_in_the_lung(cases):
    checked = 0
    for _, _, _, findings, masks in cases:
        for f in findings:
            if f.kind not in ("nodule", "mass", "consolidation", "atelectasis"):
                continue
            lung = masks.lung_boxes[f.side]
            cy = (f.box[1] + f.box[3]) / 2
            assert synth_raster.zone_of(cy, lung) == f.zone
            assert lung[0] <= (f.box[0] + f.box[2]) / 2 <= lung[2]
            word = f.zone if f.zone != "middle" else ("mid" if " mid " in f" {f.phrase} " else "middle")
            assert f" {word} zone" in f.phrase
            checked += 1
    assert checked > N_CASES // 3


def test_effusion_fills_the_base_and_pneumothorax_sits_apical_or_lateral(cases):
    seen = Counter()
    for _, _, _, findings, masks in cases:
        for f in findings:
            lung = masks.lung_boxes.get(f.side) if f.side else None
            if f.kind == "effusion":
                assert f.box[3] >= lung[3] - 2  # reaches the costophrenic angle
                assert (f.box[1] + f.box[3]) / 2 > lung[1] + 0.5 * (lung[3] - lung[1])
                seen["effusion"] += 1
            elif f.kind == "pneumothorax":
                height = lung[3] - lung[1]
                if f.zone == "apical":
                    assert f.box[1] <= lung[1] + 0.05 * height
                    assert (f.box[1] + f.box[3]) / 2 < lung[1] + 0.5 * height
                else:
                    assert f.zone == "lateral"
                    lung_cx = (lung[0] + lung[2]) / 2
                    box_cx = (f.box[0] + f.box[2]) / 2
                    assert (box_cx - lung_cx) * (1 if f.side == "left" else -1) > 0  # lateral half of the lung
                seen[f.zone] += 1
    assert seen["effusion"] and seen["apical"] and seen["lateral"]


def test_size_words_separate_small_from_large(cases):
    widths = {}
    for _, _, _, findings, _ in cases:
        for f in findings:
            if f.kind in ("nodule", "mass"):
                assert f.size in f.phrase.split()
                widths.setdefault((f.kind, f.size), []).append(f.box[2] - f.box[0])
    for kind in ("nodule", "mass"):
        small, large = widths.get((kind, "small"), []), widths.get((kind, "large"), [])
        assert small and large
        assert np.mean(small) < np.mean(large)
    assert max(widths[("nodule", "large")]) < min(widths[("mass", "small")])


def test_phrase_names_the_finding(cases):
    words = {"nodule": "nodule", "mass": "mass", "effusion": "effusion", "pneumothorax": "pneumothorax",
             "consolidation": ("consolidation", "opacity"), "atelectasis": "atelectasis",
             "cardiomegaly": ("cardiomegaly", "enlarge", "cardiac", "heart")}
    phrases = Counter()
    for _, _, _, findings, _ in cases:
        for f in findings:
            expected = words[f.kind]
            expected = (expected,) if isinstance(expected, str) else expected
            assert any(w in f.phrase for w in expected), f.phrase
            assert f.phrase == f.phrase.strip() and "  " not in f.phrase and "None" not in f.phrase
            phrases[f.kind, f.phrase.split()[0]] += 1
    assert len(phrases) > 2 * len(synth.CATEGORIES)  # several phrasings per finding


def test_findings_are_visible_against_the_same_anatomy_without_them(cases):
    """Opacities brighten their box, a pneumothorax darkens it, well beyond the film grain."""
    for _, image, ref, findings, _ in cases:
        for f in findings:
            x1, y1, x2, y2 = (int(round(v)) for v in f.box)
            delta = image[y1:y2, x1:x2].mean() - ref[y1:y2, x1:x2].mean()
            if f.kind == "pneumothorax":
                assert delta < -2.0, (f.phrase, delta)
            else:
                assert delta > 8.0, (f.phrase, delta)


def test_boxes_fit_what_was_drawn(cases):
    """Nothing visible changes outside the boxes (3 px slack), and the change fills each single box."""
    for _, image, ref, findings, _ in cases:
        changed = np.abs(image - ref) > 6
        outside = np.ones(image.shape, dtype=bool)
        for f in findings:
            x1, y1, x2, y2 = (int(v) for v in f.box)
            outside[max(0, y1 - 3):y2 + 3, max(0, x1 - 3):x2 + 3] = False
        assert (changed & outside).sum() <= 2
        if len(findings) == 1:
            x1, y1, x2, y2 = findings[0].box
            seen = synth_raster.mask_box(changed.astype(np.float32), 0.5)
            assert (seen[2] - seen[0]) >= 0.8 * (x2 - x1) and (seen[3] - seen[1]) >= 0.8 * (y2 - y1)


def test_pneumothorax_region_is_darker_than_the_lung_beside_it(cases):
    checked = 0
    for _, image, ref, findings, _ in cases:
        for f in findings:
            if f.kind != "pneumothorax":
                continue
            x1, y1, x2, y2 = (int(round(v)) for v in f.box)
            changed = (ref[y1:y2, x1:x2] - image[y1:y2, x1:x2]) > 10
            assert changed.mean() > 0.15  # a real air gap, not just the pleural line
            checked += 1
    assert checked


# ---------------------------------------------------------------------------------------------------------------------
# command line and packaging


def test_cli_writes_splits_dataset_json_and_images(tmp_path, capsys):
    out = tmp_path / "cli"
    assert main(["data", "synth", "--n", "40", "--out", str(out)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["name"] == "synthcxr" and summary["dir"] == str(out)
    for split in ("train", "val", "test"):
        assert read_records(out / f"{split}.jsonl")
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["generator"]["size"] == 256 and meta["image_root"] == "."
    assert len(list((out / "images").glob("*.png"))) == 40
    with Image.open(out / "images" / "000000.png") as im:
        assert im.size == (256, 256)


def test_cli_uses_the_data_root_by_default(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PFMVG_DATA_ROOT", str(tmp_path))
    assert main(["data", "synth", "--n", "3", "--size", "64", "--split-ratios", "1,0,0"]) == 0
    assert (tmp_path / "synthcxr" / "train.jsonl").is_file()
    assert not (tmp_path / "synthcxr" / "val.jsonl").exists()


@pytest.mark.parametrize("argv", [["--size", "32"], ["--n", "0"], ["--seed", "-1"], ["--split-ratios", "1,2"]])
def test_cli_rejects_bad_arguments(tmp_path, capsys, argv):
    assert main(["data", "synth", "--out", str(tmp_path / "bad"), *argv]) == 1
    assert "pfmvg: error:" in capsys.readouterr().err


def test_cli_help_describes_the_command(capsys):
    with pytest.raises(SystemExit):
        main(["data", "synth", "--help"])
    out = capsys.readouterr().out
    assert "synthcxr" in out and "--workers" in out and "--split-ratios" in out


def test_module_does_not_import_torch():
    code = "import sys, pfmvg_plugin.data.synth; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
