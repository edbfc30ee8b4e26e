"""The OpenMMLab configs: the generated ones are current, every config loads and its backbone fits its heads, the
recipes' no-decay keys name real parameters, and one config of each kind builds a real model and optimizer."""

import importlib
import pathlib
import sys

import pytest
import torch

pytest.importorskip("mmseg", reason="the mm extra is not installed")

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

import gen_configs  # noqa: E402
from _mm_common import ConfigError, _check_backbone_channels  # noqa: E402
from mmengine.config import Config  # noqa: E402

import vitzoo.mm  # noqa: E402

CONFIGS = sorted(p for p in (ROOT / "configs").glob("*/*.py") if p.parent.name != "_base_")
# one of each kind: UPerNet, VWFormer (layer decay), Mask R-CNN (multi-scale), RetinaNet (no paramwise),
# classifier (AMP)
ONE_OF_EACH = [
    "ade20k/upernet_agent-swin-t_8xb2-160k_ade20k-512x512.py",
    "ade20k/vwformer_biformer-s_4xb4-160k_ade20k-512x512.py",
    "coco/mask-rcnn_vitaev2-vsa-s_fpn_ms-crop-3x_coco.py",
    "coco/retinanet_agent-pvt-t_fpn_1x_coco.py",
    "imagenet/mala-t_8xb128_in1k-224.py",
]


def _rel(path: pathlib.Path) -> str:
    return f"{path.parent.name}/{path.name}"


def test_generated_configs_are_current_and_cover_every_family_and_task():
    configs = gen_configs.all_configs()
    assert gen_configs.stale(configs) == []
    assert len(configs) == 6 * len(gen_configs.FAMILIES)  # ImageNet, UPerNet, VWFormer, Mask R-CNN 1x / 3x, RetinaNet


def test_cached_channels_are_a_fresh_list_per_caller():
    first = gen_configs._channels("vitzoo_van_b0")
    first.append(-1)  # a caller that edits its list must not change what the next caller gets
    assert gen_configs._channels("vitzoo_van_b0") == [32, 64, 160, 256]


def _backbone_on_meta(cfg: Config) -> vitzoo.mm.VitzooBackbone:
    kwargs = {k: v for k, v in cfg.model.backbone.items() if k not in ("type", "init_cfg", "_scope_")}
    with torch.device("meta"):
        return vitzoo.mm.VitzooBackbone(**kwargs)


@pytest.mark.parametrize("path", CONFIGS, ids=_rel)
def test_config_loads_and_its_backbone_fits_its_heads(path):
    cfg = Config.fromfile(str(path))
    assert cfg.model.backbone.type == "VitzooBackbone" and cfg.custom_imports.imports == ["vitzoo.mm"]
    _check_backbone_channels(cfg)  # raises ConfigError on a mismatch
    names = [n for n, _ in _backbone_on_meta(cfg).named_parameters()]
    keys = (cfg.optim_wrapper.get("paramwise_cfg") or {}).get("custom_keys", {})
    # Swin's two table keys are copied verbatim by the papers and name nothing in most models; every other key
    # (norms, the agent biases) must reach real parameters, or a misspelt key would silently decay them
    for key in {k.lstrip(".") for k in keys} - {"absolute_pos_embed", "relative_position_bias_table"}:
        assert any(key in n for n in names), f"{_rel(path)}: no-decay key {key!r} matches no backbone parameter"


def test_channel_check_names_the_right_widths():
    cfg = Config.fromfile(str(ROOT / "configs" / "imagenet" / "mala-t_8xb128_in1k-224.py"))
    cfg.model.head.in_channels = 768  # MALA-T's pooled features are its 2048-wide projection
    with pytest.raises(ConfigError, match=r"head.in_channels is 768 .* set model.head.in_channels=2048"):
        _check_backbone_channels(cfg)


