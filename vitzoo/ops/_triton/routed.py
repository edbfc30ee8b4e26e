"""Region-routed top-k attention in Triton (BiFormer): keys and values are gathered by region index in the kernel.

One program owns a tile of the queries of one region for one (image, head). It walks the flattened list of its
``topk * T`` selected key tokens (``T`` tokens per region) in tiles: key slot ``t`` is token ``t % T`` of region
``index[b, r, t // T]``, loaded straight from the ``[B, H, W, C]`` map, so the top-k-fold copy of keys and values
that the reference (and the official code) makes never exists. Small regions (BiFormer's stage-3 regions hold 4
tokens) are batched several to a key tile.

The backward recomputes the probabilities per key tile, keeps dQ in registers, and adds dK and dV atomically into
fp32 buffers: a key region receives gradient from every query region that selected it.
"""

from __future__ import annotations

import triton
import triton.language as tl

from . import TileConfig, head_block, launch, tile_for
from .tiles import (
    LOG2E,
    finish_softmax,
    load_rows,
    online_softmax_step,
    query_softmax_stats,
    softmax_backward,
    store_rows,
)

# map sizes and counts are not specialised on (== 1, multiple of 16): one compiled kernel serves every map size
SHAPE_ARGS = ["heads", "H", "W", "num_regions", "rh", "rw", "topk", "D", "DV"]


