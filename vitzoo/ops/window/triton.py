"""Triton backend of :func:`vitzoo.ops.window_attention`: fused forward and backward, no partition copies.

The kernels (:mod:`vitzoo.ops._triton.window`) are wrapped as ``torch.library`` custom ops with fake
implementations and an autograd formula, so ``torch.compile`` keeps them as single opaque calls.
"""

from __future__ import annotations

import torch

from .. import _triton
from .._common import padded_size
from .._triton import window as kernels

MAX_HEAD_DIM = 256  # one tile holds a whole head dim
MAX_FP32_GRAD_HEAD_DIM = 64


def can_run(q, k, v, window_size, *, dilation=(1, 1), bias=None, mask=None, scale=None, shift=(0, 0)) -> str | None:
    reason = _triton.device_reason(q, k, v)
    if reason is not None:
        return reason
    if max(q.shape[-1], v.shape[-1]) > MAX_HEAD_DIM:
        return f"head dims up to {MAX_HEAD_DIM} (got {q.shape[-1]} / {v.shape[-1]})"
    if mask is not None and mask.requires_grad and torch.is_grad_enabled():
        return "no gradient for a learned mask (masks are fixed buffers in every model)"
    needs_grad = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (q, k, v, bias))
    if q.dtype == torch.float32 and needs_grad and max(q.shape[-1], v.shape[-1]) > MAX_FP32_GRAD_HEAD_DIM:
        # measured by tests/test_kernels_compile.py: fp32 dots run on the FMA units, and above this head dim the
        # backward spills at every tile size
        return f"fp32 backward for head dims up to {MAX_FP32_GRAD_HEAD_DIM} (got {q.shape[-1]} / {v.shape[-1]})"
    geometry = dict(dilation=dilation, bias=bias, mask=mask, scale=scale, shift=shift)
    return _triton.resources_reason(record, q, k, v, window_size, **geometry)


def can_auto_select(q, k, v, window_size, *, dilation=(1, 1), bias=None, mask=None, scale=None, shift=(0, 0)):
    reason = _triton.auto_reason(q)
    if reason is None and tuple(window_size) == tuple(q.shape[1:3]) and bias is None and mask is None:
        # one window covering the whole map is plain attention: the reference hands it to SDPA's flash kernels
        return "a single unmasked window over the whole map is plain attention, which SDPA runs best"
    return reason


def _windows(h: int, w: int, wh: int, ww: int, dh: int, dw: int) -> tuple[int, int]:
    rows = padded_size(h, wh * dh) // wh
    per_row = padded_size(w, ww * dw) // ww
    return rows * per_row, per_row


