"""Deterministic resume: a run killed after checkpoint k and resumed ends with the weights of an uninterrupted run.

The data order is a function of (seed, epoch), every per-sample choice (prompt paraphrase, flip) of (seed, epoch,
position), and each rank's RNG state (LoRA dropout) is checkpointed, so the resumed run sees the same batches and the
same dropout masks. The runs below use dropout, random flips, a warm-up + cosine schedule and cross an epoch boundary
after the resume point.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from helpers_training import run
from safetensors.torch import load_file

from pfmvg_plugin.training.config import ConfigError
from pfmvg_plugin.training.toy import toy_config

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::UserWarning", "ignore::DeprecationWarning")

ROOT = Path(__file__).resolve().parents[1]
DS = ROOT / "recipes" / "ds"
LAUNCH_VARS = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
KILL_AT, TOTAL = 4, 8  # 6 steps per epoch: the resumed part crosses into epoch 1








def config(tiny, toy, out, deepspeed=None, **train):
    return toy_config(tiny, toy, out, deepspeed=deepspeed, lora={"dropout": 0.1}, data={"hflip": 0.5},
                      train={"max_steps": TOTAL, "save_steps": 2, "save_total_limit": 2, "lr_scheduler": "cosine",
                             "warmup_steps": 2, "auto_resume": True, **train})




def weights(adapter_dir: Path) -> dict:
    return load_file(adapter_dir / "adapter_model.safetensors")


def assert_same(a: dict, b: dict, atol=1e-6):
    assert set(a) == set(b) and a
    for k in a:
        assert torch.allclose(a[k], b[k], atol=atol, rtol=0), (k, (a[k] - b[k]).abs().max())


def log_rows(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def uninterrupted(tiny, toy, tmp_path_factory):
    """Reference runs, one per engine, trained straight through."""
    cache = {}

    def get(deepspeed):
        if deepspeed not in cache:
            out = tmp_path_factory.mktemp("straight")
            res = run(config(tiny, toy, out, deepspeed))
            cache[deepspeed] = (res, log_rows(out))
        return cache[deepspeed]

    return get


def subprocess_env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in LAUNCH_VARS}
    env.update(OMP_NUM_THREADS="1", PFMVG_NO_PROGRESS="1", PYTHONUNBUFFERED="1", **extra)
    return env


def test_sigkilled_run_resumes_to_the_same_adapter(tiny, toy, tmp_path, uninterrupted):
    """Plain `python` (no launcher), DeepSpeed ZeRO-2: SIGKILL right after checkpoint 4, then resume."""
    ds = str(DS / "zero2.json")
    ref, ref_log = uninterrupted(ds)
    out = tmp_path / "run"
    data = config(tiny, toy, out, ds).to_dict()
    data.pop("config_dir")
    cfg_path = tmp_path / "cfg.yaml"
    cfg_path.write_text(yaml.safe_dump(data))
    cmd = [sys.executable, str(ROOT / "recipes" / "finetune_lora.py"), "--config", str(cfg_path)]

    killed = subprocess.run(cmd, env=subprocess_env(PFMVG_TRAIN_KILL_AFTER_STEP=str(KILL_AT)), capture_output=True,
                            text=True, timeout=300)
    assert killed.returncode == -9, killed.stdout[-2000:] + killed.stderr[-2000:]
    assert (out / "checkpoints" / "latest").read_text().strip() == f"step-{KILL_AT:08d}"
    assert not (out / "adapter").exists()
    assert [r["step"] for r in log_rows(out)] == list(range(1, KILL_AT + 1))

    resumed = subprocess.run([*cmd, "--resume", "data.num_workers=2"], env=subprocess_env(), capture_output=True,
                             text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-2000:]
    assert f"resumed from {out / 'checkpoints' / f'step-{KILL_AT:08d}'}" in resumed.stdout
    rows = log_rows(out)
    assert [r["step"] for r in rows] == list(range(1, TOTAL + 1))
    assert [r["loss"] for r in rows] == pytest.approx([r["loss"] for r in ref_log], abs=1e-5)
    assert [r["lr"] for r in rows] == pytest.approx([r["lr"] for r in ref_log], rel=1e-9)
    assert_same(weights(out / "adapter"), weights(ref.adapter_dir))
    kept = sorted(p.name for p in (out / "checkpoints").glob("step-*"))
    assert kept == [f"step-{TOTAL - 2:08d}", f"step-{TOTAL:08d}"]  # save_total_limit


class Crash(BaseException):
    pass


@pytest.mark.parametrize("ds_json", [None, "zero3.json"], ids=["torch", "zero3"])
def test_injected_crash_then_resume_in_process(tiny, toy, tmp_path, uninterrupted, monkeypatch, ds_json):
    from pfmvg_plugin.training import trainer

    ds = str(DS / ds_json) if ds_json else None
    ref, _ = uninterrupted(ds)
    out = tmp_path / "run"

    def crash(pid, sig):
        raise Crash

    monkeypatch.setenv(trainer.KILL_ENV, "3")  # no checkpoint at 3: the resume goes back to step 2
    monkeypatch.setattr(trainer.os, "kill", crash)
    with pytest.raises(Crash):
        run(config(tiny, toy, out, ds))
    monkeypatch.delenv(trainer.KILL_ENV)
    res = run(config(tiny, toy, out, ds))  # auto-resume
    assert res.resumed_from == str(out / "checkpoints" / "step-00000002")
    assert res.global_step == TOTAL
    assert_same(weights(res.adapter_dir), weights(ref.adapter_dir))
    assert [r["step"] for r in log_rows(out)] == list(range(1, TOTAL + 1))  # step 3 logged once, not twice
    again = run(config(tiny, toy, out, ds))  # a finished run resumes to its end and does nothing more
    assert again.global_step == TOTAL and again.losses == []


def test_resume_refuses_a_changed_data_layout(tiny, toy, tmp_path):
    out = tmp_path / "run"
    run(config(tiny, toy, out, max_steps=2))
    with pytest.raises(ConfigError, match=r"^train: cannot resume .*micro_batch_size"):
        run(config(tiny, toy, out, max_steps=4, micro_batch_size=3))
    fresh = run(config(tiny, toy, out, max_steps=2, micro_batch_size=3), resume=False)
    assert fresh.resumed_from is None and fresh.global_step == 2
    assert len(list(out.glob("checkpoints.old-*/step-00000002"))) == 1  # the other run's checkpoints kept aside
    assert [r["step"] for r in log_rows(out)] == [1, 2]


def test_group_by_length_trains_and_is_part_of_the_resume_layout(tiny, toy, tmp_path):
    out = tmp_path / "run"
    run(config(tiny, toy, out, max_steps=2))  # a checkpoint without grouping
    with pytest.raises(ConfigError, match=r"^train: cannot resume .*group_by_length.: \(False, True\)"):
        run(toy_config(tiny, toy, out, lora={"dropout": 0.1}, data={"hflip": 0.5, "group_by_length": True},
                       train={"max_steps": 4, "save_steps": 2, "auto_resume": True}))
    grouped = run(toy_config(tiny, toy, tmp_path / "grouped", data={"group_by_length": True},
                             train={"max_steps": 4, "save_steps": 2}))
    assert grouped.global_step == 4 and all(np.isfinite(grouped.losses))
