"""synthcxr_vqa / synthcxr_reports: questions answered from the synthcxr boxes (checked by an independent oracle on the
geometry), exact yes/no balance, split integrity, determinism, CLI, and no torch."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pfmvg_plugin.cli.main import main
from pfmvg_plugin.data import synth
from pfmvg_plugin.data.schema import read_records, validate_record
from pfmvg_plugin.data.store import PreparedDataset, write_dataset
from pfmvg_plugin.data.synth import vqa as svqa

SIZE = 64
N = 48
SPLITS = ("train", "val", "test")


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    out = tmp_path_factory.mktemp("vqa") / "synthcxr"
    synth.generate_synthcxr(out, n=N, size=SIZE, seed=3, ratios=(0.6, 0.2, 0.2))
    return out


@pytest.fixture(scope="module")
def vqa_dir(source):
    out = source.parent / "synthcxr_vqa"
    svqa.generate_synthcxr_vqa(source, out, seed=0)
    return out


def _all(path: Path) -> list[dict]:
    ds = PreparedDataset(path)
    return [r for s in SPLITS if ds.split_path(s).is_file() for r in ds.records(s)]


def _grounding_by_image(source: Path) -> dict[str, list[dict]]:
    out = defaultdict(list)
    for r in _all(source):
        out[r["image"]].append(r)
    return out


# ---- an oracle that reads the geometry, not the generator's bookkeeping ---------------------------------------------
def _kind(rec: dict) -> str:
    return {v: k for k, v in synth.CATEGORIES.items()}[rec["category"]]


def _side(rec: dict) -> str | None:
    """Patient side from the box alone: the patient's right lung is on the image left (PA view)."""
    if _kind(rec) == "cardiomegaly":
        return None
    x1, _, x2, _ = rec["boxes"][0]
    return "right" if (x1 + x2) / 2 < rec["width"] / 2 else "left"


def _band(zone: str, lung: list[float]) -> tuple[float, float]:
    k = synth.ZONES.index(zone)
    h = lung[3] - lung[1]
    return lung[1] + k * h / 3, lung[1] + (k + 1) * h / 3


def oracle_closed(q: dict, grounding: list[dict]) -> str | None:
    """The true answer of a closed question from the image's boxes; None when the question is ambiguous (a ``no``
    must never be asked about a zone that a finding of that kind reaches)."""
    fam, kind, side, zone = (q["meta"][k] for k in ("family", "finding", "side", "zone"))
    same = [g for g in grounding if _kind(g) == kind]
    if fam == "cardiomegaly":
        return "yes" if same else "no"
    if fam == "presence_side":
        return "yes" if any(_side(g) == side for g in same) else "no"
    if fam == "side_choice":
        (g,) = same
        return _side(g)
    if fam == "presence_zone":
        hits = [g for g in same if _side(g) == side]
        centre_in = [g for g in hits if _band(zone, g["meta"]["lung_box"])[0]
                     <= (g["boxes"][0][1] + g["boxes"][0][3]) / 2 < _band(zone, g["meta"]["lung_box"])[1]]
        reaching = [g for g in hits if g["boxes"][0][1] < _band(zone, g["meta"]["lung_box"])[1]
                    and g["boxes"][0][3] > _band(zone, g["meta"]["lung_box"])[0]]
        if centre_in:
            return "yes"
        return None if reaching else "no"
    raise AssertionError(f"unknown closed family {fam}")


# ---- the generated dataset ---------------------------------------------------------------------------------------
def test_records_follow_the_schema_and_point_at_the_synthcxr_images(source, vqa_dir):
    ds = PreparedDataset(vqa_dir)
    assert ds.name == "synthcxr_vqa" and ds.meta["task"] == "vqa"
    assert ds.meta["image_root"] == "../synthcxr" and ds.image_root.resolve() == source.resolve()
    records = _all(vqa_dir)
    grounding = _grounding_by_image(source)
    assert len({r["id"] for r in records}) == len(records) > 4 * N
    for r in records:
        assert validate_record(r) == [], r
        assert r["task"] == "vqa" and r["source"] == "synthcxr_vqa"
        assert r["answer_type"] in ("closed", "open")
        assert (r["answer_type"] == "closed") == (r["meta"]["family"] in (*svqa.YES_NO_FAMILIES, "side_choice"))
        assert ds.image_path(r).is_file() and r["image"] in grounding
        assert (r["width"], r["height"]) == (SIZE, SIZE)
        assert r["question"][0].isupper() and r["question"].endswith("?") and r["answer"] == r["answer"].lower()
        ids = {g["id"] for g in grounding[r["image"]]}
        assert set(r["meta"]["grounding_ids"]) <= ids
    families = Counter(r["meta"]["family"] for r in records)
    assert set(families) == set(svqa.FAMILIES), families


