"""The 2-D attention op layer: references against brute-force definitions, backends against references."""

import logging

import pytest
import torch

from vitzoo.ops import (
    BackendUnavailable,
    disable_backends,
    neighborhood_attention,
    region_routed_attention,
    use_backend,
    window_attention,
)
from vitzoo.ops.neighborhood import BACKENDS as NA_BACKENDS

try:  # natten is optional: its tests are skipped without it
    import natten  # noqa: F401

    HAS_NATTEN = True
except ImportError:
    HAS_NATTEN = False


def _qkv(*shape, dv=None, dtype=torch.float32, grad=False):
    q, k = torch.randn(*shape, dtype=dtype), torch.randn(*shape, dtype=dtype)
    v = torch.randn(*shape[:-1], dv or shape[-1], dtype=dtype)
    return [t.requires_grad_(grad) for t in (q, k, v)]


# --- brute-force definitions, written independently of the references -------------------------------------------
def brute_window(q, k, v, wh, ww, scale, bias=None, mask=None):
    b, h, w, heads, _ = q.shape
    out = torch.zeros(*q.shape[:4], v.shape[-1], dtype=q.dtype)
    n_wc = -(-w // ww)
    for i in range(h):
        for j in range(w):
            wi, wj = i // wh, j // ww
            keys = [(a, c) for a in range(wi * wh, min(h, wi * wh + wh)) for c in range(wj * ww, min(w, wj * ww + ww))]
            kk = torch.stack([k[:, a, c] for a, c in keys], dim=1)  # B, K, heads, D
            vv = torch.stack([v[:, a, c] for a, c in keys], dim=1)
            logits = torch.einsum("bnd,bknd->bnk", q[:, i, j], kk) * scale
            qi = (i - wi * wh) * ww + (j - wj * ww)
            kidx = [(a - wi * wh) * ww + (c - wj * ww) for a, c in keys]
            if bias is not None:
                logits = logits + bias[:, qi, kidx][None]
            if mask is not None:
                logits = logits + mask[wi * n_wc + wj, qi, kidx][None, None]
            out[:, i, j] = torch.einsum("bnk,bknd->bnd", logits.softmax(-1), vv)
    return out


def brute_dilated_window(q, k, v, wh, ww, dh, dw, scale, bias=None, mask=None):
    """Token (i, j) attends to the real tokens of its (wh*dh) x (ww*dw) block whose row/col agree with it mod dh/dw.

    In-window position of (a, c): (a % (wh*dh) // dh, c % (ww*dw) // dw); window (row, col) index:
    (i // (wh*dh) * dh + i % dh, j // (ww*dw) * dw + j % dw) in a grid with ceil(W / (ww*dw)) * dw columns.
    """
    b, h, w, heads, _ = q.shape
    bh, bw = wh * dh, ww * dw
    n_wc = -(-w // bw) * dw
    out = torch.zeros(*q.shape[:4], v.shape[-1], dtype=q.dtype)
    for i in range(h):
        for j in range(w):
            keys = [
                (a, c)
                for a in range(h)
                for c in range(w)
                if a // bh == i // bh and a % dh == i % dh and c // bw == j // bw and c % dw == j % dw
            ]
            assert len(keys) <= wh * ww
            kk = torch.stack([k[:, a, c] for a, c in keys], dim=1)  # B, K, heads, D
            vv = torch.stack([v[:, a, c] for a, c in keys], dim=1)
            logits = torch.einsum("bnd,bknd->bnk", q[:, i, j], kk) * scale
            qi = i % bh // dh * ww + j % bw // dw
            kidx = [a % bh // dh * ww + c % bw // dw for a, c in keys]
            if bias is not None:
                logits = logits + bias[:, qi, kidx][None]
            if mask is not None:
                win = (i // bh * dh + i % dh) * n_wc + (j // bw * dw + j % dw)
                logits = logits + mask[win, qi, kidx][None, None]
            out[:, i, j] = torch.einsum("bnk,bknd->bnd", logits.softmax(-1), vv)
    return out


def brute_neighborhood(q, k, v, kernel, dilation, scale):
    b, h, w, heads, _ = q.shape

    def window(i, length, kk, d):
        # candidates on the query's dilation grid, the kk nearest with ties towards the centre-left, clamped inside
        grid = [p for p in range(i % d, length, d)]
        pos = grid.index(i)
        start = min(max(pos - kk // 2, 0), len(grid) - kk)
        return grid[start : start + kk]

    out = torch.zeros(*q.shape[:4], v.shape[-1], dtype=q.dtype)
    for i in range(h):
        for j in range(w):
            keys = [(a, c) for a in window(i, h, kernel[0], dilation[0]) for c in window(j, w, kernel[1], dilation[1])]
            kk = torch.stack([k[:, a, c] for a, c in keys], dim=1)
            vv = torch.stack([v[:, a, c] for a, c in keys], dim=1)
            logits = torch.einsum("bnd,bknd->bnk", q[:, i, j], kk) * scale
            out[:, i, j] = torch.einsum("bnk,bknd->bnd", logits.softmax(-1), vv)
    return out


# --- window attention --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("h,w,window", [(8, 8, (4, 4)), (7, 10, (4, 3)), (5, 9, (5, 9)), (6, 13, (2, 13))])
def test_window_reference_matches_definition(seed, h, w, window):
    q, k, v = _qkv(2, h, w, 3, 8, dv=6)
    n = window[0] * window[1]
    n_windows = -(-h // window[0]) * -(-w // window[1])
    bias = torch.randn(3, n, n)
    mask = torch.randn(n_windows, n, n)
    ref = window_attention(q, k, v, window, bias=bias, mask=mask, scale=0.3, backend="reference")
    exp = brute_window(q, k, v, *window, 0.3, bias, mask)
    torch.testing.assert_close(ref, exp, atol=1e-5, rtol=1e-5)


def test_window_bool_mask_equals_additive(seed):
    q, k, v = _qkv(1, 8, 8, 2, 4)
    keep = torch.rand(4, 16, 16) > 0.3
    keep |= torch.eye(16, dtype=torch.bool)  # every query keeps at least itself
    additive = torch.zeros(4, 16, 16).masked_fill(~keep, float("-inf"))
    a = window_attention(q, k, v, 4, mask=keep)
    b = window_attention(q, k, v, 4, mask=additive)
    torch.testing.assert_close(a, b)


def test_window_padding_is_masked_not_attended(seed):
    """Changing what lies beyond the map cannot change the output, because padded keys are masked."""
    q, k, v = _qkv(1, 6, 6, 2, 4)
    full = window_attention(q, k, v, 4)
    # the same 6x6 map embedded in an 8x8 one, where rows/cols 6-7 are real keys: outputs must differ there
    big = [torch.randn(1, 8, 8, 2, 4) for _ in range(3)]
    for t, small in zip(big, (q, k, v)):
        t[:, :6, :6] = small
    embedded = window_attention(*big, 4)[:, :6, :6]
    assert not torch.allclose(full, embedded)
    torch.testing.assert_close(full, brute_window(q, k, v, 4, 4, 4**-0.5))


def test_window_gradients_match_definition(seed):
    q, k, v = _qkv(1, 5, 7, 2, 4, grad=True)
    window_attention(q, k, v, (3, 4)).square().sum().backward()
    grads = [t.grad.clone() for t in (q, k, v)]
    for t in (q, k, v):
        t.grad = None
    brute_window(q, k, v, 3, 4, 0.5).square().sum().backward()
    for got, exp in zip(grads, (q.grad, k.grad, v.grad)):
        torch.testing.assert_close(got, exp, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(window_size=0), "window_size"),
        (dict(window_size=4, bias=torch.zeros(2, 4, 4)), r"bias must be \[heads, N, N\]"),
        (dict(window_size=4, mask=torch.zeros(3, 16, 16)), r"mask must be \[nW, N, N\]"),
    ],
)
def test_window_bad_arguments(kwargs, match):
    q, k, v = _qkv(1, 8, 8, 2, 4)
    with pytest.raises(ValueError, match=match):
        window_attention(q, k, v, **kwargs)


def test_window_bad_layout():
    with pytest.raises(ValueError, match=r"5-D tensor laid out \[B, H, W, heads, D\]"):
        window_attention(torch.randn(2, 8, 8, 16), torch.randn(2, 8, 8, 16), torch.randn(2, 8, 8, 16), 4)


# --- dilated windows (CrossFormer LDA) --------------------------------------------------------------------------
DILATED_CASES = [
    ((8, 8), (2, 2), (4, 4)),  # exact: one block of 8x8
    ((12, 12), (3, 3), (2, 2)),  # 2x2 blocks, no padding
    ((7, 10), (2, 3), (3, 2)),  # padded, non-square; rows 7-11 hold windows made of padding only
    ((9, 5), (3, 2), (2, 1)),  # dilation along H only
    ((5, 13), (5, 2), (1, 3)),  # dilation along W only, the window as tall as the map
]


@pytest.mark.parametrize("size,window,dilation", DILATED_CASES)
def test_dilated_window_reference_matches_definition(seed, size, window, dilation):
    q, k, v = _qkv(2, *size, 3, 8, dv=5)
    n = window[0] * window[1]
    rows, cols = (-(-s // (w * d)) * d for s, w, d in zip(size, window, dilation))  # window grid of the padded map
    n_windows = rows * cols
    bias, mask = torch.randn(3, n, n), torch.randn(n_windows, n, n)
    ref = window_attention(q, k, v, window, dilation=dilation, bias=bias, mask=mask, scale=0.3, backend="reference")
    exp = brute_dilated_window(q, k, v, *window, *dilation, 0.3, bias, mask)
    torch.testing.assert_close(ref, exp, atol=1e-5, rtol=1e-5)


def test_dilation_one_is_the_plain_window(seed):
    q, k, v = _qkv(1, 7, 9, 2, 4)
    bias = torch.randn(2, 12, 12)
    plain = window_attention(q, k, v, (3, 4), bias=bias)
    torch.testing.assert_close(window_attention(q, k, v, (3, 4), dilation=(1, 1), bias=bias), plain)
    torch.testing.assert_close(brute_dilated_window(q, k, v, 3, 4, 1, 1, 0.5, bias), plain, atol=1e-5, rtol=1e-5)


def test_dilated_window_is_a_plain_window_on_the_interleaved_map(seed):
    """LDA with interval I on a (G*I)^2 map = plain G x G windows after moving every I-th token together."""
    g, i = 3, 4
    q, k, v = _qkv(2, g * i, g * i, 2, 4)

    def interleave(t):  # B, (G I), (G I), ... -> B, (I G), (I G), ...
        return t.unflatten(1, (g, i)).unflatten(3, (g, i)).transpose(1, 2).transpose(3, 4).flatten(1, 2).flatten(2, 3)

    def deinterleave(t):
        return t.unflatten(1, (i, g)).unflatten(3, (i, g)).transpose(1, 2).transpose(3, 4).flatten(1, 2).flatten(2, 3)

    dilated = window_attention(q, k, v, g, dilation=i)
    plain = deinterleave(window_attention(interleave(q), interleave(k), interleave(v), g))
    torch.testing.assert_close(dilated, plain, atol=1e-6, rtol=1e-5)
    assert not torch.allclose(dilated, window_attention(q, k, v, g), atol=1e-3)  # adjacent windows differ


def test_dilated_window_gradients_match_definition_and_stay_finite(seed):
    """Padded map with padding-only windows: gradients equal the definition's, and the bias gradient is finite."""
    q, k, v = _qkv(1, 7, 10, 2, 4, grad=True)
    bias = torch.randn(2, 6, 6, requires_grad=True)
    out = window_attention(q, k, v, (2, 3), dilation=(3, 2), bias=bias)
    out.square().sum().backward()
    grads = [t.grad.clone() for t in (q, k, v, bias)]
    assert all(torch.isfinite(g).all() for g in grads)
    for t in (q, k, v, bias):
        t.grad = None
    brute_dilated_window(q, k, v, 2, 3, 3, 2, 0.5, bias).square().sum().backward()
    for got, exp in zip(grads, (q.grad, k.grad, v.grad, bias.grad)):
        torch.testing.assert_close(got, exp, atol=1e-5, rtol=1e-5)


def test_dilated_window_padding_is_masked_not_attended(seed):
    q, k, v = _qkv(1, 9, 9, 2, 4)
    small = window_attention(q, k, v, 3, dilation=4)  # padded to 12x12
    big = [torch.randn(1, 12, 12, 2, 4) for _ in range(3)]
    for t, s in zip(big, (q, k, v)):
        t[:, :9, :9] = s
    assert not torch.allclose(small, window_attention(*big, 3, dilation=4)[:, :9, :9])
    torch.testing.assert_close(small, brute_dilated_window(q, k, v, 3, 3, 4, 4, 4**-0.5))


@pytest.mark.parametrize("size, window, dilation", [((5, 7), 7, 1), ((9, 20), 3, 4)])
def test_a_dynamic_shape_trace_pads_a_one_window_axis_without_changing_the_output(size, window, dilation, seed):
    """With symbolic sizes the traced op adds a window of masked padding along an axis that may be one window (see the
    reference): the program, traced at a one-window size, gives the per-query definition there and at larger sizes."""
    from dynamic_trace import export_once

    def attend(x):
        q, k, v = x.unbind(3)
        return window_attention(q, k, v, window, dilation=dilation)

    program = export_once(attend, torch.randn(2, *size, 3, 2, 4), {1: (2, 40), 2: (2, 40)})
    for h, w in [size, (size[0] + 9, size[1]), (size[0] + 4, size[1] + 13)]:
        q, k, v = torch.randn(2, h, w, 3, 2, 4).unbind(3)
        want = brute_dilated_window(q, k, v, window, window, dilation, dilation, 0.5)
        torch.testing.assert_close(program(torch.stack((q, k, v), 3)), want, atol=1e-5, rtol=1e-5)


def test_padding_only_windows_are_left_unmasked():
    """7x10 in 2x3 windows with dilation (3, 2): padded to 12x12; windows of padding only keep every key."""
    from vitzoo.ops.window.reference import padding_key_mask

    valid = padding_key_mask(7, 10, 2, 3, torch.device("cpu"), 3, 2)  # nW, N
    rows, cols = torch.meshgrid(torch.arange(12), torch.arange(12), indexing="ij")
    real = (rows < 7) & (cols < 10)
    expected = torch.zeros(24, 6, dtype=torch.bool)
    for i in range(12):
        for j in range(12):  # window (row, col) and in-window position, as the op's docstring defines them
            win = (i // 6 * 3 + i % 3) * 4 + (j // 6 * 2 + j % 2)
            expected[win, i % 6 // 3 * 3 + j % 6 // 2] = real[i, j]
    empty = ~expected.any(-1)
    assert empty.sum() == 8  # rows 7, 8, 10, 11 hold no real token: the windows at row offsets 1, 2 of block row 1
    torch.testing.assert_close(valid, expected | empty[:, None])


def test_dilated_window_mask_shape_counts_windows_of_the_padded_map():
    q, k, v = _qkv(1, 7, 7, 2, 4)
    # 7x7 in 2x2 windows with dilation 3: padded to 12x12, a 6x6 window grid
    out = window_attention(q, k, v, 2, dilation=3, mask=torch.zeros(36, 4, 4))
    assert out.shape == q.shape and torch.isfinite(out).all()
    with pytest.raises(ValueError, match=r"mask must be \[nW, N, N\] = \(36, 4, 4\).*dilation \(3, 3\)"):
        window_attention(q, k, v, 2, dilation=3, mask=torch.zeros(16, 4, 4))
    with pytest.raises(ValueError, match="dilation"):
        window_attention(q, k, v, 2, dilation=0)


# --- neighborhood attention --------------------------------------------------------------------------------------
NA_CASES = [((9, 11), (3, 3), (1, 1)), ((12, 10), (5, 3), (2, 3)), ((7, 7), (7, 7), (1, 1)), ((13, 8), (3, 5), (3, 1))]


@pytest.mark.parametrize("size,kernel,dilation", NA_CASES)
def test_neighborhood_reference_matches_definition(seed, size, kernel, dilation):
    q, k, v = _qkv(2, *size, 2, 4, dv=3)
    ref = neighborhood_attention(q, k, v, kernel, dilation=dilation, backend="reference")
    torch.testing.assert_close(ref, brute_neighborhood(q, k, v, kernel, dilation, 0.5), atol=1e-5, rtol=1e-5)


def test_neighborhood_full_kernel_is_global_attention(seed):
    q, k, v = _qkv(1, 5, 7, 2, 8)
    na = neighborhood_attention(q, k, v, (5, 7), backend="reference")
    torch.testing.assert_close(na, window_attention(q, k, v, (5, 7)), atol=1e-5, rtol=1e-5)


def test_neighborhood_rejects_kernel_larger_than_map():
    q, k, v = _qkv(1, 6, 6, 2, 4)
    with pytest.raises(ValueError, match=r"kernel_size \* dilation .* must be <= the map size"):
        neighborhood_attention(q, k, v, 3, dilation=3)
    with pytest.raises(ValueError, match="odd"):
        neighborhood_attention(q, k, v, 4)


@pytest.mark.skipif(not HAS_NATTEN, reason="natten not installed")
@pytest.mark.parametrize("size,kernel,dilation", NA_CASES)
def test_natten_forward_matches_reference(seed, size, kernel, dilation):
    q, k, v = _qkv(2, *size, 2, 8)
    ref = neighborhood_attention(q, k, v, kernel, dilation=dilation, backend="reference")
    out = neighborhood_attention(q, k, v, kernel, dilation=dilation, backend="natten")
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


@pytest.mark.skipif(not HAS_NATTEN, reason="natten not installed")
def test_natten_refuses_cpu_backward_with_reason_and_auto_falls_back(seed, caplog):
    q, k, v = _qkv(1, 8, 8, 2, 8, grad=True)
    with pytest.raises(BackendUnavailable, match="no backward"):
        neighborhood_attention(q, k, v, 3, backend="natten")
    NA_BACKENDS._logged.clear()
    with caplog.at_level(logging.INFO, logger="vitzoo.ops"):
        out = neighborhood_attention(q, k, v, 3)  # auto: natten refused, reference runs and trains
    assert "skipping backend 'natten'" in caplog.text and "no backward" in caplog.text
    out.sum().backward()
    assert q.grad is not None and torch.isfinite(q.grad).all()


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_NATTEN, reason="natten not installed")
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-4), (torch.float16, 2e-2), (torch.bfloat16, 5e-2)])
def test_natten_cuda_forward_backward_matches_reference(seed, dtype, tol):
    q, k, v = (t.cuda().detach().requires_grad_(True) for t in _qkv(2, 15, 17, 4, 32, dtype=dtype))
    grad_out = torch.randn(2, 15, 17, 4, 32, device="cuda", dtype=dtype)
    results = []
    for backend in ("natten", "reference"):
        out = neighborhood_attention(q, k, v, 7, dilation=2, backend=backend)
        out.backward(grad_out)
        results.append([out.detach().float()] + [t.grad.float() for t in (q, k, v)])
        for t in (q, k, v):
            t.grad = None
    for got, exp in zip(*results):
        torch.testing.assert_close(got, exp, atol=tol, rtol=tol)


# --- region-routed attention -------------------------------------------------------------------------------------
def brute_routed(q, k, v, n, topk, heads, scale):
    """Per query token: find its region, rank key regions by mean-q . mean-k, attend to the real tokens of the top-k."""
    b, h, w, c = q.shape
    rh, rw = -(-h // n), -(-w // n)
    regions = [
        [
            (i, j)
            for i in range(r // n * rh, min(h, r // n * rh + rh))
            for j in range(r % n * rw, min(w, r % n * rw + rw))
        ]
        for r in range(n * n)
    ]
    out = torch.zeros(b, h, w, v.shape[-1])
    for bi in range(b):
        means_q = [torch.stack([q[bi, i, j] for i, j in reg]).mean(0) if reg else torch.zeros(c) for reg in regions]
        means_k = [torch.stack([k[bi, i, j] for i, j in reg]).mean(0) if reg else None for reg in regions]
        for r, reg in enumerate(regions):
            scores = torch.tensor([float(means_q[r] @ mk) if mk is not None else float("-inf") for mk in means_k])
            chosen = scores.topk(topk).indices.tolist()
            keys = [t for s in chosen for t in regions[s]]
            kk = torch.stack([k[bi, i, j] for i, j in keys]).view(len(keys), heads, -1)
            vv = torch.stack([v[bi, i, j] for i, j in keys]).view(len(keys), heads, -1)
            for i, j in reg:
                qq = q[bi, i, j].view(heads, -1)
                attn = (torch.einsum("nd,knd->nk", qq, kk) * scale).softmax(-1)
                out[bi, i, j] = torch.einsum("nk,knd->nd", attn, vv).reshape(-1)
    return out


@pytest.mark.parametrize("size,n,topk", [((8, 8), 4, 3), ((14, 14), 7, 4), ((10, 7), 3, 2), ((5, 6), 4, 6)])
def test_routed_reference_matches_definition(seed, size, n, topk):
    q, k, v = _qkv(2, *size, 16, dv=8)
    ref = region_routed_attention(q, k, v, n, topk, 2, scale=0.25, backend="reference")
    torch.testing.assert_close(ref, brute_routed(q, k, v, n, topk, 2, 0.25), atol=1e-5, rtol=1e-5)


def test_routed_topk_all_regions_is_global_attention(seed):
    q, k, v = _qkv(1, 6, 6, 8)
    out = region_routed_attention(q, k, v, 3, 9, 2)
    as_heads = [t.view(1, 6, 6, 2, 4) for t in (q, k, v)]
    torch.testing.assert_close(out, window_attention(*as_heads, 6).reshape(1, 6, 6, 8), atol=1e-5, rtol=1e-5)


def test_routed_gradients_flow_to_q_k_v(seed):
    q, k, v = _qkv(1, 9, 7, 8, grad=True)
    region_routed_attention(q, k, v, 3, 2, 2).sum().backward()
    for t in (q, k, v):
        assert t.grad is not None and torch.isfinite(t.grad).all() and t.grad.abs().sum() > 0


@pytest.mark.parametrize(
    "args,match",
    [((3, 10, 2), "topk <= num_regions"), ((3, 2, 3), "divisible by num_heads"), ((0, 1, 2), "num_regions >= 1")],
)
def test_routed_bad_arguments(args, match):
    q, k, v = _qkv(1, 6, 6, 8)
    with pytest.raises(ValueError, match=match):
        region_routed_attention(q, k, v, *args)


@pytest.mark.parametrize("size, kernel, dilation", [((9, 11), (3, 5), 1), ((12, 10), 3, (2, 3)), ((14, 14), 7, 1)])
def test_flex_neighborhood_forward_matches_reference(seed, size, kernel, dilation):
    q, k, v = _qkv(2, *size, 2, 8, dv=12)
    ref = neighborhood_attention(q, k, v, kernel, dilation=dilation, backend="reference")
    out = neighborhood_attention(q, k, v, kernel, dilation=dilation, backend="flex")
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


def test_flex_neighborhood_is_inference_only_on_cpu(seed):
    q, k, v = _qkv(1, 8, 8, 2, 8, grad=True)
    assert "no backward on CPU" in NA_BACKENDS.available(q, k, v, (3, 3), dilation=(1, 1))["flex"]
    with torch.no_grad():
        assert NA_BACKENDS.available(q, k, v, (3, 3), dilation=(1, 1))["flex"] is None


@pytest.mark.gpu
@pytest.mark.parametrize("dtype, tol", [(torch.float32, 2e-4), (torch.bfloat16, 3e-2)])
def test_flex_neighborhood_cuda_forward_backward_matches_reference(seed, dtype, tol):
    q, k, v = (t.cuda() for t in _qkv(2, 28, 28, 2, 32, dtype=dtype))
    for t in (q, k, v):
        t.requires_grad_(True)
    results = []
    upstream = torch.randn(2, 28, 28, 2, 32, dtype=dtype, device="cuda")
    for backend in ("flex", "reference"):
        out = neighborhood_attention(q, k, v, 7, dilation=2, backend=backend)
        results.append((out, torch.autograd.grad(out, (q, k, v), upstream)))
    for got, want in zip([results[0][0], *results[0][1]], [results[1][0], *results[1][1]]):
        torch.testing.assert_close(got.float(), want.float(), atol=tol, rtol=tol)


@pytest.mark.parametrize(
    "size, window, dilation, extras",
    [((9, 11), (4, 3), (1, 1), "bias+mask"), ((10, 13), (3, 2), (2, 3), "bool"), ((8, 8), (8, 8), (1, 1), "")],
)
def test_flex_window_forward_matches_reference(seed, size, window, dilation, extras):
    heads, n = 2, window[0] * window[1]
    q, k, v = _qkv(2, *size, heads, 8, dv=12)
    n_win = (
        -(-size[0] // (window[0] * dilation[0]))
        * dilation[0]
        * (-(-size[1] // (window[1] * dilation[1])) * dilation[1])
    )
    bias = torch.randn(heads, n, n) if "bias" in extras else None
    mask = torch.randn(n_win, n, n) if "mask" in extras else None
    if "bool" in extras:
        mask = (torch.rand(n_win, n, n) > 0.3) | torch.eye(n, dtype=torch.bool)
    kwargs = dict(dilation=dilation, bias=bias, mask=mask, scale=0.4)
    ref = window_attention(q, k, v, window, backend="reference", **kwargs)
    torch.testing.assert_close(window_attention(q, k, v, window, backend="flex", **kwargs), ref, atol=1e-5, rtol=1e-5)


@pytest.mark.gpu
def test_flex_window_cuda_forward_backward_matches_reference(seed):
    q, k, v = (t.cuda().requires_grad_() for t in _qkv(2, 14, 14, 2, 32))
    bias = torch.randn(2, 49, 49, device="cuda", requires_grad=True)
    upstream = torch.randn(2, 14, 14, 2, 32, device="cuda")
    results = []
    for backend in ("flex", "reference"):
        out = window_attention(q, k, v, 7, bias=bias, backend=backend)
        results.append([out, *torch.autograd.grad(out, (q, k, v, bias), upstream)])
    for got, want in zip(*results):
        torch.testing.assert_close(got, want, atol=2e-4, rtol=2e-4)


# --- dispatch ----------------------------------------------------------------------------------------------------
def test_forcing_unknown_backend_names_the_valid_ones():
    q, k, v = _qkv(1, 4, 4, 1, 4)
    with pytest.raises(
        BackendUnavailable, match=r"unknown backend 'cudnn'.*\['triton', 'natten', 'flex', 'reference'\]"
    ):
        window_attention(q, k, v, 2, backend="cudnn")


@pytest.mark.skipif(not HAS_NATTEN, reason="natten not installed")
def test_env_switch_and_context_disable_natten(seed, monkeypatch):
    q, k, v = _qkv(1, 8, 8, 2, 8)
    assert NA_BACKENDS.available(q, k, v, (3, 3), dilation=(1, 1))["natten"] is None
    monkeypatch.setenv("VITZOO_DISABLE_NATTEN", "1")
    reason = NA_BACKENDS.available(q, k, v, (3, 3), dilation=(1, 1))["natten"]
    assert "VITZOO_DISABLE_NATTEN" in reason
    with pytest.raises(BackendUnavailable, match="disabled"):
        neighborhood_attention(q, k, v, 3, backend="natten")
    monkeypatch.delenv("VITZOO_DISABLE_NATTEN")
    with disable_backends("natten"):
        assert NA_BACKENDS.available(q, k, v, (3, 3), dilation=(1, 1))["natten"] is not None
    assert NA_BACKENDS.available(q, k, v, (3, 3), dilation=(1, 1))["natten"] is None


def test_reference_cannot_be_disabled(monkeypatch, seed):
    monkeypatch.setenv("VITZOO_DISABLE_REFERENCE", "1")
    q, k, v = _qkv(1, 4, 4, 1, 4)
    assert window_attention(q, k, v, 2).shape == (1, 4, 4, 1, 4)


@pytest.mark.skipif(not HAS_NATTEN, reason="natten not installed")
def test_use_backend_context_applies_to_ops_that_have_it(seed, monkeypatch):
    q, k, v = _qkv(1, 8, 8, 2, 8)
    calls = []
    natten_module = NA_BACKENDS._module("natten")
    monkeypatch.setattr(natten_module, "forward", lambda *a, **kw: calls.append(1) or torch.zeros(1))
    with use_backend("natten"):
        neighborhood_attention(q, k, v, 3)
        # routed attention has no natten backend: auto choice, no error
        region_routed_attention(q.flatten(3), k.flatten(3), v.flatten(3), 2, 1, 2)
    assert calls == [1]


def test_traced_adaptive_pooling_exports_to_onnx_and_matches_torch_at_every_size(seed, tmp_path):
    """Under a dynamic-shape trace the agent pooling runs as pooling matrices (the ONNX exporter cannot decompose
    adaptive pooling of a symbolic map): ONNX Runtime gives ``F.adaptive_avg_pool2d`` at sizes that divide and not."""
    onnxruntime = pytest.importorskip("onnxruntime")

    from vitzoo.ops import adaptive_avg_pool_hw

    class Pool(torch.nn.Module):
        def forward(self, x):
            return adaptive_avg_pool_hw(x, 3)

    dims = {2: torch.export.Dim("h", min=3, max=40) * 2, 3: torch.export.Dim("w", min=3, max=40) * 2}
    program = torch.export.export(Pool(), (torch.randn(2, 4, 14, 18),), dynamic_shapes={"x": dims})
    torch.onnx.export(program, f=str(tmp_path / "pool.onnx"), dynamo=True, verbose=False)
    session = onnxruntime.InferenceSession(str(tmp_path / "pool.onnx"), providers=["CPUExecutionProvider"])
    for size in [(14, 18), (6, 6), (24, 10), (62, 34)]:
        x = torch.randn(2, 4, *size)
        got = torch.from_numpy(session.run(None, {session.get_inputs()[0].name: x.numpy()})[0])
        torch.testing.assert_close(got, torch.nn.functional.adaptive_avg_pool2d(x, 3), atol=1e-6, rtol=1e-5)
