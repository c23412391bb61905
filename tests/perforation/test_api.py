import os

import keras
import numpy as np
import pytest

import tfpriors
from tfpriors.layers import PerforatedConv2D
from tfpriors.perforation import greedy_perforation, perforate, plot_mask


@pytest.fixture(scope="module")
def trained(digits):
    keras.utils.set_random_seed(0)
    (x, y), (x_test, y_test) = digits
    inputs = keras.Input((8, 8, 1))
    h = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv1")(inputs)
    h = keras.layers.Conv2D(12, 3, padding="same", name="conv2")(h)
    h = keras.layers.Activation("relu")(h)
    h = keras.layers.MaxPooling2D(3, 2)(h)
    h = keras.layers.Flatten()(h)
    model = keras.Model(inputs, keras.layers.Dense(10, name="head")(h))
    model.compile(
        keras.optimizers.Adam(1e-2), keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    model.fit(x.reshape(-1, 8, 8, 1), y, epochs=4, batch_size=64, verbose=0)
    return model, (x_test.reshape(-1, 8, 8, 1)[:200], y_test[:200])


def test_perforate_copies_weights_and_keeps_kept_positions(trained):
    model, (x, _) = trained
    fast = perforate(model, rates={"conv2": 0.5}, mask="grid")
    assert isinstance(fast.get_layer("conv2"), PerforatedConv2D)
    assert type(fast.get_layer("conv1")) is keras.layers.Conv2D
    for name in ("conv1", "conv2", "head"):
        for a, b in zip(model.get_layer(name).weights, fast.get_layer(name).weights):
            np.testing.assert_array_equal(a.numpy(), b.numpy())
    # Perforating everything at rate 0 changes nothing.
    same = perforate(model, rates=0.0)
    np.testing.assert_allclose(same.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-5)
    tap = keras.Model(fast.inputs, fast.get_layer("conv2").output)
    ref = keras.Model(model.inputs, model.get_layer("conv2").output)
    mask = fast.get_layer("conv2").mask
    got = tap.predict(x[:8], verbose=0).reshape(8, 64, -1)
    want = ref.predict(x[:8], verbose=0).reshape(8, 64, -1)
    np.testing.assert_allclose(got, want[:, mask.nearest], atol=1e-4)


def test_structure_reads_the_following_pooling(trained):
    model, _ = trained
    fast = perforate(model, rates={"conv2": 1 - 9 / 64}, mask="structure")
    # MaxPooling2D(3, 2) on 8x8: windows overlap on rows/cols 2 and 4.
    # Per axis the windows read positions [1, 1, 2, 1, 2, 1, 1, 0] times.
    image = fast.get_layer("conv2").mask.kept_image()
    assert image[2, 2] and image[2, 4] and image[4, 2] and image[4, 4]
    assert image.sum() == 9 and not image[7].any() and not image[:, 7].any()
    rows, cols = np.nonzero(image)
    assert all(r in (2, 4) or c in (2, 4) for r, c in zip(rows, cols))


def test_impact_mask_keeps_high_impact_positions(trained):
    model, data = trained
    scores = tfpriors.perforation.impact_scores(model, "conv1", data)
    assert scores.shape == (8, 8) and np.all(scores >= 0) and scores.max() > 0
    fast = perforate(model, rates={"conv1": 0.5}, mask="impact", data=data)
    kept = fast.get_layer("conv1").mask.kept
    assert scores.reshape(-1)[kept].min() >= np.median(scores)
    with pytest.raises(ValueError, match="data"):
        perforate(model, rates={"conv1": 0.5}, mask="impact")


def test_perforated_model_saves_and_exports(trained, tmp_path):
    model, (x, _) = trained
    fast = perforate(model, rates={"conv1": 0.5, "conv2": 0.75}, mask="uniform", seed=4)
    path = str(tmp_path / "fast.keras")
    fast.save(path)
    np.testing.assert_array_equal(
        keras.models.load_model(path).predict(x, verbose=0), fast.predict(x, verbose=0)
    )
    report = tfpriors.export.to_tflite(
        fast,
        str(tmp_path / "fast.tflite"),
        verify_data=x[:40],
        compare_dense=False,
        latency_repeats=2,
    )
    assert "CONV_2D" not in report.ops
    assert {"GATHER", "FULLY_CONNECTED"} <= report.ops
    assert report.ops <= {
        "GATHER",
        "FULLY_CONNECTED",
        "BATCH_MATMUL",
        "RESHAPE",
        "CONCATENATION",
        "MAX_POOL_2D",
        "RELU",
        "ADD",
    }
    assert report.max_abs_diff < 1e-4 and report.top1_agreement == 1.0


def test_greedy_perforation_reports_its_choice(trained):
    model, data = trained
    fast = greedy_perforation(
        model,
        data,
        target_speedup=1.3,
        rate_steps=(0.5,),
        timing_repeats=3,
        batch_size=64,
        progress=False,
    )
    report = fast.perforation_report
    assert set(report.layers) == {"conv1", "conv2"}
    assert set(report.rates) <= {"conv1", "conv2"}
    assert all(rate in (0.5, 0.75) for rate in report.rates.values())
    for name, rate in report.rates.items():
        assert fast.get_layer(name).effective_rate == pytest.approx(rate, abs=0.1)  # grid
    loss = model.evaluate(*data, verbose=0)
    assert report.loss_before == pytest.approx(loss, rel=1e-4)
    outputs = fast.predict(data[0], verbose=0)
    assert report.accuracy_after == pytest.approx(np.mean(outputs.argmax(1) == data[1]))
    assert report.predicted_speedup >= 1.0 and report.measured_speedup > 0
    for info in report.layers.values():
        assert info["flops"] > 0 and len(info["seconds"]) == 2 and info["loss_increase"][0] == 0
    assert "predicted" in str(report)
    assert report.mask == "impact"  # the default: the kind that loses least accuracy
    assert report.accuracy_before - report.accuracy_after <= report.max_accuracy_drop + 1e-9
    assert report.stop_reason and report.measured_speedup > 1.0 or not report.rates


def test_greedy_never_returns_a_slower_model(trained, monkeypatch):
    """When the perforated model measures slower than its input, the steps are undone."""
    from tfpriors.perforation import api

    real = api._interleaved_medians
    verdicts = []

    def final_comparison_says_slower(fns, repeats):
        times = real(fns, 1)
        if len(fns) == 2:  # the input model against the result
            verdicts.append(True)
            return [1.0, 2.0]
        return times

    monkeypatch.setattr(api, "_interleaved_medians", final_comparison_says_slower)
    model, data = trained
    fast = greedy_perforation(
        model,
        data,
        target_speedup=1.5,
        rate_steps=(0.25, 0.5),
        mask="lattice",
        max_accuracy_drop=1.0,
        timing_repeats=1,
        batch_size=64,
        progress=False,
    )
    report = fast.perforation_report
    assert len(verdicts) >= 2  # measured, undone, measured again
    assert report.rates == {} and "slower" in report.stop_reason
    assert not any(isinstance(layer, PerforatedConv2D) for layer in fast.layers)
    np.testing.assert_allclose(
        fast.predict(data[0], verbose=0), model.predict(data[0], verbose=0), atol=1e-5
    )


def test_greedy_keeps_within_the_accuracy_budget(trained):
    model, data = trained
    fast = greedy_perforation(
        model,
        data,
        target_speedup=4.0,
        rate_steps=(0.5, 0.75),
        mask="uniform",
        max_accuracy_drop=0.0,
        timing_repeats=2,
        batch_size=64,
        progress=False,
    )
    report = fast.perforation_report
    assert report.accuracy_after >= report.accuracy_before - 1e-9
    for step in report.steps:  # every rejected step would have cost accuracy
        assert step["kept"] == (report.accuracy_before - step["accuracy"] <= 1e-9)
    assert report.steps and report.stop_reason
    with pytest.raises(ValueError, match="max_accuracy_drop"):
        greedy_perforation(model, data, max_accuracy_drop=1.5, progress=False)


def test_bad_arguments(trained, tmp_path):
    model, data = trained
    with pytest.raises(ValueError, match="perforable"):
        perforate(model, rates={"head": 0.5})
    with pytest.raises(ValueError, match="rates"):
        perforate(model, rates={"conv1": 1.0})
    with pytest.raises(TypeError, match="rates"):
        perforate(model, rates=["conv1"])
    with pytest.raises(ValueError, match="mask"):
        perforate(model, rates={"conv1": 0.5}, mask="checkerboard")
    with pytest.raises(ValueError, match="target_speedup"):
        greedy_perforation(model, data, target_speedup=1.0)
    with pytest.raises(ValueError, match="rate_steps"):
        greedy_perforation(model, data, rate_steps=(0.5, 0.25))
    with pytest.raises(TypeError, match="layer"):
        plot_mask(model.get_layer("conv1"), str(tmp_path / "m.png"))


def test_plot_mask_writes_a_png(trained, tmp_path):
    model, _ = trained
    fast = perforate(model, rates={"conv2": 0.6}, mask="grid")
    path = str(tmp_path / "mask.png")
    figure = plot_mask(fast.get_layer("conv2"), path)
    assert len(figure.axes) == 2
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert os.path.getsize(path) < 300_000
