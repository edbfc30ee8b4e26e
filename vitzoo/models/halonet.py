"""HaloNet H0-H7: ResNet-style bottlenecks whose 3x3 conv is blocked local self-attention with a halo.

Paper: "Scaling Local Self-Attention for Parameter Efficient Visual Backbones", Vaswani et al., CVPR 2021,
arXiv:2103.12731. No official code or weights were released.

A 7x7/2 conv stem (64 channels, BN, ReLU) and a 3x3/2 max-pool feed four stages of ``(3, 3, l3, 3)`` bottleneck
blocks with base widths ``w = 64, 128, 256, 512``. A block is a 1x1 conv to ``w`` (BN, ReLU), halo attention with
8 heads whose queries and keys are ``w`` wide and whose values are ``rv * w`` wide, BN and ReLU, a 1x1 conv to the
block output ``rb * w`` (BN, zero-initialised scale) and a residual (1x1 conv + BN shortcut where the width or
stride changes), then ReLU. Attention cuts the map into ``b x b`` blocks; each block's queries attend to its
``(b + 2h)``-square window of keys (the block and a halo of ``h`` pixels), with factorised relative-position logits
(one ``(2 (b + 2h) - 1) x head_dim`` table per axis, shared by the heads, unscaled) added to the scaled ``q . k``.
The first block of stages 2-4 downsamples by strided attention: queries come from a stride-2 1x1 projection, keys
and values stay at full resolution. H3-H7 add a final 1x1 conv to ``df`` channels (BN, ReLU) before the pooled
classifier. These readings reproduce the paper's parameter count of every variant (see the model cards).

Choices the paper leaves open, made here: ReLU activations, 8 heads in every stage, no qkv bias; halo keys beyond
the border are zero vectors, not masked (the paper reports that this unmasked form trained better; it is also
timm's ``HaloAttn``); relative offsets of strided queries are measured on the key map (timm measures them on the
query grid); maps that ``b`` does not divide are zero-padded at the bottom/right, so any input >= 32 px runs
(H7's 600 px gives 75-pixel stage-2 maps for ``b = 10``). Attention goes through :func:`vitzoo.ops.halo_attention`.
timm's own ``halonet*`` ByobNet models are left untouched.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn as nn
from timm.layers import BatchNormAct2d, ConvNormAct, DropPath, trunc_normal_
from timm.models import generate_default_cfgs, register_model

from ..hub import convert_checkpoint
from ..ops import halo_attention
from ._contract import DownsampleStage, HierarchicalBackbone, drop_path_rates
from ._factory import create_backbone, imagenet_cfg
from ._papers import PAPERS

__all__ = ["HaloNet"]


class HaloAttention(nn.Module):
    """Multi-head halo attention on an NCHW map: ``dim`` in, ``dim_v`` out, queries subsampled by ``stride``."""

    def __init__(
        self,
        dim: int,
        dim_v: int,
        num_heads: int = 8,
        block_size: int = 8,
        halo_size: int = 3,
        stride: int = 1,
        qkv_bias: bool = False,
    ):
        super().__init__()
        if dim % num_heads or dim_v % num_heads:
            raise ValueError(f"HaloAttention: dim={dim} and dim_v={dim_v} must be divisible by num_heads={num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.dim_v = dim_v
        self.block_size = block_size
        self.halo_size = halo_size
        self.stride = stride
        self.scale = self.head_dim**-0.5
        self.q = nn.Conv2d(dim, dim, 1, stride=stride, bias=qkv_bias)
        self.kv = nn.Conv2d(dim, dim + dim_v, 1, bias=qkv_bias)
        rows = 2 * (block_size + 2 * halo_size) - 1
        self.rel_h = nn.Parameter(torch.zeros(rows, self.head_dim))
        self.rel_w = nn.Parameter(torch.zeros(rows, self.head_dim))
        trunc_normal_(self.rel_h, std=self.scale)
        trunc_normal_(self.rel_w, std=self.scale)

    def _heads_last(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        return x.view(b, self.num_heads, c // self.num_heads, h, w).permute(0, 3, 4, 1, 2)  # B, H, W, heads, D

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q = self._heads_last(self.q(x))
        k, v = self.kv(x).split([self.num_heads * self.head_dim, self.dim_v], dim=1)
        out = halo_attention(
            q,
            self._heads_last(k),
            self._heads_last(v),
            self.block_size,
            self.halo_size,
            query_stride=self.stride,
            rel_pos=(self.rel_h, self.rel_w),
            mask_padding=False,
            scale=self.scale,
        )  # B, Hq, Wq, heads, Dv
        return out.flatten(3).permute(0, 3, 1, 2)  # B, C, Hq, Wq


class HaloBlock(nn.Module):
    """Bottleneck: 1x1 conv -> halo attention -> BN-ReLU -> 1x1 conv (BN) -> + shortcut -> ReLU. NCHW in/out."""

    def __init__(
        self,
        in_chs: int,
        width: int,
        out_chs: int,
        value_ratio: float,
        stride: int,
        num_heads: int,
        block_size: int,
        halo_size: int,
        drop_path: float = 0.0,
    ):
        super().__init__()
        dim_v = int(round(value_ratio * width))
        if in_chs != out_chs or stride != 1:
            self.shortcut = ConvNormAct(in_chs, out_chs, 1, stride=stride, apply_act=False)
        else:
            self.shortcut = nn.Identity()
        self.conv1 = ConvNormAct(in_chs, width, 1)
        self.attn = HaloAttention(width, dim_v, num_heads, block_size, halo_size, stride)
        self.post_attn = BatchNormAct2d(dim_v)
        self.conv3 = ConvNormAct(dim_v, out_chs, 1, apply_act=False)
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.act = nn.ReLU(inplace=True)

    def zero_init_last(self) -> None:
        # the residual branch starts as zero, so every block starts as its shortcut (ResNet's "zero gamma")
        nn.init.zeros_(self.conv3.bn.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = self.shortcut(x)
        x = self.post_attn(self.attn(self.conv1(x)))
        x = self.conv3(x)
        return self.act(self.drop_path(x) + shortcut)


class HaloNet(HierarchicalBackbone):
    """HaloNet backbone (paper variants H0-H7) with the timm model contract.

    Args:
        block_size: ``b``, side of the attention blocks.
        halo_size: ``h``, halo added around every block.
        value_ratio: ``rv``, value (attention output) width over the block's base width.
        output_ratio: ``rb``, block output width over its base width.
        depths: blocks per stage, ``(3, 3, l3, 3)`` in the paper.
        final_chs: ``df``, width of the final 1x1 conv; 0 for none (H0-H2).
        widths: base width ``w`` per stage.
        stem_chs: channels of the 7x7 stem conv.
        num_heads: attention heads in every stage.
    """

    def __init__(
        self,
        block_size: int = 8,
        halo_size: int = 3,
        value_ratio: float = 1.0,
        output_ratio: float = 1.0,
        depths: tuple[int, ...] = (3, 3, 10, 3),
        final_chs: int = 0,
        widths: tuple[int, ...] = (64, 128, 256, 512),
        stem_chs: int = 64,
        num_heads: int = 8,
        in_chans: int = 3,
        num_classes: int = 1000,
        global_pool: str = "avg",
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
    ):
        super().__init__(num_classes, in_chans, global_pool, drop_rate)
        self.stem = nn.Sequential(
            OrderedDict(
                conv=ConvNormAct(in_chans, stem_chs, 7, stride=2),
                pool=nn.MaxPool2d(3, stride=2, padding=1),
            )
        )
        dpr = drop_path_rates(drop_path_rate, depths)
        stages, in_chs, self.feature_info = [], stem_chs, []
        for i, (depth, width) in enumerate(zip(depths, widths)):
            out_chs = int(round(output_ratio * width))
            blocks = []
            for j in range(depth):
                stride = 2 if i > 0 and j == 0 else 1
                blocks.append(
                    HaloBlock(in_chs, width, out_chs, value_ratio, stride, num_heads, block_size, halo_size, dpr[i][j])
                )
                in_chs = out_chs
            stages.append(DownsampleStage(nn.Identity(), blocks))
            self.feature_info.append(dict(num_chs=out_chs, reduction=4 * 2**i, module=f"stages.{i}"))
        self.stages = nn.Sequential(*stages)
        # the final 1x1 conv plays the role of the other families' final norm: it maps the last stage's output
        # to the pooled features (and is what ``forward_intermediates(norm=True)`` applies)
        self.norm = ConvNormAct(in_chs, final_chs, 1) if final_chs else nn.Identity()
        self.build_head(final_chs or in_chs)
        self.apply(self._init_weights)
        for block in self.modules():
            if isinstance(block, HaloBlock):
                block.zero_init_last()

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        """ResNet-style: He-normal (fan-out) convs, small-normal classifier."""
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=0.01)
            nn.init.zeros_(m.bias)

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        return {n for n, _ in self.named_parameters() if n.endswith((".rel_h", ".rel_w"))}


def checkpoint_filter_fn(state_dict: dict, model: HaloNet) -> dict[str, torch.Tensor]:
    """Load a HaloNet checkpoint in vitzoo's layout (e.g. a timm training checkpoint, EMA weights preferred).

    There is no official release to convert. A mismatch raises :class:`vitzoo.hub.CheckpointError` listing missing,
    unexpected and mis-shaped keys; the classifier may differ (fine-tuning to another ``num_classes``).
    """
    return convert_checkpoint(state_dict, model)


def _create_halonet(variant: str, pretrained: bool = False, **kwargs) -> HaloNet:
    return create_backbone(HaloNet, variant, pretrained, checkpoint_filter_fn, **kwargs)


def _cfg(img_size: int, **kwargs) -> dict:
    # crop 0.95 bicubic as timm's HaloNets; the paper's evaluation crop is not known
    return imagenet_cfg(
        input_size=(3, img_size, img_size),
        pool_size=(img_size // 32, img_size // 32),
        crop_pct=0.95,
        first_conv="stem.conv.conv",
        **PAPERS["halonet"].cfg_fields(),
        **kwargs,
    )


# image sizes of the paper's table: b tiles the stage-1 map (4b, 5b, ... px at stride 4) up to H5, 600 px for H7
default_cfgs = generate_default_cfgs(
    {
        "vitzoo_halonet_h0": _cfg(256),
        "vitzoo_halonet_h1": _cfg(256),
        "vitzoo_halonet_h2": _cfg(256),
        "vitzoo_halonet_h3": _cfg(320),
        "vitzoo_halonet_h4": _cfg(384),
        "vitzoo_halonet_h5": _cfg(448),
        "vitzoo_halonet_h6": _cfg(512),
        "vitzoo_halonet_h7": _cfg(600),
    }
)


@register_model
def vitzoo_halonet_h0(pretrained: bool = False, **kwargs) -> HaloNet:
    model_args = dict(block_size=8, halo_size=3, value_ratio=1.0, output_ratio=0.5, depths=(3, 3, 7, 3))
    return _create_halonet("vitzoo_halonet_h0", pretrained, **dict(model_args, **kwargs))


@register_model
def vitzoo_halonet_h1(pretrained: bool = False, **kwargs) -> HaloNet:
    model_args = dict(block_size=8, halo_size=3, value_ratio=1.0, output_ratio=1.0, depths=(3, 3, 10, 3))
    return _create_halonet("vitzoo_halonet_h1", pretrained, **dict(model_args, **kwargs))


@register_model
def vitzoo_halonet_h2(pretrained: bool = False, **kwargs) -> HaloNet:
    model_args = dict(block_size=8, halo_size=3, value_ratio=1.0, output_ratio=1.25, depths=(3, 3, 11, 3))
    return _create_halonet("vitzoo_halonet_h2", pretrained, **dict(model_args, **kwargs))


@register_model
def vitzoo_halonet_h3(pretrained: bool = False, **kwargs) -> HaloNet:
    model_args = dict(
        block_size=10, halo_size=3, value_ratio=1.0, output_ratio=1.5, depths=(3, 3, 12, 3), final_chs=1024
    )
    return _create_halonet("vitzoo_halonet_h3", pretrained, **dict(model_args, **kwargs))


@register_model
def vitzoo_halonet_h4(pretrained: bool = False, **kwargs) -> HaloNet:
    model_args = dict(
        block_size=12, halo_size=2, value_ratio=1.0, output_ratio=3.0, depths=(3, 3, 12, 3), final_chs=1280
    )
    return _create_halonet("vitzoo_halonet_h4", pretrained, **dict(model_args, **kwargs))


@register_model
def vitzoo_halonet_h5(pretrained: bool = False, **kwargs) -> HaloNet:
    model_args = dict(
        block_size=14, halo_size=2, value_ratio=2.5, output_ratio=2.0, depths=(3, 3, 23, 3), final_chs=1536
    )
    return _create_halonet("vitzoo_halonet_h5", pretrained, **dict(model_args, **kwargs))


@register_model
def vitzoo_halonet_h6(pretrained: bool = False, **kwargs) -> HaloNet:
    model_args = dict(
        block_size=8, halo_size=4, value_ratio=3.0, output_ratio=2.75, depths=(3, 3, 24, 3), final_chs=1536
    )
    return _create_halonet("vitzoo_halonet_h6", pretrained, **dict(model_args, **kwargs))


@register_model
def vitzoo_halonet_h7(pretrained: bool = False, **kwargs) -> HaloNet:
    model_args = dict(
        block_size=10, halo_size=3, value_ratio=4.0, output_ratio=3.5, depths=(3, 3, 26, 3), final_chs=2048
    )
    return _create_halonet("vitzoo_halonet_h7", pretrained, **dict(model_args, **kwargs))
