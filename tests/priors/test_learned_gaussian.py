import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

from tfpriors.priors import LearnedGaussian
from tfpriors.priors.base import deserialize, serialize


def _posterior(seed=0, shape=(6, 5)):
    rng = np.random.default_rng(seed)
    return (
        rng.normal(0.3, 0.5, shape).astype("float32"),
        rng.uniform(-6, -1, shape).astype("float32"),
    )


@pytest.mark.parametrize("zero_mean", [False, True])
def test_kl_is_tfp_kl_at_the_closed_form_optimum(zero_mean):
    mean, log_sigma2 = _posterior()
    prior = LearnedGaussian(zero_mean=zero_mean)
    mu, variance = (float(v) for v in prior.fit(mean, log_sigma2))
    q = tfp.distributions.Normal(mean.astype("float64"), np.exp(0.5 * log_sigma2.astype("float64")))

    def kl_at(m, v):
        return (
            tfp.distributions.kl_divergence(q, tfp.distributions.Normal(m, np.sqrt(v)))
            .numpy()
            .sum()
        )

    np.testing.assert_allclose(float(prior.kl(mean, log_sigma2)), kl_at(mu, variance), rtol=1e-5)
    # It is the minimum over the prior's parameters.
    moves = ((0.0, 1.2), (0.0, 0.8)) + (() if zero_mean else ((0.05, 1.0), (-0.05, 1.0)))
    for dm, dv in moves:
        assert kl_at(mu + dm, variance * dv) > kl_at(mu, variance)
    if zero_mean:
        assert mu == 0.0


def test_gradient_equals_that_of_the_fixed_optimal_prior():
    mean, log_sigma2 = (tf.Variable(v) for v in _posterior(1))
    prior = LearnedGaussian()
    with tf.GradientTape() as tape:
        kl = prior.kl(mean, log_sigma2)
    grads = tape.gradient(kl, [mean, log_sigma2])
    mu, variance = (tf.constant(float(v)) for v in prior.fit(mean, log_sigma2))
    with tf.GradientTape() as tape:
        fixed = 0.5 * tf.reduce_sum(
            tf.math.log(variance)
            - log_sigma2
            + (tf.exp(log_sigma2) + tf.square(mean - mu)) / variance
            - 1.0
        )
    for got, want in zip(grads, tape.gradient(fixed, [mean, log_sigma2])):
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-4, atol=1e-6)


def test_serialization_and_bad_arguments():
    restored = deserialize(serialize(LearnedGaussian(zero_mean=True, min_variance=1e-4)))
    assert restored.zero_mean and restored.min_variance == 1e-4
    with pytest.raises(ValueError, match="min_variance"):
        LearnedGaussian(min_variance=0.0)
    with pytest.raises(TypeError, match="zero_mean"):
        LearnedGaussian(zero_mean="yes")
