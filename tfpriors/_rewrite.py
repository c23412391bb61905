"""One mechanism to rebuild a Sequential or functional model layer by layer.

``sparsify`` (Dense -> Sparse VD) and the exporter (tfpriors layers -> plain
Keras layers, dead units removed) both clone a model, swapping some layers
and copying the weights of the rest; this module does that once.

Copies are made from the live layer, not from a serialization round trip:
the Python functions a layer holds (a ``Lambda`` layer's function, a custom
activation) are passed on as they are, so that rewriting a model the user
built in this process never trips Keras' safe mode or its registry of
serializable names.
"""

import functools
import types
import warnings

import keras

# Python callables that a config can only name or marshal, never rebuild safely.
_FUNCTION_TYPES = (
    types.FunctionType,
    types.BuiltinFunctionType,
    types.MethodType,
    functools.partial,
)


def retrace(model):
    """Drops ``model``'s traced train / test / predict steps.

    The next ``fit``, ``evaluate`` or ``predict`` traces again, seeing a changed
    Python-level setting (a dataset size, a probabilistic ACT mode) that the traced
    steps hold as a constant.
    """
    for attr in ("train_function", "test_function", "predict_function"):
        if getattr(model, attr, None) is not None:
            setattr(model, attr, None)


def check_rewritable(model):
    """Raises unless ``model`` is a built Sequential or functional model."""
    from keras.src.models.functional import Functional

    if not isinstance(model, keras.Model):
        raise TypeError(f"`model` must be a keras.Model; received {type(model).__name__}.")
    if not isinstance(model, (keras.Sequential, Functional)):
        raise ValueError(
            "`model` must be a Sequential or functional model; subclassed "
            f"models ({type(model).__name__}) cannot be rewritten layer by "
            "layer."
        )
    if not model.built:
        raise ValueError("`model` must be built (give it an Input) before it can be rewritten.")


def live_config(layer):
    """``layer.get_config()`` with its Python functions as they are, not serialized.

    An entry whose value the layer holds as a Python function (a custom or
    lambda ``activation``) is that function, which ``from_config`` and the
    layer constructors accept; Keras' warning that a lambda cannot be
    reloaded is not raised, since nothing is reloaded.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*includes a `lambda`")
        config = layer.get_config()
    attributes = vars(layer)
    for key in config:
        if isinstance(attributes.get(key), _FUNCTION_TYPES):
            config[key] = attributes[key]
    return config


def copy_layer(layer, **overrides):
    """A new, unbuilt layer configured like ``layer``, without a serialization round trip.

    A ``keras.layers.Lambda`` is rebuilt from its function, output shape, mask
    and arguments directly. Any other layer is rebuilt from its
    ``get_config()``, except that config entries holding a Python function
    (e.g. a custom ``activation``) are given the layer's own function.

    Args:
        layer: a Keras layer.
        **overrides: config entries to change (e.g. ``units=4``).

    Returns:
        The new layer (no weights yet; build it, then copy the weights).

    Raises:
        ValueError: when the layer cannot be rebuilt from its config; the
            message names the layer and what to do.

    Example:
    >>> from tfpriors._rewrite import copy_layer
    >>> double = keras.layers.Lambda(lambda x: x * 2.0, name="double")
    >>> copy = copy_layer(double)  # no safe-mode error: the function is not reloaded
    >>> copy is double, copy.function is double.function, copy.name
    (False, True, 'double')
    >>> copy_layer(keras.layers.Dense(4, name="fc"), units=2).units
    2
    """
    if type(layer) is keras.layers.Lambda:
        config = {
            "function": layer.function,
            "output_shape": getattr(layer, "_output_shape", None),
            "mask": layer.mask,
            "arguments": dict(layer.arguments),
            "name": layer.name,
            "dtype": layer.dtype_policy,
            "trainable": layer.trainable,
        }
        config.update(overrides)
        return keras.layers.Lambda(**config)
    config = live_config(layer)
    config.update(overrides)
    try:
        return layer.__class__.from_config(config)
    except (TypeError, ValueError) as error:
        cause = " ".join(str(error).split())
        if len(cause) > 400:
            cause = cause[:400] + "..."
        raise ValueError(
            f"Layer '{layer.name}' ({type(layer).__name__}) cannot be rebuilt from its "
            f"config ({type(error).__name__}: {cause}). Give it a `get_config()` that lists every "
            "constructor argument and register its custom objects with "
            "`keras.saving.register_keras_serializable()`, or replace it by "
            "built-in layers or a `keras.layers.Lambda`."
        ) from error


def rewrite_model(model, replace, insert_after=None):
    """Clones ``model``, replacing layers as ``replace`` says.

    Args:
        model: a built Sequential or functional model; nested ones are
            rewritten recursively.
        replace: ``replace(layer)`` returns ``None`` to keep a copy of the layer
            with its weights, or ``(new_layer, set_weights)`` where
            ``set_weights(new_layer)`` is called once the new layer is built.
        insert_after: optional ``insert_after(layer)``, called with each
            original (non-model) layer: ``None``, or a new layer that the copy
            of ``layer`` feeds (``tfpriors.structured`` inserts gates so).

    Returns:
        The new model (uncompiled); ``model`` is left unchanged.
    """
    check_rewritable(model)
    pending = {}

    def clone_layer(layer):
        replacement = replace(layer)
        if replacement is None:
            new_layer = copy_layer(layer)
            weights = layer.get_weights()
            pending[id(new_layer)] = (
                new_layer,
                lambda target, weights=weights: target.set_weights(weights),
            )
            return new_layer
        new_layer, set_weights = replacement
        pending[id(new_layer)] = (new_layer, set_weights)
        return new_layer

    if insert_after is None:
        new_model = keras.models.clone_model(model, clone_function=clone_layer, recursive=True)
    else:
        following = {}

        def clone_and_insert(layer):
            new_layer = clone_layer(layer)
            inserted = insert_after(layer)
            if inserted is not None:
                following[id(new_layer)] = inserted
            return new_layer

        new_model = _clone_inserting(model, clone_and_insert, following)
    for new_layer, set_weights in pending.values():
        set_weights(new_layer)
    return new_model


def _clone_inserting(model, clone_layer, following):
    """``clone_model`` that also calls ``following[id(copy)]`` on a copy's output.

    Keras' ``call_function`` does this for functional models only, so
    Sequential models (top-level or nested) are rebuilt here layer by layer.
    """
    from keras.src.models.functional import Functional

    def clone(layer):
        if isinstance(layer, (keras.Sequential, Functional)):
            return _clone_inserting(layer, clone_layer, following)
        return clone_layer(layer)

    if isinstance(model, keras.Sequential):
        layers = []
        for layer in model.layers:
            new_layer = clone(layer)
            layers.append(new_layer)
            if id(new_layer) in following:
                layers.append(following[id(new_layer)])
        spec = model.inputs[0]
        inputs = keras.Input(batch_shape=spec.shape, dtype=spec.dtype)
        return keras.Sequential([inputs, *layers], name=model.name, trainable=model.trainable)

    def call(layer, *args, **kwargs):
        outputs = layer(*args, **kwargs)
        inserted = following.get(id(layer))
        return outputs if inserted is None else inserted(outputs)

    return keras.models.clone_model(model, clone_function=clone, call_function=call)
