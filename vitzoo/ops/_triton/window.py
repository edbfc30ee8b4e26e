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

import triton
import triton.language as tl

from .tiles import finish_softmax, load_rows, online_softmax_step, softmax_backward

LOG2E = 1.4426950408889634


@triton.jit
def token_coords(win, pos, wh, ww, dh, dw, windows_per_row):
    """Map row and column of in-window position ``pos`` of window ``win``."""
    u = win // windows_per_row
    c = win % windows_per_row
    row = (u // dh) * (wh * dh) + (pos // ww) * dh + u % dh
    col = (c // dw) * (ww * dw) + (pos % ww) * dw + c % dw
    return row, col


@triton.jit
def window_logits(
    q,
    k,
    win,
    head,
    offs_m,
    offs_n,
    key_ok,
    BIAS,
    MASK,
    N,
    scale_log2,
    HAS_BIAS: tl.constexpr,
    HAS_MASK: tl.constexpr,
    PRECISION: tl.constexpr,
):
    """Base-2 logits of a query tile against a key tile: scaled q.k plus bias and mask, masked keys at -inf."""
    s = tl.dot(q, tl.trans(k), input_precision=PRECISION) * scale_log2
    pair_ok = (offs_m[:, None] < N) & (offs_n[None, :] < N)
    if HAS_BIAS:
        bias = tl.load(BIAS + head * N * N + offs_m[:, None] * N + offs_n[None, :], mask=pair_ok, other=0.0)
        s += bias.to(tl.float32) * 1.4426950408889634
    if HAS_MASK:
        extra = tl.load(MASK + win * N * N + offs_m[:, None] * N + offs_n[None, :], mask=pair_ok, other=0.0)
        s += extra.to(tl.float32) * 1.4426950408889634
    return tl.where(key_ok[None, :], s, float("-inf"))


@triton.jit
def window_fwd_kernel(
    Q,
    K,
    V,
    OUT,
    LSE,
    BIAS,
    MASK,
    sq_b,
    sq_h,
    sq_w,
    sq_n,
    sk_b,
    sk_h,
    sk_w,
    sk_n,
    sv_b,
    sv_h,
    sv_w,
    sv_n,
    so_b,
    so_h,
    so_w,
    so_n,
    heads,
    H,
    W,
    N,
    wh,
    ww,
    dh,
    dw,
    windows_per_row,
    D,
    DV,
    scale_log2,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_DV: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    HAS_MASK: tl.constexpr,
    PRECISION: tl.constexpr,
):
    # q/k/v/o last-dim stride is 1 (the wrapper guarantees it); LSE is a contiguous [B, H, W, heads] fp32 tensor
    pid_m = tl.program_id(0)
    win = tl.program_id(1)
    bh = tl.program_id(2)
    b = (bh // heads).to(tl.int64)
    head = bh % heads

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    offs_dv = tl.arange(0, BLOCK_DV)
    q_row, q_col = token_coords(win, offs_m, wh, ww, dh, dw, windows_per_row)
    q_ok = (offs_m < N) & (q_row < H) & (q_col < W)
    q = load_rows(Q, b * sq_b + q_row * sq_h + q_col * sq_w + head * sq_n, offs_d, q_ok, D)

    # a window of padding only (possible with dilation) attends unmasked, as the reference does
    row0, col0 = token_coords(win, 0, wh, ww, dh, dw, windows_per_row)
    window_empty = (row0 >= H) | (col0 >= W)

    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_DV], tl.float32)
    for start_n in range(0, N, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        k_row, k_col = token_coords(win, offs_n, wh, ww, dh, dw, windows_per_row)
        k_real = (k_row < H) & (k_col < W)
        k_load = (offs_n < N) & k_real
        k_ok = (offs_n < N) & (k_real | window_empty)
        kk = load_rows(K, b * sk_b + k_row * sk_h + k_col * sk_w + head * sk_n, offs_d, k_load, D)
        vv = load_rows(V, b * sv_b + k_row * sv_h + k_col * sv_w + head * sv_n, offs_dv, k_load, DV)
        s = window_logits(
            q, kk, win, head, offs_m, offs_n, k_ok, BIAS, MASK, N, scale_log2, HAS_BIAS, HAS_MASK, PRECISION
        )
        m_i, l_i, acc = online_softmax_step(s, m_i, l_i, acc, vv, PRECISION)

    out, lse = finish_softmax(acc, m_i, l_i)
    o_ptr = OUT + b * so_b + q_row[:, None] * so_h + q_col[:, None] * so_w + head * so_n + offs_dv[None, :]
    tl.store(o_ptr, out.to(OUT.dtype.element_ty), mask=q_ok[:, None] & (offs_dv[None, :] < DV))
    lse_off = ((b * H + q_row) * W + q_col) * heads + head
    tl.store(LSE + lse_off, lse, mask=q_ok)


@triton.jit
def window_bwd_kernel(
    Q,
    K,
    V,
    DO,
    LSE,
    DELTA,
    BIAS,
    MASK,
    DQ,
    DK,
    DV_OUT,
    DBIAS,
    sq_b,
    sq_h,
    sq_w,
    sq_n,
    sk_b,
    sk_h,
    sk_w,
    sk_n,
    sv_b,
    sv_h,
    sv_w,
    sv_n,
    sdo_b,
    sdo_h,
    sdo_w,
    sdo_n,
    heads,
    H,
    W,
    N,
    wh,
    ww,
    dh,
    dw,
    windows_per_row,
    D,
    DV,
    scale,
    scale_log2,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_DV: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    HAS_MASK: tl.constexpr,
    BIAS_GRAD: tl.constexpr,
    ONE_KEY_TILE: tl.constexpr,
    PRECISION: tl.constexpr,
):
    """One key tile of one window: dK and dV exactly; dQ (and dbias) added atomically unless one tile covers it.

    DQ/DK/DV_OUT are contiguous fp32 ``[B, H, W, heads, D | Dv]``; LSE and DELTA contiguous fp32 ``[B, H, W, heads]``.
    """
    pid_n = tl.program_id(0)
    win = tl.program_id(1)
    bh = tl.program_id(2)
    b = (bh // heads).to(tl.int64)
    head = bh % heads
    offs_d = tl.arange(0, BLOCK_D)
    offs_dv = tl.arange(0, BLOCK_DV)

    row0, col0 = token_coords(win, 0, wh, ww, dh, dw, windows_per_row)
    window_empty = (row0 >= H) | (col0 >= W)

    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    k_row, k_col = token_coords(win, offs_n, wh, ww, dh, dw, windows_per_row)
    k_real = (k_row < H) & (k_col < W)
    k_load = (offs_n < N) & k_real
    k_ok = (offs_n < N) & (k_real | window_empty)
    kk = load_rows(K, b * sk_b + k_row * sk_h + k_col * sk_w + head * sk_n, offs_d, k_load, D)
    vv = load_rows(V, b * sv_b + k_row * sv_h + k_col * sv_w + head * sv_n, offs_dv, k_load, DV)
    dk = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)
    dv = tl.zeros([BLOCK_N, BLOCK_DV], tl.float32)
    for start_m in range(0, N, BLOCK_M):
        offs_m = start_m + tl.arange(0, BLOCK_M)
        q_row, q_col = token_coords(win, offs_m, wh, ww, dh, dw, windows_per_row)
        q_ok = (offs_m < N) & (q_row < H) & (q_col < W)
        q = load_rows(Q, b * sq_b + q_row * sq_h + q_col * sq_w + head * sq_n, offs_d, q_ok, D)
        do = load_rows(DO, b * sdo_b + q_row * sdo_h + q_col * sdo_w + head * sdo_n, offs_dv, q_ok, DV)
        stat_off = ((b * H + q_row) * W + q_col) * heads + head
        lse = tl.load(LSE + stat_off, mask=q_ok, other=float("inf"))  # padded queries get p = 0
        delta = tl.load(DELTA + stat_off, mask=q_ok, other=0.0)

        s = window_logits(
            q, kk, win, head, offs_m, offs_n, k_ok, BIAS, MASK, N, scale_log2, HAS_BIAS, HAS_MASK, PRECISION
        )
        p, ds = softmax_backward(s, lse, delta, do, vv, PRECISION)  # ds: gradient of the natural-log logits
        dv += tl.dot(tl.trans(p).to(do.dtype), do, input_precision=PRECISION)
        dk += tl.dot(tl.trans(ds).to(q.dtype), q, input_precision=PRECISION)
        dq = tl.dot(ds.to(kk.dtype), kk, input_precision=PRECISION) * scale
        dq_ptr = DQ + (((b * H + q_row[:, None]) * W + q_col[:, None]) * heads + head) * D + offs_d[None, :]
        dq_mask = q_ok[:, None] & (offs_d[None, :] < D)
        if ONE_KEY_TILE:
            tl.store(dq_ptr, dq, mask=dq_mask)
        else:
            tl.atomic_add(dq_ptr, dq, mask=dq_mask)
        if BIAS_GRAD:
            pair_ok = q_ok[:, None] & (offs_n[None, :] < N)
            tl.atomic_add(DBIAS + head * N * N + offs_m[:, None] * N + offs_n[None, :], ds, mask=pair_ok)

    kv_off = ((b * H + k_row[:, None]) * W + k_col[:, None]) * heads + head
    tl.store(DK + kv_off * D + offs_d[None, :], dk * scale, mask=k_load[:, None] & (offs_d[None, :] < D))
    tl.store(DV_OUT + kv_off * DV + offs_dv[None, :], dv, mask=k_load[:, None] & (offs_dv[None, :] < DV))


def launch_forward(q, k, v, window, dilation, bias, mask, scale, out, lse, windows, block_m, block_n, precision):
    """Run the forward kernel over ``windows = (n_windows, windows_per_row)``; ``out`` and ``lse`` are written."""
    b, h, w, heads, d = q.shape
    dv = v.shape[-1]
    (wh, ww), (dh, dw) = window, dilation
    n = wh * ww
    grid = (triton.cdiv(n, block_m), windows[0], b * heads)
    window_fwd_kernel[grid](
        q, k, v, out, lse, bias, mask,
        *q.stride()[:4], *k.stride()[:4], *v.stride()[:4], *out.stride()[:4],
        heads, h, w, n, wh, ww, dh, dw, windows[1], d, dv, scale * LOG2E,
        BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_D=max(16, triton.next_power_of_2(d)),
        BLOCK_DV=max(16, triton.next_power_of_2(dv)), HAS_BIAS=bias is not None, HAS_MASK=mask is not None,
        PRECISION=precision,
    )  # fmt: skip


def launch_backward(
    do, q, k, v, lse, delta, window, dilation, bias, mask, scale, grads, windows, block_m, block_n, precision
):
    """Run the backward kernel; ``grads = (dq, dk, dv, dbias | None)`` fp32 buffers (dq and dbias zeroed)."""
    b, h, w, heads, d = q.shape
    dv_dim = v.shape[-1]
    (wh, ww), (dh, dw) = window, dilation
    n = wh * ww
    dq, dk, dv, dbias = grads
    grid = (triton.cdiv(n, block_n), windows[0], b * heads)
    window_bwd_kernel[grid](
        q, k, v, do, lse, delta, bias, mask, dq, dk, dv, dbias,
        *q.stride()[:4], *k.stride()[:4], *v.stride()[:4], *do.stride()[:4],
        heads, h, w, n, wh, ww, dh, dw, windows[1], d, dv_dim, scale, scale * LOG2E,
        BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_D=max(16, triton.next_power_of_2(d)),
        BLOCK_DV=max(16, triton.next_power_of_2(dv_dim)), HAS_BIAS=bias is not None, HAS_MASK=mask is not None,
        BIAS_GRAD=dbias is not None, ONE_KEY_TILE=n <= block_n, PRECISION=precision,
    )  # fmt: skip
