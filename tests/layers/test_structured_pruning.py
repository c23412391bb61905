import keras
import numpy as np
import pytest
from keras.src import testing

import tfpriors
from tfpriors.layers import StructuredBayesianPruning
from tfpriors.priors import TruncatedLogNormal

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


class StructuredBayesianPruningTest(testing.TestCase):
    def test_layer_harness_after_dense(self):
        self.run_layer_test(
            StructuredBayesianPruning,
            init_kwargs={"dataset_size": 100, "seed": 1},
            input_shape=(3, 5),
            expected_output_shape=(3, 5),
            expected_num_trainable_weights=2,
            expected_num_non_trainable_weights=1,
            expected_num_seed_generators=1,
            expected_num_losses=1,
            supports_masking=True,
        )

    def test_layer_harness_after_conv(self):
        self.run_layer_test(
            StructuredBayesianPruning,
            init_kwargs={"dataset_size": 10, "threshold": 2.0, "a": -10.0, "b": 1.0},
            input_shape=(2, 4, 4, 3),
            expected_output_shape=(2, 4, 4, 3),
            expected_num_trainable_weights=2,
            expected_num_seed_generators=1,
            expected_num_losses=1,
        )


def _gate(units=6, **kwargs):
    gate = StructuredBayesianPruning(**kwargs)
    gate.build((None, units))
    return gate


def test_evaluation_is_expected_theta_for_kept_units_and_zero_for_pruned():
    gate = _gate(6, threshold=1.0)
    mu = np.array([0.0, -1.0, -3.0, -8.0, -12.0, -19.0], "float32")
    log_sigma = np.array([-5.0, -2.0, 0.0, 1.0, 2.0, 3.0], "float32")
    gate.set_posterior(mu=mu, log_sigma=log_sigma)
    q = TruncatedLogNormal(mu, log_sigma)
    snr, mean = q.snr().numpy(), q.mean().numpy()
    keep = snr >= 1.0
    assert keep.any() and not keep.all()  # the rule is exercised both ways
    np.testing.assert_array_equal(gate.kept_mask(), keep)
    assert gate.kept_units() == keep.sum()
    x = np.random.default_rng(0).normal(size=(4, 6)).astype("float32")
    np.testing.assert_allclose(gate(x, training=False), x * np.where(keep, mean, 0.0), rtol=1e-6)
    # A higher threshold prunes more.
    strict = _gate(6, threshold=float(np.sort(snr)[-2]) + 1e-3)
    strict.set_posterior(mu=mu, log_sigma=log_sigma)
    assert strict.kept_units() == 1


def test_training_samples_theta_per_example_and_unit_shared_over_positions():
    gate = StructuredBayesianPruning(seed=3, dataset_size=10)
    x = np.ones((8, 5, 5, 4), "float32")
    gate.build(x.shape)
    gate.set_posterior(mu=-1.0, log_sigma=0.0)
    out = keras.ops.convert_to_numpy(gate(x, training=True))
    # One theta per example and channel, the same at every position.
    np.testing.assert_array_equal(out, np.broadcast_to(out[:, :1, :1, :], out.shape))
    assert len(np.unique(out[:, 0, 0, :])) == 32
    assert out.min() >= np.exp(-20.0) and out.max() <= 1.0
    # Deterministic at evaluation.
    np.testing.assert_array_equal(gate(x), gate(x))


def test_initial_gate_is_close_to_identity():
    gate = _gate(10)
    np.testing.assert_allclose(gate.multiplier(), 0.99463, atol=1e-4)
    assert gate.kept_units() == 10


def test_kl_goes_through_the_shared_path(digits):
    (x, y), _ = digits
    model = keras.Sequential(
        [
            keras.Input((64,)),
            keras.layers.Dense(16, activation="relu"),
            StructuredBayesianPruning(name="gate"),
            keras.layers.Dense(10),
        ]
    )
    model.compile("adam", LOSS)
    with pytest.raises(tfpriors.layers.DatasetSizeNotSetError, match="set_dataset_size"):
        model.fit(x[:32], y[:32], epochs=1, verbose=0)
    assert tfpriors.set_dataset_size(model, 1000) == 1
    gate = model.get_layer("gate")
    kl = float(gate.kl())
    tfpriors.set_kl_weight(model, 0.5)
    model(x[:4], training=True)
    np.testing.assert_allclose(float(gate.losses[0]), 0.5 * kl / 1000, rtol=1e-5)
    history = model.fit(
        x[:64], y[:64], epochs=2, verbose=0, callbacks=[tfpriors.callbacks.KLWarmup(0, 2)]
    )
    assert np.all(np.isfinite(history.history["loss"]))


