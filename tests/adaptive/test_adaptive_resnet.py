"""Adaptive ResNets: modes sharing weights, REINFORCE, FLOPs, ponder maps, callbacks,
tf.distribute and TFLite export."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfpriors
from tfpriors.layers.adaptive import adaptive_blocks

SMALL = {"blocks": (2, 2), "widths": (4, 8)}


def _images(digits, n=None):
    (x, y), (xt, yt) = digits
    x, xt = x.reshape(-1, 8, 8, 1), xt.reshape(-1, 8, 8, 1)
    return (x, y), (xt[:n], yt[:n])


def _compile(model, learning_rate=3e-3):
    model.compile(
        keras.optimizers.Adam(learning_rate),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        jit_compile=False,
    )
    return model


@pytest.fixture(scope="module")
def relaxed_model(digits):
    keras.utils.set_random_seed(0)
    (x, y), _ = _images(digits)
    model = _compile(
        tfpriors.models.act_resnet(
            (8, 8, 1), 10, kind="pact", ponder_cost=0.5, group_size=2, **SMALL
        ),
        learning_rate=1e-2,
    )
    history = model.fit(
        x,
        y,
        epochs=3,
        batch_size=64,
        verbose=0,
        callbacks=[
            tfpriors.callbacks.TemperatureSchedule(1.0, 0.3, end_epoch=2),
            tfpriors.callbacks.PonderCostSchedule(0.25, 0.5, end_epoch=2),
        ],
    )
    return model, history


def _accuracy(model, x, y):
    return float(np.mean(np.argmax(model.predict(x, verbose=0, batch_size=256), 1) == y))


def test_relaxed_training_transfers_to_discrete_and_threshold(relaxed_model, digits):
    model, history = relaxed_model
    _, (xt, yt) = _images(digits)
    assert "stage0_pact/ponder" in history.history
    assert history.history["temperature"][-1] == pytest.approx(0.3)
    assert history.history["ponder_cost"][0] == pytest.approx(0.25)
    assert all(b.tau.numpy() == pytest.approx(0.5) for b in adaptive_blocks(model))
    results = {}
    for mode in ("relaxed", "discrete", "threshold"):
        assert tfpriors.adaptive.set_mode(model, mode) == 2
        results[mode] = (_accuracy(model, xt, yt), tfpriors.adaptive.flops_report(model, xt).ratio)
    tfpriors.adaptive.set_mode(model, "relaxed")
    assert results["relaxed"][0] > 0.6  # it learned
    assert results["threshold"][0] > results["relaxed"][0] - 0.1
    assert results["discrete"][0] > results["relaxed"][0] - 0.15
    assert results["relaxed"][1] >= 1.0  # relaxed runs every unit, plus the halting heads
    assert results["threshold"][1] < results["relaxed"][1] - 0.1  # the ponder cost worked
    assert abs(results["discrete"][1] - results["threshold"][1]) < 0.15


def test_ponder_map_and_flops_report(relaxed_model, digits, tmp_path):
    model, _ = relaxed_model
    _, (xt, _) = _images(digits, 16)
    tfpriors.adaptive.set_mode(model, "threshold")
    try:
        path = os.path.join(tmp_path, "ponder.png")
        figure = tfpriors.adaptive.ponder_map(model, xt, path, max_images=4)
        assert os.path.getsize(path) > 1000 and len(figure.axes) == 4 * 4  # 4 rows x 4 panels
        # The "total" panel: units per input position summed over the two blocks.
        maps = tfpriors.adaptive.evaluated_units(model, xt[:4])
        total = sum(np.kron(m, np.ones((8 // m.shape[1], 8 // m.shape[2]))) for m in maps.values())
        assert total.shape == (4, 8, 8)
        assert 2 <= total.min() and total.max() <= 2 + 1  # 1..2 units + 1 unit in 2 blocks
        report = tfpriors.adaptive.flops_report(model, xt)
        units = tfpriors.adaptive.evaluated_units(model, xt)
        assert set(units) == {"stage0_pact", "stage1_pact"}
        row = report.blocks[0]
        assert row["mean_units"] == pytest.approx(units["stage0_pact"].mean())
        assert report.macs < report.plain_macs and "FLOPs" in str(report)
    finally:
        tfpriors.adaptive.set_mode(model, "relaxed")
    plain = tfpriors.models.act_resnet((8, 8, 1), 10, kind="plain", **SMALL)
    assert tfpriors.adaptive.flops_report(plain, xt).ratio == 1.0
    # The plain figure of an adaptive model is the plain ResNet's count.
    assert report.plain_macs == pytest.approx(tfpriors.adaptive.flops_report(plain, xt).macs)


def test_reinforce_trains_discrete_halting_heads(digits):
    """With tau = 0 the halting heads of a discrete block get gradient only from REINFORCE."""
    (x, y), _ = _images(digits)
    x, y = x[:64], y[:64]

    def halting_weights(model):
        return [
            w.numpy().copy()
            for b in adaptive_blocks(model)
            for w in b.trainable_weights
            if "halting" in w.path
        ]

    keras.utils.set_random_seed(1)
    model = _compile(
        tfpriors.models.act_resnet(
            (8, 8, 1), 10, kind="pact", mode="discrete", ponder_cost=0.0, **SMALL
        )
    )
    plain = _compile(keras.Model(model.inputs, model.outputs))  # no REINFORCE
    before = halting_weights(model)
    plain.fit(x, y, epochs=1, batch_size=64, verbose=0)
    assert all(np.array_equal(a, b) for a, b in zip(before, halting_weights(model)))
    model.fit(x, y, epochs=1, batch_size=64, verbose=0)
    assert any(not np.array_equal(a, b) for a, b in zip(before, halting_weights(model)))
    baseline = adaptive_blocks(model)[0].reinforce_baseline.numpy()
    assert baseline > 0  # moving average of the per-example loss


def test_mirrored_strategy_gives_the_same_loss(digits):
    (x, y), _ = _images(digits)
    x, y = x[:64], y[:64]
    reference = _compile(tfpriors.models.act_resnet((8, 8, 1), 10, kind="sact", **SMALL))
    weights = reference.get_weights()
    single = reference.evaluate(x, y, batch_size=64, verbose=0, return_dict=True)
    devices = [d.name for d in tf.config.list_logical_devices("CPU")][:2]
    assert len(devices) == 2
    with tf.distribute.MirroredStrategy(devices).scope():
        mirrored = _compile(tfpriors.models.act_resnet((8, 8, 1), 10, kind="sact", **SMALL))
        mirrored.set_weights(weights)
    distributed = mirrored.evaluate(x, y, batch_size=64, verbose=0, return_dict=True)
    np.testing.assert_allclose(distributed["loss"], single["loss"], rtol=1e-5)
    np.testing.assert_allclose(
        distributed["stage0_sact/ponder"], single["stage0_sact/ponder"], rtol=1e-5
    )


@pytest.mark.parametrize("kind", ["act", "pact"])
def test_tflite_export_builtin_ops_verified(kind, digits, tmp_path):
    _, (xt, _) = _images(digits, 32)
    model = tfpriors.models.act_resnet((8, 8, 1), 10, kind=kind, mode="threshold", **SMALL)
    rng = np.random.default_rng(0)
    for block in adaptive_blocks(model):  # some examples / positions halt early
        for layer in block.halting_dense + block.halting_conv:
            layer.kernel.assign(rng.normal(size=layer.kernel.shape).astype("float32"))
    report = tfpriors.export.to_tflite(
        model,
        os.path.join(tmp_path, f"{kind}.tflite"),
        verify_data=xt,
        compare_dense=False,
        latency_repeats=2,
    )
    assert "IF" in report.ops
    assert not any(op.startswith("Flex") or op == "CUSTOM" for op in report.ops)
    assert report.max_abs_diff < 1e-4 and report.top1_agreement == 1.0


def test_bad_arguments(relaxed_model):
    model, _ = relaxed_model
    with pytest.raises(ValueError, match="mode"):
        tfpriors.adaptive.set_mode(model, "greedy")
    with pytest.raises(ValueError, match="ProbabilisticACTBlock"):
        tfpriors.adaptive.set_mode(
            tfpriors.models.act_resnet((8, 8, 1), 10, kind="sact", **SMALL), "threshold"
        )
    with pytest.raises(ValueError, match="kind"):
        tfpriors.models.act_resnet((8, 8, 1), 10, kind="dense")
    with pytest.raises(ValueError, match="widths"):
        tfpriors.models.act_resnet((8, 8, 1), 10, blocks=(2, 2), widths=(4,))
    with pytest.raises(ValueError, match="ponder_cost"):
        tfpriors.models.act_resnet((8, 8, 1), 10, kind="act", ponder_cost=-1.0)
    with pytest.raises(ValueError, match="start"):
        tfpriors.callbacks.PonderCostSchedule(-0.1, 0.1)
    with pytest.raises(ValueError, match="end"):
        tfpriors.callbacks.TemperatureSchedule(1.0, 0.0)
    with pytest.raises(ValueError, match="end_epoch"):
        tfpriors.callbacks.PonderCostSchedule(0.0, 0.1, start_epoch=5, end_epoch=5)
    with pytest.raises(ValueError, match="images"):
        tfpriors.adaptive.flops_report(model, np.zeros((0, 8, 8, 1)))


@pytest.mark.parametrize("blocks", [(2,), (2, 2), (3, 3, 3), (2, 2, 2, 2)])
@pytest.mark.parametrize("kind", ["plain", "sact"])
def test_default_widths_follow_blocks(blocks, kind):
    """Without `widths`, every stage gets a width: 16 doubled at each next stage."""
    model = tfpriors.models.act_resnet((8, 8, 1), 10, blocks=blocks, kind=kind)
    widths = {}  # stage -> the channel counts of its residual units
    for layer in model.layers:
        units = getattr(layer, "units", [layer])
        for unit in units if isinstance(units, list) else []:
            if isinstance(unit, tfpriors.layers.ResidualUnit):
                widths.setdefault(layer.name.split("_")[0], set()).add(unit.filters)
    assert widths == {f"stage{s}": {16 * 2**s} for s in range(len(blocks))}
    assert model.get_layer("stem").filters == 16
    assert model.output_shape == (None, 10)


def test_schedules_refuse_models_without_blocks(digits):
    (x, y), _ = _images(digits)
    plain = _compile(tfpriors.models.act_resnet((8, 8, 1), 10, kind="plain", **SMALL))
    with pytest.raises(ValueError, match="TemperatureSchedule"):
        plain.fit(
            x[:8],
            y[:8],
            epochs=1,
            verbose=0,
            callbacks=[tfpriors.callbacks.TemperatureSchedule(1.0, 0.5)],
        )
    schedule = tfpriors.callbacks.TemperatureSchedule(1.0, 0.25, start_epoch=0, end_epoch=2)
    assert schedule.value_at(1) == pytest.approx(0.5)
    assert tfpriors.callbacks.PonderCostSchedule(0.0, 0.1, 2, 4).value_at(3) == pytest.approx(0.05)
