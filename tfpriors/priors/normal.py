"""The Gaussian prior N(0, variance) over every weight."""

import math

import keras
from keras import ops

from tfpriors import _validation
from tfpriors.priors.base import Prior


@keras.saving.register_keras_serializable(package="tfpriors")
class Normal(Prior):
    """Zero-mean Gaussian prior ``p(w) = N(0, variance)`` with a closed-form KL.

    ``KL(N(m, s^2) || N(0, v)) = 0.5 * (s^2/v + m^2/v - 1 - log(s^2/v))`` per weight.

    Args:
        variance: prior variance, a positive float (1.0 is the standard normal).

    Example:
    >>> prior = tfpriors.priors.Normal(variance=0.1)
    >>> float(prior.kl(keras.ops.zeros((4,)), keras.ops.log(0.1 * keras.ops.ones((4,)))))
    0.0
    >>> layer = tfpriors.layers.VariationalDense(10, prior=prior)
    >>> layer.prior
    Normal(variance=0.1)
    """

    def __init__(self, variance=1.0):
        self.variance = _validation.positive_number(variance, "variance")

    def kl(self, mean, log_sigma2):
        mean = ops.cast(mean, "float32")
        log_sigma2 = ops.cast(log_sigma2, "float32")
        log_ratio = log_sigma2 - math.log(self.variance)
        return 0.5 * ops.sum(
            ops.exp(log_ratio) + ops.square(mean) / self.variance - 1.0 - log_ratio
        )

    def get_config(self):
        return {"variance": self.variance}
