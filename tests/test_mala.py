"""MAViT (MALA)-specific behaviour: which stages are linear, official checkpoints, any input size."""

import json
import pathlib

import pytest
import timm
import torch

import vitzoo  # noqa: F401  (registers the models)
from vitzoo.models.mala import GatedAttention

FIXTURES = pathlib.Path(__file__).parent / "fixtures" / "official_keys"


def test_stages_one_and_two_are_linear_three_and_four_softmax():
    with torch.device("meta"):
        model = timm.create_model("vitzoo_mala_s")
    kinds = [{b.attn.linear for b in stage.blocks} for stage in model.stages]
    assert kinds == [{True}, {True}, {False}, {False}]


def test_official_checkpoint_loads_strictly(tmp_path, seed):
    keys = json.loads((FIXTURES / "mala_t.json").read_text())["keys"]
    official = {
        k: torch.randn(s) if not k.endswith("num_batches_tracked") else torch.tensor(5) for k, s in keys.items()
    }
    path = tmp_path / "mala_t.pth"
    torch.save({"model": official, "epoch": 299}, path)
    model = timm.create_model("vitzoo_mala_t", pretrained=True, pretrained_cfg_overlay=dict(file=str(path)))
    torch.testing.assert_close(model.head.weight, official["head.weight"].flatten(1))
    # the official downsample closes stage i; here it opens stage i + 1
    torch.testing.assert_close(
        model.stages[1].downsample.reduction.weight, official["layers.0.downsample.reduction.weight"]
    )
    torch.testing.assert_close(model.stages[0].blocks[1].norm1.weight, official["layers.0.blocks.1.norm1.norm.weight"])
    torch.testing.assert_close(model.norm.proj.weight, official["proj.weight"])


def test_gate_and_lepe_take_part(seed):
    """out = proj((attn + lepe(v)) * o): a zero gate silences the block, a zero LePE changes it."""
    attn = GatedAttention(16, 2, linear=True).eval()
    x = torch.randn(1, 16, 6, 7)
    with torch.no_grad():
        full = attn(x)
        attn.lepe.weight.zero_()
        attn.lepe.bias.zero_()
        assert not torch.allclose(attn(x), full)
        attn.qkvo.weight[48:].zero_()
        attn.qkvo.bias[48:].zero_()
        torch.testing.assert_close(attn(x), attn.proj.bias.view(1, -1, 1, 1).expand_as(full))


@pytest.mark.parametrize("size", [(225, 250), (64, 96)])
def test_any_input_size_runs_with_rope_for_the_live_map(size, seed):
    model = timm.create_model("vitzoo_mala_t", num_classes=3).eval()
    with torch.no_grad():
        out, feats = model.forward_intermediates(torch.randn(1, 3, *size))
    assert [f.shape[-2:] for f in feats] == [tuple(-(-s // r) for s in size) for r in (4, 8, 16, 32)]
    assert out.shape[1] == 2048 and torch.isfinite(out).all()
