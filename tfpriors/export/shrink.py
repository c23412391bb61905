"""Structural shrink: remove dead units and filters so any runtime runs a smaller net.

A unit (Dense) or filter (Conv2D) of a producer layer is dead when

* all its outgoing weights in the next weight layer are zero: it contributes
  nothing, or
* all its incoming weights are zero: it outputs the constant
  ``activation(bias)``, whose contribution is folded into the next layer's
  bias (exact for Dense consumers and "valid" convolutions; with "same"
  padding the border would differ, so such filters are kept).

Between producer and consumer only channel-wise layers may stand (pooling,
element-wise activations, dropout, batch normalization, flatten); anything
else, a branch, or a model output leaves that producer alone. Shrinking runs
to a fixed point, since removing a consumer's inputs can kill its own units.

Before that, per-channel scales (a ``Rescaling`` by a non-negative vector, the
export form of ``StructuredBayesianPruning``: ``E[theta]`` per unit, 0 for
pruned ones) are folded into the next weight layer's input rows, or into the
producing layer when only that is exact; the zero rows then make the pruned
units dead, and the scale layer becomes an identity (no op in the file).

Layers of nested Sequential / functional models are inlined first (a flat
functional copy), so that gates and dead units inside them are handled too.
"""

import dataclasses

import keras
import numpy as np

from tfpriors import _validation
from tfpriors._rewrite import copy_layer, rewrite_model
from tfpriors.graph import chain_after, walk

_ELEMENTWISE_ACTIVATIONS = {
    "linear",
    "relu",
    "relu6",
    "elu",
    "selu",
    "gelu",
    "sigmoid",
    "tanh",
    "softplus",
    "softsign",
    "swish",
    "silu",
    "leaky_relu",
    "hard_sigmoid",
    "hard_silu",
    "hard_swish",
    "exponential",
    "mish",
    "celu",
}
_POOLING = (
    keras.layers.MaxPooling2D,
    keras.layers.AveragePooling2D,
    keras.layers.GlobalAveragePooling2D,
    keras.layers.GlobalMaxPooling2D,
)
_PASS_THROUGH = (
    keras.layers.Dropout,
    keras.layers.SpatialDropout2D,
    keras.layers.GaussianNoise,
    keras.layers.GaussianDropout,
    keras.layers.ReLU,
    keras.layers.LeakyReLU,
    keras.layers.ELU,
    keras.layers.Identity,
)


@dataclasses.dataclass
class ShrinkSummary:
    """What :func:`shrink` removed: ``{layer name: (units before, units after)}``.

    Printed, it reads ``"fc1: 300->42, fc2: 100->21"`` (or ``"no dead units"``).

    Attributes:
        resized: ``{layer name: (units before, units after)}`` of the Dense and
            Conv2D layers that lost units or filters.

    Example:
    >>> summary = tfpriors.export.ShrinkSummary({"fc1": (300, 42), "fc2": (100, 21)})
    >>> print(summary)
    fc1: 300->42, fc2: 100->21
    >>> summary.removed_units
    337
    >>> print(tfpriors.export.ShrinkSummary({}))
    no dead units
    """

    resized: dict

    @property
    def removed_units(self):
        """The number of units and filters removed, over all layers."""
        return sum(before - after for before, after in self.resized.values())

    def __str__(self):
        if not self.resized:
            return "no dead units"
        return ", ".join(
            f"{name}: {before}->{after}" for name, (before, after) in self.resized.items()
        )


def _activation_name(layer):
    activation = getattr(layer, "activation", None)
    if activation is None:
        return "linear"
    return getattr(activation, "__name__", str(activation))


def _channels_last(layer):
    return getattr(layer, "data_format", "channels_last") == "channels_last"


def _is_transparent(layer):
    """Channel-wise layers a dead channel can pass through unchanged in index."""
    if not _channels_last(layer):
        return False
    if isinstance(layer, keras.layers.Activation):
        return _activation_name(layer) in _ELEMENTWISE_ACTIVATIONS
    if isinstance(layer, keras.layers.BatchNormalization):
        return layer.axis in (-1, len(layer.input.shape) - 1)
    return isinstance(layer, _POOLING + _PASS_THROUGH + (keras.layers.Flatten,))


def _is_weight_layer(layer):
    return (
        type(layer) in (keras.layers.Dense, keras.layers.Conv2D)
        and _channels_last(layer)
        and getattr(layer, "groups", 1) == 1
    )


# Activations f with f(s * x) = s * f(x) for s >= 0: a per-channel scale passes them.
_HOMOGENEOUS_ACTIVATIONS = {"linear", "relu", "leaky_relu"}


