"""The README stays true: its model table is what the generator produces from the code today."""

import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_readme_model_table_is_current():
    result = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "gen_model_table.py"), "--check"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr + "\nrun: python tools/gen_model_table.py"


def test_readme_names_the_two_commands_and_every_family():
    text = (ROOT / "README.md").read_text()
    assert "make demo" in text and "make test" in text
    for family in ("VAN", "BiFormer"):
        assert family in text
