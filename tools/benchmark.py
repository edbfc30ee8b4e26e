"""Inference throughput of a config's whole model (segment / detect / classify), on random images of a given size.

    python tools/benchmark.py CONFIG [CHECKPOINT] [--shape H [W]] [--batch 1] [--iters 20] [--warmup 5]
                              [--device cpu|cuda] [--amp] [--json]

Times ``predict`` (decode-head upsampling, detector post-processing and NMS included) with the timing loop of
``vitzoo.benchmark``: ``--warmup`` untimed calls, then every call synchronised on CUDA; peak memory on CUDA. No
dataset is needed. Prints images/s and milliseconds per image (median over the timed calls).
"""

from __future__ import annotations

import argparse
import json
import os.path as osp
import statistics
import sys

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))

import torch  # noqa: E402
from _mm_model import build_model, synthetic_batch  # noqa: E402

from vitzoo.benchmark import time_steps  # noqa: E402


def measure(
    config: str,
    checkpoint: str | None = None,
    shape: tuple[int, int] = (512, 512),
    batch: int = 1,
    iters: int = 20,
    warmup: int = 5,
    device: str = "cpu",
    amp: bool = False,
) -> dict:
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("benchmark: --device cuda asked for, but CUDA is not available")
    torch.manual_seed(0)
    cfg, model = build_model(config, checkpoint, device)
    images, samples = synthetic_batch(cfg, batch, *shape, device=device)

    def predict() -> None:
        with torch.no_grad(), torch.autocast(device, dtype=torch.bfloat16, enabled=amp):
            model(images, samples, mode="predict")

    times = time_steps(predict, torch.device(device), warmup, iters, osp.basename(config), progress=False)
    seconds = statistics.median(times)
    result = dict(
        config=osp.basename(config),
        device=torch.cuda.get_device_name() if device == "cuda" else "cpu",
        shape=list(shape),
        batch=batch,
        amp_bf16=amp,
        iters=iters,
        images_per_s=round(batch / seconds, 3),
        ms_per_image=round(1000 * seconds / batch, 3),
    )
    if device == "cuda":
        result["peak_memory_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config")
    parser.add_argument("checkpoint", nargs="?", help="weights to load (default: random; speed does not depend on it)")
    parser.add_argument("--shape", type=int, nargs="+", default=[512], help="input height [width] (default 512)")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--iters", type=int, default=20, help="timed calls")
    parser.add_argument("--warmup", type=int, default=5, help="untimed calls first")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--amp", action="store_true", help="bfloat16 autocast")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    if len(args.shape) not in (1, 2) or args.batch < 1 or args.iters < 1 or args.warmup < 0:
        parser.error("--shape takes H or H W; --batch and --iters must be >= 1 and --warmup >= 0")
    shape = (args.shape[0], args.shape[-1])
    result = measure(args.config, args.checkpoint, shape, args.batch, args.iters, args.warmup, args.device, args.amp)
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{result['config']} on {result['device']}, batch {args.batch} at {shape[0]}x{shape[1]}: "
              f"{result['images_per_s']:.2f} images/s, {result['ms_per_image']:.1f} ms/image")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
