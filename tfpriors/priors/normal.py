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
        return ops.sum(self.kl_per_weight(mean, log_sigma2))

    def kl_per_weight(self, mean, log_sigma2):
        """The KL of each weight (``kl`` is their sum), float32, the shape of ``mean``.

        A layer that needs several sums (one per lambda draw in the
        hypernetwork layers) reduces these terms itself in one op.

        Example:
        >>> prior = tfpriors.priors.Normal(variance=1.0)
        >>> terms = prior.kl_per_weight(np.array([0.0, 1.0], "float32"), np.zeros(2, "float32"))
        >>> [round(float(t), 3) for t in terms]
        [0.0, 0.5]
        """
        mean = ops.cast(mean, "float32")
        log_sigma2 = ops.cast(log_sigma2, "float32")
        log_ratio = log_sigma2 - math.log(self.variance)
        return 0.5 * (ops.exp(log_ratio) + ops.square(mean) / self.variance - 1.0 - log_ratio)

    def get_config(self):
        return {"variance": self.variance}
