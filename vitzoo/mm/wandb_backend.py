"""mmengine's Weights & Biases backend without code snapshots: ``dict(type='VitzooWandbVisBackend', ...)``.

mmengine's ``WandbVisBackend.add_config`` also calls ``wandb.run.log_code``, which copies every ``*.py`` under the
working directory (a virtual environment inside the repository included: thousands of files) into the run. This
backend records the config only. Offline runs (``WANDB_MODE=offline``) need no network and write
``<save_dir>/wandb/offline-run-*``; ``wandb sync`` uploads them later.
"""

from __future__ import annotations

from mmengine.config import Config
from mmengine.registry import VISBACKENDS
from mmengine.visualization import WandbVisBackend
from mmengine.visualization.vis_backend import force_init_env

__all__ = ["VitzooWandbVisBackend"]


@VISBACKENDS.register_module()
class VitzooWandbVisBackend(WandbVisBackend):
    """``WandbVisBackend`` that logs the config without snapshotting source files."""

    @force_init_env
    def add_config(self, config: Config, **kwargs) -> None:
        allow_val_change = (self._init_kwargs or {}).get("allow_val_change", False)
        self._wandb.config.update(config.to_dict(), allow_val_change=allow_val_change)
