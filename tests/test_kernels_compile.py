"""Every Triton launch the models make, compiled for A100 (sm_80) and H100 / H200 (sm_90) without a GPU.

The launches come from the wrappers themselves (:mod:`vitzoo.kernel_launches` runs models on the meta device at 224
and 512 and replays each attention call through its Triton backend's launch code, forward and backward, batch 64,
fp16 / bf16 / fp32), so this cannot drift from what runs. Each is compiled with Triton's compiler and the ptxas it
bundles; registers and spills are ptxas' report, shared memory the kernel's.

The test session runs Triton in its interpreter (``tests/conftest.py``), whose kernels cannot be compiled for a GPU,
so the compiling runs in a child process without ``TRITON_INTERPRET``, through ``benchmarks/kernel_resources.py``.
Every launch is recorded once per candidate tile its autotuner may pick.

The committed ``benchmarks/results/kernel_resources.json`` holds every distinct kernel of every registered model in
fp16, bf16 and fp32, compiled (``-m slow`` redoes it: hours on 2 cores). The default run records the launches of one
model per family (its first variant) in bf16 (the training dtype) and fp32, checks that each launch configuration
is in the committed results and fits there, and compiles the largest tile of each kernel and dtype set again: it
must fit, and give the committed registers and shared memory when the Triton version is the committed one.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import timm
import torch

import vitzoo  # noqa: F401
from vitzoo.kernel_launches import family, one_per_family
from vitzoo.ops import _triton

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "kernel_resources.py"
COMMITTED = ROOT / "benchmarks" / "results" / "kernel_resources.json"
TARGETS = (80, 90)
# a kernel that takes longer than this to compile stalls a user's first training step (a 2-core CI machine is
# several times slower than a GPU host, so this is generous)
MAX_COMPILE_S = 120.0
KERNELS = {
    "window_fwd_kernel", "window_bwd_kernel", "window_bwd_dq_kernel",
    "halo_fwd_kernel", "halo_bwd_kernel", "routed_fwd_kernel", "routed_bwd_kernel",
}  # fmt: skip


def compiling_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("TRITON_INTERPRET", None)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    return env


def compile_models(out: Path, *args: str, timeout: int) -> dict:
    """Run the script; its JSON: ``records`` (the compiled launches) and ``found`` (every launch configuration)."""
    jobs = str(min(2, os.cpu_count() or 1))
    cmd = [sys.executable, str(SCRIPT), "--jobs", jobs, "--out", str(out), *args]
    subprocess.run(cmd, env=compiling_env(), check=True, timeout=timeout, cwd=ROOT, capture_output=True)
    return json.loads(out.with_suffix(".json").read_text())


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("kernels") / "kernel_resources"
    args = ("--one-per-family", "--per-config", "--largest-tiles", "--dtypes", "bf16", "fp32")
    return compile_models(out, *args, timeout=1800)


@pytest.fixture(scope="module")
def records(quick_run):
    return quick_run["records"]


@pytest.fixture(scope="module")
def committed():
    return json.loads(COMMITTED.read_text())


def assert_fit(records: list[dict], capability: int) -> None:
    bad = [
        f"{r['kernel']} [{r['config']}] from {r['model']}@{r['img_size']}: {r['registers']} regs, spills "
        f"{r['spill_stores']}/{r['spill_loads']} B, shared {r['shared_bytes']} B"
        for r in records
        if r["capability"] == capability and not r["fits"]
    ]
    assert not bad, f"{len(bad)} launches do not fit sm_{capability}:\n" + "\n".join(bad)


def test_one_model_per_family_covers_every_family():
    names = one_per_family()
    assert {family(n) for n in names} == {family(n) for n in timm.list_models("vitzoo_*")}
    assert len(names) == len(set(map(family, names)))


def test_every_kernel_is_launched_in_every_dtype(quick_run, records):
    assert {kernel for kernel, _ in quick_run["found"]} == KERNELS
    assert {r["kernel"] for r in records} == KERNELS, "the largest tile of every kernel is compiled"
    for dtype in ("bfloat16", "float32"):
        assert any(f"dtypes={dtype}" in r["config"] for r in records)
    assert {r["capability"] for r in records} == set(TARGETS)
    assert {r["img_size"] for r in records} <= {224, 512}


def test_the_committed_results_hold_every_launch_and_all_fit(quick_run, committed):
    """What the models launch now was compiled in the committed full run, and fits both targets there."""
    compiled = {}
    for r in committed["records"]:
        compiled.setdefault((r["kernel"], r["config"]), []).append(r)
    missing = [f"{kernel} [{config}]" for kernel, config in quick_run["found"] if (kernel, config) not in compiled]
    assert not missing, (
        f"{len(missing)} launches are not in {COMMITTED.name}; rerun benchmarks/kernel_resources.py:\n"
        + "\n".join(missing[:20])
    )
    for capability in TARGETS:
        assert_fit(committed["records"], capability)
    assert {r["capability"] for r in committed["records"]} == set(TARGETS)


def test_a_fresh_compile_gives_the_committed_resources(records, committed):
    if committed["meta"]["triton"] != __import__("triton").__version__:
        pytest.skip(f"the committed results are from Triton {committed['meta']['triton']}")
    stored: dict[tuple, set] = {}  # launches differing only in which strides are multiples of 16 share a config
    for r in committed["records"]:
        stored.setdefault((r["kernel"], r["config"], r["capability"]), set()).add((r["registers"], r["shared_bytes"]))
    for r in records:
        old = stored[(r["kernel"], r["config"], r["capability"])]
        assert (r["registers"], r["shared_bytes"]) in old, (r, old)


@pytest.mark.parametrize("capability", TARGETS)
def test_compiles_without_spills_within_shared_memory(records, capability):
    assert_fit(records, capability)


def test_compile_time_is_bounded(records):
    assert not [(r["kernel"], r["config"], r["compile_s"]) for r in records if r["compile_s"] > MAX_COMPILE_S]


@pytest.mark.slow
def test_every_model_launch_fits_both_targets(tmp_path):
    found = compile_models(tmp_path / "kernel_resources", timeout=7200)["records"]
    assert {r["config"].split("dtypes=")[1].split("/")[0] for r in found} >= {"float16", "bfloat16", "float32"}
    for capability in TARGETS:
        assert_fit(found, capability)
    assert not [r for r in found if r["compile_s"] > MAX_COMPILE_S]


def test_resources_are_read_from_the_compiler():
    """A launch that cannot fit is reported as such: the numbers come from ptxas and the kernel, not a table."""
    code = textwrap.dedent(
        """
        import json, torch
        from vitzoo.ops import _triton
        from vitzoo.ops._triton import aot
        from vitzoo.ops.window import triton as window_triton

        q, k, v = (torch.empty(64, 56, 56, 3, 32, dtype=torch.float16, device="meta") for _ in range(3))
        with _triton.record_launches() as recorded:
            window_triton.record(q, k, v, (7, 7), scale=0.2)
        fwd = recorded[0]
        # the same kernel with 128 x 128 tiles on one warp needs far more than 255 registers a thread
        greedy = _triton.Launch(fwd.kernel, fwd.grid, fwd.args, dict(fwd.kwargs, BLOCK_M=128, BLOCK_N=128, num_warps=1))
        print(json.dumps([aot.compile_launch(fwd, 90).as_dict(), aot.compile_launch(greedy, 90).as_dict()]))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", code], env=compiling_env(), check=True, capture_output=True, text=True, timeout=600
    )
    fits, spilled = json.loads(done.stdout.strip().splitlines()[-1])
    assert fits["fits"] and fits["registers"] > 0 and fits["shared_bytes"] > 0
    assert not spilled["fits"] and spilled["spill_stores"] > 0


