"""Plain-PyTorch varied-size window attention: the specification of :func:`vitzoo.ops.sampled_window_attention`."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .._common import accumulation_dtype, crop_hw, known_true, pad_hw, padded_size
from ..window import reference as window_reference


def can_run(*args, **kwargs) -> str | None:
    return None


def _axis(frame: int, n_windows: int, ws: int, dtype: torch.dtype, device: torch.device):
    """Normalised coordinates along one axis of a ``frame``-pixel padded map: every grid pixel's, as
    ``[window, slot]``, and each slot's offset from its window centre, ``[slot]``."""
    step = 2 / max(frame - 1, 1)
    pixel = (torch.arange(n_windows * ws, device=device, dtype=dtype) * step - 1).view(n_windows, ws)  # window, slot
    rel = (torch.arange(ws, device=device, dtype=dtype) - (ws - 1) / 2) * step  # slot
    return pixel, rel


def sampling_grid(offsets: torch.Tensor, scales: torch.Tensor, ws: int, h: int, w: int) -> torch.Tensor:
    """The ``grid_sample`` grid ``[B * heads, nH * ws, nW * ws, 2]`` of every window slot (the op's docstring)."""
    b, heads, _, nh, nw = offsets.shape
    hp, wp = padded_size(h, ws), padded_size(w, ws)  # the frame of the coordinates
    gh, gw = nh * ws, nw * ws  # the sampled grid: the padded map, or more windows under a dynamic-shape trace
    dtype, device = offsets.dtype, offsets.device

    px, rx = _axis(wp, nw, ws, dtype, device)
    py, ry = _axis(hp, nh, ws, dtype, device)
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
    if not (known_true(gh == hp) and known_true(gw == wp)):
        # grid_sample reads the grown map, whose -1 / +1 are its own first / last pixel: the same points in its frame
        # (past the padded map the grown one is zeros too, as grid_sample's outside)
        x = (x + 1) * ((wp - 1) / (gw - 1)) - 1
        y = (y + 1) * ((hp - 1) / (gh - 1)) - 1
    x, y = torch.broadcast_tensors(x, y)
    return torch.stack((x, y), dim=-1).view(b * heads, gh, gw, 2)


def forward(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    window_size: int,
    offsets: torch.Tensor,
    scales: torch.Tensor,
    bias: torch.Tensor | None = None,
    scale: float | None = None,
) -> torch.Tensor:
    ws = window_size
    b, h, w, heads, d = k.shape
    hp, wp = offsets.shape[-2] * ws, offsets.shape[-1] * ws  # the padded map (grown under a dynamic-shape trace)
    kv = pad_hw(torch.cat((k, v), dim=-1), hp - h, wp - w)  # B, Hp, Wp, heads, D + Dv
    kv = kv.permute(0, 3, 4, 1, 2).reshape(b * heads, -1, hp, wp)  # B*heads, D + Dv, Hp, Wp
    # half inputs sample in float32: a bf16 / fp16 grid cannot address the pixels of a large map exactly, and CPU
    # grid_sample returns garbage (NaN) for a bf16 input with these strides; the sampled keys / values are cast back
    acc = accumulation_dtype(q.dtype)
    grid = sampling_grid(offsets.to(acc), scales.to(acc), ws, h, w)
    kv = F.grid_sample(kv.to(acc), grid, mode="bilinear", padding_mode="zeros", align_corners=True).to(q.dtype)
    kv = kv.view(b, heads, -1, hp, wp).permute(0, 3, 4, 1, 2)  # B, Hp, Wp, heads, D + Dv
    ks, vs = kv.split([d, v.shape[-1]], dim=-1)
    # the sampled keys fill the whole padded grid (none is padding), so window attention runs unmasked on it
    out = window_reference.forward(pad_hw(q, hp - h, wp - w), ks, vs, (ws, ws), bias=bias, scale=scale)
    return crop_hw(out, h, w)
