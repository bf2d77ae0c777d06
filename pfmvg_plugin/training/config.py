"""The training configuration: a YAML file with four sections, validated into dataclasses (no torch needed).

Example (``recipes/configs/llava_mscxr.yaml``)::

    model:
      backbone: llava                      # model family (pfmvg_plugin.families)
      path: llava-hf/llava-1.5-7b-hf       # a checkpoint directory or hub id; "tiny" builds a tiny one
    lora:
      r: 16
      alpha: 32
      target_modules: [q_proj, k_proj, v_proj, o_proj]   # language model only (matched by a regex)
    data:
      datasets:
        - {path: mscxr, split: train, ratio: 1.0, task: refer}
      image_resize: squash                 # or pad (LLaVA expand2square: llava_pad codec), native (Qwen2-VL)
    train:
      output_dir: runs/llava_mscxr
      epochs: 3
      micro_batch_size: 4
      lr: 2.0e-4
    deepspeed: recipes/ds/zero2.json       # null: plain torch (DDP under torchrun)

Every key is checked: an unknown key, a value of the wrong type or a bad ratio raises :class:`ConfigError` naming the
key (``data.datasets[1].ratio: ...``). ``key=value`` overrides (``train.lr=1e-4``) go through the same checks.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

import yaml


class ConfigError(ValueError):
    """A configuration problem; the message starts with the dotted key it concerns."""

    def __init__(self, key: str, message: str) -> None:
        self.key = key
        super().__init__(f"{key}: {message}" if key else message)


@dataclass
class ModelConfig:
    #: Model family (:func:`pfmvg_plugin.families.available_families`: ``llava``, ``minigptv2``, ``qwen2vl``,
    #: ``qwen25vl``).
    backbone: str = "llava"
    #: Checkpoint directory or hub id; ``tiny`` (or ``tiny-<family>``) builds the family's tiny offline model into
    #: ``<output_dir>/base_model``.
    path: str = ""
    #: Arguments of the family's tiny builder (:meth:`pfmvg_plugin.families.base.Family.build_tiny`).
    tiny: dict = field(default_factory=dict)
    #: Image-processor settings training and evaluation share (saved with the adapter, which the evaluators load it
    #: from), e.g. Qwen2(.5)-VL's pixel budget ``{min_pixels: 3136, max_pixels: 1003520}``.
    processor: dict = field(default_factory=dict)
    #: QLoRA: load the base model in 4 bit (bitsandbytes, CUDA only).
    load_in_4bit: bool = False
    gradient_checkpointing: bool = False
    #: Attention implementation for ``from_pretrained`` (``sdpa``, ``eager``, ``flash_attention_2``; null: default).
    attn_implementation: str | None = None
    #: Keep the vision tower frozen. ``false`` (with ``lora.enabled: false``) trains it too.
    freeze_vision_tower: bool = True
    #: GPU throughput: Liger's fused Triton kernels (RMSNorm, RoPE, SwiGLU, LM head + cross-entropy); needs CUDA and
    #: ``pip install 'pfmvg_plugin[gpu]'``.
    use_liger_kernel: bool = False
    #: Regional ``torch.compile`` of the repeated decoder / encoder blocks (not with ZeRO-3).
    torch_compile: bool = False


@dataclass
class LoraConfig:
    #: ``false``: no adapter -- full fine-tuning of every weight (the vision tower too when
    #: ``model.freeze_vision_tower: false``); the run writes a complete checkpoint to ``<output_dir>/model``
    #: (loadable as ``model.path`` of a next stage, or ``pretrained=`` of ``pfmvg_llava``) instead of an adapter.
    enabled: bool = True
    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    #: Module names inside the LANGUAGE MODEL; the backbone turns them into a regex that skips the vision tower.
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])
    use_dora: bool = False
    #: Train (and save in the adapter) the backbone's projector (``Backbone.trainable_modules()``).
    train_projector: bool = True
    #: Extra module names to train fully and save with the adapter (PEFT ``modules_to_save``).
    modules_to_save: list[str] = field(default_factory=list)
    #: Start from a previous stage's adapter directory (PeFoMed stage 1 -> stage 2); its LoRA settings then apply.
    init_adapter: str | None = None


@dataclass
class DatasetSpec:
    #: A prepared dataset directory (``pfmvg data prepare`` / ``synth``), or a name under ``$PFMVG_DATA_ROOT``.
    path: str = ""
    split: str = "train"
    #: Sampling weight in the mixture (normalised over all datasets); null on every dataset: use each record once.
    ratio: float | None = None
    #: ``refer`` (grounding), ``vqa``, ``report`` or ``caption``; null: from the records' task.
    task: str | None = None
    #: Use at most this many records of the split (the first ones; for quick runs).
    limit: int | None = None


@dataclass
class DataConfig:
    datasets: list[DatasetSpec] = field(default_factory=list)
    #: Prompt convention (and so box codec); null: the backbone's own (``llava`` / ``minigptv2``).
    convention: str | None = None
    #: ``squash`` (plain resize to the model input, boxes normalised to the original image), ``pad`` (LLaVA's
    #: expand2square then resize; targets use the ``llava_pad`` codec) or ``native`` (the processor's own dynamic
    #: resolution: Qwen2-VL / Qwen2.5-VL); null: the family's default.
    image_resize: Literal["squash", "pad", "native"] | None = None
    #: Probability of a horizontal flip. Off by default: a flip swaps the patient's left and right. When on, the
    #: box is mirrored and left/right words in the phrase are swapped.
    hflip: float = 0.0
    on_bad_record: Literal["error", "skip"] = "error"
    #: Samples per epoch; null: the number of usable records.
    epoch_size: int | None = None
    #: ``memory``: load and resize every image once before training; ``none``: load in the dataloader workers.
    preprocess: Literal["memory", "none"] = "memory"
    num_workers: int = 0
    #: Longest sequence (image tokens included); a longer example is an error naming the record. Null: no limit.
    max_length: int | None = None
    #: Put examples of similar text length in the same micro-batch (as transformers' ``group_by_length``): less
    #: padding, so more useful tokens per step when answers vary in length (reports). Within windows of 50 optimizer
    #: steps the epoch order is sorted longest first; still a pure function of (seed, epoch).
    group_by_length: bool = False


@dataclass
class TrainConfig:
    output_dir: str = "runs/finetune"
    seed: int = 0
    epochs: int = 1
    #: Stop after this many optimizer steps (overrides ``epochs``).
    max_steps: int | None = None
    micro_batch_size: int = 4
    grad_accum: int = 1
    lr: float = 2e-4
    #: Learning-rate factors per module name (``{vision_tower: 0.1, multi_modal_projector: 0.1}``): a trainable
    #: parameter inside a module of that name trains at ``lr * factor`` (same schedule). Empty: one rate for all.
    lr_multipliers: dict = field(default_factory=dict)
    weight_decay: float = 0.0
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    lr_scheduler: Literal["cosine", "linear", "constant"] = "cosine"
    #: Floor of the ``cosine`` / ``linear`` decay (MiniGPT-v2 / PeFoMed's ``min_lr``): the rate goes from ``lr`` to
    #: ``min_lr`` at the last step; with ``lr_multipliers`` a group floors at ``min_lr * factor``. ``constant``
    #: ignores it.
    min_lr: float = 0.0
    warmup_steps: int = 0
    warmup_ratio: float = 0.0
    max_grad_norm: float | None = 1.0
    #: ``auto``: bf16 on a GPU that supports it, fp32 on CPU.
    precision: Literal["auto", "bf16", "fp16", "fp32"] = "auto"
    #: Checkpoint (engine state + RNG + data position) every N optimizer steps; 0: only at the end.
    save_steps: int = 0
    #: Keep this many newest checkpoints (0: all).
    save_total_limit: int = 2
    log_steps: int = 1
    report_to: Literal["none", "tensorboard", "wandb"] = "none"
    #: Continue from the newest checkpoint in ``output_dir`` when there is one (``--resume`` forces it).
    auto_resume: bool = True
    #: Build DeepSpeed's shared-memory allreduce op on CPU (a one-time 35-90 s JIT build); ``auto``: only when
    #: several ranks share a machine. It does nothing on GPU.
    cpu_shm_comm: Literal["auto", "on", "off"] = "auto"


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    #: DeepSpeed JSON path (relative to the YAML's directory, the current directory, or recipes/ds/), an inline
    #: mapping, or null for plain torch.
    deepspeed: Any = None
    #: Where the YAML was read from (set by the loader; relative paths in the config resolve against it).
    config_dir: str | None = None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


TASK_NAMES = ("refer", "vqa", "report", "caption")

#: Names people bring from other tools -> ours (for "did you mean" hints).
_ALIASES = {
    "rank": "r", "lora_r": "r", "lora_alpha": "alpha", "lora_dropout": "dropout", "learning_rate": "lr",
    "batch_size": "micro_batch_size", "per_device_train_batch_size": "micro_batch_size",
    "gradient_accumulation_steps": "grad_accum", "num_train_epochs": "epochs", "max_grad_norm": "max_grad_norm",
    "model_name_or_path": "path", "weight": "ratio", "sample_ratio": "ratio", "dora": "use_dora",
}
_RECORD_TASK = {"grounding": "refer", "vqa": "vqa", "report": "report"}


# ---- generic checked construction ---------------------------------------------------------------------------------
def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is list:
        (inner,) = typing.get_args(tp) or (Any,)
        return f"a list of {_type_name(inner)}"
    if tp is type(None):
        return "null"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return {int: "an integer", float: "a number", bool: "true/false", str: "a string", dict: "a mapping",
            Any: "anything"}.get(tp, str(tp))


def _coerce(value: Any, tp: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None:
            if type(None) in args:
                return None
            raise ConfigError(key, f"expected {_type_name(tp)}, got null")
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError as e:
                errors.append(e)
        raise ConfigError(key, f"expected {_type_name(tp)}, got {value!r}")
    if origin is Literal:
        allowed = typing.get_args(tp)
        if isinstance(value, bool) and {"on", "off"} <= set(allowed):  # YAML 1.1 reads on/off as true/false
            value = "on" if value else "off"
        if value not in allowed:
            raise ConfigError(key, f"expected one of {', '.join(repr(a) for a in allowed)}, got {value!r}")
        return value
    if origin is list:
        (inner,) = typing.get_args(tp) or (Any,)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(key, f"expected {_type_name(tp)}, got {value!r}")
        return [_coerce(v, inner, f"{key}[{i}]") for i, v in enumerate(value)]
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, key)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(key, f"expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(key, f"expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads "2e-4" (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                raise ConfigError(key, f"expected a number, got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ConfigError(key, f"expected a finite number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(key, f"expected a string, got {value!r}")
        return value
    if tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(key, f"expected a mapping, got {value!r}")
        return dict(value)
    raise TypeError(f"unsupported config type {tp!r} at {key}")  # a bug in this module, not in the YAML


def _build(cls: type, data: Any, prefix: str) -> Any:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(prefix, f"expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        if key not in names:
            alias = _ALIASES.get(str(key))
            close = [alias] if alias in names else difflib.get_close_matches(str(key), names, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else f"; known keys: {', '.join(names)}"
            raise ConfigError(path, f"unknown key{hint}")
        kwargs[key] = _coerce(value, hints[key], path)
    return cls(**kwargs)


# ---- semantic checks --------------------------------------------------------------------------------------------
def _check(cfg: Config) -> None:
    if not cfg.model.path:
        raise ConfigError("model.path", "required: a checkpoint directory, a hub id, or 'tiny'")
    lora = cfg.lora
    if not lora.enabled and lora.init_adapter:
        raise ConfigError("lora.init_adapter", "full fine-tuning (lora.enabled: false) starts from model.path, "
                                               "not from an adapter")
    if not lora.enabled and cfg.model.load_in_4bit:
        raise ConfigError("model.load_in_4bit", "4-bit weights cannot be fully fine-tuned: use LoRA (QLoRA)")
    if lora.enabled and not cfg.model.freeze_vision_tower:
        raise ConfigError("model.freeze_vision_tower", "false needs full fine-tuning (lora.enabled: false); LoRA "
                                                       "targets the language model only")
    if lora.r < 1:
        raise ConfigError("lora.r", f"must be >= 1, got {lora.r}")
    if lora.alpha <= 0:
        raise ConfigError("lora.alpha", f"must be > 0, got {lora.alpha}")
    if not 0.0 <= lora.dropout < 1.0:
        raise ConfigError("lora.dropout", f"must be in [0, 1), got {lora.dropout}")
    if not lora.target_modules:
        raise ConfigError("lora.target_modules", "needs at least one module name")
    data = cfg.data
    if not data.datasets:
        raise ConfigError("data.datasets", "needs at least one dataset ({path: ..., split: train})")
    with_ratio = [d.ratio is not None for d in data.datasets]
    for i, spec in enumerate(data.datasets):
        key = f"data.datasets[{i}]"
        if not spec.path:
            raise ConfigError(f"{key}.path", "required")
        if spec.task is not None and spec.task not in TASK_NAMES:
            raise ConfigError(f"{key}.task", f"expected one of {', '.join(TASK_NAMES)}, got {spec.task!r}")
        if spec.ratio is not None and not spec.ratio > 0:
            raise ConfigError(f"{key}.ratio", f"must be a positive sampling weight, got {spec.ratio!r}")
        if any(with_ratio) and spec.ratio is None:
            raise ConfigError(f"{key}.ratio", "missing: give a ratio on every dataset of the mixture or on none")
        if spec.limit is not None and spec.limit < 1:
            raise ConfigError(f"{key}.limit", f"must be >= 1, got {spec.limit}")
    if not 0.0 <= data.hflip <= 1.0:
        raise ConfigError("data.hflip", f"is a probability in [0, 1], got {data.hflip}")
    if data.epoch_size is not None and data.epoch_size < 1:
        raise ConfigError("data.epoch_size", f"must be >= 1, got {data.epoch_size}")
    if data.num_workers < 0:
        raise ConfigError("data.num_workers", f"must be >= 0, got {data.num_workers}")
    if data.convention is not None:
        from pfmvg_plugin.prompts import CONVENTIONS

        if data.convention not in CONVENTIONS:
            raise ConfigError("data.convention", f"expected one of {', '.join(CONVENTIONS)}, got {data.convention!r}")
    t = cfg.train
    for name in ("epochs", "micro_batch_size", "grad_accum", "log_steps"):
        if getattr(t, name) < 1:
            raise ConfigError(f"train.{name}", f"must be >= 1, got {getattr(t, name)}")
    for name in ("warmup_steps", "save_steps", "save_total_limit"):
        if getattr(t, name) < 0:
            raise ConfigError(f"train.{name}", f"must be >= 0, got {getattr(t, name)}")
    if t.max_steps is not None and t.max_steps < 1:
        raise ConfigError("train.max_steps", f"must be >= 1, got {t.max_steps}")
    if not t.lr > 0:
        raise ConfigError("train.lr", f"must be > 0, got {t.lr}")
    if not 0.0 <= t.min_lr <= t.lr:
        raise ConfigError("train.min_lr", f"must be in [0, train.lr={t.lr}], got {t.min_lr}")
    for name, factor in t.lr_multipliers.items():
        if isinstance(factor, bool) or not isinstance(factor, (int, float)) or not factor > 0:
            raise ConfigError(f"train.lr_multipliers.{name}", f"must be a number > 0, got {factor!r}")
    if not 0.0 <= t.warmup_ratio < 1.0:
        raise ConfigError("train.warmup_ratio", f"must be in [0, 1), got {t.warmup_ratio}")
    if len(t.betas) != 2 or not all(0.0 <= b < 1.0 for b in t.betas):
        raise ConfigError("train.betas", f"expected two numbers in [0, 1), got {t.betas}")
    if t.max_grad_norm is not None and t.max_grad_norm <= 0:
        raise ConfigError("train.max_grad_norm", f"must be > 0 or null, got {t.max_grad_norm}")
    if isinstance(cfg.deepspeed, str) and cfg.deepspeed.strip().lower() in ("none", ""):
        cfg.deepspeed = None  # `deepspeed=none` on the command line, like `--deepspeed none`
    if cfg.deepspeed is not None and not isinstance(cfg.deepspeed, (str, dict)):
        raise ConfigError("deepspeed", f"expected a JSON path, a mapping or null, got {cfg.deepspeed!r}")


def config_from_dict(data: Any, config_dir: str | Path | None = None) -> Config:
    """Validate a parsed YAML document into a :class:`Config` (raises :class:`ConfigError`)."""
    cfg = _build(Config, data, "")
    if config_dir is not None:
        cfg.config_dir = str(config_dir)
    _check(cfg)
    return cfg


def parse_override(text: str) -> tuple[list[str], Any]:
    """``train.lr=1e-4`` -> (``["train", "lr"]``, ``1e-4``); the value is read as YAML (``null``, lists, ...)."""
    if "=" not in text:
        raise ConfigError(text, "an override must look like section.key=value")
    key, _, raw = text.partition("=")
    parts = [p for p in key.strip().split(".") if p]
    if not parts:
        raise ConfigError(text, "an override must look like section.key=value")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as e:
        raise ConfigError(key, f"unreadable value {raw!r}: {e}") from None
    return parts, value


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Set dotted keys in the raw YAML mapping (``data.datasets.0.ratio=0.5`` indexes lists)."""
    for text in overrides:
        parts, value = parse_override(text)
        node: Any = data
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            where = ".".join(parts[: i + 1])
            if isinstance(node, list):
                try:
                    idx = int(part)
                    node[idx]  # noqa: B018 - bounds check
                except (ValueError, IndexError):
                    raise ConfigError(where, f"no list item {part!r}") from None
                if last:
                    node[idx] = value
                else:
                    node = node[idx]
            elif isinstance(node, dict):
                if last:
                    node[part] = value
                else:
                    node = node.setdefault(part, {})
            else:
                raise ConfigError(where, "cannot set a key inside a non-mapping value")
    return data


def load_config(path: str | Path, overrides: list[str] | None = None) -> Config:
    """Read, override and validate a YAML config."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise ConfigError("", f"config file {path} not found") from None
    except yaml.YAMLError as e:
        raise ConfigError("", f"{path} is not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError("", f"{path} must hold a mapping with model/lora/data/train/deepspeed sections")
    apply_overrides(data, overrides or [])
    return config_from_dict(data, config_dir=path.resolve().parent)


def expand_path(value: str) -> str:
    """``~`` and ``$VARS`` expanded."""
    return os.path.expandvars(os.path.expanduser(value))


def record_task(record_task_name: str | None) -> str | None:
    """The training task a canonical record's ``task`` maps to by default."""
    return _RECORD_TASK.get(record_task_name or "")
