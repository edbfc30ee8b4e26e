"""Generate one model card per registered model in ``model_cards/`` (``vitzoo.model_card``).

The cards quote the committed CPU benchmark (``benchmarks/results/cpu_models.json``), the committed check against the
official code (``benchmarks/results/official_parity.json``) and, where measured, the input-size benchmark
(``benchmarks/results/cpu_resolution.json``); each benchmark file records which model its rows are compared with.
Usage: ``python tools/gen_model_cards.py``; ``--check`` exits 1 when a committed card is stale.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys

import timm

import vitzoo  # noqa: F401  (registers the models)
from vitzoo.model_card import BenchResults, card_dict, render_card

ROOT = pathlib.Path(__file__).resolve().parents[1]
CARDS = ROOT / "model_cards"
RESULTS = ROOT / "benchmarks" / "results"


def _load(name: str) -> dict:
    path = RESULTS / name
    return json.loads(path.read_text()) if path.exists() else {}


def committed_results() -> tuple[BenchResults, dict]:
    """The committed benchmark rows with their pairings, and the parity results keyed by model."""
    models, by_size = _load("cpu_models.json"), _load("cpu_resolution.json")
    bench = BenchResults(
        rows=models.get("results", []),
        official=models.get("meta", {}).get("official", {}),
        by_size=by_size.get("results", []),
        counterparts=by_size.get("meta", {}).get("counterparts", {}),
    )
    return bench, _load("official_parity.json").get("results", {})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="exit 1 if a committed card is stale")
    args = parser.parse_args(argv)
    bench, parity = committed_results()
    stale = []
    CARDS.mkdir(exist_ok=True)
    for name in timm.list_models("vitzoo_*"):
        text = render_card(card_dict(name, bench, parity.get(name)))
        path = CARDS / f"{name}.md"
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(path.name)
        else:
            path.write_text(text)
    if stale:
        print(f"stale model cards: {stale}; run python tools/gen_model_cards.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
