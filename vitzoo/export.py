"""Write a model to a deployment format, load the file back and compare it with the eager model.

Formats: ``torchscript`` (``torch.jit.script`` + ``torch.jit.save``; the attention ops run their reference
computation there), ``exported`` (a ``torch.export`` program saved as a ``.pt2`` archive: name the file so) and
``onnx`` (``torch.onnx.export`` with the dynamo exporter, checked in ONNX Runtime on its CPU provider; needs the
``export`` extra; the ONNX file is written from the same ``torch.export`` program). With ``dynamic`` the batch and
the image height and width are symbolic (heights and widths stay multiples of the model's total stride, from the
model's :func:`dynamic_min_side` up to 1024) and the file is also checked at another batch and a non-square size.

A dynamic program holds one computation for every size it accepts. Where a model computes something of another
shape below some size (a CrossFormer stage map shorter than its group size takes smaller groups), its
``dynamic_min_side`` says from where on one program serves, and smaller sizes export with static shapes.

Files are written next to their destination and moved into place, so a failed export never leaves a partial file.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import timm
import torch
import torch.nn as nn

__all__ = [
    "FORMATS",
    "ExportError",
    "ExportResult",
    "create_for_export",
    "dynamic_min_side",
    "export_model",
    "export_program",
]

FORMATS = ("torchscript", "exported", "onnx")
STRIDE = 32  # total stride of every vitzoo backbone: dynamic sizes stay multiples of it
MIN_SIDE, MAX_SIDE = 224, 1024


class ExportError(RuntimeError):
    """The model cannot be written in the requested format, or the written file does not reproduce the model."""


@dataclasses.dataclass
class ExportResult:
    """What was written and how closely the reloaded file reproduces the eager model at each checked input."""

    path: Path
    format: str
    max_abs_diff: dict[str, float]  # "BxCxHxW" -> max |file - eager| of the outputs


def export_model(
    model: nn.Module,
    fmt: str,
    img_size: tuple[int, int],
    out: Path,
    dynamic: bool = False,
    batch: int = 2,
    program: torch.export.ExportedProgram | None = None,
) -> ExportResult:
    """Write ``model`` (put in eval mode) to ``out`` as ``fmt``, reload it and compare with eager outputs.

    ``program``: a :func:`export_program` of this model (same ``dynamic``) to write as ``exported`` / ``onnx``
    instead of tracing the model again.

    Raises :class:`ExportError` naming the format and the reason when the export fails, and when the reloaded file's
    outputs differ from eager by more than ``1e-4`` (relative to the logits' scale).
    """
    if fmt not in FORMATS:
        raise ExportError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    name = getattr(model, "default_cfg", {}).get("architecture", type(model).__name__)
    if dynamic and min(img_size) < dynamic_min_side(model):
        raise ExportError(
            f"{name} exports with dynamic shapes from {dynamic_min_side(model)}x{dynamic_min_side(model)} up "
            f"(below that it computes differently; see vitzoo.export); got {img_size[0]}x{img_size[1]}: pass a "
            f"larger img_size, or export {img_size[0]}x{img_size[1]} without dynamic shapes"
        )
    model.eval()
    in_chans = getattr(model, "in_chans", 3)
    x = torch.randn(batch, in_chans, *img_size)
    checks = [x]
    if dynamic:
        h, w = img_size
        # batch 1 (a traced size of 1 is where programs most often get pinned) and a non-square size
        checks.append(torch.randn(1, in_chans, h, min(w + 2 * STRIDE, MAX_SIDE)))
    out = Path(out)
    try:
        if fmt != "torchscript" and program is None:
            program = export_program(model, x, dynamic)
        run = _WRITERS[fmt](model if fmt == "torchscript" else program, out)
    except ExportError:
        raise
    except Exception as e:  # the exporters raise many types; the user needs the format and the first line
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ExportError(f"{name} cannot be exported as {fmt}: {type(e).__name__}: {reason}") from e
    diffs = {}
    with torch.no_grad():
        for inp in checks:
            eager = model(inp)
            got = run(inp)
            diff = (got.float() - eager.float()).abs().max().item()
            diffs["x".join(map(str, inp.shape))] = diff
            if diff > 1e-4 * max(1.0, eager.abs().max().item()):
                raise ExportError(
                    f"{name} as {fmt} differs from eager by {diff:.3g} at input {tuple(inp.shape)}; file left at {out}"
                )
    return ExportResult(out, fmt, diffs)


@contextlib.contextmanager
def _written_atomically(out: Path, suffix: str | None = None) -> Iterator[Path]:
    """A temporary path beside ``out`` (same file system) to write to; moved onto ``out`` when the block succeeds,
    removed when it fails."""
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=suffix or out.suffix)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def dynamic_min_side(model: nn.Module) -> int:
    """The smallest image side a dynamic-shape export of ``model`` covers (the model's ``dynamic_min_side``, else
    224)."""
    return max(MIN_SIDE, getattr(model, "dynamic_min_side", MIN_SIDE))


def dynamic_shapes(model: nn.Module) -> dict:
    """``torch.export`` dynamic shapes for ``model(x)``: any batch, H and W multiples of 32 within the model's range."""
    dim = torch.export.Dim
    low = -(-dynamic_min_side(model) // STRIDE)
    batch = dim("batch", min=1, max=1024)
    h = STRIDE * dim("h_blocks", min=low, max=MAX_SIDE // STRIDE)
    w = STRIDE * dim("w_blocks", min=low, max=MAX_SIDE // STRIDE)
    return {"x": {0: batch, 2: h, 3: w}}


def export_program(model: nn.Module, x: torch.Tensor, dynamic: bool = False) -> torch.export.ExportedProgram:
    """``torch.export.export(model, (x,))``, with :func:`dynamic_shapes` when ``dynamic``."""
    return torch.export.export(model, (x,), dynamic_shapes=dynamic_shapes(model) if dynamic else None)


def _torchscript(model: nn.Module, out: Path):
    # TorchScript programs take any input size: ``dynamic`` changes nothing but the checks
    scripted = torch.jit.script(model)
    with _written_atomically(out) as tmp:
        torch.jit.save(scripted, str(tmp))
    return torch.jit.load(str(out))


def _exported(program: torch.export.ExportedProgram, out: Path):
    with _written_atomically(out, suffix=".pt2") as tmp:  # torch.export's archive reader expects the suffix
        torch.export.save(program, str(tmp))
    return torch.export.load(str(out)).module()


def _onnx(program: torch.export.ExportedProgram, out: Path):
    try:
        import onnxruntime
    except ImportError as e:
        raise ExportError("ONNX export needs the export extra: pip install 'vitzoo[export]'") from e
    with _written_atomically(out) as tmp:  # from the program: the exporter's own trace would drop its dynamic shapes
        torch.onnx.export(
            program, f=str(tmp), dynamo=True, input_names=["x"], output_names=["logits"], external_data=False
        )
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])

    def run(inp: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(session.run(None, {"x": inp.numpy()})[0])

    return run


_WRITERS = {"torchscript": _torchscript, "exported": _exported, "onnx": _onnx}


def create_for_export(name: str, fmt: str, checkpoint: str | None = None) -> nn.Module:
    """``timm.create_model(name)`` as ``fmt`` needs it (TorchScript: timm's scriptable layer config), optionally
    with weights from ``checkpoint`` (official or vitzoo layout, loaded through the model's checkpoint filter)."""
    kwargs = {}
    if checkpoint is not None:
        kwargs = dict(pretrained=True, pretrained_cfg_overlay=dict(file=str(checkpoint)))
    with timm.layers.set_scriptable(fmt == "torchscript"):
        return timm.create_model(name, **kwargs)
