"""A tiny, offline Qwen2-VL / Qwen2.5-VL checkpoint: random weights, a real tokenizer, processor and chat template.

:func:`build_tiny_qwen2vl` writes a directory that ``transformers`` loads like a Qwen2(.5)-VL checkpoint from the Hub
(``AutoModelForImageTextToText`` + ``AutoProcessor``), without network access:

- the processor is Qwen's own (``Qwen2VLImageProcessor`` inside ``Qwen2_5_VLProcessor`` / ``Qwen2VLProcessor``) with the
  published values -- 14-px patches, 2 x 2 spatial merge, 2 temporal frames, ``smart_resize`` to multiples of 28,
  bicubic, OpenAI CLIP mean / std -- except the pixel budget: ``max_pixels`` is 28 * 28 * 16 here (at most 16 image
  tokens) where the release allows 28 * 28 * 1280, so a CPU step stays cheap; ``min_pixels`` is the published 56 * 56;
- the tokenizer has Qwen's special tokens (``<|im_start|>``, ``<|im_end|>``, ``<|vision_start|>``, ``<|image_pad|>``,
  ``<|box_start|>`` ...) and a ChatML chat template with Qwen's default system turn, written for this project;
- the model is the real transformers class at a tiny width and depth (M-RoPE sections scaled to the head size).
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable
from pathlib import Path

from pfmvg_plugin.models.tiny_llava import default_corpus, train_tokenizer

PAD = "<|endoftext|>"
IM_START, IM_END = "<|im_start|>", "<|im_end|>"
VISION_START, VISION_END, IMAGE_PAD, VIDEO_PAD = "<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"
SPECIAL_TOKENS = (
    PAD, IM_START, IM_END, "<|object_ref_start|>", "<|object_ref_end|>", "<|box_start|>", "<|box_end|>",
    "<|quad_start|>", "<|quad_end|>", VISION_START, VISION_END, "<|vision_pad|>", IMAGE_PAD, VIDEO_PAD,
)
#: Qwen's default system turn.
SYSTEM = "You are a helpful assistant."

#: ChatML as Qwen2-VL-Instruct renders it: a default system turn, each image as
#: ``<|vision_start|><|image_pad|><|vision_end|>`` where it stands in the content, ``<|im_end|>`` after every turn.
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if loop.first and message['role'] != 'system' -%}"
    "{{ '<|im_start|>system\\n" + SYSTEM + "<|im_end|>\\n' }}"
    "{%- endif -%}"
    "{{ '<|im_start|>' + message['role'] + '\\n' }}"
    "{%- if message['content'] is string -%}{{ message['content'] }}"
    "{%- else -%}{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'image' -%}{{ '<|vision_start|><|image_pad|><|vision_end|>' }}"
    "{%- elif part['type'] == 'video' -%}{{ '<|vision_start|><|video_pad|><|vision_end|>' }}"
    "{%- elif part['type'] == 'text' -%}{{ part['text'] }}"
    "{%- endif -%}{%- endfor -%}{%- endif -%}"
    "{{ '<|im_end|>\\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\\n' }}{%- endif -%}"
)

#: The published ``preprocessor_config.json`` values of Qwen2-VL / Qwen2.5-VL (``min_pixels`` / ``max_pixels`` are the
#: processor's ``size.shortest_edge`` / ``size.longest_edge``).
PUBLISHED_IMAGE_PROCESSOR = {
    "patch_size": 14, "merge_size": 2, "temporal_patch_size": 2, "min_pixels": 56 * 56, "max_pixels": 28 * 28 * 1280,
    "image_mean": [0.48145466, 0.4578275, 0.40821073], "image_std": [0.26862954, 0.26130258, 0.27577711],
}
VARIANTS = ("qwen2_vl", "qwen2_5_vl")


def image_processor(min_pixels: int = 56 * 56, max_pixels: int = 28 * 28 * 1280):
    """Qwen's image processor with the published settings and the given pixel budget."""
    from transformers import Qwen2VLImageProcessor

    values = {k: v for k, v in PUBLISHED_IMAGE_PROCESSOR.items() if k not in ("min_pixels", "max_pixels")}
    return Qwen2VLImageProcessor(**values, size={"shortest_edge": min_pixels, "longest_edge": max_pixels})


