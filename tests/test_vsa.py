"""VSA families: the layer against timm's Swin window attention, ViTAEv2-VSA checkpoints, Swin-VSA's structure."""

import json
import pathlib

import pytest
import timm
import torch
from timm.models.swin_transformer import WindowAttention, window_partition, window_reverse

import vitzoo  # noqa: F401  (registers the models)
from vitzoo.layers import VaryingSizeWindowAttention
from vitzoo.stats import count_params

FIXTURES = pathlib.Path(__file__).parent / "fixtures" / "official_keys"


def _randomize(module):
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn_like(p) * (p[0].numel() ** -0.5 if p.dim() > 1 else 0.5))
    return module


def test_untrained_vsa_is_timms_swin_window_attention(seed):
    """Zero window regression (the initial state) is Swin's non-shifted window attention, same parameter names."""
    vsa = _randomize(VaryingSizeWindowAttention(32, 4, window_size=7)).eval()
    with torch.no_grad():
        for conv in (vsa.sampling_offsets, vsa.sampling_scales):
            conv.weight.zero_()
            conv.bias.zero_()
    swin = WindowAttention(32, 4, window_size=7).eval()
    swin.load_state_dict({k: v for k, v in vsa.state_dict().items() if not k.startswith("sampling_")}, strict=False)
    x = torch.randn(2, 14, 21, 32)
    with torch.no_grad():
        expected = window_reverse(swin(window_partition(x, (7, 7)).flatten(1, 2)), (7, 7), 14, 21)
        torch.testing.assert_close(vsa(x), expected, rtol=1e-4, atol=1e-5)


def test_trained_window_regression_changes_the_keys(seed):
    vsa = _randomize(VaryingSizeWindowAttention(16, 2, window_size=7)).eval()
    x = torch.randn(1, 14, 14, 16)
    with torch.no_grad():
        moved = vsa(x)
        for conv in (vsa.sampling_offsets, vsa.sampling_scales):
            conv.weight.zero_()
            conv.bias.zero_()
        assert not torch.allclose(vsa(x), moved)


def test_new_vsa_starts_as_plain_windows():
    vsa = VaryingSizeWindowAttention(16, 2)
    for conv in (vsa.sampling_offsets, vsa.sampling_scales):
        assert not conv.weight.any() and not conv.bias.any()


def test_vsa_logit_scale_uses_the_input_width_as_official():
    """Reduction cells attend from the PRM width to the token width; the official scale divides the input width."""
    assert VaryingSizeWindowAttention(256, 2, out_dim=64).scale == (256 // 2) ** -0.5


@pytest.mark.parametrize(
    "name,ref",
    [("vitzoo_swin_vsa_t", "swin_tiny_patch4_window7_224"), ("vitzoo_swin_vsa_s", "swin_small_patch4_window7_224")],
)
def test_swin_vsa_is_swin_plus_two_regression_convs_per_block(name, ref):
    with torch.device("meta"):
        ours, swin = timm.create_model(name), timm.create_model(ref)
    extra = sum(
        2 * (b.attn.sampling_offsets.weight.numel() + b.attn.sampling_offsets.bias.numel())
        for stage in ours.stages
        for b in stage.blocks
    )
    assert count_params(ours) == count_params(swin) + extra
    assert extra == {"vitzoo_swin_vsa_t": 270_120, "vitzoo_swin_vsa_s": 491_880}[name]  # the paper's +0.27M / +0.49M


def _official_state_dict(variant: str) -> dict:
    keys = json.loads((FIXTURES / f"vitaev2_vsa_{variant}.json").read_text())["keys"]
    out = {}
    for key, shape in keys.items():
        if key.endswith(("num_batches_tracked", "relative_position_index")):
            out[key] = torch.randint(0, 49, shape)
        else:
            out[key] = torch.randn(shape)
    return out


def test_official_vitaev2_checkpoint_loads_strictly_with_ema_weights(tmp_path):
    ema, raw = _official_state_dict("s"), _official_state_dict("s")
    path = tmp_path / "vitaev2_vsa_s.pth.tar"
    torch.save({"state_dict": raw, "state_dict_ema": ema, "epoch": 299}, path)
    model = timm.create_model("vitzoo_vitaev2_vsa_s", pretrained=True, pretrained_cfg_overlay=dict(file=str(path)))
    rc_attn = model.stages[0].downsample.attn
    torch.testing.assert_close(rc_attn.qkv.weight, ema["layers.0.RC.attn.qkv.weight"].flatten(1))
    torch.testing.assert_close(rc_attn.sampling_offsets.bias, ema["layers.0.RC.attn.sampling_offsets.2.bias"])
    torch.testing.assert_close(model.stages[2].blocks[7].PCM[6].weight, ema["layers.2.NC.7.PCM.6.weight"])


@pytest.mark.parametrize("size", [(224, 224), (101, 77)])
def test_vitaev2_runs_any_size_with_the_grid_built_per_forward(size, seed):
    """Nothing size- or device-bound is built at construction: one model runs several sizes in a row."""
    model = timm.create_model("vitzoo_vitaev2_vsa_s", num_classes=4).eval()
    assert not [n for n, _ in model.named_buffers() if "running" not in n and "num_batches" not in n]
    with torch.no_grad():
        for h, w in (size, (64, 96)):
            feats = model.forward_intermediates(torch.randn(1, 3, h, w), intermediates_only=True)
            assert [f.shape[-2:] for f in feats] == [(-(-h // r), -(-w // r)) for r in (4, 8, 16, 32)]


def test_a_trace_at_a_one_window_map_samples_as_eager_at_every_size(seed):
    """Traced with symbolic sizes at a 7x7 map (one window), the VSA layer's program samples and attends as eager at
    larger and non-square maps (under tracing the window grid grows by a padding window, sampled in the same frame)."""
    from dynamic_trace import export_once

    attn = VaryingSizeWindowAttention(16, 2, window_size=7).eval()
    with torch.no_grad():
        for conv in (attn.sampling_offsets, attn.sampling_scales):  # regressed windows away from plain attention
            conv.weight.normal_(0, 0.3)
            conv.bias.normal_(0, 0.3)
        program = export_once(attn, torch.randn(2, 7, 7, 16), {1: (7, 32), 2: (7, 32)})
        for size in [(7, 7), (8, 8), (7, 15), (14, 9)]:
            x = torch.randn(2, *size, 16)
            torch.testing.assert_close(program(x), attn(x), atol=1e-5, rtol=1e-5)
