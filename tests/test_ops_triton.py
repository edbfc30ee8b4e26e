"""Triton kernels against the reference backends: forward and backward, fresh random inputs, padded and non-square.

Without a GPU the kernels run in Triton's interpreter (``TRITON_INTERPRET=1``, set in conftest), which is slow per
program, so shapes stay small; they still cover multi-tile windows, padding, dilation, bias and masks. Every output
buffer starts as NaN (``_triton.POISON``) so an element a kernel fails to write fails the comparison.
"""

from __future__ import annotations

import importlib
import logging

import pytest
import torch

from vitzoo.ops import _triton, halo_attention, region_routed_attention, use_backend, window_attention
from vitzoo.ops._common import padded_size
from vitzoo.ops.window import BACKENDS as WINDOW_BACKENDS

ON_GPU = torch.cuda.is_available()
DEVICE = "cuda" if ON_GPU else "cpu"


@pytest.fixture(autouse=True)
def poison_outputs(monkeypatch):
    monkeypatch.setattr(_triton, "POISON", True)


def assert_close(got, want, tol):
    assert got.dtype == want.dtype and got.shape == want.shape
    assert torch.isfinite(got).all(), "non-finite values: an element was left unwritten or overflowed"
    torch.testing.assert_close(got.float(), want.float(), atol=tol, rtol=tol)


def compare(op, inputs, grads_of, tol, **kwargs):
    """Run ``op`` on both backends with one upstream gradient; compare outputs and the gradients of ``grads_of``."""
    results = []
    upstream = None
    for backend in ("reference", "triton"):
        out = op(*inputs, backend=backend, **kwargs)
        upstream = torch.randn_like(out) if upstream is None else upstream
        grads = torch.autograd.grad(out, grads_of, upstream) if grads_of else ()
        results.append((out, grads))
    (ref_out, ref_grads), (out, grads) = results
    assert_close(out, ref_out, tol)
    for got, want in zip(grads, ref_grads):
        assert_close(got, want, tol)


def qkv(b, h, w, heads, d, dv=None, dtype=torch.float32, grad=True):
    tensors = [torch.randn(b, h, w, heads, size, dtype=dtype, device=DEVICE) for size in (d, d, dv or d)]
    return [t.requires_grad_(grad) for t in tensors]


def n_windows(h, w, window, dilation):
    return padded_size(h, window[0] * dilation[0]) // window[0] * (padded_size(w, window[1] * dilation[1]) // window[1])


# --- window attention ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "size, window, dilation, extras",
    [
        ((7, 7), (7, 7), (1, 1), "bias"),  # one Swin window, rel-pos bias with gradient
        ((9, 11), (4, 3), (1, 1), "mask"),  # padded bottom/right, non-square, float mask
        ((10, 13), (3, 2), (2, 3), "bias+bool"),  # dilated (CrossFormer LDA), padding-only windows, bool mask
        ((2, 40), (1, 40), (1, 1), ""),  # a CSWin-like stripe longer than one 32-token tile
        ((9, 9), (9, 9), (1, 1), "bias"),  # 81 tokens: two key tiles, dQ and dbias accumulated atomically
    ],
)
def test_window_triton_matches_reference(seed, size, window, dilation, extras):
    heads, n = 2, window[0] * window[1]
    q, k, v = qkv(1, *size, heads, 8, dv=12)
    bias = torch.randn(heads, n, n, device=DEVICE, requires_grad=True) if "bias" in extras else None
    mask = None
    if "mask" in extras:
        mask = torch.randn(n_windows(*size, window, dilation), n, n, device=DEVICE)
    elif "bool" in extras:
        mask = torch.rand(n_windows(*size, window, dilation), n, n, device=DEVICE) > 0.3
        mask |= torch.eye(n, dtype=torch.bool, device=DEVICE)  # every query keeps at least itself
    grads_of = [q, k, v] + ([bias] if bias is not None else [])
    compare(window_attention, (q, k, v, window), grads_of, 1e-4, dilation=dilation, bias=bias, mask=mask, scale=0.4)


def test_window_triton_reads_strided_qkv_views(seed):
    """q, k, v sliced out of one qkv projection (the models' layout) are read in place, not copied first."""
    qkv_proj = torch.randn(1, 6, 5, 3, 2, 8, device=DEVICE, requires_grad=True)
    q, k, v = qkv_proj.unbind(3)
    assert not q.is_contiguous()
    compare(window_attention, (q, k, v, (3, 5)), [qkv_proj], 1e-4)


def test_window_triton_half_precision(seed):
    q, k, v = qkv(1, 8, 8, 2, 16, dtype=torch.float16)
    bias = torch.randn(2, 16, 16, device=DEVICE, requires_grad=True)
    compare(window_attention, (q, k, v, 4), [q, k, v, bias], 2e-3, bias=bias)


