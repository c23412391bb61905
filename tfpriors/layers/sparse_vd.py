"""Sparse Variational Dropout layers (Molchanov, Ashukha & Vetrov, 2017).

Each weight has a Gaussian posterior ``N(theta, sigma^2)`` in the additive
parametrization (``theta`` is the layer's ``kernel``, ``log_sigma2`` its
log-variance) and the log-uniform prior. Training uses the local
reparameterization trick: the pre-activations are sampled from
``N(x @ theta, (x^2) @ (alpha * theta^2) + 1e-8)`` instead of the weights.
Evaluation uses the posterior mean with every weight whose
``log_alpha >= threshold`` set to zero.
"""

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from tfpriors import _validation, distributed
from tfpriors.layers.geometry import Conv2DGeometry, DenseGeometry, WeightKernelLayer
from tfpriors.layers.kl_layer import KLLayer
from tfpriors.layers.seed_state import SeedStateMixin
from tfpriors.priors.log_uniform import (
    LOG_ALPHA_MAX,
    LOG_ALPHA_MIN,
    LogUniform,
    log_alpha,
    validate_threshold,
)

# Initial log-variance when training from scratch (reference code and paper).
LOG_SIGMA2_INIT_SCRATCH = -10.0
_PRIOR = LogUniform()


# The per-weight terms (log_alpha, the variance kernel, the KL) are a dozen
# element-wise passes over the kernel, forward and backward. Unfused, they cost
# several times the layer's matmuls on CPU; XLA fuses the forward pass and the
# hand-written backward pass into one loop each (autodiff of the fused forward
# is not fused).
def _training_forward(theta, log_sigma2):
    log_alpha_value = log_alpha(theta, log_sigma2)
    variance_kernel = ops.exp(log_alpha_value) * ops.square(theta)
    return variance_kernel, ops.sum(_PRIOR.kl_from_log_alpha(log_alpha_value))


def _training_backward(theta, log_sigma2, variance_grad, kl_grad):
    theta2 = ops.square(theta)
    unclipped = log_sigma2 - ops.log(theta2 + 1e-8)
    log_alpha_value = ops.clip(unclipped, LOG_ALPHA_MIN, LOG_ALPHA_MAX)
    # The clip passes gradient only inside [-8, 8] (boundaries included, as tf.clip).
    inside = ops.cast((unclipped >= LOG_ALPHA_MIN) & (unclipped <= LOG_ALPHA_MAX), theta.dtype)
    alpha = ops.exp(log_alpha_value)
    log_alpha_grad = inside * (
        variance_grad * alpha * theta2 + kl_grad * _PRIOR.kl_derivative(log_alpha_value)
    )
    theta_grad = variance_grad * alpha * 2.0 * theta - log_alpha_grad * 2.0 * theta / (
        theta2 + 1e-8
    )
    return theta_grad, log_alpha_grad


def kept(log_alpha_value, threshold):
    """The keep rule of Sparse VD: a weight survives evaluation and export while
    ``log_alpha < threshold`` (boolean, the shape of ``log_alpha_value``)."""
    return log_alpha_value < threshold


def _evaluation(theta, log_sigma2, threshold):
    log_alpha_value = log_alpha(theta, log_sigma2)
    pruned_kernel = theta * ops.cast(kept(log_alpha_value, threshold), theta.dtype)
    return pruned_kernel, ops.sum(_PRIOR.kl_from_log_alpha(log_alpha_value))


def _pruned(theta, log_sigma2, threshold):
    return theta * ops.cast(kept(log_alpha(theta, log_sigma2), threshold), theta.dtype)


class _FusedTerms:
    """XLA-compiled per-weight terms of one layer.

    Each layer owns its compiled functions, so each traces once for its
    kernel shape (a shared, shape-relaxed function mis-infers shapes under XLA
    in TF 2.21, and a shared exact one retraces for every layer).
    """

    def __init__(self):
        forward = tf.function(_training_forward, jit_compile=True)
        backward = tf.function(_training_backward, jit_compile=True)
        self.evaluation = tf.function(_evaluation, jit_compile=True)
        # Prediction without a dataset size reports no KL: skip computing it.
        self.pruned = tf.function(_pruned, jit_compile=True)

        @tf.custom_gradient
        def training(theta, log_sigma2):
            """Returns ``(alpha * theta^2, sum KL)`` for the local reparameterization."""

            def grad(variance_grad, kl_grad):
                return backward(theta, log_sigma2, variance_grad, kl_grad)

            return forward(theta, log_sigma2), grad

        self.training = training


