"""Throughput, latency and memory of a timm model, measured the same way for vitzoo models and their timm peers.

:func:`benchmark_model` builds a model with random weights and times two phases on random data:

* **inference**: ``eval()`` mode under ``torch.inference_mode``;
* **training**: forward, cross-entropy against random labels, backward and an SGD (momentum 0.9) step.

Each phase runs ``warmup`` untimed batches (which absorb ``torch.compile`` and allocator warm-up) and then
``iters`` timed batches, each read off ``torch.utils.benchmark``'s clock, which synchronises CUDA, so per-batch
latencies are real.

Peak memory is reported under a name that says what was measured, because the two devices cannot be measured
alike:

* CUDA: ``peak_cuda_alloc_mb``, ``torch.cuda.max_memory_allocated`` over the whole call (tensors only, not the
  caching allocator's reserve);
* CPU: ``peak_rss_growth_mb``, how much the process's lifetime peak RSS (``resource.getrusage``) rose during the
  call. The kernel only keeps the lifetime peak, so a model that stays under an earlier model's peak in the same
  process reports ``0.0``: run one model per process when this number matters.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import platform
import resource
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import timm
import torch
import torch.nn.functional as F
from torch.utils.benchmark.utils.timer import timer as synchronised_clock
from tqdm import tqdm

from ._io import write_text_atomic
from .stats import count_gmacs, count_params

__all__ = [
    "benchmark_model",
    "environment",
    "median_ms",
    "percentile",
    "resolve_amp_dtype",
    "time_steps",
    "write_json_atomic",
    "write_text_atomic",
]


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (numpy's default method) of ``values``, ``q`` in [0, 100]."""
    if not values:
        raise ValueError("percentile of an empty sequence")
    return torch.tensor(values, dtype=torch.float64).quantile(q / 100).item()


def _peak_rss_mb() -> float:
    # ru_maxrss is KiB on Linux but bytes on macOS.
    scale = 1 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20


