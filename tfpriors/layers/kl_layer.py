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
    """Raised when a variational layer trains without a dataset size.

    A KL term cannot be scaled per example without the training-set size, so
    training refuses to run rather than mis-scale the loss. Set the size with
    ``tfpriors.set_dataset_size(model, len(x_train))`` (or ``dataset_size=``).

    Example:
    >>> layer = tfpriors.layers.SparseVDDense(2)
    >>> try:
    ...     layer(np.ones((1, 3), "float32"), training=True)
    ... except tfpriors.layers.DatasetSizeNotSetError:
    ...     print("set the dataset size first")
    set the dataset size first
    >>> tfpriors.set_dataset_size(layer, 100)
    1
    >>> layer(np.ones((1, 3), "float32"), training=True).shape
    TensorShape([1, 2])
    """


class KLLayer(keras.layers.Layer, metaclass=abc.ABCMeta):
    """Base class of layers whose weights have a posterior and a prior.

    A subclass implements :meth:`kl` (the unscaled KL of its weights) and calls
    :meth:`add_kl` from ``call``; the layer then adds
    ``kl_weight * kl / dataset_size`` to the model's losses. ``kl_weight`` is a
    non-trainable variable (1 unless a callback such as ``KLWarmup`` changes it).

    Args:
        dataset_size: number of training examples the KL term is divided by.
            Usually left ``None`` here and set for the whole model with
            ``tfpriors.set_dataset_size(model, n)``.
        **kwargs: base ``keras.layers.Layer`` arguments (``name``, ``dtype``).

    Input shape:
        Whatever the subclass accepts.

    Output shape:
        Whatever the subclass returns.

    Example:
    >>> class ShrunkDense(tfpriors.layers.KLLayer):
    ...     def build(self, input_shape):
    ...         self.w = self.add_weight(shape=(input_shape[-1], 2))
    ...     def kl(self):  # a penalty standing in for KL(q || p)
    ...         return keras.ops.sum(keras.ops.square(self.w))
    ...     def call(self, inputs, training=False):
    ...         self.add_kl(training)
    ...         return keras.ops.matmul(inputs, self.w)
    >>> layer = ShrunkDense(dataset_size=100)
    >>> layer(np.ones((3, 4), "float32"), training=True).shape
    TensorShape([3, 2])
    >>> len(layer.losses)
    1
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
        """Whether :meth:`add_kl` would add the KL (or, training without a dataset size, refuse it).

        Layers skip computing the KL when it would not be added.

        Args:
            training: whether the layer is called in training mode.
        """
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
    """Lists the :class:`KLLayer` instances of ``model``, nested ones included.

    Args:
        model: a Keras model or layer.

    Returns:
        A list of the KL layers, in model order (``model`` itself first when it is one).
    """
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
    >>> (x, y), _ = tfpriors.datasets.load_digits()
    >>> model = keras.Sequential([keras.Input((64,)), tfpriors.layers.SparseVDDense(10)])
    >>> tfpriors.set_dataset_size(model, len(x))
    1
    >>> model.layers[0].dataset_size == len(x)
    True
    """
    dataset_size = _validation.positive_int(dataset_size, "dataset_size")
    layers = kl_layers(model)
    for layer in layers:
        layer.dataset_size = dataset_size
    retrace(model)
    return len(layers)


def set_kl_weight(model, kl_weight):
    """Sets the KL weight (0 = no KL, 1 = the full ELBO) of every KL layer of ``model``.

    The weight is a non-trainable variable, so changing it needs no retracing
    (``tfpriors.callbacks.KLWarmup`` calls this every epoch).

    Args:
        model: a Keras model (or a single variational layer).
        kl_weight: the new weight, a number >= 0.

    Example:
    >>> model = keras.Sequential([keras.Input((64,)), tfpriors.layers.SparseVDDense(10)])
    >>> tfpriors.set_kl_weight(model, 0.5)
    >>> float(model.layers[0].kl_weight.numpy())
    0.5
    """
    kl_weight = _validation.real_number(kl_weight, "kl_weight", minimum=0.0)
    for layer in kl_layers(model):
        layer.kl_weight.assign(kl_weight)