@triton.jit
def region_coords(region, pos, num_regions, rh, rw):
    """Map row and column of token ``pos`` of region ``region`` (regions row-major, tokens row-major inside)."""
    row = (region // num_regions) * rh + pos // rw
    col = (region % num_regions) * rw + pos % rw
    return row, col


@triton.jit
def selected_keys(INDEX, b, region, offs_n, n_regions, topk, tokens, num_regions, rh, rw, H, W):
    """Coordinates of key slots ``offs_n`` of a query region, and which of them are real tokens."""
    slot = offs_n // tokens
    in_list = offs_n < topk * tokens
    # int64 top-k indices: 32 bits after the load keep the region arithmetic below off 64-bit division
    key_region = tl.load(INDEX + (b * n_regions + region) * topk + slot, mask=in_list, other=0).to(tl.int32)
    row, col = region_coords(key_region, offs_n % tokens, num_regions, rh, rw)
    return row, col, in_list & (row < H) & (col < W)


@triton.jit
def routed_program(heads):
    """This program's query region (grid axis 1), image and head (axis 2)."""
    region = tl.program_id(1)
    bh = tl.program_id(2)
    return region, (bh // heads).to(tl.int64), bh % heads


@triton.jit
def region_queries(
    Q, b, head, region, offs_m, num_regions, rh, rw, H, W, stride_q_batch, stride_q_row, stride_q_col, offs_d, D
):
    """A query tile of a region (channels from ``head * D`` of ``[B, H, W, C]``): queries, rows, columns, validity."""
    q_row, q_col = region_coords(region, offs_m, num_regions, rh, rw)
    q_ok = (offs_m < rh * rw) & (q_row < H) & (q_col < W)
    q = load_rows(Q, b * stride_q_batch + q_row * stride_q_row + q_col * stride_q_col + head * D, offs_d, q_ok, D)
    return q, q_row, q_col, q_ok


@triton.jit
def region_queries_backward(
    Q, DO, LSE, DELTA, b, head, region, offs_m, num_regions, rh, rw, H, W, heads,
    stride_q_batch, stride_q_row, stride_q_col, stride_do_batch, stride_do_row, stride_do_col,
    offs_d, offs_dv, D, DV,
):  # fmt: skip
    """A query tile for the backward: :func:`region_queries` plus the output gradient, log-sum-exp and delta."""
    q, q_row, q_col, q_ok = region_queries(
        Q, b, head, region, offs_m, num_regions, rh, rw, H, W, stride_q_batch, stride_q_row, stride_q_col, offs_d, D
    )
    do = load_rows(
        DO, b * stride_do_batch + q_row * stride_do_row + q_col * stride_do_col + head * DV, offs_dv, q_ok, DV
    )
    lse, delta = query_softmax_stats(LSE, DELTA, ((b * H + q_row) * W + q_col) * heads + head, q_ok)
    return q, do, lse, delta, q_row, q_col, q_ok


@triton.jit
def routed_key_tile(
    q, K, V, INDEX, b, head, region, offs_n, n_regions, topk, num_regions, rh, rw, H, W,
    stride_k_batch, stride_k_row, stride_k_col, stride_v_batch, stride_v_row, stride_v_col, offs_d, offs_dv, D, DV,
    scale_log2, PRECISION: tl.constexpr,
):  # fmt: skip
    """Key slots ``offs_n`` of a query region's selected regions: keys, values, rows, columns, validity, and the
    base-2 logits of the query tile ``q`` against them (absent keys at -inf)."""
    k_row, k_col, k_ok = selected_keys(INDEX, b, region, offs_n, n_regions, topk, rh * rw, num_regions, rh, rw, H, W)
    kk = load_rows(K, b * stride_k_batch + k_row * stride_k_row + k_col * stride_k_col + head * D, offs_d, k_ok, D)
    vv = load_rows(V, b * stride_v_batch + k_row * stride_v_row + k_col * stride_v_col + head * DV, offs_dv, k_ok, DV)
    s = tl.dot(q, tl.trans(kk), input_precision=PRECISION) * scale_log2
    return kk, vv, k_row, k_col, k_ok, tl.where(k_ok[None, :], s, float("-inf"))


@triton.jit(do_not_specialize=SHAPE_ARGS)
def routed_fwd_kernel(
    Q, K, V, INDEX, OUT, LSE,
    stride_q_batch, stride_q_row, stride_q_col, stride_k_batch, stride_k_row, stride_k_col,
    stride_v_batch, stride_v_row, stride_v_col, stride_o_batch, stride_o_row, stride_o_col,
    heads, H, W, num_regions, rh, rw, topk, D, DV, scale_log2,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr,
    PRECISION: tl.constexpr,
):  # fmt: skip
    region, b, head = routed_program(heads)
    tokens = rh * rw
    n_regions = num_regions * num_regions
    offs_m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    offs_dv = tl.arange(0, BLOCK_DV)
    q, q_row, q_col, q_ok = region_queries(
        Q, b, head, region, offs_m, num_regions, rh, rw, H, W, stride_q_batch, stride_q_row, stride_q_col, offs_d, D
    )

    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_DV], tl.float32)
    for start_n in range(0, topk * tokens, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        kk, vv, k_row, k_col, k_ok, s = routed_key_tile(
            q, K, V, INDEX, b, head, region, offs_n, n_regions, topk, num_regions, rh, rw, H, W,
            stride_k_batch, stride_k_row, stride_k_col, stride_v_batch, stride_v_row, stride_v_col, offs_d, offs_dv,
            D, DV, scale_log2, PRECISION,
        )  # fmt: skip
        m_i, l_i, acc = online_softmax_step(s, m_i, l_i, acc, vv, PRECISION)

    out, lse = finish_softmax(acc, m_i, l_i)
    o_rows = b * stride_o_batch + q_row * stride_o_row + q_col * stride_o_col + head * DV
    store_rows(OUT, o_rows, offs_dv, q_ok, DV, out)
    tl.store(LSE + ((b * H + q_row) * W + q_col) * heads + head, lse, mask=q_ok)


@triton.jit(do_not_specialize=SHAPE_ARGS)
def routed_bwd_kernel(
    Q, K, V, DO, INDEX, LSE, DELTA, DQ, DK, DV_OUT,
    stride_q_batch, stride_q_row, stride_q_col, stride_k_batch, stride_k_row, stride_k_col,
    stride_v_batch, stride_v_row, stride_v_col, stride_do_batch, stride_do_row, stride_do_col,
    heads, H, W, num_regions, rh, rw, topk, D, DV, scale, scale_log2,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr,
    QUERY_GRADS: tl.constexpr, PRECISION: tl.constexpr,
):  # fmt: skip
    """One query tile of one region, in one of two passes that each recompute the probabilities (keeping the live
    state of either within the register file): ``QUERY_GRADS`` writes DQ, else DK and DV_OUT (contiguous fp32
    ``[B, H, W, C | Cv]``, zeroed) are accumulated atomically (regions are selected by many queries)."""
    region, b, head = routed_program(heads)
    tokens = rh * rw
    n_regions = num_regions * num_regions
    c = heads * D
    cv = heads * DV
    offs_m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    offs_dv = tl.arange(0, BLOCK_DV)
    q, do, lse, delta, q_row, q_col, q_ok = region_queries_backward(
        Q, DO, LSE, DELTA, b, head, region, offs_m, num_regions, rh, rw, H, W, heads,
        stride_q_batch, stride_q_row, stride_q_col, stride_do_batch, stride_do_row, stride_do_col,
        offs_d, offs_dv, D, DV,
    )  # fmt: skip

    dq = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    for start_n in range(0, topk * tokens, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        kk, vv, k_row, k_col, k_ok, s = routed_key_tile(
            q, K, V, INDEX, b, head, region, offs_n, n_regions, topk, num_regions, rh, rw, H, W,
            stride_k_batch, stride_k_row, stride_k_col, stride_v_batch, stride_v_row, stride_v_col, offs_d, offs_dv,
            D, DV, scale_log2, PRECISION,
        )  # fmt: skip
        p, ds = softmax_backward(s, lse, delta, do, vv, PRECISION)
        if QUERY_GRADS:
            dq += tl.dot(ds.to(kk.dtype), kk, input_precision=PRECISION)
        else:
            dv = tl.dot(tl.trans(p).to(do.dtype), do, input_precision=PRECISION)
            dk = tl.dot(tl.trans(ds).to(q.dtype), q, input_precision=PRECISION) * scale
            key_off = (b * H + k_row[:, None]) * W + k_col[:, None]
            dk_ptr = DK + key_off * c + head * D + offs_d[None, :]
            tl.atomic_add(dk_ptr, dk, mask=k_ok[:, None] & (offs_d[None, :] < D), sem="relaxed")
            dv_ptr = DV_OUT + key_off * cv + head * DV + offs_dv[None, :]
            tl.atomic_add(dv_ptr, dv, mask=k_ok[:, None] & (offs_dv[None, :] < DV), sem="relaxed")

    if QUERY_GRADS:
        dq_ptr = DQ + ((b * H + q_row[:, None]) * W + q_col[:, None]) * c + head * D + offs_d[None, :]
        tl.store(dq_ptr, dq * scale, mask=q_ok[:, None] & (offs_d[None, :] < D))


def tile_config(tokens: int, topk: int, d: int, dv: int, dtype, backward: bool) -> TileConfig:
    """Tiles for regions of ``tokens`` tokens routed to ``topk`` regions each (:func:`vitzoo.ops._triton.tile_for`):
    a query tile covers one region, and a key tile may batch several small selected regions."""
    return tile_for(tokens, tokens * topk, head_block(d, dv), dtype, backward, biased=False)


# what decides the best tile of a routed launch: region size, regions routed to and head dims (map size and batch
# change only how many programs run)
TUNING_KEY = ("rh", "rw", "topk", "D", "DV")


def _flags(q, v, heads, regions, topk, precision, backward):
    d, dv = q.shape[-1] // heads, v.shape[-1] // heads
    _, rh, rw = regions
    cfg = tile_config(rh * rw, topk, d, dv, q.dtype, backward)
    flags = dict(BLOCK_D=head_block(d), BLOCK_DV=head_block(dv), PRECISION=precision)
    return d, dv, dict(flags, tiles=cfg.candidates(q.dtype), key=TUNING_KEY)


def launch_forward(q, k, v, index, regions, heads, scale, out, lse, precision):
    """``regions = (num_regions, rh, rw)``; writes ``out`` ``[B, H, W, Cv]`` and ``lse`` ``[B, H, W, heads]``."""
    b, h, w, _ = q.shape
    num_regions, rh, rw = regions
    d, dv, flags = _flags(q, v, heads, regions, index.shape[-1], precision, backward=False)
    grid = lambda meta: (triton.cdiv(rh * rw, meta["BLOCK_M"]), num_regions * num_regions, b * heads)  # noqa: E731
    launch(routed_fwd_kernel, grid,
        q, k, v, index, out, lse,
        *q.stride()[:3], *k.stride()[:3], *v.stride()[:3], *out.stride()[:3],
        heads, h, w, num_regions, rh, rw, index.shape[-1], d, dv, scale * LOG2E.value, **flags,
    )  # fmt: skip


def launch_backward(do, q, k, v, index, lse, delta, regions, heads, scale, grads, precision):
    """``grads = (dq, dk, dv)`` fp32 buffers, dk and dv zeroed."""
    b, h, w, _ = q.shape
    num_regions, rh, rw = regions
    d, dv, flags = _flags(q, v, heads, regions, index.shape[-1], precision, backward=True)
    grid = lambda meta: (triton.cdiv(rh * rw, meta["BLOCK_M"]), num_regions * num_regions, b * heads)  # noqa: E731
    for query_pass in (True, False):
        launch(routed_bwd_kernel, grid,
            q, k, v, do, index, lse, delta, *grads,
            *q.stride()[:3], *k.stride()[:3], *v.stride()[:3], *do.stride()[:3],
            heads, h, w, num_regions, rh, rw, index.shape[-1], d, dv, scale, scale * LOG2E.value,
            QUERY_GRADS=query_pass, zeroed=() if query_pass else ("DK", "DV_OUT"), **flags,
        )  # fmt: skip
