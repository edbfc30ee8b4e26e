"""CSWin Transformer: self-attention in cross-shaped windows of horizontal and vertical stripes.

Paper: "CSWin Transformer: A General Vision Transformer Backbone with Cross-Shaped Windows", Dong et al., CVPR 2022,
arXiv:2107.00652. Official code: https://github.com/microsoft/CSWin-Transformer (MIT).

A 7x7/4 conv stem and three 3x3/2 conv merges (each followed by LayerNorm) feed four stages of pre-norm blocks.
In stages 1-3 one qkv projection is split by heads: the first half of the heads attends inside vertical stripes
(full height, ``split_size`` columns wide), the second half inside horizontal stripes (``split_size`` rows high,
full width); split sizes are 1, 2, 7 at 224 and 1, 2, 12 at 384. Stage 4 attends over the whole map with all heads.
Every branch adds LePE, a depthwise 3x3 conv on V applied inside each stripe on its own (zero padding at stripe
borders, as the official code does by reshaping stripes into separate images). Logit scale is ``head_dim ** -0.5``;
the MLP ratio is 4 with GELU; the head is LayerNorm, mean pooling and a linear classifier.

Changes from the official code: any input size >= 32 runs, square or not (the official classification model is
fixed to ``img_size`` and needs the maps to divide by the split sizes). When a stripe width does not divide the
map, the map is padded at the bottom/right, padded keys are masked out of the attention and LePE sees the padding
as zeros, so every real token gets exactly what it would get inside a stripe cut short at the border; where the
stripes divide the map the numerics are the official ones. A stripe wider than the map is clamped to the map. The
official rule that turns a stage into one global branch when its construction-time resolution equals its split
size is not reproduced (no released configuration reaches it): here only stage 4 is global. Attention goes through
:func:`vitzoo.ops.window_attention`; modules are ``stages.{i}.{downsample,blocks}`` (official checkpoints remapped
by :func:`checkpoint_filter_fn`); dropout rates apply to the classifier input only.
"""

from __future__ import annotations

import re

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import DropPath, LayerNorm2d, Mlp, register_notrace_function, register_notrace_module
from timm.models import generate_default_cfgs, register_model

from ..hub import convert_checkpoint
from ..layers import LePE
from ..ops import crop_hw, known_true, padded_size, size_min, window_attention
from ._contract import DownsampleStage, HierarchicalBackbone, drop_path_rates
from ._factory import create_backbone, imagenet_cfg
from ._papers import PAPERS

__all__ = ["CSWinTransformer"]


@register_notrace_function  # FX cannot trace the clamp (a comparison on the map size); it records one call
def stripe_window(h: int, w: int, split_size: int, branch: int, global_attn: bool) -> tuple[int, int]:
    """The window of ``branch`` on an ``h x w`` map: 0 vertical stripes, 1 horizontal ones, or the map if global."""
    if global_attn:
        return h, w
    # a stripe wider than the map is the whole map: the same keys as a padded, masked stripe, and no padding
    if branch == 0:
        return h, size_min(split_size, w)
    return size_min(split_size, h), w


