"""Truncated log-normal noise and its KL from a truncated log-uniform prior.

The posterior of Structured Bayesian Pruning (Neklyudov, Molchanov, Ashukha
& Vetrov, 2017): a multiplicative noise ``theta`` per unit with
``log(theta) ~ N(mu, sigma^2)`` truncated to ``[a, b]`` (the paper uses
``a = -20``, ``b = 0``), and a prior that is log-uniform on ``theta`` over
the same interval, i.e. uniform on ``log(theta)``. Everything the layer
(``tfpriors.layers.StructuredBayesianPruning``), the reports and the
exporter need is here, once:

- the KL, ``log(b - a) - H``, with ``H`` the entropy of the truncated normal
  of ``log(theta)`` from ``tfp.distributions.TruncatedNormal``;
- the moments ``E[theta]``, ``Var[theta]`` and the signal-to-noise ratio
  ``E[theta] / std[theta]`` in closed form, evaluated in log space from
  differences of normal CDFs, so that nothing overflows when ``sigma`` is
  large or underflows when it is small;
- samples of ``theta`` by inverting the CDF of uniform draws.

``mu`` is kept inside ``[a, b]`` and ``log(sigma)`` inside
``[LOG_SIGMA_MIN, LOG_SIGMA_MAX]`` (values outside are clipped): then the
truncated normal always holds at least the part of its mass between ``mu``
and one end of the interval, its normalizer never underflows, and every
value and gradient is finite (TFP's entropy has NaN gradients for
``sigma < e^-19`` and NaN values for ``mu`` far beyond ``b``).
"""

import math

import numpy as np
import tensorflow as tf

from tfpriors import _validation

# Interval of log(theta) used in the paper and its reference code.
LOG_THETA_MIN, LOG_THETA_MAX = -20.0, 0.0
# Range of log(sigma): the reference code clips to [-20, 5]; below e^-19
# TFP's truncated-normal entropy has NaN gradients, so the floor is higher.
LOG_SIGMA_MIN, LOG_SIGMA_MAX = -15.0, 5.0
# Smallest relative variance Var / E^2 used by the SNR: float32 cannot resolve
# less, and the SNR stays finite (<= 1e6) for a noise-free unit.
_MIN_RELATIVE_VARIANCE = 1e-12
_LOG_2 = math.log(2.0)


def validate_interval(a, b):
    """Checks the interval ``[a, b]`` of ``log(theta)``.

    Args:
        a: lower end, a finite number.
        b: upper end, a finite number > ``a``.

    Returns:
        ``(a, b)`` as floats.

    Raises:
        ValueError: when ``a >= b`` (the message names both arguments).

    Example:
    >>> from tfpriors.priors.truncated_log_uniform import validate_interval
    >>> validate_interval(-20, 0)
    (-20.0, 0.0)
    >>> validate_interval(0.0, -20.0)
    Traceback (most recent call last):
    ...
    ValueError: `a` must be smaller than `b` (the interval of log(theta)); received a=0.0, b=-20.0.
    """
    a = _validation.real_number(a, "a")
    b = _validation.real_number(b, "b")
    if a >= b:
        raise ValueError(
            f"`a` must be smaller than `b` (the interval of log(theta)); received a={a}, b={b}."
        )
    return a, b


def _log_ndtr(x):
    """Log Phi(x), accurate in both tails (through TFP's log erfc)."""
    import tensorflow_probability as tfp

    return tfp.math.logerfc(-x / math.sqrt(2.0)) - _LOG_2


