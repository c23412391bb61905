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

    Args:
        model: a Keras model or layer.
        include_self: also yield ``model`` itself, first.

    Yields:
        Keras layers, ``InputLayer`` ones included; a nested model is yielded
        before its own layers.

    Example:
    >>> block = keras.Sequential(
    ...     [keras.layers.Conv2D(4, 3, name="conv2"), keras.layers.ReLU(name="relu2")],
    ...     name="block",
    ... )
    >>> model = keras.Sequential([
    ...     keras.Input((8, 8, 1)),
    ...     keras.layers.Conv2D(4, 3, name="conv1"),
    ...     block,
    ...     keras.layers.Flatten(name="flatten"),
    ... ])
    >>> layers = tfpriors.graph.walk(model)
    >>> [layer.name for layer in layers if not isinstance(layer, keras.layers.InputLayer)]
    ['conv1', 'block', 'conv2', 'relu2', 'flatten']
    """
    if not isinstance(model, keras.layers.Layer):
        raise TypeError(f"`model` must be a Keras model or layer; received {type(model).__name__}.")
    # Checked here, at the call, not at the first ``next`` of a generator.
    return _walk(model, _validation.boolean(include_self, "include_self"))


def _walk(model, include_self):
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
    """``layer`` if it is a Keras layer; else raises TypeError."""
    if not isinstance(layer, keras.layers.Layer):
        raise TypeError(f"`layer` must be a Keras layer; received {type(layer).__name__}.")
    return layer


def _ids(value, name):
    """``value`` (an iterable of ``id()`` values) as a frozenset of ints."""
    items = _validation.sequence(value, name, "a set of id() values (ints)")
    if any(isinstance(item, bool) or not isinstance(item, int) for item in items):
        raise TypeError(f"`{name}` must be a set of id() values (ints); received {value!r}.")
    return frozenset(items)


def consumers(layer, members=None):
    """The layers that take ``layer``'s output, restricted to ``members`` (layer ids).

    Args:
        layer: a Keras layer of a built model.
        members: optional set of ``id(layer)`` values; other consumers are left out
            (e.g. to stay inside one model).

    Returns:
        A list of layers.

    Example:
    >>> inputs = keras.Input((8, 8, 1))
    >>> conv = keras.layers.Conv2D(4, 3, padding="same", name="conv")
    >>> features = conv(inputs)
    >>> left = keras.layers.ReLU(name="relu")(features)
    >>> right = keras.layers.MaxPooling2D(name="pool")(features)
    >>> model = keras.Model(inputs, [left, right])
    >>> [layer.name for layer in tfpriors.graph.consumers(conv)]
    ['relu', 'pool']
    """
    found = [node.operation for node in _check_layer(layer)._outbound_nodes]
    if members is None:
        return found
    members = _ids(members, "members")
    return [c for c in found if id(c) in members]


def chain_after(layer, passes, stops, members=None, outputs=(), limit=None):
    """Follows ``layer``'s output through single consumers.

    Args:
        layer: a Keras layer of a built model.
        passes: ``passes(layer)`` is true for a layer the walk may go through.
        stops: ``stops(layer)`` is true for the layer the walk looks for.
        members: optional set of ``id(layer)`` values the walk stays within.
        outputs: ids of the model's output tensors (the walk stops at them).
        limit: optional largest number of layers passed through.

    Returns:
        ``(chain, stop)``: the layers for which ``passes(layer)`` held on the way
        and the first one for which ``stops(layer)`` holds, or None when the
        output branches, becomes a model output, reaches a layer that neither
        passes nor stops, or is followed more than ``limit`` steps.

    Example:
    >>> model = keras.Sequential([
    ...     keras.Input((8, 8, 1)),
    ...     keras.layers.Conv2D(4, 3, name="conv"),
    ...     keras.layers.ReLU(name="relu"),
    ...     keras.layers.MaxPooling2D(name="pool"),
    ...     keras.layers.Flatten(name="flatten"),
    ... ])
    >>> chain, pooling = tfpriors.graph.chain_after(
    ...     model.get_layer("conv"),
    ...     passes=lambda layer: isinstance(layer, keras.layers.ReLU),
    ...     stops=lambda layer: isinstance(layer, keras.layers.MaxPooling2D),
    ... )
    >>> [layer.name for layer in chain], pooling.name
    (['relu'], 'pool')
    """
    _check_layer(layer)
    for name, function in (("passes", passes), ("stops", stops)):
        if not callable(function):
            raise TypeError(f"`{name}` must be a callable taking a layer; received {function!r}.")
    if limit is not None:
        limit = _validation.positive_int(limit, "limit")
    members = None if members is None else _ids(members, "members")
    outputs = _ids(outputs, "outputs")
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
