"""VWFormer decode head: the attention branch against a loop-by-loop reference, sizes, training, official keys."""

import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

pytest.importorskip("mmseg", reason="the mm extra is not installed")

from test_mm import segmentor_training_step  # noqa: E402

import vitzoo.mm  # noqa: E402, F401  (installs the op stand-ins before mmseg imports mmcv.ops)
from vitzoo.mm import VWFormerHead  # noqa: E402

BN = dict(type="BN", requires_grad=True)


def _head(channels: int = 64, in_channels=(8, 16, 32, 64), **kwargs) -> VWFormerHead:
    return VWFormerHead(list(in_channels), channels, num_classes=kwargs.pop("num_classes", 7), norm_cfg=BN, **kwargs)


def _pyramid(b: int, h: int, w: int, in_channels=(8, 16, 32, 64)) -> list[torch.Tensor]:
    """Backbone-like levels at strides 4-32 of an ``h x w`` image (sizes rounded up, as padded convolutions give)."""
    return [torch.randn(b, c, math.ceil(h / s), math.ceil(w / s)) for c, s in zip(in_channels, (4, 8, 16, 32))]


def _batch_norm_eval(x: torch.Tensor, bn: nn.BatchNorm2d) -> torch.Tensor:
    shape = (1, -1, 1, 1)
    return (x - bn.running_mean.view(shape)) / torch.sqrt(bn.running_var.view(shape) + bn.eps) * bn.weight.view(
        shape
    ) + bn.bias.view(shape)


def _copy_shift(t: torch.Tensor, dim: int, ratio: int, p: int) -> torch.Tensor:
    """Spec 3.2(c): prepend indices ``[floor((R+1)p/2), Rp)`` and append ``[S - Rp, S - floor((R+1)p/2))``."""
    size, half = t.shape[dim], (ratio + 1) * p // 2
    front = t.narrow(dim, half, ratio * p - half)
    back = t.narrow(dim, size - ratio * p, ratio * p - half)
    return torch.cat([front, t, back], dim=dim)


