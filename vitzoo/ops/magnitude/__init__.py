"""Magnitude-aware linear attention (MALA, Fan et al., ICCV 2025).

Layout (tokens): ``q, k`` ``[B, heads, N, D]`` *after* the feature map (MALA: ``elu(x) + 1``), ``v``
``[B, heads, N, Dv]``; output ``[B, heads, N, Dv]``. With ``s = scale`` and optional rotary tables ``rope``
(``(sin, cos)``, each ``[N, D]``, applied as :func:`vitzoo.layers.rope.apply_rope`)::

    z_i   = s * q_i . mean_j(k_j)                                  # from the un-rotated features
    out_i = (1 + 1 / (z_i + eps)) * R(q_i) @ (s / N) sum_j R(k_j)^T v_j  -  z_i * mean_j(v_j)

Unlike plain linear attention, the output keeps the query's magnitude: the weights
``beta_i * (s / N) R(q_i) . R(k_j) - z_i / N`` sum to about one but are not divided by a ``q``-dependent
normaliser. The rotary embedding enters only the ``q . k`` product, after the feature map, and the magnitude term
uses the un-rotated features: the order of the official code (the ordering its issue #5 asks about), which the
released weights were trained with.

Precision: reductions over tokens run in float32 for float16 / bfloat16 inputs; the output is cast back.
"""

from __future__ import annotations

import torch

from .._dispatch import OpBackends, check_qkv
from . import reference

__all__ = ["magnitude_aware_linear_attention", "BACKENDS"]

BACKENDS = OpBackends("magnitude_aware_linear_attention", __name__, ["reference"])


def magnitude_aware_linear_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    rope: tuple[torch.Tensor, torch.Tensor] | None = None,
    scale: float | None = None,
    eps: float = 1e-6,
    backend: str | None = None,
) -> torch.Tensor:
    """MALA over feature-mapped ``q`` and ``k`` (see the module docstring).

    Args:
        q: Feature-mapped queries ``[B, heads, N, D]``.
        k: Feature-mapped keys ``[B, heads, N, D]``.
        v: Values ``[B, heads, N, Dv]``.
        rope: Optional rotary ``(sin, cos)`` tables, each ``[N, D]``.
        scale: ``s``; defaults to ``D ** -0.5``.
        eps: Added to ``z`` before its reciprocal.
        backend: Force a backend (``'reference'``); ``None`` chooses automatically.

    Returns:
        ``[B, heads, N, Dv]`` in the dtype of ``q``.
    """
    if torch.jit.is_scripting():  # backend choice is Python: a scripted model runs the reference computation
        return reference.forward(q, k, v, rope, scale, eps)
    return _checked_magnitude_aware_linear_attention(q, k, v, rope, scale, eps, backend)


def _checked_magnitude_aware_linear_attention(q, k, v, rope, scale, eps, backend):
    # eager mode: validate, choose a backend, run it
    check_qkv("magnitude_aware_linear_attention", q, k, v, 4, "[B, heads, N, D]")
    if k.shape != q.shape or v.shape[:3] != q.shape[:3]:
        raise ValueError(
            f"magnitude_aware_linear_attention: need q, k [B, heads, N, D] and v [B, heads, N, Dv]; got "
            f"q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}"
        )
    n, d = q.shape[2:]
    if rope is not None and any(tuple(t.shape) != (n, d) for t in rope):
        raise ValueError(
            f"magnitude_aware_linear_attention: rope tables must be [N, D] = {(n, d)}, "
            f"got {[tuple(t.shape) for t in rope]}"
        )
    scale = d**-0.5 if scale is None else scale
    kwargs = dict(rope=rope, scale=scale, eps=eps)
    fn = BACKENDS.choose(q, k, v, backend=backend, **kwargs)
    return fn(q, k, v, **kwargs)
