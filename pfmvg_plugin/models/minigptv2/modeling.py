"""MiniGPT-v2 as a ``transformers`` model: ``save_pretrained`` / ``from_pretrained`` (safetensors), ``generate``, PEFT,
DeepSpeed ZeRO-2/3 and gradient checkpointing.

Modules (and so state-dict names)::

    vision_model.*     EVA ViT-g/14 with eva_vit_g.pth's names (cls_token, pos_embed, patch_embed.proj, blocks.N...)
    ln_vision.*        LayerNorm on the tower's output (eps 1e-5, computed in float32 as the reference does)
    llama_proj.*       Linear(4 * 1408 -> 4096): the trainable bridge
    language_model.*   transformers' LlamaForCausalLM (language_model.model.layers.N.self_attn.q_proj, ...)

An image becomes ``config.num_image_tokens`` (256) language-model embeddings: the tower's output, ``ln_vision``, the
class token dropped, every 4 consecutive patch tokens concatenated (``view(bs, pn / 4, hs * 4)``: tokens 4k..4k+3 of
the row-major 32 x 32 grid form embedding k), ``llama_proj``. They replace, in order, the positions of
``input_ids`` equal to ``config.image_token_index`` (the processor puts ``num_image_tokens`` of them where the prompt
says ``<ImageHere>``). The vision tower and ``ln_vision`` run without autograd while none of their weights trains.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoModelForCausalLM, GenerationMixin, PreTrainedModel
from transformers.modeling_outputs import CausalLMOutputWithPast

from pfmvg_plugin.models.minigptv2.configuration import MiniGPTv2Config
from pfmvg_plugin.models.minigptv2.eva_vit import EvaAttention, EvaBlock, EvaMlp, EvaPatchEmbed, EvaVisionTransformer


class Float32LayerNorm(nn.LayerNorm):
    """LayerNorm computed in float32 and cast back (MiniGPT-v2's ``ln_vision``)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.weight.float() if self.weight is not None else None
        bias = self.bias.float() if self.bias is not None else None
        return F.layer_norm(x.float(), self.normalized_shape, weight, bias, self.eps).to(x.dtype)


def _fresh(p) -> bool:
    """A parameter that ``from_pretrained`` did not load (so it may be initialised)."""
    return p is not None and not getattr(p, "_is_hf_initialized", False)


class MiniGPTv2PreTrainedModel(PreTrainedModel):
    config_class = MiniGPTv2Config
    base_model_prefix = "minigptv2"
    main_input_name = "input_ids"
    input_modalities = ("image", "text")
    supports_gradient_checkpointing = True
    _no_split_modules = ["EvaBlock", "LlamaDecoderLayer"]
    _skip_keys_device_placement = ["past_key_values"]
    _supports_flash_attn = True
    _supports_sdpa = True
    _supports_flex_attn = True
    _supports_attention_backend = True

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        std = self.config.vision_config.initializer_range
        if isinstance(module, EvaVisionTransformer):
            for p in (module.pos_embed, module.cls_token):
                if _fresh(p):
                    nn.init.trunc_normal_(p, std=std)
        elif isinstance(module, (EvaAttention, EvaMlp, EvaPatchEmbed)):
            layer = getattr(module, "layer_id", 0)
            for child in module.children():
                if isinstance(child, (nn.Linear, nn.Conv2d)):
                    if _fresh(child.weight):
                        nn.init.trunc_normal_(child.weight, std=std)
                        if layer and child in (getattr(module, "proj", None), getattr(module, "fc2", None)):
                            child.weight.div_((2.0 * layer) ** 0.5)  # the reference's fix_init_weight
                    if child.bias is not None and _fresh(child.bias):
                        nn.init.zeros_(child.bias)
            if isinstance(module, EvaAttention) and module.q_bias is not None:
                for p in (module.q_bias, module.v_bias):
                    if _fresh(p):
                        nn.init.zeros_(p)
        elif isinstance(module, nn.LayerNorm):
            if _fresh(module.weight):
                nn.init.ones_(module.weight)
            if module.bias is not None and _fresh(module.bias):
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Linear):
            if _fresh(module.weight):
                nn.init.normal_(module.weight, std=self.config.text_config.initializer_range)
            if module.bias is not None and _fresh(module.bias):
                nn.init.zeros_(module.bias)
        elif not isinstance(module, EvaBlock):
            super()._init_weights(module)


