"""The log-uniform prior of Sparse Variational Dropout (Molchanov et al., 2017)."""

import keras
from keras import ops

from tfpriors import _validation
from tfpriors.priors.base import Prior

# Constants of the sigmoid approximation of -KL(q || log-uniform), fitted in the paper.
K1, K2, K3 = 0.63576, 1.87320, 1.48695
LOG_ALPHA_MIN, LOG_ALPHA_MAX = -8.0, 8.0


def log_alpha(mean, log_sigma2):
    """Dropout log-rate of the additive parametrization, clipped to [-8, 8].

    ``log_alpha = clip(log_sigma2 - log(mean^2 + 1e-8), -8, 8)``.

    Args:
        mean: posterior means (a tensor, array or nested list).
        log_sigma2: posterior log-variances, the shape of ``mean``.

    Returns:
        A float32 tensor of the shape of ``mean``.

    Raises:
        ValueError: when NumPy or list inputs differ in shape.

    Example:
    >>> log_alpha = tfpriors.priors.log_alpha([1.0, 0.1, 0.001], [-2.0, -2.0, -2.0])
    >>> np.round(keras.ops.convert_to_numpy(log_alpha), 2)  # the last one is clipped
    array([-2.  ,  2.61,  8.  ], dtype=float32)
    """
    if not (ops.is_tensor(mean) or ops.is_tensor(log_sigma2)):
        # NumPy or lists from a user; tensors inside layers are checked by their shapes.
        mean = _validation.numeric_array(mean, "mean")
        log_sigma2 = _validation.numeric_array(log_sigma2, "log_sigma2")
        if mean.shape != log_sigma2.shape:
            raise ValueError(
                f"`mean` and `log_sigma2` must have the same shape; received "
                f"{mean.shape} and {log_sigma2.shape}."
            )
    return ops.clip(log_sigma2 - ops.log(ops.square(mean) + 1e-8), LOG_ALPHA_MIN, LOG_ALPHA_MAX)


@keras.saving.register_keras_serializable(package="tfpriors")
class LogUniform(Prior):
    """Improper log-uniform prior ``p(|w|) ∝ 1/|w|``, the sparsifying prior.

    Its KL divergence from a Gaussian posterior depends only on the dropout
    rate ``alpha = sigma^2 / mean^2`` and is approximated by

    ``-KL ~= k1 * sigmoid(k2 + k3 * log_alpha) - 0.5 * log1p(exp(-log_alpha)) - k1``

    with ``k1, k2, k3 = 0.63576, 1.87320, 1.48695``. It takes no arguments;
    it is the prior of the Sparse VD layers and ``prior="log_uniform"``.

    Example:
    >>> prior = tfpriors.priors.LogUniform()
    >>> float(prior.kl(keras.ops.ones((3,)), keras.ops.zeros((3,))))  # alpha = 1
    1.2937...
    >>> layer = tfpriors.layers.VariationalDense(10, prior=prior)
    >>> layer.prior
    LogUniform()
    """

    def kl_from_log_alpha(self, log_alpha_value):
        """Elementwise approximate KL(q || p) for the given log dropout rates."""
        log_alpha_value = ops.cast(log_alpha_value, "float32")
        # k1 - k1*sigmoid(t) written as k1*sigmoid(-t): no cancellation in float32.
        return K1 * ops.sigmoid(-(K2 + K3 * log_alpha_value)) + 0.5 * ops.softplus(-log_alpha_value)

    def kl_derivative(self, log_alpha_value):
        """Elementwise d KL / d log_alpha of :meth:`kl_from_log_alpha`."""
        log_alpha_value = ops.cast(log_alpha_value, "float32")
        gate = ops.sigmoid(-(K2 + K3 * log_alpha_value))
        return -K1 * K3 * gate * (1.0 - gate) - 0.5 * ops.sigmoid(-log_alpha_value)

    def kl(self, mean, log_sigma2):
        mean = ops.cast(mean, "float32")
        log_sigma2 = ops.cast(log_sigma2, "float32")
        return ops.sum(self.kl_from_log_alpha(log_alpha(mean, log_sigma2)))


def validate_threshold(threshold):
    """Checks the pruning threshold on log_alpha of a Sparse VD layer.

    Args:
        threshold: a number in [-8, 8] (the range of the clipped log_alpha).

    Returns:
        ``threshold`` as a float.
    """
    return _validation.real_number(
        threshold, "threshold", minimum=LOG_ALPHA_MIN, maximum=LOG_ALPHA_MAX
    )
