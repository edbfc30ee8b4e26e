"""BiFormer: vision transformer with bi-level routing attention (BRA).

Paper: "BiFormer: Vision Transformer with Bi-Level Routing Attention", Zhu et al., CVPR 2023, arXiv:2303.08810.
Official code: https://github.com/rayleizhu/BiFormer (MIT).

Each block adds a depthwise 3x3 positional conv, then pre-norm attention and an MLP (ratio 3). Stages 1-3 use BRA:
the map is cut into a 7x7 grid of regions, every query region is routed to the ``topk`` (1, 4, 16) key regions
whose mean key best matches its mean query, and its tokens attend to theirs (one head per 32 channels, logit scale
``C ** -0.5`` over the whole width, as in the official code); a depthwise 5x5 LePE on V is added before the output
projection. Stage 4 is global attention with 8 heads and LePE on the block input. The head is BatchNorm, mean
pooling and a linear classifier.

Changes from the official code: any input size runs (regions are padded and the padding masked, instead of the
classification model's assert that the map divides by 7); attention goes through :mod:`vitzoo.ops`; stages are
``stages.{i}.{downsample,blocks}`` (official checkpoints remapped by :func:`checkpoint_filter_fn`).
"""

from __future__ import annotations

import re

import torch
import torch.nn as nn
from timm.layers import DropPath
from timm.models import generate_default_cfgs, register_model

from ..hub import convert_checkpoint
from ..layers import LePE
from ..ops import region_routed_attention, window_attention
from ._contract import DownsampleStage, HierarchicalBackbone, drop_path_rates
from ._factory import create_backbone, imagenet_cfg
from ._papers import PAPERS

__all__ = ["BiFormer"]


class BiLevelRoutingAttention(nn.Module):
    """BRA over a ``num_regions x num_regions`` grid; input and output ``[B, H, W, C]``."""

    def __init__(self, dim: int, num_heads: int, num_regions: int, topk: int, lepe_kernel: int = 5):
        super().__init__()
        self.num_heads, self.num_regions, self.topk = num_heads, num_regions, topk
        self.scale = dim**-0.5  # NOTE: official BiFormer scales by the whole width, not the head width
        self.qkv = nn.Linear(dim, 3 * dim)
        self.lepe = LePE(dim, lepe_kernel)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv(x).chunk(3, dim=-1)  # each B, H, W, C
        out = region_routed_attention(q, k, v, self.num_regions, self.topk, self.num_heads, scale=self.scale)
        return self.proj(out + self.lepe(v))


