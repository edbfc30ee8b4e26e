"""mmengine's Runner with atomic checkpoints that load with ``torch.load(weights_only=True)``.

``runner_type='VitzooRunner'`` (the configs set it) changes three things:

- **Atomic saves.** A checkpoint is written to ``<name>.tmp`` and renamed into place, so a run killed while saving
  leaves the previous checkpoint and ``last_checkpoint`` valid, never a truncated file.
- **Plain-data checkpoints.** mmengine stores its log history as ``HistoryBuffer`` objects (whose pickle calls
  ``getattr`` on the class) and numpy arrays / scalars, which ``weights_only=True`` (torch's default since 2.6)
  refuses. Instead of switching safety off, the runner writes those as tensors and Python numbers and rebuilds the
  buffers after loading, so resume and ``load_from`` go through torch's safe loader with no allowlist at all.
- **DDP on CPU.** ``torchrun ... --launcher pytorch`` trains with gloo on a machine without a GPU.
"""

from __future__ import annotations

import os
import os.path as osp
from typing import Any

import numpy as np
import torch
from mmengine.dist import master_only
from mmengine.hooks import Hook
from mmengine.logging.history_buffer import HistoryBuffer
from mmengine.registry import RUNNERS
from mmengine.runner import Runner

__all__ = ["VitzooRunner", "to_plain", "from_plain"]

_BUFFER_TAG = "__history_buffer__"


def to_plain(obj: Any) -> Any:
    """``obj`` with every ``HistoryBuffer``, numpy array and numpy scalar replaced by tensors / Python numbers."""
    if isinstance(obj, HistoryBuffer):
        log, count = obj.data
        return {_BUFFER_TAG: True, "log": torch.from_numpy(np.array(log)), "count": torch.from_numpy(np.array(count)),
                "max_length": obj.max_length}  # fmt: skip
    if isinstance(obj, np.ndarray):
        return torch.from_numpy(obj.copy())
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, dict):
        return type(obj)((k, to_plain(v)) for k, v in obj.items())
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_plain(v) for v in obj)
    return obj


def from_plain(obj: Any) -> Any:
    """Rebuild the ``HistoryBuffer`` objects that :func:`to_plain` flattened."""
    if isinstance(obj, dict):
        if obj.get(_BUFFER_TAG):
            return HistoryBuffer(obj["log"].numpy().tolist(), obj["count"].numpy().tolist(), obj["max_length"])
        return type(obj)((k, from_plain(v)) for k, v in obj.items())
    if isinstance(obj, list):
        return [from_plain(v) for v in obj]
    return obj


class _PlainCheckpointHook(Hook):
    """Flattens mmengine's log objects just before a save and rebuilds them right after a load."""

    priority = "LOWEST"  # after every other hook has added its part to the checkpoint

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        for key in ("meta", "message_hub"):
            if key in checkpoint:
                checkpoint[key] = to_plain(checkpoint[key])

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        if "message_hub" in checkpoint:
            checkpoint["message_hub"] = from_plain(checkpoint["message_hub"])


@RUNNERS.register_module()
class VitzooRunner(Runner):
    """mmengine's Runner with atomic, weights-only-loadable checkpoints (see the module docstring)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.register_hook(_PlainCheckpointHook())

    def wrap_model(self, model_wrapper_cfg, model):
        """DDP on CPU (gloo): mmengine passes ``device_ids=[LOCAL_RANK]``, which DDP accepts only for GPU modules."""
        if self.distributed and model_wrapper_cfg is None and not torch.cuda.is_available():
            from mmengine.model import MMDistributedDataParallel

            return MMDistributedDataParallel(
                module=model,
                device_ids=None,
                broadcast_buffers=False,
                find_unused_parameters=self.cfg.get("find_unused_parameters", False),
            )
        return super().wrap_model(model_wrapper_cfg, model)

    @master_only  # as mmengine's: only rank 0 writes (the others have no file to rename)
    def save_checkpoint(self, out_dir: str, filename: str, *args, **kwargs) -> None:
        partial = f"{filename}.tmp"
        super().save_checkpoint(out_dir, partial, *args, **kwargs)
        os.replace(osp.join(out_dir, partial), osp.join(out_dir, filename))
