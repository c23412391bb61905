"""ACT, SACT and probabilistic ACT blocks: Keras harness, halting maths, sparse inference."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras.src import testing

import tfpriors
from tfpriors.graph import walk
from tfpriors.layers import ACTBlock, ProbabilisticACTBlock, ResidualUnit, SACTBlock
from tfpriors.layers.adaptive import HALTING_BIAS_INIT

SHAPE = (2, 6, 6, 4)


def _factory():
    return ResidualUnit(4)


@keras.saving.register_keras_serializable(package="tfpriors_tests")
class TinyUnit(keras.layers.Layer):
    """A registered user unit without sparse_call: dense, masked inference."""

    def build(self, input_shape):
        self.conv = keras.layers.Conv2D(input_shape[-1], 3, padding="same")
        self.conv.build(input_shape)

    def call(self, x):
        return x + keras.ops.tanh(self.conv(x))


class AdaptiveBlockLayerTest(testing.TestCase):
    def test_act_block_harness(self):
        self.run_layer_test(
            ACTBlock,
            {"unit_factory": _factory, "num_units": 3, "ponder_cost": 0.01},
            input_shape=SHAPE,
            expected_output_shape=SHAPE,
            expected_num_trainable_weights=3 * 6 + 2 * 2,
            expected_num_non_trainable_weights=3 * 4 + 1,
            expected_num_losses=1,
        )

    def test_sact_block_harness(self):
        self.run_layer_test(
            SACTBlock,
            {"unit_factory": _factory, "num_units": 3},
            input_shape=SHAPE,
            expected_output_shape=SHAPE,
            expected_num_trainable_weights=3 * 6 + 2 * 3,
            expected_num_non_trainable_weights=3 * 4 + 1,
            expected_num_losses=1,
        )

    def test_pact_block_harness(self):
        for mode in ("relaxed", "discrete", "threshold"):
            self.run_layer_test(
                ProbabilisticACTBlock,
                {"unit_factory": _factory, "num_units": 3, "mode": mode, "group_size": 2},
                input_shape=SHAPE,
                expected_output_shape=SHAPE,
                expected_num_trainable_weights=3 * 6 + 2 * 3,
                expected_num_non_trainable_weights=3 * 4 + 3,
                expected_num_seed_generators=1,
                expected_num_losses=1,
                run_mixed_precision_check=False,
            )


def _inputs(seed=0, shape=SHAPE):
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


def test_act_weights_remainder_and_ponder_cost():
    """Initial halting (bias -3): no early halt, N = 3 and R = 1 - 2 sigmoid(-3)."""
    block = ACTBlock(_factory, num_units=3, ponder_cost=0.1)
    x = _inputs()
    block(x)
    for dense in block.halting_dense:
        dense.kernel.assign(np.zeros(dense.kernel.shape, "float32"))
    outputs = block(x)
    h = 1.0 / (1.0 + np.exp(-HALTING_BIAS_INIT))
    expected_ponder = 3.0 + (1.0 - 2 * h)
    np.testing.assert_allclose(float(block.losses[0]), 0.1 * expected_ponder, rtol=1e-5)
    states = [x]
    for unit in block.units:
        states.append(keras.ops.convert_to_numpy(unit(states[-1])))
    expected = h * states[1] + h * states[2] + (1.0 - 2 * h) * states[3]
    np.testing.assert_allclose(keras.ops.convert_to_numpy(outputs), expected, atol=1e-5)


def test_act_halts_early_and_ponder_gradient_flows_through_remainder():
    block = ACTBlock(_factory, num_units=3, ponder_cost=1.0)
    x = _inputs()
    block(x)
    block.halting_dense[0].bias.assign([10.0])  # h_1 ~ 1: N = 1, R = 1
    outputs = block(x)
    first = keras.ops.convert_to_numpy(block.units[0](x))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(outputs), first, atol=1e-5)
    np.testing.assert_allclose(float(block.losses[0]), 2.0, rtol=1e-5)
    block.halting_dense[0].bias.assign([0.0])
    with tf.GradientTape() as tape:
        block(x, training=True)
        loss = block.losses[0]
    grads = tape.gradient(loss, [block.halting_dense[0].bias, block.halting_dense[1].bias])
    # R = 1 - h_1 - h_2: raising either halting probability lowers the cost.
    assert all(float(g[0]) < 0 for g in grads)


@pytest.mark.parametrize("implementation", ["reference", "fused"])
def test_residual_unit_sparse_call_matches_masked_dense(implementation, request):
    if implementation == "fused":
        request.getfixturevalue("fused_op")
    unit = ResidualUnit(4, implementation=implementation)
    x = _inputs(1, (3, 7, 5, 4))
    unit(x, training=True)  # non-trivial batch-norm statistics
    for bn in (unit.bn1, unit.bn2):
        bn.moving_mean.assign(np.random.default_rng(2).normal(size=4).astype("float32"))
        bn.moving_variance.assign(np.random.default_rng(3).uniform(0.5, 2, 4).astype("float32"))
    active = np.random.default_rng(4).uniform(size=(3, 7, 5)) < 0.3
    expected = np.where(active[..., None], keras.ops.convert_to_numpy(unit(x)), x)
    actual = tf.function(unit.sparse_call)(tf.constant(x), tf.constant(active))
    np.testing.assert_allclose(actual.numpy(), expected, atol=1e-5)


@pytest.mark.parametrize(
    "make",
    [
        lambda: SACTBlock(_factory, num_units=4),
        lambda: ACTBlock(_factory, num_units=4),
        lambda: ProbabilisticACTBlock(_factory, num_units=4, mode="threshold", group_size=2),
        lambda: ProbabilisticACTBlock(_factory, num_units=4, mode="threshold", group_size=None),
        lambda: SACTBlock(TinyUnit, num_units=3),
    ],
)
def test_fast_inference_equals_masked_dense_forward(make):
    """Gathering running examples/positions and skipping units changes nothing."""
    block = make()
    x = _inputs(5, (4, 6, 6, 4))
    block(x)
    rng = np.random.default_rng(6)
    for conv in block.halting_conv:  # varied halting: some positions stop early
        conv.kernel.assign(rng.normal(size=conv.kernel.shape).astype("float32"))
        conv.bias.assign([1.0])
    for dense in block.halting_dense:
        dense.kernel.assign(rng.normal(size=dense.kernel.shape).astype("float32"))
        if dense.bias is not None:
            dense.bias.assign([0.5])
    fast = tf.function(lambda t: block(t, training=False))(x)
    dense, counts, _ = block._forward(tf.constant(x), False, fast=False)
    np.testing.assert_allclose(fast.numpy(), dense.numpy(), atol=1e-5)
    counts = counts.numpy()
    assert counts.min() < block.num_units  # the check covered skipped work
    assert counts.max() >= 1


def test_save_load_round_trip_threshold_and_custom_unit(tmp_path):
    inputs = keras.Input((6, 6, 4))
    h = ProbabilisticACTBlock(_factory, num_units=3, mode="threshold", name="pact")(inputs)
    h = SACTBlock(TinyUnit, num_units=2, name="sact")(h)
    model = keras.Model(inputs, ACTBlock(TinyUnit(), num_units=2, name="act")(h))
    x = _inputs(7, (3, 6, 6, 4))
    before = keras.ops.convert_to_numpy(model(x))
    path = os.path.join(tmp_path, "m.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(loaded(x)), before)
    assert loaded.get_layer("pact").mode == "threshold"
    assert isinstance(loaded.get_layer("sact").units[0], TinyUnit)
    # A block's stored unit config is itself a valid unit_factory.
    config = loaded.get_layer("pact").get_config()["unit_factory"]
    assert isinstance(SACTBlock(config, num_units=1).units[0], ResidualUnit)


def test_bad_arguments_name_themselves():
    with pytest.raises(ValueError, match="num_units"):
        SACTBlock(_factory, num_units=0)
    with pytest.raises(TypeError, match="num_units"):
        ACTBlock(_factory, num_units=2.5)
    with pytest.raises(ValueError, match="ponder_cost"):
        ACTBlock(_factory, ponder_cost=-0.1)
    with pytest.raises(ValueError, match="mode"):
        ProbabilisticACTBlock(_factory, mode="sampled")
    with pytest.raises(ValueError, match="temperature"):
        ProbabilisticACTBlock(_factory, temperature=0)
    with pytest.raises(ValueError, match="group_size"):
        ProbabilisticACTBlock(_factory, group_size=0)
    with pytest.raises(TypeError, match="unit_factory"):
        ACTBlock(42)
    with pytest.raises(TypeError, match="unit_factory"):
        ACTBlock(lambda: "not a layer")
    with pytest.raises(ValueError, match="shape-preserving"):
        ACTBlock(lambda: ResidualUnit(8), num_units=2)(np.zeros((1, 4, 4, 4), "float32"))
    with pytest.raises(ValueError, match="ponder_cost"):
        ACTBlock(_factory).set_ponder_cost(-1)


def test_relaxed_samples_in_training_only():
    block = ProbabilisticACTBlock(_factory, num_units=3, mode="relaxed", temperature=0.5)
    x = _inputs(8)
    a = keras.ops.convert_to_numpy(block(x, training=False))
    b = keras.ops.convert_to_numpy(block(x, training=False))
    np.testing.assert_array_equal(a, b)
    c = keras.ops.convert_to_numpy(block(x, training=True))
    d = keras.ops.convert_to_numpy(block(x, training=True))
    assert np.abs(c - d).max() > 1e-4


def test_residual_unit_synchronized_batch_norm_round_trips():
    unit = ResidualUnit(4, strides=2, synchronized_batch_norm=True)
    unit.build((None, 8, 8, 2))
    assert unit.bn1.synchronized and unit.bn2.synchronized and unit.shortcut_bn.synchronized
    restored = ResidualUnit.from_config(unit.get_config())
    assert restored.synchronized_batch_norm and restored.bn1.synchronized
    assert not ResidualUnit(4).bn1.synchronized  # Keras' default: per-replica statistics
    model = tfpriors.models.act_resnet(
        (8, 8, 1), 10, blocks=(2, 2), widths=(4, 8), kind="pact", synchronized_batch_norm=True
    )
    batch_norms = [
        layer for layer in walk(model) if isinstance(layer, keras.layers.BatchNormalization)
    ]
    assert len(batch_norms) > 3 and all(bn.synchronized for bn in batch_norms)
    with pytest.raises(TypeError, match="synchronized_batch_norm"):
        ResidualUnit(4, synchronized_batch_norm="yes")
