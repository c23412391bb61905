"""Sparse VD under tf.distribute.MirroredStrategy on two logical CPUs."""

import keras
import numpy as np
import tensorflow as tf

import tfpriors

BATCH = 64


def _build(weights=None):
    model = keras.Sequential(
        [
            keras.Input((64,)),
            tfpriors.layers.SparseVDDense(32, activation="relu"),
            tfpriors.layers.SparseVDDense(10),
        ]
    )
    if weights is not None:
        model.set_weights(weights)
    tfpriors.set_dataset_size(model, 500)
    return model


def _strategy():
    devices = [d.name for d in tf.config.list_logical_devices("CPU")]
    assert len(devices) >= 2, "conftest.py should have made two logical CPUs"
    # Reduction through one device instead of collective ops: collective
    # instance keys are shared by every strategy in the process, so another
    # test's strategy with other shapes could otherwise collide with this one.
    return tf.distribute.MirroredStrategy(
        devices[:2], cross_device_ops=tf.distribute.ReductionToOneDevice()
    )


def test_loss_with_kl_matches_single_device(digits):
    (x, y), _ = digits
    x, y = x[:BATCH], y[:BATCH]
    reference = _build()
    weights = reference.get_weights()
    reference.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    single = reference.evaluate(x, y, batch_size=BATCH, verbose=0)
    with _strategy().scope():
        mirrored = _build(weights)
        mirrored.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    distributed = mirrored.evaluate(x, y, batch_size=BATCH, verbose=0)
    kl = sum(float(layer.kl()) for layer in reference.layers) / 500
    assert kl > 0.1 * single  # the KL is a real part of the compared loss
    np.testing.assert_allclose(distributed, single, rtol=1e-5)


def test_kl_gradient_step_matches_single_device(digits):
    """One SGD step on the KL alone (the data term is zero) updates the same way.

    This isolates the scaling of `add_loss` terms across replicas from the
    local-reparameterization noise, which differs per replica by design.
    """
    (x, y), _ = digits
    x, y = x[:BATCH], y[:BATCH]

    def zero_data_loss(y_true, y_pred):
        return keras.ops.mean(y_pred, axis=-1) * 0.0

    reference = _build()
    weights = reference.get_weights()
    reference.compile(keras.optimizers.SGD(0.5), zero_data_loss)
    history = reference.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0)
    with _strategy().scope():
        mirrored = _build(weights)
        mirrored.compile(keras.optimizers.SGD(0.5), zero_data_loss)
    mirrored_history = mirrored.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0)
    np.testing.assert_allclose(mirrored_history.history["loss"], history.history["loss"], rtol=1e-5)
    changed = False
    for before, single, distributed in zip(
        weights, reference.get_weights(), mirrored.get_weights()
    ):
        np.testing.assert_allclose(distributed, single, rtol=1e-5, atol=1e-7)
        changed |= not np.allclose(before, single)
    assert changed


def _build_seeded(weights=None):
    # Fixed noise seeds: both runs draw the same stream.
    model = keras.Sequential(
        [
            keras.Input((64,)),
            tfpriors.layers.SparseVDDense(32, activation="relu", seed=1),
            tfpriors.layers.SparseVDDense(10, seed=2),
        ]
    )
    if weights is not None:
        model.set_weights(weights)
    tfpriors.set_dataset_size(model, 500)
    model.compile(
        keras.optimizers.Adam(1e-2), keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    return model


def test_training_with_noise_matches_single_device(digits):
    """Full training steps, data term and local-reparameterization noise included.

    Each replica draws the noise of the global batch and keeps its own rows
    (`tfpriors.distributed.batch_rows`), so two replicas reproduce the
    single-device steps; with per-replica draws the losses differ by ~1e-4
    relative after one step and the weights by ~1e-3.
    """
    (x, y), _ = digits
    x, y = x[: 4 * BATCH], y[: 4 * BATCH]
    reference = _build_seeded()
    weights = reference.get_weights()
    history = reference.fit(x, y, batch_size=BATCH, epochs=2, shuffle=False, verbose=0)
    with _strategy().scope():
        mirrored = _build_seeded(weights)
    mirrored_history = mirrored.fit(x, y, batch_size=BATCH, epochs=2, shuffle=False, verbose=0)
    np.testing.assert_allclose(mirrored_history.history["loss"], history.history["loss"], rtol=1e-5)
    for single, distributed in zip(reference.get_weights(), mirrored.get_weights()):
        np.testing.assert_allclose(distributed, single, rtol=1e-4, atol=1e-5)


def test_batch_rows_gives_each_replica_its_rows_of_one_global_draw():
    def sample(shape):
        return tf.random.stateless_normal(shape, seed=[1, 2])

    single = tfpriors.distributed.batch_rows(sample, [8, 3])
    np.testing.assert_array_equal(single, sample([8, 3]))  # untouched without a strategy
    strategy = _strategy()
    per_replica = strategy.run(lambda: tfpriors.distributed.batch_rows(sample, [4, 3]))
    rows = np.concatenate([v.numpy() for v in strategy.experimental_local_results(per_replica)])
    np.testing.assert_array_equal(rows, single)
