"""NATTEN backend of window_attention against the reference: exact windows, the rectangle split, refusals, models.

On CPU NATTEN runs its uncompiled Flex path, forward only, so the CPU tests compare forwards under ``no_grad``; the
``gpu`` tests add the backward in float16 / bfloat16 at the models' shapes.
"""

from __future__ import annotations

import logging

import pytest
import torch

natten = pytest.importorskip("natten", reason="natten is not installed")

import timm  # noqa: E402

import vitzoo  # noqa: E402, F401  (registers the models)
from vitzoo.ops import BackendUnavailable, use_backend, window_attention  # noqa: E402
from vitzoo.ops.window import BACKENDS  # noqa: E402

NATTEN_BACKEND = BACKENDS._module("natten")
ON_GPU = torch.cuda.is_available()


def _qkv(gen, b, h, w, heads, d, dv=None, dtype=torch.float32, device="cpu"):
    shapes = [(b, h, w, heads, d), (b, h, w, heads, d), (b, h, w, heads, dv or d)]
    return [torch.randn(s, generator=gen, dtype=torch.float32).to(device, dtype) for s in shapes]


@pytest.fixture
def gen(seed) -> torch.Generator:
    """A generator seeded with this run's fresh seed (printed by pytest on failure through ``seed``)."""
    return torch.Generator().manual_seed(seed)


@pytest.fixture
def natten_calls(monkeypatch) -> list[tuple]:
    """Record every ``na1d`` / ``na2d`` call the backend makes (name, map shape, kernel, dilation); they still run."""
    calls = []
    for name in ("na1d", "na2d"):
        original = getattr(natten, name)

        def wrapper(q, k, v, *args, _name=name, _original=original, **kwargs):
            calls.append((_name, tuple(q.shape[1:-2]), tuple(kwargs["kernel_size"]), tuple(kwargs["dilation"])))
            return _original(q, k, v, *args, **kwargs)

        monkeypatch.setattr(natten, name, wrapper)
    return calls


# --- forward exactness on CPU --------------------------------------------------------------------------------------
CASES = [
    # size, window, dilation, d, dv
    ((56, 56), (7, 7), (1, 1), 32, None),  # 7x7 windows at Swin-T stage 1
    ((64, 64), (8, 8), (1, 1), 32, None),  # VWFormer's 8x8 grid of windows at 512 x 512
    ((56, 56), (2, 56), (1, 1), 32, None),  # CSWin stripes: horizontal, split 2
    ((56, 56), (56, 7), (1, 1), 32, None),  # vertical, split 7
    ((28, 28), (28, 2), (1, 1), 32, None),  # vertical, split 2 (CSWin-T stage 2)
    ((16, 24), (1, 24), (1, 1), 32, None),  # CSWin split size 1: one row per window
    ((24, 16), (24, 1), (1, 1), 32, None),  # one column per window
    ((28, 28), (7, 7), (4, 4), 32, None),  # CrossFormer LDA: group 7, interval 4 on a 7*4 map
    ((30, 33), (7, 7), (4, 4), 32, None),  # LDA on a map it does not divide: dilated remainders, gathered
    ((15, 17), (3, 2), (2, 3), 32, None),  # dilated remainders of both residue groups, non-square
    ((13, 19), (3, 3), (3, 4), 32, None),  # remainders shorter than the dilation: padding-only windows
    ((30, 45), (7, 7), (1, 1), 32, None),  # interior + three remainder rectangles
    ((29, 30), (7, 7), (1, 1), 32, None),  # a one-row remainder: 1-D windows along W (na1d)
    ((31, 33), (2, 31), (1, 1), 32, None),  # stripes on an odd map, both axes with a remainder
    ((33, 29), (33, 2), (1, 1), 32, None),  # vertical stripes, one-column remainder
    ((7, 9), (7, 9), (1, 1), 32, None),  # a single window covering the map: plain SDPA
    ((16, 16), (4, 4), (1, 1), 32, 16),  # Dv != D (Flex needs one head dim: both padded to 32)
    ((12, 20), (4, 5), (1, 1), 24, 40),  # head dims no NATTEN kernel takes as they are: zero-padded to 64
]


