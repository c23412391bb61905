import numpy as np
import pytest

import tfpriors
from tfpriors import datasets


def test_digits_split_is_fixed_and_scaled():
    (x, y), (xt, yt) = datasets.load_digits()
    assert x.shape == (1347, 64) and xt.shape == (450, 64)
    assert x.dtype == np.float32 and y.dtype == np.int64
    assert 0.0 == x.min() and x.max() == 1.0
    assert set(np.unique(y)) == set(range(10))
    (x2, y2), _ = datasets.load_digits()
    np.testing.assert_array_equal(x, x2)
    np.testing.assert_array_equal(y, y2)
    (xi, _), _ = datasets.load_digits(flat=False)
    assert xi.shape == (1347, 8, 8, 1)
    np.testing.assert_array_equal(xi.reshape(len(xi), -1), x)


@pytest.mark.parametrize(
    "loader,name,module",
    [
        (datasets.load_mnist, "MNIST", "mnist"),
        (datasets.load_fashion_mnist, "Fashion-MNIST", "fashion_mnist"),
        (datasets.load_cifar10, "CIFAR-10", "cifar10"),
    ],
)
def test_offline_error_names_the_data_set_and_the_cache(
    loader, name, module, monkeypatch, tmp_path
):
    import urllib.error

    import keras

    def offline():
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(getattr(keras.datasets, module), "load_data", offline)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    with pytest.raises(datasets.DatasetUnavailableError) as info:
        loader()
    message = str(info.value)
    assert name in message and str(tmp_path) in message


def test_real_loader_shapes_when_the_data_is_there(monkeypatch):
    import keras

    fake = (
        (np.full((5, 32, 32, 3), 255, np.uint8), np.arange(5).reshape(5, 1)),
        (np.zeros((2, 32, 32, 3), np.uint8), np.arange(2).reshape(2, 1)),
    )
    monkeypatch.setattr(keras.datasets.cifar10, "load_data", lambda: fake)
    (x, y), (xt, yt) = datasets.load_cifar10()
    assert x.shape == (5, 32, 32, 3) and x.dtype == np.float32 and x.max() == 1.0
    assert y.shape == (5,) and yt.dtype == np.int64
    (x, _), _ = datasets.load_cifar10(flat=True)
    assert x.shape == (5, 3072)


def test_load_by_name_and_bad_arguments():
    (x, _), _ = datasets.load("digits")
    assert x.shape == (1347, 64)
    with pytest.raises(ValueError, match="name"):
        datasets.load("imagenet")
    with pytest.raises(TypeError, match="flat"):
        tfpriors.datasets.load_digits(flat="yes")


def test_mnist_sample_is_real_stratified_and_fixed():
    (x, y), (xt, yt) = datasets.load_mnist_sample()
    assert x.shape == (4000, 28, 28, 1) and xt.shape == (1000, 28, 28, 1)
    assert x.dtype == np.float32 and y.dtype == np.int64
    assert 0.0 == x.min() and x.max() == 1.0
    np.testing.assert_array_equal(np.bincount(y), [400] * 10)
    np.testing.assert_array_equal(np.bincount(yt), [100] * 10)
    # Real digits: ink in the middle, empty borders, about a fifth of the pixels inked.
    assert x[:, :2].mean() < 0.01 and x[:, 10:18, 10:18].mean() > 0.2
    assert 0.05 < (x > 0.5).mean() < 0.3
    (x2, y2), (xf, _) = datasets.load_mnist_sample(flat=True)
    np.testing.assert_array_equal(xf.reshape(-1, 28, 28, 1), xt)
    np.testing.assert_array_equal(y2, y)


def test_mnist_sample_damaged_or_missing_file_is_named(monkeypatch, tmp_path):
    damaged = tmp_path / "mnist_5k.csv.gz"
    damaged.write_bytes(b"\x1f\x8b not really gzip")
    monkeypatch.setattr(datasets, "mnist_sample_path", lambda: str(damaged))
    with pytest.raises(datasets.DatasetUnavailableError, match="mnist_5k.csv.gz"):
        datasets.load_mnist_sample()
    monkeypatch.setattr(
        datasets, "mnist_sample_path", lambda: str(tmp_path / "missing" / "mnist_5k.csv.gz")
    )
    with pytest.raises(datasets.DatasetUnavailableError, match="missing"):
        datasets.load_mnist_sample()
