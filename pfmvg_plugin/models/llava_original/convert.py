"""Convert an original LLaVA-1.5 / LLaVA-Med v1.5 checkpoint into a transformers ``LlavaForConditionalGeneration``
directory, and LLaVA's own LoRA output into a standard PEFT adapter over it.

The weights stream shard by shard, tensor by tensor, into sharded safetensors (peak memory about one output shard).
The written directory is a complete transformers LLaVA: Llama or Mistral ``text_config``, ``<image>`` and ``<pad>``
added (embeddings resized to a multiple of 64, new rows the mean of the old ones), ``vision_feature_layer -2``,
``default`` features (CLS dropped), GELU projector. Its processor reproduces the original preprocessing:
``LlavaImageProcessor`` with ``do_pad`` (expand2square with the CLIP-mean fill, then 336 px), and a chat template that
renders the checkpoint's own conversation (``vicuna_v1`` / ``mistral_instruct``). The tokenizer prefixes every text
piece after ``<image>`` with a word boundary, as the original's ``tokenizer_image_token`` does by encoding the pieces
around ``<image>`` one at a time; ``pfmvg_conversion.json`` records a check of that on a rendered prompt.
The checkpoint's config and tokenizer files are kept under ``llava_original/`` for ``pfmvg export llava``.
"""

from __future__ import annotations

import itertools
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pfmvg_plugin.models.checkpoint_io import (
    CONVERSION_REPORT,
    ConversionError,
    ShardWriter,
    iter_tensors,
    list_tensors,
    load_torch_file,
    parse_size,
    prepare_output_dir,
    state_dict_of,
    weight_files,
)
from pfmvg_plugin.models.llava_original.layout import (
    CHAT_TEMPLATES,
    ORIGINAL_DIR,
    TOKENIZER_FILES,
    OriginalConfig,
    disk_name,
    read_original_config,
    to_hf_key,
    vision_key_from_clip,
)

_DTYPES = ("float16", "bfloat16", "float32")
_VISION_PREFIX = "model.vision_tower.vision_tower."
_LORA_PREFIX = "base_model.model."


@dataclass
class LlavaConversion:
    out: Path
    report: dict = field(default_factory=dict)

    def summary(self) -> dict:
        """What the command line prints: the report without the per-key lists (those are in the file)."""
        keys = self.report.get("keys", {})
        return {"model_dir": str(self.out), **{k: v for k, v in self.report.items() if k != "keys"},
                "keys": {k: len(v) if isinstance(v, (list, dict)) else v for k, v in keys.items()}}


# ---- configs -------------------------------------------------------------------------------------------------------
def _vision_config(vision_tower: Path | None, vision_shapes: dict[str, tuple[int, ...]], report: dict):
    """CLIP's vision config: from ``--vision-tower``'s config.json when given, else read off the tensor shapes."""
    from transformers import CLIPVisionConfig

    if vision_tower is not None and (vision_tower / "config.json").is_file():
        raw = json.loads((vision_tower / "config.json").read_text())
        if raw.get("model_type") == "clip":
            raw = raw.get("vision_config", {})
        raw.pop("model_type", None)
        report["vision_config"] = f"from {vision_tower / 'config.json'}"
        return CLIPVisionConfig(**raw)
    p = "model.vision_tower.vision_model."
    try:
        hidden = vision_shapes[p + "embeddings.class_embedding"][0]
        patch = vision_shapes[p + "embeddings.patch_embedding.weight"][-1]
        positions = vision_shapes[p + "embeddings.position_embedding.weight"][0]
        mlp = vision_shapes[p + "encoder.layers.0.mlp.fc1.weight"][0]
    except KeyError as e:
        raise ConversionError(f"the vision tower lacks {e.args[0]!r}: is it a CLIP vision model?") from None
    layers = 1 + max(int(k[len(p + "encoder.layers."):].split(".")[0]) for k in vision_shapes
                     if k.startswith(p + "encoder.layers."))
    side = int(round((positions - 1) ** 0.5))
    heads = max(1, hidden // 64)  # CLIP's heads are 64 wide (ViT-L/14: 1024 / 64 = 16)
    report["vision_config"] = (f"read off the tensors: width {hidden}, {layers} layers, {heads} heads (CLIP's "
                               f"64-wide heads), patch {patch}, {side * patch} px")
    return CLIPVisionConfig(hidden_size=hidden, intermediate_size=mlp, num_hidden_layers=layers,
                            num_attention_heads=heads, image_size=side * patch, patch_size=patch,
                            hidden_act="quick_gelu", layer_norm_eps=1e-5)


def _text_config(original: OriginalConfig, vocab_size: int, pad_id: int):
    from transformers import LlamaConfig, MistralConfig

    fields = original.text_config()
    fields.pop("model_type")
    fields.update(vocab_size=vocab_size, pad_token_id=pad_id)
    cls = MistralConfig if original.text_model_type == "mistral" else LlamaConfig
    return cls(**fields)


# ---- tokenizer -----------------------------------------------------------------------------------------------------
def _load_tokenizer(ckpt: Path):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(ckpt))
    except Exception as e:  # noqa: BLE001 - transformers raises many kinds here; all mean the same to the user
        hint = ""
        if "protobuf" in str(e).lower() or "sentencepiece" in str(e).lower():
            hint = (" The sentencepiece model could not be read: sentencepiece 0.2.3 needs protobuf >= 7.36; run "
                    "pip install 'sentencepiece==0.2.1' (or a newer protobuf where nothing caps it).")
        raise ConversionError(f"cannot load the tokenizer of {ckpt} ({type(e).__name__}: {str(e)[:300]}).{hint}") \
            from None