def test_window_triton_is_never_auto_selected_in_the_interpreter(seed, caplog, monkeypatch):
    if ON_GPU:
        pytest.skip("on a GPU automatic choice does pick Triton")
    monkeypatch.setattr(WINDOW_BACKENDS, "_logged", set())  # each reason is logged once per process
    q, k, v = qkv(1, 4, 4, 1, 8, grad=False)
    assert WINDOW_BACKENDS.available(q, k, v, (2, 2))["triton"] is None  # forced, it runs
    with caplog.at_level(logging.INFO, logger="vitzoo.ops"):
        window_attention(q, k, v, 2)
    assert "skipping backend 'triton'" in caplog.text and "interpreter" in caplog.text


def test_window_triton_refuses_bfloat16_in_the_interpreter():
    if ON_GPU:
        pytest.skip("bfloat16 runs on a GPU")
    q, k, v = qkv(1, 4, 4, 1, 8, dtype=torch.bfloat16, grad=False)
    assert "bfloat16" in WINDOW_BACKENDS.available(q, k, v, (2, 2))["triton"]


def test_window_triton_compiles_as_one_custom_op(seed):
    q, k, v = qkv(1, 6, 6, 2, 8)

    def loss(q, k, v):
        return (window_attention(q * 2, k, v, 3, backend="triton") ** 2).sum()

    compiled = torch.compile(loss, fullgraph=True, backend="aot_eager")
    got = torch.autograd.grad(compiled(q, k, v), [q, k, v])
    want = torch.autograd.grad(loss(q, k, v), [q, k, v])
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w)


def test_window_custom_ops_pass_torch_library_checks(seed):
    q, k, v = qkv(1, 4, 6, 1, 8)
    bias = torch.randn(1, 4, 4, device=DEVICE, requires_grad=True)
    for shift in ((0, 0), (1, 1)):
        torch.library.opcheck(
            torch.ops.vitzoo.window_attention_fwd.default,
            (q, k, v, 2, 2, 1, 1, *shift, bias, None, 0.3),
            test_utils=("test_schema", "test_autograd_registration", "test_faketensor"),
        )


@pytest.mark.gpu
@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-4), (torch.float16, 4e-3), (torch.bfloat16, 3e-2)])
@pytest.mark.parametrize("size, window", [((56, 56), (7, 7)), ((56, 56), (1, 56)), ((14, 14), (14, 14))])
def test_window_triton_on_gpu_at_model_shapes(seed, dtype, tol, size, window):
    heads, n = 3, window[0] * window[1]
    q, k, v = qkv(4, *size, heads, 32, dtype=dtype)
    bias = torch.randn(heads, n, n, device=DEVICE, requires_grad=True) if n <= 64 else None
    compare(window_attention, (q, k, v, window), [q, k, v] + ([bias] if bias is not None else []), tol, bias=bias)


# --- region-routed attention --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "size, num_regions, topk, heads",
    [
        ((8, 8), 2, 2, 2),  # 16-token regions, one key tile of both selected regions
        ((8, 12), 4, 5, 1),  # 2x3 regions, five per key list: regions batched several to a tile
        ((7, 10), 3, 4, 2),  # padded regions (map not divisible by the grid), padded keys masked
        ((16, 16), 2, 3, 1),  # 64-token regions: several key tiles, dK/dV accumulated over query regions
    ],
)
def test_routed_triton_matches_reference(seed, size, num_regions, topk, heads):
    b, c, cv = 2, 8 * heads, 12 * heads
    q, k, v = (torch.randn(b, *size, ch, device=DEVICE, requires_grad=True) for ch in (c, c, cv))
    compare(region_routed_attention, (q, k, v, num_regions, topk, heads), [q, k, v], 1e-4, scale=0.3)


def test_routed_triton_half_precision_and_strided_views(seed):
    qkv_proj = torch.randn(1, 8, 8, 3 * 32, dtype=torch.float16, device=DEVICE, requires_grad=True)
    q, k, v = qkv_proj.split(32, dim=-1)
    compare(region_routed_attention, (q, k, v, 2, 3, 2), [qkv_proj], 3e-3)


def test_routed_triton_compiles_as_one_custom_op(seed):
    q, k, v = (torch.randn(1, 8, 8, 16, device=DEVICE, requires_grad=True) for _ in range(3))

    def loss(q, k, v):
        return (region_routed_attention(q, k, v, 2, 2, 2, backend="triton") ** 2).sum()

    got = torch.autograd.grad(torch.compile(loss, fullgraph=True, backend="aot_eager")(q, k, v), [q, k, v])
    for g, w in zip(got, torch.autograd.grad(loss(q, k, v), [q, k, v])):
        torch.testing.assert_close(g, w)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-4), (torch.float16, 4e-3), (torch.bfloat16, 3e-2)])
