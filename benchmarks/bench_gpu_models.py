"""Model-level GPU throughput: inference and training steps of every family next to timm's Swin-T / ConvNeXt-T / ViT-S.

    python benchmarks/bench_gpu_models.py [--batch 64] [--iters 20] [--warmup 5] [--dtype bf16|fp32] [--out-dir DIR]

For each model: images/s of ``model(x)`` under ``torch.no_grad()`` and of a training step (forward, cross-entropy,
backward, AdamW step), eager, with ``--dtype`` autocast (bf16) or plain fp32, and the peak memory of the training
step. Timings are the median of ``--iters`` CUDA-event-timed calls after ``--warmup`` untimed ones. vitzoo models run
through whichever backends the op layer selects on the device (reference PyTorch where no fused backend exists), so
these numbers are the baseline that fused kernels are measured against. Writes ``gpu_models.json`` and
``gpu_models.md`` (with the device name) to ``--out-dir``.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import timm
import torch

import vitzoo  # noqa: F401  (registers the vitzoo_* models)

FAMILIES = [
    ("CSWin-T", "vitzoo_cswin_t", 224),
    ("HaloNet-H1", "vitzoo_halonet_h1", 256),
    ("BiFormer-T", "vitzoo_biformer_t", 224),
    ("Swin-VSA-T", "vitzoo_swin_vsa_t", 224),
    ("ViTAEv2-VSA-S", "vitzoo_vitaev2_vsa_s", 224),
    ("CrossFormer-T", "vitzoo_crossformer_t", 224),
    ("VAN-B2", "vitzoo_van_b2", 224),
    ("Agent-Swin-T", "vitzoo_agent_swin_t", 224),
    ("InLine-Swin-T", "vitzoo_inline_swin_t", 224),
    ("FLatten-Swin-T", "vitzoo_flatten_swin_t", 224),
    ("MALA-T", "vitzoo_mala_t", 224),
]
PEERS = [
    ("timm Swin-T", "swin_tiny_patch4_window7_224", 224),
    ("timm ConvNeXt-T", "convnext_tiny", 224),
    ("timm ViT-S/16", "vit_small_patch16_224", 224),
]


def _median_ms(fn, iters: int, warmup: int) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def measure(name: str, size: int, batch: int, iters: int, warmup: int, dtype: torch.dtype | None) -> dict:
    torch.manual_seed(0)
    model = timm.create_model(name, num_classes=1000).cuda()
    x = torch.randn(batch, 3, size, size, device="cuda")
    target = torch.randint(0, 1000, (batch,), device="cuda")
    autocast = torch.autocast("cuda", dtype=dtype or torch.float32, enabled=dtype is not None)

    def infer():
        with torch.no_grad(), autocast:
            model(x)

    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def train_step():
        with autocast:
            loss = torch.nn.functional.cross_entropy(model(x), target)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    model.eval()
    infer_ms = _median_ms(infer, iters, warmup)
    model.train()
    torch.cuda.reset_peak_memory_stats()
    train_ms = _median_ms(train_step, iters, warmup)
    return dict(
        model=name,
        img_size=size,
        params_m=round(sum(p.numel() for p in model.parameters()) / 1e6, 2),
        infer_img_s=round(batch * 1000 / infer_ms, 1),
        train_img_s=round(batch * 1000 / train_ms, 1),
        train_peak_mib=round(torch.cuda.max_memory_allocated() / 2**20),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--dtype", choices=["bf16", "fp32"], default="bf16")
    parser.add_argument("--out-dir", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        raise SystemExit("bench_gpu_models: needs a CUDA device")
    dtype = torch.bfloat16 if args.dtype == "bf16" else None
    device = torch.cuda.get_device_name()
    rows = []
    for label, name, size in FAMILIES + PEERS:
        try:
            row = dict(label=label, **measure(name, size, args.batch, args.iters, args.warmup, dtype))
        except Exception as err:  # one model's failure is a result to record, not a reason to lose the others
            row = dict(label=label, model=name, img_size=size, error=f"{type(err).__name__}: {err}"[:300])
        print(json.dumps(row), flush=True)
        rows.append(row)
        torch.cuda.empty_cache()
    meta = dict(device=device, torch=torch.__version__, batch=args.batch, dtype=args.dtype, mode="eager")
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "gpu_models.json").write_text(json.dumps(dict(meta=meta, rows=rows), indent=1) + "\n")
    lines = [
        f"# GPU model throughput ({device}, torch {torch.__version__}, batch {args.batch}, {args.dtype}, eager)",
        "",
        "| model | input | params (M) | inference img/s | training img/s | training peak MiB |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['label']} | {r['img_size']} | - | failed: {r['error']} | | |")
        else:
            lines.append(
                f"| {r['label']} | {r['img_size']} | {r['params_m']} | {r['infer_img_s']} | {r['train_img_s']} "
                f"| {r['train_peak_mib']} |"
            )
    (args.out_dir / "gpu_models.md").write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
