"""What every family's ``_create_<family>`` and ``_cfg`` share: timm's builder behind vitzoo's load guard."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch
import torch.nn as nn
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.models import build_model_with_cfg
from timm.models._builder import resolve_pretrained_cfg

from ..hub import guarded_load, require_fetchable
from ._contract import BackboneBase


def create_backbone(
    model_cls: type[nn.Module], variant: str, pretrained: bool, filter_fn: Callable, **kwargs
) -> nn.Module:
    """Build ``variant`` with timm's machinery: pretrained loading through ``filter_fn`` (under
    :func:`vitzoo.hub.guarded_load`) and ``features_only`` through ``forward_intermediates``."""
    out_indices = kwargs.pop("out_indices", (0, 1, 2, 3))
    # timm's factory arguments: build on ``device`` (e.g. "meta") and cast to ``dtype``, as timm's own models do
    device, dtype = kwargs.pop("device", None), kwargs.pop("dtype", None)
    url = None
    if pretrained:  # refuse before building when there is nothing to download; name the link a download uses
        cfg = resolve_pretrained_cfg(variant, kwargs.get("pretrained_cfg"), kwargs.get("pretrained_cfg_overlay"))
        url = require_fetchable(variant, cfg.to_dict())
    with guarded_load(variant, url), torch.device(device) if device is not None else contextlib.nullcontext():
        model = build_model_with_cfg(
            model_cls,
            variant,
            pretrained,
            pretrained_filter_fn=filter_fn,
            feature_cfg=dict(out_indices=out_indices, feature_cls="getter"),
            **kwargs,
        )
    # the model itself, or the one timm's features_only wrapper holds
    backbone = model if isinstance(model, BackboneBase) else getattr(model, "model", None)
    if isinstance(backbone, BackboneBase):
        backbone.check_contract()
    return model if dtype is None else model.to(dtype)


def imagenet_cfg(**kwargs) -> dict:
    """A pretrained cfg with the ImageNet-1k defaults these families share; families pass what differs."""
    return {
        "num_classes": 1000,
        "input_size": (3, 224, 224),
        "pool_size": (7, 7),
        "crop_pct": 0.875,
        "interpolation": "bicubic",
        "mean": IMAGENET_DEFAULT_MEAN,
        "std": IMAGENET_DEFAULT_STD,
        "classifier": "head",
        **kwargs,
    }
