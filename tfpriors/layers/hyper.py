"""Lambda-hypernetwork layers: one variational layer for every complexity level.

The variational parameters of a layer (the posterior means and log-variances
of its kernel, and its bias) are functions of a complexity parameter
``lambda``, the weight of the KL term (Grebenkova et al., complexity-controlled
variational optimization). The hypernetwork sees the normalized log lambda

    l = (log lambda - log lambda_min) / (log lambda_max - log lambda_min)  in [0, 1]

and produces the parameters either

* ``kind="linear"``: ``p(l) = l * A + (1 - l) * B``, or
* ``kind="lowrank"``: ``P(l) = C + a1(h) a2(h)^T / sqrt(rows * cols)`` with
  ``h = relu(W l + b)`` (``hidden_units`` ReLU units; ``a1``, ``a2`` are linear
  maps of ``h`` to an ``(rows, rank)`` and a ``(cols, rank)`` factor; vectors
  use ``C + a(h)``). The fixed scale keeps plain SGD stable: each head's
  gradient sums over a whole row or column of the matrix.

Training feeds several lambda draws per batch: the batch is split into
``len(lambdas)`` interleaved groups (example ``i`` in group ``i % draws``, so
that a batch split over replicas keeps each example's lambda), group ``d``
runs with the weights at ``lambda_d`` (one batched matmul for all groups,
im2col for convolutions; local reparameterization), and the KL added to the
loss is the mean over draws of
``lambda_d * KL(q_lambda_d || N(0, prior_variance))`` through the shared KL
path (divided by the dataset size, times ``kl_weight``). The bias is a
deterministic function of lambda (no KL), as in most variational layers.
"""

import math

import keras
import numpy as np
import tensorflow as tf

from tfpriors import _validation
from tfpriors.layers.gaussian import GaussianPosteriorLayer
from tfpriors.layers.geometry import Conv2DGeometry, DenseGeometry
from tfpriors.priors.normal import Normal

KINDS = ("linear", "lowrank")
DEFAULT_LAMBDA_RANGE = (1e-3, 10.0)
# sigma = exp(-3): small enough that the noise does not swamp a freshly
# initialised layer, large enough for the KL gradient to move it quickly.
LOG_SIGMA2_INIT = -6.0
LOG_SIGMA2_MIN, LOG_SIGMA2_MAX = -20.0, 4.0


def validate_lambda_range(lambda_range):
    """Returns ``lambda_range`` as a ``(low, high)`` float pair with 0 < low < high."""
    items = _validation.sequence(
        lambda_range, "lambda_range", "a pair (low, high) of positive numbers"
    )
    if len(items) != 2:
        raise ValueError(
            "`lambda_range` must be a pair (low, high) of positive numbers; "
            f"received {lambda_range!r}."
        )
    low = _validation.real_number(items[0], "lambda_range[0]")
    high = _validation.real_number(items[1], "lambda_range[1]")
    if low <= 0 or high <= 0:
        raise ValueError(
            "`lambda_range` must hold positive numbers (lambda is sampled "
            f"log-uniformly); received {lambda_range!r}."
        )
    if low >= high:
        raise ValueError(
            f"`lambda_range` must be (low, high) with low < high; received {lambda_range!r}."
        )
    return (low, high)


def validate_lambda(value, lambda_range, name="lambda_value"):
    """Returns ``value`` as a float inside ``lambda_range`` (the range trained on)."""
    value = _validation.real_number(value, name)
    low, high = lambda_range
    # A relative tolerance lets a range's own printed ends (e.g. 1e-3) pass.
    if not low * (1 - 1e-6) <= value <= high * (1 + 1e-6):
        raise ValueError(
            f"`{name}` must lie in the trained lambda range [{low:g}, {high:g}]; "
            f"received {value:g}. The hypernetwork is not defined outside it."
        )
    return min(max(value, low), high)


