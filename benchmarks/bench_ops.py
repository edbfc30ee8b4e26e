"""Op-level benchmark: every 2-D attention primitive, every backend, at the shapes of the models' stages.

    python benchmarks/bench_ops.py [--device cuda|cpu] [--batch N] [--sizes 224 512] [--dtype bf16|fp32]
                                   [--iters N] [--warmup N] [--max-seconds S] [--out-dir DIR]

For each case (an op at one model stage's map size, heads and head dim, for a 224 or 512 input) and each
implementation it times the forward (no autograd) and forward + backward (gradients of q, k, v and learned tables),
median of ``--iters`` after ``--warmup``. Implementations:

* ``official``: the official code's eager attention core (``benchmarks/official_ops.py``);
* every backend of the vitzoo op that can run the inputs (``reference``, ``triton``, ``natten``, ``flex``);
* ``sdpa_full``: ``scaled_dot_product_attention`` over all tokens of the map, the dense attention the local
  pattern replaces.

Achieved bandwidth counts the compulsory bytes only (q, k, v and tables read once, the output written once; the
backward adds dO read and dQ, dK, dV written), achieved TFLOP/s the useful FLOPs (2 per multiply-add of q.k and p.v
over the keys each query attends to; a backward costs 2.5 forwards). Both are set against the device's measured
ceilings (a large device copy and a large matmul in ``--dtype``). Writes ``<device>_ops.json``, ``.md`` and ``.png``
to ``--out-dir``; the JSON and Markdown are rewritten after every case (``"complete": false`` until the end), so a
run killed from outside keeps what it measured. ``--max-seconds`` starts no new case once that much time has passed
and lists the cases it left out under ``"not_run"``.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
import official_ops  # noqa: E402

from vitzoo.benchmark import environment, median_ms, write_json_atomic, write_text_atomic  # noqa: E402
from vitzoo.ops import (  # noqa: E402
    BackendUnavailable,
    halo_attention,
    neighborhood_attention,
    region_routed_attention,
    window_attention,
)
from vitzoo.ops.halo import BACKENDS as HALO_BACKENDS  # noqa: E402
from vitzoo.ops.neighborhood import BACKENDS as NA_BACKENDS  # noqa: E402
from vitzoo.ops.routed import BACKENDS as ROUTED_BACKENDS  # noqa: E402
from vitzoo.ops.window import BACKENDS as WINDOW_BACKENDS  # noqa: E402


@dataclass
class Case:
    """One op at one model stage: its inputs are built by :meth:`inputs`, its implementations by :meth:`impls`."""

    name: str
    op: str
    map_size: int
    heads: int
    head_dim: int
    keys_per_query: int  # for FLOPs: how many keys each query attends to
    params: dict = field(default_factory=dict)


def cases(input_size: int) -> list[Case]:
    """Stage shapes of the families, for a square ``input_size`` input (stride-4 stage 1)."""
    s1, s2, s3 = input_size // 4, input_size // 8, input_size // 16
    regions = 7 if input_size == 224 else 8  # BiFormer: 7 for classification, 8 in the segmentation configs
    return [
        Case("Swin-style 7x7 window + bias (Agent-Swin s1)", "window", s1, 3, 32, 49, dict(window=(7, 7), bias=True)),
        Case("CSWin-T s1 stripe 1xW (one branch)", "window", s1, 1, 32, s1, dict(window=(1, s1))),
        Case("CSWin-T s3 stripe 7xW (one branch)", "window", s3, 4, 32, 7 * s3, dict(window=(7, s3))),
        Case(
            "CrossFormer-T s1 LDA 7x7, interval 8", "window", s1, 2, 32, 49, dict(window=(7, 7), dilation=8, bias=True)
        ),  # fmt: skip
        Case("BiFormer-T s1 routed top-1", "routed", s1, 2, 32, (s1 // regions) ** 2, dict(regions=regions, topk=1)),
        Case(
            "BiFormer-T s2 routed top-4", "routed", s2, 4, 32, 4 * (s2 // regions) ** 2, dict(regions=regions, topk=4)
        ),
        Case(
            "BiFormer-T s3 routed top-16",
            "routed",
            s3,
            8,
            32,
            16 * (s3 // regions) ** 2,
            dict(regions=regions, topk=16),
        ),  # fmt: skip
        Case("HaloNet s1 block 8 halo 3", "halo", input_size // 4, 8, 8, 14 * 14, dict(block=8, halo=3)),
        Case("HaloNet s3 block 8 halo 3", "halo", input_size // 16, 8, 32, 14 * 14, dict(block=8, halo=3)),
        Case("NAT-style 7x7 neighborhood s1", "neighborhood", s1, 2, 32, 49, dict(kernel=7)),
    ]


def make_inputs(case: Case, batch: int, dtype: torch.dtype, device: str):
    """q, k, v (requires_grad) in the op's layout, plus the learned tables the op takes (requires_grad)."""
    shape = (batch, case.map_size, case.map_size, case.heads, case.head_dim)
    if case.op == "routed":
        shape = (batch, case.map_size, case.map_size, case.heads * case.head_dim)
    q, k, v = (torch.randn(shape, dtype=dtype, device=device).requires_grad_() for _ in range(3))
    tables = []
    if case.params.get("bias"):
        n = case.params["window"][0] * case.params["window"][1]
        tables = [torch.randn(case.heads, n, n, dtype=dtype, device=device).requires_grad_()]
    if case.op == "halo":
        rows = 2 * (case.params["block"] + 2 * case.params["halo"]) - 1
        tables = [torch.randn(rows, case.head_dim, dtype=dtype, device=device).requires_grad_() for _ in range(2)]
    return q, k, v, tables


