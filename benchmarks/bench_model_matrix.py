"""Model-level throughput matrix: every family and timm's Swin-T / ConvNeXt-T / ViT-S, across execution settings.

    python benchmarks/bench_model_matrix.py [--device cuda|cpu] [--settings eager-bf16 compile-bf16 eager-fp32 ...]
                                            [--backends auto reference] [--compile-backends auto reference]
                                            [--batch N] [--iters N] [--warmup N] [--no-train] [--only TEXT]
                                            [--peers TEXT ...] [--peers-first] [--max-seconds S] [--out-dir DIR]

A setting is ``<eager|compile>-<fp32|bf16>[-cl]``: eager or ``torch.compile`` (default mode), plain fp32 or bf16
autocast, and ``-cl`` for channels_last inputs and weights. For each setting and model it measures images/s of
``model(x)`` under ``torch.no_grad()`` and of a training step (forward, cross-entropy, backward, AdamW step), median
of ``--iters`` after ``--warmup`` untimed calls (which absorb compilation), and the training step's peak memory on
CUDA. vitzoo models run once per ``--backends`` entry: ``auto`` (the op layer's automatic choice: Triton kernels on
CUDA) and ``reference`` (every op forced to plain PyTorch), so the ratio of the two is what the fused kernels buy in
the whole model (``--compile-backends`` narrows the list for the ``compile-*`` settings, whose compilation is the
expensive part). Writes ``<device>_model_matrix.json``, ``.md`` and ``.png`` to ``--out-dir``; the JSON and Markdown
are rewritten after every model (``"complete": false`` until the end), so a run killed from outside keeps what it
measured. ``--max-seconds`` starts no new measurement once that much time has passed and records the ones it left
out as rows whose ``error`` says so; ``--peers-first`` measures the timm peers before the families in each setting,
so a time-limited run still has its baselines.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import time
from pathlib import Path

import timm
import torch

import vitzoo  # noqa: F401  (registers the vitzoo_* models)
from vitzoo.benchmark import environment, median_ms, write_json_atomic, write_text_atomic
from vitzoo.ops import use_backend

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

DEFAULT_SETTINGS = {"cuda": ("eager-bf16", "compile-bf16", "eager-fp32", "eager-bf16-cl"), "cpu": ("eager-fp32",)}
DEFAULTS = ", ".join(f"{' '.join(v)} on {k}" for k, v in DEFAULT_SETTINGS.items())


def parse_setting(text: str) -> dict:
    parts = text.split("-")
    if len(parts) not in (2, 3) or parts[0] not in ("eager", "compile") or parts[1] not in ("fp32", "bf16"):
        raise argparse.ArgumentTypeError(f"setting must be <eager|compile>-<fp32|bf16>[-cl], got {text!r}")
    if len(parts) == 3 and parts[2] != "cl":
        raise argparse.ArgumentTypeError(f"the optional third part of a setting is 'cl', got {text!r}")
    return {
        "name": text,
        "compile": parts[0] == "compile",
        "bf16": parts[1] == "bf16",
        "channels_last": len(parts) == 3,
    }


def measure(name: str, size: int, setting: dict, args) -> dict:
    torch.manual_seed(0)
    device = args.device
    memory_format = torch.channels_last if setting["channels_last"] else torch.contiguous_format
    model = timm.create_model(name, num_classes=1000).to(device, memory_format=memory_format)
    x = torch.randn(args.batch, 3, size, size, device=device).to(memory_format=memory_format)
    target = torch.randint(0, 1000, (args.batch,), device=device)
    runner = torch.compile(model) if setting["compile"] else model
    autocast = torch.autocast(device, dtype=torch.bfloat16, enabled=setting["bf16"])
    row = dict(model=name, img_size=size, params_m=round(sum(p.numel() for p in model.parameters()) / 1e6, 2))

    def infer():
        with torch.no_grad(), autocast:
            runner(x)

    model.eval()
    row["infer_img_s"] = round(args.batch * 1000 / median_ms(infer, device, args.iters, args.warmup), 1)
    if args.no_train:
        return row
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def train_step():
        with autocast:
            loss = torch.nn.functional.cross_entropy(runner(x), target)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    model.train()
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    row["train_img_s"] = round(args.batch * 1000 / median_ms(train_step, device, args.iters, args.warmup), 1)
    if device == "cuda":
        row["train_peak_mib"] = round(torch.cuda.max_memory_allocated() / 2**20)
    return row


def markdown(result: dict) -> str:
    env = result["environment"]
    lines = [
        f"# Model throughput matrix: {env['device_name']}",
        "",
        f"batch {result['batch']}, median of {result['iters']} after {result['warmup']} warm-up; torch {env['torch']}, "
        f"timm {env['timm']}. `auto / reference` divides the auto-backend throughput by the reference-backend one "
        "(what the fused kernels buy in the whole model); `x Swin-T` divides by timm's Swin-T in the same setting.",
        "",
        *([] if result.get("complete", True) else ["**Incomplete**: the run was stopped before its last model.", ""]),
        "| setting | model | backends | input | infer img/s | train img/s | train peak MiB | infer auto / reference "
        "| train auto / reference | infer x Swin-T | train x Swin-T |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    rows = result["rows"]

    def find(setting, model, backends):
        match = [r for r in rows if r["setting"] == setting and r["model"] == model and r["backends"] == backends]
        return match[0] if match else {}

    def ratio(a, b):
        return f"{a / b:.2f}" if isinstance(a, (int, float)) and isinstance(b, (int, float)) and b else "-"

    for r in rows:
        if "error" in r:
            what = r["error"] if r["error"].startswith("not run") else f"failed: {r['error']}"
            lines.append(f"| {r['setting']} | {r['label']} | {r['backends']} | {r['img_size']} | {what} | | | | | | |")
            continue
        ref = find(r["setting"], r["model"], "reference") if r["backends"] == "auto" else {}
        swin = find(r["setting"], "swin_tiny_patch4_window7_224", "auto")
        lines.append(
            f"| {r['setting']} | {r['label']} | {r['backends']} | {r['img_size']} | {r['infer_img_s']} | "
            f"{r.get('train_img_s', '-')} | {r.get('train_peak_mib', '-')} | "
            f"{ratio(r['infer_img_s'], ref.get('infer_img_s'))} | {ratio(r.get('train_img_s'), ref.get('train_img_s'))}"
            f" | {ratio(r['infer_img_s'], swin.get('infer_img_s'))} | "
            f"{ratio(r.get('train_img_s'), swin.get('train_img_s'))} |"
        )
    return "\n".join(lines) + "\n"


def plot(result: dict, path: Path) -> None:
    """Inference (and training) images/s per model, one bar per backend choice, one panel per setting and phase."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in result["rows"] if "error" not in r]
    settings = list(dict.fromkeys(r["setting"] for r in rows))
    phases = [p for p in ("infer_img_s", "train_img_s") if any(p in r for r in rows)]
    labels = list(dict.fromkeys(r["label"] for r in rows))
    if not rows:  # every model failed or was not reached: say so rather than leave a stale plot
        fig = plt.figure(figsize=(7, 2))
        fig.text(0.5, 0.5, f"{result['environment']['device_name']}: no model measured", ha="center", va="center")
        fig.savefig(path, dpi=110)
        return
    size = (7 * len(phases), 0.3 * len(labels) * len(settings) + 2)
    fig, axes = plt.subplots(len(settings), len(phases), figsize=size, squeeze=False)
    for i, setting in enumerate(settings):
        for j, phase in enumerate(phases):
            ax = axes[i][j]
            for k, backends in enumerate(("auto", "reference")):
                values = [
                    next((r.get(phase, 0) for r in rows if r["setting"] == setting and r["label"] == label
                          and r["backends"] == backends), 0)
                    for label in labels
                ]  # fmt: skip
                ax.barh([y + 0.4 * k for y in range(len(labels))], values, height=0.4, label=backends)
            ax.set_yticks([y + 0.2 for y in range(len(labels))], labels, fontsize=7)
            ax.set_title(f"{setting}: {phase.replace('_img_s', '')} img/s")
            ax.legend(fontsize=7)
    fig.suptitle(f"{result['environment']['device_name']}, batch {result['batch']}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def build_parser() -> argparse.ArgumentParser:
    """The command line (``benchmarks/gpu_check.sh``'s test parses that script's arguments with it)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--settings", type=parse_setting, nargs="+", default=None, help=f"default: {DEFAULTS}")
    parser.add_argument("--backends", nargs="+", choices=["auto", "reference"], default=["auto", "reference"])
    parser.add_argument(
        "--compile-backends", nargs="+", choices=["auto", "reference"], default=None, help="default: --backends"
    )
    parser.add_argument("--batch", type=int, default=None, help="default: 64 on CUDA, 8 on CPU")
    parser.add_argument("--iters", type=int, default=None, help="default: 20 on CUDA, 3 on CPU")
    parser.add_argument("--warmup", type=int, default=None, help="default: 5 on CUDA, 1 on CPU")
    parser.add_argument("--no-train", action="store_true", help="inference only")
    parser.add_argument("--only", default=None, help="models whose label contains this text (peers always run)")
    parser.add_argument(
        "--peers", nargs="+", default=None, metavar="TEXT", help="the peers whose label contains one of these texts"
    )
    parser.add_argument("--peers-first", action="store_true", help="measure the peers before the families")
    parser.add_argument(
        "--max-seconds", type=float, default=None, help="start no new measurement after this many seconds"
    )
    parser.add_argument("--out-dir", type=Path, default=Path(__file__).parent / "results")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cuda = args.device == "cuda"
    settings = args.settings or [parse_setting(s) for s in DEFAULT_SETTINGS[args.device]]
    args.batch = args.batch or (64 if cuda else 8)
    args.iters, args.warmup = args.iters or (20 if cuda else 3), args.warmup or (5 if cuda else 1)

    started = time.monotonic()
    result = dict(
        environment=environment(args.device),
        batch=args.batch,
        iters=args.iters,
        warmup=args.warmup,
        max_seconds=args.max_seconds,
        complete=False,
        rows=[],
    )
    families = [m for m in FAMILIES if not args.only or args.only in m[0]]
    peers = [m for m in PEERS if args.peers is None or any(text in m[0] for text in args.peers)]
    models = peers + families if args.peers_first else families + peers
    tag = "gpu" if cuda else "cpu"
    args.out_dir.mkdir(parents=True, exist_ok=True)

    def write() -> None:
        write_json_atomic(args.out_dir / f"{tag}_model_matrix.json", result)
        write_text_atomic(args.out_dir / f"{tag}_model_matrix.md", markdown(result))

    for setting in settings:
        setting_backends = args.compile_backends if setting["compile"] and args.compile_backends else args.backends
        for label, name, size in models:
            for backends in setting_backends if name.startswith("vitzoo_") else ["auto"]:
                if args.max_seconds is not None and time.monotonic() - started > args.max_seconds:
                    row = dict(model=name, img_size=size, error=f"not run: --max-seconds {args.max_seconds:g} spent")
                else:
                    choice = use_backend("reference") if backends == "reference" else contextlib.nullcontext()
                    try:
                        with choice:
                            row = measure(name, size, setting, args)
                    except Exception as err:  # one model's failure is a result to record, not a reason to lose the rest
                        row = dict(model=name, img_size=size, error=f"{type(err).__name__}: {err}"[:300])
                    torch._dynamo.reset()
                    if cuda:
                        torch.cuda.empty_cache()
                row.update(label=label, setting=setting["name"], backends=backends)
                print(json.dumps(row), flush=True)
                result["rows"].append(row)
                write()
    result["complete"] = True
    write()
    plot(result, args.out_dir / f"{tag}_model_matrix.png")
    print(f"wrote {args.out_dir}/{tag}_model_matrix.{{json,md,png}}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
