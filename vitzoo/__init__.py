"""vitzoo: efficient-attention vision backbones as timm models.

``import vitzoo`` registers every model with timm as ``vitzoo_<family>_<size>``; build them with
``timm.create_model``.
"""

from . import models, ops  # noqa: F401

__version__ = "0.1.0"
