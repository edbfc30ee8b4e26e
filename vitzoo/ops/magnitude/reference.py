"""Plain-PyTorch MALA: the specification of :func:`vitzoo.ops.magnitude_aware_linear_attention`."""

from __future__ import annotations

import torch

from .._common import accumulation_dtype, apply_rope


def can_run(*args, **kwargs) -> str | None:
    return None


def forward(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    rope: tuple[torch.Tensor, torch.Tensor] | None = None,
    scale: float | None = None,
    eps: float = 1e-6,
) -> torch.Tensor:
    out_dtype, acc = q.dtype, accumulation_dtype(q.dtype)
    q, k, v = q.to(acc), k.to(acc), v.to(acc)
    n = k.shape[2]
    scale = q.shape[-1] ** -0.5 if scale is None else scale  # the op's default, for direct callers
    z = scale * q @ k.mean(dim=2, keepdim=True).transpose(-1, -2)  # B, heads, N, 1
    if rope is not None:
        sin, cos = rope[0].to(acc), rope[1].to(acc)
        q, k = apply_rope(q, sin, cos), apply_rope(k, sin, cos)
    kv = k.transpose(-1, -2) @ v * (scale / n)  # B, heads, D, Dv
    out = (1 + 1 / (z + eps)) * (q @ kv) - z * v.mean(dim=2, keepdim=True)
    return out.to(out_dtype)
