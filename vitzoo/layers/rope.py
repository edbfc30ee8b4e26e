"""2-D rotary position embedding with interleaved channel pairs (RMT / MALA style)."""

from __future__ import annotations

import torch

from ..ops._common import apply_rope

__all__ = ["apply_rope", "rope_2d_tables"]


def rope_2d_tables(
    h: int, w: int, head_dim: int, device: torch.device | None = None, dtype: torch.dtype = torch.float32
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(sin, cos)``, each ``[h * w, head_dim]``, for row-major tokens of an ``h x w`` map.

    The first half of a head's channels rotates with the row index, the second half with the column index; within
    a half, channel pairs ``(2i, 2i + 1)`` share the frequency ``10000 ** -linspace(0, 1, head_dim / 4)[i]``.
    Positions are plain integer indices, so the tables exist for any map size.
    """
    if head_dim % 4:
        raise ValueError(f"2-D RoPE needs a head dim divisible by 4, got {head_dim}")
    # angles in float32 at least (half-precision angles of large positions are far off), float64 when asked for
    work = torch.promote_types(dtype, torch.float32)
    freqs = 1.0 / 10000 ** torch.linspace(0, 1, head_dim // 4, device=device, dtype=work)
    freqs = freqs.repeat_interleave(2)  # head_dim / 2: a0, a0, a1, a1, ...
    rows = torch.arange(h, device=device, dtype=work)[:, None] * freqs  # h, head_dim / 2
    cols = torch.arange(w, device=device, dtype=work)[:, None] * freqs  # w, head_dim / 2
    angles = torch.cat((rows[:, None, :].expand(h, w, -1), cols[None, :, :].expand(h, w, -1)), dim=-1).reshape(
        h * w, head_dim
    )
    return angles.sin().to(dtype), angles.cos().to(dtype)
