"""``vitzoo.stats``: the stored measurement table answers only for the sources it was measured on."""

from __future__ import annotations

import json

import pytest

from vitzoo import stats


@pytest.fixture
def table_at(tmp_path, monkeypatch):
    path = tmp_path / "_model_stats.json"
    monkeypatch.setattr(stats, "STATS_TABLE", path)
    stats._stats_table.cache_clear()
    yield path
    stats._stats_table.cache_clear()


def test_a_written_table_holds_what_a_fresh_measurement_gives_and_is_read_back(table_at):
    stats.write_stats_table({"vitzoo_van_b0": (224, 64)}, path=table_at)
    stored = json.loads(table_at.read_text())
    assert stored["fingerprint"] == stats.source_fingerprint()
    assert sorted(stored["models"]) == ["vitzoo_van_b0@224", "vitzoo_van_b0@64"]
    fresh = stats._model_stats("vitzoo_van_b0", 64, True, ())
    assert stats.model_stats("vitzoo_van_b0", 64) == fresh
    assert stats.model_stats("vitzoo_van_b0", 64, activations=False).activations_m is None


def test_a_table_from_other_sources_is_ignored(table_at):
    stats.write_stats_table({"vitzoo_van_b0": (64,)}, path=table_at)
    stored = json.loads(table_at.read_text())
    stored["models"]["vitzoo_van_b0@64"]["gmacs"] = 123.0
    table_at.write_text(json.dumps(stored))
    stats._stats_table.cache_clear()
    assert stats.model_stats("vitzoo_van_b0", 64).gmacs == 123.0, "the same fingerprint: the table answers"
    stored["fingerprint"] = "0" * 64
    table_at.write_text(json.dumps(stored))
    stats._stats_table.cache_clear()
    assert stats.model_stats("vitzoo_van_b0", 64).gmacs == stats._model_stats("vitzoo_van_b0", 64, True, ()).gmacs


def test_the_fingerprint_changes_with_any_source_file(tmp_path, monkeypatch):
    package = tmp_path / "pkg"
    (package / "models").mkdir(parents=True)
    (package / "stats.py").write_text("x = 1\n")
    (package / "models" / "m.py").write_text("y = 2\n")
    monkeypatch.setattr(stats, "__file__", str(package / "stats.py"))
    before = stats.source_fingerprint()
    (package / "models" / "m.py").write_text("y = 3\n")
    assert stats.source_fingerprint() != before
