"""``bench/bench_gpu_llava7b.py --size tiny``: the GPU benchmark's code path (checkpoint build, the recipe's trainer,
variants side by side, FLOP count, JSON) on the CPU."""

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
SCRIPT = ROOT / "bench" / "bench_gpu_llava7b.py"


def _env() -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PFMVG_NO_PROGRESS": "1"}
    for var in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(var, None)
    return env


def test_tiny_variants_run_side_by_side(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--size", "tiny", "--steps", "2", "--warmup", "1",
                           "--batch", "2", "--engines", "torch", "--variants", "base,nodropout", "--json", str(out)],
                          capture_output=True, text=True, timeout=600, env=_env(), cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    base, nodrop = json.loads(out.read_text())["results"]
    assert (base["variant"], nodrop["variant"]) == ("base", "nodropout")
    assert (base["lora_dropout"], nodrop["lora_dropout"]) == (0.05, 0.0)
    assert base["speedup"] == 1.0 and nodrop["speedup"] == pytest.approx(base["step_s"] / nodrop["step_s"])
    # LoRA B starts at zero, so dropout on the adapter path cannot change the first loss
    assert nodrop["first_loss"] == pytest.approx(base["first_loss"], rel=1e-6)
    assert 0 < base["mfu"] < 1 and base["tokens_per_s"] > 0
    assert "nodropout" in proc.stdout and "speed-up" in proc.stdout


def test_unknown_variant_option_is_refused():
    proc = subprocess.run([sys.executable, str(SCRIPT), "--variants", "base,fast"], capture_output=True, text=True,
                          timeout=120, env=_env(), cwd=ROOT)
    assert proc.returncode == 2 and "unknown variant option(s) ['fast']" in proc.stderr
