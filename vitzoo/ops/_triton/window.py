"""Fused window attention in Triton: forward and backward, window partition and padding folded into index arithmetic.

One program owns one tile of queries (forward) or keys (backward) of one window of one (image, head). Tokens are
read and written in place in the op's ``[B, H, W, heads, D]`` layout through strides, so q/k/v may be views of a qkv
projection and nothing is partitioned, padded or reversed in memory. Scores live in registers only: the forward
keeps an online softmax (running max and sum, base 2) over key tiles and stores the log-sum-exp per query for the
backward, which recomputes the probabilities tile by tile.

Window geometry (see :mod:`vitzoo.ops.window`): window ``win`` of the padded grid sits at window row ``u`` and
column ``c``; in-window position ``p`` is token
``((u // dh) * wh * dh + (p // ww) * dh + u % dh,  (c // dw) * ww * dw + (p % ww) * dw + c % dw)``.
"""

from __future__ import annotations

import dataclasses

import triton
import triton.language as tl

from . import TileConfig, head_block, launch, tile_for
from .tiles import (
    LOG2E,
    finish_softmax,
    online_softmax_step,
    query_softmax_stats,
    softmax_backward,
    store_rows,
    token_rows,
)

# map sizes and counts are not specialised on (== 1, multiple of 16): one compiled kernel serves every map size
DBIAS_SLOTS = 16  # partial copies of the bias gradient, to spread the atomics of a launch

SHAPE_ARGS = ["dbias_slots", "heads", "H", "W", "N", "wh", "ww", "windows_per_row", "sh", "sw", "D", "DV"]


