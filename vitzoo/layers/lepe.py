"""Locally-enhanced positional encoding (LePE): a depthwise conv whose output is added to attention's output."""

from __future__ import annotations

import torch
import torch.nn as nn


class LePE(nn.Module):
    """Depthwise ``kernel x kernel`` conv applied to a channels-last ``[B, H, W, C]`` map, returning the same layout.

    Used by CSWin (on V per stripe) and BiFormer (on V, or on the block input in global-attention stages).
    """

    def __init__(self, dim: int, kernel_size: int = 5):
        super().__init__()
        self.conv = nn.Conv2d(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)  # B, H, W, C
