"""Region layout and top-k routing shared by every backend of region-routed attention."""

from __future__ import annotations

import torch

from .._common import ceil_div, crop_hw, pad_hw


def region_size(h: int, w: int, num_regions: int) -> tuple[int, int]:
    """Region height and width so that ``num_regions`` regions per side cover the map."""
    return ceil_div(h, num_regions), ceil_div(w, num_regions)


def to_regions(x: torch.Tensor, num_regions: int, rh: int, rw: int) -> torch.Tensor:
    """``[B, H, W, C]`` -> ``[B, R, rh * rw, C]`` (regions row-major, ``R = num_regions ** 2``), padding as needed."""
    b, h, w, c = x.shape
    x = pad_hw(x, num_regions * rh - h, num_regions * rw - w)
    x = x.view(b, num_regions, rh, num_regions, rw, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(b, num_regions * num_regions, rh * rw, c)  # B, R, T, C


def from_regions(x: torch.Tensor, num_regions: int, rh: int, rw: int, h: int, w: int) -> torch.Tensor:
    """Inverse of :func:`to_regions`, cropping the padding: ``[B, R, T, C]`` -> ``[B, H, W, C]``."""
    b, _, _, c = x.shape
    x = x.view(b, num_regions, num_regions, rh, rw, c).permute(0, 1, 3, 2, 4, 5)
    return crop_hw(x.reshape(b, num_regions * rh, num_regions * rw, c), h, w)


def valid_tokens(h: int, w: int, num_regions: int, rh: int, rw: int, device: torch.device) -> torch.Tensor:
    """Bool ``[R, T]``: True for real tokens, False for padding."""
    # built from comparisons, not by filling a slice: a traced slice of a symbolic size would pin the padding
    rows = torch.arange(num_regions * rh, device=device) < h
    cols = torch.arange(num_regions * rw, device=device) < w
    valid = (rows[:, None] & cols[None, :])[None, :, :, None]  # 1, Hp, Wp, 1
    return to_regions(valid, num_regions, rh, rw)[0, ..., 0]


def route(q_reg: torch.Tensor, k_reg: torch.Tensor, valid: torch.Tensor | None, topk: int) -> torch.Tensor:
    """Top-k key regions for each query region: ``[B, R, topk]`` long.

    Region descriptors are the means of q and k over the real tokens of each region (all channels); ``valid``
    (``[R, T]``, None when there is no padding) marks them. Regions made only of padding are never preferred over
    real ones. The logit scale is left out: a positive scale does not change which regions rank highest.
    """
    with torch.no_grad():  # routing is a hard selection: no gradient flows through it
        if valid is None:
            q_mean, k_mean = q_reg.mean(dim=2), k_reg.mean(dim=2)  # B, R, C
        else:
            weight = valid.to(q_reg.dtype)[None, :, :, None]  # 1, R, T, 1
            count = weight.sum(dim=2).clamp(min=1)  # 1, R, 1
            q_mean = (q_reg * weight).sum(dim=2) / count
            k_mean = (k_reg * weight).sum(dim=2) / count
        logits = q_mean @ k_mean.transpose(-1, -2)  # B, R, R
        if valid is not None:
            logits = logits.masked_fill(~valid.any(dim=1)[None, None, :], float("-inf"))
        return torch.topk(logits, k=topk, dim=-1).indices
