import keras
import numpy as np
import pytest

import tfpriors
from tfpriors.layers import StructuredBayesianPruning

# A fresh gate multiplies every unit by E[theta] = 0.99463 (mu = 0, log_sigma = -5).
INITIAL_MULTIPLIER = 0.99463


def _gate_names(model):
    return [
        layer.name
        for layer in tfpriors.graph.walk(model)
        if isinstance(layer, StructuredBayesianPruning)
    ]


def _check_same_function(original, gated, x, gated_layers):
    """Evaluation output equals the original's up to the gates' E[theta] factor.

    With relu/linear layers and k gates on a path, every term of the output is
    scaled by between m^k and 1 (m = E[theta]): the difference is at most
    (1 - m^k) times the largest |term|, which the output's scale bounds here.
    """
    expected = keras.ops.convert_to_numpy(original(x))
    actual = keras.ops.convert_to_numpy(gated(x))
    bound = (1 - INITIAL_MULTIPLIER**gated_layers) * np.abs(expected).max() * 1.5
    assert np.abs(actual - expected).max() <= bound
    assert np.abs(actual - expected).max() > 0  # the factor is real, not zero


def test_sequential_gates_every_hidden_dense_and_conv(digits):
    (x, _), _ = digits
    x = x[:16].reshape(-1, 8, 8, 1)
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(4, 3, activation="relu", name="conv"),
            keras.layers.MaxPooling2D(name="pool"),
            keras.layers.Flatten(name="flatten"),
            keras.layers.Dense(16, activation="relu", name="fc"),
            keras.layers.Dense(10, name="logits"),
            keras.layers.Softmax(name="softmax"),
        ]
    )
    gated = tfpriors.structured(model)
    assert isinstance(gated, keras.Sequential)
    assert [layer.name for layer in gated.layers] == [
        "conv",
        "conv_sbp",
        "pool",
        "flatten",
        "fc",
        "fc_sbp",
        "logits",
        "softmax",
    ]
    for name in ("conv", "fc", "logits"):
        for a, b in zip(model.get_layer(name).get_weights(), gated.get_layer(name).get_weights()):
            np.testing.assert_array_equal(a, b)
    assert gated.get_layer("conv_sbp").units == 4
    _check_same_function(model, gated, x, 2)


def test_functional_nested_and_sparse_vd(digits):
    (x, _), _ = digits
    block = keras.Sequential(
        [keras.Input((16,)), keras.layers.Dense(8, activation="relu", name="inner")],
        name="block",
    )
    inputs = keras.Input((64,))
    hidden = tfpriors.layers.SparseVDDense(16, activation="relu", name="svd")(inputs)
    branch = keras.layers.Dense(16, activation="relu", name="branch")(inputs)
    merged = keras.layers.Add(name="add")([hidden, branch])
    outputs = keras.layers.Dense(10, name="logits")(block(merged))
    model = keras.Model(inputs, outputs)
    gated = tfpriors.structured(model, seed=7)
    assert _gate_names(gated) == ["svd_sbp", "branch_sbp", "inner_sbp"] or sorted(
        _gate_names(gated)
    ) == sorted(["svd_sbp", "branch_sbp", "inner_sbp"])
    assert isinstance(gated.get_layer("block"), keras.Sequential)
    seeds = sorted(layer.seed for layer in tfpriors.graph.walk(gated) if hasattr(layer, "mu"))
    assert seeds == [7, 8, 9]
    _check_same_function(model, gated, x[:16], 2)
    assert tfpriors.set_dataset_size(gated, 100) == 4  # 3 gates and the Sparse VD layer


def test_output_layer_behind_activation_is_not_gated():
    inputs = keras.Input((5,))
    hidden = keras.layers.Dense(4, name="hidden")(inputs)
    logits = keras.layers.Dense(3, name="logits")(hidden)
    outputs = keras.layers.Activation("softmax", name="probs")(keras.layers.Dropout(0.1)(logits))
    gated = tfpriors.structured(keras.Model(inputs, outputs))
    assert _gate_names(gated) == ["hidden_sbp"]


def test_skip_and_bad_arguments():
    model = keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(3, name="a"), keras.layers.Dense(2, name="b")]
    )
    assert _gate_names(tfpriors.structured(model, skip=["a"])) == []
    with pytest.raises(ValueError, match="`skip` names layers"):
        tfpriors.structured(model, skip="nope")
    with pytest.raises(TypeError, match="`skip`"):
        tfpriors.structured(model, skip=3)
    with pytest.raises(ValueError, match="threshold"):
        tfpriors.structured(model, threshold=0.0)
    with pytest.raises(ValueError, match="dataset_size"):
        tfpriors.structured(model, dataset_size=0)
    with pytest.raises(TypeError, match="model"):
        tfpriors.structured("model")
    with pytest.raises(ValueError, match="learning_rate_multiplier"):
        tfpriors.structured(model, learning_rate_multiplier=-1.0)
    (gate,) = [
        layer
        for layer in tfpriors.structured(model, learning_rate_multiplier=4.0).layers
        if isinstance(layer, StructuredBayesianPruning)
    ]
    assert gate.learning_rate_multiplier == 4.0


