"""Triton backend of :func:`vitzoo.ops.halo_attention`: haloed windows read in place, relative logits in-kernel.

The kernels (:mod:`vitzoo.ops._triton.halo`) are wrapped as ``torch.library`` custom ops with fake implementations
and an autograd formula (gradients of q, k, v and both relative-position tables), so ``torch.compile`` keeps them as
single opaque calls.
"""

from __future__ import annotations

import torch

from .. import _triton
from .._common import padded_size
from .._triton import halo as kernels

MAX_HEAD_DIM = 256
# fp32 dots run on the FMA units; above this head dim the backward's query pass (dQ, relative-table gradients)
# does not fit 255 registers a thread even at 16 x 16 tiles
MAX_FP32_GRAD_HEAD_DIM = 32
MAX_WINDOW = 64  # window side: the backward keeps a [queries, window side] tile per axis in registers


def can_run(q, k, v, block_size, halo_size, *, query_stride=1, rel_pos=None, mask_padding=True, scale=None):
    reason = _triton.device_reason(q, k, v)
    if reason is not None:
        return reason
    if max(q.shape[-1], v.shape[-1]) > MAX_HEAD_DIM:
        return f"head dims up to {MAX_HEAD_DIM} (got {q.shape[-1]} / {v.shape[-1]})"
    if block_size + 2 * halo_size > MAX_WINDOW:
        return f"windows up to {MAX_WINDOW} pixels a side (got {block_size + 2 * halo_size})"
    needs_grad = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (q, k, v, *(rel_pos or ())))
    if q.dtype == torch.float32 and needs_grad and max(q.shape[-1], v.shape[-1]) > MAX_FP32_GRAD_HEAD_DIM:
        # measured by tests/test_kernels_compile.py: the fp32 backward's query pass spills at every tile size
        return f"fp32 backward for head dims up to {MAX_FP32_GRAD_HEAD_DIM} (got {q.shape[-1]} / {v.shape[-1]})"
    options = dict(query_stride=query_stride, rel_pos=rel_pos, mask_padding=mask_padding, scale=scale)
    return _triton.resources_reason(record, q, k, v, block_size, halo_size, **options)


def can_auto_select(q, *args, **kwargs) -> str | None:
    return _triton.auto_reason(q)


def _geometry(k: torch.Tensor, block: int, halo: int, stride: int) -> tuple[int, int, int, int, int]:
    h, w = k.shape[1:3]
    return block, halo, stride, padded_size(h, block) // block, padded_size(w, block) // block


