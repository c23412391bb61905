import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

import tfpriors
from tfpriors.export import ExportError, to_tflite

RUNNER = os.path.join(os.path.dirname(__file__), "..", "..", "mobile", "run_tflite.py")


@pytest.fixture(scope="module")
def sparse_lenet():
    """A Sparse VD LeNet-5 on digits images with a realistic pruning pattern."""
    keras.utils.set_random_seed(0)
    model = tfpriors.models.lenet5((8, 8, 1), 10, kind="sparse_vd")
    rng = np.random.default_rng(0)
    for layer in model.layers:
        if hasattr(layer, "log_sigma2"):
            kernel = layer.kernel.numpy()
            # Prune 90% of the weights, and every weight of a third of the units.
            log_alpha = np.where(rng.random(kernel.shape) < 0.9, 6.0, -6.0)
            if layer.name != "fc2":
                log_alpha[..., : kernel.shape[-1] // 3] = 6.0
            layer.log_sigma2.assign(log_alpha + np.log(kernel**2 + 1e-8))
    return model


@pytest.fixture(scope="module")
def images():
    (x, _), (x_test, _) = tfpriors.datasets.load_digits(flat=False)
    return x[:100], x_test[:60]


def test_float_export_matches_keras_and_is_smaller_and_faster(sparse_lenet, images, tmp_path):
    x_train, x_test = images
    path = tmp_path / "lenet.tflite"
    report = to_tflite(sparse_lenet, str(path), verify_data=x_test, latency_repeats=20)
    assert path.exists() and path.stat().st_size == report.size_bytes
    assert report.max_abs_diff < 1e-5
    assert report.top1_agreement == 1.0
    assert report.ops >= {"CONV_2D", "FULLY_CONNECTED"}
    assert not any(op.startswith("Flex") or op in {"DELEGATE", "CUSTOM"} for op in report.ops)
    assert report.shrink.removed_units > 0
    assert report.sparse_storage and "fc1" in report.sparse_layers
    assert report.dense_size_bytes > 5 * report.size_bytes
    assert report.latency_ms > 0 and report.dense_latency_ms > 0
    assert report.runtime == "ai_edge_litert"
    text = str(report)
    assert "top-1 agreement" in text and "smaller" in text
    assert json.dumps(report.to_dict())  # JSON-friendly
    # No temporary files are left beside the export.
    assert os.listdir(tmp_path) == ["lenet.tflite"]


@pytest.mark.parametrize("quantize", ["dynamic", "int8"])
def test_quantized_exports_agree(sparse_lenet, images, tmp_path, quantize):
    x_train, x_test = images
    report = to_tflite(
        sparse_lenet,
        str(tmp_path / "q.tflite"),
        quantize=quantize,
        representative_data=x_train,
        verify_data=x_test,
        latency_repeats=5,
        compare_dense=False,
        # Stored sparse, this model's float32 file is smaller than its dynamic one
        # (which `dynamic` would then write instead: see the size tests below).
        sparse_storage=False,
    )
    assert report.quantization == quantize
    assert report.top1_agreement >= 0.95
    if quantize == "int8":
        assert {"QUANTIZE", "DEQUANTIZE"} <= report.ops


def _pruned_mlp(fraction_pruned):
    """A Sparse VD LeNet-300-100 on digits with `fraction_pruned` of its weights pruned."""
    keras.utils.set_random_seed(1)
    model = tfpriors.models.lenet_300_100((64,), 10, kind="sparse_vd")
    rng = np.random.default_rng(1)
    for layer in model.layers:
        kernel = layer.kernel.numpy()
        log_alpha = np.where(rng.random(kernel.shape) < fraction_pruned, 6.0, -6.0)
        layer.log_sigma2.assign(log_alpha + np.log(kernel**2 + 1e-8))
    return model


def _export_sizes(model, tmp_path, x_test):
    reports = {}
    for quantize in (None, "dynamic"):
        path = tmp_path / f"{quantize}.tflite"
        reports[quantize] = to_tflite(
            model, str(path), quantize=quantize, verify_data=x_test, latency_repeats=2
        )
        assert path.stat().st_size == reports[quantize].size_bytes
    return reports[None], reports["dynamic"]


def test_dynamic_never_writes_a_file_larger_than_the_float_export(tmp_path):
    """Quantized weights lose sparse storage: a sparse model keeps its float32 file."""
    _, (x_test, _) = tfpriors.datasets.load_digits()
    floats, dynamic = _export_sizes(_pruned_mlp(0.97), tmp_path, x_test[:50])
    assert floats.sparse_storage
    assert dynamic.size_bytes <= floats.size_bytes
    # Here the quantized file is the larger one: the float32 file is written, and said so.
    assert dynamic.quantization == "none" and dynamic.sparse_storage
    assert any("quantize='dynamic' not applied" in note for note in dynamic.notes)
    assert "quantize='dynamic' not applied" in str(dynamic)
    assert dynamic.max_abs_diff < 1e-5
    # Both compare with the same baseline: the dense float32 export.
    assert dynamic.dense_size_bytes == floats.dense_size_bytes > 10 * dynamic.size_bytes
    assert "dense float32 export" in str(dynamic)


def test_dynamic_quantizes_when_that_file_is_smaller(tmp_path):
    _, (x_test, _) = tfpriors.datasets.load_digits()
    floats, dynamic = _export_sizes(_pruned_mlp(0.0), tmp_path, x_test[:50])
    assert not floats.sparse_storage
    assert dynamic.quantization == "dynamic" and not dynamic.notes
    assert dynamic.size_bytes < floats.size_bytes / 3  # int8 weights
    assert dynamic.top1_agreement >= 0.95
    # The baseline is float32: a dense export of this unpruned model is the float one.
    assert dynamic.dense_size_bytes == floats.dense_size_bytes
    assert abs(floats.dense_size_bytes - floats.size_bytes) < 1000


def test_export_raises_no_deprecation_warning_of_the_converter(tmp_path, caplog):
    import logging

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    with caplog.at_level(logging.WARNING):
        to_tflite(model, str(tmp_path / "m.tflite"))
    messages = [record.getMessage() for record in caplog.records]
    assert not [m for m in messages if "deprecated" in m or "trackable_obj" in m], messages


def test_plain_keras_model_exports_too(tmp_path):
    model = keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(3, activation="relu"), keras.layers.Dense(2)]
    )
    report = to_tflite(
        model,
        str(tmp_path / "plain.tflite"),
        verify_data=np.ones((3, 4), "float32"),
        compare_dense=False,
        latency_repeats=3,
    )
    assert report.max_abs_diff < 1e-5


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"quantize": "float16"}, "quantize"),
        ({"quantize": "int8"}, "representative_data"),
        ({"batch_size": 0}, "batch_size"),
        ({"verify_data": np.zeros((2, 9, 9, 1))}, "verify_data"),
        ({"verify_data": np.full((2, 8, 8, 1), np.nan)}, "verify_data"),
    ],
)
def test_bad_arguments(sparse_lenet, tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        to_tflite(sparse_lenet, str(tmp_path / "m.tflite"), **kwargs)
    assert not os.listdir(tmp_path)


def test_bad_path_and_unknown_layer(tmp_path):
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    with pytest.raises(ValueError, match="path"):
        to_tflite(model, str(tmp_path / "m.bin"))

    class Twice(keras.layers.Layer):
        def call(self, x):
            return 2 * x

    inputs = keras.Input((3,))
    odd = keras.Model(inputs, Twice(name="twice")(inputs))
    with pytest.raises(ExportError, match="twice"):
        to_tflite(odd, str(tmp_path / "m.tflite"))
    assert not os.listdir(tmp_path)


def test_random_ops_are_refused_with_the_layer_name():
    import tensorflow as tf

    from tfpriors.export.tflite import _frozen_function

    inputs = keras.Input((3,))
    noisy = keras.layers.Lambda(lambda x: x + tf.random.normal(tf.shape(x)), name="noisy")
    model = keras.Model(inputs, keras.layers.Dense(2)(noisy(inputs)))
    with pytest.raises(ExportError, match="noisy"):
        _frozen_function(model, 1)


def _run_runner(*args):
    # runpy keeps the check inside the same process as the runner, so the
    # module table says whether TensorFlow was imported.
    code = (
        "import runpy, sys; sys.argv = ['run_tflite.py'] + sys.argv[1:];\n"
        "try:\n    runpy.run_path(sys.argv[0] if False else %r, run_name='__main__')\n"
        "except SystemExit as e:\n    code = e.code\nelse:\n    code = 0\n"
        "print('TF_IMPORTED=%%s' %% ('tensorflow' in sys.modules), file=sys.stderr)\n"
        "sys.exit(code)\n"
    ) % os.path.abspath(RUNNER)
    env = dict(os.environ, PYTHONPATH="")
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120, env=env
    )


