"""Blocked local attention with a halo (HaloNet) in Triton, relative-position logits computed inside the kernel.

One program owns a tile of the queries of one block for one (image, head) and walks the block's haloed key window
(``win = block + 2 * halo`` pixels a side) in tiles, loading keys straight from the ``[B, H, W, heads, D]`` map
(zeros outside it) instead of unfolding overlapping windows into memory.

Relative logits. The position term of query ``m`` and key ``n`` is ``q_m . rel_h[ky(n) - y(m) + win - 1]`` plus the
same along x. The kernel computes ``q . rel_h^T`` once per query tile (a ``[M, 2 * win - 1]`` product) and picks
each pair's entry with ``tl.gather``, so no ``[M, N, D]`` table is ever formed. In the backward, the gradient that
reaches table row ``r`` from query ``m`` sums ``dS[m, n]`` over the keys of one key row: ``dS @ onehot(ky)`` gives
``[M, win]`` per key tile, and one gather per query tile maps key rows to table rows.
"""

from __future__ import annotations

import triton
import triton.language as tl

from .tiles import finish_softmax, load_rows, online_softmax_step, softmax_backward

LOG2E = 1.4426950408889634


@triton.jit
def halo_keys(block_row, block_col, offs_n, win, block, halo, H, W, MASK_PADDING: tl.constexpr):
    """Window row/column, map row/column, in-map flag and attend flag of key slots ``offs_n`` of a block."""
    ky = offs_n // win
    kx = offs_n % win
    row = block_row * block - halo + ky
    col = block_col * block - halo + kx
    in_window = offs_n < win * win
    inside = in_window & (row >= 0) & (row < H) & (col >= 0) & (col < W)
    if MASK_PADDING:
        attend = inside
    else:
        attend = in_window  # keys outside the map take part as zero vectors (timm's HaloAttn)
    return ky, kx, row, col, inside, attend


@triton.jit
def halo_logits(q, kk, qh, qw, ky, kx, qy, qx, attend, stride, halo, win, scale_log2, PRECISION: tl.constexpr,
                HAS_REL: tl.constexpr, BLOCK_R: tl.constexpr):  # fmt: skip
    """Base-2 logits: ``scale * q . k`` plus the gathered relative terms, keys that do not attend at -inf."""
    s = tl.dot(q, tl.trans(kk), input_precision=PRECISION) * scale_log2
    if HAS_REL:
        # table row of each (query, key) pair: key offset from the query's window pixel, shifted by win - 1
        rows_h = ky[None, :] - (stride * qy[:, None] + halo) + win - 1
        rows_w = kx[None, :] - (stride * qx[:, None] + halo) + win - 1
        rows_h = tl.minimum(tl.maximum(rows_h, 0), BLOCK_R - 1)  # keys beyond the window: any row, masked below
        rows_w = tl.minimum(tl.maximum(rows_w, 0), BLOCK_R - 1)
        s += (tl.gather(qh, rows_h, axis=1) + tl.gather(qw, rows_w, axis=1)) * 1.4426950408889634
    return tl.where(attend[None, :], s, float("-inf"))


