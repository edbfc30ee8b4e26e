"""Every Triton launch the models make, compiled for A100 (sm_80) and H100 / H200 (sm_90) without a GPU.

The launches come from the wrappers themselves (:mod:`vitzoo.kernel_launches` runs models on the meta device at 224
and 512 and replays each attention call through its Triton backend's launch code, forward and backward, batch 64,
fp16 / bf16 / fp32), so this cannot drift from what runs. Each distinct kernel is compiled with Triton's compiler
and the ptxas it bundles; registers and spills are ptxas' report, shared memory the kernel's.

The default run takes one model per family (its first variant) and one launch per launch configuration (block sizes,
warps, stages, flags, dtypes), a few minutes on 2 cores; ``-m slow`` compiles every distinct kernel of every
registered model (as ``benchmarks/kernel_resources.py`` does for the committed table), about 12 minutes.
"""

from __future__ import annotations

import os

import pytest
import timm
import torch

import vitzoo  # noqa: F401
from vitzoo.kernel_launches import distinct_launches, family, model_launches
from vitzoo.ops import _triton
from vitzoo.ops._triton import aot

TARGETS = (80, 90)
# a kernel that takes longer than this to compile stalls a user's first training step (a 2-core CI machine is
# several times slower than a GPU host, so this is generous)
MAX_COMPILE_S = 120.0


DTYPES = (torch.float16, torch.bfloat16, torch.float32)


def one_per_family() -> list[str]:
    first: dict[str, str] = {}
    for name in sorted(timm.list_models("vitzoo_*")):
        first.setdefault(family(name), name)
    return sorted(first.values())


def compile_for_targets(launches):
    jobs = [(ml.launch, cc) for ml in launches for cc in TARGETS]
    results = aot.compile_all(jobs, processes=min(2, os.cpu_count() or 1))
    return [(ml, res) for ml, res in zip([ml for ml in launches for _ in TARGETS], results)]


@pytest.fixture(scope="module")
def launches():
    found = model_launches(one_per_family(), (224, 512), DTYPES)
    configs = {}
    for ml in found:  # one launch per configuration; the slow test compiles every stride specialisation too
        configs.setdefault((ml.launch.kernel.fn.__name__, aot.describe(ml.launch)), ml)
    return list(configs.values())


@pytest.fixture(scope="module")
def resources(launches):
    return compile_for_targets(launches)


def assert_fit(rows, capability):
    bad = [
        f"{r.kernel} [{r.config}] from {ml.model}@{ml.img_size}: {r.registers} regs, "
        f"spills {r.spill_stores}/{r.spill_loads} B, shared {r.shared_bytes} B (limit {aot.SHARED_LIMIT[capability]})"
        for ml, r in rows
        if r.capability == capability and not r.fits
    ]
    assert not bad, f"{len(bad)} launches do not fit sm_{capability}:\n" + "\n".join(bad)


def test_one_model_per_family_covers_every_family():
    names = one_per_family()
    assert {family(n) for n in names} == {family(n) for n in timm.list_models("vitzoo_*")}
    assert len(names) == len(set(map(family, names)))


def test_every_kernel_is_launched(launches):
    kernels = {ml.launch.kernel.fn.__name__ for ml in launches}
    expected = {"window_fwd_kernel", "window_bwd_kernel", "window_bwd_dq_kernel", "halo_fwd_kernel"}
    expected |= {"halo_bwd_kernel", "routed_fwd_kernel", "routed_bwd_kernel"}
    assert kernels == expected
    dtypes = {str(a.dtype) for ml in launches for a in ml.launch.args[:1]}
    assert dtypes == {"torch.float16", "torch.bfloat16", "torch.float32"}


@pytest.mark.parametrize("capability", TARGETS)
def test_compiles_without_spills_within_shared_memory(resources, capability):
    assert any(r.capability == capability for _, r in resources)
    assert_fit(resources, capability)


def test_compile_time_is_bounded(resources):
    slow = [(r.kernel, r.config, r.capability, round(r.compile_s)) for _, r in resources if r.compile_s > MAX_COMPILE_S]
    assert not slow


@pytest.mark.slow
def test_every_model_launch_fits_both_targets():
    found = distinct_launches(model_launches(sorted(timm.list_models("vitzoo_*")), (224, 512), DTYPES))
    rows = compile_for_targets(found)
    for capability in TARGETS:
        assert_fit(rows, capability)
    assert not [r for _, r in rows if r.compile_s > MAX_COMPILE_S]


def test_resources_are_read_from_the_compiler():
    """A launch that cannot fit is reported as such: the numbers come from ptxas and the kernel, not a table."""
    from vitzoo.ops.window import triton as window_triton

    q, k, v = (torch.empty(64, 56, 56, 3, 32, dtype=torch.float16, device="meta") for _ in range(3))
    with _triton.record_launches() as recorded:
        window_triton.record(q, k, v, (7, 7), scale=0.2)
    forward = recorded[0]
    fits = aot.compile_launch(forward, 90)
    assert fits.fits and fits.registers > 0 and fits.shared_bytes > 0
    # the same kernel with a 128 x 128 tile and one warp needs far more than 255 registers a thread: it spills
    greedy = _triton.Launch(forward.kernel, forward.grid, forward.args, dict(forward.kwargs, BLOCK_M=128, BLOCK_N=128))
    greedy.kwargs.update(num_warps=1)
    spilled = aot.compile_launch(greedy, 90)
    assert not spilled.fits and spilled.spill_stores > 0


def test_halo_refuses_an_fp32_backward_that_would_spill():
    from vitzoo.ops.halo import triton as halo_triton

    q, k, v = (torch.empty(2, 16, 16, 4, 64, device="meta", requires_grad=True) for _ in range(3))
    with _triton.record_launches():  # meta tensors are accepted while recording
        reason = halo_triton.can_run(q, k, v, 8, 2, scale=0.125)
        with torch.no_grad():
            assert halo_triton.can_run(q, k, v, 8, 2, scale=0.125) is None
    assert "fp32 backward" in reason


def test_recording_makes_the_launch_a_real_call_makes(monkeypatch):
    """The recorded launch equals the one the same call makes when it runs (here in Triton's interpreter)."""
    if not _triton.interpreting():
        pytest.skip("checked in the interpreter")
    from vitzoo.ops.window import triton as window_triton

    q, k, v = (torch.randn(1, 8, 8, 2, 16) for _ in range(3))
    ran = []
    real_launch = _triton.launch

    def spy(kernel, grid, *args, **kwargs):
        ran.append((kernel.fn.__name__, tuple(grid), {k: v for k, v in kwargs.items()}))
        return real_launch(kernel, grid, *args, **kwargs)

    monkeypatch.setattr("vitzoo.ops._triton.window.launch", spy)
    window_triton.forward(q, k, v, (4, 4), scale=0.25)
    meta = tuple(torch.empty_strided(t.shape, t.stride(), device="meta") for t in (q, k, v))
    with _triton.record_launches() as recorded:
        window_triton.record(*meta, (4, 4), scale=0.25)
    assert (recorded[0].kernel.fn.__name__, recorded[0].grid, recorded[0].kwargs) == ran[0]
