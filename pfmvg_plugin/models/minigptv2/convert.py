"""Convert the released MiniGPT-v2 / PeFoMed files into our model directory plus a standard PEFT adapter.

Inputs, as released:

- ``--llama``: a Hugging Face LLaMA directory (``meta-llama/Llama-2-7b-chat-hf``: ``config.json``, safetensors or
  ``pytorch_model*.bin`` shards, tokenizer files);
- ``--eva``: ``eva_vit_g.pth`` (LAVIS / BLIP-2 release): a torch pickle of the EVA ViT-g/14 state dict (40 blocks,
  position embedding for 224 px);
- ``--ckpt`` (optional): a MiniGPT-v2 or PeFoMed training checkpoint: a torch pickle whose ``["model"]`` holds what
  trained -- ``llama_proj.{weight,bias}`` and LoRA tensors under
  ``llama_model.base_model.model.model.layers.{i}.self_attn.{q,v}_proj.lora_{A,B}[.default].weight``.

Outputs under ``--out``:

- ``model/``: ``MiniGPTv2ForConditionalGeneration`` (``config.json``, sharded safetensors), ``generation_config.json``
  and the processor (tokenizer + ``pfmvg_minigptv2_processor.json``). EVA keeps its first ``vision_layers`` blocks
  (39 of 40, as MiniGPT-v2) with the position embedding interpolated bicubically to the model's grid (32 x 32 for
  448 px); ``ln_vision`` is an identity-affine LayerNorm (MiniGPT-v2 never trains it, so its checkpoints do not carry
  it) unless the checkpoint holds ``ln_vision.*``; ``llama_proj`` comes from the checkpoint (else a fresh init).
- ``adapter/``: the checkpoint's LoRA as a PEFT LoRA adapter (``adapter_config.json`` + ``adapter_model.safetensors``)
  with ``llama_proj`` as a ``modules_to_save`` module -- ``PeftModel.from_pretrained(model, out/adapter)`` loads both,
  and the training recipe continues from it with ``lora.init_adapter``. ``pfmvg_training.json`` says the prompt
  convention (``minigptv2``), box codec and image resize, so ``pfmvg_minigptv2`` evaluates it correctly.
- ``pfmvg_conversion.json``: what was read, kept, dropped, and why.

Pickles are opened with ``torch.load(weights_only=True)`` (tensors and plain containers only: nothing can run code);
a file that needs full unpickling is refused unless ``trust_pickle=True``.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pfmvg_plugin.models.checkpoint_io import (
    CONVERSION_REPORT,
    ConversionError,
    ShardWriter,
    iter_tensors,
    load_torch_file,
    parse_size,
    state_dict_of,
)
from pfmvg_plugin.training_record import TrainingRecord

_LORA_KEY = re.compile(
    r"^(?:module\.)?llama_model\.base_model\.model\.(?P<path>.+?)\.lora_(?P<ab>[AB])(?:\.(?P<adapter>[\w-]+))?\.weight$")
_BLOCK_KEY = re.compile(r"^blocks\.(\d+)\.(.+)$")
_BLOCK_PARAMS = ("norm1.weight", "norm1.bias", "attn.qkv.weight", "attn.q_bias", "attn.v_bias", "attn.proj.weight",
                 "attn.proj.bias", "norm2.weight", "norm2.bias", "mlp.fc1.weight", "mlp.fc1.bias", "mlp.fc2.weight",
                 "mlp.fc2.bias")
_DTYPES = ("float16", "bfloat16", "float32")


@dataclass
class ConversionResult:
    model_dir: Path
    adapter_dir: Path | None
    report: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"model_dir": str(self.model_dir), "adapter_dir": str(self.adapter_dir) if self.adapter_dir else None,
                **self.report}


def _pick_image_token(tokenizer, explicit: int | None) -> int:
    if explicit is not None:
        return int(explicit)
    if tokenizer.unk_token_id is not None:
        return int(tokenizer.unk_token_id)  # Llama-2: <unk> (0), which its byte-fallback tokenizer never emits
    vocab = tokenizer.get_vocab()
    for token in ("<ImageHere>", "<image>"):
        if token in vocab:
            return int(vocab[token])
    raise ConversionError("the tokenizer has no <unk>, <ImageHere> or <image> token to use as the image placeholder; "
                          "pass --image-token-id")


def _set_pad(tokenizer) -> str:
    if tokenizer.pad_token_id is not None:
        return "kept"
    ids = tokenizer.convert_tokens_to_ids("$$")
    if isinstance(ids, int) and ids != tokenizer.unk_token_id:
        tokenizer.pad_token = "$$"  # MiniGPT-v2's choice
        return "$$"
    tokenizer.pad_token = tokenizer.eos_token
    return "eos"


def convert_minigptv2(
    llama: str | Path,
    eva: str | Path,
    out: str | Path,
    ckpt: str | Path | None = None,
    *,
    dtype: str = "float16",
    image_size: int = 448,
    vision_layers: int | None = None,
    vision_heads: int | None = None,
    lora_alpha: float | None = None,
    lora_dropout: float = 0.05,
    image_token_id: int | None = None,
    trust_pickle: bool = False,
    shard_size: str | int = "4GB",
    overwrite: bool = False,
) -> ConversionResult:
    """Convert (see the module docstring); returns the output paths and the report (``pfmvg_conversion.json``)."""
    import torch
    from transformers import AutoConfig, AutoTokenizer, GenerationConfig

    from pfmvg_plugin.models.minigptv2.configuration import EvaVisionConfig, MiniGPTv2Config
    from pfmvg_plugin.models.minigptv2.processing import MiniGPTv2ImageProcessor, MiniGPTv2Processor

    if dtype not in _DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(_DTYPES)}, got {dtype!r}")
    torch_dtype = getattr(torch, dtype)
    llama, eva, out = Path(llama), Path(eva), Path(out)
    if not (llama / "config.json").is_file():
        raise FileNotFoundError(f"{llama} is not a Hugging Face model directory (no config.json)")
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise ConversionError(f"{out} exists and is not empty; pass --overwrite to replace it")
        for sub in ("model", "adapter"):
            shutil.rmtree(out / sub, ignore_errors=True)
    model_dir, adapter_dir = out / "model", out / "adapter"
    report: dict[str, Any] = {"inputs": {"llama": str(llama), "eva": str(eva), "ckpt": str(ckpt) if ckpt else None},
                              "dtype": dtype}

    # ---- the checkpoint: llama_proj, LoRA, (ln_vision) --------------------------------------------------------
    proj: dict = {}
    ln_vision: dict = {}
    lora: dict[str, dict[str, Any]] = {}
    ckpt_config: dict = {}
    if ckpt is not None:
        raw = load_torch_file(ckpt, trust_pickle)
        if isinstance(raw, dict) and isinstance(raw.get("config"), dict):
            ckpt_config = raw["config"].get("model", {}) if isinstance(raw["config"].get("model"), dict) else {}
        state = state_dict_of(raw, f"--ckpt {ckpt}")
        unexpected, adapters = [], set()
        for key, value in state.items():
            bare = key[len("module."):] if key.startswith("module.") else key
            m = _LORA_KEY.match(bare)
            if m:
                lora.setdefault(m["path"], {})[m["ab"]] = value
                adapters.add(m["adapter"] or "")
            elif bare in ("llama_proj.weight", "llama_proj.bias"):
                proj[bare.split(".")[-1]] = value
            elif bare in ("ln_vision.weight", "ln_vision.bias"):
                ln_vision[bare.split(".")[-1]] = value
            else:
                unexpected.append(key)
        if len(adapters) > 1:
            raise ConversionError(f"--ckpt holds several LoRA adapters ({sorted(adapters)}); expected one")
        broken = sorted(p for p, ab in lora.items() if set(ab) != {"A", "B"})
        if broken:
            raise ConversionError(f"--ckpt: LoRA pairs missing A or B for {broken[:5]}")
        if "weight" not in proj:
            report.setdefault("warnings", []).append("--ckpt has no llama_proj.weight: llama_proj is freshly "
                                                     "initialised")
        report["checkpoint"] = {"tensors": len(state), "lora_modules": len(lora), "llama_proj": sorted(proj),
                                "ln_vision": sorted(ln_vision), "unexpected_keys": sorted(unexpected),
                                "peft_key_style": sorted(f"lora_X.{a}.weight" if a else "lora_X.weight"
                                                         for a in adapters)}

    # ---- configs ---------------------------------------------------------------------------------------------
    eva_state = state_dict_of(load_torch_file(eva, trust_pickle), f"--eva {eva}", prefixes=("visual_encoder.",))
    for name in ("cls_token", "pos_embed", "patch_embed.proj.weight", "patch_embed.proj.bias"):
        if name not in eva_state:
            raise ConversionError(f"--eva {eva}: missing {name!r} (is this eva_vit_g.pth?)")
    hidden = int(eva_state["cls_token"].shape[-1])
    patch = int(eva_state["patch_embed.proj.weight"].shape[-1])
    blocks_in_file = sorted({int(m.group(1)) for k in eva_state if (m := _BLOCK_KEY.match(k))})
    if not blocks_in_file or blocks_in_file != list(range(len(blocks_in_file))):
        raise ConversionError(f"--eva {eva}: blocks are not numbered 0..N-1 ({blocks_in_file[:3]}...)")
    n_layers = vision_layers if vision_layers is not None else len(blocks_in_file) - 1  # MiniGPT-v2: 39 of 40
    if not 1 <= n_layers <= len(blocks_in_file):
        raise ConversionError(f"vision_layers={n_layers} but the EVA file has {len(blocks_in_file)} blocks")
    if vision_heads is None:
        if hidden % 88:
            raise ConversionError(f"cannot infer the number of heads of an EVA width {hidden} (EVA-g uses heads of "
                                  "88); pass --vision-heads")
        vision_heads = hidden // 88
    mlp = int(eva_state["blocks.0.mlp.fc1.weight"].shape[0])
    vision_config = EvaVisionConfig(image_size=image_size, patch_size=patch, hidden_size=hidden,
                                    num_hidden_layers=n_layers, num_attention_heads=vision_heads,
                                    intermediate_size=mlp, qkv_bias="blocks.0.attn.q_bias" in eva_state)
    text_config = AutoConfig.from_pretrained(str(llama))
    if getattr(text_config, "model_type", None) != "llama":
        raise ConversionError(f"{llama}: model_type {text_config.model_type!r}, expected 'llama'")
    tokenizer = AutoTokenizer.from_pretrained(str(llama))
    report["pad_token"] = _set_pad(tokenizer)
    image_token = _pick_image_token(tokenizer, image_token_id)
    config = MiniGPTv2Config(vision_config=vision_config, text_config=text_config, image_token_index=image_token)
    config.dtype = torch_dtype
    config.architectures = ["MiniGPTv2ForConditionalGeneration"]
    if proj and tuple(proj["weight"].shape) != (text_config.hidden_size, config.projector_in_features):
        raise ConversionError(f"llama_proj.weight is {tuple(proj['weight'].shape)}, expected "
                              f"({text_config.hidden_size}, {config.projector_in_features}) for EVA width {hidden} "
                              f"x {config.tokens_per_group} tokens")

    expected = _expected_shapes(config)
    report["_blocks_in_file"] = len(blocks_in_file)
    model_dir.mkdir(parents=True, exist_ok=True)
    try:
        files = _write_model(model_dir, writer_limit=parse_size(shard_size), expected=expected, config=config,
                             eva_state=eva_state, ln_vision=ln_vision, proj=proj, llama=llama,
                             torch_dtype=torch_dtype, trust_pickle=trust_pickle, report=report)
    except BaseException:
        shutil.rmtree(model_dir, ignore_errors=True)  # never leave a half-written model directory behind
        raise
    report["model_files"] = files
    config.save_pretrained(str(model_dir))

    GenerationConfig(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                     pad_token_id=tokenizer.pad_token_id, do_sample=False, max_new_tokens=300,
                     num_beams=1).save_pretrained(str(model_dir))
    end_sym = ckpt_config.get("end_sym") or tokenizer.eos_token or "</s>"
    processor = MiniGPTv2Processor(tokenizer, MiniGPTv2ImageProcessor(size=image_size),
                                   num_image_tokens=config.num_image_tokens, image_token_index=image_token,
                                   end_sym=end_sym if end_sym.strip() else (tokenizer.eos_token or "</s>"))
    processor.save_pretrained(model_dir)

    # ---- adapter ---------------------------------------------------------------------------------------------
    written_adapter = None
    if lora:
        written_adapter = _write_adapter(adapter_dir, model_dir, lora, proj, expected, ckpt_config, lora_alpha,
                                         lora_dropout, torch_dtype, report)
        processor.save_pretrained(adapter_dir)
        TrainingRecord(backbone="minigptv2", convention="minigptv2", box_codec="minigptv2", image_resize="squash",
                       base_model=str(model_dir),
                       extra={"image_size": [image_size, image_size], "converted_from": str(ckpt)}).write(adapter_dir)
    elif ckpt is not None:
        report.setdefault("warnings", []).append("--ckpt holds no LoRA tensors: no adapter written")
    (out / CONVERSION_REPORT).write_text(json.dumps(report, indent=2, default=str) + "\n")
    return ConversionResult(model_dir=model_dir, adapter_dir=written_adapter, report=report)


def _write_model(model_dir: Path, *, writer_limit: int, expected: dict, config, eva_state: dict, ln_vision: dict,
                 proj: dict, llama: Path, torch_dtype, trust_pickle: bool, report: dict) -> list[str]:
    import torch

    from pfmvg_plugin.models.minigptv2.eva_vit import interpolate_pos_embed

    vision_config, text_config = config.vision_config, config.text_config
    n_layers, hidden = vision_config.num_hidden_layers, vision_config.hidden_size
    writer = ShardWriter(model_dir, writer_limit)
    # ---- vision tower ------------------------------------------------------------------------------------------
    grid_before = int(round((eva_state["pos_embed"].shape[-2] - 1) ** 0.5))
    eva_unused, eva_unexpected = [], []
    for key, value in eva_state.items():
        m = _BLOCK_KEY.match(key)
        if key == "pos_embed":
            value = interpolate_pos_embed(value, vision_config.num_patches)
        elif m and int(m.group(1)) >= n_layers:
            eva_unused.append(key)
            continue
        elif f"vision_model.{key}" not in expected:
            eva_unexpected.append(key)
            continue
        writer.add(f"vision_model.{key}", value.to(torch_dtype))
    report["vision"] = {"blocks_in_file": report.pop("_blocks_in_file"), "blocks_used": n_layers, "width": hidden,
                        "heads": vision_config.num_attention_heads, "mlp": vision_config.intermediate_size,
                        "patch": vision_config.patch_size, "image_size": vision_config.image_size,
                        "pos_embed_grid": [grid_before, vision_config.grid_size],
                        "unused_blocks": sorted({k.split(".")[1] for k in eva_unused}, key=int),
                        "unexpected_keys": sorted(eva_unexpected)}
    c = hidden
    writer.add("ln_vision.weight", ln_vision.get("weight", torch.ones(c)).to(torch_dtype))
    writer.add("ln_vision.bias", ln_vision.get("bias", torch.zeros(c)).to(torch_dtype))
    report["ln_vision"] = "from --ckpt" if ln_vision else "identity (weight 1, bias 0), as MiniGPT-v2 leaves it"
    if proj:
        writer.add("llama_proj.weight", proj["weight"].to(torch_dtype))
        if config.projector_bias:
            writer.add("llama_proj.bias", proj.get("bias", torch.zeros(text_config.hidden_size)).to(torch_dtype))
    else:
        layer = torch.nn.Linear(config.projector_in_features, text_config.hidden_size)  # torch's default init
        writer.add("llama_proj.weight", layer.weight.detach().to(torch_dtype))
        writer.add("llama_proj.bias", layer.bias.detach().to(torch_dtype))

    # ---- language model ---------------------------------------------------------------------------------------
    llama_skipped = []
    for key, value in iter_tensors(llama, trust_pickle):
        name = f"language_model.{key}"
        if name not in expected:
            llama_skipped.append(key)  # e.g. rotary_emb.inv_freq of old exports
            continue
        writer.add(name, value.to(torch_dtype))
    files = writer.close()
    missing = sorted(set(expected) - set(writer.shapes))
    wrong = sorted(k for k, s in writer.shapes.items() if k in expected and tuple(expected[k]) != s)
    if missing or wrong:
        raise ConversionError(f"the converted model would be incomplete: missing {missing[:8]}"
                              f"{' ...' if len(missing) > 8 else ''}; wrong shapes "
                              f"{[(k, writer.shapes[k], tuple(expected[k])) for k in wrong[:5]]}")
    report["language_model"] = {"skipped_keys": llama_skipped}
    return files


def _expected_shapes(config) -> dict[str, tuple[int, ...]]:
    """State-dict names and shapes of the model for ``config`` (built on the meta device)."""
    import torch

    from pfmvg_plugin.models.minigptv2.modeling import MiniGPTv2ForConditionalGeneration

    with torch.device("meta"):
        model = MiniGPTv2ForConditionalGeneration(config)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def _write_adapter(adapter_dir: Path, model_dir: Path, lora: dict, proj: dict, expected: dict, ckpt_config: dict,
                   lora_alpha, lora_dropout: float, torch_dtype, report: dict) -> Path:
    from peft import LoraConfig
    from safetensors.torch import save_file

    from pfmvg_plugin.models.lora_targets import language_model_regex

    ranks = {int(ab["A"].shape[0]) for ab in lora.values()}
    if len(ranks) != 1:
        raise ConversionError(f"LoRA ranks differ between modules: {sorted(ranks)}")
    r = ranks.pop()
    ckpt_r = ckpt_config.get("lora_r")
    if ckpt_r is not None and int(ckpt_r) != r:
        report.setdefault("warnings", []).append(f"checkpoint config says lora_r={ckpt_r}, tensors have rank {r}")
    alpha = lora_alpha if lora_alpha is not None else ckpt_config.get("lora_alpha", 16)
    targets = sorted({path.rsplit(".", 1)[-1] for path in lora})
    tensors = {}
    for path, ab in sorted(lora.items()):
        base = f"language_model.{path}.weight"
        if base not in expected:
            raise ConversionError(f"LoRA on {path}: no such module in the language model")
        out_f, in_f = expected[base]
        if tuple(ab["A"].shape) != (r, in_f) or tuple(ab["B"].shape) != (out_f, r):
            raise ConversionError(f"LoRA on {path}: A {tuple(ab['A'].shape)} / B {tuple(ab['B'].shape)} do not fit "
                                  f"a {out_f}x{in_f} weight")
        tensors[f"base_model.model.language_model.{path}.lora_A.weight"] = ab["A"].to(torch_dtype).contiguous()
        tensors[f"base_model.model.language_model.{path}.lora_B.weight"] = ab["B"].to(torch_dtype).contiguous()
    modules_to_save = None
    if proj:
        modules_to_save = ["llama_proj"]
        for k, v in proj.items():
            tensors[f"base_model.model.llama_proj.{k}"] = v.to(torch_dtype).contiguous()
    lc = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=lora_dropout, target_modules=language_model_regex(targets),
                    modules_to_save=modules_to_save, bias="none", base_model_name_or_path=str(model_dir))
    adapter_dir.mkdir(parents=True, exist_ok=True)
    lc.save_pretrained(str(adapter_dir))
    save_file({k: v.clone() for k, v in tensors.items()}, str(adapter_dir / "adapter_model.safetensors"),
              metadata={"format": "pt"})
    report["adapter"] = {"r": r, "lora_alpha": alpha, "lora_dropout": lora_dropout, "target_modules": targets,
                         "lora_modules": len(lora), "modules_to_save": modules_to_save,
                         "lora_parameters": sum(v.numel() for k, v in tensors.items() if ".lora_" in k)}
    return adapter_dir
