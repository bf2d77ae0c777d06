"""Run by tests/test_training_speed.py in a subprocess with ``TRITON_INTERPRET=1`` (Triton's CPU interpreter, read
when the kernels are defined): Liger's fused LM-head cross-entropy and RoPE kernels on one of our training batches
must give the loss and projector gradient of the unpatched model. RMSNorm and SwiGLU stay off: their kernels do not
run in the interpreter. Prints one ``LIGER_CHECK {json}`` line."""

from __future__ import annotations

import json
import sys

import torch

from pfmvg_plugin.training.backbones import get_backbone
from pfmvg_plugin.training.data import TrainingData
from pfmvg_plugin.training.toy import toy_config


def main(backbone_name: str, model_dir: str, data_dir: str, out_dir: str) -> None:
    from liger_kernel.transformers.monkey_patch import apply_liger_kernel_to_llama, apply_liger_kernel_to_llava

    backbone = get_backbone(backbone_name)
    cfg = toy_config(model_dir, data_dir, out_dir, model={"backbone": backbone_name})
    model, _ = backbone.load(model_dir, torch.float32)
    model.train()  # Liger fuses the loss only in training mode
    data = TrainingData(cfg.data, backbone, seed=0)
    batch = backbone.collate([data.example(0, i, 0, i) for i in range(3)])
    projector = dict(model.named_parameters())[next(n for n, _ in model.named_parameters()
                                                    if any(m in n for m in backbone.trainable_modules()))]
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
    print("LIGER_CHECK " + json.dumps({
        "loss": results[False][0], "liger_loss": results[True][0],
        "grad_max_diff": (results[True][1] - results[False][1]).abs().max().item(),
        "grad_max": results[False][1].abs().max().item(),
        "fused": model.forward.__func__ is not type(model).forward if backbone_name == "llava"
        else model.language_model.forward.__func__ is not type(model.language_model).forward}))


if __name__ == "__main__":
    main(*sys.argv[1:5])
