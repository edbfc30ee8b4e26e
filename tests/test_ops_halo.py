"""halo_attention: the reference against a per-query definition and against timm's independent ``HaloAttn``."""

import pytest
import torch
from timm.layers.halo_attn import HaloAttn

from vitzoo.ops import halo_attention


def brute_halo(q, k, v, block, halo, stride, scale, rel_pos=None, mask_padding=True):
    """One query at a time: the keys of its block grown by ``halo``; outside the map masked or zero vectors."""
    b, h, w, heads, _ = k.shape
    win = block + 2 * halo
    out = torch.zeros(*q.shape[:4], v.shape[-1], dtype=q.dtype)
    for i in range(q.shape[1]):
        for j in range(q.shape[2]):
            y, x = stride * i, stride * j  # the query's pixel on the key map
            top, left = y // block * block - halo, x // block * block - halo
            logits, values = [], []
            for ky in range(top, top + win):
                for kx in range(left, left + win):
                    inside = 0 <= ky < h and 0 <= kx < w
                    if not inside and mask_padding:
                        continue
                    key = k[:, ky, kx] if inside else torch.zeros_like(k[:, 0, 0])
                    logit = scale * (q[:, i, j] * key).sum(-1)  # B, heads
                    if rel_pos is not None:
                        rel_h, rel_w = rel_pos
                        logit = logit + (q[:, i, j] * rel_h[..., ky - y + win - 1, :]).sum(-1)
                        logit = logit + (q[:, i, j] * rel_w[..., kx - x + win - 1, :]).sum(-1)
                    logits.append(logit)
                    values.append(v[:, ky, kx] if inside else torch.zeros_like(v[:, 0, 0]))
            attn = torch.stack(logits, -1).softmax(-1)  # B, heads, N
            out[:, i, j] = torch.einsum("bhn,bnhd->bhd", attn, torch.stack(values, 1))
    return out


def _inputs(h, w, stride, heads=2, d=4, dv=3, dtype=torch.float64, grad=False):
    k = torch.randn(2, h, w, heads, d, dtype=dtype)
    v = torch.randn(2, h, w, heads, dv, dtype=dtype)
    q = torch.randn(2, -(-h // stride), -(-w // stride), heads, d, dtype=dtype)
    return [t.requires_grad_(grad) for t in (q, k, v)]


def _tables(block, halo, heads, d, per_head, dtype=torch.float64, grad=False):
    rows = 2 * (block + 2 * halo) - 1
    shape = (heads, rows, d) if per_head else (rows, d)
    return tuple(torch.randn(shape, dtype=dtype).requires_grad_(grad) for _ in range(2))


@pytest.mark.parametrize(
    "size,block,halo,stride,per_head,mask_padding",
    [
        ((16, 16), 8, 3, 1, False, False),  # HaloNet's b=8, h=3 on a divisible map, timm's zero-padded halo
        ((13, 10), 4, 2, 1, True, True),  # bottom/right padding, per-head tables, masked
        ((12, 9), 4, 1, 2, False, True),  # strided queries with padding
        ((11, 7), 4, 0, 2, True, False),  # no halo: plain blocks
        ((5, 6), 8, 2, 2, False, False),  # one block larger than the map
    ],
)
def test_halo_reference_matches_definition(seed, size, block, halo, stride, per_head, mask_padding):
    q, k, v = _inputs(*size, stride)
    rel = _tables(block, halo, 2, 4, per_head)
    expected = brute_halo(q, k, v, block, halo, stride, 0.7, rel, mask_padding)
    got = halo_attention(q, k, v, block, halo, query_stride=stride, rel_pos=rel, mask_padding=mask_padding, scale=0.7)
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("mask_padding", [True, False])
def test_halo_gradients_match_definition(seed, mask_padding):
    q, k, v = _inputs(9, 7, 2, grad=True)
    rel = _tables(4, 2, 2, 4, False, grad=True)
    inputs = (q, k, v, *rel)
    got = halo_attention(q, k, v, 4, 2, query_stride=2, rel_pos=rel, mask_padding=mask_padding)
    expected = brute_halo(q, k, v, 4, 2, 2, 0.5, rel, mask_padding)
    weights = torch.randn_like(got)
    grads = torch.autograd.grad((got * weights).sum(), inputs)
    grads_ref = torch.autograd.grad((expected * weights).sum(), inputs)
    for a, b in zip(grads, grads_ref):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)


def test_halo_without_position_term_and_default_scale(seed):
    q, k, v = _inputs(8, 8, 1)
    expected = brute_halo(q, k, v, 4, 1, 1, 4**-0.5)
    torch.testing.assert_close(halo_attention(q, k, v, 4, 1), expected, rtol=1e-10, atol=1e-10)


def test_halo_masked_border_keys_do_not_matter_unmasked_ones_do(seed):
    """Masked: a query at a border sees only real keys; unmasked: its zero keys shift the softmax."""
    q, k, v = _inputs(8, 8, 1)
    masked = halo_attention(q, k, v, 4, 2, mask_padding=True)
    unmasked = halo_attention(q, k, v, 4, 2, mask_padding=False)
    assert not torch.allclose(masked[:, 0, 0], unmasked[:, 0, 0])


def test_halo_matches_timm_halo_attn(seed):
    """timm's HaloAttn is an independent implementation of the same layer (stride 1, zero-padded halo).

    Its relative tables are indexed from the block corner instead of the query pixel: row ``r + halo`` of timm's
    table is our row ``r``.
    """
    heads, block, halo = 4, 8, 3
    attn = HaloAttn(32, dim_out=48, num_heads=heads, block_size=block, halo_size=halo).eval()
    x = torch.randn(2, 32, 16, 24)
    with torch.no_grad():
        expected = attn(x)
        dk = attn.dim_head_qk
        kv = attn.kv(x).view(2, heads, dk + 12, 16, 24)  # timm interleaves k and v per head
        q = attn.q(x).view(2, heads, dk, 16, 24).permute(0, 3, 4, 1, 2)  # B, H, W, heads, D
        k, v = (t.permute(0, 3, 4, 1, 2) for t in kv.split([dk, 12], dim=2))
        rel = (attn.pos_embed.height_rel.roll(-halo, 0), attn.pos_embed.width_rel.roll(-halo, 0))
        out = halo_attention(q, k, v, block, halo, rel_pos=rel, mask_padding=False, scale=attn.scale)
    torch.testing.assert_close(out.flatten(3).permute(0, 3, 1, 2), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(block_size=4, halo_size=1, query_stride=3), "query_stride >= 1 dividing block_size"),
        (dict(block_size=0, halo_size=1), "block_size >= 1"),
        (dict(block_size=4, halo_size=-1), "halo_size >= 0"),
    ],
)
def test_halo_bad_arguments(kwargs, match):
    q, k, v = _inputs(8, 8, 1, dtype=torch.float32)
    with pytest.raises(ValueError, match=match):
        halo_attention(q, k, v, **kwargs)


