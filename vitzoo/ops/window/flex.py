"""FlexAttention backend of :func:`vitzoo.ops.window_attention`: windows as a block mask, bias and mask as a score mod.

Tokens stay in row-major map order (no partition copy, no padding: padded keys simply do not exist); a query may
attend to a key when both fall in the same (possibly dilated) window, and ``score_mod`` adds the bias and mask
entries of their in-window positions. Swin's cyclic shift costs no copy either: each flat token index is mapped to
its row and column in the rolled map (``(row - sh) mod H``, ``(col - sw) mod W``), windows and positions are taken
there, and a query may attend to a key only when both also lie in one roll region. On CUDA the compiled kernel runs
forward and backward; on CPU torch offers Flex forward only, uncompiled (it materialises the scores), so there it
serves inference and tests and automatic choice leaves it out. Row-major tiles of 128 tokens cut across windows, so
this backend is a baseline for the Triton kernel rather than a rival (see ``benchmarks/results``).
"""

from __future__ import annotations

import functools

import torch
from torch.nn.attention.flex_attention import BlockMask, create_block_mask

from .._common import padded_size
from .._flex import flex_auto_reason, flex_reason, run_flex


def can_run(q, k, v, window_size, *, dilation=(1, 1), shift=(0, 0), bias=None, mask=None, scale=None) -> str | None:
    reason = flex_reason(q, q, k, v, bias, mask)
    if reason is None and mask is not None and mask.requires_grad and torch.is_grad_enabled():
        return "no gradient for a learned mask"
    return reason


def can_auto_select(q, *args, **kwargs) -> str | None:
    # the Triton kernel is listed first; Flex is chosen automatically only where Triton cannot run
    return flex_auto_reason(q)


def _window_of(row, col, wh, ww, dh, dw, windows_per_row):
    """Window index and in-window position of map token ``(row, col)`` (tensors), as the op defines them."""
    win_row = row // (wh * dh) * dh + row % dh
    win_col = col // (ww * dw) * dw + col % dw
    pos = (row % (wh * dh)) // dh * ww + (col % (ww * dw)) // dw
    return win_row * windows_per_row + win_col, pos


def _token(idx, h, w, window, dilation, shift, windows_per_row):
    """Window, in-window position and roll region (``None`` when unshifted) of flat map token ``idx``.

    With a shift, the token's coordinates are those it has in the rolled map, whose row ``r`` holds the original
    row ``(r + sh) mod H``; the rolled rows ``[H - sh, H)`` (the wrapped ones) and ``[0, H - sh)`` are two regions,
    columns alike, and the region code is ``2 * wrapped_row + wrapped_col``.
    """
    row, col = idx // w, idx % w
    sh, sw = shift
    region = None
    if sh:
        row = (row + (h - sh)) % h
        region = (row >= h - sh).to(torch.int32) * 2
    if sw:
        col = (col + (w - sw)) % w
        wrapped = (col >= w - sw).to(torch.int32)
        region = wrapped if region is None else region + wrapped
    win, pos = _window_of(row, col, *window, *dilation, windows_per_row)
    return win, pos, region


@functools.lru_cache(maxsize=64)
def window_block_mask(h: int, w: int, window: tuple, dilation: tuple, device: str, shift: tuple = (0, 0)) -> BlockMask:
    per_row = padded_size(w, window[1] * dilation[1]) // window[1]

    def mask_mod(b, head, q_idx, kv_idx):
        q_win, _, q_region = _token(q_idx, h, w, window, dilation, shift, per_row)
        k_win, _, k_region = _token(kv_idx, h, w, window, dilation, shift, per_row)
        same = q_win == k_win
        return same if q_region is None else same & (q_region == k_region)

    return create_block_mask(mask_mod, None, None, h * w, h * w, device=device)


def forward(q, k, v, window_size, *, dilation=(1, 1), shift=(0, 0), bias=None, mask=None, scale=None) -> torch.Tensor:
    b, h, w, heads, _ = q.shape
    window, dilation, shift = tuple(window_size), tuple(dilation), tuple(shift)
    per_row = padded_size(w, window[1] * dilation[1]) // window[1]
    if mask is not None and mask.dtype == torch.bool:
        mask = torch.zeros(mask.shape, dtype=q.dtype, device=q.device).masked_fill_(~mask, float("-inf"))
    score_mod = None
    if bias is not None or mask is not None:

        def score_mod(score, batch, head, q_idx, kv_idx):
            q_win, q_pos, _ = _token(q_idx, h, w, window, dilation, shift, per_row)
            _, k_pos, _ = _token(kv_idx, h, w, window, dilation, shift, per_row)
            if bias is not None:
                score = score + bias[head, q_pos, k_pos]
            if mask is not None:
                score = score + mask[q_win, q_pos, k_pos]
            return score

    block_mask = window_block_mask(h, w, window, dilation, str(q.device), shift)
    qf, kf, vf = (t.reshape(b, h * w, heads, t.shape[-1]).transpose(1, 2) for t in (q, k, v))  # B, heads, HW, D
    out = run_flex(qf, kf, vf, block_mask=block_mask, score_mod=score_mod, scale=scale)
    return out.transpose(1, 2).reshape(b, h, w, heads, v.shape[-1])
