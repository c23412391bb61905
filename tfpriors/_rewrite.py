"""One mechanism to rebuild a Sequential or functional model layer by layer.

``sparsify`` (Dense -> Sparse VD) and the exporter (tfpriors layers -> plain
Keras layers, dead units removed) both clone a model, swapping some layers
and copying the weights of the rest; this module does that once.
"""

import keras


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


def rewrite_model(model, replace):
    """Clones ``model``, replacing layers as ``replace`` says.

    Args:
        model: a built Sequential or functional model; nested ones are
            rewritten recursively.
        replace: ``replace(layer)`` returns ``None`` to keep a copy of the layer
            with its weights, or ``(new_layer, set_weights)`` where
            ``set_weights(new_layer)`` is called once the new layer is built.

    Returns:
        The new model (uncompiled); ``model`` is left unchanged.
    """
    check_rewritable(model)
    pending = {}

    def clone_layer(layer):
        replacement = replace(layer)
        if replacement is None:
            new_layer = layer.__class__.from_config(layer.get_config())
            weights = layer.get_weights()
            pending[id(new_layer)] = (
                new_layer,
                lambda target, weights=weights: target.set_weights(weights),
            )
            return new_layer
        new_layer, set_weights = replacement
        pending[id(new_layer)] = (new_layer, set_weights)
        return new_layer

    new_model = keras.models.clone_model(model, clone_function=clone_layer, recursive=True)
    for new_layer, set_weights in pending.values():
        set_weights(new_layer)
    return new_model
