"""Swin's (shifted-)window block on :func:`vitzoo.ops.window_attention`, with timm's ``SwinTransformerBlock`` keys.

Swin Transformer (Liu et al., ICCV 2021, arXiv:2103.14030, https://github.com/microsoft/Swin-Transformer, MIT).
The block keeps timm's module tree and state-dict keys (``norm1``, ``attn.qkv``, ``attn.relative_position_bias_table``,
``attn.proj``, ``norm2``, ``mlp.fc1``, ``mlp.fc2``; ``attn.relative_position_index`` a non-persistent buffer), so a
timm or official Swin block's weights load strictly. What changes: attention runs through ``window_attention`` on
the ``[B, H, W, heads, D]`` layout, q / k / v being views of one qkv projection (no roll, pad or partition copy in
the block; the op's backend decides), padded keys are masked (timm attends to the zero padding), and window and
shift follow the map of every forward instead of the size the block was built for.

Window and shift. The block is built for a map ``input_resolution`` with the host's ``window_size`` and
``shift_size`` (the official rule: the host's window, shift ``window // 2`` on odd blocks). At that size it does
what timm's block does (``_calc_window_shift`` without ``always_partition``): on an axis where the map side is
``<=`` the window, the window shrinks to the side and the shift is 0. That window, ``window_size`` below, sizes
the relative-position table. In every forward the same rule is applied to the actual map ``(H, W)`` against
``window_size``: on each axis, if the side is ``<= window_size`` the window is the side and the shift 0; otherwise
the window is ``window_size`` and the shift is the configured one (or ``window_size // 2`` when the configured shift
does not fit the window, which only happens when the block was built for a map smaller than the host's window).

Relative-position bias of a smaller window. For a window ``(a, b) <= (wh, ww)`` (the table's), the offsets
``(dy, dx)``, ``|dy| < a``, ``|dx| < b``, are a subset of the table's, so the bias is read from the same table: the
pair (query ``(yq, xq)``, key ``(yk, xk)``) of the ``a x b`` window reads row
``(yq - yk + wh - 1) * (2 ww - 1) + (xq - xk + ww - 1)``, i.e. the full index grid ``[wh, ww, wh, ww]`` cropped to
``[:a, :b, :a, :b]``.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from timm.layers import DropPath, Mlp, register_notrace_function, to_2tuple, trunc_normal_

from ..ops import known_true, symbolic, window_attention
from .dpb import relative_offset_index

__all__ = ["SwinWindowAttention", "SwinWindowBlock", "crop_relative_position_index", "swin_window_and_shift"]


def _axis_window_and_shift(side: int, window: int, shift: int) -> tuple[int, int]:
    if side <= window:
        return side, 0
    return window, shift if shift < window else window // 2


@register_notrace_function  # torch.fx cannot branch on the map size; it records the rule as one call
def swin_window_and_shift(
    size: tuple[int, int], window: tuple[int, int], shift: tuple[int, int]
) -> tuple[tuple[int, int], tuple[int, int]]:
    """Swin's rule on a ``size`` map: where a side is ``<=`` the window, window = side and shift = 0 on that axis.

    A ``shift`` that does not fit its (unshrunk) window becomes ``window // 2``.
    """
    wh, sh = _axis_window_and_shift(size[0], window[0], shift[0])
    ww, sw = _axis_window_and_shift(size[1], window[1], shift[1])
    return (wh, ww), (sh, sw)


def _beyond(side: int, window: int) -> int:
    """1 where a ``side >= window`` is larger than the window, else 0, as size arithmetic (no comparison to trace)."""
    return (2 * side - window - 1) // side


@register_notrace_function  # torch.fx cannot compare the window with the table's; it records the crop as one call
def crop_relative_position_index(
    index: torch.Tensor, table_window: tuple[int, int], window: tuple[int, int]
) -> torch.Tensor:
    """The ``[N, N]`` index of a window ``(a, b) <= table_window`` (``N = a * b``), cropped from the table's."""
    wh, ww = table_window
    a, b = window
    if a == wh and b == ww:
        return index
    return index.view(wh, ww, wh, ww)[:a, :b, :a, :b].reshape(a * b, a * b)


