"""Building blocks shared by several model families."""

from .lepe import LePE
from .vsa import VaryingSizeWindowAttention

__all__ = ["LePE", "VaryingSizeWindowAttention"]
