"""Measure every registered model at 224 and at its default input size, and store the table ``vitzoo.stats`` reads.

Usage: ``python tools/gen_stats_table.py`` (a few minutes on 2 cores). The table is keyed by a fingerprint of the
package's sources, so it only ever answers for the code it was measured on; run this after changing a model, before
``tools/gen_model_table.py`` and ``tools/gen_model_cards.py``, so that they, ``vitzoo list`` and the tests read it.
"""

from __future__ import annotations

import sys

import timm

import vitzoo  # noqa: F401  (registers the models)
from vitzoo.benchmark import default_img_size
from vitzoo.stats import STATS_TABLE, write_stats_table


def main() -> int:
    sizes = {name: (224, default_img_size(name)) for name in timm.list_models("vitzoo_*")}
    write_stats_table(sizes)
    print(f"wrote {STATS_TABLE} ({sum(len(set(s)) for s in sizes.values())} measurements)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
