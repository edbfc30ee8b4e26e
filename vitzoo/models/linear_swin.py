"""Swin Transformer hosting Agent, InLine or FLatten attention: Agent-Swin, InLine-Swin and FLatten-Swin.

Papers: "Agent Attention: On the Integration of Softmax and Linear Attention", Han et al., ECCV 2024,
arXiv:2312.08874 (https://github.com/LeapLabTHU/Agent-Attention); "Bridging the Divide: Reconsidering Softmax and
Linear Attention", Han et al., NeurIPS 2024, arXiv:2412.06590 (https://github.com/LeapLabTHU/InLine); "FLatten
Transformer: Vision Transformer using Focused Linear Attention", Han et al., ICCV 2023, arXiv:2308.00442
(https://github.com/LeapLabTHU/FLatten-Transformer). All MIT. Host: Swin (Liu et al., ICCV 2021, arXiv:2103.14030).

Swin's 4x4 patch embedding, patch merging, pre-norm blocks (MLP ratio 4), final LayerNorm and mean pooling. Per the
official ``attn_type`` string (see :mod:`vitzoo.models._linear_mixers`), a block either uses the new mixer over the
whole stage map (the official configs set Swin's window to 56, the stage-1 map at 224, so these windows never
partition) or keeps Swin's softmax attention in windows (7x7 at 224), shifted on odd blocks
(:class:`vitzoo.layers.SwinWindowBlock`: timm's ``SwinTransformerBlock`` keys, attention through
``window_attention``). The new mixers' resolution-tied tables are sized for ``img_size`` and resized to the
actual map in every forward; the softmax window follows the official rule for ``img_size`` (7 at 224, 9 at 288 and
12 at 384 for Agent / InLine, 12 above 224 for FLatten), whose relative-position tables are resized bicubically when
a checkpoint of another window is loaded. Any input size >= 32 runs (the patch embedding pads to a multiple of 4,
merging pads odd maps, window blocks pad to the window and mask the padding; on a map side no larger than the
window, the window shrinks to the side and that axis is not shifted, in every forward). Modules are
``stages.{i}.{downsample,blocks}``; :func:`checkpoint_filter_fn` converts official checkpoints, resizing their
tables when ``img_size`` differs.
"""

from __future__ import annotations

import re

import torch
import torch.nn as nn
from timm.layers import LayerNorm2d
from timm.models import register_model

from ..hub import convert_checkpoint
from ..layers import SwinWindowBlock, swin_downsample
from ._contract import DownsampleStage, HierarchicalBackbone, drop_path_rates, stage_sizes
from ._factory import create_backbone
from ._linear_mixers import (
    GlobalMixerBlock,
    expand_attn_types,
    fit_resolution_tables,
    linear_cfg,
    linear_default_cfgs,
    make_mixer,
    mixer_no_weight_decay,
    swin_window_size,
)

__all__ = ["LinearSwin"]


class LinearSwin(HierarchicalBackbone):
    """Swin with a global linear-cost mixer in the blocks ``attn_type`` selects, with the timm model contract."""

    def __init__(
        self,
        mixer: str = "agent",
        attn_type: str = "AAAB",
        agent_num: tuple[int, ...] = (9, 16, 49, 49),
        img_size: int | tuple[int, int] = 224,
        embed_dim: int = 96,
        depths: tuple[int, ...] = (2, 2, 6, 2),
        num_heads: tuple[int, ...] = (3, 6, 12, 24),
        window_size: int | None = None,
        mlp_ratio: float = 4.0,
        in_chans: int = 3,
        num_classes: int = 1000,
        global_pool: str = "avg",
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
    ):
        super().__init__(num_classes, in_chans, global_pool, drop_rate)
        self.stem = nn.Identity()
        uses_mixer = expand_attn_types(attn_type, depths)
        sizes = stage_sizes(img_size, len(depths))
        window_size = window_size or swin_window_size(mixer, img_size)
        dpr = drop_path_rates(drop_path_rate, depths)
        stages, self.feature_info = [], []
        for i, depth in enumerate(depths):
            dim = embed_dim * 2**i
            downsample = swin_downsample(i, in_chans, dim)
            blocks = []
            for j in range(depth):
                if uses_mixer[i][j]:
                    attn = make_mixer(mixer, dim, num_heads[i], sizes[i], agent_num[i])
                    blocks.append(GlobalMixerBlock(dim, attn, mlp_ratio, dpr[i][j]))
                else:
                    blocks.append(
                        SwinWindowBlock(
                            dim,
                            sizes[i],
                            num_heads[i],
                            window_size=window_size,
                            shift_size=0 if j % 2 == 0 else window_size // 2,
                            mlp_ratio=mlp_ratio,
                            drop_path=dpr[i][j],
                        )  # fmt: skip
                    )
            stages.append(DownsampleStage(downsample, blocks, channels_last_blocks=True, downsample_channels_last=True))
            self.feature_info.append(dict(num_chs=dim, reduction=4 * 2**i, module=f"stages.{i}"))
        self.stages = nn.Sequential(*stages)
        self.norm = LayerNorm2d(dim, eps=1e-5)  # the official final norm is nn.LayerNorm (eps 1e-5), not timm's 1e-6
        self.build_head(dim)
        self.apply(self._init_weights)

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        return mixer_no_weight_decay(self)


