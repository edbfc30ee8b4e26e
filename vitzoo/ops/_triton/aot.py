"""Ahead-of-time compilation of recorded kernel launches for an NVIDIA target, on any machine (no GPU needed).

A real GPU enforces what Triton's interpreter hides: the shared memory a launch may use, 255 registers per thread,
and register spills to local memory, which make a kernel slow. Triton's wheel bundles ``ptxas``, so a recorded
launch (:class:`vitzoo.ops._triton.Launch`) can be compiled exactly as the GPU would compile it, for any
``GPUTarget``, and its resources read back from the compiler: registers and spill bytes from ``ptxas -v``, shared
memory from the compiled kernel's metadata.

The binding of launch arguments to a specialised signature goes through Triton's own binder (the code a launch
runs), which is internal API: written against Triton 3.8 (the compile test runs there; the GPU image has 3.6).
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import multiprocessing
import re
import time
from collections.abc import Callable

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource, make_backend
from triton.runtime.jit import MockTensor, create_function_from_signature

from . import MAX_REGISTERS, Launch

# shared memory one block may use (opt-in maximum), by compute capability
SHARED_LIMIT = {80: 163 * 1024, 86: 99 * 1024, 89: 99 * 1024, 90: 227 * 1024}

_PTXAS_REGS = re.compile(r"Used (\d+) registers")
_PTXAS_SPILLS = re.compile(r"(\d+) bytes spill stores, (\d+) bytes spill loads")


@dataclasses.dataclass(frozen=True)
class Resources:
    """What one compiled launch needs on its target."""

    kernel: str
    config: str  # the launch's constexprs and num_warps / num_stages, as text
    capability: int
    registers: int
    spill_stores: int
    spill_loads: int
    shared_bytes: int
    compile_s: float

    def as_dict(self) -> dict:
        return dict(dataclasses.asdict(self), fits=self.fits)

    @property
    def fits(self) -> bool:
        """No spills, shared memory within the target's limit and at most 255 registers."""
        return (
            self.spill_stores == 0
            and self.spill_loads == 0
            and self.shared_bytes <= SHARED_LIMIT[self.capability]
            and self.registers <= MAX_REGISTERS
        )


def _mock(arg):
    # tensors become dtype-only stand-ins (pointer 0: 16-byte aligned, as torch's allocations are)
    return MockTensor(arg.dtype) if hasattr(arg, "data_ptr") else arg


def launch_key(launch: Launch) -> tuple:
    """What decides the compiled code of a launch: kernel, specialised signature, constexprs and options."""
    backend = make_backend(GPUTarget("cuda", 90, 32))
    binder = create_function_from_signature(launch.kernel.signature, launch.kernel.params, backend)
    _, specialization, _ = binder(*map(_mock, launch.args), **launch.kwargs)
    options = tuple(sorted((k, v) for k, v in launch.kwargs.items() if not hasattr(v, "data_ptr")))
    return launch.kernel.fn.__name__, tuple(map(str, specialization)), options


def launch_values(launch: Launch) -> dict:
    """Every argument of ``launch`` by its kernel parameter's name, and its launch options (``num_warps``, ...)."""
    values = dict(zip([p.name for p in launch.kernel.params], launch.args))
    values.update(launch.kwargs)
    return values


def launch_dtypes(launch: Launch) -> str:
    """The dtypes of the launch's tensor arguments, sorted and joined (``bfloat16/float32``)."""
    return "/".join(sorted({str(a.dtype).removeprefix("torch.") for a in launch.args if hasattr(a, "data_ptr")}))


def describe(launch: Launch) -> str:
    """The launch's constexprs and options in one line (``BLOCK_M=64 ... num_warps=4``)."""
    names = [p.name for p in launch.kernel.params if p.is_constexpr]
    values = launch_values(launch)
    parts = [f"{n}={values[n]}" for n in names if n in values]
    parts += [f"{k}={launch.kwargs[k]}" for k in ("num_warps", "num_stages", "maxnreg") if k in launch.kwargs]
    return " ".join([*parts, "dtypes=" + launch_dtypes(launch)])


def compile_launch(launch: Launch, capability: int) -> Resources:
    """Compile ``launch`` for ``sm_<capability>`` and read its resources from ptxas and the kernel metadata."""
    target = GPUTarget("cuda", capability, 32)
    backend = make_backend(target)
    kernel = launch.kernel
    binder = create_function_from_signature(kernel.signature, kernel.params, backend)
    bound, specialization, options = binder(*map(_mock, launch.args), **launch.kwargs)
    options, signature, constexprs, attrs = kernel._pack_args(backend, launch.kwargs, bound, specialization, options)
    source = ASTSource(kernel, signature, constexprs, attrs)
    log = io.StringIO()
    start = time.perf_counter()
    with _ptxas_log(), contextlib.redirect_stdout(log):
        compiled = triton.compile(source, target=target, options=options.__dict__)
    seconds = time.perf_counter() - start
    text = log.getvalue()
    regs = [int(m) for m in _PTXAS_REGS.findall(text)]
    spills = [(int(s), int(ld)) for s, ld in _PTXAS_SPILLS.findall(text)]
    if not regs:
        raise RuntimeError(f"no ptxas report for {kernel.fn.__name__} (was the kernel taken from Triton's cache?)")
    return Resources(
        kernel=kernel.fn.__name__,
        config=describe(launch),
        capability=capability,
        registers=max(regs),
        spill_stores=sum(s for s, _ in spills),
        spill_loads=sum(ld for _, ld in spills),
        shared_bytes=compiled.metadata.shared,
        compile_s=seconds,
    )


@contextlib.contextmanager
def _ptxas_log():
    """Have ptxas print its resource report, and keep Triton's on-disk cache from skipping ptxas."""
    nvidia = triton.knobs.nvidia
    saved = nvidia.dump_ptxas_log, triton.knobs.compilation.always_compile
    nvidia.dump_ptxas_log = True
    triton.knobs.compilation.always_compile = True
    try:
        yield
    finally:
        nvidia.dump_ptxas_log, triton.knobs.compilation.always_compile = saved


_JOBS: list[tuple[Launch, int]] = []


def _compile_job(i: int) -> Resources:
    return compile_launch(*_JOBS[i])


def compile_all(
    jobs: list[tuple[Launch, int]], processes: int = 1, progress: Callable[[int, int, Resources], None] | None = None
) -> list[Resources]:
    """:func:`compile_launch` of every ``(launch, capability)``, in ``processes`` forked workers (ptxas is serial);
    ``progress(done, total, resources)`` is called after each."""
    if processes <= 1 or len(jobs) < 2:
        results = []
        for launch, cc in jobs:
            results.append(compile_launch(launch, cc))
            if progress is not None:
                progress(len(results), len(jobs), results[-1])
        return results
    _JOBS[:] = jobs  # forked workers inherit the launches: JIT functions do not pickle
    try:
        with multiprocessing.get_context("fork").Pool(processes) as pool:
            results = []
            for res in pool.imap(_compile_job, range(len(jobs)), chunksize=1):
                results.append(res)
                if progress is not None:
                    progress(len(results), len(jobs), res)
            return results
    finally:
        _JOBS.clear()
