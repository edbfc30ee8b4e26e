"""Plain-PyTorch halo attention: the specification of :func:`vitzoo.ops.halo_attention`."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .._common import crop_hw, known_true, pad_hw, traceable_grid


def can_run(*args, **kwargs) -> str | None:
    return None


def key_windows(t: torch.Tensor, block_size: int, halo_size: int, hp: int, wp: int) -> torch.Tensor:
    """``[B, H, W, heads, D]`` -> ``[B, nB * heads, win * win, D]``: each block's haloed window, zeros outside."""
    b, h, w, heads, d = t.shape
    win = block_size + 2 * halo_size
    t = F.pad(t, (0, 0, 0, 0, halo_size, halo_size + wp - w, halo_size, halo_size + hp - h))
    t = t.unfold(1, win, block_size).unfold(2, win, block_size)  # B, nbh, nbw, heads, D, win, win
    return t.permute(0, 1, 2, 3, 5, 6, 4).reshape(b, -1, win * win, d)  # B, nB*heads, win*win, D


def outside_key_mask(
    h: int, w: int, block_size: int, halo_size: int, hp: int, wp: int, device: torch.device
) -> torch.Tensor:
    """Bool ``[nB, win * win]``: True for keys outside the ``h x w`` map (border halo and the padding up to the
    ``hp x wp`` block grid)."""
    inside = torch.zeros(1, h, w, 1, 1, dtype=torch.bool, device=device)
    inside = key_windows(inside.logical_not_(), block_size, halo_size, hp, wp)  # 1, nB, win*win, 1
    return ~inside[0, :, :, 0]


def relative_logits(
    qb: torch.Tensor, rel_pos: tuple[torch.Tensor, torch.Tensor], bq: int, stride: int, halo_size: int
) -> torch.Tensor:
    """``q . rel_h[dy] + q . rel_w[dx]`` for every query/key pair of a block: ``[B, nB, heads, bq*bq, win*win]``.

    ``qb`` is ``[B, nB, heads, bq, bq, D]``; query ``(qy, qx)`` of a block sits on window pixel
    ``(stride * qy + halo, stride * qx + halo)``.
    """
    rel_h, rel_w = rel_pos
    win = (rel_h.shape[-2] + 1) // 2
    # offset of window pixel ky from query qy, shifted to a table row: ky - (stride * qy + halo) + win - 1
    pos_q = torch.arange(bq, device=qb.device) * stride + halo_size
    rows = torch.arange(win, device=qb.device)[None, :] - pos_q[:, None] + win - 1  # bq, win
    if rel_h.dim() == 3:  # per-head tables
        rel_h, rel_w = rel_h[:, None], rel_w[:, None]  # heads, 1, R, D: broadcasts over (heads, qy)
    logits_h = qb @ rel_h.to(qb.dtype).transpose(-1, -2)  # B, nB, heads, bq, bq, R
    logits_w = qb @ rel_w.to(qb.dtype).transpose(-1, -2)
    # B, nB, heads, bq(qy), bq(qx), win: row ky for the h logits (indexed by qy), column kx for the w ones (by qx)
    logits_h = _take_last(logits_h, rows.view(1, 1, 1, bq, 1, win))
    logits_w = _take_last(logits_w, rows.view(1, 1, 1, 1, bq, win))
    out = logits_h[..., :, None] + logits_w[..., None, :]  # B, nB, heads, bq, bq, win, win
    return out.flatten(-2).flatten(-3, -2)  # B, nB, heads, bq*bq, win*win


def _take_last(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``torch.take_along_dim(x, index, dim=-1)`` for an ``index`` that broadcasts to ``x``'s leading dims.

    The index is expanded explicitly: ``take_along_dim`` broadcasts through concrete sizes, which pins the batch
    (and every other symbolic size) of a ``torch.export`` trace to the traced one.
    """
    return torch.gather(x, -1, index.expand(list(x.shape[:-1]) + [index.shape[-1]]))


def forward(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    block_size: int,
    halo_size: int,
    query_stride: int = 1,
    rel_pos: tuple[torch.Tensor, torch.Tensor] | None = None,
    mask_padding: bool = True,
    scale: float | None = None,
) -> torch.Tensor:
    b, h, w, heads, d = k.shape
    hq, wq = q.shape[1:3]
    bq = block_size // query_stride
    hp, wp = traceable_grid(h, w, block_size, block_size)  # blocks added in traces: their keys are masked or zeros
    nbh, nbw = hp // block_size, wp // block_size

    # blocks by unfold, not a reshape: q is usually a permuted conv output, and whether a reshape of that is a view
    # depends on which sizes are 1, which a traced program with symbolic sizes answers for the traced size only
    qb = pad_hw(q, nbh * bq - hq, nbw * bq - wq).unfold(1, bq, bq).unfold(2, bq, bq)  # B, nbh, nbw, heads, D, bq, bq
    qb = qb.permute(0, 1, 2, 3, 5, 6, 4)  # B, nbh, nbw, heads, bq, bq, D
    kw = key_windows(k, block_size, halo_size, hp, wp)  # B, nB*heads, win*win, D
    vw = key_windows(v, block_size, halo_size, hp, wp)

    attn_mask: torch.Tensor | None = None  # additive, [B | 1, nB*heads, bq*bq | 1, win*win]
    if rel_pos is not None:
        qb6 = qb.reshape(b, nbh * nbw, heads, bq, bq, d)
        attn_mask = relative_logits(qb6, rel_pos, bq, query_stride, halo_size).flatten(1, 2)
    if mask_padding and (halo_size > 0 or not (known_true(hp == h) and known_true(wp == w))):
        outside = outside_key_mask(h, w, block_size, halo_size, hp, wp, q.device)  # nB, win*win
        pad = torch.zeros(outside.shape, dtype=q.dtype, device=q.device).masked_fill_(outside, float("-inf"))
        pad = pad[:, None, None, :].expand(-1, heads, 1, -1).reshape(1, -1, 1, pad.shape[-1])  # 1, nB*heads, 1, N
        attn_mask = pad if attn_mask is None else attn_mask + pad

    qb = qb.reshape(b, nbh * nbw * heads, bq * bq, d)
    out = F.scaled_dot_product_attention(qb, kw, vw, attn_mask=attn_mask, scale=scale)  # B, nB*heads, bq*bq, Dv
    # reshape: the exporters' SDPA decompositions may return a layout that cannot be viewed this way
    out = out.reshape(b, nbh, nbw, heads, bq, bq, -1).permute(0, 1, 4, 2, 5, 3, 6)  # B, nbh, bq, nbw, bq, heads, Dv
    out = out.reshape(b, nbh * bq, nbw * bq, heads, -1)
    return crop_hw(out, hq, wq)
