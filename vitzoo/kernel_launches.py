"""The Triton launches the registered models make at given input sizes, found without a GPU and without compute.

Each model runs once on the meta device while :func:`vitzoo.ops._dispatch.record_calls` notes the exact inputs of
every 2-D attention op call (shapes, strides, dtypes, windows, biases). Each distinct call is then replayed through
its Triton backend's ``record`` (the wrapper code a real launch runs: block choice, ``num_warps`` / ``num_stages``,
grid) inside :func:`vitzoo.ops._triton.record_launches`, forward and backward, in every dtype asked for. The result
is the list of launches a training step on a GPU would make, ready to compile ahead of time
(:mod:`vitzoo.ops._triton.aot`).
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Iterable

import timm
import torch

from .ops import _triton
from .ops._dispatch import OpCall, record_calls

# the ops with a Triton backend, and the module that holds it
TRITON_BACKENDS = {
    "window_attention": "vitzoo.ops.window.triton",
    "halo_attention": "vitzoo.ops.halo.triton",
    "region_routed_attention": "vitzoo.ops.routed.triton",
}


@dataclasses.dataclass
class ModelLaunch:
    """A launch and where it comes from."""

    model: str
    img_size: int
    op_name: str
    launch: _triton.Launch


def family(model_name: str) -> str:
    """``vitzoo_cswin_b_384`` -> ``cswin``; the hosts keep their host: ``vitzoo_agent_swin_t`` -> ``agent_swin``."""
    parts = model_name.removeprefix("vitzoo_").split("_")
    return "_".join(parts[:2]) if parts[0] in {"agent", "inline", "flatten", "swin", "vitaev2"} else parts[0]


def one_per_family() -> list[str]:
    """The first registered variant (in sorted order) of every model family."""
    first: dict[str, str] = {}
    for name in sorted(timm.list_models("vitzoo_*")):
        first.setdefault(family(name), name)
    return sorted(first.values())


def op_calls(model_name: str, img_size: int) -> list[OpCall]:
    """Every attention op call of one forward of ``model_name`` at ``img_size`` (meta device, batch 1)."""
    with torch.device("meta"):
        try:  # models whose tables are sized at build time are built for the size they run at
            model = timm.create_model(model_name, img_size=img_size)
        except TypeError:
            model = timm.create_model(model_name)
    x = torch.empty(1, 3, img_size, img_size, device="meta")
    with record_calls() as calls:
        model(x)
    return calls


def _retyped(t, dtype: torch.dtype, batch: int):
    """``t`` as a meta tensor of ``dtype`` with the batch set to ``batch``, keeping its strides (views stay views)."""
    if isinstance(t, tuple):  # e.g. HaloNet's pair of relative-position tables
        return tuple(_retyped(x, dtype, batch) for x in t)
    if not isinstance(t, torch.Tensor):
        return t
    dtype = dtype if t.is_floating_point() else t.dtype  # bool masks and int indices keep their type
    if t.dim() < 4:  # tables (bias, relative positions, masks) have no batch
        return torch.empty_strided(t.shape, t.stride(), dtype=dtype, device="meta").requires_grad_(t.requires_grad)
    shape = (batch, *t.shape[1:])
    stride = t.stride()
    return torch.empty_strided(shape, stride, dtype=dtype, device="meta").requires_grad_(t.requires_grad)


def _call_key(call: OpCall) -> tuple:
    def describe(x):
        if isinstance(x, torch.Tensor):
            return ("T", tuple(x.shape), x.stride(), str(x.dtype), x.requires_grad)
        if isinstance(x, (tuple, list)):
            return tuple(describe(y) for y in x)
        return x

    return call.op_name, describe(call.args), tuple(sorted((k, describe(v)) for k, v in call.kwargs.items()))


def model_launches(
    model_names: Iterable[str], img_sizes: Iterable[int], dtypes: Iterable[torch.dtype], batch: int = 64
) -> list[ModelLaunch]:
    """The Triton launches (forward and backward) of every model at every size and dtype, one per distinct op call.

    Calls the Triton backend cannot run (its ``can_run`` refuses, e.g. a head dim above its limit) are left out: a
    GPU would run them on another backend.
    """
    dtypes = tuple(dtypes)
    seen: set[tuple] = set()
    result = []
    for name in model_names:
        for size in img_sizes:
            for call in op_calls(name, size):
                key = _call_key(call)
                if call.op_name not in TRITON_BACKENDS or key in seen:
                    continue
                seen.add(key)
                backend = importlib.import_module(TRITON_BACKENDS[call.op_name])
                for dtype in dtypes:
                    args = tuple(_retyped(a, dtype, batch) for a in call.args)
                    kwargs = {k: _retyped(v, dtype, batch) for k, v in call.kwargs.items()}
                    with _triton.record_launches() as launches:
                        if backend.can_run(*args, **kwargs) is not None:
                            continue
                        backend.record(*args, **kwargs)
                    result.extend(ModelLaunch(name, size, call.op_name, launch) for launch in launches)
    return result


def distinct_launches(launches: Iterable[ModelLaunch], per_config: bool = False) -> list[ModelLaunch]:
    """One launch per distinct compiled kernel (the first model that makes it), in first-seen order.

    With ``per_config`` one per launch configuration instead (kernel, constexprs, warps, stages, dtypes), leaving out
    the variants that differ only in which strides are multiples of 16.
    """
    from .ops._triton.aot import describe, launch_key  # Triton's compiler is needed only here

    seen: dict[tuple, ModelLaunch] = {}
    for ml in launches:
        key = (ml.launch.kernel.fn.__name__, describe(ml.launch)) if per_config else launch_key(ml.launch)
        seen.setdefault(key, ml)
    return list(seen.values())


def largest_tiles(launches: Iterable[ModelLaunch]) -> list[ModelLaunch]:
    """Per kernel and set of dtypes, the launch whose tiles hold the most elements per thread, then the one with the
    most pipeline stages: the launch most likely to spill registers or to outgrow shared memory.

    A quick check of what a chip enforces compiles these instead of every launch; the full set is compiled by
    ``benchmarks/kernel_resources.py`` and committed.
    """
    from .ops._triton.aot import launch_dtypes, launch_values  # Triton's compiler is needed only here

    def weight(ml: ModelLaunch) -> tuple[float, int]:
        values = launch_values(ml.launch)
        elements = 1
        for name, value in values.items():
            if name.startswith("BLOCK"):
                elements *= value
        return elements / values.get("num_warps", 4), values.get("num_stages", 1)

    best: dict[tuple[str, str], ModelLaunch] = {}
    for ml in launches:
        key = ml.launch.kernel.fn.__name__, launch_dtypes(ml.launch)
        if key not in best or weight(ml) > weight(best[key]):
            best[key] = ml
    return list(best.values())
