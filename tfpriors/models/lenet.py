"""LeNet-300-100 and the Caffe-style LeNet-5, dense or Sparse VD."""

import keras

from tfpriors import _validation
from tfpriors.layers.sparse_vd import SparseVDConv2D, SparseVDDense

KINDS = ("dense", "sparse_vd")


def _layer_types(kind):
    kind = _validation.one_of(kind, "kind", set(KINDS))
    if kind == "sparse_vd":
        return SparseVDDense, SparseVDConv2D
    return keras.layers.Dense, keras.layers.Conv2D


def check_common(input_shape, num_classes):
    """``input_shape`` (a tuple of positive ints) and ``num_classes`` of a model builder."""
    return (
        _validation.shape(input_shape, "input_shape"),
        _validation.positive_int(num_classes, "num_classes"),
    )


def lenet_300_100(input_shape=(784,), num_classes=10, kind="dense", name=None):
    """The fully connected LeNet-300-100 (two hidden ReLU layers of 300 and 100 units).

    Inputs of any shape are flattened first. Outputs are logits.

    Args:
        input_shape: shape of one example, e.g. ``(64,)`` for digits.
        num_classes: number of output logits.
        kind: ``"dense"`` (``keras.layers.Dense``) or ``"sparse_vd"`` (``SparseVDDense``).
        name: the model's name; default ``"lenet_300_100_<kind>"``.

    Returns:
        A ``keras.Sequential`` producing logits.

    Example:
    >>> model = tfpriors.models.lenet_300_100((64,), 10, kind="sparse_vd")
    >>> [(layer.name, type(layer).__name__, layer.units) for layer in model.layers]
    [('fc1', 'SparseVDDense', 300), ('fc2', 'SparseVDDense', 100), ('fc3', 'SparseVDDense', 10)]
    >>> model.name, model.output_shape
    ('lenet_300_100_sparse_vd', (None, 10))
    """
    input_shape, num_classes = check_common(input_shape, num_classes)
    dense, _ = _layer_types(kind)
    layers = [keras.Input(input_shape)]
    if len(input_shape) > 1:
        layers.append(keras.layers.Flatten())
    layers += [
        dense(300, activation="relu", name="fc1"),
        dense(100, activation="relu", name="fc2"),
        dense(num_classes, name="fc3"),
    ]
    return keras.Sequential(layers, name=name or f"lenet_300_100_{kind}")


def lenet5(input_shape=(28, 28, 1), num_classes=10, kind="dense", padding="auto", name=None):
    """Caffe's LeNet-5: conv 20@5x5, max-pool, conv 50@5x5, max-pool, 500 ReLU, logits.

    Args:
        input_shape: ``(height, width, channels)``.
        num_classes: number of output logits.
        kind: ``"dense"`` or ``"sparse_vd"``.
        padding: ``"valid"`` (Caffe), ``"same"``, or ``"auto"``: valid for
            inputs of at least 16 pixels a side, same for small ones such as
            the 8x8 digits (valid 5x5 convolutions would not fit there).
        name: the model's name; default ``"lenet5_<kind>"``.

    Returns:
        A ``keras.Sequential`` producing logits.

    Example:
    >>> model = tfpriors.models.lenet5((8, 8, 1), 10, kind="sparse_vd")
    >>> [layer.name for layer in model.layers]
    ['conv1', 'pool1', 'conv2', 'pool2', 'flatten', 'fc1', 'fc2']
    >>> model.get_layer("conv1").padding  # "auto" chose "same" for 8x8 inputs
    'same'
    >>> model.output_shape
    (None, 10)
    """
    input_shape, num_classes = check_common(input_shape, num_classes)
    if len(input_shape) != 3:
        raise ValueError(
            f"`input_shape` of lenet5 must be (height, width, channels); received {input_shape}."
        )
    dense, conv = _layer_types(kind)
    padding = _validation.one_of(padding, "padding", {"auto", "valid", "same"})
    if padding == "auto":
        padding = "valid" if min(input_shape[:2]) >= 16 else "same"
    return keras.Sequential(
        [
            keras.Input(input_shape),
            conv(20, 5, padding=padding, name="conv1"),
            keras.layers.MaxPooling2D(2, name="pool1"),
            conv(50, 5, padding=padding, name="conv2"),
            keras.layers.MaxPooling2D(2, name="pool2"),
            keras.layers.Flatten(name="flatten"),
            dense(500, activation="relu", name="fc1"),
            dense(num_classes, name="fc2"),
        ],
        name=name or f"lenet5_{kind}",
    )
