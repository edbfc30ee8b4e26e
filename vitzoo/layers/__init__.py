"""Building blocks shared by several model families."""

from .lepe import LePE

__all__ = ["LePE"]
