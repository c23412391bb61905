"""Walk the layers of a model in model order, nested models included."""

import keras


def walk(model, include_self=False):
    """Yields every layer of ``model`` depth first, in the order the model uses them.

    Keras' own ``_flatten_layers`` lists the layers of nested models in
    reverse; reports and plots want the layer that sees the input first.
    """
    if not isinstance(model, keras.layers.Layer):
        raise TypeError(f"`model` must be a Keras model or layer; received "
                        f"{type(model).__name__}.")
    seen, stack = set(), [model]
    while stack:
        layer = stack.pop()
        if id(layer) in seen:
            continue
        seen.add(id(layer))
        if layer is not model or include_self:
            yield layer
        stack.extend(reversed(getattr(layer, "_layers", [])))