def test_save_load_round_trip_is_exact(digits, tmp_path):
    (x, y), (x_test, _) = digits
    x, x_test = x.reshape(-1, 8, 8, 1), x_test.reshape(-1, 8, 8, 1)
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(6, 3),
            StructuredBayesianPruning(threshold=1.5, a=-15.0, seed=2, learning_rate_multiplier=7.0),
            keras.layers.ReLU(),
            keras.layers.Flatten(),
            keras.layers.Dense(10),
        ]
    )
    tfpriors.set_dataset_size(model, len(x))
    model.compile("adam", LOSS)
    model.fit(x[:64], y[:64], epochs=1, verbose=0)
    model.layers[1].set_posterior(
        mu=np.where(np.arange(6) < 3, -0.1, -14.0), log_sigma=np.where(np.arange(6) < 3, -3.0, 2.0)
    )
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    np.testing.assert_array_equal(
        model.predict(x_test, verbose=0), loaded.predict(x_test, verbose=0)
    )
    gate = loaded.layers[1]
    assert (gate.threshold, gate.a, gate.b, gate.seed) == (1.5, -15.0, 0.0, 2)
    assert gate.learning_rate_multiplier == 7.0
    np.testing.assert_array_equal(gate.mu, model.layers[1].mu)
    assert gate.kept_units() == 3
    # The seed state travels too: the next training draws are the same.
    np.testing.assert_array_equal(
        model.layers[1](np.ones((2, 6, 6, 6), "float32"), training=True),
        gate(np.ones((2, 6, 6, 6), "float32"), training=True),
    )


def test_after_sparse_vd_layers(digits):
    (x, y), _ = digits
    model = keras.Sequential(
        [
            keras.Input((64,)),
            tfpriors.layers.SparseVDDense(16, activation="relu"),
            StructuredBayesianPruning(),
            tfpriors.layers.SparseVDDense(10),
        ]
    )
    assert tfpriors.set_dataset_size(model, len(x)) == 3
    model.compile("adam", LOSS)
    history = model.fit(x[:128], y[:128], epochs=2, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))


def test_mixed_precision_training_is_finite(digits):
    (x, y), _ = digits
    keras.config.set_dtype_policy("mixed_float16")
    try:
        model = keras.Sequential(
            [
                keras.Input((64,)),
                keras.layers.Dense(16, activation="relu"),
                StructuredBayesianPruning(),
                keras.layers.Dense(10, dtype="float32"),
            ]
        )
        tfpriors.set_dataset_size(model, len(x))
        model.compile("adam", LOSS)
        history = model.fit(x[:128], y[:128], epochs=2, verbose=0)
    finally:
        keras.config.set_dtype_policy("float32")
    assert np.all(np.isfinite(history.history["loss"]))
    gate = model.layers[1]
    assert gate.mu.dtype == "float32" and gate.log_sigma.dtype == "float32"
    assert gate.compute_dtype == "float16"


