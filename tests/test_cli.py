"""The ``vitzoo`` command line: ``list``, ``info`` and ``bench``, plus the helpers ``bench`` relies on."""

import contextlib
import io
import json
import os
import time

import pytest
import timm
import torch

import vitzoo  # noqa: F401  (registers the models)
from vitzoo import benchmark
from vitzoo.cli import main
from vitzoo.paper_table import PAPER_TABLE, half_unit
from vitzoo.stats import model_stats

ALL_MODELS = timm.list_models("vitzoo_*")


def _run(argv: list[str]) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(argv)
    return code, out.getvalue()


@pytest.fixture(scope="module")
def listing() -> str:
    # `list` counts GMACs of every variant (the slow part of this file), so the table is built once per module.
    code, out = _run(["list"])
    assert code == 0
    return out


def _strides(values) -> str:
    return "/".join(map(str, values))


def _rows(table: str) -> dict[str, list[str]]:
    lines = table.strip().splitlines()[2:]  # skip the header and the rule
    return {line.split()[0]: line.split()[1:] for line in lines}


def test_list_shows_every_model_with_its_params(listing):
    rows = _rows(listing)
    assert set(rows) == set(ALL_MODELS)
    for name in ALL_MODELS:
        params, gmacs, strides, tags, paper_id = rows[name]
        # the paper column is the one the model's pretrained cfg records (timm's Hub cards read the same field)
        assert paper_id == timm.models.get_pretrained_cfg(name).paper_ids, name
        paper = PAPER_TABLE[name]
        # test_models.py checks model_stats against the paper with these tolerances; the table must agree too.
        if paper.checked_params:
            printed = float(paper.checked_params)
            assert abs(float(params) - printed) <= 0.01 * printed + half_unit(paper.checked_params)
        target = paper.checked_gmacs
        if paper.img_size == 224 and target:  # the listing counts at 224; other sizes' paper cost is not at 224
            assert abs(float(gmacs) - float(target)) <= 0.03 * float(target) + half_unit(target)
        # hierarchical backbones, or a ViT's 12 stride-16 block outputs (DeiT hosts)
        assert strides == ("/".join(["16"] * 12) if "_deit_" in name else "4/8/16/32"), name
        expected_tags = [t.split(".", 1)[1] for t in timm.list_pretrained(f"{name}.*")]
        assert tags == (",".join(expected_tags) or "-"), name
    # The exact numbers are model_stats' (checked on the two cheapest variants: model_stats costs ~1 s a model).
    for name in ("vitzoo_van_b0", "vitzoo_biformer_t"):
        stats = model_stats(name)
        assert rows[name][:3] == [f"{stats.params_m:.2f}", f"{stats.gmacs:.2f}", _strides(stats.reductions)]


def test_list_json_parses_and_matches_the_table(listing):
    code, out = _run(["list", "--json"])
    assert code == 0
    records = {r["model"]: r for r in json.loads(out)}
    assert set(records) == set(ALL_MODELS)
    rows = _rows(listing)
    for name, record in records.items():
        assert f"{record['params_m']:.2f}" == rows[name][0]
        levels = 12 if "_deit_" in name else 4  # a ViT lists its 12 stride-16 blocks
        assert record["reductions"] == ([16] * 12 if levels == 12 else [4, 8, 16, 32])
        assert len(record["channels"]) == levels


def test_list_pattern_that_matches_nothing_fails(capsys):
    assert main(["list", "no_such_model_*"]) == 1
    assert "no model matches" in capsys.readouterr().err


def test_info_shows_stats_cfg_and_the_paper_row(capsys):
    assert main(["info", "vitzoo_van_b0"]) == 0
    out = capsys.readouterr().out
    assert "4.11" in next(line for line in out.splitlines() if line.startswith("params (M)"))
    assert "32/64/160/256" in out and "4/8/16/32" in out
    assert "(3, 224, 224)" in out and "bicubic" in out and "0.875" in out
    assert "Visual-Attention-Network/VAN-Tiny-original" in out
    assert "paper's numbers" in out and "75.4" in out
    # the paper record, as literal facts (not re-read from the record the command prints)
    assert "Visual Attention Network (https://arxiv.org/abs/2202.09741)" in out
    assert "https://github.com/Visual-Attention-Network/VAN-Classification (checked against commit e19779b)" in out
    assert next(line for line in out.splitlines() if line.startswith("licence")).split()[-1] == "apache-2.0"


