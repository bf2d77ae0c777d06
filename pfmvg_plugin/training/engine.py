"""Two interchangeable engines behind one small API: plain torch (DDP under torchrun) and DeepSpeed ZeRO.

Both take a client ``torch.optim.AdamW`` and a ``LambdaLR`` schedule, so DeepSpeed builds no optimizer op
(``zero_allow_untested_optimizer``), and both run the same loss through the same update: the bare-torch engine is
the oracle the DeepSpeed runs are tested against. ``step()`` is called after every micro-batch; the optimizer steps
on the gradient-accumulation boundary (DeepSpeed's convention).
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
from pathlib import Path
from typing import Any

import torch

from pfmvg_plugin.training.config import Config, ConfigError

log = logging.getLogger(__name__)

_BATCH_KEYS = ("train_batch_size", "train_micro_batch_size_per_gpu", "gradient_accumulation_steps")


def precision_for(requested: str) -> str:
    """``auto`` -> ``bf16`` on a GPU that supports it, ``fp32`` otherwise."""
    if requested != "auto":
        return requested
    if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return "bf16"
    return "fp32"


def torch_dtype(precision: str) -> torch.dtype:
    return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[precision]


def build_optimizer(params, cfg: Config) -> torch.optim.Optimizer:
    """AdamW over ``params`` (parameters, or ``(name, parameter)`` pairs for ``train.lr_multipliers`` groups)."""
    t = cfg.train
    params = list(params)
    if t.lr_multipliers and params and isinstance(params[0], tuple):
        groups: dict[float, list] = {1.0: []}
        for name, p in params:
            hits = [float(f) for m, f in t.lr_multipliers.items() if f".{m}." in f".{name}."]
            groups.setdefault(hits[0] if hits else 1.0, []).append(p)
        params = [{"params": ps, "lr": t.lr * f} for f, ps in groups.items() if ps]  # the base group first
    elif params and isinstance(params[0], tuple):
        params = [p for _, p in params]
    return torch.optim.AdamW(params, lr=t.lr, betas=tuple(t.betas), weight_decay=t.weight_decay, eps=1e-8)


def build_scheduler(optimizer, cfg: Config, total_steps: int):
    """A ``LambdaLR`` factor on each group's own lr: linear warm-up, then ``cosine`` / ``linear`` from 1 down to
    ``min_lr / lr`` at ``total_steps`` (so a multiplied group floors at ``min_lr * factor``), or ``constant``."""
    import math

    t = cfg.train
    warmup = t.warmup_steps or int(round(t.warmup_ratio * total_steps))
    floor = t.min_lr / t.lr

    def factor(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / (warmup + 1)
        if t.lr_scheduler == "constant":
            return 1.0
        progress = (step - warmup) / max(1, total_steps - warmup)
        progress = min(max(progress, 0.0), 1.0)
        if t.lr_scheduler == "linear":
            return floor + (1.0 - floor) * (1.0 - progress)
        return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


# ---- DeepSpeed config ---------------------------------------------------------------------------------------------
def find_ds_config(spec: str, config_dir: str | None) -> Path:
    """A DeepSpeed JSON named in the YAML: as given, relative to the YAML, in the sibling ``recipes/ds/`` folder, or a
    shipped one by name (``zero2`` -> ``pfmvg_plugin.recipes`` ``ds/zero2.json``)."""
    from pfmvg_plugin.training.config import expand_path
    from pfmvg_plugin.training.recipes import recipes_dir

    p = Path(expand_path(spec))
    candidates = [p]
    if not p.is_absolute() and config_dir:
        base = Path(config_dir)
        candidates += [base / p, base.parent / "ds" / p.name, base.parent.parent / p]
    if not p.is_absolute():
        candidates.append(recipes_dir() / "ds" / (p.name if p.suffix == ".json" else f"{p.name}.json"))
    for c in candidates:
        if c.is_file():
            return c
    raise ConfigError("deepspeed", f"DeepSpeed config {spec!r} not found (tried {', '.join(map(str, candidates))})")


def _has_auto(node: Any, path: str = "") -> str | None:
    if isinstance(node, dict):
        for k, v in node.items():
            found = _has_auto(v, f"{path}.{k}" if path else k)
            if found:
                return found
    elif node == "auto":
        return path
    return None


def resolve_ds_config(spec: str | dict, cfg: Config, world_size: int, precision: str,
                      client_optimizer: bool = True) -> dict:
    """The DeepSpeed config with batch sizes, accumulation, clipping and precision filled from the YAML.

    Values the YAML decides overwrite the JSON (with a warning when the JSON said something else); any other
    ``"auto"`` left in the JSON is an error naming its key.
    """
    if isinstance(spec, dict):
        ds = copy.deepcopy(spec)
    else:
        path = find_ds_config(spec, cfg.config_dir)
        try:
            ds = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise ConfigError("deepspeed", f"{path} is not valid JSON: {e}") from None
    t = cfg.train
    wanted = {
        "train_micro_batch_size_per_gpu": t.micro_batch_size,
        "gradient_accumulation_steps": t.grad_accum,
        "train_batch_size": t.micro_batch_size * t.grad_accum * world_size,
        "gradient_clipping": float(t.max_grad_norm or 0.0),
    }
    for key, value in wanted.items():
        if key in ds and ds[key] not in ("auto", value):
            log.warning("deepspeed config %s=%r replaced by %r from the YAML", key, ds[key], value)
        ds[key] = value
    for key, on in (("bf16", precision == "bf16"), ("fp16", precision == "fp16")):
        section = ds.get(key) if isinstance(ds.get(key), dict) else {}
        section = {k: v for k, v in section.items() if v != "auto"}
        section["enabled"] = on
        ds[key] = section
    zero = ds.setdefault("zero_optimization", {"stage": 0})
    if int(zero.get("stage", 0)) > 0:
        zero.setdefault("overlap_comm", torch.cuda.is_available())  # overlaps with CUDA streams; nothing to gain on CPU
    if client_optimizer and "optimizer" not in ds:
        ds["zero_allow_untested_optimizer"] = True
        offload = (zero.get("offload_optimizer") or {}).get("device", "none") not in (None, "none")
        if offload:  # a torch AdamW on the CPU-side fp32 master weights (DeepSpeedCPUAdam would need a JIT build)
            ds["zero_force_ds_cpu_optimizer"] = False
    if "scheduler" in ds:
        raise ConfigError("deepspeed.scheduler",
                          "remove it: the schedule comes from train.lr_scheduler/warmup_*/min_lr")
    ds.setdefault("steps_per_print", 10**9)
    ds.setdefault("wall_clock_breakdown", False)
    auto = _has_auto(ds)
    if auto:
        raise ConfigError(f"deepspeed.{auto}", "'auto' is not resolved by this recipe; give a value")
    return ds


# ---- engines ------------------------------------------------------------------------------------------------------
def is_quantized(model) -> bool:
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    return bool(getattr(inner, "is_quantized", False) or getattr(inner, "hf_quantizer", None) is not None
                or getattr(inner, "is_loaded_in_4bit", False))


class TorchEngine:
    """Bare torch: autocast for bf16/fp16, gradient accumulation, clipping; DDP when several ranks."""

    kind = "torch"

    def __init__(self, model, optimizer, scheduler, cfg: Config, precision: str, device, world_size: int) -> None:
        self.module = model
        self.optimizer, self.scheduler = optimizer, scheduler
        self.grad_accum = cfg.train.grad_accum
        self.max_grad_norm = cfg.train.max_grad_norm
        self.precision, self.device = precision, device
        self.micro = 0
        self.last_grad_norm: float | None = None
        if not is_quantized(model):  # a 4-bit model is placed by its device_map already
            model.to(device)
        if precision != "fp32":  # half base weights, fp32 trainable weights, half compute
            for p in model.parameters():
                if p.requires_grad:
                    p.data = p.data.float()
        self.scaler = torch.amp.GradScaler(device.type) if precision == "fp16" else None
        self.net = model
        if world_size > 1:
            ids = [device.index] if device.type == "cuda" else None
            self.net = torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)

    @property
    def at_boundary(self) -> bool:
        return (self.micro + 1) % self.grad_accum == 0

    def forward(self, batch: dict) -> torch.Tensor:
        ctx = (torch.autocast(self.device.type, dtype=torch_dtype(self.precision)) if self.precision != "fp32"
               else contextlib.nullcontext())
        sync = contextlib.nullcontext()
        if self.net is not self.module and not self.at_boundary:
            sync = self.net.no_sync()
        self._sync = sync
        with ctx:
            return self.net(**batch).loss

    def backward(self, loss: torch.Tensor) -> None:
        scaled = loss / self.grad_accum
        with self._sync:
            (self.scaler.scale(scaled) if self.scaler else scaled).backward()

    def step(self) -> bool:
        """After each micro-batch; returns True when the optimizer stepped."""
        boundary = self.at_boundary
        self.micro += 1
        if not boundary:
            return False
        params = [p for p in self.module.parameters() if p.requires_grad]
        if self.scaler:
            self.scaler.unscale_(self.optimizer)
        if self.max_grad_norm:
            self.last_grad_norm = float(torch.nn.utils.clip_grad_norm_(params, self.max_grad_norm))
        if self.scaler:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return True

    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    @contextlib.contextmanager
    def gathered_trainable(self, all_params: bool = False):
        """``name -> tensor`` (CPU copies) of every trainable parameter (every parameter with ``all_params``)."""
        yield {n: p.detach().cpu().clone() for n, p in self.module.named_parameters() if all_params or p.requires_grad}

    def save_checkpoint(self, ckpt_dir: Path, rank: int) -> None:
        if rank != 0:
            return
        state = {
            "trainable": {n: p.detach().cpu() for n, p in self.module.named_parameters() if p.requires_grad},
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler else None,
            "micro": self.micro,
        }
        torch.save(state, ckpt_dir / "engine_torch.pt")

    def load_checkpoint(self, ckpt_dir: Path) -> None:
        state = torch.load(ckpt_dir / "engine_torch.pt", map_location="cpu", weights_only=False)
        params = dict(self.module.named_parameters())
        missing = [n for n in state["trainable"] if n not in params]
        if missing:
            raise RuntimeError(f"checkpoint {ckpt_dir} has parameters this model lacks: {missing[:3]}")
        with torch.no_grad():
            for n, value in state["trainable"].items():
                params[n].copy_(value.to(params[n].device, params[n].dtype))
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.scaler and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.micro = int(state.get("micro", 0))


class DeepSpeedEngine:
    """``deepspeed.initialize`` around the PEFT model with our optimizer and schedule."""

    kind = "deepspeed"

    def __init__(self, model, optimizer, scheduler, ds_config: dict) -> None:
        import deepspeed

        self.ds_config = ds_config
        self.stage = int(ds_config.get("zero_optimization", {}).get("stage", 0))
        params = [p for p in model.parameters() if p.requires_grad]
        self.engine, self.optimizer, _, self.scheduler = deepspeed.initialize(
            model=model,
            optimizer=optimizer,
            lr_scheduler=scheduler,
            model_parameters=params,
            config=ds_config,
        )
        self.module = self.engine.module
        self.device = self.engine.device
        self.precision = "bf16" if ds_config["bf16"]["enabled"] else "fp16" if ds_config["fp16"]["enabled"] else "fp32"
        self.last_grad_norm: float | None = None

    @property
    def at_boundary(self) -> bool:
        return self.engine.is_gradient_accumulation_boundary()

    def forward(self, batch: dict) -> torch.Tensor:
        return self.engine(**batch).loss

    def backward(self, loss: torch.Tensor) -> None:
        self.engine.backward(loss)

    def step(self) -> bool:
        boundary = self.engine.is_gradient_accumulation_boundary()
        self.engine.step()
        if boundary:
            norm = self.engine.get_global_grad_norm()
            self.last_grad_norm = None if norm is None else float(norm)
        return boundary

    def lr(self) -> float:
        return float(self.engine.get_lr()[0])

    @contextlib.contextmanager
    def gathered_trainable(self, all_params: bool = False):
        """Trainable parameters (every parameter with ``all_params``) gathered from their ZeRO-3 partitions (on every
        rank: it is a collective)."""
        named = [(n, p) for n, p in self.module.named_parameters() if all_params or p.requires_grad]
        ctx = contextlib.nullcontext()
        if self.stage == 3:
            import deepspeed

            ctx = deepspeed.zero.GatheredParameters([p for _, p in named], modifier_rank=None)
        with ctx:
            state = {n: p.detach().cpu().clone() for n, p in named}
        yield state

    def save_checkpoint(self, ckpt_dir: Path, rank: int) -> None:
        self.engine.save_checkpoint(str(ckpt_dir), tag="engine", save_latest=False, exclude_frozen_parameters=True)

    def load_checkpoint(self, ckpt_dir: Path) -> None:
        path, _ = self.engine.load_checkpoint(str(ckpt_dir), tag="engine", load_module_strict=False,
                                              load_optimizer_states=True, load_lr_scheduler_states=True)
        if path is None:
            raise RuntimeError(f"DeepSpeed could not load the checkpoint in {ckpt_dir}")
