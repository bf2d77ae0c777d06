"""DeepSpeed on CPU (gloo): ZeRO-2/3 (and offload) train exactly like bare torch; the ZeRO-3 adapter is gathered.

In-process runs use one rank; the 2-rank run goes through the real ``deepspeed`` launcher. The client torch AdamW
(``zero_allow_untested_optimizer``) means no optimizer op is JIT-built; a single CPU rank also skips DeepSpeed's
shared-memory comm op. Two ranks build that op once (35-90 s, cached in ``TORCH_EXTENSIONS_DIR``, by default
``<venv>/torch_extensions`` here).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
import yaml
from helpers_training import run
from safetensors.torch import load_file

from pfmvg_plugin.training.toy import toy_config

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::UserWarning", "ignore::DeprecationWarning")

ROOT = Path(__file__).resolve().parents[1]
DS = ROOT / "recipes" / "ds"
EXT_DIR = Path(sys.prefix) / "torch_extensions"
#: What a rank prints when a C++ thread (gloo / DeepSpeed's shared-memory op) aborts the process.
GLOO_ABORT = "terminate called without an active exception"
LAUNCH_VARS = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")










def adapter(res) -> dict:
    return load_file(res.adapter_dir / "adapter_model.safetensors")


def assert_same_adapter(a: dict, b: dict, atol=2e-6):
    assert set(a) == set(b)
    for k in a:
        assert a[k].shape == b[k].shape and a[k].numel() > 0, k
        assert torch.allclose(a[k].float(), b[k].float(), atol=atol, rtol=1e-4), (k, (a[k] - b[k]).abs().max())


@pytest.fixture(scope="module")
def bare(tiny, toy, tmp_path_factory):
    """The oracle: bare torch, same seed, same batches, LoRA dropout on."""
    return run(toy_config(tiny, toy, tmp_path_factory.mktemp("bare"), lora={"dropout": 0.1}, train={"max_steps": 3}))


@pytest.mark.parametrize("ds_json", ["zero2.json", "zero3.json", "zero2_offload.json", "zero3_offload.json"])
def test_zero_losses_and_weights_equal_bare_torch(tiny, toy, tmp_path, bare, ds_json):
    res = run(toy_config(tiny, toy, tmp_path, deepspeed=str(DS / ds_json), lora={"dropout": 0.1},
                         train={"max_steps": 3}))
    assert res.engine.kind == "deepspeed"
    assert res.summary["zero_stage"] == (3 if "zero3" in ds_json else 2)
    assert res.losses == pytest.approx(bare.losses, abs=1e-4)
    assert_same_adapter(adapter(res), adapter(bare))


@pytest.mark.lowest
def test_zero3_adapter_is_gathered_not_empty(tiny, toy, tmp_path, bare):
    res = run(toy_config(tiny, toy, tmp_path, deepspeed=str(DS / "zero3.json"), lora={"dropout": 0.1},
                         train={"max_steps": 3, "save_steps": 3}))
    engine = res.engine
    params = dict(engine.module.named_parameters())
    lora_b = next(p for n, p in params.items() if "lora_B" in n)
    assert lora_b.numel() == 0 and lora_b.ds_numel > 0  # partitioned: a naive save would write empty tensors
    saved = adapter(res)
    assert saved and all(v.numel() > 0 for v in saved.values())
    with engine.gathered_trainable() as gathered:
        trained = {k.replace(".default", "").replace("modules_to_save.", ""): v for k, v in gathered.items()}
    assert set(saved) == set(trained)
    for k, v in saved.items():
        assert torch.equal(v, trained[k]), k  # the file holds exactly the trained weights
    assert_same_adapter(saved, adapter(bare))
    in_checkpoint = load_file(res.output_dir / "checkpoints" / "step-00000003" / "adapter" /
                              "adapter_model.safetensors")
    assert_same_adapter(in_checkpoint, saved, atol=0)


@pytest.mark.lowest
def test_zero2_step_changes_only_trainable_tensors(tiny, toy, tmp_path):
    from transformers import AutoModelForImageTextToText

    base = AutoModelForImageTextToText.from_pretrained(tiny).state_dict()
    res = run(toy_config(tiny, toy, tmp_path, deepspeed=str(DS / "zero2.json"), train={"max_steps": 2}))
    for name, p in res.engine.module.named_parameters():
        if p.requires_grad:
            continue
        key = name.replace("base_model.model.", "", 1).replace(".base_layer", "").replace(".original_module", "")
        assert torch.equal(base[key], p.detach()), name


def clean_env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in LAUNCH_VARS}
    env.setdefault("TORCH_EXTENSIONS_DIR", str(EXT_DIR))
    env.update(OMP_NUM_THREADS="1", PFMVG_NO_PROGRESS="1", PYTHONUNBUFFERED="1", **extra)
    return env


def write_yaml(cfg, path: Path) -> Path:
    data = cfg.to_dict()
    data.pop("config_dir")
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.slow
@pytest.mark.parametrize(("launcher", "ds_json"), [("deepspeed", "zero2.json"), ("deepspeed", "zero3.json"),
                                                   ("torchrun", None)])
def test_two_ranks_match_bare_torch(tiny, toy, tmp_path, launcher, ds_json):
    """2 ranks x micro batch 1 == 1 process x micro batch 1 x 2 accumulation steps (same samples, same math).

    Through the real launchers: ``deepspeed --num_gpus 2`` (ZeRO-2, ZeRO-3) and ``torchrun`` (plain torch DDP).
    """
    from pfmvg_plugin.training.dist import free_port

    ref = run(toy_config(tiny, toy, tmp_path / "ref", train={"max_steps": 3, "micro_batch_size": 1,
                                                                  "grad_accum": 2}))
    out = tmp_path / "two"
    cfg = toy_config(tiny, toy, out, deepspeed=str(DS / ds_json) if ds_json else None,
                     train={"max_steps": 3, "micro_batch_size": 1, "save_steps": 2})
    path = write_yaml(cfg, tmp_path / "two.yaml")
    script = [str(ROOT / "recipes" / "finetune_lora.py"), "--config", str(path)]

    def launch() -> subprocess.CompletedProcess:
        if launcher == "deepspeed":
            cmd = [str(Path(sys.executable).parent / "deepspeed"), "--num_gpus", "2", "--master_port",
                   str(free_port()), *script]
        else:
            cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                   str(free_port()), *script]
        return subprocess.run(cmd, env=clean_env(DS_ACCELERATOR="cpu"), capture_output=True, text=True, timeout=420,
                              cwd=tmp_path)

    out_proc = launch()
    if out_proc.returncode != 0 and GLOO_ABORT in out_proc.stderr:
        # a rank died in a C++ communication thread (seen once in about ten CI runs of the ZeRO-3 case on 2 CPU
        # cores, not reproducible): run once more from scratch, and say so
        warnings.warn(f"{launcher}/{ds_json}: a rank aborted ({GLOO_ABORT!r}); retrying the 2-rank run once",
                      stacklevel=1)
        shutil.rmtree(out, ignore_errors=True)
        out_proc = launch()
    assert out_proc.returncode == 0, out_proc.stdout[-3000:] + out_proc.stderr[-3000:]
    assert "world_size=2" in out_proc.stdout
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert [r["loss"] for r in log] == pytest.approx(ref.losses, abs=1e-4)
    assert_same_adapter(load_file(out / "adapter" / "adapter_model.safetensors"), adapter(ref), atol=1e-5)
    assert (out / "checkpoints" / "step-00000002" / "rng_state_rank1.pt").is_file()
