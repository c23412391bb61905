import keras
import numpy as np
import pytest

from tfpriors.priors import LogUniform, log_alpha
from tfpriors.priors.base import deserialize, serialize


def test_kl_matches_formula_and_is_positive_and_decreasing():
    prior = LogUniform()
    grid = np.linspace(-8, 8, 33).astype("float32")
    kl = prior.kl_from_log_alpha(grid).numpy()
    sigmoid = 1 / (1 + np.exp(-(1.87320 + 1.48695 * grid.astype("float64"))))
    expected = 0.63576 - 0.63576 * sigmoid + 0.5 * np.log1p(np.exp(-grid.astype("float64")))
    np.testing.assert_allclose(kl, expected, rtol=1e-6)
    # Larger dropout rates cost less: the prior pushes alpha up, i.e. sparsity.
    assert np.all(np.diff(kl) < 0)
    assert np.all(kl > 0)


def test_kl_sums_over_weights_and_clips_log_alpha():
    prior = LogUniform()
    mean = np.array([1.0, 1e-3, 2.0], "float32")
    log_sigma2 = np.array([0.0, 0.0, -40.0], "float32")
    la = log_alpha(mean, log_sigma2).numpy()
    np.testing.assert_allclose(la, [0.0, 8.0, -8.0], atol=1e-5)
    np.testing.assert_allclose(
        float(prior.kl(mean, log_sigma2)), prior.kl_from_log_alpha(la).numpy().sum(), rtol=1e-6
    )


def test_prior_serializes():
    prior = deserialize(serialize(LogUniform()))
    assert isinstance(prior, LogUniform)
    assert repr(prior) == "LogUniform()"


def test_kl_is_float32_for_float16_inputs():
    value = LogUniform().kl(keras.ops.ones((4,), "float16"), keras.ops.zeros((4,), "float16"))
    assert value.dtype == "float32"
    np.testing.assert_allclose(
        float(value), 4 * float(LogUniform().kl_from_log_alpha(0.0)), rtol=1e-6
    )


@pytest.mark.parametrize("threshold", ["3", None, float("nan"), 9.0, True])
def test_threshold_validation(threshold):
    from tfpriors.priors.log_uniform import validate_threshold

    with pytest.raises((ValueError, TypeError), match="threshold"):
        validate_threshold(threshold)