def run_fwd(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    rel_h: torch.Tensor | None,
    rel_w: torch.Tensor | None,
    block_size: int,
    halo_size: int,
    query_stride: int,
    mask_padding: bool,
    scale: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Output ``[B, Hq, Wq, heads, Dv]`` and the base-2 log-sum-exp per query ``[B, Hq, Wq, heads]`` (fp32)."""
    q, k, v, rel_h, rel_w = (_triton.last_dim_contiguous(t) for t in (q, k, v, rel_h, rel_w))
    b, hq, wq, heads, _ = q.shape
    out = _triton.empty((b, hq, wq, heads, v.shape[-1]), q.dtype, q.device)
    lse = _triton.empty((b, hq, wq, heads), torch.float32, q.device)
    kernels.launch_forward(
        q,
        k,
        v,
        _geometry(k, block_size, halo_size, query_stride),
        (rel_h, rel_w),
        scale,
        mask_padding,
        out,
        lse,
        _triton.dot_precision(q.dtype),
    )
    return out, lse


halo_attention_fwd = torch.library.custom_op("vitzoo::halo_attention_fwd", run_fwd, mutates_args=())


@halo_attention_fwd.register_fake
def _(q, k, v, rel_h, rel_w, block_size, halo_size, query_stride, mask_padding, scale):
    b, hq, wq, heads, _ = q.shape
    return q.new_empty(b, hq, wq, heads, v.shape[-1]), q.new_empty(b, hq, wq, heads, dtype=torch.float32)


def run_bwd(
    grad_out: torch.Tensor,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    rel_h: torch.Tensor | None,
    rel_w: torch.Tensor | None,
    out: torch.Tensor,
    lse: torch.Tensor,
    block_size: int,
    halo_size: int,
    query_stride: int,
    mask_padding: bool,
    scale: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradients of q, k, v, rel_h, rel_w (the last two empty without tables)."""
    grad_out, q, k, v, rel_h, rel_w = (_triton.last_dim_contiguous(t) for t in (grad_out, q, k, v, rel_h, rel_w))
    delta = (grad_out.float() * out.float()).sum(-1).contiguous()  # rowsum(dO * O): the softmax backward's term
    dq = _triton.empty(q.shape, torch.float32, q.device)
    dk = torch.zeros(k.shape, dtype=torch.float32, device=q.device)  # haloed windows overlap: accumulated
    dv = torch.zeros(v.shape, dtype=torch.float32, device=q.device)
    has_rel = rel_h is not None
    slots = kernels.DREL_SLOTS
    drel_h = torch.zeros(slots, *rel_h.shape, dtype=torch.float32, device=q.device) if has_rel else None
    drel_w = torch.zeros(slots, *rel_w.shape, dtype=torch.float32, device=q.device) if has_rel else None
    kernels.launch_backward(
        grad_out,
        q,
        k,
        v,
        _geometry(k, block_size, halo_size, query_stride),
        (rel_h, rel_w),
        lse,
        delta,
        scale,
        mask_padding,
        (dq, dk, dv, drel_h, drel_w),
        _triton.dot_precision(q.dtype),
    )
    if has_rel:
        drel_h, drel_w = drel_h.sum(0).to(rel_h.dtype), drel_w.sum(0).to(rel_w.dtype)
    else:  # two distinct empty tensors: custom-op outputs may not alias each other
        drel_h, drel_w = q.new_empty(0), q.new_empty(0)
    return dq.to(q.dtype), dk.to(k.dtype), dv.to(v.dtype), drel_h, drel_w


halo_attention_bwd = torch.library.custom_op("vitzoo::halo_attention_bwd", run_bwd, mutates_args=())


@halo_attention_bwd.register_fake
def _(grad_out, q, k, v, rel_h, rel_w, out, lse, block_size, halo_size, query_stride, mask_padding, scale):
    if rel_h is None:
        drel_h, drel_w = q.new_empty(0), q.new_empty(0)
    else:
        drel_h, drel_w = rel_h.new_empty(rel_h.shape), rel_w.new_empty(rel_w.shape)
    return q.new_empty(q.shape), k.new_empty(k.shape), v.new_empty(v.shape), drel_h, drel_w


def _setup_context(ctx, inputs, output):
    q, k, v, rel_h, rel_w, *args = inputs
    ctx.save_for_backward(q, k, v, rel_h, rel_w, *output)
    ctx.args = tuple(args)


def _backward(ctx, grad_out, grad_lse):
    q, k, v, rel_h, rel_w, out, lse = ctx.saved_tensors
    dq, dk, dv, drel_h, drel_w = halo_attention_bwd(grad_out, q, k, v, rel_h, rel_w, out, lse, *ctx.args)
    has_rel = rel_h is not None
    return dq, dk, dv, drel_h if has_rel else None, drel_w if has_rel else None, None, None, None, None, None


halo_attention_fwd.register_autograd(_backward, setup_context=_setup_context)


def forward(q, k, v, block_size, halo_size, *, query_stride=1, rel_pos=None, mask_padding=True, scale=None):
    rel_h, rel_w = rel_pos if rel_pos is not None else (None, None)
    out, _ = halo_attention_fwd(
        q, k, v, rel_h, rel_w, block_size, halo_size, query_stride, bool(mask_padding), float(scale)
    )
    return out


def record(q, k, v, block_size, halo_size, *, query_stride=1, rel_pos=None, mask_padding=True, scale=None) -> None:
    """Make the forward and backward launches of these inputs (inside ``_triton.record_launches``, meta tensors)."""
    rel_h, rel_w = rel_pos if rel_pos is not None else (None, None)
    args = (block_size, halo_size, query_stride, bool(mask_padding), float(scale))
    out, lse = run_fwd(q, k, v, rel_h, rel_w, *args)
    run_bwd(torch.empty_like(out), q, k, v, rel_h, rel_w, out, lse, *args)