class MiniGPTv2ForConditionalGeneration(MiniGPTv2PreTrainedModel, GenerationMixin):
    """EVA ViT-g/14 -> ln_vision -> drop CLS -> group 4 tokens -> llama_proj -> LlamaForCausalLM."""

    def __init__(self, config: MiniGPTv2Config) -> None:
        super().__init__(config)
        self.vision_model = EvaVisionTransformer(config.vision_config)
        for layer, block in enumerate(self.vision_model.blocks, start=1):
            block.attn.layer_id = block.mlp.layer_id = layer
        self.ln_vision = Float32LayerNorm(config.vision_config.hidden_size, eps=config.ln_vision_eps)
        self.llama_proj = nn.Linear(config.projector_in_features, config.text_config.hidden_size,
                                    bias=config.projector_bias)
        self.language_model = AutoModelForCausalLM.from_config(config.text_config)
        self.post_init()

    # ---- plumbing transformers / PEFT expect --------------------------------------------------------------------
    def get_input_embeddings(self) -> nn.Module:
        return self.language_model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.language_model.set_input_embeddings(value)

    def get_output_embeddings(self) -> nn.Module:
        return self.language_model.get_output_embeddings()

    def set_output_embeddings(self, value: nn.Module) -> None:
        self.language_model.set_output_embeddings(value)

    def get_decoder(self):
        return self.language_model.get_decoder()

    @property
    def vision_trainable(self) -> bool:
        return any(p.requires_grad for p in self.vision_model.parameters()) or any(
            p.requires_grad for p in self.ln_vision.parameters())

    # ---- images -----------------------------------------------------------------------------------------------
    def get_vision_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """``(B, 3, S, S)`` -> ``ln_vision(EVA(pixels))``, ``(B, 1 + N, C)`` (class token first)."""
        if pixel_values.ndim > 4:
            pixel_values = pixel_values.reshape(-1, *pixel_values.shape[-3:])
        dtype = self.vision_model.patch_embed.proj.weight.dtype
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.vision_trainable):
            return self.ln_vision(self.vision_model(pixel_values.to(dtype)))

    def group_tokens(self, features: torch.Tensor) -> torch.Tensor:
        """Drop the class token and concatenate ``tokens_per_group`` consecutive tokens: ``(B, 1 + N, C)`` ->
        ``(B, N / g, g * C)`` (the reference's ``view(bs, int(pn / 4), int(hs * 4))``)."""
        features = features[:, 1:, :]
        bs, pn, hs = features.shape
        g = self.config.tokens_per_group
        return features.reshape(bs, pn // g, hs * g)

    def get_image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """``(B, 3, S, S)`` pixels -> ``(B, num_image_tokens, hidden)`` language-model embeddings."""
        grouped = self.group_tokens(self.get_vision_features(pixel_values))
        return self.llama_proj(grouped.to(self.llama_proj.weight.dtype))

    def embed_inputs(self, input_ids: torch.LongTensor, pixel_values: torch.Tensor | None = None,
                     inputs_embeds: torch.Tensor | None = None) -> torch.Tensor:
        """Token embeddings with the image embeddings spliced in at the ``image_token_index`` placeholders.

        Use the result as ``inputs_embeds`` of ``forward`` or ``generate`` (the way the reference generates).
        """
        is_image = input_ids == self.config.image_token_index
        if inputs_embeds is None:
            inputs_embeds = self.get_input_embeddings()(input_ids.masked_fill(is_image, 0))
        if pixel_values is None:
            return inputs_embeds
        features = self.get_image_features(pixel_values)
        n_slots, n_feats = int(is_image.sum()), features.shape[0] * features.shape[1]
        if n_slots != n_feats:
            raise ValueError(f"the input has {n_slots} image placeholder tokens but {features.shape[0]} image(s) give "
                             f"{n_feats} embeddings ({features.shape[1]} each): put exactly one "
                             f"{self.config.image_placeholder} per image in the prompt (the processor expands it)")
        mask = is_image.unsqueeze(-1).expand_as(inputs_embeds)
        return inputs_embeds.masked_scatter(mask, features.to(inputs_embeds.dtype))

    # ---- forward / generate -----------------------------------------------------------------------------------
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        past_key_values=None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        **kwargs,
    ) -> CausalLMOutputWithPast:
        if input_ids is None and inputs_embeds is None:
            raise ValueError("pass input_ids (with image placeholders) or inputs_embeds")
        if pixel_values is not None and input_ids is None:
            raise ValueError("pixel_values need input_ids to show where the image embeddings go")
        if input_ids is not None and (inputs_embeds is None or pixel_values is not None):
            prefill = past_key_values is None or _cache_length(past_key_values) == 0
            if pixel_values is None and prefill and bool((input_ids == self.config.image_token_index).any()):
                raise ValueError("the input has image placeholder tokens but no pixel_values")
            if pixel_values is not None or inputs_embeds is None:
                inputs_embeds = self.embed_inputs(input_ids, pixel_values, inputs_embeds)
        if use_cache is None and labels is not None:
            use_cache = False  # a loss computation never needs the KV cache
        return self.language_model(
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=past_key_values,
            labels=labels,
            use_cache=use_cache,
            logits_to_keep=logits_to_keep,
            **kwargs,
        )

    def prepare_inputs_for_generation(self, input_ids, past_key_values=None, attention_mask=None, inputs_embeds=None,
                                      pixel_values=None, **kwargs):
        """Images only in the prefill step (the decode steps see the cache), on every transformers 5.x release."""
        model_inputs = super().prepare_inputs_for_generation(
            input_ids, past_key_values=past_key_values, attention_mask=attention_mask, inputs_embeds=inputs_embeds,
            **kwargs)
        model_inputs.pop("pixel_values", None)
        if pixel_values is not None and (past_key_values is None or _cache_length(past_key_values) == 0):
            model_inputs["pixel_values"] = pixel_values
        return model_inputs


def _cache_length(past_key_values) -> int:
    if hasattr(past_key_values, "get_seq_length"):
        return int(past_key_values.get_seq_length())
    try:
        return int(past_key_values[0][0].shape[-2])
    except (TypeError, IndexError, AttributeError):
        return 0


def _register() -> None:
    """``AutoModelForImageTextToText`` / ``AutoModelForCausalLM``-free loading of our directories once imported."""
    from transformers import AutoModelForImageTextToText

    with contextlib.suppress(ValueError):  # already registered (module reloaded)
        AutoModelForImageTextToText.register(MiniGPTv2Config, MiniGPTv2ForConditionalGeneration)


_register()