def test_info_says_when_no_official_code_exists(capsys):
    assert main(["info", "vitzoo_halonet_h0"]) == 0
    line = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("official code"))
    assert line.endswith("none released")


@pytest.mark.parametrize("argv", [["info", "vitzo_van_b0"], ["bench", "vitzoo_van_b0", "vitzo_van_b0"]])
def test_unknown_model_exits_2_naming_a_close_match(capsys, argv):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "unknown model 'vitzo_van_b0'" in err
    assert "vitzoo_van_b0" in err.split("Did you mean:")[1]


def test_unknown_pretrained_tag_exits_2(capsys):
    assert main(["info", "vitzoo_van_b0.official_in22k"]) == 2
    assert "vitzoo_van_b0.official_in1k" in capsys.readouterr().err


def test_bench_writes_json_with_positive_throughput(tmp_path, capsys):
    out_path = tmp_path / "tmp.json"
    argv = ["bench", "vitzoo_van_b0", "--batch-size", "2", "--img-size", "64", "--warmup", "1", "--iters", "2"]
    assert main(argv + ["--device", "cpu", "--out", str(out_path)]) == 0
    assert "vitzoo_van_b0" in capsys.readouterr().out
    assert os.listdir(tmp_path) == ["tmp.json"]  # the temporary file was renamed, not left behind

    data = json.loads(out_path.read_text())
    meta = data["meta"]
    for key in ("torch", "timm", "vitzoo", "device_name", "cpu_count", "threads", "date", "args"):
        assert key in meta, key
    assert meta["args"]["batch_size"] == 2 and meta["args"]["models"] == ["vitzoo_van_b0"]

    (result,) = data["results"]
    assert result["model"] == "vitzoo_van_b0"
    assert (result["batch_size"], result["img_size"], result["iters"]) == (2, 64, 2)
    for phase in ("infer", "train"):
        assert result[f"{phase}_img_s"] > 0
        assert 0 < result[f"{phase}_ms_p50"] <= result[f"{phase}_ms_p90"]
        assert result[f"{phase}_ms_mean"] > 0
        # throughput and mean latency are two views of the same timings
        assert result[f"{phase}_img_s"] == pytest.approx(2 / (result[f"{phase}_ms_mean"] / 1e3))
    assert result["peak_rss_growth_mb"] >= 0 and "peak_cuda_alloc_mb" not in result
    assert result["params_m"] == pytest.approx(4.1058, abs=1e-4)
    assert 0 < result["gmacs"] < 0.2  # 64x64 is 1/12 of 224x224's pixels


def test_bench_no_train_leaves_training_fields_empty():
    result = benchmark.benchmark_model("vitzoo_van_b0", 1, 32, warmup=0, iters=1, train=False, progress=False)
    assert result["infer_img_s"] > 0
    assert result["train_img_s"] is None and result["train_ms_p90"] is None


def test_bench_rejects_compile_without_warmup(capsys):
    assert main(["bench", "vitzoo_van_b0", "--compile", "--warmup", "0"]) == 2
    assert "--compile needs --warmup >= 1" in capsys.readouterr().err


def test_percentile_interpolates_like_numpy():
    values = [4.0, 1.0, 3.0, 2.0]
    assert benchmark.percentile(values, 50) == pytest.approx(2.5)
    assert benchmark.percentile(values, 90) == pytest.approx(3.7)
    assert benchmark.percentile([7.0], 90) == 7.0


def test_atomic_write_keeps_the_old_file_when_the_rename_fails(tmp_path, monkeypatch):
    path = tmp_path / "results.json"
    benchmark.write_json_atomic(path, {"old": 1})

    def fail(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(benchmark.os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        benchmark.write_json_atomic(path, {"new": 2})
    assert json.loads(path.read_text()) == {"old": 1}
    assert os.listdir(tmp_path) == ["results.json"]


def test_time_steps_times_each_step_at_the_process_thread_count():
    calls, threads = [], []

    def step():
        calls.append(1)
        threads.append(torch.get_num_threads())
        time.sleep(0.02)

    before = torch.get_num_threads()
    torch.set_num_threads(2)  # torch.utils.benchmark.Timer, for one, would time at one thread unless told
    try:
        times = benchmark.time_steps(step, torch.device("cpu"), warmup=2, iters=3, desc="", progress=False)
    finally:
        torch.set_num_threads(before)
    assert len(calls) == 5 and len(times) == 3
    assert all(0.02 <= t < 1.0 for t in times), times
    assert threads == [2] * 5
