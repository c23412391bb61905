"""A small CNN for 8x8 digits and other small images, with a named feature layer."""

import keras

from tfpriors import _validation
from tfpriors.models.lenet import check_common


def small_cnn(input_shape=(8, 8, 1), num_classes=10, width=16, name=None):
    """Two 3x3 convolutions, a max-pool, a 64-unit ``"features"`` layer and logits.

    The ``"features"`` layer is the embedding used by MeTTA
    (``tfpriors.tta.mean_embeddings(model, "features", ...)``).

    Args:
        input_shape: ``(height, width, channels)`` of one image.
        num_classes: number of output logits.
        width: filters of the first convolution; the second has ``2 * width``.
        name: the model's name; default ``"small_cnn"``.

    Returns:
        A ``keras.Sequential`` producing logits.

    Example:
    >>> model = tfpriors.models.small_cnn((8, 8, 1), 10)
    >>> [layer.name for layer in model.layers]
    ['conv1', 'pool', 'conv2', 'flatten', 'features', 'logits']
    >>> model.get_layer("features").output.shape, model.output_shape
    ((None, 64), (None, 10))
    """
    input_shape, num_classes = check_common(input_shape, num_classes)
    width = _validation.positive_int(width, "width")
    if len(input_shape) != 3:
        raise ValueError(
            f"`input_shape` of small_cnn must be (height, width, channels); received {input_shape}."
        )
    return keras.Sequential(
        [
            keras.Input(input_shape),
            keras.layers.Conv2D(width, 3, padding="same", activation="relu", name="conv1"),
            keras.layers.MaxPooling2D(name="pool"),
            keras.layers.Conv2D(2 * width, 3, padding="same", activation="relu", name="conv2"),
            keras.layers.Flatten(name="flatten"),
            keras.layers.Dense(64, activation="relu", name="features"),
            keras.layers.Dense(num_classes, name="logits"),
        ],
        name=name or "small_cnn",
    )