@register_notrace_module  # its padding and stripe reshapes are decided by the map size: FX keeps it as one call
class StripeLePE(LePE):
    """LePE applied inside every window on its own: a depthwise conv that never looks across a window border.

    Input and output ``[B, H, W, C]``. Windows tile the map from the top-left, as in
    :func:`vitzoo.ops.window_attention`; a map that the window does not divide is zero-padded at the bottom/right
    (the conv sees zeros there, as at any border) and the output cropped back.
    """

    def __init__(self, dim: int, kernel_size: int = 3):
        super().__init__(dim, kernel_size)

    def forward(self, x: torch.Tensor, window_size: tuple[int, int] | None = None) -> torch.Tensor:
        b, h, w, c = x.shape
        wh, ww = window_size if window_size is not None else (h, w)
        # one window covers the map: LePE's plain conv (TorchScript has no super() call). Traced at sizes where that
        # is not known, the general path below computes the same (a window that is the map, no padding)
        if known_true(wh >= h) and known_true(ww >= w):
            return self.conv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)  # B, H, W, C
        hp, wp = padded_size(h, wh), padded_size(w, ww)
        x = F.pad(x, (0, 0, 0, wp - w, 0, hp - h))  # B, Hp, Wp, C
        nh, nw = hp // wh, wp // ww
        x = x.view(b, nh, wh, nw, ww, c).permute(0, 1, 3, 5, 2, 4).reshape(b * nh * nw, c, wh, ww)  # B*nW, C, wh, ww
        x = self.conv(x)
        x = x.view(b, nh, nw, c, wh, ww).permute(0, 1, 4, 2, 5, 3).reshape(b, hp, wp, c)  # B, Hp, Wp, C
        return crop_hw(x, h, w)


