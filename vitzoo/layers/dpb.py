"""Dynamic position bias (DPB): a relative position bias produced by a small MLP over the relative offsets."""

from __future__ import annotations

import torch
import torch.nn as nn


def relative_offset_index(gh: int, gw: int, device: torch.device | None = None) -> torch.Tensor:
    """``[N, N]`` long, ``N = gh * gw``: row of the ``(2gh-1) * (2gw-1)`` offset table for each (query, key) pair.

    Positions are numbered row-major; the table lists offsets ``(dy, dx)`` row-major with ``dy`` from ``1 - gh``
    to ``gh - 1``, so the pair (query ``(yq, xq)``, key ``(yk, xk)``) reads row
    ``(yq - yk + gh - 1) * (2gw - 1) + (xq - xk + gw - 1)``.
    """
    ys = torch.arange(gh, device=device).repeat_interleave(gw)  # N
    xs = torch.arange(gw, device=device).repeat(gh)  # N
    dy = ys[:, None] - ys[None, :] + gh - 1  # N, N
    dx = xs[:, None] - xs[None, :] + gw - 1
    return dy * (2 * gw - 1) + dx


class DynamicPosBias(nn.Module):
    """CrossFormer's DPB: ``Linear(2, p)`` then three ``LayerNorm -> ReLU -> Linear`` steps (the last to ``heads``).

    The MLP maps each relative offset ``(dy, dx)`` (in positions inside a group) to one bias per head, so the
    bias exists for any group size: :meth:`forward` takes the size at run time and returns ``[heads, N, N]``.
    Submodule names follow the official code (``pos_proj``, ``pos1..3``).
    """

    def __init__(self, hidden_dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.pos_proj = nn.Linear(2, hidden_dim)
        self.pos1 = nn.Sequential(nn.LayerNorm(hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, hidden_dim))
        self.pos2 = nn.Sequential(nn.LayerNorm(hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, hidden_dim))
        self.pos3 = nn.Sequential(nn.LayerNorm(hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, num_heads))

    def table(self, gh: int, gw: int) -> torch.Tensor:
        """``[(2gh-1) * (2gw-1), heads]``: the bias of every offset, offsets row-major as in the official code."""
        weight = self.pos_proj.weight
        dy = torch.arange(1 - gh, gh, device=weight.device, dtype=weight.dtype)
        dx = torch.arange(1 - gw, gw, device=weight.device, dtype=weight.dtype)
        offsets = torch.stack(torch.meshgrid(dy, dx, indexing="ij"), dim=-1).reshape(-1, 2)  # T, 2
        return self.pos3(self.pos2(self.pos1(self.pos_proj(offsets))))  # T, heads

    def forward(self, group_size: tuple[int, int]) -> torch.Tensor:
        gh, gw = group_size
        index = relative_offset_index(gh, gw, self.pos_proj.weight.device)  # N, N
        return self.table(gh, gw)[index].permute(2, 0, 1)  # heads, N, N
