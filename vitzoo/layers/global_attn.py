"""Global token mixers of linear cost that replace softmax attention in DeiT, PVT, Swin and CSWin hosts.

Three mixers share one frame (:class:`GlobalAttention2d`): queries, keys and values from one ``qkv`` linear layer
(DeiT, Swin, CSWin) or from ``q`` and ``kv`` layers (PVT), a mixing rule over the whole feature map, a local
enhancement on the value map, and an output projection. Input is a token sequence ``[B, T, C]`` whose last
``H * W`` tokens form the row-major map (``num_prefix_tokens`` class tokens may precede it); output has the same
shape.

- :class:`AgentAttention2d` (Agent Attention, Han et al., ECCV 2024, arXiv:2312.08874).
- :class:`InLineAttention2d` (InLine, Han et al., NeurIPS 2024, arXiv:2412.06590).
- :class:`FocusedLinearAttention2d` (FLatten, Han et al., ICCV 2023, arXiv:2308.00442).

In the official hosts these mixers sit in "windows" as large as the training-resolution map, so they are global;
here they are global at every input size. The parameters tied to that resolution (Agent's position biases,
FLatten's positional encoding) are stored at ``base_size`` and resized to the map in every forward, by the same
functions that :func:`resize_agent_tables` / :func:`resize_positional_encoding` offer checkpoint filters.

Every mixer is TorchScript-compilable and a leaf of ``torch.fx`` traces (timm's ``register_notrace_module``): its
forward is shaped by the map size at every step (bias and encoding resizes, reshapes to the map), which symbolic
tracing cannot follow, so a traced host records one call per mixer.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import register_notrace_module, trunc_normal_

from ..ops import accumulation_dtype, adaptive_avg_pool_hw, agent_attention, known_true, linear_attention

__all__ = [
    "AgentAttention2d",
    "FocusedLinearAttention2d",
    "GlobalAttention2d",
    "InLineAttention2d",
    "resize_agent_table",
    "resize_positional_encoding",
]

# Agent's row / column bias tables: name -> the dimension of the (heads, ...) tensor that runs along the map.
# The official tables carry a leading 1 (5-D); they are stored 4-D here because Module.to(memory_format=...)
# converts every 4-D and 5-D parameter and rejects these 5-D shapes. Checkpoint filters drop that leading 1.
AGENT_AXIS_TABLES = {"ah_bias": 2, "aw_bias": 3, "ha_bias": 1, "wa_bias": 2}


def resize_agent_table(table: torch.Tensor, axis: int, length: int) -> torch.Tensor:
    """Resize one of Agent's row/column bias tables along its map ``axis`` with 1-D linear interpolation.

    ``align_corners=False``, as the official loader does when it moves a checkpoint to another resolution.
    """
    if known_true(table.shape[axis] == length):  # a traced map size keeps the resize: identity at equal length
        return table
    moved = table.movedim(axis, -1)  # ..., L
    shape = list(moved.shape[:-1]) + [length]
    out = F.interpolate(
        moved.reshape(1, -1, moved.shape[-1]).to(accumulation_dtype(table.dtype)), size=length, mode="linear"
    )
    return out.to(table.dtype).reshape(shape).movedim(-1, axis)


def resize_positional_encoding(pe: torch.Tensor, base_size: tuple[int, int], size: tuple[int, int]) -> torch.Tensor:
    """Resize FLatten's ``[1, h0 * w0, C]`` key positional encoding to ``size`` (bicubic, as an image)."""
    if known_true(base_size[0] == size[0]) and known_true(base_size[1] == size[1]):  # else identity at equal size
        return pe
    c = pe.shape[-1]
    grid = pe.reshape(1, base_size[0], base_size[1], c).permute(0, 3, 1, 2)  # 1, C, h0, w0
    grid = F.interpolate(grid.to(accumulation_dtype(pe.dtype)), size=size, mode="bicubic", align_corners=False)
    grid = grid.to(pe.dtype)
    return grid.flatten(2).transpose(1, 2)  # 1, h*w, C


def shape_str(x: torch.Tensor) -> str:
    """``(1, 3, 224)``, as Python prints a tuple (TorchScript has no ``tuple(list)``)."""
    dims = [str(d) for d in x.shape]
    return "(" + ", ".join(dims) + ("," if len(dims) == 1 else "") + ")"


