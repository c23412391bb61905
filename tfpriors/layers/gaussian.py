"""Layers with a Gaussian posterior over their kernel: the part they all share.

Sparse VD (:mod:`tfpriors.layers.sparse_vd`) and variational layers
(:mod:`tfpriors.layers.variational`) keep a mean ``kernel`` and a
``log_sigma2`` per weight and train by the local reparameterization trick;
hypernetwork layers (:mod:`tfpriors.layers.hyper`) generate both from lambda
and sample the same way. What they share lives here once:
:class:`GaussianPosteriorLayer` (activation, bias switch, kernel
initializer, seeded local reparameterization and their config) is the base
of all three; :class:`GaussianWeightLayer` adds what the layers that keep
their parameters as weights share (the log-variance initializer, the
weights, the regularizers). Each subclass adds only its own terms (the
prior, the keep rule, the forward passes).
"""

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from tfpriors import _validation, distributed
from tfpriors.layers.geometry import WeightKernelLayer
from tfpriors.layers.kl_layer import KLLayer
from tfpriors.layers.seed_state import SeedStateMixin
from tfpriors.ops import noise as noise_ops
from tfpriors.ops.library import has_fused_op

# log sigma^2 of a layer trained from scratch (the Sparse VD paper's -10).
LOG_SIGMA2_INIT_SCRATCH = -10.0


