"""Plain-PyTorch MALA: the specification of :func:`vitzoo.ops.magnitude_aware_linear_attention`."""

from __future__ import annotations

from ...layers.rope import apply_rope
from ..linear.reference import accumulation_dtype


def can_run(*args, **kwargs) -> str | None:
    return None


def forward(q, k, v, *, rope=None, scale=None, eps=1e-6):
    out_dtype, acc = q.dtype, accumulation_dtype(q.dtype)
    q, k, v = q.to(acc), k.to(acc), v.to(acc)
    n = k.shape[2]
    z = scale * q @ k.mean(dim=2, keepdim=True).transpose(-1, -2)  # B, heads, N, 1
    if rope is not None:
        sin, cos = (t.to(acc) for t in rope)
        q, k = apply_rope(q, sin, cos), apply_rope(k, sin, cos)
    kv = k.transpose(-1, -2) @ v * (scale / n)  # B, heads, D, Dv
    out = (1 + 1 / (z + eps)) * (q @ kv) - z * v.mean(dim=2, keepdim=True)
    return out.to(out_dtype)
