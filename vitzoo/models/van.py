"""VAN: Visual Attention Network.

Paper: "Visual Attention Network", Guo et al., CVMJ 2023, arXiv:2202.09741.
Official code: https://github.com/Visual-Attention-Network/VAN-Classification (Apache-2.0).

Large Kernel Attention (LKA) decomposes a 21x21 convolution into a 5x5 depthwise conv, a 7x7 depthwise conv with
dilation 3 and a 1x1 conv, and uses the result as a multiplicative attention map. The network is four stages of
overlapping patch embedding (conv + BatchNorm), blocks of BN -> (1x1, GELU, LKA, 1x1 + inner shortcut) and
BN -> conv MLP with layer scale, and a LayerNorm after every stage.

Changes from the official code: stages are grouped as ``stages.{i}.{downsample,blocks,norm}`` (official checkpoints
are remapped by :func:`checkpoint_filter_fn`), the per-stage LayerNorm runs on NCHW maps (same numerics), the model
honours the whole timm contract (features, intermediates, grad checkpointing, classifier reset), and
``reset_classifier`` works (the official one reads an attribute that does not exist).
"""

from __future__ import annotations

import math
import re

import torch
import torch.nn as nn
from timm.layers import DropPath, LayerNorm2d, trunc_normal_
from timm.models import generate_default_cfgs, register_model
from timm.models._manipulate import checkpoint_seq

from ..hub import convert_checkpoint
from ._contract import HierarchicalBackbone, drop_path_rates
from ._factory import create_backbone, imagenet_cfg
from ._papers import PAPERS

__all__ = ["VAN"]


