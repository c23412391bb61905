"""Turn a trained Keras model into a Sparse VD model with the same function.

:func:`sparsify` swaps ``Dense`` and ``Conv2D`` layers for their Sparse VD
counterparts, keeping the weights, so that training goes on from the
pretrained model and prunes it.
"""

import keras
import numpy as np

from tfpriors import _validation
from tfpriors._rewrite import check_rewritable, live_config, rewrite_model
from tfpriors.graph import walk
from tfpriors.layers.sparse_vd import SparseVDConv2D, SparseVDDense
from tfpriors.priors.log_uniform import validate_threshold

# Initial log-variance when sparsifying a pretrained model (reference code).
LOG_SIGMA2_INIT_PRETRAINED = -8.0

_SHARED_KEYS = (
    "name",
    "activation",
    "use_bias",
    "kernel_initializer",
    "bias_initializer",
    "kernel_regularizer",
    "bias_regularizer",
    "activity_regularizer",
    "dtype",
    "trainable",
)


def _sparse_vd_counterpart(layer, threshold, log_sigma2_init, dataset_size):
    """Returns the Sparse VD layer replacing ``layer``, or None to keep it."""
    if type(layer) not in (keras.layers.Dense, keras.layers.Conv2D):
        return None
    config = live_config(layer)  # a custom activation stays the user's function
    common = {key: config[key] for key in _SHARED_KEYS if key in config}
    common.update(
        threshold=threshold, log_sigma2_initializer=log_sigma2_init, dataset_size=dataset_size
    )
    if type(layer) is keras.layers.Dense:
        return SparseVDDense(units=config["units"], **common)
    if type(layer) is keras.layers.Conv2D and config.get("groups", 1) == 1:
        return SparseVDConv2D(
            filters=config["filters"],
            kernel_size=config["kernel_size"],
            strides=config["strides"],
            padding=config["padding"],
            data_format=config["data_format"],
            dilation_rate=config["dilation_rate"],
            **common,
        )
    return None


def sparsify(
    model, threshold=3.0, log_sigma2_init=LOG_SIGMA2_INIT_PRETRAINED, dataset_size=None, skip=()
):
    """Replaces ``Dense`` and ``Conv2D`` layers by Sparse VD layers with the same weights.

    Works on Sequential and functional models (nested ones included). Every
    other layer is kept as it is, with its weights; ``Lambda`` layers and
    Python-function activations keep the user's own functions (the model is
    copied layer by layer, never saved and reloaded). The new layers start with
    ``log_sigma2 = log_sigma2_init`` (default -8, as in the paper's pretrained
    runs), lowered for the few weights so small that -8 alone would already
    prune them; so the model computes the same function as before (exactly at
    evaluation, up to the small posterior noise during training).

    Args:
        model: a built Sequential or functional ``keras.Model``.
        threshold: pruning threshold on log_alpha of the new layers.
        log_sigma2_init: initial log-variance of the new layers.
        dataset_size: optional training-set size for the KL; it can be set
            later with ``tfpriors.set_dataset_size``.
        skip: names of Dense / Conv2D layers to keep as they are (for example
            the output layer).

    Returns:
        A new, uncompiled model. The original model is not changed.

    Example:
    >>> (x_train, y_train), (x_test, y_test) = tfpriors.datasets.load_digits()
    >>> loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    >>> pretrained = keras.Sequential([
    ...     keras.Input((64,)),
    ...     keras.layers.Dense(32, activation="relu", name="hidden"),
    ...     keras.layers.Dense(10, name="logits"),
    ... ])
    >>> pretrained.compile("adam", loss)
    >>> _ = pretrained.fit(x_train[:256], y_train[:256], epochs=1, verbose=0)
    >>> sparse = tfpriors.sparsify(pretrained)
    >>> [type(layer).__name__ for layer in sparse.layers]
    ['SparseVDDense', 'SparseVDDense']
    >>> bool(np.allclose(sparse(x_test[:8]), pretrained(x_test[:8]), atol=1e-5))  # same function
    True
    >>> kept_output = tfpriors.sparsify(pretrained, skip=["logits"])
    >>> [type(layer).__name__ for layer in kept_output.layers]
    ['SparseVDDense', 'Dense']
    >>> tfpriors.set_dataset_size(sparse, len(x_train))
    2
    >>> sparse.compile("adam", loss, metrics=["accuracy"])

    ``sparse`` then trains as usual, e.g. ``sparse.fit(x_train, y_train, epochs=50,
    callbacks=[tfpriors.callbacks.KLWarmup(0, 10)])``, and weights whose
    ``log_alpha`` passes ``threshold`` are pruned.
    """
    check_rewritable(model)
    threshold = validate_threshold(threshold)
    log_sigma2_init = _validation.real_number(log_sigma2_init, "log_sigma2_init")
    if dataset_size is not None:
        dataset_size = _validation.positive_int(dataset_size, "dataset_size")
    if skip is None:
        skip = ()
    if not isinstance(skip, (str, list, tuple, set, frozenset)):
        raise TypeError(f"`skip` must be a layer name or a list of them; received {skip!r}.")
    skip = set([skip] if isinstance(skip, str) else skip)
    unknown = skip - {layer.name for layer in walk(model)}
    if unknown:
        raise ValueError(f"`skip` names layers the model does not have: {sorted(unknown)}.")

    def replace(layer):
        if layer.name in skip:
            return None
        new_layer = _sparse_vd_counterpart(layer, threshold, log_sigma2_init, dataset_size)
        if new_layer is None:
            return None

        def set_weights(target, theta=keras.ops.convert_to_numpy(layer.kernel), bias=layer.bias):
            target.kernel.assign(theta)
            target.log_sigma2.assign(
                _function_preserving_log_sigma2(theta, log_sigma2_init, threshold)
            )
            if target.use_bias:
                target.bias.assign(bias)

        return new_layer, set_weights

    return rewrite_model(model, replace)


def _function_preserving_log_sigma2(theta, log_sigma2_init, threshold):
    """The initial ``log_sigma2`` of a pretrained kernel ``theta``: no weight pruned at start.

    A constant -8 would give ``|theta| < ~0.004`` a log_alpha above the
    threshold, pruning them before training starts. Lowering log_sigma2 for
    those weights (to ``log_alpha = threshold - 1``) keeps the pretrained
    function exactly; training then decides which of them to drop.
    """
    ceiling = np.log(np.square(theta.astype("float64")) + 1e-8) + threshold - 1.0
    return np.minimum(log_sigma2_init, ceiling).astype("float32")
