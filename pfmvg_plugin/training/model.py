"""Load a backbone and wrap it with PEFT: LoRA / DoRA on the language model only, the projector trained and saved
with the adapter, the vision tower frozen; QLoRA on GPU; or continue from a previous stage's adapter."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from pfmvg_plugin.families import Family, get_family
from pfmvg_plugin.training.config import Config, ConfigError, expand_path

log = logging.getLogger(__name__)

#: ``model.path`` values that build a tiny random checkpoint: ``tiny`` (of ``model.backbone``) or ``tiny-<family>``.
TINY = "tiny"


def tiny_family(cfg: Config) -> str | None:
    """The family whose tiny checkpoint ``model.path`` asks for; None for a real checkpoint or hub id."""
    path = cfg.model.path
    if path == TINY:
        return cfg.model.backbone
    if path.startswith(TINY + "-") and not Path(expand_path(path)).exists():
        return path[len(TINY) + 1:]
    return None


def resolve_model_path(cfg: Config, is_main: bool) -> str:
    """``model.path``; ``tiny`` / ``tiny-<family>`` builds that family's tiny offline checkpoint into
    ``<output_dir>/base_model`` (rank 0, the others wait), with ``model.tiny`` as the builder's arguments."""
    from pfmvg_plugin.training import dist

    path = cfg.model.path
    family = tiny_family(cfg)
    if family is None:
        p = Path(expand_path(path))
        if not p.is_absolute() and cfg.config_dir and not p.exists() and (Path(cfg.config_dir) / p).exists():
            p = Path(cfg.config_dir) / p
        return str(p) if p.exists() else path  # else a hub id
    out = Path(expand_path(cfg.train.output_dir)) / "base_model"
    if is_main and not (out / "config.json").is_file():
        try:
            builder = get_family(family).build_tiny
        except ValueError as e:
            raise ConfigError("model.path", f"{path!r}: {e}") from None
        builder(out, **cfg.model.tiny)
    dist.barrier()
    return str(out)


def count_parameters(model) -> tuple[int, int]:
    """(trainable, total) parameter counts (ZeRO-3 partitioned parameters counted at full size)."""
    trainable = total = 0
    for p in model.parameters():
        n = p.ds_numel if hasattr(p, "ds_numel") else p.numel()
        total += n
        if p.requires_grad:
            trainable += n
    return trainable, total


def quantization_config(cfg: Config, dtype: torch.dtype, backbone: Family):
    if not cfg.model.load_in_4bit:
        return None
    if not torch.cuda.is_available():
        raise ConfigError("model.load_in_4bit", "QLoRA (4-bit base weights) needs a CUDA GPU and bitsandbytes; "
                                                "on CPU set load_in_4bit: false and train plain LoRA")
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise ConfigError("model.load_in_4bit", "QLoRA needs bitsandbytes: pip install bitsandbytes") from None
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=dtype,
        bnb_4bit_quant_storage=dtype,  # lets ZeRO-3 shard the packed weights
        llm_int8_skip_modules=[*backbone.frozen_modules(), *backbone.trainable_modules(), "lm_head"],
    )


def build_peft_model(cfg: Config, backbone: Family, model_path: str, dtype: torch.dtype, local_rank: int = 0,
                     zero_stage: int = 0):
    """Load the backbone and return ``(peft_model, processor)`` with exactly the intended parameters trainable."""
    from peft import LoraConfig, PeftModel, get_peft_model

    qconf = quantization_config(cfg, dtype, backbone)
    load_kwargs = {"attn_implementation": cfg.model.attn_implementation}
    if qconf is not None:
        load_kwargs["quantization_config"] = qconf
        load_kwargs["device_map"] = None if zero_stage == 3 else {"": local_rank}
    model, processor = backbone.load(model_path, dtype, **load_kwargs)
    try:
        backbone.configure_processor(**cfg.model.processor)
    except ValueError as e:
        raise ConfigError("model.processor", str(e)) from None
    if cfg.model.use_liger_kernel:
        from pfmvg_plugin.training.speed import apply_liger_kernels

        apply_liger_kernels(model)
    if getattr(model.config, "use_cache", None) is not None:
        model.config.use_cache = False
    text_config = getattr(model.config, "text_config", None)
    if text_config is not None and getattr(text_config, "use_cache", None) is not None:
        text_config.use_cache = False
    if qconf is not None:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=cfg.model.gradient_checkpointing,
            gradient_checkpointing_kwargs={"use_reentrant": False})
    elif cfg.model.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()

    lc = cfg.lora
    frozen = tuple(backbone.frozen_modules())
    if not lc.enabled:  # full fine-tuning: every weight trains but the frozen modules (unless unfrozen)
        for name, p in model.named_parameters():
            p.requires_grad_(not (cfg.model.freeze_vision_tower and any(f".{m}." in f".{name}." for m in frozen)))
        return model, processor
    if lc.init_adapter:
        adapter = Path(expand_path(lc.init_adapter))
        if not (adapter / "adapter_config.json").is_file():
            raise ConfigError("lora.init_adapter",
                              f"{adapter} is not a PEFT adapter directory (no adapter_config.json)")
        model = PeftModel.from_pretrained(model, str(adapter), is_trainable=True)
        log.info("continuing from the adapter in %s (its LoRA settings apply)", adapter)
    else:
        modules_to_save = [*(backbone.trainable_modules() if lc.train_projector else []), *lc.modules_to_save]
        config = LoraConfig(
            r=lc.r,
            lora_alpha=lc.alpha,
            lora_dropout=lc.dropout,
            target_modules=backbone.lora_target_regex(lc.target_modules),
            modules_to_save=modules_to_save or None,
            use_dora=lc.use_dora,
            bias="none",
        )
        try:
            model = get_peft_model(model, config)
        except ValueError as e:
            if "target" not in str(e).lower():
                raise
            raise ConfigError("lora.target_modules", f"{lc.target_modules} matched no module of the language model "
                                                     f"(regex {config.target_modules!r}): {e}") from None
    for name, p in model.named_parameters():
        if p.requires_grad and any(f".{m}." in f".{name}." for m in frozen):
            p.requires_grad_(False)
    trainable, total = count_parameters(model)
    if trainable == 0:
        raise ConfigError("lora.target_modules", f"matched nothing in the language model ({lc.target_modules})")
    return model, processor


def describe_trainable(model) -> str:
    trainable, total = count_parameters(model)
    return f"trainable params: {trainable:,} || all params: {total:,} || trainable%: {100.0 * trainable / total:.4f}"
