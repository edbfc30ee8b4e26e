"""sampled_window_attention (VSA): the reference against a per-slot bilinear definition and against window attention."""

import pytest
import torch

from vitzoo.ops import sampled_window_attention, window_attention


def _bilinear(t, y, x):
    """A ``[Hp, Wp, D]`` map read at the fractional pixel ``(y, x)``, zeros outside."""
    hp, wp = t.shape[:2]
    out = torch.zeros(t.shape[-1], dtype=t.dtype)
    y0, x0 = int(torch.floor(y)), int(torch.floor(x))
    for yy, wy in ((y0, 1 - (y - y0)), (y0 + 1, y - y0)):
        for xx, wx in ((x0, 1 - (x - x0)), (x0 + 1, x - x0)):
            if 0 <= yy < hp and 0 <= xx < wp:
                out = out + wy * wx * t[yy, xx]
    return out


def brute_sampled(q, k, v, ws, offsets, scales, scale, bias=None):
    """Slot by slot: the sampling point in pixels, a bilinear read of the zero-padded k / v, softmax attention."""
    b, h, w, heads, _ = q.shape
    hp, wp = -(-h // ws) * ws, -(-w // ws) * ws
    pad = torch.nn.functional.pad
    qp, kp, vp = (pad(t, (0, 0, 0, 0, 0, wp - w, 0, hp - h)) for t in (q, k, v))
    out = torch.zeros(b, hp, wp, heads, v.shape[-1], dtype=q.dtype)
    dx, dy = max(w // ws, 1), max(h // ws, 1)
    for bi in range(b):
        for n in range(heads):
            for i in range(hp // ws):
                for j in range(wp // ws):
                    keys, values = [], []
                    for u in range(ws):
                        for s in range(ws):
                            # normalised coordinate of this slot, then back to pixels of the padded map
                            gx = (
                                -1
                                + 2 * (j * ws + s) / (wp - 1)
                                + 2 * (s - (ws - 1) / 2) / (wp - 1) * scales[bi, n, 0, i, j]
                                + offsets[bi, n, 0, i, j] / dx
                            )
                            gy = (
                                -1
                                + 2 * (i * ws + u) / (hp - 1)
                                + 2 * (u - (ws - 1) / 2) / (hp - 1) * scales[bi, n, 1, i, j]
                                + offsets[bi, n, 1, i, j] / dy
                            )
                            px, py = (gx + 1) / 2 * (wp - 1), (gy + 1) / 2 * (hp - 1)
                            keys.append(_bilinear(kp[bi, :, :, n], py, px))
                            values.append(_bilinear(vp[bi, :, :, n], py, px))
                    keys, values = torch.stack(keys), torch.stack(values)  # N, D
                    queries = qp[bi, i * ws : (i + 1) * ws, j * ws : (j + 1) * ws, n].reshape(ws * ws, -1)
                    logits = scale * queries @ keys.T
                    if bias is not None:
                        logits = logits + bias[n]
                    res = logits.softmax(-1) @ values
                    out[bi, i * ws : (i + 1) * ws, j * ws : (j + 1) * ws, n] = res.view(ws, ws, -1)
    return out[:, :h, :w]


def _inputs(h, w, ws, heads=2, d=3, dv=2, grad=False):
    q, k = torch.randn(2, h, w, heads, d, dtype=torch.float64), torch.randn(2, h, w, heads, d, dtype=torch.float64)
    v = torch.randn(2, h, w, heads, dv, dtype=torch.float64)
    grid = (2, heads, 2, -(-h // ws), -(-w // ws))
    offsets, scales = torch.randn(grid, dtype=torch.float64) * 0.5, torch.randn(grid, dtype=torch.float64) * 0.5
    return [t.requires_grad_(grad) for t in (q, k, v, offsets, scales)]


@pytest.mark.parametrize("size,ws", [((6, 6), 3), ((7, 5), 3), ((4, 9), 2), ((2, 2), 3)])
def test_sampled_reference_matches_definition(seed, size, ws):
    q, k, v, offsets, scales = _inputs(*size, ws)
    bias = torch.randn(2, ws * ws, ws * ws, dtype=torch.float64)
    got = sampled_window_attention(q, k, v, ws, offsets, scales, bias=bias, scale=0.8)
    torch.testing.assert_close(got, brute_sampled(q, k, v, ws, offsets, scales, 0.8, bias), rtol=1e-9, atol=1e-9)


def test_sampled_gradients_match_definition_and_reach_the_window_regression(seed):
    q, k, v, offsets, scales = inputs = _inputs(5, 6, 3, grad=True)
    got = sampled_window_attention(q, k, v, 3, offsets, scales)
    expected = brute_sampled(q, k, v, 3, offsets, scales, 3**-0.5)
    weights = torch.randn_like(got)
    grads = torch.autograd.grad((got * weights).sum(), inputs)
    grads_ref = torch.autograd.grad((expected * weights).sum(), inputs)
    for a, b in zip(grads, grads_ref):
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-8)
    assert grads[3].abs().sum() > 0 and grads[4].abs().sum() > 0


@pytest.mark.parametrize("size", [(6, 9), (7, 8)])
def test_zero_scales_and_offsets_are_plain_window_attention_on_the_zero_padded_map(seed, size):
    q, k, v, offsets, scales = _inputs(*size, 3)
    bias = torch.randn(2, 9, 9, dtype=torch.float64)
    got = sampled_window_attention(q, k, v, 3, offsets * 0, scales * 0, bias=bias)
    pad = [(0, 0, 0, 0, 0, -size[1] % 3, 0, -size[0] % 3)]
    qp, kp, vp = (torch.nn.functional.pad(t, *pad) for t in (q, k, v))  # zeros that take part, as in VSA
    expected = window_attention(qp, kp, vp, 3, bias=bias)[:, : size[0], : size[1]]
    torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-9)


def test_an_offset_of_one_window_reads_the_neighbouring_window(seed):
    """offset_x = (W // ws) * ws * 2 / (Wp - 1) moves every sampled window exactly one window to the right."""
    ws, h, w = 2, 4, 6
    q, k, v, offsets, scales = _inputs(h, w, ws)
    offsets = torch.zeros_like(offsets)
    offsets[:, :, 0] = (w // ws) * ws * 2 / (w - 1)
    got = sampled_window_attention(q, k, v, ws, offsets, scales * 0)
    # queries of window column j attend to the keys of column j + 1; the last column reads zeros beyond the map
    shifted_k = torch.cat([k[:, :, ws:], torch.zeros_like(k[:, :, :ws])], dim=2)
    shifted_v = torch.cat([v[:, :, ws:], torch.zeros_like(v[:, :, :ws])], dim=2)
    expected = window_attention(q, shifted_k, shifted_v, ws)
    torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-9)


def test_sampled_bad_shapes_name_the_expected_ones():
    q, k, v, offsets, scales = _inputs(6, 6, 3)
    with pytest.raises(ValueError, match=r"offsets must be \[B, heads, 2, nH, nW\] = \(2, 2, 2, 2, 2\)"):
        sampled_window_attention(q, k, v, 3, offsets[..., :1], scales)
    with pytest.raises(ValueError, match=r"bias must be \[heads, N, N\] = \(2, 9, 9\)"):
        sampled_window_attention(q, k, v, 3, offsets, scales, bias=torch.zeros(2, 4, 4))
    with pytest.raises(ValueError, match="same shape"):
        sampled_window_attention(q, k[:, :5], v, 3, offsets, scales)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("batch", [1, 2])
def test_half_precision_on_cpu_is_finite_and_close_to_float32(seed, dtype, batch):
    """At batch 1 the per-head key / value map reaches grid_sample as a channels-last-strided view, the layout for
    which CPU bf16 grid_sample returns NaN; the reference samples in float32 for half inputs."""
    heads, d, size, ws = 3, 32, 28, 7
    q, k, v = (torch.randn(batch, size, size, heads, d) for _ in range(3))
    grid = (batch, heads, 2, size // ws, size // ws)
    offsets, scales = torch.randn(grid) * 0.5, torch.randn(grid) * 0.5
    bias = torch.randn(heads, ws * ws, ws * ws)
    expected = sampled_window_attention(q, k, v, ws, offsets, scales, bias=bias)
    half = [t.to(dtype) for t in (q, k, v, offsets, scales, bias)]
    got = sampled_window_attention(*half[:3], ws, *half[3:5], bias=half[5])
    assert got.dtype == dtype and torch.isfinite(got).all()
    error = (got.float() - expected).norm() / expected.norm()
    assert error < 0.02, f"relative L2 error {error:.4f} of {dtype} against float32"