def _is_homogeneous(layer, flatten=True):
    """Channel-wise layers that commute with a non-negative per-channel scale."""
    if not _channels_last(layer):
        return False
    if isinstance(layer, keras.layers.Activation):
        return _activation_name(layer) in _HOMOGENEOUS_ACTIVATIONS
    if isinstance(layer, keras.layers.ReLU):
        return layer.max_value is None and float(layer.threshold) == 0.0
    if isinstance(layer, keras.layers.Flatten):
        return flatten
    return isinstance(layer, _POOLING + _PASS_THROUGH) and not isinstance(
        layer, (keras.layers.ELU, keras.layers.ReLU)
    )


def _channel_scale(layer):
    """The per-channel scale of a ``Rescaling`` by a non-negative vector, else None.

    ``StructuredBayesianPruning`` exports as one (``E[theta]``, 0 for pruned units).
    """
    if not isinstance(layer, keras.layers.Rescaling) or np.any(np.asarray(layer.offset) != 0):
        return None
    scale = np.asarray(layer.scale, "float32")
    channels = layer.input.shape[-1]
    if scale.ndim != 1 or len(scale) != channels or np.any(scale < 0):
        return None
    return scale


def _fold_channel_scales(graph, weights):
    """Folds per-channel scales into a neighbouring weight layer; returns the folded names.

    Into the next weight layer's input rows when only homogeneous layers stand
    in between (a zero scale then leaves zero rows, i.e. a dead unit the
    shrink removes exactly); otherwise into the producing layer's kernel
    columns and bias when its activation is homogeneous.
    """
    folded = set()
    for layer in graph.layers:
        scale = _channel_scale(layer)
        if scale is None:
            continue
        found = graph.follow(layer, _is_homogeneous)
        if found is not None:
            chain, consumer = found
            kernel = weights[consumer.name][0]
            if isinstance(consumer, keras.layers.Dense):
                flattened = any(isinstance(item, keras.layers.Flatten) for item in chain)
                rows = kernel.shape[0]
                if (rows % len(scale)) if flattened else (rows != len(scale)):
                    found = None
                else:
                    weights[consumer.name][0] = kernel * scale[np.arange(rows) % len(scale), None]
            else:
                weights[consumer.name][0] = kernel * scale[None, None, :, None]
        if found is None:
            producer = next(
                (
                    candidate
                    for candidate in graph.layers
                    if _is_weight_layer(candidate)
                    and _activation_name(candidate) in _HOMOGENEOUS_ACTIVATIONS
                    and graph.reaches(candidate, layer)
                ),
                None,
            )
            if producer is None:
                continue
            weights[producer.name][0] = weights[producer.name][0] * scale
            if producer.use_bias:
                weights[producer.name][1] = weights[producer.name][1] * scale
        folded.add(layer.name)
    return folded


class _Graph:
    """Consumers of each top-level layer of a functional (or Sequential) model."""

    def __init__(self, model):
        functional = getattr(model, "_functional", None) or model
        self.layers = [
            layer for layer in functional.layers if not isinstance(layer, keras.layers.InputLayer)
        ]
        self._members = {id(layer) for layer in self.layers}
        self.output_ids = {id(t) for t in keras.tree.flatten(functional.outputs)}
        self.folded = set()  # names of scales folded away: identities from now on

    def follow(self, layer, passes):
        """Returns (layers passed, weight layer) after ``layer``, or None."""
        return chain_after(
            layer,
            passes=passes,
            stops=_is_weight_layer,
            members=self._members,
            outputs=self.output_ids,
        )

    def reaches(self, producer, target):
        """Whether ``producer``'s output flows only into ``target``, through homogeneous layers."""
        found = chain_after(
            producer,
            passes=lambda layer: _is_homogeneous(layer, flatten=False),
            stops=lambda layer: layer is target,
            members=self._members,
            outputs=self.output_ids,
        )
        return found is not None

    def chain_from(self, producer):
        """Returns (transparent layers, consumer) after ``producer``, or None."""
        return chain_after(
            producer,
            passes=lambda layer: _is_transparent(layer) or layer.name in self.folded,
            stops=_is_weight_layer,
            members=self._members,
            outputs=self.output_ids,
        )


def _constant_after_chain(producer, chain, weights, channels_value):
    """Runs a constant-per-channel tensor of the producer's output through the chain."""
    shape = (1,) + tuple(producer.output.shape[1:])
    tensor = np.broadcast_to(channels_value, shape).astype("float32")
    for layer in chain:
        if isinstance(layer, keras.layers.BatchNormalization):
            gamma, beta, mean, var = _bn_arrays(layer, weights)
            tensor = (tensor - mean) / np.sqrt(var + layer.epsilon) * gamma + beta
        else:
            tensor = keras.ops.convert_to_numpy(layer(tensor, training=False))
    return tensor


