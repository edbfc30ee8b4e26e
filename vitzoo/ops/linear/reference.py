"""Plain-PyTorch linear attention: the specification of :func:`vitzoo.ops.linear_attention`."""

from __future__ import annotations

import torch


def can_run(*args, **kwargs) -> str | None:
    return None


def accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    """Reductions over tokens run in float32 for half-precision inputs (and in the input dtype otherwise)."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def forward(q, k, v, *, normalization="divide", scale=None, eps=1e-6) -> torch.Tensor:
    out_dtype, acc = q.dtype, accumulation_dtype(q.dtype)
    q, k, v = q.to(acc), k.to(acc), v.to(acc)
    m = k.shape[2]
    if normalization == "divide":
        kv = k.transpose(-1, -2) @ v / m  # B, heads, D, Dv
        denominator = q @ k.mean(dim=2, keepdim=True).transpose(-1, -2) + eps  # B, heads, N, 1
        out = (q @ kv) / denominator
    else:  # injective
        centred = k - k.mean(dim=2, keepdim=True)
        kv = centred.transpose(-1, -2) @ v * (scale / m)  # B, heads, D, Dv
        out = v.mean(dim=2, keepdim=True) + q @ kv
    return out.to(out_dtype)