def normalized_log_lambda(lambdas, lambda_range):
    """Maps lambda values to ``l`` in [0, 1] (log scale over ``lambda_range``)."""
    low, high = lambda_range
    lambdas = tf.cast(lambdas, "float32")
    return (tf.math.log(lambdas) - math.log(low)) / (math.log(high) - math.log(low))


def sample_lambdas(draws, lambda_range, seed):
    """``draws`` lambda values drawn log-uniformly from ``lambda_range`` (float32, (draws,))."""
    low, high = lambda_range
    logs = keras.random.uniform((draws,), minval=math.log(low), maxval=math.log(high), seed=seed)
    return tf.exp(logs)


def _to_groups(batch_values, draws):
    """``(b, ...) -> (draws, ceil(b / draws), ...)``: example ``i`` goes to group ``i % draws``.

    Interleaved rather than consecutive groups: when a strategy splits the
    global batch into per-replica slices whose sizes are multiples of
    ``draws``, every example meets the same lambda as on a single device.
    The batch is padded with zeros to a multiple of ``draws``.
    """
    if draws == 1:
        return batch_values[None]
    batch = tf.shape(batch_values)[0]
    per_group = (batch + draws - 1) // draws
    rank = len(batch_values.shape)
    padded = tf.pad(batch_values, [[0, per_group * draws - batch]] + [[0, 0]] * (rank - 1))
    rows = tf.reshape(padded, tf.concat([[per_group, draws], tf.shape(batch_values)[1:]], 0))
    return tf.transpose(rows, [1, 0] + list(range(2, rank + 1)))


def _from_groups(grouped, batch):
    """The inverse of :func:`_to_groups`: ``(draws, per_group, ...) -> (batch, ...)``."""
    draws = grouped.shape[0]
    if draws == 1:
        return grouped[0]
    rank = len(grouped.shape)
    rows = tf.transpose(grouped, [1, 0] + list(range(2, rank)))
    return tf.reshape(rows, tf.concat([[-1], tf.shape(grouped)[2:]], 0))[:batch]


# The sections every hypernetwork layer's docstring shares.
_COMMON_ARGS = """
        activation: activation function (name or callable); default linear.
        use_bias: whether the layer has a bias (a deterministic function of lambda).
        kernel_initializer: initializer of the kernel means.
        kind: (keyword-only) ``"linear"`` (``l*A + (1-l)*B``) or ``"lowrank"``
            (``C + a1(h) a2(h)^T``, ``h = relu(W l + b)``).
        rank: (keyword-only) rank of the low-rank correction (``kind="lowrank"``),
            default 2.
        hidden_units: (keyword-only) ReLU units of ``h`` (``kind="lowrank"``),
            default 50.
        lambda_range: (keyword-only) ``(low, high)``, the lambda values the layer is
            trained for (set by the owning ``LambdaHyperModel``).
        lambda_draws: (keyword-only) lambda values drawn per training batch when the
            layer is used on its own (the owning model passes its own draws).
        prior_variance: (keyword-only) variance of the ``Normal`` prior (set by the
            owning model).
        log_sigma2_init: (keyword-only) initial log-variance of every kernel weight,
            default -6.
        seed: (keyword-only) seed of the noise and of the layer's own lambda draws.
        dataset_size: (keyword-only) training-set size dividing the KL; usually set
            with ``tfpriors.set_dataset_size(model, n)``.
        **kwargs: base ``keras.layers.Layer`` arguments (``name``, ``dtype``).
"""

_CALL_ARGUMENTS = """
    Call arguments:
        inputs: a batch.
        lambdas: a float or a 1-D tensor of lambda values, one per group of
            the batch (example ``i`` goes to group ``i % len(lambdas)``).
            ``None``: in training, ``lambda_draws`` values drawn log-uniformly
            by the layer itself; at evaluation, the log midpoint of the range
            (``default_lambda()``). Inside a
            :class:`tfpriors.hyper.LambdaHyperModel` the model passes them.
        training: sample the outputs (local reparameterization) or use the
            posterior means.
"""


