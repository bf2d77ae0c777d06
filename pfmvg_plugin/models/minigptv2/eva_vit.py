"""EVA ViT-g/14 as MiniGPT-v2 runs it, with the parameter names of ``eva_vit_g.pth`` (LAVIS / BLIP-2 release).

Names (prefix-free, exactly as in the release file): ``cls_token`` (1, 1, C), ``pos_embed`` (1, 1 + N, C),
``patch_embed.proj.{weight,bias}`` (a stride-14 convolution), and per block ``blocks.{i}.norm1.*``,
``blocks.{i}.attn.qkv.weight`` (3C x C, no bias), ``blocks.{i}.attn.q_bias``, ``blocks.{i}.attn.v_bias``,
``blocks.{i}.attn.proj.*``, ``blocks.{i}.norm2.*``, ``blocks.{i}.mlp.fc1.*``, ``blocks.{i}.mlp.fc2.*``. The g
variant has no layer scale (``gamma_1``/``gamma_2``), no relative position bias and no final norm: the tower returns
the last block's output for all 1 + N tokens.

The block math: ``x + attn(norm1(x))`` then ``x + mlp(norm2(x))``; attention uses ``qkv = x W^T + [q_bias, 0,
v_bias]``, heads of ``C / heads``, scale ``head_dim ** -0.5``, softmax; MLP ``fc2(gelu(fc1(x)))`` with exact GELU.
The position embedding of the release file is for 224 px (16 x 16 + 1); :func:`interpolate_pos_embed` resizes the
grid part bicubically (``align_corners=False``, in float32) as the reference ``interpolate_pos_embed`` does.

Under ZeRO-3 every weight is used through its own module's ``forward`` (``qkv`` is called as a module and the bias
added after), so DeepSpeed gathers it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pfmvg_plugin.models.minigptv2.configuration import EvaVisionConfig


class EvaPatchEmbed(nn.Module):
    def __init__(self, config: EvaVisionConfig) -> None:
        super().__init__()
        self.image_size = config.image_size
        self.proj = nn.Conv2d(config.num_channels, config.hidden_size, kernel_size=config.patch_size,
                              stride=config.patch_size)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        h, w = pixel_values.shape[-2:]
        if (h, w) != (self.image_size, self.image_size):
            raise ValueError(f"EVA ViT expects {self.image_size}x{self.image_size} images, got {h}x{w}")
        return self.proj(pixel_values).flatten(2).transpose(1, 2)


class EvaAttention(nn.Module):
    def __init__(self, config: EvaVisionConfig) -> None:
        super().__init__()
        dim = config.hidden_size
        self.num_heads = config.num_attention_heads
        self.head_dim = dim // self.num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=False)
        if config.qkv_bias:
            self.q_bias = nn.Parameter(torch.zeros(dim))
            self.v_bias = nn.Parameter(torch.zeros(dim))
        else:
            self.q_bias = self.v_bias = None
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        qkv = self.qkv(x)
        if self.q_bias is not None:
            bias = torch.cat((self.q_bias, torch.zeros_like(self.v_bias), self.v_bias)).to(qkv.dtype)
            qkv = qkv + bias
        q, k, v = qkv.reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        out = F.scaled_dot_product_attention(q, k, v)  # scale head_dim ** -0.5, as the reference
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class EvaMlp(nn.Module):
    def __init__(self, config: EvaVisionConfig) -> None:
        super().__init__()
        self.fc1 = nn.Linear(config.hidden_size, config.intermediate_size)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(config.intermediate_size, config.hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class EvaBlock(nn.Module):
    def __init__(self, config: EvaVisionConfig) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.attn = EvaAttention(config)
        self.norm2 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = EvaMlp(config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class EvaVisionTransformer(nn.Module):
    """``(B, 3, S, S)`` pixels -> ``(B, 1 + (S / patch) ** 2, C)`` features (class token first), no final norm."""

    def __init__(self, config: EvaVisionConfig) -> None:
        super().__init__()
        self.config = config
        self.patch_embed = EvaPatchEmbed(config)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, config.hidden_size))
        self.pos_embed = nn.Parameter(torch.zeros(1, config.num_patches + 1, config.hidden_size))
        self.blocks = nn.ModuleList(EvaBlock(config) for _ in range(config.num_hidden_layers))
        self.gradient_checkpointing = False  # switched by PreTrainedModel.gradient_checkpointing_enable

    @property
    def num_features(self) -> int:
        return self.config.hidden_size

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(pixel_values)
        cls = self.cls_token.expand(x.shape[0], -1, -1).to(x.dtype)
        x = torch.cat((cls, x), dim=1) + self.pos_embed.to(x.dtype)
        checkpointing = self.gradient_checkpointing and self.training and torch.is_grad_enabled()
        for block in self.blocks:
            x = torch.utils.checkpoint.checkpoint(block, x, use_reentrant=False) if checkpointing else block(x)
        return x


def interpolate_pos_embed(pos_embed: torch.Tensor, num_patches: int, num_extra_tokens: int = 1) -> torch.Tensor:
    """Resize a ``(1, extra + g*g, C)`` position embedding to ``num_patches`` grid positions (bicubic, float32).

    The extra (class) token is kept as is; the grid is interpolated with ``align_corners=False``, exactly as the
    reference ``interpolate_pos_embed`` (224 px checkpoint, 448 px model: 16 x 16 -> 32 x 32). Returns float32.
    """
    pos = pos_embed.float()
    if pos.ndim == 2:
        pos = pos[None]
    dim = pos.shape[-1]
    old = int(round((pos.shape[-2] - num_extra_tokens) ** 0.5))
    new = int(round(num_patches ** 0.5))
    if old * old != pos.shape[-2] - num_extra_tokens or new * new != num_patches:
        raise ValueError(f"position embedding of {pos.shape[-2]} positions does not fit a square grid (+"
                         f"{num_extra_tokens}) or {num_patches} is not square")
    if old == new:
        return pos
    extra, grid = pos[:, :num_extra_tokens], pos[:, num_extra_tokens:]
    grid = grid.reshape(-1, old, old, dim).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=(new, new), mode="bicubic", align_corners=False)
    grid = grid.permute(0, 2, 3, 1).flatten(1, 2)
    return torch.cat((extra, grid), dim=1)