@triton.jit
def halo_fwd_kernel(
    Q, K, V, REL_H, REL_W, OUT, LSE,
    sq_b, sq_h, sq_w, sq_n, sk_b, sk_h, sk_w, sk_n, sv_b, sv_h, sv_w, sv_n, so_b, so_h, so_w, so_n,
    rel_head_stride, heads, H, W, HQ, WQ, block, halo, stride, bq, blocks_per_row, D, DV, R, scale_log2,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr,
    BLOCK_R: tl.constexpr, HAS_REL: tl.constexpr, MASK_PADDING: tl.constexpr, PRECISION: tl.constexpr,
):  # fmt: skip
    pid_m = tl.program_id(0)
    blk = tl.program_id(1)
    bh = tl.program_id(2)
    b = (bh // heads).to(tl.int64)
    head = bh % heads
    block_row = blk // blocks_per_row
    block_col = blk % blocks_per_row
    win = block + 2 * halo

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    offs_dv = tl.arange(0, BLOCK_DV)
    qy = offs_m // bq
    qx = offs_m % bq
    q_row = block_row * bq + qy
    q_col = block_col * bq + qx
    q_ok = (offs_m < bq * bq) & (q_row < HQ) & (q_col < WQ)
    q = load_rows(Q, b * sq_b + q_row * sq_h + q_col * sq_w + head * sq_n, offs_d, q_ok, D)
    qh = tl.zeros([BLOCK_M, BLOCK_R], tl.float32)
    qw = tl.zeros([BLOCK_M, BLOCK_R], tl.float32)
    if HAS_REL:
        offs_r = tl.arange(0, BLOCK_R)
        rel_mask = (offs_r[:, None] < R) & (offs_d[None, :] < D)
        rel_off = head * rel_head_stride + offs_r[:, None] * D + offs_d[None, :]
        rel_h = tl.load(REL_H + rel_off, mask=rel_mask, other=0.0).to(q.dtype)
        rel_w = tl.load(REL_W + rel_off, mask=rel_mask, other=0.0).to(q.dtype)
        qh = tl.dot(q, tl.trans(rel_h), input_precision=PRECISION)
        qw = tl.dot(q, tl.trans(rel_w), input_precision=PRECISION)

    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_DV], tl.float32)
    for start_n in range(0, win * win, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        ky, kx, k_row, k_col, inside, attend = halo_keys(
            block_row, block_col, offs_n, win, block, halo, H, W, MASK_PADDING
        )
        kk = load_rows(K, b * sk_b + k_row * sk_h + k_col * sk_w + head * sk_n, offs_d, inside, D)
        vv = load_rows(V, b * sv_b + k_row * sv_h + k_col * sv_w + head * sv_n, offs_dv, inside, DV)
        s = halo_logits(q, kk, qh, qw, ky, kx, qy, qx, attend, stride, halo, win, scale_log2, PRECISION, HAS_REL,
                        BLOCK_R)  # fmt: skip
        m_i, l_i, acc = online_softmax_step(s, m_i, l_i, acc, vv, PRECISION)

    out, lse = finish_softmax(acc, m_i, l_i)
    o_ptr = OUT + b * so_b + q_row[:, None] * so_h + q_col[:, None] * so_w + head * so_n + offs_dv[None, :]
    tl.store(o_ptr, out.to(OUT.dtype.element_ty), mask=q_ok[:, None] & (offs_dv[None, :] < DV))
    tl.store(LSE + ((b * HQ + q_row) * WQ + q_col) * heads + head, lse, mask=q_ok)


@triton.jit
def halo_bwd_kernel(
    Q, K, V, DO, REL_H, REL_W, LSE, DELTA, DQ, DK, DV_OUT, DREL_H, DREL_W,
    sq_b, sq_h, sq_w, sq_n, sk_b, sk_h, sk_w, sk_n, sv_b, sv_h, sv_w, sv_n, sdo_b, sdo_h, sdo_w, sdo_n,
    rel_head_stride, heads, H, W, HQ, WQ, block, halo, stride, bq, blocks_per_row, D, DV, R, scale, scale_log2,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr,
    BLOCK_R: tl.constexpr, BLOCK_WIN: tl.constexpr, HAS_REL: tl.constexpr, MASK_PADDING: tl.constexpr,
    PRECISION: tl.constexpr,
):  # fmt: skip
    """DQ written; DK, DV_OUT (haloed windows overlap) and DREL_H/W (fp32, zeroed) accumulated atomically."""
    pid_m = tl.program_id(0)
    blk = tl.program_id(1)
    bh = tl.program_id(2)
    b = (bh // heads).to(tl.int64)
    head = bh % heads
    block_row = blk // blocks_per_row
    block_col = blk % blocks_per_row
    win = block + 2 * halo

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    offs_dv = tl.arange(0, BLOCK_DV)
    qy = offs_m // bq
    qx = offs_m % bq
    q_row = block_row * bq + qy
    q_col = block_col * bq + qx
    q_ok = (offs_m < bq * bq) & (q_row < HQ) & (q_col < WQ)
    q = load_rows(Q, b * sq_b + q_row * sq_h + q_col * sq_w + head * sq_n, offs_d, q_ok, D)
    do = load_rows(DO, b * sdo_b + q_row * sdo_h + q_col * sdo_w + head * sdo_n, offs_dv, q_ok, DV)
    stat_off = ((b * HQ + q_row) * WQ + q_col) * heads + head
    lse = tl.load(LSE + stat_off, mask=q_ok, other=float("inf"))  # padded queries get p = 0
    delta = tl.load(DELTA + stat_off, mask=q_ok, other=0.0)

    offs_r = tl.arange(0, BLOCK_R)
    rel_mask = (offs_r[:, None] < R) & (offs_d[None, :] < D)
    rel_off = head * rel_head_stride + offs_r[:, None] * D + offs_d[None, :]
    qh = tl.zeros([BLOCK_M, BLOCK_R], tl.float32)
    qw = tl.zeros([BLOCK_M, BLOCK_R], tl.float32)
    rel_h = tl.zeros([BLOCK_R, BLOCK_D], q.dtype)
    rel_w = tl.zeros([BLOCK_R, BLOCK_D], q.dtype)
    if HAS_REL:
        rel_h = tl.load(REL_H + rel_off, mask=rel_mask, other=0.0).to(q.dtype)
        rel_w = tl.load(REL_W + rel_off, mask=rel_mask, other=0.0).to(q.dtype)
        qh = tl.dot(q, tl.trans(rel_h), input_precision=PRECISION)
        qw = tl.dot(q, tl.trans(rel_w), input_precision=PRECISION)

    dq = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    ds_by_key_row = tl.zeros([BLOCK_M, BLOCK_WIN], tl.float32)  # sum of dS over the keys of each window row
    ds_by_key_col = tl.zeros([BLOCK_M, BLOCK_WIN], tl.float32)
    offs_win = tl.arange(0, BLOCK_WIN)
    for start_n in range(0, win * win, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        ky, kx, k_row, k_col, inside, attend = halo_keys(
            block_row, block_col, offs_n, win, block, halo, H, W, MASK_PADDING
        )
        kk = load_rows(K, b * sk_b + k_row * sk_h + k_col * sk_w + head * sk_n, offs_d, inside, D)
        vv = load_rows(V, b * sv_b + k_row * sv_h + k_col * sv_w + head * sv_n, offs_dv, inside, DV)
        s = halo_logits(q, kk, qh, qw, ky, kx, qy, qx, attend, stride, halo, win, scale_log2, PRECISION, HAS_REL,
                        BLOCK_R)  # fmt: skip
        p, ds = softmax_backward(s, lse, delta, do, vv, PRECISION)
        dq += tl.dot(ds.to(kk.dtype), kk, input_precision=PRECISION) * scale
        dk = tl.dot(tl.trans(ds).to(q.dtype), q, input_precision=PRECISION) * scale
        dv = tl.dot(tl.trans(p).to(do.dtype), do, input_precision=PRECISION)
        key_off = ((b * H + k_row[:, None]) * W + k_col[:, None]) * heads + head
        tl.atomic_add(DK + key_off * D + offs_d[None, :], dk, mask=inside[:, None] & (offs_d[None, :] < D))
        tl.atomic_add(DV_OUT + key_off * DV + offs_dv[None, :], dv, mask=inside[:, None] & (offs_dv[None, :] < DV))
        if HAS_REL:
            onehot_y = (ky[:, None] == offs_win[None, :]).to(tl.float32)  # BLOCK_N, BLOCK_WIN
            onehot_x = (kx[:, None] == offs_win[None, :]).to(tl.float32)
            ds_by_key_row += tl.dot(ds, onehot_y, input_precision="ieee")
            ds_by_key_col += tl.dot(ds, onehot_x, input_precision="ieee")

    if HAS_REL:
        # table row r of query m is key row ky = r + stride * qy + halo - (win - 1)
        ky_of_h = offs_r[None, :] + stride * qy[:, None] + halo - (win - 1)
        kx_of_w = offs_r[None, :] + stride * qx[:, None] + halo - (win - 1)
        valid_h = (ky_of_h >= 0) & (ky_of_h < win) & (offs_r[None, :] < R)
        valid_w = (kx_of_w >= 0) & (kx_of_w < win) & (offs_r[None, :] < R)
        ky_of_h = tl.minimum(tl.maximum(ky_of_h, 0), BLOCK_WIN - 1)
        kx_of_w = tl.minimum(tl.maximum(kx_of_w, 0), BLOCK_WIN - 1)
        grad_h = tl.where(valid_h, tl.gather(ds_by_key_row, ky_of_h, axis=1), 0.0)  # BLOCK_M, BLOCK_R
        grad_w = tl.where(valid_w, tl.gather(ds_by_key_col, kx_of_w, axis=1), 0.0)
        dq += tl.dot(grad_h, rel_h.to(tl.float32), input_precision="ieee")
        dq += tl.dot(grad_w, rel_w.to(tl.float32), input_precision="ieee")
        q32 = q.to(tl.float32)
        tl.atomic_add(DREL_H + rel_off, tl.dot(tl.trans(grad_h), q32, input_precision="ieee"), mask=rel_mask)
        tl.atomic_add(DREL_W + rel_off, tl.dot(tl.trans(grad_w), q32, input_precision="ieee"), mask=rel_mask)

    dq_ptr = DQ + (((b * HQ + q_row[:, None]) * WQ + q_col[:, None]) * heads + head) * D + offs_d[None, :]
    tl.store(dq_ptr, dq, mask=q_ok[:, None] & (offs_d[None, :] < D))


def _meta(q, v, block_size, halo_size, rel_rows, block_m, block_n, precision, mask_padding, has_rel):
    return dict(
        BLOCK_M=block_m,
        BLOCK_N=block_n,
        BLOCK_D=max(16, triton.next_power_of_2(q.shape[-1])),
        BLOCK_DV=max(16, triton.next_power_of_2(v.shape[-1])),
        BLOCK_R=max(16, triton.next_power_of_2(rel_rows)),
        HAS_REL=has_rel,
        MASK_PADDING=mask_padding,
        PRECISION=precision,
    )


def launch_forward(q, k, v, geometry, rel, scale, mask_padding, out, lse, blocks, precision):
    """``geometry = (block, halo, stride, blocks_per_col, blocks_per_row)``; ``rel = (rel_h, rel_w) | (None, None)``."""
    b, hq, wq, heads, d = q.shape
    h, w = k.shape[1:3]
    block, halo, stride, nbh, nbw = geometry
    rows = 2 * (block + 2 * halo) - 1
    rel_h, rel_w = rel
    head_stride = rows * d if rel_h is not None and rel_h.dim() == 3 else 0
    meta = _meta(q, v, block, halo, rows, *blocks, precision, mask_padding, rel_h is not None)
    bq = block // stride
    grid = (triton.cdiv(bq * bq, blocks[0]), nbh * nbw, b * heads)
    halo_fwd_kernel[grid](
        q, k, v, rel_h, rel_w, out, lse,
        *q.stride()[:4], *k.stride()[:4], *v.stride()[:4], *out.stride()[:4],
        head_stride, heads, h, w, hq, wq, block, halo, stride, bq, nbw, d, v.shape[-1], rows, scale * LOG2E, **meta,
    )  # fmt: skip


def launch_backward(do, q, k, v, geometry, rel, lse, delta, scale, mask_padding, grads, blocks, precision):
    """``grads = (dq, dk, dv, drel_h, drel_w)`` fp32 buffers; all but dq zeroed, drel_* None without tables."""
    b, hq, wq, heads, d = q.shape
    h, w = k.shape[1:3]
    block, halo, stride, nbh, nbw = geometry
    win = block + 2 * halo
    rows = 2 * win - 1
    rel_h, rel_w = rel
    head_stride = rows * d if rel_h is not None and rel_h.dim() == 3 else 0
    meta = _meta(q, v, block, halo, rows, *blocks, precision, mask_padding, rel_h is not None)
    bq = block // stride
    grid = (triton.cdiv(bq * bq, blocks[0]), nbh * nbw, b * heads)
    halo_bwd_kernel[grid](
        q, k, v, do, rel_h, rel_w, lse, delta, *grads,
        *q.stride()[:4], *k.stride()[:4], *v.stride()[:4], *do.stride()[:4],
        head_stride, heads, h, w, hq, wq, block, halo, stride, bq, nbw, d, v.shape[-1], rows, scale, scale * LOG2E,
        BLOCK_WIN=max(16, triton.next_power_of_2(win)), **meta,
    )  # fmt: skip
