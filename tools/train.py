"""Train an mmsegmentation / mmdetection / mmpretrain config with vitzoo backbones.

    python tools/train.py configs/ade20k/<config>.py [--work-dir DIR] [--resume [CKPT]] [--amp]
        [--cfg-options key=value ...] [--launcher none|pytorch]

Distributed: ``torchrun --nproc-per-node 2 tools/train.py CONFIG --launcher pytorch`` (gloo on CPU, nccl on GPU).
The config's ``default_scope`` picks the codebase; ``custom_imports=dict(imports=['vitzoo.mm'])`` registers the
backbone, the VWFormer head and :class:`vitzoo.mm.VitzooRunner` (atomic checkpoints, weights-only resume).
"""

from __future__ import annotations

import argparse
import os
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
from _mm_common import init_cpu_distributed, load_config  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Train a model with an OpenMMLab config")
    parser.add_argument("config", help="config file path")
    parser.add_argument("--work-dir", help="where logs and checkpoints go (default: work_dirs/<config name>)")
    parser.add_argument(
        "--resume",
        nargs="?",
        const="auto",
        default=None,
        help="resume from this checkpoint, or without a value from the latest one in the work dir",
    )
    parser.add_argument("--amp", action="store_true", help="automatic mixed precision (fp16 on GPU, bf16 on CPU)")
    parser.add_argument("--cfg-options", nargs="+", default=[], metavar="KEY=VALUE", help="override config keys")
    parser.add_argument("--launcher", choices=["none", "pytorch"], default="none", help="job launcher")
    parser.add_argument("--local_rank", "--local-rank", type=int, default=0)
    args = parser.parse_args(argv)
    os.environ.setdefault("LOCAL_RANK", str(args.local_rank))
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cfg = load_config(args.config, args.cfg_options, args.work_dir, args.launcher)
    init_cpu_distributed(args.launcher)
    if args.amp:
        import torch

        dtype = "float16" if torch.cuda.is_available() else "bfloat16"
        cfg.optim_wrapper.type = "AmpOptimWrapper"
        cfg.optim_wrapper.dtype = dtype
        if dtype == "float16":  # bfloat16 has float32's range and needs no loss scaling
            cfg.optim_wrapper.setdefault("loss_scale", "dynamic")
    if args.resume == "auto":
        cfg.resume, cfg.load_from = True, None
    elif args.resume is not None:
        cfg.resume, cfg.load_from = True, args.resume

    from mmengine.registry import RUNNERS

    runner = RUNNERS.build(cfg) if "runner_type" in cfg else _default_runner(cfg)
    runner.train()
    return 0


def _default_runner(cfg):
    from vitzoo.mm import VitzooRunner

    return VitzooRunner.from_cfg(cfg)


if __name__ == "__main__":
    sys.exit(main())
