"""agent_attention and linear_attention: references against explicit definitions, gradients, half precision."""

import pytest
import torch

from vitzoo.layers.rope import apply_rope, rope_2d_tables
from vitzoo.ops import agent_attention, linear_attention, magnitude_aware_linear_attention

F64 = torch.float64


# --- agent attention --------------------------------------------------------------------------------------------
def brute_agent(q, k, v, agents, scale, agent_bias=None, query_bias=None):
    logits = scale * agents @ k.transpose(-1, -2) + (0 if agent_bias is None else agent_bias)
    agent_v = logits.softmax(-1) @ v
    logits = scale * q @ agents.transpose(-1, -2) + (0 if query_bias is None else query_bias)
    return logits.softmax(-1) @ agent_v


def _agent_inputs(b=2, heads=3, n=20, m=20, a=4, d=8, dv=5, dtype=F64, grad=False):
    ts = [torch.randn(b, heads, n, d), torch.randn(b, heads, m, d), torch.randn(b, heads, m, dv)]
    ts.append(torch.randn(b, heads, a, d))
    return [t.to(dtype).requires_grad_(grad) for t in ts]


@pytest.mark.parametrize("per_sample_bias", [False, True])
def test_agent_reference_matches_definition(seed, per_sample_bias):
    q, k, v, agents = _agent_inputs(n=20, m=17)
    lead = (2,) if per_sample_bias else ()
    agent_bias, query_bias = torch.randn(*lead, 3, 4, 17, dtype=F64), torch.randn(*lead, 3, 20, 4, dtype=F64)
    got = agent_attention(q, k, v, agents, agent_bias=agent_bias, query_bias=query_bias, scale=0.3)
    expected = brute_agent(q, k, v, agents, 0.3, agent_bias, query_bias)
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)


def test_agent_gradients_match_definition(seed):
    inputs = _agent_inputs(grad=True)
    bias = torch.randn(1, 4, 20, dtype=F64, requires_grad=True)
    got = agent_attention(*inputs, agent_bias=bias)
    expected = brute_agent(*inputs, 8**-0.5, bias)
    w = torch.randn_like(got)
    for a, b in zip(
        torch.autograd.grad((got * w).sum(), [*inputs, bias]),
        torch.autograd.grad((expected * w).sum(), [*inputs, bias]),
    ):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("dtype,tol", [(torch.bfloat16, 3e-2), (torch.float16, 5e-3)])
def test_agent_half_precision_stays_close_to_float32(seed, dtype, tol):
    q, k, v, agents = _agent_inputs(n=3136, m=3136, a=9, d=32, dv=32, dtype=torch.float32)
    ref = agent_attention(q, k, v, agents)
    got = agent_attention(*(t.to(dtype) for t in (q, k, v, agents))).float()
    assert torch.isfinite(got).all()
    assert (got - ref).abs().max() <= tol * ref.abs().max()


def test_agent_bad_shapes_name_the_expected_ones():
    q, k, v, agents = _agent_inputs()
    with pytest.raises(ValueError, match=r"agents must be \[B, heads, A, D\]"):
        agent_attention(q, k, v, agents[..., :4])
    with pytest.raises(ValueError, match=r"query_bias must be \[heads \| 1, 20, 4\]"):
        agent_attention(q, k, v, agents, query_bias=torch.zeros(3, 4, 20, dtype=F64))


# --- linear attention -------------------------------------------------------------------------------------------
def brute_divide(q, k, v, eps):
    """Kernelised attention written as normalised weights: w_ij = q_i . k_j / sum_j (q_i . k_j)."""
    weights = q @ k.transpose(-1, -2)  # B, heads, N, M
    m = k.shape[2]
    return (weights / m) @ v / (weights.mean(-1, keepdim=True) + eps)


def brute_injective(q, k, v, scale):
    """InLine's published form: weights s * q_i . k_j / M + (1 - s * q_i . mean(k)) / M, which sum to one."""
    m = k.shape[2]
    weights = scale * q @ k.transpose(-1, -2) / m
    weights = weights + (1 - scale * q @ k.mean(2, keepdim=True).transpose(-1, -2)) / m
    assert torch.allclose(weights.sum(-1), torch.ones_like(weights.sum(-1)))
    return weights @ v


