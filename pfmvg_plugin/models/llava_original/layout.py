"""The original LLaVA / LLaVA-Med v1.5 checkpoint format, and its mapping to transformers'
``LlavaForConditionalGeneration``.

Facts (``shared/LLAVA_ORIGINAL.md``): ``LlavaLlamaForCausalLM`` (LLaVA-1.5, ``model_type "llava"``) and
``LlavaMistralForCausalLM`` (LLaVA-Med v1.5, ``model_type "llava_mistral"``) keep the language model's own keys
(``model.layers.N.*``, ``model.embed_tokens``, ``model.norm``, ``lm_head``), the projector as
``model.mm_projector.{0,2}`` (Linear, GELU, Linear) and, optionally, CLIP under
``model.vision_tower.vision_tower.vision_model.*``. transformers (4.52+) lays the same model out as
``model.language_model.*``, ``model.multi_modal_projector.linear_{1,2}.*``, ``model.vision_tower.vision_model.*`` and
``lm_head.weight``. Only the v1.5 recipe is accepted (``mlp2x_gelu``, layer -2, ``patch`` features, flat patches, no
``<im_start>`` tokens): anything else is refused with the field that differs.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

#: architectures -> (language-model family, the checkpoint's own conversation template)
ARCHITECTURES = {
    "LlavaLlamaForCausalLM": ("llama", "vicuna_v1"),
    "LlavaMistralForCausalLM": ("mistral", "mistral_instruct"),
}
MODEL_TYPES = {"llava": "LlavaLlamaForCausalLM", "llava_llama": "LlavaLlamaForCausalLM",
               "llava_mistral": "LlavaMistralForCausalLM"}

#: The v1.5 values a converted model reproduces: field -> accepted values (None: absent is fine).
REQUIRED_MM = {
    "mm_projector_type": ("mlp2x_gelu",),
    "mm_vision_select_layer": (-2,),
    "mm_vision_select_feature": ("patch", None),
    "mm_use_im_start_end": (False, None),
    "mm_use_im_patch_token": (False, None),
    "mm_patch_merge_type": ("flat", None),
    "image_aspect_ratio": ("pad", None),  # anything else is CLIP's resize + centre crop: not what we write
}

#: Where export and the original loader expect the checkpoint's own files (copied by ``convert``).
ORIGINAL_DIR = "llava_original"
TOKENIZER_FILES = ("tokenizer.model", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.json",
                   "added_tokens.json", "generation_config.json")

VICUNA_SYSTEM = ("A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, "
                 "detailed, and polite answers to the user's questions.")

# The conversation formats as chat templates: ``{system} USER: <image>\n{q} ASSISTANT: {a}</s>`` (vicuna_v1, sep " ",
# sep2 "</s>") and ``[INST] <image>\n{q} [/INST] {a} </s>`` (mistral_instruct, llama_2 style, empty system). The image
# goes first, then a newline, as the original's ``DEFAULT_IMAGE_TOKEN + "\n" + question``.
_CONTENT = ("{%- if message['content'] is string -%}{{- message['content'] -}}{%- else -%}"
            "{%- for item in message['content'] if item['type'] == 'image' -%}{{- '<image>\\n' -}}{%- endfor -%}"
            "{%- for item in message['content'] if item['type'] == 'text' -%}{{- item['text'] -}}{%- endfor -%}"
            "{%- endif -%}")
CHAT_TEMPLATES = {
    "vicuna_v1": (
        "{{- '" + VICUNA_SYSTEM.replace("'", "\\'") + " ' -}}"
        "{%- for message in messages -%}"
        "{%- if message['role'] == 'user' -%}{{- 'USER: ' -}}" + _CONTENT + "{{- ' ' -}}"
        "{%- elif message['role'] == 'assistant' -%}{{- 'ASSISTANT: ' -}}" + _CONTENT + "{{- '</s>' -}}"
        "{%- endif -%}{%- endfor -%}"
        "{%- if add_generation_prompt -%}{{- 'ASSISTANT:' -}}{%- endif -%}"
    ),
    "mistral_instruct": (
        "{%- for message in messages -%}"
        "{%- if message['role'] == 'user' -%}{{- '[INST] ' -}}" + _CONTENT + "{{- ' [/INST]' -}}"
        "{%- elif message['role'] == 'assistant' -%}{{- ' ' -}}" + _CONTENT + "{{- ' </s>' -}}"
        "{%- endif -%}{%- endfor -%}"
    ),
}

_TEXT_FIELDS = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                "num_key_value_heads", "hidden_act", "max_position_embeddings", "rms_norm_eps", "rope_theta",
                "initializer_range", "tie_word_embeddings", "bos_token_id", "eos_token_id", "sliding_window",
                "attention_bias", "mlp_bias", "head_dim", "rope_scaling", "attention_dropout")

_DROPPED = re.compile(r"(^|\.)rotary_emb\.inv_freq$|^model\.image_newline$")


@dataclass(frozen=True)
class OriginalConfig:
    """The parts of an original ``config.json`` a conversion needs."""

    raw: dict
    architecture: str
    text_model_type: str  # "llama" | "mistral"
    template: str  # "vicuna_v1" | "mistral_instruct"
    vision_tower: str  # e.g. "openai/clip-vit-large-patch14-336"
    mm_hidden_size: int

    def text_config(self) -> dict:
        """The language model's config fields, as transformers' ``LlamaConfig`` / ``MistralConfig`` take them."""
        out = {k: self.raw[k] for k in _TEXT_FIELDS if k in self.raw}
        out["model_type"] = self.text_model_type
        return out


def read_original_config(ckpt: Path) -> OriginalConfig:
    """Read and check ``ckpt/config.json`` (read as JSON: ``AutoConfig`` misreads ``model_type "llava"``)."""
    path = Path(ckpt) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{ckpt} has no config.json: pass the folder of an original LLaVA / LLaVA-Med "
                                "checkpoint (e.g. liuhaotian/llava-v1.5-7b, microsoft/llava-med-v1.5-mistral-7b)")
    raw = json.loads(path.read_text())
    if "text_config" in raw:  # transformers' own LLaVA (model_type "llava" too)
        raise ValueError(f"{path} is already a transformers LLaVA checkpoint (it has a text_config): load it "
                         "directly, there is nothing to convert")
    archs = raw.get("architectures") or []
    arch = next((a for a in archs if a in ARCHITECTURES), None) or MODEL_TYPES.get(raw.get("model_type", ""))
    if arch is None:
        raise ValueError(f"{path}: architectures {archs} / model_type {raw.get('model_type')!r} is not an original "
                         f"LLaVA checkpoint ({', '.join(ARCHITECTURES)})")
    for key, allowed in REQUIRED_MM.items():
        if raw.get(key) not in allowed:
            shown = [a for a in allowed if a is not None]
            raise ValueError(f"{path}: {key} = {raw.get(key)!r}; only the LLaVA-1.5 recipe ({key} = {shown[0]!r}) "
                             "is supported")
    text_type, template = ARCHITECTURES[arch]
    return OriginalConfig(raw=raw, architecture=arch, text_model_type=text_type, template=template,
                          vision_tower=str(raw.get("mm_vision_tower", "openai/clip-vit-large-patch14-336")),
                          mm_hidden_size=int(raw.get("mm_hidden_size", 1024)))


def unconverted_message(path: str | Path) -> str | None:
    """Why ``path`` cannot be loaded as it is, when it is an original LLaVA / LLaVA-Med checkpoint (None: it is not)."""
    try:
        raw = json.loads((Path(path) / "config.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(raw, dict) or "text_config" in raw:
        return None
    archs = raw.get("architectures") or []
    if not (set(archs) & set(ARCHITECTURES) or raw.get("model_type") in ("llava_llama", "llava_mistral")
            or "mm_vision_tower" in raw):
        return None
    return (f"{path} is an original LLaVA / LLaVA-Med checkpoint ({', '.join(archs) or raw.get('model_type')}), "
            "which transformers cannot load as it is. Convert it once: pfmvg convert llava --ckpt "
            f"{path} --out {Path(path).name}-hf  (add --vision-tower CLIP_DIR if it carries no vision weights)")


def to_hf_key(key: str) -> str | None:
    """An original key -> its transformers ``LlavaForConditionalGeneration`` name (None: not carried over)."""
    if _DROPPED.search(key):
        return None
    if key.startswith("model.vision_tower.vision_tower."):
        return disk_name("model.vision_tower." + key[len("model.vision_tower.vision_tower."):])
    m = re.match(r"^model\.mm_projector\.([02])\.(weight|bias)$", key)
    if m:
        return f"model.multi_modal_projector.linear_{1 if m[1] == '0' else 2}.{m[2]}"
    if key.startswith("model.mm_projector."):
        raise ValueError(f"unexpected projector tensor {key} (expected mm_projector.0 / .2 of mlp2x_gelu)")
    if key == "lm_head.weight":
        return key
    if key.startswith("model."):
        return "model.language_model." + key[len("model."):]
    return key  # unknown: the caller reports it (its name will not be expected)


def to_original_key(key: str) -> str:
    """A transformers LLaVA name -> the original checkpoint's key (the inverse of :func:`to_hf_key`)."""
    if key.startswith("model.vision_tower."):
        return "model.vision_tower.vision_tower." + key[len("model.vision_tower."):]
    m = re.match(r"^model\.multi_modal_projector\.linear_([12])\.(weight|bias)$", key)
    if m:
        return f"model.mm_projector.{0 if m[1] == '1' else 2}.{m[2]}"
    if key.startswith("model.language_model."):
        return "model." + key[len("model.language_model."):]
    return key


_CLIP_VISION_PARTS = ("embeddings.", "pre_layrnorm.", "encoder.", "post_layernorm.")


def vision_key_from_clip(key: str) -> str | None:
    """A key of a CLIP checkpoint (``CLIPModel`` / ``CLIPVisionModel``: ``vision_model.*``; transformers 5 saves a
    ``CLIPVisionModel`` without that prefix) -> our vision tower name. None: not part of LLaVA (text tower, ...)."""
    if key.startswith("vision_model."):
        return "model.vision_tower." + key
    if key.startswith(_CLIP_VISION_PARTS):
        return "model.vision_tower.vision_model." + key
    return None


def disk_name(name: str) -> str:
    """A ``LlavaForConditionalGeneration`` state-dict name as checkpoints store it: the vision tower under
    ``model.vision_tower.vision_model.`` (transformers 5 drops ``vision_model.`` in memory, and maps it on load and
    save; 4.x keeps it), so one file loads in both."""
    if name.startswith("model.vision_tower.") and not name.startswith("model.vision_tower.vision_model."):
        return "model.vision_tower.vision_model." + name[len("model.vision_tower."):]
    return name
