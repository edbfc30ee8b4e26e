"""Triton kernels of the 2-D attention ops, and the checks every Triton backend shares.

The kernels run on CUDA devices. With ``TRITON_INTERPRET=1`` set before Triton is imported they also run on CPU
tensors in Triton's interpreter: far too slow for use, which is why automatic backend choice never picks them there,
but exact enough to test every kernel in CPU CI.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import threading
from collections.abc import Callable, Iterator
from typing import Any

import torch

try:
    import triton
except ImportError as e:  # triton ships with Linux CUDA builds of torch; elsewhere the backends report this
    raise ImportError("triton is not installed") from e

DTYPES = (torch.float32, torch.float16, torch.bfloat16)
MAX_REGISTERS = 255  # per thread, on every NVIDIA GPU


def interpreting() -> bool:
    """True when Triton kernels run in the interpreter (on CPU tensors)."""
    return os.environ.get("TRITON_INTERPRET", "0").strip().lower() in {"1", "true", "yes", "on"}


def device_reason(*tensors: torch.Tensor | None) -> str | None:
    """Why the Triton kernels cannot run on these tensors (device, dtype), or ``None`` when they can."""
    real = [t for t in tensors if t is not None]
    dtype, device = real[0].dtype, real[0].device
    if dtype not in DTYPES:
        return f"dtype {dtype} not supported (supports {', '.join(str(d) for d in DTYPES)})"
    if device.type == "cuda" or (device.type == "meta" and recording()):
        return None
    if device.type == "cpu" and interpreting():
        # the interpreter runs kernels through numpy, which has no bfloat16: results would be garbage
        return "Triton's interpreter has no bfloat16" if dtype == torch.bfloat16 else None
    return f"needs a CUDA device (got {device.type}; TRITON_INTERPRET=1 runs the kernels on CPU for testing)"


POISON = False  # tests set this: fresh outputs start as NaN so an element a kernel fails to write shows up


def empty(shape, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """An uninitialised buffer for a kernel to fill completely (NaN-filled while :data:`POISON` is set)."""
    if POISON:
        return torch.full(shape, float("nan"), dtype=dtype, device=device)
    return torch.empty(shape, dtype=dtype, device=device)


def auto_reason(*tensors: torch.Tensor | None) -> str | None:
    """Why automatic choice should pass the Triton kernels over for these tensors: the CPU interpreter is for tests."""
    real = [t for t in tensors if t is not None]
    if real[0].device.type != "cuda":
        return "the Triton interpreter on CPU is for testing; pass backend='triton' to use it"
    return None


def last_dim_contiguous(t: torch.Tensor | None) -> torch.Tensor | None:
    """The kernels index the last dim with unit stride; anything else (rare: views of q, k, v keep it) is copied."""
    return t if t is None or t.stride(-1) == 1 else t.contiguous()


def block_size(n: int, low: int = 16, high: int = 64) -> int:
    """The power of two >= ``n`` clamped to ``[low, high]``: tile sides must be powers of two and >= 16 for dot."""
    size = low
    while size < n and size < high:
        size *= 2
    return size


def dot_precision(dtype: torch.dtype) -> str:
    """fp32 inputs use full-precision dot products (no TF32) so results match the reference to fp32 accuracy.

    They run on the FMA units, not tensor cores: fp32 is the accuracy path (training runs bf16 autocast). Three-pass
    TF32 ("tf32x3") was tried and holds three times the operands: it spilled at every tile size that fits a window.
    """
    return "ieee" if dtype == torch.float32 else "tf32"


@dataclasses.dataclass
class Launch:
    """One kernel launch as a wrapper makes it: the ``@triton.jit`` kernel, its grid, arguments and options."""

    kernel: Any
    grid: tuple[int, ...]
    args: tuple
    kwargs: dict


_recorder = threading.local()


def recording() -> bool:
    """True inside :func:`record_launches`."""
    return getattr(_recorder, "launches", None) is not None


@contextlib.contextmanager
def record_launches() -> Iterator[list[Launch]]:
    """Record the launches the wrappers make instead of running them (the wrappers then accept meta tensors).

    This is how the launches of real model shapes are compiled ahead of time for GPU targets
    (:mod:`vitzoo.ops._triton.aot`) on a machine without one: the configuration compiled is the one a launch picks.
    """
    previous = getattr(_recorder, "launches", None)
    _recorder.launches = []
    try:
        yield _recorder.launches
    finally:
        _recorder.launches = previous


AUTOTUNE_ENV = "VITZOO_TRITON_AUTOTUNE"


def autotuning() -> bool:
    """True when launches with several candidate tiles benchmark them (:func:`launch`).

    Off in Triton's interpreter, where timings mean nothing and the choice must be deterministic, and when
    ``VITZOO_TRITON_AUTOTUNE=0`` is set (for bit-identical reruns across machines: the rule's tile is then used).
    """
    return not interpreting() and os.environ.get(AUTOTUNE_ENV, "1").strip() != "0"


_forced = threading.local()


@contextlib.contextmanager
def forced_candidate(index: int) -> Iterator[None]:
    """Launch candidate ``index`` (clamped to the last) instead of the first, where no autotuning happens: how
    tests run every candidate tile through the interpreter."""
    previous = getattr(_forced, "index", 0)
    _forced.index = index
    try:
        yield
    finally:
        _forced.index = previous


def launch(
    kernel: Callable,
    grid: Callable[[dict], tuple[int, ...]],
    *args: Any,
    tiles: tuple[TileConfig, ...],
    key: tuple[str, ...],
    zeroed: tuple[str, ...] = (),
    **kwargs: Any,
) -> None:
    """Launch ``kernel`` over ``grid(meta)`` at the best of ``tiles``; inside :func:`record_launches`, record each.

    With several tiles and :func:`autotuning` on, the launch goes through ``triton.autotune``: the first call for
    each value of the ``key`` arguments (plus the constexpr flags and the tensors' dtypes) times every tile and keeps
    the fastest. ``zeroed`` names the buffers the kernel accumulates into atomically: the tuner zeroes them before
    each timed run and before the real one. Otherwise the first tile runs (see :func:`forced_candidate`).
    """
    if recording():
        for tile in tiles:
            options = {**kwargs, **tile.options()}
            _recorder.launches.append(Launch(kernel, tuple(grid(options)), args, options))
        return
    if len(tiles) > 1 and autotuning():
        _autotuner(kernel, tiles, (*key, *sorted(kwargs)), zeroed)[grid](*args, **kwargs)
        return
    tile = tiles[min(getattr(_forced, "index", 0), len(tiles) - 1)]
    run_tile(kernel, grid, args, {**kwargs, **tile.options()})


def run_tile(kernel: Callable, grid: Callable[[dict], tuple[int, ...]], args: tuple, options: dict) -> None:
    """``kernel[grid(options)](*args, **options)``: one launch at one tile."""
    kernel[tuple(grid(options))](*args, **options)


_autotuners: dict[tuple, Any] = {}
TUNING_TIMER = None  # tests set this: a stand-in for Triton's timer, ``timer(call, quantiles) -> milliseconds``


def _autotuner(kernel: Callable, tiles: tuple[TileConfig, ...], key: tuple[str, ...], zeroed: tuple[str, ...]):
    """One ``triton.autotune`` wrapper per kernel and candidate set; each keeps its own choice per key."""
    cache_key = (kernel, tiles, key, zeroed)
    if cache_key not in _autotuners:
        configs = [tile.triton_config() for tile in tiles]
        tuner = triton.autotune(configs=configs, key=list(key), reset_to_zero=list(zeroed), do_bench=TUNING_TIMER)
        _autotuners[cache_key] = tuner(kernel)
    return _autotuners[cache_key]


@dataclasses.dataclass(frozen=True)
class TileConfig:
    """How one kernel launch is tiled: query and key tile sizes, warps per program and software-pipeline stages."""

    block_m: int
    block_n: int
    num_warps: int
    num_stages: int
    max_registers: int | None = None  # ptxas' per-thread register ceiling (``maxnreg``); None leaves its default

    def options(self) -> dict[str, int]:
        """The launch keywords (block constexprs and compile options) of this tile."""
        options = dict(BLOCK_M=self.block_m, BLOCK_N=self.block_n, num_warps=self.num_warps, num_stages=self.num_stages)
        if self.max_registers is not None:
            options["maxnreg"] = self.max_registers
        return options

    def triton_config(self) -> triton.Config:
        """This tile as a ``triton.autotune`` candidate."""
        return triton.Config(
            dict(BLOCK_M=self.block_m, BLOCK_N=self.block_n),
            num_warps=self.num_warps,
            num_stages=self.num_stages,
            maxnreg=self.max_registers,
        )

    def candidates(self, dtype: torch.dtype) -> tuple[TileConfig, ...]:
        """This tile (the rule's choice) first, then the variants a launch autotunes over.

        Each variant needs no more registers a thread and no more shared memory than this tile: half the query tile,
        one pipeline stage instead of two, 8 warps instead of 4 in half precision (fp32's FMA dots spill more
        across 8 warps). The key tile never changes, since it decides whether a window backward runs as one pass.
        ``tests/test_kernels_compile.py`` compiles every candidate of every model launch.
        """
        # left to itself, ptxas caps some variants at 128 registers (to fit two blocks of 8 warps on an SM) and
        # spills a few bytes (seen on sm_90): variants may use all 255
        variant = functools.partial(dataclasses.replace, self, max_registers=MAX_REGISTERS)
        variants = [self]
        if self.block_m >= 32:
            variants.append(variant(block_m=self.block_m // 2))
        if self.num_stages > 1:
            variants.append(variant(num_stages=1))
        if self.num_warps == 4 and dtype != torch.float32:
            variants.append(variant(num_warps=8))
        return tuple(variants)


def head_block(*dims: int) -> int:
    """The tile width that holds a whole head dim (a power of two, at least 16 for ``tl.dot``)."""
    return max(16, triton.next_power_of_2(max(dims)))


def meta_like(x: Any) -> Any:
    """``x`` with every tensor (also inside tuples) replaced by a meta tensor of its shape, strides, dtype and
    ``requires_grad``: what :func:`record_launches` takes."""
    if isinstance(x, tuple):
        return tuple(meta_like(y) for y in x)
    if isinstance(x, torch.Tensor):
        return torch.empty_strided(x.shape, x.stride(), dtype=x.dtype, device="meta").requires_grad_(x.requires_grad)
    return x


_verdicts: dict[tuple, str | None] = {}


def resources_reason(record: Callable[..., None], *args: Any, **kwargs: Any) -> str | None:
    """Why the launches that ``record(*args, **kwargs)`` makes (forward and backward) cannot run on this GPU.

    Each launch is compiled for the current device (Triton's ``warmup``: compiled and cached, not run) and checked
    against what the device allows, so a configuration over its shared memory or thread limit sends the op to the
    next backend instead of failing at launch. ``None`` off CUDA (the interpreter has no limits) and when all fit.
    """
    tensors = [a for a in args if isinstance(a, torch.Tensor)]
    if not tensors or tensors[0].device.type != "cuda" or recording():
        return None
    meta_args = tuple(meta_like(a) for a in args)
    meta_kwargs = {k: meta_like(v) for k, v in kwargs.items()}
    with record_launches() as launches:
        record(*meta_args, **meta_kwargs)
    device = tensors[0].device.index if tensors[0].device.index is not None else torch.cuda.current_device()
    for rec in launches:
        key = (device, rec.kernel.fn.__name__, _signature(rec.args), tuple(sorted(rec.kwargs.items())))
        if key not in _verdicts:
            _verdicts[key] = _compile_reason(rec, device)
        if _verdicts[key] is not None:
            return _verdicts[key]
    return None


def _signature(args: tuple) -> tuple:
    return tuple(str(a.dtype) if isinstance(a, torch.Tensor) else type(a).__name__ for a in args)


def _compile_reason(rec: Launch, device: int) -> str | None:
    from triton.runtime.errors import OutOfResources

    mock = tuple(a.dtype if isinstance(a, torch.Tensor) else a for a in rec.args)  # warmup takes dtypes for tensors
    with torch.cuda.device(device):
        try:
            compiled = rec.kernel.warmup(*mock, grid=rec.grid, **rec.kwargs)
            compiled._init_handles()  # loads the binary: raises when the device cannot hold the launch
        except OutOfResources as e:
            return f"{rec.kernel.fn.__name__} {rec.kwargs} does not fit this GPU: {e}"
    return None


def tile_for(
    m: int, n: int, width: int, dtype: torch.dtype, backward: bool, biased: bool, steps: int = 0
) -> TileConfig:
    """Tiles for ``m`` queries and ``n`` keys per work item and head dims up to ``width``: the rule every kernel shares.

    Score tiles are ``block x block`` fp32 and operand tiles ``block x width``, so wide heads take smaller tiles.
    fp32 runs its dots on the FMA units at full precision: a step smaller. The backward keeps more tiles live (dS,
    the dK / dV accumulators) and a bias, mask or gathered position term adds pointer tiles, so a wide or biased
    backward (and a biased fp32 forward) takes a step smaller, and an fp32 backward always works in 16-wide tiles.
    ``steps`` halves further for kernels that hold more. 64 x 64 score tiles, and operand tiles of 2048 elements or
    more (whose 64-bit pointer tiles alone take dozens of registers), need 8 warps: 4 would spill at 255 registers a
    thread. More than one key tile (in half precision) streams keys through two pipeline stages.
    ``tests/test_kernels_compile.py`` compiles every model launch for sm_80 and sm_90 and holds these rules to no
    spills within shared memory.
    """
    fp32 = dtype == torch.float32
    high = 64 if width <= 64 else 32 if width <= 128 else 16
    if fp32:
        high //= 2
    if (backward and (width > 32 or biased)) or (fp32 and biased):
        high //= 2
    if fp32 and backward:
        high = 16
    high = max(16, high >> steps)
    block_m, block_n = block_size(m, 16, high), block_size(n, 16, high)
    big = block_m * block_n >= 64 * 64 or max(block_m, block_n) * width >= 32 * 64
    warps = 8 if big and not fp32 else 4  # FMA-unit (fp32) dots spill more, not less, across 8 warps
    # one key tile has nothing to pipeline; fp32 FMA dots gain nothing from it and spill with it on sm_80
    stages = 1 if n <= block_n or fp32 else 2
    # fp32 FMA dots: left to its default, ptxas caps some of these kernels at 64-96 registers and spills a few bytes
    # (seen on sm_80 and sm_90); the full 255 removes that
    return TileConfig(block_m, block_n, warps, stages, max_registers=MAX_REGISTERS if fp32 else None)
