"""Triton backend of :func:`vitzoo.ops.region_routed_attention`: top-k regions gathered by index inside the kernel.

Routing (region means, top-k) is shared with the reference (:mod:`.routing`); the attention over the selected
regions is :mod:`vitzoo.ops._triton.routed`, wrapped as ``torch.library`` custom ops with fake implementations and
an autograd formula so ``torch.compile`` keeps it as one opaque call.
"""

from __future__ import annotations

import torch

from .. import _triton
from .._triton import routed as kernels
from .routing import region_size, route, to_regions, valid_tokens

MAX_HEAD_DIM = 256


def can_run(q, k, v, num_regions, topk, num_heads, *, scale=None) -> str | None:
    reason = _triton.device_reason(q, k, v)
    if reason is not None:
        return reason
    if max(q.shape[-1], v.shape[-1]) // num_heads > MAX_HEAD_DIM:
        return f"head dims up to {MAX_HEAD_DIM}"
    return _triton.resources_reason(record, q, k, v, num_regions, topk, num_heads, scale=scale)


def can_auto_select(q, *args, **kwargs) -> str | None:
    return _triton.auto_reason(q)


def run_fwd(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    index: torch.Tensor,
    num_regions: int,
    num_heads: int,
    scale: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Output ``[B, H, W, Cv]`` and the base-2 log-sum-exp per query and head ``[B, H, W, heads]`` (fp32)."""
    q, k, v = (_triton.last_dim_contiguous(t) for t in (q, k, v))
    b, h, w, _ = q.shape
    rh, rw = region_size(h, w, num_regions)
    out = _triton.empty((b, h, w, v.shape[-1]), q.dtype, q.device)
    lse = _triton.empty((b, h, w, num_heads), torch.float32, q.device)
    kernels.launch_forward(
        q,
        k,
        v,
        index.contiguous(),
        (num_regions, rh, rw),
        num_heads,
        scale,
        out,
        lse,
        _triton.dot_precision(q.dtype),
    )
    return out, lse


region_routed_attention_fwd = torch.library.custom_op("vitzoo::region_routed_attention_fwd", run_fwd, mutates_args=())


@region_routed_attention_fwd.register_fake
def _(q, k, v, index, num_regions, num_heads, scale):
    b, h, w, _ = q.shape
    return q.new_empty(b, h, w, v.shape[-1]), q.new_empty(b, h, w, num_heads, dtype=torch.float32)


def run_bwd(
    grad_out: torch.Tensor,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    index: torch.Tensor,
    out: torch.Tensor,
    lse: torch.Tensor,
    num_regions: int,
    num_heads: int,
    scale: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    grad_out, q, k, v = (_triton.last_dim_contiguous(t) for t in (grad_out, q, k, v))
    b, h, w, _ = q.shape
    rh, rw = region_size(h, w, num_regions)
    per_head = (grad_out.float() * out.float()).unflatten(-1, (num_heads, -1))
    delta = per_head.sum(-1).contiguous()  # rowsum(dO * O) per head: the softmax backward's term
    dq = _triton.empty(q.shape, torch.float32, q.device)
    dk = torch.zeros(k.shape, dtype=torch.float32, device=q.device)
    dv = torch.zeros(v.shape, dtype=torch.float32, device=q.device)
    kernels.launch_backward(
        grad_out,
        q,
        k,
        v,
        index.contiguous(),
        lse,
        delta,
        (num_regions, rh, rw),
        num_heads,
        scale,
        (dq, dk, dv),
        _triton.dot_precision(q.dtype),
    )
    return dq.to(q.dtype), dk.to(k.dtype), dv.to(v.dtype)


region_routed_attention_bwd = torch.library.custom_op("vitzoo::region_routed_attention_bwd", run_bwd, mutates_args=())


@region_routed_attention_bwd.register_fake
def _(grad_out, q, k, v, index, out, lse, num_regions, num_heads, scale):
    return q.new_empty(q.shape), k.new_empty(k.shape), v.new_empty(v.shape)


def _setup_context(ctx, inputs, output):
    q, k, v, index, num_regions, num_heads, scale = inputs
    ctx.save_for_backward(q, k, v, index, *output)
    ctx.args = (num_regions, num_heads, scale)


def _backward(ctx, grad_out, grad_lse):
    q, k, v, index, out, lse = ctx.saved_tensors
    dq, dk, dv = region_routed_attention_bwd(grad_out, q, k, v, index, out, lse, *ctx.args)
    return dq, dk, dv, None, None, None, None


region_routed_attention_fwd.register_autograd(_backward, setup_context=_setup_context)


def _route(q, k, num_regions, topk) -> torch.Tensor:
    h, w = q.shape[1:3]
    rh, rw = region_size(h, w, num_regions)
    padded = num_regions * rh != h or num_regions * rw != w
    valid = valid_tokens(h, w, num_regions, rh, rw, q.device) if padded else None
    with torch.no_grad():
        index = route(
            to_regions(q.detach(), num_regions, rh, rw), to_regions(k.detach(), num_regions, rh, rw), valid, topk
        )
    return index


def forward(q, k, v, num_regions, topk, num_heads, *, scale=None) -> torch.Tensor:
    index = _route(q, k, num_regions, topk)
    out, _ = region_routed_attention_fwd(q, k, v, index, num_regions, num_heads, float(scale))
    return out


def record(q, k, v, num_regions, topk, num_heads, *, scale=None) -> None:
    """Make the forward and backward launches of these inputs (inside ``_triton.record_launches``, meta tensors)."""
    index = _route(q, k, num_regions, topk)
    out, lse = run_fwd(q, k, v, index, num_regions, num_heads, float(scale))
    run_bwd(torch.empty_like(out), q, k, v, index, out, lse, num_regions, num_heads, float(scale))
