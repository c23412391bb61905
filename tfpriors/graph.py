"""Walking a Keras model: its layers in model order, and what follows a layer.

The one place that knows how layers connect: the reports and plots list
layers with :func:`walk`; ``perforation`` finds the pooling after a
convolution and ``export.shrink`` the layer a dead channel reaches, both with
:func:`chain_after`.
"""

import keras

from tfpriors import _validation


def walk(model, include_self=False):
    """Yields every layer of ``model`` depth first, in the order the model uses them.

    Keras' own ``_flatten_layers`` lists the layers of nested models in
    reverse; reports and plots want the layer that sees the input first.

    Example:

    >>> [layer.name for layer in tfpriors.graph.walk(model)][:2]
    ['conv1', 'pool1']
    """
    if not isinstance(model, keras.layers.Layer):
        raise TypeError(f"`model` must be a Keras model or layer; received {type(model).__name__}.")
    seen, stack = set(), [model]
    while stack:
        layer = stack.pop()
        if id(layer) in seen:
            continue
        seen.add(id(layer))
        if layer is not model or include_self:
            yield layer
        stack.extend(reversed(getattr(layer, "_layers", [])))


def _check_layer(layer):
    if not isinstance(layer, keras.layers.Layer):
        raise TypeError(f"`layer` must be a Keras layer; received {type(layer).__name__}.")
    return layer


def consumers(layer, members=None):
    """The layers that take ``layer``'s output, restricted to ``members`` (layer ids).

    Example:

    >>> [c.name for c in tfpriors.graph.consumers(model.get_layer("conv1"))]
    ['pool1']
    """
    found = [node.operation for node in _check_layer(layer)._outbound_nodes]
    return found if members is None else [c for c in found if id(c) in members]


def chain_after(layer, passes, stops, members=None, outputs=(), limit=None):
    """Follows ``layer``'s output through single consumers.

    Returns ``(chain, stop)``: the layers for which ``passes(layer)`` held on
    the way and the first one for which ``stops(layer)`` holds, or None when
    the output branches, becomes a model output (``outputs``: tensor ids),
    reaches a layer that neither passes nor stops, or is followed more than
    ``limit`` steps.

    Example:

    >>> chain, pooling = tfpriors.graph.chain_after(
    ...     conv, passes=lambda l: isinstance(l, keras.layers.ReLU),
    ...     stops=lambda l: isinstance(l, keras.layers.MaxPooling2D))
    """
    _check_layer(layer)
    for name, function in (("passes", passes), ("stops", stops)):
        if not callable(function):
            raise TypeError(f"`{name}` must be a callable taking a layer; received {function!r}.")
    if limit is not None:
        limit = _validation.positive_int(limit, "limit")
    chain, current = [], layer
    while limit is None or len(chain) < limit:
        following = consumers(current, members)
        if len(following) != 1 or id(current.output) in outputs:
            return None
        current = following[0]
        if stops(current):
            return chain, current
        if not passes(current):
            return None
        chain.append(current)
    return None


__all__ = ["chain_after", "consumers", "walk"]
