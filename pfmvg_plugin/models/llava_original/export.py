"""Export a transformers LLaVA (converted by ``pfmvg convert llava``, optionally with a LoRA adapter merged in) back to
the original LLaVA / LLaVA-Med layout, so it is served with the original ``llava`` code.

The original ``load_pretrained_model`` picks its class from the folder name: a name with "llava" loads
``LlavaLlamaForCausalLM``, and with "mistral" too ``LlavaMistralForCausalLM``; a merged full checkpoint is the form
LLaVA-Med's builder (no LoRA branch, peft 0.4) can load. The output is ``config.json`` (the checkpoint's own, as kept
under ``llava_original/`` at conversion), the tokenizer files it came with, and safetensors shards under the original
keys; the rows ``<image>`` and ``<pad>`` added to the embeddings at conversion are dropped again (the original uses a
sentinel id for images and ``<unk>`` for padding).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from pfmvg_plugin.models.checkpoint_io import (
    CONVERSION_REPORT,
    ConversionError,
    ShardWriter,
    parse_size,
    prepare_output_dir,
)
from pfmvg_plugin.models.llava_original.layout import ORIGINAL_DIR, TOKENIZER_FILES, disk_name, to_original_key

_DTYPES = ("float16", "bfloat16", "float32")


def folder_name_problem(out: Path, text_model_type: str) -> str | None:
    """Why the original loader would pick the wrong class for a folder named like ``out`` (None: it is fine)."""
    name = out.name.lower()
    if "llava" not in name:
        return f"the folder name {out.name!r} lacks 'llava': the original load_pretrained_model would not load it " \
               "as a LLaVA model"
    if text_model_type == "mistral" and "mistral" not in name:
        return f"the folder name {out.name!r} lacks 'mistral': the original loader would build LlavaLlamaForCausalLM " \
               "for a Mistral model"
    return None


def export_llava(model: str | Path, out: str | Path, *, adapter: str | Path | None = None, dtype: str | None = None,
                 shard_size: str | int = "2GB", overwrite: bool = False) -> dict:
    """Write ``model`` (+ ``adapter``, merged) to ``out`` in the original layout; returns the report."""
    import torch
    from transformers import LlavaForConditionalGeneration

    model, out = Path(model), Path(out)
    kept = model / ORIGINAL_DIR
    if not (kept / "config.json").is_file():
        raise ConversionError(f"{model} has no {ORIGINAL_DIR}/config.json: export takes a folder written by "
                              "`pfmvg convert llava` (it keeps the original config and tokenizer files there)")
    original = json.loads((kept / "config.json").read_text())
    text_type = "mistral" if "Mistral" in "".join(original.get("architectures", [])) else "llama"
    problem = folder_name_problem(out, text_type)
    if problem:
        suggestion = "llava-med-v1.5-mistral-7b-mscxr" if text_type == "mistral" else "llava-v1.5-7b-mscxr"
        raise ConversionError(f"{problem}; name it e.g. {out.parent / suggestion}")
    prepare_output_dir(out, overwrite)
    dtype = dtype or str(original.get("torch_dtype") or "float16")
    if dtype not in _DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(_DTYPES)}, got {dtype!r}")

    # loaded (and an adapter merged) in the export dtype: a 7B model in float16 is ~14 GB, in float32 it would not fit
    # a 24 GB machine
    torch_dtype = getattr(torch, dtype)
    hf = LlavaForConditionalGeneration.from_pretrained(str(model), dtype=torch_dtype)
    merged = None
    if adapter is not None:
        from peft import PeftModel

        hf = PeftModel.from_pretrained(hf, str(adapter)).merge_and_unload()
        merged = str(adapter)
    vocab = int(original["vocab_size"])
    out.mkdir(parents=True, exist_ok=True)
    writer = ShardWriter(out, parse_size(shard_size))
    try:
        for name, tensor in hf.state_dict().items():
            key = to_original_key(disk_name(name))
            if key in ("model.embed_tokens.weight", "lm_head.weight"):
                tensor = tensor[:vocab]
            writer.add(key, tensor.detach().to(torch_dtype))
        files = writer.close()
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)
        raise
    original["torch_dtype"] = dtype
    (out / "config.json").write_text(json.dumps(original, indent=2) + "\n")
    for name in TOKENIZER_FILES:
        if (kept / name).is_file():
            shutil.copy2(kept / name, out / name)
    report = {"model": str(model), "adapter_merged": merged, "dtype": dtype, "tensors": len(writer.shapes),
              "files": files, "vocab": {"kept": vocab, "dropped_rows": "<image>, <pad> and the padding to 64"},
              "architecture": original.get("architectures")}
    (out / CONVERSION_REPORT).write_text(json.dumps(report, indent=2) + "\n")
    return {"out": str(out), **report}
