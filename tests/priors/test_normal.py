import numpy as np
import pytest
import tensorflow_probability as tfp

from tfpriors.priors import Normal
from tfpriors.priors.base import deserialize, serialize


def test_kl_matches_tfp_closed_form():
    rng = np.random.default_rng(0)
    mean = rng.normal(size=(5, 3)).astype("float32")
    log_sigma2 = rng.uniform(-6, 1, size=(5, 3)).astype("float32")
    prior = Normal(variance=0.1)
    expected = (
        tfp.distributions.kl_divergence(
            tfp.distributions.Normal(
                mean.astype("float64"), np.exp(0.5 * log_sigma2.astype("float64"))
            ),
            tfp.distributions.Normal(0.0, np.sqrt(0.1)),
        )
        .numpy()
        .sum()
    )
    np.testing.assert_allclose(float(prior.kl(mean, log_sigma2)), expected, rtol=1e-5)


def test_kl_is_zero_at_the_prior():
    prior = Normal(variance=2.0)
    assert abs(float(prior.kl(np.zeros(4, "float32"), np.full(4, np.log(2.0), "float32")))) < 1e-6


def test_serialization_round_trip():
    restored = deserialize(serialize(Normal(variance=0.5)))
    assert isinstance(restored, Normal) and restored.variance == 0.5


@pytest.mark.parametrize("variance", [0.0, -1.0, float("nan")])
def test_bad_variance_names_argument(variance):
    with pytest.raises(ValueError, match="variance"):
        Normal(variance=variance)
