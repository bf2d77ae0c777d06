"""Tiny, offline MiniGPT-v2 checkpoints with random weights (tests, CPU runs of the recipe, smoke benchmarks).

- :func:`build_tiny_minigptv2` writes OUR model directory (``config.json`` + ``model.safetensors`` + processor):
  the MiniGPT-v2 architecture at toy sizes, loadable with
  ``MiniGPTv2ForConditionalGeneration.from_pretrained`` and ``MiniGPTv2Processor.from_pretrained``.
- :func:`write_tiny_release_files` writes the three files a real conversion starts from, in the formats they are
  released in: a Hugging Face LLaMA directory (like ``Llama-2-7b-chat-hf``), ``eva_vit_g.pth`` (a torch pickle of the
  EVA state dict with its position embedding at the "224 px" grid and one block more than the model uses) and a
  MiniGPT-v2 / PeFoMed training checkpoint (a torch pickle whose ``["model"]`` holds ``llama_proj.*`` and the LoRA
  tensors under ``llama_model.base_model.model.model.layers.{i}.self_attn.{q,v}_proj.lora_{A,B}[.default].weight``).

The tokenizer is the tiny byte-level BPE of :mod:`pfmvg_plugin.models.tiny_llava` (same corpus plus MiniGPT-v2's
``[INST] <Img></Img> ... [/INST]`` framing); its ``<image>`` token is the image placeholder id.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from pfmvg_plugin.models.tiny_llava import BOS, EOS, IMAGE, PAD, SPECIAL_TOKENS, default_corpus, train_tokenizer

#: Defaults of the tiny architecture (kept small: a forward pass is milliseconds on one CPU core).
TINY_DEFAULTS = dict(image_size=56, patch_size=14, vision_hidden_size=176, vision_layers=2, vision_heads=2,
                     text_hidden_size=64, text_layers=2, text_heads=4)


def minigptv2_corpus(seed: int = 0) -> list[str]:
    """The tiny tokenizer's training texts: tiny LLaVA's corpus plus MiniGPT-v2 prompt framing."""
    from pfmvg_plugin.prompts import get_prompts

    texts = default_corpus(seed)
    pool = get_prompts("minigptv2")
    for family in ("refer", "vqa", "caption", "report"):
        for template in pool.pool(family):
            text = template.format(phrase="left basilar atelectasis", question="Is there a pleural effusion?",
                                   box_format="")
            texts.append(f"[INST] <Img></Img> {text} [/INST]")
    texts += ["[INST] [/INST] <Img> </Img> [refer] [grounding] [vqa] [caption] [report] [identify] [detection]"] * 4
    texts += ["<delim> <p> </p> {<0><0><100><100>}"] * 4
    return texts


def tiny_minigptv2_config(tokenizer_ids: dict[str, int], vocab_size: int, *, image_size: int, patch_size: int,
                          vision_hidden_size: int, vision_layers: int, vision_heads: int, text_hidden_size: int,
                          text_layers: int, text_heads: int, max_position_embeddings: int = 1024,
                          init_std: float = 0.2):
    from transformers import LlamaConfig

    from pfmvg_plugin.models.minigptv2.configuration import EvaVisionConfig, MiniGPTv2Config

    vision = EvaVisionConfig(image_size=image_size, patch_size=patch_size, hidden_size=vision_hidden_size,
                             num_hidden_layers=vision_layers, num_attention_heads=vision_heads,
                             intermediate_size=int(vision_hidden_size * 4.3637))
    text = LlamaConfig(
        vocab_size=vocab_size, hidden_size=text_hidden_size,
        intermediate_size=int(8 * text_hidden_size / 3 + 31) // 32 * 32, num_hidden_layers=text_layers,
        num_attention_heads=text_heads, num_key_value_heads=text_heads, max_position_embeddings=max_position_embeddings,
        bos_token_id=tokenizer_ids[BOS], eos_token_id=tokenizer_ids[EOS], pad_token_id=tokenizer_ids[PAD],
        tie_word_embeddings=False, initializer_range=init_std,
    )
    return MiniGPTv2Config(vision_config=vision, text_config=text, image_token_index=tokenizer_ids[IMAGE])


def build_tiny_tokenizer(seed: int = 0, vocab_size: int = 4096, corpus: Iterable[str] | None = None,
                         max_length: int = 1024):
    """The tiny BPE tokenizer (``<pad>`` 0, ``<s>`` 1, ``</s>`` 2, ``<image>`` 3), as a fast tokenizer."""
    from transformers import PreTrainedTokenizerFast

    backend = train_tokenizer(list(minigptv2_corpus(seed) if corpus is None else corpus), vocab_size)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token=BOS, eos_token=EOS, pad_token=PAD,
                                        unk_token=None, padding_side="left", model_max_length=max_length)
    return tokenizer, {t: backend.token_to_id(t) for t in SPECIAL_TOKENS}


def build_tiny_minigptv2(out_dir: str | Path, *, seed: int = 0, vocab_size: int = 4096, init_std: float = 0.2,
                         dtype: str = "float32", **sizes) -> Path:
    """Write a tiny random MiniGPT-v2 directory (model + processor) to ``out_dir``; same arguments, same bits.

    ``sizes`` override :data:`TINY_DEFAULTS` (``image_size``, ``patch_size``, ``vision_hidden_size``,
    ``vision_layers``, ``vision_heads``, ``text_hidden_size``, ``text_layers``, ``text_heads``). ``init_std`` is the
    language model's and projector's init scale (0.2, as tiny LLaVA: at Llama's 0.02 a tiny random model answers the
    same tokens whatever the input, which hides batching and splicing bugs).
    """
    import torch
    from transformers import GenerationConfig

    from pfmvg_plugin.models.minigptv2.modeling import MiniGPTv2ForConditionalGeneration
    from pfmvg_plugin.models.minigptv2.processing import MiniGPTv2ImageProcessor, MiniGPTv2Processor

    unknown = set(sizes) - set(TINY_DEFAULTS)
    if unknown:
        raise TypeError(f"unknown size arguments {sorted(unknown)}; known: {sorted(TINY_DEFAULTS)}")
    dims = {**TINY_DEFAULTS, **sizes}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer, ids = build_tiny_tokenizer(seed, vocab_size)
    config = tiny_minigptv2_config(ids, len(tokenizer), init_std=init_std, **dims)
    torch.manual_seed(seed)
    model = MiniGPTv2ForConditionalGeneration(config).eval()
    with torch.no_grad():  # the vision tower's reference init is tiny (std 0.02): spread the projector instead
        torch.nn.init.normal_(model.llama_proj.weight, std=init_std / config.projector_in_features ** 0.5 * 8)
    model.generation_config = GenerationConfig(bos_token_id=ids[BOS], eos_token_id=ids[EOS], pad_token_id=ids[PAD],
                                               do_sample=False, max_new_tokens=32)
    model.to(getattr(torch, dtype)).save_pretrained(out, safe_serialization=True)
    processor = MiniGPTv2Processor(tokenizer, MiniGPTv2ImageProcessor(size=config.vision_config.image_size),
                                   num_image_tokens=config.num_image_tokens, image_token_index=ids[IMAGE])
    processor.save_pretrained(out)
    (out / "pfmvg_tiny_minigptv2.json").write_text(json.dumps(
        {"builder": "pfmvg_plugin.models.minigptv2.build_tiny_minigptv2", "seed": seed, "init_std": init_std,
         "vocab_size": len(tokenizer), "image_tokens": config.num_image_tokens, **dims}, indent=2) + "\n")
    return out


def write_tiny_release_files(out_dir: str | Path, *, seed: int = 0, lora_r: int = 4, peft_default_suffix: bool = True,
                             stored_grid: int | None = None, extra_vision_blocks: int = 1, pickle_extra=None,
                             **sizes) -> dict[str, Path]:
    """Tiny stand-ins of the three released files, in their real formats, with random weights.

    Returns ``{"llama": dir, "eva": eva_vit_g.pth, "ckpt": checkpoint.pth}``. The EVA file holds
    ``vision_layers + extra_vision_blocks`` blocks (the real one has 40, MiniGPT-v2 uses 39) and a position embedding
    for a ``stored_grid`` x ``stored_grid`` grid (default: half the model's, like 224 px vs 448 px). The checkpoint
    holds ``llama_proj`` and LoRA (rank ``lora_r``, q/v of every layer, non-zero B) with PEFT's ``.default`` suffix or
    without (older PEFT), plus the optimizer/config/epoch entries the MiniGPT-4 runner saves. ``pickle_extra``: an
    object stored under ``["extra"]`` (e.g. one that ``weights_only`` refuses).
    """
    import torch
    from transformers import LlamaForCausalLM

    dims = {**TINY_DEFAULTS, **sizes}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer, ids = build_tiny_tokenizer(seed)
    config = tiny_minigptv2_config(ids, len(tokenizer), **dims)
    gen = torch.Generator().manual_seed(seed)

    def rand(*shape, std=0.02):
        return torch.randn(*shape, generator=gen) * std

    # 1. the language model as a Hugging Face LLaMA directory (with the tokenizer, as Llama-2-7b-chat-hf ships one)
    torch.manual_seed(seed)
    llama = LlamaForCausalLM(config.text_config).eval()
    llama_dir = out / "llama"
    llama.save_pretrained(llama_dir, safe_serialization=True)
    tokenizer.save_pretrained(str(llama_dir))

    # 2. eva_vit_g.pth: the EVA state dict, release names, coarser position grid, one block too many
    v = config.vision_config
    c, hidden = v.hidden_size, v.intermediate_size
    grid = stored_grid or max(1, v.grid_size // 2)
    eva = {"cls_token": rand(1, 1, c), "pos_embed": rand(1, grid * grid + 1, c, std=0.5),
           "patch_embed.proj.weight": rand(c, 3, v.patch_size, v.patch_size, std=0.05),
           "patch_embed.proj.bias": rand(c)}
    for i in range(v.num_hidden_layers + extra_vision_blocks):
        p = f"blocks.{i}."
        eva.update({
            p + "norm1.weight": 1 + rand(c, std=0.1), p + "norm1.bias": rand(c, std=0.1),
            p + "attn.qkv.weight": rand(3 * c, c, std=0.08), p + "attn.q_bias": rand(c, std=0.1),
            p + "attn.v_bias": rand(c, std=0.1), p + "attn.proj.weight": rand(c, c, std=0.08),
            p + "attn.proj.bias": rand(c, std=0.1), p + "norm2.weight": 1 + rand(c, std=0.1),
            p + "norm2.bias": rand(c, std=0.1), p + "mlp.fc1.weight": rand(hidden, c, std=0.08),
            p + "mlp.fc1.bias": rand(hidden, std=0.1), p + "mlp.fc2.weight": rand(c, hidden, std=0.05),
            p + "mlp.fc2.bias": rand(c, std=0.1),
        })
    eva_path = out / "eva_vit_g.pth"
    torch.save(eva, eva_path)

    # 3. the MiniGPT-v2 / PeFoMed checkpoint: only what trained (llama_proj + LoRA), as the runner saves it
    t = config.text_config
    suffix = ".default" if peft_default_suffix else ""
    state = {"llama_proj.weight": rand(t.hidden_size, config.projector_in_features, std=0.2),
             "llama_proj.bias": rand(t.hidden_size, std=0.2)}
    head_dim = t.hidden_size // t.num_attention_heads
    for i in range(t.num_hidden_layers):
        for proj, out_dim in (("q_proj", t.num_attention_heads * head_dim),
                              ("v_proj", t.num_key_value_heads * head_dim)):
            p = f"llama_model.base_model.model.model.layers.{i}.self_attn.{proj}."
            state[p + f"lora_A{suffix}.weight"] = rand(lora_r, t.hidden_size, std=0.3)
            state[p + f"lora_B{suffix}.weight"] = rand(out_dim, lora_r, std=0.3)
    ckpt = {"model": state, "optimizer": {"state": {}, "param_groups": [{"lr": 1e-5, "betas": (0.9, 0.999)}]},
            "config": {"model": {"arch": "minigpt_v2", "lora_r": lora_r, "lora_alpha": 16, "image_size": v.image_size,
                                 "end_sym": "</s>", "prompt_template": "[INST] {} [/INST]"}},
            "scaler": None, "epoch": 3}
    if pickle_extra is not None:
        ckpt["extra"] = pickle_extra
    ckpt_path = out / "checkpoint.pth"
    torch.save(ckpt, ckpt_path)
    return {"llama": llama_dir, "eva": eva_path, "ckpt": ckpt_path}
