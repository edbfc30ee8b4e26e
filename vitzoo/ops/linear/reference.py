"""Plain-PyTorch linear attention: the specification of :func:`vitzoo.ops.linear_attention`."""

from __future__ import annotations

import torch

from .._common import accumulation_dtype


def can_run(*args, **kwargs) -> str | None:
    return None


def forward(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    normalization: str = "divide",
    scale: float | None = None,
    eps: float = 1e-6,
) -> torch.Tensor:
    out_dtype, acc = q.dtype, accumulation_dtype(q.dtype)
    q, k, v = q.to(acc), k.to(acc), v.to(acc)
    m = k.shape[2]
    if normalization == "divide":
        kv = k.transpose(-1, -2) @ v / m  # B, heads, D, Dv
        denominator = q @ k.mean(dim=2, keepdim=True).transpose(-1, -2) + eps  # B, heads, N, 1
        out = (q @ kv) / denominator
    else:  # injective
        centred = k - k.mean(dim=2, keepdim=True)
        s = q.shape[-1] ** -0.5 if scale is None else scale  # the op's default, for direct callers
        kv = centred.transpose(-1, -2) @ v * (s / m)  # B, heads, D, Dv
        out = v.mean(dim=2, keepdim=True) + q @ kv
    return out.to(out_dtype)
