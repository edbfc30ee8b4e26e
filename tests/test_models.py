"""The timm contract, tested generically over every registered ``vitzoo_*`` model.

Cheap checks (statistics, feature metadata, config keys) run on the meta device for every variant. Checks that
need real numbers run on the small variants by default and on all of them with ``-m slow``.
"""

import re

import pytest
import timm
import torch
import torch.nn as nn
from timm.models._registry import model_entrypoint

import vitzoo  # noqa: F401  (registers the models)
from vitzoo.paper_table import PAPER_TABLE, half_unit
from vitzoo.stats import count_params, model_stats

ALL_MODELS = timm.list_models("vitzoo_*")
FAST_MODELS = [
    "vitzoo_van_b0",
    "vitzoo_biformer_t",
    "vitzoo_cswin_t",
    "vitzoo_crossformer_t",
    "vitzoo_halonet_h0",
    "vitzoo_vitaev2_vsa_s",
    "vitzoo_swin_vsa_t",
    "vitzoo_mala_t",
    "vitzoo_agent_swin_t",
    "vitzoo_inline_pvt_t",
    "vitzoo_flatten_cswin_t",
]
# plain ViTs (DeiT hosts): one stride-16 map per block; their contract is tested in test_linear_deit.py
ISOTROPIC = [m for m in ALL_MODELS if "_deit_" in m]
SLOW_MODELS = [
    pytest.param(m, marks=pytest.mark.slow) for m in ALL_MODELS if m not in FAST_MODELS and m not in ISOTROPIC
]
RUN_MODELS = FAST_MODELS + SLOW_MODELS
IMG = (2, 3, 64, 96)  # non-square, and BiFormer's region grids need padding at this size


def _create(name, **kwargs):
    return timm.create_model(name, **kwargs)


def test_every_family_variant_is_registered_under_vitzoo_names():
    expected = {f"vitzoo_van_b{i}" for i in range(7)} | {f"vitzoo_biformer_{s}" for s in "tsb"}
    assert expected <= set(ALL_MODELS)
    for name in ALL_MODELS:
        assert model_entrypoint(name).__module__.startswith("vitzoo.models.")
    # timm's own models never start with our prefix, so no registration shadows one of theirs
    assert not [m for m in ALL_MODELS if not m.startswith("vitzoo_")]


@pytest.mark.parametrize("name", ALL_MODELS)
def test_params_and_gmacs_match_paper(name):
    paper = PAPER_TABLE[name]
    stats = model_stats(name, img_size=paper.img_size)
    # checked_gmacs is the printed value unless the official code provably gives another (see paper_table.py)
    # checked_params likewise; Swin-VSA prints nothing (its family test checks the count structurally)
    if paper.checked_params is not None:
        params = float(paper.checked_params)
        assert abs(stats.params_m - params) <= 0.01 * params + half_unit(paper.checked_params), (stats.params_m, params)
    if paper.checked_gmacs is None:  # the paper prints no cost (HaloNet): the family test checks ours elsewhere
        assert stats.gmacs > 0
        return
    gmacs = float(paper.checked_gmacs)
    assert abs(stats.gmacs - gmacs) <= 0.03 * gmacs + half_unit(paper.checked_gmacs), (stats.gmacs, gmacs)