def test_every_image_keeps_its_synthcxr_split(source, vqa_dir):
    split_of = {g["image"]: g["split"] for g in _all(source)}
    seen = defaultdict(set)
    for r in _all(vqa_dir):
        assert r["split"] == split_of[r["image"]]
        seen[r["split"]].add(r["image"])
    test_images = {i for i, s in split_of.items() if s == "test"}
    assert seen["test"] and seen["test"] <= test_images
    assert not (seen["train"] | seen["val"]) & test_images  # no test image is trained or tuned on
    assert seen["train"] == {i for i, s in split_of.items() if s == "train"}  # every image asked about


def test_closed_answers_agree_with_the_boxes(source, vqa_dir):
    grounding = _grounding_by_image(source)
    checked = Counter()
    for r in _all(vqa_dir):
        if r["answer_type"] != "closed":
            continue
        truth = oracle_closed(r, grounding[r["image"]])
        assert truth == r["answer"], (r, grounding[r["image"]])
        checked[r["meta"]["family"], r["answer"]] += 1
    for fam in ("presence_side", "presence_zone"):
        assert checked[fam, "yes"] and checked[fam, "no"]
    assert checked["side_choice", "left"] and checked["side_choice", "right"]


def test_open_answers_name_the_finding_where_it_is(source, vqa_dir):
    grounding = _grounding_by_image(source)
    checked = Counter()
    for r in _all(vqa_dir):
        if r["answer_type"] != "open":
            continue
        fam, kind = r["meta"]["family"], r["meta"]["finding"]
        (g,) = [g for g in grounding[r["image"]] if _kind(g) == kind]
        side, zone = _side(g), g["meta"]["zone"]
        if fam == "location":
            assert r["answer"].split()[0] == side
            if kind == "pneumothorax":
                assert r["answer"] == f"{side} {zone}" and zone in ("apical", "lateral")
            else:
                assert r["answer"] == f"{side} {zone} zone"
                word = "mid" if " mid " in f" {g['phrase']} " else zone
                assert kind == "effusion" or word in g["phrase"]
        elif fam == "abnormality":
            assert r["answer"] == g["category"].lower() == svqa.FINDING_NAMES[kind]
            assert side in r["question"] and (r["meta"]["zone"] is None or r["meta"]["zone"] in r["question"])
            others = [h for h in grounding[r["image"]] if h is not g and _side(h) == side]
            assert not others  # the answer is unique
        else:
            assert fam == "size" and r["answer"] == g["meta"]["size"] in ("small", "moderate", "large")
        checked[fam] += 1
    assert checked["location"] and checked["abnormality"] and checked["size"]


def test_yes_and_no_are_balanced_per_split_and_family(vqa_dir):
    counts = Counter((r["split"], r["meta"]["family"], r["answer"]) for r in _all(vqa_dir)
                     if r["meta"]["family"] in svqa.YES_NO_FAMILIES)
    for split in SPLITS:
        for fam in svqa.YES_NO_FAMILIES:
            assert counts[split, fam, "yes"] == counts[split, fam, "no"], (split, fam)
    assert counts["train", "presence_side", "yes"] > 10 and counts["train", "cardiomegaly", "yes"] > 0