def _log_sigma2_initializer(value):
    """A number means a constant log-variance; anything else is a Keras initializer."""
    if isinstance(value, (int, float, np.number)) and not isinstance(value, bool):
        return keras.initializers.Constant(_validation.real_number(value, "log_sigma2_initializer"))
    try:
        return keras.initializers.get(value)
    except (ValueError, TypeError) as error:
        raise ValueError(
            f"`log_sigma2_initializer` must be a number or a Keras initializer; received {value!r}."
        ) from error


class SparseVDLayer(SeedStateMixin, WeightKernelLayer, KLLayer):
    """Shared machinery of the Sparse VD layers: weights, KL, pruning, forward modes.

    Concrete layers mix in a geometry from :mod:`tfpriors.layers.geometry`
    (``DenseGeometry`` or ``Conv2DGeometry``), which gives the kernel shape,
    the deterministic linear map and the plain Keras layer they export to.
    """

    def __init__(
        self,
        activation=None,
        use_bias=True,
        threshold=3.0,
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
        self.threshold = validate_threshold(threshold)
        self.kernel_initializer = _validation.initializer(kernel_initializer, "kernel_initializer")
        self.bias_initializer = _validation.initializer(bias_initializer, "bias_initializer")
        self.log_sigma2_initializer = _log_sigma2_initializer(log_sigma2_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.bias_regularizer = keras.regularizers.get(bias_regularizer)
        self.seed = _validation.seed(seed)
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.prior = _PRIOR
        self._fused = _FusedTerms()

    def _build_weights(self, kernel_shape, bias_shape):
        # autocast=False keeps the variational parameters in float32 under
        # mixed precision: log(theta^2 + 1e-8) underflows in float16.
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

    # -- posterior summaries ---------------------------------------------------------

    def log_alpha(self):
        """Per-weight log dropout rate, clipped to [-8, 8] (float32, kernel shape)."""
        return log_alpha(self.kernel, self.log_sigma2)

    def kl(self):
        return self.prior.kl(self.kernel, self.log_sigma2)

    def kept_mask(self):
        """Boolean NumPy mask of the weights kept at evaluation (log_alpha < threshold)."""
        return ops.convert_to_numpy(kept(self.log_alpha(), self.threshold))

    def pruned_kernel(self):
        """The evaluation kernel: posterior means with dropped weights set to zero."""
        keep = ops.cast(kept(self.log_alpha(), self.threshold), self.kernel.dtype)
        return self.kernel * keep

    def _inference_weights(self):
        weights = [ops.convert_to_numpy(self.pruned_kernel())]
        if self.use_bias:
            weights.append(ops.convert_to_numpy(self.bias))
        return weights

    def sparsity(self):
        """Fraction of kernel weights removed at evaluation, in [0, 1]."""
        return 1.0 - float(np.mean(self.kept_mask()))

    # -- forward -------------------------------------------------------------------

    def call(self, inputs, training=False):
        dtype = self.compute_dtype
        if training:
            variance_kernel, kl = self._fused.training(self.kernel.value, self.log_sigma2.value)
            self.add_kl(training, kl)
            theta = ops.cast(self.kernel, dtype)
            variance_kernel = ops.cast(variance_kernel, dtype)
            mean = self._linear(inputs, theta)
            variance = self._linear(ops.square(inputs), variance_kernel)
            # 1e-8 keeps sqrt differentiable; float16 needs a representable floor.
            floor = max(1e-8, float(np.finfo(dtype).tiny))
            # Drawn for the global batch under a strategy, so that the noise
            # of an example does not depend on the number of replicas.
            noise = distributed.batch_rows(
                lambda shape: keras.random.normal(shape, dtype=dtype, seed=self.seed_generator),
                ops.shape(mean),
            )
            outputs = mean + ops.sqrt(variance + floor) * noise
        else:
            if self.wants_kl(training):
                pruned_kernel, kl = self._fused.evaluation(
                    self.kernel.value, self.log_sigma2.value, self.threshold
                )
                self.add_kl(training, kl)
            else:  # prediction without a dataset size reports no KL: none computed
                pruned_kernel = self._fused.pruned(
                    self.kernel.value, self.log_sigma2.value, self.threshold
                )
            outputs = self._linear(inputs, ops.cast(pruned_kernel, dtype))
        outputs = self._add_bias(outputs)
        if self.activation is not None:
            outputs = self.activation(outputs)
        return outputs

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "activation": keras.activations.serialize(self.activation),
                "use_bias": self.use_bias,
                "threshold": self.threshold,
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


@keras.saving.register_keras_serializable(package="tfpriors")
class SparseVDDense(DenseGeometry, SparseVDLayer):
    """Densely connected layer with Sparse Variational Dropout on its kernel.

    A drop-in replacement for ``keras.layers.Dense``: ``kernel`` and ``bias`` have
    the same shapes and meaning (``kernel`` holds the posterior means), plus a
    ``log_sigma2`` weight of the kernel's shape. Its KL divergence from the
    log-uniform prior joins the model's loss once the dataset size is set.

    Args:
        units: positive integer, dimensionality of the output space.
        activation: activation function (name or callable); default linear.
        use_bias: whether the layer has a (non-variational) bias.
        threshold: weights with ``log_alpha >= threshold`` are zero at evaluation
            and export; a number in [-8, 8], default 3 (alpha ~ 20).
        kernel_initializer, bias_initializer: initializers of the means and bias.
        log_sigma2_initializer: initial log-variance, a number or an initializer;
            default -10 (training from scratch; ``tfpriors.sparsify`` uses -8).
        kernel_regularizer, bias_regularizer, activity_regularizer: as in Dense.
        seed: seed of the local-reparameterization noise.
        dataset_size: training-set size dividing the KL; usually set later with
            ``tfpriors.set_dataset_size(model, n)``.

    Input shape: ``(batch, ..., input_dim)``. Output shape: ``(batch, ..., units)``.

    Example:

    >>> model = keras.Sequential([
    ...     keras.Input((64,)),
    ...     tfpriors.layers.SparseVDDense(300, activation="relu"),
    ...     tfpriors.layers.SparseVDDense(10)])
    >>> tfpriors.set_dataset_size(model, 1347)
    2
    >>> model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    """

    def __init__(self, units, **kwargs):
        super().__init__(**kwargs)
        self._init_geometry(units)


@keras.saving.register_keras_serializable(package="tfpriors")
class SparseVDConv2D(Conv2DGeometry, SparseVDLayer):
    """2D convolution with Sparse Variational Dropout on its kernel.

    A drop-in replacement for ``keras.layers.Conv2D`` (``groups=1``): ``kernel``
    ``(kh, kw, in_channels, filters)`` and ``bias`` ``(filters,)`` mean what they
    mean there. Training samples the output of the convolution with the local
    reparameterization trick (one convolution for the mean, one of ``x^2`` for
    the variance).

    Args:
        filters: positive integer, the number of output channels.
        kernel_size: int or tuple of 2 ints.
        strides: int or tuple of 2 ints, default 1.
        padding: ``"valid"`` or ``"same"``.
        data_format: ``"channels_last"`` (default) or ``"channels_first"``.
        dilation_rate: int or tuple of 2 ints, default 1.
        **kwargs: the arguments of :class:`SparseVDDense` after ``units``
            (activation, use_bias, threshold, initializers, seed, dataset_size).

    Example:

    >>> conv = tfpriors.layers.SparseVDConv2D(32, 3, padding="same", activation="relu")
    >>> conv(np.zeros((2, 8, 8, 1), "float32")).shape
    TensorShape([2, 8, 8, 32])
    """

    def __init__(
        self,
        filters,
        kernel_size,
        strides=1,
        padding="valid",
        data_format=None,
        dilation_rate=1,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self._init_geometry(
            filters,
            kernel_size,
            strides,
            padding,
            dilation_rate,
            data_format,
            ("channels_last", "channels_first"),
        )
