"""Convolutions at chosen output positions: the compiled ops and their pure-TF forms.

``make ops`` compiles ``custom_ops/perforated_conv.cc`` into
``tfpriors/ops/_perforated_conv.so`` (:mod:`tfpriors.ops.library` loads it);
:mod:`tfpriors.ops.conv` runs a perforated convolution or a convolution at
chosen positions through one of several exact implementations, and
:mod:`tfpriors.ops.autotune` measures which is fastest for a shape.

Example:

>>> tfpriors.ops.has_fused_op()
True
"""

from tfpriors.ops import autotune, library
from tfpriors.ops.conv import (
    IMPLEMENTATIONS,
    builtin_ops_only,
    conv_at_positions,
    lattice_of,
    perforated_conv2d,
)
from tfpriors.ops.library import (
    FusedOpUnavailableWarning,
    fused_op_module,
    gemm_backend,
    has_fused_op,
)
from tfpriors.ops.reference import (
    conv_at_positions_reference,
    conv_geometry,
    perforated_conv2d_reference,
)

__all__ = [
    "FusedOpUnavailableWarning",
    "IMPLEMENTATIONS",
    "autotune",
    "builtin_ops_only",
    "conv_at_positions",
    "conv_at_positions_reference",
    "conv_geometry",
    "fused_op_module",
    "gemm_backend",
    "has_fused_op",
    "lattice_of",
    "library",
    "perforated_conv2d",
    "perforated_conv2d_reference",
]
