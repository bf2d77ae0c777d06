"""Throughput options: regional torch.compile trains to the same losses and adapter as eager; Liger patches the
language model of each backbone, and its fused loss (run by Triton's CPU interpreter) matches the unpatched one on our
batches; both options refuse set-ups where they cannot work, before any model is loaded."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers_training import run
from safetensors.torch import load_file

from pfmvg_plugin.training.config import ConfigError
from pfmvg_plugin.training.speed import apply_liger_kernels, check_options
from pfmvg_plugin.training.toy import TEST_TINY_LLAVA, toy_config

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")


@pytest.mark.parametrize("zero2_gc", [False, True], ids=["torch", "zero2-checkpointing"])
def test_regional_compile_trains_like_eager(tiny, toy, tmp_path, capsys, zero2_gc):
    ds = str(Path(__file__).resolve().parents[1] / "recipes" / "ds" / "zero2.json") if zero2_gc else None
    runs = {c: run(toy_config(tiny, toy, tmp_path / f"compile_{c}", deepspeed=ds,
                              model={"torch_compile": c, "gradient_checkpointing": zero2_gc}), resume=False)
            for c in (False, True)}
    assert capsys.readouterr().out.count(" compiled_blocks=4") == 1
    compiled = [m for m in runs[True].engine.module.modules() if getattr(m, "_compiled_call_impl", None) is not None]
    assert len(compiled) == TEST_TINY_LLAVA["vision_layers"] + TEST_TINY_LLAVA["text_layers"]
    assert {type(m).__name__ for m in compiled} == {"CLIPEncoderLayer", "LlamaDecoderLayer"}
    assert runs[True].losses == pytest.approx(runs[False].losses, rel=1e-5, abs=1e-5)
    eager, comp = (load_file(runs[c].adapter_dir / "adapter_model.safetensors") for c in (False, True))
    assert sorted(comp) == sorted(eager)  # in-place compile: no `_orig_mod.` in the saved names
    for name in eager:
        torch.testing.assert_close(comp[name], eager[name], rtol=1e-4, atol=1e-5)


def test_compile_with_zero3_is_refused():
    with pytest.raises(ConfigError, match=r"^model\.torch_compile: .*ZeRO-3.*use ZeRO-2"):
        check_options(use_liger_kernel=False, torch_compile=True, zero_stage=3)
    check_options(use_liger_kernel=False, torch_compile=True, zero_stage=2)


def test_liger_on_cpu_is_a_clear_error(tiny, toy, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("Liger is allowed on a GPU")
    with pytest.raises(ConfigError, match=r"^model\.use_liger_kernel: .*need a CUDA GPU"):
        run(toy_config(tiny, toy, tmp_path, model={"use_liger_kernel": True}))


@pytest.fixture
def liger():
    pytest.importorskip("liger_kernel.transformers")


def liger_check(mode: str, backbone: str, model_dir, *args, interpret: bool = False) -> dict:
    """tests/liger_check.py in its own process (Liger patches transformers module-wide)."""
    import json
    import os
    import subprocess
    import sys

    env = {**os.environ, "OMP_NUM_THREADS": "1", **({"TRITON_INTERPRET": "1"} if interpret else {})}
    script = Path(__file__).with_name("liger_check.py")
    proc = subprocess.run([sys.executable, str(script), mode, backbone, str(model_dir), *map(str, args)],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (line,) = [x for x in proc.stdout.splitlines() if x.startswith("LIGER_CHECK ")]
    return json.loads(line[len("LIGER_CHECK "):])


@pytest.fixture(scope="module")
def tiny_mgpt(tmp_path_factory):
    from pfmvg_plugin.models.minigptv2 import build_tiny_minigptv2

    return build_tiny_minigptv2(tmp_path_factory.mktemp("tiny_minigptv2") / "model")


def test_liger_patches_the_llava_instance_and_its_llama(liger, tiny):
    """Inspected, not run: Liger's RMSNorm and SwiGLU kernels need a GPU (the GPU bench runs them)."""
    r = liger_check("patch", "llava", tiny)
    assert r["patched"] == ["<model>: llava"] and r["norms"] == ["LigerRMSNorm"]
    assert r["fused"] and not r["other_fused"]  # the LM head + loss fusion is on this instance only


def test_liger_patches_the_minigptv2_language_model(liger, tiny_mgpt):
    r = liger_check("patch", "minigptv2", tiny_mgpt)
    assert r["patched"] == ["language_model: llama"] and r["norms"] == ["LigerRMSNorm"]
    assert r["fused"] and not r["other_fused"]


def test_liger_without_a_supported_model_type_is_a_clear_error(liger):
    from transformers import CLIPVisionConfig, CLIPVisionModel

    model = CLIPVisionModel(CLIPVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                             num_attention_heads=2, image_size=16, patch_size=8))
    with pytest.raises(ConfigError, match=r"^model\.use_liger_kernel: Liger has no kernels .*clip_vision_model"):
        apply_liger_kernels(model)  # nothing matched, so nothing was patched: safe in this process
    from transformers.models.llama import modeling_llama

    assert modeling_llama.LlamaRMSNorm.__module__ == modeling_llama.__name__  # no Liger leaked into this process


@pytest.mark.parametrize("backbone", ["llava", "minigptv2"])
def test_liger_fused_loss_matches_on_our_batches(liger, backbone, tiny, tiny_mgpt, toy, tmp_path):
    """Liger's kernels really run here, in Triton's CPU interpreter: the fused LM head + cross-entropy and RoPE give
    the unpatched loss and gradient on our batches (answer-only labels, image tokens spliced in)."""
    r = liger_check("numerics", backbone, tiny if backbone == "llava" else tiny_mgpt, toy, tmp_path / "out",
                    interpret=True)
    assert r["fused"]
    assert r["liger_loss"] == pytest.approx(r["loss"], rel=1e-5)
    assert r["grad_max"] > 0 and r["grad_max_diff"] <= 1e-4 * r["grad_max"]
