"""CPU throughput of vitzoo models next to two timm peers (and, optionally, the official code), in one process.

Runs every model at 224x224 (HaloNets at their paper's 256x256, with timm's ``halonet_h1``, the same architecture,
as their reference), fp32, eager: inference at batch 1 and batch 8, training at batch 8 only (a training
step at batch 1 says little and would double the run time). Writes ``results/cpu_models.json`` (every number and
the environment) and ``results/cpu_models.md`` (the table for humans). ``make bench`` runs it.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from official_models import (
    OFFICIAL_NAMES,
    register_official_biformer,
    register_official_cswin,
    register_official_van,
    register_official_vitaev2_vsa,
)

import vitzoo  # noqa: F401  (registers the vitzoo_* models with timm)
from vitzoo.benchmark import benchmark_model, environment, write_json_atomic, write_text_atomic

MODELS = [
    "vitzoo_van_b0",
    "vitzoo_van_b2",
    "vitzoo_biformer_t",
    "vitzoo_biformer_s",
    "vitzoo_biformer_b",
    "vitzoo_cswin_t",
    "vitzoo_crossformer_t",
    "vitzoo_crossformer_pp_s",
    "vitzoo_halonet_h0",
    "vitzoo_halonet_h1",
    "vitzoo_vitaev2_vsa_s",
    "vitzoo_vitaev2_vsa_48m",
    "vitzoo_swin_vsa_t",
    "swin_tiny_patch4_window7_224",
    "convnext_tiny",
    "halonet_h1",
]
BASELINE = "swin_tiny_patch4_window7_224"
IMG_SIZE = 224
# HaloNet's blocks of 8 must tile every stage in timm's implementation: 256 is the smallest such size above 224
IMG_SIZES = {"vitzoo_halonet_h0": 256, "vitzoo_halonet_h1": 256, "halonet_h1": 256}
# no official code exists: compare with timm's implementation of the same architecture instead
SAME_ARCHITECTURE = {"vitzoo_halonet_h1": "halonet_h1"}
# (batch size, warmup, timed iterations, time training too). Sized so the whole run stays near 20 minutes on
# 2 cores: BiFormer-B at batch 8 is the slowest at a few seconds per training step.
RUNS = [
    (1, 3, 10, False),
    (8, 2, 5, True),
]
DEFAULT_OUT = Path(__file__).resolve().parent / "results"


def markdown_table(results: list[dict], env: dict) -> str:
    """Render ``results`` as a markdown table with each model's inference throughput relative to the baseline."""
    baseline = {r["batch_size"]: r["infer_img_s"] for r in results if r["model"] == BASELINE}
    official = {(r["model"], r["batch_size"]): r for r in results}

    def num(value: float | None, fmt: str) -> str:
        return "-" if value is None else format(value, fmt)

    lines = [
        f"CPU, {IMG_SIZE}x{IMG_SIZE} unless the img column says otherwise, fp32, eager, random weights. "
        f"{env['device_name']}, {env['cpu_count']} cores, "
        f"{env['threads']} threads; torch {env['torch']}, timm {env['timm']}, vitzoo {env['vitzoo']}; {env['date']}.",
        "",
        "| model | img | batch | params (M) | GMACs | infer img/s | train img/s | infer latency ms (p50) "
        f"| infer vs {BASELINE.split('_patch')[0]} | infer / train vs official (HaloNet: vs timm's halonet_h1) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        ref = baseline.get(r["batch_size"])
        ratio = f"{r['infer_img_s'] / ref:.2f}x" if ref else "-"
        reference = OFFICIAL_NAMES.get(r["model"]) or SAME_ARCHITECTURE.get(r["model"])
        off = official.get((reference, r["batch_size"]))
        vs_official = "-"
        if off:
            vs_official = f"{r['infer_img_s'] / off['infer_img_s']:.2f}x"
            if r["train_img_s"] and off["train_img_s"]:
                vs_official += f" / {r['train_img_s'] / off['train_img_s']:.2f}x"
        lines.append(
            f"| {r['model']} | {r['img_size']} | {r['batch_size']} | {r['params_m']:.2f} | {r['gmacs']:.2f} "
            f"| {r['infer_img_s']:.1f} "
            f"| {num(r['train_img_s'], '.2f')} | {r['infer_ms_p50']:.1f} | {ratio} | {vs_official} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", type=Path, default=DEFAULT_OUT, help="default: %(default)s")
    parser.add_argument("--official-van", type=Path, help="a VAN-Classification checkout to compare against")
    parser.add_argument("--official-biformer", type=Path, help="a BiFormer checkout to compare against")
    parser.add_argument("--official-cswin", type=Path, help="a CSWin-Transformer checkout to compare against")
    parser.add_argument("--official-vsa", type=Path, help="a ViTAE-VSA checkout to compare against")
    args = parser.parse_args(argv)
    models = list(MODELS)
    for repo, register, family in (
        (args.official_van, register_official_van, "van"),
        (args.official_biformer, register_official_biformer, "biformer"),
        (args.official_cswin, register_official_cswin, "cswin"),
        (args.official_vsa, register_official_vitaev2_vsa, "vitaev2_vsa"),
    ):
        if repo is not None:
            register(repo)
            models += [OFFICIAL_NAMES[m] for m in MODELS if m.startswith(f"vitzoo_{family}_")]

    env = environment("cpu")
    if env["loadavg_1m"] is not None and env["loadavg_1m"] > 1.0:
        print(
            f"warning: 1-minute load average is {env['loadavg_1m']:.2f}; other processes on these cores will slow "
            "every model down, and not evenly",
            file=sys.stderr,
        )
    results = []
    for batch_size, warmup, iters, train in RUNS:
        for name in models:
            size = IMG_SIZES.get(name, IMG_SIZE)
            result = benchmark_model(name, batch_size, size, device="cpu", warmup=warmup, iters=iters, train=train)
            results.append(result)
            print(
                f"{name:30s} bs{batch_size}  infer {result['infer_img_s']:7.1f} img/s"
                + (f"  train {result['train_img_s']:6.2f} img/s" if train else ""),
                flush=True,
            )
    env["loadavg_1m_at_end"] = os.getloadavg()[0]
    settings = {
        "img_size": IMG_SIZE,
        "img_size_overrides": IMG_SIZES,
        "runs": [dict(zip(("batch_size", "warmup", "iters", "train"), r, strict=True)) for r in RUNS],
    }
    write_json_atomic(
        args.out_dir / "cpu_models.json",
        {"meta": {**env, "args": settings, "official": OFFICIAL_NAMES}, "results": results},
    )
    write_text_atomic(args.out_dir / "cpu_models.md", markdown_table(results, env))
    print(markdown_table(results, env))
    return 0


if __name__ == "__main__":
    sys.exit(main())
