"""``vitzoo.export`` and ``vitzoo export``: each format written, reloaded (ONNX in ONNX Runtime) and equal to eager."""

from __future__ import annotations

import pytest
import timm
import torch
import torch.nn as nn

import vitzoo  # noqa: F401
from vitzoo.cli import main
from vitzoo.export import FORMATS, ExportError, create_for_export, dynamic_min_side, export_model, export_program
from vitzoo.models.crossformer import CrossFormer

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::DeprecationWarning")


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_reloads_equal_to_eager_at_a_second_size(fmt, seed, tmp_path):
    if fmt == "onnx":
        pytest.importorskip("onnxruntime")
    model = create_for_export("vitzoo_van_b0", fmt)
    out = tmp_path / f"van.{fmt}"
    result = export_model(model, fmt, (224, 224), out, dynamic=True)
    assert out.is_file() and result.path == out
    assert set(result.max_abs_diff) == {"2x3x224x224", "1x3x224x288"}  # the second batch and size are symbolic
    assert max(result.max_abs_diff.values()) < 1e-4
    assert [p.name for p in tmp_path.iterdir()] == [out.name], "no temporary file is left behind"


def _smallest_per_family() -> list[str]:
    from test_models import DEPLOY_FAST

    return DEPLOY_FAST


# every family under -m slow (minutes each on 2 cores); the default run exports VAN dynamically above, and each op's
# dynamic-shape trace on its own (tests/test_ops*.py: windows, halo blocks, pooling)
DYNAMIC_MODELS = [pytest.param(m, marks=pytest.mark.slow) for m in _smallest_per_family()]


@pytest.mark.parametrize("name", DYNAMIC_MODELS)
def test_one_dynamic_program_serves_every_batch_and_size_as_exported_and_in_onnx_runtime(name, seed, tmp_path):
    """One ``torch.export`` program with symbolic batch / H / W, traced at the smallest size it covers, equals eager
    at batch 1 and at larger, non-square sizes; written as ONNX, it does so in ONNX Runtime too."""
    pytest.importorskip("onnxruntime")
    model = create_for_export(name, "onnx").eval()
    side = dynamic_min_side(model)
    program = export_program(model, torch.randn(2, 3, side, side), dynamic=True)
    with torch.no_grad():
        for shape in [(1, 3, side, side + 64), (3, 3, side + 32, side)]:
            x = torch.randn(shape)
            want = model(x)
            tol = 1e-5 * want.abs().max().item()
            torch.testing.assert_close(program.module()(x), want, rtol=1e-5, atol=tol, msg=f"at {shape}")
    result = export_model(model, "onnx", (side, side), tmp_path / "m.onnx", dynamic=True, program=program)
    assert max(result.max_abs_diff.values()) < 1e-4 * max(1.0, want.abs().max().item())


def test_dynamic_export_below_a_models_range_is_refused_with_the_range(tmp_path):
    assert dynamic_min_side(create_for_export("vitzoo_crossformer_t", "exported")) == 224
    # groups of 9 in the last stage: its 7x7 and 8x8 maps at 224 and 256 take smaller groups than from 288 up
    model = CrossFormer(embed_dim=32, depths=(1, 1, 1, 1), num_heads=(1, 2, 4, 8), group_sizes=(7, 7, 7, 9))
    assert dynamic_min_side(model) == 288
    with pytest.raises(ExportError, match=r"from 288x288 up .* got 256x256: pass a larger img_size, or export 256x256"):
        export_model(model, "exported", (256, 256), tmp_path / "crossformer.pt2", dynamic=True)
    assert not list(tmp_path.iterdir())


class _Unscriptable(nn.Module):
    def forward(self, x: torch.Tensor, **options) -> torch.Tensor:
        return x * 2


def test_a_format_the_model_cannot_take_is_a_clear_error(tmp_path):
    out = tmp_path / "model.pt"
    with pytest.raises(ExportError, match="cannot be exported as torchscript: .*"):
        export_model(_Unscriptable(), "torchscript", (32, 32), out)
    assert not out.exists() and not list(tmp_path.iterdir())
    with pytest.raises(ExportError, match="unknown format 'tflite'; choose one of torchscript, exported, onnx"):
        export_model(_Unscriptable(), "tflite", (32, 32), out)


def test_a_file_that_differs_from_eager_is_refused(tmp_path, monkeypatch):
    model = timm.create_model("vitzoo_van_b0")
    real_load = torch.jit.load

    def perturbed(path):  # a reloaded program that computes something else
        loaded = real_load(path)
        return lambda x: loaded(x) + 1.0

    monkeypatch.setattr(torch.jit, "load", perturbed)
    with pytest.raises(ExportError, match="differs from eager by 1"):
        export_model(model, "torchscript", (64, 64), tmp_path / "van.pt")


def test_cli_writes_checks_and_reports_the_difference(tmp_path, capsys):
    out = tmp_path / "van.pt"
    args = ["export", "vitzoo_van_b0", "--format", "torchscript", "--img-size", "64", "96"]
    assert main([*args, "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert f"wrote {out} (torchscript)" in text and "input 2x3x64x96: max abs difference to eager 0" in text
    loaded = torch.jit.load(str(out))
    assert loaded(torch.randn(1, 3, 64, 96)).shape == (1, 1000)


def test_cli_errors_are_messages_not_tracebacks(tmp_path, capsys):
    assert main(["export", "vitzoo_van_b9", "--format", "onnx", "--out", str(tmp_path / "x.onnx")]) == 2
    assert "unknown model 'vitzoo_van_b9'" in capsys.readouterr().err
    missing = tmp_path / "missing.safetensors"
    args = ["export", "vitzoo_van_b0", "--format", "torchscript", "--checkpoint", str(missing)]
    assert main([*args, "--out", str(tmp_path / "x.pt")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("vitzoo: error:") and "Traceback" not in err
