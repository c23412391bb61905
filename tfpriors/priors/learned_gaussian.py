"""A Gaussian prior whose mean and variance are fitted to the layer (empirical Bayes)."""

import keras
from keras import ops

from tfpriors import _validation
from tfpriors.priors.base import Prior


@keras.saving.register_keras_serializable(package="tfpriors")
class LearnedGaussian(Prior):
    """Prior ``N(mu, v)`` over a layer's weights with ``mu`` and ``v`` chosen by empirical Bayes.

    For a fixed Gaussian posterior ``q = prod N(m_i, s_i^2)`` the ``(mu, v)``
    that minimise ``KL(q || N(mu, v))`` are closed form:
    ``mu = mean(m)`` (0 with ``zero_mean=True``) and
    ``v = mean(s^2 + (m - mu)^2)``. ``kl`` evaluates the KL at that optimum,
    so every layer gets its own prior, refitted at every step. Since the
    optimum is a stationary point of the KL in ``(mu, v)``, the gradient with
    respect to the posterior is the same as for a prior held fixed there.

    Args:
        zero_mean: keep the prior mean at 0 and fit only the variance.
        min_variance: lower bound of the fitted variance (keeps a collapsed
            posterior from driving the prior to a point mass), > 0.

    Example:
    >>> prior = tfpriors.priors.LearnedGaussian()
    >>> mean, log_sigma2 = np.array([1.0, 3.0]), np.zeros(2)  # q = N(1, 1) N(3, 1)
    >>> mu, variance = prior.fit(mean, log_sigma2)
    >>> float(mu), float(variance)
    (2.0, 2.0)
    >>> round(float(prior.kl(mean, log_sigma2)), 4)  # log 2 at the optimum
    0.6931
    >>> layer = tfpriors.layers.VariationalDense(10, prior=prior, dataset_size=1347)
    >>> layer(np.ones((2, 64), "float32"), training=True).shape
    TensorShape([2, 10])
    >>> len(layer.losses)
    1
    """

    def __init__(self, zero_mean=False, min_variance=1e-8):
        zero_mean = _validation.boolean(zero_mean, "zero_mean")
        self.zero_mean = zero_mean
        self.min_variance = _validation.positive_number(min_variance, "min_variance")

    def fit(self, mean, log_sigma2):
        """The empirical-Bayes prior ``(mu, variance)`` for this posterior (float32 scalars).

        Args:
            mean: posterior means, any shape.
            log_sigma2: posterior log-variances, the shape of ``mean``.

        Returns:
            ``(mu, variance)``: the prior mean (0 with ``zero_mean``) and the
            fitted variance, at least ``min_variance``.
        """
        mean = ops.cast(mean, "float32")
        log_sigma2 = ops.cast(log_sigma2, "float32")
        mu = ops.zeros((), "float32") if self.zero_mean else ops.mean(mean)
        variance = ops.mean(ops.exp(log_sigma2) + ops.square(mean - mu))
        return mu, ops.maximum(variance, self.min_variance)

    def kl(self, mean, log_sigma2):
        mu, variance = self.fit(mean, log_sigma2)
        mean = ops.cast(mean, "float32")
        log_sigma2 = ops.cast(log_sigma2, "float32")
        log_variance = ops.log(variance)
        return 0.5 * ops.sum(
            log_variance
            - log_sigma2
            + (ops.exp(log_sigma2) + ops.square(mean - mu)) / variance
            - 1.0
        )

    def get_config(self):
        return {"zero_mean": self.zero_mean, "min_variance": self.min_variance}
