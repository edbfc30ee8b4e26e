"""Plain-PyTorch neighborhood attention: the specification of :func:`vitzoo.ops.neighborhood_attention`.

It gathers every query's ``kh * kw`` keys explicitly, so memory grows with ``H * W * kh * kw``: it is meant to be
correct and readable, and fast backends are checked against it.
"""

from __future__ import annotations

import torch


def can_run(*args, **kwargs) -> str | None:
    return None


def neighbor_index(length: int, kernel: int, dilation: int, device: torch.device) -> torch.Tensor:
    """``[length, kernel]`` long: the key positions each query position along one axis attends to.

    Positions ``i`` with the same ``i % dilation`` form one grid; within it the window of ``kernel`` positions is
    centred on the query and shifted inward at the borders, which NATTEN defines as neighborhood attention.
    """
    pos = torch.arange(length, device=device)
    group = pos % dilation
    in_group = pos // dilation
    group_len = (length - group + dilation - 1) // dilation  # tokens in this query's grid
    start = (in_group - kernel // 2).clamp(min=0)
    start = torch.minimum(start, group_len - kernel)
    steps = torch.arange(kernel, device=device)
    return group[:, None] + dilation * (start[:, None] + steps[None, :])  # length, kernel


def forward(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    kernel_size: tuple[int, int],
    dilation: tuple[int, int] = (1, 1),
    scale: float | None = None,
) -> torch.Tensor:
    b, h, w, heads, d = q.shape
    kh, kw = kernel_size
    rows = neighbor_index(h, kh, dilation[0], q.device)  # H, kh
    cols = neighbor_index(w, kw, dilation[1], q.device)  # W, kw
    r = rows[:, None, :, None].expand(h, w, kh, kw)
    c = cols[None, :, None, :].expand(h, w, kh, kw)
    k_nb = k[:, r, c].reshape(b, h, w, kh * kw, heads, d)  # B, H, W, K, heads, D
    v_nb = v[:, r, c].reshape(b, h, w, kh * kw, heads, v.shape[-1])
    s = d**-0.5 if scale is None else scale  # the op's default, for direct callers
    logits = torch.einsum("bhwnd,bhwknd->bhwnk", q * s, k_nb)  # B, H, W, heads, K
    attn = logits.softmax(dim=-1)
    return torch.einsum("bhwnk,bhwknd->bhwnd", attn, v_nb)
