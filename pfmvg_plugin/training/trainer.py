"""The training loop: build everything from a :class:`~pfmvg_plugin.training.config.Config`, train, checkpoint, resume.

:func:`train` is what ``recipes/finetune_lora.py`` calls under ``python``, ``torchrun`` or ``deepspeed``.
"""

from __future__ import annotations

import json
import logging
import os
import random
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import yaml

from pfmvg_plugin.compat import untested_versions
from pfmvg_plugin.training import dist
from pfmvg_plugin.training.checkpoint import (
    STATE_FILE,
    latest_checkpoint,
    load_trainer_state,
    save_adapter,
    save_checkpoint,
)
from pfmvg_plugin.training.config import Config, ConfigError, expand_path
from pfmvg_plugin.training_record import TrainingRecord

log = logging.getLogger(__name__)

#: Testing hook: SIGKILL this process right after optimizer step N (and its checkpoint, if one is due).
KILL_ENV = "PFMVG_TRAIN_KILL_AFTER_STEP"
LOG_FILE = "train_log.jsonl"


@dataclass
class TrainResult:
    output_dir: Path
    adapter_dir: Path
    global_step: int
    losses: list[float] = field(default_factory=list)  # per logged step (mean over the logging interval)
    resumed_from: str | None = None
    summary: dict = field(default_factory=dict)
    #: The engine that trained (its ``module`` is the PEFT model); for in-process callers such as tests.
    engine: object = field(default=None, repr=False)


class RunLogger:
    """JSONL log (rank 0) plus optional TensorBoard / Weights & Biases."""

    def __init__(self, out: Path, is_main: bool, report_to: str, cfg: Config, resumed_step: int | None) -> None:
        self.is_main = is_main
        self.file = None
        self.tb = self.wandb = None
        if not is_main:
            return
        path = out / LOG_FILE
        kept = []
        if resumed_step is not None and path.is_file():  # drop rows of steps the resumed run will redo
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    if json.loads(line)["step"] <= resumed_step:
                        kept.append(line + "\n")
                except (ValueError, KeyError, TypeError):
                    continue
        self.file = path.open("w", encoding="utf-8")
        self.file.writelines(kept)
        if report_to == "tensorboard":
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                raise ConfigError("train.report_to", "tensorboard needs: pip install tensorboard") from None
            self.tb = SummaryWriter(log_dir=str(out / "tensorboard"))
        elif report_to == "wandb":
            try:
                import wandb
            except ImportError:
                raise ConfigError("train.report_to", "wandb needs: pip install wandb") from None
            self.wandb = wandb.init(project=os.environ.get("WANDB_PROJECT", "pfmvg"), config=cfg.to_dict(),
                                    dir=str(out))

    def log(self, row: dict) -> None:
        if not self.is_main:
            return
        self.file.write(json.dumps(row) + "\n")
        self.file.flush()
        step = row["step"]
        scalars = {k: v for k, v in row.items() if k != "step" and isinstance(v, (int, float)) and v is not None}
        if self.tb is not None:
            for k, v in scalars.items():
                self.tb.add_scalar(f"train/{k}", v, step)
        if self.wandb is not None:
            self.wandb.log({f"train/{k}": v for k, v in scalars.items()}, step=step)

    def close(self) -> None:
        if self.file:
            self.file.close()
        if self.tb is not None:
            self.tb.close()
        if self.wandb is not None:
            self.wandb.finish()


def check_reporting(report_to: str) -> None:
    """Fail before any work when the requested experiment tracker is not installed."""
    import importlib.util

    module = {"tensorboard": "tensorboard", "wandb": "wandb"}.get(report_to)
    if module and importlib.util.find_spec(module) is None:
        raise ConfigError("train.report_to", f"{report_to} is not installed: pip install {module}")


def _say(is_main: bool, msg: str) -> None:
    if is_main:
        print(f"[pfmvg.train] {msg}", flush=True)


def _progress_disabled() -> bool:
    return os.environ.get("PFMVG_NO_PROGRESS", "") not in ("", "0")


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _to_device(batch: dict, device) -> dict:
    if device.type == "cpu":
        return batch
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def train(cfg: Config, *, resume: bool | None = None, local_rank: int | None = None) -> TrainResult:
    """Fine-tune as configured. ``resume``: True = continue from the newest checkpoint (fresh start if none), False =
    ignore checkpoints, None = ``train.auto_resume``.

    The launcher variables this call fills in (``RANK``, ``MASTER_PORT``, ...) are removed again when it returns, so
    a subprocess started afterwards (an ``lmms-eval`` run, say) does not try to join this run's process group."""
    with dist.launcher_environment():
        return _train(cfg, resume=resume, local_rank=local_rank)