def test_gated_model_trains_and_prunes_with_a_strong_kl(digits):
    (x, y), _ = digits
    model = keras.Sequential(
        [
            keras.Input((64,)),
            keras.layers.Dense(32, activation="relu"),
            keras.layers.Dense(10),
        ]
    )
    gated = tfpriors.structured(model)
    tfpriors.set_dataset_size(gated, 1)  # a KL this strong prunes units quickly
    gated.compile(
        keras.optimizers.Adam(0.1), keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    gated.fit(x[:256], y[:256], epochs=4, batch_size=16, verbose=0)
    assert gated.layers[1].kept_units() < 32


def _prune(gate, keep):
    """Sets a gate's parameters so that exactly the units in ``keep`` survive."""
    units = gate.units
    keep = np.asarray(keep)
    rng = np.random.default_rng(units)
    gate.set_posterior(
        mu=np.where(keep, rng.uniform(-1.0, 0.0, units), -15.0),
        log_sigma=np.where(keep, rng.uniform(-4.0, -1.0, units), 2.0),
    )
    np.testing.assert_array_equal(gate.kept_mask(), keep)


def test_export_removes_pruned_units_and_folds_the_gates(digits, tmp_path):
    from tfpriors_mobile import load_interpreter

    (_, _), (x_test, _) = digits
    x = x_test[:64].reshape(-1, 8, 8, 1)
    padding = "same"  # the border is exact too: pruned filters are removed, not folded
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(8, 3, padding=padding, name="conv1"),
            keras.layers.ReLU(name="relu1"),
            keras.layers.Conv2D(12, 3, padding=padding, activation="relu", name="conv2"),
            keras.layers.MaxPooling2D(name="pool"),
            keras.layers.Flatten(name="flatten"),
            keras.layers.Dense(20, activation="relu", name="fc"),
            keras.layers.Dense(10, name="logits"),
        ]
    )
    gated = tfpriors.structured(model)
    assert _gate_names(gated) == ["conv1_sbp", "conv2_sbp", "fc_sbp"]
    keep = {"conv1_sbp": np.arange(8) % 2 == 0, "conv2_sbp": np.arange(12) < 5}
    keep["fc_sbp"] = np.arange(20) % 4 != 1
    for name, mask in keep.items():
        _prune(gated.get_layer(name), mask)
    # Some pruned units are fed by nonzero weights: only the gate removes them.
    report = tfpriors.export.to_tflite(
        gated, str(tmp_path / "small.tflite"), verify_data=x, compare_dense=False
    )
    assert report.units_kept == {
        "conv1": (4, 8),
        "conv2": (5, 12),
        "fc": (15, 20),
        "logits": (10, 10),
    }
    assert report.ops <= {"CONV_2D", "FULLY_CONNECTED", "MAX_POOL_2D", "RESHAPE"}
    assert report.max_abs_diff <= 1e-5 * max(1.0, np.abs(gated.predict(x, verbose=0)).max())
    interpreter, _ = load_interpreter(str(tmp_path / "small.tflite"), num_threads=1)
    shapes = sorted(
        tuple(detail["shape"])
        for detail in interpreter.get_tensor_details()
        if len(detail["shape"]) == 4
    )
    assert (5, 3, 3, 4) in shapes and (4, 3, 3, 1) in shapes  # OHWI conv kernels, shrunk


@pytest.mark.parametrize("kind", ["sequential", "functional"])
def test_export_folds_gates_inside_nested_models(digits, tmp_path, kind):
    (_, _), (x_test, _) = digits
    x = x_test[:64].reshape(-1, 8, 8, 1)
    if kind == "sequential":
        block = keras.Sequential(
            [
                keras.Input((8, 8, 1)),
                keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv1"),
                keras.layers.Conv2D(12, 3, padding="same", name="conv2"),
            ],
            name="block",
        )
    else:
        inputs = keras.Input((8, 8, 1))
        hidden = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv1")(inputs)
        outputs = keras.layers.Conv2D(12, 3, padding="same", name="conv2")(hidden)
        block = keras.Model(inputs, outputs, name="block")
    inputs = keras.Input((8, 8, 1))
    hidden = keras.layers.ReLU(name="relu")(block(inputs))
    hidden = keras.layers.Flatten(name="flatten")(keras.layers.MaxPooling2D(name="pool")(hidden))
    hidden = keras.layers.Dense(20, activation="relu", name="fc")(hidden)
    model = keras.Model(inputs, keras.layers.Dense(10, name="logits")(hidden))
    gated = tfpriors.structured(model)
    assert _gate_names(gated) == ["conv1_sbp", "conv2_sbp", "fc_sbp"]
    assert isinstance(gated.get_layer("block"), keras.Model)  # the gates are nested
    keep = {
        "conv1_sbp": np.arange(8) % 2 == 0,
        "conv2_sbp": np.arange(12) < 5,
        "fc_sbp": np.arange(20) % 4 != 1,
    }
    for name, mask in keep.items():
        _prune(next(g for g in tfpriors.graph.walk(gated) if g.name == name), mask)
    report = tfpriors.export.to_tflite(
        gated, str(tmp_path / "nested.tflite"), verify_data=x, compare_dense=False
    )
    # No MUL: every gate was folded into the weights, none stayed a per-channel multiply.
    assert report.ops <= {"CONV_2D", "FULLY_CONNECTED", "MAX_POOL_2D", "RESHAPE"}
    assert report.units_kept == {
        "conv1": (4, 8),
        "conv2": (5, 12),
        "fc": (15, 20),
        "logits": (10, 10),
    }
    assert report.max_abs_diff <= 1e-5 * max(1.0, np.abs(gated.predict(x, verbose=0)).max())


