"""Stochastic-gradient MCMC as Keras optimizers: SGLD and SGHMC.

Loss convention (both optimizers). The loss that ``model.compile`` sees is
the *mean* per-example negative log-likelihood plus the prior's negative log
density divided by the training-set size ``N``::

    loss(w) = -1/B sum_i log p(y_i | x_i, w) - 1/N log p(w)

This is what Keras gives with a mean-reduced loss and regularizers scaled by
``1/N`` (see :func:`gaussian_prior`). Then ``-N * grad loss`` is an unbiased
estimate of the gradient of the log posterior, so the optimizers multiply
the loss gradient by ``dataset_size``.

The Gaussian noise is drawn from a stateless generator keyed on
``(seed, iteration, variable index)``. Under ``tf.distribute`` every replica
therefore adds the *same* noise in a synchronized step (the replicas' weights
stay identical and the noise variance is ``learning_rate``, not a multiple
of it), and a run is reproducible from ``seed``.
"""

import numbers

import keras
import numpy as np
import tensorflow as tf

from tfpriors import _validation


def _check_learning_rate(value):
    if isinstance(value, keras.optimizers.schedules.LearningRateSchedule) or (
        callable(value) and not isinstance(value, numbers.Number)
    ):
        return value
    return _validation.positive_number(value, "learning_rate")


def _check_seed(seed):
    if seed is None:
        # Drawn from NumPy's generator so that keras.utils.set_random_seed
        # makes runs reproducible; recorded in get_config.
        return int(np.random.randint(0, 2**31 - 1))
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"`seed` must be None or an integer >= 0; received {seed!r}.")
    return int(seed)


class _SGMCMC(keras.optimizers.Optimizer):
    """Shared parts: dataset size, seed, per-step stateless noise."""

    def __init__(self, learning_rate, dataset_size, temperature, seed, name, **kwargs):
        super().__init__(learning_rate=_check_learning_rate(learning_rate), name=name, **kwargs)
        self.dataset_size = _validation.positive_int(dataset_size, "dataset_size")
        self.temperature = _validation.positive_number(temperature, "temperature")
        self.seed = _check_seed(seed)

    def _noise(self, variable, stddev):
        index = self._get_variable_index(variable)
        step = tf.cast(self.iterations, "int64")
        # A distinct stream per (step, variable): the second seed word mixes
        # the step and the variable index without collisions for < 2**20 variables.
        key = tf.stack(
            [tf.constant(self.seed, "int64"), step * (2**20) + tf.constant(index, "int64")]
        )
        return (
            tf.random.stateless_normal(tf.shape(variable), seed=key, dtype=variable.dtype) * stddev
        )

    def _log_posterior_grad(self, gradient, variable):
        if isinstance(gradient, tf.IndexedSlices):
            gradient = tf.convert_to_tensor(gradient)
        return -tf.cast(self.dataset_size, variable.dtype) * tf.cast(gradient, variable.dtype)

    def get_config(self):
        config = super().get_config()
        config.update(
            {"dataset_size": self.dataset_size, "temperature": self.temperature, "seed": self.seed}
        )
        return config


@keras.saving.register_keras_serializable(package="tfpriors")
class SGLD(_SGMCMC):
    """Stochastic gradient Langevin dynamics (Welling & Teh, 2011).

    Each step is ``w += lr/2 * (-N * grad loss) + Normal(0, lr)`` where ``N``
    is ``dataset_size`` and ``loss`` follows the convention of this module:
    the mean per-example negative log-likelihood plus the prior's negative
    log density divided by ``N`` (a ``keras.regularizers.L2`` of
    ``1 / (2 * prior_variance * N)``, see :func:`gaussian_prior`). With a
    learning rate that decays to zero the iterates are samples from the
    posterior; with a small constant one, approximately so. Collect them with
    :class:`tfpriors.distill.PosteriorSampler`. ``temperature`` ``T`` scales
    the noise variance to ``T * lr``, sampling ``p(w | data)**(1/T)``: 1 is
    the Bayesian posterior, < 1 a "cold" one (Wenzel et al., 2020), which
    often predicts better for deep nets with simple priors.

    Args:
        learning_rate: the step size ``lr`` (> 0): a float, a
            ``keras.optimizers.schedules.LearningRateSchedule`` or a callable.
        dataset_size: ``N``, the number of training examples (> 0).
        temperature: posterior temperature ``T`` (> 0); the noise variance
            is ``T * lr``.
        seed: seed of the injected noise (an int >= 0); ``None`` draws one
            from NumPy's generator.
        **kwargs: the other ``keras.optimizers.Optimizer`` arguments
            (``name``, ``clipnorm``, ...).

    Example:
    >>> (x_train, y_train), _ = tfpriors.datasets.load_digits()
    >>> x_train, y_train = x_train[:256], y_train[:256]
    >>> model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(10)])
    >>> opt = tfpriors.distill.SGLD(learning_rate=1e-4, dataset_size=len(x_train), seed=0)
    >>> model.compile(opt, keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    >>> sampler = tfpriors.distill.PosteriorSampler(burn_in_epochs=1, thin=4, in_memory=10)
    >>> history = model.fit(x_train, y_train, epochs=2, batch_size=32,
    ...                     callbacks=[sampler], verbose=0)
    >>> int(opt.iterations), sampler.num_samples
    (16, 2)
    """

    def __init__(
        self,
        learning_rate=1e-4,
        dataset_size=None,
        temperature=1.0,
        seed=None,
        name="sgld",
        **kwargs,
    ):
        super().__init__(learning_rate, dataset_size, temperature, seed, name, **kwargs)

    def update_step(self, gradient, variable, learning_rate):
        lr = tf.cast(learning_rate, variable.dtype)
        drift = 0.5 * lr * self._log_posterior_grad(gradient, variable)
        self.assign_add(variable, drift + self._noise(variable, tf.sqrt(lr * self.temperature)))


