"""OpenMMLab integration: the mmcv-lite op stand-ins and the generic backbone inside real mm models."""

import importlib
import importlib.util
import pathlib

import pytest
import timm
import torch

pytest.importorskip("mmseg", reason="the mm extra is not installed")

from test_models import FAST_MODELS  # noqa: E402

import vitzoo.mm  # noqa: E402  (installs the op stand-ins before mmseg / mmdet import mmcv.ops)
from vitzoo.mm import mmcv_compat  # noqa: E402

FULL_MMCV = mmcv_compat.is_full_mmcv()
# one model per family at its cheapest size: the generic tests' fast set and a DeiT host (stride-16 maps)
FAMILY_MODELS = [*FAST_MODELS, "vitzoo_agent_deit_t"]


def _random_boxes(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    xy = torch.rand(n, 2) * 60
    boxes = torch.cat([xy, xy + 4 + torch.rand(n, 2) * 30], dim=1)
    return boxes, torch.rand(n)


def _greedy_nms(boxes: torch.Tensor, scores: torch.Tensor, thr: float, offset: int) -> list[int]:
    """Non-maximum suppression by its definition, one box at a time."""
    order = scores.argsort(descending=True).tolist()
    area = (boxes[:, 2] - boxes[:, 0] + offset) * (boxes[:, 3] - boxes[:, 1] + offset)
    keep = []
    for i in order:
        ok = True
        for j in keep:
            w = (torch.min(boxes[i, 2], boxes[j, 2]) - torch.max(boxes[i, 0], boxes[j, 0]) + offset).clamp(min=0)
            h = (torch.min(boxes[i, 3], boxes[j, 3]) - torch.max(boxes[i, 1], boxes[j, 1]) + offset).clamp(min=0)
            inter = w * h
            if inter / (area[i] + area[j] - inter) > thr:
                ok = False
                break
        if ok:
            keep.append(i)
    return keep


@pytest.mark.parametrize("offset", [0, 1])
def test_nms_stand_in_keeps_what_greedy_nms_keeps(offset, seed):
    boxes, scores = _random_boxes(80)
    kept = mmcv_compat.nms(boxes, scores, 0.4, offset)
    assert kept.tolist() == _greedy_nms(boxes, scores, 0.4, offset)
    from mmcv.ops import batched_nms

    idxs = torch.randint(0, 3, (80,))
    _, keep = batched_nms(boxes, scores, idxs, dict(type="nms", iou_threshold=0.4))
    for c in range(3):  # per class, the same as suppressing that class alone
        own = (idxs == c).nonzero().flatten()
        expected = {own[i].item() for i in _greedy_nms(boxes[own], scores[own], 0.4, 0)}
        assert {k.item() for k in keep if idxs[k] == c} == expected


def test_roi_align_stand_in_forward_and_backward(seed):
    from mmcv.ops import RoIAlign

    x = torch.randn(2, 4, 24, 20, dtype=torch.float64, requires_grad=True)
    rois = torch.tensor([[0, 1.5, 2.0, 15.0, 19.5], [1, 0.0, 3.0, 19.0, 11.0]], dtype=torch.float64)
    layer = RoIAlign((5, 4), spatial_scale=0.5, sampling_ratio=2, pool_mode="avg", aligned=True)
    assert torch.autograd.gradcheck(lambda t: layer(t, rois), (x,))
    # the value is the mean of bilinear samples: a constant map gives the constant back
    const = torch.full((2, 4, 24, 20), 3.0, dtype=torch.float64)
    torch.testing.assert_close(layer(const, rois), torch.full((2, 4, 5, 4), 3.0, dtype=torch.float64))


def test_ops_without_a_stand_in_say_how_to_get_them():
    import mmcv.ops

    if FULL_MMCV:
        pytest.skip("full mmcv is installed: its own kernels run")
    with pytest.raises(NotImplementedError, match="make mmcv-full"):
        mmcv.ops.nms_rotated(torch.rand(3, 5), torch.rand(3), 0.5)


@pytest.mark.skipif(not FULL_MMCV, reason="compares with full mmcv's compiled ops (make mmcv-full)")
def test_stand_ins_match_full_mmcv(seed):
    ext = importlib.import_module("mmcv._ext")
    boxes, scores = _random_boxes(100)
    for offset in (0, 1):
        expected = ext.nms(boxes, scores, iou_threshold=0.5, offset=offset)
        assert mmcv_compat.nms(boxes, scores, 0.5, offset).tolist() == expected.tolist()
    x = torch.randn(2, 8, 16, 16)
    rois = torch.tensor([[0, 1.0, 1.0, 12.0, 9.0], [1, 2.0, 0.0, 15.0, 15.0]])
    ours, theirs = torch.zeros(2, 8, 7, 7), torch.zeros(2, 8, 7, 7)
    args = (x.new_zeros(0), x.new_zeros(0))
    kwargs = dict(aligned_height=7, aligned_width=7, spatial_scale=1.0, sampling_ratio=2, pool_mode=1, aligned=True)
    mmcv_compat.roi_align_forward(x, rois, ours, *args, **kwargs)
    ext.roi_align_forward(x, rois, theirs, *args, **kwargs)
    torch.testing.assert_close(ours, theirs)


def test_backbone_is_registered_in_every_installed_codebase():
    assert {"mmseg", "mmdet"} <= set(vitzoo.mm.REGISTERED_IN)
    from mmseg.registry import MODELS

    with pytest.raises(ValueError, match="unknown model 'vitzoo_nope'"):
        MODELS.build(dict(type="VitzooBackbone", model_name="vitzoo_nope"))
    with pytest.raises(ValueError, match="init_cfg must be"):
        MODELS.build(dict(type="VitzooBackbone", model_name="vitzoo_van_b0", init_cfg=dict(type="Kaiming")))


def test_frozen_stages_and_pretrained_weights(tmp_path, seed):
    from safetensors.torch import save_file

    source = timm.create_model("vitzoo_van_b0")
    path = tmp_path / "van_b0.safetensors"
    save_file(source.state_dict(), str(path))
    backbone = vitzoo.mm.VitzooBackbone(
        "vitzoo_van_b0", frozen_stages=1, init_cfg=dict(type="Pretrained", checkpoint=str(path))
    )
    backbone.init_weights()
    frozen = {n for n, p in backbone.named_parameters() if not p.requires_grad}
    assert frozen and all(n.startswith(("model.model.stages.0.", "model.model.stages.1.")) for n in frozen)
    assert any(n.startswith("model.model.stages.1.") for n in frozen)
    backbone.train()
    assert not backbone.model.model.stages[0].training and backbone.model.model.stages[2].training
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        expected = source.eval().forward_intermediates(x, intermediates_only=True)
        for ours, theirs in zip(backbone.eval()(x), expected):
            torch.testing.assert_close(ours, theirs)


def segmentor_training_step(model, size: tuple[int, int] = (64, 96), batch: dict | None = None) -> dict:
    """One loss + backward of an mmseg segmentor; returns the losses.

    ``batch`` is a collated dataset batch (images and label maps); without it, two random images with random labels.
    """
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample

    if batch is None:
        samples = []
        for _ in range(2):
            s = SegDataSample(metainfo=dict(img_shape=size, ori_shape=size, pad_shape=size))
            s.gt_sem_seg = PixelData(data=torch.randint(0, 150, (1, *size)))
            samples.append(s)
        batch = dict(inputs=[torch.randint(0, 255, (3, *size), dtype=torch.uint8)] * 2, data_samples=samples)
    data = model.data_preprocessor(batch, training=True)
    losses = model(**data, mode="loss")
    loss = sum(v for k, v in losses.items() if "loss" in k)
    assert torch.isfinite(loss)
    loss.backward()
    return losses


ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def demo_batches(tmp_path_factory) -> dict[str, dict]:
    """Two training samples each from the ADE20K and COCO demo sets, through the real dataset classes and pipelines."""
    import sys

    from mmengine.config import Config
    from mmengine.dataset import pseudo_collate
    from mmengine.registry import DefaultScope

    sys.path.insert(0, str(ROOT / "tools"))
    try:
        from make_demo_data import make_demo_data
    finally:
        sys.path.remove(str(ROOT / "tools"))

    roots = make_demo_data(tmp_path_factory.mktemp("demo"), which=("ade20k", "coco"), scale=0.05)
    batches = {}
    for task, base, root in (
        ("mmseg", "ade20k_demo.py", str(roots["ade20k"])),
        ("mmdet", "coco_instance_demo.py", str(roots["coco"]) + "/"),
    ):
        importlib.import_module(f"{task}.utils").register_all_modules(init_default_scope=False)
        dataset = Config.fromfile(str(ROOT / "configs" / "_base_" / "datasets" / base)).train_dataloader.dataset
        dataset.data_root = root
        if task == "mmseg":  # crops of 64x96 keep the thirty steps below quick
            dataset.pipeline[2:] = [dict(type="RandomCrop", crop_size=(64, 96)), dict(type="PackSegInputs")]
        # the pipeline's transforms are looked up in the task's scope; a module fixture must not leave it current
        with DefaultScope.overwrite_default_scope(task):
            built = importlib.import_module(f"{task}.registry").DATASETS.build(dataset)
            batches[task] = pseudo_collate([built[0], built[1]])
    return batches


def _encoder_decoder(model_name: str, channels: list[int], head: str) -> dict:
    common = dict(
        in_channels=channels, in_index=[0, 1, 2, 3], channels=64, dropout_ratio=0.1, num_classes=150,
        norm_cfg=dict(type="BN", requires_grad=True), align_corners=False,
        loss_decode=dict(type="CrossEntropyLoss", use_sigmoid=False, loss_weight=1.0),
    )  # fmt: skip
    decode_head = (
        dict(type="UPerHead", pool_scales=(1, 2, 3, 6), **common)
        if head == "upernet"
        else dict(type="VWFormerHead", num_heads=1, short_cut=True, **common)
    )
    return dict(
        type="EncoderDecoder",
        data_preprocessor=dict(
            type="SegDataPreProcessor", mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375],
            bgr_to_rgb=True, pad_val=0, seg_pad_val=255, size=(64, 96),
        ),
        backbone=dict(type="VitzooBackbone", model_name=model_name, drop_path_rate=0.1),
        decode_head=decode_head,
    )  # fmt: skip


