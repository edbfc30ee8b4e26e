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


def test_every_cfg_carries_its_papers_record_and_its_module_docstring_cites_it():
    """One source: the cfg fields timm reads (and writes into Hub cards) are the paper record's, and the prose in the
    model file names the same arXiv id."""
    import sys

    import timm
    from timm.models import get_arch_pretrained_cfgs

    import vitzoo  # noqa: F401
    from vitzoo.models._papers import paper_of

    for name in timm.list_models("vitzoo_*"):
        paper = paper_of(name)
        for full, cfg in get_arch_pretrained_cfgs(name).items():
            fields = (cfg.paper_name, cfg.paper_ids, cfg.license, cfg.origin_url)
            assert fields == (paper.title, f"arXiv:{paper.arxiv}", paper.license, paper.origin_url), full
        module = sys.modules[timm.models.model_entrypoint(name).__module__]
        assert paper.arxiv in module.__doc__, (name, module.__name__)


def test_a_paper_record_is_found_by_the_longest_family_prefix_and_unknown_names_are_refused():
    from vitzoo.models._papers import paper_of

    assert paper_of("vitzoo_crossformer_pp_s.official_in1k").arxiv == "2303.06908"
    assert paper_of("vitzoo_crossformer_s").arxiv == "2108.00154"
    with pytest.raises(KeyError, match="not a vitzoo model name"):
        paper_of("resnet50")


@pytest.mark.parametrize("name", ["vitzoo_biformer_t", "vitzoo_halonet_h0", "vitzoo_mala_t"])
def test_model_card_front_matter_is_valid_hub_metadata_naming_the_cfgs_licence(name):
    import timm
    from huggingface_hub import ModelCard

    card = ModelCard((ROOT / "model_cards" / f"{name}.md").read_text())
    assert card.data.library_name == "timm" and card.data.pipeline_tag == "image-classification"
    assert card.data.license == timm.models.get_pretrained_cfg(name).license
    original = next(line for line in card.text.splitlines() if line.startswith("- **Original:**"))
    cfg_url = timm.models.get_pretrained_cfg(name).origin_url
    assert (cfg_url in original) if cfg_url else original.endswith("no official code released"), original


def test_readme_rows_are_at_each_models_default_size_beside_the_papers_numbers_for_that_size():
    import timm

    import vitzoo  # noqa: F401
    from vitzoo.paper_table import PAPER_TABLE

    rows = {}
    for line in (ROOT / "README.md").read_text().splitlines():
        if line.startswith("| `vitzoo_"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            rows[cells[0].strip("`")] = cells
    assert set(rows) == set(timm.list_models("vitzoo_*"))
    for name, cells in rows.items():
        size = timm.models.get_pretrained_cfg(name).input_size[-1]
        assert cells[1] == str(size), name
        printed = PAPER_TABLE.get(name)
        if printed is not None:
            assert printed.img_size == size and cells[4].startswith(f"{printed.params_m or '-'} / "), name
    assert rows["vitzoo_cswin_b_384"][1] == "384" and rows["vitzoo_cswin_b_384"][4].startswith("78 / 47.0")
