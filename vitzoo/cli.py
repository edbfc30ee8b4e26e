"""The ``vitzoo`` command: list models, describe one, benchmark, export or convert some.

``vitzoo list [pattern]``, ``vitzoo info MODEL``, ``vitzoo bench MODEL...``, ``vitzoo export MODEL --format F`` and
``vitzoo convert CHECKPOINT --model MODEL --out DIR``.
This module only parses arguments and prints; the numbers come from :mod:`vitzoo.stats`, :mod:`vitzoo.benchmark`,
:mod:`vitzoo.export` and :mod:`vitzoo.convert`.
"""

from __future__ import annotations

import argparse
import difflib
import functools
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import timm
import torch

import vitzoo  # noqa: F401  (registers the vitzoo_* models with timm)

from .benchmark import benchmark_model, default_img_size, environment, write_json_atomic
from .hub import weight_sources
from .models._papers import paper_of
from .paper_table import PAPER_TABLE
from .stats import ModelStats, model_stats

__all__ = ["main"]

EXIT_USAGE = 2  # argparse's own exit code for bad arguments; an unknown model name is one


@functools.cache  # a process that lists twice (tests, callers of main()) counts once
def _cost(name: str, img_size: int = 224) -> ModelStats:
    """Params, GMACs and feature metadata; ``list`` skips the activation count, which roughly halves its time."""
    return model_stats(name, img_size, activations=False)


def _strides(values: Sequence[int]) -> str:
    return "/".join(str(v) for v in values)


