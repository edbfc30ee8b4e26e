"""FlexAttention backend of :func:`vitzoo.ops.neighborhood_attention`: NATTEN's neighborhoods as a block mask.

``torch.nn.attention.flex_attention`` skips the key tiles a ``BlockMask`` marks empty and applies the per-element
mask inside the others. On CUDA the compiled kernel runs forward and backward; on CPU torch offers Flex forward only
(uncompiled it materialises the scores), so there it serves inference and tests, and automatic choice leaves it out.
Block masks depend only on the map size, kernel, dilation and device, and are built once per combination.
"""

from __future__ import annotations

import functools

import torch
from torch.nn.attention.flex_attention import BlockMask, create_block_mask

from .._flex import flex_auto_reason, flex_reason, run_flex


def can_run(q, k, v, kernel_size, *, dilation=(1, 1), scale=None) -> str | None:
    return flex_reason(q, q, k, v)


def can_auto_select(q, *args, **kwargs) -> str | None:
    return flex_auto_reason(q)


def _axis_in_window(q_pos, k_pos, length: int, kernel: int, dilation: int):
    """NATTEN's window along one axis: same dilation group, window centred and shifted inward at the borders."""
    group = q_pos % dilation
    group_len = (length - group + dilation - 1) // dilation
    start = torch.clamp(q_pos // dilation - kernel // 2, min=0)
    start = torch.minimum(start, group_len - kernel)
    k_in_group = k_pos // dilation
    return (k_pos % dilation == group) & (k_in_group >= start) & (k_in_group < start + kernel)


@functools.lru_cache(maxsize=64)
def neighborhood_block_mask(h: int, w: int, kernel: tuple, dilation: tuple, device: str) -> BlockMask:
    """The ``BlockMask`` of 2-D neighborhood attention on a row-major ``h x w`` token map."""

    def mask_mod(b, head, q_idx, kv_idx):
        rows_ok = _axis_in_window(q_idx // w, kv_idx // w, h, kernel[0], dilation[0])
        cols_ok = _axis_in_window(q_idx % w, kv_idx % w, w, kernel[1], dilation[1])
        return rows_ok & cols_ok

    return create_block_mask(mask_mod, None, None, h * w, h * w, device=device)


def forward(q, k, v, kernel_size, *, dilation=(1, 1), scale=None) -> torch.Tensor:
    b, h, w, heads, d = q.shape
    block_mask = neighborhood_block_mask(h, w, tuple(kernel_size), tuple(dilation), str(q.device))
    # [B, H, W, heads, D] -> [B, heads, H*W, D] as a view
    qf, kf, vf = (t.reshape(b, h * w, heads, t.shape[-1]).transpose(1, 2) for t in (q, k, v))
    out = run_flex(qf, kf, vf, block_mask=block_mask, scale=scale)  # B, heads, H*W, Dv
    return out.transpose(1, 2).reshape(b, h, w, heads, v.shape[-1])
