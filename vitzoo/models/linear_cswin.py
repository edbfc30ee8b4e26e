"""CSWin Transformer hosting Agent, InLine or FLatten attention: Agent-CSwin, InLine-CSwin, FLatten-CSwin.

Papers: Agent Attention (Han et al., ECCV 2024, arXiv:2312.08874), InLine (Han et al., NeurIPS 2024,
arXiv:2412.06590), FLatten Transformer (Han et al., ICCV 2023, arXiv:2308.00442); official code
https://github.com/LeapLabTHU/{Agent-Attention,InLine,FLatten-Transformer} (MIT). Host: :mod:`vitzoo.models.cswin`.

The CSWin network (conv stem and merges, cross-shaped stripe blocks, global last stage, LayerNorm head) with the
blocks that ``attn_type`` selects replaced by a global mixer. The official configs give those blocks a stripe as
wide as the stage map at 224 (``56-28-14-7``), which makes them one global branch with all heads; like CSWin's own
branches they add a 3x3 depthwise conv of V (CSWin's LePE; for Agent this is the conv the other hosts call
``dwc``, for FLatten it comes on top of FLatten's own 5x5 conv). InLine-CSwin predicts its residual kernels from the
mean of the block's input before the norm. The T variants are deeper in stages 2-3 than CSWin-T (2, 4, 18, 1).
"""

from __future__ import annotations

import re

import torch
import torch.nn as nn
from timm.models import register_model

from ..hub import convert_checkpoint
from ._contract import stage_sizes
from ._factory import create_backbone
from ._linear_mixers import (
    GlobalMixerBlock,
    expand_attn_types,
    fit_resolution_tables,
    linear_cfg,
    linear_default_cfgs,
    make_mixer,
    mixer_no_weight_decay,
)
from .cswin import CSWinTransformer, official_cswin_key

__all__ = ["LinearCSWin"]


class LinearCSWin(CSWinTransformer):
    """CSWin with a global linear-cost mixer in the blocks ``attn_type`` selects, with the timm model contract."""

    def __init__(
        self,
        mixer: str = "agent",
        attn_type: str = "AABB",
        agent_num: tuple[int, ...] = (9, 16, 49, 49),
        img_size: int | tuple[int, int] = 224,
        depths: tuple[int, ...] = (2, 4, 18, 1),
        **kwargs,
    ):
        # read by make_block, which the parent constructor calls
        self.mixer, self.agent_num = mixer, agent_num
        self.uses_mixer = expand_attn_types(attn_type, depths)
        self.stage_sizes = stage_sizes(img_size, len(depths))
        super().__init__(depths=depths, **kwargs)

    def make_block(
        self, stage: int, index: int, dim: int, num_heads: int, split_size: int, mlp_ratio: float, qkv_bias: bool,
        drop_path: float, global_attn: bool,
    ) -> nn.Module:  # fmt: skip
        if not self.uses_mixer[stage][index]:
            return super().make_block(
                stage, index, dim, num_heads, split_size, mlp_ratio, qkv_bias, drop_path, global_attn
            )
        size, agents = self.stage_sizes[stage], self.agent_num[stage]
        attn = make_mixer(self.mixer, dim, num_heads, size, agents, cswin_lepe=True)
        return GlobalMixerBlock(dim, attn, mlp_ratio, drop_path, context_from_input=self.mixer == "inline")

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        return mixer_no_weight_decay(self)


def checkpoint_filter_fn(state_dict: dict, model: LinearCSWin) -> dict[str, torch.Tensor]:
    """Load an official (weights under ``'model'``, or ``'state_dict_ema'``) or vitzoo checkpoint into ``model``.

    Keys follow CSWin's conversion; in the global-mixer blocks ``attns.0.*`` belongs to the mixer and CSWin's
    ``get_v`` becomes its depthwise conv. Resolution-tied tables are resized to the model's ``img_size``. A mismatch
    raises :class:`vitzoo.hub.CheckpointError`.
    """
    lepe_name = "lepe" if model.mixer == "flatten" else "dwc"

    def convert(key: str, value: torch.Tensor) -> tuple[str, torch.Tensor]:
        m = re.match(r"^stage(\d)\.(\d+)\.attns\.0\.(.*)$", key)
        if m and model.uses_mixer[int(m.group(1)) - 1][int(m.group(2))]:
            stage, block, rest = m.groups()
            rest = re.sub(r"^get_v\.", f"{lepe_name}.", rest)
            return f"stages.{int(stage) - 1}.blocks.{block}.attn.{rest}", value
        return official_cswin_key(key), value

    return convert_checkpoint(
        state_dict, model, ("stage1_conv_embed.",), convert, lambda sd: fit_resolution_tables(sd, model)
    )


def _create(variant: str, pretrained: bool = False, **kwargs) -> LinearCSWin:
    return create_backbone(LinearCSWin, variant, pretrained, checkpoint_filter_fn, **kwargs)


default_cfgs = linear_default_cfgs(
    {
        **{
            f"vitzoo_{mixer}_cswin_{size}": linear_cfg(mixer, "stages.0.downsample.conv")
            for mixer in ("agent", "inline")
            for size in "tsb"
        },
        "vitzoo_flatten_cswin_t": linear_cfg("flatten", "stages.0.downsample.conv"),
    }
)

_T = dict(embed_dim=64, depths=(2, 4, 18, 1), num_heads=(2, 4, 8, 16))
_S = dict(embed_dim=64, depths=(3, 6, 29, 2), num_heads=(2, 4, 8, 16))
_B = dict(embed_dim=96, depths=(3, 6, 29, 2), num_heads=(4, 8, 16, 32))


@register_model
def vitzoo_agent_cswin_t(pretrained: bool = False, **kwargs) -> LinearCSWin:
    model_args = dict(mixer="agent", attn_type="AABB", **_T)
    return _create("vitzoo_agent_cswin_t", pretrained, **dict(model_args, **kwargs))


@register_model
def vitzoo_agent_cswin_s(pretrained: bool = False, **kwargs) -> LinearCSWin:
    model_args = dict(mixer="agent", attn_type="AABB", **_S)
    return _create("vitzoo_agent_cswin_s", pretrained, **dict(model_args, **kwargs))


@register_model
def vitzoo_agent_cswin_b(pretrained: bool = False, **kwargs) -> LinearCSWin:
    model_args = dict(mixer="agent", attn_type="AABB", **_B)
    return _create("vitzoo_agent_cswin_b", pretrained, **dict(model_args, **kwargs))


@register_model
def vitzoo_inline_cswin_t(pretrained: bool = False, **kwargs) -> LinearCSWin:
    model_args = dict(mixer="inline", attn_type="IISS", **_T)
    return _create("vitzoo_inline_cswin_t", pretrained, **dict(model_args, **kwargs))


@register_model
def vitzoo_inline_cswin_s(pretrained: bool = False, **kwargs) -> LinearCSWin:
    model_args = dict(mixer="inline", attn_type="IISS", **_S)
    return _create("vitzoo_inline_cswin_s", pretrained, **dict(model_args, **kwargs))


@register_model
def vitzoo_inline_cswin_b(pretrained: bool = False, **kwargs) -> LinearCSWin:
    model_args = dict(mixer="inline", attn_type="IISS", **_B)
    return _create("vitzoo_inline_cswin_b", pretrained, **dict(model_args, **kwargs))


@register_model
def vitzoo_flatten_cswin_t(pretrained: bool = False, **kwargs) -> LinearCSWin:
    model_args = dict(mixer="flatten", attn_type="LLSS", **_T)
    return _create("vitzoo_flatten_cswin_t", pretrained, **dict(model_args, **kwargs))