def test_halo_bad_shapes_name_the_expected_ones():
    q, k, v = _inputs(8, 8, 1, dtype=torch.float32)
    with pytest.raises(ValueError, match=r"query_stride=2, q must be \(2, 4, 4, 2, 4\)"):
        halo_attention(q, k, v, 4, 1, query_stride=2)
    with pytest.raises(ValueError, match=r"rel_h must be \[2 \* win - 1, D\] = \(11, 4\)"):
        halo_attention(q, k, v, 4, 1, rel_pos=(torch.zeros(9, 4), torch.zeros(11, 4)))
    with pytest.raises(ValueError, match="laid out"):
        halo_attention(q[0], k, v, 4, 1)


def test_a_dynamic_shape_trace_pads_a_one_block_axis_without_changing_the_output(seed):
    """With symbolic sizes the traced op adds a block of padding along a one-block axis (see the reference); the
    output is still the per-query definition's, masked and unmasked."""
    q, k, v = (torch.randn(2, 6, 11, 2, 4) for _ in range(3))  # one 8-block along H
    torch._dynamo.reset()
    for mask_padding in (True, False):
        traced = torch.compile(
            lambda q, k, v, mask_padding=mask_padding: halo_attention(q, k, v, 8, 2, mask_padding=mask_padding),
            dynamic=True,
            fullgraph=True,
            backend="eager",
        )
        want = brute_halo(q, k, v, 8, 2, 1, 0.5, mask_padding=mask_padding)
        torch.testing.assert_close(traced(q, k, v), want, atol=1e-5, rtol=1e-5)


class _HaloCall(torch.nn.Module):
    """Queries, keys and values from one ``[B, H, W, 3, heads, D]`` map (queries subsampled as HaloNet's strided
    1x1 conv does), attended with HaloNet's settings: zero-padded halo, relative tables."""

    def __init__(self, block: int, halo: int, stride: int):
        super().__init__()
        self.block, self.halo, self.stride = block, halo, stride
        self.rel = torch.nn.ParameterList(_tables(block, halo, 2, 4, False, dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = x.unbind(3)
        q = q[:, :: self.stride, :: self.stride]
        rel = (self.rel[0], self.rel[1])
        return halo_attention(q, k, v, self.block, self.halo, self.stride, rel_pos=rel, mask_padding=False, scale=0.5)


@pytest.mark.parametrize("size, block, halo, stride", [((8, 8), 8, 3, 1), ((8, 12), 8, 2, 2)])
def test_a_dynamic_shape_trace_equals_the_definition_at_every_size(size, block, halo, stride, seed):
    """One ``torch.export`` program of the op (what a dynamic ``vitzoo export`` of HaloNet holds), traced where the
    map is one block tall, gives the per-query definition there and at larger and padded sizes."""
    from dynamic_trace import export_once

    call = _HaloCall(block, halo, stride)
    program = export_once(call, torch.randn(2, *size, 3, 2, 4), {1: (8, 64), 2: (8, 64)})
    for h, w in [size, (size[0] + 8, size[1]), (size[0] + 5, size[1] + 9)]:
        x = torch.randn(2, h, w, 3, 2, 4)
        q, k, v = x.unbind(3)
        want = brute_halo(q[:, ::stride, ::stride], k, v, block, halo, stride, 0.5, tuple(call.rel), False)
        torch.testing.assert_close(program(x), want, atol=1e-5, rtol=1e-5, msg=f"at {h}x{w}")
