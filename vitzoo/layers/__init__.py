"""Building blocks shared by several model families."""

from .lepe import LePE
from .swin_downsample import NCHWPatchMerging, swin_downsample
from .swin_window import SwinWindowAttention, SwinWindowBlock
from .vsa import VaryingSizeWindowAttention

__all__ = [
    "LePE",
    "NCHWPatchMerging",
    "SwinWindowAttention",
    "SwinWindowBlock",
    "VaryingSizeWindowAttention",
    "swin_downsample",
]
