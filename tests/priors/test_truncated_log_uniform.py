import itertools

import numpy as np
import pytest
import tensorflow as tf
from scipy import integrate, special, stats

from tfpriors.priors import TruncatedLogNormal
from tfpriors.priors.truncated_log_uniform import LOG_SIGMA_MAX, LOG_SIGMA_MIN

A, B = -20.0, 0.0
# (mu, log_sigma) from a sharp unit at the upper end to one spread over the interval.
GRID = [(mu, ls) for mu in (0.0, -0.5, -3.0, -10.0, -19.0) for ls in (-4.0, -1.0, 0.0, 1.5, 3.0)]


def closed_form(mu, log_sigma, a=A, b=B):
    """NumPy/SciPy float64 evaluation of the closed forms (KL, E, Var)."""
    sigma = np.exp(log_sigma)
    alpha, beta = (a - mu) / sigma, (b - mu) / sigma
    z = special.ndtr(beta) - special.ndtr(alpha)
    pdf = stats.norm.pdf
    entropy = np.log(np.sqrt(2 * np.pi * np.e) * sigma * z) + (
        alpha * pdf(alpha) - beta * pdf(beta)
    ) / (2 * z)

    def moment(k):
        # By quadrature in log(theta), where the integrand is bounded: the closed
        # form's exp(k mu + k^2 sigma^2 / 2) overflows for wide posteriors.
        def one(m, s, al, be):
            dist = stats.truncnorm(al, be, loc=m, scale=s)
            value, _ = integrate.quad(
                lambda x: np.exp(k * x) * dist.pdf(x),
                a,
                b,
                points=[m],
                limit=200,
                epsabs=0,
                epsrel=1e-10,
            )
            return value

        return np.vectorize(one)(mu, sigma, alpha, beta)

    mean = moment(1)
    return np.log(b - a) - entropy, mean, moment(2) - mean**2


def test_kl_and_moments_match_the_closed_form():
    mu, log_sigma = (np.array(v) for v in zip(*GRID))
    q = TruncatedLogNormal(mu.astype("float32"), log_sigma.astype("float32"))
    kl, mean, variance = closed_form(mu, log_sigma)
    np.testing.assert_allclose(q.kl().numpy(), kl, rtol=2e-4, atol=2e-5)
    np.testing.assert_allclose(q.mean().numpy(), mean, rtol=2e-4)
    np.testing.assert_allclose(q.variance().numpy(), variance, rtol=2e-3)
    np.testing.assert_allclose(q.snr().numpy(), mean / np.sqrt(variance), rtol=2e-3)
    assert np.all(q.kl().numpy() >= -1e-5)


def test_moments_of_a_wide_posterior_stay_finite():
    # sigma = e^5: exp(mu + sigma^2 / 2) alone would overflow float32.
    q = TruncatedLogNormal([0.0, -20.0], [5.0, 5.0])
    kl, mean, variance = closed_form(np.array([0.0, -20.0]), np.array([5.0, 5.0]))
    np.testing.assert_allclose(q.mean().numpy(), mean, rtol=1e-3)
    np.testing.assert_allclose(q.variance().numpy(), variance, rtol=1e-2)
    np.testing.assert_allclose(q.kl().numpy(), kl, atol=1e-4)


def test_kl_matches_monte_carlo():
    rng = np.random.default_rng(0)
    for mu, log_sigma in [(-1.0, 0.0), (-6.0, 1.0), (0.0, -2.0)]:
        sigma = np.exp(log_sigma)
        dist = stats.truncnorm((A - mu) / sigma, (B - mu) / sigma, loc=mu, scale=sigma)
        x = dist.rvs(size=200_000, random_state=rng)
        # KL(q || p) in log(theta), where the prior is uniform on [A, B].
        terms = dist.logpdf(x) + np.log(B - A)
        estimate, error = terms.mean(), terms.std() / np.sqrt(len(terms))
        value = float(TruncatedLogNormal(mu, log_sigma).kl())
        assert abs(value - estimate) < 4 * error + 1e-4, (mu, log_sigma, value, estimate)


def test_samples_follow_the_distribution():
    mu, log_sigma = -2.0, 0.5
    q = TruncatedLogNormal(mu, log_sigma)
    uniform = np.random.default_rng(1).random(100_000).astype("float32")
    theta = q.sample(uniform).numpy()
    assert theta.min() >= np.exp(A) and theta.max() <= np.exp(B)
    _, mean, variance = closed_form(mu, log_sigma)
    assert abs(theta.mean() - mean) < 4 * np.sqrt(variance / len(theta))
    sigma = np.exp(log_sigma)
    dist = stats.truncnorm((A - mu) / sigma, (B - mu) / sigma, loc=mu, scale=sigma)
    assert stats.kstest(np.log(theta), dist.cdf).pvalue > 1e-3


def test_gradients_are_finite_at_extreme_parameters():
    values = [-1e3, -20.0, -10.0, 0.0, 5.0, 1e3]
    log_sigmas = [-30.0, LOG_SIGMA_MIN, -5.0, 0.0, LOG_SIGMA_MAX, 30.0]
    mu, log_sigma = (np.array(v, "float32") for v in zip(*itertools.product(values, log_sigmas)))
    mu_var, log_sigma_var = tf.Variable(mu), tf.Variable(log_sigma)
    uniform = tf.constant([[0.0], [1e-7], [0.5], [1.0 - 1e-7]], "float32")
    with tf.GradientTape() as tape:
        q = TruncatedLogNormal(mu_var, log_sigma_var)
        values = [q.kl(), q.mean(), q.snr(), q.variance(), q.sample(uniform)]
        total = sum(tf.reduce_sum(v) for v in values)
    assert all(np.all(np.isfinite(v.numpy())) for v in values)
    gradients = tape.gradient(total, [mu_var, log_sigma_var])
    assert all(np.all(np.isfinite(g.numpy())) for g in gradients)


def test_parameters_are_clipped_to_their_ranges():
    outside = TruncatedLogNormal([5.0, -50.0], [-40.0, 40.0])
    inside = TruncatedLogNormal([B, A], [LOG_SIGMA_MIN, LOG_SIGMA_MAX])
    np.testing.assert_array_equal(outside.kl().numpy(), inside.kl().numpy())
    np.testing.assert_array_equal(outside.mean().numpy(), inside.mean().numpy())


def test_other_interval():
    q = TruncatedLogNormal(-1.0, 0.0, a=-4.0, b=2.0)
    kl, mean, _ = closed_form(-1.0, 0.0, a=-4.0, b=2.0)
    np.testing.assert_allclose(float(q.kl()), kl, rtol=1e-4)
    np.testing.assert_allclose(float(q.mean()), mean, rtol=1e-4)


@pytest.mark.parametrize("a, b", [(0.0, 0.0), (1.0, -1.0)])
def test_bad_interval_is_refused(a, b):
    with pytest.raises(ValueError, match="`a` must be smaller than `b`"):
        TruncatedLogNormal(0.0, 0.0, a=a, b=b)
