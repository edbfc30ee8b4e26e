"""Triton kernels of the 2-D attention ops, and the checks every Triton backend shares.

The kernels run on CUDA devices. With ``TRITON_INTERPRET=1`` set before Triton is imported they also run on CPU
tensors in Triton's interpreter: far too slow for use, which is why automatic backend choice never picks them there,
but exact enough to test every kernel in CPU CI.
"""

from __future__ import annotations

import os

import torch

try:
    import triton  # noqa: F401
except ImportError as e:  # triton ships with Linux CUDA builds of torch; elsewhere the backends report this
    raise ImportError("triton is not installed") from e

DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def interpreting() -> bool:
    """True when Triton kernels run in the interpreter (on CPU tensors)."""
    return os.environ.get("TRITON_INTERPRET", "0").strip().lower() in {"1", "true", "yes", "on"}


def device_reason(*tensors: torch.Tensor | None) -> str | None:
    """Why the Triton kernels cannot run on these tensors (device, dtype), or ``None`` when they can."""
    real = [t for t in tensors if t is not None]
    dtype, device = real[0].dtype, real[0].device
    if dtype not in DTYPES:
        return f"dtype {dtype} not supported (supports {', '.join(str(d) for d in DTYPES)})"
    if device.type == "cuda":
        return None
    if device.type == "cpu" and interpreting():
        # the interpreter runs kernels through numpy, which has no bfloat16: results would be garbage
        return "Triton's interpreter has no bfloat16" if dtype == torch.bfloat16 else None
    return f"needs a CUDA device (got {device.type}; TRITON_INTERPRET=1 runs the kernels on CPU for testing)"


POISON = False  # tests set this: fresh outputs start as NaN so an element a kernel fails to write shows up


def empty(shape, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """An uninitialised buffer for a kernel to fill completely (NaN-filled while :data:`POISON` is set)."""
    if POISON:
        return torch.full(shape, float("nan"), dtype=dtype, device=device)
    return torch.empty(shape, dtype=dtype, device=device)


def auto_reason(*tensors: torch.Tensor | None) -> str | None:
    """Why automatic choice should pass the Triton kernels over for these tensors: the CPU interpreter is for tests."""
    real = [t for t in tensors if t is not None]
    if real[0].device.type != "cuda":
        return "the Triton interpreter on CPU is for testing; pass backend='triton' to use it"
    return None


def last_dim_contiguous(t: torch.Tensor | None) -> torch.Tensor | None:
    """The kernels index the last dim with unit stride; anything else (rare: views of q, k, v keep it) is copied."""
    return t if t is None or t.stride(-1) == 1 else t.contiguous()


def block_size(n: int, low: int = 16, high: int = 64) -> int:
    """The power of two >= ``n`` clamped to ``[low, high]``: tile sides must be powers of two and >= 16 for dot."""
    size = low
    while size < n and size < high:
        size *= 2
    return size


def dot_precision(dtype: torch.dtype) -> str:
    """fp32 inputs use full-precision dot products (no TF32) so results match the reference to fp32 accuracy."""
    return "ieee" if dtype == torch.float32 else "tf32"