def run_fwd(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    wh: int,
    ww: int,
    dh: int,
    dw: int,
    sh: int,
    sw: int,
    bias: torch.Tensor | None,
    mask: torch.Tensor | None,
    scale: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Output ``[B, H, W, heads, Dv]`` and the base-2 log-sum-exp of every query ``[B, H, W, heads]`` (fp32)."""
    q, k, v = (_triton.last_dim_contiguous(t) for t in (q, k, v))
    b, h, w, heads, _ = q.shape
    out = _triton.empty((b, h, w, heads, v.shape[-1]), q.dtype, q.device)
    lse = _triton.empty((b, h, w, heads), torch.float32, q.device)
    kernels.launch_forward(
        q,
        k,
        v,
        (wh, ww),
        (dh, dw),
        (sh, sw),
        None if bias is None else bias.contiguous(),
        None if mask is None else mask.contiguous(),
        scale,
        out,
        lse,
        _windows(h, w, wh, ww, dh, dw),
        _triton.dot_precision(q.dtype),
    )
    return out, lse


window_attention_fwd = torch.library.custom_op("vitzoo::window_attention_fwd", run_fwd, mutates_args=())


@window_attention_fwd.register_fake
def _(q, k, v, wh, ww, dh, dw, sh, sw, bias, mask, scale):
    b, h, w, heads, _ = q.shape
    return q.new_empty(b, h, w, heads, v.shape[-1]), q.new_empty(b, h, w, heads, dtype=torch.float32)


def run_bwd(
    grad_out: torch.Tensor,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    out: torch.Tensor,
    lse: torch.Tensor,
    wh: int,
    ww: int,
    dh: int,
    dw: int,
    sh: int,
    sw: int,
    bias: torch.Tensor | None,
    mask: torch.Tensor | None,
    scale: float,
    bias_grad: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradients of q, k, v and (when ``bias_grad``, else an empty tensor) of the bias."""
    grad_out, q, k, v = (_triton.last_dim_contiguous(t) for t in (grad_out, q, k, v))
    n = wh * ww
    delta = (grad_out.float() * out.float()).sum(-1).contiguous()  # rowsum(dO * O): the softmax backward's term
    dq = _triton.empty(q.shape, torch.float32, q.device)
    # every real key lies in exactly one window, so the kernel writes every element of dK and dV
    dk = _triton.empty(k.shape, torch.float32, q.device)
    dv = _triton.empty(v.shape, torch.float32, q.device)
    dbias = (
        torch.zeros(kernels.DBIAS_SLOTS, q.shape[3], n, n, dtype=torch.float32, device=q.device) if bias_grad else None
    )
    kernels.launch_backward(
        grad_out,
        q,
        k,
        v,
        lse,
        delta,
        (wh, ww),
        (dh, dw),
        (sh, sw),
        None if bias is None else bias.contiguous(),
        None if mask is None else mask.contiguous(),
        scale,
        (dq, dk, dv, dbias),
        _windows(q.shape[1], q.shape[2], wh, ww, dh, dw),
        _triton.dot_precision(q.dtype),
    )
    dbias = dbias.sum(0).to(bias.dtype) if bias_grad else q.new_empty(0)
    return dq.to(q.dtype), dk.to(k.dtype), dv.to(v.dtype), dbias


window_attention_bwd = torch.library.custom_op("vitzoo::window_attention_bwd", run_bwd, mutates_args=())


@window_attention_bwd.register_fake
def _(grad_out, q, k, v, out, lse, wh, ww, dh, dw, sh, sw, bias, mask, scale, bias_grad):
    dbias = bias.new_empty(bias.shape) if bias_grad else q.new_empty(0)
    return q.new_empty(q.shape), k.new_empty(k.shape), v.new_empty(v.shape), dbias


def _setup_context(ctx, inputs, output):
    q, k, v, wh, ww, dh, dw, sh, sw, bias, mask, scale = inputs
    out, lse = output
    ctx.save_for_backward(q, k, v, out, lse, bias, mask)
    ctx.geometry = (wh, ww, dh, dw, sh, sw)
    ctx.scale = scale
    ctx.bias_grad = bias is not None and bias.requires_grad


def _backward(ctx, grad_out, grad_lse):
    q, k, v, out, lse, bias, mask = ctx.saved_tensors
    dq, dk, dv, dbias = window_attention_bwd(
        grad_out, q, k, v, out, lse, *ctx.geometry, bias, mask, ctx.scale, ctx.bias_grad
    )
    return dq, dk, dv, None, None, None, None, None, None, (dbias if ctx.bias_grad else None), None, None


window_attention_fwd.register_autograd(_backward, setup_context=_setup_context)


def _float_mask(mask: torch.Tensor | None) -> torch.Tensor | None:
    if mask is not None and mask.dtype == torch.bool:
        mask = torch.zeros(mask.shape, dtype=torch.float32, device=mask.device).masked_fill_(~mask, float("-inf"))
    return mask


def forward(q, k, v, window_size, *, dilation=(1, 1), bias=None, mask=None, scale=None, shift=(0, 0)):
    out, _ = window_attention_fwd(q, k, v, *window_size, *dilation, *shift, bias, _float_mask(mask), float(scale))
    return out


def record(q, k, v, window_size, *, dilation=(1, 1), bias=None, mask=None, scale=None, shift=(0, 0)) -> None:
    """Make the forward and backward launches of these inputs (inside ``_triton.record_launches``, meta tensors)."""
    mask = _float_mask(mask)
    geometry = (*window_size, *dilation, *shift)
    out, lse = run_fwd(q, k, v, *geometry, bias, mask, float(scale))
    bias_grad = bias is not None and bias.requires_grad
    run_bwd(torch.empty_like(out), q, k, v, out, lse, *geometry, bias, mask, float(scale), bias_grad)
