import csv

import keras
import numpy as np
import pytest

import tfpriors
from tfpriors.callbacks import KLWarmup, SparsityMonitor


def _model():
    return keras.Sequential(
        [
            keras.Input((64,)),
            tfpriors.layers.SparseVDDense(32, activation="relu", name="fc1"),
            tfpriors.layers.SparseVDDense(10, name="fc2"),
        ]
    )


def test_kl_warmup_is_linear_between_epochs():
    warmup = KLWarmup(start_epoch=2, end_epoch=6)
    assert [warmup.weight_at(e) for e in range(8)] == [0, 0, 0, 0.25, 0.5, 0.75, 1, 1]


def test_kl_warmup_sets_the_layers_weight_during_fit(digits):
    (x, y), _ = digits
    model = _model()
    tfpriors.set_dataset_size(model, len(x))
    seen = []

    class Record(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            seen.append([float(layer.kl_weight.numpy()) for layer in model.layers])

    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    history = model.fit(x[:64], y[:64], epochs=4, verbose=0, callbacks=[KLWarmup(0, 2), Record()])
    assert seen == [[0.0, 0.0], [0.5, 0.5], [1.0, 1.0], [1.0, 1.0]]
    assert history.history["kl_weight"] == [0.0, 0.5, 1.0, 1.0]


def test_kl_weight_zero_removes_kl_from_loss(digits):
    (x, y), _ = digits
    model = _model()
    tfpriors.set_dataset_size(model, 10)
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    with_kl = model.evaluate(x[:64], y[:64], verbose=0)
    tfpriors.set_kl_weight(model, 0.0)
    without_kl = model.evaluate(x[:64], y[:64], verbose=0)
    kl = sum(float(layer.kl()) for layer in model.layers) / 10
    np.testing.assert_allclose(with_kl - without_kl, kl, rtol=1e-4)


def test_sparsity_monitor_logs_reach_history_and_csv(digits, tmp_path):
    (x, y), _ = digits
    model = _model()
    tfpriors.set_dataset_size(model, len(x))
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    # Force some weights to be pruned so the values are not trivially zero.
    log_sigma2 = model.layers[0].log_sigma2.numpy()
    log_sigma2[:32] = 5.0
    model.layers[0].log_sigma2.assign(log_sigma2)
    path = tmp_path / "log.csv"
    history = model.fit(
        x[:64],
        y[:64],
        epochs=2,
        verbose=0,
        callbacks=[SparsityMonitor(), keras.callbacks.CSVLogger(str(path))],
    )
    report = tfpriors.compression_report(model)
    assert history.history["sparsity"][-1] == pytest.approx(report.total_sparsity)
    assert history.history["compression"][-1] == pytest.approx(report.total_compression)
    assert history.history["sparsity/fc1"][-1] >= 0.45
    with open(path) as f:
        rows = list(csv.DictReader(f))
    assert float(rows[-1]["sparsity"]) == pytest.approx(report.total_sparsity)
    assert "sparsity/fc2" in rows[0]


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"start_epoch": 5, "end_epoch": 5}, "end_epoch"),
        ({"start_epoch": -1, "end_epoch": 5}, "start_epoch"),
        ({"start_epoch": 0, "end_epoch": 0}, "end_epoch"),
        ({"start_epoch": 0, "end_epoch": 2.5}, "end_epoch"),
    ],
)
def test_kl_warmup_bad_arguments(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        KLWarmup(**kwargs)


def test_kl_warmup_refuses_model_without_kl_layers():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    model.compile("sgd", "mse")
    with pytest.raises(ValueError, match="KL"):
        model.fit(np.zeros((4, 4)), np.zeros((4, 2)), verbose=0, callbacks=[KLWarmup(0, 2)])


def test_sparsity_monitor_bad_argument():
    with pytest.raises(TypeError, match="per_layer"):
        SparsityMonitor(per_layer="yes")
