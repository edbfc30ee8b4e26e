"""The docs stay true: the README's model table and the model cards are what the generators produce today."""

import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("tool", ["gen_model_table.py", "gen_model_cards.py"])
def test_generated_docs_are_current(tool):
    result = subprocess.run([sys.executable, str(ROOT / "tools" / tool), "--check"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr + f"\nrun: python tools/{tool}"


def test_readme_names_the_two_commands_and_every_family():
    text = (ROOT / "README.md").read_text()
    assert "make demo" in text and "make test" in text
    for family in ("VAN", "BiFormer", "CSWin", "CrossFormer", "CrossFormer++"):
        assert family in text