class LargeKernelAttention(nn.Module):
    """LKA: ``x * conv1x1(dw7x7_dilated3(dw5x5(x)))``, a 21x21 receptive field at depthwise cost."""

    def __init__(self, dim: int):
        super().__init__()
        self.conv0 = nn.Conv2d(dim, dim, 5, padding=2, groups=dim)
        self.conv_spatial = nn.Conv2d(dim, dim, 7, padding=9, groups=dim, dilation=3)
        self.conv1 = nn.Conv2d(dim, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.conv1(self.conv_spatial(self.conv0(x)))


class SpatialAttention(nn.Module):
    """1x1 -> GELU -> LKA -> 1x1, with its own shortcut (as in the official block)."""

    def __init__(self, dim: int):
        super().__init__()
        self.proj_1 = nn.Conv2d(dim, dim, 1)
        self.act = nn.GELU()
        self.lka = LargeKernelAttention(dim)
        self.proj_2 = nn.Conv2d(dim, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj_2(self.lka(self.act(self.proj_1(x)))) + x


class ConvMlp(nn.Module):
    """1x1 -> depthwise 3x3 -> GELU -> 1x1 (no activation between the first two, as in the official code)."""

    def __init__(self, dim: int, hidden: int, drop: float = 0.0):
        super().__init__()
        self.fc1 = nn.Conv2d(dim, hidden, 1)
        self.dwconv = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Conv2d(hidden, dim, 1)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.drop(self.act(self.dwconv(self.fc1(x))))
        return self.drop(self.fc2(x))


class VanBlock(nn.Module):
    def __init__(self, dim: int, mlp_ratio: float, drop: float = 0.0, drop_path: float = 0.0, ls_init: float = 1e-2):
        super().__init__()
        self.norm1 = nn.BatchNorm2d(dim)
        self.attn = SpatialAttention(dim)
        self.norm2 = nn.BatchNorm2d(dim)
        self.mlp = ConvMlp(dim, int(dim * mlp_ratio), drop)
        self.layer_scale_1 = nn.Parameter(ls_init * torch.ones(dim))
        self.layer_scale_2 = nn.Parameter(ls_init * torch.ones(dim))
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.layer_scale_1[:, None, None] * self.attn(self.norm1(x)))
        return x + self.drop_path(self.layer_scale_2[:, None, None] * self.mlp(self.norm2(x)))


class OverlapPatchEmbed(nn.Module):
    """Strided conv with ``padding = kernel // 2`` followed by BatchNorm."""

    def __init__(self, in_chans: int, dim: int, kernel: int, stride: int):
        super().__init__()
        self.proj = nn.Conv2d(in_chans, dim, kernel, stride=stride, padding=kernel // 2)
        self.norm = nn.BatchNorm2d(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(x))


class VanStage(nn.Module):
    def __init__(
        self,
        in_chans: int,
        dim: int,
        depth: int,
        kernel: int,
        stride: int,
        mlp_ratio: float,
        drop: float,
        drop_path: list[float],
        norm_eps: float,
    ):
        super().__init__()
        self.grad_checkpointing = False
        self.downsample = OverlapPatchEmbed(in_chans, dim, kernel, stride)
        self.blocks = nn.Sequential(*[VanBlock(dim, mlp_ratio, drop, drop_path[j]) for j in range(depth)])
        self.norm = LayerNorm2d(dim, eps=norm_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.downsample(x)
        if self.grad_checkpointing and not torch.jit.is_scripting():
            x = checkpoint_seq(self.blocks, x)
        else:
            x = self.blocks(x)
        return self.norm(x)


class VAN(HierarchicalBackbone):
    """Visual Attention Network: four LKA stages, per-stage LayerNorm, mean pooling and a linear classifier."""

    def __init__(
        self,
        in_chans: int = 3,
        num_classes: int = 1000,
        global_pool: str = "avg",
        embed_dims: tuple[int, ...] = (64, 128, 256, 512),
        depths: tuple[int, ...] = (3, 4, 6, 3),
        mlp_ratios: tuple[float, ...] = (8, 8, 4, 4),
        drop_rate: float = 0.0,
        proj_drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        norm_eps: float = 1e-6,
    ):
        super().__init__(num_classes, in_chans, global_pool, drop_rate)
        dpr = drop_path_rates(drop_path_rate, depths)
        self.stem = nn.Identity()  # the first stage's 7x7/4 patch embedding is the stem
        stages, prev, self.feature_info = [], in_chans, []
        for i, (dim, depth) in enumerate(zip(embed_dims, depths)):
            kernel, stride = (7, 4) if i == 0 else (3, 2)
            stages.append(VanStage(prev, dim, depth, kernel, stride, mlp_ratios[i], proj_drop_rate, dpr[i], norm_eps))
            self.feature_info.append(dict(num_chs=dim, reduction=4 * 2**i, module=f"stages.{i}"))
            prev = dim
        self.stages = nn.Sequential(*stages)
        self.norm = nn.Identity()  # every stage ends in its own LayerNorm
        self.build_head(embed_dims[-1])
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Conv2d):
            fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
            nn.init.normal_(m.weight, 0, math.sqrt(2.0 / fan_out))
            if m.bias is not None:
                nn.init.zeros_(m.bias)


_OFFICIAL_RENAMES = (
    (r"^patch_embed(\d)\.", lambda m: f"stages.{int(m.group(1)) - 1}.downsample."),
    (r"^block(\d)\.(\d+)\.", lambda m: f"stages.{int(m.group(1)) - 1}.blocks.{m.group(2)}."),
    (r"^norm(\d)\.", lambda m: f"stages.{int(m.group(1)) - 1}.norm."),
    (r"\.attn\.spatial_gating_unit\.", lambda m: ".attn.lka."),
    (r"\.mlp\.dwconv\.dwconv\.", lambda m: ".mlp.dwconv."),
)


def checkpoint_filter_fn(state_dict: dict, model: VAN) -> dict[str, torch.Tensor]:
    """Map an official VAN checkpoint (``{'state_dict': ...}`` from VAN-Classification) onto this model.

    Checkpoints already in vitzoo's layout pass through unchanged. The result is checked against the model; a
    mismatch raises :class:`vitzoo.hub.CheckpointError` listing missing, unexpected and mis-shaped keys.
    """
    return convert_checkpoint(state_dict, model, ("patch_embed1.",), lambda key, value: (_official_key(key), value))


def _official_key(key: str) -> str:
    for pattern, repl in _OFFICIAL_RENAMES:
        key = re.sub(pattern, repl, key)
    return key


def _create_van(variant: str, pretrained: bool = False, **kwargs) -> VAN:
    return create_backbone(VAN, variant, pretrained, checkpoint_filter_fn, **kwargs)


def _cfg(**kwargs) -> dict:
    # variants override these (dict merge: a repeated keyword would be an error)
    family = dict(
        first_conv="stages.0.downsample.proj",
        **PAPERS["van"].cfg_fields(),
    )
    return imagenet_cfg(**{**family, **kwargs})


default_cfgs = generate_default_cfgs(
    {
        # Official ImageNet-1k weights, published by the authors on the Hugging Face Hub (timm training checkpoints).
        "vitzoo_van_b0.official_in1k": _cfg(
            hf_hub_id="Visual-Attention-Network/VAN-Tiny-original", hf_hub_filename="van_tiny_754.pth.tar"
        ),
        "vitzoo_van_b1.official_in1k": _cfg(
            hf_hub_id="Visual-Attention-Network/VAN-Small-original", hf_hub_filename="van_small_811.pth.tar"
        ),
        "vitzoo_van_b2.official_in1k": _cfg(
            hf_hub_id="Visual-Attention-Network/VAN-Base-original", hf_hub_filename="van_base_828.pth.tar"
        ),
        "vitzoo_van_b3.official_in1k": _cfg(
            hf_hub_id="Visual-Attention-Network/VAN-Large-original", hf_hub_filename="van_large_839.pth.tar"
        ),
        # B4-B6: the authors released only ImageNet-22k pre-training (on Tsinghua Cloud, no per-file links).
        "vitzoo_van_b4": _cfg(),
        "vitzoo_van_b5": _cfg(),
        "vitzoo_van_b6": _cfg(),
    }
)


@register_model
def vitzoo_van_b0(pretrained: bool = False, **kwargs) -> VAN:
    model_args = dict(embed_dims=(32, 64, 160, 256), depths=(3, 3, 5, 2))
    return _create_van("vitzoo_van_b0", pretrained, **dict(model_args, **kwargs))


@register_model
def vitzoo_van_b1(pretrained: bool = False, **kwargs) -> VAN:
    model_args = dict(embed_dims=(64, 128, 320, 512), depths=(2, 2, 4, 2))
    return _create_van("vitzoo_van_b1", pretrained, **dict(model_args, **kwargs))


@register_model
def vitzoo_van_b2(pretrained: bool = False, **kwargs) -> VAN:
    model_args = dict(embed_dims=(64, 128, 320, 512), depths=(3, 3, 12, 3))
    return _create_van("vitzoo_van_b2", pretrained, **dict(model_args, **kwargs))


@register_model
def vitzoo_van_b3(pretrained: bool = False, **kwargs) -> VAN:
    model_args = dict(embed_dims=(64, 128, 320, 512), depths=(3, 5, 27, 3))
    return _create_van("vitzoo_van_b3", pretrained, **dict(model_args, **kwargs))


@register_model
def vitzoo_van_b4(pretrained: bool = False, **kwargs) -> VAN:
    model_args = dict(embed_dims=(64, 128, 320, 512), depths=(3, 6, 40, 3))
    return _create_van("vitzoo_van_b4", pretrained, **dict(model_args, **kwargs))


@register_model
def vitzoo_van_b5(pretrained: bool = False, **kwargs) -> VAN:
    model_args = dict(embed_dims=(96, 192, 480, 768), depths=(3, 3, 24, 3))
    return _create_van("vitzoo_van_b5", pretrained, **dict(model_args, **kwargs))


@register_model
def vitzoo_van_b6(pretrained: bool = False, **kwargs) -> VAN:
    model_args = dict(embed_dims=(96, 192, 384, 768), depths=(6, 6, 90, 6))
    return _create_van("vitzoo_van_b6", pretrained, **dict(model_args, **kwargs))
