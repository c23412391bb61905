"""Models holding ``keras.layers.Lambda`` layers (and Python-function activations)
go through every model rewrite: sparsify, perforate, inference_model, shrink
and to_tflite. The rewrite copies the live layers; a serialization round trip
would refuse a Python lambda (Keras' safe mode) and fail to find a function
that is not registered."""

import os

import keras
import numpy as np
import pytest

import tfpriors
from tfpriors.export import ExportError, inference_model, shrink, to_tflite
from tfpriors.layers import PerforatedConv2D, SparseVDConv2D, SparseVDDense
from tfpriors.perforation import perforate


def _lambda_doubler():
    return lambda x: x * 2.0


def _named_doubler():
    # A local function: Keras' registry cannot find it by name, so a
    # serialization round trip of the layer fails.
    def double(x):
        return x * 2.0

    return double


FUNCTIONS = {"lambda": _lambda_doubler, "named": _named_doubler}


def _mlp_sequential(function):
    return keras.Sequential(
        [
            keras.Input((64,)),
            keras.layers.Dense(16, activation="relu", name="fc1"),
            keras.layers.Lambda(function, name="double"),
            keras.layers.Dense(10, name="head"),
        ],
        name="mlp_sequential",
    )


def _mlp_functional(function):
    inputs = keras.Input((64,))
    h = keras.layers.Dense(16, activation="tanh", name="fc1")(inputs)
    doubled = keras.layers.Lambda(function, name="double")(h)
    h = keras.layers.Add(name="add")([h, doubled])
    return keras.Model(inputs, keras.layers.Dense(10, name="head")(h), name="mlp_functional")


def _mlp_nested(function):
    inner = keras.Sequential(
        [
            keras.Input((16,)),
            keras.layers.Lambda(function, name="double"),
            keras.layers.Dense(12, activation="relu", name="inner_fc"),
        ],
        name="inner",
    )
    inputs = keras.Input((64,))
    h = keras.layers.Dense(16, activation="relu", name="fc1")(inputs)
    return keras.Model(inputs, keras.layers.Dense(10, name="head")(inner(h)), name="mlp_nested")


def _cnn_sequential(function):
    return keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(6, 3, padding="same", activation="relu", name="conv1"),
            keras.layers.Lambda(function, name="double"),
            keras.layers.MaxPooling2D(name="pool"),
            keras.layers.Flatten(name="flatten"),
            keras.layers.Dense(10, name="head"),
        ],
        name="cnn_sequential",
    )


def _cnn_functional(function):
    inputs = keras.Input((8, 8, 1))
    h = keras.layers.Conv2D(6, 3, padding="same", name="conv1")(inputs)
    h = keras.layers.Lambda(function, name="double")(h)
    h = keras.layers.ReLU(name="relu")(h)
    h = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv2")(h)
    h = keras.layers.GlobalAveragePooling2D(name="gap")(h)
    return keras.Model(inputs, keras.layers.Dense(10, name="head")(h), name="cnn_functional")


MLPS = {"sequential": _mlp_sequential, "functional": _mlp_functional, "nested": _mlp_nested}
CNNS = {"sequential": _cnn_sequential, "functional": _cnn_functional}


def _randomize_biases(model):
    # Non-zero biases, so that dropping or re-ordering the Lambda shows in the outputs.
    rng = np.random.default_rng(0)
    for layer in tfpriors.graph.walk(model):
        if getattr(layer, "bias", None) is not None:
            layer.bias.assign(rng.normal(0.0, 0.5, layer.bias.shape).astype("float32"))
    return model


def _lambda_layers(model):
    return [layer for layer in tfpriors.graph.walk(model) if type(layer) is keras.layers.Lambda]


def _without_lambda_outputs(model, x):
    """The model's outputs with every Lambda made the identity (a broken rewrite)."""
    saved = [(layer, layer.function) for layer in _lambda_layers(model)]
    try:
        for layer, _ in saved:
            layer.function = lambda t: t
        return keras.ops.convert_to_numpy(model(x, training=False))  # eager: no traced step
    finally:
        for layer, function in saved:
            layer.function = function


