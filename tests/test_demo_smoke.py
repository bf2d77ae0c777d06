"""`make demo` in its quick mode, end to end: synthcxr + synthcxr_pretrain + synthshapes -> baselines -> stage-0
vision pretraining (recipes/pretrain_vision.py) -> stage-1a and 1b full fine-tunes -> stage-2 LoRA (all three through
recipes/finetune_lora.py under DeepSpeed) -> two real `lmms-eval` CLI runs ->
`pfmvg report`. Checks that every output exists and every number is well formed, not how good the numbers are (the
quick run trains seconds)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("peft")
pytest.importorskip("deepspeed")
pytest.importorskip("lmms_eval")

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
METRICS = ("acc@0.1", "acc@0.3", "acc@0.5", "miou")


def _fraction(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and 0 <= value <= 1


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "demo_out"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PFMVG_NO_PROGRESS": "1"}
    proc = subprocess.run([sys.executable, str(ROOT / "recipes" / "demo.py"), "--quick", "--out", str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, (proc.stdout[-3000:], proc.stderr[-3000:])
    return out, proc.stdout


def test_help():
    proc = subprocess.run([sys.executable, str(ROOT / "recipes" / "demo.py"), "--help"], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0
    for flag in ("--out", "--quick", "--n", "--vision-steps", "--shapes-steps", "--pretrain-steps", "--lora-steps",
                 "--ranks"):
        assert flag in proc.stdout


def test_numbers_are_well_formed(demo):
    out, stdout = demo
    res = json.loads((out / "demo_results.json").read_text())
    assert res["quick"] is True and res["n_test"] >= 1
    assert set(res["baselines"]) == {"mean_box", "category_prior", "phrase_prior"}
    for name, row in [*res["baselines"].items(), ("stage1", res["stage1_pretrained"]), ("stage2", res["stage2_lora"])]:
        for metric in METRICS:
            assert _fraction(row[metric]), (name, metric, row[metric])
    for row in (res["stage1_pretrained"], res["stage2_lora"]):
        assert _fraction(row["parse_failure_rate"]) and row["generation_error_rate"] == 0.0
        assert row["prompt_convention"] == "minigptv2"
    seconds = res["seconds"]
    assert set(seconds) >= {"data", "baselines", "stage0", "stage1a", "stage1", "stage2", "lmms_eval", "report",
                            "total"}
    assert all(_fraction(v / (seconds["total"] + 1e-9)) for k, v in seconds.items() if k != "total")
    for label in ("phrase_prior", "stage 1: pretrained", "stage 2: + LoRA adapter"):  # the before/after table
        assert label in stdout
    by_finding = stdout.split("Acc@0.5 by finding", 1)[1]  # the per-finding table next to the phrase prior
    for category in res["baselines"]["phrase_prior"]["per_category"]:
        assert category in by_finding


def test_outputs_exist(demo):
    out, _ = demo
    assert (out / "data" / "synthcxr" / "test.jsonl").is_file()
    assert (out / "data" / "synthshapes" / "train.jsonl").is_file()
    assert (out / "data" / "synthcxr_pretrain" / "train.jsonl").is_file()
    runs = out / "runs"
    vision = json.loads((runs / "stage0_vision" / "model" / "pfmvg_vision_pretrain.json").read_text())
    assert vision["steps"] == 5 and _fraction(vision["val_centre_hit_rate"]) and len(vision["categories"]) >= 1
    stage1a, stage1, stage2 = runs / "stage1a_shapes", runs / "stage1_pretrain", runs / "stage2_lora"
    for stage in (stage1a, stage1):
        for name in ("config.json", "model.safetensors", "tokenizer.json", "pfmvg_training.json"):
            assert (stage / "model" / name).is_file(), name  # complete models: the base of the next stage, lmms-eval
    assert json.loads((stage1a / "model" / "config.json").read_text())["text_config"]["model_type"] == "opt"
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        assert (stage2 / "adapter" / name).is_file(), name
    for stage in (stage1a, stage1, stage2):  # every stage ran DeepSpeed ZeRO-2
        summary = json.loads((stage / "train_summary.json").read_text())
        assert summary["engine"] == "deepspeed" and summary["zero_stage"] == 2 and summary["global_step"] >= 1
    assert json.loads((stage1 / "train_summary.json").read_text())["box_codec"] == "minigptv2"
    for run in ("stage1", "stage2_lora"):
        assert list((out / "eval" / run).rglob("*_results.json")), run
        assert list((out / "eval" / run).rglob("*_samples_synthcxr_grounding.jsonl")), run
    report = out / "eval" / "stage2_lora" / "pfmvg_report"
    assert (report / "index.html").is_file() and list(report.rglob("*.png"))


def _demo_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("pfmvg_demo", ROOT / "recipes" / "demo.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("ranks", [1, 2, 3])
def test_ranks_share_the_yaml_grad_accum(tmp_path, capsys, ranks):
    demo = _demo_module()
    args = demo.parse_args(["--ranks", str(ranks), "--out", str(tmp_path)])
    cmd = [str(c) for c in demo.train_command(args, demo.PRETRAIN_CONFIG, tmp_path / "run", 7, "model.path=M")]
    assert "train.max_steps=7" in cmd and "model.path=M" in cmd and f"train.output_dir={tmp_path / 'run'}" in cmd
    accum = [c for c in cmd if c.startswith("train.grad_accum=")]
    if ranks == 1:  # one process: the YAML as written (micro batch x grad_accum 2)
        assert cmd[1].endswith("finetune_lora.py") and accum == []
    elif ranks == 2:  # two ranks split the accumulation: the same global batch
        assert cmd[cmd.index("--num_gpus") + 1] == "2" and accum == ["train.grad_accum=1"]
    else:  # 2 micro batches cannot be shared by 3 ranks: said, not hidden
        assert accum == [] and "global batch is 3x the YAML's" in capsys.readouterr().out
