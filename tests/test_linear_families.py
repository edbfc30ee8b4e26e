"""Agent-, InLine- and FLatten- hosts: block layouts, resolution-tied tables at a second resolution, half precision."""

import importlib

import pytest
import timm
import torch
import torch.nn.functional as F
from test_checkpoints import random_official_state_dict

import vitzoo  # noqa: F401
from vitzoo.layers import SwinWindowBlock
from vitzoo.layers.global_attn import (
    FocusedLinearAttention2d,
    InLineAttention2d,
    focused_feature_map,
    resize_agent_table,
    resize_positional_encoding,
)
from vitzoo.models._linear_mixers import GlobalMixerBlock, expand_attn_types, resize_relative_position_table


def _layout(model) -> list[str]:
    """One letter per block: A/I/L for the global mixers, W for window (Swin) or stripe (CSWin) softmax blocks."""
    letters = dict(AgentAttention2d="A", InLineAttention2d="I", FocusedLinearAttention2d="L")
    out = []
    for stage in model.stages:
        out.append("".join(letters.get(type(b.attn).__name__, "W") for b in stage.blocks))
    return out


def test_attn_type_strings_expand_as_the_official_code():
    assert expand_attn_types("AAMB2", (2, 2, 4, 2)) == [[True] * 2, [True] * 2, [True, True, False, False], [False] * 2]
    assert expand_attn_types("IISS", (1, 1, 1, 1)) == [[True], [True], [False], [False]]
    for bad in ("AAB", "AAMB", "AAXB", "AABB2"):
        with pytest.raises(ValueError, match="attn_type"):
            expand_attn_types(bad, (2, 2, 2, 2))


def test_block_layouts_follow_the_released_configs():
    with torch.device("meta"):
        swin_b = timm.create_model("vitzoo_agent_swin_b")
        inline_swin_t = timm.create_model("vitzoo_inline_swin_t")
        flatten_cswin = timm.create_model("vitzoo_flatten_cswin_t")
        pvt = timm.create_model("vitzoo_inline_pvt_s")
    assert _layout(swin_b) == ["AA", "AA", "AA" + "W" * 16, "WW"]
    assert _layout(inline_swin_t) == ["II", "II", "I" * 6, "WW"]
    assert _layout(flatten_cswin) == ["LL", "LLLL", "W" * 18, "W"]
    assert _layout(pvt) == ["III", "IIII", "I" * 6, "III"]
    # Swin's softmax blocks: 7x7 windows, shifted on odd block indices (stage 4's 7x7 map cannot shift)
    stage3 = swin_b.stages[2].blocks
    assert all(isinstance(b, SwinWindowBlock) and b.window_size == (7, 7) for b in stage3[2:])
    assert [b.shift_size for b in stage3[2:4]] == [(0, 0), (3, 3)]
    assert swin_b.stages[3].blocks[1].shift_size == (0, 0)
    # agents per stage 9-16-49-49, tables sized for the 224 maps 56-28-14
    assert [swin_b.stages[i].blocks[0].attn.agent_num for i in range(3)] == [9, 16, 49]
    # stored without the official leading 1 (5-D parameters would break model.to(memory_format=channels_last))
    assert swin_b.stages[0].blocks[0].attn.ah_bias.shape == (4, 9, 56, 1)
    assert flatten_cswin.stages[1].blocks[0].attn.positional_encoding.shape == (1, 28 * 28, 128)


def test_inline_cswin_residual_comes_from_the_block_input():
    with torch.device("meta"):
        model = timm.create_model("vitzoo_inline_cswin_t")
    block = model.stages[0].blocks[0]
    assert isinstance(block, GlobalMixerBlock) and block.context_from_input
    assert block.attn.dwc is not None  # CSWin's LePE on V, on top of InLine's predicted 3x3 kernels


@pytest.mark.parametrize(
    "name", ["vitzoo_agent_swin_t", "vitzoo_flatten_swin_t", "vitzoo_agent_pvt_t", "vitzoo_agent_deit_t"]
)
def test_official_224_weights_at_288(name, seed):
    """A 224 checkpoint loaded into a 288 model resizes its tables as the official loaders do.

    Where the official code resizes the same way in its loader and in its forward pass (Agent's tables, FLatten's
    positional encoding, DeiT's position embedding), the 288 model must also compute what the 224 model computes at
    288. Swin's softmax blocks change window with ``img_size`` (official rule), so that check uses the all-global
    layout; PVT's forward resizes its position embedding bilinearly but its loader bicubically, so PVT is checked
    against the bicubic resize instead.
    """
    filter_fn = importlib.import_module(type(timm.create_model(name)).__module__).checkpoint_filter_fn
    official = {k: v * 0.1 for k, v in random_official_state_dict(name).items()}
    at_288 = timm.create_model(name, img_size=288)
    at_288.load_state_dict(filter_fn({"model": official}, at_288))
    if "agent" in name:
        first = at_288.get_submodule("blocks.0.attn" if "deit" in name else "stages.0.blocks.0.attn")
        assert first.ah_bias.shape[2] == (18 if "deit" in name else 72)
    if "pvt" in name:
        pe = official["pos_embed1"].reshape(1, 56, 56, -1).permute(0, 3, 1, 2)
        pe = F.interpolate(pe, size=(72, 72), mode="bicubic", align_corners=False).flatten(2).transpose(1, 2)
        torch.testing.assert_close(at_288.stages[0].downsample.pos_embed.detach(), pe)
        return
    if name == "vitzoo_agent_swin_t":  # stage 4's softmax window: 9 at 288, its bias table resized 13^2 -> 17^2
        assert at_288.stages[3].blocks[1].window_size == (9, 9)
        assert at_288.stages[3].blocks[1].attn.relative_position_bias_table.shape == (17 * 17, 24)

    layout = dict(attn_type="AAAA" if "agent" in name else "LLLL") if "swin" in name else {}
    at_224 = timm.create_model(name, **layout).eval()
    with torch.no_grad():
        for p in at_224.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    at_288 = timm.create_model(name, img_size=288, **layout).eval()
    at_288.load_state_dict(filter_fn(at_224.state_dict(), at_288))
    resized = {k: v.shape for k, v in at_288.state_dict().items() if v.shape != at_224.state_dict()[k].shape}
    assert resized, "no table depends on the resolution?"
    assert all(k.endswith(("_bias", "positional_encoding", "pos_embed")) for k in resized), resized
    x = torch.randn(1, 3, 288, 288)
    with torch.no_grad():
        torch.testing.assert_close(at_288(x), at_224(x), atol=2e-5, rtol=1e-4)


