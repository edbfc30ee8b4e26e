"""The ViT side of the timm contract for the DeiT hosts (Agent-DeiT, InLine-DeiT): tokens, block maps, pooling."""

import pytest
import timm
import torch

import vitzoo  # noqa: F401

NAMES = ["vitzoo_agent_deit_t", "vitzoo_inline_deit_t"]
IMG = (2, 3, 64, 96)  # a 4 x 6 patch grid: non-square


@pytest.mark.parametrize("name", NAMES)
def test_forward_backward_reach_every_parameter(name, seed):
    model = timm.create_model(name, num_classes=7).train()
    out = model(torch.randn(*IMG))
    assert out.shape == (2, 7) and torch.isfinite(out).all()
    out.square().mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing, missing[:5]


def test_agent_deit_b_keeps_softmax_after_four_blocks():
    with torch.device("meta"):
        model = timm.create_model("vitzoo_agent_deit_b")
    kinds = [type(b.attn).__name__ for b in model.blocks]
    assert kinds == ["AgentAttention2d"] * 4 + ["Attention"] * 8
    assert model.blocks[0].attn.agent_num == 81


@pytest.mark.parametrize("name", NAMES)
def test_features_only_and_intermediates_are_block_maps(name, seed):
    x = torch.randn(*IMG)
    model = timm.create_model(name).eval()
    feats_model = timm.create_model(name, features_only=True).eval()
    assert feats_model.feature_info.reduction() == [16] * 4  # the last four blocks by default
    feats_model.model.load_state_dict(model.state_dict(), strict=False)
    with torch.no_grad():
        feats = feats_model(x)
        final, inter = model.forward_intermediates(x, indices=(8, 9, 10, 11))
        tokens = model.forward_features(x)
    for f, i in zip(feats, inter):
        assert f.shape == (2, model.num_features, 4, 6)
        torch.testing.assert_close(f, i)
    torch.testing.assert_close(final, tokens)
    # the last block's map is the final tokens without the class token, before the final norm
    normed = model.forward_intermediates(x, indices=[11], norm=True, intermediates_only=True)[0]
    torch.testing.assert_close(normed.flatten(2).transpose(1, 2), tokens[:, 1:])
    nlc = model.forward_intermediates(x, indices=1, output_fmt="NLC", intermediates_only=True)
    assert nlc[0].shape == (2, 24, model.num_features)


@pytest.mark.parametrize("name", NAMES)
def test_pooling_classifier_and_pruning(name, seed):
    model = timm.create_model(name).eval()
    x = torch.randn(*IMG)
    with torch.no_grad():
        tokens = model.forward_features(x)
        assert tokens.shape == (2, 1 + 24, model.num_features)
        torch.testing.assert_close(model.forward_head(tokens, pre_logits=True), tokens[:, 0])
        model.reset_classifier(0, global_pool="avg")
        torch.testing.assert_close(model(x), tokens[:, 1:].mean(1))
        model.reset_classifier(0, global_pool="")
        assert model(x).shape == tokens.shape
        with pytest.raises(ValueError, match="global_pool"):
            model.reset_classifier(3, global_pool="max")
        full = model.forward_intermediates(x, indices=[0, 1], intermediates_only=True)
        assert model.prune_intermediate_layers(indices=(0, 1)) == [0, 1] and len(model.blocks) == 2
        for a, b in zip(full, model.forward_intermediates(x, indices=(0, 1), intermediates_only=True)):
            torch.testing.assert_close(a, b)


@pytest.mark.parametrize("name", NAMES)
def test_grad_checkpointing_parity(name, seed):
    model = timm.create_model(name, num_classes=5).eval()
    x = torch.randn(*IMG)

    def run():
        model.zero_grad()
        out = model(x)
        out.sum().backward()
        return out.detach(), [p.grad.clone() for p in model.parameters()]

    ref, ref_grads = run()
    model.set_grad_checkpointing(True)
    out, grads = run()
    torch.testing.assert_close(out, ref)
    for a, b in zip(grads, ref_grads):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("size", [(100, 75), (16, 16), (224, 160)])
def test_any_size_runs_and_invalid_input_is_explained(size, seed):
    model = timm.create_model("vitzoo_agent_deit_t").eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, *size))
    assert out.shape == (1, 1000) and torch.isfinite(out).all()
    with pytest.raises(ValueError, match=r"needs H and W >= 16"):
        model(torch.randn(1, 3, 8, 64))
    with pytest.raises(ValueError, match="built for 3 input channels"):
        model(torch.randn(1, 1, 64, 64))
