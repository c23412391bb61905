"""Variational Dense and Conv2D layers with a pluggable prior.

Each kernel weight has a Gaussian posterior ``N(mean, sigma^2)`` (``kernel``
holds the means, ``log_sigma2`` the log-variances, initialised to -10) and a
prior given as ``"normal"`` (``priors.Normal(1.0)``), ``"log_uniform"``
(``priors.LogUniform()``) or any :class:`tfpriors.priors.Prior` object, e.g. a
``LearnedGaussian`` or a ``DeepWeightPrior``. The layer hands its posterior
to ``prior.kl(mean, log_sigma2)`` and adds the result through the shared KL
path (:class:`tfpriors.layers.KLLayer`), so it never knows which prior it has.

Training samples the pre-activations with the local reparameterization trick
(``N(x @ mean, x^2 @ sigma^2)``), whatever the prior: it has lower variance
than sampling the weights, and a prior that needs weight samples (the Deep
Weight Prior's bound is an expectation over ``w ~ q``) draws its own
reparameterized sample inside ``kl``. Evaluation and export use the
posterior means.
"""

import keras
from keras import ops

from tfpriors.layers.gaussian import LOG_SIGMA2_INIT_SCRATCH, GaussianWeightLayer
from tfpriors.layers.geometry import Conv2DGeometry, DenseGeometry
from tfpriors.priors import base as prior_base
from tfpriors.priors.base import Prior
from tfpriors.priors.log_uniform import LogUniform
from tfpriors.priors.normal import Normal

PRIOR_NAMES = {"normal": lambda: Normal(1.0), "log_uniform": LogUniform}


def get_prior(prior):
    """Resolves a layer's ``prior`` argument to a :class:`Prior` object.

    Args:
        prior: ``"normal"``, ``"log_uniform"``, a ``Prior`` object, or the
            serialized form of one (what ``get_config`` stores).

    Returns:
        A :class:`~tfpriors.priors.Prior` (a new one for a name or a config).

    Raises:
        ValueError: for an unknown prior name.
        TypeError: for anything else that is not a prior.

    Example:
    >>> from tfpriors.layers.variational import get_prior
    >>> get_prior("normal")
    Normal(variance=1.0)
    >>> get_prior("log_uniform")
    LogUniform()
    """
    if isinstance(prior, Prior):
        return prior
    if isinstance(prior, str):
        key = prior.lower()
        if key not in PRIOR_NAMES:
            raise ValueError(
                f"`prior` must be one of {sorted(PRIOR_NAMES)} or a "
                f"tfpriors.priors.Prior object; received {prior!r}."
            )
        return PRIOR_NAMES[key]()
    if isinstance(prior, dict):
        restored = prior_base.deserialize(prior)
        if isinstance(restored, Prior):
            return restored
    raise TypeError(
        f"`prior` must be one of {sorted(PRIOR_NAMES)} or a "
        f"tfpriors.priors.Prior object; received {prior!r} of type "
        f"{type(prior).__name__}."
    )


class VariationalLayer(GaussianWeightLayer):
    """Shared machinery of the variational layers: a pluggable prior, the forward passes.

    Weights, sampling and config come from
    :class:`~tfpriors.layers.gaussian.GaussianWeightLayer`; this adds the prior
    (its KL, and a check of the kernel shape for priors over kernel slices such
    as the Deep Weight Prior). Use the concrete :class:`VariationalDense` and
    :class:`VariationalConv2D`.

    Args:
        prior: ``"normal"`` (standard normal), ``"log_uniform"`` or a
            :class:`tfpriors.priors.Prior` object (saved with the layer).
        **kwargs: the arguments of
            :class:`~tfpriors.layers.gaussian.GaussianWeightLayer` and of the
            base Keras layer.

    Input shape:
        That of the concrete layer: ``(batch, ..., input_dim)`` for
        :class:`VariationalDense`, ``(batch, height, width, channels)`` for
        :class:`VariationalConv2D`.

    Output shape:
        That of the concrete layer: ``(batch, ..., units)`` or
        ``(batch, new_height, new_width, filters)``.

    Example:
    >>> layer = tfpriors.layers.VariationalDense(4, prior="log_uniform", dataset_size=100)
    >>> isinstance(layer, tfpriors.layers.VariationalLayer)
    True
    >>> layer.prior
    LogUniform()
    >>> x = np.ones((2, 8), "float32")
    >>> bool(np.allclose(layer(x), layer(x)))  # evaluation: the posterior means
    True
    >>> len(layer.losses)  # the KL, reported at evaluation once the dataset size is known
    1
    """

    def __init__(self, prior="normal", **kwargs):
        super().__init__(**kwargs)
        self.prior = get_prior(prior)

    def _check_kernel_shape(self, kernel_shape):
        # A prior over kernel slices checks that it fits before any weight exists.
        check = getattr(self.prior, "check_kernel_shape", None)
        if check is not None:
            check(kernel_shape, self)

    def call(self, inputs, training=False):
        dtype = self.compute_dtype
        mean_kernel = ops.cast(self.kernel, dtype)
        if training:
            outputs = self._sample(inputs, mean_kernel, ops.cast(ops.exp(self.log_sigma2), dtype))
        else:
            outputs = self._linear(inputs, mean_kernel)
        # Without a dataset size, evaluation reports no KL and training refuses to run.
        self.add_kl(training)
        return self._finish(outputs)

    def _inference_weights(self):
        weights = [ops.convert_to_numpy(self.kernel)]
        if self.use_bias:
            weights.append(ops.convert_to_numpy(self.bias))
        return weights

    def get_config(self):
        config = super().get_config()
        config["prior"] = prior_base.serialize(self.prior)
        return config


