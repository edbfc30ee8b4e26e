"""Logit parity of every vitzoo model with the official implementation, in fp32 and fp64: regenerates
``results/official_parity.json``.

For each model both implementations are built. The official one's parameters are drawn at random
(:func:`randomise`) and its BatchNorm statistics are estimated on a random batch
(:func:`estimate_batchnorm_statistics`). Its ``state_dict`` is loaded into the vitzoo model through that model's own
``checkpoint_filter_fn`` (the path an official checkpoint takes, strict), and both run, in eval mode, the same random
batch of two at the model's default input size, on the CPU, in fp32 and again in fp64. The fp64 difference tells an
implementation difference (an eps, an order of operations that changes the result) from rounding: rounding leaves
~1e-15 relative to the logits there.

Pass the official checkouts (see ``official_models.py`` for the repositories, commits and their extra packages);
families without a checkout are skipped, and ``--models`` selects by fnmatch pattern. Without ``--out``, results
are merged into the committed JSON, replacing the rows that were measured again::

    python benchmarks/official_parity.py --van ../VAN-Classification --agent ../Agent-Attention ...
"""

from __future__ import annotations

import argparse
import contextlib
import fnmatch
import importlib
import json
import math
import platform
import subprocess
import sys
import zlib
from collections.abc import Iterator
from pathlib import Path

import timm
import torch
import torch.nn as nn
from official_models import CHECKOUTS, OFFICIAL_NAMES

import vitzoo  # noqa: F401  (registers the vitzoo models)
from vitzoo.benchmark import write_json_atomic

RESULTS = Path(__file__).parent / "results" / "official_parity.json"
BATCH = 2
_BATCH_NORM = nn.modules.batchnorm._BatchNorm
_NORMS = (nn.LayerNorm, nn.GroupNorm, _BATCH_NORM)
_WEIGHTED = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d)
_DESCRIPTION = (
    "Largest absolute logit difference between vitzoo and the official implementation (benchmarks/official_parity.py):"
    " both in eval mode with the same random weights (the official state_dict, loaded into vitzoo through its "
    "checkpoint_filter_fn, strict), the same random normal batch of two at the model's default input size "
    "(`input`), on the CPU, in fp32 (`max_abs_diff`) and in fp64 (`max_abs_diff_fp64`: both models built again with "
    "fp64 as the default dtype and given the same weights, so constants computed at build time are fp64 as well, "
    "then converted with .double() for buffers a model makes fp32 explicitly). "
    "Weights: linear and convolution weights normal with std 1/sqrt(fan-in), biases normal with std 0.1, norm "
    "scales uniform in [0.5, 1.5], every other parameter (position tables and embeddings, layer scales, agent "
    "biases, learned scales) normal with std 0.3. BatchNorm running statistics are those of one random batch (a pass "
    "with only the BatchNorms in train mode): drawn statistics let VAN's multiplicative blocks overflow fp32. "
    "`official` is the checkout and its commit."
)


def _family(name: str) -> str:
    """The ``CHECKOUTS`` key that serves a vitzoo model."""
    stem = name.removeprefix("vitzoo_")
    for key in sorted(CHECKOUTS, key=len, reverse=True):  # crossformer_pp before crossformer
        if stem.startswith(f"{key}_"):
            return key
    raise KeyError(name)


def randomise(model: nn.Module, generator: torch.Generator) -> None:
    """Draw every floating parameter so that each one changes the output."""
    with torch.no_grad():
        for module in model.modules():
            for name, param in module.named_parameters(recurse=False):
                if not param.is_floating_point():
                    continue
                if isinstance(module, _WEIGHTED) and name == "weight":
                    fan_in = param[0].numel() if not isinstance(module, nn.ConvTranspose2d) else param[:, 0].numel()
                    value = torch.randn(param.shape, generator=generator) / math.sqrt(fan_in)
                elif isinstance(module, _NORMS) and name == "weight":
                    value = torch.rand(param.shape, generator=generator) + 0.5
                elif name == "bias":
                    value = torch.randn(param.shape, generator=generator) * 0.1
                else:
                    value = torch.randn(param.shape, generator=generator) * 0.3
                param.copy_(value)


def _load_official_state(model: nn.Module, state_dict: dict) -> None:
    """Load an official ``state_dict`` the way ``pretrained=True`` loads an official checkpoint: through the
    defining module's ``checkpoint_filter_fn``, strictly."""
    filter_fn = importlib.import_module(type(model).__module__).checkpoint_filter_fn
    missing, unexpected = model.load_state_dict(filter_fn(state_dict, model), strict=False)
    if missing or unexpected:
        raise RuntimeError(f"{type(model).__name__}: missing keys {missing}, unexpected keys {unexpected}")


def _max_abs_diff(official: nn.Module, ours: nn.Module, x: torch.Tensor) -> tuple[float, float]:
    with torch.inference_mode():
        want, got = official(x), ours(x)
    if want.shape != got.shape:
        raise RuntimeError(f"logit shapes differ: official {tuple(want.shape)}, vitzoo {tuple(got.shape)}")
    return (want - got).abs().max().item(), want.abs().max().item()


@contextlib.contextmanager
def _default_dtype(dtype: torch.dtype) -> Iterator[None]:
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def _tracking_batch_norms(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, _BATCH_NORM) and m.track_running_stats]


