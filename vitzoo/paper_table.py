"""What the papers / official READMEs report for each variant, kept as printed.

Numbers are strings so their printed precision is kept: a test allows the paper's rounding on top of the
tolerance (``"0.9"`` GMACs covers 0.85-0.95). ``top1`` is ImageNet-1k top-1 at ``img_size`` as the authors
report it; vitzoo has not re-measured accuracy.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PaperEntry:
    params_m: str  # millions, as printed
    gmacs: str  # multiply-accumulates at img_size ("FLOPs" in these papers), as printed
    top1: float | None
    img_size: int
    source: str


PAPER_TABLE: dict[str, PaperEntry] = {
    "vitzoo_van_b0": PaperEntry("4.1", "0.9", 75.4, 224, "VAN-Classification README"),
    "vitzoo_van_b1": PaperEntry("13.9", "2.5", 81.1, 224, "VAN-Classification README"),
    "vitzoo_van_b2": PaperEntry("26.6", "5.0", 82.8, 224, "VAN-Classification README"),
    "vitzoo_van_b3": PaperEntry("44.8", "9.0", 83.9, 224, "VAN-Classification README"),
    "vitzoo_van_b4": PaperEntry("60.28", "12.22", 84.13, 224, "mmcls-0.x README (official weights re-evaluated)"),
    "vitzoo_van_b5": PaperEntry("90.0", "17.2", None, 224, "mmcls-0.x model table (not re-checked); IN-22k only"),
    # No B6 cost is printed in a source we could check: these are counts of the official van.py, not the paper's.
    "vitzoo_van_b6": PaperEntry("199.83", "38.7", None, 224, "counted from official van.py (no verified paper value)"),
    "vitzoo_biformer_t": PaperEntry("13.1", "2.2", 81.4, 224, "BiFormer README"),
    "vitzoo_biformer_s": PaperEntry("25.5", "4.5", 83.8, 224, "BiFormer README"),
    "vitzoo_biformer_b": PaperEntry("56.8", "9.8", 84.3, 224, "BiFormer README"),
}


def half_unit(printed: str) -> float:
    """Half of the last printed digit: the rounding a printed value can hide (``"0.9"`` -> 0.05)."""
    decimals = len(printed.split(".")[1]) if "." in printed else 0
    return 0.5 * 10**-decimals