@pytest.fixture(scope="module")
def digit_images():
    (_, _), (x_test, _) = tfpriors.datasets.load_digits(flat=False)
    return x_test[:64]


@pytest.mark.parametrize("kind", sorted(FUNCTIONS))
@pytest.mark.parametrize("architecture", sorted(MLPS))
def test_sparsify_keeps_lambda_layers_and_the_function(digits, architecture, kind):
    (_, _), (x_test, _) = digits
    x = x_test[:64]
    function = FUNCTIONS[kind]()
    model = _randomize_biases(MLPS[architecture](function))
    sparse = tfpriors.sparsify(model)

    sparse_kinds = {type(layer) for layer in tfpriors.graph.walk(sparse)}
    assert SparseVDDense in sparse_kinds and keras.layers.Dense not in sparse_kinds
    (copied,) = _lambda_layers(sparse)
    (original,) = _lambda_layers(model)
    assert copied is not original and copied.name == "double"
    assert copied.function is function  # the user's function, not a reloaded one

    expected = model.predict(x, verbose=0)
    np.testing.assert_allclose(sparse.predict(x, verbose=0), expected, atol=1e-5)
    # The Lambda matters: the same model without it computes something else.
    assert np.abs(_without_lambda_outputs(model, x) - expected).max() > 1e-2
    # Training mode only adds the small posterior noise (sigma^2 = e^-8 per
    # weight, doubled by the Lambda): far less than dropping the Lambda would.
    tfpriors.set_dataset_size(sparse, 1000)
    noisy = keras.ops.convert_to_numpy(sparse(x, training=True))
    assert np.abs(noisy - expected).mean() < 0.25 * np.abs(expected).mean()
    # The original model is untouched.
    assert type(model.get_layer("fc1")) is keras.layers.Dense


@pytest.mark.parametrize("kind", sorted(FUNCTIONS))
def test_sparsify_keeps_python_function_activations(digits, kind):
    (_, _), (x_test, _) = digits
    x = x_test[:64]
    function = FUNCTIONS[kind]()
    model = _randomize_biases(
        keras.Sequential(
            [
                keras.Input((64,)),
                keras.layers.Dense(16, activation=function, name="fc1"),
                keras.layers.Activation(function, name="act"),
                keras.layers.Dense(10, activation=function, name="head"),
            ]
        )
    )
    sparse = tfpriors.sparsify(model)
    assert sparse.get_layer("fc1").activation is function
    assert sparse.get_layer("act").activation is function
    np.testing.assert_allclose(sparse.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-5)


@pytest.mark.parametrize("kind", sorted(FUNCTIONS))
@pytest.mark.parametrize("architecture", sorted(CNNS))
def test_sparsify_and_perforate_convolutional_models_with_lambda(digit_images, architecture, kind):
    x = digit_images
    model = _randomize_biases(CNNS[architecture](FUNCTIONS[kind]()))
    expected = model.predict(x, verbose=0)
    assert np.abs(_without_lambda_outputs(model, x) - expected).max() > 1e-2

    sparse = tfpriors.sparsify(model)
    assert isinstance(sparse.get_layer("conv1"), SparseVDConv2D)
    np.testing.assert_allclose(sparse.predict(x, verbose=0), expected, atol=1e-5)

    # Rate 0 perforates nothing: the function is unchanged, Lambda included.
    same = perforate(model, rates=0.0)
    assert isinstance(same.get_layer("conv1"), PerforatedConv2D)
    assert type(same.get_layer("double")) is keras.layers.Lambda
    np.testing.assert_allclose(same.predict(x, verbose=0), expected, atol=1e-5)

    fast = perforate(model, rates={"conv1": 0.5}, mask="structure")
    assert fast.get_layer("conv1").effective_rate == 0.5
    assert fast.predict(x, verbose=0).shape == expected.shape