def _train(cfg: Config, *, resume: bool | None, local_rank: int | None) -> TrainResult:
    from tqdm.auto import tqdm

    from pfmvg_plugin.families import get_family
    from pfmvg_plugin.training.data import StepSampler, TrainingData, check_datasets, make_loader
    from pfmvg_plugin.training.engine import (
        DeepSpeedEngine,
        TorchEngine,
        build_optimizer,
        build_scheduler,
        precision_for,
        resolve_ds_config,
        torch_dtype,
    )
    from pfmvg_plugin.training.model import build_peft_model, describe_trainable, resolve_model_path
    from pfmvg_plugin.training.speed import check_options, compile_repeated_blocks

    t = cfg.train
    check_reporting(t.report_to)
    check_datasets(cfg.data, cfg.config_dir)  # before minutes of model loading
    world = dist.setup_environment(local_rank)
    is_main = world.is_main
    stacks = ("transformers", "peft", "accelerate") + (("deepspeed",) if cfg.deepspeed is not None else ())
    for line in untested_versions(stacks):
        _say(is_main, line)
    use_ds = cfg.deepspeed is not None
    precision = precision_for(t.precision)
    ds_config = resolve_ds_config(cfg.deepspeed, cfg, world.world_size, precision) if use_ds else None
    zero_stage = int(ds_config["zero_optimization"].get("stage", 0)) if ds_config else 0
    check_options(cfg.model.use_liger_kernel, cfg.model.torch_compile, zero_stage)
    dist.init_process_group(world, use_ds, t.cpu_shm_comm)
    device = dist.device_for(world)
    out = Path(expand_path(t.output_dir))
    if is_main:
        out.mkdir(parents=True, exist_ok=True)
    dist.barrier()
    _seed_everything(t.seed)

    model_path = resolve_model_path(cfg, is_main)
    backbone = get_family(cfg.model.backbone)
    model, _ = build_peft_model(cfg, backbone, model_path, torch_dtype(precision), world.local_rank, zero_stage)
    _say(is_main, describe_trainable(model))
    data = TrainingData(cfg.data, backbone, seed=t.seed, config_dir=cfg.config_dir,
                        show_progress=is_main and not _progress_disabled())
    summary = data.summary()
    if data.bad.total:
        _say(is_main, f"skipped {data.bad.total} bad records: {dict(data.bad.counts)}")

    per_micro = t.micro_batch_size * world.world_size
    micro_per_epoch = data.epoch_size // per_micro
    steps_per_epoch = micro_per_epoch // t.grad_accum
    if steps_per_epoch == 0:
        raise ConfigError("train.micro_batch_size",
                          f"one optimizer step needs {per_micro * t.grad_accum} samples (micro batch x ranks x "
                          f"grad_accum) but an epoch has {data.epoch_size}")
    total_steps = t.max_steps or t.epochs * steps_per_epoch
    n_micro = steps_per_epoch * t.grad_accum

    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    optimizer = build_optimizer(params, cfg)
    scheduler = build_scheduler(optimizer, cfg, total_steps)
    if use_ds:
        engine = DeepSpeedEngine(model, optimizer, scheduler, ds_config)
    else:
        engine = TorchEngine(model, optimizer, scheduler, cfg, precision, device, world.world_size)
    compiled = compile_repeated_blocks(engine.module) if cfg.model.torch_compile else 0

    state = {"global_step": 0, "epoch": 0, "micro_in_epoch": 0}
    layout = {"world_size": world.world_size, "micro_batch_size": t.micro_batch_size, "grad_accum": t.grad_accum,
              "seed": t.seed, "epoch_size": data.epoch_size, "group_by_length": cfg.data.group_by_length}
    ckpt = latest_checkpoint(out) if (resume or (resume is None and t.auto_resume)) else None
    if resume and ckpt is None:
        _say(is_main, f"--resume: no checkpoint in {out / 'checkpoints'}; starting from scratch")
    old = out / "checkpoints"
    if ckpt is None and is_main and old.is_dir() and any(old.iterdir()):
        stamp = time.strftime("%Y%m%d-%H%M%S")
        moved = out / f"checkpoints.old-{stamp}"
        n = 1
        while moved.exists():
            n += 1
            moved = out / f"checkpoints.old-{stamp}-{n}"
        old.rename(moved)  # a fresh start must not mix with (or prune) another run's checkpoints
        _say(is_main, f"not resuming: moved the existing checkpoints to {moved}")
    dist.barrier()
    if ckpt is not None:
        saved = json.loads((ckpt / STATE_FILE).read_text())
        saved.setdefault("group_by_length", False)  # checkpoints written before the option existed
        changed = {k: (saved.get(k), v) for k, v in layout.items() if saved.get(k) != v}
        if changed:
            raise ConfigError("train", f"cannot resume {ckpt}: the data order depends on settings that changed "
                                       f"(saved, now): {changed}; start over with --no-resume")
        engine.load_checkpoint(ckpt)
        load_trainer_state(ckpt, world.rank)  # this rank's RNG streams (LoRA dropout)
        state = {k: saved[k] for k in state}
        _say(is_main, f"resumed from {ckpt} at step {state['global_step']}")

    meta = {"backbone": backbone.name, "base_model": model_path, **summary, "precision": precision,
            "engine": engine.kind, "zero_stage": zero_stage}
    record = TrainingRecord.create(meta, "this run's training record")
    if is_main:
        (out / "run_config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
        if ds_config is not None:
            (out / "ds_config.json").write_text(json.dumps(ds_config, indent=2) + "\n")
    levers = "".join([" liger_kernel=on" if cfg.model.use_liger_kernel else "",
                      f" compiled_blocks={compiled}" if compiled else ""])
    _say(is_main, f"engine={engine.kind} zero_stage={zero_stage} precision={precision} world_size={world.world_size} "
                  f"steps={total_steps} ({steps_per_epoch}/epoch, epoch_size={data.epoch_size}){levers}")

    logger = RunLogger(out, is_main, t.report_to, cfg, state["global_step"] if ckpt is not None else None)
    bar = tqdm(total=total_steps, initial=state["global_step"], desc="train", unit="step",
               disable=not is_main or _progress_disabled(), dynamic_ncols=True)
    kill_at = int(os.environ.get(KILL_ENV, "0") or 0)
    losses: list[float] = []
    loss_sum = torch.zeros((), dtype=torch.float64, device=engine.device)
    n_loss = tokens = samples = 0
    last_saved = -1
    tick = time.perf_counter()
    global_step = state["global_step"]
    engine.module.train()
    try:
        while global_step < total_steps:
            epoch = state["epoch"]
            sampler = StepSampler(data.step_order(epoch, per_micro * t.grad_accum), epoch, t.micro_batch_size,
                                  world.world_size, world.rank, n_micro, state["micro_in_epoch"])
            loader = make_loader(data, sampler, cfg.data.num_workers, backbone.collate)
            for batch in loader:
                tokens += int(batch["attention_mask"].sum())
                samples += batch["input_ids"].shape[0]
                loss = engine.forward(_to_device(batch, engine.device))
                engine.backward(loss)
                stepped = engine.step()
                loss_sum += loss.detach().double()
                n_loss += 1
                state["micro_in_epoch"] += 1
                if not stepped:
                    continue
                global_step += 1
                state["global_step"] = global_step
                bar.update(1)
                if global_step % t.log_steps == 0 or global_step == total_steps:
                    mean_loss, tok, smp = dist.all_reduce_mean([float(loss_sum) / n_loss, tokens, samples])
                    now = time.perf_counter()
                    elapsed = max(now - tick, 1e-9)
                    row = {"step": global_step, "epoch": epoch, "loss": mean_loss, "lr": engine.lr(),
                           "grad_norm": engine.last_grad_norm,
                           "samples_per_s": smp * world.world_size / elapsed,
                           "tokens_per_s": tok * world.world_size / elapsed, "time": time.time()}
                    losses.append(mean_loss)
                    logger.log(row)
                    bar.set_postfix(loss=f"{mean_loss:.4f}", lr=f"{row['lr']:.2e}")
                    loss_sum.zero_()
                    n_loss = tokens = samples = 0
                    tick = time.perf_counter()
                if state["micro_in_epoch"] >= n_micro:
                    state["epoch"], state["micro_in_epoch"] = epoch + 1, 0
                if t.save_steps and global_step % t.save_steps == 0:
                    save_checkpoint(engine, out, global_step, {**state, **layout}, backbone, record, world.rank,
                                    t.save_total_limit)
                    last_saved = global_step
                if kill_at and global_step == kill_at:
                    sys.stdout.flush()
                    os.kill(os.getpid(), signal.SIGKILL)
                if global_step >= total_steps:
                    break
            if state["micro_in_epoch"] >= n_micro:
                state["epoch"], state["micro_in_epoch"] = state["epoch"] + 1, 0
        if t.save_steps and last_saved != global_step and global_step > 0:
            save_checkpoint(engine, out, global_step, {**state, **layout}, backbone, record, world.rank,
                            t.save_total_limit)
        adapter_dir = out / ("adapter" if cfg.lora.enabled else "model")  # full fine-tune: the whole model
        final = TrainingRecord.create({**meta, "global_step": global_step}, "this run's training record")
        save_adapter(engine, adapter_dir, backbone, final, is_main)
    finally:
        bar.close()
        logger.close()
    summary = {**meta, "global_step": global_step, "total_steps": total_steps,
               "resumed_from": str(ckpt) if ckpt else None}
    if is_main:
        (out / "train_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    _say(is_main, f"done: step {global_step}; {'adapter' if cfg.lora.enabled else 'model'} in {adapter_dir}")
    return TrainResult(output_dir=out, adapter_dir=adapter_dir, global_step=global_step, losses=losses,
                       resumed_from=str(ckpt) if ckpt else None, summary=summary, engine=engine)