class HyperVariationalLayer(GaussianPosteriorLayer):
    __doc__ = (
        """Shared machinery of the lambda-hypernetwork layers.

    Subclasses set ``self._kernel_shape`` and ``self._out_dim`` in ``build``
    (then call ``_build_hypernetwork``) and implement
    ``_batched_linear(groups, kernels)``: ``groups`` is ``(draws, b, ...)``,
    ``kernels`` is ``(draws, *kernel_shape)``, the result ``(draws, b, ...)``.
    Use the concrete :class:`HyperVariationalDense` and
    :class:`HyperVariationalConv2D`.

    Args:"""
        + _COMMON_ARGS
        + """
    Input shape:
        That of the concrete layer: ``(batch, ..., input_dim)`` for
        :class:`HyperVariationalDense`, ``(batch, height, width, channels)``
        for :class:`HyperVariationalConv2D`.

    Output shape:
        That of the concrete layer: ``(batch, ..., units)`` or
        ``(batch, new_height, new_width, filters)``.
"""
        + _CALL_ARGUMENTS
        + """
    Example:
    >>> layer = tfpriors.layers.HyperVariationalDense(3, lambda_range=(0.01, 1.0))
    >>> isinstance(layer, tfpriors.layers.HyperVariationalLayer)
    True
    >>> layer.build((None, 4))
    >>> round(layer.default_lambda(), 4)  # the log midpoint of the range
    0.1
    >>> parameters = layer.parameters_at([0.01, 1.0])
    >>> sorted(parameters)
    ['bias', 'kernel_log_sigma2', 'kernel_mean']
    >>> parameters["kernel_mean"].shape
    TensorShape([2, 4, 3])
    >>> [w.shape for w in layer.plain_weights(0.1)]
    [(4, 3), (3,)]
    """
    )

    def __init__(
        self,
        activation=None,
        use_bias=True,
        kernel_initializer="glorot_uniform",
        *,
        kind="linear",
        rank=2,
        hidden_units=50,
        lambda_range=DEFAULT_LAMBDA_RANGE,
        lambda_draws=1,
        prior_variance=1.0,
        log_sigma2_init=LOG_SIGMA2_INIT,
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
            **kwargs,
        )
        self.kind = _validation.one_of(kind, "kind", set(KINDS))
        self.rank = _validation.positive_int(rank, "rank")
        self.hidden_units = _validation.positive_int(hidden_units, "hidden_units")
        self.lambda_range = validate_lambda_range(lambda_range)
        self.lambda_draws = _validation.positive_int(lambda_draws, "lambda_draws")
        self.prior_variance = _validation.positive_number(prior_variance, "prior_variance")
        self.log_sigma2_init = _validation.real_number(log_sigma2_init, "log_sigma2_init")

    @property
    def prior(self):
        return Normal(variance=self.prior_variance)

    # -- the hypernetwork ---------------------------------------------------------------

    def build(self, input_shape):
        self._kernel_shape, self._out_dim = self._kernel_shape_from(input_shape)
        self._build_hypernetwork()

    def _build_hypernetwork(self):
        rows = math.prod(self._kernel_shape[:-1])
        cols = self._kernel_shape[-1]
        self._matrix_shape = (rows, cols)
        kernel_shape = tuple(self._kernel_shape)

        def kernel_initializer(shape, dtype=None):
            # Fans of the real kernel shape (a conv kernel's receptive field).
            return tf.reshape(self.kernel_initializer(kernel_shape, dtype=dtype), shape)

        # (name, matrix shape or vector length, initializer)
        self._targets = [
            ("kernel_mean", (rows, cols), kernel_initializer),
            ("kernel_log_sigma2", (rows, cols), keras.initializers.Constant(self.log_sigma2_init)),
        ]
        if self.use_bias:
            self._targets.append(("bias", (cols,), keras.initializers.Zeros()))
        self._hyper = {}
        if self.kind == "lowrank":
            self._hyper["hidden_kernel"] = self._weight(
                "hidden_kernel",
                (1, self.hidden_units),
                keras.initializers.RandomNormal(stddev=1.0, seed=self.seed),
            )
            # Biases spread the ReLU kinks over [0, 1]: with zero biases every
            # hidden unit would be l * relu(w), linear in l.
            self._hyper["hidden_bias"] = self._weight(
                "hidden_bias",
                (self.hidden_units,),
                keras.initializers.RandomUniform(-1.0, 1.0, seed=self.seed),
            )
        for name, shape, initializer in self._targets:
            self._build_target(name, shape, initializer)

    def _weight(self, name, shape, initializer):
        # float32 under mixed precision too: log-variances and the small
        # low-rank corrections lose their meaning in float16.
        return self.add_weight(name=name, shape=shape, initializer=initializer, autocast=False)

    def _build_target(self, name, shape, initializer):
        if self.kind == "linear":
            # A = B at the start: the layer begins as one ordinary layer and
            # learns how its parameters move with lambda.
            a = self._weight(f"{name}_a", shape, initializer)
            self._hyper[f"{name}_a"] = a
            self._hyper[f"{name}_b"] = self._weight(
                f"{name}_b", shape, lambda shape, dtype=None: tf.identity(a.value)
            )
            return
        self._hyper[f"{name}_c"] = self._weight(f"{name}_c", shape, initializer)
        # Unit-scale a1: with the 1/sqrt(rows * cols) scale, a glorot-sized a1
        # would leave a2 (which starts at zero) almost no gradient.
        factor = keras.initializers.RandomNormal(stddev=1.0, seed=self.seed)
        if len(shape) == 1:
            self._hyper[f"{name}_head"] = self._weight(
                f"{name}_head", (self.hidden_units, shape[0]), "zeros"
            )
            return
        rows, cols = shape
        # a2 starts at zero so the correction a1 a2^T starts at zero while a1's
        # gradient (through a2) and a2's gradient (through a1) are not both zero.
        self._hyper[f"{name}_a1"] = self._weight(
            f"{name}_a1", (self.hidden_units, rows * self.rank), factor
        )
        self._hyper[f"{name}_a1_bias"] = self._weight(
            f"{name}_a1_bias", (rows * self.rank,), "zeros"
        )
        self._hyper[f"{name}_a2"] = self._weight(
            f"{name}_a2", (self.hidden_units, cols * self.rank), "zeros"
        )
        self._hyper[f"{name}_a2_bias"] = self._weight(
            f"{name}_a2_bias", (cols * self.rank,), "zeros"
        )

    def parameters_at(self, lambdas):
        """The variational parameters at each lambda value.

        Args:
            lambdas: a float or a 1-D tensor of ``draws`` lambda values.

        Returns:
            A dict of float32 tensors with a leading ``draws`` axis:
            ``kernel_mean`` and ``kernel_log_sigma2`` ``(draws, *kernel_shape)``,
            and ``bias`` ``(draws, units)`` when the layer has one.
        """
        lambdas = tf.reshape(tf.cast(lambdas, "float32"), (-1,))
        t = normalized_log_lambda(lambdas, self.lambda_range)
        hidden = None
        if self.kind == "lowrank":
            hidden = tf.nn.relu(
                t[:, None] * self._hyper["hidden_kernel"] + self._hyper["hidden_bias"]
            )
        values = {}
        for name, shape, _ in self._targets:
            if self.kind == "linear":
                a, b = self._hyper[f"{name}_a"], self._hyper[f"{name}_b"]
                weight = tf.reshape(t, (-1,) + (1,) * len(shape))
                value = weight * a + (1.0 - weight) * b
            elif len(shape) == 1:
                value = self._hyper[f"{name}_c"] + hidden @ self._hyper[f"{name}_head"]
            else:
                rows, cols = shape
                a1 = hidden @ self._hyper[f"{name}_a1"] + self._hyper[f"{name}_a1_bias"]
                a2 = hidden @ self._hyper[f"{name}_a2"] + self._hyper[f"{name}_a2_bias"]
                a1 = tf.reshape(a1, (-1, rows, self.rank))
                a2 = tf.reshape(a2, (-1, cols, self.rank))
                # Each head's gradient sums over a whole row or column of the
                # matrix; 1/sqrt(rows * cols) keeps plain SGD steps on the heads
                # the size of steps on C (unscaled, SGD with momentum diverges).
                value = self._hyper[f"{name}_c"] + tf.matmul(a1, a2, transpose_b=True) / math.sqrt(
                    rows * cols
                )
            if name == "kernel_log_sigma2":
                # The low-rank correction is bilinear and can overshoot early in
                # training; exp() of an overshoot is inf. Far outside anything
                # the prior asks for (its log-variance is log(prior_variance)).
                value = tf.clip_by_value(value, LOG_SIGMA2_MIN, LOG_SIGMA2_MAX)
            if name != "bias":
                value = tf.reshape(value, (-1,) + tuple(self._kernel_shape))
            values[name] = value
        return values

    def kl_per_draw(self, parameters):
        """``KL(q_lambda || prior)`` of the kernel for each draw, shape ``(draws,)``."""
        terms = self.prior.kl_per_weight(parameters["kernel_mean"], parameters["kernel_log_sigma2"])
        # One reduction over every axis but the draws' (a loop over draws costs
        # one small op per draw, in the forward and the backward pass).
        return tf.reduce_sum(terms, axis=list(range(1, len(terms.shape))))

    def kl(self):
        """KL of the kernel at the middle of the lambda range (log scale), unscaled."""
        parameters = self.parameters_at(self.default_lambda())
        return self.kl_per_draw(parameters)[0]

    def default_lambda(self):
        """The lambda used at evaluation when none is given: the range's log midpoint."""
        low, high = self.lambda_range
        return math.sqrt(low * high)

    def density_score(self, lambda_value):
        """The relative density ``mu^2 / sigma^2`` of every kernel weight (NumPy array)."""
        lambda_value = validate_lambda(lambda_value, self.lambda_range)
        parameters = self.parameters_at(lambda_value)
        mean = parameters["kernel_mean"][0]
        log_sigma2 = parameters["kernel_log_sigma2"][0]
        return keras.ops.convert_to_numpy(tf.square(mean) * tf.exp(-log_sigma2))

    # -- forward ------------------------------------------------------------------------

    def _forward(self, inputs, lambdas, training):
        parameters = self.parameters_at(lambdas)
        draws = parameters["kernel_mean"].shape[0]
        if self.wants_kl(training):
            lambdas = tf.reshape(tf.cast(lambdas, "float32"), (-1,))
            weighted = tf.reduce_mean(lambdas * self.kl_per_draw(parameters))
            self.add_kl(training, kl=weighted)
        dtype = self.compute_dtype
        inputs = tf.cast(inputs, dtype)
        batch = tf.shape(inputs)[0]
        groups = _to_groups(inputs, draws)
        mean_kernel = tf.cast(parameters["kernel_mean"], dtype)
        outputs = self._batched_linear(groups, mean_kernel)
        if self.use_bias:
            bias = tf.cast(parameters["bias"], dtype)
            outputs = outputs + tf.reshape(
                bias, (draws,) + (1,) * (len(outputs.shape) - 2) + (self._out_dim,)
            )
        if not training:
            return self._activate(_from_groups(outputs, batch))
        variance_kernel = tf.cast(tf.exp(parameters["kernel_log_sigma2"]), dtype)
        variance = self._batched_linear(tf.square(groups), variance_kernel)
        # Sampled in batch order: example i's noise is row i of the batch's draw, whatever
        # its group (and the bias, a constant, commutes with the noise).
        return self._activate(
            self._sample_preactivations(_from_groups(outputs, batch), _from_groups(variance, batch))
        )

    def call(self, inputs, lambdas=None, training=False):
        """Runs the layer.

        Args:
            inputs: a batch.
            lambdas: a float or a 1-D tensor of lambda values, one per group of
                the batch. ``None``: in training, ``lambda_draws`` values drawn
                log-uniformly by the layer itself; at evaluation, the log
                midpoint of the range (``default_lambda()``). Inside a
                :class:`tfpriors.hyper.LambdaHyperModel` the model passes them.
            training: sample the outputs (local reparameterization) or use the
                posterior means.

        Returns:
            The outputs, each example computed with the weights of its group's lambda.
        """
        if lambdas is None:
            if training:
                lambdas = sample_lambdas(self.lambda_draws, self.lambda_range, self.seed_generator)
            else:
                lambdas = tf.constant([self.default_lambda()], "float32")
        return self._forward(inputs, lambdas, training)

    # -- export -------------------------------------------------------------------------

    def plain_weights(self, lambda_value, mask=None):
        """The posterior means at ``lambda_value`` as ``[kernel, bias]`` NumPy arrays.

        ``mask`` (a boolean array of the kernel's shape) zeroes the weights it
        marks ``False``.
        """
        lambda_value = validate_lambda(lambda_value, self.lambda_range)
        parameters = self.parameters_at(lambda_value)
        kernel = keras.ops.convert_to_numpy(parameters["kernel_mean"][0])
        if mask is not None:
            kernel = np.where(mask, kernel, 0.0).astype("float32")
        weights = [kernel]
        if self.use_bias:
            weights.append(keras.ops.convert_to_numpy(parameters["bias"][0]))
        return weights

    def inference_layer(self, lambda_value=None, mask=None):
        """The export form: a built-in layer and its weights at ``lambda_value``.

        ``None`` means ``default_lambda()``, what ``call`` uses at evaluation
        when it is given no lambda.
        """
        if lambda_value is None:
            lambda_value = self.default_lambda()
        return self.plain_layer(), self.plain_weights(lambda_value, mask)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "kind": self.kind,
                "rank": self.rank,
                "hidden_units": self.hidden_units,
                "lambda_range": list(self.lambda_range),
                "lambda_draws": self.lambda_draws,
                "prior_variance": self.prior_variance,
                "log_sigma2_init": self.log_sigma2_init,
            }
        )
        return config


