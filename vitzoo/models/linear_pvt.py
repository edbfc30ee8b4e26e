"""Pyramid Vision Transformer (v1) hosting Agent, InLine or FLatten attention: Agent-PVT, InLine-PVT, FLatten-PVT.

Papers: Agent Attention (Han et al., ECCV 2024, arXiv:2312.08874), InLine (Han et al., NeurIPS 2024,
arXiv:2412.06590), FLatten Transformer (Han et al., ICCV 2023, arXiv:2308.00442); official code
https://github.com/LeapLabTHU/{Agent-Attention,InLine,FLatten-Transformer} (MIT). Host: PVT (Wang et al., ICCV 2021,
arXiv:2102.12122), in the class-token-free form these repositories use.

Four stages, each a patch embedding (a 4x4, then 2x2, stride-equal conv and LayerNorm), a learned absolute position
embedding sized for ``img_size`` (resized bilinearly to other maps in the forward pass and bicubically when a
checkpoint moves to another ``img_size``, as the official code does) and pre-norm blocks (LayerNorm eps 1e-6, MLP
ratios 8, 8, 4, 4). Every block uses the new mixer over the whole stage map with ``q`` and ``kv`` projections (the
released configs set the spatial-reduction ratio of these blocks to 1, so PVT's reduction conv never appears). The
classifier averages the last stage's tokens without a final norm (FLatten-PVT's official model builds a final
LayerNorm but never applies it; the converter drops it). Changes: an input that the patch sizes do not divide is
zero-padded at the bottom/right instead of cropped, so any input size >= 32 runs.
"""

from __future__ import annotations

import re

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import register_notrace_function, trunc_normal_
from timm.models import register_model

from ..hub import convert_checkpoint
from ..ops import accumulation_dtype, known_true
from ._contract import DownsampleStage, HierarchicalBackbone, drop_path_rates, stage_sizes
from ._factory import create_backbone
from ._linear_mixers import (
    GlobalMixerBlock,
    expand_attn_types,
    fit_resolution_tables,
    linear_cfg,
    linear_default_cfgs,
    make_mixer,
    mixer_no_weight_decay,
)

__all__ = ["LinearPVT"]


@register_notrace_function  # torch.fx cannot branch on the map size; it records the resize as one call
def resize_pos_embed(
    pos_embed: torch.Tensor, base_size: tuple[int, int], size: tuple[int, int], mode: str = "bilinear"
) -> torch.Tensor:
    """Resize a ``[1, h0 * w0, C]`` position embedding to ``size`` (``align_corners=False``).

    Bilinear in the forward pass, bicubic when a checkpoint is moved to another ``img_size``: both as the official
    code does (its forward and its loader differ).
    """
    if known_true(base_size[0] == size[0]) and known_true(base_size[1] == size[1]):  # else identity at equal size
        return pos_embed
    grid = pos_embed.reshape(1, base_size[0], base_size[1], -1).permute(0, 3, 1, 2)  # 1, C, h0, w0
    grid = F.interpolate(grid.to(accumulation_dtype(pos_embed.dtype)), size=size, mode=mode, align_corners=False)
    grid = grid.to(pos_embed.dtype)
    return grid.flatten(2).transpose(1, 2)  # 1, h*w, C


