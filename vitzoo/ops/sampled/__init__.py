"""Varied-size window attention (VSA): queries in fixed windows, keys and values sampled from a scaled and shifted
window per head.

Layout (heads last, as the other ops): ``q, k`` are ``[B, H, W, heads, D]``, ``v`` is ``[B, H, W, heads, Dv]``; the
output is ``[B, H, W, heads, Dv]``.

The map is zero-padded at the bottom/right to ``Hp x Wp``, multiples of ``window_size = ws``, and cut into an
``nH x nW`` grid of ``ws x ws`` query windows. For every window ``(i, j)`` and head ``n`` the window regression
module predicts ``offsets[b, n, :, i, j]`` and ``scales[b, n, :, i, j]`` (``(x, y)`` pairs, ``[B, heads, 2, nH, nW]``).
The key / value of in-window slot ``(u, v)`` is sampled bilinearly (zeros outside the padded map) at the normalised
coordinates (``-1`` / ``+1`` = the centres of the first / last padded pixel)

    X = gx(j * ws + v) + rx(v) * scales_x + offsets_x / max(W // ws, 1)
    Y = gy(i * ws + u) + ry(u) * scales_y + offsets_y / max(H // ws, 1)

with ``gx(p) = -1 + 2 p / (Wp - 1)`` the pixel's own coordinate and ``rx(v) = 2 (v - (ws - 1) / 2) / (Wp - 1)`` its
offset from the window centre (``gy``, ``ry`` alike with ``Hp``): the window is scaled by ``1 + scale`` about its
centre and shifted by ``offset`` window-grid units. Zero scales and offsets give plain window attention. Queries
attend, per window and head, to the ``ws * ws`` sampled keys with an optional relative-position ``bias``
``[heads, N, N]`` indexed by the sampled keys' slots; padded tokens are zeros and are not masked (sampled
positions fall between pixels, so there is no exact padding to mask), which is the official classification
code's computation. The ``max(., 1)`` guards maps smaller than one window, where the official code divides by zero.

Under a dynamic-shape trace the window grid has at least two windows per axis (:func:`window_grid`): the added
windows are padding, sampled and attended in the same frame (``Hp``, ``Wp`` above) and dropped from the output, so
a program traced at a one-window size serves larger ones too.
"""

from __future__ import annotations

import torch

from .._common import pair, traceable_grid
from .._dispatch import OpBackends, check_qkv, check_same_map
from . import reference

__all__ = ["sampled_window_attention", "window_grid", "BACKENDS"]

BACKENDS = OpBackends("sampled_window_attention", __name__, ["reference"])


def window_grid(h: int, w: int, window_size: int) -> tuple[int, int]:
    """``(nH, nW)``: the query windows of an ``h x w`` map, the shape of ``offsets`` and ``scales``.

    ``ceil(h / ws), ceil(w / ws)``; under a dynamic-shape trace at least 2 each (see the module docstring).
    """
    hp, wp = traceable_grid(h, w, window_size, window_size)
    return hp // window_size, wp // window_size


def sampled_window_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    window_size: int,
    offsets: torch.Tensor,
    scales: torch.Tensor,
    bias: torch.Tensor | None = None,
    scale: float | None = None,
    backend: str | None = None,
) -> torch.Tensor:
    """Window attention whose keys and values come from a learned scaled / shifted window per head.

    Args:
        q: Queries ``[B, H, W, heads, D]``.
        k: Keys ``[B, H, W, heads, D]``.
        v: Values ``[B, H, W, heads, Dv]``.
        window_size: Side ``ws`` of the square query windows.
        offsets: Window shifts ``[B, heads, 2, nH, nW]``, ``(x, y)``, in window-grid units (see the module docstring).
        scales: Window scales ``[B, heads, 2, nH, nW]``, ``(x, y)``; the sampled window is ``1 + scale`` times wider.
        bias: Optional relative-position bias ``[heads, N, N]``, ``N = ws * ws``.
        scale: Logit scale; defaults to ``D ** -0.5``.
        backend: Force a backend (``'reference'``); ``None`` chooses automatically.

    Returns:
        ``[B, H, W, heads, Dv]``.
    """
    if torch.jit.is_scripting():  # backend choice is Python: a scripted model runs the reference computation
        return reference.forward(q, k, v, window_size, offsets, scales, bias, scale)
    return _checked_sampled_window_attention(q, k, v, window_size, offsets, scales, bias, scale, backend)


def _checked_sampled_window_attention(q, k, v, window_size, offsets, scales, bias, scale, backend):
    # eager mode: validate, choose a backend, run it
    check_qkv("sampled_window_attention", q, k, v, 5, "[B, H, W, heads, D]")
    ws = pair(window_size, "window_size")[0]
    check_same_map("sampled_window_attention", q, k, v, "[B, H, W, heads]")
    b, h, w, heads, _ = q.shape
    grid = (b, heads, 2, *window_grid(h, w, ws))
    for name, t in (("offsets", offsets), ("scales", scales)):
        if tuple(t.shape) != grid:
            raise ValueError(
                f"sampled_window_attention: {name} must be [B, heads, 2, nH, nW] = {grid} for a {h}x{w} map in "
                f"{ws}x{ws} windows, got {tuple(t.shape)}"
            )
    n = ws * ws
    if bias is not None and tuple(bias.shape) != (heads, n, n):
        raise ValueError(
            f"sampled_window_attention: bias must be [heads, N, N] = {(heads, n, n)}, got {tuple(bias.shape)}"
        )
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    fn = BACKENDS.choose(q, k, v, ws, offsets, scales, bias=bias, scale=scale, backend=backend)
    return fn(q, k, v, ws, offsets, scales, bias=bias, scale=scale)