def test_agent_table_resize_is_the_official_linear_interpolation(seed):
    table = torch.randn(1, 3, 9, 56, 1)  # ah_bias: [1, heads, agents, H, 1]
    official = F.interpolate(table.squeeze(0).squeeze(-1), size=72, mode="linear").unsqueeze(0).unsqueeze(-1)
    torch.testing.assert_close(resize_agent_table(table, 3, 72), official)
    table = torch.randn(1, 3, 56, 1, 9)  # ha_bias: [1, heads, H, 1, agents]
    official = F.interpolate(table.squeeze(0).squeeze(-2).permute(0, 2, 1), size=72, mode="linear")
    torch.testing.assert_close(resize_agent_table(table, 2, 72), official.permute(0, 2, 1).unsqueeze(0).unsqueeze(-2))


def test_float64_focusing_and_table_resizes_compute_in_float64(seed):
    """Half inputs are upcast to float32 in these helpers; float64 must not be rounded through float32 on the way
    (it was, which left vitzoo's FLatten models 1e-7 from the official code in float64)."""
    x, scale = torch.randn(2, 49, 32, dtype=torch.float64), torch.randn(1, 1, 32, dtype=torch.float64)
    t = (F.relu(x) + 1e-6) / F.softplus(scale)
    want = t**3 * t.norm(dim=-1, keepdim=True) / (t**3).norm(dim=-1, keepdim=True)
    torch.testing.assert_close(focused_feature_map(x, scale, 3.0), want, atol=1e-13, rtol=1e-13)

    table = torch.randn(1, 3, 9, 56, 1, dtype=torch.float64)
    want = F.interpolate(table.squeeze(0).squeeze(-1), size=72, mode="linear").unsqueeze(0).unsqueeze(-1)
    torch.testing.assert_close(resize_agent_table(table, 3, 72), want, atol=1e-13, rtol=1e-13)

    pe = torch.randn(1, 7 * 7, 16, dtype=torch.float64)
    grid = pe.reshape(1, 7, 7, 16).permute(0, 3, 1, 2)
    want = F.interpolate(grid, size=(9, 9), mode="bicubic", align_corners=False).flatten(2).transpose(1, 2)
    torch.testing.assert_close(resize_positional_encoding(pe, (7, 7), (9, 9)), want, atol=1e-13, rtol=1e-13)

    rel = torch.randn(13 * 13, 3, dtype=torch.float64)
    want = F.interpolate(rel.t().reshape(1, 3, 13, 13), size=(17, 17), mode="bicubic", align_corners=False)
    torch.testing.assert_close(
        resize_relative_position_table(rel, 17 * 17), want.reshape(3, -1).t(), atol=1e-13, rtol=1e-13
    )


@pytest.mark.parametrize("dtype,tol", [(torch.float16, 0.01), (torch.bfloat16, 0.05)])
@pytest.mark.parametrize("kind", ["flatten", "inline"])
def test_half_precision_mixers_stay_close_to_float32(kind, dtype, tol, seed):
    """A stage-1 map (56 x 56, 96 channels) of LayerNorm-scale activations, weights at unit output scale."""
    if kind == "flatten":
        layer = FocusedLinearAttention2d(96, 3, (56, 56))
    else:
        layer = InLineAttention2d(96, 3)
    with torch.no_grad():
        for p in layer.parameters():
            p.normal_(0, p.shape[-1] ** -0.5 if p.dim() > 1 else 0.1)
    x = torch.randn(2, 56 * 56, 96)
    ref = layer(x, (56, 56))
    out = layer.to(dtype)(x.to(dtype), (56, 56))
    assert torch.isfinite(out).all()
    err = (out.float() - ref).norm() / ref.norm()
    assert err < tol, err


def test_every_variant_names_its_official_weights_in_its_cfg():
    names = [
        m for m in timm.list_models("vitzoo_*") if m.startswith(("vitzoo_agent_", "vitzoo_inline_", "vitzoo_flatten_"))
    ]
    assert len(names) == 31
    for name in names:
        notes = timm.models.get_pretrained_cfg(name).notes
        assert notes and "https://cloud.tsinghua.edu.cn/f/" in notes[0], name