class SwinWindowAttention(nn.Module):
    """Multi-head softmax attention in (shifted) windows with Swin's relative-position bias, on ``[B, H, W, C]``."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        window_size: int | tuple[int, int] = 7,
        head_dim: int | None = None,
        qkv_bias: bool = True,
        proj_drop: float = 0.0,
    ):
        super().__init__()
        self.window_size = to_2tuple(window_size)
        self.num_heads = num_heads
        head_dim = head_dim or dim // num_heads
        self.scale = head_dim**-0.5
        wh, ww = self.window_size
        self.relative_position_bias_table = nn.Parameter(torch.empty((2 * wh - 1) * (2 * ww - 1), num_heads))
        self.register_buffer("relative_position_index", relative_offset_index(wh, ww), persistent=False)
        self.qkv = nn.Linear(dim, 3 * num_heads * head_dim, bias=qkv_bias)
        self.proj = nn.Linear(num_heads * head_dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        trunc_normal_(self.relative_position_bias_table, std=0.02)

    def init_non_persistent_buffers(self) -> None:
        """Recompute the index buffer (after building on the meta device; timm's ``reinit_non_persistent_buffers``)."""
        index = relative_offset_index(*self.window_size, device=self.relative_position_index.device)
        self.relative_position_index.copy_(index)

    def relative_position_bias(self, window: tuple[int, int]) -> torch.Tensor:
        """``[heads, N, N]``, ``N = a * b``, for a window ``(a, b) <= window_size`` (see the module docstring)."""
        index = crop_relative_position_index(self.relative_position_index, self.window_size, window)  # N, N
        n = index.shape[0]
        bias = self.relative_position_bias_table[index.reshape(-1)]  # N*N, heads
        return bias.view(n, n, -1).permute(2, 0, 1)  # heads, N, N

    def forward(self, x: torch.Tensor, window: tuple[int, int], shift: tuple[int, int] = (0, 0)) -> torch.Tensor:
        qkv = self.qkv(x).unflatten(-1, (3, self.num_heads, -1))  # B, H, W, 3, heads, D
        q, k, v = qkv.unbind(3)  # B, H, W, heads, D: views, no copy
        bias = self.relative_position_bias(window)
        out = window_attention(q, k, v, window, shift=shift, bias=bias, scale=self.scale)  # B, H, W, heads, D
        return self.proj_drop(self.proj(out.flatten(-2)))  # B, H, W, C


class SwinWindowBlock(nn.Module):
    """Swin's pre-norm block: (shifted-)window attention then an MLP, on channels-last ``[B, H, W, C]`` maps.

    A drop-in for timm's ``SwinTransformerBlock`` (same arguments where they overlap, same state-dict keys), whose
    window and shift adapt to every input map as the module docstring says.
    """

    def __init__(
        self,
        dim: int,
        input_resolution: int | tuple[int, int],
        num_heads: int = 4,
        head_dim: int | None = None,
        window_size: int | tuple[int, int] = 7,
        shift_size: int | tuple[int, int] = 0,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        proj_drop: float = 0.0,
        drop_path: float = 0.0,
        act_layer: type[nn.Module] = nn.GELU,
        norm_layer: type[nn.Module] = nn.LayerNorm,
    ):
        super().__init__()
        self.dim = dim
        self.input_resolution = to_2tuple(input_resolution)
        self.target_shift_size = to_2tuple(shift_size)
        # at the configured map, timm's rule (also the official one): the table is sized for this window
        self.window_size, self.shift_size = swin_window_and_shift(
            self.input_resolution, to_2tuple(window_size), self.target_shift_size
        )
        self.norm1 = norm_layer(dim)
        self.attn = SwinWindowAttention(dim, num_heads, self.window_size, head_dim, qkv_bias, proj_drop)
        self.drop_path1 = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = norm_layer(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=act_layer, drop=proj_drop)
        self.drop_path2 = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()

    def window_and_shift(self, size: tuple[int, int]) -> tuple[tuple[int, int], tuple[int, int]]:
        """Window and shift of a forward on a ``size`` map (``window_size``, ``shift_size`` at ``input_resolution``)."""
        return swin_window_and_shift((size[0], size[1]), self.window_size, self.target_shift_size)

    def attend(self, x: torch.Tensor) -> torch.Tensor:
        """Attention on a ``[B, H, W, C]`` map with the window and shift of its size."""
        if torch.jit.is_scripting():  # its own statement: TorchScript then leaves the traced path uncompiled
            window, shift = self.window_and_shift((x.shape[1], x.shape[2]))
            return self.attn(x, window, shift)
        if symbolic(x.shape[1], x.shape[2]):
            return self._attend_traced(x)
        window, shift = self.window_and_shift((x.shape[1], x.shape[2]))
        return self.attn(x, window, shift)

    def _attend_traced(self, x: torch.Tensor) -> torch.Tensor:
        # A dynamic-shape trace whose map may be exactly one window on an axis (a 224 input's 7x7 last stage) or
        # more (256 and up): the rule unshifts that axis only at the smaller size, so the shift becomes a size
        # expression that is 0 there, and one program holds both. Sides that may be smaller than the window (the
        # window would shrink with them) keep the Python rule, which pins the traced case.
        sides = (x.shape[1], x.shape[2])
        if not all(known_true(side >= ws) for side, ws in zip(sides, self.window_size)):
            window, shift = self.window_and_shift(sides)
            return self.attn(x, window, shift)
        window = self.window_size
        _, shift = swin_window_and_shift((window[0] + 1, window[1] + 1), window, self.target_shift_size)
        shift = tuple(s if known_true(n > ws) else s * _beyond(n, ws) for s, n, ws in zip(shift, sides, window))
        return self.attn(x, window, shift)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path1(self.attend(self.norm1(x)))  # B, H, W, C
        return x + self.drop_path2(self.mlp(self.norm2(x)))
