"""How inference cost grows with the input size: linear attention against softmax peers at 224, 512 and 1024.

Batch 1, fp32, eager, CPU, random weights. Each linear-cost model runs next to its softmax counterpart, in one run
with timm's Swin-T (softmax in 7x7 windows) and ConvNeXt-T (no attention):

- MAViT-T (MALA in stages 1-2) against ``mavit_t_all_softmax``, the same network with softmax in every stage;
- Agent- / InLine- / FLatten-Swin-T against timm's Swin-T;
- Agent- / InLine- / FLatten-PVT-T against ``pvt_t_softmax``, PVT-T itself (spatial-reduction softmax attention);
- Agent- / InLine-DeiT-T against timm's DeiT-T (global softmax);
- Agent- / InLine- / FLatten-CSwin-T against ``cswin_t_24181_softmax``, their host with CSWin's stripe attention in
  every block (the same depths 2-4-18-1, which differ from CSWin-T's), and vitzoo's CSWin-T.

The ``*_softmax`` twins are registered here. Writes ``results/cpu_resolution.json`` and ``results/cpu_resolution.md``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from timm.models import register_model

import vitzoo  # noqa: F401  (registers the vitzoo_* models with timm)
from vitzoo.benchmark import benchmark_model, environment, write_json_atomic, write_text_atomic
from vitzoo.models import linear_cswin, linear_pvt
from vitzoo.models.mala import _create_mala

# linear-cost model -> its softmax counterpart
COUNTERPARTS = {
    "vitzoo_mala_t": "mavit_t_all_softmax",
    "vitzoo_agent_swin_t": "swin_tiny_patch4_window7_224",
    "vitzoo_inline_swin_t": "swin_tiny_patch4_window7_224",
    "vitzoo_flatten_swin_t": "swin_tiny_patch4_window7_224",
    "vitzoo_agent_pvt_t": "pvt_t_softmax",
    "vitzoo_inline_pvt_t": "pvt_t_softmax",
    "vitzoo_flatten_pvt_t": "pvt_t_softmax",
    "vitzoo_agent_deit_t": "deit_tiny_patch16_224",
    "vitzoo_inline_deit_t": "deit_tiny_patch16_224",
    "vitzoo_agent_cswin_t": "cswin_t_24181_softmax",
    "vitzoo_inline_cswin_t": "cswin_t_24181_softmax",
    "vitzoo_flatten_cswin_t": "cswin_t_24181_softmax",
}
MODELS = list(
    dict.fromkeys(
        [
            *[m for pair in COUNTERPARTS.items() for m in pair],
            "vitzoo_cswin_t",
            "swin_tiny_patch4_window7_224",
            "convnext_tiny",
        ]
    )
)
BASELINE = "swin_tiny_patch4_window7_224"
# (image size, warmup, timed iterations): fewer iterations where one forward takes seconds
SIZES = [(224, 2, 5), (512, 1, 3), (1024, 1, 2)]
DEFAULT_OUT = Path(__file__).resolve().parent / "results"


@register_model
def mavit_t_all_softmax(pretrained: bool = False, **kwargs):
    """MAViT-T with global softmax attention in every stage: the softmax counterpart of ``vitzoo_mala_t``."""
    model_args = dict(embed_dims=(64, 128, 256, 512), depths=(2, 2, 6, 2), num_heads=(1, 2, 4, 8), linear_stages=())
    return _create_mala("vitzoo_mala_t", pretrained, **dict(model_args, **kwargs))


@register_model
def pvt_t_softmax(pretrained: bool = False, **kwargs):
    """PVT-T (v1, no class token): spatial-reduction softmax attention in every block, Agent-PVT-T's host."""
    return linear_pvt._create("vitzoo_agent_pvt_t", pretrained, **dict(dict(attn_type="BBBB"), **kwargs))


@register_model
def cswin_t_24181_softmax(pretrained: bool = False, **kwargs):
    """The CSWin host of Agent-/InLine-/FLatten-CSwin-T (depths 2-4-18-1) with CSWin's stripe attention throughout."""
    model_args = dict(attn_type="BBBB", embed_dim=64, depths=(2, 4, 18, 1), num_heads=(2, 4, 8, 16))
    return linear_cswin._create("vitzoo_agent_cswin_t", pretrained, **dict(model_args, **kwargs))


def markdown_table(results: list[dict], env: dict) -> str:
    by_key = {(r["model"], r["img_size"]): r for r in results}
    lines = [
        f"CPU, batch 1, fp32, eager, random weights, inference. {env['device_name']}, {env['cpu_count']} cores, "
        f"{env['threads']} threads; torch {env['torch']}, timm {env['timm']}, vitzoo {env['vitzoo']}; {env['date']}.",
        "",
        "Speed ratios are img/s over img/s (above 1: faster than the other model).",
        "",
        "| model | img | GMACs | latency ms (p50) | img/s | vs softmax counterpart | vs swin_tiny | vs 224 (latency) |",
        "|---|---:|---:|---:|---:|---|---:|---:|",
    ]
    for r in results:
        base = by_key.get((BASELINE, r["img_size"]))
        twin = by_key.get((COUNTERPARTS.get(r["model"]), r["img_size"]))
        small = by_key.get((r["model"], SIZES[0][0]))
        vs_base = f"{r['infer_img_s'] / base['infer_img_s']:.2f}x" if base else "-"
        vs_twin = f"{r['infer_img_s'] / twin['infer_img_s']:.2f}x ({twin['model']})" if twin else "-"
        growth = f"{r['infer_ms_p50'] / small['infer_ms_p50']:.1f}x" if small else "-"
        lines.append(
            f"| {r['model']} | {r['img_size']} | {r['gmacs']:.1f} | {r['infer_ms_p50']:.0f} | {r['infer_img_s']:.2f} "
            f"| {vs_twin} | {vs_base} | {growth} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", type=Path, default=DEFAULT_OUT, help="default: %(default)s")
    args = parser.parse_args(argv)
    env = environment("cpu")
    results = []
    for size, warmup, iters in SIZES:
        for name in MODELS:
            result = benchmark_model(name, 1, size, device="cpu", warmup=warmup, iters=iters, train=False)
            results.append(result)
            print(f"{name:30s} {size:5d}px  {result['infer_ms_p50']:9.0f} ms", flush=True)
    settings = {"batch_size": 1, "sizes": [dict(zip(("img_size", "warmup", "iters"), s, strict=True)) for s in SIZES]}
    write_json_atomic(
        args.out_dir / "cpu_resolution.json",
        {"meta": {**env, "args": settings, "counterparts": COUNTERPARTS}, "results": results},
    )
    write_text_atomic(args.out_dir / "cpu_resolution.md", markdown_table(results, env))
    print(markdown_table(results, env))
    return 0


if __name__ == "__main__":
    sys.exit(main())
