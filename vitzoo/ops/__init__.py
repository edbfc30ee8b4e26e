"""The 2-D attention op layer: one public function per primitive, each with pluggable backends.

Models call these functions and never a backend directly. ``backend=None`` picks the first backend (in priority
order) that can run the inputs; ``VITZOO_DISABLE_<BACKEND>=1`` or :func:`disable_backends` switch one off, and
:func:`use_backend` makes one the default inside a ``with`` block.
"""

from timm.layers import register_notrace_function

from . import agent, halo, linear, magnitude, neighborhood, routed, sampled, window
from ._common import accumulation_dtype, adaptive_avg_pool_hw, crop_hw, known_true, padded_size, size_min, symbolic
from ._dispatch import BackendUnavailable, disable_backends, is_disabled, use_backend
from .agent import agent_attention
from .halo import halo_attention
from .linear import linear_attention
from .magnitude import magnitude_aware_linear_attention
from .neighborhood import neighborhood_attention
from .routed import region_routed_attention
from .sampled import sampled_window_attention
from .window import window_attention

# torch.fx (timm's feature extraction and FX tests) records each op as one call: their input checks and backend
# choice are Python control flow on shapes, which symbolic tracing cannot follow
for _op in (
    agent_attention,
    halo_attention,
    linear_attention,
    magnitude_aware_linear_attention,
    neighborhood_attention,
    region_routed_attention,
    sampled_window_attention,
    window_attention,
):
    register_notrace_function(_op)

# every backend module is imported now rather than at first use: a first use inside torch.compile would import
# inside the traced graph, which breaks it
for _op_package in (agent, halo, linear, magnitude, neighborhood, routed, sampled, window):
    _op_package.BACKENDS.preload()

__all__ = [
    "BackendUnavailable",
    "accumulation_dtype",
    "adaptive_avg_pool_hw",
    "agent_attention",
    "disable_backends",
    "halo_attention",
    "is_disabled",
    "crop_hw",
    "known_true",
    "linear_attention",
    "magnitude_aware_linear_attention",
    "neighborhood_attention",
    "padded_size",
    "region_routed_attention",
    "sampled_window_attention",
    "size_min",
    "symbolic",
    "use_backend",
    "window_attention",
]
