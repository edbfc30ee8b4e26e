"""What tools/get_flops.py and tools/benchmark.py share: a config's model without its dataset, and a synthetic batch.

The model is built from the config alone (no data folders needed) with random weights, or a checkpoint's weights
(``torch.load(weights_only=True)``); inputs are random images of a chosen size with the metadata each task's
``predict`` needs, so throughput and cost can be measured for any input size.
"""

from __future__ import annotations

import importlib

import torch
from _mm_common import ConfigError, _check_backbone_channels
from mmengine.config import Config

import vitzoo.mm  # noqa: F401  (op stand-ins and registrations before any mm model code runs)

TASKS = {"mmseg": "segmentation", "mmdet": "detection", "mmpretrain": "classification"}


def build_model(config: str, checkpoint: str | None = None, device: str = "cpu") -> tuple[Config, torch.nn.Module]:
    """The config's model in eval mode on ``device`` (random weights unless ``checkpoint`` is given)."""
    from mmengine.registry import init_default_scope

    cfg = Config.fromfile(config)
    scope = cfg.get("default_scope")
    if scope not in TASKS:
        raise ConfigError(f"{config}: default_scope must be one of {sorted(TASKS)}, got {scope!r}")
    _check_backbone_channels(cfg)
    init_default_scope(scope)
    model = importlib.import_module(f"{scope}.registry").MODELS.build(cfg.model)
    if checkpoint:
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
        model.load_state_dict(state.get("state_dict", state))
    return cfg, model.to(device).eval()


def synthetic_batch(cfg: Config, batch: int, height: int, width: int, device: str = "cpu") -> tuple[torch.Tensor, list]:
    """Normalised random images and the per-image metadata the task's ``predict`` reads."""
    task = TASKS[cfg.default_scope]
    meta = dict(img_shape=(height, width), ori_shape=(height, width), pad_shape=(height, width))
    if task == "segmentation":
        from mmseg.structures import SegDataSample

        samples = [SegDataSample(metainfo=meta) for _ in range(batch)]
    elif task == "detection":
        from mmdet.structures import DetDataSample

        meta.update(batch_input_shape=(height, width), scale_factor=(1.0, 1.0))
        samples = [DetDataSample(metainfo=meta) for _ in range(batch)]
    else:
        from mmpretrain.structures import DataSample

        samples = [DataSample(metainfo=meta) for _ in range(batch)]
    return torch.randn(batch, 3, height, width, device=device), samples