def _prepare_tokenizer(tokenizer, sentencepiece_model: bool, report: dict) -> tuple[int, int]:
    """Add ``<image>`` and ``<pad>``; for a sentencepiece checkpoint, make every text piece between special tokens
    start a word, as the original's chunked tokenisation does. Returns (image id, pad id)."""
    from tokenizers import AddedToken, pre_tokenizers

    tokenizer.add_tokens([AddedToken("<image>", special=True, normalized=False)], special_tokens=True)
    tokenizer.add_special_tokens({"pad_token": AddedToken("<pad>", special=True, normalized=False)})
    if sentencepiece_model:
        # sentencepiece's rule (spaces are "▁", a piece starts with one) for every piece, whatever pipeline the
        # installed transformers built from tokenizer.model (versions differ: a normalizer, a pre-tokenizer, the
        # dummy prefix only on the first piece or on none)
        backend = tokenizer.backend_tokenizer
        backend.normalizer = None
        backend.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always", split=False)
        report["tokenizer"] = ("sentencepiece: every piece between special tokens starts a word, as the original's "
                               "tokenizer_image_token encodes the pieces around <image> one at a time")
    else:
        report["tokenizer"] = "no tokenizer.model: the checkpoint's tokenizer kept as it is"
    return tokenizer.convert_tokens_to_ids("<image>"), tokenizer.pad_token_id


def _save_tokenizer(tokenizer, out: Path) -> None:
    tokenizer.save_pretrained(str(out))
    # a generic fast tokenizer: the class's own from-sentencepiece rebuild would undo the pre-tokenizer set above
    path = out / "tokenizer_config.json"
    cfg = json.loads(path.read_text())
    cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
    for key in ("legacy", "add_prefix_space", "backend", "is_local", "local_files_only"):
        cfg.pop(key, None)
    path.write_text(json.dumps(cfg, indent=2) + "\n")


def original_prompt_ids(ckpt_or_tokenizer_model: Path, prompt: str, image_id: int, bos_id: int) -> list[int] | None:
    """The original's ``tokenizer_image_token(prompt)``: the pieces around ``<image>`` encoded one at a time by the
    checkpoint's sentencepiece model, joined by ``image_id``, after one BOS. None without ``tokenizer.model``."""
    path = Path(ckpt_or_tokenizer_model)
    path = path / "tokenizer.model" if path.is_dir() else path
    if not path.is_file():
        return None
    import sentencepiece

    sp = sentencepiece.SentencePieceProcessor(model_file=str(path))
    ids = [bos_id]
    for i, piece in enumerate(prompt.split("<image>")):
        if i:
            ids.append(image_id)
        ids.extend(sp.encode(piece))
    return ids


