"""Layer-wise learning-rate decay for models with a ``VitzooBackbone``, as the VWFormer recipe trains its backbones.

``optim_wrapper=dict(constructor='VitzooLayerDecayOptimWrapperConstructor', paramwise_cfg=dict(decay_rate=0.9))``.

mmseg's ``LearningRateDecayOptimizerConstructor`` only knows ConvNeXt / BEiT / Swin parameter names; here the depth of
a parameter comes from the wrapped timm model's own ``group_matcher`` (the groups timm's fine-tuning layer decay
uses: the stem first, then each stage, or each block for the DeiT hosts). With ``n`` groups, group ``i`` trains at
``lr * decay_rate ** (n - i)`` and everything outside the backbone (heads, necks, output norms) at ``lr``: the
ConvNeXt ``stage_wise`` scheme of the VWFormer configs, with the stem and each stage one step apart.

No weight decay, as in timm and mmseg's constructor: 1-D parameters (norms, biases, layer scales) and the model's
``no_weight_decay()`` names (position tables, class tokens, attention biases).
"""

from __future__ import annotations

import torch.nn as nn
from mmengine.optim import DefaultOptimWrapperConstructor
from mmengine.registry import OPTIM_WRAPPER_CONSTRUCTORS
from timm.models import group_parameters

from .backbone import VitzooBackbone

__all__ = ["VitzooLayerDecayOptimWrapperConstructor"]


def _network_prefix(backbone: VitzooBackbone) -> str:
    """Where the timm model's own parameter names start inside the backbone (the feature wrapper adds a level)."""
    return "model." if backbone.pooled else "model.model."


def backbone_depths(backbone: VitzooBackbone) -> tuple[dict[str, int], int]:
    """``{parameter name inside the backbone: group index}`` and the number of groups."""
    network, prefix = backbone.network, _network_prefix(backbone)
    depth = group_parameters(network, network.group_matcher(coarse=False), reverse=True)
    return {prefix + name: i for name, i in depth.items()}, max(depth.values()) + 1


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class VitzooLayerDecayOptimWrapperConstructor(DefaultOptimWrapperConstructor):
    """Parameter groups with layer-wise lr decay over a ``VitzooBackbone`` (``paramwise_cfg=dict(decay_rate=r)``)."""

    def add_params(self, params: list[dict], module: nn.Module, **kwargs) -> None:
        rate = self.paramwise_cfg.get("decay_rate")
        unknown = set(self.paramwise_cfg) - {"decay_rate"}
        if rate is None or not 0 < rate <= 1 or unknown:
            raise ValueError(
                "VitzooLayerDecayOptimWrapperConstructor: paramwise_cfg must be dict(decay_rate=r) with 0 < r <= 1, "
                f"got {dict(self.paramwise_cfg)}"
            )
        backbone = getattr(module, "backbone", None)
        if not isinstance(backbone, VitzooBackbone):
            raise ValueError(
                "VitzooLayerDecayOptimWrapperConstructor needs a model whose .backbone is a VitzooBackbone, got "
                f"{type(backbone).__name__}"
            )
        depth, groups = backbone_depths(backbone)
        no_decay = {_network_prefix(backbone) + n for n in backbone.network.no_weight_decay()}
        merged: dict[tuple[float, float], list] = {}
        for name, param in module.named_parameters():
            if not param.requires_grad:
                continue
            inner = name.removeprefix("backbone.")
            level = depth.get(inner, groups) if name.startswith("backbone.") else groups
            decay = 0.0 if param.ndim <= 1 or inner in no_decay else self.base_wd
            merged.setdefault((self.base_lr * rate ** (groups - level), decay), []).append(param)
        for (lr, decay), group in sorted(merged.items(), key=lambda kv: kv[0]):
            params.append(dict(params=group, lr=lr, weight_decay=decay))
