"""LambdaHyperModel: train once, get a variational model for every complexity level."""

import math

import keras
import numpy as np
import tensorflow as tf

from tfpriors import _validation
from tfpriors._inputs import FloatInputs
from tfpriors._rewrite import copy_layer
from tfpriors.layers.hyper import (
    DEFAULT_LAMBDA_RANGE,
    HyperVariationalLayer,
    sample_lambdas,
    validate_lambda,
    validate_lambda_range,
)
from tfpriors.layers.seed_state import SeedStateMixin


def validate_prune_fraction(prune_fraction, name="prune_fraction"):
    """Returns ``prune_fraction`` as a float in [0, 1) (``None`` stays ``None``)."""
    if prune_fraction is None:
        return None
    value = _validation.real_number(prune_fraction, name)
    if not 0.0 <= value < 1.0:
        raise ValueError(
            f"`{name}` must be in [0, 1) (the fraction of kernel weights "
            f"set to zero); received {value}."
        )
    return value


def density_masks(scores, prune_fraction):
    """Keeps all but the ``prune_fraction`` of weights with the lowest score, globally.

    Args:
        scores: a list of arrays (one per layer) of relative densities ``mu^2 / sigma^2``.
        prune_fraction: fraction in [0, 1) of all the weights to remove.

    Returns:
        A list of boolean masks (``True`` = kept), the shapes of ``scores``.
        Exactly ``floor(prune_fraction * total)`` weights are removed; ties go
        to the weight listed first.

    Example:
    >>> masks = tfpriors.hyper.density_masks([np.array([3.0, 1.0]), np.array([2.0])], 0.34)
    >>> [m.tolist() for m in masks]  # floor(0.34 * 3) = 1 weight removed: the lowest score
    [[True, False], [True]]
    """
    if prune_fraction is None:
        raise TypeError("`prune_fraction` must be a number in [0, 1); received None.")
    prune_fraction = validate_prune_fraction(prune_fraction)
    if not isinstance(scores, (list, tuple)) or not scores:
        raise TypeError(f"`scores` must be a non-empty list of arrays; received {scores!r}.")
    scores = [_validation.numeric_array(s, f"scores[{i}]", "float64") for i, s in enumerate(scores)]
    flat = np.concatenate([s.reshape(-1) for s in scores])
    removed = int(math.floor(prune_fraction * flat.size))
    keep = np.ones(flat.size, bool)
    keep[np.argsort(flat, kind="stable")[:removed]] = False
    masks, start = [], 0
    for score in scores:
        size = np.asarray(score).size
        masks.append(keep[start : start + size].reshape(np.shape(score)))
        start += size
    return masks


