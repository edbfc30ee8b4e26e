#!/usr/bin/env bash
# One-shot GPU check for a lent GPU machine (`make gpu-check`): environment, the `gpu`-marked op tests, the op
# benchmark and the model matrix, bounded to GPU_CHECK_BUDGET_S seconds in all (default 450, under 8 minutes).
#
#   bash benchmarks/gpu_check.sh             # run it (on the GPU machine, from a copy of the working tree)
#   bash benchmarks/gpu_check.sh --dry-run   # check the environment, print every command and its worst-case bound
#
# Environment: PY (default python3: the GPU machine's image python, not .venv, which does not travel), OUT (where
# the results go; the device tool sets it, default build/gpu_check), GPU_CHECK_BUDGET_S (default 450),
# GPU_CHECK_SKIP (steps to leave out, for a rerun: any of gpu_tests bench_ops bench_model_matrix).
#
# vitzoo runs from the working tree through PYTHONPATH, uninstalled: nothing can be installed on that machine, and
# neither pyproject's entry points (the `vitzoo` CLI) nor its extras are used. The image's timm must meet
# pyproject's `timm>=` floor; the environment step warns if it does not (a newer timm cannot be installed there;
# it would have to travel as a wheel, see the device README). The image has no NATTEN and no OpenMMLab packages:
# NATTEN tests skip, and the collected test files import neither at module level.
#
# Results, at most 8 files in $OUT (the device tool's limit), all flat:
#   gpu_env.txt                      devices and versions, then each step's exit status and time, and the last
#                                    lines of the benchmarks' logs
#   gpu_tests.txt                    pytest output of the gpu-marked tests
#   gpu_ops.{json,md,png}            benchmarks/bench_ops.py
#   gpu_model_matrix.{json,md,png}   benchmarks/bench_model_matrix.py
# Every step runs under `timeout`; one that fails or runs out of time is recorded and the next one still runs. The
# benchmarks rewrite their JSON and Markdown after every case / model, so a step killed at its bound keeps what it
# measured (only its PNG is then missing), and each gets a --max-seconds below its bound so it normally ends itself.

set -uo pipefail # no -e: a failed step is a result to record, not a reason to skip the rest

DRY_RUN=0
for arg in "$@"; do
    case $arg in
    --dry-run) DRY_RUN=1 ;;
    -h | --help)
        sed -n '2,/^$/s/^# \{0,1\}//p' "$0"
        exit 0
        ;;
    *)
        echo "gpu_check.sh: unknown argument $arg (known: --dry-run)" >&2
        exit 2
        ;;
    esac
done

cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 2
ROOT=$PWD
PY=${PY:-python3}
OUT=${OUT:-$ROOT/build/gpu_check}
BUDGET=${GPU_CHECK_BUDGET_S:-450}
SKIP=" ${GPU_CHECK_SKIP:-} "
KILL_AFTER=10 # seconds between timeout's TERM and KILL, counted against the budget
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
LOGS=$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX") # full step logs stay here: $OUT holds at most 8 files
trap 'rm -rf "$LOGS"' EXIT
ENV_TXT=$OUT/gpu_env.txt

export PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH}
export PYTHONUNBUFFERED=1
export MPLBACKEND=Agg

STEPS=()   # "name|rc|seconds|note" per step, for the summary
FAILED=0

# The test files that hold the gpu-marked tests; only those present in this tree are passed to pytest.
TEST_FILES=()
for f in tests/test_ops_triton.py tests/test_ops.py tests/test_ops_window_natten.py tests/test_ops_window_shift.py; do
    [[ -f $f ]] && TEST_FILES+=("$f")
done

# bound CAP: sets T to the seconds the next step may run, CAP or what is left of the budget (minus its kill grace and
# the summary's few seconds), whichever is smaller.
bound() {
    local left=$((BUDGET - SECONDS - KILL_AFTER - 5))
    T=$(($1 < left ? $1 : left))
}