class GlobalAttentionLePE(nn.Module):
    """Multi-head self-attention over the whole map plus LePE on the (normed) block input; ``[B, H, W, C]``."""

    def __init__(self, dim: int, num_heads: int = 8, lepe_kernel: int = 5):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.lepe = LePE(dim, lepe_kernel)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, c = x.shape
        q, k, v = self.qkv(x).view(b, h, w, 3, self.num_heads, c // self.num_heads).unbind(3)  # B, H, W, heads, D
        out = window_attention(q, k, v, (h, w)).reshape(b, h, w, c)
        return self.proj(out + self.lepe(x))


class BiFormerBlock(nn.Module):
    """NCHW in and out: ``x + dwconv3x3(x)``, then pre-norm attention and MLP in channels-last."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        num_regions: int,
        topk: int,
        mlp_ratio: float,
        drop_path: float,
        global_heads: int = 8,
    ):
        super().__init__()
        self.pos_embed = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        if topk > 0:
            self.attn = BiLevelRoutingAttention(dim, num_heads, num_regions, topk)
        else:  # the official stage-4 setting (topk=-2): global attention, which a 7x7 map makes cheap
            self.attn = GlobalAttentionLePE(dim, global_heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.pos_embed(x)
        x = x.permute(0, 2, 3, 1)  # B, H, W, C
        x = x + self.drop_path(self.attn(self.norm1(x)))
        x = x + self.drop_path(self.mlp(self.norm2(x)))
        return x.permute(0, 3, 1, 2)  # B, C, H, W


def _conv_bn(in_chs: int, out_chs: int) -> list[nn.Module]:
    return [nn.Conv2d(in_chs, out_chs, 3, stride=2, padding=1), nn.BatchNorm2d(out_chs)]


class BiFormer(HierarchicalBackbone):
    """BiFormer: convolutional stem, four stages of BRA (global attention in the last), BatchNorm head."""

    def __init__(
        self,
        in_chans: int = 3,
        num_classes: int = 1000,
        global_pool: str = "avg",
        embed_dims: tuple[int, ...] = (64, 128, 256, 512),
        depths: tuple[int, ...] = (2, 2, 8, 2),
        head_dim: int = 32,
        num_regions: int = 7,
        topks: tuple[int, ...] = (1, 4, 16, -2),
        mlp_ratio: float = 3.0,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
    ):
        super().__init__(num_classes, in_chans, global_pool, drop_rate)
        dpr = drop_path_rates(drop_path_rate, depths)
        self.stem = nn.Identity()  # the stem is stage 0's downsample, to keep the official module order
        stages, self.feature_info = [], []
        for i, (dim, depth) in enumerate(zip(embed_dims, depths)):
            if i == 0:  # two 3x3/2 convs: C/2 then C
                downsample = nn.Sequential(*_conv_bn(in_chans, dim // 2), nn.GELU(), *_conv_bn(dim // 2, dim))
            else:
                downsample = nn.Sequential(*_conv_bn(embed_dims[i - 1], dim))
            blocks = [
                BiFormerBlock(dim, dim // head_dim, num_regions, topks[i], mlp_ratio, dpr[i][j]) for j in range(depth)
            ]
            stages.append(DownsampleStage(downsample, blocks))
            self.feature_info.append(dict(num_chs=dim, reduction=4 * 2**i, module=f"stages.{i}"))
        self.stages = nn.Sequential(*stages)
        self.build_head(embed_dims[-1])
        self.norm = nn.BatchNorm2d(self.num_features)
        self.apply(self._init_weights)


def _official_key(key: str) -> str:
    """One official BiFormer key -> this model's key."""
    m = re.match(r"^downsample_layers\.(\d)\.(.*)$", key)
    if m:
        return f"stages.{m.group(1)}.downsample.{m.group(2)}"
    m = re.match(r"^stages\.(\d)\.(\d+)\.(.*)$", key)
    if m:
        stage, block, rest = m.groups()
        rest = re.sub(r"^attn\.qkv\.qkv\.", "attn.qkv.", rest)  # BRA's QKVLinear wrapper
        rest = re.sub(r"^attn\.wo\.", "attn.proj.", rest)
        rest = re.sub(r"^attn\.lepe\.", "attn.lepe.conv.", rest)
        rest = re.sub(r"^mlp\.3\.", "mlp.2.", rest)  # the official MLP has an Identity (disabled dwconv) at index 1
        return f"stages.{stage}.blocks.{block}.{rest}"
    return key


def checkpoint_filter_fn(state_dict: dict, model: BiFormer) -> dict[str, torch.Tensor]:
    """Map an official BiFormer checkpoint (``{'model': ...}`` from rayleizhu/BiFormer) onto this model.

    Checkpoints already in vitzoo's layout pass through unchanged; a mismatch raises
    :class:`vitzoo.hub.CheckpointError` listing missing, unexpected and mis-shaped keys.
    """
    return convert_checkpoint(
        state_dict, model, ("downsample_layers.",), lambda key, value: (_official_key(key), value)
    )


def _create_biformer(variant: str, pretrained: bool = False, **kwargs) -> BiFormer:
    return create_backbone(BiFormer, variant, pretrained, checkpoint_filter_fn, **kwargs)


def _cfg(**kwargs) -> dict:
    # variants override these (dict merge: a repeated keyword would be an error)
    family = dict(
        first_conv="stages.0.downsample.0",
        **PAPERS["biformer"].cfg_fields(),
    )
    return imagenet_cfg(**{**family, **kwargs})


_ONEDRIVE = "https://api.onedrive.com/v1.0/shares/{}/root/content"

default_cfgs = generate_default_cfgs(
    {
        # Official ImageNet-1k weights, shared by the authors on OneDrive (share links reported unstable).
        "vitzoo_biformer_t.official_in1k": _cfg(url=_ONEDRIVE.format("s!AkBbczdRlZvChHEOoGkgwgQzEDlM")),
        "vitzoo_biformer_s.official_in1k": _cfg(url=_ONEDRIVE.format("s!AkBbczdRlZvChHDyM-x9KWRBZ832")),
        "vitzoo_biformer_b.official_in1k": _cfg(url=_ONEDRIVE.format("s!AkBbczdRlZvChHI_XPhoadjaNxtO")),
    }
)


@register_model
def vitzoo_biformer_t(pretrained: bool = False, **kwargs) -> BiFormer:
    model_args = dict(embed_dims=(64, 128, 256, 512), depths=(2, 2, 8, 2))
    return _create_biformer("vitzoo_biformer_t", pretrained, **dict(model_args, **kwargs))


@register_model
def vitzoo_biformer_s(pretrained: bool = False, **kwargs) -> BiFormer:
    model_args = dict(embed_dims=(64, 128, 256, 512), depths=(4, 4, 18, 4))
    return _create_biformer("vitzoo_biformer_s", pretrained, **dict(model_args, **kwargs))


@register_model
def vitzoo_biformer_b(pretrained: bool = False, **kwargs) -> BiFormer:
    model_args = dict(embed_dims=(96, 192, 384, 768), depths=(4, 4, 18, 4))
    return _create_biformer("vitzoo_biformer_b", pretrained, **dict(model_args, **kwargs))
