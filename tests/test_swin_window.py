"""vitzoo's Swin window block: timm's ``SwinTransformerBlock`` keys and numbers, and its per-forward window rule."""

import pytest
import timm
import torch
from test_ops_window_shift import shifted_windows
from timm.models.swin_transformer import SwinTransformerBlock

import vitzoo  # noqa: F401
from vitzoo.layers import SwinWindowBlock


def _randomise(module: torch.nn.Module) -> None:
    """Weights at unit output scale, norm affines and the bias table away from their init, so all of them matter."""
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.endswith("relative_position_bias_table"):
                p.normal_(0, 0.5)
            elif p.dim() == 1:
                p.uniform_(0.5, 1.5) if "norm" in name and name.endswith("weight") else p.normal_(0, 0.1)
            else:
                p.normal_(0, p.shape[1] ** -0.5)


def _pair(size, window, shift, dim=48, heads=3):
    theirs = SwinTransformerBlock(dim, size, heads, window_size=window, shift_size=shift)
    _randomise(theirs)
    ours = SwinWindowBlock(dim, size, heads, window_size=window, shift_size=shift)
    ours.load_state_dict(theirs.state_dict(), strict=True)
    theirs.load_state_dict(ours.state_dict(), strict=True)  # the same keys both ways
    return ours, theirs


@pytest.mark.parametrize(
    "size,window,shift",
    [
        ((14, 14), 7, 0),
        ((14, 14), 7, 3),
        ((8, 12), 4, 2),
        ((8, 12), (4, 6), (2, 3)),
        ((7, 7), 7, 3),  # the map fits the window: no shift (Swin's stage 4 at 224)
    ],
)
def test_block_equals_timm_forward_and_backward(seed, size, window, shift):
    ours, theirs = _pair(size, window, shift)
    assert (ours.window_size, ours.shift_size) == (theirs.window_size, theirs.shift_size)
    torch.testing.assert_close(ours.attn.relative_position_index, theirs.attn.relative_position_index, rtol=0, atol=0)
    assert "attn.relative_position_index" not in ours.state_dict()  # non-persistent, as timm's
    x = torch.randn(2, *size, 48)
    x_ours, x_theirs = x.clone().requires_grad_(), x.clone().requires_grad_()
    out_ours, out_theirs = ours(x_ours), theirs(x_theirs)
    torch.testing.assert_close(out_ours, out_theirs, atol=2e-5, rtol=1e-5)
    cotangent = torch.randn_like(out_ours)
    out_ours.backward(cotangent)
    out_theirs.backward(cotangent)
    torch.testing.assert_close(x_ours.grad, x_theirs.grad, atol=2e-5, rtol=1e-5)
    theirs_params = dict(theirs.named_parameters())
    for name, p in ours.named_parameters():
        torch.testing.assert_close(
            p.grad, theirs_params[name].grad, atol=5e-5, rtol=1e-4, msg=lambda m, n=name: f"{n}: {m}"
        )


def test_window_and_shift_follow_the_map():
    block = SwinWindowBlock(48, (14, 14), 3, window_size=7, shift_size=3)
    assert (block.window_size, block.shift_size) == ((7, 7), (3, 3))
    assert block.window_and_shift((14, 14)) == ((7, 7), (3, 3))
    assert block.window_and_shift((10, 13)) == ((7, 7), (3, 3))  # padded, still shifted
    assert block.window_and_shift((5, 20)) == ((5, 7), (0, 3))  # H fits one window: shrunk, not shifted
    assert block.window_and_shift((7, 7)) == ((7, 7), (0, 0))
    # built for a map smaller than the window: the table (and the largest window) is the map's
    small = SwinWindowBlock(48, (4, 6), 3, window_size=7, shift_size=3)
    assert (small.window_size, small.shift_size) == ((4, 6), (0, 0))
    assert small.attn.relative_position_bias_table.shape == (7 * 11, 3)
    assert small.window_and_shift((16, 16)) == ((4, 6), (3, 3))
    tiny = SwinWindowBlock(48, (2, 3), 3, window_size=7, shift_size=3)
    assert tiny.window_and_shift((8, 8)) == ((2, 3), (1, 1))  # shift 3 does not fit: window // 2


