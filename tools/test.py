"""Evaluate a trained checkpoint with an mmsegmentation / mmdetection / mmpretrain config.

    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--cfg-options key=value ...] [--launcher none|pytorch]

The checkpoint is read with ``torch.load(weights_only=True)`` (the vitzoo runner writes plain data); the metric
is the config's ``test_evaluator`` (mIoU for ADE20K, COCO box / mask AP, top-1 accuracy).
"""

from __future__ import annotations

import argparse
import os
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
from _mm_common import ConfigError, init_cpu_distributed, load_config  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Test a checkpoint with an OpenMMLab config")
    parser.add_argument("config", help="config file path")
    parser.add_argument("checkpoint", help="checkpoint file")
    parser.add_argument("--work-dir", help="where the test logs go (default: work_dirs/<config name>)")
    parser.add_argument("--cfg-options", nargs="+", default=[], metavar="KEY=VALUE", help="override config keys")
    parser.add_argument("--launcher", choices=["none", "pytorch"], default="none", help="job launcher")
    parser.add_argument("--local_rank", "--local-rank", type=int, default=0)
    args = parser.parse_args(argv)
    os.environ.setdefault("LOCAL_RANK", str(args.local_rank))
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not osp.isfile(args.checkpoint):
        raise ConfigError(f"checkpoint {args.checkpoint!r} not found")
    cfg = load_config(args.config, args.cfg_options, args.work_dir, args.launcher)
    init_cpu_distributed(args.launcher)
    cfg.load_from, cfg.resume = args.checkpoint, False
    from mmengine.registry import RUNNERS

    from vitzoo.mm import VitzooRunner

    runner = RUNNERS.build(cfg) if "runner_type" in cfg else VitzooRunner.from_cfg(cfg)
    metrics = runner.test()
    print(metrics)
    return 0


if __name__ == "__main__":
    sys.exit(main())
