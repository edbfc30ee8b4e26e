"""CrossFormer: a vision transformer with cross-scale embeddings and short / long distance attention.

Paper: "CrossFormer: A Versatile Vision Transformer Hinging on Cross-scale Attention", Wang et al., ICLR 2022,
arXiv:2108.00154. Official code: https://github.com/cheerss/CrossFormer (MIT), branch ``crossformer`` (v1).

The stem and every downsampling are cross-scale embedding layers (CEL): several convolutions with the same stride
and different kernels (stem 4/8/16/32 at stride 4, merges 2/4 at stride 2), centred on the same positions, their
outputs (``C/2, C/4, C/8, C/8`` and ``C, C``) concatenated; the stem normalises after the convs, a merge before.
Blocks are pre-norm attention + MLP (ratio 4) and alternate short-distance attention (SDA: windows of ``G x G``
adjacent tokens) and long-distance attention (LDA: ``G x G`` tokens sampled with interval ``I``), with per-stage
``I = 8, 4, 2, 1``. A stage whose map is no larger than ``G`` on its short side attends globally instead. Both
take a dynamic position bias (DPB): an MLP over the relative offsets inside the group. The head is LayerNorm,
mean pooling and a linear classifier.

CrossFormer++ ("CrossFormer++: A Versatile Vision Transformer Hinging on Cross-scale Attention", TPAMI 2023,
arXiv:2303.06908; main branch of the same repository) keeps this layout with per-stage group sizes ``4, 4, 14, 7``
(progressive group size), intervals ``4, 2, 1, 1``, and an activation cooling layer (ACL: depthwise 3x3 conv +
LayerNorm replacing the block output, no residual) after every third block of a stage but the last.

Changes from the official classification code, which builds every mask and bias for one fixed resolution and
asserts the input size (v1 and the main branch, whose padding masks exist for that resolution only):

* any input ``H, W >= 32`` runs. The image is zero-padded at the bottom/right to a multiple of 4, an odd map
  before a merge to even, so stage ``i`` has ``ceil(H / 2**(i+2))`` rows. SDA pads the map to a multiple of ``G``
  and LDA to a multiple of ``G * I`` (fixed ``G`` and ``I`` per stage, as the CrossFormer++ code does), masking the
  padded keys. A stage with ``min(H, W) <= G`` takes SDA groups of ``min(H, W)`` as the official detection /
  segmentation backbones do (the whole map when it is square). At 224 the result is the official one (v1: 56 =
  7 * 8, 28 = 7 * 4, 14 = 7 * 2, 7 global, no padding; CrossFormer++ pads its 56 / 28 maps to 64 / 32 for LDA
  exactly as the official code does). Elsewhere the v1 classification code, which ties the LDA interval to
  ``H / G``, cannot run at all; the v1 dense-task backbones keep ``I`` and let LDA groups grow to
  ``(Hp / I) x (Wp / I)`` tokens, where these stay ``G x G``.
* the DPB is evaluated for the group size in use at run time instead of being stored for one size, so official
  checkpoints' ``biases`` / ``relative_position_index`` buffers are dropped by :func:`checkpoint_filter_fn`;
* SDA and LDA go through :func:`vitzoo.ops.window_attention` (LDA = a window of ``G`` with dilation ``I``);
* stages are ``stages.{i}.{downsample,blocks}`` with the merge at the start of a stage (official checkpoints are
  remapped by :func:`checkpoint_filter_fn`).
"""

from __future__ import annotations

import re

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import DropPath, LayerNorm2d, Mlp, register_notrace_function
from timm.models import generate_default_cfgs, register_model

from ..hub import convert_checkpoint
from ..layers.dpb import DynamicPosBias
from ..ops import known_true, padded_size, size_min, window_attention
from ._contract import DownsampleStage, HierarchicalBackbone, drop_path_rates, side_beyond
from ._factory import create_backbone, imagenet_cfg
from ._papers import PAPERS

__all__ = ["CrossFormer"]

_LN_EPS = 1e-5  # torch's LayerNorm default, which the official code uses everywhere


