import keras
import numpy as np
import pytest

import tfpriors
from tfpriors.layers import SparseVDConv2D, SparseVDDense


def _train_dense(model, x, y):
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, epochs=2, batch_size=64, verbose=0)
    return model


def test_sparsify_sequential_keeps_function_and_other_layers(digits):
    (x, y), (x_test, _) = digits
    x, x_test = x.reshape(-1, 8, 8, 1), x_test.reshape(-1, 8, 8, 1)
    dense = _train_dense(tfpriors.models.lenet5((8, 8, 1), 10), x, y)
    sparse = tfpriors.sparsify(dense)
    kinds = [type(layer).__name__ for layer in sparse.layers]
    assert kinds == [
        "SparseVDConv2D",
        "MaxPooling2D",
        "SparseVDConv2D",
        "MaxPooling2D",
        "Flatten",
        "SparseVDDense",
        "SparseVDDense",
    ]
    for layer in sparse.layers:
        if isinstance(layer, (SparseVDDense, SparseVDConv2D)):
            log_sigma2 = layer.log_sigma2.numpy()
            assert log_sigma2.max() == -8.0 and np.mean(log_sigma2 == -8.0) > 0.8
            assert layer.kept_mask().all()
    # Deterministic outputs are identical (no weight is pruned yet)...
    np.testing.assert_allclose(
        dense.predict(x_test, verbose=0), sparse.predict(x_test, verbose=0), atol=1e-5
    )
    # ...and training-mode outputs differ only by the posterior noise
    # (sigma^2 = e^-8 per weight, accumulated over 5 layers).
    tfpriors.set_dataset_size(sparse, len(x))
    noisy = sparse(x_test, training=True).numpy()
    reference = dense(x_test).numpy()
    assert np.abs(noisy - reference).mean() < 0.15 * np.abs(reference).mean()
    assert (noisy.argmax(1) == reference.argmax(1)).mean() > 0.9
    # The original model is untouched.
    assert type(dense.layers[0]) is keras.layers.Conv2D


def test_sparsify_functional_with_nested_model_and_skip(digits):
    (x, y), (x_test, _) = digits
    inner = keras.Sequential(
        [keras.Input((32,)), keras.layers.Dense(16, activation="relu", name="inner_fc")],
        name="inner",
    )
    inputs = keras.Input((64,))
    h = keras.layers.Dense(32, activation="tanh", name="fc1")(inputs)
    h = keras.layers.BatchNormalization(name="bn")(h)
    h = inner(h)
    outputs = keras.layers.Dense(10, name="head")(h)
    dense = _train_dense(keras.Model(inputs, outputs), x, y)
    sparse = tfpriors.sparsify(dense, skip=["head"], dataset_size=len(x))
    by_name = {layer.name: layer for layer in sparse._flatten_layers(include_self=False)}
    assert isinstance(by_name["fc1"], SparseVDDense)
    assert isinstance(by_name["inner_fc"], SparseVDDense)
    assert type(by_name["head"]) is keras.layers.Dense
    assert type(by_name["bn"]) is keras.layers.BatchNormalization
    assert by_name["fc1"].dataset_size == len(x)
    np.testing.assert_allclose(
        dense.predict(x_test, verbose=0), sparse.predict(x_test, verbose=0), atol=1e-5
    )
    sparse.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    sparse.fit(x[:128], y[:128], epochs=1, verbose=0)


def test_sparsify_then_train_compresses(digits):
    (x, y), (x_test, y_test) = digits
    dense = tfpriors.models.lenet_300_100((64,), 10)
    dense.compile(
        "adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"]
    )
    dense.fit(x, y, epochs=10, batch_size=64, verbose=0)
    sparse = tfpriors.sparsify(dense)
    tfpriors.set_dataset_size(sparse, len(x))
    sparse.compile(
        keras.optimizers.Adam(1e-3),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    sparse.fit(
        x, y, epochs=15, batch_size=64, verbose=0, callbacks=[tfpriors.callbacks.KLWarmup(0, 5)]
    )
    report = tfpriors.compression_report(sparse)
    _, accuracy = sparse.evaluate(x_test, y_test, verbose=0)
    assert report.total_compression > 5
    assert accuracy > 0.85


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"threshold": "high"}, "threshold"),
        ({"log_sigma2_init": None}, "log_sigma2_init"),
        ({"dataset_size": -1}, "dataset_size"),
        ({"skip": ["nope"]}, "skip"),
    ],
)
def test_sparsify_bad_arguments(kwargs, match):
    model = tfpriors.models.lenet_300_100((64,), 10)
    with pytest.raises((ValueError, TypeError), match=match):
        tfpriors.sparsify(model, **kwargs)


def test_sparsify_refuses_subclassed_and_non_models():
    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.fc = keras.layers.Dense(2)

        def call(self, x):
            return self.fc(x)

    net = Net()
    net(np.zeros((1, 3)))
    with pytest.raises(ValueError, match="model"):
        tfpriors.sparsify(net)
    with pytest.raises(TypeError, match="model"):
        tfpriors.sparsify("model.keras")
