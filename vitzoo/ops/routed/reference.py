"""Plain-PyTorch region-routed attention: the specification of :func:`vitzoo.ops.region_routed_attention`.

It copies the key/value tokens of the selected regions (``torch.gather``), which costs ``topk`` times the memory of
k and v; fast backends gather by index inside the kernel instead.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .routing import from_regions, region_size, route, to_regions, valid_tokens


def can_run(*args, **kwargs) -> str | None:
    return None


def forward(q, k, v, num_regions, topk, num_heads, *, scale=None) -> torch.Tensor:
    b, h, w, c = q.shape
    cv = v.shape[-1]
    rh, rw = region_size(h, w, num_regions)
    qr, kr, vr = (to_regions(t, num_regions, rh, rw) for t in (q, k, v))  # B, R, T, C
    valid = valid_tokens(h, w, num_regions, rh, rw, q.device)  # R, T
    index = route(qr, kr, valid, topk)  # B, R, topk
    n_reg, tokens = qr.shape[1], qr.shape[2]

    def gather(x: torch.Tensor) -> torch.Tensor:  # B, R, T, C -> B, R, topk * T, C
        src = x[:, None].expand(b, n_reg, n_reg, tokens, x.shape[-1])  # B, R(query), R(key), T, C
        idx = index[:, :, :, None, None].expand(b, n_reg, topk, tokens, x.shape[-1])
        return torch.gather(src, 2, idx).reshape(b, n_reg, topk * tokens, x.shape[-1])

    k_sel, v_sel = gather(kr), gather(vr)
    key_valid = valid[index].reshape(b, n_reg, 1, topk * tokens)  # B, R, 1, topk*T

    def heads_first(x: torch.Tensor) -> torch.Tensor:  # B, R, L, C -> B, R, heads, L, C / heads
        return x.unflatten(-1, (num_heads, x.shape[-1] // num_heads)).transpose(2, 3)

    attn_mask = None
    if num_regions * rh != h or num_regions * rw != w:  # padding present: mask padded keys
        attn_mask = torch.zeros(key_valid.shape, dtype=q.dtype, device=q.device)
        attn_mask = attn_mask.masked_fill(~key_valid, float("-inf"))[:, :, None]  # B, R, 1, 1, topk*T
    out = F.scaled_dot_product_attention(
        heads_first(qr), heads_first(k_sel), heads_first(v_sel), attn_mask=attn_mask, scale=scale
    )  # B, R, heads, T, Cv / heads
    out = out.transpose(2, 3).reshape(b, n_reg, tokens, cv)
    return from_regions(out, num_regions, rh, rw, h, w)
