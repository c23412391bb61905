"""Structured Bayesian Pruning (Neklyudov, Molchanov, Ashukha & Vetrov, 2017).

A :class:`StructuredBayesianPruning` layer placed after a Dense or Conv2D
output multiplies each unit (channel) by a noise ``theta`` with
``log(theta) ~ N(mu, sigma^2)`` truncated to ``[a, b]``, and pays the KL
divergence from a log-uniform prior on the same interval. Units whose noise
drowns their signal (``E[theta] / std[theta] < threshold``) are pruned: at
evaluation the layer multiplies kept units by ``E[theta]`` and pruned ones by
0, and the exporter removes them from the producing layer (a smaller dense
network) and folds ``E[theta]`` into the neighbouring weights. The numerics
are those of :class:`tfpriors.priors.TruncatedLogNormal`.
"""

import keras
import numpy as np
from keras import ops

from tfpriors import _validation, distributed
from tfpriors._inputs import FloatInputs
from tfpriors.layers.kl_layer import KLLayer
from tfpriors.layers.seed_state import SeedStateMixin
from tfpriors.priors.truncated_log_uniform import (
    LOG_SIGMA_MAX,
    LOG_SIGMA_MIN,
    LOG_THETA_MAX,
    LOG_THETA_MIN,
    TruncatedLogNormal,
    validate_interval,
)

# Initial parameters of the reference code: mu = 0 (the upper end of the interval)
# and log_sigma = -5, so theta starts in [0.98, 1] and E[theta] ~ 0.9946.
MU_INIT = 0.0
LOG_SIGMA_INIT = -5.0
# mu and log_sigma train with this many times the optimizer's learning rate
# (see the class docstring): log_sigma must travel ~5 before a unit is pruned.
LEARNING_RATE_MULTIPLIER = 30.0
# Input ranks: (batch, units) after a Dense, (batch, steps, units), and
# (batch, height, width, channels) after a Conv2D.
_RANKS = (2, 3, 4)


@keras.saving.register_keras_serializable(package="tfpriors")
class ClipConstraint(keras.constraints.Constraint):
    """Keeps a weight inside ``[minimum, maximum]`` after each optimizer step.

    Args:
        minimum: the smallest value.
        maximum: the largest value.

    Example:
    >>> clip = tfpriors.layers.structured.ClipConstraint(-1.0, 0.0)
    >>> keras.ops.convert_to_numpy(clip(np.array([-3.0, -0.5, 2.0], "float32")))
    array([-1. , -0.5,  0. ], dtype=float32)
    """

    def __init__(self, minimum, maximum):
        self.minimum = float(minimum)
        self.maximum = float(maximum)

    def __call__(self, w):
        return ops.clip(w, self.minimum, self.maximum)

    def get_config(self):
        return {"minimum": self.minimum, "maximum": self.maximum}


class _Scaled(keras.initializers.Initializer):
    """``initializer`` divided by ``multiplier`` (the stored, scaled parameters)."""

    def __init__(self, initializer, multiplier):
        self.initializer = initializer
        self.multiplier = multiplier

    def __call__(self, shape, dtype=None):
        return self.initializer(shape, dtype=dtype) / self.multiplier


def _initializer(value, name, default):
    if value is None:
        value = default
    if isinstance(value, (int, float, np.number)) and not isinstance(value, bool):
        return keras.initializers.Constant(_validation.real_number(value, name))
    return _validation.initializer(value, name)