def test_shrink_of_a_nested_model_without_dead_units_returns_it_unchanged():
    block = keras.Sequential(
        [keras.Input((6,)), keras.layers.Dense(4, activation="relu", name="inner")], name="block"
    )
    model = keras.Sequential([keras.Input((6,)), block, keras.layers.Dense(3, name="outer")])
    small, summary = tfpriors.export.shrink(model)
    assert small is model and summary.resized == {}


def test_dense_baseline_of_an_export_has_no_gates(digits):
    from tfpriors.export.tflite import _dense_architecture

    (_, _), (x_test, _) = digits
    block = keras.Sequential(
        [keras.Input((64,)), keras.layers.Dense(16, activation="relu", name="fc1")], name="block"
    )
    model = keras.Sequential([keras.Input((64,)), block, keras.layers.Dense(10, name="logits")])
    gated = tfpriors.structured(model)
    _prune(next(g for g in tfpriors.graph.walk(gated) if g.name == "fc1_sbp"), np.arange(16) < 4)
    baseline = _dense_architecture(gated)
    # The gates' per-channel multiplies are not part of the dense network: the
    # baseline computes the original function, with no Rescaling left to slow it.
    assert not any(
        isinstance(layer, keras.layers.Rescaling) for layer in tfpriors.graph.walk(baseline)
    )
    np.testing.assert_allclose(baseline(x_test[:32]), model(x_test[:32]), atol=1e-5)
    assert not np.allclose(gated(x_test[:32]), model(x_test[:32]), atol=1e-3)  # pruned


def test_shrink_keeps_a_gate_it_cannot_fold(digits):
    (_, _), (x_test, _) = digits
    model = keras.Sequential(
        [
            keras.Input((64,)),
            keras.layers.Dense(16, activation="tanh", name="fc"),
            StructuredBayesianPruning(name="gate"),
            keras.layers.BatchNormalization(name="bn"),
            keras.layers.Dense(10, name="logits"),
        ]
    )
    _prune(model.get_layer("gate"), np.arange(16) < 10)
    small, summary = tfpriors.export.shrink(tfpriors.export.inference_model(model))
    # tanh does not commute with the scale and batch norm stands before the next
    # layer: the gate stays a per-channel multiply and no unit is removed.
    assert isinstance(small.get_layer("gate"), keras.layers.Rescaling)
    assert summary.resized == {}
    np.testing.assert_allclose(small(x_test[:32]), model(x_test[:32]), atol=1e-5)


def test_compression_report_counts_units_and_flops():
    model = keras.Sequential(
        [
            keras.Input((6, 6, 1)),
            keras.layers.Conv2D(4, 3, name="conv"),
            keras.layers.Flatten(name="flatten"),
            keras.layers.Dense(5, activation="relu", name="fc"),
            keras.layers.Dense(3, name="logits"),
        ]
    )
    gated = tfpriors.structured(model)
    _prune(gated.get_layer("conv_sbp"), np.arange(4) < 1)
    _prune(gated.get_layer("fc_sbp"), np.arange(5) < 2)
    report = tfpriors.compression_report(gated)
    rows = {row.name: row for row in report.layers}
    assert (rows["conv"].units, rows["conv"].units_kept) == (4, 1)
    assert (rows["fc"].units, rows["fc"].units_kept) == (5, 2)
    assert rows["conv"].flops == 3 * 3 * 4 * 16 and rows["conv"].flops_kept == 3 * 3 * 1 * 16
    assert rows["fc"].flops == 64 * 5 and rows["fc"].flops_kept == 16 * 2
    assert rows["logits"].flops_kept == 2 * 3
    assert report.total_flops_kept == 144 + 32 + 6
    assert "units kept" in str(report) and "1 of 4" in str(report)
    figure = tfpriors.plotting.plot_sparsity(gated)
    assert "units kept per layer" in [axis.get_title() for axis in figure.axes]
