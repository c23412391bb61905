"""The compiled ops and their pure-TF forms: perforated convolutions, fused noise.

``make ops`` compiles ``custom_ops/`` into ``tfpriors/ops/_perforated_conv.so``
(:mod:`tfpriors.ops.library` loads it); :mod:`tfpriors.ops.conv` runs a
perforated convolution or a convolution at chosen positions through one of
several exact implementations, :mod:`tfpriors.ops.autotune` measures which is
fastest for a shape, and :mod:`tfpriors.ops.noise` samples the local
reparameterization's pre-activations in one pass (:func:`lrt_sample`).

Every implementation computes the same convolution; the compiled op is used when it
is loaded, and pure TensorFlow otherwise.

Example:
>>> x = np.random.default_rng(0).normal(size=(2, 8, 8, 3)).astype("float32")
>>> w = np.random.default_rng(1).normal(size=(3, 3, 3, 4)).astype("float32")
>>> mask = tfpriors.perforation.lattice_mask((8, 8), 0.5)
>>> y = tfpriors.ops.perforated_conv2d(x, w, mask.kept, mask.fill_index, (8, 8), (1, 1), (1, 1))
>>> y.shape
TensorShape([2, 8, 8, 4])
>>> reference = tfpriors.ops.perforated_conv2d_reference(
...     x, w, mask.kept, mask.fill_index, (8, 8), (1, 1), (1, 1)
... )
>>> bool(np.allclose(y, reference, atol=1e-4))
True
"""

from tfpriors.ops import autotune, library, noise
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
from tfpriors.ops.noise import NOISE_IMPLEMENTATIONS, lrt_sample, noise_implementation
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
    "lrt_sample",
    "NOISE_IMPLEMENTATIONS",
    "noise",
    "noise_implementation",
    "perforated_conv2d",
    "perforated_conv2d_reference",
]