@triton.jit
def token_coords(win, pos, wh, ww, dh, dw, windows_per_row):
    """Map row and column of in-window position ``pos`` of window ``win``."""
    u = win // windows_per_row
    c = win % windows_per_row
    row = (u // dh) * (wh * dh) + (pos // ww) * dh + u % dh
    col = (c // dw) * (ww * dw) + (pos % ww) * dw + c % dw
    return row, col


@triton.jit
def window_tokens(win, pos, wh, ww, dh, dw, windows_per_row, H, W, sh, sw, SHIFTED: tl.constexpr):
    """Stored row and column of in-window slot ``pos``, its roll region, and whether it is a real token.

    With a shift the window grid lies over the map rolled by ``(-sh, -sw)``: grid row ``r`` holds map row
    ``(r + sh) % H``, and rows ``r >= H - sh`` (wrapped around) form their own region, as do columns alike.
    """
    row, col = token_coords(win, pos, wh, ww, dh, dw, windows_per_row)
    real = (row < H) & (col < W)
    region = row * 0
    if SHIFTED:
        region = (row >= H - sh).to(tl.int32) * 2 + (col >= W - sw).to(tl.int32)
        row = tl.where(row + sh >= H, row + sh - H, row + sh)
        col = tl.where(col + sw >= W, col + sw - W, col + sw)
    return row, col, region, real


@triton.jit
def window_program(heads, H, W, wh, ww, dh, dw, windows_per_row):
    """This program's window (grid axis 1), image and head (axis 2), and whether the window holds padding only."""
    win = tl.program_id(1)
    bh = tl.program_id(2)
    b = (bh // heads).to(tl.int64)
    head = bh % heads
    row0, col0 = token_coords(win, 0, wh, ww, dh, dw, windows_per_row)
    return win, b, head, (row0 >= H) | (col0 >= W)


@triton.jit
def window_queries(
    Q, b, head, win, offs_m, stride_q_batch, stride_q_row, stride_q_col, stride_q_head, offs_d, D,
    H, W, N, wh, ww, dh, dw, windows_per_row, sh, sw, SHIFTED: tl.constexpr,
):  # fmt: skip
    """A query tile of a window: the queries, their stored rows and columns, roll regions and validity."""
    q_row, q_col, q_region, q_real = window_tokens(win, offs_m, wh, ww, dh, dw, windows_per_row, H, W, sh, sw, SHIFTED)
    q_ok = (offs_m < N) & q_real
    q = token_rows(Q, b, q_row, q_col, head, stride_q_batch, stride_q_row, stride_q_col, stride_q_head, offs_d, q_ok, D)
    return q, q_row, q_col, q_region, q_ok


@triton.jit
def window_queries_backward(
    Q, DO, LSE, DELTA, b, head, win, offs_m, stride_q_batch, stride_q_row, stride_q_col, stride_q_head,
    stride_do_batch, stride_do_row, stride_do_col, stride_do_head, offs_d, offs_dv, D, DV, heads,
    H, W, N, wh, ww, dh, dw, windows_per_row, sh, sw, SHIFTED: tl.constexpr,
):  # fmt: skip
    """A query tile for the backward: :func:`window_queries` plus the output gradient, log-sum-exp and delta."""
    q, q_row, q_col, q_region, q_ok = window_queries(
        Q, b, head, win, offs_m, stride_q_batch, stride_q_row, stride_q_col, stride_q_head, offs_d, D,
        H, W, N, wh, ww, dh, dw, windows_per_row, sh, sw, SHIFTED,
    )  # fmt: skip
    do = token_rows(
        DO, b, q_row, q_col, head, stride_do_batch, stride_do_row, stride_do_col, stride_do_head, offs_dv, q_ok, DV
    )
    lse, delta = query_softmax_stats(LSE, DELTA, ((b * H + q_row) * W + q_col) * heads + head, q_ok)
    return q, do, lse, delta, q_row, q_col, q_region, q_ok


@triton.jit
def window_keys(
    K, V, b, head, win, offs_n, window_empty,
    stride_k_batch, stride_k_row, stride_k_col, stride_k_head, stride_v_batch, stride_v_row, stride_v_col,
    stride_v_head, offs_d, offs_dv, D, DV,
    H, W, N, wh, ww, dh, dw, windows_per_row, sh, sw, SHIFTED: tl.constexpr,
):  # fmt: skip
    """A key tile of a window: keys, values, stored rows and columns, roll regions, which slots hold real tokens
    (``k_load``) and which keys may be attended (``k_ok``: real ones, or every slot of a window of padding only,
    which attends unmasked as the reference does)."""
    k_row, k_col, k_region, k_real = window_tokens(win, offs_n, wh, ww, dh, dw, windows_per_row, H, W, sh, sw, SHIFTED)
    k_load = (offs_n < N) & k_real
    k_ok = (offs_n < N) & (k_real | window_empty)
    kk = token_rows(
        K, b, k_row, k_col, head, stride_k_batch, stride_k_row, stride_k_col, stride_k_head, offs_d, k_load, D
    )
    vv = token_rows(
        V, b, k_row, k_col, head, stride_v_batch, stride_v_row, stride_v_col, stride_v_head, offs_dv, k_load, DV
    )
    return kk, vv, k_row, k_col, k_region, k_load, k_ok


@triton.jit
def window_logits(
    q, k, win, head, offs_m, offs_n, key_ok, q_region, k_region, BIAS, MASK, N, scale_log2,
    HAS_BIAS: tl.constexpr, HAS_MASK: tl.constexpr, SHIFTED: tl.constexpr, PRECISION: tl.constexpr,
):  # fmt: skip
    """Base-2 logits of a query tile against a key tile: scaled q.k plus bias and mask, masked keys at -inf."""
    s = tl.dot(q, tl.trans(k), input_precision=PRECISION) * scale_log2
    pair_ok = (offs_m[:, None] < N) & (offs_n[None, :] < N)
    if HAS_BIAS:
        bias = tl.load(BIAS + head * N * N + offs_m[:, None] * N + offs_n[None, :], mask=pair_ok, other=0.0)
        s += bias.to(tl.float32) * LOG2E
    if HAS_MASK:
        extra = tl.load(MASK + win * N * N + offs_m[:, None] * N + offs_n[None, :], mask=pair_ok, other=0.0)
        s += extra.to(tl.float32) * LOG2E
    attend = key_ok[None, :]
    if SHIFTED:  # tokens that the roll brought together from opposite borders do not attend to each other
        attend = attend & (q_region[:, None] == k_region[None, :])
    return tl.where(attend, s, float("-inf"))


@triton.jit
def window_key_tile(
    q, K, V, BIAS, MASK, b, head, win, offs_m, offs_n, q_region, window_empty,
    stride_k_batch, stride_k_row, stride_k_col, stride_k_head, stride_v_batch, stride_v_row, stride_v_col,
    stride_v_head, offs_d, offs_dv, D, DV, H, W, N, wh, ww, dh, dw, windows_per_row, sh, sw, scale_log2,
    HAS_BIAS: tl.constexpr, HAS_MASK: tl.constexpr, SHIFTED: tl.constexpr, PRECISION: tl.constexpr,
):  # fmt: skip
    """For the kernels that walk key tiles under one query tile: :func:`window_keys` and the query tile's
    :func:`window_logits` against them."""
    kk, vv, _, _, k_region, _, k_ok = window_keys(
        K, V, b, head, win, offs_n, window_empty,
        stride_k_batch, stride_k_row, stride_k_col, stride_k_head, stride_v_batch, stride_v_row, stride_v_col,
        stride_v_head, offs_d, offs_dv, D, DV,
        H, W, N, wh, ww, dh, dw, windows_per_row, sh, sw, SHIFTED,
    )  # fmt: skip
    s = window_logits(q, kk, win, head, offs_m, offs_n, k_ok, q_region, k_region, BIAS, MASK, N, scale_log2,
                      HAS_BIAS, HAS_MASK, SHIFTED, PRECISION)  # fmt: skip
    return kk, vv, s


@triton.jit(do_not_specialize=SHAPE_ARGS)
def window_fwd_kernel(
    Q, K, V, OUT, LSE, BIAS, MASK,
    stride_q_batch, stride_q_row, stride_q_col, stride_q_head, stride_k_batch, stride_k_row, stride_k_col,
    stride_k_head, stride_v_batch, stride_v_row, stride_v_col, stride_v_head, stride_o_batch, stride_o_row,
    stride_o_col, stride_o_head,
    heads, H, W, N, wh, ww, dh, dw, windows_per_row, sh, sw, D, DV, scale_log2,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr,
    HAS_BIAS: tl.constexpr, HAS_MASK: tl.constexpr, SHIFTED: tl.constexpr, PRECISION: tl.constexpr,
):  # fmt: skip
    # q/k/v/o last-dim stride is 1 (the wrapper guarantees it); LSE is a contiguous [B, H, W, heads] fp32 tensor
    win, b, head, window_empty = window_program(heads, H, W, wh, ww, dh, dw, windows_per_row)
    offs_m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    offs_dv = tl.arange(0, BLOCK_DV)
    q, q_row, q_col, q_region, q_ok = window_queries(
        Q, b, head, win, offs_m, stride_q_batch, stride_q_row, stride_q_col, stride_q_head, offs_d, D,
        H, W, N, wh, ww, dh, dw, windows_per_row, sh, sw, SHIFTED,
    )  # fmt: skip

    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_DV], tl.float32)
    for start_n in range(0, N, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        kk, vv, s = window_key_tile(
            q, K, V, BIAS, MASK, b, head, win, offs_m, offs_n, q_region, window_empty,
            stride_k_batch, stride_k_row, stride_k_col, stride_k_head, stride_v_batch, stride_v_row, stride_v_col,
            stride_v_head, offs_d, offs_dv, D, DV, H, W, N, wh, ww, dh, dw, windows_per_row, sh, sw, scale_log2,
            HAS_BIAS, HAS_MASK, SHIFTED, PRECISION,
        )  # fmt: skip
        m_i, l_i, acc = online_softmax_step(s, m_i, l_i, acc, vv, PRECISION)

    out, lse = finish_softmax(acc, m_i, l_i)
    o_rows = b * stride_o_batch + q_row * stride_o_row + q_col * stride_o_col + head * stride_o_head
    store_rows(OUT, o_rows, offs_dv, q_ok, DV, out)
    lse_off = ((b * H + q_row) * W + q_col) * heads + head
    tl.store(LSE + lse_off, lse, mask=q_ok)


@triton.jit(do_not_specialize=SHAPE_ARGS)
def window_bwd_kernel(
    Q, K, V, DO, LSE, DELTA, BIAS, MASK, DQ, DK, DV_OUT, DBIAS,
    stride_q_batch, stride_q_row, stride_q_col, stride_q_head, stride_k_batch, stride_k_row, stride_k_col,
    stride_k_head, stride_v_batch, stride_v_row, stride_v_col, stride_v_head, stride_do_batch, stride_do_row,
    stride_do_col, stride_do_head,
    heads, H, W, N, wh, ww, dh, dw, windows_per_row, sh, sw, D, DV, dbias_slots, scale, scale_log2,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr,
    HAS_BIAS: tl.constexpr, HAS_MASK: tl.constexpr, BIAS_GRAD: tl.constexpr, ONE_KEY_TILE: tl.constexpr,
    SHIFTED: tl.constexpr, PRECISION: tl.constexpr,
):  # fmt: skip
    """One key tile of one window: dK and dV; also dQ and dbias when one key tile covers the window, else
    :func:`window_bwd_dq_kernel` computes those in a second pass (no atomics on dQ, less register pressure).

    DQ/DK/DV_OUT are contiguous fp32 ``[B, H, W, heads, D | Dv]``; LSE and DELTA contiguous fp32 ``[B, H, W, heads]``.
    """
    win, b, head, window_empty = window_program(heads, H, W, wh, ww, dh, dw, windows_per_row)
    offs_d = tl.arange(0, BLOCK_D)
    offs_dv = tl.arange(0, BLOCK_DV)
    offs_n = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    kk, vv, k_row, k_col, k_region, k_load, k_ok = window_keys(
        K, V, b, head, win, offs_n, window_empty,
        stride_k_batch, stride_k_row, stride_k_col, stride_k_head, stride_v_batch, stride_v_row, stride_v_col,
        stride_v_head, offs_d, offs_dv, D, DV,
        H, W, N, wh, ww, dh, dw, windows_per_row, sh, sw, SHIFTED,
    )  # fmt: skip
    dk = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)
    dv = tl.zeros([BLOCK_N, BLOCK_DV], tl.float32)
    for start_m in range(0, N, BLOCK_M):
        offs_m = start_m + tl.arange(0, BLOCK_M)
        q, do, lse, delta, q_row, q_col, q_region, q_ok = window_queries_backward(
            Q, DO, LSE, DELTA, b, head, win, offs_m, stride_q_batch, stride_q_row, stride_q_col, stride_q_head,
            stride_do_batch, stride_do_row, stride_do_col, stride_do_head, offs_d, offs_dv, D, DV, heads,
            H, W, N, wh, ww, dh, dw, windows_per_row, sh, sw, SHIFTED,
        )  # fmt: skip
        s = window_logits(q, kk, win, head, offs_m, offs_n, k_ok, q_region, k_region, BIAS, MASK, N, scale_log2,
                          HAS_BIAS, HAS_MASK, SHIFTED, PRECISION)  # fmt: skip
        p, ds = softmax_backward(s, lse, delta, do, vv, PRECISION)  # ds: gradient of the natural-log logits
        dv += tl.dot(tl.trans(p).to(do.dtype), do, input_precision=PRECISION)
        dk += tl.dot(tl.trans(ds).to(q.dtype), q, input_precision=PRECISION)
        if ONE_KEY_TILE:  # this program sees every key of its queries: dQ and dbias are complete here
            dq = tl.dot(ds.to(kk.dtype), kk, input_precision=PRECISION) * scale
            dq_ptr = DQ + (((b * H + q_row[:, None]) * W + q_col[:, None]) * heads + head) * D + offs_d[None, :]
            tl.store(dq_ptr, dq, mask=q_ok[:, None] & (offs_d[None, :] < D))
            if BIAS_GRAD:
                add_bias_grad(DBIAS, ds, b, win, head, offs_m, offs_n, q_ok, N, heads, dbias_slots)

    kv_off = ((b * H + k_row[:, None]) * W + k_col[:, None]) * heads + head
    tl.store(DK + kv_off * D + offs_d[None, :], dk * scale, mask=k_load[:, None] & (offs_d[None, :] < D))
    tl.store(DV_OUT + kv_off * DV + offs_dv[None, :], dv, mask=k_load[:, None] & (offs_dv[None, :] < DV))


@triton.jit
def add_bias_grad(DBIAS, ds, b, win, head, offs_m, offs_n, q_ok, N, heads, dbias_slots):
    """Add a dS tile to the bias gradient: programs spread over ``dbias_slots`` copies (summed afterwards), since
    one ``[heads, N, N]`` table would take the atomics of every window of every image on a few cache lines."""
    slot = (b * tl.num_programs(1) + win) % dbias_slots
    pair_ok = q_ok[:, None] & (offs_n[None, :] < N)
    dbias_ptr = DBIAS + (slot * heads + head) * N * N + offs_m[:, None] * N + offs_n[None, :]
    tl.atomic_add(dbias_ptr, ds, mask=pair_ok, sem="relaxed")


@triton.jit(do_not_specialize=SHAPE_ARGS)
def window_bwd_dq_kernel(
    Q, K, V, DO, LSE, DELTA, BIAS, MASK, DQ, DBIAS,
    stride_q_batch, stride_q_row, stride_q_col, stride_q_head, stride_k_batch, stride_k_row, stride_k_col,
    stride_k_head, stride_v_batch, stride_v_row, stride_v_col, stride_v_head, stride_do_batch, stride_do_row,
    stride_do_col, stride_do_head,
    heads, H, W, N, wh, ww, dh, dw, windows_per_row, sh, sw, D, DV, dbias_slots, scale, scale_log2,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr,
    HAS_BIAS: tl.constexpr, HAS_MASK: tl.constexpr, BIAS_GRAD: tl.constexpr, SHIFTED: tl.constexpr,
    PRECISION: tl.constexpr,
):  # fmt: skip
    """One query tile of one window (windows wider than a key tile): dQ written once, dbias added per slot."""
    win, b, head, window_empty = window_program(heads, H, W, wh, ww, dh, dw, windows_per_row)
    offs_d = tl.arange(0, BLOCK_D)
    offs_dv = tl.arange(0, BLOCK_DV)
    offs_m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    q, do, lse, delta, q_row, q_col, q_region, q_ok = window_queries_backward(
        Q, DO, LSE, DELTA, b, head, win, offs_m, stride_q_batch, stride_q_row, stride_q_col, stride_q_head,
        stride_do_batch, stride_do_row, stride_do_col, stride_do_head, offs_d, offs_dv, D, DV, heads,
        H, W, N, wh, ww, dh, dw, windows_per_row, sh, sw, SHIFTED,
    )  # fmt: skip
    dq = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    for start_n in range(0, N, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        kk, vv, s = window_key_tile(
            q, K, V, BIAS, MASK, b, head, win, offs_m, offs_n, q_region, window_empty,
            stride_k_batch, stride_k_row, stride_k_col, stride_k_head, stride_v_batch, stride_v_row, stride_v_col,
            stride_v_head, offs_d, offs_dv, D, DV, H, W, N, wh, ww, dh, dw, windows_per_row, sh, sw, scale_log2,
            HAS_BIAS, HAS_MASK, SHIFTED, PRECISION,
        )  # fmt: skip
        _, ds = softmax_backward(s, lse, delta, do, vv, PRECISION)
        dq += tl.dot(ds.to(kk.dtype), kk, input_precision=PRECISION)
        if BIAS_GRAD:
            add_bias_grad(DBIAS, ds, b, win, head, offs_m, offs_n, q_ok, N, heads, dbias_slots)
    dq_ptr = DQ + (((b * H + q_row[:, None]) * W + q_col[:, None]) * heads + head) * D + offs_d[None, :]
    tl.store(dq_ptr, dq * scale, mask=q_ok[:, None] & (offs_d[None, :] < D))


def tile_config(n: int, d: int, dv: int, dtype, backward: bool, biased: bool = False) -> TileConfig:
    """Tiles for windows of ``n`` tokens and head dims ``d`` / ``dv`` (:func:`vitzoo.ops._triton.tile_for`); a
    bias, mask or shift adds pointer and mask tiles, so it counts as ``biased``."""
    cfg = tile_for(n, n, head_block(d, dv), dtype, backward, biased)
    if backward and cfg.block_n == 64:
        # the backward walks query tiles under one key tile: 32 queries at a time keep a 64-key tile (and with it
        # the fused single pass over windows of up to 64 tokens) within the register file
        cfg = dataclasses.replace(cfg, block_m=32)
    return cfg


# what decides the best tile of a window launch: the window's token count and the head dims (map size and batch
# change only how many programs run)
TUNING_KEY = ("N", "D", "DV")


def launch_forward(q, k, v, window, dilation, shift, bias, mask, scale, out, lse, windows, precision):
    """Run the forward kernel over ``windows = (n_windows, windows_per_row)``; ``out`` and ``lse`` are written."""
    b, h, w, heads, d = q.shape
    dv = v.shape[-1]
    (wh, ww), (dh, dw) = window, dilation
    n = wh * ww
    cfg = tile_config(n, d, dv, q.dtype, False, biased=bias is not None or mask is not None or any(shift))
    launch(window_fwd_kernel, lambda meta: (triton.cdiv(n, meta["BLOCK_M"]), windows[0], b * heads),
        q, k, v, out, lse, bias, mask,
        *q.stride()[:4], *k.stride()[:4], *v.stride()[:4], *out.stride()[:4],
        heads, h, w, n, wh, ww, dh, dw, windows[1], *shift, d, dv, scale * LOG2E.value,
        BLOCK_D=head_block(d), BLOCK_DV=head_block(dv), HAS_BIAS=bias is not None, HAS_MASK=mask is not None,
        SHIFTED=any(shift), PRECISION=precision, tiles=cfg.candidates(q.dtype), key=TUNING_KEY,
    )  # fmt: skip


def launch_backward(do, q, k, v, lse, delta, window, dilation, shift, bias, mask, scale, grads, windows, precision):
    """Run the backward kernels; ``grads = (dq, dk, dv, dbias | None)`` fp32 buffers, every element of dq, dk, dv
    written; dbias zeroed ``[DBIAS_SLOTS, heads, N, N]`` partial sums for the caller to add up."""
    b, h, w, heads, d = q.shape
    dv_dim = v.shape[-1]
    (wh, ww), (dh, dw) = window, dilation
    n = wh * ww
    dq, dk, dv, dbias = grads
    cfg = tile_config(n, d, dv_dim, q.dtype, True, biased=bias is not None or mask is not None or any(shift))
    one_key_tile = n <= cfg.block_n  # every candidate keeps the key tile, so this holds for whichever runs
    strides = (*q.stride()[:4], *k.stride()[:4], *v.stride()[:4], *do.stride()[:4])
    geometry = (heads, h, w, n, wh, ww, dh, dw, windows[1], *shift, d, dv_dim, DBIAS_SLOTS, scale, scale * LOG2E.value)
    flags = dict(
        BLOCK_D=head_block(d), BLOCK_DV=head_block(dv_dim), HAS_BIAS=bias is not None, HAS_MASK=mask is not None,
        BIAS_GRAD=dbias is not None, SHIFTED=any(shift), PRECISION=precision, tiles=cfg.candidates(q.dtype),
        key=TUNING_KEY, zeroed=("DBIAS",),
    )  # fmt: skip
    launch(
        window_bwd_kernel, lambda meta: (triton.cdiv(n, meta["BLOCK_N"]), windows[0], b * heads),
        q, k, v, do, lse, delta, bias, mask, dq, dk, dv, dbias, *strides, *geometry,
        ONE_KEY_TILE=one_key_tile, **flags,
    )  # fmt: skip
    if not one_key_tile:
        launch(
            window_bwd_dq_kernel, lambda meta: (triton.cdiv(n, meta["BLOCK_M"]), windows[0], b * heads),
            q, k, v, do, lse, delta, bias, mask, dq, dbias, *strides, *geometry, **flags,
        )  # fmt: skip