def test_recording_makes_the_launches_a_real_call_chooses_from(monkeypatch):
    """A call records every candidate tile of each launch, rule's choice first, and runs one of them: the first,
    deterministically, when it does not autotune (here in Triton's interpreter)."""
    if not _triton.interpreting():
        pytest.skip("checked in the interpreter")
    from vitzoo.ops.window import triton as window_triton

    q, k, v = (torch.randn(1, 16, 16, 2, 16) for _ in range(3))
    ran = []
    real_run = _triton.run_tile

    def spy(kernel, grid, args, options):
        ran.append((kernel.fn.__name__, tuple(grid(options)), options))
        return real_run(kernel, grid, args, options)

    monkeypatch.setattr(_triton, "run_tile", spy)
    window_triton.forward(q, k, v, (8, 8), scale=0.25)
    meta = tuple(torch.empty_strided(t.shape, t.stride(), device="meta") for t in (q, k, v))
    with _triton.record_launches() as recorded:
        window_triton.record(*meta, (8, 8), scale=0.25)
    forward = [r for r in recorded if r.kernel.fn.__name__ == "window_fwd_kernel"]
    assert len(forward) > 1, "a 64-token window has more than one candidate tile"
    assert [(forward[0].kernel.fn.__name__, forward[0].grid, forward[0].kwargs)] == ran
    tiles = {(r.kwargs["BLOCK_M"], r.kwargs["num_warps"], r.kwargs["num_stages"]) for r in forward}
    assert len(tiles) == len(forward), "candidates are distinct"
