"""MAViT: magnitude-aware linear attention (MALA) in stages 1-2, softmax attention in stages 3-4.

Paper: "Rectifying Magnitude Neglect in Linear Attention", Fan et al., ICCV 2025, arXiv:2507.00698. Official code:
https://github.com/qhfan/MALA (``classfication_release/model.py``; the models are named ``MALA_T/S/B/L`` there).

NCHW throughout, every projection a 1x1 conv. A four-conv stem (3x3, stride 4 in total, BN, GELU) and strided 3x3
conv + BN downsamples between stages feed blocks of ``x + dwconv3x3(x)`` (conditional position encoding), then
``x + gamma_1 * attn(LN(x))`` and ``x + gamma_2 * ffn(LN(x))`` (layer scale, LayerNorm eps 1e-6; the FFN is
1x1 conv, GELU, a residual depthwise 3x3 conv, 1x1 conv, ratio 3.5). The attention projects to ``q, k, v`` and a
linear gate ``o``; the output is ``proj((attn + lepe(v)) * o)`` with LePE a depthwise 5x5 conv on ``v``. Stages 1-2
run :func:`vitzoo.ops.magnitude_aware_linear_attention` on ``elu + 1`` features, stages 3-4 global softmax
attention; both use a 2-D rotary embedding computed for the live map size (applied after the feature map and left
out of MALA's magnitude term, as the official code does; MALA issue #5 questions that order, the released weights
follow it). The head is a 1x1 conv to 2048 (L: 2560) channels, BN and SiLU, then average pooling and a linear
classifier.

Changes from the official code: none to the numerics; any input size >= 32 already ran there. The rotary
frequencies are computed instead of stored (the official ``RoPE.angle`` buffers are dropped on load), the
classifier is a linear layer (the official 1x1 conv's weight is reshaped on load), and modules are
``stages.{i}.{downsample, blocks}`` with each downsample moved to the start of the next stage
(:func:`checkpoint_filter_fn` remaps).
"""

from __future__ import annotations

import re
from collections import OrderedDict

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import DropPath, LayerNorm2d
from timm.models import generate_default_cfgs, register_model

from ..hub import convert_checkpoint
from ..layers.rope import apply_rope, rope_2d_tables
from ..ops import magnitude_aware_linear_attention
from ._contract import DownsampleStage, HierarchicalBackbone, drop_path_rates
from ._factory import create_backbone, imagenet_cfg
from ._papers import PAPERS

__all__ = ["MAViT"]


class GatedAttention(nn.Module):
    """MALA's attention on an NCHW map: ``proj((attention(q, k, v) + lepe(v)) * o)``, linear or softmax core."""

    def __init__(self, dim: int, num_heads: int, linear: bool):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        self.linear = linear
        self.qkvo = nn.Conv2d(dim, 4 * dim, 1)
        self.lepe = nn.Conv2d(dim, dim, 5, padding=2, groups=dim)
        self.proj = nn.Conv2d(dim, dim, 1)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        return x.reshape(b, self.num_heads, self.head_dim, h * w).transpose(-1, -2)  # B, heads, N, d

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        q, k, v, o = self.qkvo(x).chunk(4, dim=1)
        lepe = self.lepe(v)
        q, k, v = self._heads(q), self._heads(k), self._heads(v)
        sin, cos = rope_2d_tables(h, w, self.head_dim, device=x.device, dtype=x.dtype)
        if self.linear:
            out = magnitude_aware_linear_attention(F.elu(q) + 1, F.elu(k) + 1, v, rope=(sin, cos), scale=self.scale)
        else:
            q, k = apply_rope(q, sin, cos), apply_rope(k, sin, cos)
            out = F.scaled_dot_product_attention(q, k, v, scale=self.scale)
        out = out.transpose(-1, -2).reshape(b, c, h, w)
        return self.proj((out + lepe) * o)