def _log_ndtr_difference(upper, lower):
    """log(Phi(upper) - Phi(lower)) for ``upper > lower``, without cancellation.

    Both ends in the left tail: ``log Phi(upper) + log(1 - Phi(lower)/Phi(upper))``;
    both in the right tail: the same on ``-lower, -upper`` (Phi is symmetric);
    across 0: ``log1p(-(Phi(lower) + Phi(-upper)))``. Every branch is evaluated
    on inputs valid for it, so an unused branch never sends NaN gradients.
    """
    import tensorflow_probability as tfp

    left = upper <= 0.0
    right = lower >= 0.0
    middle = ~(left | right)
    # Left tail.
    upper_l = tf.where(left, upper, -1.0)
    lower_l = tf.where(left, lower, -2.0)
    in_left = tfp.math.log_sub_exp(_log_ndtr(upper_l), _log_ndtr(lower_l))
    # Right tail, mirrored.
    upper_r = tf.where(right, -lower, -1.0)
    lower_r = tf.where(right, -upper, -2.0)
    in_right = tfp.math.log_sub_exp(_log_ndtr(upper_r), _log_ndtr(lower_r))
    # Across zero: both excluded tails are below one half.
    upper_m = tf.where(middle, upper, 1.0)
    lower_m = tf.where(middle, lower, -1.0)
    tails = tf.exp(_log_ndtr(lower_m)) + tf.exp(_log_ndtr(-upper_m))
    in_middle = tf.math.log1p(-tails)
    return tf.where(left, in_left, tf.where(right, in_right, in_middle))


def _finite(values, name):
    """``values``; NumPy or Python values from a user are checked to be finite numbers."""
    if tf.is_tensor(values) or isinstance(values, tf.Variable):
        return values  # inside a layer: its own weights, kept in range by constraints
    array = _validation.numeric_array(values, name)
    if not np.all(np.isfinite(array)):
        raise ValueError(f"`{name}` must hold finite numbers; received {values!r}.")
    return array