@register_notrace_function  # FX cannot trace the padding decision (a condition on the map size); it records one call
def pad_to_multiple(x: torch.Tensor, stride: int) -> torch.Tensor:
    """Zero-pad an NCHW map at the bottom/right to a multiple of ``stride``; the map itself when it already is."""
    # padded_size, not -size % stride: the exporters' integer arithmetic truncates toward zero (see ceil_div)
    pad_h, pad_w = padded_size(x.shape[2], stride) - x.shape[2], padded_size(x.shape[3], stride) - x.shape[3]
    if known_true(pad_h == 0) and known_true(pad_w == 0):
        return x
    return F.pad(x, (0, pad_w, 0, pad_h))


@register_notrace_function  # FX cannot trace the comparison of the map with the group size; it records one call
def group_layout(h: int, w: int, group_size: int, interval: int) -> tuple[tuple[int, int], int]:
    """(group height and width, interval) on an ``h x w`` map: SDA groups of ``min(h, w)`` when that is at most
    ``group_size`` (the official dense-task rule), else ``group_size`` groups with the stage's interval."""
    shorter = size_min(h, w)
    # decided from the sizes' ranges where they decide it, so that a dynamic-shape trace adds no guard: a map that
    # is never smaller than G takes G x G groups at either side of the rule when the interval is 1
    if known_true(shorter > group_size):
        return (group_size, group_size), interval
    if interval == 1 and known_true(shorter >= group_size):
        return (group_size, group_size), 1
    if shorter <= group_size:
        return (shorter, shorter), 1
    return (group_size, group_size), interval


