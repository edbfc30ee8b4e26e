"""CPU inference of the deployment paths, in one process: eager PyTorch, ``torch.compile`` (inductor) and ONNX
Runtime, for one vitzoo model per attention op next to timm's Swin-T and ConvNeXt-T.

Every model runs at 224x224 (HaloNet-H0 at its paper's 256), fp32, batch 1 and batch 8, with ``torch.no_grad``.
``torch.compile`` compiles once per batch size during warm-up (``fullgraph=True`` for the vitzoo models: one graph
each). ONNX files come from a ``torch.export`` program with a symbolic batch (one file serves both batch sizes) and
run on ONNX Runtime's CPU provider with as many threads as PyTorch uses. Times are ``torch.utils.benchmark``
medians. Writes ``results/cpu_deploy.json`` (every number and the environment) and ``results/cpu_deploy.md``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import timm
import torch
import torch.utils.benchmark as tbench

import vitzoo  # noqa: F401  (registers the vitzoo_* models with timm)
from vitzoo.benchmark import environment, write_json_atomic, write_text_atomic

MODELS = [
    "vitzoo_van_b0",
    "vitzoo_biformer_t",
    "vitzoo_halonet_h0",
    "vitzoo_cswin_t",
    "vitzoo_swin_vsa_t",
    "vitzoo_agent_pvt_t",
    "swin_tiny_patch4_window7_224",
    "convnext_tiny",
]
BASELINE = "swin_tiny_patch4_window7_224"
IMG_SIZES = {"vitzoo_halonet_h0": 256}
BATCHES = (1, 8)
PATHS = ("eager", "compile", "onnxruntime")
DEFAULT_OUT = Path(__file__).resolve().parent / "results"


def median_ms(fn, x: torch.Tensor, min_run_time: float) -> float:
    timer = tbench.Timer(stmt="fn(x)", globals={"fn": fn, "x": x}, num_threads=torch.get_num_threads())
    return timer.blocked_autorange(min_run_time=min_run_time).median * 1e3


def onnx_session(model: torch.nn.Module, x: torch.Tensor, path: Path):
    """An ONNX Runtime session for ``model`` with a symbolic batch (traced at batch 2: a traced 1 stays 1)."""
    import onnxruntime

    batch = torch.export.Dim("batch", min=1, max=64)
    program = torch.export.export(model, (x[:1].expand(2, -1, -1, -1).contiguous(),), dynamic_shapes={"x": {0: batch}})
    torch.onnx.export(program, f=str(path), dynamo=True, input_names=["x"], external_data=False)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return lambda inp: session.run(None, {"x": inp.numpy()})[0]


def bench_one(name: str, min_run_time: float, workdir: Path) -> list[dict]:
    size = IMG_SIZES.get(name, 224)
    model = timm.create_model(name).eval()
    xs = {b: torch.randn(b, 3, size, size) for b in BATCHES}
    rows = []
    with torch.no_grad():
        compiled = torch.compile(model, fullgraph=name.startswith("vitzoo_"))
        start = time.perf_counter()
        ort = onnx_session(model, xs[1], workdir / f"{name}.onnx")
        onnx_s = time.perf_counter() - start
        for b, x in xs.items():
            want = model(x)
            start = time.perf_counter()
            got = compiled(x)  # compiles for this batch size
            compile_s = time.perf_counter() - start
            diffs = {
                "compile": (got - want).abs().max().item(),
                "onnxruntime": (torch.from_numpy(ort(x)) - want).abs().max().item(),
            }
            fns = {"eager": model, "compile": compiled, "onnxruntime": ort}
            row = dict(model=name, img_size=size, batch_size=b, compile_s=compile_s, onnx_export_s=onnx_s)
            for path in PATHS:
                row[f"{path}_ms"] = median_ms(fns[path], x, min_run_time)
                row[f"{path}_max_abs_diff"] = diffs.get(path, 0.0)
            rows.append(row)
            print(f"{name} b{b}: " + ", ".join(f"{p} {row[f'{p}_ms']:.1f} ms" for p in PATHS), flush=True)
    torch._dynamo.reset()
    return rows


def markdown_table(rows: list[dict], env: dict) -> str:
    base = {r["batch_size"]: r["eager_ms"] for r in rows if r["model"] == BASELINE}
    lines = [
        "# CPU inference: eager, torch.compile, ONNX Runtime",
        "",
        f"{env['device_name']} ({env['threads']} threads), torch {env['torch']}, fp32, no_grad; ms per batch "
        "(`torch.utils.benchmark` median). `x Swin-T` divides Swin-T's eager time by the row's eager time "
        "(same batch); `compile` / `ORT` are the speed-ups over the row's own eager time. `max diff`: largest "
        "absolute difference of the logits to eager (compile / ORT). Written by `benchmarks/bench_deploy.py`.",
        "",
        "| model | size | batch | eager ms | x Swin-T | compile ms | compile x | ORT ms | ORT x | max diff "
        "| compile s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        eager = r["eager_ms"]
        diff = max(r["compile_max_abs_diff"], r["onnxruntime_max_abs_diff"])
        lines.append(
            f"| `{r['model']}` | {r['img_size']} | {r['batch_size']} | {eager:.1f} | "
            f"{base[r['batch_size']] / eager:.2f} | {r['compile_ms']:.1f} | {eager / r['compile_ms']:.2f} | "
            f"{r['onnxruntime_ms']:.1f} | {eager / r['onnxruntime_ms']:.2f} | {diff:.1e} | {r['compile_s']:.0f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=MODELS)
    parser.add_argument("--min-run-time", type=float, default=2.0, help="seconds timed per path and batch")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    if BASELINE not in args.models:
        args.models.append(BASELINE)
    env = environment("cpu")
    import onnxruntime

    env["onnxruntime"] = onnxruntime.__version__
    rows = []
    with tempfile.TemporaryDirectory() as workdir:
        for name in args.models:
            rows.extend(bench_one(name, args.min_run_time, Path(workdir)))
    write_json_atomic(args.out / "cpu_deploy.json", {"meta": env, "results": rows})
    write_text_atomic(args.out / "cpu_deploy.md", markdown_table(rows, env))
    print(f"wrote {args.out / 'cpu_deploy.md'}")


if __name__ == "__main__":
    main()