def implementations(case: Case, q, k, v, tables) -> dict:
    """Name -> zero-argument callable returning the output, for every implementation that can run the case."""
    p = case.params
    impls = {}
    if case.op == "window":
        bias = tables[0] if tables else None
        window, dilation = p["window"], p.get("dilation", 1)
        if dilation == 1:
            impls["official"] = lambda: official_ops.swin_window_attention(q, k, v, window, bias=bias)
        for backend, reason in WINDOW_BACKENDS.available(q, k, v, window, dilation=(dilation,) * 2, bias=bias).items():
            if reason is None:
                impls[backend] = lambda b=backend: window_attention(
                    q, k, v, window, dilation=dilation, bias=bias, backend=b
                )
    elif case.op == "routed":
        regions, topk = p["regions"], p["topk"]
        if case.map_size % regions == 0:
            impls["official"] = lambda: official_ops.biformer_routed_attention(q, k, v, regions, topk, case.heads)
        for backend, reason in ROUTED_BACKENDS.available(q, k, v, regions, topk, case.heads).items():
            if reason is None:
                impls[backend] = lambda b=backend: region_routed_attention(
                    q, k, v, regions, topk, case.heads, backend=b
                )
    elif case.op == "halo":
        block, halo = p["block"], p["halo"]
        if case.map_size % block == 0:
            impls["official"] = lambda: official_ops.halonet_attention(q, k, v, block, halo, *tables)
        for backend, reason in HALO_BACKENDS.available(q, k, v, block, halo, rel_pos=tuple(tables)).items():
            if reason is None:
                impls[backend] = lambda b=backend: halo_attention(
                    q, k, v, block, halo, rel_pos=tuple(tables), mask_padding=False, backend=b
                )
    elif case.op == "neighborhood":
        kernel = p["kernel"]
        with torch.no_grad():  # Flex / NATTEN on CPU are inference only: list them for the forward timing
            available = NA_BACKENDS.available(q, k, v, (kernel, kernel), dilation=(1, 1))
        for backend, reason in available.items():
            if reason is None:
                impls[backend] = lambda b=backend: neighborhood_attention(q, k, v, kernel, backend=b)

    def sdpa_full():
        b = q.shape[0]
        heads = case.heads
        qf, kf, vf = (t.reshape(b, -1, heads, t.shape[-1] // (heads if t.dim() == 4 else 1)).transpose(1, 2)
                      for t in (q, k, v))  # fmt: skip
        return F.scaled_dot_product_attention(qf, kf, vf)

    impls["sdpa_full"] = sdpa_full
    return impls


def measure_ceilings(device: str, dtype: torch.dtype) -> dict:
    """Bandwidth of a large copy (GB/s, read + write) and throughput of a large matmul (TFLOP/s) in ``dtype``."""
    numel = (1 << 28) if device == "cuda" else (1 << 25)
    src = torch.empty(numel, dtype=torch.float32, device=device).normal_()
    dst = torch.empty_like(src)
    copy_ms = median_ms(lambda: dst.copy_(src), device, 10, 3)
    n = 8192 if device == "cuda" else 1024
    a, b = (torch.randn(n, n, dtype=dtype, device=device) for _ in range(2))
    mm_ms = median_ms(lambda: a @ b, device, 10, 3)
    return {"copy_gb_s": 2 * numel * 4 / copy_ms / 1e6, "matmul_tflop_s": 2 * n**3 / mm_ms / 1e9}


def backward_of(fn, inputs) -> None:
    out = fn()
    torch.autograd.grad(out, inputs, torch.ones_like(out), allow_unused=True)


def run_case(case: Case, batch: int, dtype: torch.dtype, device: str, iters: int, warmup: int) -> list[dict]:
    q, k, v, tables = make_inputs(case, batch, dtype, device)
    elem = q.element_size()
    tokens = batch * case.map_size**2
    io_bytes = elem * (q.numel() + k.numel() + v.numel() + v.numel()) + sum(elem * t.numel() for t in tables)
    flops = 4 * tokens * case.heads * case.keys_per_query * case.head_dim
    full_flops = 4 * tokens * case.heads * case.map_size**2 * case.head_dim
    # the forward is timed on detached inputs: backends that run inference only (Flex / NATTEN on CPU) then qualify
    frozen = [t.detach() for t in (q, k, v, *tables)]
    forward_impls = implementations(case, *frozen[:3], frozen[3:])
    training_impls = implementations(case, q, k, v, tables)
    rows = []
    for impl, fn in forward_impls.items():
        row = {"case": case.name, "op": case.op, "impl": impl, "map": case.map_size, "batch": batch}
        case_flops = full_flops if impl == "sdpa_full" else flops
        try:
            with torch.no_grad():
                row["fwd_ms"] = median_ms(fn, device, iters, warmup)
            row["fwd_gb_s"] = io_bytes / row["fwd_ms"] / 1e6
            row["fwd_tflop_s"] = case_flops / row["fwd_ms"] / 1e9
            if impl not in training_impls:
                raise BackendUnavailable("no backward for these inputs on this device")
            row["fwd_bwd_ms"] = median_ms(
                lambda train=training_impls[impl]: backward_of(train, [q, k, v, *tables]), device, iters, warmup
            )
            # backward: q, k, v, O, dO read again, dQ, dK, dV written
            row["fwd_bwd_gb_s"] = (2 * io_bytes + 4 * elem * q.numel()) / row["fwd_bwd_ms"] / 1e6
            row["fwd_bwd_tflop_s"] = 3.5 * case_flops / row["fwd_bwd_ms"] / 1e9
        except (RuntimeError, NotImplementedError, BackendUnavailable) as e:  # no backward on this device, OOM
            row["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:160]}"
        if device == "cuda":
            torch.cuda.empty_cache()
        rows.append(row)
    return rows


def add_ratios(rows: list[dict]) -> None:
    """Speed-up of every implementation over ``official`` and over ``sdpa_full`` of the same case."""
    by_case: dict[tuple, dict] = {}
    for row in rows:
        by_case.setdefault((row["case"], row["map"]), {})[row["impl"]] = row
    for impls in by_case.values():
        for row in impls.values():
            for base in ("official", "sdpa_full"):
                for phase in ("fwd_ms", "fwd_bwd_ms"):
                    ref = impls.get(base, {}).get(phase)
                    if ref and row.get(phase):
                        row[f"{phase[:-3]}_vs_{base}"] = ref / row[phase]


def markdown(result: dict) -> str:
    env, ceil = result["environment"], result["ceilings"]
    lines = [
        f"# Op-level benchmark: {env['device_name']}",
        "",
        f"{result['dtype']}, batch {result['batch']}, median of {result['iters']} runs after {result['warmup']} "
        f"warm-up; torch {env['torch']}; measured ceilings: copy {ceil['copy_gb_s']:.0f} GB/s, matmul "
        f"{ceil['matmul_tflop_s']:.1f} TFLOP/s. Bandwidth counts compulsory bytes only; `x official` and "
        "`x full SDPA` are speed-ups (higher is better).",
        "",
        *_incomplete_note(result),
        "| case | map | impl | fwd ms | fwd GB/s (% of copy) | fwd TFLOP/s | fwd x official | fwd x full SDPA | "
        "fwd+bwd ms | fwd+bwd x official |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]

    def num(value, fmt):
        return format(value, fmt) if isinstance(value, (int, float)) else "-"

    for r in result["rows"]:
        if "error" in r and "fwd_ms" not in r:
            lines.append(f"| {r['case']} | {r['map']} | {r['impl']} | {r['error']} | | | | | | |")
            continue
        pct = 100 * r["fwd_gb_s"] / ceil["copy_gb_s"]
        lines.append(
            f"| {r['case']} | {r['map']} | {r['impl']} | {num(r['fwd_ms'], '.3f')} | "
            f"{r['fwd_gb_s']:.1f} ({pct:.0f}%) | {num(r['fwd_tflop_s'], '.3f')} | "
            f"{num(r.get('fwd_vs_official'), '.2f')} | {num(r.get('fwd_vs_sdpa_full'), '.2f')} | "
            f"{num(r.get('fwd_bwd_ms'), '.3f')} | {num(r.get('fwd_bwd_vs_official'), '.2f')} |"
        )
    return "\n".join(lines) + "\n"


def _incomplete_note(result: dict) -> list[str]:
    """Lines saying that the run stopped early and which cases it did not reach (none for a complete run)."""
    lines = []
    if not result.get("complete", True):
        lines += ["**Incomplete**: the run was stopped before its last case.", ""]
    if result.get("not_run"):
        lines += [f"Not run (--max-seconds {result['max_seconds']:g} spent): {'; '.join(result['not_run'])}.", ""]
    return lines


def plot(result: dict, path: Path) -> None:
    """Forward and forward+backward speed-up over the official code, one bar per implementation and case."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in result["rows"] if r["impl"] not in ("official", "sdpa_full") and "fwd_vs_official" in r]
    labels = sorted({(r["case"], r["map"]) for r in rows}, key=lambda c: (c[1], c[0]))
    impls = sorted({r["impl"] for r in rows})
    fig, axes = plt.subplots(1, 2, figsize=(14, 0.45 * len(labels) + 2), sharey=True)
    for ax, phase in zip(axes, ("fwd", "fwd_bwd")):
        height = 0.8 / max(1, len(impls))
        for i, impl in enumerate(impls):
            values = []
            for case, size in labels:
                match = [r for r in rows if r["case"] == case and r["map"] == size and r["impl"] == impl]
                values.append(match[0].get(f"{phase}_vs_official", 0) if match else 0)
            ax.barh([j + i * height for j in range(len(labels))], values, height=height, label=impl)
        ax.axvline(1.0, color="black", lw=0.8)
        ax.set_title(f"{phase.replace('_', '+')}: speed-up over the official code")
        ax.set_xscale("log")
    axes[0].set_yticks([j + 0.4 for j in range(len(labels))], [f"{c} @{s}" for c, s in labels], fontsize=7)
    if impls:  # a run that measured nothing has no bars to label
        axes[1].legend()
    fig.suptitle(f"{result['environment']['device_name']}, {result['dtype']}, batch {result['batch']}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def build_parser() -> argparse.ArgumentParser:
    """The command line (``benchmarks/gpu_check.sh``'s test parses that script's arguments with it)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, default=None, help="default: 64 on CUDA, 2 on CPU")
    parser.add_argument("--sizes", type=int, nargs="+", default=[224, 512])
    parser.add_argument("--dtype", choices=["bf16", "fp32"], default=None, help="default: bf16 on CUDA, fp32 on CPU")
    parser.add_argument("--iters", type=int, default=None, help="default: 20 on CUDA, 3 on CPU")
    parser.add_argument("--warmup", type=int, default=None, help="default: 5 on CUDA, 1 on CPU")
    parser.add_argument("--only", default=None, help="run the cases whose name contains this text")
    parser.add_argument(
        "--max-seconds", type=float, default=None, help="start no new case after this many seconds (default: no limit)"
    )
    parser.add_argument("--out-dir", type=Path, default=Path(__file__).parent / "results")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cuda = args.device == "cuda"
    batch = args.batch or (64 if cuda else 2)
    dtype_name = args.dtype or ("bf16" if cuda else "fp32")
    dtype = torch.bfloat16 if dtype_name == "bf16" else torch.float32
    iters, warmup = args.iters or (20 if cuda else 3), args.warmup or (5 if cuda else 1)

    started = time.monotonic()
    torch.manual_seed(0)
    result = {
        "environment": environment(args.device),
        "dtype": dtype_name,
        "batch": batch,
        "iters": iters,
        "warmup": warmup,
        "max_seconds": args.max_seconds,
        "complete": False,
        "ceilings": measure_ceilings(args.device, dtype),
        "rows": [],
        "not_run": [],
    }
    tag = "gpu" if cuda else "cpu"
    args.out_dir.mkdir(parents=True, exist_ok=True)

    def write() -> None:
        add_ratios(result["rows"])
        write_json_atomic(args.out_dir / f"{tag}_ops.json", result)
        write_text_atomic(args.out_dir / f"{tag}_ops.md", markdown(result))

    for size in args.sizes:
        for case in cases(size):
            if args.only and args.only not in case.name:
                continue
            if args.max_seconds is not None and time.monotonic() - started > args.max_seconds:
                result["not_run"].append(f"{case.name} @{case.map_size}")
                continue
            rows = run_case(case, batch, dtype, args.device, iters, warmup)
            for r in rows:
                print(f"{r['case']:45s} {size:4d} {r['impl']:10s} {r.get('fwd_ms', float('nan')):9.3f} ms "
                      f"{r.get('fwd_bwd_ms', float('nan')):9.3f} ms {r.get('error', '')}", flush=True)  # fmt: skip
            result["rows"].extend(rows)
            write()
    result["complete"] = True
    write()
    plot(result, args.out_dir / f"{tag}_ops.png")
    print(f"wrote {args.out_dir}/{tag}_ops.{{json,md,png}}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
