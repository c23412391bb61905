"""Layers with a Gaussian posterior over their kernel: the part they all share.

Sparse VD (:mod:`tfpriors.layers.sparse_vd`) and variational layers
(:mod:`tfpriors.layers.variational`) keep a mean ``kernel`` and a
``log_sigma2`` per weight and train by the local reparameterization trick;
hypernetwork layers (:mod:`tfpriors.layers.hyper`) generate both from lambda
and sample the same way. What they share lives here once: the log-variance
initializer, the weights, the sampling of pre-activations, bias and
activation, and the config. Each subclass adds only its own terms (the
prior, the keep rule, the forward passes).
"""

import keras
import numpy as np
from keras import ops

from tfpriors import _validation, distributed
from tfpriors.layers.geometry import WeightKernelLayer
from tfpriors.layers.kl_layer import KLLayer
from tfpriors.layers.seed_state import SeedStateMixin

# log sigma^2 of a layer trained from scratch (the Sparse VD paper's -10).
LOG_SIGMA2_INIT_SCRATCH = -10.0


def as_log_sigma2_initializer(value):
    """A number means a constant log-variance; anything else is a Keras initializer.

    Example:

    >>> tfpriors.layers.gaussian.as_log_sigma2_initializer(-8.0)(shape=(2,))
    """
    if isinstance(value, (int, float, np.number)) and not isinstance(value, bool):
        return keras.initializers.Constant(_validation.real_number(value, "log_sigma2_initializer"))
    try:
        return keras.initializers.get(value)
    except (ValueError, TypeError) as error:
        raise ValueError(
            f"`log_sigma2_initializer` must be a number or a Keras initializer; received {value!r}."
        ) from error


def variance_floor(dtype):
    """The variance added under the square root: keeps it differentiable at zero, and
    representable in float16."""
    return max(1e-8, float(np.finfo(keras.backend.standardize_dtype(dtype)).tiny))


def local_reparameterization(mean, variance, seed_generator, noise_shape=None, arrange=None):
    """Pre-activations ``mean + sqrt(variance) * eps`` with ``eps ~ N(0, 1)``.

    The local reparameterization trick (Kingma, Salimans & Welling 2015): the
    Gaussian weights' pre-activations are Gaussian with these moments, so
    they are sampled instead of the weights. ``eps`` is drawn for the global
    batch under a ``tf.distribute`` strategy (``tfpriors.distributed.batch_rows``),
    so an example's noise does not depend on the number of replicas.

    Args:
        mean, variance: the pre-activations' moments (same shape, batch first).
        seed_generator: the layer's ``keras.random.SeedGenerator``.
        noise_shape: shape of the noise drawn, batch first (default: ``mean``'s).
        arrange: optional function laying the drawn noise out like ``mean``
            (hypernetwork layers group the batch by lambda draw).

    Example:

    >>> outputs = local_reparameterization(x @ kernel, (x * x) @ variance_kernel, seeds)
    """
    dtype = mean.dtype
    shape = ops.shape(mean) if noise_shape is None else noise_shape
    noise = distributed.batch_rows(
        lambda rows: keras.random.normal(rows, dtype=dtype, seed=seed_generator), shape
    )
    if arrange is not None:
        noise = arrange(noise)
    return mean + ops.sqrt(variance + variance_floor(dtype)) * noise


class GaussianWeightLayer(SeedStateMixin, WeightKernelLayer, KLLayer):
    """Base of the layers with a Gaussian posterior ``N(kernel, exp(log_sigma2))`` per weight.

    Concrete layers mix in a geometry (``DenseGeometry`` or
    ``Conv2DGeometry`` from :mod:`tfpriors.layers.geometry`), subclass this
    with their own prior and forward passes, and call :meth:`_sample` in
    training and :meth:`_finish` on every output.

    Args:
        activation, use_bias, kernel_initializer, bias_initializer,
        kernel_regularizer, bias_regularizer, activity_regularizer: as in
            ``keras.layers.Dense``.
        log_sigma2_initializer: a number (constant log-variance) or a Keras
            initializer of ``log_sigma2``.
        seed: seed of the sampling noise.
        dataset_size: training-set size dividing the KL (see ``KLLayer``).
    """

    def __init__(
        self,
        activation=None,
        use_bias=True,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        log_sigma2_initializer=LOG_SIGMA2_INIT_SCRATCH,
        kernel_regularizer=None,
        bias_regularizer=None,
        activity_regularizer=None,
        seed=None,
        dataset_size=None,
        **kwargs,
    ):
        super().__init__(
            dataset_size=dataset_size, activity_regularizer=activity_regularizer, **kwargs
        )
        self.activation = keras.activations.get(activation)
        self.use_bias = _validation.boolean(use_bias, "use_bias")
        self.kernel_initializer = _validation.initializer(kernel_initializer, "kernel_initializer")
        self.bias_initializer = _validation.initializer(bias_initializer, "bias_initializer")
        self.log_sigma2_initializer = as_log_sigma2_initializer(log_sigma2_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.bias_regularizer = keras.regularizers.get(bias_regularizer)
        self.seed = _validation.seed(seed)
        self.seed_generator = keras.random.SeedGenerator(seed)

    def _check_kernel_shape(self, kernel_shape):
        """Hook: refuse a kernel shape before any weight exists (a prior over slices)."""

    def _build_weights(self, kernel_shape, bias_shape):
        self._check_kernel_shape(kernel_shape)
        # float32 variational parameters under mixed precision: log(theta^2 + 1e-8),
        # exp(log_sigma2) of -10 and the KL's logs lose too much in float16.
        self.kernel = self.add_weight(
            name="kernel",
            shape=kernel_shape,
            initializer=self.kernel_initializer,
            regularizer=self.kernel_regularizer,
            autocast=False,
        )
        self.log_sigma2 = self.add_weight(
            name="log_sigma2",
            shape=kernel_shape,
            initializer=self.log_sigma2_initializer,
            autocast=False,
        )
        self.bias = None
        if self.use_bias:
            self.bias = self.add_weight(
                name="bias",
                shape=bias_shape,
                initializer=self.bias_initializer,
                regularizer=self.bias_regularizer,
            )

    def kl(self):
        return self.prior.kl(self.kernel, self.log_sigma2)

    def _sample(self, inputs, mean_kernel, variance_kernel):
        """Training pre-activations of ``inputs`` by the local reparameterization."""
        mean = self._linear(inputs, mean_kernel)
        variance = self._linear(ops.square(inputs), variance_kernel)
        return local_reparameterization(mean, variance, self.seed_generator)

    def _finish(self, outputs):
        outputs = self._add_bias(outputs)
        return outputs if self.activation is None else self.activation(outputs)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "activation": keras.activations.serialize(self.activation),
                "use_bias": self.use_bias,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "bias_initializer": keras.initializers.serialize(self.bias_initializer),
                "log_sigma2_initializer": keras.initializers.serialize(self.log_sigma2_initializer),
                "kernel_regularizer": keras.regularizers.serialize(self.kernel_regularizer),
                "bias_regularizer": keras.regularizers.serialize(self.bias_regularizer),
                "activity_regularizer": keras.regularizers.serialize(self.activity_regularizer),
                "seed": self.seed,
            }
        )
        return config


__all__ = [
    "GaussianWeightLayer",
    "LOG_SIGMA2_INIT_SCRATCH",
    "as_log_sigma2_initializer",
    "local_reparameterization",
    "variance_floor",
]
