"""Blocked local attention with a halo (HaloNet).

Layout (heads last, as the other ops): keys ``k`` are ``[B, H, W, heads, D]``, values ``v`` are
``[B, H, W, heads, Dv]``, queries ``q`` are ``[B, Hq, Wq, heads, D]`` with ``Hq = ceil(H / query_stride)`` (a
stride-``s`` 1x1 projection of the same map: query ``(i, j)`` sits on pixel ``(s * i, s * j)``); the output is
``[B, Hq, Wq, heads, Dv]``.

Blocks. The key map is zero-padded at the bottom/right to multiples of ``block_size`` and cut into
``block_size x block_size`` blocks; a query attends to the keys of its block grown by ``halo_size`` pixels on every
side, a ``(block_size + 2 * halo_size)``-square window (neighbouring blocks' windows overlap). Keys outside the
map (the halo at the borders and the bottom/right padding) are masked out when ``mask_padding`` is set; otherwise
they take part as zero vectors, as in timm's ``HaloAttn`` (their logit is then the position term alone). Every
window holds at least one real key, so any ``H, W >= 1`` is valid.

Relative positions. ``rel_pos = (rel_h, rel_w)``, each ``[2 * win - 1, D]`` (shared by the heads) or
``[heads, 2 * win - 1, D]``, ``win = block_size + 2 * halo_size``, adds the factorised relative logits of
Bello et al. / HaloNet: for query pixel ``(y, x)`` and key pixel ``(y', x')``,

    logit = scale * q . k + q . rel_h[y' - y + win - 1] + q . rel_w[x' - x + win - 1]

(unscaled; scale the tables to scale the position term). The offsets are pixel offsets on the key map, also for
strided queries.
"""

from __future__ import annotations

import torch

from .._common import ceil_div
from .._dispatch import OpBackends, check_qkv
from . import reference

__all__ = ["halo_attention", "BACKENDS"]

BACKENDS = OpBackends("halo_attention", __name__, ["triton", "reference"])


def _check(q, k, v, block_size, halo_size, query_stride, rel_pos) -> None:
    check_qkv("halo_attention", q, k, v, 5, "[B, H, W, heads, D]")
    if block_size < 1 or halo_size < 0 or query_stride < 1 or block_size % query_stride:
        raise ValueError(
            f"halo_attention: need block_size >= 1, halo_size >= 0 and query_stride >= 1 dividing block_size, "
            f"got block_size={block_size}, halo_size={halo_size}, query_stride={query_stride}"
        )
    b, h, w, heads, d = k.shape
    expected_q = (b, ceil_div(h, query_stride), ceil_div(w, query_stride), heads, d)
    # traced (torch.compile / torch.export), the query size is a different expression of the same symbolic size,
    # equal at every size but not provably so: comparing them would pin the traced program to the traced size
    traced = torch.compiler.is_compiling()
    if (not traced and tuple(q.shape) != expected_q) or v.shape[:4] != k.shape[:4]:
        raise ValueError(
            f"halo_attention: for k {tuple(k.shape)} and query_stride={query_stride}, q must be {expected_q} and v "
            f"[B, H, W, heads, Dv] = {(b, h, w, heads)} + (Dv,); got q {tuple(q.shape)}, v {tuple(v.shape)}"
        )
    if rel_pos is not None:
        rows = 2 * (block_size + 2 * halo_size) - 1
        for name, table in zip(("rel_h", "rel_w"), rel_pos):
            if tuple(table.shape) not in ((rows, d), (heads, rows, d)):
                raise ValueError(
                    f"halo_attention: {name} must be [2 * win - 1, D] = {(rows, d)} or [heads, 2 * win - 1, D] = "
                    f"{(heads, rows, d)}, got {tuple(table.shape)}"
                )


def halo_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    block_size: int,
    halo_size: int,
    query_stride: int = 1,
    rel_pos: tuple[torch.Tensor, torch.Tensor] | None = None,
    mask_padding: bool = True,
    scale: float | None = None,
    backend: str | None = None,
) -> torch.Tensor:
    """Each query attends to its ``block_size`` block of the key map plus a ``halo_size`` border.

    Args:
        q: Queries ``[B, ceil(H / query_stride), ceil(W / query_stride), heads, D]``.
        k: Keys ``[B, H, W, heads, D]``.
        v: Values ``[B, H, W, heads, Dv]``.
        block_size: Side of the query blocks on the key map.
        halo_size: Pixels added on every side of a block to form its key window.
        query_stride: Subsampling of the queries (strided attention); must divide ``block_size``.
        rel_pos: Optional ``(rel_h, rel_w)`` relative-position tables, see the module docstring.
        mask_padding: Mask keys outside the map (True) or let them attend as zeros (False, timm's ``HaloAttn``).
        scale: Scale of ``q . k``; defaults to ``D ** -0.5``.
        backend: Force a backend (``'triton'`` or ``'reference'``); ``None`` chooses automatically.

    Returns:
        ``[B, ceil(H / query_stride), ceil(W / query_stride), heads, Dv]``.
    """
    if torch.jit.is_scripting():  # backend choice is Python: a scripted model runs the reference computation
        return reference.forward(q, k, v, block_size, halo_size, query_stride, rel_pos, mask_padding, scale)
    return _checked_halo_attention(q, k, v, block_size, halo_size, query_stride, rel_pos, mask_padding, scale, backend)


def _checked_halo_attention(q, k, v, block_size, halo_size, query_stride, rel_pos, mask_padding, scale, backend):
    # eager mode: validate, choose a backend, run it
    _check(q, k, v, block_size, halo_size, query_stride, rel_pos)
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    kwargs = dict(query_stride=query_stride, rel_pos=rel_pos, mask_padding=mask_padding, scale=scale)
    fn = BACKENDS.choose(q, k, v, block_size, halo_size, backend=backend, **kwargs)
    return fn(q, k, v, block_size, halo_size, **kwargs)