def _format_table(headers: Sequence[str], rows: Sequence[Sequence[object]], align: str) -> str:
    """Plain-text table; ``align`` has one ``l`` or ``r`` per column (numbers read best right-aligned)."""
    cells = [[str(c) for c in headers]] + [["-" if c is None else str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]

    def fmt(row: list[str]) -> str:
        parts = [c.rjust(w) if a == "r" else c.ljust(w) for c, w, a in zip(row, widths, align, strict=True)]
        return "  ".join(parts).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([fmt(cells[0]), rule] + [fmt(row) for row in cells[1:]])


def _unknown_model_message(name: str) -> str | None:
    """``None`` when ``name`` (optionally ``arch.tag``) is a registered model, else an error naming close matches."""
    arch, _, tag = name.partition(".")
    if timm.is_model(arch):
        if not tag:
            return None
        tagged = timm.list_pretrained(f"{arch}.*")
        if name in tagged:
            return None
        candidates, what = tagged, f"pretrained tag '{tag}' for model '{arch}'"
    else:
        candidates, what = timm.list_models(), f"model '{name}'"
    close = difflib.get_close_matches(name, candidates, n=5, cutoff=0.6)
    hint = f" Did you mean: {', '.join(close)}?" if close else " See `vitzoo list '*'` for every model name."
    return f"vitzoo: error: unknown {what}.{hint}"


def _check_names(names: Sequence[str]) -> bool:
    errors = [msg for msg in map(_unknown_model_message, names) if msg]
    for msg in errors:
        print(msg, file=sys.stderr)
    return not errors


def _usage_error(message: str) -> int:
    print(f"vitzoo: error: {message}", file=sys.stderr)
    return EXIT_USAGE


def _pretrained_tags(pattern: str) -> dict[str, list[str]]:
    tags: dict[str, list[str]] = {}
    for full in timm.list_pretrained(pattern):
        arch, _, tag = full.partition(".")
        tags.setdefault(arch, []).append(tag)
    return tags


def cmd_list(args: argparse.Namespace) -> int:
    names = timm.list_models(args.pattern)
    if not names:
        print(f"vitzoo: no model matches '{args.pattern}'", file=sys.stderr)
        return 1
    tags = _pretrained_tags(args.pattern)
    records = []
    for name in names:
        cost = _cost(name, 224)
        records.append(
            {
                "model": name,
                "params_m": round(cost.params_m, 3),
                "gmacs_224": round(cost.gmacs, 3),
                "reductions": list(cost.reductions),
                "channels": list(cost.channels),
                "pretrained_tags": tags.get(name, []),
                "paper": paper_of(name).paper_id,
            }
        )
    if args.json:
        print(json.dumps(records, indent=2))
        return 0
    rows = [
        (
            r["model"],
            f"{r['params_m']:.2f}",
            f"{r['gmacs_224']:.2f}",
            _strides(r["reductions"]),
            ",".join(r["pretrained_tags"]) or "-",
            r["paper"],
        )
        for r in records
    ]
    print(
        _format_table(
            ["model", "params (M)", "GMACs@224", "feature strides", "pretrained tags", "paper"], rows, "lrrlll"
        )
    )
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    if not _check_names([args.model]):
        return EXIT_USAGE
    name = args.model
    arch = name.partition(".")[0]
    cfg = timm.models.get_pretrained_cfg(name)
    img_size = default_img_size(name)
    stats = model_stats(name, img_size=img_size)
    activations = stats.activations_m
    lines = [
        ("model", name),
        ("params (M)", f"{stats.params_m:.2f}"),
        (f"GMACs @ {img_size}x{img_size}", f"{stats.gmacs:.2f}"),
        (f"activations (M) @ {img_size}x{img_size}", "-" if activations is None else f"{activations:.2f}"),
        ("feature channels", _strides(stats.channels)),
        ("feature strides", _strides(stats.reductions)),
        ("pretrained tags", ", ".join(_pretrained_tags(f"{arch}.*").get(arch, [])) or "-"),
    ]
    if cfg is not None:
        tag = f" ({cfg.tag})" if cfg.tag else ""
        lines.append((f"pretrained_cfg{tag}", ""))
        for key in ("input_size", "crop_pct", "interpolation", "mean", "std"):
            value = getattr(cfg, key, None)
            lines.append((f"  {key}", "-" if value is None else str(value)))
        sources = weight_sources(cfg.to_dict())
        for source in sources:
            lines.append(("  weights", source.describe()))
        if not sources:
            lines.append(("  weights", "none published (random init only)"))
    record = paper_of(arch)
    lines += [
        ("paper", f"{record.title} ({record.url})"),
        ("licence", record.license),
    ]
    if record.origin_url:
        lines.append(("official code", f"{record.origin_url} (checked against commit {record.commit})"))
    else:
        lines.append(("official code", "none released"))
    paper = PAPER_TABLE.get(arch)
    if paper is not None:
        lines.append(("paper's numbers (as printed)", ""))
        lines.append(("  params (M)", paper.params_m or "not printed"))
        lines.append((f"  GMACs @ {paper.img_size}", paper.gmacs or "not printed"))
        if paper.code_params:
            lines.append(("  params (M) counted from the official code", paper.code_params))
        if paper.code_gmacs:
            lines.append(("  GMACs counted from the official code", paper.code_gmacs))
        lines.append(("  ImageNet-1k top-1", "-" if paper.top1 is None else f"{paper.top1}"))
        lines.append(("  source", paper.source))
    width = max(len(k) for k, _ in lines)
    print("\n".join(f"{k.ljust(width)}  {v}".rstrip() for k, v in lines))
    return 0


def _bench_rows(results: list[dict]) -> tuple[list[str], list[tuple]]:
    mem_key = "peak_cuda_alloc_mb" if "peak_cuda_alloc_mb" in results[0] else "peak_rss_growth_mb"
    mem_header = "peak CUDA alloc MB" if mem_key == "peak_cuda_alloc_mb" else "peak RSS growth MB"

    def num(value: float | None, fmt: str = ".1f") -> str | None:
        return None if value is None else format(value, fmt)

    def latency(r: dict, phase: str) -> str | None:
        values = [r[f"{phase}_ms_{stat}"] for stat in ("mean", "p50", "p90")]
        return None if values[0] is None else "/".join(format(v, ".1f") for v in values)

    headers = [
        "model",
        "batch",
        "img",
        "params (M)",
        "GMACs",
        "infer img/s",
        "infer ms mean/p50/p90",
        "train img/s",
        "train ms mean/p50/p90",
        mem_header,
    ]
    rows = [
        (
            r["model"],
            r["batch_size"],
            r["img_size"],
            num(r["params_m"], ".2f"),
            num(r["gmacs"], ".2f"),
            num(r["infer_img_s"]),
            latency(r, "infer"),
            num(r["train_img_s"]),
            latency(r, "train"),
            num(r[mem_key]),
        )
        for r in results
    ]
    return headers, rows


def cmd_bench(args: argparse.Namespace) -> int:
    if not _check_names(args.models):
        return EXIT_USAGE
    if args.compile and args.warmup < 1:
        return _usage_error("--compile needs --warmup >= 1 so compilation is not timed")
    if args.device == "cuda" and not torch.cuda.is_available():
        return _usage_error("--device cuda was given but torch.cuda.is_available() is False")
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    results = []
    for name in args.models:
        results.append(
            benchmark_model(
                name,
                args.batch_size,
                args.img_size,
                device=device,
                channels_last=args.channels_last,
                compile=args.compile,
                amp=args.amp,
                amp_dtype=args.amp_dtype,
                warmup=args.warmup,
                iters=args.iters,
                train=not args.no_train,
            )
        )
    headers, rows = _bench_rows(results)
    print(_format_table(headers, rows, "lrrrrrrrrr"))
    if args.out:
        settings = {k: v for k, v in vars(args).items() if k != "func"}
        write_json_atomic(args.out, {"meta": {**environment(device), "args": settings}, "results": results})
        print(f"wrote {args.out}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from .export import ExportError, create_for_export, export_model  # the exporters are imported only here
    from .hub import CheckpointError

    if not _check_names([args.model]):
        return EXIT_USAGE
    try:
        model = create_for_export(args.model, args.format, args.checkpoint)
        result = export_model(model, args.format, tuple(args.img_size), Path(args.out), dynamic=args.dynamic)
    except (ExportError, CheckpointError, FileNotFoundError) as e:
        print(f"vitzoo: error: {e}", file=sys.stderr)
        return 1
    print(f"wrote {result.path} ({result.format}{', dynamic batch/H/W' if args.dynamic else ''})")
    for shape, diff in result.max_abs_diff.items():
        print(f"  input {shape}: max abs difference to eager {diff:.3g}")
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    from .convert import ConversionError, convert_to_hub_folder, push_folder

    if not _check_names([args.model]):
        return EXIT_USAGE
    try:
        result = convert_to_hub_folder(args.checkpoint, args.model, args.out, tag=args.tag, repo_id=args.push)
        print(f"wrote {result.out} (model.safetensors, config.json, README.md)")
        print(
            f"  reloaded offline as hf-hub:{result.repo_id}: max abs logit difference {result.max_abs_diff:.3g} "
            f"to the checkpoint loaded directly (logits up to {result.max_abs_logit:.3g}, input "
            f"{'x'.join(map(str, result.input_shape))})"
        )
        if args.push:
            print(f"pushed to https://huggingface.co/{args.push}: {push_folder(result.out, args.push, args.private)}")
    except ConversionError as e:
        print(f"vitzoo: error: {e}", file=sys.stderr)
        return 1
    return 0


def _int_at_least(minimum: int):
    def parse(text: str) -> int:
        value = int(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value

    parse.__name__ = "int"  # argparse names the type in its error messages
    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vitzoo", description="List vitzoo models, describe one, benchmark, export or convert some."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="{list,info,bench,export,convert}")

    p = sub.add_parser("list", help="table of models: params, GMACs at 224, feature strides, pretrained tags")
    p.add_argument(
        "pattern", nargs="?", default="vitzoo_*", help="fnmatch pattern over timm names (default: %(default)s)"
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("info", help="one model: cost, features, pretrained config, paper numbers")
    p.add_argument("model", help="timm model name, optionally with a pretrained tag (name.tag)")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("bench", help="inference/training throughput, latency and peak memory on random data")
    p.add_argument("models", nargs="+", metavar="MODEL")
    p.add_argument("--batch-size", type=_int_at_least(1), default=8)
    p.add_argument(
        "--img-size", type=_int_at_least(1), default=None, help="square input side (default: the model's own)"
    )
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--compile", action="store_true", help="torch.compile the model (compiles during warm-up)")
    p.add_argument("--amp", action="store_true", help="autocast: bfloat16 on CPU, float16 on CUDA")
    p.add_argument("--amp-dtype", choices=["bf16", "fp16"], default=None, help="autocast in this dtype (implies --amp)")
    p.add_argument("--device", choices=["cpu", "cuda"], default=None, help="default: cuda when available")
    p.add_argument("--warmup", type=_int_at_least(0), default=2, help="untimed batches before each phase")
    p.add_argument("--iters", type=_int_at_least(1), default=10, help="timed batches per phase")
    p.add_argument("--no-train", action="store_true", help="time inference only")
    p.add_argument("--out", metavar="PATH.json", default=None, help="also write results and environment as JSON")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("export", help="write a model as TorchScript, a torch.export program or ONNX, and check it")
    p.add_argument("model", help="timm model name")
    p.add_argument("--format", required=True, choices=["torchscript", "exported", "onnx"])
    p.add_argument("--img-size", type=_int_at_least(32), nargs=2, metavar=("H", "W"), default=[224, 224])
    p.add_argument(
        "--dynamic", action="store_true", help="symbolic batch and H, W (multiples of 32, from 224 or 256 to 1024)"
    )
    p.add_argument("--checkpoint", metavar="FILE", default=None, help="weights (official or vitzoo layout)")
    p.add_argument("--out", required=True, metavar="PATH")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser(
        "convert", help="turn an official checkpoint into a timm Hugging Face Hub folder, checked by reloading it"
    )
    p.add_argument("checkpoint", metavar="CHECKPOINT", help="official (or vitzoo layout) checkpoint file")
    p.add_argument("--model", required=True, help="timm model name, optionally name.tag")
    p.add_argument("--tag", default=None, help="pretrained tag whose cfg the repo carries (default: the model's first)")
    p.add_argument("--out", required=True, metavar="DIR", help="folder to write (must not exist, or be empty)")
    p.add_argument("--push", metavar="REPO_ID", default=None, help="upload to this Hub repo (token: HF_TOKEN)")
    p.add_argument("--private", action="store_true", help="create the pushed repo as private")
    p.set_defaults(func=cmd_convert)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``vitzoo`` console script; returns the process exit code."""
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