@pytest.mark.parametrize("head", ["upernet", "vwformer"])
@pytest.mark.parametrize("name", FAMILY_MODELS)
def test_every_family_trains_one_step_in_each_segmentor(name, head, demo_batches, seed):
    from mmengine.config import ConfigDict
    from mmseg.registry import MODELS
    from mmseg.utils import register_all_modules

    register_all_modules(init_default_scope=True)
    channels = timm.create_model(name, features_only=True).feature_info.channels()
    model = MODELS.build(ConfigDict(_encoder_decoder(name, channels, head)))
    model.init_weights()
    segmentor_training_step(model, batch=demo_batches["mmseg"])
    grads = [p.grad for p in model.backbone.parameters() if p.requires_grad]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)


# The hierarchical families (strides 4-32 for FPN); the DeiT hosts' single stride-16 map needs a ViTDet-style
# simple pyramid, which no config here uses.
@pytest.mark.parametrize("name", FAST_MODELS)
def test_every_family_trains_one_step_in_mask_rcnn(name, demo_batches, seed):
    """mmdet's Mask R-CNN (RoIAlign and NMS on the stand-in ops) around each family: one step on demo images."""
    import mmdet
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    from mmengine.config import Config

    register_all_modules(init_default_scope=True)
    base = pathlib.Path(mmdet.__file__).parent / ".mim" / "configs" / "_base_" / "models" / "mask-rcnn_r50_fpn.py"
    cfg = Config.fromfile(str(base)).model
    cfg.backbone = dict(type="VitzooBackbone", model_name=name, out_norm=True)
    cfg.neck.in_channels = timm.create_model(name, features_only=True).feature_info.channels()
    model = MODELS.build(cfg)
    model.init_weights()
    data = model.data_preprocessor(demo_batches["mmdet"], training=True)
    assert data["inputs"].shape[-2:] == (128, 128) and len(data["data_samples"][0].gt_instances.masks) > 0
    losses = model(**data, mode="loss")
    total = sum(v if torch.is_tensor(v) else sum(v) for k, v in losses.items() if "loss" in k)
    assert torch.isfinite(total) and "loss_mask" in losses
    total.backward()
    grads = [p.grad for p in model.backbone.parameters() if p.requires_grad]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)
    model.eval()
    with torch.no_grad():
        result = model(**model.data_preprocessor(demo_batches["mmdet"], training=False), mode="predict")[0]
    assert result.pred_instances.bboxes.shape[1] == 4


