"""NATTEN backend for neighborhood attention (fused kernels on GPU; FlexAttention, forward only, on CPU)."""

from __future__ import annotations

import torch

try:
    import natten
except ImportError as e:  # optional dependency: `pip install vitzoo[natten]`
    raise ImportError("natten is not installed (pip install 'vitzoo[natten]')") from e

_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def can_run(q, k, v, kernel_size, *, dilation=(1, 1), scale=None) -> str | None:
    if q.dtype not in _DTYPES:
        return f"dtype {q.dtype} not supported (supports {_DTYPES})"
    needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v))
    if q.device.type == "cpu" and needs_grad:
        return "NATTEN runs on CPU only through FlexAttention, which has no backward there"
    if q.device.type == "cuda" and not natten.HAS_LIBNATTEN and q.shape[-1] != v.shape[-1]:
        return "without libnatten, NATTEN's Flex path needs the same head dim for q/k and v"
    return None


def can_auto_select(q, *args, **kwargs) -> str | None:
    if q.device.type != "cuda":
        # NATTEN >= 0.20 runs CPU inputs through uncompiled Flex, which benchmarks/results/cpu_ops.md measures
        # several times slower than the reference gather
        return "NATTEN on CPU runs uncompiled Flex, slower than the reference; pass backend='natten' to use it"
    return None


def forward(q, k, v, kernel_size, *, dilation=(1, 1), scale=None) -> torch.Tensor:
    return natten.na2d(q, k, v, kernel_size=tuple(kernel_size), dilation=tuple(dilation), scale=scale)
