"""Print the last value a training run logged for a metric (mIoU by default), from mmengine's scalar log.

    python tools/final_metric.py WORK_DIR [--key mIoU]

Reads the newest ``WORK_DIR/<timestamp>/vis_data/scalars.json`` (one JSON record per logged step); a resumed run
writes a new timestamped folder, so the newest one holds the final evaluation.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def final_metric(work_dir: str | Path, key: str = "mIoU") -> tuple[int, float, Path]:
    """``(step, value, log file)`` of the last record of ``key`` in the run's newest scalar log.

    Raises FileNotFoundError when the folder has no scalar log and KeyError when the log never records ``key``.
    """
    logs = sorted(Path(work_dir).glob("*/vis_data/scalars.json"), key=lambda p: p.stat().st_mtime)
    if not logs:
        raise FileNotFoundError(f"no */vis_data/scalars.json under {work_dir}: has the run logged anything?")
    records = [json.loads(line) for line in logs[-1].read_text().splitlines() if line.strip()]
    found = [r for r in records if key in r]
    if not found:
        raise KeyError(f"{logs[-1]} has no {key!r} record (was the model evaluated?)")
    return int(found[-1]["step"]), float(found[-1][key]), logs[-1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("work_dir")
    parser.add_argument("--key", default="mIoU")
    args = parser.parse_args(argv)
    try:
        step, value, log = final_metric(args.work_dir, args.key)
    except (FileNotFoundError, KeyError) as e:
        print(f"error: {e.args[0]}", file=sys.stderr)
        return 1
    print(f"{args.key} after {step} iterations: {value:.2f} (log: {log})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
