"""SGLD / SGHMC: the posterior they sample, the step convention, tf.distribute, config."""

import copy

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfpriors import distill

N, D, NOISE_VAR, PRIOR_VAR = 40, 2, 0.5, 1.0


def _linear_regression():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(N, D)).astype("float32")
    y = (x @ np.array([1.0, -0.5]) + rng.normal(size=N) * np.sqrt(NOISE_VAR)).astype("float32")
    precision = x.T @ x / NOISE_VAR + np.eye(D) / PRIOR_VAR
    cov = np.linalg.inv(precision)
    return x, y, cov @ x.T @ y / NOISE_VAR, cov


def _chain_moments(optimizer, x, y, steps, burn_in):
    """Full-batch chain in one tf.function; the loss follows the SGLD convention."""
    w = keras.Variable(np.zeros((D,), "float32"))
    optimizer.build([w])
    x, y = tf.constant(x), tf.constant(y)

    @tf.function
    def run():
        total, outer = tf.zeros(D), tf.zeros((D, D))
        for i in tf.range(steps):
            with tf.GradientTape() as tape:
                residual = y - tf.linalg.matvec(x, w.value)
                loss = tf.reduce_mean(residual**2) / (2 * NOISE_VAR) + tf.reduce_sum(w.value**2) / (
                    2 * PRIOR_VAR * N
                )
            optimizer.apply([tape.gradient(loss, w.value)], [w])
            if i >= burn_in:
                total += w.value
                outer += w.value[:, None] * w.value[None, :]
        count = float(steps - burn_in)
        mean = total / count
        return mean, outer / count - mean[:, None] * mean[None, :]

    mean, cov = run()
    return mean.numpy(), cov.numpy()


@pytest.mark.parametrize(
    "optimizer, steps",
    [
        (lambda: distill.SGLD(2e-3, dataset_size=N, seed=3), 20000),
        (lambda: distill.SGHMC(5e-4, dataset_size=N, friction=0.2, seed=3), 20000),
    ],
)
def test_samples_match_the_analytic_gaussian_posterior(optimizer, steps):
    x, y, mean, cov = _linear_regression()
    sample_mean, sample_cov = _chain_moments(optimizer(), x, y, steps, burn_in=1000)
    scale = np.sqrt(np.diag(cov))
    # Tolerances: Monte Carlo error (~ hundreds of effective samples) plus the
    # O(lr) discretisation bias; a wrong gradient scale (by N) or noise scale
    # (by 2) misses them by far.
    np.testing.assert_array_less(np.abs(sample_mean - mean) / scale, 0.3)
    np.testing.assert_allclose(np.diag(sample_cov), np.diag(cov), rtol=0.2)
    correlation = sample_cov[0, 1] / np.sqrt(sample_cov[0, 0] * sample_cov[1, 1])
    assert abs(correlation - cov[0, 1] / (scale[0] * scale[1])) < 0.15


def test_step_is_half_lr_times_n_times_gradient_plus_noise():
    lr, n = 1e-2, 100
    gradient = np.linspace(-1, 1, 12).astype("float32").reshape(3, 4)
    moved = []
    for grad in (gradient, np.zeros_like(gradient)):
        w = keras.Variable(np.zeros((3, 4), "float32"))
        optimizer = distill.SGLD(lr, dataset_size=n, seed=7)
        optimizer.apply([tf.constant(grad)], [w])
        moved.append(w.numpy())
    # Same seed, same step: the noise cancels and only the drift remains.
    np.testing.assert_allclose(moved[0] - moved[1], -lr / 2 * n * gradient, rtol=1e-5, atol=1e-6)


def _zero_loss(y_true, y_pred):
    return keras.ops.mean(y_pred, axis=-1) * 0.0


def _fit_zero_gradient(optimizer, steps, strategy=None):
    scope = strategy.scope() if strategy else tf.name_scope("single")
    with scope:
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(512)])
        model.compile(optimizer(), _zero_loss)
    start = model.layers[0].kernel.numpy()
    x, y = np.zeros((16 * steps, 4), "float32"), np.zeros((16 * steps, 512), "float32")
    model.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0)
    return model, start


def test_noise_variance_under_mirrored_strategy_is_lr_and_replicas_agree():
    devices = [d.name for d in tf.config.list_logical_devices("CPU")][:2]
    assert len(devices) == 2, "conftest.py should have made two logical CPUs"
    # ReductionToOneDevice: collective all-reduce keys of one MirroredStrategy
    # collide with those of strategies made later in the same process (other
    # test files), whose all-reduces then fail with a shape mismatch.
    strategy = tf.distribute.MirroredStrategy(
        devices, cross_device_ops=tf.distribute.ReductionToOneDevice()
    )
    lr, steps = 1e-3, 4
    model, start = _fit_zero_gradient(lambda: distill.SGLD(lr, dataset_size=100), steps, strategy)
    kernel = model.layers[0].kernel.value
    replicas = [v.numpy() for v in kernel.values]
    assert len(replicas) == 2
    np.testing.assert_array_equal(replicas[0], replicas[1])
    # 2048 weights: the sample variance is within ~10% of the truth; drawing
    # per replica and averaging would give lr/2, summing 2*lr.
    per_step = np.var(replicas[0] - start) / steps
    assert per_step == pytest.approx(lr, rel=0.1)
    assert int(model.optimizer.iterations.numpy()) == steps


