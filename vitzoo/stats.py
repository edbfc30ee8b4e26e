"""Model statistics measured the same way everywhere: parameters and multiply-accumulates (GMACs).

Counting runs on the meta device, so even the 200M-parameter variants are measured without allocating weights.
MACs are ``torch.utils.flop_counter`` FLOPs / 2: convolutions, matmuls and attention are counted; norms,
activations and softmax are not, which is how the papers count "FLOPs".
"""

from __future__ import annotations

from dataclasses import dataclass

import timm
import torch
from torch.utils.flop_counter import FlopCounterMode


@dataclass(frozen=True)
class ModelStats:
    name: str
    params_m: float  # millions of parameters, classifier included
    gmacs: float  # at ``img_size``
    img_size: int
    reductions: tuple[int, ...]  # feature strides of the stages
    channels: tuple[int, ...]


def count_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_gmacs(model: torch.nn.Module, img_size: int | tuple[int, int] = 224, in_chans: int = 3) -> float:
    """GMACs of one forward pass of a single image, on whatever device ``model`` lives (meta works)."""
    h, w = (img_size, img_size) if isinstance(img_size, int) else img_size
    device = next(model.parameters()).device
    x = torch.empty(1, in_chans, h, w, device=device)
    was_training = model.training
    model.eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x)
    model.train(was_training)
    return counter.get_total_flops() / 2e9


def model_stats(name: str, img_size: int = 224, **kwargs) -> ModelStats:
    """Build ``name`` on the meta device and measure it."""
    with torch.device("meta"):
        model = timm.create_model(name, **kwargs)
    info = model.feature_info
    return ModelStats(
        name=name,
        params_m=count_params(model) / 1e6,
        gmacs=count_gmacs(model, img_size),
        img_size=img_size,
        reductions=tuple(f["reduction"] for f in info),
        channels=tuple(f["num_chs"] for f in info),
    )
