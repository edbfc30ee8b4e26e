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

import vitzoo  # noqa: F401  (registers the models)
from vitzoo.paper_table import PAPER_TABLE
from vitzoo.stats import model_stats

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PARITY = ROOT / "benchmarks" / "results" / "official_parity.json"
START, END = "<!-- model-table:start -->", "<!-- model-table:end -->"


def build_table() -> str:
    parity = json.loads(PARITY.read_text())["results"] if PARITY.exists() else {}
    rows = [
        "| model | params (M) | GMACs @224 | paper params / GMACs | paper top-1 | weights | max abs diff vs official |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in timm.list_models("vitzoo_*"):
        stats = model_stats(name)
        paper = PAPER_TABLE.get(name)
        tags = [t.split(".", 1)[1] for t in timm.list_pretrained(name) if "." in t]
        check = parity.get(name)
        paper_cost = f"{paper.params_m or '-'} / {paper.gmacs or '-'}" if paper else "-"
        if paper and (paper.code_gmacs or paper.code_params):
            paper_cost += f" (code: {paper.code_params or '-'} / {paper.code_gmacs or '-'})"
        paper_top1 = str(paper.top1) if paper and paper.top1 else "-"
        diff = f"{check['max_abs_diff']:.1e}" if check else "-"
        rows.append(
            f"| `{name}` | {stats.params_m:.2f} | {stats.gmacs:.2f} | {paper_cost} | {paper_top1} "
            f"| {', '.join(tags) or '-'} | {diff} |"
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
