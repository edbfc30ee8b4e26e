"""The op and model benchmark scripts: their official baselines compute the op, and they write their results."""

from __future__ import annotations

import ast
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import bench_model_matrix  # noqa: E402
import bench_ops  # noqa: E402
import official_ops  # noqa: E402

from vitzoo import benchmark  # noqa: E402
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


def test_bench_ops_writes_json_markdown_and_plot(tmp_path, monkeypatch):
    # a user's CPU run: no Triton interpreter (which this session turns on), so no interpreted kernel is timed
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    argv = ["--device", "cpu", "--sizes", "224", "--only", "CSWin-T s3", "--batch", "1", "--iters", "1"]
    assert bench_ops.main([*argv, "--out-dir", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "cpu_ops.json").read_text())
    impls = {r["impl"]: r for r in result["rows"]}
    assert {"official", "reference", "sdpa_full"} <= set(impls) and "triton" not in impls
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


def test_bench_ops_max_seconds_lists_the_cases_it_did_not_run(tmp_path):
    argv = ["--device", "cpu", "--sizes", "224", "--only", "CSWin-T s3", "--max-seconds", "0"]
    assert bench_ops.main([*argv, "--out-dir", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "cpu_ops.json").read_text())
    assert result["rows"] == [] and result["complete"] is True
    assert result["not_run"] == ["CSWin-T s3 stripe 7xW (one branch) @14"]
    assert "Not run (--max-seconds 0 spent): CSWin-T s3" in (tmp_path / "cpu_ops.md").read_text()


def test_bench_model_matrix_budget_peer_order_and_compile_backends(tmp_path, monkeypatch):
    monkeypatch.setattr(bench_model_matrix, "FAMILIES", [("CSWin-T", "vitzoo_cswin_t", 64)])
    argv = ["--device", "cpu", "--settings", "eager-fp32", "compile-fp32", "--compile-backends", "auto"]
    argv += ["--peers", "Swin-T", "--peers-first", "--max-seconds", "0", "--out-dir", str(tmp_path)]
    assert bench_model_matrix.main(argv) == 0  # a spent budget measures nothing: no model is built
    result = json.loads((tmp_path / "cpu_model_matrix.json").read_text())
    assert [(r["setting"], r["label"], r["backends"]) for r in result["rows"]] == [
        ("eager-fp32", "timm Swin-T", "auto"),
        ("eager-fp32", "CSWin-T", "auto"),
        ("eager-fp32", "CSWin-T", "reference"),
        ("compile-fp32", "timm Swin-T", "auto"),
        ("compile-fp32", "CSWin-T", "auto"),
    ]
    assert all(r["error"] == "not run: --max-seconds 0 spent" for r in result["rows"]) and result["complete"]
    assert "| not run: --max-seconds 0 spent |" in (tmp_path / "cpu_model_matrix.md").read_text()
    assert (tmp_path / "cpu_model_matrix.png").stat().st_size > 0


def test_benchmark_model_autocasts_in_the_dtype_asked_for(monkeypatch):
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert benchmark.resolve_amp_dtype(cpu, False, None) is None
    assert benchmark.resolve_amp_dtype(cpu, True, None) is torch.bfloat16
    assert benchmark.resolve_amp_dtype(cuda, True, None) is torch.float16
    assert benchmark.resolve_amp_dtype(cuda, False, "bf16") is torch.bfloat16  # amp_dtype turns autocast on
    with pytest.raises(ValueError, match="amp_dtype must be one of"):
        benchmark.resolve_amp_dtype(cpu, True, "int8")
    with pytest.raises(ValueError, match="float16 or bfloat16"):
        benchmark.resolve_amp_dtype(cpu, True, torch.float64)

    autocast_dtypes = []
    real_autocast = benchmark._autocast

    def recording_autocast(device, dtype):
        autocast_dtypes.append(dtype)
        return real_autocast(device, dtype)

    monkeypatch.setattr(benchmark, "_autocast", recording_autocast)
    # timm's tiny test model: a vitzoo model's depthwise convolutions take tens of seconds in bf16 on a busy CPU
    result = benchmark.benchmark_model(
        "test_vit", 2, 32, amp_dtype="bf16", warmup=0, iters=1, train=True, progress=False
    )
    assert result["dtype"] == "bfloat16 autocast" and result["train_img_s"] > 0
    assert autocast_dtypes == [torch.bfloat16, torch.bfloat16]  # one inference and one training step


