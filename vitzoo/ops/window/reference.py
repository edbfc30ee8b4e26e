"""Plain-PyTorch window attention: the specification of :func:`vitzoo.ops.window_attention`."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .._common import pad_hw, padded_size


def can_run(*args, **kwargs) -> str | None:
    return None


def window_partition(x: torch.Tensor, wh: int, ww: int) -> torch.Tensor:
    """``[B, Hp, Wp, heads, D]`` -> ``[B, nW, heads, wh * ww, D]`` with windows in row-major order."""
    b, hp, wp, heads, d = x.shape
    x = x.view(b, hp // wh, wh, wp // ww, ww, heads, d)
    return x.permute(0, 1, 3, 5, 2, 4, 6).reshape(b, -1, heads, wh * ww, d)  # B, nW, heads, N, D


def window_reverse(x: torch.Tensor, wh: int, ww: int, hp: int, wp: int) -> torch.Tensor:
    """Inverse of :func:`window_partition`: ``[B, nW, heads, N, D]`` -> ``[B, Hp, Wp, heads, D]``."""
    b, _, heads, _, d = x.shape
    x = x.view(b, hp // wh, wp // ww, heads, wh, ww, d)
    return x.permute(0, 1, 4, 2, 5, 3, 6).reshape(b, hp, wp, heads, d)


def padding_key_mask(h: int, w: int, wh: int, ww: int, device: torch.device) -> torch.Tensor:
    """Bool ``[nW, N]``: True where the key is a real token, False where it is bottom/right padding."""
    hp, wp = padded_size(h, wh), padded_size(w, ww)
    valid = torch.zeros(hp, wp, dtype=torch.bool, device=device)
    valid[:h, :w] = True
    valid = valid.view(hp // wh, wh, wp // ww, ww).permute(0, 2, 1, 3)
    return valid.reshape(-1, wh * ww)


def forward(q, k, v, window_size, *, bias=None, mask=None, scale=None) -> torch.Tensor:
    wh, ww = window_size
    b, h, w, heads, _ = q.shape
    hp, wp = padded_size(h, wh), padded_size(w, ww)
    n_win, n = (hp // wh) * (wp // ww), wh * ww
    if n_win == 1:  # one window is the whole map: a strided view, no partition copy
        qw, kw, vw = (t.reshape(b, n, heads, t.shape[-1]).transpose(1, 2) for t in (q, k, v))  # B, heads, N, D
    else:
        # B, nW*heads, N, D: folding windows into the head axis keeps SDPA 4-D (its fast CPU kernel) and lets one
        # [nW*heads, N, N] mask broadcast over the batch
        qw, kw, vw = (window_partition(pad_hw(t, hp - h, wp - w), wh, ww).flatten(1, 2) for t in (q, k, v))

    attn_mask = None  # additive float, [nW, heads | 1, N, N] until flattened
    if bias is not None:
        attn_mask = bias.to(q.dtype)[None]
    if mask is not None:
        extra = mask[:, None]
        if extra.dtype == torch.bool:
            extra = torch.zeros_like(extra, dtype=q.dtype).masked_fill(~extra, float("-inf"))
        attn_mask = extra.to(q.dtype) if attn_mask is None else attn_mask + extra.to(q.dtype)
    if hp != h or wp != w:
        keys = padding_key_mask(h, w, wh, ww, q.device)[:, None, None, :]  # nW, 1, 1, N
        pad = torch.zeros(keys.shape, dtype=q.dtype, device=q.device).masked_fill(~keys, float("-inf"))
        attn_mask = pad if attn_mask is None else attn_mask + pad
    if attn_mask is not None:
        attn_mask = attn_mask.expand(n_win, heads, -1, n).reshape(1, n_win * heads, -1, n)

    out = F.scaled_dot_product_attention(qw, kw, vw, attn_mask=attn_mask, scale=scale)  # B, nW*heads, N, Dv
    if n_win == 1:
        return out.transpose(1, 2).reshape(b, h, w, heads, -1)
    out = window_reverse(out.unflatten(1, (n_win, heads)), wh, ww, hp, wp)
    return out[:, :h, :w] if (hp != h or wp != w) else out
