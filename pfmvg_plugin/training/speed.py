"""Throughput options of the recipe, both off by default: Liger's fused Triton kernels (``model.use_liger_kernel``)
and regional ``torch.compile`` (``model.torch_compile``).

- Liger replaces RMSNorm, RoPE and SwiGLU of a supported language model and fuses the LM head with the
  cross-entropy (no logits tensor). It patches the model *instance*: the top model when Liger knows its type (LLaVA),
  else each supported sub-model (MiniGPT-v2's ``language_model``). CUDA only. Liger also swaps transformers'
  module-level classes and functions of that model type (``LlamaRMSNorm``, ``apply_rotary_pos_emb``), so a model of
  the same type built later in the same process gets the kernels too.
- ``torch_compile`` compiles the repeated blocks (decoder / encoder layers) in place, one graph reused by every
  layer of a stack (PyTorch's "regional compilation"): compile time stays that of one layer, parameter names stay as
  they are (adapters save unchanged) and DeepSpeed's hooks stay outside the graphs. Unlike accelerate's
  ``compile_regions_deepspeed`` it leaves the small leaf modules (embeddings, norms, projector) eager: each of those
  would be one more entry in the shared ``_call_impl`` cache, which then overflows and recompiles every step.
"""

from __future__ import annotations

import logging

from pfmvg_plugin.training.config import ConfigError

log = logging.getLogger(__name__)

LIGER_KEY = "model.use_liger_kernel"
COMPILE_KEY = "model.torch_compile"


def check_options(use_liger_kernel: bool, torch_compile: bool, zero_stage: int) -> None:
    """Fail before any model is loaded when a throughput option cannot work here, saying what to do instead."""
    import torch

    if use_liger_kernel:
        if not torch.cuda.is_available():
            raise ConfigError(LIGER_KEY, "Liger's Triton kernels need a CUDA GPU; set use_liger_kernel: false on CPU")
        try:
            import liger_kernel.transformers  # noqa: F401
        except ImportError:
            raise ConfigError(LIGER_KEY, "needs the liger-kernel package: pip install 'pfmvg_plugin[gpu]'") from None
    if torch_compile and zero_stage == 3:
        raise ConfigError(COMPILE_KEY, "regional compile is not supported with ZeRO-3 (its parameter gathering hooks "
                                       "break the graphs); use ZeRO-2 or set torch_compile: false")


def apply_liger_kernels(model) -> list[str]:
    """Patch ``model`` (a loaded backbone, before PEFT) with Liger kernels; returns ``"<module path>: <model type>"``
    for every patched (sub-)model."""
    from liger_kernel.transformers.monkey_patch import MODEL_TYPE_TO_APPLY_LIGER_FN, _apply_liger_kernel_to_instance

    patched: list[str] = []

    def visit(module, path: str) -> None:
        model_type = getattr(getattr(module, "config", None), "model_type", None)
        if model_type in MODEL_TYPE_TO_APPLY_LIGER_FN:
            _apply_liger_kernel_to_instance(model=module)
            patched.append(f"{path or '<model>'}: {model_type}")
            return
        for name, child in module.named_children():
            visit(child, f"{path}.{name}" if path else name)

    visit(model, "")
    if not patched:
        found = sorted({getattr(m.config, "model_type", "?") for m in model.modules() if hasattr(m, "config")})
        raise ConfigError(LIGER_KEY, f"Liger has no kernels for any model type in this checkpoint ({found}); "
                                     "set use_liger_kernel: false")
    log.info("Liger kernels applied to %s", ", ".join(patched))
    return patched


def compile_repeated_blocks(module) -> int:
    """Regional ``torch.compile``, in place: every block of a ``ModuleList`` of same-class blocks (decoder and encoder
    layers) compiles to a graph that all its siblings reuse; the rest of the model stays eager. Returns the number of
    blocks compiled."""
    from torch import nn

    compiled: list[str] = []
    for name, child in module.named_modules():
        if any(name.startswith(f"{c}.") for c in compiled):
            continue  # inside a block that is already compiled
        if isinstance(child, nn.ModuleList) and len(child) > 1 and len({type(m) for m in child}) == 1:
            for i, block in enumerate(child):
                block.compile()
                compiled.append(f"{name}.{i}")
    log.info("torch.compile: %d repeated blocks", len(compiled))
    return len(compiled)
