"""The op and model benchmark scripts: their official baselines compute the op, and they write their results."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
import bench_model_matrix  # noqa: E402
import bench_ops  # noqa: E402
import official_ops  # noqa: E402

from vitzoo.ops import halo_attention, region_routed_attention, window_attention  # noqa: E402


def test_official_window_core_equals_the_op_with_bias_and_mask(seed):
    q, k = torch.randn(2, 14, 21, 3, 8), torch.randn(2, 14, 21, 3, 8)
    v = torch.randn(2, 14, 21, 3, 12)
    bias, mask = torch.randn(3, 49, 49), torch.randn(6, 49, 49)
    want = window_attention(q, k, v, 7, bias=bias, mask=mask)
    torch.testing.assert_close(official_ops.swin_window_attention(q, k, v, (7, 7), bias, mask), want)


def test_official_routed_core_equals_the_op(seed):
    q, k, v = torch.randn(2, 14, 14, 16), torch.randn(2, 14, 14, 16), torch.randn(2, 14, 14, 24)
    want = region_routed_attention(q, k, v, 7, 4, 2, scale=0.3)
    torch.testing.assert_close(official_ops.biformer_routed_attention(q, k, v, 7, 4, 2, scale=0.3), want)


def test_official_halo_core_equals_the_op_with_tables_shifted_by_the_halo(seed):
    q, k, v = torch.randn(2, 16, 16, 2, 8), torch.randn(2, 16, 16, 2, 8), torch.randn(2, 16, 16, 2, 12)
    rel_h, rel_w = torch.randn(27, 8), torch.randn(27, 8)
    want = halo_attention(q, k, v, 8, 3, rel_pos=(rel_h, rel_w), mask_padding=False)
    got = official_ops.halonet_attention(q, k, v, 8, 3, rel_h.roll(3, 0), rel_w.roll(3, 0))
    torch.testing.assert_close(got, want)


def test_bench_ops_writes_json_markdown_and_plot(tmp_path):
    argv = ["--device", "cpu", "--sizes", "224", "--only", "CSWin-T s3", "--batch", "1", "--iters", "1"]
    assert bench_ops.main([*argv, "--out-dir", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "cpu_ops.json").read_text())
    impls = {r["impl"]: r for r in result["rows"]}
    assert {"official", "reference", "sdpa_full"} <= set(impls)
    assert impls["reference"]["fwd_ms"] > 0 and impls["reference"]["fwd_bwd_ms"] > 0
    assert impls["official"]["fwd_vs_official"] == pytest.approx(1.0)
    assert result["ceilings"]["copy_gb_s"] > 0
    assert "CSWin-T s3" in (tmp_path / "cpu_ops.md").read_text()
    assert (tmp_path / "cpu_ops.png").stat().st_size > 0


def test_bench_model_matrix_compares_backends_and_rejects_bad_settings(tmp_path, monkeypatch):
    monkeypatch.setattr(bench_model_matrix, "PEERS", [("timm ConvNeXt-T", "convnext_tiny", 64)])
    monkeypatch.setattr(bench_model_matrix, "FAMILIES", [("CSWin-T", "vitzoo_cswin_t", 64)])
    argv = ["--device", "cpu", "--batch", "1", "--iters", "1", "--no-train", "--out-dir", str(tmp_path)]
    assert bench_model_matrix.main(argv) == 0
    rows = json.loads((tmp_path / "cpu_model_matrix.json").read_text())["rows"]
    assert [(r["model"], r["backends"]) for r in rows] == [
        ("vitzoo_cswin_t", "auto"),
        ("vitzoo_cswin_t", "reference"),
        ("convnext_tiny", "auto"),
    ]
    assert all(r["infer_img_s"] > 0 for r in rows)
    assert (tmp_path / "cpu_model_matrix.png").stat().st_size > 0
    with pytest.raises(SystemExit):
        bench_model_matrix.main(["--settings", "jit-fp16"])
