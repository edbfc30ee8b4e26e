"""The attention cores of the official implementations, restated in the op layer's tensor layout, for op benchmarks.

Each function computes what one of vitzoo's ops computes, the way the official code does it: explicit
``q @ k^T``, additive terms, ``softmax`` and ``@ v`` in eager PyTorch, with the layout copies the official code makes.
They are timing baselines (the "official" rows of ``bench_ops.py``); correctness is ``vitzoo.ops``' job, and
``tests/test_benchmarks.py`` checks that these agree with it.

* :func:`swin_window_attention`: Swin / CSWin / CrossFormer window attention (``window_partition``, matmul,
  bias and mask, softmax, matmul, ``window_reverse``);
* :func:`biformer_routed_attention`: BiFormer's ``ops/torch`` bi-level routing attention (region means, top-k,
  ``torch.gather`` of the selected key/value regions, matmul, softmax, matmul);
* :func:`halonet_attention`: timm's ``HaloAttn`` (``unfold`` of the haloed key windows, factorised relative logits
  built by padding and reshaping, softmax, matmul).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def swin_window_attention(q, k, v, window, bias=None, mask=None, scale=None):
    """``[B, H, W, heads, D]`` maps; ``bias [heads, N, N]``, ``mask [nW, N, N]``.

    Like the official Swin block, a map the window does not divide is zero-padded at the bottom/right before the
    partition and cropped after it, the padded keys taking part unmasked.
    """
    h0, w0 = q.shape[1:3]
    wh, ww = window
    pad_h, pad_w = -h0 % wh, -w0 % ww
    if pad_h or pad_w:
        q, k, v = (F.pad(t, (0, 0, 0, 0, 0, pad_w, 0, pad_h)) for t in (q, k, v))
    b, h, w, heads, d = q.shape
    scale = d**-0.5 if scale is None else scale

    def partition(t):  # -> B*nW, heads, N, D
        t = t.view(b, h // wh, wh, w // ww, ww, heads, t.shape[-1]).permute(0, 1, 3, 5, 2, 4, 6)
        return t.reshape(-1, heads, wh * ww, t.shape[-1])

    qw, kw, vw = partition(q), partition(k), partition(v)
    attn = (qw * scale) @ kw.transpose(-2, -1)  # B*nW, heads, N, N
    if bias is not None:
        attn = attn + bias[None]
    if mask is not None:
        n_win = mask.shape[0]
        attn = attn.view(b, n_win, heads, wh * ww, wh * ww) + mask[None, :, None]
        attn = attn.view(-1, heads, wh * ww, wh * ww)
    out = attn.softmax(dim=-1) @ vw  # B*nW, heads, N, Dv
    out = out.view(b, h // wh, w // ww, heads, wh, ww, -1).permute(0, 1, 4, 2, 5, 3, 6)
    return out.reshape(b, h, w, heads, -1)[:, :h0, :w0]


def biformer_routed_attention(q, k, v, num_regions, topk, num_heads, scale=None):
    """``[B, H, W, C]`` maps the region grid divides."""
    b, h, w, c = q.shape
    n = num_regions
    rh, rw = h // n, w // n
    scale = (c // num_heads) ** -0.5 if scale is None else scale

    def regions(t):  # -> B, R, T, C
        t = t.view(b, n, rh, n, rw, t.shape[-1]).permute(0, 1, 3, 2, 4, 5)
        return t.reshape(b, n * n, rh * rw, t.shape[-1])

    qr, kr, vr = regions(q), regions(k), regions(v)
    routing = (qr.mean(dim=2) * scale) @ kr.mean(dim=2).transpose(-1, -2)  # B, R, R
    index = torch.topk(routing.detach(), k=topk, dim=-1).indices  # B, R, topk
    # the official KVGather: expand the key/value regions for every query region, then gather top-k of them
    r = n * n

    def gather(t):  # -> B, R, topk, T, C
        expanded = t[:, None].expand(b, r, r, rh * rw, t.shape[-1])
        idx = index[..., None, None].expand(b, r, topk, rh * rw, t.shape[-1])
        return torch.gather(expanded, dim=2, index=idx)

    k_sel, v_sel = gather(kr), gather(vr)
    d, dv = c // num_heads, v.shape[-1] // num_heads
    qh = qr.view(b * r, rh * rw, num_heads, d).transpose(1, 2)  # B*R, heads, T, d
    kh = k_sel.view(b * r, topk * rh * rw, num_heads, d).permute(0, 2, 3, 1)  # B*R, heads, d, topk*T
    vh = v_sel.view(b * r, topk * rh * rw, num_heads, dv).transpose(1, 2)  # B*R, heads, topk*T, dv
    attn = ((qh * scale) @ kh).softmax(dim=-1)
    out = (attn @ vh).transpose(1, 2).reshape(b, n, n, rh, rw, -1).permute(0, 1, 3, 2, 4, 5)
    return out.reshape(b, h, w, -1)


def _rel_logits_1d(q, rel_k, permute_mask):
    """timm's ``rel_logits_1d``: ``q [B, H, W, D]`` against ``rel_k [2 * win - 1, D]`` -> ``[B, H, W, win, win]``
    rearranged by ``permute_mask``, the relative-to-absolute conversion done by padding and reshaping."""
    b, h, w, _ = q.shape
    rel_size = rel_k.shape[0]
    win_size = (rel_size + 1) // 2
    x = (q @ rel_k.transpose(-1, -2)).reshape(-1, w, rel_size)
    x_pad = F.pad(x, [0, 1]).flatten(1)
    x_pad = F.pad(x_pad, [0, rel_size - w])
    x_pad = x_pad.reshape(-1, w + 1, rel_size)
    x = x_pad[:, :w, win_size - 1 :]
    x = x.reshape(b, h, 1, w, win_size).expand(-1, -1, win_size, -1, -1)
    return x.permute(permute_mask)


def halonet_attention(q, k, v, block, halo, rel_h, rel_w, scale=None):
    """``q, k [B, H, W, heads, D]``, ``v [B, H, W, heads, Dv]`` (stride 1, sides divisible by ``block``), shared
    tables ``[2 * win - 1, D]``; keys beyond the border take part as zeros, as in timm.

    timm indexes a table by key window position minus query block position, ``kx - qx + win - 1``, where the op
    uses the pixel offset ``kx - (qx + halo) + win - 1``: timm's row ``r + halo`` is the op's row ``r``, so
    ``rel.roll(halo, 0)`` turns the op's tables into timm's.
    """
    b, h, w, heads, d = q.shape
    win = block + 2 * halo
    nbh, nbw = h // block, w // block
    scale = d**-0.5 if scale is None else scale
    qb = q.permute(0, 3, 4, 1, 2).reshape(b * heads, d, nbh, block, nbw, block).permute(0, 2, 4, 3, 5, 1)
    qb = qb.reshape(b * heads, nbh * nbw, block * block, d)  # B*heads, nB, block^2, D

    def windows(t):  # -> B*heads, nB, win^2, D
        t = t.permute(0, 3, 4, 1, 2).reshape(b * heads, t.shape[-1], h, w)
        t = F.pad(t, [halo, halo, halo, halo]).unfold(2, win, block).unfold(3, win, block)
        return t.reshape(b * heads, t.shape[1], nbh * nbw, win * win).permute(0, 2, 3, 1)

    kw, vw = windows(k), windows(v)
    # relative logits as timm's RelPosEmb: per block, queries [block, block], keys [win, win]
    qr = qb.reshape(-1, block, block, d)
    rel = _rel_logits_1d(qr, rel_w, (0, 1, 3, 2, 4)).reshape(-1, block * block, win * win)
    rel = rel + _rel_logits_1d(qr.transpose(1, 2), rel_h, (0, 3, 1, 4, 2)).reshape(-1, block * block, win * win)
    attn = (qb * scale) @ kw.transpose(-1, -2) + rel.view(b * heads, nbh * nbw, block * block, win * win)
    out = attn.softmax(dim=-1) @ vw  # B*heads, nB, block^2, Dv
    out = out.view(b, heads, nbh, nbw, block, block, -1).permute(0, 2, 4, 3, 5, 1, 6)
    return out.reshape(b, h, w, heads, -1)
