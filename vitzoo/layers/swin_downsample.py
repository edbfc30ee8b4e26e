"""Swin's stage entries on NCHW stage outputs: the 4x4 patch embedding and patch merging (timm's modules and keys).

Swin Transformer (Liu et al., ICCV 2021, arXiv:2103.14030, https://github.com/microsoft/Swin-Transformer, MIT).
Shared by the Swin-hosted models (Swin-VSA, Agent-, InLine- and FLatten-Swin), whose stages run on channels-last
maps and hand NCHW maps to the next stage.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import PatchEmbed
from timm.models.swin_transformer import PatchMerging

__all__ = ["NCHWPatchMerging", "swin_downsample"]


class NCHWPatchMerging(PatchMerging):
    """timm's Swin patch merging (2x2 neighbours concatenated, LayerNorm, linear to 2C) fed an NCHW stage output.

    The forward repeats timm's (same padding and neighbour order) rather than calling ``super().forward``, which
    TorchScript cannot compile.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        x = F.pad(x.permute(0, 2, 3, 1), (0, 0, 0, w % 2, 0, h % 2))  # B, H, W, C padded to even H, W
        x = x.reshape(b, (h + 1) // 2, 2, (w + 1) // 2, 2, c).permute(0, 1, 3, 4, 2, 5).flatten(3)
        return self.reduction(self.norm(x))  # B, H/2, W/2, 2C


def swin_downsample(stage: int, in_chans: int, dim: int) -> nn.Module:
    """Swin's stage entry, NCHW in and ``[B, H, W, dim]`` out: the 4x4 patch embedding with LayerNorm (padding inputs
    to a multiple of 4) for stage 0, patch merging of the previous stage's ``dim // 2`` channels after that."""
    if stage == 0:
        return PatchEmbed(
            img_size=None, patch_size=4, in_chans=in_chans, embed_dim=dim, norm_layer=nn.LayerNorm,
            output_fmt="NHWC", strict_img_size=False, dynamic_img_pad=True,
        )  # fmt: skip
    return NCHWPatchMerging(dim // 2, dim)
