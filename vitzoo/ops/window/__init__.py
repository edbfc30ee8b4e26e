"""Attention inside non-overlapping 2-D windows (Swin windows, CSWin stripes, CrossFormer SDA / LDA, global).

Layout (heads last, as NATTEN): ``q, k`` are ``[B, H, W, heads, D]``, ``v`` is ``[B, H, W, heads, Dv]``; the output
is ``[B, H, W, heads, Dv]``.

Windows. A window holds ``wh x ww`` tokens spaced ``dilation = (dh, dw)`` apart. The map is zero-padded at the
bottom/right to ``Hp x Wp``, the smallest multiples of ``wh * dh`` and ``ww * dw``, and cut into blocks of
``(wh * dh) x (ww * dw)`` tokens; inside a block, the tokens that share ``(row % dh, col % dw)`` form one window.
The windows make a ``(Hp / wh) x (Wp / ww)`` grid in row-major order, window row ``u`` being block row ``u // dh``
at row offset ``u % dh`` (columns alike), so token ``(i, j)`` lies in window
``(i // (wh * dh) * dh + i % dh, j // (ww * dw) * dw + j % dw)`` at in-window position
``(i % (wh * dh) // dh, j % (ww * dw) // dw)``. With ``dilation=1`` these are plain adjacent windows (Swin, SDA);
``window_size=G, dilation=I`` on a ``(G * I) x (G * I)`` map is CrossFormer's long-distance attention (LDA), the
``G x G`` tokens sampled with interval ``I``. A window of ``(H, W)`` is plain global attention.

Padding. Padded keys are masked out, so any ``H, W >= 1`` is valid. With ``dilation > 1`` the padding can reach
``wh * dh - 1`` rows, and some windows may then hold padding only: those attend without a padding mask (to their
own zero keys) instead of producing NaN, and their outputs are dropped with the padding.

Shift (Swin's shifted windows). ``shift = (sh, sw)`` with ``0 <= sh < wh`` and, when ``sh > 0``, ``sh < H``
(columns alike); it needs ``dilation=1``. The map is rolled cyclically by ``(-sh, -sw)`` (``torch.roll``: row ``r``
of the rolled map holds row ``(r + sh) mod H``, column ``c`` column ``(c + sw) mod W``), then padded and cut into
windows exactly as above, and the output is rolled back by ``(sh, sw)``. On top of the window rule, a query attends
only to the keys of its window that lie in its own roll region: along H the rolled rows ``[0, H - sh)`` are one
region and the wrapped rows ``[H - sh, H)`` another (columns alike with ``W - sw``); a token's region is the pair,
so a window holds up to four. Padded keys stay masked as always. On a map the window divides this is exactly Swin's
shifted-window mask (timm's ``SwinTransformerBlock`` with its ``attn_mask``, which adds -100 where this masks with
-inf); on other maps it is the exact generalisation (timm builds its mask on the padded map, whose regions then
differ from the roll's, and attends to the padding). ``shift=0`` is the plain op.

Optional additive terms, both in the padded window grid (of the rolled map, when shifted):

* ``bias``: ``[heads, N, N]`` with ``N = wh * ww`` (relative position bias over in-window positions), shared by
  every window;
* ``mask``: ``[nW, N, N]`` with ``nW = (Hp / wh) * (Wp / ww)`` windows in the order above, either float (added to
  the logits) or bool (``True`` = may attend), per window; with a shift it applies on top of the region rule
  (Swin's shifted-window mask is ``shift``, not a ``mask``).
"""

from __future__ import annotations

import torch

from .._common import padded_size, pair, symbolic
from .._dispatch import OpBackends, check_qkv, check_same_map
from . import reference

__all__ = ["window_attention", "BACKENDS"]

BACKENDS = OpBackends("window_attention", __name__, ["triton", "natten", "flex", "reference"])


