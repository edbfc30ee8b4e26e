"""OpenMMLab integration: ``custom_imports=dict(imports=['vitzoo.mm'])`` in an mmseg / mmdet / mmpretrain config.

Importing this package (and only this package: ``import vitzoo`` does not) stands in for the compiled mmcv ops
that mmcv-lite lacks (:mod:`vitzoo.mm.mmcv_compat`), then registers :class:`VitzooBackbone` in the ``MODELS``
registry of each of mmsegmentation, mmdetection and mmpretrain that is installed, and in mmengine's root registries
(which every codebase's registry falls back to) :class:`VitzooRunner` (atomic checkpoints that load with
``weights_only=True``) and :class:`VitzooLayerDecayOptimWrapperConstructor` (layer-wise lr decay).
"""

from __future__ import annotations

import importlib

from . import mmcv_compat

mmcv_compat.install()

from .backbone import VitzooBackbone  # noqa: E402  (after the ops stand-in: mmseg/mmdet import mmcv.ops)
from .optim import VitzooLayerDecayOptimWrapperConstructor  # noqa: E402
from .runner import VitzooRunner  # noqa: E402
from .vwformer import VWFormerHead  # noqa: E402
from .wandb_backend import VitzooWandbVisBackend  # noqa: E402

__all__ = [
    "VitzooBackbone",
    "VitzooLayerDecayOptimWrapperConstructor",
    "VitzooRunner",
    "VitzooWandbVisBackend",
    "VWFormerHead",
    "REGISTERED_IN",
]

REGISTERED_IN: list[str] = []
for _package in ("mmseg", "mmdet", "mmpretrain"):
    try:
        _registry = importlib.import_module(f"{_package}.registry").MODELS
    except ImportError:
        continue
    _registry.register_module(name="VitzooBackbone", module=VitzooBackbone, force=True)
    REGISTERED_IN.append(_package)