def _features(b=2, heads=2, n=30, m=30, d=6, dv=4, dtype=F64, grad=False, positive=True):
    q, k, v = torch.randn(b, heads, n, d), torch.randn(b, heads, m, d), torch.randn(b, heads, m, dv)
    if positive:
        q, k = q.relu() + 0.1, k.relu() + 0.1
    return [t.to(dtype).requires_grad_(grad) for t in (q, k, v)]


def test_divide_normalization_matches_weights_definition(seed):
    q, k, v = _features(n=30, m=23)
    got = linear_attention(q, k, v, normalization="divide", eps=1e-3)
    torch.testing.assert_close(got, brute_divide(q, k, v, 1e-3), rtol=1e-10, atol=1e-10)


def test_injective_normalization_matches_inlines_form(seed):
    q, k, v = _features(positive=False)
    got = linear_attention(q, k, v, normalization="injective", scale=0.4)
    torch.testing.assert_close(got, brute_injective(q, k, v, 0.4), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("normalization", ["divide", "injective"])
def test_linear_gradients_match_definition(seed, normalization):
    inputs = _features(grad=True)
    got = linear_attention(*inputs, normalization=normalization)
    expected = brute_divide(*inputs, 1e-6) if normalization == "divide" else brute_injective(*inputs, 6**-0.5)
    w = torch.randn_like(got)
    for a, b in zip(torch.autograd.grad((got * w).sum(), inputs), torch.autograd.grad((expected * w).sum(), inputs)):
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-8)


def _focused_stage1_features(dtype):
    """FLatten-like activations at Swin-T stage 1 (3136 tokens): cubed ReLU features rescaled to the input norm."""
    x = torch.randn(2, 3, 3136, 32) * 3
    f = x.relu() + 1e-6
    f = f**3 * (f.norm(dim=-1, keepdim=True) / (f**3).norm(dim=-1, keepdim=True))
    return f.to(dtype)


@pytest.mark.parametrize("normalization", ["divide", "injective"])
@pytest.mark.parametrize("dtype,tol", [(torch.bfloat16, 3e-2), (torch.float16, 5e-3)])
def test_linear_half_precision_stays_close_to_float32(seed, normalization, dtype, tol):
    q, k = _focused_stage1_features(torch.float32), _focused_stage1_features(torch.float32)
    v = torch.randn(2, 3, 3136, 32) * 3
    ref = linear_attention(q, k, v, normalization=normalization)
    got = linear_attention(q.to(dtype), k.to(dtype), v.to(dtype), normalization=normalization)
    assert got.dtype == dtype and torch.isfinite(got).all()
    assert (got.float() - ref).abs().max() <= tol * ref.abs().max()


def test_float16_sums_that_overflow_stay_finite(seed):
    """3136 tokens of size ~30: k^T v summed in float16 overflows (65504); the op accumulates in float32."""
    q = torch.rand(1, 1, 3136, 16) + 0.5
    k, v = torch.rand(1, 1, 3136, 16) * 30 + 10, torch.rand(1, 1, 3136, 8) * 30 + 10
    naive = k.half().transpose(-1, -2) @ v.half()
    assert not torch.isfinite(naive).all()  # the hazard is real at these magnitudes
    got = linear_attention(q.half(), k.half(), v.half())
    ref = linear_attention(q, k, v)
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got.float(), ref, rtol=5e-3, atol=5e-3)


def test_linear_bad_arguments():
    q, k, v = _features()
    with pytest.raises(ValueError, match="normalization must be one of"):
        linear_attention(q, k, v, normalization="softmax")
    with pytest.raises(ValueError, match=r"need q \[B, heads, N, D\], k \[B, heads, M, D\]"):
        linear_attention(q, k[..., :3], v)