def _bn_arrays(layer, weights):
    arrays = dict(zip([w.name for w in layer.weights], weights[layer.name]))
    channels = arrays["moving_mean"].shape[0]
    gamma = arrays.get("gamma", np.ones(channels, "float32"))
    beta = arrays.get("beta", np.zeros(channels, "float32"))
    return gamma, beta, arrays["moving_mean"], arrays["moving_variance"]


def _shrink_pair(producer, chain, consumer, weights):
    """Removes dead channels between producer and consumer; True if any were removed."""
    kernel = weights[producer.name][0]
    bias = weights[producer.name][1] if producer.use_bias else None
    channels = kernel.shape[-1]
    consumer_kernel = weights[consumer.name][0]
    flattened = any(isinstance(layer, keras.layers.Flatten) for layer in chain)
    if isinstance(consumer, keras.layers.Dense):
        rows = consumer_kernel.shape[0]
        if rows % channels:
            return False
        # With a flatten in between, row r of the consumer reads channel r % C.
        row_channel = np.arange(rows) % channels if flattened else np.arange(rows)
        if not flattened and rows != channels:
            return False
        outgoing_abs = np.zeros(channels)
        np.add.at(outgoing_abs, row_channel, np.abs(consumer_kernel).sum(axis=1))
    else:
        row_channel = None
        outgoing_abs = np.abs(consumer_kernel).sum(axis=(0, 1, 3))

    dead_out = outgoing_abs == 0
    dead_in = np.abs(kernel.reshape(-1, channels)).sum(axis=0) == 0
    if _activation_name(producer) not in _ELEMENTWISE_ACTIVATIONS:
        return False  # e.g. softmax: removing a unit would renormalise the others
    foldable = (
        isinstance(consumer, keras.layers.Dense) or consumer.padding == "valid"
    ) and consumer.use_bias
    dead = dead_out | (dead_in if foldable else np.zeros_like(dead_in))
    if not dead.any():
        return False
    if dead.all():
        dead[0] = False  # keep one channel: TFLite has no zero-sized tensors
        if channels == 1:
            return False
    keep = ~dead

    folded = dead & dead_in & ~dead_out
    if folded.any():
        constant = np.zeros(channels, "float32")
        constant[folded] = keras.ops.convert_to_numpy(
            producer.activation(
                (bias if bias is not None else np.zeros(channels, "float32"))[folded]
            )
        )
        # Only folded channels matter; a batch norm in the chain shifts the
        # others too, so they are masked out again after it.
        after = _constant_after_chain(producer, chain, weights, constant)
        if flattened:
            values = np.where(folded[row_channel], after.reshape(-1), 0.0)
        else:
            # Every position carries the same per-channel constant.
            values = np.where(folded, after.reshape(-1, channels)[0], 0.0)
        if isinstance(consumer, keras.layers.Dense):
            delta = values @ consumer_kernel
        else:
            delta = np.einsum("c,hwco->o", values, consumer_kernel)
        weights[consumer.name][1] = weights[consumer.name][1] + delta.astype("float32")

    weights[producer.name][0] = kernel[..., keep]
    if bias is not None:
        weights[producer.name][1] = bias[keep]
    for layer in chain:
        if isinstance(layer, keras.layers.BatchNormalization):
            weights[layer.name] = [w[keep] for w in weights[layer.name]]
    if isinstance(consumer, keras.layers.Dense):
        weights[consumer.name][0] = consumer_kernel[keep[row_channel]]
    else:
        weights[consumer.name][0] = consumer_kernel[:, :, keep, :]
    return True


def _graph_of(model):
    """The functional graph of a model (a Sequential's inner one), or None."""
    from keras.src.models.functional import Functional

    graph = getattr(model, "_functional", None) or model
    return graph if isinstance(graph, Functional) else None


def _inline_nested(model):
    """A flat functional copy of ``model`` with nested models' layers inlined, or None.

    The shrink and the gate folding look at one level of layers, so a gate or
    a dead unit inside a nested Sequential / functional model would stay in
    the file. Inlining gives every layer one level; the copies keep their
    names and weights. None when there is no nested model, or when inlining
    is not possible (a nested subclassed model, a name used twice).
    """
    graph = _graph_of(model)
    if graph is None or not any(isinstance(layer, keras.Model) for layer in graph.layers):
        return None
    names = [
        layer.name
        for layer in walk(model)
        if not isinstance(layer, (keras.Model, keras.layers.InputLayer))
    ]
    if len(names) != len(set(names)):
        return None
    copies = {}

    def operation(layer):
        if isinstance(layer, keras.Model):
            inner = _graph_of(layer)
            if inner is None:
                raise _NotInlinable(layer.name)
            # Positional tensors only: a nested model's call options (training,
            # mask) do not change its inference graph.
            return lambda *args, **kwargs: inner._run_through_graph(
                args[0] if len(args) == 1 else list(args), operation_fn=operation
            )
        if id(layer) not in copies:
            copies[id(layer)] = (copy_layer(layer), layer.get_weights())
        return copies[id(layer)][0]

    inputs = [keras.Input(batch_shape=x.shape, dtype=x.dtype) for x in graph.inputs]
    try:
        outputs = graph._run_through_graph(
            inputs[0] if len(inputs) == 1 else inputs, operation_fn=operation
        )
        flat = keras.Model(inputs[0] if len(inputs) == 1 else inputs, outputs, name=model.name)
    except (_NotInlinable, ValueError):
        return None
    for copy, weights in copies.values():
        copy.set_weights(weights)
    return flat


