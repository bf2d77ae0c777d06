"""``bench/bench_gpu_minigptv2.py --tiny``: the GPU benchmark's code path (model build, PEFT wrap, DeepSpeed ZeRO-2 or
torch engine, FLOP count, JSON line) on the CPU, and its FLOP formula on the real 7B shapes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("peft")

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "bench" / "bench_gpu_minigptv2.py"


def test_tiny_two_steps_print_one_json_line():
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PFMVG_NO_PROGRESS": "1"}
    for var in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(var, None)
    proc = subprocess.run([sys.executable, str(SCRIPT), "--tiny", "--steps", "2", "--warmup", "1", "--batch", "2"],
                          capture_output=True, text=True, timeout=300, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (line,) = [x for x in proc.stdout.splitlines() if x.startswith("BENCH_JSON ")]
    result = json.loads(line[len("BENCH_JSON "):])
    assert result["model"] == "tiny" and len(result["step_s_all"]) == 2 and result["batch"] == 2
    assert result["seq_len"] == 64 + result["image_tokens"]
    assert result["tokens_per_s"] > 0 and 0 < result["mfu"] < 1 and result["loss_last"] > 0
    assert result["engine"] in ("deepspeed_zero2", "torch")
    assert (result["lora_dropout"], result["liger"], result["compile"]) == (0.05, False, False)


def test_liger_without_cuda_is_a_clear_error():
    import torch

    if torch.cuda.is_available():
        pytest.skip("Liger runs on a GPU")
    proc = subprocess.run([sys.executable, str(SCRIPT), "--tiny", "--liger"], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"}, cwd=ROOT)
    assert proc.returncode == 2 and "model.use_liger_kernel: Liger's Triton kernels need a CUDA GPU" in proc.stderr


def test_flop_count_of_the_7b_shapes():
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        import bench_gpu_minigptv2 as bench
    finally:
        sys.path.remove(str(SCRIPT.parent))
    config = bench.build_config(tiny=False)
    flops = bench.count_flops(config, seq_len=320, lora_params=33_554_432)
    assert flops["n_llm"] == 6_607_077_376  # Llama-2-7B Linear weights + LM head (no embeddings)
    assert flops["n_proj"] == 23_072_768
    assert 0.98e9 < flops["n_vision"] < 0.99e9  # EVA-g/14, 39 blocks
    llm = 320 * (4 * flops["n_llm"] + 3 * 2 * 32 * 4096 * 320 + 6 * 33_554_432)
    assert flops["llm"] == llm and flops["total"] == flops["llm"] + flops["vision"] + flops["projector"]
