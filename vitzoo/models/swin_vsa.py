"""Swin Transformer with varied-size window attention (Swin-T / Swin-S + VSA).

Paper: "VSA: Learning Varied-Size Window Attention in Vision Transformers", Zhang et al., ECCV 2022,
arXiv:2204.08446 (Swin: Liu et al., ICCV 2021, arXiv:2103.14030). The authors announced but never released the
Swin+VSA code or weights (https://github.com/ViTAE-Transformer/ViTAE-VSA, MIT); this is vitzoo's own build.

Swin-T / Swin-S (4x4 patch embedding with LayerNorm, stages of pre-norm blocks at widths 96-768, heads 3-24,
7x7 windows, MLP ratio 4, patch merging between stages, final LayerNorm, mean pooling) whose window attention is
VSA in every block: the same qkv / projection / relative-position-bias table as Swin plus the two 1x1 window
regression convs per block, which is the whole parameter overhead the paper describes. Choices the release does
not pin down, made here: no shifted windows (VSA's learned windows already overlap across window borders, and
ViTAEv2-VSA uses none either); the regression convs start at zero, so training starts from Swin's plain windows.
Any input size >= 32 runs (patch embedding, merging and windows pad at the bottom/right).
"""

from __future__ import annotations

import torch
import torch.nn as nn
from timm.layers import DropPath, LayerNorm2d, Mlp
from timm.models import generate_default_cfgs, register_model

from ..hub import convert_checkpoint
from ..layers import VaryingSizeWindowAttention, swin_downsample
from ._contract import DownsampleStage, HierarchicalBackbone, drop_path_rates
from ._factory import create_backbone, imagenet_cfg
from ._papers import PAPERS

__all__ = ["SwinVSA"]


class SwinVSABlock(nn.Module):
    """Pre-norm transformer block on ``[B, H, W, C]`` with VSA as its token mixer."""

    def __init__(self, dim: int, num_heads: int, window_size: int, mlp_ratio: float, drop_path: float = 0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = VaryingSizeWindowAttention(dim, num_heads, dim, window_size)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class SwinVSA(HierarchicalBackbone):
    """Swin Transformer + VSA with the timm model contract."""

    def __init__(
        self,
        embed_dim: int = 96,
        depths: tuple[int, ...] = (2, 2, 6, 2),
        num_heads: tuple[int, ...] = (3, 6, 12, 24),
        window_size: int = 7,
        mlp_ratio: float = 4.0,
        in_chans: int = 3,
        num_classes: int = 1000,
        global_pool: str = "avg",
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.1,
    ):
        super().__init__(num_classes, in_chans, global_pool, drop_rate)
        self.stem = nn.Identity()
        dpr = drop_path_rates(drop_path_rate, depths)
        stages, self.feature_info = [], []
        for i, depth in enumerate(depths):
            dim = embed_dim * 2**i
            downsample = swin_downsample(i, in_chans, dim)
            blocks = [SwinVSABlock(dim, num_heads[i], window_size, mlp_ratio, dpr[i][j]) for j in range(depth)]
            stages.append(DownsampleStage(downsample, blocks, channels_last_blocks=True, downsample_channels_last=True))
            self.feature_info.append(dict(num_chs=dim, reduction=4 * 2**i, module=f"stages.{i}"))
        self.stages = nn.Sequential(*stages)
        self.norm = LayerNorm2d(dim, eps=1e-5)  # the official final norm is nn.LayerNorm (eps 1e-5), not timm's 1e-6
        self.build_head(dim)
        self.apply(self._init_weights)

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        return {n for n, _ in self.named_parameters() if n.endswith("relative_position_bias_table")}


def checkpoint_filter_fn(state_dict: dict, model: SwinVSA) -> dict[str, torch.Tensor]:
    """Load a Swin-VSA checkpoint in vitzoo's layout (no official release exists), EMA weights preferred.

    A mismatch raises :class:`vitzoo.hub.CheckpointError` listing missing, unexpected and mis-shaped keys.
    """
    return convert_checkpoint(state_dict, model)


def _create_swin_vsa(variant: str, pretrained: bool = False, **kwargs) -> SwinVSA:
    return create_backbone(SwinVSA, variant, pretrained, checkpoint_filter_fn, **kwargs)


def _cfg(**kwargs) -> dict:
    # Swin's evaluation transform (crop 0.9, bicubic)
    return imagenet_cfg(
        crop_pct=0.9, first_conv="stages.0.downsample.proj", **PAPERS["swin_vsa"].cfg_fields(), **kwargs
    )


default_cfgs = generate_default_cfgs({"vitzoo_swin_vsa_t": _cfg(), "vitzoo_swin_vsa_s": _cfg()})


@register_model
def vitzoo_swin_vsa_t(pretrained: bool = False, **kwargs) -> SwinVSA:
    model_args = dict(embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24), drop_path_rate=0.2)
    return _create_swin_vsa("vitzoo_swin_vsa_t", pretrained, **dict(model_args, **kwargs))


@register_model
def vitzoo_swin_vsa_s(pretrained: bool = False, **kwargs) -> SwinVSA:
    model_args = dict(embed_dim=96, depths=(2, 2, 18, 2), num_heads=(3, 6, 12, 24), drop_path_rate=0.3)
    return _create_swin_vsa("vitzoo_swin_vsa_s", pretrained, **dict(model_args, **kwargs))
