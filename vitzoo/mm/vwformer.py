"""VWFormer decode head for mmsegmentation: ``decode_head=dict(type='VWFormerHead', in_channels=[...], ...)``.

Paper: "Multi-Scale Representations by Varying Window Attention for Semantic Segmentation", Haotian Yan, Ming Wu,
Chuang Zhang, ICLR 2024, arXiv:2404.16573. Official code: https://github.com/yan-hao-tian/VW (MIT licence), class
``VWHead`` (the ADE20K head; the Cityscapes variant ``VWCityHead`` is not ported).

The head fuses levels 2-4 at stride 8 into ``X``, then runs five branches on ``X`` and concatenates them: a 1x1 conv,
a global image pool, and one varying-window attention (VWA) per context ratio ``R``. VWA cuts ``X`` into a fixed
``num_windows x num_windows`` grid of ``p_h x p_w`` query windows; the context of a window is the ``R p_h x R p_w``
window centred on it, shrunk back to ``p_h x p_w`` tokens (an ``R x R`` conv to ``E / R^2`` channels, then
space-to-depth), so every ratio costs the same attention. The result is upsampled to stride 4 and fused with a
narrow projection of level 1.

What this port changes (state-dict keys are the official ones):

* Every ConvModule uses the config's ``norm_cfg`` / ``act_cfg``; the official head hard-codes SyncBN (and ReLU) in
  ``linear_fuse``, ``ds``, ``short_path``, ``cat`` and ``low_level_fuse``. With ``norm_cfg=dict(type='SyncBN')`` the
  two agree.
* ``ratios``, ``num_windows`` and ``low_level_channels`` are arguments (the official values are the defaults), and the
  four levels are picked through ``in_index``.
* Any input size: the official head needs the stride-8 map to split into exactly 8 x 8 windows of at least 2 x 2
  (sides multiples of 8 and >= 16). Here ``X`` is zero-padded at the bottom/right to that size for the attention
  branches only, and their outputs are cropped back. The padded tokens are zeros, not masked: they enter the context
  convolution, the keys / values and the BatchNorm statistics. The 1x1 and image-pool branches see the unpadded map.
  For images whose sides are multiples of 64 (and >= 128), nothing is padded and the computation is the official one.
* The copy-shift padding, the overlapping unfold and the space-to-depth of the context are one gather of rows and
  columns (same values, without the ``R^2``-fold unfold copy); attention runs through
  :func:`vitzoo.ops.window_attention`.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from vitzoo.ops import window_attention

try:
    from mmcv.cnn import ConvModule
    from mmengine.model.weight_init import normal_init
    from mmseg.models.decode_heads.decode_head import BaseDecodeHead
    from mmseg.registry import MODELS

    _MMSEG_MISSING: ImportError | None = None
except ImportError as err:  # vitzoo.mm also serves mmdet / mmpretrain users without mmseg: fail on use, not on import
    BaseDecodeHead, MODELS, _MMSEG_MISSING = nn.Module, None, err

__all__ = ["VWFormerHead"]


class _PixelLinear(nn.Module):
    """A ``nn.Linear`` applied to every pixel of an NCHW map (official name ``MLP``, parameters under ``proj``)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.proj = nn.Linear(in_channels, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # the same map as flattening the pixels through the Linear, but the output stays NCHW-contiguous
        return F.conv2d(x, self.proj.weight[:, :, None, None], self.proj.bias)


def _context_index(size: int, ratio: int, window: int, device: torch.device) -> torch.Tensor:
    """For one axis, the map index every context-token slot reads: ``[size * ratio]`` in ``(window, token, d)`` order.

    The official head copy-shift pads the map by ``L = R p - floor((R + 1) p / 2)`` on both sides (padded index ``q``
    reads ``q + R p`` if ``q < 0``, ``q - R p`` if ``q >= size``, else ``q``), unfolds ``R p`` windows at stride
    ``p`` and moves each ``R x R`` block into channels. So slot ``(i, t, d)`` (window ``i``, token ``t``, offset ``d``)
    reads padded index ``i p + t R + d``, i.e. map index ``i p + t R + d - L`` under the rule above.
    """
    lead = ratio * window - (ratio + 1) * window // 2  # L
    origin = torch.arange(0, size, window, device=device)[:, None, None]  # window start
    token = torch.arange(window, device=device)[None, :, None] * ratio  # token's R-block start
    offset = torch.arange(ratio, device=device)[None, None, :]  # position inside the block
    idx = (origin + token + offset - lead).flatten()  # size * R, in (i, t, d) order
    span = ratio * window  # a border window reads one context length away: in-map, cyclically rotated
    idx = torch.where(idx < 0, idx + span, idx)
    return torch.where(idx >= size, idx - span, idx)


class _VaryingWindowAttention(nn.Module):
    """Attention of each query window over its shrunk context (official ``VWA``; keys ``g, conv_out, theta, phi``).

    Args:
        channels: Embedding width ``E``.
        num_heads: Attention heads; the logit scale is ``(E / num_heads) ** -0.5``.
        norm_cfg: Norm after the output projection.
    """

    def __init__(self, channels: int, num_heads: int, norm_cfg: dict | None):
        super().__init__()
        self.num_heads = num_heads
        # registration order of the official module (an mmcv NonLocal2d subclass) so state dicts list alike
        self.g = ConvModule(channels, channels, 1, act_cfg=None)
        self.conv_out = ConvModule(channels, channels, 1, norm_cfg=norm_cfg, act_cfg=None)
        self.theta = ConvModule(channels, channels, 1, act_cfg=None)
        self.phi = ConvModule(channels, channels, 1, act_cfg=None)
        self.init_weights()

    def init_weights(self) -> None:
        """Official init: theta ~ N(0, 0.01); g, phi keep ConvModule's Kaiming init; the output norm starts at zero."""
        normal_init(self.theta.conv, std=0.01)
        for m in (self.g, self.phi):
            m.init_weights()
        self.conv_out.init_weights()
        if self.conv_out.with_norm:  # each branch then outputs exactly 0 at init (the shortcut carries X)
            nn.init.zeros_(self.conv_out.norm.weight)
            nn.init.zeros_(self.conv_out.norm.bias)
        else:
            nn.init.zeros_(self.conv_out.conv.weight)
            if self.conv_out.conv.bias is not None:
                nn.init.zeros_(self.conv_out.conv.bias)

    def forward(self, x: torch.Tensor, context: torch.Tensor, window: tuple[int, int]) -> torch.Tensor:
        """Query map ``x`` and context map ``context``, both ``[B, E, H, W]``, to ``[B, E, H, W]``.

        Window ``(i, k)`` of ``context`` holds the context tokens of query window ``(i, k)``. The projections are
        1x1 convs, so applying them to whole maps equals applying them per window.
        """
        b, e, h, w = x.shape
        heads = self.num_heads
        # B, H, W, heads, d (channel = head * d + dd: heads outer, as the official split)
        q, k, v = (t.permute(0, 2, 3, 1).reshape(b, h, w, heads, e // heads) for t in (
            self.theta(x), self.phi(context), self.g(context)))  # fmt: skip
        out = window_attention(q, k, v, window, scale=(e // heads) ** -0.5)  # B, H, W, heads, d
        out = out.reshape(b, h, w, e).permute(0, 3, 1, 2)  # B, E, H, W
        return self.conv_out(out)


class VWFormerHead(BaseDecodeHead):
    """VWFormer decode head (official ``VWHead``): varying-window multi-scale attention on the stride-8 map.

    Input: four feature maps at strides 4, 8, 16, 32 (picked by ``in_index``). Output: logits at the size of
    level 1 (stride 4). Any level sizes work (see the module docstring for how the stride-8 map is padded).

    Args:
        in_channels: Channels of the four levels.
        channels: Embedding width ``E`` of the head; divisible by ``num_heads`` and by ``R * R`` for every ratio.
        num_heads: Attention heads of each VWA.
        short_cut: Add the fused map ``X`` to each attention branch before the concatenation.
        ratios: Context ratios ``R`` (context window ``R`` times the query window per side), one VWA each;
            each at most ``num_windows``.
        num_windows: Query windows per side of the stride-8 map.
        low_level_channels: Width of the level-1 projection fused at stride 4.
        in_index: Which of the backbone outputs are levels 1-4.
        **kwargs: ``BaseDecodeHead`` arguments (``num_classes``, ``dropout_ratio``, ``norm_cfg``, ``act_cfg``,
            ``align_corners``, ``loss_decode``, ...). ``norm_cfg`` and ``act_cfg`` apply to every ConvModule
            (the official head hard-codes SyncBN + ReLU in most of them).
    """

    def __init__(
        self,
        in_channels: list[int] | tuple[int, ...],
        channels: int = 512,
        num_heads: int = 1,
        short_cut: bool = True,
        ratios: tuple[int, ...] = (2, 4, 8),
        num_windows: int = 8,
        low_level_channels: int = 48,
        in_index: list[int] | tuple[int, ...] = (0, 1, 2, 3),
        **kwargs,
    ):
        if _MMSEG_MISSING is not None:
            raise ImportError("VWFormerHead needs mmsegmentation (`pip install mmsegmentation`)") from _MMSEG_MISSING
        if kwargs.setdefault("input_transform", "multiple_select") != "multiple_select":
            raise ValueError(
                f"VWFormerHead: input_transform must be 'multiple_select', got {kwargs['input_transform']!r}"
            )
        if len(in_channels) != 4 or len(in_index) != 4:
            raise ValueError(f"VWFormerHead: needs 4 levels, got in_channels={in_channels}, in_index={in_index}")
        for r in ratios:
            if not 1 <= r <= num_windows or channels % (r * r):
                raise ValueError(
                    f"VWFormerHead: every ratio must lie in [1, num_windows={num_windows}] and divide channels "
                    f"({channels}) as R * R; got ratio {r}"
                )
        if channels % num_heads:
            raise ValueError(f"VWFormerHead: channels ({channels}) must be divisible by num_heads ({num_heads})")
        super().__init__(list(in_channels), channels, in_index=list(in_index), **kwargs)
        self.num_heads, self.short_cut = num_heads, short_cut
        self.ratios, self.num_windows = tuple(ratios), num_windows
        c1, c2, c3, c4 = self.in_channels
        conv = dict(conv_cfg=self.conv_cfg, norm_cfg=self.norm_cfg, act_cfg=self.act_cfg)

        # registration order of the official head, so state dicts list in the same order
        self.linear_c4 = _PixelLinear(c4, channels)
        self.linear_c3 = _PixelLinear(c3, channels)
        self.linear_c2 = _PixelLinear(c2, channels)
        self.linear_fuse = ConvModule(3 * channels, channels, 1, **conv)
        self.attn = nn.ModuleList(_VaryingWindowAttention(channels, num_heads, self.norm_cfg) for _ in self.ratios)
        self.ds = nn.ModuleList(ConvModule(channels, channels // (r * r), r, **conv) for r in self.ratios)
        self.short_path = ConvModule(channels, channels, 1, **conv)
        self.image_pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), ConvModule(channels, channels, 1, **conv))
        self.cat = ConvModule((2 + len(self.ratios)) * channels, channels, 1, **conv)
        self.linear_c1 = _PixelLinear(c1, low_level_channels)
        self.low_level_fuse = ConvModule(channels + low_level_channels, channels, 1, **conv)

    def init_weights(self) -> None:
        first = not self.is_init  # a second call only warns in BaseModule: leave the (maybe loaded) weights alone
        super().init_weights()
        if first:  # BaseModule re-inits direct ConvModule children; the VWA init must come after any such pass
            for attn in self.attn:
                attn.init_weights()

    def _padded_side(self, size: int) -> int:
        """The smallest side >= ``size`` that splits into ``num_windows`` windows of at least 2 tokens."""
        n = self.num_windows
        return max(2 * n, -(-size // n) * n)

    def attention_branch(self, x: torch.Tensor, index: int) -> torch.Tensor:
        """VWA branch ``index`` (ratio ``ratios[index]``) on ``x`` ``[B, E, H, W]``, without the shortcut.

        ``H`` and ``W`` must be multiples of ``num_windows`` (as in :meth:`forward`, which pads to them).
        """
        b, _, h, w = x.shape
        r, n = self.ratios[index], self.num_windows
        p_h, p_w = h // n, w // n
        # dense R x R conv keeping the size: asymmetric zero pad, (R - 1) // 2 before and R // 2 after
        y = self.ds[index](F.pad(x, ((r - 1) // 2, r // 2, (r - 1) // 2, r // 2)))  # B, E / R^2, H, W
        c = y.shape[1]
        rows = _context_index(h, r, p_h, x.device)  # H * R, in (window row, token row, dy) order
        cols = _context_index(w, r, p_w, x.device)  # W * R, in (window col, token col, dx) order
        ctx = y.index_select(2, rows).index_select(3, cols)  # B, c, H * R, W * R
        ctx = ctx.view(b, c, h, r, w, r)  # B, c, H, dy, W, dx
        ctx = ctx.permute(0, 3, 5, 1, 2, 4).reshape(b, r * r * c, h, w)  # B, E, H, W; channel (dy * R + dx) * c + c'
        return self.attn[index](x, ctx, (p_h, p_w))

    def forward(self, inputs: list[torch.Tensor] | tuple[torch.Tensor, ...]) -> torch.Tensor:
        c1, c2, c3, c4 = self._transform_inputs(inputs)
        size2 = c2.shape[-2:]
        # levels 2-4 fused at stride 8 (order c4, c3, c2 as the official concatenation)
        fused = [
            F.interpolate(self.linear_c4(c4), size=size2, mode="bilinear", align_corners=False),
            F.interpolate(self.linear_c3(c3), size=size2, mode="bilinear", align_corners=False),
            self.linear_c2(c2),
        ]
        x = self.linear_fuse(torch.cat(fused, dim=1))  # B, E, H2, W2
        h, w = size2

        # a broadcast of the pooled vector, but through bilinear resize as the official head (the two differ in
        # the last bit: the resize blends the pixel with itself)
        pooled = F.interpolate(self.image_pool(x), size=(h, w), mode="bilinear", align_corners=self.align_corners)
        branches = [self.short_path(x), pooled]
        hp, wp = self._padded_side(h), self._padded_side(w)
        xp = F.pad(x, (0, wp - w, 0, hp - h))  # B, E, Hp, Wp (zeros at the bottom / right, see module docstring)
        for j in range(len(self.ratios)):
            out = self.attention_branch(xp, j)[:, :, :h, :w]
            branches.append(out + x if self.short_cut else out)
        z = self.cat(torch.cat(branches, dim=1))  # B, E, H2, W2

        z = F.interpolate(z, size=c1.shape[-2:], mode="bilinear", align_corners=False)
        out = self.low_level_fuse(torch.cat([z, self.linear_c1(c1)], dim=1))  # B, E, H1, W1
        return self.cls_seg(out)


if MODELS is not None:
    MODELS.register_module(name="VWFormerHead", module=VWFormerHead, force=True)