@pytest.mark.parametrize("size, topk", [((56, 56), 1), ((28, 28), 4), ((14, 14), 16), ((7, 7), 49)])
def test_routed_triton_on_gpu_at_biformer_shapes(seed, dtype, tol, size, topk):
    c = 64
    q, k, v = (torch.randn(4, *size, c, dtype=dtype, device=DEVICE, requires_grad=True) for _ in range(3))
    compare(region_routed_attention, (q, k, v, 7, topk, 2), [q, k, v], tol, scale=c**-0.5)


# --- halo attention -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "size, block, halo, stride, rel, mask_padding",
    [
        ((8, 8), 4, 1, 1, "shared", True),  # HaloNet block/halo with shared relative tables
        ((7, 10), 4, 2, 1, "per-head", True),  # padded map, per-head tables, two key tiles per window
        ((8, 8), 4, 1, 2, "shared", False),  # strided queries; outside keys attend as zeros (timm HaloAttn)
        ((6, 6), 4, 1, 1, None, True),  # no position term
    ],
)
def test_halo_triton_matches_reference(seed, size, block, halo, stride, rel, mask_padding):
    heads, d = 2, 8
    q = torch.randn(1, -(-size[0] // stride), -(-size[1] // stride), heads, d, device=DEVICE, requires_grad=True)
    k = torch.randn(1, *size, heads, d, device=DEVICE, requires_grad=True)
    v = torch.randn(1, *size, heads, 12, device=DEVICE, requires_grad=True)
    rows = 2 * (block + 2 * halo) - 1
    table = (rows, d) if rel == "shared" else (heads, rows, d)
    rel_pos = tuple(torch.randn(table, device=DEVICE, requires_grad=True) for _ in range(2)) if rel else None
    compare(
        halo_attention,
        (q, k, v, block, halo),
        [q, k, v, *(rel_pos or ())],
        1e-4,
        query_stride=stride,
        rel_pos=rel_pos,
        mask_padding=mask_padding,
        scale=0.3,
    )


def test_halo_triton_half_precision(seed):
    q, k, v = qkv(1, 8, 8, 2, 16, dtype=torch.float16)
    rel_pos = tuple(torch.randn(11, 16, device=DEVICE, requires_grad=True) * 0.1 for _ in range(2))
    compare(halo_attention, (q, k, v, 4, 1), [q, k, v], 3e-3, rel_pos=rel_pos)


def test_halo_triton_compiles_as_one_custom_op(seed):
    q, k, v = qkv(1, 8, 8, 1, 8)
    rel_pos = tuple(torch.randn(11, 8, device=DEVICE, requires_grad=True) for _ in range(2))

    def loss(q, k, v, rel_h, rel_w):
        return (halo_attention(q, k, v, 4, 1, rel_pos=(rel_h, rel_w), backend="triton") ** 2).sum()

    inputs = [q, k, v, *rel_pos]
    got = torch.autograd.grad(torch.compile(loss, fullgraph=True, backend="aot_eager")(*inputs), inputs)
    for g, w in zip(got, torch.autograd.grad(loss(*inputs), inputs)):
        torch.testing.assert_close(g, w)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-4), (torch.float16, 4e-3), (torch.bfloat16, 3e-2)])
