import keras
import numpy as np
import pytest

import tfpriors
from tfpriors.export import ExportError, inference_model, shrink


def _kill(kernel, incoming=(), outgoing_rows=()):
    kernel = kernel.copy()
    for unit in incoming:
        kernel[..., unit] = 0.0
    for row in outgoing_rows:
        kernel[row] = 0.0
    return kernel


def _random_weights(model, seed=0):
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        weights = layer.get_weights()
        if weights:
            layer.set_weights(
                [
                    rng.normal(0, 0.3, w.shape).astype("float32")
                    if w.ndim and "moving_variance" not in v.name
                    else np.abs(rng.normal(1, 0.2, w.shape)).astype("float32")
                    for w, v in zip(weights, layer.weights)
                ]
            )


def test_dense_chain_removes_dead_units_and_folds_constants():
    model = keras.Sequential(
        [
            keras.Input((12,)),
            keras.layers.Dense(8, activation="relu", name="a"),
            keras.layers.Dropout(0.3),
            keras.layers.Dense(6, activation="tanh", name="b"),
            keras.layers.Dense(3, name="out"),
        ]
    )
    _random_weights(model)
    a, b, out = (model.get_layer(n) for n in ("a", "b", "out"))
    a_kernel, a_bias = a.get_weights()
    a_bias[[1, 2]] = [0.7, -0.4]  # dead inputs with a bias: constants to fold
    a.set_weights([_kill(a_kernel, incoming=[1, 2, 5]), a_bias])
    b_kernel, b_bias = b.get_weights()
    b.set_weights([_kill(b_kernel, outgoing_rows=[3, 7]), b_bias])
    out_kernel, out_bias = out.get_weights()
    out.set_weights([_kill(out_kernel, outgoing_rows=[0]), out_bias])
    x = np.random.default_rng(1).normal(size=(32, 12)).astype("float32")

    small, summary = shrink(model)
    assert summary.resized == {"a": (8, 3), "b": (6, 5)}
    assert summary.removed_units == 6
    np.testing.assert_allclose(small.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-5)


def test_conv_pool_bn_flatten_dense_chain():
    model = keras.Sequential(
        [
            keras.Input((10, 10, 2)),
            keras.layers.Conv2D(6, 3, activation="relu", name="c1"),  # valid
            keras.layers.BatchNormalization(name="bn"),
            keras.layers.MaxPooling2D(2),
            keras.layers.Conv2D(5, 3, padding="valid", name="c2"),
            keras.layers.Activation("relu"),
            keras.layers.Flatten(),
            keras.layers.Dense(4, name="fc"),
        ]
    )
    _random_weights(model)
    c1, c2, fc = (model.get_layer(n) for n in ("c1", "c2", "fc"))
    kernel, bias = c1.get_weights()
    bias[0] = 0.5
    c1.set_weights([_kill(kernel, incoming=[0, 4]), bias])  # constants through BN + pool
    kernel, bias = c2.get_weights()
    kernel[:, :, 2, :] = 0.0  # c1 filter 2 unused
    kernel[..., 1] = 0.0  # c2 filter 1 constant
    c2.set_weights([kernel, bias])
    fc_kernel, fc_bias = fc.get_weights()
    fc_kernel[np.arange(fc_kernel.shape[0]) % 5 == 3] = 0.0  # c2 filter 3 unused
    fc.set_weights([fc_kernel, fc_bias])
    x = np.random.default_rng(2).normal(size=(8, 10, 10, 2)).astype("float32")

    small, summary = shrink(model)
    assert summary.resized == {"c1": (6, 3), "c2": (5, 3)}
    assert small.get_layer("bn").get_weights()[0].shape == (3,)
    np.testing.assert_allclose(small.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-5)


def test_same_padding_keeps_constant_filters_but_removes_unused_ones():
    model = keras.Sequential(
        [
            keras.Input((6, 6, 1)),
            keras.layers.Conv2D(4, 3, padding="same", name="c1"),
            keras.layers.Conv2D(2, 3, padding="same", name="c2"),
        ]
    )
    _random_weights(model)
    kernel, bias = model.get_layer("c1").get_weights()
    model.get_layer("c1").set_weights([_kill(kernel, incoming=[0]), bias])
    kernel, bias = model.get_layer("c2").get_weights()
    kernel[:, :, 3, :] = 0.0
    model.get_layer("c2").set_weights([kernel, bias])
    small, summary = shrink(model)
    # Filter 0 is constant but a "same" convolution sees zero padding at the
    # border, so folding it would change the output: only filter 3 goes.
    assert summary.resized == {"c1": (4, 3)}
    x = np.random.default_rng(3).normal(size=(4, 6, 6, 1)).astype("float32")
    np.testing.assert_allclose(small.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-5)


def test_branches_softmax_and_outputs_are_left_alone():
    inputs = keras.Input((5,))
    shared = keras.layers.Dense(4, name="shared")(inputs)
    left = keras.layers.Dense(2, name="left")(shared)
    right = keras.layers.Dense(2, name="right")(shared)
    soft = keras.layers.Dense(3, activation="softmax", name="soft")(
        keras.layers.Add()([left, right])
    )
    head = keras.layers.Dense(2, name="head")(soft)
    model = keras.Model(inputs, head)
    _random_weights(model)
    for name in ("left", "right"):
        kernel, bias = model.get_layer(name).get_weights()
        model.get_layer(name).set_weights([_kill(kernel, outgoing_rows=[0]), bias])
    kernel, bias = model.get_layer("head").get_weights()
    model.get_layer("head").set_weights([_kill(kernel, outgoing_rows=[1]), bias])
    small, summary = shrink(model)
    assert summary.resized == {}
    assert small is model


def test_functional_model_and_fully_dead_layer_keeps_one_unit():
    inputs = keras.Input((6,))
    h = keras.layers.Dense(5, activation="relu", name="h")(inputs)
    outputs = keras.layers.Dense(2, name="o")(h)
    model = keras.Model(inputs, outputs)
    _random_weights(model)
    kernel, bias = model.get_layer("o").get_weights()
    model.get_layer("o").set_weights([np.zeros_like(kernel), bias])
    small, summary = shrink(model)
    assert summary.resized == {"h": (5, 1)}
    x = np.ones((3, 6), "float32")
    np.testing.assert_allclose(small.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)


def test_inference_model_of_sparse_vd_is_plain_and_equal():
    model = tfpriors.models.lenet5((8, 8, 1), 10, kind="sparse_vd")
    rng = np.random.default_rng(4)
    for layer in model.layers:
        if hasattr(layer, "log_sigma2"):
            layer.log_sigma2.assign(rng.uniform(-12, 2, layer.kernel.shape))
    plain = inference_model(model)
    assert {type(layer).__module__.split(".")[0] for layer in plain.layers} == {"keras"}
    x = rng.normal(size=(5, 8, 8, 1)).astype("float32")
    np.testing.assert_array_equal(plain.predict(x, verbose=0), model.predict(x, verbose=0))
    assert np.mean(plain.get_layer("fc1").kernel.numpy() == 0) > 0.3


def test_unknown_layer_is_named():
    class Scale(keras.layers.Layer):
        def call(self, x):
            return 2 * x

    inputs = keras.Input((3,))
    model = keras.Model(inputs, Scale(name="my_scale")(keras.layers.Dense(2)(inputs)))
    with pytest.raises(ExportError, match="my_scale"):
        inference_model(model)