def build_tiny_qwen2vl(
    out_dir: str | Path,
    *,
    variant: str = "qwen2_5_vl",
    min_pixels: int = 56 * 56,
    max_pixels: int = 28 * 28 * 16,
    vision_hidden_size: int = 32,
    vision_layers: int = 2,
    text_hidden_size: int = 128,
    text_layers: int = 2,
    num_attention_heads: int = 4,
    vocab_size: int = 4096,
    max_position_embeddings: int = 2048,
    init_std: float = 0.2,
    seed: int = 0,
    corpus: Iterable[str] | None = None,
) -> Path:
    """Write a tiny Qwen2.5-VL (``variant="qwen2_5_vl"``) or Qwen2-VL (``"qwen2_vl"``) checkpoint to ``out_dir``.

    Args mirror :func:`pfmvg_plugin.models.tiny_llava.build_tiny_llava`; ``min_pixels`` / ``max_pixels`` set the
    processor's pixel budget (and so the box frame of Qwen2.5-VL answers). Returns ``Path(out_dir)``.
    """
    import torch
    import transformers
    from transformers import GenerationConfig, PreTrainedTokenizerFast

    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    head_dim = text_hidden_size // num_attention_heads
    if text_hidden_size % num_attention_heads or head_dim % 4:
        raise ValueError("text_hidden_size / num_attention_heads must be a multiple of 4 (M-RoPE sections)")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    texts = list(default_corpus(seed) if corpus is None else corpus)
    rng = random.Random(seed)
    texts += [f"{IM_START}user\n{VISION_START}{IMAGE_PAD}{VISION_END}{t}{IM_END}\n{IM_START}assistant\n"
              for t in rng.sample(texts, min(200, len(texts)))]
    backend = train_tokenizer(texts, vocab_size, SPECIAL_TOKENS, bos=None)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, eos_token=IM_END, pad_token=PAD, padding_side="left",
        model_max_length=max_position_embeddings, chat_template=CHAT_TEMPLATE,
    )
    ids = {t: backend.token_to_id(t) for t in SPECIAL_TOKENS}

    quarter = head_dim // 4  # M-RoPE: temporal, height and width sections of half the head dimension
    text = {
        "vocab_size": backend.get_vocab_size(), "hidden_size": text_hidden_size,
        "intermediate_size": 4 * text_hidden_size, "num_hidden_layers": text_layers,
        "num_attention_heads": num_attention_heads, "num_key_value_heads": num_attention_heads,
        "max_position_embeddings": max_position_embeddings, "initializer_range": init_std,
        "rope_scaling": {"type": "mrope", "mrope_section": [head_dim // 2 - 2 * quarter, quarter, quarter]},
        "bos_token_id": None, "eos_token_id": ids[IM_END], "pad_token_id": ids[PAD],
    }
    if variant == "qwen2_5_vl":
        vision = {"depth": vision_layers, "hidden_size": vision_hidden_size,
                  "intermediate_size": 2 * vision_hidden_size, "num_heads": num_attention_heads,
                  "out_hidden_size": text_hidden_size, "window_size": 56, "fullatt_block_indexes": [vision_layers - 1]}
        config_class, model_class = transformers.Qwen2_5_VLConfig, transformers.Qwen2_5_VLForConditionalGeneration
        processor_class = transformers.Qwen2_5_VLProcessor
    else:
        vision = {"depth": vision_layers, "embed_dim": vision_hidden_size, "hidden_size": text_hidden_size,
                  "num_heads": num_attention_heads, "mlp_ratio": 2}
        config_class, model_class = transformers.Qwen2VLConfig, transformers.Qwen2VLForConditionalGeneration
        processor_class = transformers.Qwen2VLProcessor
    vision.update(patch_size=14, spatial_merge_size=2, temporal_patch_size=2)
    config = config_class(
        text_config=text, vision_config=vision, image_token_id=ids[IMAGE_PAD], video_token_id=ids[VIDEO_PAD],
        vision_start_token_id=ids[VISION_START], vision_end_token_id=ids[VISION_END], tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = model_class(config).eval()
    model.generation_config = GenerationConfig(
        eos_token_id=ids[IM_END], pad_token_id=ids[PAD], do_sample=False, max_new_tokens=32
    )
    model.save_pretrained(out, safe_serialization=True)

    from transformers import Qwen2VLVideoProcessor

    processor = processor_class(
        image_processor=image_processor(min_pixels, max_pixels), tokenizer=tokenizer,
        video_processor=Qwen2VLVideoProcessor(), chat_template=CHAT_TEMPLATE,
    )
    processor.save_pretrained(out)
    (out / "pfmvg_tiny_qwen2vl.json").write_text(json.dumps({
        "builder": "pfmvg_plugin.models.tiny_qwen2vl.build_tiny_qwen2vl", "variant": variant,
        "min_pixels": min_pixels, "max_pixels": max_pixels, "vision_hidden_size": vision_hidden_size,
        "vision_layers": vision_layers, "text_hidden_size": text_hidden_size, "text_layers": text_layers,
        "vocab_size": backend.get_vocab_size(), "seed": seed, "init_std": init_std,
    }, indent=2) + "\n")
    return out