def as_log_sigma2_initializer(value):
    """Resolves a ``log_sigma2_initializer`` argument to a Keras initializer.

    A number means a constant log-variance; anything else goes through
    ``keras.initializers.get``.

    Args:
        value: a number, or a Keras initializer (object, name or config).

    Returns:
        A ``keras.initializers.Initializer``.

    Raises:
        ValueError: when ``value`` is neither a number nor an initializer.

    Example:
    >>> from tfpriors.layers.gaussian import as_log_sigma2_initializer
    >>> keras.ops.convert_to_numpy(as_log_sigma2_initializer(-8.0)(shape=(2,)))
    array([-8., -8.], dtype=float32)
    >>> type(as_log_sigma2_initializer("zeros")).__name__
    'Zeros'
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
    """The variance added under the square root of the sampled pre-activations.

    It keeps the square root differentiable at zero, and is representable in
    ``dtype`` (float16 included).

    Args:
        dtype: the compute dtype, e.g. ``"float32"``.

    Returns:
        A Python float: ``1e-8``, or the smallest normal number of ``dtype`` if larger.

    Example:
    >>> tfpriors.layers.gaussian.variance_floor("float32")
    1e-08
    >>> tfpriors.layers.gaussian.variance_floor("float16")
    6.103515625e-05
    """
    return max(1e-8, float(np.finfo(keras.backend.standardize_dtype(dtype)).tiny))


def local_reparameterization(mean, variance, seed_generator, noise_shape=None, arrange=None):
    """Pre-activations ``mean + sqrt(variance) * eps`` with ``eps ~ N(0, 1)``.

    The local reparameterization trick (Kingma, Salimans & Welling 2015): the
    Gaussian weights' pre-activations are Gaussian with these moments, so
    they are sampled instead of the weights. ``eps`` is drawn for the global
    batch under a ``tf.distribute`` strategy (``tfpriors.distributed.batch_rows``),
    so an example's noise does not depend on the number of replicas.

    Args:
        mean: the pre-activations' means (batch first).
        variance: the pre-activations' variances, the shape of ``mean``.
        seed_generator: the layer's ``keras.random.SeedGenerator``.
        noise_shape: shape of the noise drawn, batch first (default: ``mean``'s).
        arrange: optional function laying the drawn noise out like ``mean``
            (hypernetwork layers group the batch by lambda draw).

    Returns:
        The sampled pre-activations, the shape and dtype of ``mean``.

    Example:
    >>> from tfpriors.layers.gaussian import local_reparameterization
    >>> x = np.ones((4, 3), "float32")
    >>> kernel = np.full((3, 2), 0.5, "float32")
    >>> variance_kernel = np.full((3, 2), 0.01, "float32")
    >>> seeds = keras.random.SeedGenerator(0)
    >>> outputs = local_reparameterization(x @ kernel, (x * x) @ variance_kernel, seeds)
    >>> outputs.shape
    TensorShape([4, 2])
    >>> bool(np.all(np.abs(outputs - 1.5) < 1.0))  # mean 1.5, standard deviation 0.17
    True
    """
    dtype = mean.dtype
    if noise_shape is None and arrange is None:
        # One pass (tfpriors.ops.lrt_sample): the compiled op where it is built. Each
        # replica of a distributed step draws its own rows of the global batch's noise.
        return noise_ops.lrt_sample(
            mean,
            variance,
            _stateless_seed(seed_generator),
            variance_floor=variance_floor(dtype),
            offset=distributed.replica_offset(ops.size(mean)),
        )
    shape = ops.shape(mean) if noise_shape is None else noise_shape
    noise = distributed.batch_rows(
        lambda rows: keras.random.normal(rows, dtype=dtype, seed=seed_generator), shape
    )
    if arrange is not None:
        noise = arrange(noise)
    return mean + ops.sqrt(variance + variance_floor(dtype)) * noise


def _stateless_seed(seed_generator):
    """The next seed of ``seed_generator``, as ``keras.random.normal`` would draw it.

    Advances the generator once and casts its state to the int32 seed Keras'
    TensorFlow backend passes to ``tf.random.stateless_normal``, so that the
    noise is the one ``keras.random.normal(shape, seed=seed_generator)`` draws.
    """
    seed = seed_generator.next()
    if seed.dtype != tf.int32:
        seed = tf.cast(tf.math.floormod(seed, tf.int32.max - 1), tf.int32)
    return seed


class GaussianPosteriorLayer(SeedStateMixin, KLLayer):
    """Base of every layer with a factorized Gaussian posterior over its kernel.

    What Sparse VD, variational and hypernetwork layers share, whatever
    holds their variational parameters (weights of the layer, or outputs of
    a hypernetwork): the activation, the bias switch, the kernel
    initializer, the seeded sampling of pre-activations by the local
    reparameterization and the config of all of these. Layers that keep
    their parameters as weights build on :class:`GaussianWeightLayer`.

    Args:
        activation: activation function (name or callable); default linear.
        use_bias: whether the layer has a bias.
        kernel_initializer: initializer of the kernel means.
        seed: seed of the sampling noise.
        dataset_size: training-set size dividing the KL (see ``KLLayer``).
        **kwargs: base ``keras.layers.Layer`` arguments (``name``, ``dtype``).

    Input shape:
        That of the concrete layer: ``(batch, ..., input_dim)`` for a dense
        layer, ``(batch, height, width, channels)`` for a convolution.

    Output shape:
        That of the concrete layer: ``(batch, ..., units)`` or
        ``(batch, new_height, new_width, filters)``.

    Example:
    >>> from tfpriors.layers.gaussian import GaussianPosteriorLayer
    >>> isinstance(tfpriors.layers.SparseVDDense(3), GaussianPosteriorLayer)
    True
    >>> isinstance(tfpriors.layers.HyperVariationalDense(3), GaussianPosteriorLayer)
    True
    """

    def __init__(
        self,
        activation=None,
        use_bias=True,
        kernel_initializer="glorot_uniform",
        seed=None,
        dataset_size=None,
        **kwargs,
    ):
        super().__init__(dataset_size=dataset_size, **kwargs)
        self.activation = _validation.activation(activation)
        self.use_bias = _validation.boolean(use_bias, "use_bias")
        # None is Keras' default for a float weight (as in keras.layers.Dense).
        self.kernel_initializer = _validation.initializer(
            "glorot_uniform" if kernel_initializer is None else kernel_initializer,
            "kernel_initializer",
        )
        self.seed = _validation.seed(seed)
        self.seed_generator = keras.random.SeedGenerator(seed)
        # XLA cannot compile the compiled noise op: where it is loaded, Keras' "auto"
        # leaves the train step uncompiled (and an explicit jit_compile=True falls back
        # with a warning) instead of failing.
        self.supports_jit = not has_fused_op()

    def _sample_preactivations(self, mean, variance, noise_shape=None, arrange=None):
        """``mean + sqrt(variance) * eps`` with the layer's seeds (``local_reparameterization``)."""
        return local_reparameterization(
            mean, variance, self.seed_generator, noise_shape=noise_shape, arrange=arrange
        )

    def _activate(self, outputs):
        return outputs if self.activation is None else self.activation(outputs)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "activation": keras.activations.serialize(self.activation),
                "use_bias": self.use_bias,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "seed": self.seed,
            }
        )
        return config


