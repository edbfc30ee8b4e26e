"""ViTAEv2 with varied-size window attention (ViTAEv2*-VSA S / 48M / B).

Papers: "VSA: Learning Varied-Size Window Attention in Vision Transformers", Zhang et al., ECCV 2022,
arXiv:2204.08446; "ViTAEv2: Vision Transformer Advanced by Exploring Inductive Bias for Image Recognition and
Beyond", Zhang et al., IJCV 2023, arXiv:2202.10108. Official code: https://github.com/ViTAE-Transformer/ViTAE-VSA
(MIT).

Four stages, each a reduction cell (RC) and a stack of normal cells (NC), every attention being VSA in 7x7 windows:

* RC: a pyramid reduction module (parallel convs of one kernel size at several dilations, stride 4 or 2, GELU,
  concatenated), a residual depthwise 7x7 conv, LayerNorm (eps 1e-5), VSA from the concatenated width to the token
  width, plus a parallel convolution module (PCM: three grouped 3x3 convs with BN and SiLU, strided like the PRM)
  of the cell input, then a width-preserving MLP (ratio 1) with its own residual.
* NC: ``x + VSA(norm1(x + dwconv7x7(x))) + PCM(x)``, then an MLP (ratio 4) residual; LayerNorm eps 1e-6.
* Head: mean over tokens and a linear classifier (no final norm).

Changes from the official code: any input size >= 32 runs, square or not. The official classification model is
fixed to its ``img_size`` (and builds its sampling grid with ``.cuda()`` at construction); here the grid is
computed per forward on the input's device, and each RC pads its input at the bottom/right to a multiple of its
stride so that the PRM and PCM branches agree in size (both then give ``ceil(H / stride)``). Windows are padded
at the bottom/right as the classification code does (its detection code centres the padding); at sizes that need
no padding the numerics are the official ones. Modules are ``stages.{i}.{downsample (RC), blocks (NCs)}`` with the
official submodule names; :func:`checkpoint_filter_fn` remaps official checkpoints.
"""

from __future__ import annotations

import re

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import DropPath, Mlp
from timm.models import generate_default_cfgs, register_model

from ..hub import convert_checkpoint
from ..layers import VaryingSizeWindowAttention
from ..ops import padded_size
from ._contract import DownsampleStage, HierarchicalBackbone, drop_path_rates
from ._factory import create_backbone, imagenet_cfg
from ._papers import PAPERS

__all__ = ["ViTAEv2VSA"]


def _conv_bn_silu_stack(widths: tuple[int, int, int, int], strides: tuple[int, int, int], groups: int):
    """PCM: conv3x3 -> BN -> SiLU -> conv3x3 -> BN -> SiLU -> conv3x3 through ``widths``, all grouped; module
    indices as in the official code."""
    c0, c1, c2, c3 = widths
    return nn.Sequential(
        nn.Conv2d(c0, c1, 3, strides[0], 1, groups=groups),
        nn.BatchNorm2d(c1),
        nn.SiLU(inplace=True),
        nn.Conv2d(c1, c2, 3, strides[1], 1, groups=groups),
        nn.BatchNorm2d(c2),
        nn.SiLU(inplace=True),
        nn.Conv2d(c2, c3, 3, strides[2], 1, groups=groups),
    )