@keras.saving.register_keras_serializable(package="tfpriors")
class SGHMC(_SGMCMC):
    """Stochastic gradient Hamiltonian Monte Carlo (Chen, Fox & Guestrin, 2014).

    With ``U = -log posterior`` estimated as ``N * loss`` (the loss convention
    of this module), learning rate ``eta``, friction ``alpha`` and gradient
    noise estimate ``beta`` each step is::

        v = (1 - alpha) * v - eta * grad U + Normal(0, 2 * (alpha - beta) * eta * T)
        w = w + v

    (the paper's eq. 15 with identity mass; ``T`` the posterior temperature,
    1 for the Bayesian posterior, as in :class:`SGLD`). ``alpha = 1`` gives SGLD with
    step size ``2 * eta``; a small ``alpha`` (0.01-0.1) mixes faster.

    Args:
        learning_rate: ``eta`` (> 0), a float, a schedule or a callable.
        dataset_size: ``N``, the number of training examples (> 0).
        friction: ``alpha`` in (0, 1].
        noise_estimate: ``beta`` in [0, friction): an estimate of the
            gradient noise the injected noise need not add.
        temperature: posterior temperature ``T`` (> 0).
        seed: seed of the injected noise (an int >= 0, or ``None``).
        **kwargs: the other ``keras.optimizers.Optimizer`` arguments.

    Example:
    >>> (x_train, y_train), _ = tfpriors.datasets.load_digits()
    >>> x_train, y_train = x_train[:256], y_train[:256]
    >>> opt = tfpriors.distill.SGHMC(learning_rate=1e-5, dataset_size=len(x_train),
    ...                              friction=0.05)
    >>> model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(10)])
    >>> model.compile(opt, keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    >>> history = model.fit(x_train, y_train, epochs=1, batch_size=64, verbose=0)
    >>> len(opt.velocities), int(opt.iterations)  # a velocity per kernel and bias
    (2, 4)
    """

    def __init__(
        self,
        learning_rate=1e-5,
        dataset_size=None,
        friction=0.05,
        noise_estimate=0.0,
        temperature=1.0,
        seed=None,
        name="sghmc",
        **kwargs,
    ):
        super().__init__(learning_rate, dataset_size, temperature, seed, name, **kwargs)
        self.friction = _validation.real_number(friction, "friction", minimum=0.0, maximum=1.0)
        if self.friction == 0.0:
            raise ValueError("`friction` must be in (0, 1]; received 0.0.")
        self.noise_estimate = _validation.real_number(noise_estimate, "noise_estimate", minimum=0.0)
        if self.noise_estimate >= self.friction:
            raise ValueError(
                f"`noise_estimate` must be smaller than `friction` "
                f"({self.friction}); received {self.noise_estimate}."
            )

    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        self.velocities = self.add_optimizer_variables(variables, "velocity")

    def update_step(self, gradient, variable, learning_rate):
        eta = tf.cast(learning_rate, variable.dtype)
        velocity = self.velocities[self._get_variable_index(variable)]
        stddev = tf.sqrt(2.0 * (self.friction - self.noise_estimate) * eta * self.temperature)
        new_velocity = (
            (1.0 - self.friction) * velocity
            + eta * self._log_posterior_grad(gradient, variable)
            + self._noise(variable, stddev)
        )
        self.assign(velocity, new_velocity)
        self.assign_add(variable, new_velocity)

    def get_config(self):
        config = super().get_config()
        config.update({"friction": self.friction, "noise_estimate": self.noise_estimate})
        return config


def gaussian_prior(variance, dataset_size):
    """A ``keras.regularizers.L2`` for a Normal(0, variance) prior under the SGLD convention.

    The regularizer adds ``sum(w**2) / (2 * variance * N)`` to the loss: the
    prior's negative log density (up to a constant) divided by ``N``.

    Args:
        variance: the prior variance (> 0).
        dataset_size: ``N``, the number of training examples (> 0).

    Returns:
        A ``keras.regularizers.L2`` with factor ``1 / (2 * variance * N)``.

    Example:
    >>> prior = tfpriors.distill.gaussian_prior(1.0, dataset_size=1000)
    >>> prior.l2  # 1 / (2 * 1.0 * 1000)
    0.0005
    >>> layer = keras.layers.Dense(50, kernel_regularizer=prior, bias_regularizer=prior)
    """
    variance = _validation.positive_number(variance, "variance")
    dataset_size = _validation.positive_int(dataset_size, "dataset_size")
    return keras.regularizers.L2(0.5 / (variance * dataset_size))