class CrossShapedWindowAttention(nn.Module):
    """Half the heads in vertical stripes, half in horizontal stripes (or all heads globally); ``[B, H, W, C]``."""

    def __init__(self, dim: int, num_heads: int, split_size: int, global_attn: bool = False, qkv_bias: bool = True):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} must be divisible by num_heads {num_heads}")
        if not global_attn and num_heads % 2:
            raise ValueError(f"cross-shaped attention splits the heads in two halves; got num_heads={num_heads}")
        self.num_heads, self.split_size, self.global_attn = num_heads, split_size, global_attn
        self.num_branches = 1 if global_attn else 2
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.lepe = nn.ModuleList([StripeLePE(dim // self.num_branches) for _ in range(self.num_branches)])
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, c = x.shape
        head_dim = c // self.num_heads
        q, k, v = self.qkv(x).view(b, h, w, 3, self.num_heads, head_dim).unbind(3)  # each B, H, W, heads, D
        per_branch = self.num_heads // self.num_branches
        outs = []
        # one window per branch, asked for by index: FX cannot iterate over a list it only records
        for i, lepe in enumerate(self.lepe):
            window = stripe_window(h, w, self.split_size, i, self.global_attn)
            lo, hi = i * per_branch, (i + 1) * per_branch
            v_i = v[:, :, :, lo:hi]
            out = window_attention(q[:, :, :, lo:hi], k[:, :, :, lo:hi], v_i, window)  # B, H, W, heads/2, D
            lepe_i = lepe(v_i.reshape(b, h, w, per_branch * head_dim), window)  # B, H, W, C/2
            outs.append(out.reshape(b, h, w, per_branch * head_dim) + lepe_i)
        return self.proj(torch.cat(outs, dim=-1) if len(outs) > 1 else outs[0])


class CSWinBlock(nn.Module):
    """Channels-last ``[B, H, W, C]`` pre-norm block: cross-shaped window attention, then an MLP."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        split_size: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_path: float = 0.0,
        global_attn: bool = False,
    ):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = CrossShapedWindowAttention(dim, num_heads, split_size, global_attn, qkv_bias)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class ConvEmbed(nn.Module):
    """Strided conv then LayerNorm over channels: the stem (7x7/4) and the merges between stages (3x3/2).

    NCHW in, channels-last ``[B, H, W, C]`` out.
    """

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int, stride: int, padding: int):
        super().__init__()
        self.conv = nn.Conv2d(in_chs, out_chs, kernel_size, stride=stride, padding=padding)
        self.norm = nn.LayerNorm(out_chs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.conv(x).permute(0, 2, 3, 1))  # B, H, W, C


class CSWinTransformer(HierarchicalBackbone):
    """CSWin: conv stem, three stages of cross-shaped stripe attention, a global-attention stage, LayerNorm head."""

    def __init__(
        self,
        in_chans: int = 3,
        num_classes: int = 1000,
        global_pool: str = "avg",
        embed_dim: int = 64,
        depths: tuple[int, ...] = (1, 2, 21, 1),
        num_heads: tuple[int, ...] = (2, 4, 8, 16),
        split_sizes: tuple[int, ...] = (1, 2, 7, 7),
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
    ):
        super().__init__(num_classes, in_chans, global_pool, drop_rate)
        dpr = drop_path_rates(drop_path_rate, depths)
        self.stem = nn.Identity()  # the stem is stage 0's downsample: every stage starts with a conv + LayerNorm
        stages, self.feature_info = [], []
        dims = [embed_dim * 2**i for i in range(len(depths))]
        for i, depth in enumerate(depths):
            if i == 0:
                downsample = ConvEmbed(in_chans, dims[0], kernel_size=7, stride=4, padding=2)
            else:
                downsample = ConvEmbed(dims[i - 1], dims[i], kernel_size=3, stride=2, padding=1)
            last = i == len(depths) - 1  # official ``last_stage``: one branch of global attention
            blocks = [
                self.make_block(i, j, dims[i], num_heads[i], split_sizes[i], mlp_ratio, qkv_bias, dpr[i][j], last)
                for j in range(depth)
            ]
            stages.append(DownsampleStage(downsample, blocks, channels_last_blocks=True, downsample_channels_last=True))
            self.feature_info.append(dict(num_chs=dims[i], reduction=4 * 2**i, module=f"stages.{i}"))
        self.stages = nn.Sequential(*stages)
        self.build_head(dims[-1])
        self.norm = LayerNorm2d(self.num_features, eps=1e-5)
        self.apply(self._init_weights)

    def make_block(
        self, stage: int, index: int, dim: int, num_heads: int, split_size: int, mlp_ratio: float, qkv_bias: bool,
        drop_path: float, global_attn: bool,
    ) -> nn.Module:  # fmt: skip
        """Block ``index`` of ``stage``; hosts of other attention kinds (Agent-CSwin, ...) override this."""
        return CSWinBlock(dim, num_heads, split_size, mlp_ratio, qkv_bias, drop_path, global_attn=global_attn)


def official_cswin_key(key: str) -> str:
    """One official CSWin key -> this model's key."""
    # the stem is Sequential(conv, Rearrange, LayerNorm): the parameter-free Rearrange takes index 1
    m = re.match(r"^stage1_conv_embed\.([02])\.(.*)$", key)
    if m:
        return f"stages.0.downsample.{'conv' if m.group(1) == '0' else 'norm'}.{m.group(2)}"
    m = re.match(r"^merge(\d)\.(.*)$", key)
    if m:
        return f"stages.{m.group(1)}.downsample.{m.group(2)}"
    m = re.match(r"^stage(\d)\.(\d+)\.(.*)$", key)
    if m:
        stage, block, rest = m.groups()
        rest = re.sub(r"^(qkv|proj)\.", r"attn.\1.", rest)  # the official block owns qkv/proj; here attention does
        rest = re.sub(r"^attns\.(\d)\.get_v\.", r"attn.lepe.\1.conv.", rest)
        return f"stages.{int(stage) - 1}.blocks.{block}.{rest}"
    return key


def checkpoint_filter_fn(state_dict: dict, model: CSWinTransformer) -> dict[str, torch.Tensor]:
    """Map an official CSWin checkpoint (timm training output, ``state_dict_ema`` preferred) onto this model.

    Checkpoints already in vitzoo's layout pass through unchanged; a mismatch raises
    :class:`vitzoo.hub.CheckpointError` listing missing, unexpected and mis-shaped keys.
    """
    return convert_checkpoint(
        state_dict, model, ("stage1_conv_embed.",), lambda key, value: (official_cswin_key(key), value)
    )


def _create_cswin(variant: str, pretrained: bool = False, **kwargs) -> CSWinTransformer:
    return create_backbone(CSWinTransformer, variant, pretrained, checkpoint_filter_fn, **kwargs)


def _cfg(**kwargs) -> dict:
    # variants override these (dict merge: a repeated keyword would be an error)
    family = dict(
        crop_pct=0.9,
        first_conv="stages.0.downsample.conv",
        **PAPERS["cswin"].cfg_fields(),
    )
    return imagenet_cfg(**{**family, **kwargs})


_RELEASE = "https://github.com/microsoft/CSWin-Transformer/releases/download/v0.1.0/{}.pth"
_384 = dict(input_size=(3, 384, 384), pool_size=(12, 12), crop_pct=1.0)

default_cfgs = generate_default_cfgs(
    {
        "vitzoo_cswin_t.official_in1k": _cfg(url=_RELEASE.format("cswin_tiny_224")),
        "vitzoo_cswin_s.official_in1k": _cfg(url=_RELEASE.format("cswin_small_224")),
        "vitzoo_cswin_b.official_in1k": _cfg(url=_RELEASE.format("cswin_base_224")),
        "vitzoo_cswin_l.official_in22k_ft_in1k": _cfg(url=_RELEASE.format("cswin_large_224")),
        "vitzoo_cswin_b_384.official_in1k": _cfg(url=_RELEASE.format("cswin_base_384"), **_384),
        "vitzoo_cswin_l_384.official_in22k_ft_in1k": _cfg(url=_RELEASE.format("cswin_large_384"), **_384),
    }
)


@register_model
def vitzoo_cswin_t(pretrained: bool = False, **kwargs) -> CSWinTransformer:
    model_args = dict(embed_dim=64, depths=(1, 2, 21, 1), num_heads=(2, 4, 8, 16), split_sizes=(1, 2, 7, 7))
    return _create_cswin("vitzoo_cswin_t", pretrained, **dict(model_args, **kwargs))


@register_model
def vitzoo_cswin_s(pretrained: bool = False, **kwargs) -> CSWinTransformer:
    model_args = dict(embed_dim=64, depths=(2, 4, 32, 2), num_heads=(2, 4, 8, 16), split_sizes=(1, 2, 7, 7))
    return _create_cswin("vitzoo_cswin_s", pretrained, **dict(model_args, **kwargs))


@register_model
def vitzoo_cswin_b(pretrained: bool = False, **kwargs) -> CSWinTransformer:
    # NOTE: the paper's table lists heads (2, 4, 8, 16) for B; the official code and weights use (4, 8, 16, 32)
    model_args = dict(embed_dim=96, depths=(2, 4, 32, 2), num_heads=(4, 8, 16, 32), split_sizes=(1, 2, 7, 7))
    return _create_cswin("vitzoo_cswin_b", pretrained, **dict(model_args, **kwargs))


@register_model
def vitzoo_cswin_l(pretrained: bool = False, **kwargs) -> CSWinTransformer:
    model_args = dict(embed_dim=144, depths=(2, 4, 32, 2), num_heads=(6, 12, 24, 24), split_sizes=(1, 2, 7, 7))
    return _create_cswin("vitzoo_cswin_l", pretrained, **dict(model_args, **kwargs))


@register_model
def vitzoo_cswin_b_384(pretrained: bool = False, **kwargs) -> CSWinTransformer:
    model_args = dict(embed_dim=96, depths=(2, 4, 32, 2), num_heads=(4, 8, 16, 32), split_sizes=(1, 2, 12, 12))
    return _create_cswin("vitzoo_cswin_b_384", pretrained, **dict(model_args, **kwargs))


@register_model
def vitzoo_cswin_l_384(pretrained: bool = False, **kwargs) -> CSWinTransformer:
    model_args = dict(embed_dim=144, depths=(2, 4, 32, 2), num_heads=(6, 12, 24, 24), split_sizes=(1, 2, 12, 12))
    return _create_cswin("vitzoo_cswin_l_384", pretrained, **dict(model_args, **kwargs))