class ConvFFN(nn.Module):
    """1x1 conv -> GELU -> ``x + dwconv3x3(x)`` -> 1x1 conv."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Conv2d(dim, hidden, 1)
        self.dwconv = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden)
        self.fc2 = nn.Conv2d(hidden, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.gelu(self.fc1(x))
        return self.fc2(x + self.dwconv(x))


class MAViTBlock(nn.Module):
    def __init__(self, dim: int, num_heads: int, linear: bool, mlp_ratio: float, layer_scale: float, drop_path: float):
        super().__init__()
        self.pos = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        self.norm1 = LayerNorm2d(dim, eps=1e-6)
        self.attn = GatedAttention(dim, num_heads, linear)
        self.norm2 = LayerNorm2d(dim, eps=1e-6)
        self.ffn = ConvFFN(dim, int(mlp_ratio * dim))
        self.gamma_1 = nn.Parameter(torch.full((1, dim, 1, 1), float(layer_scale)))
        self.gamma_2 = nn.Parameter(torch.full((1, dim, 1, 1), float(layer_scale)))
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.pos(x)
        x = x + self.drop_path(self.gamma_1 * self.attn(self.norm1(x)))
        return x + self.drop_path(self.gamma_2 * self.ffn(self.norm2(x)))


def _conv_bn(in_chs: int, out_chs: int, stride: int) -> list[nn.Module]:
    return [nn.Conv2d(in_chs, out_chs, 3, stride, 1), nn.BatchNorm2d(out_chs)]


class MAViT(HierarchicalBackbone):
    """MAViT (MALA) with the timm model contract.

    Args:
        embed_dims / depths / num_heads: per stage.
        linear_stages: stages that use MALA (the others use softmax attention).
        layer_scales: initial layer-scale value per stage.
        head_chs: width of the 1x1 conv before pooling.
    """

    def __init__(
        self,
        embed_dims: tuple[int, ...] = (64, 128, 256, 512),
        depths: tuple[int, ...] = (2, 2, 6, 2),
        num_heads: tuple[int, ...] = (1, 2, 4, 8),
        mlp_ratio: float = 3.5,
        linear_stages: tuple[int, ...] = (0, 1),
        layer_scales: tuple[float, ...] = (1.0, 1.0, 1.0, 1.0),
        head_chs: int = 2048,
        in_chans: int = 3,
        num_classes: int = 1000,
        global_pool: str = "avg",
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
    ):
        super().__init__(num_classes, in_chans, global_pool, drop_rate)
        half = embed_dims[0] // 2
        act = nn.GELU
        self.stem = nn.Sequential(
            *_conv_bn(in_chans, half, 2), act(), *_conv_bn(half, half, 1), act(), *_conv_bn(half, half, 1), act(),
            *_conv_bn(half, embed_dims[0], 2),
        )  # fmt: skip
        dpr = drop_path_rates(drop_path_rate, depths)
        stages, self.feature_info = [], []
        for i, (dim, depth) in enumerate(zip(embed_dims, depths)):
            downsample = nn.Identity() if i == 0 else nn.Sequential(
                OrderedDict(reduction=nn.Conv2d(embed_dims[i - 1], dim, 3, 2, 1), norm=nn.BatchNorm2d(dim))
            )  # fmt: skip
            linear = i in linear_stages
            blocks = [
                MAViTBlock(dim, num_heads[i], linear, mlp_ratio, layer_scales[i], dpr[i][j]) for j in range(depth)
            ]
            stages.append(DownsampleStage(downsample, blocks))
            self.feature_info.append(dict(num_chs=dim, reduction=4 * 2**i, module=f"stages.{i}"))
        self.stages = nn.Sequential(*stages)
        # the 1x1 "projection head" maps the last stage to the pooled features, like HaloNet's final conv
        self.norm = nn.Sequential(
            OrderedDict(proj=nn.Conv2d(embed_dims[-1], head_chs, 1), norm=nn.BatchNorm2d(head_chs), act=nn.SiLU())
        )
        self.build_head(head_chs)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        """As the official code: truncated-normal (std 0.02) conv and linear weights, zero biases."""
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def _official_key(key: str) -> str:
    key = re.sub(r"^patch_embed\.proj\.", "stem.", key)
    key = re.sub(r"^layers\.(\d+)\.blocks\.", r"stages.\1.blocks.", key)
    key = re.sub(r"^layers\.(\d+)\.downsample\.", lambda m: f"stages.{int(m.group(1)) + 1}.downsample.", key)
    key = re.sub(r"\.norm([12])\.norm\.", r".norm\1.", key)  # the official LayerNorm2d wraps an nn.LayerNorm
    return re.sub(r"^(proj|norm)\.", r"norm.\1.", key)


def checkpoint_filter_fn(state_dict: dict, model: MAViT) -> dict[str, torch.Tensor]:
    """Map an official MALA checkpoint onto this model: drop the stored rotary frequencies (recomputed), move each
    downsample to the next stage, turn the 1x1-conv classifier into a linear one.

    Checkpoints already in vitzoo's layout pass through unchanged; a mismatch raises
    :class:`vitzoo.hub.CheckpointError` listing missing, unexpected and mis-shaped keys.
    """
    return convert_checkpoint(state_dict, model, ("patch_embed.",), _official_item)


def _official_item(key: str, value: torch.Tensor) -> tuple[str, torch.Tensor] | None:
    if key.endswith(".RoPE.angle"):
        return None
    if key == "head.weight" and value.dim() == 4:
        value = value.flatten(1)  # 1x1 conv classifier -> linear
    return _official_key(key), value


def _create_mala(variant: str, pretrained: bool = False, **kwargs) -> MAViT:
    return create_backbone(MAViT, variant, pretrained, checkpoint_filter_fn, **kwargs)


def _cfg(**kwargs) -> dict:
    return imagenet_cfg(first_conv="stem.0", **PAPERS["mala"].cfg_fields(), **kwargs)


# the official README points to a Hub repo without naming the file of each variant, so no cfg carries a url
_HUB_NOTE = (
    "Official weights: https://huggingface.co/aldjalkdf/MAViT (a Hugging Face repo that does not name each "
    "variant's file). Download the variant's checkpoint.",
)
default_cfgs = generate_default_cfgs({f"vitzoo_mala_{s}": _cfg(notes=_HUB_NOTE) for s in "tsbl"})


@register_model
def vitzoo_mala_t(pretrained: bool = False, **kwargs) -> MAViT:
    model_args = dict(embed_dims=(64, 128, 256, 512), depths=(2, 2, 6, 2), num_heads=(1, 2, 4, 8))
    return _create_mala("vitzoo_mala_t", pretrained, **dict(model_args, **kwargs))


@register_model
def vitzoo_mala_s(pretrained: bool = False, **kwargs) -> MAViT:
    model_args = dict(embed_dims=(64, 128, 320, 512), depths=(3, 5, 9, 3), num_heads=(1, 2, 5, 8))
    return _create_mala("vitzoo_mala_s", pretrained, **dict(model_args, **kwargs))


@register_model
def vitzoo_mala_b(pretrained: bool = False, **kwargs) -> MAViT:
    model_args = dict(
        embed_dims=(96, 192, 384, 512), depths=(4, 6, 12, 6), num_heads=(1, 2, 6, 8), layer_scales=(1, 1, 1e-6, 1e-6)
    )
    return _create_mala("vitzoo_mala_b", pretrained, **dict(model_args, **kwargs))


@register_model
def vitzoo_mala_l(pretrained: bool = False, **kwargs) -> MAViT:
    model_args = dict(
        embed_dims=(96, 192, 448, 640),
        depths=(4, 7, 19, 8),
        num_heads=(1, 2, 7, 10),
        layer_scales=(1e-6,) * 4,
        head_chs=2560,
    )
    return _create_mala("vitzoo_mala_l", pretrained, **dict(model_args, **kwargs))