def test_same_seed_same_bytes_other_seed_other_questions(source, vqa_dir, tmp_path):
    again, other = tmp_path / "again", tmp_path / "other"
    svqa.generate_synthcxr_vqa(source, again, seed=0)
    svqa.generate_synthcxr_vqa(source, other, seed=1)
    for split in SPLITS:
        assert (again / f"{split}.jsonl").read_bytes() == (vqa_dir / f"{split}.jsonl").read_bytes()
    a, b = _all(vqa_dir), _all(other)
    assert [(r["question"], r["answer"]) for r in a] != [(r["question"], r["answer"]) for r in b]
    assert {(r["image"], r["split"]) for r in a} == {(r["image"], r["split"]) for r in b}


def test_the_pair_moves_together(source, vqa_dir, tmp_path):
    for name in ("synthcxr", "synthcxr_vqa"):
        shutil.copytree(source.parent / name, tmp_path / name)
    ds = PreparedDataset(tmp_path / "synthcxr_vqa")
    r = ds.records("train")[0]
    assert ds.image_path(r).is_file() and str(tmp_path) in str(ds.image_path(r))


def test_ensure_builds_once_beside_synthcxr(source, tmp_path, monkeypatch):
    monkeypatch.setenv("PFMVG_DATA_ROOT", str(source.parent))
    target = tmp_path / "x" / "synthcxr_vqa"
    assert svqa.ensure_synthcxr_vqa(target, source=source) == target
    stamp = (target / "train.jsonl").stat().st_mtime_ns
    assert svqa.ensure_synthcxr_vqa(target, source=source) == target
    assert (target / "train.jsonl").stat().st_mtime_ns == stamp
    assert not [p for p in target.parent.iterdir() if p.name.endswith(".tmp")]


def test_reports_describe_each_image(source, tmp_path):
    out = tmp_path / "synthcxr_reports"
    summary = svqa.generate_synthcxr_reports(source, out)
    assert summary["name"] == "synthcxr_reports" and summary["task"] == "report"
    grounding = _grounding_by_image(source)
    records = _all(out)
    assert {r["image"] for r in records} == set(grounding) and len(records) == len(grounding)
    for r in records:
        assert validate_record(r) == [] and r["split"] == grounding[r["image"]][0]["split"]
        gs = grounding[r["image"]]
        cardio = any(_kind(g) == "cardiomegaly" for g in gs)
        assert ("The heart is enlarged." in r["report"]) == cardio
        assert ("The heart size is normal." in r["report"]) == (not cardio)
        for g in gs:
            if _kind(g) != "cardiomegaly":
                assert f"{_side(g)} " in r["report"] and svqa.FINDING_NAMES[_kind(g)] in r["report"]


# ---- any synthcxr-like input (hypothesis) ------------------------------------------------------------------------
LUNGS = {"right": [8.0, 10.0, 30.0, 56.0], "left": [34.0, 10.0, 56.0, 56.0]}


@st.composite
def fake_images(draw):
    """Grounding records of a few images: 1-3 findings each at random places inside the lung of their side."""
    records = []
    for i in range(draw(st.integers(1, 6))):
        split = draw(st.sampled_from(SPLITS))
        kinds = draw(st.lists(st.sampled_from(list(synth.CATEGORIES)), min_size=1, max_size=3))
        for k, kind in enumerate(kinds):
            side = None if kind == "cardiomegaly" else draw(st.sampled_from(["right", "left"]))
            lung = LUNGS[side] if side else [20.0, 30.0, 50.0, 58.0]
            y1 = draw(st.floats(lung[1], lung[3] - 2, allow_nan=False))
            y2 = draw(st.floats(y1 + 1, lung[3], allow_nan=False))
            x1 = draw(st.floats(lung[0], lung[2] - 2, allow_nan=False))
            x2 = draw(st.floats(x1 + 1, lung[2], allow_nan=False))
            zone = (draw(st.sampled_from(svqa.ZONED.get(kind, synth.ZONES))) if kind in svqa.ZONED
                    else {"effusion": "lower", "pneumothorax": draw(st.sampled_from(["apical", "lateral"]))}.get(kind))
            if kind in svqa.ZONED:  # the synthcxr rule: the zone is the zone of the box centre
                lo, hi = _band(zone, lung)
                y1, y2 = (lo + hi) / 2 - min(y2 - y1, 20) / 2, (lo + hi) / 2 + min(y2 - y1, 20) / 2
            meta = {"finding": kind, "side": side, "zone": zone,
                    "size": draw(st.sampled_from(["small", "large"])) if kind in svqa.SIZED else None}
            if side:
                meta["lung_box"] = lung
            records.append({"id": f"synthcxr-{i:06d}-{k}", "task": "grounding", "source": "synthcxr",
                            "split": split, "image": f"images/{i:06d}.png", "width": SIZE, "height": SIZE,
                            "phrase": kind, "boxes": [[x1, y1, x2, y2]], "category": synth.CATEGORIES[kind],
                            "meta": meta})
    return records


