"""Parameters and multiply-accumulates of a config's whole model (backbone + neck + heads) at an input size.

    python tools/get_flops.py CONFIG [--shape H [W]] [--json]

MACs are counted as in ``vitzoo.stats`` (``torch.utils.flop_counter`` FLOPs / 2: convolutions, matmuls and
attention; not norms, activations, softmax, RoIAlign or NMS), which is what the papers and mm's own get_flops call
"FLOPs". One image, ``predict`` mode (detectors include their RPN and the RoI heads on the kept proposals), random
weights; no dataset is needed.
"""

from __future__ import annotations

import argparse
import json
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))

import torch  # noqa: E402
from _mm_model import build_model, synthetic_batch  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402


def count(config: str, height: int, width: int) -> dict:
    """``{params_m, backbone_params_m, gmacs, backbone_gmacs, shape}`` of the config's model."""
    torch.manual_seed(0)
    cfg, model = build_model(config)
    images, samples = synthetic_batch(cfg, 1, height, width)
    with torch.no_grad(), FlopCounterMode(display=False) as whole:
        model(images, samples, mode="predict")
    with torch.no_grad(), FlopCounterMode(display=False) as backbone:
        model.backbone(images)
    return dict(
        config=osp.basename(config),
        shape=[height, width],
        params_m=round(sum(p.numel() for p in model.parameters()) / 1e6, 3),
        backbone_params_m=round(sum(p.numel() for p in model.backbone.parameters()) / 1e6, 3),
        gmacs=round(whole.get_total_flops() / 2e9, 3),
        backbone_gmacs=round(backbone.get_total_flops() / 2e9, 3),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config")
    parser.add_argument("--shape", type=int, nargs="+", default=[512], help="input height [width] (default 512)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    args = parser.parse_args(argv)
    if len(args.shape) not in (1, 2):
        parser.error(f"--shape takes H or H W, got {args.shape}")
    height, width = args.shape[0], args.shape[-1]
    result = count(args.config, height, width)
    if args.json:
        print(json.dumps(result))
    else:
        print(f"config    {result['config']}\ninput     3x{height}x{width}")
        print(f"params    {result['params_m']:.2f} M (backbone {result['backbone_params_m']:.2f} M)")
        print(f"GMACs     {result['gmacs']:.2f} (backbone {result['backbone_gmacs']:.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
