"""Small helpers shared by the op entry points and their reference backends (all TorchScript-compatible)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


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


def pad_hw(x: torch.Tensor, pad_h: int, pad_w: int) -> torch.Tensor:
    """Zero-pad a ``[B, H, W, ...]`` tensor at the bottom and right."""
    if pad_h == 0 and pad_w == 0:
        return x
    pad = [0, 0] * (x.dim() - 3) + [0, pad_w, 0, pad_h]  # dims after W stay unpadded
    return F.pad(x, pad)


def padded_size(size: int, block: int) -> int:
    """The smallest multiple of ``block`` that is >= ``size``."""
    return -(-size // block) * block


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