@pytest.mark.parametrize("size, window, dilation, d, dv", CASES)
def test_natten_forward_matches_reference(gen, seed, size, window, dilation, d, dv):
    q, k, v = _qkv(gen, 1, *size, 2, d, dv)
    with torch.no_grad():
        out = window_attention(q, k, v, window, dilation=dilation, backend="natten")
        ref = window_attention(q, k, v, window, dilation=dilation, backend="reference")
    assert out.shape == ref.shape == (1, *size, 2, dv or d)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5, msg=lambda m: f"seed {seed}: {m}")


def test_natten_forward_accepts_inputs_that_require_grad_under_no_grad(gen):
    q, k, v = (t.requires_grad_() for t in _qkv(gen, 1, 14, 14, 2, 32))
    with torch.no_grad():
        out = window_attention(q, k, v, 7, backend="natten")
        ref = window_attention(q, k, v, 7, backend="reference")
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


# --- the rectangle split ---------------------------------------------------------------------------------------------
def _op_windows(size, k, d):
    """The op's 1-D windows (sets of real positions) by its docstring rule; padding-only windows have none."""
    windows = {}
    for i in range(size):
        windows.setdefault(i // (k * d) * d + i % d, set()).add(i)
    return sorted(map(sorted, windows.values()))


def _segment_windows(size, k, d):
    """The windows that NATTEN's stride-``kernel`` tiling of each segment forms, as sets of map positions."""
    order, segments = NATTEN_BACKEND._axis(size, k, d)
    order = list(range(size)) if order is None else list(order)
    assert sorted(order) == list(range(size)), "the segments must cover every position exactly once"
    windows, start = [], 0
    for length, kernel, dilation in segments:
        assert kernel * dilation <= length and length % (kernel * dilation) == 0, "NATTEN's tiling must be exact"
        groups = {}
        for p in range(length):  # NATTEN: residue p % dilation, then windows of `kernel` consecutive of those
            groups.setdefault((p // (kernel * dilation), p % dilation), []).append(order[start + p])
        assert all(len(g) == kernel for g in groups.values())
        windows += groups.values()
        start += length
    assert start == size
    return sorted(map(sorted, windows))


@pytest.mark.parametrize("k, d", [(1, 1), (2, 1), (7, 1), (3, 2), (2, 3), (7, 4), (3, 5), (1, 3), (4, 4)])
def test_axis_segments_form_exactly_the_ops_windows(k, d):
    for size in range(1, 40):  # every remainder of a few blocks, including those shorter than the dilation
        assert _segment_windows(size, k, d) == _op_windows(size, k, d), f"size {size}"


def test_non_divisible_map_is_split_into_exact_rectangles(gen, natten_calls):
    q, k, v = _qkv(gen, 1, 30, 45, 2, 32)
    with torch.no_grad():
        window_attention(q, k, v, 7, backend="natten")
    # 28x42 interior, 28x3 right, 2x42 bottom; the 2x3 corner is one window (SDPA); no border windows shifted inward
    assert natten_calls == [
        ("na2d", (28, 42), (7, 7), (1, 1)),
        ("na2d", (28, 3), (7, 3), (1, 1)),
        ("na2d", (2, 42), (2, 7), (1, 1)),
    ]
    natten_calls.clear()
    q, k, v = _qkv(gen, 1, 29, 30, 2, 32)
    with torch.no_grad():
        window_attention(q, k, v, 7, backend="natten")
    # the one-row remainder is 1-D windows along W (NATTEN needs kernels >= 2): rows join the batch
    assert natten_calls == [
        ("na2d", (28, 28), (7, 7), (1, 1)),
        ("na2d", (28, 2), (7, 2), (1, 1)),
        ("na1d", (28,), (7,), (1,)),
    ]


def test_split_size_one_and_whole_map_make_no_natten_call(gen, natten_calls):
    q, k, v = _qkv(gen, 1, 16, 24, 2, 32)
    with torch.no_grad():
        for window in [(1, 24), (16, 1), (16, 24)]:
            window_attention(q, k, v, window, backend="natten")
    assert natten_calls == []  # batched SDPA over rows / columns, and plain SDPA


# --- refusals --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "extra, match",
    [
        ("bias", "takes no additive bias"),
        ("mask", "takes no attention mask"),
        ("shift", "has no shifted windows"),
    ],
)
def test_natten_refuses_bias_mask_and_shift_with_reason(gen, extra, match):
    q, k, v = _qkv(gen, 1, 8, 8, 2, 16)
    kwargs = {
        "bias": dict(bias=torch.randn(2, 16, 16, generator=gen)),
        "mask": dict(mask=torch.randn(4, 16, 16, generator=gen)),
        "shift": dict(shift=(2, 2)),
    }[extra]
    with torch.no_grad(), pytest.raises(BackendUnavailable, match=f"backend 'natten' cannot run: NATTEN .*{match}"):
        window_attention(q, k, v, 4, backend="natten", **kwargs)


def test_natten_refuses_cpu_backward_and_auto_choice_trains_on_another_backend(gen, caplog, monkeypatch):
    q, k, v = (t.requires_grad_() for t in _qkv(gen, 1, 8, 8, 2, 16))
    with pytest.raises(BackendUnavailable, match="no backward"):
        window_attention(q, k, v, 4, backend="natten")
    with use_backend("natten"), pytest.raises(BackendUnavailable, match="no backward"):
        window_attention(q, k, v, 4)
    monkeypatch.setattr(BACKENDS, "_logged", set())  # each reason is logged once per process
    with caplog.at_level(logging.INFO, logger="vitzoo.ops"):
        window_attention(q, k, v, 4).sum().backward()
    assert "skipping backend 'natten'" in caplog.text and "no backward" in caplog.text
    assert torch.isfinite(q.grad).all()


def test_natten_is_never_auto_selected_on_cpu(gen, caplog, monkeypatch):
    q, k, v = _qkv(gen, 1, 8, 8, 2, 16)
    assert BACKENDS.why_not("natten", q, k, v, (4, 4), dilation=(1, 1)) is None  # it can run when forced
    monkeypatch.setattr(BACKENDS, "_logged", set())
    with torch.no_grad(), caplog.at_level(logging.INFO, logger="vitzoo.ops"):
        chosen = BACKENDS.choose(q, k, v, (4, 4), dilation=(1, 1), shift=(0, 0), bias=None, mask=None, scale=0.25)
    assert chosen is not NATTEN_BACKEND.forward
    assert "skipping backend 'natten'" in caplog.text and "uncompiled Flex" in caplog.text


def test_natten_refuses_unsupported_dtype(gen):
    q, k, v = (t.double() for t in _qkv(gen, 1, 8, 8, 2, 16))
    with torch.no_grad(), pytest.raises(BackendUnavailable, match="dtype torch.float64 not supported"):
        window_attention(q, k, v, 4, backend="natten")


# --- the models NATTEN serves ----------------------------------------------------------------------------------------
def _randomize(module: torch.nn.Module) -> torch.nn.Module:
    """Unit-scale random weights, so attention logits are O(1) and a wrong window changes the logits."""
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn_like(p) * (p[0].numel() ** -0.5 if p.dim() > 1 else 0.5))
    return module


def test_cswin_t_gives_the_same_logits_through_natten(seed, natten_calls):
    torch.manual_seed(seed)
    model = _randomize(timm.create_model("vitzoo_cswin_t")).eval()
    # 232 x 232: stage maps 58, 29, 15, 8; split 2 leaves a one-column remainder at 29, split 7 one at 15
    x = torch.randn(1, 3, 232, 232)
    with torch.no_grad():
        ref = model(x)
        with use_backend("natten"):
            out = model(x)
    assert natten_calls, "the model must reach NATTEN kernels, not only SDPA"
    assert {(shape, kernel) for _, shape, kernel, _ in natten_calls} == {
        ((29, 28), (29, 2)),  # stage 2, vertical stripes of the divisible part
        ((28, 29), (2, 29)),  # stage 2, horizontal
        ((15, 14), (15, 7)),  # stage 3
        ((14, 15), (7, 15)),
    }
    torch.testing.assert_close(out, ref, atol=1e-4, rtol=1e-4, msg=lambda m: f"seed {seed}: {m}")


def test_vwformer_head_gives_the_same_logits_through_natten(seed, gen, natten_calls):
    pytest.importorskip("mmseg", reason="the mm extra is not installed")
    from vitzoo.mm import VWFormerHead

    torch.manual_seed(seed)
    head = VWFormerHead([8, 16, 32, 64], 64, num_heads=2, num_classes=7, norm_cfg=dict(type="BN", requires_grad=True))
    head = _randomize(head).eval()
    levels = [torch.randn(1, c, 128 // s, 128 // s, generator=gen) for c, s in zip((8, 16, 32, 64), (4, 8, 16, 32))]
    with torch.no_grad():
        ref = head(levels)
        with use_backend("natten"):
            out = head(levels)
    assert {(shape, kernel) for _, shape, kernel, _ in natten_calls} == {((16, 16), (2, 2))}  # 8x8 windows of 2x2
    torch.testing.assert_close(out, ref, atol=1e-4, rtol=1e-4, msg=lambda m: f"seed {seed}: {m}")


# --- CUDA: forward and backward in half precision --------------------------------------------------------------------
GPU_CASES = [
    # batch, size, heads, window, d, dv: CSWin-T stage shapes at 224 (head dim 32) and the VWFormer head at 512
    (2, (56, 56), 1, (56, 1), 32, None),  # stage 1, split 1
    (2, (28, 28), 2, (28, 2), 32, None),  # stage 2
    (2, (28, 28), 2, (2, 28), 32, None),
    (2, (14, 14), 4, (14, 7), 32, None),  # stage 3
    (2, (15, 15), 4, (7, 15), 32, None),  # stage 3 at 240: a remainder rectangle
    (2, (64, 64), 1, (8, 8), 512, None),  # VWFormer: 8x8 windows, one head of 512 (beyond Triton's 256)
    (2, (30, 45), 2, (7, 7), 48, 24),  # head dims padded for Hopper, Dv != D
]


def _error(out, grads, exp_out, exp_grads) -> list[float]:
    return [(a.float() - b).abs().max().item() for a, b in zip([out, *grads], [exp_out, *exp_grads])]


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("batch, size, heads, window, d, dv", GPU_CASES)
def test_natten_cuda_forward_backward_matches_reference(gen, seed, dtype, batch, size, heads, window, d, dv):
    inputs = _qkv(gen, batch, *size, heads, d, dv, device="cuda")
    upstream = torch.randn(batch, *size, heads, dv or d, generator=gen).cuda()
    results = {}
    for backend, precision in (("reference", torch.float32), ("reference", dtype), ("natten", dtype)):
        q, k, v = (t.detach().to(precision).requires_grad_() for t in inputs)
        out = window_attention(q, k, v, window, backend=backend)
        grads = torch.autograd.grad(out, (q, k, v), upstream.to(precision))
        results[backend, precision] = (out.float(), [g.float() for g in grads])
    exact = results["reference", torch.float32]
    ref_err = _error(*results["reference", dtype], *exact)
    natten_err = _error(*results["natten", dtype], *exact)
    for name, got, bound in zip(("out", "dq", "dk", "dv"), natten_err, ref_err):
        # as close to the float32 result as the reference itself gets in this precision
        assert got <= 3 * bound + 1e-3, f"{name}: natten {got:.3g} vs reference {bound:.3g} in {dtype}, seed {seed}"


@pytest.mark.gpu
def test_natten_is_auto_selected_on_cuda_where_triton_cannot_run(gen):
    if not natten.HAS_LIBNATTEN:
        pytest.skip("NATTEN without libnatten has only its uncompiled Flex path, which auto choice passes over")
    q, k, v = _qkv(gen, 1, 64, 64, 1, 512, dtype=torch.float16, device="cuda")  # VWFormer: head dim 512
    args = dict(dilation=(1, 1), shift=(0, 0), bias=None, mask=None, scale=512**-0.5)
    assert BACKENDS.why_not("triton", q, k, v, (8, 8), **args) is not None
    assert BACKENDS.choose(q, k, v, (8, 8), **args) is NATTEN_BACKEND.forward
