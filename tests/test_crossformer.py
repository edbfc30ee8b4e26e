"""CrossFormer-specific checks: SDA / LDA grouping, the dynamic position bias, padding, official checkpoints."""

import json
import pathlib

import pytest
import timm
import torch

import vitzoo  # noqa: F401  (registers the models)
from vitzoo.models.crossformer import CrossFormer, CrossFormerBlock, GroupAttention, checkpoint_filter_fn

FIXTURES = pathlib.Path(__file__).parent / "fixtures" / "official_keys"
VARIANTS = ["t", "s", "b", "l"]


def brute_group_attention(attn: GroupAttention, x: torch.Tensor, lda: bool) -> torch.Tensor:
    """Group attention from its definition, token by token.

    When ``min(H, W) <= G``: SDA in ``min(H, W)`` tiles (the official dense-task rule). SDA: tokens in the same
    ``G x G`` tile. LDA with interval ``I``: tokens in the same ``(G*I) x (G*I)`` tile with the same row and column
    residue mod ``I`` (on a ``(G*I) x (G*I)`` map, the official v1 reshape ``(G, H / G)``). Position inside a group:
    ``(a % tile) // step``.
    The bias of a pair is the DPB MLP evaluated on the pair's position offset.
    """
    b, h, w, c = x.shape
    g, heads = attn.group_size, attn.num_heads
    if min(h, w) <= g:
        tile_h = tile_w = min(h, w)
        step = 1
    else:
        step = attn.interval if lda else 1
        tile_h = tile_w = g * step
    q, k, v = attn.qkv(x).view(b, h, w, 3, heads, c // heads).unbind(3)
    out = torch.zeros(b, h, w, heads, c // heads)

    def pos(a, cc):
        return a % tile_h // step, cc % tile_w // step

    def same_group(i, j, a, cc):
        return (a // tile_h, cc // tile_w, a % step, cc % step) == (i // tile_h, j // tile_w, i % step, j % step)

    for i in range(h):
        for j in range(w):
            keys = [(a, cc) for a in range(h) for cc in range(w) if same_group(i, j, a, cc)]
            pi = pos(i, j)
            offsets = torch.tensor([[pi[0] - pos(a, cc)[0], pi[1] - pos(a, cc)[1]] for a, cc in keys], dtype=x.dtype)
            bias = attn.pos.pos3(attn.pos.pos2(attn.pos.pos1(attn.pos.pos_proj(offsets))))  # K, heads
            kk = torch.stack([k[:, a, cc] for a, cc in keys], 1)  # B, K, heads, D
            vv = torch.stack([v[:, a, cc] for a, cc in keys], 1)
            logits = torch.einsum("bnd,bknd->bnk", q[:, i, j], kk) * attn.scale + bias.T[None]
            out[:, i, j] = torch.einsum("bnk,bknd->bnd", logits.softmax(-1), vv)
    return attn.proj(out.reshape(b, h, w, c))


SIZES = {"exact": (6, 6), "padded": (7, 9), "padded-tall": (8, 4), "short": (3, 8), "global": (2, 2)}


@pytest.mark.parametrize("lda", [False, True], ids=["sda", "lda"])
@pytest.mark.parametrize("size", list(SIZES.values()), ids=list(SIZES))
def test_group_attention_matches_brute_force_grouping(seed, lda, size):
    # dim 64: a DPB width of 4 (a LayerNorm over fewer features would leave the bias nearly offset-independent)
    attn = GroupAttention(dim=64, num_heads=2, group_size=3, interval=2 if lda else 1).eval()
    for p in attn.pos.parameters():  # random DPB norms and biases too, so the bias is O(1) and offset-dependent
        p.data.normal_(0, 1.0)
    x = torch.randn(2, *size, 64)
    with torch.no_grad():
        torch.testing.assert_close(attn(x), brute_group_attention(attn, x, lda), atol=1e-5, rtol=1e-4)


def test_lda_differs_from_sda(seed):
    """The interval must matter: LDA and SDA of the same weights give different outputs on a map larger than G."""
    sda = GroupAttention(dim=16, num_heads=2, group_size=3, interval=1).eval()
    lda = GroupAttention(dim=16, num_heads=2, group_size=3, interval=2).eval()
    for p in sda.pos.parameters():
        p.data.normal_(0, 1.0)
    lda.load_state_dict(sda.state_dict())
    x = torch.randn(1, 6, 6, 16)
    with torch.no_grad():
        assert not torch.allclose(sda(x), lda(x), atol=1e-4)
        torch.testing.assert_close(brute_group_attention(lda, x, lda=True), lda(x), atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("group", [(4, 4), (5, 3)])
def test_dynamic_position_bias_at_any_group_size(seed, group):
    """DPB at a size other than 7: every (query, key) pair gets the MLP of its offset, and sizes nest."""
    attn = GroupAttention(dim=64, num_heads=4, group_size=7)
    for p in attn.pos.parameters():
        p.data.normal_(0, 0.5)
    dpb = attn.pos
    gh, gw = group
    bias = dpb(group)
    assert bias.shape == (4, gh * gw, gh * gw)
    coords = [(y, x) for y in range(gh) for x in range(gw)]
    pairs = torch.tensor([[yq - yk, xq - xk] for yq, xq in coords for yk, xk in coords], dtype=torch.float32)
    expected = dpb.pos3(dpb.pos2(dpb.pos1(dpb.pos_proj(pairs)))).T.reshape(4, gh * gw, gh * gw)
    torch.testing.assert_close(bias, expected, atol=1e-5, rtol=1e-5)
    # the bias of the top-left gh x gw positions of a 7x7 group is the gh x gw group's bias
    big = dpb((7, 7)).view(4, 7, 7, 7, 7)[:, :gh, :gw, :gh, :gw].reshape(4, gh * gw, gh * gw)
    torch.testing.assert_close(big, bias, atol=1e-5, rtol=1e-5)


def test_padded_input_with_padding_only_lda_windows_is_finite(seed):
    """A 52x40 image: stage 1 is 13x10, and LDA (G=3, I=4) pads it to 24x12, leaving windows of padding only."""
    model = CrossFormer(
        num_classes=5,
        embed_dim=64,  # DPB width 64 / 16 = 4: a LayerNorm over 2 features would have no input gradient
        depths=(2, 2, 1, 1),
        num_heads=(1, 2, 4, 8),
        group_sizes=(3, 3, 3, 3),
        intervals=(4, 2, 2, 1),
    )
    for p in model.parameters():
        p.data.normal_(0, 0.2)
    for m in model.modules():  # positive norm scales: a negative one could switch every ReLU after a 4-wide
        if isinstance(m, torch.nn.LayerNorm):  # DPB LayerNorm off for all offsets, leaving pos_proj no gradient at all
            m.weight.data.abs_().add_(0.5)
    x = torch.randn(2, 3, 52, 40)
    out = model(x)
    assert out.shape == (2, 5) and torch.isfinite(out).all()
    out.square().sum().backward()
    bad = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not bad, bad[:5]
    assert model.stages[0].blocks[1].attn.pos.pos_proj.weight.grad.abs().sum() > 0
    assert model.stages[0].blocks[1].attn.grouping(13, 10) == ((3, 3), 4)  # padded to 24x12
    with torch.no_grad():
        feats = model.forward_intermediates(x, indices=[0], intermediates_only=True, stop_early=True)[0]
    assert feats.shape == (2, 64, 13, 10) and torch.isfinite(feats).all()


@pytest.mark.parametrize("interval, low", [(1, 7), (2, 8)], ids=["sda-from-G", "lda-above-G"])
def test_a_dynamic_shape_trace_of_group_attention_equals_eager_at_every_size(interval, low, seed):
    """One ``torch.export`` program of a group attention (a CrossFormer stage in a dynamic ``vitzoo export``) over
    maps from ``low`` up: an SDA stage from ``G`` (its ``G x G`` map, 7x7 at 224, takes ``G x G`` groups like every
    larger one), an LDA stage from above ``G``. Equal to eager at the traced size, at padded and non-square ones."""
    from dynamic_trace import export_once

    attn = GroupAttention(dim=32, num_heads=2, group_size=7, interval=interval).eval()
    program = export_once(attn, torch.randn(2, low, low, 32), {1: (low, 32), 2: (low, 32)})
    with torch.no_grad():
        for h, w in [(low, low), (low, low + 3), (low + 9, low), (16, 23)]:
            x = torch.randn(2, h, w, 32)
            torch.testing.assert_close(program(x), attn(x), atol=1e-5, rtol=1e-5, msg=f"at {h}x{w}")


def test_official_sizes_need_no_padding():
    """At 224 every stage map divides by G * I (the official grouping): 56 = 7*8, 28 = 7*4, 14 = 7*2, 7 global."""
    with torch.device("meta"):
        model = timm.create_model("vitzoo_crossformer_t")
    for i, size in enumerate((56, 28, 14, 7)):
        for j, block in enumerate(model.stages[i].blocks):
            (gh, gw), interval = block.attn.grouping(size, size)
            if size <= 7:
                assert (gh, gw, interval) == (7, 7, 1)
            else:
                assert size % (gh * interval) == 0 and interval == ((8, 4, 2, 1)[i] if j % 2 else 1)


def _official_state_dict(variant: str, with_stale: bool = True) -> dict[str, torch.Tensor]:
    fixture = json.loads((FIXTURES / f"crossformer_{variant}.json").read_text())
    sd = {k: torch.randn(s) for k, s in fixture["keys"].items()}
    if with_stale:
        for k, s in fixture["stale_buffers"].items():
            sd[k] = torch.zeros(s, dtype=torch.long) if k.endswith("index") else torch.randn(s)
    return sd


@pytest.mark.parametrize("variant", VARIANTS)
def test_filter_drops_the_official_stale_buffers(variant):
    fixture = json.loads((FIXTURES / f"crossformer_{variant}.json").read_text())
    assert fixture["stale_buffers"] and all(
        "attn.biases" in k or "relative_position" in k for k in fixture["stale_buffers"]
    )
    with torch.device("meta"):
        model = timm.create_model(f"vitzoo_crossformer_{variant}")
    keys = {**fixture["keys"], **fixture["stale_buffers"]}
    mapped = checkpoint_filter_fn({"model": {k: torch.empty(s, device="meta") for k, s in keys.items()}}, model)
    assert sorted(mapped) == sorted(model.state_dict())


def test_official_training_checkpoint_loads_strictly_through_timm(tmp_path, seed):
    """The official save format (model / optimizer / lr_scheduler / epoch) with stale buffers, via a file overlay."""
    sd = _official_state_dict("t")
    ckpt = {"model": sd, "optimizer": {"state": {}, "param_groups": []}, "lr_scheduler": {}, "max_accuracy": 81.5}
    ckpt["epoch"] = 299
    path = tmp_path / "crossformer-t.pth"
    torch.save(ckpt, path)
    model = timm.create_model(
        "vitzoo_crossformer_t.official_in1k", pretrained=True, pretrained_cfg_overlay=dict(file=str(path))
    )
    ours = model.state_dict()
    torch.testing.assert_close(ours["stem.projs.3.weight"], sd["patch_embed.projs.3.weight"], rtol=0, atol=0)
    torch.testing.assert_close(
        ours["stages.2.downsample.projs.1.weight"], sd["layers.1.downsample.reductions.1.weight"], rtol=0, atol=0
    )
    torch.testing.assert_close(
        ours["stages.3.downsample.norm.bias"], sd["layers.2.downsample.norm.bias"], rtol=0, atol=0
    )
    torch.testing.assert_close(
        ours["stages.2.blocks.7.attn.pos.pos3.2.weight"], sd["layers.2.blocks.7.attn.pos.pos3.2.weight"], rtol=0, atol=0
    )


@pytest.mark.parametrize("name", ["vitzoo_crossformer_pp_s", "vitzoo_crossformer_pp_h"])
def test_crossformer_pp_acl_placement_and_groups(name):
    """ACL after every third block of a stage but the last (official ``(j + 1) % 3 == 0 and j < depth - 1``)."""
    with torch.device("meta"):
        model = timm.create_model(name)
    for i, stage in enumerate(model.stages):
        depth = len(stage.blocks)
        acl = [j for j, block in enumerate(stage.blocks) if block.use_acl]
        assert acl == [j for j in (2, 5, 8, 11, 14, 17) if j < depth - 1]
        assert all(hasattr(b, "ex_conv") == b.use_acl for b in stage.blocks)
        assert [b.attn.group_size for b in stage.blocks[:1]] == [(4, 4, 14, 7)[i]]
    assert model.stages[2].blocks[1].attn.grouping(14, 14) == ((14, 14), 1)  # stage 3 at 224: global
    assert model.stages[0].blocks[1].attn.grouping(56, 56) == ((4, 4), 4)  # padded to 64 for LDA, as official


def test_acl_replaces_the_block_output_without_residual(seed):
    block = CrossFormerBlock(32, 2, 3, 1, use_acl=True).eval()
    x = torch.randn(1, 6, 5, 32)
    with torch.no_grad():
        out = block(x)
        block.use_acl = False
        inner = block(x)
        expected = block.ex_ln(block.ex_conv(inner.permute(0, 3, 1, 2)).permute(0, 2, 3, 1))
    torch.testing.assert_close(out, expected)
    # LayerNorm output: zero mean, unit variance per token (up to the affine, which starts at identity)
    torch.testing.assert_close(out.mean(-1), torch.zeros(1, 6, 5), atol=1e-5, rtol=0)
