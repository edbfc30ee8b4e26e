"""Plain-PyTorch agent attention: the specification of :func:`vitzoo.ops.agent_attention`."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def can_run(*args, **kwargs) -> str | None:
    return None


def forward(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    agents: torch.Tensor,
    agent_bias: torch.Tensor | None = None,
    query_bias: torch.Tensor | None = None,
    scale: float | None = None,
) -> torch.Tensor:
    mask = None if agent_bias is None else agent_bias.to(q.dtype)
    agent_v = F.scaled_dot_product_attention(agents, k, v, attn_mask=mask, scale=scale)  # B, heads, A, Dv
    mask = None if query_bias is None else query_bias.to(q.dtype)
    return F.scaled_dot_product_attention(q, agents, agent_v, attn_mask=mask, scale=scale)  # B, heads, N, Dv