# step NAME LOG CMD...: run CMD under `timeout $T`, its output on the console and appended to LOG; record the result.
step() {
    local name=$1 log=$2
    shift 2
    if [[ $SKIP == *" $name "* ]]; then
        echo "== $name: skipped (GPU_CHECK_SKIP)" | tee -a "$log"
        STEPS+=("$name|-|0|skipped: GPU_CHECK_SKIP")
        return
    fi
    if ((T < 20)); then
        echo "== $name: skipped, ${T}s of the ${BUDGET}s budget left" | tee -a "$log"
        STEPS+=("$name|-|0|skipped: budget spent")
        FAILED=1
        return
    fi
    echo "== $name (at most ${T}s): $*" | tee -a "$log"
    if ((DRY_RUN)); then
        printf '+ timeout --kill-after=%s %s' "$KILL_AFTER" "$T"
        printf ' %q' "$@"
        printf '\n'
        STEPS+=("$name|-|0|dry run")
        SECONDS=$((SECONDS + T + KILL_AFTER)) # the next step is bounded as if this one ran to its bound
        return
    fi
    local start=$SECONDS rc note=ok
    timeout --kill-after="$KILL_AFTER" "$T" "$@" 2>&1 | tee -a "$log"
    rc=${PIPESTATUS[0]}
    case $rc in
    0) ;;
    124 | 137) note="timed out after ${T}s" ;;
    *) note=failed ;;
    esac
    ((rc == 0)) || FAILED=1
    STEPS+=("$name|$rc|$((SECONDS - start))|$note")
    echo "== $name: exit $rc after $((SECONDS - start))s ($note)"
}

# ---- 1. environment -------------------------------------------------------------------------------------------
{
    echo "# vitzoo gpu_check, $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "root: $ROOT"
    echo "git: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo 'not a git checkout') $(
        git -C "$ROOT" status --porcelain 2>/dev/null | grep -q . && echo '(with uncommitted changes)'
    )"
    # The copy on the GPU machine may come without .git: this hash of the sources identifies the tree either way
    # (the same command here gives the same hash for the same files).
    echo "sources: sha256 $(find vitzoo benchmarks tests -name '*.py' -print0 | LC_ALL=C sort -z | xargs -0 sha256sum |
        sha256sum | cut -c1-16) over vitzoo/ benchmarks/ tests/ *.py"
    echo "python: $(command -v "$PY") ($("$PY" -V 2>&1))"
    echo "PYTHONPATH: $PYTHONPATH"
    echo
    echo "## nvidia-smi -L"
    if command -v nvidia-smi >/dev/null; then
        nvidia-smi -L 2>&1
        nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv 2>&1
    else
        echo "nvidia-smi: not on the PATH"
    fi
    echo
    echo "## python"
} >"$ENV_TXT"
T=45
ENV_RC=0
timeout --kill-after="$KILL_AFTER" "$T" "$PY" - "$ROOT" >>"$ENV_TXT" 2>&1 <<'PYEOF' || ENV_RC=$?
import importlib.metadata
import importlib.util
import re
import sys
from pathlib import Path

import torch

root = Path(sys.argv[1])
print("torch", torch.__version__, "cuda", torch.version.cuda)
for name in ("triton", "timm", "torchvision", "pytest", "pytest-timeout", "pytest-xdist", "matplotlib"):
    try:
        print(name, importlib.metadata.version(name))
    except importlib.metadata.PackageNotFoundError:
        print(name, "not installed")
floor = re.search(r'"timm>=([0-9.]+)"', (root / "pyproject.toml").read_text())
have = tuple(int(p) for p in re.findall(r"\d+", importlib.metadata.version("timm"))[:3])
if floor and have < tuple(int(p) for p in floor.group(1).split(".")):
    print(f"WARNING: timm is older than pyproject's timm>={floor.group(1)}; it cannot be upgraded on this machine")
    print("         (no registry): carry a wheel (device README) or expect failures")
for name in ("natten", "mmengine", "mmcv", "mmseg", "mmdet"):
    print(f"{name}: {'present' if importlib.util.find_spec(name) else 'absent'}")
print("cuda available:", torch.cuda.is_available())
if torch.cuda.is_available():
    props = torch.cuda.get_device_properties(0)
    print("device:", torch.cuda.get_device_name(0), f"sm_{props.major}{props.minor},", props.multi_processor_count,
          "SMs,", round(props.total_memory / 2**30, 1), "GiB")  # fmt: skip

# last, so that a tree whose vitzoo fails to import still gets the facts above and runs the steps (which then
# record the error)
import vitzoo  # noqa: E402