def estimate_batchnorm_statistics(model: nn.Module, x: torch.Tensor) -> None:
    """Set every BatchNorm's running statistics to those of ``x``'s activations (one pass with only the BatchNorms
    in train mode, so that no dropout or stochastic depth, and no global random state, enters the result).

    Drawn statistics would not track the drawn weights: a block that multiplies its input by a function of it
    (VAN's large-kernel attention) then grows without bound over a deep stage and overflows fp32.
    """
    norms = [m for _, m in _tracking_batch_norms(model)]
    if not norms:
        return
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a plain average over the pass
        m.train()
    with torch.no_grad():
        model(x)
    for m, momentum in zip(norms, momenta, strict=True):
        m.momentum = momentum
        m.eval()


def _drawn_state(model: nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    """What was drawn: the parameters and the BatchNorm statistics. Other buffers are constants the
    model computes while it is built (RoPE angles, masks), which an fp64 build computes in fp64 itself."""
    yield from model.named_parameters()
    for prefix, module in _tracking_batch_norms(model):
        yield f"{prefix}.running_mean", module.running_mean
        yield f"{prefix}.running_var", module.running_var


def _input_size(name: str) -> tuple[int, int, int]:
    return tuple(timm.models.get_pretrained_cfg(name).input_size)


def _build_pair(name: str, official_state: dict | None, generator: torch.Generator) -> tuple[nn.Module, nn.Module]:
    """The official model (randomised, or given ``official_state``) and the vitzoo model loaded from it."""
    official = timm.create_model(OFFICIAL_NAMES[name]).eval()
    if official_state is None:
        randomise(official, generator)
        estimate_batchnorm_statistics(official, torch.randn((BATCH, *_input_size(name)), generator=generator))
    else:
        missing, unexpected = official.load_state_dict(official_state, strict=False)
        if unexpected or set(missing) - {key for key, _ in official.named_buffers()}:
            raise RuntimeError(f"{name}: the drawn state does not fit the official model: {missing} {unexpected}")
    ours = timm.create_model(name).eval()
    _load_official_state(ours, official.state_dict())
    return official, ours


def compare(name: str, official_source: str) -> dict:
    """One row of the results: build both models, share random weights, compare fp32 and fp64 logits.

    The fp64 pair is built under fp64 as the default dtype, so that constants both implementations compute while
    they are built (RoPE angles, sampling grids, position tables) are fp64 too, not fp32 values converted later.
    """
    generator = torch.Generator().manual_seed(zlib.crc32(name.encode()))
    official, ours = _build_pair(name, None, generator)
    size = _input_size(name)
    x = torch.randn((BATCH, *size), generator=generator)
    fp32, max_logit = _max_abs_diff(official, ours, x)
    state = {key: value.double() if value.is_floating_point() else value for key, value in _drawn_state(official)}
    del official, ours
    with _default_dtype(torch.float64):
        official, ours = _build_pair(name, state, generator)
        # and what a model makes fp32 on purpose at build time (CrossFormer's ``biases`` buffer)
        fp64, _ = _max_abs_diff(official.double(), ours.double(), x.double())
    return {
        "max_abs_diff": fp32,
        "max_abs_diff_fp64": fp64,
        "max_abs_logit": max_logit,
        "input": f"{BATCH}x{'x'.join(map(str, size))} random normal",
        "official": official_source,
    }


def _commit(repo: Path) -> str:
    result = subprocess.run(
        ["git", "-C", str(repo), "rev-parse", "--short=7", "HEAD"], capture_output=True, text=True, check=False
    )
    return result.stdout.strip() if result.returncode == 0 else "unknown commit"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    for key, (_, github) in CHECKOUTS.items():
        parser.add_argument(f"--{key.replace('_', '-')}", type=Path, metavar="CHECKOUT", help=f"a {github} checkout")
    parser.add_argument("--models", nargs="+", default=["vitzoo_*"], help="fnmatch patterns (default: all)")
    parser.add_argument("--out", type=Path, help=f"write only the measured rows here (default: merge into {RESULTS})")
    args = parser.parse_args(argv)

    sources = {}
    for key, (register, github) in CHECKOUTS.items():
        repo = getattr(args, key)
        if repo is not None:
            register(repo)
            sources[key] = f"{github}@{_commit(repo)}"
    names = [
        name
        for name in OFFICIAL_NAMES
        if _family(name) in sources and any(fnmatch.fnmatch(name, pattern) for pattern in args.models)
    ]
    if not names:
        parser.error("no model to compare: pass the official checkouts of the families --models selects")

    torch.manual_seed(0)  # module constructors that draw their own initial values
    results, failed = {}, []
    for name in names:
        try:
            results[name] = compare(name, sources[_family(name)])
        except Exception as error:  # one model that does not build or load must not lose the others' rows
            print(f"{name}: {type(error).__name__}: {error}", file=sys.stderr, flush=True)
            failed.append(name)
            continue
        row = results[name]
        print(
            f"{name:28s} {row['input']:28s} fp32 {row['max_abs_diff']:.1e}  fp64 {row['max_abs_diff_fp64']:.1e}  "
            f"max |logit| {row['max_abs_logit']:.2f}",
            flush=True,
        )
    out = args.out or RESULTS
    if args.out is None and RESULTS.exists():
        results = {**json.loads(RESULTS.read_text())["results"], **results}
    meta = {"torch": torch.__version__, "timm": timm.__version__, "python": platform.python_version()}
    write_json_atomic(out, {"description": _DESCRIPTION, "meta": meta, "results": results})
    if failed:
        print(f"not compared (see above): {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
