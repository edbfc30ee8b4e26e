"""Model families; importing this package registers every ``vitzoo_*`` model with timm."""

from . import biformer, crossformer, cswin, van  # noqa: F401  (imported for their @register_model side effects)