class PVTPatchEmbed(nn.Module):
    """Stride-equal conv patch embedding, LayerNorm and position embedding; NCHW in, ``[B, H, W, C]`` out."""

    def __init__(self, in_chs: int, dim: int, patch_size: int, base_size: tuple[int, int]):
        super().__init__()
        self.patch_size, self.base_size = patch_size, tuple(base_size)
        self.proj = nn.Conv2d(in_chs, dim, patch_size, stride=patch_size)
        self.norm = nn.LayerNorm(dim)
        self.pos_embed = nn.Parameter(torch.zeros(1, base_size[0] * base_size[1], dim))
        trunc_normal_(self.pos_embed, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.patch_size
        x = F.pad(x, (0, -x.shape[3] % p, 0, -x.shape[2] % p))
        x = self.norm(self.proj(x).permute(0, 2, 3, 1))  # B, H, W, C
        b, h, w, c = x.shape
        return x + resize_pos_embed(self.pos_embed, self.base_size, (h, w)).view(1, h, w, c)


class SpatialReductionAttention(nn.Module):
    """PVT's softmax attention: keys and values from the map downsampled ``sr_ratio`` times by a strided conv.

    Tokens ``[B, H*W, C]`` in and out; the signature matches the global mixers so one block type hosts both.
    """

    def __init__(self, dim: int, num_heads: int, sr_ratio: int = 1, qkv_bias: bool = True):
        super().__init__()
        self.num_heads, self.sr_ratio = num_heads, sr_ratio
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv = nn.Linear(dim, 2 * dim, bias=qkv_bias)
        if sr_ratio > 1:
            self.sr = nn.Conv2d(dim, dim, sr_ratio, stride=sr_ratio)
            self.norm = nn.LayerNorm(dim)
        else:  # None rather than absent, so that TorchScript drops the reduction branch
            self.sr = self.norm = None
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, size: tuple[int, int], context: torch.Tensor | None = None) -> torch.Tensor:
        b, n, c = x.shape
        heads, d = self.num_heads, c // self.num_heads
        q = self.q(x).view(b, n, heads, d).transpose(1, 2)  # B, heads, N, D
        if self.sr is not None and self.norm is not None:
            x = self.sr(x.transpose(1, 2).reshape(b, c, size[0], size[1])).flatten(2).transpose(1, 2)  # B, N / sr^2, C
            x = self.norm(x)
        k, v = self.kv(x).view(b, -1, 2, heads, d).permute(2, 0, 3, 1, 4).unbind(0)  # each B, heads, M, D
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class LinearPVT(HierarchicalBackbone):
    """PVT with a global linear-cost mixer in the blocks ``attn_type`` selects (all, in the released models).

    ``attn_type`` letters B/S keep PVT's spatial-reduction softmax attention (``sr_ratios``): ``"BBBB"`` is PVT
    itself, the softmax counterpart the benchmarks compare against.
    """

    def __init__(
        self,
        mixer: str = "agent",
        attn_type: str = "AAAA",
        agent_num: tuple[int, ...] = (9, 16, 49, 49),
        img_size: int | tuple[int, int] = 224,
        embed_dims: tuple[int, ...] = (64, 128, 320, 512),
        depths: tuple[int, ...] = (2, 2, 2, 2),
        num_heads: tuple[int, ...] = (1, 2, 5, 8),
        mlp_ratios: tuple[float, ...] = (8, 8, 4, 4),
        sr_ratios: tuple[int, ...] = (8, 4, 2, 1),
        in_chans: int = 3,
        num_classes: int = 1000,
        global_pool: str = "avg",
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
    ):
        super().__init__(num_classes, in_chans, global_pool, drop_rate)
        self.stem = nn.Identity()
        sizes = stage_sizes(img_size, len(depths))
        uses_mixer = expand_attn_types(attn_type, depths)
        dpr = drop_path_rates(drop_path_rate, depths)
        stages, self.feature_info, prev = [], [], in_chans
        for i, (dim, depth) in enumerate(zip(embed_dims, depths)):
            embed = PVTPatchEmbed(prev, dim, 4 if i == 0 else 2, sizes[i])
            blocks = []
            for j in range(depth):
                if uses_mixer[i][j]:
                    attn = make_mixer(mixer, dim, num_heads[i], sizes[i], agent_num[i], split_q=True)
                else:
                    attn = SpatialReductionAttention(dim, num_heads[i], sr_ratios[i])
                blocks.append(GlobalMixerBlock(dim, attn, mlp_ratios[i], dpr[i][j], norm_eps=1e-6))
            stages.append(DownsampleStage(embed, blocks, channels_last_blocks=True, downsample_channels_last=True))
            self.feature_info.append(dict(num_chs=dim, reduction=4 * 2**i, module=f"stages.{i}"))
            prev = dim
        self.stages = nn.Sequential(*stages)
        self.norm = nn.Identity()
        self.build_head(prev)
        self.apply(self._init_weights)

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        return mixer_no_weight_decay(self)


def _official_item(key: str, value: torch.Tensor) -> tuple[str, torch.Tensor] | None:
    if key.startswith("norm."):  # FLatten-PVT's final LayerNorm: built, never applied
        return None
    key = re.sub(r"^patch_embed(\d)\.", lambda m: f"stages.{int(m.group(1)) - 1}.downsample.", key)
    key = re.sub(r"^pos_embed(\d)$", lambda m: f"stages.{int(m.group(1)) - 1}.downsample.pos_embed", key)
    return re.sub(r"^block(\d)\.", lambda m: f"stages.{int(m.group(1)) - 1}.blocks.", key), value


def _fit_tables(state_dict: dict[str, torch.Tensor], model: LinearPVT) -> dict[str, torch.Tensor]:
    """Mixer tables and the square position embeddings of another training resolution, resized to ``model``'s."""
    state_dict = fit_resolution_tables(state_dict, model)
    for i, stage in enumerate(model.stages):
        key = f"stages.{i}.downsample.pos_embed"
        value, base = state_dict.get(key), stage.downsample.base_size
        if value is not None and value.shape[1] != base[0] * base[1]:
            side = round(value.shape[1] ** 0.5)
            if side * side == value.shape[1]:
                state_dict[key] = resize_pos_embed(value, (side, side), base, mode="bicubic")
    return state_dict


