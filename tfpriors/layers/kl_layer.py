"""The one KL path shared by every variational layer.

A variational layer subclasses :class:`KLLayer` and calls ``add_kl(kl, training)``
from ``call``. The layer then adds ``kl_weight * kl / dataset_size`` to the
model's losses, so the compiled loss becomes the per-example negative ELBO.
``dataset_size`` is set once per model with :func:`set_dataset_size`;
``kl_weight`` is a non-trainable variable that callbacks (``KLWarmup``) change.
"""

import abc

import keras

from tfpriors import _validation
from tfpriors._rewrite import retrace
from tfpriors.graph import walk


class DatasetSizeNotSetError(ValueError):
    """Raised when a variational layer trains without a dataset size."""


class KLLayer(keras.layers.Layer, metaclass=abc.ABCMeta):
    """Base class of layers whose weights have a posterior and a prior.

    Args:
        dataset_size: number of training examples the KL term is divided by.
            Usually left ``None`` here and set for the whole model with
            ``tfpriors.set_dataset_size(model, n)``.
        **kwargs: base ``keras.layers.Layer`` arguments (``name``, ``dtype``).
    """

    def __init__(self, dataset_size=None, **kwargs):
        super().__init__(**kwargs)
        self.dataset_size = (
            None if dataset_size is None else _validation.positive_int(dataset_size, "dataset_size")
        )
        self.kl_weight = self.add_weight(
            shape=(), initializer="ones", trainable=False, name="kl_weight", autocast=False
        )

    @abc.abstractmethod
    def kl(self):
        """Returns the unscaled KL(q || p) of this layer's weights (float32 scalar)."""

    def wants_kl(self, training):
        """Whether :meth:`add_kl` would add (or, training without a dataset size, refuse)
        the KL: layers skip computing it when not."""
        return bool(training) or self.dataset_size is not None

    def add_kl(self, training, kl=None):
        """Adds ``kl_weight * kl / dataset_size`` to the layer's losses.

        Training without a dataset size is refused rather than silently
        mis-scaled; evaluation without one simply reports no KL.

        Args:
            training: whether the layer is called in training mode.
            kl: the KL value when the layer computed it already (``self.kl()``
                otherwise).
        """
        if not self.wants_kl(training):
            return
        if self.dataset_size is None:
            if training:
                raise DatasetSizeNotSetError(
                    f"Layer '{self.name}' ({type(self).__name__}) has a KL term but no "
                    "dataset size, so its KL cannot be scaled per example. Call "
                    "`tfpriors.set_dataset_size(model, len(x_train))` before `fit` "
                    "(or pass `dataset_size=` to the layer)."
                )
            return
        if kl is None:
            kl = self.kl()
        self.add_loss(self.kl_weight * kl / float(self.dataset_size))

    def get_config(self):
        config = super().get_config()
        config["dataset_size"] = self.dataset_size
        return config


def kl_layers(model):
    """Lists the :class:`KLLayer` instances of ``model``, nested ones included."""
    return [layer for layer in walk(model, include_self=True) if isinstance(layer, KLLayer)]


def set_dataset_size(model, dataset_size):
    """Sets the training-set size used to scale every KL term of ``model``.

    Walks nested layers and models; layers without a KL are left alone.

    Args:
        model: a Keras model (or a single variational layer).
        dataset_size: the number of training examples, a positive integer.

    Returns:
        The number of layers that were updated.

    Example:

    >>> model = keras.Sequential([keras.Input((64,)), tfpriors.layers.SparseVDDense(10)])
    >>> tfpriors.set_dataset_size(model, 1347)
    1
    """
    dataset_size = _validation.positive_int(dataset_size, "dataset_size")
    layers = kl_layers(model)
    for layer in layers:
        layer.dataset_size = dataset_size
    retrace(model)
    return len(layers)


def set_kl_weight(model, kl_weight):
    """Sets the KL weight (0 = no KL, 1 = the full ELBO) of every KL layer of ``model``."""
    kl_weight = _validation.real_number(kl_weight, "kl_weight", minimum=0.0)
    for layer in kl_layers(model):
        layer.kl_weight.assign(kl_weight)