class PyramidReduction(nn.Module):
    """PRM: one strided conv per dilation (each followed by GELU), concatenated dilation-major along channels."""

    def __init__(self, in_chs: int, embed_dim: int, kernel_size: int, stride: int, dilations: tuple[int, ...]):
        super().__init__()
        self.convs = nn.ModuleList()
        for d in dilations:
            # the padding that makes every dilation give ceil(H / stride) outputs on a stride-divisible input
            padding = -(-((kernel_size - 1) * d + 1 - stride) // 2)
            conv = nn.Conv2d(in_chs, embed_dim, kernel_size, stride, padding, dilation=d)
            self.convs.append(nn.Sequential(conv, nn.GELU()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([conv(x) for conv in self.convs], dim=1)  # B, embed * len(dilations), H', W'


class ReductionCell(nn.Module):
    """Downsampling cell: NCHW in, ``[B, H / stride, W / stride, token_dim]`` out."""

    def __init__(
        self,
        in_chs: int,
        embed_dim: int,
        token_dim: int,
        stride: int,
        kernel_size: int,
        dilations: tuple[int, ...],
        num_heads: int,
        group: int,
        wide_pcm: bool,
        window_size: int,
    ):
        super().__init__()
        self.stride = stride
        prm_dim = embed_dim * len(dilations)
        self.PRM = PyramidReduction(in_chs, embed_dim, kernel_size, stride, dilations)
        self.pos = nn.Conv2d(prm_dim, prm_dim, 7, 1, 3, groups=prm_dim)
        self.norm1 = nn.LayerNorm(prm_dim, eps=1e-5)
        self.attn = VaryingSizeWindowAttention(prm_dim, num_heads, token_dim, window_size)
        pcm_strides = (2, 2, 1) if stride == 4 else (2, 1, 1)
        hidden = 2 * token_dim if wide_pcm else embed_dim
        self.PCM = _conv_bn_silu_stack((in_chs, hidden, hidden, token_dim), pcm_strides, group)
        self.norm2 = nn.LayerNorm(token_dim, eps=1e-5)
        self.mlp = Mlp(token_dim, token_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        # PRM and PCM agree on stride-divisible sizes
        x = F.pad(x, (0, padded_size(w, self.stride) - w, 0, padded_size(h, self.stride) - h))
        p = self.PRM(x)
        p = p + self.pos(p)
        t = self.attn(self.norm1(p.permute(0, 2, 3, 1)))  # B, H', W', token_dim
        t = t + self.PCM(x).permute(0, 2, 3, 1)
        return t + self.mlp(self.norm2(t))


class NormalCell(nn.Module):
    """``[B, H, W, C]`` in and out: VSA and the PCM in parallel, then the MLP."""

    def __init__(
        self, dim: int, num_heads: int, group: int, window_size: int, mlp_ratio: float = 4.0, drop_path: float = 0.0
    ):
        super().__init__()
        self.pos = nn.Conv2d(dim, dim, 7, 1, 3, groups=dim)
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = VaryingSizeWindowAttention(dim, num_heads, dim, window_size)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.PCM = _conv_bn_silu_stack((dim, int(dim * mlp_ratio), dim, dim), (1, 1, 1), group)
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        image = x.permute(0, 3, 1, 2)  # B, C, H, W
        with_pos = x + self.pos(image).permute(0, 2, 3, 1)  # the conv position encoding feeds attention only
        x = x + self.drop_path(self.attn(self.norm1(with_pos))) + self.drop_path(self.PCM(image).permute(0, 2, 3, 1))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class ViTAEv2VSA(HierarchicalBackbone):
    """ViTAEv2*-VSA with the timm model contract.

    Args:
        embed_dims: PRM width per dilation, per stage.
        token_dims: stage output widths.
        depths: normal cells per stage.
        nc_heads / rc_heads: attention heads of the normal / reduction cells per stage.
        wide_pcm: RC convolution branch at twice the token width (48M, B) instead of the PRM width (S).
        nc_groups / rc_groups: groups of the PCM convs per stage.
    """

    def __init__(
        self,
        embed_dims: tuple[int, ...] = (64, 64, 128, 256),
        token_dims: tuple[int, ...] = (64, 128, 256, 512),
        depths: tuple[int, ...] = (2, 2, 8, 2),
        nc_heads: tuple[int, ...] = (2, 4, 8, 16),
        rc_heads: tuple[int, ...] = (2, 2, 4, 8),
        wide_pcm: bool = False,
        nc_groups: tuple[int, ...] = (1, 32, 64, 128),
        rc_groups: tuple[int, ...] = (1, 16, 32, 64),
        window_size: int = 7,
        mlp_ratio: float = 4.0,
        in_chans: int = 3,
        num_classes: int = 1000,
        global_pool: str = "avg",
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
    ):
        super().__init__(num_classes, in_chans, global_pool, drop_rate)
        strides, kernels = (4, 2, 2, 2), (7, 3, 3, 3)
        dilations = ((1, 2, 3, 4), (1, 2, 3), (1, 2), (1, 2))
        dpr = drop_path_rates(drop_path_rate, depths)
        self.stem = nn.Identity()
        stages, in_chs, self.feature_info, reduction = [], in_chans, [], 1
        for i in range(4):
            rc = ReductionCell(
                in_chs,
                embed_dims[i],
                token_dims[i],
                strides[i],
                kernels[i],
                dilations[i],
                rc_heads[i],
                rc_groups[i],
                wide_pcm,
                window_size,
            )
            blocks = [
                NormalCell(token_dims[i], nc_heads[i], nc_groups[i], window_size, mlp_ratio, dpr[i][j])
                for j in range(depths[i])
            ]
            stages.append(DownsampleStage(rc, blocks, channels_last_blocks=True, downsample_channels_last=True))
            in_chs, reduction = token_dims[i], reduction * strides[i]
            self.feature_info.append(dict(num_chs=in_chs, reduction=reduction, module=f"stages.{i}"))
        self.stages = nn.Sequential(*stages)
        self.norm = nn.Identity()
        self.build_head(in_chs)
        self.apply(self._init_weights)

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        return {n for n, _ in self.named_parameters() if n.endswith("relative_position_bias_table")}


def _official_key(key: str) -> str:
    key = re.sub(r"^layers\.(\d+)\.RC\.", r"stages.\1.downsample.", key)
    key = re.sub(r"^layers\.(\d+)\.NC\.(\d+)\.", r"stages.\1.blocks.\2.", key)
    # the regression convs are the last element of the official Sequential(AvgPool, LeakyReLU, Conv)
    return re.sub(r"\.attn\.sampling_(offsets|scales)\.2\.", r".attn.sampling_\1.", key)


def checkpoint_filter_fn(state_dict: dict, model: ViTAEv2VSA) -> dict[str, torch.Tensor]:
    """Map an official ViTAEv2-VSA checkpoint (timm training output, EMA weights preferred) onto this model.

    Drops the ``relative_position_index`` buffers (rebuilt at run time) and turns the 1x1-conv ``qkv`` / ``proj``
    weights into linear ones. Checkpoints already in vitzoo's layout pass through unchanged; a mismatch raises
    :class:`vitzoo.hub.CheckpointError` listing missing, unexpected and mis-shaped keys.
    """
    return convert_checkpoint(state_dict, model, ("layers.",), _official_item)


def _official_item(key: str, value: torch.Tensor) -> tuple[str, torch.Tensor] | None:
    if key.endswith("relative_position_index"):
        return None
    key = _official_key(key)
    if re.search(r"\.attn\.(qkv|proj)\.weight$", key) and value.dim() == 4:
        value = value.flatten(1)  # 1x1 conv [out, in, 1, 1] -> linear [out, in]
    return key, value


def _create_vitaev2_vsa(variant: str, pretrained: bool = False, **kwargs) -> ViTAEv2VSA:
    return create_backbone(ViTAEv2VSA, variant, pretrained, checkpoint_filter_fn, **kwargs)


def _cfg(**kwargs) -> dict:
    family = dict(
        crop_pct=0.9,
        first_conv="stages.0.downsample.PRM.convs.0.0",
        **PAPERS["vitaev2_vsa"].cfg_fields(),
    )
    return imagenet_cfg(**{**family, **kwargs})


# the released weights are OneDrive share pages (no direct file link); the B (ImageNet-22k) weights were announced
# but never published
_ONEDRIVE_NOTE = (
    "Official weights: OneDrive share pages (no direct file link) listed in "
    "https://github.com/ViTAE-Transformer/ViTAE-VSA. Download the checkpoint.",
)
default_cfgs = generate_default_cfgs(
    {
        "vitzoo_vitaev2_vsa_s": _cfg(notes=_ONEDRIVE_NOTE),
        "vitzoo_vitaev2_vsa_48m": _cfg(notes=_ONEDRIVE_NOTE),
        "vitzoo_vitaev2_vsa_b": _cfg(notes=("The ImageNet-22k weights of B were announced but never published.",)),
    }
)


@register_model
def vitzoo_vitaev2_vsa_s(pretrained: bool = False, **kwargs) -> ViTAEv2VSA:
    model_args = dict(
        embed_dims=(64, 64, 128, 256),
        token_dims=(64, 128, 256, 512),
        depths=(2, 2, 8, 2),
        nc_heads=(2, 4, 8, 16),
        rc_heads=(2, 2, 4, 8),
        wide_pcm=False,
    )
    return _create_vitaev2_vsa("vitzoo_vitaev2_vsa_s", pretrained, **dict(model_args, **kwargs))


@register_model
def vitzoo_vitaev2_vsa_48m(pretrained: bool = False, **kwargs) -> ViTAEv2VSA:
    model_args = dict(
        embed_dims=(96, 96, 192, 384),
        token_dims=(96, 192, 384, 768),
        depths=(2, 2, 11, 2),
        nc_heads=(3, 6, 12, 24),
        rc_heads=(3, 6, 12, 24),
        wide_pcm=True,
    )
    return _create_vitaev2_vsa("vitzoo_vitaev2_vsa_48m", pretrained, **dict(model_args, **kwargs))


@register_model
def vitzoo_vitaev2_vsa_b(pretrained: bool = False, **kwargs) -> ViTAEv2VSA:
    model_args = dict(
        embed_dims=(128, 128, 256, 512),
        token_dims=(128, 256, 512, 1024),
        depths=(2, 2, 12, 2),
        nc_heads=(4, 8, 16, 32),
        rc_heads=(4, 8, 16, 32),
        wide_pcm=True,
    )
    return _create_vitaev2_vsa("vitzoo_vitaev2_vsa_b", pretrained, **dict(model_args, **kwargs))