def test_mobile_runner_uses_no_tensorflow(sparse_lenet, images, tmp_path):
    _, x_test = images
    model_path = tmp_path / "m.tflite"
    to_tflite(sparse_lenet, str(model_path))
    np.save(tmp_path / "x.npy", x_test[:7])
    result = _run_runner(str(model_path), "--input", str(tmp_path / "x.npy"), "--repeats", "5")
    assert result.returncode == 0, result.stderr
    assert "TF_IMPORTED=False" in result.stderr
    report = json.loads(result.stdout)
    expected = sparse_lenet.predict(x_test[:7], verbose=0)
    assert report["argmax"] == expected.argmax(1).tolist()
    np.testing.assert_allclose(report["first_outputs"], expected[:3], atol=1e-4)
    assert report["output_shape"] == [7, 10] and report["latency_ms_median"] > 0


def test_mobile_runner_bad_inputs_give_one_line(sparse_lenet, tmp_path):
    model_path = tmp_path / "m.tflite"
    to_tflite(sparse_lenet, str(model_path))
    np.save(tmp_path / "wrong.npy", np.zeros((2, 64), "float32"))
    np.save(tmp_path / "x.npy", np.zeros((2, 8, 8, 1), "float32"))
    content = model_path.read_bytes()
    (tmp_path / "cut.tflite").write_bytes(content[: len(content) // 3])
    (tmp_path / "zeros.tflite").write_bytes(b"\x00" * 64)
    cases = [
        (str(model_path), "wrong.npy", "shape"),
        (str(tmp_path / "missing.tflite"), "x.npy", "not found"),
        (str(tmp_path / "cut.tflite"), "x.npy", "truncated or corrupted"),
        (str(tmp_path / "zeros.tflite"), "x.npy", "not a TFLite model"),
        (str(model_path), "missing.npy", "No input file"),
    ]
    for model_file, input_file, message in cases:
        result = _run_runner(model_file, "--input", str(tmp_path / input_file))
        error_lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
        assert result.returncode == 1, (model_file, input_file, result.stderr)
        assert len(error_lines) == 1 and message in error_lines[0], result.stderr
        assert "Traceback" not in result.stderr


def test_runtime_falls_back_to_tf_lite_and_says_so(monkeypatch, tmp_path):
    import builtins

    import tfpriors_mobile.runtime as runtime

    real_import = builtins.__import__

    def without_litert(name, *args, **kwargs):
        if name.startswith(("ai_edge_litert", "tflite_runtime")):
            raise ImportError(f"{name} hidden by the test")
        return real_import(name, *args, **kwargs)

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    to_tflite(model, str(tmp_path / "m.tflite"))
    monkeypatch.setattr(builtins, "__import__", without_litert)
    interpreter, name = runtime.load_interpreter(str(tmp_path / "m.tflite"))
    assert name == "tf.lite"
    outputs = runtime.run_batch(interpreter, np.ones((3, 4), "float32"))
    np.testing.assert_allclose(outputs, model.predict(np.ones((3, 4)), verbose=0), atol=1e-5)