# --- magnitude-aware linear attention ------------------------------------------------------------------------------
def brute_mala(q, k, v, scale, sin, cos, eps=1e-6):
    """MALA as explicit per-pair weights: beta_i * (s / N) <R q_i, R k_j> - z_i / N, z from un-rotated features."""
    n = k.shape[2]
    z = scale * q @ k.mean(2, keepdim=True).transpose(-1, -2)  # B, heads, N, 1
    rq, rk = apply_rope(q, sin, cos), apply_rope(k, sin, cos)
    weights = (1 + 1 / (z + eps)) * (scale / n) * (rq @ rk.transpose(-1, -2)) - z / n
    return weights @ v


def test_mala_reference_matches_weights_definition(seed):
    q, k, v = _features(n=20, m=20, d=8, dv=5)
    sin, cos = rope_2d_tables(4, 5, 8, dtype=F64)
    got = magnitude_aware_linear_attention(q, k, v, rope=(sin, cos), scale=0.5)
    torch.testing.assert_close(got, brute_mala(q, k, v, 0.5, sin, cos), rtol=1e-10, atol=1e-10)


def test_mala_keeps_the_query_magnitude_that_plain_linear_attention_drops(seed):
    """Scaling a query changes MALA's output (the paper's point) but not the divide-normalised one."""
    q, k, v = _features(n=16, m=16, d=8)
    q2 = q.clone()
    q2[:, :, 0] *= 4
    plain = linear_attention(q, k, v), linear_attention(q2, k, v)
    torch.testing.assert_close(plain[0][:, :, 0], plain[1][:, :, 0], rtol=1e-6, atol=1e-6)
    mala = magnitude_aware_linear_attention(q, k, v), magnitude_aware_linear_attention(q2, k, v)
    assert not torch.allclose(mala[0][:, :, 0], mala[1][:, :, 0], rtol=1e-3, atol=1e-3)


def test_mala_gradients_match_definition(seed):
    q, k, v = inputs = _features(n=12, m=12, d=8, grad=True)
    sin, cos = rope_2d_tables(3, 4, 8, dtype=F64)
    got = magnitude_aware_linear_attention(q, k, v, rope=(sin, cos))
    expected = brute_mala(q, k, v, 8**-0.5, sin, cos)
    w = torch.randn_like(got)
    for a, b in zip(torch.autograd.grad((got * w).sum(), inputs), torch.autograd.grad((expected * w).sum(), inputs)):
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize("dtype,tol", [(torch.bfloat16, 3e-2), (torch.float16, 5e-3)])
def test_mala_half_precision_stays_close_to_float32(seed, dtype, tol):
    x = torch.randn(2, 1, 3136, 64) * 2  # MAViT stage 1: one 64-wide head over 56x56 tokens
    q, k, v = torch.nn.functional.elu(x) + 1, torch.nn.functional.elu(x.roll(7, 2)) + 1, torch.randn(2, 1, 3136, 64)
    rope = rope_2d_tables(56, 56, 64)
    ref = magnitude_aware_linear_attention(q, k, v, rope=rope)
    got = magnitude_aware_linear_attention(q.to(dtype), k.to(dtype), v.to(dtype), rope=tuple(t.to(dtype) for t in rope))
    assert got.dtype == dtype and torch.isfinite(got).all()
    assert (got.float() - ref).abs().max() <= tol * ref.abs().max()


def test_rope_logits_depend_only_on_relative_position(seed):
    """<R_p q, R_p' k> is unchanged when both positions move by the same offset, along rows and columns."""
    sin, cos = rope_2d_tables(6, 7, 8, dtype=F64)
    q, k = torch.randn(8, dtype=F64), torch.randn(8, dtype=F64)

    def logit(p, p2):
        i, j = p[0] * 7 + p[1], p2[0] * 7 + p2[1]
        return apply_rope(q, sin[i], cos[i]) @ apply_rope(k, sin[j], cos[j])

    torch.testing.assert_close(logit((0, 1), (2, 3)), logit((3, 4), (5, 6)))
    assert not torch.allclose(logit((0, 1), (2, 3)), logit((0, 1), (3, 2)))
