import math

import keras
import numpy as np
import pytest

import tfpriors
from tfpriors.hyper import LambdaHyperModel, density_masks, tradeoff_curve
from tfpriors.layers import HyperVariationalConv2D, HyperVariationalDense


def _mlp(kind="lowrank", **kwargs):
    return LambdaHyperModel(
        layers=[
            HyperVariationalDense(16, activation="relu", kind=kind, hidden_units=8),
            HyperVariationalDense(10, kind=kind, hidden_units=8),
        ],
        lambda_range=(1e-3, 10.0),
        lambda_draws=3,
        prior_variance=0.1,
        **kwargs,
    )


def _fit(model, x, y, epochs=3):
    tfpriors.set_dataset_size(model, len(x))
    model.compile(
        keras.optimizers.SGD(0.05, momentum=0.9),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model.fit(x, y, epochs=epochs, batch_size=64, verbose=0)


@pytest.fixture(scope="module")
def trained(digits):
    keras.utils.set_random_seed(7)
    (x, y), _ = digits
    model = _mlp("lowrank")
    history = _fit(model, x, y)
    return model, history


def test_fit_learns_and_scales_kl_by_dataset_size(trained, digits):
    model, history = trained
    (_, _), (x_test, y_test) = digits
    assert np.all(np.isfinite(history.history["loss"]))
    assert history.history["loss"][-1] < history.history["loss"][0]
    assert [layer.dataset_size for layer in model.hyper_layers] == [1347, 1347]
    model.set_lambda(0.01)
    assert tfpriors.hyper.tradeoff.accuracy_of(model, x_test, y_test) > 0.7


def test_at_is_a_plain_model_equal_to_the_mean_forward(trained, digits):
    model, _ = trained
    (_, _), (x_test, _) = digits
    for lam in (1e-3, 0.37, 10.0):
        plain = model.at(lam)
        assert isinstance(plain, keras.Sequential)
        assert [type(layer) for layer in plain.layers] == [keras.layers.Dense] * 2
        model.set_lambda(lam)
        np.testing.assert_allclose(plain(x_test), model(x_test), rtol=1e-5, atol=1e-5)
        hidden = model.stack[0](x_test, lambdas=[lam])
        np.testing.assert_allclose(
            plain(x_test), model.stack[1](hidden, lambdas=[lam]), rtol=1e-5, atol=1e-5
        )
    # Different lambdas give different models.
    assert not np.allclose(model.at(1e-3)(x_test), model.at(10.0)(x_test))


def test_pruning_removes_the_lowest_density_fraction(trained):
    model, _ = trained
    scores = model.density_scores(0.5)
    total = sum(s.size for s in scores)
    for fraction in (0.0, 0.3, 0.8):
        pruned = model.at(0.5, prune_fraction=fraction)
        kernels = [layer.kernel.numpy() for layer in pruned.layers]
        zeros = sum(int(np.sum(k == 0)) for k in kernels)
        assert zeros == math.floor(fraction * total)
        removed = np.concatenate([s[k == 0] for s, k in zip(scores, kernels)])
        kept = np.concatenate([s[k != 0] for s, k in zip(scores, kernels)])
        if removed.size:
            assert removed.max() <= kept.min()
        # Kept weights are the unpruned means.
        unpruned = [layer.kernel.numpy() for layer in model.at(0.5).layers]
        for k, u in zip(kernels, unpruned):
            np.testing.assert_array_equal(k[k != 0], u[k != 0])


def test_density_masks_global_ties_and_bounds():
    masks = density_masks([np.array([[3.0, 1.0]]), np.array([2.0, 1.0])], 0.5)
    assert [m.tolist() for m in masks] == [[[True, False]], [True, False]]
    with pytest.raises(ValueError, match="prune_fraction"):
        density_masks([np.ones(3)], 1.0)


def test_hypernetwork_keras_round_trip(trained, digits, tmp_path):
    model, _ = trained
    (_, _), (x_test, _) = digits
    model.set_lambda(0.2)
    model.save(tmp_path / "hyper.keras")
    loaded = keras.models.load_model(tmp_path / "hyper.keras")
    assert isinstance(loaded, LambdaHyperModel)
    assert loaded.lambda_range == model.lambda_range and loaded.lambda_draws == 3
    assert loaded.prior_variance == 0.1 and loaded.lambda_value == pytest.approx(0.2)
    assert [layer.kind for layer in loaded.hyper_layers] == [
        layer.kind for layer in model.hyper_layers
    ]
    np.testing.assert_array_equal(model(x_test), loaded(x_test))
    np.testing.assert_array_equal(
        model.at(3.0, prune_fraction=0.5)(x_test), loaded.at(3.0, prune_fraction=0.5)(x_test)
    )


def test_linear_hypernetwork_fit_at_and_round_trip(digits, tmp_path):
    (x, y), (x_test, y_test) = digits
    model = _mlp("linear")
    _fit(model, x, y, epochs=3)
    # The loss is noisy (lambda is drawn per step up to 10), the accuracy is not.
    model.set_lambda(1e-3)
    assert tfpriors.hyper.tradeoff.accuracy_of(model, x_test, y_test) > 0.5
    for lam in (1e-3, 2.0):
        model.set_lambda(lam)
        np.testing.assert_allclose(model.at(lam)(x_test), model(x_test), rtol=1e-5, atol=1e-5)
    model.save(tmp_path / "linear.keras")
    loaded = keras.models.load_model(tmp_path / "linear.keras")
    assert [layer.kind for layer in loaded.hyper_layers] == ["linear", "linear"]
    np.testing.assert_array_equal(model(x_test), loaded(x_test))


def test_at_model_saves_and_exports_to_tflite(trained, digits, tmp_path):
    model, _ = trained
    (_, _), (x_test, _) = digits
    pruned = model.at(1.0, prune_fraction=0.8)
    pruned.save(tmp_path / "plain.keras")
    loaded = keras.models.load_model(tmp_path / "plain.keras")
    np.testing.assert_array_equal(pruned(x_test), loaded(x_test))
    report = tfpriors.export.to_tflite(
        pruned,
        str(tmp_path / "m.tflite"),
        verify_data=x_test[:64],
        compare_dense=False,
        latency_repeats=2,
    )
    assert report.max_abs_diff < 1e-4 and report.top1_agreement == 1.0
    # Units whose weights all went are gone from the file.
    first = pruned.layers[0].kernel.numpy()
    dead = int(
        np.sum(np.all(first == 0, axis=0) | np.all(pruned.layers[1].kernel.numpy() == 0, axis=1))
    )
    assert report.shrink.removed_units == min(dead, 15)


def test_tradeoff_curve_numbers_and_png(trained, digits, tmp_path):
    model, _ = trained
    (_, _), (x_test, y_test) = digits
    curve = tradeoff_curve(
        model,
        (x_test, y_test),
        lambdas=[1e-3, 1.0],
        path=tmp_path / "t.png",
        fractions=[0.0, 0.5, 0.9],
    )
    assert np.shape(curve.accuracy) == (2, 3)
    expected = tfpriors.hyper.tradeoff.accuracy_of(
        model.at(1.0, prune_fraction=0.5), x_test, y_test
    )
    assert curve.accuracy[1][1] == expected
    with open(tmp_path / "t.png", "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert "lambda" in str(curve)
    with pytest.raises(ValueError, match="lambdas"):
        tradeoff_curve(model, (x_test, y_test), lambdas=[100.0], path=None)
    with pytest.raises(ValueError, match="fractions"):
        tradeoff_curve(model, (x_test, y_test), lambdas=[1.0], path=None, fractions=[1.5])
    with pytest.raises(ValueError, match="path"):
        tradeoff_curve(model, (x_test, y_test), lambdas=[1.0], path=tmp_path / "t.jpg")


def test_conv_hypernetwork_fits_and_at_matches(digits):
    (x, y), (x_test, _) = digits
    x, x_test = x.reshape(-1, 8, 8, 1)[:128], x_test.reshape(-1, 8, 8, 1)[:50]
    model = LambdaHyperModel(
        layers=[
            HyperVariationalConv2D(4, 3, activation="relu", kind="lowrank", hidden_units=6),
            keras.layers.MaxPooling2D(2),
            keras.layers.Flatten(),
            HyperVariationalDense(10, kind="linear"),
        ],
        lambda_draws=4,
    )
    history = _fit(model, x, y[:128], epochs=1)
    assert np.isfinite(history.history["loss"][0])
    plain = model.at(0.05, prune_fraction=0.3)
    assert [type(layer).__name__ for layer in plain.layers] == [
        "Conv2D",
        "MaxPooling2D",
        "Flatten",
        "Dense",
    ]
    model.set_lambda(0.05)
    unpruned = model.at(0.05)
    np.testing.assert_allclose(unpruned(x_test), model(x_test), rtol=1e-5, atol=1e-5)


def test_fit_without_dataset_size_fails_at_start(digits):
    (x, y), _ = digits
    model = _mlp()
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    with pytest.raises(tfpriors.layers.DatasetSizeNotSetError, match="set_dataset_size"):
        model.fit(x[:64], y[:64], epochs=1, verbose=0)
    assert tfpriors.set_dataset_size(model, 64) == 2


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"lambda_range": (0.0, 1.0)}, "lambda_range"),
        ({"lambda_range": (-1.0, 1.0)}, "lambda_range"),
        ({"lambda_range": (5.0, 1.0)}, "lambda_range"),
        ({"lambda_draws": 0}, "lambda_draws"),
        ({"prior_variance": -0.1}, "prior_variance"),
        ({"lambda_value": 50.0}, "lambda_value"),
    ],
)
def test_bad_model_arguments(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        _mlp(**kwargs)


def test_bad_layers_and_calls(trained):
    with pytest.raises(ValueError, match="HyperVariationalDense"):
        LambdaHyperModel([keras.layers.Dense(3)])
    with pytest.raises(TypeError, match="layers"):
        LambdaHyperModel(HyperVariationalDense(3))
    with pytest.raises(ValueError, match="not built"):
        _mlp().at(1.0)
    model, _ = trained
    for bad in (1e-4, 11.0):
        with pytest.raises(ValueError, match="lambda_value"):
            model.at(bad)
    with pytest.raises(ValueError, match="lambda_value"):
        model.set_lambda(0.0)
    for bad in (1.0, -0.1):
        with pytest.raises(ValueError, match="prune_fraction"):
            model.at(1.0, prune_fraction=bad)
    # The range's own ends are fine.
    model.at(1e-3)
    model.at(10.0)