def test_parameters_stay_in_range_during_training():
    gate = _gate(3, dataset_size=1)
    optimizer = keras.optimizers.SGD(100.0)
    optimizer.apply(
        [np.array([-1.0, 1.0, 0.0]), np.array([-1.0, 1.0, 0.0])], gate.trainable_weights
    )
    assert gate.mu.numpy().min() >= -20.0 and gate.mu.numpy().max() <= 0.0
    assert gate.log_sigma.numpy().min() >= -15.0 and gate.log_sigma.numpy().max() <= 5.0


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"a": 0.0, "b": 0.0}, "`a` must be smaller than `b`"),
        ({"a": 1.0, "b": -1.0}, "`a` must be smaller than `b`"),
        ({"threshold": 0.0}, "threshold"),
        ({"threshold": -1.0}, "threshold"),
        ({"threshold": "1"}, "threshold"),
        ({"a": float("nan")}, "`a`"),
        ({"dataset_size": 0}, "dataset_size"),
        ({"mu_initializer": "nope"}, "mu_initializer"),
        ({"log_sigma_initializer": float("inf")}, "log_sigma_initializer"),
        ({"seed": "x"}, "seed"),
        ({"learning_rate_multiplier": 0.0}, "learning_rate_multiplier"),
        ({"learning_rate_multiplier": float("inf")}, "learning_rate_multiplier"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        StructuredBayesianPruning(**kwargs)


@pytest.mark.parametrize("shape", [(4,), (2, 3, 4, 5, 6)])
def test_wrong_input_rank_names_inputs(shape):
    with pytest.raises(ValueError, match="inputs.*rank"):
        StructuredBayesianPruning()(np.zeros(shape, "float32"))


@pytest.mark.parametrize("multiplier", [1.0, 30.0])
def test_learning_rate_multiplier_scales_every_optimizer_step(multiplier):
    import tensorflow as tf

    mu = np.array([-0.5, -2.0, -6.0], "float32")
    log_sigma = np.array([-3.0, -1.0, 0.5], "float32")
    gate = _gate(3, dataset_size=1, learning_rate_multiplier=multiplier)
    gate.set_posterior(mu=mu, log_sigma=log_sigma)
    np.testing.assert_allclose(gate.mu, mu, rtol=1e-6)
    np.testing.assert_allclose(gate.log_sigma, log_sigma, rtol=1e-6)
    with tf.GradientTape() as tape:
        kl = gate.kl()
    grads = tape.gradient(kl, gate.trainable_weights)
    # The stored variables get the gradient of the parameters themselves ...
    with tf.GradientTape() as tape:
        mu_t, log_sigma_t = tf.constant(mu), tf.constant(log_sigma)
        tape.watch([mu_t, log_sigma_t])
        reference = tf.reduce_sum(TruncatedLogNormal(mu_t, log_sigma_t).kl())
    expected = tape.gradient(reference, [mu_t, log_sigma_t])
    for grad, want in zip(grads, expected):
        np.testing.assert_allclose(grad, want, rtol=1e-5, atol=1e-7)
    # ... so a plain SGD step moves them `multiplier` times farther.
    keras.optimizers.SGD(0.01).apply(grads, gate.trainable_weights)
    np.testing.assert_allclose(gate.mu - mu, -0.01 * multiplier * expected[0], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(
        gate.log_sigma - log_sigma, -0.01 * multiplier * expected[1], rtol=1e-4, atol=1e-6
    )


def test_set_posterior_checks_its_values():
    with pytest.raises(ValueError, match="built"):
        StructuredBayesianPruning().set_posterior(mu=0.0)
    gate = _gate(4)
    with pytest.raises(ValueError, match="`mu`.*shape"):
        gate.set_posterior(mu=np.zeros(3))
    with pytest.raises(ValueError, match="`log_sigma`.*finite"):
        gate.set_posterior(log_sigma=[0.0, np.nan, 0.0, 0.0])
    gate.set_posterior(mu=-30.0, log_sigma=9.0)  # clipped to [a, b] and [-15, 5]
    np.testing.assert_array_equal(gate.mu, np.full(4, -20.0, "float32"))
    np.testing.assert_array_equal(gate.log_sigma, np.full(4, 5.0, "float32"))


def test_short_training_run_prunes_units():
    """A few hundred Adam steps from the paper's init prune units (issue 19: 4 epochs kept all)."""
    (x, y), (x_test, y_test) = tfpriors.datasets.load_digits()
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((64,)),
            keras.layers.Dense(64, activation="relu"),
            StructuredBayesianPruning(seed=0, name="gate"),
            keras.layers.Dense(10),
        ]
    )
    tfpriors.set_dataset_size(model, len(x))
    model.compile(keras.optimizers.Adam(3e-3), LOSS, metrics=["accuracy"])
    model.fit(x, y, epochs=6, batch_size=64, verbose=0)  # 132 steps
    gate = model.get_layer("gate")
    # Without the learning-rate multiplier log_sigma moves <= 0.66 from -5 and no unit
    # can reach SNR < 1; with it, the units the classifier does not need are pruned.
    assert gate.kept_units() <= 56
    assert model.evaluate(x_test, y_test, verbose=0)[1] >= 0.9
    # Pruned units are exactly zero at evaluation.
    hidden = gate(model.layers[0](x_test[:8]))
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(hidden)[:, ~gate.kept_mask()], 0.0)