print("vitzoo", vitzoo.__version__, "from", vitzoo.__file__)
if not Path(vitzoo.__file__).resolve().is_relative_to(root):
    print(f"ERROR: vitzoo was imported from outside the working tree {root}")
    sys.exit(3)
PYEOF
cat "$ENV_TXT"
CUDA=0
grep -q '^cuda available: True' "$ENV_TXT" && CUDA=1
STEPS+=("environment|$ENV_RC|$SECONDS|$( ((ENV_RC == 0)) && echo ok || echo failed)")
# A dry run prints the worst case: the bounds each step gets when every step before it runs to its own bound.
((DRY_RUN)) && SECONDS=$((T + KILL_AFTER))
((ENV_RC == 0)) || FAILED=1
if ((!CUDA && !DRY_RUN)); then
    echo "gpu_check.sh: no CUDA device here; the GPU tests would only skip and the benchmarks need one" | tee -a "$ENV_TXT"
    exit 1
fi

# ---- 2. gpu-marked tests ----------------------------------------------------------------------------------------
# -m gpu overrides pyproject's addopts '-m not slow and not gpu'; natten tests skip (importorskip / skipif) without it.
PYTEST=("$PY" -m pytest -q -m gpu -p no:cacheprovider)
grep -q '^pytest-timeout [0-9]' "$ENV_TXT" && PYTEST+=(--timeout 60)
# Four workers compile the Triton kernels in parallel on the machine's 16 cores; all share the one GPU.
grep -q '^pytest-xdist [0-9]' "$ENV_TXT" && PYTEST+=(-n 4)
bound 100
: >"$OUT/gpu_tests.txt"
step gpu_tests "$OUT/gpu_tests.txt" "${PYTEST[@]}" "${TEST_FILES[@]}"

# ---- 3. op benchmark --------------------------------------------------------------------------------------------
# Every op and backend at the families' stage shapes, 224 and 512 inputs, batch 64, bf16. Flex compiles per shape,
# hence the short --iters; --max-seconds leaves 30 s of the bound for the case under way and the PNG.
bound 110
step bench_ops "$LOGS/bench_ops.log" "$PY" benchmarks/bench_ops.py --device cuda --batch 64 --dtype bf16 \
    --sizes 224 512 --iters 10 --warmup 3 --max-seconds $((T - 30)) --out-dir "$OUT"

# ---- 4. model matrix --------------------------------------------------------------------------------------------
# Every family, auto and reference backends, eager bf16, then torch.compile bf16 (auto backends only: compiling a
# model for inference and training takes tens of seconds), inference and a training step, next to timm's Swin-T and
# ConvNeXt-T (measured first in each setting so a time-limited run has its baselines). The compiled families that do
# not fit in the budget are listed as "not run" rows. --max-seconds leaves 75 s for the compilation under way.
bound 600
step bench_model_matrix "$LOGS/bench_model_matrix.log" "$PY" benchmarks/bench_model_matrix.py --device cuda \
    --settings eager-bf16 compile-bf16 --backends auto reference --compile-backends auto \
    --peers Swin-T ConvNeXt-T --peers-first --batch 64 --iters 5 --warmup 2 --max-seconds $((T - 75)) \
    --out-dir "$OUT"

# ---- summary ----------------------------------------------------------------------------------------------------
{
    echo
    echo "## steps ($SECONDS s of the ${BUDGET}s budget$( ((DRY_RUN)) && echo ', worst case'))"
    echo "| step | exit | seconds | note |"
    echo "|---|---|---|---|"
    for s in "${STEPS[@]}"; do
        IFS='|' read -r name rc secs note <<<"$s"
        echo "| $name | $rc | $secs | $note |"
    done
    for log in "$LOGS"/*.log; do
        [[ -f $log ]] || continue
        echo
        echo "## last 60 lines of $(basename "$log")"
        tail -n 60 "$log"
    done
} >>"$ENV_TXT"
sed -n '/^## steps/,$p' "$ENV_TXT" | head -n $((${#STEPS[@]} + 3))
echo "results in $OUT:"
ls -l "$OUT"
count=$(find "$OUT" -type f | wc -l)
((count <= 8)) || echo "WARNING: $count files in $OUT; the device tool brings back at most 8"
exit "$FAILED"
