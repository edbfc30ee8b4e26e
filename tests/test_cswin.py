"""CSWin-specific behaviour: per-stripe LePE, the vertical / horizontal head split, padding, official layout."""

import json
import pathlib

import pytest
import timm
import torch
import torch.nn as nn

import vitzoo  # noqa: F401  (registers the models)
from vitzoo.layers import LePE
from vitzoo.models.cswin import CrossShapedWindowAttention, CSWinTransformer, StripeLePE, checkpoint_filter_fn

FIXTURES = pathlib.Path(__file__).parent / "fixtures" / "official_keys"


def _randomize(module: nn.Module) -> nn.Module:
    """Unit-scale random weights, so attention logits are O(1) and every term of the output matters."""
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn_like(p) * (p[0].numel() ** -0.5 if p.dim() > 1 else 0.5))
    return module


def _stripes(size: int, split: int) -> list[slice]:
    return [slice(s, min(s + split, size)) for s in range(0, size, split)]


def naive_cross_shaped_attention(attn: CrossShapedWindowAttention, x: torch.Tensor) -> torch.Tensor:
    """The definition, one stripe at a time: a stripe cut short by the border is just a smaller stripe.

    Every stripe is attended over on its own (plain softmax attention over the stripe's real tokens) and its LePE
    is the depthwise conv of the stripe alone, zero-padded at the stripe's borders.
    """
    b, h, w, c = x.shape
    heads, sw = attn.num_heads, attn.split_size
    d = c // heads
    q, k, v = attn.qkv(x).view(b, h, w, 3, heads, d).unbind(3)
    if attn.global_attn:
        branches = [(slice(0, heads), [(slice(None), slice(None))])]
    else:
        half = heads // 2
        vertical = [(slice(None), cols) for cols in _stripes(w, sw)]
        horizontal = [(rows, slice(None)) for rows in _stripes(h, sw)]
        branches = [(slice(0, half), vertical), (slice(half, heads), horizontal)]
    out = torch.zeros(b, h, w, heads, d)
    for i, (hs, regions) in enumerate(branches):
        conv = attn.lepe[i].conv
        for rows, cols in regions:
            qs, ks, vs = (t[:, rows, cols, hs] for t in (q, k, v))  # B, h', w', n, D
            hh, ww, n = qs.shape[1:4]
            qf, kf, vf = (t.reshape(b, hh * ww, n, d) for t in (qs, ks, vs))
            logits = torch.einsum("bind,bjnd->bnij", qf, kf) * d**-0.5
            o = torch.einsum("bnij,bjnd->bind", logits.softmax(-1), vf).reshape(b, hh, ww, n, d)
            lepe = conv(vs.reshape(b, hh, ww, n * d).permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
            out[:, rows, cols, hs] = o + lepe.reshape(b, hh, ww, n, d)
    return attn.proj(out.reshape(b, h, w, c))


@pytest.mark.parametrize(
    "size,window",
    [
        ((10, 9), (10, 3)),  # vertical stripes that divide the map
        ((10, 9), (10, 4)),  # vertical stripes, the last one 1 column wide (padded)
        ((10, 9), (4, 9)),  # horizontal stripes, the last one 2 rows high (padded)
    ],
)
def test_stripe_lepe_never_looks_across_a_stripe_border(size, window, seed):
    lepe = _randomize(StripeLePE(6))
    plain = LePE(6, 3)
    plain.load_state_dict(lepe.state_dict())
    x = torch.randn(2, *size, 6)
    vertical = window[0] == size[0]
    stripes = _stripes(size[1] if vertical else size[0], window[1] if vertical else window[0])
    with torch.no_grad():
        base, plain_base = lepe(x, window), plain(x)
        for stripe in stripes:
            x2 = x.clone()
            if vertical:
                x2[:, :, stripe] += torch.randn_like(x2[:, :, stripe])
            else:
                x2[:, stripe] += torch.randn_like(x2[:, stripe])
            changed = (lepe(x2, window) - base).abs().amax(dim=(0, 3))  # H, W
            inside = torch.zeros(size, dtype=torch.bool)
            if vertical:
                inside[:, stripe] = True
            else:
                inside[stripe] = True
            assert changed[~inside].max() == 0, "LePE leaked across a stripe border"
            assert changed[inside].min() > 0
            # a conv over the whole map does leak: the check above can fail
            assert (plain(x2) - plain_base).abs().amax(dim=(0, 3))[~inside].max() > 0
        # each stripe equals the conv of that stripe alone
        for stripe in stripes:
            part = x[:, :, stripe] if vertical else x[:, stripe]
            ref = plain(part)
            torch.testing.assert_close(base[:, :, stripe] if vertical else base[:, stripe], ref)


def test_first_half_of_heads_attends_vertically_second_half_horizontally(seed):
    attn = _randomize(CrossShapedWindowAttention(dim=16, num_heads=4, split_size=2))
    with torch.no_grad():
        attn.proj.weight.copy_(torch.eye(16))
        attn.proj.bias.zero_()
        x = torch.randn(1, 8, 6, 16)
        x2 = x.clone()
        x2[0, 5, 2] += torch.randn(16)  # token (5, 2): vertical stripe = columns 2-3, horizontal stripe = rows 4-5
        diff = (attn(x2) - attn(x)).abs()[0]  # H, W, C
    vertical = torch.zeros(8, 6, dtype=torch.bool)
    vertical[:, 2:4] = True
    horizontal = torch.zeros(8, 6, dtype=torch.bool)
    horizontal[4:6] = True
    first, second = diff[..., :8].amax(-1), diff[..., 8:].amax(-1)
    assert torch.equal(first > 1e-6, vertical)
    assert torch.equal(second > 1e-6, horizontal)


def test_last_stage_attends_over_the_whole_map(seed):
    attn = _randomize(CrossShapedWindowAttention(dim=16, num_heads=4, split_size=7, global_attn=True))
    assert len(attn.lepe) == 1 and attn.lepe[0].conv.in_channels == 16
    x = torch.randn(1, 5, 9, 16)
    x2 = x.clone()
    x2[0, 0, 0] += torch.randn(16)
    with torch.no_grad():
        diff = (attn(x2) - attn(x)).abs().amax(-1)
    assert (diff > 1e-6).all()


@pytest.mark.parametrize(
    "h,w,split,global_attn",
    [
        (14, 14, 7, False),  # stripes divide the map: the official computation
        (14, 10, 7, False),  # vertical stripes padded, horizontal ones divide
        (9, 23, 2, False),  # both padded
        (5, 3, 7, False),  # stripes wider than the map
        (56, 4, 1, False),  # split size 1 (stage 1)
        (6, 5, 7, True),  # global attention
    ],
)
def test_attention_equals_the_stripe_by_stripe_definition(h, w, split, global_attn, seed):
    attn = _randomize(CrossShapedWindowAttention(dim=24, num_heads=4, split_size=split, global_attn=global_attn))
    x = torch.randn(2, h, w, 24)
    with torch.no_grad():
        torch.testing.assert_close(attn(x), naive_cross_shaped_attention(attn, x), atol=2e-5, rtol=1e-4)


def test_odd_heads_are_refused():
    with pytest.raises(ValueError, match="splits the heads in two halves"):
        CrossShapedWindowAttention(dim=18, num_heads=3, split_size=2)


def test_sizes_the_stripes_do_not_divide_run(seed):
    # CSWin-T's layout at a quarter of its depth and width (the full model runs in test_models.py)
    model = CSWinTransformer(embed_dim=16, depths=(1, 1, 2, 1), num_heads=(2, 4, 8, 16), num_classes=10).eval()
    x = torch.randn(1, 3, 256, 320)  # stage 3 map 16 x 20: split 7 divides neither side
    with torch.no_grad():
        out, inter = model.forward_intermediates(x)
        logits = model.forward_head(out)
    assert [t.shape[-2:] for t in inter] == [(64, 80), (32, 40), (16, 20), (8, 10)]
    assert logits.shape == (1, 10) and torch.isfinite(logits).all()


@pytest.mark.parametrize(
    "name,dim,heads,splits,depths",
    [
        ("vitzoo_cswin_t", 64, (2, 4, 8, 16), (1, 2, 7), (1, 2, 21, 1)),
        ("vitzoo_cswin_b", 96, (4, 8, 16, 32), (1, 2, 7), (2, 4, 32, 2)),  # code and weights, not the paper's heads
        ("vitzoo_cswin_l", 144, (6, 12, 24, 24), (1, 2, 7), (2, 4, 32, 2)),
        ("vitzoo_cswin_b_384", 96, (4, 8, 16, 32), (1, 2, 12), (2, 4, 32, 2)),
    ],
)
def test_hyper_parameters_are_the_official_code_s(name, dim, heads, splits, depths):
    with torch.device("meta"):
        model = timm.create_model(name)
    assert [len(s.blocks) for s in model.stages] == list(depths)
    for i, stage in enumerate(model.stages):
        attn = stage.blocks[0].attn
        assert attn.num_heads == heads[i] and stage.blocks[0].norm1.normalized_shape == (dim * 2**i,)
        assert attn.global_attn == (i == 3)
        if i < 3:
            assert attn.split_size == splits[i]


def test_official_keys_land_on_the_right_modules(seed):
    """Same-shaped tensors that shapes alone cannot tell apart: stem conv vs LayerNorm, the two LePE branches."""
    keys = json.loads((FIXTURES / "cswin_t.json").read_text())["keys"]
    official = {k: torch.randn(s) for k, s in keys.items()}
    with torch.device("meta"):
        model = timm.create_model("vitzoo_cswin_t")
    mapped = checkpoint_filter_fn({"state_dict_ema": official, "epoch": 299}, model)
    model.load_state_dict(mapped, strict=True, assign=True)
    pairs = {
        "stage1_conv_embed.0.bias": model.stages[0].downsample.conv.bias,
        "stage1_conv_embed.2.bias": model.stages[0].downsample.norm.bias,
        "merge2.norm.weight": model.stages[2].downsample.norm.weight,
        "stage3.4.attns.0.get_v.weight": model.stages[2].blocks[4].attn.lepe[0].conv.weight,
        "stage3.4.attns.1.get_v.weight": model.stages[2].blocks[4].attn.lepe[1].conv.weight,
        "stage4.0.attns.0.get_v.bias": model.stages[3].blocks[0].attn.lepe[0].conv.bias,
        "stage2.1.qkv.weight": model.stages[1].blocks[1].attn.qkv.weight,
        "stage2.1.norm2.bias": model.stages[1].blocks[1].norm2.bias,
        "stage2.1.mlp.fc2.weight": model.stages[1].blocks[1].mlp.fc2.weight,
        "norm.weight": model.norm.weight,
    }
    for key, param in pairs.items():
        assert torch.equal(official[key], param), key
