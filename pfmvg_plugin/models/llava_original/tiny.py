"""Tiny, offline checkpoints in the exact layouts the original LLaVA repository and LLaVA-Med v1.5 release (random
weights; tests, benchmarks and the README walk-through without downloads).

:func:`write_tiny_original` writes ``config.json`` as ``llava/train/train.py`` saves it (``LlavaLlamaForCausalLM`` /
``LlavaMistralForCausalLM`` with the ``mm_*`` fields), the weights under the original keys (``model.layers.N.*``,
``model.mm_projector.{0,2}.*``, optionally CLIP under ``model.vision_tower.vision_tower.vision_model.*`` with its real
``pre_layrnorm`` spelling) as sharded safetensors with an index or as ``pytorch_model.bin``, and a sentencepiece
``tokenizer.model`` (BPE with byte fallback and the dummy-prefix rule, as Llama's and Mistral's) with the
``tokenizer_config.json`` / ``special_tokens_map.json`` of those releases (no ``tokenizer.json``, as LLaVA-Med).
Images are CLIP's real 336 px with 14-px patches (576 image tokens), as the released preprocessing.
:func:`write_tiny_lora` writes what LLaVA's ``train.py`` saves for a LoRA run.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

#: Toy sizes: hidden 64, 2 layers; CLIP at its real 336 px / patch 14, 64 wide (one 64-wide head, as CLIP's heads).
TINY = dict(text_hidden=64, text_layers=2, text_heads=4, text_kv_heads=2, text_mlp=128, vision_hidden=64,
            vision_layers=2, vision_mlp=128, image_size=336, patch_size=14, vocab_size=600)


def train_sentencepiece(corpus: list[str], vocab_size: int) -> bytes:
    """A Llama-style sentencepiece model (BPE, byte fallback, split digits, dummy prefix, ids unk 0 / bos 1 / eos 2)."""
    import sentencepiece

    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus), model_writer=model, vocab_size=vocab_size, model_type="bpe",
        byte_fallback=True, split_digits=True, add_dummy_prefix=True, remove_extra_whitespaces=False,
        normalization_rule_name="identity", allow_whitespace_only_pieces=True, unk_id=0, bos_id=1, eos_id=2,
        pad_id=-1, minloglevel=2)
    return model.getvalue()


def _tiny_modules(arch: str, vocab: int, seed: int):
    import torch
    from transformers import (
        CLIPVisionConfig,
        CLIPVisionModel,
        LlamaConfig,
        LlamaForCausalLM,
        MistralConfig,
        MistralForCausalLM,
    )

    torch.manual_seed(seed)
    t = TINY
    common = dict(vocab_size=vocab, hidden_size=t["text_hidden"], intermediate_size=t["text_mlp"],
                  num_hidden_layers=t["text_layers"], num_attention_heads=t["text_heads"],
                  num_key_value_heads=t["text_kv_heads"], max_position_embeddings=2048, rms_norm_eps=1e-5,
                  bos_token_id=1, eos_token_id=2, pad_token_id=0, tie_word_embeddings=False)
    if arch == "mistral":
        lm = MistralForCausalLM(MistralConfig(**common, sliding_window=None, rope_theta=1000000.0))
    else:
        lm = LlamaForCausalLM(LlamaConfig(**common, rope_theta=10000.0))
    vision = CLIPVisionModel(CLIPVisionConfig(
        hidden_size=t["vision_hidden"], intermediate_size=t["vision_mlp"], num_hidden_layers=t["vision_layers"],
        num_attention_heads=1, image_size=t["image_size"], patch_size=t["patch_size"], hidden_act="quick_gelu"))
    projector = torch.nn.Sequential(torch.nn.Linear(t["vision_hidden"], t["text_hidden"]), torch.nn.GELU(),
                                    torch.nn.Linear(t["text_hidden"], t["text_hidden"]))
    for module in (lm, vision, projector):
        for p in module.parameters():  # visible weights: random init of norms is all ones
            p.data.add_(torch.randn_like(p) * 0.02)
    return lm, vision, projector


def write_tiny_original(out: str | Path, *, arch: str = "llama", vision: str = "checkpoint", fmt: str = "safetensors",
                        shards: int = 2, seed: int = 0, corpus: list[str] | None = None) -> dict[str, Path]:
    """Write a tiny original-layout checkpoint to ``out``.

    ``arch``: ``llama`` (LLaVA-1.5, ``LlavaLlamaForCausalLM``) or ``mistral`` (LLaVA-Med v1.5,
    ``LlavaMistralForCausalLM``). ``vision``: ``checkpoint`` (CLIP tensors inside, as LLaVA-Med) or ``separate``
    (none inside, as LLaVA-1.5; a CLIP folder is written to ``out``'s sibling ``<name>-clip``). ``fmt``:
    ``safetensors`` (``shards`` files + index) or ``bin`` (one ``pytorch_model.bin``). Returns ``{"ckpt", "clip"}``.
    """
    import torch
    from safetensors.torch import save_file

    from pfmvg_plugin.models.tiny_llava import default_corpus

    if (arch, vision, fmt) not in {(a, v, f) for a in ("llama", "mistral") for v in ("checkpoint", "separate")
                                   for f in ("safetensors", "bin")}:
        raise ValueError(f"unknown arch/vision/fmt {arch!r}/{vision!r}/{fmt!r}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    corpus = corpus if corpus is not None else default_corpus(seed)
    (out / "tokenizer.model").write_bytes(train_sentencepiece(corpus, TINY["vocab_size"]))
    lm, clip, projector = _tiny_modules(arch, TINY["vocab_size"], seed)

    state = {k: v.detach().clone() for k, v in lm.state_dict().items()}
    state.update({f"model.mm_projector.{k}": v.detach().clone() for k, v in projector.state_dict().items()})
    # CLIP as released (openai/clip-vit-*): vision_model.* (transformers 5 keeps CLIPVisionModel's without it)
    clip_state = {(k if k.startswith("vision_model.") else f"vision_model.{k}"): v.detach().clone()
                  for k, v in clip.state_dict().items()}
    paths = {"ckpt": out, "clip": None}
    if vision == "checkpoint":
        state.update({f"model.vision_tower.vision_tower.{k}": v for k, v in clip_state.items()})
    else:
        clip_dir = out.parent / f"{out.name}-clip"
        clip_dir.mkdir(parents=True, exist_ok=True)
        clip.config.save_pretrained(str(clip_dir))
        save_file(clip_state, str(clip_dir / "model.safetensors"), metadata={"format": "pt"})
        paths["clip"] = clip_dir
    if fmt == "bin":
        torch.save(state, out / "pytorch_model.bin")
    else:
        names = sorted(state)
        per = -(-len(names) // shards)
        weight_map = {}
        for i in range(shards):
            part = names[i * per:(i + 1) * per]
            fname = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
            save_file({k: state[k].contiguous() for k in part}, str(out / fname), metadata={"format": "pt"})
            weight_map.update({k: fname for k in part})
        index = {"metadata": {"total_size": sum(v.numel() * v.element_size() for v in state.values())},
                 "weight_map": weight_map}
        (out / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))

    text = lm.config.to_dict()
    fields = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
              "num_key_value_heads", "hidden_act", "max_position_embeddings", "rms_norm_eps", "initializer_range",
              "bos_token_id", "eos_token_id", "pad_token_id", "tie_word_embeddings")
    config = {k: text[k] for k in fields if k in text}
    config.update(rope_theta=1000000.0 if arch == "mistral" else 10000.0)
    if arch == "mistral":
        config.update(architectures=["LlavaMistralForCausalLM"], model_type="llava_mistral", sliding_window=None)
    else:
        config.update(architectures=["LlavaLlamaForCausalLM"], model_type="llava")
    config.update(
        mm_vision_tower="openai/clip-vit-large-patch14-336", mm_projector_type="mlp2x_gelu",
        mm_hidden_size=TINY["vision_hidden"], mm_vision_select_layer=-2, mm_vision_select_feature="patch",
        mm_use_im_start_end=False, mm_use_im_patch_token=False, image_aspect_ratio="pad", mm_patch_merge_type="flat",
        freeze_mm_mlp_adapter=False, tune_mm_mlp_adapter=False, tokenizer_padding_side="right",
        tokenizer_model_max_length=2048, torch_dtype="float32", use_cache=True, transformers_version="4.36.2")
    (out / "config.json").write_text(json.dumps(config, indent=2))
    tok_cfg = {"add_bos_token": True, "add_eos_token": False, "bos_token": "<s>", "eos_token": "</s>",
               "unk_token": "<unk>", "pad_token": "<unk>" if arch == "llama" else None, "legacy": False,
               "clean_up_tokenization_spaces": False, "model_max_length": 2048, "padding_side": "right",
               "sp_model_kwargs": {}, "tokenizer_class": "LlamaTokenizer"}
    (out / "tokenizer_config.json").write_text(json.dumps(tok_cfg, indent=2))
    special = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}
    if arch == "llama":
        special["pad_token"] = "<unk>"
    (out / "special_tokens_map.json").write_text(json.dumps(special, indent=2))
    return paths


def write_tiny_lora(out: str | Path, ckpt: str | Path, *, r: int = 4, alpha: int = 8, seed: int = 1,
                    fmt: str = "bin") -> Path:
    """What LLaVA's ``train.py`` saves after a LoRA run on ``ckpt`` (a :func:`write_tiny_original` folder):
    ``adapter_config.json``, ``adapter_model.bin|safetensors`` (``base_model.model.model.layers.N.….lora_{A,B}.weight``
    on every Linear of the language model) and ``non_lora_trainables.bin`` (the projector)."""
    import torch
    from safetensors.torch import save_file

    from pfmvg_plugin.models.checkpoint_io import iter_tensors

    torch.manual_seed(seed)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    lora, projector, modules = {}, {}, set()
    for key, value in iter_tensors(Path(ckpt)):
        if key.startswith("model.mm_projector."):
            projector[f"base_model.model.{key}"] = value + torch.randn_like(value) * 0.05
        elif key.startswith("model.layers.") and key.endswith("_proj.weight"):
            module = key[: -len(".weight")]
            modules.add(module.rsplit(".", 1)[-1])
            out_f, in_f = value.shape
            lora[f"base_model.model.{module}.lora_A.weight"] = torch.randn(r, in_f) * 0.1
            lora[f"base_model.model.{module}.lora_B.weight"] = torch.randn(out_f, r) * 0.1
    if fmt == "bin":
        torch.save(lora, out / "adapter_model.bin")
    else:
        save_file(lora, str(out / "adapter_model.safetensors"))
    torch.save(projector, out / "non_lora_trainables.bin")
    config = {"base_model_name_or_path": str(ckpt), "bias": "none", "fan_in_fan_out": False, "inference_mode": True,
              "init_lora_weights": True, "lora_alpha": alpha, "lora_dropout": 0.05, "peft_type": "LORA", "r": r,
              "target_modules": sorted(modules), "task_type": "CAUSAL_LM", "modules_to_save": None}
    (out / "adapter_config.json").write_text(json.dumps(config, indent=2))
    return out
