"""Model statistics measured the same way everywhere: parameters and multiply-accumulates (GMACs).

Counting runs on the meta device, so even the 200M-parameter variants are measured without allocating weights.
MACs are ``torch.utils.flop_counter`` FLOPs / 2: convolutions, matmuls and attention are counted; norms,
activations and softmax are not, which is how the papers count "FLOPs".

Counting every model takes minutes, so :func:`model_stats` first reads ``_model_stats.json`` beside this file: the
measurements :func:`write_stats_table` made, valid only while the fingerprint stored with them (a hash of every
source file of this package and the torch / timm versions) equals the current one. Any change to the code makes
the table stale, and then each model is measured again, as without it.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import timm
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

from ._io import write_text_atomic

# Ops whose outputs timm's model cards count as "activations" (fvcore's convention: conv and matmul outputs).
_ACTIVATION_OPS = {
    torch.ops.aten.convolution.default,
    torch.ops.aten.mm.default,
    torch.ops.aten.addmm.default,
    torch.ops.aten.bmm.default,
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu.default,
    torch.ops.aten._scaled_dot_product_efficient_attention.default,
    torch.ops.aten._scaled_dot_product_flash_attention.default,
}


@dataclass(frozen=True)
class ModelStats:
    name: str
    params_m: float  # millions of parameters, classifier included
    gmacs: float  # at ``img_size``
    activations_m: float | None  # millions of conv / matmul / attention outputs at ``img_size`` (None: not counted)
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


class _ActivationCounter(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func in _ACTIVATION_OPS:
            first = out[0] if isinstance(out, (tuple, list)) else out
            self.count += first.numel()
        return out


def count_activations(model: torch.nn.Module, img_size: int | tuple[int, int] = 224, in_chans: int = 3) -> float:
    """Millions of output elements of convolutions, matmuls and attention in one forward pass of one image."""
    h, w = (img_size, img_size) if isinstance(img_size, int) else img_size
    x = torch.empty(1, in_chans, h, w, device=next(model.parameters()).device)
    was_training = model.training
    model.eval()
    with _ActivationCounter() as counter, torch.no_grad():
        model(x)
    model.train(was_training)
    return counter.count / 1e6


STATS_TABLE = Path(__file__).with_name("_model_stats.json")


def source_fingerprint() -> str:
    """Hash of this package's Python sources and the torch / timm versions: what the measurements depend on."""
    root = Path(__file__).parent
    digest = hashlib.sha256(f"torch {torch.__version__} timm {timm.__version__}".encode())
    for path in sorted(root.rglob("*.py")):
        digest.update(path.relative_to(root).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def _table_key(name: str, img_size: int) -> str:
    return f"{name}@{img_size}"


@functools.cache
def _stats_table() -> dict[str, dict]:
    """The stored measurements when they were made from the current sources, else nothing."""
    try:
        table = json.loads(STATS_TABLE.read_text())
    except (OSError, ValueError):
        return {}
    return table.get("models", {}) if table.get("fingerprint") == source_fingerprint() else {}


def _from_table(entry: dict) -> ModelStats:
    return ModelStats(**{**entry, "reductions": tuple(entry["reductions"]), "channels": tuple(entry["channels"])})


def write_stats_table(sizes: dict[str, tuple[int, ...]], path: Path = STATS_TABLE) -> None:
    """Measure each model at each of its sizes (activations included) and store the table with the fingerprint."""
    models = {}
    for name, name_sizes in sorted(sizes.items()):
        for size in sorted(set(name_sizes)):
            models[_table_key(name, size)] = dataclasses.asdict(_model_stats(name, size, True, ()))
    write_text_atomic(path, json.dumps({"fingerprint": source_fingerprint(), "models": models}, indent=1) + "\n")
    _stats_table.cache_clear()


def model_stats(name: str, img_size: int = 224, activations: bool = True, **kwargs) -> ModelStats:
    """Build ``name`` on the meta device and measure it; ``activations=False`` skips that (second) traced pass.

    Cached per process (the result is immutable and a model's cost does not change while it runs): the CLI's table
    and JSON listings, the doc generators and the tests ask for the same models several times. The cache key is
    normalised, so ``model_stats(n)`` and ``model_stats(n, img_size=224)`` share one entry.
    """
    if not kwargs:
        stored = _stats_table().get(_table_key(name, img_size))
        if stored is not None:
            found = _from_table(stored)
            return found if activations else dataclasses.replace(found, activations_m=None)
    return _model_stats(name, img_size, activations, tuple(sorted(kwargs.items())))


@functools.cache
def _model_stats(name: str, img_size: int, activations: bool, kwargs: tuple) -> ModelStats:
    kwargs = dict(kwargs)
    with torch.device("meta"):
        model = timm.create_model(name, **kwargs)
    info = model.feature_info
    return ModelStats(
        name=name,
        params_m=count_params(model) / 1e6,
        gmacs=count_gmacs(model, img_size),
        activations_m=count_activations(model, img_size) if activations else None,
        img_size=img_size,
        reductions=tuple(f["reduction"] for f in info),
        channels=tuple(f["num_chs"] for f in info),
    )
