"""The compiled mmcv ops that mmsegmentation / mmdetection call, from torchvision, when only mmcv-lite is installed.

mmcv-lite ships no ``mmcv._ext``, yet ``mmcv.ops`` (imported unconditionally by ``mmseg.models`` and
``mmdet.models``) loads it at import time and asserts that each op module's functions exist. :func:`install`
registers a stand-in ``mmcv._ext`` in ``sys.modules`` (never touching site-packages) with:

- ``nms``: ``torchvision.ops.nms`` (mmcv's ``offset=1`` legacy box convention by widening the boxes); mmcv's
  ``batched_nms`` is Python over this op.
- ``roi_align_forward`` / ``roi_align_backward`` (``pool_mode='avg'``): torchvision's kernels, which compute the same
  bilinear sampling average (Mask R-CNN's RoI heads).

``point_sample`` (PointRend, Mask2Former) is plain PyTorch in mmcv and needs nothing. Every other compiled op raises
a ``NotImplementedError`` naming ``make mmcv-full`` when called (importing it is fine). With full mmcv installed,
:func:`install` does nothing, and vitzoo uses mmcv's own kernels.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import sys
import types

import torch
import torchvision

__all__ = ["install", "is_full_mmcv", "STAND_INS"]

MODULE = "mmcv._ext"


def is_full_mmcv() -> bool:
    """Whether the compiled ``mmcv._ext`` of a full mmcv build is importable (ours excluded)."""
    existing = sys.modules.get(MODULE)
    if existing is not None:
        return not getattr(existing, "__vitzoo_stand_in__", False)
    try:
        return importlib.util.find_spec(MODULE) is not None
    except (ImportError, ValueError):
        return False


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float, offset: int = 0) -> torch.Tensor:
    """Indices kept by non-maximum suppression, by decreasing score (mmcv's ``ext_module.nms``)."""
    if offset not in (0, 1):
        raise ValueError(f"nms: offset must be 0 or 1, got {offset}")
    if offset:  # mmcv's legacy convention: a box covers x2 - x1 + 1 pixels
        boxes = torch.cat([boxes[:, :2], boxes[:, 2:4] + 1], dim=1)
    return torchvision.ops.nms(boxes.float(), scores.float(), float(iou_threshold))


def _check_avg(pool_mode: int) -> None:
    if pool_mode != 1:
        raise NotImplementedError(
            "roi_align with pool_mode='max' needs full mmcv (`make mmcv-full`); vitzoo's mmcv-lite stand-in "
            "provides the 'avg' mode that mmdetection's RoI heads use"
        )


def roi_align_forward(
    input: torch.Tensor,
    rois: torch.Tensor,
    output: torch.Tensor,
    argmax_y: torch.Tensor,
    argmax_x: torch.Tensor,
    aligned_height: int,
    aligned_width: int,
    spatial_scale: float,
    sampling_ratio: int,
    pool_mode: int,
    aligned: bool,
) -> None:
    """Fill ``output`` ``[K, C, h, w]`` with RoIAlign of ``input`` over ``rois`` ``[K, 5]`` (mmcv's signature)."""
    _check_avg(pool_mode)
    out = torch.ops.torchvision.roi_align(
        input, rois.to(input.dtype), spatial_scale, aligned_height, aligned_width, sampling_ratio, aligned
    )
    output.copy_(out)


def roi_align_backward(
    grad_output: torch.Tensor,
    rois: torch.Tensor,
    argmax_y: torch.Tensor,
    argmax_x: torch.Tensor,
    grad_input: torch.Tensor,
    aligned_height: int,
    aligned_width: int,
    spatial_scale: float,
    sampling_ratio: int,
    pool_mode: int,
    aligned: bool,
) -> None:
    """Fill ``grad_input`` with the gradient of RoIAlign (linear in its input, so no input is needed)."""
    _check_avg(pool_mode)
    b, c, h, w = grad_input.shape
    grad = torch.ops.torchvision._roi_align_backward(
        grad_output, rois.to(grad_output.dtype), spatial_scale, aligned_height, aligned_width, b, c, h, w,
        sampling_ratio, aligned,
    )  # fmt: skip
    grad_input.copy_(grad)


STAND_INS = {"nms": nms, "roi_align_forward": roi_align_forward, "roi_align_backward": roi_align_backward}


def _missing(name: str):
    def op(*args, **kwargs):
        raise NotImplementedError(
            f"mmcv op {name!r} is compiled code that mmcv-lite lacks; vitzoo stands in only for "
            f"{sorted(STAND_INS)} (and point_sample, plain PyTorch in mmcv). Install full mmcv with `make mmcv-full`."
        )

    op.__name__ = name
    return op


def install() -> bool:
    """Register the stand-in ``mmcv._ext`` unless full mmcv is installed; returns whether it was installed."""
    if is_full_mmcv():
        return False
    if MODULE in sys.modules:
        return True
    module = types.ModuleType(MODULE, __doc__)
    # a spec without a loader: mmengine's mmcv_full_available() then reports False, which is the truth
    module.__spec__ = importlib.machinery.ModuleSpec(MODULE, None)
    module.__vitzoo_stand_in__ = True
    module.__dict__.update(STAND_INS)
    module.__getattr__ = lambda name: _missing(name) if not name.startswith("__") else _raise_attr(name)
    sys.modules[MODULE] = module
    return True


def _raise_attr(name: str):
    raise AttributeError(name)
