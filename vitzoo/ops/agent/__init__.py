"""Agent attention: a small set of agent tokens first gathers from the keys, then broadcasts to the queries.

Layout (tokens, as ``scaled_dot_product_attention``): ``q`` ``[B, heads, N, D]``, ``k`` ``[B, heads, M, D]``,
``v`` ``[B, heads, M, Dv]``, ``agents`` ``[B, heads, A, D]``; the output is ``[B, heads, N, Dv]``.

    agent_v = softmax(scale * agents @ k^T + agent_bias) @ v          # agent aggregation, [B, heads, A, Dv]
    out     = softmax(scale * q @ agents^T + query_bias) @ agent_v    # agent broadcast,   [B, heads, N, Dv]

With ``A << N`` both steps are linear in the number of tokens. The agents are usually pooled from the queries
(Agent Attention, Han et al., ECCV 2024: adaptive average pooling of the query map to a ``P x P`` grid); the caller
forms them, so a model may exclude a class token or pool differently. ``agent_bias`` ``[heads | 1, A, M]`` and
``query_bias`` ``[heads | 1, N, A]`` (or with a leading batch dimension) are added to the logits.
"""

from __future__ import annotations

import torch

from .._dispatch import OpBackends, check_qkv
from . import reference

__all__ = ["agent_attention", "BACKENDS"]

BACKENDS = OpBackends("agent_attention", __name__, ["reference"])


def _check_bias(name: str, bias: torch.Tensor | None, rows: int, cols: int, b: int, heads: int) -> None:
    if bias is None:
        return
    if bias.dim() not in (3, 4) or tuple(bias.shape[-2:]) != (rows, cols) or bias.shape[-3] not in (1, heads):
        raise ValueError(
            f"agent_attention: {name} must be [heads | 1, {rows}, {cols}] (optionally with a leading batch "
            f"dimension of {b} or 1), got {tuple(bias.shape)}"
        )


def agent_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    agents: torch.Tensor,
    agent_bias: torch.Tensor | None = None,
    query_bias: torch.Tensor | None = None,
    scale: float | None = None,
    backend: str | None = None,
) -> torch.Tensor:
    """Two-step softmax attention through ``A`` agent tokens (see the module docstring).

    Args:
        q: Queries ``[B, heads, N, D]``.
        k: Keys ``[B, heads, M, D]``.
        v: Values ``[B, heads, M, Dv]``.
        agents: Agent tokens ``[B, heads, A, D]``.
        agent_bias: Optional additive bias of the agent-to-key logits, ``[heads | 1, A, M]``.
        query_bias: Optional additive bias of the query-to-agent logits, ``[heads | 1, N, A]``.
        scale: Logit scale of both steps; defaults to ``D ** -0.5``.
        backend: Force a backend (``'reference'``); ``None`` chooses automatically.

    Returns:
        ``[B, heads, N, Dv]``.
    """
    if torch.jit.is_scripting():  # backend choice is Python: a scripted model runs the reference computation
        return reference.forward(q, k, v, agents, agent_bias, query_bias, scale)
    return _checked_agent_attention(q, k, v, agents, agent_bias, query_bias, scale, backend)


def _checked_agent_attention(q, k, v, agents, agent_bias, query_bias, scale, backend):
    # eager mode: validate, choose a backend, run it
    check_qkv("agent_attention", q, k, v, 4, "[B, heads, N, D]")
    b, heads, n, d = q.shape
    m = k.shape[2]
    if k.shape != (b, heads, m, d) or v.shape[:3] != (b, heads, m) or agents.dim() != 4:
        raise ValueError(
            f"agent_attention: need q [B, heads, N, D], k [B, heads, M, D], v [B, heads, M, Dv], agents "
            f"[B, heads, A, D]; got q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}, "
            f"agents {tuple(agents.shape)}"
        )
    if agents.shape[:2] != (b, heads) or agents.shape[-1] != d or agents.dtype != q.dtype:
        raise ValueError(
            f"agent_attention: agents must be [B, heads, A, D] = [{b}, {heads}, A, {d}] in {q.dtype}, "
            f"got {tuple(agents.shape)} in {agents.dtype}"
        )
    a = agents.shape[2]
    _check_bias("agent_bias", agent_bias, a, m, b, heads)
    _check_bias("query_bias", query_bias, n, a, b, heads)
    scale = d**-0.5 if scale is None else scale
    kwargs = dict(agent_bias=agent_bias, query_bias=query_bias, scale=scale)
    fn = BACKENDS.choose(q, k, v, agents, backend=backend, **kwargs)
    return fn(q, k, v, agents, **kwargs)