@keras.saving.register_keras_serializable(package="tfpriors")
class StructuredBayesianPruning(FloatInputs, SeedStateMixin, KLLayer):
    """Multiplicative log-normal noise per unit that prunes whole neurons and filters.

    Put it after a ``Dense`` or ``Conv2D`` (channels last), e.g.
    ``Conv2D(20, 5), StructuredBayesianPruning(), ReLU()``; or let
    ``tfpriors.structured(model)`` insert one after every such layer. Each unit
    ``j`` of the last axis gets ``log(theta_j) ~ N(mu_j, sigma_j^2)`` truncated to
    ``[a, b]``; the KL from the log-uniform prior on that interval joins the
    model's loss through the shared KL path (set the training-set size with
    ``tfpriors.set_dataset_size``; ``fit`` refuses to train without it).

    Training multiplies every example's units by a fresh draw of ``theta``
    (inverse-CDF sampling, seeded). Evaluation is deterministic: a unit is
    kept when its signal-to-noise ratio ``E[theta] / std[theta]`` is at least
    ``threshold`` and multiplied by ``E[theta]``; the others are multiplied by
    0. The parameters start as in the paper's code (``mu = 0``,
    ``log_sigma = -5``): ``E[theta] ~ 0.9946``, so a layer inserted into a
    trained network changes its evaluation output by about 0.5% per gated
    layer; ``E[theta] = 1`` exactly is impossible with ``theta <= e^b = 1``.

    From there a unit is pruned only once ``log_sigma`` has travelled about 5
    (to ``sigma ~ 1``), while the network's weights move by hundredths. An
    optimizer that normalizes its steps (Adam, RMSprop) moves every parameter
    by at most about its learning rate per step, so with one learning rate for
    all the gates need thousands of steps before the first unit goes (the
    paper fine-tunes LeNet-5 for 200 MNIST epochs, ~94,000 steps; 4 epochs of
    the 4,000-image sample, 250 steps at lr 1e-3, pruned nothing). The layer
    therefore trains ``mu`` and ``log_sigma`` with ``learning_rate_multiplier``
    times the optimizer's learning rate: it stores ``mu / m`` and
    ``log_sigma / m`` as its variables (``scaled_mu``, ``scaled_log_sigma``)
    and uses ``m`` times their value with the gradient of the parameters
    themselves, so every optimizer's step (SGD's included) is ``m`` times
    larger on the parameters. The default 30 at Adam's lr 1e-3 moves them by
    up to 0.03 per step: units start to go after a few hundred steps.

    Args:
        threshold: units with ``E[theta] / std[theta] < threshold`` are pruned;
            a number > 0, default 1 (the paper's).
        a: lower end of the interval of ``log(theta)``; default -20 (the paper's).
        b: upper end, > ``a``; default 0 (the paper's: ``theta <= 1``).
        mu_initializer: initial ``mu`` (a number or a Keras initializer); default 0.
        log_sigma_initializer: initial ``log(sigma)`` (a number or an
            initializer); default -5.
        learning_rate_multiplier: how many times the optimizer's learning rate
            ``mu`` and ``log_sigma`` train with (a number > 0); default 30,
            1 for the paper's single learning rate.
        seed: seed of the noise.
        dataset_size: training-set size dividing the KL; usually set later with
            ``tfpriors.set_dataset_size(model, n)``.
        **kwargs: base ``keras.layers.Layer`` arguments (``name``, ``dtype``).

    Input shape:
        ``(batch, units)``, ``(batch, steps, units)`` or
        ``(batch, height, width, channels)``: the units are the last axis.

    Output shape:
        The input shape.

    Example:
    >>> (x, y), _ = tfpriors.datasets.load_digits()
    >>> model = keras.Sequential([
    ...     keras.Input((64,)),
    ...     keras.layers.Dense(32, activation="relu"),
    ...     tfpriors.layers.StructuredBayesianPruning(name="gate"),
    ...     keras.layers.Dense(10)])
    >>> tfpriors.set_dataset_size(model, len(x))
    1
    >>> model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    >>> history = model.fit(x[:256], y[:256], epochs=1, verbose=0)
    >>> gate = model.get_layer("gate")
    >>> gate.kept_units()  # a fresh gate keeps every unit
    32
    >>> gate.set_posterior(mu=np.where(np.arange(32) < 8, 0.0, -15.0),
    ...                    log_sigma=np.where(np.arange(32) < 8, -5.0, 2.0))
    >>> gate.kept_units(), gate.kept_mask()[:10]
    (8, array([ True,  True,  True,  True,  True,  True,  True,  True, False, False]))
    >>> bool(np.all(gate(np.ones((1, 32), "float32"))[0, 8:] == 0.0))  # pruned at evaluation
    True
    """

    def __init__(
        self,
        threshold=1.0,
        a=LOG_THETA_MIN,
        b=LOG_THETA_MAX,
        mu_initializer=MU_INIT,
        log_sigma_initializer=LOG_SIGMA_INIT,
        learning_rate_multiplier=LEARNING_RATE_MULTIPLIER,
        seed=None,
        dataset_size=None,
        **kwargs,
    ):
        super().__init__(dataset_size=dataset_size, **kwargs)
        self.threshold = _validation.positive_number(threshold, "threshold")
        self.a, self.b = validate_interval(a, b)
        self.mu_initializer = _initializer(mu_initializer, "mu_initializer", MU_INIT)
        self.log_sigma_initializer = _initializer(
            log_sigma_initializer, "log_sigma_initializer", LOG_SIGMA_INIT
        )
        self.learning_rate_multiplier = _validation.positive_number(
            learning_rate_multiplier, "learning_rate_multiplier"
        )
        self.seed = _validation.seed(seed)
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.supports_masking = True

    def build(self, input_shape):
        if len(input_shape) not in _RANKS or input_shape[-1] is None:
            raise ValueError(
                f"`inputs` of StructuredBayesianPruning '{self.name}' must have rank 2, 3 or "
                "4 (the output of a Dense or a channels-last Conv2D) with a known last "
                f"dimension; received shape {tuple(input_shape)}."
            )
        self.units = int(input_shape[-1])
        self.input_spec = keras.InputSpec(ndim=len(input_shape), axes={-1: self.units})
        # float32 parameters under mixed precision: the normal CDFs of the
        # truncated log-normal need more than float16's range. The variables
        # hold mu / m and log_sigma / m (m = learning_rate_multiplier): an
        # optimizer that normalizes its steps (Adam) then moves mu and
        # log_sigma m times faster than the weights.
        m = self.learning_rate_multiplier
        self.scaled_mu = self.add_weight(
            name="scaled_mu",
            shape=(self.units,),
            initializer=_Scaled(self.mu_initializer, m),
            constraint=ClipConstraint(self.a / m, self.b / m),
            autocast=False,
        )
        self.scaled_log_sigma = self.add_weight(
            name="scaled_log_sigma",
            shape=(self.units,),
            initializer=_Scaled(self.log_sigma_initializer, m),
            constraint=ClipConstraint(LOG_SIGMA_MIN / m, LOG_SIGMA_MAX / m),
            autocast=False,
        )

    def _unscaled(self, variable):
        # Value m * v with gradient 1 with respect to v: the optimizer's step on
        # v, whatever its rule, becomes m times that step on the parameter.
        value = ops.convert_to_tensor(variable)
        return value + (self.learning_rate_multiplier - 1.0) * ops.stop_gradient(value)

    @property
    def mu(self):
        """Per-unit location of ``log(theta)`` (a float32 tensor; see :meth:`set_posterior`)."""
        return self._unscaled(self.scaled_mu)

    @property
    def log_sigma(self):
        """Per-unit ``log(sigma)`` of ``log(theta)`` (a float32 tensor)."""
        return self._unscaled(self.scaled_log_sigma)

    def set_posterior(self, mu=None, log_sigma=None):
        """Sets ``mu`` and / or ``log_sigma`` per unit (clipped to their ranges).

        Writes the scaled variables, so use this rather than assigning to
        ``scaled_mu`` / ``scaled_log_sigma`` yourself.

        Args:
            mu: values of ``mu``, a number or an array of shape ``(units,)``.
            log_sigma: values of ``log(sigma)``, the same.

        Raises:
            ValueError: when the layer is not built, a value is not finite,
                or its shape is not ``(units,)``.

        Example:
        >>> gate = tfpriors.layers.StructuredBayesianPruning()
        >>> gate.build((None, 3))
        >>> gate.set_posterior(mu=[0.0, -4.0, -10.0], log_sigma=[-5.0, 0.0, 1.0])
        >>> gate.kept_mask()
        array([ True, False, False])
        >>> np.round(keras.ops.convert_to_numpy(gate.mu), 3)  # the parameter, not the variable
        array([  0.,  -4., -10.], dtype=float32)
        """
        if not self.built:
            raise ValueError(
                f"StructuredBayesianPruning '{self.name}' must be built before `set_posterior`."
            )
        for value, name, variable, low, high in (
            (mu, "mu", self.scaled_mu, self.a, self.b),
            (log_sigma, "log_sigma", self.scaled_log_sigma, LOG_SIGMA_MIN, LOG_SIGMA_MAX),
        ):
            if value is None:
                continue
            array = np.asarray(_validation.numeric_array(value, name), "float32")
            if not np.all(np.isfinite(array)):
                raise ValueError(f"`{name}` must hold finite numbers; received {value!r}.")
            try:
                array = np.broadcast_to(array, (self.units,))
            except ValueError:
                raise ValueError(
                    f"`{name}` must be a number or have shape ({self.units},); "
                    f"received shape {array.shape}."
                ) from None
            variable.assign(np.clip(array, low, high) / self.learning_rate_multiplier)

    # -- posterior summaries ---------------------------------------------------------

    def posterior(self):
        """The :class:`~tfpriors.priors.TruncatedLogNormal` of the units' noise."""
        return TruncatedLogNormal(self.mu, self.log_sigma, self.a, self.b)

    def kl(self):
        """Returns the unscaled KL(q || p), summed over the units (float32 scalar)."""
        return ops.sum(self.posterior().kl())

    def snr(self):
        """Per-unit signal-to-noise ratio ``E[theta] / std[theta]`` (NumPy float32)."""
        return ops.convert_to_numpy(self.posterior().snr())

    def _keep(self, posterior):
        return posterior.snr() >= self.threshold

    def kept_mask(self):
        """Boolean NumPy mask of the units kept at evaluation (SNR >= threshold)."""
        return ops.convert_to_numpy(self._keep(self.posterior()))

    def kept_units(self):
        """The number of units kept at evaluation."""
        return int(self.kept_mask().sum())

    def sparsity(self):
        """The fraction of units pruned, in [0, 1]."""
        return 1.0 - float(np.mean(self.kept_mask()))

    def _multiplier(self, posterior):
        return ops.where(self._keep(posterior), posterior.mean(), 0.0)

    def multiplier(self):
        """The evaluation multiplier per unit: ``E[theta]`` if kept, else 0 (NumPy)."""
        return ops.convert_to_numpy(self._multiplier(self.posterior()))

    def inference_layer(self):
        """A builtin per-channel ``Rescaling`` by :meth:`multiplier` (export folds it away)."""
        scale = [float(v) for v in self.multiplier()]
        return keras.layers.Rescaling(scale=scale, offset=0.0, name=self.name), []

    # -- forward -------------------------------------------------------------------

    def call(self, inputs, training=False):
        posterior = self.posterior()
        if self.wants_kl(training):
            self.add_kl(training, ops.sum(posterior.kl()))
        if training:
            shape = ops.shape(inputs)
            rank = len(inputs.shape)
            noise_shape = [shape[0]] + [1] * (rank - 2) + [self.units]
            uniform = distributed.batch_rows(
                lambda rows: keras.random.uniform(rows, seed=self.seed_generator), noise_shape
            )
            multiplier = posterior.sample(uniform)
        else:
            multiplier = self._multiplier(posterior)
        return inputs * ops.cast(multiplier, inputs.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "threshold": self.threshold,
                "a": self.a,
                "b": self.b,
                "mu_initializer": keras.initializers.serialize(self.mu_initializer),
                "log_sigma_initializer": keras.initializers.serialize(self.log_sigma_initializer),
                "learning_rate_multiplier": self.learning_rate_multiplier,
                "seed": self.seed,
            }
        )
        return config


__all__ = ["ClipConstraint", "StructuredBayesianPruning"]
