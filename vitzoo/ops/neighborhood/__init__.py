"""2-D neighborhood attention (NAT / DiNAT): every query attends to the ``kh x kw`` keys around it.

Layout (heads last, as NATTEN): ``q, k`` are ``[B, H, W, heads, D]``, ``v`` is ``[B, H, W, heads, Dv]``; output
``[B, H, W, heads, Dv]``. Semantics follow NATTEN: near a border the window is shifted to stay inside the map (so
every query sees exactly ``kh * kw`` keys), and with dilation ``d`` the map is split into ``d`` interleaved grids per
axis that attend independently. Valid when ``kernel_size * dilation <= (H, W)`` per axis.
"""

from __future__ import annotations

import torch

from .._common import pair
from .._dispatch import OpBackends, check_qkv, check_same_map
from . import reference

__all__ = ["neighborhood_attention", "BACKENDS"]

BACKENDS = OpBackends("neighborhood_attention", __name__, ["natten", "flex", "reference"])


def neighborhood_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    kernel_size: int | tuple[int, int],
    dilation: int | tuple[int, int] = 1,
    scale: float | None = None,
    backend: str | None = None,
) -> torch.Tensor:
    """Softmax attention of every token over its (dilated) 2-D neighborhood.

    Args:
        q: Queries ``[B, H, W, heads, D]``.
        k: Keys ``[B, H, W, heads, D]``.
        v: Values ``[B, H, W, heads, Dv]``.
        kernel_size: Neighborhood height and width (odd).
        dilation: Dilation per axis.
        scale: Logit scale; defaults to ``D ** -0.5``.
        backend: ``'natten'``, ``'flex'`` or ``'reference'``; ``None`` chooses automatically.

    Returns:
        ``[B, H, W, heads, Dv]``.
    """
    if torch.jit.is_scripting():  # backend choice is Python: a scripted model runs the reference computation
        return reference.forward(q, k, v, pair(kernel_size, "kernel_size"), pair(dilation, "dilation"), scale)
    return _checked_neighborhood_attention(q, k, v, kernel_size, dilation, scale, backend)


def _checked_neighborhood_attention(q, k, v, kernel_size, dilation, scale, backend):
    # eager mode: validate, choose a backend, run it
    check_qkv("neighborhood_attention", q, k, v, 5, "[B, H, W, heads, D]")
    kernel = pair(kernel_size, "kernel_size")
    dil = pair(dilation, "dilation")
    if any(kk % 2 == 0 for kk in kernel):
        raise ValueError(f"neighborhood_attention: kernel_size must be odd per axis, got {kernel}")
    check_same_map("neighborhood_attention", q, k, v, "[B, H, W, heads]")
    h, w = q.shape[1:3]
    if kernel[0] * dil[0] > h or kernel[1] * dil[1] > w:
        raise ValueError(
            f"neighborhood_attention: kernel_size * dilation = {(kernel[0] * dil[0], kernel[1] * dil[1])} must be "
            f"<= the map size (H, W) = {(h, w)} per axis"
        )
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    fn = BACKENDS.choose(q, k, v, kernel, dilation=dil, scale=scale, backend=backend)
    return fn(q, k, v, kernel, dilation=dil, scale=scale)
