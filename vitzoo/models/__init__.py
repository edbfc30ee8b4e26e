"""Model families; importing this package registers every ``vitzoo_*`` model with timm."""

# imported for their @register_model side effects
from . import (  # noqa: F401
    biformer,
    crossformer,
    cswin,
    halonet,
    linear_cswin,
    linear_deit,
    linear_pvt,
    linear_swin,
    mala,
    swin_vsa,
    van,
    vitaev2_vsa,
)
