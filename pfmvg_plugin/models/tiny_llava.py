"""A tiny, offline LLaVA-1.5-architecture checkpoint: random weights, a real tokenizer, processor and chat template.

:func:`build_tiny_llava` writes a directory that ``transformers`` loads like any LLaVA checkpoint from the Hub
(``LlavaForConditionalGeneration`` / ``AutoModelForImageTextToText`` + ``AutoProcessor``), without network access. It
serves tests, the demo and the training recipe: a LoRA fine-tune of it on synthetic chest radiographs is the
CPU-sized stand-in for fine-tuning LLaVA-1.5-7B on MS-CXR.

What is in it:

- vision tower: ``CLIPVisionModel`` (image ``image_size`` px, patch ``patch_size``; CLS token dropped as in LLaVA-1.5,
  so ``(image_size // patch_size) ** 2`` image tokens), a 2-layer GELU projector, and a ``LlamaForCausalLM``
  (``OPTForCausalLM`` with ``text_model="opt"``);
- a byte-level BPE tokenizer trained with ``tokenizers`` on a built-in corpus (:func:`default_corpus`: every prompt
  template of :mod:`pfmvg_plugin.prompts` filled with synthcxr and MS-CXR phrases, box answers in every codec, a few
  report sentences). Numbers are pre-tokenized whole (``0.25``, `` 0.40``, ``<25>``), so a LLaVA box
  ``[0.25, 0.40, 0.75, 0.90]`` is 9 tokens. Special tokens: ``<pad>`` (0), ``<s>`` (1, added in front of every
  encoded text), ``</s>`` (2, end of an answer), ``<image>`` (3);
- an image processor that *squashes* the image to ``image_size`` x ``image_size`` (no centre crop, no padding), so a
  box normalised to the original width and height (the ``llava`` codec) is also normalised to what the model sees;
- the LLaVA-1.5 chat template: ``USER: <image>\\n{text} ASSISTANT:`` (answers end with ``</s>``; assistant text is
  wrapped in ``{% generation %}`` so ``return_assistant_tokens_mask`` works for training). As with
  ``llava-hf/llava-1.5-*``, the template has no ``<s>``: the tokenizer adds it when the rendered text is encoded
  (``processor(text=...)``), while ``apply_chat_template(tokenize=True)`` encodes without special tokens.

Why 64 px with 8-px patches (64 image tokens) by default: the LoRA fine-tune on 256-px synthetic radiographs must
ground phrases on 2 CPU cores in minutes. 8x8 tokens give every token a 32x32-px cell of a 256-px image, fine enough
to tell lung zones and sides apart and to place box edges to a fraction of a cell by attention; the drawn findings
stay visible after squashing to 64 px (synthcxr nodules are 7-16 px across at 256 px, so 2-4 px; masses 5-10 px;
effusions, consolidations and the heart far more). 32 px (16 tokens, 64-px cells) blurs nodules into one or two
pixels; 96-128 px (144-256 tokens) costs 2-4x more per step in both towers, since image tokens then dominate the
language model's sequence. With a ~40-token prompt and answer, one full fine-tuning step (batch 2, 146 tokens) takes
~30 ms on 2 cores (measured 2026-11-22), so thousands of steps fit in minutes.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable
from pathlib import Path

#: Chat template of LLaVA-1.5 (``llava-hf/llava-1.5-*-hf``), accepting string or typed-list message content.
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if message['content'] is string -%}"
    "{%- set text = message['content'] -%}{%- set n_images = 0 -%}"
    "{%- else -%}"
    "{%- set text = message['content'] | selectattr('type', 'equalto', 'text') | map(attribute='text') | join(' ') -%}"
    "{%- set n_images = message['content'] | selectattr('type', 'equalto', 'image') | list | length -%}"
    "{%- endif -%}"
    "{%- if message['role'] == 'system' -%}{{ text + ' ' }}"
    "{%- elif message['role'] == 'assistant' -%}"
    "{{ 'ASSISTANT: ' }}{% generation %}{{ text + eos_token }}{% endgeneration %}"
    "{%- else -%}"
    "{{ message['role'].upper() + ': ' }}{{ '<image>\\n' * n_images }}{{ text + ' ' }}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ 'ASSISTANT:' }}{%- endif -%}"
)

PAD, BOS, EOS, IMAGE = "<pad>", "<s>", "</s>", "<image>"
SPECIAL_TOKENS = (PAD, BOS, EOS, IMAGE)

# GPT-2's pre-tokenizer, except that numbers with a decimal part stay whole ("0.25"), so box answers are short.
_PRETOKENIZE = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\d+(?:\.\d+)?| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""

_MSCXR_PHRASES = (
    "small right apical pneumothorax", "left basilar atelectasis", "right lower lobe consolidation",
    "bilateral pleural effusions", "cardiomegaly", "enlarged cardiac silhouette", "mild pulmonary edema",
    "patchy opacity in the left lung base", "right middle lobe pneumonia", "retrocardiac opacity",
    "lung opacity", "pleural effusion", "pneumonia", "edema", "consolidation", "atelectasis", "pneumothorax",
)
_QUESTIONS = (
    ("Is there a pleural effusion?", "yes"), ("Is the heart enlarged?", "no"), ("Which side is abnormal?", "left"),
    ("What is the abnormality?", "pneumothorax"), ("Is this a chest X-ray?", "yes"),
    ("Where is the nodule?", "right upper zone"), ("What modality is shown?", "x-ray"),
)
_REPORT_SENTENCES = (
    "The lungs are clear. There is no pleural effusion or pneumothorax. The heart size is normal.",
    "There is a small right apical pneumothorax. No focal consolidation.",
    "Moderate left pleural effusion with adjacent atelectasis. The cardiac silhouette is enlarged.",
    "Patchy airspace opacity in the right lower zone may represent pneumonia.",
    "A chest radiograph, frontal view, showing the lungs, heart and mediastinum.",
    "Findings: no acute cardiopulmonary process. Impression: normal chest.",
)


#: The conventions and codecs the tiny tokenizer is trained on. Fixed, not "every registered one": the tokenizer, and
#: so every tiny checkpoint, the demo's scores and the tests built on them, stay the same when a family is added.
CORPUS_CONVENTIONS = ("minigptv2", "llava", "api", "qwen2vl", "qwen25vl")
CORPUS_CODECS = ("llava", "llava_pad", "minigptv2", "pixel", "qwen25vl", "qwen2vl")


def default_corpus(seed: int = 0, n_boxes: int = 400) -> list[str]:
    """Texts the tiny tokenizer is trained on: the prompt templates of :data:`CORPUS_CONVENTIONS` filled with
    synthcxr / MS-CXR phrases, box answers in :data:`CORPUS_CODECS`, chat framing, VQA and report text, all numbers
    0-1000 and 0.00-1.00."""
    from pfmvg_plugin.codecs import get_codec
    from pfmvg_plugin.data.synth import PHRASES, SIDES, ZONES
    from pfmvg_plugin.prompts import TASK_FAMILIES, get_prompts

    rng = random.Random(seed)
    phrases = list(_MSCXR_PHRASES)
    for templates in PHRASES.values():
        for template in templates:
            for side in SIDES:
                for zone in (*ZONES, "mid"):
                    phrases.append(template.format(size=rng.choice(("small", "moderate", "large")), side=side,
                                                   zone=zone))
    phrases = sorted(set(phrases))

    texts: list[str] = []
    codecs = {name: get_codec(name) for name in CORPUS_CODECS}
    for prompts in map(get_prompts, CORPUS_CONVENTIONS):
        describe = codecs[prompts.codec].describe() if prompts.codec in codecs else ""
        for family in TASK_FAMILIES:
            for template in prompts.pool(family):
                for phrase in phrases if "{phrase}" in template else phrases[:1]:
                    question = rng.choice(_QUESTIONS)[0]
                    texts.append(template.format(phrase=phrase, question=question, box_format=describe))
    texts += [c.describe() for c in codecs.values()]
    sizes = ((256, 256), (512, 512), (448, 448), (1024, 1024), (2544, 3056), (3056, 2544))
    for i in range(n_boxes):
        w, h = sizes[i % len(sizes)]
        x1, x2 = sorted(rng.uniform(0, w) for _ in range(2))
        y1, y2 = sorted(rng.uniform(0, h) for _ in range(2))
        box = (x1, y1, max(x2, x1 + 2), max(y2, y1 + 2))
        boxes = [box, (box[0] / 2, box[1] / 2, box[2] / 2, box[3] / 2)] if i % 4 == 0 else [box]  # multi-box answers
        label = rng.choice(phrases)
        for codec in codecs.values():
            try:
                answer = codec.encode(boxes, size=(w, h), label=label)
            except Exception:  # a codec may refuse a box (e.g. outside its range): skip it, it's only a corpus
                continue
            texts.append(f"USER: <image>\nWhere is {label}? ASSISTANT: {answer}")
    texts += [f"<p>{p}</p>" for p in phrases]
    texts += [f"{q} {a}" for q, a in _QUESTIONS] + list(_REPORT_SENTENCES)
    texts += [" ".join(f"{v / 100:.2f}" for v in range(101)), " ".join(f"<{v}>" for v in range(101))]
    texts += [" ".join(str(v) for v in range(1001)), ",".join(str(v) for v in range(1001))]
    texts += ["0 1 2 3 4 5 6 7 8 9 [ ] ( ) { } < > , . : ; ? ! - _ \" ' / + = * % # @ & | \\ \n\t"]
    return texts


def train_tokenizer(corpus: Iterable[str], vocab_size: int, special_tokens: Iterable[str] = SPECIAL_TOKENS,
                    bos: str | None = BOS):
    """A byte-level BPE ``tokenizers.Tokenizer`` trained on ``corpus``, numbers kept whole; ``special_tokens`` get the
    first ids in order; ``bos`` (if any) is put in front of every encoded text."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(_PRETOKENIZE), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=list(special_tokens),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(list(corpus), trainer=trainer)
    if bos is not None:
        tok.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, tok.token_to_id(bos))]
        )
    return tok


