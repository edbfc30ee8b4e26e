"""Small helpers shared by the op entry points and their reference backends (all TorchScript-compatible)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.fx.experimental.symbolic_shapes import statically_known_true


def pair(value: int | tuple[int, int], name: str) -> tuple[int, int]:
    """Normalise an int-or-pair argument and check that both entries are positive.

    Symbolic sizes (``torch.SymInt``, under ``torch.export`` with dynamic shapes) count as ints. TorchScript
    compiles only the normalisation: its callers pass sizes the eager model has already checked.
    """
    if torch.jit.is_scripting():
        if isinstance(value, int):
            return value, value
        return value[0], value[1]
    return _checked_pair(value, name)


def _checked_pair(value, name: str) -> tuple[int, int]:
    out = (value, value) if isinstance(value, (int, torch.SymInt)) else tuple(value)
    if len(out) != 2 or not all(isinstance(v, (int, torch.SymInt)) and not isinstance(v, bool) and v > 0 for v in out):
        raise ValueError(f"{name} must be a positive int or a pair of positive ints, got {value!r}")
    return out  # type: ignore[return-value]


def known_true(cond: bool) -> bool:
    """``cond`` itself for concrete sizes; for symbolic ones (``torch.export`` or ``torch.compile`` with dynamic
    shapes) True only when it holds at every size, and without adding a guard.

    Shape shortcuts (skip the padding, skip the mask) branch on it: a traced program then keeps the general path
    wherever the shortcut would only hold at the traced size, so it stays valid at every size it accepts. The
    general path must compute the same values as the shortcut where both apply.
    """
    if torch.jit.is_scripting():
        return cond
    return statically_known_true(cond)


def size_min(a: int, b: int) -> int:
    """``min(a, b)`` of two sizes, resolved at trace time where the traced sizes' ranges decide it.

    Python's ``min`` on a symbolic size guards on the traced value (pinning a ``torch.export`` program to one size
    range); ``torch.sym_min`` keeps the choice in the graph, where it is only needed when the ranges overlap.
    """
    if torch.jit.is_scripting():
        return min(a, b)
    if known_true(a <= b):
        return a
    if known_true(b <= a):
        return b
    return torch.sym_min(a, b)


def symbolic(*sizes: int) -> bool:
    """True when a size is symbolic: the op is being traced with dynamic shapes (``torch.export``, or
    ``torch.compile`` with dynamic sizes)."""
    return any(isinstance(s, torch.SymInt) for s in sizes)


def traceable_grid(h: int, w: int, block_h: int, block_w: int) -> tuple[int, int]:
    """An ``h x w`` map padded to whole ``block_h x block_w`` blocks, with one more block on every axis that may
    hold a single block when the sizes are symbolic.

    A dynamic-shape program cannot keep a one-block axis: the reshapes of blocked maps ask whether a size is 1, and
    the answer at the traced size would pin the program to it. Callers mask (or zero) the added keys and crop the
    added queries, which leaves every real query's block, hence the output, unchanged.
    """
    if torch.jit.is_scripting():  # its own statement: TorchScript then leaves the rest uncompiled
        return padded_size(h, block_h), padded_size(w, block_w)
    if not symbolic(h, w):
        return padded_size(h, block_h), padded_size(w, block_w)
    return _grown(h, block_h), _grown(w, block_w)


def _grown(size: int, block: int) -> int:
    if known_true(size > block):
        return padded_size(size, block)
    # written as one multiple of the block (not padded + block: the tracer expands 7 * (n + 1) into a sum, and then
    # cannot prove the views' divisibility), which it can prove holds at least two blocks
    return ceil_div(size + block, block) * block


def adaptive_avg_pool_hw(x: torch.Tensor, size: int) -> torch.Tensor:
    """``F.adaptive_avg_pool2d(x, size)`` of an NCHW map; under a dynamic-shape trace as two pooling matrices.

    The ONNX exporter cannot decompose adaptive pooling of a symbolic-size map; the matrices hold the same windows
    (output cell ``i`` averages rows ``floor(i H / size)`` to ``ceil((i + 1) H / size)``, columns alike).
    """
    if torch.jit.is_scripting():
        return F.adaptive_avg_pool2d(x, size)
    if not symbolic(x.shape[2], x.shape[3]):
        return F.adaptive_avg_pool2d(x, size)
    rows = _pooling_matrix(x.shape[2], size, x.dtype, x.device)  # size, H
    cols = _pooling_matrix(x.shape[3], size, x.dtype, x.device)  # size, W
    return torch.einsum("ih,bchw,jw->bcij", rows, x, cols)


def _pooling_matrix(length: int, size: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    cell = torch.arange(size, device=device)
    start = cell * length // size
    end = ((cell + 1) * length + size - 1) // size
    pos = torch.arange(length, device=device)
    inside = (pos[None, :] >= start[:, None]) & (pos[None, :] < end[:, None])
    return inside.to(dtype) / (end - start)[:, None].to(dtype)


def pad_hw(x: torch.Tensor, pad_h: int, pad_w: int) -> torch.Tensor:
    """Zero-pad a ``[B, H, W, ...]`` tensor at the bottom and right."""
    if known_true(pad_h == 0) and known_true(pad_w == 0):
        return x
    pad = [0, 0] * (x.dim() - 3) + [0, pad_w, 0, pad_h]  # dims after W stay unpadded
    return F.pad(x, pad)


def crop_hw(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """``x[:, :h, :w]`` of a ``[B, Hp, Wp, ...]`` map padded at the bottom and right (``x`` when nothing is cut)."""
    if torch.jit.is_scripting():
        return x[:, :h, :w]
    if known_true(x.shape[1] == h) and known_true(x.shape[2] == w):
        return x
    if symbolic(h, w):
        return _gather_hw(x, h, w)
    return x[:, :h, :w]


def _gather_hw(x: torch.Tensor, h, w) -> torch.Tensor:
    # A traced slice is a strided view, and the tracer asks whether it is contiguous, i.e. whether the cut is empty:
    # that guard would pin the traced program to padded (or unpadded) sizes. Gathering rows and columns builds a
    # fresh tensor instead, with the same values.
    x = x.index_select(1, torch.arange(h, device=x.device))
    return x.index_select(2, torch.arange(w, device=x.device))


def padded_size(size: int, block: int) -> int:
    """The smallest multiple of ``block`` that is >= ``size``."""
    if not torch.jit.is_scripting():
        if isinstance(size, torch.SymInt) and known_true(size % block == 0):  # a traced multiple (a grown grid)
            return size  # stays that expression
    return ceil_div(size, block) * block


def ceil_div(a: int, b: int) -> int:
    """``ceil(a / b)`` of positive sizes, written without negative floor division: ONNX integer division truncates
    toward zero, so ``-(-a // b)`` on a symbolic size would be exported as ``floor(a / b)``."""
    return (a + b - 1) // b


def accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    """Reductions over tokens run in float32 for half-precision inputs (and in the input dtype otherwise)."""
    if dtype == torch.float16 or dtype == torch.bfloat16:
        return torch.float32
    return dtype


def apply_rope(x: torch.Tensor, sin: torch.Tensor, cos: torch.Tensor) -> torch.Tensor:
    """Rotate each channel pair ``(x0, x1)`` of ``x`` (``[..., N, head_dim]``) to ``(x0 c - x1 s, x1 c + x0 s)``."""
    pairs = x.unflatten(-1, (-1, 2))
    rotated = torch.stack((-pairs[..., 1], pairs[..., 0]), dim=-1).flatten(-2)
    return x * cos + rotated * sin
