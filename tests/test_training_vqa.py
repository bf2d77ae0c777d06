"""The VQA and report task families through the real recipe: synthcxr_vqa examples carry the loss on the answer
only, report/caption examples on the report, the shipped tiny_synthvqa.yaml trains the tiny LLaVA under DeepSpeed
ZeRO-2, and its adapter answers the synthcxr_vqa test split through ``pfmvg_llava`` and is scored by
``pfmvg_plugin.metrics.vqa`` (closed / open counted separately). Learning quality is not asserted: 3 steps."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch
from helpers_training import run

from pfmvg_plugin.data import synth
from pfmvg_plugin.data.store import PreparedDataset
from pfmvg_plugin.families.base import IGNORE_INDEX
from pfmvg_plugin.metrics.vqa import closed_correct, open_exact, score_vqa, token_recall
from pfmvg_plugin.prompts import build_prompt, get_prompts
from pfmvg_plugin.training.config import DataConfig, DatasetSpec, load_config

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::UserWarning", "ignore::DeprecationWarning")

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "recipes" / "configs" / "tiny_synthvqa.yaml"
N_EVAL = 24  # test questions answered by the trained model
LAUNCH_VARS = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """synthcxr (small) with its synthcxr_vqa and synthcxr_reports beside it."""
    root = tmp_path_factory.mktemp("vqa_train")
    synth.generate_synthcxr(root / "synthcxr", n=24, size=64, seed=1, ratios=(0.6, 0.1, 0.3))
    synth.generate_synthcxr_vqa(root / "synthcxr", root / "synthcxr_vqa", seed=0)
    synth.generate_synthcxr_reports(root / "synthcxr", root / "synthcxr_reports")
    return root


@pytest.fixture(scope="module")
def backbone(tiny):
    from transformers import AutoProcessor

    from pfmvg_plugin.families import get_family

    b = get_family("llava")
    b.attach(None, AutoProcessor.from_pretrained(tiny))
    return b


def training_data(backbone, path, task, limit=None):
    from pfmvg_plugin.training.data import TrainingData

    cfg = DataConfig(datasets=[DatasetSpec(path=str(path), split="train", task=task, limit=limit)])
    return TrainingData(cfg, backbone, seed=0)


def split_example(backbone, ex) -> tuple[str, str]:
    """(text without labels, text with labels) of one built example; the labelled part must be one contiguous tail."""
    tok = backbone.processor.tokenizer
    ids, labels = ex["input_ids"], ex["labels"]
    labelled = (labels != IGNORE_INDEX).nonzero().flatten()
    assert len(labelled) > 0
    first = int(labelled[0])
    assert torch.equal(labelled, torch.arange(first, len(ids)))  # prompt masked, answer (+ eos) labelled, nothing else
    assert torch.equal(labels[first:], ids[first:])
    assert int(ids[-1]) == tok.eos_token_id
    return tok.decode(ids[:first], skip_special_tokens=True), tok.decode(ids[first:], skip_special_tokens=True)


def test_vqa_examples_carry_the_loss_on_the_answer_only(backbone, data):
    td = training_data(backbone, data / "synthcxr_vqa", "vqa", limit=40)
    assert td.summary()["sources"][0]["task"] == "vqa"
    seen = Counter()
    for i, rec in enumerate(td.sources[0].records):
        prompt, answer = split_example(backbone, td.example(0, i, 0, i))
        assert answer.strip() == rec["answer"]
        # the instruction is a paraphrase from the library's vqa pool (evaluation uses the pool's first one)
        assert any(t.format(question=rec["question"]) in prompt for t in get_prompts("llava").vqa)
        assert rec["answer"] not in prompt.split(rec["question"])[-1]
        seen[rec["answer_type"]] += 1
    assert seen["closed"] and seen["open"]


@pytest.mark.parametrize("task", ["report", "caption"])
def test_report_and_caption_examples_target_the_report(backbone, data, task):
    td = training_data(backbone, data / "synthcxr_reports", task, limit=6)
    for i, rec in enumerate(td.sources[0].records):
        prompt, target = split_example(backbone, td.example(0, i, 0, i))
        assert target.strip() == rec["report"]
        assert "heart" in target and "heart" not in prompt  # the report is the answer, never part of the prompt
    assert "[report]" not in prompt  # llava convention: plain instructions (minigptv2 would add the identifier)


@pytest.fixture(scope="module")
def trained(tiny, data, tmp_path_factory):
    """The shipped config, pointed at the test data and the tiny test model, trained 3 steps under ZeRO-2."""
    out = tmp_path_factory.mktemp("tiny_synthvqa_run")
    cfg = load_config(CONFIG, [f"model.path={tiny}", f"data.datasets.0.path={data / 'synthcxr_vqa'}",
                               f"train.output_dir={out}", "train.max_steps=3", "train.micro_batch_size=4",
                               "train.log_steps=1", "train.save_steps=0", "train.auto_resume=false"])
    assert cfg.data.datasets[0].task == "vqa" and cfg.deepspeed == "recipes/ds/zero2.json"
    return run(cfg)


def test_tiny_synthvqa_config_trains_under_zero2(trained):
    assert trained.engine.kind == "deepspeed" and trained.summary["zero_stage"] == 2
    assert trained.global_step == 3 and len(trained.losses) == 3
    assert all(math.isfinite(x) and x > 0 for x in trained.losses)
    meta = json.loads((trained.adapter_dir / "pfmvg_training.json").read_text())
    assert meta["convention"] == "llava" and [s["task"] for s in meta["sources"]] == ["vqa"]


def test_trained_adapter_answers_the_test_split_and_is_scored(tiny, data, trained):
    """Generation through lmms-eval's model interface (``pfmvg_llava`` with the adapter), scoring by the library."""
    pytest.importorskip("lmms_eval")
    from lmms_eval.api.instance import Instance

    from pfmvg_plugin.lmms.llava_model import PfmvgLlava

    ds = PreparedDataset(data / "synthcxr_vqa")
    records = ds.records("test")
    closed = [r for r in records if r["answer_type"] == "closed"][: N_EVAL // 2]
    docs = closed + [r for r in records if r["answer_type"] == "open"][: N_EVAL - len(closed)]
    assert {r["answer_type"] for r in docs} == {"closed", "open"}

    model = PfmvgLlava(pretrained=str(tiny), adapter=str(trained.adapter_dir), dtype="float32", device="cpu",
                       batch_size=8)
    model.task_dict = {"synthcxr_vqa": {"test": docs}}

    def visual(doc):
        from pfmvg_plugin.data.images import load_image

        return [load_image(ds.image_path(doc))]

    requests = [Instance(request_type="generate_until",
                         arguments=(build_prompt("vqa", model.convention, question=d["question"]),
                                    {"max_new_tokens": 6, "until": ["\n\n"], "do_sample": False}, visual, i,
                                    "synthcxr_vqa", "test"),
                         idx=0, metadata={"task": "synthcxr_vqa", "doc_id": i, "repeats": 1})
                for i, d in enumerate(docs)]
    answers = model.generate_until(requests)
    assert len(answers) == len(docs) and all(isinstance(a, str) for a in answers)
    assert model.generation_errors == 0

    scores = score_vqa(answers, [d["answer"] for d in docs], [d["answer_type"] for d in docs], n_bootstrap=50)
    n_closed = sum(d["answer_type"] == "closed" for d in docs)
    assert (scores["n"], scores["n_closed"], scores["n_open"]) == (len(docs), n_closed, len(docs) - n_closed)
    for key in ("overall", "closed_acc", "open_exact", "open_recall"):
        assert 0.0 <= scores[key] <= 1.0
        lo, hi = scores[f"{key}_ci"]
        assert 0.0 <= lo <= scores[key] + 1e-12 and scores[key] - 1e-12 <= hi <= 1.0
    pairs = list(zip(answers, docs))
    closed_hits = [closed_correct(a, d["answer"]) for a, d in pairs if d["answer_type"] == "closed"]
    open_hits = [open_exact(a, d["answer"]) for a, d in pairs if d["answer_type"] == "open"]
    assert scores["closed_acc"] == pytest.approx(sum(closed_hits) / len(closed_hits))
    assert scores["open_exact"] == pytest.approx(sum(open_hits) / len(open_hits))
    assert scores["open_recall"] == pytest.approx(
        sum(token_recall(a, d["answer"]) for a, d in pairs if d["answer_type"] == "open") / len(open_hits))
    assert scores["overall"] == pytest.approx((sum(closed_hits) + sum(open_hits)) / len(docs))


def test_lmms_eval_cli_scores_the_adapter_on_synthcxr_vqa(tiny, data, trained, tmp_path):
    """The real ``lmms-eval`` CLI: our ``synthcxr_vqa`` task (found through the entry point) + ``pfmvg_llava`` with
    the adapter; results.json equals the library's scoring of the logged predictions."""
    pytest.importorskip("lmms_eval")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "PFMVG_NO_PROGRESS": "1",
           "PFMVG_DATA_ROOT": str(data), "LMMS_EVAL_DATASETS_CACHE": str(tmp_path / "hf_cache"),
           "OMP_NUM_THREADS": "1"}
    env.pop("PFMVG_NO_TASK_HOOK", None)
    for key in LAUNCH_VARS:  # set by the in-process training run; lmms-eval would join its (gone) process group
        env.pop(key, None)
    limit = 12
    out = subprocess.run(
        [sys.executable, "-m", "lmms_eval", "--model", "pfmvg_llava", "--model_args",
         f"pretrained={tiny},adapter={trained.adapter_dir},dtype=float32,device=cpu", "--batch_size", "8",
         "--tasks", "synthcxr_vqa", "--limit", str(limit), "--output_path", str(tmp_path / "out"), "--log_samples"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env)
    text = out.stdout + out.stderr
    assert out.returncode == 0, text[-3000:]
    (results_file,) = (tmp_path / "out").rglob("*_results.json")  # lmms-eval exits 0 even when evaluation failed
    (samples_file,) = (tmp_path / "out").rglob("*_samples_synthcxr_vqa.jsonl")
    res = json.loads(results_file.read_text())["results"]["synthcxr_vqa"]
    lines = sorted((json.loads(x) for x in samples_file.read_text().splitlines()), key=lambda x: x["doc_id"])
    records = [line["vqa_sample"] for line in lines]
    test_ids = [r["id"] for r in PreparedDataset(data / "synthcxr_vqa").records("test")]
    assert [r["id"] for r in records] == test_ids[:limit]
    assert all(r["status"] == "ok" and r["convention"] == "llava" for r in records)
    lib = score_vqa([r["prediction"] for r in records], [r["answer"] for r in records],
                    [r["answer_type"] for r in records], n_bootstrap=0)
    assert (res["n_closed,none"], res["n_open,none"]) == (lib["n_closed"], lib["n_open"])
    assert lib["n_closed"] + lib["n_open"] == limit
    for ours, theirs in (("overall_acc", "overall"), ("closed_acc", "closed_acc"), ("open_exact_acc", "open_exact"),
                         ("open_recall", "open_recall")):
        if lib[theirs] is not None:
            assert res[f"{ours},none"] == pytest.approx(lib[theirs]), ours
    assert res["generation_error_rate,none"] == 0.0 and res["prompt_convention,none"] == "llava"
