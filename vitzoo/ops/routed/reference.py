"""Plain-PyTorch region-routed attention: the specification of :func:`vitzoo.ops.region_routed_attention`.

It copies the key/value tokens of the selected regions (one row gather per selected region), which costs ``topk``
times the memory of k and v; fast backends gather by index inside the kernel instead.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .._common import known_true
from .routing import from_regions, region_size, route, to_regions, valid_tokens


def can_run(*args, **kwargs) -> str | None:
    return None


def gather_regions(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``x[b, index[b, r, j]]`` for every query region: ``[B, R, T, C]``, ``[B, R, k]`` -> ``[B, R, k * T, C]``.

    Row indexing of the flattened ``(B * R)`` region axis copies whole regions, which is several times faster on
    CPU than ``torch.gather`` over an expanded view (the official code's way).
    """
    b, n_reg, tokens, c = x.shape
    topk = index.shape[-1]
    offset = torch.arange(b, device=x.device).view(b, 1, 1) * n_reg
    rows = x.reshape(b * n_reg, tokens, c)[(index + offset).reshape(-1)]  # B*R*k, T, C
    return rows.view(b, n_reg, topk * tokens, c)


def forward(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    num_regions: int,
    topk: int,
    num_heads: int,
    scale: float | None = None,
) -> torch.Tensor:
    b, h, w, c = q.shape
    cv = v.shape[-1]
    rh, rw = region_size(h, w, num_regions)
    padded = not (known_true(num_regions * rh == h) and known_true(num_regions * rw == w))
    qr, kr, vr = (
        to_regions(q, num_regions, rh, rw),
        to_regions(k, num_regions, rh, rw),
        to_regions(v, num_regions, rh, rw),
    )
    valid: torch.Tensor | None = None  # R, T
    if padded:
        valid = valid_tokens(h, w, num_regions, rh, rw, q.device)
    index = route(qr, kr, valid, topk)  # B, R, topk
    n_reg, tokens = qr.shape[1], qr.shape[2]
    k_sel, v_sel = gather_regions(kr, index), gather_regions(vr, index)  # B, R, topk*T, C

    attn_mask: torch.Tensor | None = None
    if valid is not None:
        key_valid = valid[index].reshape(b * n_reg, 1, 1, topk * tokens)  # (B*R), 1, 1, topk*T
        attn_mask = torch.zeros(key_valid.shape, dtype=q.dtype, device=q.device).masked_fill(~key_valid, float("-inf"))
    out = F.scaled_dot_product_attention(
        _heads_first(qr, num_heads),
        _heads_first(k_sel, num_heads),
        _heads_first(v_sel, num_heads),
        attn_mask=attn_mask,
        scale=scale,
    )  # (B*R), heads, T, Cv/heads
    out = out.transpose(1, 2).reshape(b, n_reg, tokens, cv)
    return from_regions(out, num_regions, rh, rw, h, w)


def _heads_first(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    """``[B, R, L, C]`` -> ``[B * R, heads, L, C / heads]`` as a strided view: CPU flash attention reads it without
    a copy, and 4-D inputs keep SDPA off its slow "math" fallback."""
    b, n_reg, length, c = x.shape
    return x.reshape(b * n_reg, length, num_heads, c // num_heads).transpose(1, 2)