def _official_key(key: str) -> str:
    key = re.sub(r"^patch_embed\.", "stages.0.downsample.", key)
    key = re.sub(r"^layers\.(\d+)\.blocks\.", r"stages.\1.blocks.", key)
    return re.sub(r"^layers\.(\d+)\.downsample\.", lambda m: f"stages.{int(m.group(1)) + 1}.downsample.", key)


def _official_item(key: str, value: torch.Tensor) -> tuple[str, torch.Tensor] | None:
    if key.endswith(("relative_position_index", "attn_mask")):  # rebuilt by the window blocks
        return None
    return _official_key(key), value


def checkpoint_filter_fn(state_dict: dict, model: LinearSwin) -> dict[str, torch.Tensor]:
    """Load an official (Swin-repo layout, weights under ``'model'``) or vitzoo checkpoint into ``model``.

    Index and mask buffers are dropped (rebuilt), merges move to the next stage, and Agent's row/column bias tables
    and FLatten's positional encodings are resized when the checkpoint was trained at another resolution than the
    model's ``img_size``. A mismatch raises :class:`vitzoo.hub.CheckpointError`.
    """
    return convert_checkpoint(
        state_dict, model, ("patch_embed.", "layers."), _official_item, lambda sd: fit_resolution_tables(sd, model)
    )


def _create(variant: str, pretrained: bool = False, **kwargs) -> LinearSwin:
    return create_backbone(LinearSwin, variant, pretrained, checkpoint_filter_fn, **kwargs)


default_cfgs = linear_default_cfgs(
    {
        f"vitzoo_{mixer}_swin_{size}": linear_cfg(mixer, "stages.0.downsample.proj")
        for mixer in ("agent", "inline", "flatten")
        for size in "tsb"
    }
)

_T = dict(embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24))
_S = dict(embed_dim=96, depths=(2, 2, 18, 2), num_heads=(3, 6, 12, 24))
_B = dict(embed_dim=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32))


@register_model
def vitzoo_agent_swin_t(pretrained: bool = False, **kwargs) -> LinearSwin:
    model_args = dict(mixer="agent", attn_type="AAAB", **_T)
    return _create("vitzoo_agent_swin_t", pretrained, **dict(model_args, **kwargs))


@register_model
def vitzoo_agent_swin_s(pretrained: bool = False, **kwargs) -> LinearSwin:
    model_args = dict(mixer="agent", attn_type="AABB", **_S)
    return _create("vitzoo_agent_swin_s", pretrained, **dict(model_args, **kwargs))


@register_model
def vitzoo_agent_swin_b(pretrained: bool = False, **kwargs) -> LinearSwin:
    model_args = dict(mixer="agent", attn_type="AAMB2", **_B)
    return _create("vitzoo_agent_swin_b", pretrained, **dict(model_args, **kwargs))


@register_model
def vitzoo_inline_swin_t(pretrained: bool = False, **kwargs) -> LinearSwin:
    model_args = dict(mixer="inline", attn_type="IIIS", **_T)
    return _create("vitzoo_inline_swin_t", pretrained, **dict(model_args, **kwargs))


@register_model
def vitzoo_inline_swin_s(pretrained: bool = False, **kwargs) -> LinearSwin:
    model_args = dict(mixer="inline", attn_type="IISS", **_S)
    return _create("vitzoo_inline_swin_s", pretrained, **dict(model_args, **kwargs))


@register_model
def vitzoo_inline_swin_b(pretrained: bool = False, **kwargs) -> LinearSwin:
    model_args = dict(mixer="inline", attn_type="IIMS2", **_B)
    return _create("vitzoo_inline_swin_b", pretrained, **dict(model_args, **kwargs))


@register_model
def vitzoo_flatten_swin_t(pretrained: bool = False, **kwargs) -> LinearSwin:
    model_args = dict(mixer="flatten", attn_type="LLSS", **_T)
    return _create("vitzoo_flatten_swin_t", pretrained, **dict(model_args, **kwargs))


@register_model
def vitzoo_flatten_swin_s(pretrained: bool = False, **kwargs) -> LinearSwin:
    model_args = dict(mixer="flatten", attn_type="LLSS", **_S)
    return _create("vitzoo_flatten_swin_s", pretrained, **dict(model_args, **kwargs))


@register_model
def vitzoo_flatten_swin_b(pretrained: bool = False, **kwargs) -> LinearSwin:
    model_args = dict(mixer="flatten", attn_type="LLSS", **_B)
    return _create("vitzoo_flatten_swin_b", pretrained, **dict(model_args, **kwargs))
