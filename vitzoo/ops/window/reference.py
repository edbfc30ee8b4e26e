"""Plain-PyTorch window attention: the specification of :func:`vitzoo.ops.window_attention`."""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from .._common import crop_hw, known_true, pad_hw, padded_size, symbolic, traceable_grid


def can_run(*args, **kwargs) -> str | None:
    return None


def window_partition(x: torch.Tensor, wh: int, ww: int, dh: int = 1, dw: int = 1) -> torch.Tensor:
    """``[B, Hp, Wp, heads, D]`` -> ``[B, nW, heads, wh * ww, D]``, windows in the op's row-major window grid.

    ``Hp`` and ``Wp`` must be multiples of ``wh * dh`` and ``ww * dw``; a window holds the tokens of one
    ``(wh * dh) x (ww * dw)`` block that share ``(row % dh, col % dw)``.
    """
    b, hp, wp, heads, d = x.shape
    x = x.view(b, hp // (wh * dh), wh, dh, wp // (ww * dw), ww, dw, heads, d)  # B, nbh, wh, dh, nbw, ww, dw, heads, D
    x = x.permute(0, 1, 3, 4, 6, 7, 2, 5, 8)  # B, nbh, dh, nbw, dw, heads, wh, ww, D
    return x.reshape(b, -1, heads, wh * ww, d)  # B, nW, heads, N, D


def window_reverse(x: torch.Tensor, wh: int, ww: int, hp: int, wp: int, dh: int = 1, dw: int = 1) -> torch.Tensor:
    """Inverse of :func:`window_partition`: ``[B, nW, heads, N, D]`` -> ``[B, Hp, Wp, heads, D]``."""
    b, _, heads, _, d = x.shape
    x = x.view(b, hp // (wh * dh), dh, wp // (ww * dw), dw, heads, wh, ww, d)  # B, nbh, dh, nbw, dw, heads, wh, ww, D
    x = x.permute(0, 1, 6, 2, 3, 7, 4, 5, 8)  # B, nbh, wh, dh, nbw, ww, dw, heads, D
    return x.reshape(b, hp, wp, heads, d)


def padding_key_mask(
    h: int,
    w: int,
    wh: int,
    ww: int,
    device: torch.device,
    dh: int = 1,
    dw: int = 1,
    hp: int | None = None,
    wp: int | None = None,
) -> torch.Tensor:
    """Bool ``[nW, N]``: True where the key is a real token, False where it is bottom/right padding (of the map
    padded to ``hp x wp``, by default the smallest multiples of the window's extent).

    A window made of padding only (possible when ``dilation > 1``) is left all True: its queries are padding too,
    so its outputs are dropped, and leaving it unmasked keeps the softmax finite on every kernel (torch's CPU SDPA
    returns zeros for a fully masked row, but other kernels and the plain softmax give NaN, and NaN gradients).
    """
    hp = padded_size(h, wh * dh) if hp is None else hp
    wp = padded_size(w, ww * dw) if wp is None else wp
    # built from comparisons, not by filling a slice: a traced slice of a symbolic size would pin the padding
    rows = torch.arange(hp, device=device) < h
    cols = torch.arange(wp, device=device) < w
    valid = (rows[:, None] & cols[None, :])[None, :, :, None, None]  # 1, Hp, Wp, 1, 1
    valid = window_partition(valid, wh, ww, dh, dw)[0, :, 0, :, 0]  # nW, N
    return valid | ~valid.any(dim=-1, keepdim=True)


def _build_region_mask(
    h: int, w: int, wh: int, ww: int, sh: int, sw: int, hp: int, wp: int, device: torch.device
) -> torch.Tensor:
    # roll region of every token of the rolled, padded map: rows [H - sh, Hp) are one region (the wrapped rows, and
    # with them the bottom padding), rows [0, H - sh) the other; columns alike. Where the padding goes only matters
    # for padded queries, whose outputs are dropped: with it in the wrapped region, the window of a padded query
    # holds a real key of its region (in row H - 1 if the query is a padded row, in column W - 1 if a padded
    # column), so no softmax row is left empty (which would give NaN, and NaN gradients to the window's keys).
    rows = torch.arange(hp, device=device) >= _wrapped_from(h, sh, wh, hp)
    cols = torch.arange(wp, device=device) >= _wrapped_from(w, sw, ww, wp)
    region = (rows[:, None] * 2 + cols[None, :]).to(torch.int8)  # Hp, Wp: codes 0..3
    region = window_partition(region[None, :, :, None, None], wh, ww)[0, :, 0, :, 0]  # nW, N
    return region[:, :, None] == region[:, None, :]  # nW, N (queries), N (keys)


def _wrapped_from(size: int, shift: int, window: int, padded: int) -> int:
    """The first rolled row (or column) of the wrapped region: ``size - shift``, or past the padded map without a
    shift (a shift that is symbolic may be 0: ``0 <= shift < window``, so ``ceil(shift / window)`` says which)."""
    if torch.jit.is_scripting():  # its own statement: TorchScript then leaves the symbolic path uncompiled
        return size - shift if shift else padded
    if not symbolic(shift):
        return size - shift if shift else padded
    is_shifted = (shift + window - 1) // window  # 1 or 0
    return size - shift + (1 - is_shifted) * padded


@functools.lru_cache(maxsize=32)
def _cached_region_mask(
    h: int, w: int, wh: int, ww: int, sh: int, sw: int, hp: int, wp: int, device: torch.device
) -> torch.Tensor:
    return _build_region_mask(h, w, wh, ww, sh, sw, hp, wp, device)


def _region_mask(
    h: int, w: int, wh: int, ww: int, sh: int, sw: int, hp: int, wp: int, device: torch.device
) -> torch.Tensor:
    """Bool ``[nW, N, N]``: True where query and key of a window of the rolled map, padded to ``hp x wp``, share a
    roll region.

    Cached per shape and device. NOTE: the cached tensor is shared, so it is only read here (combined into a fresh
    additive mask) and never handed to callers. Under ``torch.compile`` and TorchScript it is built in the graph
    instead (Dynamo would ignore the cache and warn; TorchScript has no cache).
    """
    if torch.jit.is_scripting():
        return _build_region_mask(h, w, wh, ww, sh, sw, hp, wp, device)
    if torch.compiler.is_compiling():
        return _build_region_mask(h, w, wh, ww, sh, sw, hp, wp, device)
    return _cached_region_mask(h, w, wh, ww, sh, sw, hp, wp, device)


def forward(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    window_size: tuple[int, int],
    dilation: tuple[int, int] = (1, 1),
    shift: tuple[int, int] = (0, 0),
    bias: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
    scale: float | None = None,
) -> torch.Tensor:
    wh, ww = window_size
    dh, dw = dilation
    sh, sw = shift
    b, h, w, heads, _ = q.shape
    shifted = not (known_true(sh == 0) and known_true(sw == 0))  # a symbolic shift (0 at some sizes) counts
    if shifted:  # Swin's cyclic shift: the map rolled up/left, windows cut from the rolled map
        q, k, v = _roll(q, -sh, -sw), _roll(k, -sh, -sw), _roll(v, -sh, -sw)
    if mask is not None or (known_true(h == wh * dh) and known_true(w == ww * dw)):
        # a caller's per-window mask fixes the window grid; a window of the whole map has no other
        hp, wp = padded_size(h, wh * dh), padded_size(w, ww * dw)
    else:
        hp, wp = traceable_grid(h, w, wh * dh, ww * dw)
    n_win, n = (hp // wh) * (wp // ww), wh * ww
    padded = not (known_true(hp == h) and known_true(wp == w))
    whole_map = known_true(n_win == 1) and not padded  # one window is the whole map: a strided view, no partition copy
    qw = _windows(q, whole_map, wh, ww, dh, dw, hp, wp)
    kw = _windows(k, whole_map, wh, ww, dh, dw, hp, wp)
    vw = _windows(v, whole_map, wh, ww, dh, dw, hp, wp)

    attn_mask: torch.Tensor | None = None  # additive float, [nW | 1, heads | 1, N, N] until flattened
    if bias is not None:
        attn_mask = bias.to(q.dtype)[None]
    if mask is not None:
        extra = mask[:, None]
        if extra.dtype == torch.bool:
            extra = torch.zeros_like(extra, dtype=q.dtype).masked_fill(~extra, float("-inf"))
        attn_mask = extra.to(q.dtype) if attn_mask is None else attn_mask + extra.to(q.dtype)
    allowed: torch.Tensor | None = None  # bool, [nW, 1, N | 1, N]: keys a query may attend to (real keys of its
    # own roll region)
    if padded:
        allowed = padding_key_mask(h, w, wh, ww, q.device, dh, dw, hp, wp)[:, None, None, :]  # nW, 1, 1, N
    if shifted:
        region = _region_mask(h, w, wh, ww, sh, sw, hp, wp, q.device)[:, None]  # nW, 1, N, N
        allowed = region if allowed is None else region & allowed
    if allowed is not None:
        blocked = torch.zeros(allowed.shape, dtype=q.dtype, device=q.device).masked_fill(~allowed, float("-inf"))
        attn_mask = blocked if attn_mask is None else attn_mask + blocked
    if attn_mask is not None:
        attn_mask = attn_mask.expand(n_win, heads, -1, n).reshape(1, n_win * heads, -1, n)

    out = F.scaled_dot_product_attention(qw, kw, vw, attn_mask=attn_mask, scale=scale)  # B, nW*heads, N, Dv
    if whole_map:
        out = out.transpose(1, 2).reshape(b, h, w, heads, -1)
    else:
        out = window_reverse(out.unflatten(1, (n_win, heads)), wh, ww, hp, wp, dh, dw)
        out = crop_hw(out, h, w) if padded else out
    return _roll(out, sh, sw) if shifted else out


def _roll(x: torch.Tensor, sh: int, sw: int) -> torch.Tensor:
    if torch.jit.is_scripting():  # its own statement: TorchScript then leaves the symbolic path uncompiled
        return torch.roll(x, shifts=(sh, sw), dims=(1, 2))
    if symbolic(sh, sw):
        return _gather_roll(_gather_roll(x, sh, 1), sw, 2)
    return torch.roll(x, shifts=(sh, sw), dims=(1, 2))


def _gather_roll(x: torch.Tensor, shift: int, dim: int) -> torch.Tensor:
    # torch.roll by a symbolic amount, as a gather: roll's slicing would ask whether the amount is 0 and pin it
    n = x.shape[dim]
    source = torch.arange(n, device=x.device) - shift  # out[i] = x[(i - shift) mod n], |shift| < n
    # wrapped with where, not %: ONNX export has no remainder by a symbolic size
    source = torch.where(source < 0, source + n, torch.where(source >= n, source - n, source))
    return x.index_select(dim, source)


def _windows(t: torch.Tensor, whole_map: bool, wh: int, ww: int, dh: int, dw: int, hp: int, wp: int) -> torch.Tensor:
    """``[B, H, W, heads, D]`` -> ``[B, nW * heads, N, D]``: folding windows into the head axis keeps SDPA 4-D (its
    fast CPU kernel) and lets one ``[nW * heads, N, N]`` mask broadcast over the batch."""
    b, h, w, heads, d = t.shape
    if whole_map:
        return t.reshape(b, h * w, heads, d).transpose(1, 2)  # B, heads, N, D
    return window_partition(pad_hw(t, hp - h, wp - w), wh, ww, dh, dw).flatten(1, 2)