@pytest.mark.parametrize("size, stride", [((64, 64), 1), ((32, 32), 2), ((16, 16), 1)])
def test_halo_triton_on_gpu_at_halonet_shapes(seed, dtype, tol, size, stride):
    heads, d = 4, 16
    q = torch.randn(4, size[0] // stride, size[1] // stride, heads, d, dtype=dtype, device=DEVICE, requires_grad=True)
    k, v = (torch.randn(4, *size, heads, d, dtype=dtype, device=DEVICE, requires_grad=True) for _ in range(2))
    rel_pos = tuple(torch.randn(27, d, device=DEVICE, requires_grad=True) * 0.1 for _ in range(2))
    compare(halo_attention, (q, k, v, 8, 3), [q, k, v, *rel_pos], tol, query_stride=stride, rel_pos=rel_pos)


# --- models: the same computation through the Triton kernels --------------------------------------------------------
# two blocks a stage keep every kind of call (CSWin's stripes and CrossFormer's SDA / LDA pair in each stage) while
# the interpreter runs a fraction of the blocks; CrossFormer's LDA interval 2 instead of 8 in stage 1 (on a 16 x 16
# map an interval of 8 pads to 64 dilated windows, minutes of interpreted programs for one call)
@pytest.mark.parametrize(
    "name, kwargs",
    [
        ("vitzoo_cswin_t", dict(depths=(1, 2, 2, 1))),
        ("vitzoo_crossformer_t", dict(depths=(2, 2, 2, 2), intervals=(2, 2, 2, 1))),
    ],
)
def test_models_through_triton_kernels_match_reference(seed, name, kwargs):
    """Model code calls the ops with its own views and arguments (stripes of half the heads, dilated LDA groups,
    dynamic position bias); routing them all through Triton must not change the output."""
    import timm

    import vitzoo  # noqa: F401  (registers the models)

    model = timm.create_model(name, **kwargs).eval().to(DEVICE)  # both take any input size
    x = torch.randn(1, 3, 64, 64, device=DEVICE)
    with torch.no_grad():
        ref = model(x)
        with use_backend("triton"):
            out = model(x)
    torch.testing.assert_close(out, ref, atol=1e-4, rtol=1e-4)


# --- every candidate tile ---------------------------------------------------------------------------------------
def window_case():
    q, k, v = qkv(1, 9, 9, 2, 16, dtype=torch.float16)
    bias = torch.randn(2, 81, 81, device=DEVICE, requires_grad=True)
    return window_attention, (q, k, v, (9, 9)), [q, k, v, bias], dict(bias=bias, scale=0.25)


def halo_case():
    q, k, v = qkv(1, 16, 16, 1, 16, dtype=torch.float16)
    rel_pos = tuple((torch.randn(23, 16, device=DEVICE) * 0.1).requires_grad_() for _ in range(2))
    return halo_attention, (q, k, v, 8, 2), [q, k, v, *rel_pos], dict(rel_pos=rel_pos, scale=0.25)


def routed_case():
    q, k, v = (torch.randn(1, 16, 16, 32, dtype=torch.float16, device=DEVICE, requires_grad=True) for _ in range(3))
    return region_routed_attention, (q, k, v, 2, 2, 2), [q, k, v], dict(scale=0.25)


@pytest.mark.parametrize("case", [window_case, halo_case, routed_case])
def test_every_candidate_tile_matches_reference(seed, case, monkeypatch):
    """The autotuner may pick any candidate tile; each must compute the same result. Candidates differing only in
    warps or pipeline stages run identically in the interpreter, so every distinct block shape is run here."""
    op, args, grads_of, kwargs = case()
    backend = {window_attention: "window", halo_attention: "halo", region_routed_attention: "routed"}[op]
    record = importlib.import_module(f"vitzoo.ops.{backend}.triton").record
    with _triton.record_launches() as recorded:
        record(*_triton.meta_like(args), **{k: _triton.meta_like(v) for k, v in kwargs.items()})
    candidates: dict[tuple, list] = {}
    for r in recorded:
        launch_site = (r.kernel.fn.__name__, r.kwargs.get("QUERY_GRADS"))
        candidates.setdefault(launch_site, []).append((r.kwargs["BLOCK_M"], r.kwargs["BLOCK_N"]))
    shapes = {i for tiles in candidates.values() for i, tile in enumerate(tiles) if tile not in tiles[:i]}
    assert shapes - {0}, f"no launch has a second block shape: {candidates}"

    ran = []
    real_run = _triton.run_tile

    def spy(kernel, grid, args, options):
        ran.append(((kernel.fn.__name__, options.get("QUERY_GRADS")), (options["BLOCK_M"], options["BLOCK_N"])))
        return real_run(kernel, grid, args, options)

    monkeypatch.setattr(_triton, "run_tile", spy)
    for index in sorted(shapes - {0}):
        ran.clear()
        with _triton.forced_candidate(index):
            # fp16 inputs: the accumulated table / bias gradients of the two backends round differently, by
            # several fp16 ulps (3e-3 failed by chance once); a tile that computed the wrong thing is off by O(1)
            compare(op, args, grads_of, 1e-2, **kwargs)
        want = {(site, tiles[min(index, len(tiles) - 1)]) for site, tiles in candidates.items()}
        assert want <= set(ran), f"candidate {index} was not the one launched"


@pytest.mark.parametrize("case", [window_case, halo_case, routed_case])
def test_autotuned_launches_zero_their_accumulators_between_timed_runs(seed, case, monkeypatch):
    """Through ``triton.autotune`` as on a GPU, with a timer that runs each candidate twice and ranks the last
    candidate fastest: gradients accumulated atomically (bias / relative-table / key gradients) come out right only
    if the tuner zeroes them before each timed run and before the real launch."""
    tuned = []

    def timer(call, quantiles):
        call()
        call()
        tuned.append(call)
        return [1.0 / len(tuned)] * len(quantiles)

    monkeypatch.setattr(_triton, "autotuning", lambda: True)
    monkeypatch.setattr(_triton, "TUNING_TIMER", timer)
    monkeypatch.setattr(_triton, "_autotuners", {})
    op, args, grads_of, kwargs = case()
    compare(op, args, grads_of, 1e-2, **kwargs)  # a gradient added twice would be off by 100%
    assert tuned, "no launch went through the autotuner"
