"""Liger checks that must run in their own process, started by tests/test_training_speed.py: Liger also swaps
transformers' module-level classes and functions (``LlamaRMSNorm``, ``apply_rotary_pos_emb``), which would leak into
every later test. Prints one ``LIGER_CHECK {json}`` line.

- ``patch``: :func:`apply_liger_kernels` on a loaded backbone; what it patched, inspected (not run: the RMSNorm and
  SwiGLU kernels need a GPU).
- ``numerics`` (run with ``TRITON_INTERPRET=1``, Triton's CPU interpreter, read when the kernels are defined):
  Liger's fused LM-head cross-entropy and RoPE kernels on one of our training batches must give the loss and
  projector gradient of the unpatched model. RMSNorm and SwiGLU stay off: their kernels do not run in the
  interpreter.
"""

from __future__ import annotations

import json
import sys

import torch

from pfmvg_plugin.families import get_family


def language_model(model, backbone_name: str):
    return model.model.language_model if backbone_name == "llava" else model.language_model


def is_fused(model) -> bool:
    """The instance's forward is Liger's (LM head fused with the loss), not its class's."""
    return model.forward.__func__ is not type(model).forward


def check_patch(backbone_name: str, model_dir: str) -> dict:
    from pfmvg_plugin.training.speed import apply_liger_kernels

    backbone = get_family(backbone_name)
    model, _ = backbone.load(model_dir, torch.float32)
    other, _ = get_family(backbone_name).load(model_dir, torch.float32)
    patched = apply_liger_kernels(model)
    lm = language_model(model, backbone_name)
    return {"patched": patched,
            "norms": sorted({m._get_name() for n, m in lm.named_modules() if n.endswith("norm")}),
            "fused": is_fused(model if backbone_name == "llava" else lm),
            "other_fused": is_fused(other if backbone_name == "llava" else other.language_model)}


def check_numerics(backbone_name: str, model_dir: str, data_dir: str, out_dir: str) -> dict:
    from liger_kernel.transformers.monkey_patch import apply_liger_kernel_to_llama, apply_liger_kernel_to_llava

    from pfmvg_plugin.training.data import TrainingData
    from pfmvg_plugin.training.toy import toy_config

    backbone = get_family(backbone_name)
    cfg = toy_config(model_dir, data_dir, out_dir, model={"backbone": backbone_name})
    model, _ = backbone.load(model_dir, torch.float32)
    model.train()  # Liger fuses the loss only in training mode
    data = TrainingData(cfg.data, backbone, seed=0)
    batch = backbone.collate([data.example(0, i, 0, i) for i in range(3)])
    projector = next(p for n, p in model.named_parameters() if any(m in n for m in backbone.trainable_modules()))
    results = {}
    for patched in (False, True):
        if patched:
            kernels = {"rope": True, "rms_norm": False, "swiglu": False, "fused_linear_cross_entropy": True}
            if backbone_name == "llava":
                apply_liger_kernel_to_llava(model=model, **kernels)
            else:
                apply_liger_kernel_to_llama(model=model.language_model, **kernels)
        model.zero_grad()
        loss = model(**batch).loss
        loss.backward()
        results[patched] = (loss.item(), projector.grad.clone())
    return {"loss": results[False][0], "liger_loss": results[True][0],
            "grad_max_diff": (results[True][1] - results[False][1]).abs().max().item(),
            "grad_max": results[False][1].abs().max().item(),
            "fused": is_fused(model if backbone_name == "llava" else model.language_model)}


if __name__ == "__main__":
    mode, *rest = sys.argv[1:]
    result = check_patch(*rest[:2]) if mode == "patch" else check_numerics(*rest[:4])
    print("LIGER_CHECK " + json.dumps(result))
