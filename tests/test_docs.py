"""The docs stay true: the README's model table and the model cards are what the generators produce today."""

import pathlib
import re
import sys

import pytest

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


def _links_in_the_code(cfg: dict) -> list[str]:
    """Every weight link a cfg records, read independently of vitzoo.hub.weight_sources: its Hub repo, its url and
    the urls its notes name."""
    links = [cfg["hf_hub_id"]] if cfg.get("hf_hub_id") else []
    links += [cfg["url"]] if cfg.get("url") else []
    return links + re.findall(r"https?://[^\s)]+", " ".join(cfg.get("notes") or ()))


def test_every_weight_link_in_the_code_is_in_the_model_card():
    import timm

    import vitzoo  # noqa: F401

    missing, said_none = [], []
    for name in timm.list_pretrained("vitzoo_*"):
        card = (ROOT / "model_cards" / f"{name.partition('.')[0]}.md").read_text()
        links = _links_in_the_code(timm.models.get_pretrained_cfg(name).to_dict())
        missing += [f"{name}: {link}" for link in links if link not in card]
        if links and "**Weights:** none published" in card:
            said_none.append(name)
    assert not missing and not said_none, (missing, said_none)


@pytest.mark.parametrize(
    "name", ["vitzoo_crossformer_t", "vitzoo_cswin_t", "vitzoo_van_b0", "vitzoo_agent_pvt_t", "vitzoo_mala_t"]
)
def test_vitzoo_info_names_every_weight_link(name, capsys):
    """One model per way a cfg records weights: a share page in the notes, a direct url, a Hub repo."""
    import timm

    from vitzoo.cli import main

    assert main(["info", name]) == 0
    out = capsys.readouterr().out
    links = _links_in_the_code(timm.models.get_pretrained_cfg(name).to_dict())
    assert links and all(link in out for link in links), (links, out)
    assert "none published" not in out