def _loadavg() -> float | None:
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else None


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def environment(device: str | torch.device = "cpu") -> dict:
    """Versions and machine facts that a benchmark result is meaningless without."""
    from . import __version__

    device = torch.device(device)
    return {
        "torch": torch.__version__,
        "timm": timm.__version__,
        "vitzoo": __version__,
        "python": platform.python_version(),
        "device": str(device),
        "device_name": _device_name(device),
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
        # Other processes on the same cores distort CPU timings badly (OpenMP threads spin against them): a 1-minute
        # load average well above ``threads`` when the run started or ended means the numbers are suspect.
        "loadavg_1m": _loadavg(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


_AMP_DTYPES = {"float16": torch.float16, "fp16": torch.float16, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}


def resolve_amp_dtype(device: torch.device, amp: bool, amp_dtype: torch.dtype | str | None) -> torch.dtype | None:
    """The autocast dtype that ``amp`` / ``amp_dtype`` ask for on ``device``; ``None`` means no autocast.

    ``amp_dtype`` (a dtype or ``"float16"`` / ``"fp16"`` / ``"bfloat16"`` / ``"bf16"``) turns autocast on by itself;
    ``amp`` alone takes the device's default: float16 on CUDA, bfloat16 on CPU (float16 has no fast CPU kernels).
    """
    if isinstance(amp_dtype, str):
        if amp_dtype not in _AMP_DTYPES:
            raise ValueError(f"amp_dtype must be one of {sorted(_AMP_DTYPES)} or a torch dtype, got {amp_dtype!r}")
        amp_dtype = _AMP_DTYPES[amp_dtype]
    if amp_dtype is not None:
        if amp_dtype not in (torch.float16, torch.bfloat16):
            raise ValueError(f"autocast runs in float16 or bfloat16, got {amp_dtype}")
        return amp_dtype
    if not amp:
        return None
    return torch.float16 if device.type == "cuda" else torch.bfloat16


def _autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def _dtype_label(dtype: torch.dtype | None) -> str:
    return "float32" if dtype is None else f"{str(dtype).removeprefix('torch.')} autocast"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_steps(
    step: Callable[[], None], device: torch.device, warmup: int, iters: int, desc: str, progress: bool
) -> list[float]:
    """Run ``step`` ``warmup`` times untimed, then ``iters`` times; return per-step seconds.

    The clock is the one ``torch.utils.benchmark.Timer`` reads (it synchronises CUDA). ``Timer`` itself does not fit:
    each ``timeit`` call adds two warm-up runs of its own, and it measures at one thread unless told otherwise, while
    per-step times at a fixed count and the process's thread count are what the percentiles here need.
    """
    for _ in range(warmup):
        step()
    _sync(device)
    times = []
    for _ in tqdm(range(iters), desc=desc, disable=not progress, leave=False, dynamic_ncols=True):
        start = synchronised_clock()
        step()
        times.append(synchronised_clock() - start)
    return times


def median_ms(step: Callable[[], None], device: str | torch.device, iters: int, warmup: int) -> float:
    """Median milliseconds of ``step`` over ``iters`` synchronised runs after ``warmup`` untimed ones."""
    times = time_steps(step, torch.device(device), warmup, iters, desc="", progress=False)
    return percentile(times, 50) * 1e3


def _summarise(prefix: str, times: list[float], batch_size: int) -> dict:
    ms = [t * 1e3 for t in times]
    return {
        f"{prefix}_img_s": batch_size * len(times) / sum(times),
        f"{prefix}_ms_mean": sum(ms) / len(ms),
        f"{prefix}_ms_p50": percentile(ms, 50),
        f"{prefix}_ms_p90": percentile(ms, 90),
    }


@contextlib.contextmanager
def _peak_memory(device: torch.device, out: dict) -> Iterator[None]:
    """Record the call's peak memory into ``out`` under a device-specific key (see the module docstring)."""
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        yield
        out["peak_cuda_alloc_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    else:
        before = _peak_rss_mb()
        yield
        out["peak_rss_growth_mb"] = _peak_rss_mb() - before


def _create_kwargs(name: str, img_size: int) -> dict:
    """Ask for ``img_size`` at build time only from models whose cfg says their input size is fixed."""
    cfg = timm.models.get_pretrained_cfg(name)
    if cfg is not None and cfg.fixed_input_size and tuple(cfg.input_size[1:]) != (img_size, img_size):
        return {"img_size": img_size}
    return {}


def default_img_size(name: str) -> int:
    """The square side of the model's default input (the larger side if its default is not square)."""
    cfg = timm.models.get_pretrained_cfg(name)
    return max(cfg.input_size[1:]) if cfg is not None else 224


def benchmark_model(
    name: str,
    batch_size: int = 8,
    img_size: int | None = None,
    *,
    device: str | torch.device = "cpu",
    channels_last: bool = False,
    compile: bool = False,
    amp: bool = False,
    amp_dtype: torch.dtype | str | None = None,
    warmup: int = 2,
    iters: int = 10,
    train: bool = True,
    progress: bool = True,
) -> dict:
    """Measure one model's inference (and optionally training) speed and its peak memory.

    Args:
        name: A timm model name (``import vitzoo`` first to benchmark ``vitzoo_*`` models).
        batch_size: Images per batch.
        img_size: Square input side; ``None`` takes the model's default input size.
        device: ``"cpu"`` or ``"cuda"`` (or a ``torch.device``).
        channels_last: Convert the model and inputs to ``torch.channels_last``.
        compile: Wrap the model in ``torch.compile``; compilation happens during warm-up.
        amp: Run under ``torch.autocast`` in the device's default dtype: bfloat16 on CPU, float16 on CUDA.
        amp_dtype: Run under ``torch.autocast`` in this dtype (``torch.bfloat16`` / ``"bf16"``, ``torch.float16`` /
            ``"fp16"``), whatever ``amp`` says. Training in float16 uses a gradient scaler; bfloat16 needs none.
        warmup: Untimed batches before each timed phase.
        iters: Timed batches per phase.
        train: Also time training steps.
        progress: Show a tqdm bar over the timed batches.

    Returns:
        A flat dict: the settings, ``params_m`` and ``gmacs`` (per image, at ``img_size``), then
        ``infer_img_s`` / ``infer_ms_mean`` / ``infer_ms_p50`` / ``infer_ms_p90``, the same four with a ``train_``
        prefix (``None`` when ``train`` is false), and ``peak_cuda_alloc_mb`` or ``peak_rss_growth_mb``.
    """
    if iters < 1 or warmup < 0 or batch_size < 1:
        raise ValueError(f"need iters >= 1, warmup >= 0 and batch_size >= 1, got {iters}, {warmup}, {batch_size}")
    if compile and warmup < 1:
        raise ValueError("torch.compile compiles on the first batch; use warmup >= 1 so it is not timed")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' was requested but torch.cuda.is_available() is False")
    autocast_dtype = resolve_amp_dtype(device, amp, amp_dtype)
    img_size = img_size or default_img_size(name)
    kwargs = _create_kwargs(name, img_size)

    # Count on the meta device: no weights allocated, and the count is not disturbed by compile or autocast.
    # Some third-party models (the official reference implementations) call .item() while building and cannot
    # be built there; those are counted on the CPU instead.
    try:
        with torch.device("meta"):
            meta_model = timm.create_model(name, **kwargs)
    except (NotImplementedError, RuntimeError):
        meta_model = timm.create_model(name, **kwargs)
    result = {
        "model": name,
        "batch_size": batch_size,
        "img_size": img_size,
        "device": str(device),
        "dtype": _dtype_label(autocast_dtype),
        "channels_last": channels_last,
        "compile": compile,
        "warmup": warmup,
        "iters": iters,
        "params_m": count_params(meta_model) / 1e6,
        "gmacs": count_gmacs(meta_model, img_size),
        "loadavg_1m_at_start": _loadavg(),  # see environment(): contention check
    }
    del meta_model

    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    with _peak_memory(device, result):
        model = timm.create_model(name, **kwargs).to(device=device, memory_format=memory_format)
        runner = torch.compile(model) if compile else model
        x = torch.randn(batch_size, 3, img_size, img_size, device=device).contiguous(memory_format=memory_format)

        model.eval()

        def infer_step() -> None:
            with torch.inference_mode(), _autocast(device, autocast_dtype):
                runner(x)

        times = time_steps(infer_step, device, warmup, iters, f"{name} bs{batch_size} infer", progress)
        result.update(_summarise("infer", times, batch_size))

        if train:
            model.train()
            target = torch.randint(0, model.num_classes, (batch_size,), device=device)
            optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
            # bfloat16 has float32's exponent range: only float16 gradients need scaling against underflow
            scaler = torch.amp.GradScaler(device.type, enabled=autocast_dtype == torch.float16)

            def train_step() -> None:
                optimizer.zero_grad(set_to_none=True)
                with _autocast(device, autocast_dtype):
                    loss = F.cross_entropy(runner(x), target)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()

            times = time_steps(train_step, device, warmup, iters, f"{name} bs{batch_size} train", progress)
            result.update(_summarise("train", times, batch_size))
        else:
            result.update(dict.fromkeys(("train_img_s", "train_ms_mean", "train_ms_p50", "train_ms_p90")))
    return result


def write_json_atomic(path: str | os.PathLike, obj: object) -> None:
    """Atomically write ``obj`` as indented JSON (see :func:`write_text_atomic`)."""
    write_text_atomic(path, json.dumps(obj, indent=2) + "\n")
