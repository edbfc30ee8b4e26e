"""FlexAttention backend of :func:`vitzoo.ops.window_attention`: windows as a block mask, bias and mask as a score mod.

Tokens stay in row-major map order (no partition copy, no padding: padded keys simply do not exist); a query may
attend to a key when both fall in the same (possibly dilated) window, and ``score_mod`` adds the bias and mask
entries of their in-window positions. On CUDA the compiled kernel runs forward and backward; on CPU torch offers
Flex forward only, uncompiled (it materialises the scores), so there it serves inference and tests and automatic
choice leaves it out. Row-major tiles of 128 tokens cut across windows, so this backend is a baseline for the Triton
kernel rather than a rival (see ``benchmarks/results``).
"""

from __future__ import annotations

import functools

import torch
from torch.nn.attention.flex_attention import BlockMask, create_block_mask

from .._common import padded_size
from .._flex import flex_auto_reason, flex_reason, run_flex


def can_run(q, k, v, window_size, *, dilation=(1, 1), bias=None, mask=None, scale=None) -> str | None:
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


@functools.lru_cache(maxsize=64)
def window_block_mask(h: int, w: int, window: tuple, dilation: tuple, device: str) -> BlockMask:
    wh, ww = window
    dh, dw = dilation
    per_row = padded_size(w, ww * dw) // ww

    def mask_mod(b, head, q_idx, kv_idx):
        q_win, _ = _window_of(q_idx // w, q_idx % w, wh, ww, dh, dw, per_row)
        k_win, _ = _window_of(kv_idx // w, kv_idx % w, wh, ww, dh, dw, per_row)
        return q_win == k_win

    return create_block_mask(mask_mod, None, None, h * w, h * w, device=device)


def forward(q, k, v, window_size, *, dilation=(1, 1), bias=None, mask=None, scale=None) -> torch.Tensor:
    b, h, w, heads, _ = q.shape
    wh, ww = window_size
    dh, dw = dilation
    per_row = padded_size(w, ww * dw) // ww
    if mask is not None and mask.dtype == torch.bool:
        mask = torch.zeros(mask.shape, dtype=q.dtype, device=q.device).masked_fill_(~mask, float("-inf"))
    score_mod = None
    if bias is not None or mask is not None:

        def score_mod(score, batch, head, q_idx, kv_idx):
            q_win, q_pos = _window_of(q_idx // w, q_idx % w, wh, ww, dh, dw, per_row)
            _, k_pos = _window_of(kv_idx // w, kv_idx % w, wh, ww, dh, dw, per_row)
            if bias is not None:
                score = score + bias[head, q_pos, k_pos]
            if mask is not None:
                score = score + mask[q_win, q_pos, k_pos]
            return score

    block_mask = window_block_mask(h, w, (wh, ww), (dh, dw), str(q.device))
    qf, kf, vf = (t.reshape(b, h * w, heads, t.shape[-1]).transpose(1, 2) for t in (q, k, v))  # B, heads, HW, D
    out = run_flex(qf, kf, vf, block_mask=block_mask, score_mod=score_mod, scale=scale)
    return out.transpose(1, 2).reshape(b, h, w, heads, v.shape[-1])