@keras.saving.register_keras_serializable(package="tfpriors")
class VariationalDense(DenseGeometry, VariationalLayer):
    """Densely connected layer with a Gaussian posterior over its kernel and a prior.

    A drop-in replacement for ``keras.layers.Dense``: ``kernel`` holds the
    posterior means, ``log_sigma2`` their log-variances. The KL divergence
    from the prior, divided by the dataset size, joins the model's loss.

    Args:
        units: positive integer, dimensionality of the output space.
        activation: activation function (name or callable); default linear.
        use_bias: whether the layer has a (non-variational) bias.
        kernel_initializer: initializer of the kernel means.
        bias_initializer: initializer of the bias.
        kernel_regularizer: regularizer of the kernel means, as in ``Dense``.
        bias_regularizer: regularizer of the bias, as in ``Dense``.
        activity_regularizer: regularizer of the output, as in ``Dense``.
        prior: (keyword-only) ``"normal"`` (standard normal), ``"log_uniform"``
            or a :class:`tfpriors.priors.Prior` object (saved with the layer).
        log_sigma2_initializer: (keyword-only) initial log-variance, a number
            or an initializer; default -10.
        seed: (keyword-only) seed of the local-reparameterization noise.
        dataset_size: (keyword-only) training-set size dividing the KL; usually
            set later with ``tfpriors.set_dataset_size(model, n)``.
        **kwargs: base ``keras.layers.Layer`` arguments (``name``, ``dtype``).

    Input shape:
        ``(batch, ..., input_dim)``.

    Output shape:
        ``(batch, ..., units)``.

    Example:
    >>> (x, y), _ = tfpriors.datasets.load_digits()
    >>> model = keras.Sequential([keras.Input((64,)),
    ...                           tfpriors.layers.VariationalDense(10, prior="normal")])
    >>> tfpriors.set_dataset_size(model, len(x))
    1
    >>> model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    >>> history = model.fit(x[:128], y[:128], epochs=1, batch_size=64, verbose=0)
    >>> model.predict(x[:5], verbose=0).shape
    (5, 10)
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
        prior="normal",
        log_sigma2_initializer=LOG_SIGMA2_INIT_SCRATCH,
        seed=None,
        dataset_size=None,
        **kwargs,
    ):
        super().__init__(
            prior=prior,
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
class VariationalConv2D(Conv2DGeometry, VariationalLayer):
    """2D convolution with a Gaussian posterior over its kernel and a prior.

    A drop-in replacement for ``keras.layers.Conv2D`` (``groups=1``,
    channels last): ``kernel`` ``(kh, kw, in_channels, filters)`` holds the
    posterior means. With a ``DeepWeightPrior`` the kernel must be square and
    of the prior's kernel size.

    Args:
        filters: positive integer, the number of output channels.
        kernel_size: int or tuple of 2 ints.
        strides: int or tuple of 2 ints, default 1.
        padding: ``"valid"`` or ``"same"``.
        data_format: ``"channels_last"``, the only one supported; ``None`` (the
            default) means ``keras.config.image_data_format()``, which must then
            be ``"channels_last"``.
        dilation_rate: int or tuple of 2 ints, default 1.
        activation: activation function (name or callable); default linear.
        use_bias: whether the layer has a (non-variational) bias.
        kernel_initializer: initializer of the kernel means.
        bias_initializer: initializer of the bias.
        kernel_regularizer: regularizer of the kernel means, as in ``Conv2D``.
        bias_regularizer: regularizer of the bias, as in ``Conv2D``.
        activity_regularizer: regularizer of the output, as in ``Conv2D``.
        prior: (keyword-only) ``"normal"`` (standard normal), ``"log_uniform"``
            or a :class:`tfpriors.priors.Prior` object such as a
            :class:`~tfpriors.priors.DeepWeightPrior` (saved with the layer).
        log_sigma2_initializer: (keyword-only) initial log-variance, a number
            or an initializer; default -10.
        seed: (keyword-only) seed of the local-reparameterization noise.
        dataset_size: (keyword-only) training-set size dividing the KL; usually
            set later with ``tfpriors.set_dataset_size(model, n)``.
        **kwargs: base ``keras.layers.Layer`` arguments (``name``, ``dtype``).

    Input shape:
        ``(batch, height, width, channels)``.

    Output shape:
        ``(batch, new_height, new_width, filters)``.

    Example:
    >>> vae = tfpriors.priors.KernelVAE(kernel_size=3)  # untrained here: see KernelVAE
    >>> conv = tfpriors.layers.VariationalConv2D(
    ...     8, 3, prior=tfpriors.priors.DeepWeightPrior(vae), padding="same", dataset_size=1347)
    >>> conv(np.zeros((2, 8, 8, 1), "float32"), training=True).shape
    TensorShape([2, 8, 8, 8])
    >>> len(conv.losses)  # the Deep Weight Prior's KL bound
    1
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
        prior="normal",
        log_sigma2_initializer=LOG_SIGMA2_INIT_SCRATCH,
        seed=None,
        dataset_size=None,
        **kwargs,
    ):
        super().__init__(
            prior=prior,
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
        self._init_geometry(filters, kernel_size, strides, padding, dilation_rate, data_format)
