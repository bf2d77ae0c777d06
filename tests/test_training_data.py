"""Training data: box-consistent images, targets through the scoring codec, answer-only labels, resumable mixed order,
bad records, the opt-in flip."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
from PIL import Image, ImageDraw

from pfmvg_plugin.codecs import get_codec
from pfmvg_plugin.families.base import IGNORE_INDEX, ImageTransform
from pfmvg_plugin.geometry import hflip_box
from pfmvg_plugin.prompts import get_prompts
from pfmvg_plugin.training.config import ConfigError, DataConfig, DatasetSpec
from pfmvg_plugin.training.data import BadRecordError, StepSampler, TrainingData, group_by_length, swap_sides
from pfmvg_plugin.training.toy import ensure_tiny_llava, write_toy_grounding, write_toy_text


@pytest.fixture(scope="module")
def backbone(tmp_path_factory):
    from transformers import AutoProcessor

    from pfmvg_plugin.families.llava import LlavaFamily

    model_dir = ensure_tiny_llava(tmp_path_factory.getbasetemp() / "tiny_llava")
    bb = LlavaFamily()
    bb.attach(None, AutoProcessor.from_pretrained(model_dir))
    return bb


def data_cfg(*specs, **kw) -> DataConfig:
    return DataConfig(datasets=[DatasetSpec(**s) for s in specs], **kw)


def bright_bbox(image: Image.Image, threshold: int = 128) -> tuple[int, int, int, int]:
    arr = np.asarray(image.convert("L")) > threshold
    ys, xs = np.nonzero(arr)
    return xs.min(), ys.min(), xs.max() + 1, ys.max() + 1


@pytest.mark.parametrize("mode", ["squash", "pad"])
@pytest.mark.parametrize("size", [(120, 80), (80, 120), (100, 100)])
def test_image_transform_and_codec_agree_with_what_the_model_sees(mode, size):
    box = (30.0, 20.0, 70.0, 60.0)
    img = Image.new("RGB", size, (20, 20, 20))
    ImageDraw.Draw(img).rectangle([30, 20, 69, 59], fill=(255, 255, 255))
    transform = ImageTransform(size=(64, 64), mode=mode)
    seen = transform(img)
    assert seen.size == (64, 64)
    mapped = transform.map_box(box, size)
    assert np.allclose(bright_bbox(seen), mapped, atol=1.5)
    codec = transform.codec("llava")
    assert codec.name == "llava" and codec.pad_to_square == (mode == "pad")
    units = codec.to_units(box, size)  # the numbers written in the training target
    assert np.allclose(np.asarray(units) * 64, mapped, atol=0.5 * 64 * 10**-codec.decimals + 1e-6)
    assert codec.decode(codec.encode(box, size), size).ok


def test_pad_needs_a_padded_box_format():
    assert ImageTransform((32, 32), "squash").codec("minigptv2").name == "minigptv2"
    with pytest.raises(ValueError, match="llava_pad"):
        ImageTransform((32, 32), "pad").codec("minigptv2")


def test_grounding_example_targets_the_scoring_codec_and_labels_only_the_answer(backbone, toy):
    data = TrainingData(data_cfg({"path": str(toy)}), backbone, seed=0)
    src = data.sources[0]
    tok = backbone.processor.tokenizer
    pool = get_prompts("llava").refer
    templates_seen = set()
    for i, rec in enumerate(src.records):
        ex = data.example(0, i, 0, i)
        labels, ids = ex["labels"], ex["input_ids"]
        answer = labels[labels != IGNORE_INDEX]
        n_prompt = int((labels == IGNORE_INDEX).sum())
        assert (labels[n_prompt:] == ids[n_prompt:]).all() and (labels[:n_prompt] == IGNORE_INDEX).all()
        assert answer[-1] == tok.eos_token_id
        text = tok.decode(answer[:-1])
        size = (rec["width"], rec["height"])
        assert text.strip() == get_codec("llava").encode([tuple(b) for b in rec["boxes"]], size)
        decoded = get_codec("llava").decode(text, size)  # what scoring does with a perfect answer
        assert decoded.ok
        err = get_codec("llava").max_error(size)
        assert np.allclose(decoded.box, rec["boxes"][0], atol=max(err) + 1e-6)
        image_id = tok.convert_tokens_to_ids(backbone.image_token)
        assert int((ids == image_id).sum()) == backbone.n_image_tokens == 16
        prompt = tok.decode(ids[:n_prompt])
        assert rec["phrase"] in prompt
        templates_seen |= {j for j, t in enumerate(pool) if t.split("{phrase}")[0].strip() in prompt}
        assert ex["pixel_values"].shape == (3, 32, 32)
    assert len(templates_seen) > 1  # training paraphrases are drawn
    batch = backbone.collate([data.example(0, i, 0, i) for i in range(3)])
    n = batch["input_ids"].shape[1]
    assert batch["labels"].shape == (3, n) and batch["pixel_values"].shape == (3, 3, 32, 32)
    assert ((batch["attention_mask"] == 0) <= (batch["labels"] == IGNORE_INDEX)).all()


def test_examples_are_a_function_of_seed_epoch_position(backbone, toy):
    a = TrainingData(data_cfg({"path": str(toy)}), backbone, seed=3)
    b = TrainingData(data_cfg({"path": str(toy)}, preprocess="none", num_workers=0), backbone, seed=3)
    for key in [(0, 0, 0, 5), (2, 7, 0, 1)]:
        ea, eb = a.example(*key), b.example(*key)
        assert all((ea[k] == eb[k]).all() for k in ea)  # cached and on-the-fly images agree, prompts too


def test_epoch_order_is_deterministic_and_mixes_by_ratio(backbone, tmp_path):
    d1 = write_toy_grounding(tmp_path / "a", n=10, name="a")
    d2 = write_toy_grounding(tmp_path / "b", n=4, name="b", seed=1)
    mix = data_cfg({"path": str(d1), "ratio": 3}, {"path": str(d2), "ratio": 1}, epoch_size=400, preprocess="none")
    data = TrainingData(mix, backbone, seed=0)
    order = data.epoch_order(0)
    assert order.shape == (400, 2)
    assert Counter(order[:, 0].tolist()) == {0: 300, 1: 100}
    assert set(order[order[:, 0] == 1, 1].tolist()) == set(range(4))  # the small set is cycled, all records used
    assert (order == TrainingData(mix, backbone, seed=0).epoch_order(0)).all()
    assert not (order == data.epoch_order(1)).all()
    assert not (order == TrainingData(mix, backbone, seed=1).epoch_order(0)).all()
    plain = TrainingData(data_cfg({"path": str(d1)}, {"path": str(d2)}, preprocess="none"), backbone, seed=0)
    flat = plain.epoch_order(0)
    assert sorted(map(tuple, flat.tolist())) == [(0, i) for i in range(10)] + [(1, i) for i in range(4)]


def test_step_sampler_resumes_mid_epoch_and_splits_ranks():
    order = np.stack([np.zeros(24, int), np.arange(24)[::-1]], axis=1)
    full = list(StepSampler(order, 2, micro_batch=3, world_size=2, rank=1, n_micro=4))
    tail = list(StepSampler(order, 2, micro_batch=3, world_size=2, rank=1, n_micro=4, start=2))
    assert tail == full[2:] and len(full) == 4
    r0 = list(StepSampler(order, 2, micro_batch=3, world_size=2, rank=0, n_micro=4))
    positions = sorted(k[1] for batch in r0 + full for k in batch)
    assert positions == list(range(24))
    assert full[0] == [(2, 3, 0, 20), (2, 4, 0, 19), (2, 5, 0, 18)]


@pytest.mark.parametrize("n,window", [(23, 5), (10, 10), (7, 20)])
def test_group_by_length_sorts_each_window_and_keeps_the_epoch(n, window):
    rng = np.random.default_rng(n)
    order = np.stack([rng.integers(0, 3, n), rng.permutation(n)], axis=1)
    lengths = rng.integers(1, 6, n)  # ties: the sort must be stable
    grouped = group_by_length(order, lengths, window)
    assert (grouped == group_by_length(order, lengths, window)).all()
    for start in range(0, n, window):
        before, after = order[start:start + window], grouped[start:start + window]
        assert sorted(map(tuple, after.tolist())) == sorted(map(tuple, before.tolist()))  # same examples, same window
        by_key = {tuple(o): int(length) for o, length in zip(before.tolist(), lengths[start:start + window])}
        got = [by_key[tuple(o)] for o in after.tolist()]
        assert got == sorted(got, reverse=True)
        expect = [tuple(before[i]) for i in sorted(range(len(before)), key=lambda i: -lengths[start + i])]
        assert [tuple(o) for o in after.tolist()] == expect  # stable: equal lengths keep their shuffled order


def test_group_by_length_cuts_report_padding(backbone, tmp_path):
    from pfmvg_plugin.data.store import write_dataset

    root = tmp_path / "reports"
    (root / "images").mkdir(parents=True)
    Image.new("L", (40, 40), 40).save(root / "images" / "blank.png")
    sentence = "Small left pleural effusion with adjacent atelectasis. "
    rng = np.random.default_rng(0)
    records = [{"id": f"r{i}", "task": "report", "source": "toyreports", "split": "train", "image": "images/blank.png",
                "width": 40, "height": 40, "meta": {}, "report": sentence * int(rng.integers(1, 12))}
               for i in range(48)]
    write_dataset(root, "toyreports", records, image_root=root)
    data = TrainingData(data_cfg({"path": str(root)}), backbone, seed=0)
    grouping = TrainingData(data_cfg({"path": str(root)}, group_by_length=True), backbone, seed=0)
    order = data.epoch_order(0)
    lengths = data.text_lengths(order)
    assert lengths.tolist() == [len(records[i]["report"]) for i in order[:, 1]]
    assert (data.step_order(0, 4) == order).all()  # off: the plain epoch order
    assert (grouping.step_order(0, 4) == group_by_length(order, lengths, 50 * 4)).all()

    def padding(order) -> int:
        batches = [order[i:i + 4] for i in range(0, len(order), 4)]
        return sum(int((backbone.collate([data.example(0, 0, int(s), int(r)) for s, r in b])["attention_mask"] == 0)
                       .sum()) for b in batches)

    plain, grouped = padding(order), padding(grouping.step_order(0, 4))
    assert plain > 0 and grouped < plain / 2


def _write_bad_records(root):
    write_toy_grounding(root, n=6)
    path = root / "train.jsonl"
    recs = [json.loads(line) for line in path.read_text().splitlines()]
    recs[1]["boxes"] = [[0, 0, 500, 10]]  # outside the image
    recs[2]["image"] = "images/missing.png"
    recs[3]["phrase"] = ""
    recs[4]["width"] = recs[4]["width"] + 7  # the file says otherwise
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    return recs


def test_bad_record_error_names_the_record_and_reason(backbone, tmp_path):
    recs = _write_bad_records(tmp_path)
    with pytest.raises(BadRecordError, match=rf"toy/train record '{recs[1]['id']}' \(line 2\): box 0 .*outside the"):
        TrainingData(data_cfg({"path": str(tmp_path)}), backbone, seed=0)


def test_bad_records_skipped_and_counted(backbone, tmp_path):
    recs = _write_bad_records(tmp_path)
    data = TrainingData(data_cfg({"path": str(tmp_path)}, on_bad_record="skip"), backbone, seed=0)
    assert [r["id"] for r in data.sources[0].records] == [recs[0]["id"], recs[5]["id"]]
    summary = data.summary()["bad_records"]
    assert summary["skipped"] == 4 == data.bad.total
    assert any("image file missing" in e for e in summary["examples"])
    assert any("image is" in e and recs[4]["id"] in e for e in summary["examples"])
    # Without preprocessing the size mismatch surfaces at load time, still naming the record.
    lazy = TrainingData(data_cfg({"path": str(tmp_path)}, on_bad_record="skip", preprocess="none"), backbone, seed=0)
    assert lazy.bad.total == 3
    idx = [r["id"] for r in lazy.sources[0].records].index(recs[4]["id"])
    with pytest.raises(BadRecordError, match=recs[4]["id"]):
        lazy.example(0, 0, 0, idx)


def test_hflip_is_opt_in_and_mirrors_box_phrase_and_image(backbone, toy):
    plain = TrainingData(data_cfg({"path": str(toy)}), backbone, seed=0)
    flipped = TrainingData(data_cfg({"path": str(toy)}, hflip=1.0), backbone, seed=0)
    tok = backbone.processor.tokenizer
    rec = plain.sources[0].records[0]
    size = (rec["width"], rec["height"])
    ex_plain, ex_flip = plain.example(0, 0, 0, 0), flipped.example(0, 0, 0, 0)
    assert np.allclose(ex_flip["pixel_values"].numpy(), ex_plain["pixel_values"].flip(-1).numpy())
    target = tok.decode(ex_flip["labels"][ex_flip["labels"] != IGNORE_INDEX][:-1])
    box = get_codec("llava").decode(target, size).box
    assert np.allclose(box, hflip_box(rec["boxes"][0], size[0]), atol=max(get_codec("llava").max_error(size)) + 1e-6)
    prompt = tok.decode(ex_flip["input_ids"][ex_flip["labels"] == IGNORE_INDEX])
    assert swap_sides(rec["phrase"]) in prompt and rec["phrase"] not in prompt
    assert swap_sides("Left lower zone; right apex; LEFT; leftover") == "Right lower zone; left apex; RIGHT; leftover"


@pytest.mark.parametrize("task", ["report", "vqa"])
def test_text_tasks_target_the_record_text(backbone, tmp_path, task):
    root = write_toy_text(tmp_path, task=task, n=4)
    spec_task = "caption" if task == "report" else None
    data = TrainingData(data_cfg({"path": str(root), "task": spec_task}), backbone, seed=0)
    tok = backbone.processor.tokenizer
    rec = data.sources[0].records[1]
    ex = data.example(0, 0, 0, 1)
    target = tok.decode(ex["labels"][ex["labels"] != IGNORE_INDEX][:-1]).strip()
    assert target == (rec["report"] if task == "report" else rec["answer"])
    with pytest.raises(BadRecordError, match="needs 'grounding' records"):
        TrainingData(data_cfg({"path": str(root), "task": "refer"}), backbone, seed=0)


def test_pad_mode_targets_use_the_padded_codec(backbone, toy):
    data = TrainingData(data_cfg({"path": str(toy)}, image_resize="pad"), backbone, seed=0)
    assert data.summary()["box_codec"] == "llava_pad" and data.summary()["image_resize"] == "pad"
    tok = backbone.processor.tokenizer
    for i, rec in enumerate(data.sources[0].records[:3]):
        size = (rec["width"], rec["height"])
        ex = data.example(0, i, 0, i)
        text = tok.decode(ex["labels"][ex["labels"] != IGNORE_INDEX][:-1])
        assert text.strip() == get_codec("llava_pad").encode([tuple(rec["boxes"][0])], size)
        if size[0] != size[1]:
            assert text.strip() != get_codec("llava").encode([tuple(rec["boxes"][0])], size)
    with pytest.raises(ConfigError, match=r"^data\.image_resize: .*squash"):
        TrainingData(data_cfg({"path": str(toy)}, image_resize="pad", convention="minigptv2"), backbone, seed=0)
