"""Attention inside non-overlapping 2-D windows (Swin windows, CSWin stripes, global attention).

Layout (heads last, as NATTEN): ``q, k`` are ``[B, H, W, heads, D]``, ``v`` is ``[B, H, W, heads, Dv]``; the output
is ``[B, H, W, heads, Dv]``. The map is cut into ``ceil(H / wh) x ceil(W / ww)`` windows of ``wh x ww`` tokens in
row-major order; when the window does not divide the map, the map is zero-padded at the bottom/right and padded keys
are masked out, so any ``H, W >= 1`` is valid. A window of ``(H, W)`` is plain global attention.

Optional additive terms, both in the padded window grid:

* ``bias``: ``[heads, N, N]`` with ``N = wh * ww`` (relative position bias), shared by every window;
* ``mask``: ``[nW, N, N]``, either float (added to the logits) or bool (``True`` = may attend), per window, e.g. the
  shifted-window mask.
"""

from __future__ import annotations

import torch

from .._common import pair
from .._dispatch import OpBackends, check_qkv

__all__ = ["window_attention", "BACKENDS"]

BACKENDS = OpBackends("window_attention", __name__, ["reference"])


def window_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    window_size: int | tuple[int, int],
    *,
    bias: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
    scale: float | None = None,
    backend: str | None = None,
) -> torch.Tensor:
    """Softmax attention of every token over the tokens of its own window.

    Args:
        q: Queries ``[B, H, W, heads, D]``.
        k: Keys ``[B, H, W, heads, D]``.
        v: Values ``[B, H, W, heads, Dv]``.
        window_size: Window height and width in tokens (an int means square).
        bias: Optional additive bias ``[heads, N, N]``, ``N = wh * ww``.
        mask: Optional per-window mask ``[nW, N, N]``, additive float or bool (``True`` = attend).
        scale: Logit scale; defaults to ``D ** -0.5``.
        backend: Force a backend (``'reference'``); ``None`` chooses automatically.

    Returns:
        ``[B, H, W, heads, Dv]``.
    """
    check_qkv("window_attention", q, k, v, 5, "[B, H, W, heads, D]")
    wh, ww = pair(window_size, "window_size")
    if q.shape != k.shape or q.shape[:4] != v.shape[:4]:
        raise ValueError(
            f"window_attention: q and k must have the same shape and v the same [B, H, W, heads], "
            f"got q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}"
        )
    n = wh * ww
    heads = q.shape[3]
    if bias is not None and tuple(bias.shape) != (heads, n, n):
        raise ValueError(f"window_attention: bias must be [heads, N, N] = {(heads, n, n)}, got {tuple(bias.shape)}")
    if mask is not None:
        n_windows = -(-q.shape[1] // wh) * -(-q.shape[2] // ww)
        if tuple(mask.shape) != (n_windows, n, n):
            raise ValueError(
                f"window_attention: mask must be [nW, N, N] = {(n_windows, n, n)} for a {q.shape[1]}x{q.shape[2]} "
                f"map in {wh}x{ww} windows, got {tuple(mask.shape)}"
            )
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    fn = BACKENDS.choose(q, k, v, (wh, ww), bias=bias, mask=mask, scale=scale, backend=backend)
    return fn(q, k, v, (wh, ww), bias=bias, mask=mask, scale=scale)