def checkpoint_filter_fn(state_dict: dict, model: LinearPVT) -> dict[str, torch.Tensor]:
    """Load an official (weights under ``'model'``) or vitzoo checkpoint into ``model``.

    Position embeddings and the mixers' resolution-tied tables are resized when the checkpoint's training
    resolution differs from the model's ``img_size``. A mismatch raises :class:`vitzoo.hub.CheckpointError`.
    """
    return convert_checkpoint(
        state_dict, model, ("patch_embed1.", "block1."), _official_item, lambda sd: _fit_tables(sd, model)
    )


def _create(variant: str, pretrained: bool = False, **kwargs) -> LinearPVT:
    return create_backbone(LinearPVT, variant, pretrained, checkpoint_filter_fn, **kwargs)


default_cfgs = linear_default_cfgs(
    {
        **{
            f"vitzoo_{mixer}_pvt_{size}": linear_cfg(mixer, "stages.0.downsample.proj")
            for mixer in ("agent", "inline")
            for size in "tsml"
        },
        "vitzoo_flatten_pvt_t": linear_cfg("flatten", "stages.0.downsample.proj"),
    }
)

_DEPTHS = dict(t=(2, 2, 2, 2), s=(3, 4, 6, 3), m=(3, 4, 18, 3), l=(3, 8, 27, 3))
_HEADS = (1, 2, 5, 8)
_INLINE_HEADS = (2, 4, 10, 16)  # InLine doubles PVT's head count


@register_model
def vitzoo_agent_pvt_t(pretrained: bool = False, **kwargs) -> LinearPVT:
    model_args = dict(mixer="agent", depths=_DEPTHS["t"], num_heads=_HEADS)
    return _create("vitzoo_agent_pvt_t", pretrained, **dict(model_args, **kwargs))


@register_model
def vitzoo_agent_pvt_s(pretrained: bool = False, **kwargs) -> LinearPVT:
    model_args = dict(mixer="agent", depths=_DEPTHS["s"], num_heads=_HEADS)
    return _create("vitzoo_agent_pvt_s", pretrained, **dict(model_args, **kwargs))


@register_model
def vitzoo_agent_pvt_m(pretrained: bool = False, **kwargs) -> LinearPVT:
    model_args = dict(mixer="agent", depths=_DEPTHS["m"], num_heads=_HEADS)
    return _create("vitzoo_agent_pvt_m", pretrained, **dict(model_args, **kwargs))


@register_model
def vitzoo_agent_pvt_l(pretrained: bool = False, **kwargs) -> LinearPVT:
    model_args = dict(mixer="agent", depths=_DEPTHS["l"], num_heads=_HEADS)
    return _create("vitzoo_agent_pvt_l", pretrained, **dict(model_args, **kwargs))


@register_model
def vitzoo_inline_pvt_t(pretrained: bool = False, **kwargs) -> LinearPVT:
    model_args = dict(mixer="inline", attn_type="IIII", depths=_DEPTHS["t"], num_heads=_INLINE_HEADS)
    return _create("vitzoo_inline_pvt_t", pretrained, **dict(model_args, **kwargs))


@register_model
def vitzoo_inline_pvt_s(pretrained: bool = False, **kwargs) -> LinearPVT:
    model_args = dict(mixer="inline", attn_type="IIII", depths=_DEPTHS["s"], num_heads=_INLINE_HEADS)
    return _create("vitzoo_inline_pvt_s", pretrained, **dict(model_args, **kwargs))


@register_model
def vitzoo_inline_pvt_m(pretrained: bool = False, **kwargs) -> LinearPVT:
    model_args = dict(mixer="inline", attn_type="IIII", depths=_DEPTHS["m"], num_heads=_INLINE_HEADS)
    return _create("vitzoo_inline_pvt_m", pretrained, **dict(model_args, **kwargs))


@register_model
def vitzoo_inline_pvt_l(pretrained: bool = False, **kwargs) -> LinearPVT:
    model_args = dict(mixer="inline", attn_type="IIII", depths=_DEPTHS["l"], num_heads=_INLINE_HEADS)
    return _create("vitzoo_inline_pvt_l", pretrained, **dict(model_args, **kwargs))


@register_model
def vitzoo_flatten_pvt_t(pretrained: bool = False, **kwargs) -> LinearPVT:
    model_args = dict(mixer="flatten", attn_type="LLLL", depths=_DEPTHS["t"], num_heads=_HEADS)
    return _create("vitzoo_flatten_pvt_t", pretrained, **dict(model_args, **kwargs))