# ---- the conversion ------------------------------------------------------------------------------------------------
def convert_llava(
    ckpt: str | Path,
    out: str | Path,
    *,
    vision_tower: str | Path | None = None,
    dtype: str = "float16",
    trust_pickle: bool = False,
    shard_size: str | int = "2GB",
    overwrite: bool = False,
) -> LlavaConversion:
    """Convert (see the module docstring); returns the output folder and the report (``pfmvg_conversion.json``)."""
    import torch
    from transformers import GenerationConfig, LlavaConfig

    from pfmvg_plugin.progress import progress

    if dtype not in _DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(_DTYPES)}, got {dtype!r}")
    torch_dtype = getattr(torch, dtype)
    ckpt, out = Path(ckpt), Path(out)
    vision_tower = Path(vision_tower) if vision_tower else None
    original = read_original_config(ckpt)
    prepare_output_dir(out, overwrite)
    inputs = {"ckpt": str(ckpt), "vision_tower": str(vision_tower) if vision_tower else None}
    report: dict[str, Any] = {"inputs": inputs, "architecture": original.architecture,
                              "template": original.template, "dtype": dtype}

    shapes = list_tensors(ckpt, trust_pickle)
    ckpt_vision = {to_hf_key(k): s for k, s in shapes.items() if k.startswith(_VISION_PREFIX)}
    if ckpt_vision:
        report["vision_weights"] = "from the checkpoint (model.vision_tower.vision_tower.*)"
        vision_shapes = ckpt_vision
    elif vision_tower is not None:
        clip_shapes = list_tensors(vision_tower, trust_pickle)
        vision_shapes = {vision_key_from_clip(k): s for k, s in clip_shapes.items() if vision_key_from_clip(k)}
        if not vision_shapes:
            raise ConversionError(f"--vision-tower {vision_tower} holds no vision_model.* tensors (a CLIP or "
                                  "CLIPVisionModel folder is expected)")
        report["vision_weights"] = f"from --vision-tower {vision_tower}"
    else:
        raise ConversionError(
            f"{ckpt} carries no vision tower weights (model.vision_tower.vision_tower.*): the original loads "
            f"{original.vision_tower!r} by name at run time. Download that CLIP model and pass its folder with "
            f"--vision-tower (e.g. huggingface-cli download {original.vision_tower} --local-dir clip)")
    vision_config = _vision_config(vision_tower, vision_shapes, report)
    if vision_config.hidden_size != original.mm_hidden_size:
        raise ConversionError(f"the vision tower is {vision_config.hidden_size} wide but mm_hidden_size is "
                              f"{original.mm_hidden_size}: not the CLIP this checkpoint was trained with")

    tokenizer = _load_tokenizer(ckpt)
    old_vocab = shapes.get("model.embed_tokens.weight", (original.raw.get("vocab_size", 0),))[0]
    image_id, pad_id = _prepare_tokenizer(tokenizer, (ckpt / "tokenizer.model").is_file(), report)
    vocab = -(-max(len(tokenizer), old_vocab) // 64) * 64
    text_config = _text_config(original, vocab, pad_id)
    n_patches = (vision_config.image_size // vision_config.patch_size) ** 2
    config = LlavaConfig(vision_config=vision_config, text_config=text_config, image_token_index=image_id,
                         vision_feature_layer=-2, vision_feature_select_strategy="default",
                         projector_hidden_act="gelu", image_seq_length=n_patches, pad_token_id=pad_id)
    config.architectures = ["LlavaForConditionalGeneration"]
    config.dtype = torch_dtype
    report["vocab"] = {"checkpoint": old_vocab, "converted": vocab, "image_token_id": image_id, "pad_token_id": pad_id,
                       "new_rows": "mean of the checkpoint's rows"}

    expected = _expected_shapes(config)
    out.mkdir(parents=True, exist_ok=True)
    writer = ShardWriter(out, parse_size(shard_size))
    read, renamed, dropped = [], {}, []
    try:
        stream = ((k, to_hf_key(k), v) for k, v in iter_tensors(ckpt, trust_pickle))
        total = len(shapes)
        if not ckpt_vision:
            clip = ((k, vision_key_from_clip(k), v) for k, v in iter_tensors(vision_tower, trust_pickle))
            stream = itertools.chain(stream, clip)
            total += len(clip_shapes)
        for key, name, tensor in progress(stream, desc="convert llava", total=total, unit="tensor"):
            read.append(key)
            if name is None or name not in expected:
                dropped.append(key)
                continue
            if name != key:
                renamed[key] = name
            if name in ("model.language_model.embed_tokens.weight", "lm_head.weight"):
                tensor = _grow_rows(tensor, expected[name][0])
            writer.add(name, tensor.to(torch_dtype))
        files = writer.close()
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)  # never leave a half-written model behind
        raise
    missing = sorted(set(expected) - set(writer.shapes))
    wrong = sorted((k, writer.shapes[k], expected[k]) for k in writer.shapes if tuple(expected[k]) != writer.shapes[k])
    if missing or wrong:
        shutil.rmtree(out, ignore_errors=True)
        raise ConversionError(f"the converted model would be incomplete: missing {missing[:8]}"
                              f"{' ...' if len(missing) > 8 else ''}; wrong shapes {wrong[:5]}")
    report["keys"] = {"read": sorted(read), "renamed": renamed, "dropped": sorted(dropped), "missing": missing,
                      "written": len(writer.shapes)}
    report["model_files"] = files

    config.save_pretrained(str(out))
    GenerationConfig(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=pad_id,
                     do_sample=False, max_new_tokens=512, num_beams=1).save_pretrained(str(out))
    _save_processor(out, tokenizer, vision_config, original.template)
    _keep_original(ckpt, out)
    report["prompt_check"] = _check_prompt_tokens(out, ckpt, original.template)
    if report["prompt_check"].get("tokens_equal") is False:
        report.setdefault("warnings", []).append(
            "the converted tokenizer encodes the rendered prompt differently from the original's chunked "
            "tokenisation (prompt_check): the model will see token sequences it was not trained on")
    (out / CONVERSION_REPORT).write_text(json.dumps(report, indent=2, default=str) + "\n")
    return LlavaConversion(out=out, report=report)


def _grow_rows(tensor, rows: int):
    """Embedding / lm_head rows for the added tokens (and the padding to 64): the mean of the existing rows."""
    import torch

    if tensor.shape[0] >= rows:
        return tensor
    mean = tensor.float().mean(dim=0, keepdim=True).to(tensor.dtype)
    return torch.cat([tensor, mean.expand(rows - tensor.shape[0], -1)], dim=0)


def _expected_shapes(config) -> dict[str, tuple[int, ...]]:
    import torch
    from transformers import LlavaForConditionalGeneration

    with torch.device("meta"):
        model = LlavaForConditionalGeneration(config)
    return {disk_name(k): tuple(v.shape) for k, v in model.state_dict().items()}


def _save_processor(out: Path, tokenizer, vision_config, template: str) -> None:
    from transformers import LlavaImageProcessor, LlavaProcessor
    from transformers.utils.constants import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

    side = int(vision_config.image_size)
    image_processor = LlavaImageProcessor(
        do_pad=True, do_resize=True, size={"shortest_edge": side}, do_center_crop=True,
        crop_size={"height": side, "width": side}, resample=3, image_mean=list(OPENAI_CLIP_MEAN),
        image_std=list(OPENAI_CLIP_STD), do_convert_rgb=True)
    processor = LlavaProcessor(image_processor=image_processor, tokenizer=tokenizer,
                               patch_size=int(vision_config.patch_size), vision_feature_select_strategy="default",
                               num_additional_image_tokens=1, chat_template=CHAT_TEMPLATES[template])
    processor.save_pretrained(str(out))
    _save_tokenizer(tokenizer, out)


def _keep_original(ckpt: Path, out: Path) -> None:
    keep = out / ORIGINAL_DIR
    keep.mkdir()
    shutil.copy2(ckpt / "config.json", keep / "config.json")
    for name in TOKENIZER_FILES:
        if (ckpt / name).is_file():
            shutil.copy2(ckpt / name, keep / name)


def _check_prompt_tokens(out: Path, ckpt: Path, template: str) -> dict:
    """Tokenise a rendered prompt as the converted processor does and as the original does; say whether they agree."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(out))
    user = {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Where is the left lung?"}]}
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    prompt = ImmutableSandboxedEnvironment().from_string(CHAT_TEMPLATES[template]).render(
        messages=[user], add_generation_prompt=True)
    ours = tokenizer(prompt)["input_ids"]
    ref = original_prompt_ids(ckpt, prompt, tokenizer.convert_tokens_to_ids("<image>"), tokenizer.bos_token_id)
    if ref is None:
        return {"prompt": prompt, "checked": False, "why": "no tokenizer.model to tokenise as the original does"}
    return {"prompt": prompt, "checked": True, "tokens_equal": ours == ref}


# ---- LLaVA's own LoRA output ---------------------------------------------------------------------------------------
def convert_llava_lora(lora: str | Path, base: str | Path, out: str | Path, *, trust_pickle: bool = False,
                       overwrite: bool = False) -> dict:
    """LLaVA's ``train.py`` LoRA output (``adapter_config.json``, ``adapter_model.*``, ``non_lora_trainables.bin``)
    -> a PEFT LoRA adapter over the converted ``base`` (the projector as a ``modules_to_save`` module)."""
    from peft import LoraConfig
    from safetensors.torch import save_file
    from transformers import AutoConfig

    from pfmvg_plugin.models.lora_targets import language_model_regex
    from pfmvg_plugin.training_record import TrainingRecord

    lora, base, out = Path(lora), Path(base), Path(out)
    cfg_path = lora / "adapter_config.json"
    if not cfg_path.is_file():
        raise FileNotFoundError(f"{lora} has no adapter_config.json: pass the folder LLaVA's train.py wrote "
                                "(adapter_config.json, adapter_model.*, non_lora_trainables.bin)")
    if not (base / "config.json").is_file():
        raise FileNotFoundError(f"--base {base}: not a converted model folder (run pfmvg convert llava first)")
    prepare_output_dir(out, overwrite)
    their = json.loads(cfg_path.read_text())
    if not weight_files(lora, "adapter_model*"):
        raise ConversionError(f"{lora}: no adapter_model.safetensors / adapter_model.bin")
    expected = _expected_shapes(AutoConfig.from_pretrained(str(base)))
    tensors, renamed, dropped, targets, ranks = {}, {}, [], set(), set()
    for key, value in iter_tensors(lora, trust_pickle, pattern="adapter_model*"):
        if not key.startswith(_LORA_PREFIX) or ".lora_" not in key:
            dropped.append(key)
            continue
        inner = key[len(_LORA_PREFIX):]
        module, _, tail = inner.partition(".lora_")
        hf = to_hf_key(module + ".weight")
        if hf is None or hf not in expected or not hf.startswith("model.language_model."):
            raise ConversionError(f"{lora}: LoRA on {module}, which the converted model has no language-model "
                                  "Linear for")
        tail = tail.replace(".default.", ".")  # PEFT's adapter name is not part of the saved key
        out_f, in_f = expected[hf]
        rank = value.shape[0] if tail.startswith("A") else value.shape[-1]
        if tuple(value.shape) != ((rank, in_f) if tail.startswith("A") else (out_f, rank)):
            raise ConversionError(f"{lora}: {key} is {tuple(value.shape)}, which does not fit the {out_f}x{in_f} "
                                  f"weight of {module}")
        ranks.add(int(rank))
        new = f"{_LORA_PREFIX}{hf[: -len('.weight')]}.lora_{tail}"
        renamed[key] = new
        targets.add(module.rsplit(".", 1)[-1])
        tensors[new] = value.contiguous()
    extra = lora / "non_lora_trainables.bin"
    projector = []
    if extra.is_file():
        for key, value in state_dict_of(load_torch_file(extra, trust_pickle), str(extra)).items():
            bare = key
            for prefix in ("base_model.model.", "base_model."):
                if bare.startswith(prefix):
                    bare = bare[len(prefix):]
                    break
            hf = to_hf_key(bare)
            if hf is None or hf not in expected:
                dropped.append(key)
                continue
            if tuple(value.shape) != expected[hf]:
                raise ConversionError(f"{extra}: {key} is {tuple(value.shape)}, the model expects {expected[hf]}")
            new = _LORA_PREFIX + hf
            renamed[key] = new
            projector.append(hf.rsplit(".", 2)[0])
            tensors[new] = value.contiguous()
    modules_to_save = sorted({p.split(".")[1] for p in projector}) or None  # "multi_modal_projector"
    if len(ranks) != 1 or int(their.get("r", next(iter(ranks), 0))) not in ranks:
        raise ConversionError(f"{lora}: LoRA ranks {sorted(ranks)} in the tensors, r = {their.get('r')} in "
                              "adapter_config.json; expected one rank, the same in both")
    r = ranks.pop()
    lc = LoraConfig(r=r, lora_alpha=their.get("lora_alpha", 2 * r), lora_dropout=float(their.get("lora_dropout", 0.05)),
                    target_modules=language_model_regex(sorted(targets)), modules_to_save=modules_to_save,
                    bias="none", base_model_name_or_path=str(base))
    out.mkdir(parents=True, exist_ok=True)
    lc.save_pretrained(str(out))
    save_file(tensors, str(out / "adapter_model.safetensors"), metadata={"format": "pt"})
    TrainingRecord.create({"backbone": "llava", "convention": "llava", "box_codec": "llava_pad", "image_resize": "pad",
                           "base_model": str(base),
                           "extra": {"converted_from": str(lora)}}).write(out)
    report = {"inputs": {"lora": str(lora), "base": str(base)}, "r": r, "lora_alpha": lc.lora_alpha,
              "target_modules": sorted(targets), "modules_to_save": modules_to_save,
              "keys": {"renamed": renamed, "dropped": sorted(dropped)}}
    (out / CONVERSION_REPORT).write_text(json.dumps(report, indent=2, default=str) + "\n")
    return {"adapter_dir": str(out), **report}
