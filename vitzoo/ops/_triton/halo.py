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

import torch
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
DREL_SLOTS = 16  # partial copies of the relative-table gradients, to spread the atomics of a launch

SHAPE_ARGS = [
    "drel_slots",
    "drel_slot_stride",
    "rel_head_stride",
    "heads",
    "H",
    "W",
    "HQ",
    "WQ",
    "block",
    "halo",
    "bq",
    "blocks_per_row",
    "D",
    "DV",
    "R",
]


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
def halo_program(heads, blocks_per_row):
    """This program's query block (grid axis 1) as its block row and column, and its image and head (axis 2)."""
    blk = tl.program_id(1)
    bh = tl.program_id(2)
    return blk, bh, (bh // heads).to(tl.int64), bh % heads, blk // blocks_per_row, blk % blocks_per_row


@triton.jit
def halo_queries(
    Q, b, head, block_row, block_col, offs_m, bq, HQ, WQ,
    stride_q_batch, stride_q_row, stride_q_col, stride_q_head, offs_d, D,
):  # fmt: skip
    """A query tile of a block: the queries, their position in the block, their map row and column, validity."""
    qy = offs_m // bq
    qx = offs_m % bq
    q_row = block_row * bq + qy
    q_col = block_col * bq + qx
    q_ok = (offs_m < bq * bq) & (q_row < HQ) & (q_col < WQ)
    q = token_rows(Q, b, q_row, q_col, head, stride_q_batch, stride_q_row, stride_q_col, stride_q_head, offs_d, q_ok, D)
    return q, qy, qx, q_row, q_col, q_ok


@triton.jit
def halo_key_tile(
    K, V, b, head, block_row, block_col, offs_n, win, block, halo, H, W,
    stride_k_batch, stride_k_row, stride_k_col, stride_k_head, stride_v_batch, stride_v_row, stride_v_col,
    stride_v_head, offs_d, offs_dv, D, DV, MASK_PADDING: tl.constexpr,
):  # fmt: skip
    """Keys and values of slots ``offs_n`` of a block's haloed window, with :func:`halo_keys`' positions and flags."""
    ky, kx, k_row, k_col, inside, attend = halo_keys(block_row, block_col, offs_n, win, block, halo, H, W, MASK_PADDING)
    kk = token_rows(
        K, b, k_row, k_col, head, stride_k_batch, stride_k_row, stride_k_col, stride_k_head, offs_d, inside, D
    )
    vv = token_rows(
        V, b, k_row, k_col, head, stride_v_batch, stride_v_row, stride_v_col, stride_v_head, offs_dv, inside, DV
    )
    return kk, vv, ky, kx, k_row, k_col, inside, attend


@triton.jit
def relative_table_rows(head, rel_head_stride, offs_d, D, R, BLOCK_R: tl.constexpr):
    """Rows, offsets and mask of this head's relative table (``[R, D]``, or one shared by every head)."""
    offs_r = tl.arange(0, BLOCK_R)
    rel_off = head * rel_head_stride + offs_r[:, None] * D + offs_d[None, :]
    rel_mask = (offs_r[:, None] < R) & (offs_d[None, :] < D)
    return offs_r, rel_off, rel_mask


@triton.jit
def relative_query_logits(q, REL_H, REL_W, rel_off, rel_mask, BLOCK_M: tl.constexpr, BLOCK_R: tl.constexpr,
                          HAS_REL: tl.constexpr, PRECISION: tl.constexpr):  # fmt: skip
    """``q . rel_h^T`` and ``q . rel_w^T`` of a query tile (``[BLOCK_M, BLOCK_R]``, zeros without tables). Each table
    is loaded just before its product, so only one is live at a time."""
    qh = tl.zeros([BLOCK_M, BLOCK_R], tl.float32)
    qw = tl.zeros([BLOCK_M, BLOCK_R], tl.float32)
    if HAS_REL:
        rel_h = tl.load(REL_H + rel_off, mask=rel_mask, other=0.0).to(q.dtype)
        qh = tl.dot(q, tl.trans(rel_h), input_precision=PRECISION)
        rel_w = tl.load(REL_W + rel_off, mask=rel_mask, other=0.0).to(q.dtype)
        qw = tl.dot(q, tl.trans(rel_w), input_precision=PRECISION)
    return qh, qw


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
        s += (tl.gather(qh, rows_h, axis=1) + tl.gather(qw, rows_w, axis=1)) * LOG2E
    return tl.where(attend[None, :], s, float("-inf"))


@triton.jit(do_not_specialize=SHAPE_ARGS)
def halo_fwd_kernel(
    Q, K, V, REL_H, REL_W, OUT, LSE,
    stride_q_batch, stride_q_row, stride_q_col, stride_q_head, stride_k_batch, stride_k_row, stride_k_col,
    stride_k_head, stride_v_batch, stride_v_row, stride_v_col, stride_v_head, stride_o_batch, stride_o_row,
    stride_o_col, stride_o_head,
    rel_head_stride, heads, H, W, HQ, WQ, block, halo, stride, bq, blocks_per_row, D, DV, R, scale_log2,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr,
    BLOCK_R: tl.constexpr, HAS_REL: tl.constexpr, MASK_PADDING: tl.constexpr, PRECISION: tl.constexpr,
):  # fmt: skip
    blk, bh, b, head, block_row, block_col = halo_program(heads, blocks_per_row)
    win = block + 2 * halo
    offs_m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    offs_dv = tl.arange(0, BLOCK_DV)
    q, qy, qx, q_row, q_col, q_ok = halo_queries(
        Q, b, head, block_row, block_col, offs_m, bq, HQ, WQ,
        stride_q_batch, stride_q_row, stride_q_col, stride_q_head, offs_d, D,
    )  # fmt: skip
    offs_r, rel_off, rel_mask = relative_table_rows(head, rel_head_stride, offs_d, D, R, BLOCK_R)
    qh, qw = relative_query_logits(q, REL_H, REL_W, rel_off, rel_mask, BLOCK_M, BLOCK_R, HAS_REL, PRECISION)

    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_DV], tl.float32)
    for start_n in range(0, win * win, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        kk, vv, ky, kx, _, _, _, attend = halo_key_tile(
            K, V, b, head, block_row, block_col, offs_n, win, block, halo, H, W,
            stride_k_batch, stride_k_row, stride_k_col, stride_k_head, stride_v_batch, stride_v_row, stride_v_col,
            stride_v_head, offs_d, offs_dv, D, DV, MASK_PADDING,
        )  # fmt: skip
        s = halo_logits(q, kk, qh, qw, ky, kx, qy, qx, attend, stride, halo, win, scale_log2, PRECISION, HAS_REL,
                        BLOCK_R)  # fmt: skip
        m_i, l_i, acc = online_softmax_step(s, m_i, l_i, acc, vv, PRECISION)

    out, lse = finish_softmax(acc, m_i, l_i)
    o_rows = b * stride_o_batch + q_row * stride_o_row + q_col * stride_o_col + head * stride_o_head
    store_rows(OUT, o_rows, offs_dv, q_ok, DV, out)
    tl.store(LSE + ((b * HQ + q_row) * WQ + q_col) * heads + head, lse, mask=q_ok)


@triton.jit(do_not_specialize=SHAPE_ARGS)
def halo_bwd_kernel(
    Q, K, V, DO, REL_H, REL_W, LSE, DELTA, DQ, DK, DV_OUT, DREL_H, DREL_W,
    stride_q_batch, stride_q_row, stride_q_col, stride_q_head, stride_k_batch, stride_k_row, stride_k_col,
    stride_k_head, stride_v_batch, stride_v_row, stride_v_col, stride_v_head, stride_do_batch, stride_do_row,
    stride_do_col, stride_do_head,
    rel_head_stride, drel_slots, drel_slot_stride, heads, H, W, HQ, WQ, block, halo, stride, bq, blocks_per_row,
    D, DV, R, scale, scale_log2,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr,
    BLOCK_R: tl.constexpr, BLOCK_WIN: tl.constexpr, HAS_REL: tl.constexpr, MASK_PADDING: tl.constexpr,
    QUERY_GRADS: tl.constexpr, KEY_GRADS: tl.constexpr, PRECISION: tl.constexpr,
):  # fmt: skip
    """One query tile of one block, in one of two passes (each recomputes the probabilities, which keeps the live
    state of either within the register file): ``QUERY_GRADS`` writes DQ and adds DREL_H/W, ``KEY_GRADS`` adds DK and
    DV_OUT (haloed windows overlap, so key gradients are accumulated atomically; fp32, zeroed)."""
    blk, bh, b, head, block_row, block_col = halo_program(heads, blocks_per_row)
    win = block + 2 * halo
    offs_m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    offs_dv = tl.arange(0, BLOCK_DV)
    q, qy, qx, q_row, q_col, q_ok = halo_queries(
        Q, b, head, block_row, block_col, offs_m, bq, HQ, WQ,
        stride_q_batch, stride_q_row, stride_q_col, stride_q_head, offs_d, D,
    )  # fmt: skip
    do = token_rows(
        DO, b, q_row, q_col, head, stride_do_batch, stride_do_row, stride_do_col, stride_do_head, offs_dv, q_ok, DV
    )
    lse, delta = query_softmax_stats(LSE, DELTA, ((b * HQ + q_row) * WQ + q_col) * heads + head, q_ok)
    # the tables are loaded again after the key loop (for dQ and their gradients) rather than held through it
    offs_r, rel_off, rel_mask = relative_table_rows(head, rel_head_stride, offs_d, D, R, BLOCK_R)
    qh, qw = relative_query_logits(q, REL_H, REL_W, rel_off, rel_mask, BLOCK_M, BLOCK_R, HAS_REL, PRECISION)

    dq = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    ds_by_key_row = tl.zeros([BLOCK_M, BLOCK_WIN], tl.float32)  # sum of dS over the keys of each window row
    ds_by_key_col = tl.zeros([BLOCK_M, BLOCK_WIN], tl.float32)
    offs_win = tl.arange(0, BLOCK_WIN)
    for start_n in range(0, win * win, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        kk, vv, ky, kx, k_row, k_col, inside, attend = halo_key_tile(
            K, V, b, head, block_row, block_col, offs_n, win, block, halo, H, W,
            stride_k_batch, stride_k_row, stride_k_col, stride_k_head, stride_v_batch, stride_v_row, stride_v_col,
            stride_v_head, offs_d, offs_dv, D, DV, MASK_PADDING,
        )  # fmt: skip
        s = halo_logits(q, kk, qh, qw, ky, kx, qy, qx, attend, stride, halo, win, scale_log2, PRECISION, HAS_REL,
                        BLOCK_R)  # fmt: skip
        p, ds = softmax_backward(s, lse, delta, do, vv, PRECISION)
        if KEY_GRADS:
            dk = tl.dot(tl.trans(ds).to(q.dtype), q, input_precision=PRECISION) * scale
            dv = tl.dot(tl.trans(p).to(do.dtype), do, input_precision=PRECISION)
            key_off = ((b * H + k_row[:, None]) * W + k_col[:, None]) * heads + head
            tl.atomic_add(
                DK + key_off * D + offs_d[None, :], dk, mask=inside[:, None] & (offs_d[None, :] < D), sem="relaxed"
            )
            tl.atomic_add(
                DV_OUT + key_off * DV + offs_dv[None, :],
                dv,
                mask=inside[:, None] & (offs_dv[None, :] < DV),
                sem="relaxed",
            )
        if QUERY_GRADS:
            dq += tl.dot(ds.to(kk.dtype), kk, input_precision=PRECISION) * scale
        if QUERY_GRADS and HAS_REL:
            # dS in the inputs' precision, as for dK: the one-hot factor is exact in any dtype
            ds_in = ds.to(q.dtype)
            onehot_y = (ky[:, None] == offs_win[None, :]).to(q.dtype)  # BLOCK_N, BLOCK_WIN
            onehot_x = (kx[:, None] == offs_win[None, :]).to(q.dtype)
            ds_by_key_row += tl.dot(ds_in, onehot_y, input_precision=PRECISION)
            ds_by_key_col += tl.dot(ds_in, onehot_x, input_precision=PRECISION)

    if QUERY_GRADS:  # the dK / dV pass recomputes dS but writes only the key gradients
        if HAS_REL:
            # programs spread their table gradients over drel_slots copies (summed afterwards): one shared table would
            # take the atomics of every program of the launch on a few cache lines
            drel_slot = ((bh * tl.num_programs(1) + blk) % drel_slots) * drel_slot_stride
            # table row r of query m is key row ky = r + stride * qy + halo - (win - 1)
            ky_of_h = offs_r[None, :] + stride * qy[:, None] + halo - (win - 1)
            kx_of_w = offs_r[None, :] + stride * qx[:, None] + halo - (win - 1)
            valid_h = (ky_of_h >= 0) & (ky_of_h < win) & (offs_r[None, :] < R)
            valid_w = (kx_of_w >= 0) & (kx_of_w < win) & (offs_r[None, :] < R)
            ky_of_h = tl.minimum(tl.maximum(ky_of_h, 0), BLOCK_WIN - 1)
            kx_of_w = tl.minimum(tl.maximum(kx_of_w, 0), BLOCK_WIN - 1)
            grad_h = tl.where(valid_h, tl.gather(ds_by_key_row, ky_of_h, axis=1), 0.0)  # BLOCK_M, BLOCK_R
            grad_w = tl.where(valid_w, tl.gather(ds_by_key_col, kx_of_w, axis=1), 0.0)
            grad_h = grad_h.to(q.dtype)
            grad_w = grad_w.to(q.dtype)
            rel_h = tl.load(REL_H + rel_off, mask=rel_mask, other=0.0).to(q.dtype)
            dq += tl.dot(grad_h, rel_h, input_precision=PRECISION)
            rel_w = tl.load(REL_W + rel_off, mask=rel_mask, other=0.0).to(q.dtype)
            dq += tl.dot(grad_w, rel_w, input_precision=PRECISION)
            drel_h = tl.dot(tl.trans(grad_h), q, input_precision=PRECISION)
            drel_w = tl.dot(tl.trans(grad_w), q, input_precision=PRECISION)
            tl.atomic_add(DREL_H + drel_slot + rel_off, drel_h, mask=rel_mask, sem="relaxed")
            tl.atomic_add(DREL_W + drel_slot + rel_off, drel_w, mask=rel_mask, sem="relaxed")

        dq_ptr = DQ + (((b * HQ + q_row[:, None]) * WQ + q_col[:, None]) * heads + head) * D + offs_d[None, :]
        tl.store(dq_ptr, dq, mask=q_ok[:, None] & (offs_d[None, :] < D))


def tile_config(queries: int, keys: int, d: int, dv: int, dtype, backward: bool, has_rel: bool) -> TileConfig:
    """Tiles for ``queries`` per block and ``keys`` per haloed window (:func:`vitzoo.ops._triton.tile_for`): the
    gathered relative logits count as a bias; fp32 (FMA dots and fp32 gathers) takes one step smaller again."""
    width = head_block(d, dv)
    return tile_for(queries, keys, width, dtype, backward, has_rel, steps=1 if dtype == torch.float32 else 0)


# what decides the best tile of a halo launch: the block and halo geometry and the head dims (map size and batch
# change only how many programs run)
TUNING_KEY = ("block", "halo", "stride", "D", "DV")


def _flags(q, v, geometry, rel_rows, precision, mask_padding, has_rel, backward):
    block, halo, stride = geometry[:3]
    queries, keys = (block // stride) ** 2, (block + 2 * halo) ** 2
    cfg = tile_config(queries, keys, q.shape[-1], v.shape[-1], q.dtype, backward, has_rel)
    return dict(
        BLOCK_D=head_block(q.shape[-1]),
        BLOCK_DV=head_block(v.shape[-1]),
        BLOCK_R=head_block(rel_rows),
        HAS_REL=has_rel,
        MASK_PADDING=mask_padding,
        PRECISION=precision,
        tiles=cfg.candidates(q.dtype),
        key=TUNING_KEY,
    )


def launch_forward(q, k, v, geometry, rel, scale, mask_padding, out, lse, precision):
    """``geometry = (block, halo, stride, blocks_per_col, blocks_per_row)``; ``rel = (rel_h, rel_w) | (None, None)``."""
    b, hq, wq, heads, d = q.shape
    h, w = k.shape[1:3]
    block, halo, stride, nbh, nbw = geometry
    rows = 2 * (block + 2 * halo) - 1
    rel_h, rel_w = rel
    head_stride = rows * d if rel_h is not None and rel_h.dim() == 3 else 0
    flags = _flags(q, v, geometry, rows, precision, mask_padding, rel_h is not None, backward=False)
    bq = block // stride
    launch(halo_fwd_kernel, lambda meta: (triton.cdiv(bq * bq, meta["BLOCK_M"]), nbh * nbw, b * heads),
        q, k, v, rel_h, rel_w, out, lse,
        *q.stride()[:4], *k.stride()[:4], *v.stride()[:4], *out.stride()[:4],
        head_stride, heads, h, w, hq, wq, block, halo, stride, bq, nbw, d, v.shape[-1], rows, scale * LOG2E.value,
        **flags,
    )  # fmt: skip


def launch_backward(do, q, k, v, geometry, rel, lse, delta, scale, mask_padding, grads, precision):
    """``grads = (dq, dk, dv, drel_h, drel_w)`` fp32 buffers; all but dq zeroed, drel_* None without tables or
    ``[DREL_SLOTS, *table.shape]`` partial sums for the caller to add up."""
    b, hq, wq, heads, d = q.shape
    h, w = k.shape[1:3]
    block, halo, stride, nbh, nbw = geometry
    win = block + 2 * halo
    rows = 2 * win - 1
    rel_h, rel_w = rel
    head_stride = rows * d if rel_h is not None and rel_h.dim() == 3 else 0
    drel_slot_stride = rel_h.numel() if rel_h is not None else 0
    flags = _flags(q, v, geometry, rows, precision, mask_padding, rel_h is not None, backward=True)
    bq = block // stride
    for query_pass in (True, False):
        # each pass accumulates atomically into its own buffers, which the tuner zeroes between timed runs
        zeroed = ("DREL_H", "DREL_W") if query_pass else ("DK", "DV_OUT")
        launch(halo_bwd_kernel, lambda meta: (triton.cdiv(bq * bq, meta["BLOCK_M"]), nbh * nbw, b * heads),
            q, k, v, do, rel_h, rel_w, lse, delta, *grads,
            *q.stride()[:4], *k.stride()[:4], *v.stride()[:4], *do.stride()[:4],
            head_stride, DREL_SLOTS, drel_slot_stride, heads, h, w, hq, wq, block, halo, stride, bq, nbw, d,
            v.shape[-1], rows, scale, scale * LOG2E.value,
            BLOCK_WIN=max(16, triton.next_power_of_2(win)), QUERY_GRADS=query_pass, KEY_GRADS=not query_pass,
            zeroed=zeroed, **flags,
        )  # fmt: skip
