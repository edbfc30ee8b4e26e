"""Model families; importing this package registers every ``vitzoo_*`` model with timm."""

from . import biformer, crossformer, cswin, halonet, linear_pvt, linear_swin, mala, swin_vsa, van, vitaev2_vsa  # noqa: F401  (imported for their @register_model side effects)
