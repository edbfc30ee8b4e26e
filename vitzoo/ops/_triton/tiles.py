"""Tile-level building blocks shared by the attention kernels: masked row loads and the two softmax recurrences.

Logits are base 2 throughout (the kernels fold ``log2(e)`` into the scale), so ``exp2`` replaces ``exp``.
"""

from __future__ import annotations

import triton
import triton.language as tl

# log2(e): scales and biases are multiplied by it to turn natural-log logits into base 2. A constexpr so kernels can
# read it (Triton admits only constexpr globals); host code uses ``LOG2E.value``.
LOG2E = tl.constexpr(1.4426950408889634)


@triton.jit
def load_rows(BASE, row_offsets, offs_d, row_ok, D):
    """``[rows, BLOCK_D]`` tile: element ``d`` of each row at ``BASE + row_offset + d``; zeros where masked."""
    return tl.load(
        BASE + row_offsets[:, None] + offs_d[None, :], mask=row_ok[:, None] & (offs_d[None, :] < D), other=0.0
    )


@triton.jit
def token_rows(X, b, row, col, head, stride_batch, stride_row, stride_col, stride_head, offs, ok, size):
    """One row per token of a ``[B, H, W, heads, size]`` tensor read through its strides; zeros where not ``ok``."""
    return load_rows(X, b * stride_batch + row * stride_row + col * stride_col + head * stride_head, offs, ok, size)


@triton.jit
def store_rows(BASE, row_offsets, offs_d, row_ok, D, tile):
    """Store a ``[rows, BLOCK_D]`` tile in ``BASE``'s dtype where :func:`load_rows` would read it."""
    mask = row_ok[:, None] & (offs_d[None, :] < D)
    tl.store(BASE + row_offsets[:, None] + offs_d[None, :], tile.to(BASE.dtype.element_ty), mask=mask)


@triton.jit
def online_softmax_step(s, m_i, l_i, acc, vv, PRECISION: tl.constexpr):
    """Fold one key tile's logits ``s`` and values ``vv`` into the running max, sum and output accumulator."""
    m_new = tl.maximum(m_i, tl.max(s, 1))
    m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)  # rows with no key so far: keep exp2 finite
    p = tl.exp2(s - m_safe[:, None])
    alpha = tl.exp2(m_i - m_safe)
    l_i = l_i * alpha + tl.sum(p, 1)
    acc = acc * alpha[:, None] + tl.dot(p.to(vv.dtype), vv, input_precision=PRECISION)
    return m_new, l_i, acc


@triton.jit
def finish_softmax(acc, m_i, l_i):
    """Normalised output tile and base-2 log-sum-exp per row (rows that saw no key, always padding, stay finite)."""
    l_i = tl.where(l_i == 0.0, 1.0, l_i)
    return acc / l_i[:, None], m_i + tl.log2(l_i)


@triton.jit
def query_softmax_stats(LSE, DELTA, stat_offsets, q_ok):
    """A query tile's saved log-sum-exp and ``delta = rowsum(dO * O)`` (fp32, one per query and head). Padded
    queries read ``lse = inf``, so the probabilities :func:`softmax_backward` recomputes for them are 0."""
    lse = tl.load(LSE + stat_offsets, mask=q_ok, other=float("inf"))
    delta = tl.load(DELTA + stat_offsets, mask=q_ok, other=0.0)
    return lse, delta


@triton.jit
def softmax_backward(s, lse, delta, do, vv, PRECISION: tl.constexpr):
    """Probabilities ``p`` recomputed from the saved log-sum-exp, and ``dS = p * (dO . v - rowsum(dO * O))``."""
    p = tl.exp2(s - lse[:, None])
    dp = tl.dot(do, tl.trans(vv), input_precision=PRECISION)
    return p, p * (dp - delta[:, None])
