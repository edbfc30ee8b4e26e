"""Linear attention over feature-mapped queries and keys (FLatten's focused and InLine's injective forms).

Layout (tokens): ``q, k`` ``[B, heads, N | M, D]`` *after* the model's kernel feature map, ``v`` ``[B, heads, M, Dv]``;
output ``[B, heads, N, Dv]``. Cost is linear in the token count: ``k^T v`` is formed once per head.

``normalization="divide"`` (kernelised softmax, FLatten; ``q`` and ``k`` non-negative)::

    out = q @ (k^T v / M) / (q @ mean(k) + eps)

``normalization="injective"`` (InLine: the weights sum to one by subtraction instead of division, so the map from
logits to weights stays injective)::

    out = mean(v) + (scale / M) * q @ ((k - mean(k))^T v)

which equals InLine's ``q (scale / M) k^T v + (1 - scale * q . mean(k)) mean(v)`` in a form without cancellation.

Precision: in float16 / bfloat16 the token reductions (``k^T v``, ``mean(k)``) and the denominator are formed in
float32 and the output is cast back: summing thousands of tokens, or adding ``eps = 1e-6`` (below float16's
resolution near 1), is what made FLatten's float16 training produce NaN.
"""

from __future__ import annotations

import torch

from .._dispatch import OpBackends, check_qkv
from . import reference

__all__ = ["linear_attention", "BACKENDS"]

BACKENDS = OpBackends("linear_attention", __name__, ["reference"])

NORMALIZATIONS = ("divide", "injective")


def linear_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    normalization: str = "divide",
    scale: float | None = None,
    eps: float = 1e-6,
    backend: str | None = None,
) -> torch.Tensor:
    """Linear attention with the given normalisation (see the module docstring).

    Args:
        q: Feature-mapped queries ``[B, heads, N, D]``.
        k: Feature-mapped keys ``[B, heads, M, D]``.
        v: Values ``[B, heads, M, Dv]``.
        normalization: ``'divide'`` (FLatten) or ``'injective'`` (InLine).
        scale: ``'injective'`` only: the logit scale, default ``D ** -0.5``.
        eps: ``'divide'`` only: added to the denominator.
        backend: Force a backend (``'reference'``); ``None`` chooses automatically.

    Returns:
        ``[B, heads, N, Dv]`` in the dtype of ``q``.
    """
    if torch.jit.is_scripting():  # backend choice is Python: a scripted model runs the reference computation
        return reference.forward(q, k, v, normalization, scale, eps)
    return _checked_linear_attention(q, k, v, normalization, scale, eps, backend)


def _checked_linear_attention(q, k, v, normalization, scale, eps, backend):
    # eager mode: validate, choose a backend, run it
    check_qkv("linear_attention", q, k, v, 4, "[B, heads, N, D]")
    b, heads, _, d = q.shape
    m = k.shape[2]
    if k.shape != (b, heads, m, d) or v.shape[:3] != (b, heads, m):
        raise ValueError(
            f"linear_attention: need q [B, heads, N, D], k [B, heads, M, D], v [B, heads, M, Dv]; got "
            f"q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}"
        )
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"linear_attention: normalization must be one of {NORMALIZATIONS}, got {normalization!r}")
    scale = d**-0.5 if scale is None else scale
    kwargs = dict(normalization=normalization, scale=scale, eps=eps)
    fn = BACKENDS.choose(q, k, v, backend=backend, **kwargs)
    return fn(q, k, v, **kwargs)