GPU_CHECK = ROOT / "benchmarks" / "gpu_check.sh"
# Not in the GPU machine's image (device KINDS.md): a test file importing one at module level fails collection there.
ABSENT_ON_GPU_MACHINE = {"natten", "mmengine", "mmcv", "mmseg", "mmdet", "mmpretrain"}


def test_gpu_check_script_is_valid_bash():
    subprocess.run(["bash", "-n", str(GPU_CHECK)], check=True)


def _module_level_imports(path: Path) -> set[str]:
    """Top-level package names that ``path`` imports unconditionally (guarded ``try`` imports are not counted)."""
    names = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_gpu_check_dry_run_checks_the_environment_and_bounds_every_step(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("GPU_CHECK_")}
    env.update(PY=sys.executable, OUT=str(tmp_path))
    proc = subprocess.run(
        ["bash", str(GPU_CHECK), "--dry-run"], env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    env_txt = (tmp_path / "gpu_env.txt").read_text()
    assert f"vitzoo 0.1.0 from {ROOT}/vitzoo/__init__.py" in env_txt  # the working tree, not an installed copy
    assert "cuda available: False" in env_txt and "## steps" in env_txt
    commands = [shlex.split(line[2:]) for line in proc.stdout.splitlines() if line.startswith("+ timeout ")]
    assert len(commands) == 3, proc.stdout

    # worst case: every step, the 45 s environment step first, runs to its bound and its kill grace; 8 minutes in all
    spent = 45 + 10
    for cmd in commands:
        assert cmd[:2] == ["timeout", "--kill-after=10"]
        bound = int(cmd[2])
        assert bound >= 20  # no step is squeezed out of the default budget
        spent += bound + 10
    assert spent < 8 * 60
    tests_cmd, ops_cmd, matrix_cmd = (cmd[3:] for cmd in commands)

    # the gpu-marked tests: every file that has one, and none that imports what the GPU machine lacks
    assert tests_cmd[:5] == [sys.executable, "-m", "pytest", "-q", "-m"] and tests_cmd[5] == "gpu"
    files = {arg for arg in tests_cmd if arg.endswith(".py")}
    gpu_marker = re.compile(r"^\s*@pytest\.mark\.gpu\b|^pytestmark\b.*\bgpu\b", re.MULTILINE)
    marked = {f"tests/{f.name}" for f in (ROOT / "tests").glob("test_*.py") if gpu_marker.search(f.read_text())}
    assert files == marked
    for path in [ROOT / "tests" / "conftest.py", *(ROOT / f for f in files)]:
        assert not _module_level_imports(path) & ABSENT_ON_GPU_MACHINE, path

    # the benchmarks: their own parsers accept the command lines, which ask for what the GPU check is for
    assert ops_cmd[1] == "benchmarks/bench_ops.py"
    ops = bench_ops.build_parser().parse_args(ops_cmd[2:])
    assert (ops.device, ops.batch, ops.dtype, ops.sizes, ops.out_dir) == ("cuda", 64, "bf16", [224, 512], tmp_path)
    assert 0 < ops.max_seconds < int(commands[1][2]) and ops.iters <= 10
    assert matrix_cmd[1] == "benchmarks/bench_model_matrix.py"
    matrix = bench_model_matrix.build_parser().parse_args(matrix_cmd[2:])
    assert [s["name"] for s in matrix.settings] == ["eager-bf16", "compile-bf16"]
    assert (matrix.device, matrix.batch, matrix.out_dir) == ("cuda", 64, tmp_path)
    assert matrix.backends == ["auto", "reference"] and matrix.compile_backends == ["auto"]
    assert matrix.only is None and matrix.peers_first and matrix.warmup >= 1  # every family; compile untimed
    peers = [label for label, _, _ in bench_model_matrix.PEERS if any(t in label for t in matrix.peers)]
    assert peers == ["timm Swin-T", "timm ConvNeXt-T"]
    assert 0 < matrix.max_seconds < int(commands[2][2])


def _write_tree(root: Path, files: dict[str, str]) -> Path:
    for relative, text in files.items():
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_text(text)
    return root


# a yacs-style checkout (InLine / FLatten layout): top-level ``config`` and ``models`` packages, one yaml per variant;
# its "official" models are vitzoo's, built by the name the yaml holds, and only for its own method
_FAKE_CONFIG = """import types
class _C:
    @staticmethod
    def clone():
        return types.SimpleNamespace(name=None)
def _update_config_from_file(config, path):
    config.name = open(path).read().strip()
"""
_FAKE_BUILD = """import timm
def build_model(config):
    assert "_{mixer}_" in config.name, "built by another checkout's models package"
    return timm.create_model(config.name)
"""


def _fake_yacs_checkout(root: Path, mixer: str, model: str) -> Path:
    return _write_tree(
        root,
        {
            "config.py": _FAKE_CONFIG,
            "models/__init__.py": "from .build import build_model\n",
            "models/build.py": _FAKE_BUILD.format(mixer=mixer),
            f"cfgs/{model.removeprefix('vitzoo_')}.yaml": model,
        },
    )


@pytest.mark.timeout(600)
def test_official_parity_records_fp32_and_fp64_and_catches_an_eps_that_differs(tmp_path):
    """Fake checkouts whose "official" models are vitzoo's own: exact parity, except B1, whose LayerNorms take
    another eps, which fp64 must expose far above rounding. The two yacs-style checkouts share package names."""
    van = _write_tree(
        tmp_path / "van",
        {
            "models/van.py": (
                "import timm\n"
                "def van_b0(pretrained=False, **kwargs):\n"
                "    return timm.create_model('vitzoo_van_b0')\n"
                "def van_b1(pretrained=False, **kwargs):\n"
                "    model = timm.create_model('vitzoo_van_b1')\n"
                "    for module in model.modules():\n"
                "        if type(module).__name__ == 'LayerNorm2d':\n"
                "            module.eps = 1e-3\n"
                "    return model\n"
            )
        },
    )
    inline = _fake_yacs_checkout(tmp_path / "inline", "inline", "vitzoo_inline_deit_t")
    flatten = _fake_yacs_checkout(tmp_path / "flatten", "flatten", "vitzoo_flatten_pvt_t")
    out = tmp_path / "parity.json"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "official_parity.py"), "--van", str(van)]
    cmd += ["--inline", str(inline), "--flatten", str(flatten), "--out", str(out)]
    cmd += ["--models", "vitzoo_van_b[01]", "vitzoo_inline_deit_t", "vitzoo_flatten_pvt_t"]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(out.read_text())["results"]
    assert sorted(results) == ["vitzoo_flatten_pvt_t", "vitzoo_inline_deit_t", "vitzoo_van_b0", "vitzoo_van_b1"]
    for name in ("vitzoo_van_b0", "vitzoo_inline_deit_t", "vitzoo_flatten_pvt_t"):
        row = results[name]
        assert row["input"] == "2x3x224x224 random normal"
        assert row["official"].endswith("@unknown commit")  # not a git checkout
        assert row["max_abs_diff"] == 0.0 and row["max_abs_diff_fp64"] == 0.0, row
        assert row["max_abs_logit"] > 0.1  # the drawn weights reach the logits
    eps = results["vitzoo_van_b1"]
    assert eps["max_abs_diff_fp64"] > 1e-6 * eps["max_abs_logit"], eps