@keras.saving.register_keras_serializable(package="tfpriors")
class HyperVariationalDense(DenseGeometry, HyperVariationalLayer):
    __doc__ = (
        """Dense layer whose Gaussian posterior is a function of lambda.

    Args:
        units: positive integer, dimensionality of the output space."""
        + _COMMON_ARGS
        + """
    Input shape:
        ``(batch, ..., input_dim)``.

    Output shape:
        ``(batch, ..., units)``.
"""
        + _CALL_ARGUMENTS
        + """
    Example:
    >>> layer = tfpriors.layers.HyperVariationalDense(10, kind="lowrank")
    >>> layer(np.zeros((6, 64), "float32"), lambdas=[0.01, 1.0, 10.0]).shape
    TensorShape([6, 10])
    >>> tfpriors.set_dataset_size(layer, 1347)
    1
    >>> outputs = layer(np.ones((6, 64), "float32"), training=True)  # draws its own lambda
    >>> len(layer.losses)  # lambda * KL(q_lambda || N(0, 1)) / 1347
    1
    """
    )

    def __init__(
        self,
        units,
        activation=None,
        use_bias=True,
        kernel_initializer="glorot_uniform",
        *,
        kind="linear",
        rank=2,
        hidden_units=50,
        lambda_range=DEFAULT_LAMBDA_RANGE,
        lambda_draws=1,
        prior_variance=1.0,
        log_sigma2_init=LOG_SIGMA2_INIT,
        seed=None,
        dataset_size=None,
        **kwargs,
    ):
        super().__init__(
            activation,
            use_bias,
            kernel_initializer,
            kind=kind,
            rank=rank,
            hidden_units=hidden_units,
            lambda_range=lambda_range,
            lambda_draws=lambda_draws,
            prior_variance=prior_variance,
            log_sigma2_init=log_sigma2_init,
            seed=seed,
            dataset_size=dataset_size,
            **kwargs,
        )
        self._init_geometry(units)

    def _batched_linear(self, groups, kernels):
        # (draws, b, ..., in) -> (draws, b * ..., in) @ (draws, in, out)
        shape = tf.shape(groups)
        flat = tf.reshape(groups, tf.stack([shape[0], -1, shape[-1]]))
        outputs = tf.matmul(flat, kernels)
        return tf.reshape(outputs, tf.concat([shape[:-1], [self.units]], 0))