@register_notrace_module  # subclasses included: the leaf test is isinstance
class GlobalAttention2d(nn.Module):
    """Projections shared by the global mixers; subclasses implement :meth:`mix`."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True, split_q: bool = False, num_prefix_tokens=0):
        super().__init__()
        # an instance copy for error messages: TorchScript cannot read type(self)
        self.mixer_name = type(self).__name__
        if dim % num_heads:
            raise ValueError(f"{self.mixer_name}: dim {dim} must be divisible by num_heads {num_heads}")
        self.dim, self.num_heads, self.head_dim = dim, num_heads, dim // num_heads
        self.num_prefix_tokens = num_prefix_tokens
        self.split_q = split_q
        # the absent layout is None, so that TorchScript compiles only the present one
        if split_q:  # PVT's layout
            self.qkv = None
            self.q = nn.Linear(dim, dim, bias=qkv_bias)
            self.kv = nn.Linear(dim, 2 * dim, bias=qkv_bias)
        else:
            self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
            self.q = self.kv = None
        self.proj = nn.Linear(dim, dim)

    def project(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``q, k, v`` as ``[B, T, C]``."""
        if self.qkv is not None:
            q, k, v = self.qkv(x).chunk(3, dim=-1)
        else:
            q = self.q(x)
            k, v = self.kv(x).chunk(2, dim=-1)
        return q, k, v

    def heads(self, t: torch.Tensor) -> torch.Tensor:
        b, n, _ = t.shape
        return t.view(b, n, self.num_heads, self.head_dim).transpose(1, 2)  # B, heads, T, D

    def value_map(self, v: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """The map tokens of ``v`` ``[B, T, C]`` as an image ``[B, C, H, W]``."""
        b, _, c = v.shape
        return v[:, self.num_prefix_tokens :].transpose(1, 2).reshape(b, c, size[0], size[1])

    def add_to_map(self, out: torch.Tensor, local: torch.Tensor) -> torch.Tensor:
        """Add ``local`` ``[B, C, H, W]`` to the map tokens of ``out`` ``[B, T, C]`` (prefix tokens untouched)."""
        local = local.flatten(2).transpose(1, 2)  # B, H*W, C
        if self.num_prefix_tokens:
            return torch.cat([out[:, : self.num_prefix_tokens], out[:, self.num_prefix_tokens :] + local], dim=1)
        return out + local

    def check_size(self, x: torch.Tensor, size: tuple[int, int]) -> None:
        if x.dim() != 3 or x.shape[1] != self.num_prefix_tokens + size[0] * size[1] or x.shape[2] != self.dim:
            raise ValueError(
                f"{self.mixer_name}: expected [B, {self.num_prefix_tokens} + {size[0]}*{size[1]}, {self.dim}] "
                f"tokens for a {size[0]}x{size[1]} map, got {shape_str(x)}"
            )

    def forward(self, x: torch.Tensor, size: tuple[int, int], context: torch.Tensor | None = None) -> torch.Tensor:
        """Mix ``x`` ``[B, T, C]`` over the ``size`` map; ``context`` is InLine's ``[B, C]`` residual source."""
        self.check_size(x, size)
        return self.proj(self.mix(x, size, context))

    def mix(self, x: torch.Tensor, size: tuple[int, int], context: torch.Tensor | None) -> torch.Tensor:
        raise NotImplementedError


class AgentAttention2d(GlobalAttention2d):
    """Agent attention: ``agent_num`` agents pooled from the query map gather from all keys, then answer queries.

    Agents are the adaptive average pool of the query map to a ``P x P`` grid (``P = sqrt(agent_num)``; bins
    overlap where P does not divide the map, as PyTorch's adaptive pooling does). Both softmax steps get position
    biases: a ``7 x 7`` per-agent table (``an_bias`` agent-to-key, ``na_bias`` query-to-agent) resized bilinearly to
    the map, plus separable row and column tables (``ah/aw`` and ``ha/wa``) stored at ``base_size`` and resized
    linearly. With a class token, ``ac_bias`` / ``ca_bias`` are its key column and query row. A depthwise 3x3 conv
    of the value map (``dwc``) is added to the map tokens before the projection.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        agent_num: int,
        base_size: tuple[int, int],
        qkv_bias: bool = True,
        split_q: bool = False,
        num_prefix_tokens: int = 0,
    ):
        super().__init__(dim, num_heads, qkv_bias, split_q, num_prefix_tokens)
        pool = round(agent_num**0.5)
        if pool * pool != agent_num:
            raise ValueError(f"AgentAttention2d: agent_num must be a square (agents form a grid), got {agent_num}")
        if num_prefix_tokens > 1:
            raise ValueError("AgentAttention2d: at most one prefix (class) token has a bias table")
        self.agent_num, self.pool_size = agent_num, pool
        self.base_size = tuple(base_size)
        h0, w0 = self.base_size
        self.dwc = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        self.an_bias = nn.Parameter(torch.zeros(num_heads, agent_num, 7, 7))
        self.na_bias = nn.Parameter(torch.zeros(num_heads, agent_num, 7, 7))
        self.ah_bias = nn.Parameter(torch.zeros(num_heads, agent_num, h0, 1))
        self.aw_bias = nn.Parameter(torch.zeros(num_heads, agent_num, 1, w0))
        self.ha_bias = nn.Parameter(torch.zeros(num_heads, h0, 1, agent_num))
        self.wa_bias = nn.Parameter(torch.zeros(num_heads, 1, w0, agent_num))
        if num_prefix_tokens:
            self.ac_bias = nn.Parameter(torch.zeros(1, num_heads, agent_num, 1))
            self.ca_bias = nn.Parameter(torch.zeros(1, num_heads, 1, agent_num))
        else:  # None rather than absent, so that TorchScript drops the class-token branch
            self.ac_bias = self.ca_bias = None
        for p in self.bias_tables():
            trunc_normal_(p, std=0.02)

    def bias_tables(self) -> list[nn.Parameter]:
        names = ["an_bias", "na_bias", *AGENT_AXIS_TABLES] + (["ac_bias", "ca_bias"] if self.num_prefix_tokens else [])
        return [getattr(self, n) for n in names]

    def biases(self, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Agent-to-key ``[heads, A, T]`` and query-to-agent ``[heads, T, A]`` biases for a ``size`` map."""
        h, w = size
        heads, a = self.num_heads, self.agent_num
        ah = resize_agent_table(self.ah_bias, 2, h)  # heads, A, h, 1
        aw = resize_agent_table(self.aw_bias, 3, w)  # heads, A, 1, w
        ha = resize_agent_table(self.ha_bias, 1, h)  # heads, h, 1, A
        wa = resize_agent_table(self.wa_bias, 2, w)  # heads, 1, w, A
        an = F.interpolate(self.an_bias, size=size, mode="bilinear", align_corners=False)  # heads, A, h, w
        na = F.interpolate(self.na_bias, size=size, mode="bilinear", align_corners=False)
        agent_bias = an.reshape(heads, a, h * w) + (ah + aw).reshape(heads, a, h * w)
        query_bias = na.reshape(heads, a, h * w).transpose(1, 2) + (ha + wa).reshape(heads, h * w, a)
        if self.ac_bias is not None and self.ca_bias is not None:
            agent_bias = torch.cat([self.ac_bias[0], agent_bias], dim=2)
            query_bias = torch.cat([self.ca_bias[0], query_bias], dim=1)
        return agent_bias, query_bias

    def mix(self, x: torch.Tensor, size: tuple[int, int], context: torch.Tensor | None) -> torch.Tensor:
        b, t, c = x.shape
        q, k, v = self.project(x)
        agents = adaptive_avg_pool_hw(self.value_map(q, size), self.pool_size)  # B, C, P, P
        agents = self.heads(agents.flatten(2).transpose(1, 2))  # B, heads, A, D
        agent_bias, query_bias = self.biases(size)
        out = agent_attention(
            self.heads(q), self.heads(k), self.heads(v), agents, agent_bias=agent_bias, query_bias=query_bias
        )
        out = out.transpose(1, 2).reshape(b, t, c)
        return self.add_to_map(out, self.dwc(self.value_map(v, size)))


class InLineAttention2d(GlobalAttention2d):
    """Injective linear attention plus a local residual whose 3x3 depthwise kernel is predicted per sample.

    ``out = mean(v) + (scale / T) q (k - mean(k))^T v`` over all ``T`` tokens (class token included), then a
    depthwise 3x3 conv of the value map with one kernel per channel and sample, predicted from the token mean of
    the mixer's input (or of ``context``) by ``residual`` (grouped 1x1 conv, GELU, grouped 1x1 conv to ``9 C``).
    ``dwc=True`` adds CSWin's static 3x3 depthwise conv of the value map (InLine-CSwin's LePE) as well.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        qkv_bias: bool = True,
        split_q: bool = False,
        num_prefix_tokens: int = 0,
        dwc: bool = False,
    ):
        super().__init__(dim, num_heads, qkv_bias, split_q, num_prefix_tokens)
        self.residual = nn.Sequential(
            nn.Conv1d(dim, dim, 1, groups=num_heads), nn.GELU(), nn.Conv1d(dim, 9 * dim, 1, groups=num_heads)
        )
        self.dwc = nn.Conv2d(dim, dim, 3, padding=1, groups=dim) if dwc else None

    def mix(self, x: torch.Tensor, size: tuple[int, int], context: torch.Tensor | None) -> torch.Tensor:
        b, t, c = x.shape
        q, k, v = self.project(x)
        out = linear_attention(self.heads(q), self.heads(k), self.heads(v), normalization="injective")
        out = out.transpose(1, 2).reshape(b, t, c)
        source = x.mean(dim=1) if context is None else context  # B, C
        kernels = self.residual(source.unsqueeze(-1)).reshape(b * c, 1, 3, 3)  # one 3x3 kernel per (sample, channel)
        v_map = self.value_map(v, size)
        h, w = size
        local = F.conv2d(v_map.reshape(1, b * c, h, w), kernels, padding=1, groups=b * c).view(b, c, h, w)
        if self.dwc is not None:
            local = local + self.dwc(v_map)
        return self.add_to_map(out, local)


def focused_feature_map(x: torch.Tensor, scale: torch.Tensor, focusing_factor: float) -> torch.Tensor:
    """FLatten's focusing map ``f(t) = t^p * ||t|| / ||t^p||`` of ``t = (ReLU(x) + 1e-6) / softplus(scale)``.

    Norms run over all channels (before the head split), as in the official code. Half inputs are computed in
    float32: ``t^3`` leaves float16's range for ordinary activations, and that was FLatten's reported float16 NaN.
    """
    acc = accumulation_dtype(x.dtype)
    t = (F.relu(x.to(acc)) + 1e-6) / F.softplus(scale.to(acc))
    powered = t**focusing_factor
    return (powered * (t.norm(p=2, dim=-1, keepdim=True) / powered.norm(p=2, dim=-1, keepdim=True))).to(x.dtype)


class FocusedLinearAttention2d(GlobalAttention2d):
    """Focused linear attention: kernelised attention with a norm-preserving power map and a rank-restoring conv.

    Keys get a learned positional encoding (``[1, h0 * w0, C]``, resized bicubically for other maps); queries and
    keys go through :func:`focused_feature_map`; ``out = q (k^T v / T) / (q . mean(k) + 1e-6)``. A depthwise
    ``kernel_size`` conv over each head's value map (weights shared by the heads, ``dwc``) is added, and with
    ``lepe=True`` CSWin's 3x3 depthwise conv of the full value map as well.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        base_size: tuple[int, int],
        qkv_bias: bool = True,
        split_q: bool = False,
        focusing_factor: float = 3.0,
        kernel_size: int = 5,
        lepe: bool = False,
    ):
        super().__init__(dim, num_heads, qkv_bias, split_q)
        self.base_size, self.focusing_factor = tuple(base_size), focusing_factor
        self.dwc = nn.Conv2d(self.head_dim, self.head_dim, kernel_size, padding=kernel_size // 2, groups=self.head_dim)
        self.scale = nn.Parameter(torch.zeros(1, 1, dim))
        self.positional_encoding = nn.Parameter(torch.zeros(1, base_size[0] * base_size[1], dim))
        self.lepe = nn.Conv2d(dim, dim, 3, padding=1, groups=dim) if lepe else None

    def mix(self, x: torch.Tensor, size: tuple[int, int], context: torch.Tensor | None) -> torch.Tensor:
        b, t, c = x.shape
        q, k, v = self.project(x)
        k = k + resize_positional_encoding(self.positional_encoding, self.base_size, size).to(k.dtype)
        q = focused_feature_map(q, self.scale, self.focusing_factor)
        k = focused_feature_map(k, self.scale, self.focusing_factor)
        out = linear_attention(self.heads(q), self.heads(k), self.heads(v), normalization="divide", eps=1e-6)
        out = out.transpose(1, 2).reshape(b, t, c)
        h, w = size
        v_heads = self.heads(v).reshape(b * self.num_heads, h, w, self.head_dim).permute(0, 3, 1, 2)
        local = self.dwc(v_heads).reshape(b, c, h, w)  # heads' maps in channel order
        if self.lepe is not None:
            local = local + self.lepe(self.value_map(v, size))
        return self.add_to_map(out, local)