def test_learning_rate_schedule_sets_the_noise():
    schedule = keras.optimizers.schedules.PiecewiseConstantDecay([2], [1e-2, 1e-4])
    w = keras.Variable(np.zeros((4096,), "float32"))
    optimizer = distill.SGLD(schedule, dataset_size=10, seed=0)
    zero = tf.zeros((4096,))
    previous, variances = w.numpy(), []
    for _ in range(4):
        optimizer.apply([zero], [w])
        variances.append(np.var(w.numpy() - previous))
        previous = w.numpy()
    np.testing.assert_allclose(variances, [1e-2, 1e-2, 1e-2, 1e-4], rtol=0.1)


def test_temperature_scales_the_noise_variance():
    w = keras.Variable(np.zeros((8192,), "float32"))
    distill.SGLD(1e-2, dataset_size=10, temperature=0.1, seed=0).apply([tf.zeros(8192)], [w])
    assert np.var(w.numpy()) == pytest.approx(1e-3, rel=0.1)


def test_noise_differs_between_steps_and_variables_and_repeats_with_the_seed():
    def run(seed):
        a, b = keras.Variable(np.zeros(64, "float32")), keras.Variable(np.zeros(64, "float32"))
        optimizer = distill.SGLD(1.0, dataset_size=1, seed=seed)
        zero = tf.zeros(64)
        optimizer.apply([zero, zero], [a, b])
        first = a.numpy()
        optimizer.apply([zero, zero], [a, b])
        return first, a.numpy() - first, b.numpy()

    first, second, other = run(5)
    assert abs(np.corrcoef(first, second)[0, 1]) < 0.4
    assert abs(np.corrcoef(first, other)[0, 1]) < 0.4
    for x, y in zip(run(5), (first, second, other)):
        np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize(
    "optimizer",
    [
        lambda: distill.SGLD(1e-3, dataset_size=64, seed=1),
        lambda: distill.SGHMC(1e-4, dataset_size=64, friction=0.1, seed=1),
    ],
)
def test_fit_and_save_load_with_the_optimizer(optimizer, tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 3)).astype("float32")
    y = x @ np.array([[1.0], [2.0], [-1.0]], "float32")
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile(optimizer(), "mse")
    history = model.fit(x, y, batch_size=4, epochs=4, verbose=0)
    assert history.history["loss"][-1] < 0.2 * history.history["loss"][0]
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert type(loaded.optimizer) is type(model.optimizer)
    assert loaded.optimizer.get_config() == model.optimizer.get_config()
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))


def test_get_config_round_trips():
    schedule = keras.optimizers.schedules.ExponentialDecay(1e-3, 100, 0.5)
    for optimizer in (
        distill.SGLD(schedule, dataset_size=10, seed=4),
        distill.SGHMC(1e-4, dataset_size=7, friction=0.3, noise_estimate=0.1, seed=2),
    ):
        config = optimizer.get_config()
        clone = type(optimizer).from_config(copy.deepcopy(config))
        assert clone.get_config() == config
        again = keras.optimizers.deserialize(keras.optimizers.serialize(optimizer))
        assert again.get_config() == config
    assert distill.SGLD(1e-3, dataset_size=3).get_config()["seed"] is not None


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: distill.SGLD(-1e-3, dataset_size=10), "learning_rate"),
        (lambda: distill.SGLD(0.0, dataset_size=10), "learning_rate"),
        (lambda: distill.SGLD(1e-3, dataset_size=0), "dataset_size"),
        (lambda: distill.SGLD(1e-3, dataset_size=-5), "dataset_size"),
        (lambda: distill.SGLD(1e-3), "dataset_size"),
        (lambda: distill.SGLD(1e-3, dataset_size=10, seed=-1), "seed"),
        (lambda: distill.SGLD(1e-3, dataset_size=10, temperature=0.0), "temperature"),
        (lambda: distill.SGHMC(1e-3, dataset_size=10, friction=0.0), "friction"),
        (lambda: distill.SGHMC(1e-3, dataset_size=10, friction=1.5), "friction"),
        (
            lambda: distill.SGHMC(1e-3, dataset_size=10, friction=0.1, noise_estimate=0.2),
            "noise_estimate",
        ),
        (lambda: distill.gaussian_prior(0.0, 10), "variance"),
    ],
)
def test_bad_arguments_name_themselves(make, match):
    with pytest.raises((ValueError, TypeError), match=match):
        make()


def test_gaussian_prior_is_the_negative_log_density_over_n():
    regularizer = distill.gaussian_prior(2.0, dataset_size=50)
    w = np.array([1.0, -3.0], "float32")
    assert float(regularizer(w)) == pytest.approx(np.sum(w**2) / (2 * 2.0 * 50))