def window_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    window_size: int | tuple[int, int],
    dilation: int | tuple[int, int] = 1,
    shift: int | tuple[int, int] = 0,
    bias: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
    scale: float | None = None,
    backend: str | None = None,
) -> torch.Tensor:
    """Softmax attention of every token over the tokens of its own (possibly dilated) window.

    Args:
        q: Queries ``[B, H, W, heads, D]``.
        k: Keys ``[B, H, W, heads, D]``.
        v: Values ``[B, H, W, heads, Dv]``.
        window_size: Window height and width in tokens (an int means square).
        dilation: Spacing between the tokens of a window along H and W (an int means both); 1 = adjacent tokens.
        shift: Swin's cyclic shift along H and W (an int means both), ``0 <= shift < window`` and smaller than the
            map side on each shifted axis; needs ``dilation=1``. See the module docstring.
        bias: Optional additive bias ``[heads, N, N]``, ``N = wh * ww``, indexed by in-window positions.
        mask: Optional per-window mask ``[nW, N, N]``, additive float or bool (``True`` = attend), ``nW`` the
            number of windows of the padded (rolled, when shifted) map (see the module docstring for their order),
            added on top of the shift's region mask.
        scale: Logit scale; defaults to ``D ** -0.5``.
        backend: Force a backend (``'triton'``, ``'natten'``, ``'flex'`` or ``'reference'``; ``'natten'`` takes no
            bias, mask or shift); ``None`` chooses automatically.

    Returns:
        ``[B, H, W, heads, Dv]``.
    """
    if torch.jit.is_scripting():  # backend choice is Python: a scripted model runs the reference computation
        window = pair(window_size, "window_size")
        return reference.forward(q, k, v, window, pair(dilation, "dilation"), pair(shift, "shift"), bias, mask, scale)
    return _checked_window_attention(q, k, v, window_size, dilation, shift, bias, mask, scale, backend)


def _check_shift(
    shift: int | tuple[int, int], window: tuple[int, int], dilation: tuple[int, int], size: tuple[int, int]
) -> tuple[int, int]:
    """Normalise ``shift`` to a pair and raise a ValueError saying which rule it breaks."""
    sizes = (int, torch.SymInt)
    out = (shift, shift) if isinstance(shift, sizes) else tuple(shift) if isinstance(shift, (tuple, list)) else ()
    if len(out) != 2 or not all(isinstance(s, sizes) and not isinstance(s, bool) for s in out):
        raise ValueError(f"window_attention: shift must be an int or a pair of ints, got {shift!r}")
    if symbolic(*out):  # a shift that depends on the traced map size (Swin's rule in a dynamic-shape trace)
        return out  # type: ignore[return-value]
    if not any(out):
        return 0, 0
    for axis, s, win, side in zip("HW", out, window, size):
        if not 0 <= s < win:
            raise ValueError(
                f"window_attention: shift must satisfy 0 <= shift < window on each axis, got shift {out} for "
                f"window {window} (along {axis}: {s})"
            )
        if s >= side:
            raise ValueError(
                f"window_attention: shift {s} along {axis} needs a map side larger than it, got {size[0]}x{size[1]} "
                "(a map that fits in one window along an axis is not shifted along it, as in Swin)"
            )
    if dilation != (1, 1):
        raise ValueError(f"window_attention: shift is not defined with dilation > 1, got dilation {dilation}")
    return out  # type: ignore[return-value]


def _checked_window_attention(q, k, v, window_size, dilation, shift, bias, mask, scale, backend):
    # eager mode: validate, choose a backend, run it
    check_qkv("window_attention", q, k, v, 5, "[B, H, W, heads, D]")
    wh, ww = pair(window_size, "window_size")
    dh, dw = pair(dilation, "dilation")
    check_same_map("window_attention", q, k, v, "[B, H, W, heads]")
    sh, sw = _check_shift(shift, (wh, ww), (dh, dw), tuple(q.shape[1:3]))
    n = wh * ww
    heads = q.shape[3]
    if bias is not None and tuple(bias.shape) != (heads, n, n):
        raise ValueError(f"window_attention: bias must be [heads, N, N] = {(heads, n, n)}, got {tuple(bias.shape)}")
    if mask is not None:
        n_windows = padded_size(q.shape[1], wh * dh) // wh * (padded_size(q.shape[2], ww * dw) // ww)
        if tuple(mask.shape) != (n_windows, n, n):
            raise ValueError(
                f"window_attention: mask must be [nW, N, N] = {(n_windows, n, n)} for a {q.shape[1]}x{q.shape[2]} "
                f"map in {wh}x{ww} windows with dilation {(dh, dw)}, got {tuple(mask.shape)}"
            )
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    args = dict(dilation=(dh, dw), shift=(sh, sw), bias=bias, mask=mask, scale=scale)
    fn = BACKENDS.choose(q, k, v, (wh, ww), backend=backend, **args)
    return fn(q, k, v, (wh, ww), **args)