def test_pooled_backbone_is_the_classifier_without_its_last_layer(seed):
    """``pooled=True`` returns the timm model's pre-logits (its own final norm and pooling) for a LinearClsHead."""
    backbone = vitzoo.mm.VitzooBackbone("vitzoo_mala_t", pooled=True).eval()
    reference = timm.create_model("vitzoo_mala_t").eval()
    reference.load_state_dict(backbone.model.state_dict(), strict=False)  # everything but the classifier
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        (ours,) = backbone(x)
        torch.testing.assert_close(ours, reference.forward_head(reference.forward_features(x), pre_logits=True))
    assert backbone.out_channels == [reference.num_features]


def test_out_norm_normalises_every_returned_map(seed):
    backbone = vitzoo.mm.VitzooBackbone("vitzoo_van_b0", out_norm=True).eval()
    with torch.no_grad():
        maps = backbone(torch.randn(1, 3, 64, 64) * 5)
    assert [m.shape[1] for m in maps] == [32, 64, 160, 256]
    for m in maps:  # LayerNorm over channels at initialisation: zero mean, unit variance at every position
        torch.testing.assert_close(m.mean(1), torch.zeros_like(m.mean(1)), atol=1e-5, rtol=0)
        torch.testing.assert_close(m.var(1, unbiased=False), torch.ones_like(m.mean(1)), atol=1e-2, rtol=0)
    with pytest.raises(ValueError, match="out_norm applies to feature maps"):
        vitzoo.mm.VitzooBackbone("vitzoo_van_b0", out_norm=True, pooled=True)
