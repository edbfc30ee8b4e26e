"""Varied-size window attention (VSA) as a layer: window regression, qkv, sampled-window attention, projection."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import register_notrace_function, trunc_normal_

from ..ops import sampled_window_attention
from ..ops._common import pad_hw
from ..ops.sampled import window_grid
from .dpb import relative_offset_index


@register_notrace_function  # whether to pad depends on the map size, which FX cannot branch on: it records one call
def pad_to_windows(x: torch.Tensor, window_size: int) -> torch.Tensor:
    """Zero-pad a ``[B, H, W, C]`` map at the bottom/right to the op's window grid
    (:func:`vitzoo.ops.sampled.window_grid`: multiples of ``window_size``, at least two windows per axis under a
    dynamic-shape trace)."""
    h, w = x.shape[1], x.shape[2]
    nh, nw = window_grid(h, w, window_size)
    return pad_hw(x, nh * window_size - h, nw * window_size - w)


class VaryingSizeWindowAttention(nn.Module):
    """VSA on a ``[B, H, W, dim]`` map, output ``[B, H, W, out_dim]``.

    Per ``window_size`` window, ``sampling_offsets`` and ``sampling_scales`` (1x1 convs after average pooling and
    LeakyReLU of the zero-padded input) give each head an ``(x, y)`` shift and scale of its key / value window;
    :func:`vitzoo.ops.sampled_window_attention` samples and attends. A learned relative-position bias table
    (``(2 ws - 1)^2 x heads``, Swin's indexing) is always on. The logit scale is ``(dim // heads) ** -0.5`` with
    ``dim`` the *input* width, as in the official code (it differs from the head width when ``dim != out_dim``).
    The regression convs start at zero, so training starts from plain window attention.
    """

    def __init__(self, dim: int, num_heads: int, out_dim: int | None = None, window_size: int = 7, qkv_bias=True):
        super().__init__()
        out_dim = out_dim or dim
        if out_dim % num_heads:
            raise ValueError(f"VaryingSizeWindowAttention: out_dim={out_dim} must be divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.window_size = window_size
        self.scale = (dim // num_heads) ** -0.5
        self.sampling_offsets = nn.Conv2d(dim, 2 * num_heads, 1)
        self.sampling_scales = nn.Conv2d(dim, 2 * num_heads, 1)
        self.qkv = nn.Linear(dim, 3 * out_dim, bias=qkv_bias)
        self.proj = nn.Linear(out_dim, out_dim)
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window_size - 1) ** 2, num_heads))
        trunc_normal_(self.relative_position_bias_table, std=0.02)
        for conv in (self.sampling_offsets, self.sampling_scales):
            nn.init.zeros_(conv.weight)
            nn.init.zeros_(conv.bias)

    def relative_position_bias(self) -> torch.Tensor:
        """``[heads, N, N]``; the index is rebuilt on the table's device (cheap) rather than kept as a buffer."""
        ws = self.window_size
        index = relative_offset_index(ws, ws, device=self.relative_position_bias_table.device)
        return self.relative_position_bias_table[index].permute(2, 0, 1)  # heads, N, N

    def window_regression(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(offsets, scales)``, each ``[B, heads, 2, nH, nW]``, from the zero-padded input map."""
        ws = self.window_size
        pooled = pad_to_windows(x, ws).permute(0, 3, 1, 2)  # B, C, Hp, Wp
        pooled = F.leaky_relu(F.avg_pool2d(pooled, ws), 0.01)  # B, C, nH, nW
        offsets = self.sampling_offsets(pooled).unflatten(1, (self.num_heads, 2))  # B, heads, 2, nH, nW
        scales = self.sampling_scales(pooled).unflatten(1, (self.num_heads, 2))
        return offsets, scales

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, _ = x.shape
        offsets, scales = self.window_regression(x)
        q, k, v = self.qkv(x).view(b, h, w, 3, self.num_heads, -1).unbind(3)  # B, H, W, heads, d
        out = sampled_window_attention(
            q, k, v, self.window_size, offsets, scales, bias=self.relative_position_bias(), scale=self.scale
        )
        return self.proj(out.flatten(3))  # B, H, W, out_dim