class TruncatedLogNormal:
    """Noise ``theta`` with ``log(theta) ~ N(mu, sigma^2)`` truncated to ``[a, b]``.

    The per-unit posterior of Structured Bayesian Pruning. All methods are
    element-wise over the shape of ``mu`` and return float32 tensors.
    ``mu`` is clipped to ``[a, b]`` and ``log_sigma`` to
    ``[LOG_SIGMA_MIN, LOG_SIGMA_MAX]`` = [-15, 5] (see the module docstring).

    Args:
        mu: location of ``log(theta)`` (a tensor, array or number).
        log_sigma: log of the scale of ``log(theta)``, broadcastable to ``mu``.
        a: lower end of the interval of ``log(theta)``; default -20.
        b: upper end; default 0 (so ``theta <= 1``).

    Example:
    >>> q = tfpriors.priors.TruncatedLogNormal(mu=[0.0, -3.0, -10.0], log_sigma=[-5.0, -1.0, 1.0])
    >>> np.round(q.mean().numpy(), 4)  # E[theta]
    array([0.9946, 0.0533, 0.0015], dtype=float32)
    >>> np.round(q.snr().numpy(), 2)  # E[theta] / std[theta]: the last unit is noise
    array([247.59,   2.63,   0.1 ], dtype=float32)
    >>> np.round(q.kl().numpy(), 3)  # KL from the log-uniform prior on [-20, 0]
    array([7.27 , 2.577, 0.579], dtype=float32)
    >>> theta = q.sample(np.full((2, 3), 0.5, "float32"))  # the medians
    >>> theta.shape
    TensorShape([2, 3])
    """

    def __init__(self, mu, log_sigma, a=LOG_THETA_MIN, b=LOG_THETA_MAX):
        self.a, self.b = validate_interval(a, b)
        mu = tf.cast(_finite(mu, "mu"), "float32")
        log_sigma = tf.cast(_finite(log_sigma, "log_sigma"), "float32")
        self.mu = tf.clip_by_value(mu, self.a, self.b)
        self.log_sigma = tf.clip_by_value(log_sigma, LOG_SIGMA_MIN, LOG_SIGMA_MAX)
        self.sigma = tf.exp(self.log_sigma)
        self.alpha = (self.a - self.mu) / self.sigma
        self.beta = (self.b - self.mu) / self.sigma

    def log_normalizer(self):
        """log(Phi(beta) - Phi(alpha)): the log mass of the normal inside ``[a, b]``."""
        return _log_ndtr_difference(self.beta, self.alpha)

    def _log_moment_factor(self, k):
        # log((Phi(beta - k sigma) - Phi(alpha - k sigma)) / Z) of E[theta^k].
        shift = k * self.sigma
        return _log_ndtr_difference(self.beta - shift, self.alpha - shift) - self.log_normalizer()

    def log_mean(self):
        """Log E[theta] = mu + sigma^2 / 2 + log((Phi(beta - sigma) - Phi(alpha - sigma)) / Z)."""
        return self.mu + 0.5 * tf.square(self.sigma) + self._log_moment_factor(1.0)

    def mean(self):
        """E[theta], in ``[e^a, e^b]``."""
        return tf.exp(self.log_mean())

    def _relative_variance(self):
        # Var / E^2 = exp(sigma^2) * Z * (Phi(b-2s) - Phi(a-2s)) / (Phi(b-s) - Phi(a-s))^2 - 1.
        log_ratio = (
            tf.square(self.sigma)
            + self._log_moment_factor(2.0)
            - 2.0 * self._log_moment_factor(1.0)
        )
        return tf.maximum(tf.math.expm1(tf.maximum(log_ratio, 0.0)), _MIN_RELATIVE_VARIANCE)

    def variance(self):
        """Var[theta]."""
        return tf.square(self.mean()) * self._relative_variance()

    def stddev(self):
        """std[theta]."""
        return tf.sqrt(self.variance())

    def snr(self):
        """Signal-to-noise ratio E[theta] / std[theta] (independent of scale, <= 1e6)."""
        return tf.math.rsqrt(self._relative_variance())

    def entropy(self):
        """Differential entropy of ``log(theta)`` (TFP's truncated normal)."""
        import tensorflow_probability as tfp

        return tfp.distributions.TruncatedNormal(
            loc=self.mu, scale=self.sigma, low=self.a, high=self.b
        ).entropy()

    def kl(self):
        """KL(q || p) from the log-uniform prior on ``[e^a, e^b]``: ``log(b - a) - H``.

        The KL is invariant under the change of variable ``theta -> log(theta)``,
        where the prior is uniform on ``[a, b]`` with density ``1 / (b - a)``.
        """
        return math.log(self.b - self.a) - self.entropy()

    def sample(self, uniform):
        """``theta`` from uniform draws by the inverse CDF (the reparameterization).

        Args:
            uniform: values in [0, 1), broadcastable against ``mu`` (e.g. shape
                ``(batch, units)``); ``mu`` and ``log_sigma`` get gradients
                through them.

        Returns:
            ``theta = exp(mu + sigma * Phi^-1(Phi(alpha) + u * Z))``, in ``[e^a, e^b]``.
        """
        uniform = tf.cast(uniform, "float32")
        mass = tf.exp(self.log_normalizer())
        below = tf.exp(_log_ndtr(self.alpha))  # Phi(alpha)
        above = tf.exp(_log_ndtr(-self.beta))  # 1 - Phi(beta)
        # p = Phi(alpha) + u Z and 1 - p = (1 - Phi(beta)) + (1 - u) Z: invert
        # the smaller of the two, so ndtri never sees a number rounded to 1.
        p = below + uniform * mass
        q = above + (1.0 - uniform) * mass
        lower_half = p < 0.5
        p_safe = tf.clip_by_value(tf.where(lower_half, p, 0.25), 1e-30, 0.5)
        q_safe = tf.clip_by_value(tf.where(lower_half, 0.25, q), 1e-30, 0.5)
        standard = tf.where(lower_half, tf.math.ndtri(p_safe), -tf.math.ndtri(q_safe))
        log_theta = tf.clip_by_value(self.mu + self.sigma * standard, self.a, self.b)
        return tf.exp(log_theta)


__all__ = [
    "LOG_SIGMA_MAX",
    "LOG_SIGMA_MIN",
    "LOG_THETA_MAX",
    "LOG_THETA_MIN",
    "TruncatedLogNormal",
    "validate_interval",
]
