"""Small helpers shared by the reference backends."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def pair(value: int | tuple[int, int], name: str) -> tuple[int, int]:
    """Normalise an int-or-pair argument and check that both entries are positive."""
    out = (value, value) if isinstance(value, int) else tuple(value)
    if len(out) != 2 or not all(isinstance(v, int) and v > 0 for v in out):
        raise ValueError(f"{name} must be a positive int or a pair of positive ints, got {value!r}")
    return out  # type: ignore[return-value]


def pad_hw(x: torch.Tensor, pad_h: int, pad_w: int) -> torch.Tensor:
    """Zero-pad a ``[B, H, W, ...]`` tensor at the bottom and right."""
    if pad_h == 0 and pad_w == 0:
        return x
    trailing = x.dim() - 3  # dims after W stay unpadded
    return F.pad(x, (0, 0) * trailing + (0, pad_w, 0, pad_h))


def padded_size(size: int, block: int) -> int:
    """The smallest multiple of ``block`` that is >= ``size``."""
    return -(-size // block) * block
