"""The real MiniGPT-v2 7B configuration built on the meta device (no memory, no download): parameter counts, and a
skeleton to materialise on a GPU for benchmarks (``model.to_empty(device="cuda")`` then ``init_weights()``).

Paper setting (MiniGPT-v2 / PFMVG / PeFoMed): LoRA r=64, alpha=16, dropout 0.05 on ``q_proj``/``v_proj`` of the 32
LLaMA-2 layers (32 * 2 * 64 * (4096 + 4096) = 33,554,432) plus the trainable ``llama_proj``
(5632 * 4096 + 4096 = 23,072,768): 56,627,200 trainable parameters; EVA ViT-g/14 (39 blocks) and LLaMA-2 frozen.
"""

from __future__ import annotations

from collections.abc import Sequence


def lora_regex(targets: Sequence[str]) -> str:
    """The PEFT regex that puts LoRA on the language model only."""
    from pfmvg_plugin.models.lora_targets import language_model_regex

    return language_model_regex(targets)


def build_meta_minigptv2_7b(*, lora: bool = True, r: int = 64, alpha: int = 16, dropout: float = 0.05,
                            targets: Sequence[str] = ("q_proj", "v_proj"), train_projector: bool = True,
                            config=None):
    """The 7B model (or ``config``'s) with random-free meta tensors; with ``lora`` the PEFT model the papers train
    (LoRA on the language model, ``llama_proj`` trainable, everything else frozen)."""
    import torch

    from pfmvg_plugin.models.minigptv2.configuration import minigptv2_7b_config
    from pfmvg_plugin.models.minigptv2.modeling import MiniGPTv2ForConditionalGeneration

    config = config or minigptv2_7b_config()
    with torch.device("meta"):
        model = MiniGPTv2ForConditionalGeneration(config)
        model.requires_grad_(False)
        if not lora:
            model.llama_proj.requires_grad_(train_projector)
            return model
        from peft import LoraConfig, get_peft_model

        peft_config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=lora_regex(targets),
                                 modules_to_save=["llama_proj"] if train_projector else None, bias="none")
        return get_peft_model(model, peft_config)


def count_minigptv2_parameters(model) -> dict[str, int]:
    """Parameter counts by part: ``total``, ``trainable``, ``lora``, ``llama_proj`` (trainable copy), ``vision``
    (EVA + ln_vision), ``language_model`` (frozen base weights)."""
    counts = {"total": 0, "trainable": 0, "lora": 0, "llama_proj": 0, "vision": 0, "language_model": 0}
    for name, p in model.named_parameters():
        n = p.ds_numel if hasattr(p, "ds_numel") else p.numel()
        counts["total"] += n
        if p.requires_grad:
            counts["trainable"] += n
            if ".lora_" in name:
                counts["lora"] += n
            elif "llama_proj" in name:
                counts["llama_proj"] += n
        if "vision_model." in name or "ln_vision." in name:
            counts["vision"] += n
        elif "language_model." in name and ".lora_" not in name:
            counts["language_model"] += n
    return counts