def _reference_branch(head: VWFormerHead, x: torch.Tensor, j: int) -> torch.Tensor:
    """The VWA branch ``j`` (no shortcut) by its specification, one window and one token at a time (eval mode)."""
    r, n = head.ratios[j], head.num_windows
    b, e, h, w = x.shape
    p_h, p_w = h // n, w // n
    ds, attn = head.ds[j], head.attn[j]
    heads, d = attn.num_heads, e // attn.num_heads

    # (b) pre-scaling: asymmetric zero pad (R/2 - 1 before, R/2 after), dense R x R conv, BN, ReLU
    y = F.conv2d(F.pad(x, (r // 2 - 1, r // 2, r // 2 - 1, r // 2)), ds.conv.weight)
    y = F.relu(_batch_norm_eval(y, ds.bn))
    assert y.shape[-2:] == x.shape[-2:]
    c = y.shape[1]
    # (c) copy-shift padding, W first, then H
    y = _copy_shift(_copy_shift(y, 3, r, p_w), 2, r, p_h)
    assert (y.shape[2] - r * p_h) // p_h + 1 == n and (y.shape[3] - r * p_w) // p_w + 1 == n

    out = torch.zeros_like(x)
    for bi in range(b):
        for i in range(n):
            for k in range(n):
                # (a) query window, (d) its R p_h x R p_w context window (stride p)
                q = x[bi, :, i * p_h : (i + 1) * p_h, k * p_w : (k + 1) * p_w]
                ctx = y[bi, :, i * p_h : i * p_h + r * p_h, k * p_w : k * p_w + r * p_w]
                # (e) space-to-depth, channel (dy * R + dx) * c + c'
                # (token (ty, tx) reads ctx[:, ty * R + dy, tx * R + dx]: a stride-R slice per (dy, dx))
                kv = torch.zeros(e, p_h, p_w, dtype=x.dtype)
                for dy in range(r):
                    for dx in range(r):
                        ch = (dy * r + dx) * c
                        kv[ch : ch + c] = ctx[:, dy::r, dx::r]
                # (f) per-head softmax attention over the p_h p_w context tokens, then conv_out + BN
                q, kv = q.reshape(e, -1), kv.reshape(e, -1)  # E, N (token ty * p_w + tx)
                theta = attn.theta.conv.weight[:, :, 0, 0] @ q + attn.theta.conv.bias[:, None]
                phi = attn.phi.conv.weight[:, :, 0, 0] @ kv + attn.phi.conv.bias[:, None]
                g = attn.g.conv.weight[:, :, 0, 0] @ kv + attn.g.conv.bias[:, None]
                merged = torch.zeros(e, p_h * p_w, dtype=x.dtype)
                for hd in range(heads):
                    sl = slice(hd * d, (hd + 1) * d)
                    logits = theta[sl].T @ phi[sl] / math.sqrt(d)  # N, N
                    merged[sl] = (torch.softmax(logits, dim=-1) @ g[sl].T).T
                o = attn.conv_out.conv.weight[:, :, 0, 0] @ merged  # E, N
                o = _batch_norm_eval(o.reshape(1, e, p_h, p_w), attn.conv_out.bn)[0]
                # (g) un-window
                out[bi, :, i * p_h : (i + 1) * p_h, k * p_w : (k + 1) * p_w] = o
    return out


def _randomise(head: nn.Module) -> None:
    """Random weights everywhere, BN included (the zero-initialised output BN would hide the attention)."""
    for m in head.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            nn.init.uniform_(m.weight, 0.5, 1.5)
            nn.init.normal_(m.bias)
            m.running_mean.normal_()
            m.running_var.uniform_(0.5, 1.5)
        elif isinstance(m, nn.Conv2d):
            nn.init.normal_(m.weight, std=0.3 / math.sqrt(m.weight[0].numel() / 64))
            if m.bias is not None:
                nn.init.normal_(m.bias)


@pytest.mark.parametrize("size", [(16, 16), (24, 16)])
def test_attention_branch_matches_the_loop_reference(size, seed):
    head = _head(channels=64, num_heads=2).double().eval()
    _randomise(head)
    x = torch.randn(1, 64, *size, dtype=torch.float64)
    with torch.no_grad():
        for j in range(len(head.ratios)):
            ours, expected = head.attention_branch(x, j), _reference_branch(head, x, j)
            assert expected.abs().amax() > 0.1  # the test sees real attention outputs, not zeros
            torch.testing.assert_close(ours, expected, rtol=1e-9, atol=1e-9, msg=f"R={head.ratios[j]}, seed {seed}")


def test_init_zeroes_every_attention_branch(seed):
    head = _head()
    head.init_weights()
    for attn in head.attn:
        assert attn.theta.conv.weight.std().item() == pytest.approx(0.01, rel=0.1)
        assert not attn.conv_out.bn.weight.any() and not attn.conv_out.bn.bias.any()
    assert head.conv_seg.weight.std().item() == pytest.approx(0.01, rel=0.1)
    x = torch.randn(2, 64, 16, 16)
    for j in range(len(head.ratios)):
        assert not head.attention_branch(x, j).any()


def test_forward_shape_and_official_parameter_count(seed):
    head = _head(channels=128, num_classes=11)
    logits = head(_pyramid(2, 128, 128))
    assert logits.shape == (2, 11, 32, 32) and torch.isfinite(logits).all()

    official = VWFormerHead([96, 192, 384, 768], 512, num_classes=150, norm_cfg=BN)
    assert sum(p.numel() for p in official.parameters() if p.requires_grad) == 7_624_726
    assert [tuple(official.ds[j].conv.weight.shape) for j in range(3)] == [(128, 512, 2, 2), (32, 512, 4, 4),
                                                                         (8, 512, 8, 8)]  # fmt: skip


@pytest.mark.parametrize("image", [(100, 75), (64, 64), (72, 200)])
def test_any_input_size_runs(image, seed):
    head = _head(num_heads=2).eval()
    levels = _pyramid(1, *image)
    with torch.no_grad():
        logits = head(levels)
    assert logits.shape == (1, 7, *levels[0].shape[-2:]) and torch.isfinite(logits).all()


def test_trains_one_step_in_encoder_decoder(seed):
    from mmengine.config import ConfigDict
    from mmseg.registry import MODELS
    from mmseg.utils import register_all_modules

    register_all_modules(init_default_scope=True)
    channels = [64, 128, 256, 512]  # BiFormer-T's stage widths (building the model once more only to read them is slow)
    cfg = dict(
        type="EncoderDecoder",
        data_preprocessor=dict(
            type="SegDataPreProcessor", mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375],
            bgr_to_rgb=True, pad_val=0, seg_pad_val=255, size=(64, 96),
        ),
        backbone=dict(type="VitzooBackbone", model_name="vitzoo_biformer_t"),
        decode_head=dict(
            type="VWFormerHead", in_channels=channels, in_index=[0, 1, 2, 3], channels=64, num_heads=2,
            dropout_ratio=0.1, num_classes=150, norm_cfg=BN, align_corners=False,
            loss_decode=dict(type="CrossEntropyLoss", use_sigmoid=False, loss_weight=1.0),
        ),
    )  # fmt: skip
    model = MODELS.build(ConfigDict(cfg))
    model.init_weights()
    assert isinstance(model.decode_head, VWFormerHead)
    segmentor_training_step(model)
    params = dict(model.decode_head.named_parameters())
    assert params and all(p.grad is not None and torch.isfinite(p.grad).all() for p in params.values())
    # the zero-initialised output BN still learns: its gradient is what lets the attention branches start
    assert all(attn.conv_out.bn.weight.grad.abs().sum() > 0 for attn in model.decode_head.attn)


def _official_keys() -> list[str]:
    """The official ``VWHead`` state-dict keys (spec section 2), in registration order."""
    bn = ["weight", "bias", "running_mean", "running_var", "num_batches_tracked"]

    def conv_bn(prefix: str) -> list[str]:
        return [f"{prefix}.conv.weight"] + [f"{prefix}.bn.{b}" for b in bn]

    def linear(prefix: str) -> list[str]:
        return [f"{prefix}.proj.weight", f"{prefix}.proj.bias"]

    keys = ["conv_seg.weight", "conv_seg.bias", *linear("linear_c4"), *linear("linear_c3"), *linear("linear_c2")]
    keys += conv_bn("linear_fuse")
    for j in range(3):
        keys += [f"attn.{j}.g.conv.weight", f"attn.{j}.g.conv.bias", *conv_bn(f"attn.{j}.conv_out")]
        keys += [f"attn.{j}.theta.conv.weight", f"attn.{j}.theta.conv.bias"]
        keys += [f"attn.{j}.phi.conv.weight", f"attn.{j}.phi.conv.bias"]
    for j in range(3):
        keys += conv_bn(f"ds.{j}")
    keys += conv_bn("short_path") + conv_bn("image_pool.1") + conv_bn("cat")
    keys += linear("linear_c1") + conv_bn("low_level_fuse")
    return keys


def test_state_dict_keys_are_the_official_ones():
    from mmseg.registry import MODELS

    head = MODELS.build(dict(type="VWFormerHead", in_channels=[8, 16, 32, 64], channels=64, num_classes=7, norm_cfg=BN))
    assert list(head.state_dict()) == _official_keys()


@pytest.mark.parametrize("kwargs", [dict(ratios=(2, 16)), dict(channels=48, ratios=(8,)), dict(num_heads=5)])
def test_invalid_configs_say_why(kwargs):
    with pytest.raises(ValueError, match="VWFormerHead"):
        _head(**kwargs)
