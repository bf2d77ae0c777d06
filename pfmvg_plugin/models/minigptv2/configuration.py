"""Configuration of the MiniGPT-v2 architecture (EVA ViT-g/14 + 4-token grouping + Linear projector + LLaMA-2).

Two configs, written in the classic ``PretrainedConfig`` style (an explicit ``__init__``), which every
``transformers`` 5.x release loads and saves the same way:

- :class:`EvaVisionConfig` -- the frozen vision tower as MiniGPT-v2 builds it (``create_eva_vit_g``): patch 14, width
  1408, 39 blocks (EVA-CLIP-g has 40; the last one is not used), 16 heads of 88, MLP 6144 (``int(1408 * 4.3637)``),
  a class token and absolute position embeddings, ``qkv`` without bias plus separate ``q_bias``/``v_bias`` (no k
  bias), LayerNorm eps 1e-6, exact-erf GELU. ``ln_vision`` (a separate LayerNorm on the tower's output, eps 1e-5, in
  float32) belongs to the composite model.
- :class:`MiniGPTv2Config` -- ``vision_config`` + ``text_config`` (a ``LlamaConfig``) + the bridge: drop the class
  token, concatenate ``tokens_per_group`` (4) consecutive patch tokens into one (1024 x 1408 -> 256 x 5632), a
  trainable ``Linear(5632, 4096)`` (``llama_proj``). Image embeddings replace the ``image_token_index`` placeholders
  the processor puts where the prompt says ``<ImageHere>``.
"""

from __future__ import annotations

import contextlib
from typing import Any

from transformers import LlamaConfig, PretrainedConfig

#: ``int(1408 * 4.3637)``: the MLP width of EVA ViT-g/14 (the reference passes mlp_ratio=4.3637).
EVA_G_MLP = 6144


class EvaVisionConfig(PretrainedConfig):
    """The EVA ViT of MiniGPT-v2 / BLIP-2 (``eva_vit_g.pth`` layout)."""

    model_type = "pfmvg_eva_vit"

    def __init__(
        self,
        image_size: int = 448,
        patch_size: int = 14,
        num_channels: int = 3,
        hidden_size: int = 1408,
        num_hidden_layers: int = 39,
        num_attention_heads: int = 16,
        intermediate_size: int = EVA_G_MLP,
        layer_norm_eps: float = 1e-6,
        qkv_bias: bool = True,
        initializer_range: float = 0.02,
        **kwargs: Any,
    ) -> None:
        self.image_size = int(image_size)
        self.patch_size = int(patch_size)
        self.num_channels = int(num_channels)
        self.hidden_size = int(hidden_size)
        self.num_hidden_layers = int(num_hidden_layers)
        self.num_attention_heads = int(num_attention_heads)
        self.intermediate_size = int(intermediate_size)
        self.layer_norm_eps = float(layer_norm_eps)
        self.qkv_bias = bool(qkv_bias)
        self.initializer_range = float(initializer_range)
        super().__init__(**kwargs)
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size {self.image_size} is not a multiple of patch_size {self.patch_size}")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not divisible by {self.num_attention_heads} heads")

    @property
    def grid_size(self) -> int:
        return self.image_size // self.patch_size

    @property
    def num_patches(self) -> int:
        return self.grid_size ** 2


class MiniGPTv2Config(PretrainedConfig):
    """MiniGPT-v2: EVA ViT-g/14 at 448 px, 4 neighbouring tokens concatenated, Linear projector, LLaMA-2-chat."""

    model_type = "pfmvg_minigptv2"
    sub_configs = {"vision_config": EvaVisionConfig, "text_config": LlamaConfig}

    def __init__(
        self,
        vision_config: dict | EvaVisionConfig | None = None,
        text_config: dict | PretrainedConfig | None = None,
        tokens_per_group: int = 4,
        ln_vision_eps: float = 1e-5,
        projector_bias: bool = True,
        image_token_index: int = 0,
        image_placeholder: str = "<ImageHere>",
        tie_word_embeddings: bool = False,
        **kwargs: Any,
    ) -> None:
        if vision_config is None:
            vision_config = EvaVisionConfig()
        elif isinstance(vision_config, dict):
            vision_config = EvaVisionConfig(**{k: v for k, v in vision_config.items() if k != "model_type"})
        if text_config is None:
            text_config = LlamaConfig()
        elif isinstance(text_config, dict):
            text_config = LlamaConfig(**{k: v for k, v in text_config.items() if k != "model_type"})
        self.vision_config = vision_config
        self.text_config = text_config
        self.tokens_per_group = int(tokens_per_group)
        self.ln_vision_eps = float(ln_vision_eps)
        self.projector_bias = bool(projector_bias)
        self.image_token_index = int(image_token_index)
        self.image_placeholder = str(image_placeholder)
        super().__init__(tie_word_embeddings=tie_word_embeddings, **kwargs)
        if vision_config.num_patches % self.tokens_per_group:
            raise ValueError(f"{vision_config.num_patches} patches cannot be grouped by {self.tokens_per_group}")

    @property
    def num_image_tokens(self) -> int:
        """Language-model tokens per image (256 for 448 px / patch 14 / groups of 4)."""
        return self.vision_config.num_patches // self.tokens_per_group

    @property
    def projector_in_features(self) -> int:
        return self.vision_config.hidden_size * self.tokens_per_group


def llama2_7b_text_config(**overrides: Any) -> LlamaConfig:
    """``meta-llama/Llama-2-7b-chat-hf``'s ``config.json`` values."""
    values = dict(
        vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
        num_key_value_heads=32, hidden_act="silu", max_position_embeddings=4096, rms_norm_eps=1e-5,
        initializer_range=0.02, bos_token_id=1, eos_token_id=2, pad_token_id=None, tie_word_embeddings=False,
        rope_theta=10000.0, attention_bias=False,
    )
    values.update(overrides)
    return LlamaConfig(**values)


def minigptv2_7b_config(**overrides: Any) -> MiniGPTv2Config:
    """The real MiniGPT-v2 / PFMVG / PeFoMed configuration: EVA ViT-g/14 at 448 px + LLaMA-2-chat-7B."""
    values: dict[str, Any] = dict(
        vision_config=EvaVisionConfig(),
        text_config=llama2_7b_text_config(),
        tokens_per_group=4,
        image_token_index=0,  # <unk>: Llama-2's byte-fallback tokenizer never produces it from text
    )
    values.update(overrides)
    return MiniGPTv2Config(**values)


def _register() -> None:
    """Let ``AutoConfig`` (and so ``AutoTokenizer`` on our directories) know the two model types."""
    from transformers import AutoConfig

    for cls in (EvaVisionConfig, MiniGPTv2Config):
        with contextlib.suppress(ValueError):  # already registered (module reloaded)
            AutoConfig.register(cls.model_type, cls)


_register()