@settings(max_examples=60, deadline=None)
@given(fake_images(), st.integers(0, 3))
def test_any_layout_gets_true_answers_balance_and_its_own_split(grounding, seed):
    by_image = defaultdict(list)
    for g in grounding:
        by_image[g["image"]].append(g)
    records = svqa.vqa_records(grounding, seed=seed)
    assert records == svqa.vqa_records(grounding, seed=seed)
    counts = Counter()
    for r in records:
        assert validate_record(r) == []
        assert r["split"] == by_image[r["image"]][0]["split"]
        fam = r["meta"]["family"]
        if fam in ("presence_side", "presence_zone", "cardiomegaly"):
            assert oracle_closed(r, by_image[r["image"]]) == r["answer"], r
            counts[r["split"], fam, r["answer"]] += 1
        elif fam == "side_choice":
            assert oracle_closed(r, by_image[r["image"]]) == r["answer"]
    for split in SPLITS:
        for fam in svqa.YES_NO_FAMILIES:
            assert counts[split, fam, "yes"] == counts[split, fam, "no"]


def test_an_image_in_two_splits_is_refused():
    a = {"id": "a", "task": "grounding", "split": "train", "image": "images/1.png", "width": 8, "height": 8,
         "boxes": [[1, 1, 2, 2]], "category": "Cardiomegaly", "meta": {"finding": "cardiomegaly"}}
    with pytest.raises(svqa.SourceError, match="two splits"):
        svqa.vqa_records([a, {**a, "id": "b", "split": "test"}])
    with pytest.raises(svqa.SourceError, match="not a synthcxr finding"):
        svqa.vqa_records([{**a, "meta": {}}])


# ---- command line --------------------------------------------------------------------------------------------------
def test_cli_synth_vqa_and_synth_with_vqa(source, tmp_path, capsys):
    out = tmp_path / "cli_vqa"
    assert main(["data", "synth-vqa", "--source", str(source), "--out", str(out), "--reports"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["synthcxr_vqa"]["dir"] == str(out) and summary["synthcxr_vqa"]["answer_types"]["closed"] > 0
    assert read_records(out / "train.jsonl") and (tmp_path / "synthcxr_reports" / "dataset.json").is_file()

    both = tmp_path / "both" / "synthcxr"
    assert main(["data", "synth", "--n", "6", "--size", "64", "--out", str(both), "--vqa"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert set(summary) == {"synthcxr", "synthcxr_vqa"}
    assert PreparedDataset(both.parent / "synthcxr_vqa").image_root.resolve() == both.resolve()


def test_cli_errors_and_help(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PFMVG_DATA_ROOT", str(tmp_path))
    assert main(["data", "synth-vqa"]) == 1
    assert "pfmvg data synth" in capsys.readouterr().err
    toy = tmp_path / "toy"
    write_dataset(toy, "toy", [{"id": "t", "task": "report", "source": "toy", "split": "train", "image": "a.png",
                                "report": "Clear."}], image_root=toy)
    assert main(["data", "synth-vqa", "--source", str(toy), "--out", str(tmp_path / "o")]) == 1
    assert "built from synthcxr" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["data", "synth-vqa", "--help"])
    text = capsys.readouterr().out
    assert "--source" in text and "--reports" in text and "closed" in text
    with pytest.raises(SystemExit):
        main(["data", "synth", "--help"])
    assert "--vqa" in capsys.readouterr().out


def test_module_does_not_import_torch():
    code = "import sys, pfmvg_plugin.data.synth.vqa, pfmvg_plugin.cli.main; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
