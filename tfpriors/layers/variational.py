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
import numpy as np
from keras import ops

from tfpriors import _validation, distributed
from tfpriors.layers.geometry import Conv2DGeometry, DenseGeometry, WeightKernelLayer
from tfpriors.layers.kl_layer import KLLayer
from tfpriors.layers.seed_state import SeedStateMixin
from tfpriors.layers.sparse_vd import LOG_SIGMA2_INIT_SCRATCH, _log_sigma2_initializer
from tfpriors.priors import base as prior_base
from tfpriors.priors.base import Prior
from tfpriors.priors.log_uniform import LogUniform
from tfpriors.priors.normal import Normal

PRIOR_NAMES = {"normal": lambda: Normal(1.0), "log_uniform": LogUniform}


def get_prior(prior):
    """Resolves a layer's ``prior`` argument to a :class:`Prior` object.

    Accepts ``"normal"``, ``"log_uniform"``, a ``Prior`` object, or the
    serialized form of one (what ``get_config`` stores).
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


class VariationalLayer(SeedStateMixin, WeightKernelLayer, KLLayer):
    """Shared machinery: posterior weights, the prior's KL, the three forward modes.

    Concrete layers mix in a geometry from :mod:`tfpriors.layers.geometry`
    (``DenseGeometry`` or ``Conv2DGeometry``), which gives the kernel shape,
    the deterministic linear map and the plain Keras layer they export to.
    """

    def __init__(
        self,
        prior="normal",
        activation=None,
        use_bias=True,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        log_sigma2_initializer=LOG_SIGMA2_INIT_SCRATCH,
        seed=None,
        dataset_size=None,
        **kwargs,
    ):
        super().__init__(dataset_size=dataset_size, **kwargs)
        self.prior = get_prior(prior)
        self.activation = keras.activations.get(activation)
        self.use_bias = _validation.boolean(use_bias, "use_bias")
        self.kernel_initializer = _validation.initializer(kernel_initializer, "kernel_initializer")
        self.bias_initializer = _validation.initializer(bias_initializer, "bias_initializer")
        self.log_sigma2_initializer = _log_sigma2_initializer(log_sigma2_initializer)
        self.seed = _validation.seed(seed)
        self.seed_generator = keras.random.SeedGenerator(seed)

    def _build_weights(self, kernel_shape, bias_shape):
        # A prior over kernel slices (the Deep Weight Prior) checks that it fits
        # this layer's kernel before any weight exists.
        check = getattr(self.prior, "check_kernel_shape", None)
        if check is not None:
            check(kernel_shape, self)
        # float32 variational parameters under mixed precision: exp(log_sigma2)
        # of -10 and the KL's logs lose too much in float16.
        self.kernel = self.add_weight(
            name="kernel", shape=kernel_shape, initializer=self.kernel_initializer, autocast=False
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
                name="bias", shape=bias_shape, initializer=self.bias_initializer
            )

    def kl(self):
        return self.prior.kl(self.kernel, self.log_sigma2)

    def call(self, inputs, training=False):
        dtype = self.compute_dtype
        mean = self._linear(inputs, ops.cast(self.kernel, dtype))
        if training:
            variance = self._linear(ops.square(inputs), ops.cast(ops.exp(self.log_sigma2), dtype))
            # The floor keeps sqrt differentiable at zero variance (float16 included).
            floor = max(1e-8, float(np.finfo(dtype).tiny))
            # The global batch's noise under a strategy (tfpriors.distributed.batch_rows).
            noise = distributed.batch_rows(
                lambda shape: keras.random.normal(shape, dtype=dtype, seed=self.seed_generator),
                ops.shape(mean),
            )
            outputs = mean + ops.sqrt(variance + floor) * noise
        else:
            outputs = mean
        # Without a dataset size, evaluation reports no KL and training refuses to run.
        self.add_kl(training)
        outputs = self._add_bias(outputs)
        if self.activation is not None:
            outputs = self.activation(outputs)
        return outputs

    def _inference_weights(self):
        weights = [ops.convert_to_numpy(self.kernel)]
        if self.use_bias:
            weights.append(ops.convert_to_numpy(self.bias))
        return weights

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "prior": prior_base.serialize(self.prior),
                "activation": keras.activations.serialize(self.activation),
                "use_bias": self.use_bias,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "bias_initializer": keras.initializers.serialize(self.bias_initializer),
                "log_sigma2_initializer": keras.initializers.serialize(self.log_sigma2_initializer),
                "seed": self.seed,
            }
        )
        return config


@keras.saving.register_keras_serializable(package="tfpriors")
class VariationalDense(DenseGeometry, VariationalLayer):
    """Densely connected layer with a Gaussian posterior over its kernel and a prior.

    A drop-in replacement for ``keras.layers.Dense``: ``kernel`` holds the
    posterior means, ``log_sigma2`` their log-variances. The KL divergence
    from the prior, divided by the dataset size, joins the model's loss.

    Args:
        units: positive integer, dimensionality of the output space.
        prior: ``"normal"`` (standard normal), ``"log_uniform"`` or a
            :class:`tfpriors.priors.Prior` object (saved with the layer).
        activation: activation function (name or callable); default linear.
        use_bias: whether the layer has a (non-variational) bias.
        kernel_initializer, bias_initializer: initializers of the means and bias.
        log_sigma2_initializer: initial log-variance, a number or an
            initializer; default -10.
        seed: seed of the local-reparameterization noise.
        dataset_size: training-set size dividing the KL; usually set later with
            ``tfpriors.set_dataset_size(model, n)``.

    Example:

    >>> model = keras.Sequential([keras.Input((64,)),
    ...                           tfpriors.layers.VariationalDense(10, prior="normal")])
    >>> tfpriors.set_dataset_size(model, 1347)
    1
    """

    def __init__(self, units, prior="normal", **kwargs):
        super().__init__(prior=prior, **kwargs)
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
        prior: ``"normal"``, ``"log_uniform"`` or a :class:`tfpriors.priors.Prior`.
        strides: int or tuple of 2 ints, default 1.
        padding: ``"valid"`` or ``"same"``.
        dilation_rate: int or tuple of 2 ints, default 1.
        **kwargs: the arguments of :class:`VariationalDense` after ``prior``.

    Example:

    >>> vae = tfpriors.priors.KernelVAE(kernel_size=3)
    >>> vae.fit(tfpriors.priors.collect_kernels(source_models), epochs=20)
    >>> conv = tfpriors.layers.VariationalConv2D(
    ...     32, 3, prior=tfpriors.priors.DeepWeightPrior(vae), padding="same")
    """

    def __init__(
        self,
        filters,
        kernel_size,
        prior="normal",
        strides=1,
        padding="valid",
        dilation_rate=1,
        **kwargs,
    ):
        super().__init__(prior=prior, **kwargs)
        self._init_geometry(filters, kernel_size, strides, padding, dilation_rate)