def without_gates(model):
    """A copy of ``model`` with its ``StructuredBayesianPruning`` gates made identities.

    The dense baseline of an export: the gated network as it was before
    pruning, without the per-channel multiplies that the pruned export folds
    away (a baseline that kept them would be slower than the dense network).

    Args:
        model: a built Sequential or functional model, nested ones included.

    Returns:
        A new model; ``model`` itself when it has no gate.

    Example:
    >>> from tfpriors.export.shrink import without_gates
    >>> gated = keras.Sequential([keras.Input((4,)),
    ...                           keras.layers.Dense(3, name="fc"),
    ...                           tfpriors.layers.StructuredBayesianPruning(name="gate"),
    ...                           keras.layers.Dense(2, name="out")])
    >>> [type(layer).__name__ for layer in without_gates(gated).layers]
    ['Dense', 'Identity', 'Dense']
    """
    from tfpriors.layers.structured import StructuredBayesianPruning

    if not any(isinstance(layer, StructuredBayesianPruning) for layer in walk(model)):
        return model

    def replace(layer):
        if isinstance(layer, StructuredBayesianPruning):
            return keras.layers.Identity(name=layer.name), lambda target: None
        return None

    return rewrite_model(model, replace)


class _NotInlinable(Exception):
    """A nested model without a functional graph: the model is shrunk as it is."""


def shrink(model):
    """Returns ``(smaller model, ShrinkSummary)`` with dead units and filters removed.

    ``model`` must be a plain Keras model (see ``inference_model``); its
    outputs are unchanged up to float32 rounding.

    Args:
        model: a plain Sequential or functional Keras model, e.g.
            ``tfpriors.export.inference_model(sparse_model)``.

    Returns:
        ``(model, ShrinkSummary)``: a new, smaller model (one flat functional
        model when ``model`` nests others), or ``model`` itself (with an empty
        summary) when no unit is dead and no scale can be folded.

    Example:
    >>> model = keras.Sequential([keras.Input((4,)),
    ...                           keras.layers.Dense(6, activation="relu", name="fc1"),
    ...                           keras.layers.Dense(3, name="fc2")])
    >>> kernel, bias = model.get_layer("fc2").get_weights()
    >>> kernel[:2] = 0.0  # units 0 and 1 of fc1 now feed nothing
    >>> model.get_layer("fc2").set_weights([kernel, bias])
    >>> small, summary = tfpriors.export.shrink(model)
    >>> print(summary)
    fc1: 6->4
    >>> small.get_layer("fc1").units
    4
    >>> x = np.random.rand(5, 4).astype("float32")
    >>> np.allclose(small.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)
    True
    """
    original = _validation.keras_model(model)
    model = _inline_nested(original) or original
    graph = _Graph(model)
    weights = {layer.name: [np.array(w) for w in layer.get_weights()] for layer in graph.layers}
    sizes_before = {
        layer.name: weights[layer.name][0].shape[-1]
        for layer in graph.layers
        if _is_weight_layer(layer)
    }
    folded = graph.folded = _fold_channel_scales(graph, weights)
    changed = True
    while changed:
        changed = False
        for layer in graph.layers:
            if not _is_weight_layer(layer):
                continue
            found = graph.chain_from(layer)
            if found is not None and _shrink_pair(layer, *found, weights):
                changed = True
    resized = {
        name: (before, weights[name][0].shape[-1])
        for name, before in sizes_before.items()
        if weights[name][0].shape[-1] != before
    }
    if not resized and not folded:
        return original, ShrinkSummary({})

    by_name = {layer.name: layer for layer in graph.layers}

    def replace(layer):
        if by_name.get(layer.name) is not layer:
            return None
        if layer.name in folded:  # its scale now lives in the neighbouring weights
            return keras.layers.Identity(name=layer.name), lambda target: None
        overrides = {}
        if layer.name in resized:
            key = "units" if isinstance(layer, keras.layers.Dense) else "filters"
            overrides[key] = int(resized[layer.name][1])
        new_weights = weights[layer.name]
        return copy_layer(layer, **overrides), lambda t: t.set_weights(new_weights)

    return rewrite_model(model, replace), ShrinkSummary(resized)