@keras.saving.register_keras_serializable(package="tfpriors")
class LambdaHyperModel(FloatInputs, SeedStateMixin, keras.Model):
    """A stack of layers whose variational posterior is a function of lambda.

    Each training step draws ``lambda_draws`` values of lambda log-uniformly
    from ``lambda_range``, splits the batch into as many groups and runs group
    ``d`` with the posterior at ``lambda_d``; the KL term is
    ``mean_d lambda_d * KL_d / N``. Afterwards ``at(lambda)`` returns an
    ordinary Keras model with the posterior means at that lambda, optionally
    pruned by the relative density ``mu^2 / sigma^2``.

    Args:
        layers: the layers, applied in order: ``HyperVariationalDense`` /
            ``HyperVariationalConv2D`` and any built-in, per-example layers
            between them (``Flatten``, ``MaxPooling2D``, activations, ...).
        lambda_range: ``(low, high)`` with ``0 < low < high``; the KL weights
            the model is trained for. It is given to every hyper layer.
        lambda_draws: lambda values per training batch (>= 1).
        prior_variance: variance of the ``Normal`` prior of every hyper layer.
        lambda_value: lambda of the model's own evaluation
            (``evaluate`` / ``predict``); default the log midpoint of the
            range. Change it with :meth:`set_lambda`.
        seed: seed of the lambda draws.
        **kwargs: ``keras.Model`` arguments (``name``).

    Example:
    >>> (x, y), (x_test, y_test) = tfpriors.datasets.load_digits()
    >>> model = tfpriors.hyper.LambdaHyperModel(
    ...     layers=[tfpriors.layers.HyperVariationalDense(16, activation="relu", kind="lowrank"),
    ...             tfpriors.layers.HyperVariationalDense(10, kind="lowrank")],
    ...     lambda_range=(1e-3, 10.0), lambda_draws=4, prior_variance=0.1)
    >>> tfpriors.set_dataset_size(model, len(x))  # the number of layers set
    2
    >>> model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    >>> history = model.fit(x[:256], y[:256], epochs=1, batch_size=64, verbose=0)
    >>> pruned = model.at(0.5, prune_fraction=0.8)  # a plain keras.Sequential
    >>> [type(layer).__name__ for layer in pruned.layers]
    ['Dense', 'Dense']
    >>> pruned.predict(x_test[:5], verbose=0).shape
    (5, 10)
    >>> kernels = [layer.kernel.numpy() for layer in pruned.layers]
    >>> round(sum(int((k == 0).sum()) for k in kernels) / sum(k.size for k in kernels), 2)
    0.8
    """

    def __init__(
        self,
        layers,
        lambda_range=DEFAULT_LAMBDA_RANGE,
        lambda_draws=5,
        prior_variance=0.1,
        lambda_value=None,
        seed=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if isinstance(layers, keras.layers.Layer) or not isinstance(layers, (list, tuple)):
            raise TypeError(
                f"`layers` must be a list of Keras layers; received {type(layers).__name__}."
            )
        layers = list(layers)
        for index, layer in enumerate(layers):
            if not isinstance(layer, keras.layers.Layer):
                raise TypeError(
                    f"`layers[{index}]` must be a Keras layer; received {type(layer).__name__}."
                )
        if not any(isinstance(layer, HyperVariationalLayer) for layer in layers):
            raise ValueError(
                "`layers` must contain at least one HyperVariationalDense or "
                "HyperVariationalConv2D layer."
            )
        self.lambda_range = validate_lambda_range(lambda_range)
        self.lambda_draws = _validation.positive_int(lambda_draws, "lambda_draws")
        self.prior_variance = _validation.positive_number(prior_variance, "prior_variance")
        self.seed = _validation.seed(seed)
        self.seed_generator = keras.random.SeedGenerator(seed)
        for layer in layers:
            if isinstance(layer, HyperVariationalLayer):
                layer.lambda_range = self.lambda_range
                layer.lambda_draws = self.lambda_draws
                layer.prior_variance = self.prior_variance
        self.stack = layers
        initial = (
            math.sqrt(self.lambda_range[0] * self.lambda_range[1])
            if lambda_value is None
            else validate_lambda(lambda_value, self.lambda_range)
        )
        self._lambda_variable = self.add_weight(
            shape=(),
            initializer=keras.initializers.Constant(initial),
            trainable=False,
            name="lambda_value",
            autocast=False,
        )
        self._input_shape = None

    @property
    def hyper_layers(self):
        """The hyper layers of the stack, in order."""
        return [layer for layer in self.stack if isinstance(layer, HyperVariationalLayer)]

    @property
    def lambda_value(self):
        """The lambda of the model's own evaluation (a float)."""
        return float(self._lambda_variable.numpy())

    def set_lambda(self, lambda_value):
        """Sets the lambda that ``evaluate`` / ``predict`` use (within ``lambda_range``)."""
        self._lambda_variable.assign(validate_lambda(lambda_value, self.lambda_range))

    def build(self, input_shape):
        shape = tuple(input_shape)
        self._input_shape = shape
        for layer in self.stack:
            if not layer.built:
                layer.build(shape)
            shape = tuple(layer.compute_output_shape(shape))
        self.built = True

    def compute_output_shape(self, input_shape):
        shape = tuple(input_shape)
        for layer in self.stack:
            shape = tuple(layer.compute_output_shape(shape))
        return shape

    def call(self, inputs, training=False):
        if training:
            lambdas = sample_lambdas(self.lambda_draws, self.lambda_range, self.seed_generator)
        else:
            lambdas = tf.reshape(self._lambda_variable, (1,))
        outputs = inputs
        for layer in self.stack:
            if isinstance(layer, HyperVariationalLayer):
                outputs = layer(outputs, lambdas=lambdas, training=training)
            else:
                outputs = layer(outputs, training=training)
        return outputs

    # -- plain models ---------------------------------------------------------------------

    def _check_built(self):
        if not self.built or self._input_shape is None:
            raise ValueError(
                f"Model '{self.name}' is not built: call it on a batch, fit it "
                "or `build((None, *input_shape))` first."
            )

    def density_scores(self, lambda_value):
        """The relative density ``mu^2 / sigma^2`` of each hyper layer's kernel at lambda."""
        self._check_built()
        lambda_value = validate_lambda(lambda_value, self.lambda_range)
        return [layer.density_score(lambda_value) for layer in self.hyper_layers]

    def at(self, lambda_value, prune_fraction=None):
        """An ordinary Keras model: the posterior means at ``lambda_value``.

        Hyper layers become built-in ``Dense`` / ``Conv2D`` layers; the other
        layers are copied. Such a model saves as ``.keras`` and exports with
        ``tfpriors.export.to_tflite`` (whose structural shrink removes units
        that pruning left without weights).

        Args:
            lambda_value: a lambda inside ``lambda_range``.
            prune_fraction: ``None`` (no pruning) or a fraction in [0, 1): the
                share of all kernel weights (over every hyper layer together)
                with the lowest ``mu^2 / sigma^2`` set to zero.

        Returns:
            A built ``keras.Sequential`` (uncompiled).

        Example:
        >>> model = tfpriors.hyper.LambdaHyperModel(
        ...     [tfpriors.layers.HyperVariationalDense(8, activation="relu"),
        ...      tfpriors.layers.HyperVariationalDense(3)], lambda_range=(0.01, 10.0))
        >>> model.build((None, 4))
        >>> plain = model.at(1.0, prune_fraction=0.5)
        >>> [tuple(layer.kernel.shape) for layer in plain.layers]
        [(4, 8), (8, 3)]
        >>> int(sum((layer.kernel.numpy() == 0).sum() for layer in plain.layers))  # 50% of 56
        28
        """
        self._check_built()
        lambda_value = validate_lambda(lambda_value, self.lambda_range)
        prune_fraction = validate_prune_fraction(prune_fraction)
        masks = [None] * len(self.hyper_layers)
        if prune_fraction is not None:
            masks = density_masks(self.density_scores(lambda_value), prune_fraction)
        mask_of = dict(zip(map(id, self.hyper_layers), masks))
        plain_layers, setters = [], []
        for layer in self.stack:
            if isinstance(layer, HyperVariationalLayer):
                new_layer, weights = layer.inference_layer(lambda_value, mask_of[id(layer)])
            else:
                new_layer = copy_layer(layer)
                weights = layer.get_weights()
            plain_layers.append(new_layer)
            setters.append(weights)
        name = f"{self.name}_at_{lambda_value:g}".replace(".", "_").replace("+", "")
        plain = keras.Sequential([keras.Input(self._input_shape[1:]), *plain_layers], name=name)
        for new_layer, weights in zip(plain_layers, setters):
            new_layer.set_weights(weights)
        return plain

    # -- serialization --------------------------------------------------------------------

    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "layers": [keras.saving.serialize_keras_object(layer) for layer in self.stack],
            "lambda_range": list(self.lambda_range),
            "lambda_draws": self.lambda_draws,
            "prior_variance": self.prior_variance,
            "lambda_value": self.lambda_value,
            "seed": self.seed,
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        config["layers"] = [
            keras.saving.deserialize_keras_object(layer, custom_objects=custom_objects)
            for layer in config["layers"]
        ]
        trainable = config.pop("trainable", True)
        model = cls(**config)
        model.trainable = trainable
        return model
