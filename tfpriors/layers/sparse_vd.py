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

from tfpriors.layers.gaussian import LOG_SIGMA2_INIT_SCRATCH, GaussianWeightLayer
from tfpriors.layers.geometry import Conv2DGeometry, DenseGeometry
from tfpriors.priors.log_uniform import (
    LOG_ALPHA_MAX,
    LOG_ALPHA_MIN,
    LogUniform,
    log_alpha,
    validate_threshold,
)

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
    """The keep rule of Sparse VD: a weight is kept while ``log_alpha < threshold``.

    Kept weights survive evaluation and export; the others are set to zero.

    Args:
        log_alpha_value: per-weight log dropout rates (a tensor or array).
        threshold: the layer's ``threshold``, a number in [-8, 8].

    Returns:
        A boolean tensor or array, the shape of ``log_alpha_value``.

    Example:
    >>> tfpriors.layers.sparse_vd.kept(np.array([-2.0, 3.0, 5.0]), 3.0)
    array([ True, False, False])
    """
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


class SparseVDLayer(GaussianWeightLayer):
    """Shared machinery of the Sparse VD layers: the log-uniform prior, pruning, forward.

    Weights, sampling and config come from
    :class:`~tfpriors.layers.gaussian.GaussianWeightLayer`; this adds the keep
    rule (``threshold``) and the fused per-weight terms of the training and
    evaluation passes. Use the concrete :class:`SparseVDDense` and
    :class:`SparseVDConv2D`; their summaries (``log_alpha``, ``kept_mask``,
    ``pruned_kernel``, ``sparsity``) are defined here.

    Args:
        threshold: weights with ``log_alpha >= threshold`` are zero at evaluation
            and export; a number in [-8, 8], default 3 (alpha ~ 20).
        **kwargs: the arguments of
            :class:`~tfpriors.layers.gaussian.GaussianWeightLayer` and of the
            base Keras layer.

    Input shape:
        That of the concrete layer: ``(batch, ..., input_dim)`` for
        :class:`SparseVDDense`, ``(batch, height, width, channels)`` for
        :class:`SparseVDConv2D`.

    Output shape:
        That of the concrete layer: ``(batch, ..., units)`` or
        ``(batch, new_height, new_width, filters)``.

    Example:
    >>> layer = tfpriors.layers.SparseVDDense(4, threshold=3.0)
    >>> isinstance(layer, tfpriors.layers.SparseVDLayer)
    True
    >>> layer.build((None, 8))
    >>> layer.log_alpha().shape
    TensorShape([8, 4])
    >>> layer.kept_mask().dtype
    dtype('bool')
    >>> _ = layer.log_sigma2.assign(np.full((8, 4), 5.0))  # alpha >= e^5: all dropped
    >>> layer.sparsity()
    1.0
    >>> float(np.abs(layer.pruned_kernel()).max())
    0.0
    """

    def __init__(self, threshold=3.0, **kwargs):
        super().__init__(**kwargs)
        self.threshold = validate_threshold(threshold)
        self.prior = _PRIOR
        self._fused = _FusedTerms()

    # -- posterior summaries ---------------------------------------------------------

    def log_alpha(self):
        """Per-weight log dropout rate, clipped to [-8, 8] (float32, kernel shape)."""
        return log_alpha(self.kernel, self.log_sigma2)

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
            outputs = self._sample(
                inputs, ops.cast(self.kernel, dtype), ops.cast(variance_kernel, dtype)
            )
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
        return self._finish(outputs)

    def get_config(self):
        config = super().get_config()
        config["threshold"] = self.threshold
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
        kernel_initializer: initializer of the kernel means.
        bias_initializer: initializer of the bias.
        kernel_regularizer: regularizer of the kernel means, as in ``Dense``.
        bias_regularizer: regularizer of the bias, as in ``Dense``.
        activity_regularizer: regularizer of the output, as in ``Dense``.
        threshold: (keyword-only) weights with ``log_alpha >= threshold`` are zero
            at evaluation and export; a number in [-8, 8], default 3 (alpha ~ 20).
        log_sigma2_initializer: (keyword-only) initial log-variance, a number or an
            initializer; default -10 (from scratch; ``tfpriors.sparsify`` uses -8).
        seed: (keyword-only) seed of the local-reparameterization noise.
        dataset_size: (keyword-only) training-set size dividing the KL; usually set
            later with ``tfpriors.set_dataset_size(model, n)``.
        **kwargs: base ``keras.layers.Layer`` arguments (``name``, ``dtype``).

    Input shape:
        ``(batch, ..., input_dim)``.

    Output shape:
        ``(batch, ..., units)``.

    Example:
    >>> (x, y), _ = tfpriors.datasets.load_digits()
    >>> model = keras.Sequential([
    ...     keras.Input((64,)),
    ...     tfpriors.layers.SparseVDDense(300, activation="relu"),
    ...     tfpriors.layers.SparseVDDense(10)])
    >>> tfpriors.set_dataset_size(model, len(x))
    2
    >>> model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    >>> history = model.fit(x[:128], y[:128], epochs=1, batch_size=64, verbose=0)
    >>> bool(np.isfinite(history.history["loss"][0]))
    True
    >>> bool(0.0 <= model.layers[0].sparsity() <= 1.0)
    True
    """

    def __init__(
        self,
        units,
        activation=None,
        use_bias=True,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        kernel_regularizer=None,
        bias_regularizer=None,
        activity_regularizer=None,
        *,
        threshold=3.0,
        log_sigma2_initializer=LOG_SIGMA2_INIT_SCRATCH,
        seed=None,
        dataset_size=None,
        **kwargs,
    ):
        super().__init__(
            threshold=threshold,
            activation=activation,
            use_bias=use_bias,
            kernel_initializer=kernel_initializer,
            bias_initializer=bias_initializer,
            log_sigma2_initializer=log_sigma2_initializer,
            kernel_regularizer=kernel_regularizer,
            bias_regularizer=bias_regularizer,
            activity_regularizer=activity_regularizer,
            seed=seed,
            dataset_size=dataset_size,
            **kwargs,
        )
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
        data_format: ``"channels_last"`` or ``"channels_first"``; ``None`` (the
            default) means ``keras.config.image_data_format()``.
        dilation_rate: int or tuple of 2 ints, default 1.
        activation: activation function (name or callable); default linear.
        use_bias: whether the layer has a (non-variational) bias.
        kernel_initializer: initializer of the kernel means.
        bias_initializer: initializer of the bias.
        kernel_regularizer: regularizer of the kernel means, as in ``Conv2D``.
        bias_regularizer: regularizer of the bias, as in ``Conv2D``.
        activity_regularizer: regularizer of the output, as in ``Conv2D``.
        threshold: (keyword-only) weights with ``log_alpha >= threshold`` are zero
            at evaluation and export; a number in [-8, 8], default 3 (alpha ~ 20).
        log_sigma2_initializer: (keyword-only) initial log-variance, a number or an
            initializer; default -10 (from scratch; ``tfpriors.sparsify`` uses -8).
        seed: (keyword-only) seed of the local-reparameterization noise.
        dataset_size: (keyword-only) training-set size dividing the KL; usually set
            later with ``tfpriors.set_dataset_size(model, n)``.
        **kwargs: base ``keras.layers.Layer`` arguments (``name``, ``dtype``).

    Input shape:
        ``(batch, height, width, channels)`` (``(batch, channels, height, width)``
        with ``data_format="channels_first"``).

    Output shape:
        ``(batch, new_height, new_width, filters)`` (``(batch, filters,
        new_height, new_width)`` with ``data_format="channels_first"``).

    Example:
    >>> conv = tfpriors.layers.SparseVDConv2D(32, 3, padding="same", activation="relu")
    >>> conv(np.zeros((2, 8, 8, 1), "float32")).shape
    TensorShape([2, 8, 8, 32])
    >>> conv.log_sigma2.shape  # one log-variance per kernel weight
    TensorShape([3, 3, 1, 32])
    """

    def __init__(
        self,
        filters,
        kernel_size,
        strides=1,
        padding="valid",
        data_format=None,
        dilation_rate=1,
        activation=None,
        use_bias=True,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        kernel_regularizer=None,
        bias_regularizer=None,
        activity_regularizer=None,
        *,
        threshold=3.0,
        log_sigma2_initializer=LOG_SIGMA2_INIT_SCRATCH,
        seed=None,
        dataset_size=None,
        **kwargs,
    ):
        super().__init__(
            threshold=threshold,
            activation=activation,
            use_bias=use_bias,
            kernel_initializer=kernel_initializer,
            bias_initializer=bias_initializer,
            log_sigma2_initializer=log_sigma2_initializer,
            kernel_regularizer=kernel_regularizer,
            bias_regularizer=bias_regularizer,
            activity_regularizer=activity_regularizer,
            seed=seed,
            dataset_size=dataset_size,
            **kwargs,
        )
        self._init_geometry(
            filters,
            kernel_size,
            strides,
            padding,
            dilation_rate,
            data_format,
            ("channels_last", "channels_first"),
        )