@pytest.mark.parametrize("kind", sorted(FUNCTIONS))
def test_shrink_passes_lambda_layers_and_never_shrinks_through_them(digits, kind):
    (_, _), (x_test, _) = digits
    x = x_test[:64]
    inputs = keras.Input((64,))
    h = keras.layers.Dense(12, activation="relu", name="fc1")(inputs)
    # The Lambda reverses the channels: a unit of fc1 is not the unit of fc2's
    # input at the same index, so shrink must not look through it.
    h = keras.layers.Lambda(lambda t: t[:, ::-1], name="reverse")(h)
    h = keras.layers.Dense(8, activation="relu", name="fc2")(h)
    h = keras.layers.Lambda(FUNCTIONS[kind](), name="double")(h)
    h = keras.layers.Dense(6, activation="relu", name="fc3")(h)
    model = _randomize_biases(keras.Model(inputs, keras.layers.Dense(10, name="head")(h)))
    for consumer in ("fc2", "head"):
        kernel, bias = model.get_layer(consumer).get_weights()
        kernel[:3] = 0.0  # three inputs of the consumer are read by nothing
        model.get_layer(consumer).set_weights([kernel, bias])

    small, summary = shrink(model)
    assert summary.resized == {"fc3": (6, 3)}  # fc1 and fc2 feed a Lambda: kept whole
    assert [type(layer) for layer in _lambda_layers(small)] == [keras.layers.Lambda] * 2
    np.testing.assert_allclose(small.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-5)


@pytest.mark.parametrize("kind", sorted(FUNCTIONS))
@pytest.mark.parametrize("architecture", ["sequential", "functional"])
def test_to_tflite_exports_lambda_models_that_match_keras(
    digit_images, tmp_path, architecture, kind
):
    x = digit_images
    model = _randomize_biases(CNNS[architecture](FUNCTIONS[kind]()))
    assert np.abs(_without_lambda_outputs(model, x) - model.predict(x, verbose=0)).max() > 1e-2
    path = tmp_path / "lambda.tflite"
    report = to_tflite(model, str(path), verify_data=x, compare_dense=False, latency_repeats=2)
    assert path.exists() and path.stat().st_size == report.size_bytes
    assert report.runtime == "ai_edge_litert"  # verified on LiteRT
    assert report.max_abs_diff < 1e-4 and report.top1_agreement == 1.0
    assert os.listdir(tmp_path) == ["lambda.tflite"]


def test_sparsified_lambda_model_exports_with_pruning(digits, tmp_path):
    (_, _), (x_test, _) = digits
    x = x_test[:64]
    model = _randomize_biases(_mlp_sequential(_named_doubler()))
    sparse = tfpriors.sparsify(model)
    fc1 = sparse.get_layer("fc1")
    kernel = fc1.kernel.numpy()
    dead = np.zeros(kernel.shape, bool)
    dead[:, :4] = True  # prune every weight of four units
    fc1.log_sigma2.assign(np.where(dead, 8.0, -8.0) + np.log(kernel**2 + 1e-8))
    plain = inference_model(sparse)
    assert type(plain.get_layer("double")) is keras.layers.Lambda
    report = to_tflite(sparse, str(tmp_path / "s.tflite"), verify_data=x, compare_dense=False)
    assert report.max_abs_diff < 1e-4
    np.testing.assert_allclose(plain.predict(x, verbose=0), sparse.predict(x, verbose=0), atol=1e-5)


def test_to_tflite_refuses_a_random_lambda_by_name(tmp_path):
    import tensorflow as tf

    inputs = keras.Input((3,))
    noisy = keras.layers.Lambda(lambda t: t + tf.random.normal(tf.shape(t)), name="noisy")
    model = keras.Model(inputs, keras.layers.Dense(2)(noisy(inputs)))
    with pytest.raises(ExportError, match="noisy"):
        to_tflite(model, str(tmp_path / "m.tflite"))
    assert not os.listdir(tmp_path)


class _Scale(keras.layers.Layer):
    """A custom layer whose config misses a constructor argument."""

    def __init__(self, factor, **kwargs):
        super().__init__(**kwargs)
        self.factor = factor

    def call(self, inputs):
        return inputs * self.factor

    def get_config(self):
        return super().get_config()  # forgets `factor`


def test_a_layer_that_cannot_be_rebuilt_is_refused_by_name():
    model = keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(3, name="fc"), _Scale(2.0, name="scale")]
    )
    with pytest.raises(ValueError, match=r"'scale' \(_Scale\).*factor.*get_config"):
        tfpriors.sparsify(model)