@keras.saving.register_keras_serializable(package="tfpriors")
class HyperVariationalConv2D(Conv2DGeometry, HyperVariationalLayer):
    __doc__ = (
        """2D convolution (channels last) whose Gaussian posterior is a function of lambda.

    The draws of a batch run as one batched matmul over image patches
    (im2col): group ``d`` of the batch meets the kernel of ``lambda_d``. The low-rank
    kind treats the kernel as a ``(kh * kw * in_channels, filters)`` matrix.

    Args:
        filters: positive integer, the number of output channels.
        kernel_size: int or tuple of 2 ints.
        strides: int or tuple of 2 ints, default 1.
        padding: ``"valid"`` or ``"same"``.
        data_format: ``"channels_last"`` or ``None`` (the same), the only layout
            supported.
        dilation_rate: int or tuple of 2 ints, default 1."""
        + _COMMON_ARGS
        + """
    Input shape:
        ``(batch, height, width, channels)``.

    Output shape:
        ``(batch, new_height, new_width, filters)``.
"""
        + _CALL_ARGUMENTS
        + """
    Example:
    >>> conv = tfpriors.layers.HyperVariationalConv2D(8, 3, padding="same", kind="linear")
    >>> conv(np.zeros((4, 8, 8, 1), "float32"), lambdas=[0.1, 1.0]).shape
    TensorShape([4, 8, 8, 8])
    """
    )

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
        *,
        kind="linear",
        rank=2,
        hidden_units=50,
        lambda_range=DEFAULT_LAMBDA_RANGE,
        lambda_draws=1,
        prior_variance=1.0,
        log_sigma2_init=LOG_SIGMA2_INIT,
        seed=None,
        dataset_size=None,
        **kwargs,
    ):
        super().__init__(
            activation,
            use_bias,
            kernel_initializer,
            kind=kind,
            rank=rank,
            hidden_units=hidden_units,
            lambda_range=lambda_range,
            lambda_draws=lambda_draws,
            prior_variance=prior_variance,
            log_sigma2_init=log_sigma2_init,
            seed=seed,
            dataset_size=dataset_size,
            **kwargs,
        )
        # Channels last only, whatever keras.config.image_data_format() says.
        self._init_geometry(
            filters, kernel_size, strides, padding, dilation_rate, data_format or "channels_last"
        )

    def _batched_linear(self, groups, kernels):
        draws = kernels.shape[0]
        kh, kw, channels, filters = self._kernel_shape
        if draws == 1:
            outputs = tf.nn.conv2d(
                groups[0],
                kernels[0],
                strides=self.strides,
                padding=self.padding.upper(),
                dilations=self.dilation_rate,
            )
            return outputs[None]
        # Several kernels: im2col, then one batched matmul. (A grouped
        # convolution would do the forward pass, but TensorFlow's CPU kernels
        # have no grouped filter gradient.) Patches are ordered (kh, kw, c),
        # the order of the kernel's rows.
        shape = tf.shape(groups)
        flat = tf.reshape(groups, tf.concat([[-1], shape[2:]], 0))
        patches = tf.image.extract_patches(
            flat,
            sizes=[1, kh, kw, 1],
            strides=[1, *self.strides, 1],
            rates=[1, *self.dilation_rate, 1],
            padding=self.padding.upper(),
        )
        patch_shape = tf.shape(patches)
        patches = tf.reshape(patches, tf.stack([draws, -1, kh * kw * channels]))
        outputs = tf.matmul(patches, tf.reshape(kernels, (draws, kh * kw * channels, filters)))
        return tf.reshape(
            outputs, tf.stack([draws, shape[1], patch_shape[1], patch_shape[2], filters])
        )
