"""HaloNet-specific behaviour: the paper's variant table, costs against independent counts, any input size."""

import pytest
import timm
import torch

import vitzoo  # noqa: F401  (registers the models)
from vitzoo.hub import CheckpointError
from vitzoo.models.halonet import HaloAttention, checkpoint_filter_fn
from vitzoo.paper_table import PAPER_TABLE
from vitzoo.stats import count_params, model_stats

HALONETS = [f"vitzoo_halonet_h{i}" for i in range(8)]

# GMACs at each variant's paper image size counted by keras_cv_attention_models' independent HaloNet
# implementation (the paper prints no FLOPs). H7 is left out: that count does not match our reading at 600 px.
THIRD_PARTY_GMACS = {"h0": 2.40, "h1": 3.04, "h2": 3.37, "h3": 6.30, "h4": 12.17, "h5": 32.61, "h6": 53.20}


@pytest.mark.parametrize("name", HALONETS)
def test_default_image_size_is_the_papers(name):
    cfg = timm.models.get_pretrained_cfg(name)
    assert cfg.input_size == (3, PAPER_TABLE[name].img_size, PAPER_TABLE[name].img_size)


@pytest.mark.parametrize("variant,gmacs", THIRD_PARTY_GMACS.items())
def test_gmacs_match_an_independent_implementation(variant, gmacs):
    name = f"vitzoo_halonet_{variant}"
    stats = model_stats(name, img_size=PAPER_TABLE[name].img_size, activations=False)
    assert abs(stats.gmacs - gmacs) <= 0.03 * gmacs, (stats.gmacs, gmacs)


def test_h1_is_timms_halonet_h1_architecture():
    """timm's (untrained) halonet_h1 follows the same reading of H1: identical parameter count and cost."""
    with torch.device("meta"):
        ours, theirs = timm.create_model("vitzoo_halonet_h1"), timm.create_model("halonet_h1")
    assert count_params(ours) == count_params(theirs) == 8_100_056
    assert abs(model_stats("vitzoo_halonet_h1", img_size=256, activations=False).gmacs - 3.0) <= 0.03 * 3.0


def test_value_width_differs_from_query_width_in_h5_to_h7():
    """rv != 1 (H5-H7): values, and so the attention output, are rv * w wide while queries and keys stay w."""
    with torch.device("meta"):
        model = timm.create_model("vitzoo_halonet_h7")
    attn = model.stages[2].blocks[0].attn
    assert attn.q.out_channels == 256 and attn.kv.out_channels == 256 + 4 * 256
    assert model.stages[2].blocks[0].conv3.conv.out_channels == int(3.5 * 256)
    assert model.num_features == 2048 and model.feature_info[-1]["num_chs"] == int(3.5 * 512)


def test_strided_attention_keeps_keys_at_full_resolution(seed):
    attn = HaloAttention(16, 24, num_heads=4, block_size=4, halo_size=1, stride=2).eval()
    x = torch.randn(1, 16, 12, 10)
    with torch.no_grad():
        out = attn(x)
        assert out.shape == (1, 24, 6, 5)
        # a key pixel that no stride-2 query sits on still changes the output: keys were not subsampled
        x2 = x.clone()
        x2[..., 1, 1] += 1.0
        assert not torch.allclose(attn(x2), out)


@pytest.mark.parametrize("size", [(600, 600), (97, 130)])
def test_sizes_the_blocks_do_not_divide_run(size, seed):
    """H7's 600 px gives 75-pixel stage-2 maps for b = 10; the op pads them. A narrow H7 keeps this cheap."""
    model = timm.create_model(
        "vitzoo_halonet_h7", depths=(1, 1, 1, 1), widths=(16, 32, 32, 64), stem_chs=16, final_chs=32, num_classes=3
    ).eval()
    with torch.no_grad():
        out, feats = model.forward_intermediates(torch.randn(1, 3, *size))
    assert [f.shape[-2:] for f in feats] == [tuple(-(-s // r) for s in size) for r in (4, 8, 16, 32)]
    assert out.shape[1] == 32 and torch.isfinite(out).all()


def test_own_layout_checkpoint_loads_and_mismatches_are_listed(seed):
    model = timm.create_model("vitzoo_halonet_h0")
    state = {k: torch.randn_like(v.float()).to(v.dtype) for k, v in model.state_dict().items()}
    loaded = checkpoint_filter_fn({"state_dict_ema": state, "state_dict": {}, "epoch": 3}, model)
    model.load_state_dict(loaded, strict=True)
    del state["stages.1.blocks.0.attn.rel_h"]
    with pytest.raises(CheckpointError, match=r"missing keys: stages\.1\.blocks\.0\.attn\.rel_h"):
        checkpoint_filter_fn({"state_dict": state}, model)
