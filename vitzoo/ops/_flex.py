"""What the FlexAttention backends share: their device and dtype checks and one way to call Flex per device.

On CUDA Flex runs compiled (forward and backward). On CPU torch offers it forward only and uncompiled, which
materialises the scores: there it serves inference and tests, and automatic choice leaves it out.
"""

from __future__ import annotations

import functools
import warnings

import torch
from torch.nn.attention.flex_attention import flex_attention

DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def flex_reason(q: torch.Tensor, *grad_sources: torch.Tensor | None) -> str | None:
    """Why Flex cannot run on ``q`` (dtype, or a backward on CPU, where any of ``grad_sources`` needs one)."""
    if q.dtype not in DTYPES:
        return f"dtype {q.dtype} not supported (supports {DTYPES})"
    needs_grad = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in grad_sources)
    if q.device.type == "cpu" and needs_grad:
        return "FlexAttention has no backward on CPU"
    return None


def flex_auto_reason(q: torch.Tensor) -> str | None:
    """Why automatic choice passes Flex over: off CUDA it is the unfused fallback."""
    if q.device.type != "cuda":
        return "FlexAttention is unfused on CPU (it materialises the scores); pass backend='flex' to use it"
    return None


@functools.cache
def _compiled_flex():
    return torch.compile(flex_attention, dynamic=False)


def run_flex(q, k, v, *, block_mask, score_mod=None, scale=None) -> torch.Tensor:
    """``flex_attention`` on ``[B, heads, L, D]`` inputs: compiled on CUDA, eager (and unfused) elsewhere."""
    if q.device.type == "cuda":
        return _compiled_flex()(q, k, v, score_mod=score_mod, block_mask=block_mask, scale=scale)
    with warnings.catch_warnings():  # the unfused eager path is the documented CPU behaviour, not news
        warnings.filterwarnings("ignore", message=".*flex_attention called without torch.compile.*")
        return flex_attention(q, k, v, score_mod=score_mod, block_mask=block_mask, scale=scale)