class GaussianWeightLayer(WeightKernelLayer, GaussianPosteriorLayer):
    """Base of the layers with a Gaussian posterior ``N(kernel, exp(log_sigma2))`` per weight.

    Concrete layers mix in a geometry (``DenseGeometry`` or
    ``Conv2DGeometry`` from :mod:`tfpriors.layers.geometry`), subclass this
    with their own prior and forward passes, and call :meth:`_sample` in
    training and :meth:`_finish` on every output.

    Args:
        activation: activation function (name or callable); default linear.
        use_bias: whether the layer has a (non-variational) bias.
        kernel_initializer: initializer of the kernel means.
        bias_initializer: initializer of the bias.
        log_sigma2_initializer: a number (constant log-variance) or a Keras
            initializer of ``log_sigma2``; default -10.
        kernel_regularizer: regularizer of the kernel means.
        bias_regularizer: regularizer of the bias.
        activity_regularizer: regularizer of the layer's output.
        seed: seed of the sampling noise.
        dataset_size: training-set size dividing the KL (see ``KLLayer``).
        **kwargs: base ``keras.layers.Layer`` arguments (``name``, ``dtype``).

    Input shape:
        That of the geometry: ``(batch, ..., input_dim)`` for a dense layer,
        ``(batch, height, width, channels)`` for a convolution.

    Output shape:
        That of the geometry: ``(batch, ..., units)`` or
        ``(batch, new_height, new_width, filters)``.

    Example:
    >>> layer = tfpriors.layers.VariationalDense(3)
    >>> isinstance(layer, tfpriors.layers.gaussian.GaussianWeightLayer)
    True
    >>> layer.build((None, 4))
    >>> [w.name for w in layer.trainable_weights]
    ['kernel', 'log_sigma2', 'bias']
    >>> float(layer.log_sigma2.numpy().max())
    -10.0
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
            activation=activation,
            use_bias=use_bias,
            kernel_initializer=kernel_initializer,
            seed=seed,
            dataset_size=dataset_size,
            activity_regularizer=_validation.regularizer(
                activity_regularizer, "activity_regularizer"
            ),
            **kwargs,
        )
        self.bias_initializer = _validation.initializer(bias_initializer, "bias_initializer")
        self.log_sigma2_initializer = as_log_sigma2_initializer(log_sigma2_initializer)
        self.kernel_regularizer = _validation.regularizer(kernel_regularizer, "kernel_regularizer")
        self.bias_regularizer = _validation.regularizer(bias_regularizer, "bias_regularizer")

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
        """Returns the unscaled KL(q || p) of the kernel under the layer's ``prior``."""
        return self.prior.kl(self.kernel, self.log_sigma2)

    def _sample(self, inputs, mean_kernel, variance_kernel):
        """Training pre-activations of ``inputs`` by the local reparameterization."""
        mean = self._linear(inputs, mean_kernel)
        variance = self._linear(ops.square(inputs), variance_kernel)
        return self._sample_preactivations(mean, variance)

    def _finish(self, outputs):
        return self._activate(self._add_bias(outputs))

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "bias_initializer": keras.initializers.serialize(self.bias_initializer),
                "log_sigma2_initializer": keras.initializers.serialize(self.log_sigma2_initializer),
                "kernel_regularizer": keras.regularizers.serialize(self.kernel_regularizer),
                "bias_regularizer": keras.regularizers.serialize(self.bias_regularizer),
                "activity_regularizer": keras.regularizers.serialize(self.activity_regularizer),
            }
        )
        return config


__all__ = [
    "GaussianPosteriorLayer",
    "GaussianWeightLayer",
    "LOG_SIGMA2_INIT_SCRATCH",
    "as_log_sigma2_initializer",
    "local_reparameterization",
    "variance_floor",
]
