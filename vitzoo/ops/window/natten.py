"""NATTEN backend of :func:`vitzoo.ops.window_attention`: the op's windows as NATTEN's strided neighbourhoods, exactly.

NATTEN's layout is the op's (``[B, H, W, heads, D]``). On a map whose sides are multiples of ``wh * dh`` and
``ww * dw``, ``natten.na2d(kernel_size=(wh, ww), stride=(wh, ww), dilation=(dh, dw))`` tiles the map into exactly the
op's windows: with stride equal to the kernel the neighbourhoods stop overlapping, and NATTEN's dilation groups the
tokens by ``(row % dh, col % dw)`` inside each ``(wh * dh) x (ww * dw)`` block, as the op does.

Maps the window does not divide are never handed to NATTEN whole: it would shift the border windows inward (other
keys than the op's), and zero padding without a mask attends to the padded keys. Instead each axis is cut into
segments whose windows tile them exactly (:func:`_axis`), and the map into the rectangles these segments span, one
call each: the divisible interior, then the bottom / right remainders. A remainder of ``r < k * d`` tokens along an
axis holds, per residue ``c < d``, the tokens ``c, c + d, ...`` below ``r``: ``r // d + 1`` of them for the
``r % d`` first residues, ``r // d`` for the others (none: a padding-only window, which has no real query and is
skipped). Laid out residue by residue (one gather of the axis, needed only when ``d > 1`` leaves both groups), each
group is a segment dilated by its own number of residues. Rectangles whose windows are 1 token along an axis (CSWin's
split size 1, thin remainders) fold that axis into the batch and attend along the other one; a window covering its
whole rectangle is plain SDPA; the rest are ``na2d`` / ``na1d`` calls.

NATTEN has no additive bias or attention mask (both dropped in 0.20) and no Swin shift, so bias, mask and a nonzero
shift are refused. On CPU NATTEN runs only its uncompiled Flex path, forward only: there this backend serves
inference and tests, and automatic choice leaves it out. On CUDA the first NATTEN kernel that takes the dtype and
head dims is used (Blackwell, Hopper, CUTLASS 2.x, Flex, NATTEN's own order); head dims it does not take are padded
with zeros (queries / keys: the logits are unchanged, the scale is passed explicitly; values: the extra output
channels are dropped), which is exact. Backward comes from NATTEN's autograd.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

try:
    import natten
    from natten.backends import get_compatible_backends
except ImportError as e:  # optional dependency: `pip install vitzoo[natten]`
    raise ImportError("natten is not installed (pip install 'vitzoo[natten]')") from e

_DTYPES = (torch.float32, torch.float16, torch.bfloat16)

_HOPPER_DIMS = (32, 64, 128, 256)  # hopper-fna's head dims (backward: the first three)


def _round8(d: int) -> int:
    return -(-d // 8) * 8


def _hopper_dims(d: int, dv: int) -> tuple[int, int] | None:
    size = next((s for s in _HOPPER_DIMS if s >= max(d, dv)), None)
    return None if size is None else (size, size)


def _flex_dims(d: int, dv: int) -> tuple[int, int]:
    size = 1 << (max(d, dv, 8) - 1).bit_length()  # a power of two >= 8
    return size, size


# NATTEN's FNA kernels in its own order of preference, each with the head dims (D', Dv') to pad (D, Dv) to, or None
# when no padding fits it; whether the kernel then runs is NATTEN's own check (device, dtype, grad, head dims)
_KERNELS = (
    ("blackwell-fna", lambda d, dv: (max(_round8(d), _round8(dv)),) * 2),
    ("hopper-fna", _hopper_dims),
    ("cutlass-fna", lambda d, dv: (_round8(d), _round8(dv))),
    ("flex-fna", _flex_dims),
)


@functools.lru_cache(maxsize=128)
def _kernel_for(
    device: torch.device, dtype: torch.dtype, d: int, dv: int, needs_grad: bool, deterministic: bool
) -> tuple[str, int, int] | str:
    """The NATTEN kernel to use and the head dims to pad to, ``(name, D', Dv')``, or why none can run.

    ``deterministic`` is only part of the cache key (NATTEN reads the global flag itself).
    """
    for name, dims in _KERNELS:
        padded = dims(d, dv)
        if padded is None:
            continue
        # tiny probes: NATTEN's checks look at device, dtype, head dims and requires_grad, not at the map size
        probes = [
            torch.empty(1, 2, 2, 1, size, device=device, dtype=dtype, requires_grad=needs_grad)
            for size in (padded[0], padded[0], padded[1])
        ]
        if name in get_compatible_backends(*probes, torch_compile=False):
            return name, padded[0], padded[1]
    return (
        f"no NATTEN kernel takes {dtype} with head dims {d} / {dv} on {device} (grad: {needs_grad}); "
        "run with NATTEN_LOG_LEVEL=DEBUG for each kernel's reason"
    )


def _needs_grad(*tensors: torch.Tensor) -> bool:
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


def _kernel(q: torch.Tensor, v: torch.Tensor, needs_grad: bool) -> tuple[str, int, int] | str:
    return _kernel_for(
        q.device, q.dtype, q.shape[-1], v.shape[-1], needs_grad, torch.are_deterministic_algorithms_enabled()
    )


# --- the exact split into rectangles ------------------------------------------------------------------------------
@functools.lru_cache(maxsize=256)
def _axis(size: int, k: int, d: int) -> tuple[tuple[int, ...] | None, tuple[tuple[int, int, int], ...]]:
    """Cut one axis of ``size`` tokens, windows of ``k`` tokens spaced ``d`` apart, into exactly tiled segments.

    Returns ``(order, segments)``: ``segments`` are ``(length, kernel, dilation)`` laid out one after another, a
    segment of ``length = kernel * dilation * n`` being tiled by NATTEN's stride-``kernel`` windows exactly as the
    op tiles those tokens; ``order`` lists the map index of every position of that layout (``None``: the identity,
    no gather needed).
    """
    block = k * d
    interior = size // block * block
    order = list(range(interior))
    segments = [(interior, k, d)] if interior else []
    rounds, extra = divmod(size - interior, d)
    # in the remainder, residue c holds the tokens interior + t * d + c below size: rounds + 1 of them for c < extra,
    # rounds for the others; laid out t-major, each group is a segment dilated by its number of residues
    for residues, count in ((range(extra), rounds + 1), (range(extra, d), rounds)):
        if count == 0 or len(residues) == 0:  # padding-only windows: no real token, nothing to compute
            continue
        order += [interior + t * d + c for t in range(count) for c in residues]
        segments.append((count * len(residues), count, len(residues) if count > 1 else 1))
    return (None if order == list(range(size)) else tuple(order)), tuple(segments)


def _uses_natten(length_h: int, length_w: int, kh: int, kw: int) -> bool:
    """Whether a rectangle tiled by ``kh x kw`` windows needs a NATTEN call (else it is SDPA or a copy)."""
    if (kh == length_h and kw == length_w) or (kh == 1 and kw == 1):
        return False
    if kh == 1:
        return kw != length_w
    if kw == 1:
        return kh != length_h
    return True


def _any_natten_call(h: int, w: int, window: tuple[int, int], dilation: tuple[int, int]) -> bool:
    _, rows = _axis(h, window[0], dilation[0])
    _, cols = _axis(w, window[1], dilation[1])
    return any(_uses_natten(r[0], c[0], r[1], c[1]) for r in rows for c in cols)


# --- the backend interface ------------------------------------------------------------------------------------------
def can_run(q, k, v, window_size, *, dilation=(1, 1), shift=(0, 0), bias=None, mask=None, scale=None) -> str | None:
    if tuple(shift) != (0, 0):
        return (
            "NATTEN has no shifted windows (a roll without Swin's region mask attends across regions, and NATTEN "
            "takes no mask)"
        )
    if bias is not None:
        return "NATTEN takes no additive bias (fused bias was dropped in NATTEN 0.20)"
    if mask is not None:
        return "NATTEN takes no attention mask (masks were dropped in NATTEN 0.20)"
    if q.dtype not in _DTYPES:
        return f"dtype {q.dtype} not supported (supports {_DTYPES})"
    needs_grad = _needs_grad(q, k, v)
    if q.device.type == "cpu" and needs_grad:
        return "NATTEN runs on CPU only through FlexAttention, which has no backward there"
    if q.device.type not in ("cpu", "cuda"):
        return f"NATTEN runs on CPU and CUDA only, got {q.device.type}"
    if _any_natten_call(q.shape[1], q.shape[2], tuple(window_size), tuple(dilation)):
        kernel = _kernel(q, v, needs_grad)
        if isinstance(kernel, str):
            return kernel
    return None


def can_auto_select(q, k, v, window_size, *, dilation=(1, 1), **kwargs) -> str | None:
    if q.device.type != "cuda":
        # NATTEN >= 0.20 runs CPU inputs through uncompiled Flex, slower than the reference
        return "NATTEN on CPU runs uncompiled Flex, slower than the reference; pass backend='natten' to use it"
    if _any_natten_call(q.shape[1], q.shape[2], tuple(window_size), tuple(dilation)):
        kernel = _kernel(q, v, _needs_grad(q, k, v))
        if not isinstance(kernel, str) and kernel[0] == "flex-fna":
            return "the only NATTEN kernel for these inputs is its uncompiled Flex path; the flex backend compiles"
    return None


def _sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
    """Plain attention over all tokens of ``[N, L, heads, D]`` inputs; ``[N, L, heads, Dv]``."""
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), scale=scale)
    return out.transpose(1, 2)  # N, L, heads, Dv


def _natten(q, k, v, kernel: tuple[int, ...], dilation: tuple[int, ...], scale: float, plan: tuple[str, int, int]):
    """One ``na1d`` / ``na2d`` call tiling ``[N, *map, heads, D]`` inputs into stride-``kernel`` windows."""
    name, d, dv = plan
    d_in, dv_in = q.shape[-1], v.shape[-1]
    if d != d_in:  # zero channels leave every logit unchanged; the scale is explicit
        q, k = F.pad(q, (0, d - d_in)), F.pad(k, (0, d - d_in))
    if dv != dv_in:
        v = F.pad(v, (0, dv - dv_in))
    op = natten.na1d if q.dim() == 4 else natten.na2d
    out = op(q, k, v, kernel_size=kernel, stride=kernel, dilation=dilation, scale=scale, backend=name)
    return out[..., :dv_in] if dv != dv_in else out


def _line(q, k, v, kernel: int, dilation: int, scale: float, plan) -> torch.Tensor:
    """Windows of ``kernel`` tokens along the sequence axis of ``[N, L, heads, D]`` inputs."""
    if kernel == q.shape[1]:
        return _sdpa(q, k, v, scale)
    if kernel == 1:  # one key per query: softmax weight exactly 1
        return v.clone()
    return _natten(q, k, v, (kernel,), (dilation,), scale, plan)


def _rectangle(q, k, v, kernel: tuple[int, int], dilation: tuple[int, int], scale: float, plan) -> torch.Tensor:
    """``[B, h, w, heads, D]`` inputs whose sides the (dilated) ``kernel`` windows tile exactly."""
    b, h, w, heads, _ = q.shape
    dv = v.shape[-1]
    (kh, kw), (dh, dw) = kernel, dilation
    if kh == h and kw == w:  # one window: plain attention over the rectangle
        return _sdpa(*(t.flatten(1, 2) for t in (q, k, v)), scale).reshape(b, h, w, heads, dv)
    if kh == 1:  # every row on its own: rows join the batch
        rows = [t.reshape(b * h, w, heads, t.shape[-1]) for t in (q, k, v)]  # B*h, w, heads, D
        return _line(*rows, kw, dw, scale, plan).reshape(b, h, w, heads, dv)
    if kw == 1:  # every column on its own: columns join the batch
        cols = [t.transpose(1, 2).reshape(b * w, h, heads, t.shape[-1]) for t in (q, k, v)]  # B*w, h, heads, D
        return _line(*cols, kh, dh, scale, plan).reshape(b, w, h, heads, dv).transpose(1, 2)
    return _natten(q, k, v, kernel, dilation, scale, plan)


def forward(q, k, v, window_size, *, dilation=(1, 1), shift=(0, 0), bias=None, mask=None, scale=None) -> torch.Tensor:
    b, h, w, heads, d = q.shape
    scale = d**-0.5 if scale is None else scale
    if not torch.is_grad_enabled():  # NATTEN's checks read requires_grad itself (Hopper: backward head dims)
        q, k, v = q.detach(), k.detach(), v.detach()
    (wh, ww), (dh, dw) = window_size, dilation
    row_order, rows = _axis(h, wh, dh)
    col_order, cols = _axis(w, ww, dw)
    plan = None
    if any(_uses_natten(r[0], c[0], r[1], c[1]) for r in rows for c in cols):
        plan = _kernel(q, v, _needs_grad(q, k, v))
        if isinstance(plan, str):
            raise RuntimeError(f"window_attention: backend 'natten' cannot run: {plan}")
    # with dilation, the remainder segments are gathered: lay the map out in segment order (a permutation per axis)
    row_index = None if row_order is None else torch.tensor(row_order, device=q.device)
    col_index = None if col_order is None else torch.tensor(col_order, device=q.device)
    inputs = []
    for t in (q, k, v):
        t = t if row_index is None else t.index_select(1, row_index)
        inputs.append(t if col_index is None else t.index_select(2, col_index))

    out_rows = []
    r0 = 0
    for length_h, kh, dil_h in rows:
        out_row, c0 = [], 0
        for length_w, kw, dil_w in cols:
            part = [t[:, r0 : r0 + length_h, c0 : c0 + length_w] for t in inputs]  # B, length_h, length_w, heads, D
            out_row.append(_rectangle(*part, (kh, kw), (dil_h, dil_w), scale, plan))
            c0 += length_w
        out_rows.append(out_row[0] if len(out_row) == 1 else torch.cat(out_row, dim=2))
        r0 += length_h
    out = out_rows[0] if len(out_rows) == 1 else torch.cat(out_rows, dim=1)  # B, H, W, heads, Dv in segment order
    if row_index is not None:
        out = out.index_select(1, torch.argsort(row_index))
    if col_index is not None:
        out = out.index_select(2, torch.argsort(col_index))
    return out