class CrossScaleEmbed(nn.Module):
    """Cross-scale embedding layer (CEL) on NCHW maps: same-stride convs with several kernels, concatenated.

    Conv ``i`` has ``out_chs / 2**(i+1)`` channels, the last one as many as the one before it (so they sum to
    ``out_chs``), and padding ``(kernel - stride) / 2`` so all of them sample the same positions. The map is first
    zero-padded at the bottom/right to a multiple of ``stride``, so the output has ``ceil(H / stride)`` rows.
    ``norm_first``: LayerNorm on the input (stage merges) instead of on the output (stem).
    """

    def __init__(self, in_chs: int, out_chs: int, kernel_sizes: tuple[int, ...], stride: int, norm_first: bool):
        super().__init__()
        self.stride, self.norm_first = stride, norm_first
        last = len(kernel_sizes) - 1
        dims = [out_chs // 2 ** (i + 1) if i < last else out_chs // 2**i for i in range(len(kernel_sizes))]
        self.norm = LayerNorm2d(in_chs if norm_first else out_chs, eps=_LN_EPS)
        self.projs = nn.ModuleList(
            nn.Conv2d(in_chs, dim, k, stride=stride, padding=(k - stride) // 2) for dim, k in zip(dims, kernel_sizes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.norm_first:
            x = self.norm(x)
        x = pad_to_multiple(x, self.stride)  # after the norm: the padding is zeros, as the convs' own padding
        outs = []  # a loop: TorchScript has no comprehension over a ModuleList
        for proj in self.projs:
            outs.append(proj(x))
        x = torch.cat(outs, dim=1)  # B, C, H / stride, W / stride
        return x if self.norm_first else self.norm(x)


class GroupAttention(nn.Module):
    """Multi-head attention inside groups with a dynamic position bias; ``[B, H, W, C]`` in and out.

    ``interval == 1`` is SDA (groups of ``G x G`` adjacent tokens); ``interval = I > 1`` is LDA (``G x G`` tokens
    ``I`` apart, i.e. a ``G`` window with dilation ``I``). When ``min(H, W) <= G`` the groups are SDA groups of
    ``min(H, W)`` (see :func:`group_layout`).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        group_size: int,
        interval: int = 1,
        qkv_bias: bool = True,
        proj_drop: float = 0.0,
    ):
        super().__init__()
        self.num_heads, self.group_size, self.interval = num_heads, group_size, interval
        self.scale = (dim // num_heads) ** -0.5
        # NOTE: the official Attention builds DynamicPosBias(dim // 4), which divides by 4 again
        self.pos = DynamicPosBias(dim // 16, num_heads)
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def grouping(self, h: int, w: int) -> tuple[tuple[int, int], int]:
        """(group height and width, interval) used on an ``h x w`` map."""
        return group_layout(h, w, self.group_size, self.interval)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, c = x.shape
        group, interval = self.grouping(h, w)
        q, k, v = self.qkv(x).view(b, h, w, 3, self.num_heads, c // self.num_heads).unbind(3)  # B, H, W, heads, D
        out = window_attention(q, k, v, group, dilation=interval, bias=self.pos(group), scale=self.scale)
        return self.proj_drop(self.proj(out.reshape(b, h, w, c)))


class CrossFormerBlock(nn.Module):
    """Pre-norm group attention and MLP on channels-last ``[B, H, W, C]``.

    ``use_acl`` (CrossFormer++): a depthwise 3x3 conv and a LayerNorm replace the block output, without a residual.
    """

    # a TorchScript constant: its ``if`` is resolved when scripting, so blocks without ``ex_conv`` / ``ex_ln`` compile
    __constants__ = ["use_acl"]

    def __init__(
        self,
        dim: int,
        num_heads: int,
        group_size: int,
        interval: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        proj_drop: float = 0.0,
        drop_path: float = 0.0,
        use_acl: bool = False,
    ):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=_LN_EPS)
        self.attn = GroupAttention(dim, num_heads, group_size, interval, qkv_bias, proj_drop)
        self.norm2 = nn.LayerNorm(dim, eps=_LN_EPS)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop=proj_drop)
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.use_acl = use_acl
        if use_acl:
            self.ex_conv = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
            self.ex_ln = nn.LayerNorm(dim, eps=_LN_EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))
        x = x + self.drop_path(self.mlp(self.norm2(x)))
        if self.use_acl:
            x = self.ex_ln(self.ex_conv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1))  # B, H, W, C
        return x


class CrossFormer(HierarchicalBackbone):
    """CrossFormer: CEL stem, four stages of alternating SDA / LDA blocks with CEL merges, LayerNorm head."""

    def __init__(
        self,
        in_chans: int = 3,
        num_classes: int = 1000,
        global_pool: str = "avg",
        embed_dim: int = 96,
        depths: tuple[int, ...] = (2, 2, 6, 2),
        num_heads: tuple[int, ...] = (3, 6, 12, 24),
        group_sizes: tuple[int, ...] = (7, 7, 7, 7),
        intervals: tuple[int, ...] = (8, 4, 2, 1),
        stem_kernels: tuple[int, ...] = (4, 8, 16, 32),
        merge_kernels: tuple[int, ...] = (2, 4),
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        use_acl: bool = False,
        drop_rate: float = 0.0,
        proj_drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
    ):
        super().__init__(num_classes, in_chans, global_pool, drop_rate)
        dims = [embed_dim * 2**i for i in range(len(depths))]
        dpr = drop_path_rates(drop_path_rate, depths)
        # a stage map shorter than G (with LDA: not longer than G) takes other groups (group_layout), a different
        # computation, so a dynamic-shape export starts where no stage does (see vitzoo.export); an SDA-only stage
        # needs sides >= G, i.e. beyond G - 1
        self.dynamic_min_side = side_beyond([g - (i == 1) for g, i in zip(group_sizes, intervals)])
        self.stem = CrossScaleEmbed(in_chans, embed_dim, stem_kernels, stride=4, norm_first=False)
        stages, self.feature_info = [], []
        for i, (dim, depth) in enumerate(zip(dims, depths)):
            downsample = (
                CrossScaleEmbed(dims[i - 1], dim, merge_kernels, stride=2, norm_first=True) if i > 0 else nn.Identity()
            )
            blocks = [
                CrossFormerBlock(
                    dim,
                    num_heads[i],
                    group_sizes[i],
                    intervals[i] if j % 2 == 1 else 1,  # even blocks SDA, odd blocks LDA
                    mlp_ratio,
                    qkv_bias,
                    proj_drop_rate,
                    dpr[i][j],
                    use_acl=use_acl and (j + 1) % 3 == 0 and j < depth - 1,
                )
                for j in range(depth)
            ]
            stages.append(DownsampleStage(downsample, blocks, channels_last_blocks=True))
            self.feature_info.append(dict(num_chs=dim, reduction=4 * 2**i, module=f"stages.{i}"))
        self.stages = nn.Sequential(*stages)
        self.build_head(dims[-1])
        self.norm = LayerNorm2d(self.num_features, eps=_LN_EPS)
        self.apply(self._init_weights)


# Official persistent buffers that this port recomputes for the group size in use (v1 checkpoints carry them).
_STALE_BUFFERS = ("attn.biases", "attn.relative_position_index", "attn_mask")


def _official_key(key: str) -> str:
    """One official CrossFormer key -> this model's key."""
    if key.startswith("patch_embed."):
        return "stem." + key.removeprefix("patch_embed.")
    m = re.match(r"^layers\.(\d)\.blocks\.(.*)$", key)
    if m:
        return f"stages.{m.group(1)}.blocks.{m.group(2)}"
    m = re.match(r"^layers\.(\d)\.downsample\.(norm|reductions)\.(.*)$", key)
    if m:  # the merge that ends official layer s starts our stage s + 1
        part = "projs" if m.group(2) == "reductions" else "norm"
        return f"stages.{int(m.group(1)) + 1}.downsample.{part}.{m.group(3)}"
    return key


def checkpoint_filter_fn(state_dict: dict, model: CrossFormer) -> dict[str, torch.Tensor]:
    """Map an official CrossFormer checkpoint (``{'model': ...}`` from cheerss/CrossFormer) onto this model.

    Drops the ``biases`` / ``relative_position_index`` buffers the official v1 code saved (this port evaluates the
    DPB for the group size in use). Checkpoints already in vitzoo's layout pass through unchanged; a mismatch
    raises :class:`vitzoo.hub.CheckpointError` listing missing, unexpected and mis-shaped keys.
    """
    return convert_checkpoint(state_dict, model, ("patch_embed.", "layers."), _official_item)


def _official_item(key: str, value: torch.Tensor) -> tuple[str, torch.Tensor] | None:
    return None if key.endswith(_STALE_BUFFERS) else (_official_key(key), value)


def _create_crossformer(variant: str, pretrained: bool = False, **kwargs) -> CrossFormer:
    return create_backbone(CrossFormer, variant, pretrained, checkpoint_filter_fn, **kwargs)


def _cfg(**kwargs) -> dict:
    # variants override these (dict merge: a repeated keyword would be an error)
    family = dict(
        first_conv="stem.projs.0",
        **PAPERS["crossformer"].cfg_fields(),
    )
    return imagenet_cfg(**{**family, **kwargs})


def _drive_note(file_id: str) -> tuple[str, ...]:
    return (
        f"Official weights: https://drive.google.com/file/d/{file_id}/view (a Google Drive viewer page, not a direct "
        "file link, so no url is set). Download the .pth and pass pretrained_cfg_overlay=dict(file=path).",
    )


def _baidu_note(share: str) -> tuple[str, ...]:
    return (
        f"Official weights: https://pan.baidu.com/s/{share}?pwd=crsf (Baidu Netdisk only, no direct file url). "
        "Download the .pth and pass pretrained_cfg_overlay=dict(file=path).",
    )


_PP = PAPERS["crossformer_pp"].cfg_fields()  # CrossFormer++ (TPAMI 2023), main branch of the same repository

default_cfgs = generate_default_cfgs(
    {
        # Official ImageNet-1k weights are shared as Google Drive viewer pages (and Baidu): no direct file url.
        "vitzoo_crossformer_t.official_in1k": _cfg(notes=_drive_note("1YSkU9enn-ITyrbxLH13zNcBYvWSEidfq")),
        "vitzoo_crossformer_s.official_in1k": _cfg(notes=_drive_note("1RAkigsgr33va0RZ85S2Shs2BhXYcS6U8")),
        "vitzoo_crossformer_b.official_in1k": _cfg(notes=_drive_note("1bK8biVCi17nz_nkt7rBfio_kywUpllSU")),
        "vitzoo_crossformer_l.official_in1k": _cfg(notes=_drive_note("1zRWByVW_KIZ87NgaBkDIm60DAsGJErdG")),
        "vitzoo_crossformer_pp_s.official_in1k": _cfg(notes=_baidu_note("1smc_kRoogd0Ig5vfqwuGTA"), **_PP),
        "vitzoo_crossformer_pp_b.official_in1k": _cfg(notes=_baidu_note("13XVP0ebtNcyRMmkl11ALYg"), **_PP),
        # the README links L and H to the same Baidu share
        "vitzoo_crossformer_pp_l.official_in1k": _cfg(notes=_baidu_note("1xtPh-ndcOxRM7fPYYxIIRg"), **_PP),
        "vitzoo_crossformer_pp_h.official_in1k": _cfg(notes=_baidu_note("1xtPh-ndcOxRM7fPYYxIIRg"), **_PP),
    }
)


@register_model
def vitzoo_crossformer_t(pretrained: bool = False, **kwargs) -> CrossFormer:
    model_args = dict(embed_dim=64, depths=(1, 1, 8, 6), num_heads=(2, 4, 8, 16))
    return _create_crossformer("vitzoo_crossformer_t", pretrained, **dict(model_args, **kwargs))


@register_model
def vitzoo_crossformer_s(pretrained: bool = False, **kwargs) -> CrossFormer:
    model_args = dict(embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24))
    return _create_crossformer("vitzoo_crossformer_s", pretrained, **dict(model_args, **kwargs))


@register_model
def vitzoo_crossformer_b(pretrained: bool = False, **kwargs) -> CrossFormer:
    model_args = dict(embed_dim=96, depths=(2, 2, 18, 2), num_heads=(3, 6, 12, 24))
    return _create_crossformer("vitzoo_crossformer_b", pretrained, **dict(model_args, **kwargs))


@register_model
def vitzoo_crossformer_l(pretrained: bool = False, **kwargs) -> CrossFormer:
    model_args = dict(embed_dim=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32))
    return _create_crossformer("vitzoo_crossformer_l", pretrained, **dict(model_args, **kwargs))


# CrossFormer++: progressive group sizes per stage, intervals 4/2/1/1 and activation cooling layers (ACL).
_PP_ARGS = dict(group_sizes=(4, 4, 14, 7), intervals=(4, 2, 1, 1), use_acl=True)


@register_model
def vitzoo_crossformer_pp_s(pretrained: bool = False, **kwargs) -> CrossFormer:
    model_args = dict(embed_dim=64, depths=(2, 2, 18, 2), num_heads=(2, 4, 8, 16), **_PP_ARGS)
    return _create_crossformer("vitzoo_crossformer_pp_s", pretrained, **dict(model_args, **kwargs))


@register_model
def vitzoo_crossformer_pp_b(pretrained: bool = False, **kwargs) -> CrossFormer:
    model_args = dict(embed_dim=96, depths=(2, 2, 18, 2), num_heads=(3, 6, 12, 24), **_PP_ARGS)
    return _create_crossformer("vitzoo_crossformer_pp_b", pretrained, **dict(model_args, **kwargs))


@register_model
def vitzoo_crossformer_pp_l(pretrained: bool = False, **kwargs) -> CrossFormer:
    model_args = dict(embed_dim=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32), **_PP_ARGS)
    return _create_crossformer("vitzoo_crossformer_pp_l", pretrained, **dict(model_args, **kwargs))


@register_model
def vitzoo_crossformer_pp_h(pretrained: bool = False, **kwargs) -> CrossFormer:
    model_args = dict(embed_dim=128, depths=(6, 6, 18, 2), num_heads=(4, 8, 16, 32), **_PP_ARGS)
    return _create_crossformer("vitzoo_crossformer_pp_h", pretrained, **dict(model_args, **kwargs))