@pytest.mark.parametrize("name", ALL_MODELS)
def test_pretrained_cfg_and_feature_info_on_meta(name):
    with torch.device("meta"):
        model = _create(name)
    cfg = model.pretrained_cfg
    isotropic = name in ISOTROPIC
    for key in ("first_conv", "classifier", "input_size", "mean", "std", "crop_pct", "interpolation"):
        assert key in cfg and cfg[key] is not None, key
    first = model.get_submodule(cfg["first_conv"])
    assert isinstance(first, nn.Conv2d) and first.in_channels == 3
    assert model.get_submodule(cfg["classifier"]) is model.get_classifier()
    x = torch.empty(1, 3, 224, 224, device="meta")
    # one pass (meta tensors cost Python time per op): forward_intermediates' final output is forward_features'
    features, (last,) = model.forward_intermediates(x, indices=[3])
    if isotropic:  # timm's ViT convention: no pool size, tokens out of forward_features, one map per block
        assert cfg["pool_size"] is None
        assert {f["reduction"] for f in model.feature_info} == {16}
        assert features.shape == (1, 1 + 14 * 14, model.num_features)
    else:
        assert tuple(cfg["pool_size"]) == tuple(s // 32 for s in cfg["input_size"][1:])
        assert [f["reduction"] for f in model.feature_info] == [4, 8, 16, 32]
        # the pooled width can differ from the last stage's (HaloNet's final 1x1 conv)
        assert features.shape[1] == model.num_features
    assert model.num_features == model.head_hidden_size
    assert model.feature_info[-1]["num_chs"] == last.shape[1]
    for info in model.feature_info:
        assert model.get_submodule(info["module"]) is not None
    assert model.forward_head(features).shape == (1, 1000)


@pytest.mark.parametrize("name", RUN_MODELS)
def test_forward_backward_reach_every_parameter(name, seed):
    model = _create(name, num_classes=7)
    model.train()
    out = model(torch.randn(*IMG))
    assert out.shape == (2, 7) and torch.isfinite(out).all()
    out.square().mean().backward()
    missing = [
        n
        for n, p in model.named_parameters()
        if p.requires_grad and (p.grad is None or not torch.isfinite(p.grad).all())
    ]
    assert not missing, f"no finite gradient for {missing[:5]}"


@pytest.mark.parametrize("name", RUN_MODELS)
def test_features_only_matches_feature_info_and_intermediates(name, seed):
    x = torch.randn(*IMG)
    feats_model = _create(name, features_only=True, out_indices=(1, 2, 3)).eval()
    assert feats_model.feature_info.channels() == [f["num_chs"] for f in _create(name).feature_info[1:]]
    assert feats_model.feature_info.reduction() == [8, 16, 32]
    model = _create(name).eval()
    result = feats_model.model.load_state_dict(model.state_dict(), strict=False)
    assert not result.missing_keys and all(k.startswith(("head.", "norm.")) for k in result.unexpected_keys)
    with torch.no_grad():
        feats = feats_model(x)
        final, inter = model.forward_intermediates(x, indices=(1, 2, 3))
        ref = model.forward_features(x)
    for f, ch, red, i in zip(feats, feats_model.feature_info.channels(), [8, 16, 32], inter):
        assert f.shape == (2, ch, -(-IMG[2] // red), -(-IMG[3] // red))
        torch.testing.assert_close(f, i)
    torch.testing.assert_close(final, ref)
    only = model.forward_intermediates(x, indices=2, intermediates_only=True, stop_early=True)
    assert len(only) == 2 and only[-1].shape[1] == model.feature_info[3]["num_chs"]


@pytest.mark.parametrize("name", FAST_MODELS)
def test_prune_intermediate_layers(name, seed):
    model = _create(name).eval()
    x = torch.randn(*IMG)
    with torch.no_grad():
        full = model.forward_intermediates(x, indices=[0, 1, 2], intermediates_only=True)
    kept = model.prune_intermediate_layers(indices=(0, 1), prune_head=True)
    assert kept == [0, 1] and len(model.stages) == 2
    with torch.no_grad():
        pruned = model.forward_intermediates(x, indices=(0, 1), intermediates_only=True)
    for a, b in zip(full[:2], pruned):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("name", FAST_MODELS)
def test_reset_classifier_and_pooling(name, seed):
    model = _create(name).eval()
    x = torch.randn(*IMG)
    model.reset_classifier(10)
    assert model(x).shape == (2, 10)
    model.reset_classifier(0)
    assert model(x).shape == (2, model.num_features)
    model.reset_classifier(0, global_pool="")
    assert model(x).shape == (2, model.num_features, 2, 3)
    assert model.forward_head(model.forward_features(x), pre_logits=True).shape == (2, model.num_features, 2, 3)
    with pytest.raises(ValueError, match="global_pool"):
        model.reset_classifier(5, global_pool="max")


@pytest.mark.parametrize("name", RUN_MODELS)
def test_grad_checkpointing_parity(name, seed):
    model = _create(name, num_classes=5)
    model.eval()  # eval keeps BatchNorm statistics fixed so both passes see the same function
    x = torch.randn(*IMG)

    def run():
        model.zero_grad()
        out = model(x)
        out.sum().backward()
        return out.detach(), [p.grad.clone() for p in model.parameters()]

    out_ref, grads_ref = run()
    model.set_grad_checkpointing(True)
    assert all(stage.grad_checkpointing for stage in model.stages)
    out_ckpt, grads_ckpt = run()
    torch.testing.assert_close(out_ckpt, out_ref)
    for a, b in zip(grads_ckpt, grads_ref):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("name", FAST_MODELS)
@pytest.mark.parametrize("size", [(96, 160), (100, 75), (32, 32)])
def test_valid_odd_input_sizes(name, size, seed):
    model = _create(name).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, *size))
    assert out.shape == (1, 1000) and torch.isfinite(out).all()


@pytest.mark.parametrize("name", FAST_MODELS)
@pytest.mark.parametrize(
    "shape,match",
    [
        ((3, 64, 64), "expects a 4-D NCHW image batch"),
        ((1, 4, 64, 64), "built for 3 input channels but got 4"),
        ((1, 3, 16, 64), r"needs H and W >= 32"),
    ],
)
def test_invalid_input_raises_clear_error(name, shape, match):
    model = _create(name).eval()
    with pytest.raises(ValueError, match=match):
        model(torch.randn(*shape))
    with pytest.raises(ValueError, match=match):
        model.forward_intermediates(torch.randn(*shape))


@pytest.mark.parametrize("name", FAST_MODELS)
def test_in_chans_and_group_matcher(name, seed):
    model = _create(name, in_chans=1, num_classes=3).eval()
    assert model(torch.randn(1, 1, 64, 64)).shape == (1, 3)
    groups = model.group_matcher()
    assert set(groups) == {"stem", "blocks"}
    assert isinstance(model.no_weight_decay(), set)
    assert count_params(model) == sum(p.numel() for p in model.parameters())


@pytest.mark.slow
@pytest.mark.parametrize("name", FAST_MODELS)
def test_torch_compile_matches_eager(name, seed):
    model = _create(name).eval()
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        eager = model(x)
        compiled = torch.compile(model)(x)
    torch.testing.assert_close(compiled, eager, atol=1e-4, rtol=1e-4)


# --- deployment: TorchScript and torch.fx -------------------------------------------------------------------------
def _smallest_per_family() -> list[str]:
    """The variant with the fewest parameters of every family (CrossFormer++ counted apart from CrossFormer)."""
    from vitzoo.kernel_launches import family

    def params(name: str) -> float:
        printed = PAPER_TABLE[name].checked_params
        if printed is not None:
            return float(printed)
        with torch.device("meta"):
            return count_params(_create(name)) / 1e6

    smallest: dict[str, tuple[float, str]] = {}
    for name in ALL_MODELS:
        key = family(name) + ("_pp" if "_pp_" in name else "")
        smallest[key] = min(smallest.get(key, (float("inf"), "")), (params(name), name))
    return sorted(name for _, name in smallest.values())


DEPLOY_FAST = _smallest_per_family()
# (model, shallow): the default run takes the smallest model of each family with at most two blocks per stage (every
# kind of block a stage alternates, at a fraction of the tracing and scripting time); -m slow every model, whole
DEPLOY_MODELS = [pytest.param(m, True, id=f"{m}-shallow") for m in DEPLOY_FAST] + [
    pytest.param(m, False, id=m, marks=pytest.mark.slow) for m in ALL_MODELS
]
DEPLOY_IMG = (2, 3, 64, 96)


def _deploy_create(name: str, shallow: bool, **kwargs) -> nn.Module:
    """``_create(name)``; ``shallow``: every ``blocks`` sequence cut to its first two blocks."""
    model = _create(name, **kwargs)
    if shallow:
        for parent in list(model.modules()):
            blocks = getattr(parent, "blocks", None)
            if isinstance(blocks, (nn.Sequential, nn.ModuleList)) and len(blocks) > 2:
                parent.blocks = blocks[:2]  # a slice keeps the container's type
    return model


def _fx_model(model: nn.Module) -> nn.Module:
    """The model traced as timm's FX feature extraction traces it (timm's no-trace functions and leaf modules),
    returning its output."""
    from timm.models import get_notrace_functions, get_notrace_modules
    from torchvision.models.feature_extraction import create_feature_extractor, get_graph_node_names

    tracer_kwargs = dict(leaf_modules=get_notrace_modules(), autowrap_functions=get_notrace_functions())
    train_nodes, eval_nodes = get_graph_node_names(model, tracer_kwargs=tracer_kwargs)
    return create_feature_extractor(
        model, train_return_nodes=[train_nodes[-1]], eval_return_nodes=[eval_nodes[-1]], tracer_kwargs=tracer_kwargs
    )


def _only_output(out) -> torch.Tensor:
    return next(iter(out.values())) if isinstance(out, dict) else out


@pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")  # deprecated, still what deployments load
@pytest.mark.parametrize("name, shallow", DEPLOY_MODELS)
def test_torchscript_saved_and_loaded_matches_eager(name, shallow, seed, tmp_path):
    with timm.layers.set_scriptable(True):
        model = _deploy_create(name, shallow).eval()
    x = torch.randn(DEPLOY_IMG)
    scripted = torch.jit.script(model)
    torch.jit.save(scripted, tmp_path / "model.pt")
    loaded = torch.jit.load(tmp_path / "model.pt")
    with torch.no_grad():
        eager = model(x)
        torch.testing.assert_close(scripted(x), eager, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(loaded(x), eager, rtol=1e-5, atol=1e-5)
    with pytest.raises(torch.jit.Error, match="input channels"):  # the eager input check survives scripting
        loaded(torch.randn(1, 4, 64, 64))


@pytest.mark.parametrize("name, shallow", DEPLOY_MODELS)
def test_fx_traced_matches_eager(name, shallow, seed):
    model = _deploy_create(name, shallow).eval()
    x = torch.randn(DEPLOY_IMG)
    with torch.no_grad():
        torch.testing.assert_close(_only_output(_fx_model(model)(x)), model(x), rtol=1e-5, atol=1e-5)


# the traced graph scripted, and training through it: a few families by default (every family and variant under
# -m slow); the default suite already scripts and traces one model of every family above
FX_EXTRA_FAST = ["vitzoo_van_b0", "vitzoo_cswin_t", "vitzoo_swin_vsa_t", "vitzoo_agent_pvt_t"]
FX_EXTRA = FX_EXTRA_FAST + [pytest.param(m, marks=pytest.mark.slow) for m in ALL_MODELS if m not in FX_EXTRA_FAST]


@pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")
@pytest.mark.parametrize("name", FX_EXTRA)
def test_fx_traced_then_scripted_matches_eager(name, seed):
    model = _create(name).eval()
    x = torch.randn(DEPLOY_IMG)
    scripted = torch.jit.script(_fx_model(model))
    with torch.no_grad():
        torch.testing.assert_close(_only_output(scripted(x)), model(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", FX_EXTRA)
def test_fx_traced_training_reaches_every_parameter(name, seed):
    model = _create(name, num_classes=7).train()
    traced = _fx_model(model)
    _only_output(traced(torch.randn(DEPLOY_IMG))).sum().backward()
    missing = [n for n, p in traced.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, f"no gradient through the traced model for {missing[:5]}"


@pytest.mark.parametrize("name, shallow", DEPLOY_MODELS)
def test_channels_last_and_half_precision_match_float32(name, shallow, seed):
    """``model.to(memory_format=torch.channels_last)`` runs and matches; bfloat16 (on CPU; also float16 on CUDA)
    gives finite logits within 2% relative L2 of float32."""
    model = _deploy_create(name, shallow).eval()
    x = torch.randn(DEPLOY_IMG)
    with torch.no_grad():
        want = model(x)
        cl = model.to(memory_format=torch.channels_last)(x.contiguous(memory_format=torch.channels_last))
        torch.testing.assert_close(cl, want, rtol=1e-4, atol=1e-4)
        dtypes = [torch.bfloat16] + ([torch.float16] if torch.cuda.is_available() else [])
        for dtype in dtypes:
            got = model.to(dtype)(x.to(dtype)).float()
            assert torch.isfinite(got).all(), f"non-finite {dtype} logits"
            rel = (got - want).norm() / want.norm()
            assert rel < 0.02, f"{dtype} logits {rel:.3%} (relative L2) from float32"
            model.float()


# --- deployment: torch.compile ------------------------------------------------------------------------------------
@pytest.mark.parametrize("name, shallow", DEPLOY_MODELS)
def test_dynamo_captures_one_graph(name, shallow, seed):
    torch._dynamo.reset()
    model = _deploy_create(name, shallow).eval()
    with torch.no_grad():
        explained = torch._dynamo.explain(model)(torch.randn(DEPLOY_IMG))
    reasons = [str(b.reason).splitlines()[0] for b in explained.break_reasons]
    assert explained.graph_break_count == 0 and explained.graph_count == 1, reasons[:5]


# the routed op (the one with a gather) in the default run, where test_dynamo_captures_one_graph checks one graph per
# family; every model under -m slow (40-60 s each on 2 cores)
COMPILE_FAST = ["vitzoo_biformer_t"]
COMPILE_MODELS = COMPILE_FAST + [pytest.param(m, marks=pytest.mark.slow) for m in ALL_MODELS if m not in COMPILE_FAST]


@pytest.mark.parametrize("name", COMPILE_MODELS)
def test_fullgraph_compile_matches_eager_and_a_new_batch_does_not_recompile(name, seed):
    """One graph (``fullgraph=True`` raises at any graph break) that equals eager; with the batch marked dynamic a
    second batch size reuses it. The ``aot_eager`` backend traces as inductor would, without its C++ compile
    (inductor itself runs in ``test_torch_compile_matches_eager`` and in the deployment benchmark).

    Batches 16 and 17: on CPU, PyTorch picks a convolution's kernel (and its output layout) by batch size below 16,
    so crossing 16 recompiles any model with a convolution; above it the batch is free.
    """
    torch._dynamo.reset()  # another model of the same class would otherwise count as a recompile of its forward
    model = _create(name).eval()
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    x = torch.randn(16, 3, 64, 64)
    torch._dynamo.mark_dynamic(x, 0)
    with torch.no_grad(), torch._dynamo.config.patch(error_on_recompile=True):
        torch.testing.assert_close(compiled(x), model(x), rtol=1e-5, atol=1e-5)
        x17 = torch.randn(17, 3, 64, 64)
        torch.testing.assert_close(compiled(x17), model(x17), rtol=1e-5, atol=1e-5)


def test_traced_ops_run_their_reference_and_eager_calls_keep_their_backend(monkeypatch):
    """Inside torch.compile automatic choice hands out the reference without consulting the backends."""
    from vitzoo.ops import window as window_op
    from vitzoo.ops import window_attention

    asked = []
    real_why_not = window_op.BACKENDS.why_not
    monkeypatch.setattr(window_op.BACKENDS, "why_not", lambda b, *a, **k: asked.append(b) or real_why_not(b, *a, **k))
    q = torch.randn(1, 8, 8, 2, 4)
    torch._dynamo.reset()
    traced = torch.compile(lambda t: window_attention(t, t, t, 4), fullgraph=True, backend="eager")
    out = traced(q)
    assert asked == [], "the traced call consulted a backend"
    torch.testing.assert_close(out, window_op.reference.forward(q, q, q, (4, 4)))
    window_attention(q, q, q, 4)
    assert asked, "an eager call chooses among the backends"


@pytest.mark.parametrize("name", ["vitzoo_van_b0", "vitzoo_inline_deit_t"])
def test_no_pooling_needs_no_classifier_as_in_timm(name):
    with pytest.raises(ValueError, match=r"global_pool='' \(no pooling\) needs num_classes=0, got num_classes=1000"):
        _create(name, global_pool="")
    model = _create(name, num_classes=0, global_pool="")
    with pytest.raises(ValueError, match="needs num_classes=0, got num_classes=5"):
        model.reset_classifier(5)
    model.reset_classifier(5, global_pool="avg")
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 5)


def _matched_by(name: str, matcher: dict) -> bool:
    """Whether a group_matcher dict (timm's form: regex, or a list of (regex, suffix) specs) claims ``name``."""
    for spec in matcher.values():
        specs = [spec] if isinstance(spec, str) else [s[0] for s in spec or ()]
        if any(re.match(pattern, name) for pattern in specs):
            return True
    return False


@pytest.mark.parametrize("name", DEPLOY_FAST + [pytest.param(m, marks=pytest.mark.slow) for m in ALL_MODELS])
def test_group_matcher_claims_every_parameter_but_the_head_and_no_weight_decay_names_exist(name):
    """Layer-wise LR decay (timm's ``param_groups_layer_decay``) puts an unclaimed parameter in the last group, with
    the head: only the classifier and the final norm may be left to that group. ``no_weight_decay`` names must be
    parameters (or their prefixes), or weight decay silently applies to them."""
    with torch.device("meta"):
        model = _create(name)
    params = [k for k, _ in model.named_parameters()]
    for coarse in (True, False):
        matcher = model.group_matcher(coarse=coarse)
        unclaimed = {k for k in params if not _matched_by(k, matcher)}
        assert {k.split(".")[0] for k in unclaimed} <= {"head", "norm"}, (coarse, sorted(unclaimed)[:5])
        assert any(k.startswith("head.") for k in unclaimed), "the classifier goes with the last group"
    for skip in model.no_weight_decay():
        assert any(k == skip or k.startswith(skip + ".") for k in params), f"no_weight_decay names {skip!r}"


def test_a_backbone_that_leaves_out_part_of_the_contract_is_named_with_what_is_missing():
    from vitzoo.models._contract import HierarchicalBackbone

    class Incomplete(HierarchicalBackbone):
        def __init__(self):
            super().__init__(num_classes=10, in_chans=3, global_pool="avg", drop_rate=0.0)
            self.stem = nn.Conv2d(3, 8, 4, 4)
            self.stages = nn.Sequential(nn.Identity())
            self.feature_info = [dict(num_chs=8, reduction=4, module="stages.0")]
            self.build_head(8)  # no final norm

    with pytest.raises(
        TypeError, match=r"Incomplete does not complete the HierarchicalBackbone contract: .*\['norm'\]"
    ):
        Incomplete().check_contract()
    model = Incomplete()
    model.norm = nn.Identity()
    model.check_contract()
    model.stages.append(nn.Identity())
    with pytest.raises(TypeError, match="2 stages but 1 feature_info entries"):
        model.check_contract()
