"""Regenerate the model table in README.md from the registry, our measurements and the paper table.

Usage: ``python tools/gen_model_table.py`` (rewrites the block between the model-table markers) or
``python tools/gen_model_table.py --check`` (exit 1 when the README is stale; the test suite runs this).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys

import timm
from timm.models import get_arch_pretrained_cfgs

import vitzoo  # noqa: F401  (registers the models)
from vitzoo.benchmark import default_img_size
from vitzoo.hub import weight_sources
from vitzoo.models._papers import paper_of
from vitzoo.paper_table import PAPER_TABLE
from vitzoo.stats import model_stats

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PARITY = ROOT / "benchmarks" / "results" / "official_parity.json"
START, END = "<!-- model-table:start -->", "<!-- model-table:end -->"


_KIND_LABELS = {"hf-hub": "Hub", "direct": "download", "page": "share page, manual"}


def weights_cell(name: str) -> str:
    """Each tag with official weights and how they are fetched (a share page is named in the model card)."""
    cells = []
    for full, cfg in get_arch_pretrained_cfgs(name).items():
        kinds = dict.fromkeys(_KIND_LABELS[source.kind] for source in weight_sources(cfg.to_dict()))
        if kinds:
            cells.append(f"{full.partition('.')[2] or 'default cfg'} ({', '.join(kinds)})")
    return ", ".join(cells) or "-"


def build_table() -> str:
    """One row per model, measured at its default input size, beside the paper's numbers for that same size."""
    parity = json.loads(PARITY.read_text())["results"] if PARITY.exists() else {}
    rows = [
        "| model | input | params (M) | GMACs | paper params / GMACs | paper top-1 | paper | weights "
        "| max abs diff vs official (fp32 / fp64) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name in timm.list_models("vitzoo_*"):
        img_size = default_img_size(name)
        stats = model_stats(name, img_size=img_size)
        printed = PAPER_TABLE.get(name)
        if printed is not None and printed.img_size != img_size:
            raise ValueError(f"{name}: the paper table's numbers are for {printed.img_size}, its default is {img_size}")
        paper = paper_of(name)
        check = parity.get(name)
        paper_cost = f"{printed.params_m or '-'} / {printed.gmacs or '-'}" if printed else "-"
        if printed and (printed.code_gmacs or printed.code_params):
            paper_cost += f" (code: {printed.code_params or '-'} / {printed.code_gmacs or '-'})"
        paper_top1 = str(printed.top1) if printed and printed.top1 else "-"
        diff = "-"
        if check:
            diff = f"{check['max_abs_diff']:.1e}"
            if "max_abs_diff_fp64" in check:
                diff += f" / {check['max_abs_diff_fp64']:.1e}"
        rows.append(
            f"| `{name}` | {img_size} | {stats.params_m:.2f} | {stats.gmacs:.2f} | {paper_cost} | {paper_top1} "
            f"| [{paper.paper_id}]({paper.url}) | {weights_cell(name)} | {diff} |"
        )
    return "\n".join(rows)


def render(text: str) -> str:
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{START}\n{build_table()}\n{END}{tail}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="exit 1 if README.md's table is out of date")
    args = parser.parse_args(argv)
    current = README.read_text()
    fresh = render(current)
    if args.check:
        if fresh != current:
            print("README.md model table is stale: run python tools/gen_model_table.py", file=sys.stderr)
            return 1
        return 0
    README.write_text(fresh)
    return 0


if __name__ == "__main__":
    sys.exit(main())
