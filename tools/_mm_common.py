"""What tools/train.py and tools/test.py share: load a config, apply the command line, and fail fast on mistakes.

Checked before anything is built (each with a message that says what is wrong and what is valid):
- every ``--cfg-options`` key names an existing config entry (a typo would otherwise add a new, unused key);
- every dataset ``data_root`` / ``data_prefix`` folder of the dataloaders exists;
- a ``VitzooBackbone``'s output channels equal what the neck / decode head expects.
"""

from __future__ import annotations

import difflib
import os.path as osp

from mmengine.config import Config, DictAction

import vitzoo.mm  # noqa: F401  (mmcv-lite op stand-ins before any mm model code is imported)


class ConfigError(ValueError):
    """A config that cannot run: the message says which key and what is valid."""


def _check_option_keys(cfg: Config, options: dict) -> None:
    flat = cfg.to_dict()
    for key in options:
        node, path = flat, []
        for part in key.split("."):
            keys = list(node) if isinstance(node, dict) else []
            if isinstance(node, list) and part.isdigit() and int(part) < len(node):
                node, path = node[int(part)], [*path, part]
                continue
            if part not in keys:
                close = difflib.get_close_matches(part, keys, n=3)
                where = ".".join(path) or "the top level"
                raise ConfigError(
                    f"--cfg-options {key}: {where} has no key {part!r}"
                    + (f" (did you mean {', '.join(close)}?)" if close else "")
                    + f"; its keys are {sorted(keys)[:20]}"
                )
            node, path = node[part], [*path, part]


def _check_datasets(cfg: Config) -> None:
    for split in ("train_dataloader", "val_dataloader", "test_dataloader"):
        loader = cfg.get(split)
        dataset = loader.get("dataset") if loader else None
        while dataset is not None and "dataset" in dataset:  # RepeatDataset / ClassBalancedDataset wrappers
            dataset = dataset["dataset"]
        root = dataset.get("data_root") if dataset else None
        if root is not None and not osp.isdir(root):
            raise ConfigError(
                f"{split}: dataset folder {root!r} does not exist. Create the bundled demo data with "
                f"`python tools/make_demo_data.py --out data/demo`, or set data_root (e.g. "
                f"--cfg-options {split}.dataset.data_root=/path/to/data)"
            )


def _check_backbone_channels(cfg: Config) -> None:
    model = cfg.get("model", {})
    backbone = model.get("backbone", {})
    if backbone.get("type") != "VitzooBackbone":
        return
    import timm
    import torch

    out_indices = tuple(backbone.get("out_indices", (0, 1, 2, 3)))
    kwargs = dict(backbone.get("model_kwargs") or {})
    if backbone.get("pooled"):
        with torch.device("meta"):  # shapes only: nothing allocated or initialised
            width = timm.create_model(backbone["model_name"], num_classes=0, **kwargs).num_features
        expected = (model.get("head") or {}).get("in_channels")
        if expected is not None and expected != width:
            raise ConfigError(
                f"model.head.in_channels is {expected} but {backbone['model_name']}'s pooled features have {width} "
                f"channels: set model.head.in_channels={width}"
            )
        return
    with torch.device("meta"):
        info = timm.create_model(backbone["model_name"], features_only=True, out_indices=out_indices, **kwargs)
    channels = info.feature_info.channels()
    for consumer in ("neck", "decode_head"):
        part = model.get(consumer)
        parts = part if isinstance(part, list) else [part] if part else []
        for p in parts:
            expected = p.get("in_channels")
            if isinstance(expected, (list, tuple)) and list(expected) != list(channels):
                raise ConfigError(
                    f"model.{consumer}.in_channels is {list(expected)} but {backbone['model_name']} with out_indices "
                    f"{list(out_indices)} gives {channels}: set model.{consumer}.in_channels={channels}"
                )


def init_cpu_distributed(launcher: str) -> None:
    """Join the torchrun process group with gloo when there is no GPU.

    mmengine's ``pytorch`` launcher calls ``torch.cuda.set_device`` unconditionally, which fails on a CPU machine;
    it skips its own initialisation when a process group already exists.
    """
    import torch
    import torch.distributed as dist

    if launcher == "pytorch" and not torch.cuda.is_available() and not dist.is_initialized():
        dist.init_process_group(backend="gloo")


def load_config(path: str, options: list[str], work_dir: str | None, launcher: str) -> Config:
    """The config at ``path`` with the command-line overrides applied and checked."""
    if not osp.isfile(path):
        raise ConfigError(f"config file {path!r} not found")
    cfg = Config.fromfile(path)
    if options:
        action = DictAction(option_strings=["--cfg-options"], dest="cfg_options")
        namespace = type("Namespace", (), {})()
        action(None, namespace, options)
        parsed = namespace.cfg_options
        _check_option_keys(cfg, parsed)
        cfg.merge_from_dict(parsed)
    cfg.launcher = launcher
    cfg.work_dir = work_dir or cfg.get("work_dir") or osp.join("work_dirs", osp.splitext(osp.basename(path))[0])
    _check_datasets(cfg)
    _check_backbone_channels(cfg)
    if cfg.get("use_wandb"):
        _add_wandb(cfg)
    return cfg


def _add_wandb(cfg: Config) -> None:
    """``use_wandb=True``: log to Weights & Biases next to the local files (project from ``wandb_project``)."""
    backend = dict(
        type="VitzooWandbVisBackend",
        init_kwargs=dict(project=cfg.get("wandb_project", "vitzoo"), name=osp.basename(cfg.work_dir)),
    )
    visualizer = cfg.setdefault("visualizer", dict(type="Visualizer", vis_backends=[]))
    backends = list(visualizer.get("vis_backends") or [dict(type="LocalVisBackend")])
    visualizer["vis_backends"] = [*backends, backend]