def build_tiny_llava(
    out_dir: str | Path,
    *,
    image_size: int = 64,
    patch_size: int = 8,
    vision_hidden_size: int = 64,
    vision_layers: int = 2,
    text_hidden_size: int = 128,
    text_layers: int = 2,
    num_attention_heads: int = 4,
    vocab_size: int = 4096,
    max_position_embeddings: int = 1024,
    init_std: float = 0.2,
    seed: int = 0,
    corpus: Iterable[str] | None = None,
    vision_position_init: str = "random",
    number_embedding_init: str = "random",
    text_model: str = "llama",
    architecture: str = "llava",
) -> Path:
    """Write a tiny LLaVA-1.5 checkpoint (safetensors weights, tokenizer, processor, chat template) to ``out_dir``.

    Args:
        out_dir: directory to write (created; existing files of the same names are overwritten).
        image_size: side of the square image the vision tower sees (the processor resizes to it without cropping).
        patch_size: ViT patch size; the model gets ``(image_size // patch_size) ** 2`` image tokens.
        vision_hidden_size, vision_layers: width and depth of the CLIP vision tower.
        text_hidden_size, text_layers: width and depth of the language model.
        num_attention_heads: heads of both towers (must divide both widths).
        vocab_size: BPE vocabulary size (the corpus may yield fewer tokens; the model uses the real size).
        max_position_embeddings: longest sequence (image tokens included) the language model accepts.
        init_std: standard deviation of the language model's and projector's random weights (the CLIP tower keeps
            its own width-scaled init). Llama's 0.02 is tuned for widths in the thousands; at width 128 it leaves a
            random model nearly input-blind (every prompt and image decodes to the same tokens), which hides
            ordering, batching and adapter bugs. At 0.2 different inputs give different greedy answers.
        seed: seeds the weights, so the same arguments give the same checkpoint bit for bit.
        corpus: tokenizer training texts (default: :func:`default_corpus`).
        vision_position_init: ``random`` (CLIP's init: tiny random position embeddings) or ``sincos``: the vision
            tower's patch position embeddings start as 2-D sine-cosine features of the patch's column and row (unit
            amplitude; still trained), as ViTs trained from scratch commonly do. With CLIP's init, a tower trained
            from scratch tells *where* a patch is only after hundreds of steps; with ``sincos`` it does from step 0,
            which is what grounding needs (used by ``make demo``).
        number_embedding_init: ``random`` or ``sincos``: the input embeddings and output rows of the number tokens
            (``0`` .. ``100`` and ``0.00`` .. ``1.00``, the box coordinates of the ``minigptv2`` and ``llava``
            codecs) start as sine-cosine features of their value, so neighbouring coordinates start out similar, as
            in a pretrained language model, instead of as unrelated random vectors (used by ``make demo``).
        text_model: ``llama`` (rotary positions, the LLaVA-1.5 language model) or ``opt`` (``OPTForCausalLM``:
            learned absolute positions, LayerNorm, a 4x GELU MLP; the same width, depth and heads). Image tokens always
            sit at the same absolute positions, so an absolute-position model trained from scratch knows which patch a
            token came from at once; with rotary positions it must read that from the token's content. Measured on
            synthcxr with the target box painted white on a black image (the easiest possible image): after 1000
            steps the 2-layer OPT reaches Acc@0.5 0.65, the Llama 0.50 (``docs/demo_learning.md``; used by
            ``make demo``).

        architecture: ``llava`` (LLaVA-1.5: one ``image_size`` view) or ``llava_next`` (LLaVA-NeXT: ``anyres``, the
            image tiled over the best of LLaVA-NeXT's released grid pinpoints, scaled from 336 to ``image_size``,
            plus a base view; its image processor pads and tiles like ``llava-hf/llava-v1.6-*``).

    Returns:
        ``Path(out_dir)``. Loads offline with ``AutoModelForImageTextToText.from_pretrained(out_dir)`` and
        ``AutoProcessor.from_pretrained(out_dir)``.
    """
    import torch
    from transformers import (
        CLIPVisionConfig,
        GenerationConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaImageProcessor,
        LlavaProcessor,
        PreTrainedTokenizerFast,
    )

    for name, value in (("vision_position_init", vision_position_init),
                        ("number_embedding_init", number_embedding_init)):
        if value not in ("random", "sincos"):
            raise ValueError(f"{name} must be 'random' or 'sincos', got {value!r}")
    if text_model not in TEXT_MODELS:
        raise ValueError(f"text_model must be one of {TEXT_MODELS}, got {text_model!r}")
    if image_size % patch_size:
        raise ValueError(f"image_size {image_size} must be a multiple of patch_size {patch_size}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    texts = list(default_corpus(seed) if corpus is None else corpus)
    backend = train_tokenizer(texts, vocab_size)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        padding_side="left",
        model_max_length=max_position_embeddings,
        chat_template=CHAT_TEMPLATE,
    )
    ids = {t: backend.token_to_id(t) for t in SPECIAL_TOKENS}

    n_patches = (image_size // patch_size) ** 2
    vision = CLIPVisionConfig(
        image_size=image_size,
        patch_size=patch_size,
        hidden_size=vision_hidden_size,
        intermediate_size=4 * vision_hidden_size,
        num_hidden_layers=vision_layers,
        num_attention_heads=num_attention_heads,
        projection_dim=vision_hidden_size,
    )
    text = _text_config(
        text_model,
        vocab_size=backend.get_vocab_size(),
        hidden_size=text_hidden_size,
        num_hidden_layers=text_layers,
        num_attention_heads=num_attention_heads,
        max_position_embeddings=max_position_embeddings,
        bos_token_id=ids[BOS],
        eos_token_id=ids[EOS],
        pad_token_id=ids[PAD],
        init_std=init_std,
    )
    if architecture not in ARCHITECTURES:
        raise ValueError(f"architecture must be one of {ARCHITECTURES}, got {architecture!r}")
    common = {
        "vision_config": vision, "text_config": text, "image_token_index": ids[IMAGE], "image_seq_length": n_patches,
        "projector_hidden_act": "gelu",
        "vision_feature_select_strategy": "default",  # drop CLS, as LLaVA-1.5
        "vision_feature_layer": -1,  # the last layer: with 2 layers, LLaVA's -2 would leave one layer unused
    }
    pinpoints = [[h * image_size // 336, w * image_size // 336] for h, w in LLAVA_NEXT_PINPOINTS]
    torch.manual_seed(seed)
    if architecture == "llava_next":
        from transformers import LlavaNextConfig, LlavaNextForConditionalGeneration

        model = LlavaNextForConditionalGeneration(LlavaNextConfig(**common, image_grid_pinpoints=pinpoints)).eval()
    else:
        model = LlavaForConditionalGeneration(LlavaConfig(**common)).eval()
    if vision_position_init == "sincos":
        _sincos_positions(model)
    if number_embedding_init == "sincos":
        _sincos_numbers(model, tokenizer)
    model.generation_config = GenerationConfig(
        bos_token_id=ids[BOS], eos_token_id=ids[EOS], pad_token_id=ids[PAD], do_sample=False, max_new_tokens=32
    )
    model.save_pretrained(out, safe_serialization=True)

    if architecture == "llava_next":  # the released LLaVA-NeXT processor, scaled: resize, crop, anyres tiling
        from transformers import LlavaNextImageProcessor, LlavaNextProcessor

        image_processor = LlavaNextImageProcessor(
            size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size},
            image_grid_pinpoints=pinpoints, do_center_crop=True, do_pad=True, resample=3,
        )
        processor_class = LlavaNextProcessor
    else:
        image_processor = LlavaImageProcessor(
            size={"height": image_size, "width": image_size},
            crop_size={"height": image_size, "width": image_size},
            do_center_crop=False,
            do_pad=False,
        )
        processor_class = LlavaProcessor
    processor = processor_class(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=patch_size,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,  # CLIP's CLS token
        chat_template=CHAT_TEMPLATE,
        image_token=IMAGE,
    )
    processor.save_pretrained(out)
    (out / "pfmvg_tiny_llava.json").write_text(
        json.dumps(
            {
                "builder": "pfmvg_plugin.models.tiny_llava.build_tiny_llava",
                "image_size": image_size,
                "patch_size": patch_size,
                "image_tokens": n_patches,
                "vision_hidden_size": vision_hidden_size,
                "vision_layers": vision_layers,
                "text_hidden_size": text_hidden_size,
                "text_layers": text_layers,
                "vocab_size": backend.get_vocab_size(),
                "seed": seed,
                "init_std": init_std,
                "vision_position_init": vision_position_init,
                "number_embedding_init": number_embedding_init,
                "text_model": text_model,
                "architecture": architecture,
            },
            indent=2,
        )
        + "\n"
    )
    return out


TEXT_MODELS = ("llama", "opt")
ARCHITECTURES = ("llava", "llava_next")
#: ``image_grid_pinpoints`` of llava-hf/llava-v1.6-* (height, width at a 336-px tower).
LLAVA_NEXT_PINPOINTS = ((336, 672), (672, 336), (672, 672), (1008, 336), (336, 1008))


def _text_config(kind: str, *, vocab_size: int, hidden_size: int, num_hidden_layers: int, num_attention_heads: int,
                 max_position_embeddings: int, bos_token_id: int, eos_token_id: int, pad_token_id: int,
                 init_std: float):
    """The language model's config: Llama (SwiGLU MLP of ~8/3 width) or OPT (pre-LayerNorm, 4x GELU MLP)."""
    from transformers import LlamaConfig, OPTConfig

    common = dict(vocab_size=vocab_size, hidden_size=hidden_size, num_hidden_layers=num_hidden_layers,
                  num_attention_heads=num_attention_heads, max_position_embeddings=max_position_embeddings,
                  bos_token_id=bos_token_id, eos_token_id=eos_token_id, pad_token_id=pad_token_id,
                  tie_word_embeddings=False)
    if kind == "opt":
        return OPTConfig(**common, ffn_dim=4 * hidden_size, word_embed_proj_dim=hidden_size, do_layer_norm_before=True,
                         dropout=0.0, attention_dropout=0.0, init_std=init_std)
    return LlamaConfig(**common, intermediate_size=int(8 * hidden_size / 3 + 31) // 32 * 32,
                       num_key_value_heads=num_attention_heads, initializer_range=init_std)


def _sincos(values, dim: int, min_wavelength: float, max_wavelength: float):
    """``len(values) x dim`` sine-cosine features (``dim // 2`` geometric wavelengths; odd ``dim``: last column 0)."""
    import torch

    half = dim // 2
    steps = torch.arange(half, dtype=torch.float32) / max(half - 1, 1)
    wavelengths = min_wavelength * (max_wavelength / min_wavelength) ** steps
    angles = 2 * torch.pi * torch.as_tensor(values, dtype=torch.float32)[:, None] / wavelengths
    out = torch.zeros(len(values), dim)
    out[:, :half], out[:, half:2 * half] = torch.sin(angles), torch.cos(angles)
    return out


def _sincos_positions(model) -> None:
    """2-D sine-cosine patch position embeddings (x in the first half of the width, y in the second; CLS row 0)."""
    import torch

    embeddings = model.model.vision_tower.embeddings
    weight = embeddings.position_embedding.weight
    grid = embeddings.image_size // embeddings.patch_size
    dim = weight.shape[1]
    cols = torch.arange(grid * grid) % grid
    rows = torch.arange(grid * grid) // grid
    with torch.no_grad():
        weight.zero_()
        weight[1:, : dim // 2] = _sincos(cols, dim // 2, 2 * torch.pi, 200 * torch.pi)
        weight[1:, dim // 2 :] = _sincos(rows, dim - dim // 2, 2 * torch.pi, 200 * torch.pi)


def _number_value(token: str) -> float | None:
    """0..100 for the number tokens of box answers (``57``, `` 57``, ``0.57``, `` 0.57``), else None."""
    import re

    text = token.replace("\u0120", " ").strip()
    if re.fullmatch(r"\d{1,3}", text) and int(text) <= 100:
        return float(int(text))
    if re.fullmatch(r"[01]\.\d\d", text) and float(text) <= 1.0:
        return round(float(text) * 100)
    return None


def _sincos_numbers(model, tokenizer) -> None:
    """Number tokens' input embeddings and output rows: value features scaled like the random rows they replace."""
    import torch

    ids, values = [], []
    for token, index in tokenizer.get_vocab().items():
        value = _number_value(token)
        if value is not None:
            ids.append(index)
            values.append(value)
    if not ids:
        return
    for weight in (model.get_input_embeddings().weight, model.get_output_embeddings().weight):
        dim = weight.shape[1]
        features = _sincos(values, dim, 4.0, 400.0)
        features = features / features.norm(dim=1, keepdim=True) * dim ** 0.5
        with torch.no_grad():
            weight[ids] = features * weight.std()


def main(argv: list[str] | None = None) -> int:
    """``python -m pfmvg_plugin.models.tiny_llava OUT``: write a tiny random LLaVA-1.5 checkpoint (seconds, offline)."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m pfmvg_plugin.models.tiny_llava",
        description="Write a tiny LLaVA-1.5 checkpoint with random weights, built from config (CLIP vision tower, "
                    "Llama language model, a BPE tokenizer with <image>, LlavaProcessor, chat template): for trying "
                    "the tools end to end offline. Its answers are random; it is not a model of anything.")
    parser.add_argument("out", help="output directory")
    parser.add_argument("--image-size", type=int, default=64, help="vision input side in pixels (default 64)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights (default 0)")
    args = parser.parse_args(argv)
    print(build_tiny_llava(args.out, image_size=args.image_size, seed=args.seed))
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main())
