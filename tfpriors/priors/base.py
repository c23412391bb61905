"""The interface every prior over weights implements."""

import abc

import keras


class Prior(abc.ABC):
    """A prior over the weights of a variational layer.

    A layer hands its posterior parameters to ``kl`` and adds the result to its
    loss through the shared KL path (:class:`tfpriors.layers.KLLayer`), so the
    layer never needs to know which prior it has.

    Subclasses implement ``kl`` and, when they take arguments, ``get_config``.
    """

    @abc.abstractmethod
    def kl(self, mean, log_sigma2):
        """Returns KL(q || p) summed over all weights, as a float32 scalar.

        Args:
            mean: posterior means, any shape.
            log_sigma2: posterior log-variances, the shape of ``mean``.
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
    """Returns a JSON-friendly description of ``prior`` for ``get_config``."""
    return keras.saving.serialize_keras_object(prior)


def deserialize(config):
    """Inverse of :func:`serialize`."""
    return keras.saving.deserialize_keras_object(config)