def _build(rel: str):
    from mmengine.optim import build_optim_wrapper
    from mmengine.registry import init_default_scope

    cfg = Config.fromfile(str(ROOT / "configs" / rel))
    init_default_scope(cfg.default_scope)
    models = importlib.import_module(f"{cfg.default_scope}.registry").MODELS
    with torch.device("meta"):  # the whole detector / segmentor, without memory or initialisation
        model = models.build(cfg.model)
    wrapper = dict(cfg.optim_wrapper)
    if wrapper.get("type") == "AmpOptimWrapper" and not torch.cuda.is_available():
        wrapper.pop("loss_scale")
        wrapper["type"] = "OptimWrapper"  # mmengine's AMP wrapper refuses to exist without a GPU
    return cfg, model, build_optim_wrapper(model, wrapper)


def _check_builds(rel: str) -> None:
    cfg, model, wrapper = _build(rel)
    groups = wrapper.optimizer.param_groups
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert sum(p.numel() for g in groups for p in g["params"]) == trainable
    base = cfg.optim_wrapper.optimizer
    assert max(g["lr"] for g in groups) == pytest.approx(base.lr)
    decays = {g["weight_decay"] for g in groups}
    assert base.weight_decay in decays
    if cfg.optim_wrapper.get("paramwise_cfg"):
        assert 0.0 in decays  # norms / biases / tables left undecayed


@pytest.mark.parametrize("rel", ONE_OF_EACH)
def test_one_config_of_each_kind_builds_model_and_optimizer(rel):
    _check_builds(rel)


@pytest.mark.slow
@pytest.mark.parametrize("path", CONFIGS, ids=_rel)
def test_every_config_builds_model_and_optimizer(path):
    _check_builds(_rel(path))


def test_layer_decay_scales_each_backbone_stage(seed):
    """VWFormer's recipe: stage i of n groups at lr * 0.9 ** (n - i), heads at lr, no decay on 1-D parameters."""
    from vitzoo.mm.optim import backbone_depths

    cfg, model, wrapper = _build("ade20k/vwformer_biformer-s_4xb4-160k_ade20k-512x512.py")
    depth, groups = backbone_depths(model.backbone)
    assert groups == 4  # BiFormer: four stages, the stem inside stage 0
    lr_of = {id(p): (g["lr"], g["weight_decay"]) for g in wrapper.optimizer.param_groups for p in g["params"]}
    for name, p in model.named_parameters():
        lr, decay = lr_of[id(p)]
        inner = name.removeprefix("backbone.")
        level = depth.get(inner, groups) if name.startswith("backbone.") else groups
        assert lr == pytest.approx(1e-4 * 0.9 ** (groups - level)), name
        assert decay == (0.0 if p.ndim <= 1 else 0.05), name
    stage3 = next(n for n in depth if ".stages.3." in n)
    assert depth[stage3] == 3 and depth[next(n for n in depth if ".stages.0." in n)] == 0
    with pytest.raises(ValueError, match="paramwise_cfg must be dict"):
        from mmengine.optim import build_optim_wrapper

        build_optim_wrapper(
            model,
            dict(
                optimizer=dict(type="AdamW", lr=1e-4),
                constructor="VitzooLayerDecayOptimWrapperConstructor",
                paramwise_cfg=dict(decay_rate=1.5),
            ),
        )


def test_layer_decay_leaves_the_models_no_weight_decay_tables_undecayed():
    """Agent-Swin-T's softmax stage lists its relative-position tables (2-D) in no_weight_decay(): decay 0."""
    _, model, wrapper = _build("ade20k/vwformer_agent-swin-t_4xb4-160k_ade20k-512x512.py")
    decay_of = {id(p): g["weight_decay"] for g in wrapper.optimizer.param_groups for p in g["params"]}
    tables = [p for n, p in model.named_parameters() if n.endswith("relative_position_bias_table")]
    assert len(tables) == 2 and all(p.ndim == 2 and decay_of[id(p)] == 0.0 for p in tables)
    agent = [p for n, p in model.named_parameters() if n.endswith("an_bias")]
    assert agent and all(decay_of[id(p)] == 0.05 for p in agent)  # decayed, as in the official classification code
