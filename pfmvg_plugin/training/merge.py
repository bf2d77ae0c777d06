"""Merge a trained LoRA adapter into its base model and write a standalone checkpoint.

PEFT's ``merge_and_unload`` folds every ``B @ A * alpha / r`` into its base weight and puts the adapter's fully
trained modules (the projector, ``modules_to_save``) in place, so the result is a plain ``transformers`` model: what a
serving stack without PEFT, a further full fine-tune, or a release needs. The processor and our
``pfmvg_training.json`` (prompt convention, box codec, image resize) are written beside the weights, so
``lmms-eval --model pfmvg_llava --model_args pretrained=OUT`` scores it exactly like base + adapter.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from pfmvg_plugin.training.checkpoint import pickle_only_weights
from pfmvg_plugin.training_record import TrainingRecord, read_training_meta

log = logging.getLogger(__name__)

DTYPES = ("float32", "bfloat16", "float16")


def detect_backbone(base: str | os.PathLike, adapter_meta: dict) -> str:
    """The backbone registry name of a base checkpoint: the adapter's training record, else what the directory
    holds (the family that claims its ``config.json`` ``model_type``; LLaVA when none does)."""
    if adapter_meta.get("backbone"):
        return str(adapter_meta["backbone"])
    from pfmvg_plugin.families import family_for_checkpoint

    return family_for_checkpoint(base) or "llava"


def _refuse_pickles(path: Path, what: str, names: tuple[str, ...]) -> None:
    pickles = pickle_only_weights(path, names)
    if pickles:
        raise ValueError(f"the {what} at {path} has only pickle weights ({', '.join(pickles)}), which can run code "
                         "when loaded; save it with safe_serialization=True (safetensors) first")


def merge_adapter(base: str | os.PathLike, adapter: str | os.PathLike, out: str | os.PathLike, *,
                  backbone: str | None = None, dtype: str = "float32", max_shard_size: str = "4GB",
                  overwrite: bool = False) -> dict[str, Any]:
    """Load ``base`` + the PEFT adapter ``adapter``, merge, and save the merged model (safetensors) with its processor
    and training record to ``out``. Returns a summary (also written to ``out/pfmvg_training.json`` as ``merged``).

    Raises ``FileNotFoundError`` / ``ValueError`` with what to fix for a missing or non-PEFT adapter directory, pickle
    weights, an existing ``out`` (unless ``overwrite``) or an unknown ``backbone`` / ``dtype``.
    """
    import torch
    from peft import PeftModel

    from pfmvg_plugin.families import get_family
    from pfmvg_plugin.families.base import processor_dir

    adapter, out = Path(adapter), Path(out)
    if not (adapter / "adapter_config.json").is_file():
        raise FileNotFoundError(f"{adapter} is not a PEFT adapter directory (no adapter_config.json); pass the "
                                "`adapter/` directory a training run wrote")
    if dtype not in DTYPES:
        raise ValueError(f"dtype {dtype!r}: choose one of {', '.join(DTYPES)}")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise ValueError(f"{out} exists and is not empty; choose another --out or pass --overwrite")
    if Path(base).is_dir():
        _refuse_pickles(Path(base), "base model", ("model", "pytorch_model"))
    _refuse_pickles(adapter, "adapter", ("adapter_model",))

    meta = read_training_meta(adapter, "pfmvg merge")
    name = backbone or detect_backbone(base, meta)
    bb = get_family(name)
    model, processor = bb.load(str(base), getattr(torch, dtype))
    if processor_dir(adapter, base) == str(adapter):  # the processor training used (its model.processor settings)
        processor = bb.load_processor(adapter)
    n_base = sum(p.numel() for p in model.parameters())
    peft_model = PeftModel.from_pretrained(model, str(adapter), is_trainable=False)
    merged = peft_model.merge_and_unload()
    n_merged = sum(p.numel() for p in merged.parameters())
    if n_merged != n_base:  # merging must give back exactly the base architecture
        raise RuntimeError(f"merged model has {n_merged} parameters, the base {n_base}: the adapter does not fit "
                           f"{base}")
    for conf in (merged.config, getattr(merged.config, "text_config", None)):
        if conf is not None and getattr(conf, "use_cache", None) is False:
            conf.use_cache = True  # adapters are trained with the cache off; the merged model is for inference

    out.mkdir(parents=True, exist_ok=True)
    merged.save_pretrained(str(out), safe_serialization=True, max_shard_size=max_shard_size)
    processor.save_pretrained(str(out))
    summary = {"base_model": str(base), "adapter": str(adapter), "backbone": name, "dtype": dtype,
               "parameters": n_merged}
    TrainingRecord.create({**meta, "backbone": name, "merged": summary}, f"the record of {adapter}").write(out)
    log.info("merged %s into %s -> %s (%d parameters, %s)", adapter, base, out, n_merged, dtype)
    return summary
