"""Swin's cyclic shift in ``window_attention``: against timm's shifted-window block and a float64 definition."""

import pytest
import torch
from timm.models.swin_transformer import SwinTransformerBlock

from vitzoo.ops import window_attention
from vitzoo.ops.window import BACKENDS as WINDOW_BACKENDS

BACKENDS = ["reference", "flex"]


def _qkv(b, h, w, heads, d, dv, dtype=torch.float32, grad=False):
    q, k = torch.randn(b, h, w, heads, d, dtype=dtype), torch.randn(b, h, w, heads, d, dtype=dtype)
    v = torch.randn(b, h, w, heads, dv, dtype=dtype)
    return [t.requires_grad_(grad) for t in (q, k, v)]


def _run(backend, *args, **kwargs):
    """Flex has no CPU backward: run it forward only there."""
    if backend == "flex" and not args[0].is_cuda:
        with torch.no_grad():
            return window_attention(*args, backend=backend, **kwargs)
    return window_attention(*args, backend=backend, **kwargs)


# --- the definition, written independently of the op ------------------------------------------------------------
def shifted_windows(q, k, v, window, shift, scale, bias=None, mask=None):
    """float64: roll the map by (-sh, -sw), attend per window among real tokens of one roll region, roll back.

    Windows are cut from the top-left of the rolled map (the last row / column of windows may be partial: the
    padding has no keys). Along H, rolled rows ``r >= H - sh`` wrapped around and form their own region (W alike).
    ``mask`` is indexed by the window of the rolled, padded map (row-major) and in-window positions.
    """
    q, k, v = (torch.roll(t.double(), shifts=(-shift[0], -shift[1]), dims=(1, 2)) for t in (q, k, v))
    b, h, w, heads, _ = q.shape
    (wh, ww), (sh, sw) = window, shift
    grid_w = -(-w // ww)
    out = torch.zeros(b, h, w, heads, v.shape[-1], dtype=torch.float64)
    for u in range(-(-h // wh)):
        for t in range(grid_w):
            tokens = [(r, c) for r in range(u * wh, min(h, u * wh + wh)) for c in range(t * ww, min(w, t * ww + ww))]
            rows, cols = torch.tensor([r for r, _ in tokens]), torch.tensor([c for _, c in tokens])
            pos = (rows - u * wh) * ww + (cols - t * ww)
            region = (rows >= h - sh).long() * int(sh > 0) * 2 + (cols >= w - sw).long() * int(sw > 0)
            logits = torch.einsum("bnhd,bmhd->bhnm", q[:, rows, cols], k[:, rows, cols]) * scale
            if bias is not None:
                logits = logits + bias.double()[:, pos][:, :, pos]
            if mask is not None:
                extra = mask[u * grid_w + t][pos][:, pos]
                if extra.dtype == torch.bool:
                    extra = torch.zeros(extra.shape, dtype=torch.float64).masked_fill(~extra, float("-inf"))
                logits = logits + extra.double()
            logits = logits.masked_fill(region[:, None] != region[None, :], float("-inf"))
            out[:, rows, cols] = torch.einsum("bhnm,bmhe->bnhe", logits.softmax(-1), v[:, rows, cols])
    return torch.roll(out, shifts=shift, dims=(1, 2))


def _n_windows(h, w, window):
    return -(-h // window[0]) * -(-w // window[1])


# (H, W), window, shift
CASES = [
    ((14, 14), (7, 7), (3, 3)),  # Swin's stage 3 at 224
    ((10, 13), (4, 4), (2, 2)),  # the window divides neither side
    ((9, 11), (4, 5), (1, 3)),  # non-square window and shift
    ((6, 12), (4, 4), (0, 2)),  # shifted along W only, H padded
    ((5, 12), (7, 4), (3, 1)),  # the window taller than the map
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("size,window,shift", CASES)
@pytest.mark.parametrize("extra", ["none", "bias", "bias+mask", "bool mask"])
def test_shift_matches_definition(seed, backend, size, window, shift, extra):
    q, k, v = _qkv(2, *size, 3, 8, dv=5)
    n = window[0] * window[1]
    bias = torch.randn(3, n, n) if "bias" in extra else None
    mask = None
    if extra == "bias+mask":
        mask = torch.randn(_n_windows(*size, window), n, n)
    elif extra == "bool mask":  # the diagonal kept, so no query loses every key
        mask = (torch.rand(_n_windows(*size, window), n, n) > 0.3) | torch.eye(n, dtype=torch.bool)
    got = _run(backend, q, k, v, window, shift=shift, bias=bias, mask=mask, scale=0.4)
    expected = shifted_windows(q, k, v, window, shift, 0.4, bias, mask)
    torch.testing.assert_close(got.double(), expected, atol=2e-5, rtol=1e-5)


@pytest.mark.parametrize("size,window,shift", CASES[:3])
def test_shift_gradients_match_definition(seed, size, window, shift):
    q, k, v = _qkv(2, *size, 2, 6, dv=4, grad=True)
    n = window[0] * window[1]
    bias = torch.randn(2, n, n, requires_grad=True)
    out = window_attention(q, k, v, window, shift=shift, bias=bias, backend="reference")
    cotangent = torch.randn_like(out)
    got = torch.autograd.grad(out, [q, k, v, bias], cotangent)
    expected = torch.autograd.grad(
        shifted_windows(q, k, v, window, shift, 6**-0.5, bias), [q, k, v, bias], cotangent.double()
    )
    for g, e in zip(got, expected):
        torch.testing.assert_close(g.double(), e.double(), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("size,window,shift", [CASES[1], CASES[3], CASES[4]])
def test_shift_triton_matches_definition(seed, size, window, shift):
    """The Triton kernel (in Triton's interpreter without a GPU), forward and backward, bias and mask."""
    q, k, v = _qkv(2, *size, 3, 8, dv=5, grad=True)
    n = window[0] * window[1]
    bias = torch.randn(3, n, n, requires_grad=True)
    mask = torch.randn(_n_windows(*size, window), n, n)
    reason = WINDOW_BACKENDS.why_not("triton", q, k, v, window, shift=shift, bias=bias, mask=mask, scale=0.4)
    if reason is not None:
        pytest.skip(reason)
    got = window_attention(q, k, v, window, shift=shift, bias=bias, mask=mask, scale=0.4, backend="triton")
    expected = shifted_windows(q, k, v, window, shift, 0.4, bias, mask)
    torch.testing.assert_close(got.double(), expected, atol=2e-5, rtol=1e-5)
    cotangent = torch.randn_like(got)
    grads = torch.autograd.grad(got, [q, k, v, bias], cotangent)
    for g, e in zip(grads, torch.autograd.grad(expected, [q, k, v, bias], cotangent.double())):
        torch.testing.assert_close(g.double(), e.double(), atol=2e-5, rtol=1e-5)


def test_shift_really_changes_the_windows(seed):
    """A guard on the tests above: rolling without the region mask, or not rolling, gives other numbers."""
    q, k, v = _qkv(1, 8, 8, 2, 4, dv=4)
    shifted = window_attention(q, k, v, 4, shift=2)
    rolled = [torch.roll(t, shifts=(-2, -2), dims=(1, 2)) for t in (q, k, v)]
    unmasked = torch.roll(window_attention(*rolled, 4), shifts=(2, 2), dims=(1, 2))
    assert not torch.allclose(shifted, unmasked, atol=1e-3)
    assert not torch.allclose(shifted, window_attention(q, k, v, 4), atol=1e-3)
    torch.testing.assert_close(window_attention(q, k, v, 4, shift=(2, 2)), shifted, rtol=0, atol=0)


# --- timm's Swin block ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    "size,window,shift", [((14, 14), 7, 3), ((8, 8), 4, 2), ((8, 12), 4, 2), ((8, 12), (4, 6), (2, 3))]
)
def test_shift_matches_timm_swin_block(seed, backend, size, window, shift):
    """timm's ``_attn``: roll, partition, attention with its relative bias and shift mask, reverse, roll back."""
    dim, heads = 48, 3
    block = SwinTransformerBlock(dim, size, heads, window_size=window, shift_size=shift).eval()
    assert any(block.shift_size) and block.attn_mask is not None
    with torch.no_grad():
        block.attn.relative_position_bias_table.normal_(0, 0.5)
    x = torch.randn(2, *size, dim)
    with torch.no_grad():
        expected = block._attn(x)
        qkv = block.attn.qkv(x).unflatten(-1, (3, heads, dim // heads))  # B, H, W, 3, heads, D
        q, k, v = qkv.unbind(3)
        bias = block.attn._get_rel_pos_bias()[0]  # heads, N, N
        out = window_attention(q, k, v, block.window_size, shift=block.shift_size, bias=bias, backend=backend)
        got = block.attn.proj(out.flatten(-2))
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


# --- arguments -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(window_size=4, shift=4), r"0 <= shift < window"),
        (dict(window_size=(4, 3), shift=(1, 3)), r"0 <= shift < window .*along W: 3"),
        (dict(window_size=4, shift=(-1, 0)), r"0 <= shift < window"),
        (dict(window_size=4, shift=(1, 2, 3)), "int or a pair of ints"),
        (dict(window_size=4, shift=1.5), "int or a pair of ints"),
        (dict(window_size=2, dilation=2, shift=1), "not defined with dilation"),
        (dict(window_size=(8, 4), shift=(6, 0)), "along H needs a map side larger than it, got 6x9"),
    ],
)
def test_shift_bad_arguments(kwargs, match):
    q, k, v = _qkv(1, 6, 9, 2, 4, dv=4)
    with pytest.raises(ValueError, match=match):
        window_attention(q, k, v, **kwargs)


def test_shift_keeps_the_mask_shape_of_the_padded_grid():
    q, k, v = _qkv(1, 10, 13, 2, 4, dv=4)
    out = window_attention(q, k, v, 4, shift=2, mask=torch.zeros(12, 16, 16))  # 3 x 4 windows of the 12x16 grid
    assert out.shape == q.shape and torch.isfinite(out).all()
    with pytest.raises(ValueError, match=r"mask must be \[nW, N, N\] = \(12, 16, 16\)"):
        window_attention(q, k, v, 4, shift=2, mask=torch.zeros(9, 16, 16))


@pytest.mark.gpu
@pytest.mark.parametrize("size,window,shift", CASES[:3])
def test_shift_cuda_backends_forward_backward(seed, size, window, shift):
    q, k, v = (t.cuda().requires_grad_() for t in _qkv(2, *size, 2, 16, dv=8))
    n = window[0] * window[1]
    bias = torch.randn(2, n, n, device="cuda")
    cotangent = torch.randn(2, *size, 2, 8, device="cuda")
    results = {}
    for backend in ("reference", "flex", "triton"):
        out = window_attention(q, k, v, window, shift=shift, bias=bias, backend=backend)
        results[backend] = (out, *torch.autograd.grad(out, [q, k, v], cotangent))
    for backend in ("flex", "triton"):
        for got, ref in zip(results[backend], results["reference"]):
            torch.testing.assert_close(got, ref, atol=2e-3, rtol=2e-3, msg=lambda m, b=backend: f"{b}: {m}")


@pytest.mark.parametrize("shift", [(3, 3), (0, 3)])
def test_a_trace_at_a_one_window_map_serves_maps_of_more_windows(seed, shift):
    """Traced with symbolic sizes at one 7x7 window, the shifted op's program computes the definition at larger and
    non-square maps too (under tracing its window grid grows by a window of masked padding)."""
    from dynamic_trace import export_once

    def attend(x):
        q, k, v = x.unbind(3)
        return window_attention(q, k, v, (7, 7), shift=shift)

    program = export_once(attend, torch.randn(2, 7, 7, 3, 2, 4), {1: (7, 32), 2: (7, 32)})
    for size in [(7, 7), (7, 9), (10, 13), (14, 14)]:
        x = torch.randn(2, *size, 3, 2, 4)
        want = shifted_windows(*x.unbind(3), (7, 7), shift, 0.5).float()
        torch.testing.assert_close(program(x), want, atol=1e-5, rtol=1e-5)
