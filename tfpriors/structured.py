"""Put Structured Bayesian Pruning gates into a trained Keras model.

:func:`structured` inserts a :class:`tfpriors.layers.StructuredBayesianPruning`
gate after every Dense / Conv2D layer (Sparse VD and variational ones
included), keeping all weights, so that fine-tuning prunes whole units and
filters of the pretrained network; ``tfpriors.export.to_tflite`` then removes
them.
"""

import keras

from tfpriors import _validation
from tfpriors._rewrite import check_rewritable, rewrite_model
from tfpriors.graph import consumers, walk
from tfpriors.layers.geometry import Conv2DGeometry, DenseGeometry
from tfpriors.layers.structured import LEARNING_RATE_MULTIPLIER, StructuredBayesianPruning

# Layers between a gated layer and the model output that keep one value per
# class: a gate there could only zero a class score, never remove it.
_OUTPUT_PASS_THROUGH = (
    keras.layers.Activation,
    keras.layers.Softmax,
    keras.layers.ReLU,
    keras.layers.Dropout,
    keras.layers.Identity,
)


def _gated_kind(layer):
    """Whether a gate may follow ``layer``: a channels-last Dense or Conv2D."""
    if type(layer) is keras.layers.Dense or isinstance(layer, DenseGeometry):
        return True
    if type(layer) is keras.layers.Conv2D or isinstance(layer, Conv2DGeometry):
        return getattr(layer, "data_format", "channels_last") == "channels_last" and (
            getattr(layer, "groups", 1) == 1
        )
    return False


def _output_ids(model):
    """Ids of the model's output tensors, and of the nested models' outputs that reach them."""
    ids, stack = set(), list(keras.tree.flatten(model.outputs))
    while stack:
        tensor = stack.pop()
        ids.add(id(tensor))
        producer = tensor._keras_history.operation
        if isinstance(producer, keras.Model) and getattr(producer, "outputs", None):
            stack.extend(keras.tree.flatten(producer.outputs))
    return ids


def _feeds_output(layer, output_ids):
    """Whether ``layer``'s output reaches a model output through class-wise layers only."""
    current = layer
    while True:
        try:
            output = current.output
        except (AttributeError, ValueError):  # a shared layer: several outputs
            return False
        if id(output) in output_ids:
            return True
        following = consumers(current)
        if len(following) != 1 or not isinstance(following[0], _OUTPUT_PASS_THROUGH):
            return False
        current = following[0]


def _skip_names(model, skip):
    if skip is None:
        return set()
    if not isinstance(skip, (str, list, tuple, set, frozenset)):
        raise TypeError(f"`skip` must be a layer name or a list of them; received {skip!r}.")
    skip = set([skip] if isinstance(skip, str) else skip)
    unknown = skip - {layer.name for layer in walk(model)}
    if unknown:
        raise ValueError(f"`skip` names layers the model does not have: {sorted(unknown)}.")
    return skip


def structured(
    model,
    skip=None,
    *,
    threshold=1.0,
    dataset_size=None,
    seed=None,
    learning_rate_multiplier=LEARNING_RATE_MULTIPLIER,
):
    """Inserts a ``StructuredBayesianPruning`` gate after every Dense and Conv2D layer.

    Works on Sequential and functional models, nested ones included. Every
    layer keeps its weights; the gate named ``<layer>_sbp`` follows each
    ``Dense``, channels-last ``Conv2D``, Sparse VD and variational layer,
    except the layers named in ``skip`` and a layer whose output is a model
    output (possibly behind a softmax, activation or dropout): pruning there
    could only zero class scores, not remove them, so the number of outputs
    stays as it is.

    The gates start as in the paper's code (``E[theta] ~ 0.9946`` per unit, see
    ``StructuredBayesianPruning``): at evaluation the model computes its
    original function with each gated layer's output scaled by that factor
    (0.5% per gated layer; ``E[theta] = 1`` is impossible, since ``theta <= 1``),
    and in training up to the gates' small noise.

    Args:
        model: a built Sequential or functional ``keras.Model``.
        skip: a layer name or names of layers to leave without a gate.
        threshold: SNR threshold of the gates (units with less are pruned).
        dataset_size: optional training-set size for the KL; it can be set
            later with ``tfpriors.set_dataset_size``.
        seed: optional seed; gate ``i`` gets ``seed + i``.
        learning_rate_multiplier: how many times the optimizer's learning rate
            the gates' ``mu`` and ``log_sigma`` train with; default 30 (see
            ``StructuredBayesianPruning``: without it, pruning needs thousands
            of steps), 1 for the paper's single learning rate.

    Returns:
        A new, uncompiled model. The original model is not changed.

    Raises:
        ValueError: when ``skip`` names layers the model does not have, or
            for invalid ``threshold`` / ``dataset_size``.

    Example:
    >>> (x_train, y_train), (x_test, y_test) = tfpriors.datasets.load_digits()
    >>> pretrained = keras.Sequential([
    ...     keras.Input((64,)),
    ...     keras.layers.Dense(32, activation="relu", name="fc1"),
    ...     keras.layers.Dense(32, activation="relu", name="fc2"),
    ...     keras.layers.Dense(10, name="logits"),
    ... ])
    >>> gated = tfpriors.structured(pretrained)
    >>> [layer.name for layer in gated.layers]
    ['fc1', 'fc1_sbp', 'fc2', 'fc2_sbp', 'logits']
    >>> [layer.name for layer in tfpriors.structured(pretrained, skip="fc2").layers]
    ['fc1', 'fc1_sbp', 'fc2', 'logits']
    >>> x = x_test[:16]
    >>> bool(np.allclose(gated(x), pretrained(x), rtol=0, atol=0.011 * np.abs(pretrained(x)).max()))
    True
    >>> tfpriors.set_dataset_size(gated, len(x_train))
    2
    >>> gated.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))

    ``gated`` then fine-tunes as usual, e.g. ``gated.fit(x_train, y_train,
    epochs=40, callbacks=[tfpriors.callbacks.KLWarmup(0, 3)])`` with Adam at
    lr 1e-3; units whose signal-to-noise ratio falls below ``threshold`` are
    pruned (dense layers' units within a few epochs, convolution filters more
    slowly: the weights must first learn to do without them).
    """
    check_rewritable(model)
    skip = _skip_names(model, skip)
    threshold = _validation.positive_number(threshold, "threshold")
    if dataset_size is not None:
        dataset_size = _validation.positive_int(dataset_size, "dataset_size")
    seed = _validation.seed(seed)
    multiplier = _validation.positive_number(learning_rate_multiplier, "learning_rate_multiplier")
    outputs = _output_ids(model)
    count = [0]

    def insert_after(layer):
        if layer.name in skip or not _gated_kind(layer) or _feeds_output(layer, outputs):
            return None
        gate_seed = None if seed is None else seed + count[0]
        count[0] += 1
        return StructuredBayesianPruning(
            threshold=threshold,
            learning_rate_multiplier=multiplier,
            seed=gate_seed,
            dataset_size=dataset_size,
            name=f"{layer.name}_sbp",
        )

    return rewrite_model(model, lambda layer: None, insert_after=insert_after)


__all__ = ["structured"]
