"""The deterministic export graph: every tfpriors layer in its inference form.

A tfpriors layer takes part in export by defining ``inference_layer()``,
which returns a built-in Keras layer and its weights (for Sparse VD: a plain
Dense / Conv2D holding the pruned posterior means). Built-in Keras layers are
kept. Anything else is refused by name, since the exporter cannot know that
it is deterministic and made of TFLite built-in ops.
"""

from tfpriors._rewrite import check_rewritable, rewrite_model


class ExportError(ValueError):
    """A model cannot be exported as asked; the message names the layer.

    A subclass of ``ValueError``, raised by :func:`inference_model`,
    :func:`tfpriors.export.to_tflite` and the converter checks.

    Example:
    >>> class Doubler(keras.layers.Layer):  # a custom layer the exporter does not know
    ...     def call(self, inputs):
    ...         return 2.0 * inputs
    >>> model = keras.Sequential([keras.Input((4,)), Doubler(name="doubler")])
    >>> tfpriors.export.inference_model(model)
    Traceback (most recent call last):
    ...
    tfpriors.export.inference.ExportError: Layer 'doubler' (Doubler) is unknown to the exporter: ...
    >>> issubclass(tfpriors.export.ExportError, ValueError)
    True
    """


def _is_builtin_keras_layer(layer):
    return type(layer).__module__.startswith("keras.")


def inference_model(model):
    """Returns ``model`` with every tfpriors layer replaced by its inference form.

    The result is a plain Keras model (built-in layers only) computing what
    ``model(x, training=False)`` computes.

    Args:
        model: a built Sequential or functional Keras model.

    Returns:
        A new Keras model of built-in layers; ``model`` is not changed.

    Raises:
        ExportError: when a layer is neither a built-in Keras layer nor a
            tfpriors layer with an ``inference_layer()`` method.

    Example:
    >>> sparse_model = keras.Sequential([keras.Input((64,)),
    ...                                  tfpriors.layers.SparseVDDense(16, activation="relu"),
    ...                                  tfpriors.layers.SparseVDDense(10)])
    >>> plain = tfpriors.export.inference_model(sparse_model)
    >>> [type(layer).__name__ for layer in plain.layers]
    ['Dense', 'Dense']
    >>> x = np.random.rand(8, 64).astype("float32")
    >>> np.allclose(plain.predict(x, verbose=0), sparse_model.predict(x, verbose=0), atol=1e-6)
    True
    """
    check_rewritable(model)

    def replace(layer):
        if hasattr(layer, "inference_layer"):
            new_layer, weights = layer.inference_layer()
            return new_layer, lambda target: target.set_weights(weights)
        if _is_builtin_keras_layer(layer):
            return None
        raise ExportError(
            f"Layer '{layer.name}' ({type(layer).__name__}) is unknown to the exporter: it "
            "is neither a built-in Keras layer nor a tfpriors layer with an "
            "`inference_layer()` method. Replace it by built-in layers, or give it an "
            "`inference_layer()` that returns a built-in layer and its weights."
        )

    return rewrite_model(model, replace)