def test_smaller_window_bias_reads_the_table_at_its_offsets(seed):
    block = SwinWindowBlock(48, (14, 14), 3, window_size=(7, 6))
    table = block.attn.relative_position_bias_table
    a, b = 4, 5
    expected = torch.empty(3, a * b, a * b)
    for yq in range(a):
        for xq in range(b):
            for yk in range(a):
                for xk in range(b):
                    expected[:, yq * b + xq, yk * b + xk] = table[(yq - yk + 6) * 11 + (xq - xk + 5)]
    torch.testing.assert_close(block.attn.relative_position_bias((a, b)), expected, rtol=0, atol=0)
    full = block.attn.relative_position_bias((7, 6))
    theirs = table[block.attn.relative_position_index.reshape(-1)].view(42, 42, 3).permute(2, 0, 1)
    torch.testing.assert_close(full, theirs, rtol=0, atol=0)


@pytest.mark.parametrize("size", [(10, 13), (5, 10)])
def test_block_attention_at_other_maps_matches_definition(seed, size):
    """Built for 14x14 / window 7 / shift 3, run on maps the window does not divide or overflows on one axis."""
    block = SwinWindowBlock(48, (14, 14), 3, window_size=7, shift_size=3)
    _randomise(block)
    window, shift = block.window_and_shift(size)
    x = torch.randn(2, *size, 48)
    with torch.no_grad():
        got = block.attn(x, window, shift)
        q, k, v = block.attn.qkv(x).unflatten(-1, (3, 3, 16)).unbind(3)
        bias = block.attn.relative_position_bias(window)
        expected = block.attn.proj(shifted_windows(q, k, v, window, shift, 16**-0.5, bias).float().flatten(-2))
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def _timm_blocks_copy(model):
    """The same model with timm's ``SwinTransformerBlock`` in place of every window block (the previous port)."""
    for stage in model.stages:
        for j, block in enumerate(stage.blocks):
            if isinstance(block, SwinWindowBlock):
                heads = block.attn.num_heads
                timm_block = SwinTransformerBlock(
                    block.dim,
                    block.input_resolution,
                    heads,
                    window_size=block.window_size,
                    shift_size=block.target_shift_size,
                    dynamic_mask=True,
                )
                timm_block.load_state_dict(block.state_dict(), strict=True)
                stage.blocks[j] = timm_block
    return model


def test_model_matches_the_timm_block_port_at_224(seed):
    """FLatten-Swin-T (softmax blocks in stages 3 and 4, shifted on odd blocks) as with timm's blocks, at 224."""
    model = timm.create_model("vitzoo_flatten_swin_t").eval()
    _randomise(model)
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        ours = model(x)
        theirs = _timm_blocks_copy(model)(x)
    assert ours.abs().max() > 0.1
    torch.testing.assert_close(ours, theirs, atol=5e-5, rtol=1e-4)


def test_model_runs_at_sizes_the_windows_do_not_divide(seed):
    """160x144: stage-3 maps 10x9 in 7x7 windows (padded, shifted on odd blocks), stage 4's 5x5 in one shrunk window;
    backward reaches every parameter of the window blocks."""
    model = timm.create_model("vitzoo_flatten_swin_t", num_classes=10)
    out = model(torch.randn(1, 3, 160, 144))
    assert out.shape == (1, 10) and torch.isfinite(out).all()
    out.square().sum().backward()
    stage3, stage4 = model.stages[2].blocks, model.stages[3].blocks
    assert [b.window_and_shift((10, 9)) for b in stage3[:2]] == [((7, 7), (0, 0)), ((7, 7), (3, 3))]
    assert stage4[1].window_and_shift((5, 5)) == ((5, 5), (0, 0))
    for block in [*stage3, *stage4]:
        assert isinstance(block, SwinWindowBlock)
        for name, p in block.named_parameters():
            assert p.grad is not None and torch.isfinite(p.grad).all(), name


def test_a_trace_at_a_one_window_map_follows_the_window_rule_at_every_size(seed):
    """Traced with symbolic sizes at a 7x7 map (one window: unshifted), the block's program shifts each axis
    exactly where the rule does at other sizes: it keeps both computations and picks by size at run time."""
    from dynamic_trace import export_once

    block = SwinWindowBlock(48, (7, 7), 3, window_size=7, shift_size=3).eval()
    _randomise(block)
    with torch.no_grad():
        program = export_once(block, torch.randn(2, 7, 7, 48), {1: (7, 32), 2: (7, 32)})
        for size in [(7, 7), (7, 9), (9, 7), (8, 8), (12, 10)]:
            x = torch.randn(2, *size, 48)
            torch.testing.assert_close(program(x), block(x), atol=1e-5, rtol=1e-5)
