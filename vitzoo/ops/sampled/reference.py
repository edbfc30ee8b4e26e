"""Plain-PyTorch varied-size window attention: the specification of :func:`vitzoo.ops.sampled_window_attention`."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .._common import pad_hw, padded_size
from ..window import window_attention


def can_run(*args, **kwargs) -> str | None:
    return None


def sampling_grid(offsets: torch.Tensor, scales: torch.Tensor, ws: int, h: int, w: int) -> torch.Tensor:
    """The ``grid_sample`` grid ``[B * heads, Hp, Wp, 2]`` of every window slot (see the op's docstring)."""
    b, heads, _, nh, nw = offsets.shape
    hp, wp = nh * ws, nw * ws
    dtype, device = offsets.dtype, offsets.device

    def axis(length: int, n_windows: int) -> tuple[torch.Tensor, torch.Tensor]:
        step = 2 / max(length - 1, 1)
        pixel = (torch.arange(length, device=device, dtype=dtype) * step - 1).view(n_windows, ws)  # window, slot
        rel = (torch.arange(ws, device=device, dtype=dtype) - (ws - 1) / 2) * step  # slot
        return pixel, rel

    px, rx = axis(wp, nw)
    py, ry = axis(hp, nh)
    off_x, off_y = offsets[:, :, 0] / max(w // ws, 1), offsets[:, :, 1] / max(h // ws, 1)  # B, heads, nH, nW
    sx, sy = scales[:, :, 0], scales[:, :, 1]
    # B, heads, nH, ws(u), nW, ws(v): each slot's coordinate
    x = (
        px.view(1, 1, 1, 1, nw, ws)
        + rx.view(1, 1, 1, 1, 1, ws) * sx[:, :, :, None, :, None]
        + off_x[..., None, :, None]
    )
    y = (
        py.view(1, 1, nh, ws, 1, 1)
        + ry.view(1, 1, 1, ws, 1, 1) * sy[:, :, :, None, :, None]
        + off_y[..., None, :, None]
    )
    x, y = torch.broadcast_tensors(x, y)
    return torch.stack((x, y), dim=-1).view(b * heads, hp, wp, 2)


def forward(q, k, v, window_size, offsets, scales, *, bias=None, scale=None) -> torch.Tensor:
    ws = window_size
    b, h, w, heads, d = k.shape
    hp, wp = padded_size(h, ws), padded_size(w, ws)
    kv = pad_hw(torch.cat((k, v), dim=-1), hp - h, wp - w)  # B, Hp, Wp, heads, D + Dv
    kv = kv.permute(0, 3, 4, 1, 2).reshape(b * heads, -1, hp, wp)  # B*heads, D + Dv, Hp, Wp
    grid = sampling_grid(offsets.to(q.dtype), scales.to(q.dtype), ws, h, w)
    kv = F.grid_sample(kv, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    kv = kv.view(b, heads, -1, hp, wp).permute(0, 3, 4, 1, 2)  # B, Hp, Wp, heads, D + Dv
    ks, vs = kv.split([d, v.shape[-1]], dim=-1)
    # the sampled keys fill the whole padded grid (none is padding), so window attention runs unmasked on it
    out = window_attention(pad_hw(q, hp - h, wp - w), ks, vs, ws, bias=bias, scale=scale)
    return out[:, :h, :w]
