"""Checkpoints and adapters on disk.

``<output_dir>/checkpoints/step-00000040/`` holds the engine state (DeepSpeed's checkpoint without the frozen base
weights, or the bare-torch trainable weights + optimizer + schedule), one ``rng_state_rank<r>.pt`` per rank,
``trainer_state.json`` (step, epoch, position in the epoch's order) and ``adapter/`` (a loadable PEFT adapter).
``checkpoints/latest`` names the newest COMPLETE checkpoint: it is written last, atomically, after every rank saved,
so a run killed while saving resumes from the previous one.

Adapters (``adapter/`` of a checkpoint and ``<output_dir>/adapter``) are standard PEFT directories
(``adapter_config.json`` + ``adapter_model.safetensors``, the projector included) with the processor saved beside and
``pfmvg_training.json`` (:mod:`pfmvg_plugin.training_record`: backbone, prompt convention, box codec, image resize)
so evaluation can match the training preprocessing.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
from pathlib import Path

import numpy as np
import torch

from pfmvg_plugin.training import dist
from pfmvg_plugin.training_record import TrainingRecord

log = logging.getLogger(__name__)

CHECKPOINTS = "checkpoints"
LATEST = "latest"
STATE_FILE = "trainer_state.json"


def checkpoint_name(step: int) -> str:
    return f"step-{step:08d}"


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    """The newest complete checkpoint of a run, or ``None``."""
    root = Path(output_dir) / CHECKPOINTS
    marker = root / LATEST
    if not marker.is_file():
        return None
    path = root / marker.read_text().strip()
    return path if (path / STATE_FILE).is_file() else None


def rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


def pickle_only_weights(path: str | os.PathLike, weight_names: tuple[str, ...] = ()) -> list[str]:
    """The pickle weight files of a local checkpoint directory that has no safetensors weights (else ``[]``).

    ``torch.load`` of a pickle can execute code; safetensors cannot. ``weight_names`` keeps only files whose names
    start with one of them (``("adapter_model",)``); a path that is not a directory (a hub id) gives ``[]``.
    """
    directory = Path(path)
    if not directory.is_dir():
        return []
    files = [p.name for p in directory.iterdir() if p.is_file()]
    if weight_names:
        files = [f for f in files if f.startswith(weight_names)]
    if any(f.endswith(".safetensors") for f in files):
        return []
    return sorted(f for f in files if f.endswith(PICKLE_SUFFIXES))


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def is_adapter_model(model) -> bool:
    """A PEFT model (LoRA run) rather than a plain backbone (full fine-tuning, ``lora.enabled: false``)."""
    return hasattr(model, "peft_config")


def save_adapter(engine, out_dir: Path, backbone, record: TrainingRecord, is_main: bool) -> None:
    """Write a PEFT adapter with the trainable weights as they are now (gathered from ZeRO-3 partitions); for a full
    fine-tune, the complete model (every weight, KV cache re-enabled for inference) in the same way."""
    full = not is_adapter_model(engine.module)
    with engine.gathered_trainable(all_params=full) as state:  # collective under ZeRO-3: every rank enters
        if is_main:
            out_dir.mkdir(parents=True, exist_ok=True)
            if full:
                for conf in (engine.module.config, getattr(engine.module.config, "text_config", None)):
                    if conf is not None and getattr(conf, "use_cache", None) is False:
                        conf.use_cache = True  # switched off for training only
            engine.module.save_pretrained(str(out_dir), state_dict=state, safe_serialization=True)
            backbone.save_processor(out_dir)
            record.write(out_dir)
    dist.barrier()


def save_checkpoint(engine, output_dir: Path, step: int, trainer_state: dict, backbone, record: TrainingRecord,
                    rank: int,
                    keep: int = 0) -> Path:
    root = output_dir / CHECKPOINTS
    ckpt = root / checkpoint_name(step)
    if rank == 0:
        if ckpt.exists():  # left over by a run killed while saving it
            shutil.rmtree(ckpt)
        ckpt.mkdir(parents=True)
    dist.barrier()
    engine.save_checkpoint(ckpt, rank)
    torch.save(rng_state(), ckpt / f"rng_state_rank{rank}.pt")
    if is_adapter_model(engine.module):  # a full fine-tune's weights are in the engine state already
        save_adapter(engine, ckpt / "adapter", backbone, record, rank == 0)
    dist.barrier()
    if rank == 0:
        _write_atomic(ckpt / STATE_FILE, json.dumps(trainer_state, indent=2) + "\n")
        _write_atomic(root / LATEST, ckpt.name + "\n")
        if keep:
            done = sorted(p for p in root.glob("step-*") if p.is_dir() and (p / STATE_FILE).is_file())
            for old in done[:-keep]:
                shutil.rmtree(old, ignore_errors=True)
    dist.barrier()
    return ckpt


def load_trainer_state(ckpt: Path, rank: int) -> dict:
    state = json.loads((ckpt / STATE_FILE).read_text())
    rng_file = ckpt / f"rng_state_rank{rank}.pt"
    if rng_file.is_file():
        set_rng_state(torch.load(rng_file, map_location="cpu", weights_only=False))
    return state
