"""The docs stay true: the README's model table and the model cards are what the generators produce today."""

import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_generated_docs_are_current(capsys):
    """Both generators run in this process: they measure the same models, and ``model_stats`` caches per process."""
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        import gen_model_cards
        import gen_model_table
    finally:
        sys.path.remove(str(ROOT / "tools"))
    table_status, cards_status = gen_model_table.main(["--check"]), gen_model_cards.main(["--check"])
    assert (table_status, cards_status) == (0, 0), capsys.readouterr().err


def test_readme_names_the_two_commands_and_every_family():
    text = (ROOT / "README.md").read_text()
    assert "make demo" in text and "make test" in text
    for family in ("VAN", "BiFormer", "CSWin", "CrossFormer", "CrossFormer++"):
        assert family in text
