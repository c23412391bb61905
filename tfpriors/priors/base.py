"""The interface every prior over weights implements."""

import abc

import keras


class Prior(abc.ABC):
    """A prior over the weights of a variational layer.

    A layer hands its posterior parameters to ``kl`` and adds the result to its
    loss through the shared KL path (:class:`tfpriors.layers.KLLayer`), so the
    layer never needs to know which prior it has.

    Subclasses implement ``kl`` and, when they take arguments, ``get_config``
    (register them with ``keras.saving.register_keras_serializable`` so that
    layers using them save and load).

    Example:
    >>> class WeightDecay(tfpriors.priors.Prior):
    ...     # A stand-in for a KL: an L2 penalty on the means.
    ...     def __init__(self, scale=1e-3):
    ...         self.scale = scale
    ...     def kl(self, mean, log_sigma2):
    ...         return self.scale * keras.ops.sum(keras.ops.square(mean))
    ...     def get_config(self):
    ...         return {"scale": self.scale}
    >>> prior = WeightDecay(scale=0.5)
    >>> prior
    WeightDecay(scale=0.5)
    >>> float(prior.kl(np.ones(4, "float32"), np.zeros(4, "float32")))
    2.0
    >>> layer = tfpriors.layers.VariationalDense(3, prior=prior, dataset_size=100)
    >>> layer(np.ones((2, 4), "float32"), training=True).shape
    TensorShape([2, 3])
    """

    @abc.abstractmethod
    def kl(self, mean, log_sigma2):
        """Returns KL(q || p) summed over all weights, as a float32 scalar.

        Args:
            mean: posterior means, any shape.
            log_sigma2: posterior log-variances, the shape of ``mean``.

        Returns:
            The KL divergence of ``q = N(mean, exp(log_sigma2))`` from the prior
            (or an upper bound on it), a float32 scalar tensor.
        """

    def get_config(self):
        return {}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


def serialize(prior):
    """Returns a JSON-friendly description of ``prior`` for ``get_config``.

    Args:
        prior: a registered :class:`Prior`.
    """
    return keras.saving.serialize_keras_object(prior)


def deserialize(config):
    """Inverse of :func:`serialize`.

    Args:
        config: what :func:`serialize` returned.
    """
    return keras.saving.deserialize_keras_object(config)
