"""datasets.load_boston_housing: offline error and dtypes (the data are faked here)."""

import urllib.error

import keras
import numpy as np
import pytest

from tfpriors import datasets


def test_offline_error_names_the_data_set_and_the_cache(monkeypatch, tmp_path):
    def offline():
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(keras.datasets.boston_housing, "load_data", offline)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    with pytest.raises(datasets.DatasetUnavailableError) as info:
        datasets.load_boston_housing()
    message = str(info.value)
    assert "Boston housing" in message and str(tmp_path) in message
    assert "boston_housing.npz" in message


def test_float32_arrays_when_the_data_is_there(monkeypatch):
    fake = ((np.ones((4, 13)), np.arange(4.0)), (np.zeros((2, 13)), np.arange(2.0)))
    monkeypatch.setattr(keras.datasets.boston_housing, "load_data", lambda: fake)
    (x, y), (xt, yt) = datasets.load_boston_housing()
    assert x.shape == (4, 13) and xt.shape == (2, 13) and y.shape == (4,)
    assert {a.dtype for a in (x, y, xt, yt)} == {np.dtype("float32")}
