"""Region-routed top-k attention (BiFormer's bi-level routing attention).

Layout (channels last, heads folded into channels): ``q, k`` are ``[B, H, W, C]``, ``v`` is ``[B, H, W, Cv]``;
output ``[B, H, W, Cv]``. The map is cut into a ``num_regions x num_regions`` grid of equal regions (region size
``ceil(H / num_regions) x ceil(W / num_regions)``; the map is zero-padded at the bottom/right to fit, and padded
tokens are masked out, so any ``H, W >= 1`` is valid). Each query region is routed to the ``topk`` key regions
whose mean key has the largest dot product with its mean query (over all channels, on detached tensors, so routing
is hard and carries no gradient); its tokens then attend, per head, to the tokens of those regions.

For sizes the grid divides this is exactly the official BiFormer computation; for other sizes it differs from the
official ``auto_pad`` (which lets padded tokens take part as keys) by masking them, as the nchw BRA does.
"""

from __future__ import annotations

import torch

from .._dispatch import OpBackends, check_qkv, check_same_map
from . import reference

__all__ = ["region_routed_attention", "BACKENDS"]

BACKENDS = OpBackends("region_routed_attention", __name__, ["triton", "reference"])


def region_routed_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    num_regions: int,
    topk: int,
    num_heads: int,
    scale: float | None = None,
    backend: str | None = None,
) -> torch.Tensor:
    """Bi-level routing attention over a ``num_regions x num_regions`` region grid.

    Args:
        q: Queries ``[B, H, W, C]``.
        k: Keys ``[B, H, W, C]``.
        v: Values ``[B, H, W, Cv]``.
        num_regions: Regions per side of the grid (BiFormer's ``n_win``).
        topk: Key regions each query region attends to, ``1 <= topk <= num_regions ** 2``.
        num_heads: Heads; ``C`` and ``Cv`` must be divisible by it.
        scale: Logit scale; defaults to ``(C / num_heads) ** -0.5`` (BiFormer passes ``C ** -0.5``).
        backend: Force a backend (``'triton'`` or ``'reference'``); ``None`` chooses automatically.

    Returns:
        ``[B, H, W, Cv]``.
    """
    if torch.jit.is_scripting():  # backend choice is Python: a scripted model runs the reference computation
        return reference.forward(q, k, v, num_regions, topk, num_heads, scale)
    return _checked_region_routed_attention(q, k, v, num_regions, topk, num_heads, scale, backend)


def _checked_region_routed_attention(q, k, v, num_regions, topk, num_heads, scale, backend):
    # eager mode: validate, choose a backend, run it
    check_qkv("region_routed_attention", q, k, v, 4, "[B, H, W, C]")
    check_same_map("region_routed_attention", q, k, v, "[B, H, W]")
    if num_regions < 1 or not 1 <= topk <= num_regions**2:
        raise ValueError(
            f"region_routed_attention: need num_regions >= 1 and 1 <= topk <= num_regions**2, "
            f"got num_regions={num_regions}, topk={topk}"
        )
    if q.shape[-1] % num_heads or v.shape[-1] % num_heads:
        raise ValueError(
            f"region_routed_attention: channels of q ({q.shape[-1]}) and v ({v.shape[-1]}) must be divisible by "
            f"num_heads={num_heads}"
        )
    scale = (q.shape[-1] // num_heads) ** -0.5 if scale is None else scale
    fn = BACKENDS.choose(q, k, v, num_regions, topk, num_heads, scale=scale, backend=backend)
    return fn(q, k, v, num_regions, topk, num_heads, scale=scale)
