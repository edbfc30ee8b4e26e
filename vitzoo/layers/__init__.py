"""Building blocks shared by several model families."""

from .lepe import LePE
from .swin_window import SwinWindowAttention, SwinWindowBlock
from .vsa import VaryingSizeWindowAttention

__all__ = ["LePE", "SwinWindowAttention", "SwinWindowBlock", "VaryingSizeWindowAttention"]
