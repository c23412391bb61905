import contextlib
import io
import os

import keras
import matplotlib.image
import numpy as np
import pytest

import tfpriors
import tfpriors_cli
from tfpriors import cli

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """Runs `tfpriors demo --epochs 2` in-process once for this module.

    Returns (exit code, the run's DemoResult, the output directory, stdout).
    """
    results = []
    real_run_demo = cli.run_demo

    def spy(*args, **kwargs):
        results.append(real_run_demo(*args, **kwargs))
        return results[-1]

    out = tmp_path_factory.mktemp("demo") / "nested" / "out"  # missing dirs are created
    printed = io.StringIO()
    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(printed):
        patch.setattr(cli, "run_demo", spy)
        code = cli.main(["demo", "--epochs", "2", "--out", str(out)])
    assert len(results) == 1
    return code, results[0], out, printed.getvalue()


def test_demo_writes_model_and_plot_and_nothing_else(demo_run):
    code, result, out, _ = demo_run
    assert code == 0
    assert sorted(os.listdir(out)) == ["model.keras", "sparsity.png"]  # no temp files left
    assert result.model_path == os.path.join(str(out), "model.keras")
    assert result.plot_path == os.path.join(str(out), "sparsity.png")


def test_demo_model_loads_with_identical_deterministic_outputs(demo_run, digits):
    _, result, out, _ = demo_run
    _, (x_test, y_test) = digits
    loaded = keras.models.load_model(out / "model.keras")
    assert [type(layer) for layer in loaded.layers] == [tfpriors.layers.SparseVDDense] * 3
    assert [layer.dataset_size for layer in loaded.layers] == [len(digits[0][0])] * 3
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(loaded(x_test, training=False)),
        keras.ops.convert_to_numpy(result.model(x_test, training=False)),
    )
    assert tfpriors.compression_report(loaded) == result.report
    accuracy = np.mean(np.argmax(loaded.predict(x_test, verbose=0), -1) == y_test)
    assert accuracy == pytest.approx(result.sparse_accuracy, abs=1e-6)


def test_demo_plot_is_a_png_image(demo_run):
    _, _, out, _ = demo_run
    path = out / "sparsity.png"
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[2] in (3, 4)
    assert image.shape[1] > 2 * image.shape[0] > 600  # three panels side by side
    assert image[..., :3].std() > 0.1  # something is drawn, not a blank canvas


def test_demo_prints_the_summary(demo_run):
    _, result, out, printed = demo_run
    assert "dense baseline" in printed and "Sparse VD" in printed
    assert f"{result.dense_accuracy:.2%}" in printed
    assert f"{result.sparse_accuracy:.2%}" in printed
    assert f"{result.report.total_compression:.1f}x" in printed
    assert str(result.report) in printed
    assert str(out / "model.keras") in printed and str(out / "sparsity.png") in printed
    # The baseline is a real trained network, not a placeholder.
    assert result.dense_accuracy > 0.5
    assert result.dense_weights == 64 * 300 + 300 * 100 + 100 * 10


@pytest.mark.parametrize("value", ["0", "-3", "abc", "2.5", ""])
def test_epochs_must_be_a_positive_integer(value, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["demo", "--epochs", value, "--out", str(tmp_path / "out")])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert "--epochs" in error and "positive integer" in error
    assert not (tmp_path / "out").exists()  # nothing happens before the arguments are valid


def _one_error_line(stderr):
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "error:" in lines[0], stderr
    assert "Traceback" not in stderr
    return lines[0]


@pytest.fixture
def no_tensorflow_start(monkeypatch):
    """Fails the test if the command starts TensorFlow (its checks come first)."""

    def fail():
        raise AssertionError("TensorFlow was started before the output checks")

    monkeypatch.setattr(tfpriors_cli, "start_tensorflow", fail)
    monkeypatch.setattr(cli, "start_tensorflow", fail)  # what run_demo and run_export call


@pytest.fixture
def unwritable(tmp_path):
    """A folder in which nothing can be created.

    Root ignores permission bits: then a regular file stands in for the folder
    (nothing can be created "in" it either), so the test still runs and can fail.
    """
    if os.geteuid() == 0:
        folder = tmp_path / "a_file"
        folder.write_text("")
        yield folder
        return
    folder = tmp_path / "read_only"
    folder.mkdir()
    folder.chmod(0o500)
    yield folder
    folder.chmod(0o700)


def test_out_must_not_be_a_file(tmp_path, capsys, no_tensorflow_start):
    existing = tmp_path / "file.txt"
    existing.write_text("not a directory")
    assert cli.main(["demo", "--out", str(existing)]) == 1
    error = _one_error_line(capsys.readouterr().err)
    assert "--out" in error and str(existing) in error and "not a directory" in error
    assert existing.read_text() == "not a directory"


def test_out_that_cannot_be_created_is_reported(tmp_path, capsys, no_tensorflow_start):
    existing = tmp_path / "file.txt"
    existing.write_text("")
    assert cli.main(["demo", "--epochs", "1", "--out", str(existing / "sub")]) == 1
    error = _one_error_line(capsys.readouterr().err)
    assert "--out" in error and "cannot create directory" in error
    assert str(existing / "sub") in error


def test_demo_out_that_cannot_be_written_fails_before_training(
    unwritable, capsys, no_tensorflow_start
):
    out = unwritable / "demo"
    assert cli.main(["demo", "--epochs", "1", "--out", str(out)]) == 1
    error = _one_error_line(capsys.readouterr().err)
    assert error.startswith("tfpriors demo: error:") and str(out) in error
    cause = "Not a directory" if os.geteuid() == 0 else "Permission denied"
    assert cause in error


def test_demo_out_holding_a_folder_named_like_an_output(tmp_path, capsys, no_tensorflow_start):
    (tmp_path / "model.keras").mkdir()
    assert cli.main(["demo", "--out", str(tmp_path)]) == 1
    error = _one_error_line(capsys.readouterr().err)
    assert str(tmp_path / "model.keras") in error and "is a directory" in error


def test_run_demo_checks_out_before_training(unwritable, no_tensorflow_start):
    with pytest.raises(cli.CommandError, match="cannot"):
        cli.run_demo(epochs=1, out=str(unwritable / "demo"))


@pytest.mark.parametrize("value", ["-1", "x"])
def test_seed_must_be_a_non_negative_integer(value, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["demo", "--seed", value])
    assert exit_info.value.code == 2
    assert "--seed" in capsys.readouterr().err


def test_no_command_prints_help_and_exits_2(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main([])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert "usage: tfpriors" in error and "demo" in error


def test_unknown_command_exits_2(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["train"])
    assert exit_info.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["--help"], ["demo", "COMMAND"]),
        (["demo", "--help"], ["--epochs", "--out", "--seed", "tfpriors_demo"]),
    ],
)
def test_help(argv, expected, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 0
    printed = capsys.readouterr().out
    for text in expected:
        assert text in printed


def test_summary_table_lines_up():
    report = tfpriors.compression.CompressionReport(
        (tfpriors.compression.LayerCompression("fc1", "SparseVDDense", 1000, 10),)
    )
    result = cli.DemoResult(
        model=None,
        dense_model=None,
        dense_accuracy=0.9756,
        sparse_accuracy=0.9711,
        report=report,
        dense_weights=1000,
        model_path="m.keras",
        plot_path="p.png",
        seconds=1.0,
    )
    lines = cli.format_summary(result).splitlines()
    assert len(lines) == 4 and len({len(line) for line in lines}) == 1
    assert lines[2].split() == ["dense", "baseline", "97.56%", "1,000", "1.0x", "0.00%"]
    assert lines[3].split() == ["Sparse", "VD", "97.11%", "10", "100.0x", "99.00%"]


def test_export_command_writes_a_verified_tflite(tmp_path, capsys):
    import json

    import keras

    import tfpriors
    from tfpriors.cli import main

    model = tfpriors.models.lenet_300_100((64,), 10, kind="sparse_vd")
    model_path = tmp_path / "m.keras"
    model.save(model_path)
    out = tmp_path / "m.tflite"
    code = main(
        [
            "export",
            str(model_path),
            str(out),
            "--verify",
            "digits",
            "--report",
            str(tmp_path / "r.json"),
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "top-1 agreement 100.00%" in printed
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["size_bytes"] == out.stat().st_size
    assert report["max_abs_diff"] < 1e-5
    assert keras.models.load_model(model_path).count_params() == model.count_params()


def test_export_command_errors_are_one_line(tmp_path, capsys):
    import tfpriors
    from tfpriors.cli import main

    model = tfpriors.models.lenet_300_100((64,), 10, kind="sparse_vd")
    model.save(tmp_path / "m.keras")
    content = (tmp_path / "m.keras").read_bytes()
    (tmp_path / "cut.keras").write_bytes(content[: len(content) // 2])
    cases = [
        ([str(tmp_path / "missing.keras"), str(tmp_path / "a.tflite")], "no model file"),
        ([str(tmp_path / "cut.keras"), str(tmp_path / "a.tflite")], "not a .keras file"),
        (
            [str(tmp_path / "m.keras"), str(tmp_path / "a.tflite"), "--verify", "imagenet"],
            "--verify",
        ),
        ([str(tmp_path / "m.keras"), str(tmp_path / "a.tflite"), "--quantize", "int8"], "--verify"),
    ]
    for args, message in cases:
        assert main(["export", *args]) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], err
    assert not (tmp_path / "a.tflite").exists()
    with pytest.raises(SystemExit) as info:
        main(["export", str(tmp_path / "m.keras"), str(tmp_path / "a.bin")])
    assert info.value.code == 2


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "m.keras"
    keras.Sequential([keras.Input((64,)), tfpriors.layers.SparseVDDense(10)]).save(path)
    return path


@pytest.mark.parametrize("target", ["output", "--report"])
def test_export_to_an_unwritable_path_fails_before_loading(
    saved_model, tmp_path, unwritable, capsys, no_tensorflow_start, target
):
    output, report = tmp_path / "m.tflite", tmp_path / "r.json"
    if target == "output":
        output = unwritable / "m.tflite"
    else:
        report = unwritable / "r.json"
    code = cli.main(["export", str(saved_model), str(output), "--report", str(report)])
    assert code == 1
    error = _one_error_line(capsys.readouterr().err)
    bad = output if target == "output" else report
    assert error.startswith("tfpriors export: error: cannot write") and str(bad) in error
    assert f"({target})" in error
    assert "not a directory" in error.lower() or "Permission denied" in error
    assert os.listdir(tmp_path) == [unwritable.name]  # no .tflite, no report, no temp file


@pytest.mark.parametrize("target", ["output", "--report"])
def test_export_to_a_directory_fails_before_loading(
    saved_model, tmp_path, capsys, no_tensorflow_start, target
):
    folder = tmp_path / ("m.tflite" if target == "output" else "r.json")
    folder.mkdir()
    code = cli.main(
        [
            "export",
            str(saved_model),
            str(tmp_path / "m.tflite"),
            "--report",
            str(tmp_path / "r.json"),
        ]
    )
    assert code == 1
    error = _one_error_line(capsys.readouterr().err)
    assert str(folder) in error and "is a directory" in error
    assert os.listdir(tmp_path) == [folder.name]


def test_report_that_fails_to_write_leaves_no_tflite(saved_model, tmp_path, unwritable, capsys):
    """A write that fails after the checks (here: the checks are skipped) cleans up."""
    with pytest.MonkeyPatch.context() as patch:
        for module in (tfpriors_cli, cli):
            real = module.check_output_file
            patch.setattr(
                module,
                "check_output_file",
                lambda path, argument, real=real: (
                    None if "r.json" in str(path) else real(path, argument)
                ),
            )
        code = cli.main(
            [
                "export",
                str(saved_model),
                str(tmp_path / "m.tflite"),
                "--report",
                str(unwritable / "r.json"),
            ]
        )
    assert code == 1
    error = _one_error_line(capsys.readouterr().err)
    assert f"cannot write '{unwritable / 'r.json'}'" in error
    assert os.listdir(tmp_path) == [unwritable.name]  # the .tflite is not left behind


def test_run_export_writes_the_tflite_only_with_its_report(saved_model, tmp_path):
    report = cli.run_export(
        str(saved_model), str(tmp_path / "m.tflite"), report_path=str(tmp_path / "r.json")
    )
    assert report.path == str(tmp_path / "m.tflite")  # not the temporary file's name
    assert sorted(os.listdir(tmp_path)) == ["m.tflite", "r.json"]
    import json

    assert json.loads((tmp_path / "r.json").read_text())["path"] == str(tmp_path / "m.tflite")


def _run_cli(*args, env=None, **kwargs):
    """Runs the console script's module in a fresh interpreter, as the user's shell would."""
    import subprocess
    import sys

    env = dict(os.environ if env is None else env)
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)  # the CLI's own default, not the tests'
    return subprocess.run(
        [sys.executable, "-m", "tfpriors_cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        **kwargs,
    )


def _console_script_target():
    tomllib = pytest.importorskip("tomllib")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with open(os.path.join(root, "pyproject.toml"), "rb") as f:
        return tomllib.load(f)["project"]["scripts"]["tfpriors"]


def test_help_imports_no_tensorflow():
    import subprocess
    import sys

    module, function = _console_script_target().split(":")
    code = (
        "import sys, time\n"
        "start = time.perf_counter()\n"
        f"from {module} import {function} as main\n"
        "try:\n"
        "    main(['--help'])\n"
        "except SystemExit as exit:\n"
        "    assert exit.code == 0, exit.code\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in\n"
        "                ('tensorflow', 'keras', 'tfpriors', 'numpy'))\n"
        "print('LOADED', loaded, 'SECONDS', time.perf_counter() - start)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # no TensorFlow start-up line
    assert "usage: tfpriors" in result.stdout and "export" in result.stdout
    assert "LOADED [] SECONDS" in result.stdout, result.stdout


def test_usage_and_path_errors_answer_without_tensorflow(saved_model, unwritable):
    for args in (
        ["export", str(saved_model), str(unwritable / "m.tflite")],
        ["export", str(saved_model.parent / "missing.keras"), "m.tflite"],
        ["demo", "--out", str(unwritable / "demo")],
    ):
        result = _run_cli(*args)
        assert result.returncode == 1, result.stderr
        assert result.stdout == ""
        error = _one_error_line(result.stderr)
        assert error.startswith(f"tfpriors {args[0]}: error:")
    usage = _run_cli("demo", "--epochs", "0")
    assert usage.returncode == 2 and "Traceback" not in usage.stderr


def test_error_after_tensorflow_starts_is_one_line(tmp_path):
    """TensorFlow's start-up lines are left out; the error is the only line."""
    import zipfile

    with zipfile.ZipFile(tmp_path / "foreign.keras", "w") as archive:
        archive.writestr("notes.txt", "a zip archive, but no Keras model")
    result = _run_cli("export", str(tmp_path / "foreign.keras"), str(tmp_path / "m.tflite"))
    assert result.returncode == 1
    error = _one_error_line(result.stderr)
    assert "could not be loaded as a Keras model" in error
    assert os.listdir(tmp_path) == ["foreign.keras"]


def test_startup_filter_keeps_what_is_not_startup_noise():
    lines = [
        "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
        "I0000 00:00:1796141261.226722    9197 port.cc:153] oneDNN custom operations are on.",
        "I0000 00:00:1796141261.227083    9197 cudart_stub.cc:31] Could not find cuda drivers",
        "To enable the following instructions: AVX2 FMA, in other operations, rebuild TensorFlow",
        "E0000 00:00:1796141363.548201   11475 cuda_platform.cc:52] failed call to cuInit: ...",
        "W0000 00:00:1796141437.637882   13451 tf_tfl_flatbuffer_helpers.cc:364] Ignored x.",
        "E0000 00:00:1796141437.637882   13451 kernel.cc:12] a real error",
        "/path/module.py:3: UserWarning: a Python warning",
    ]
    kept = [line for line in lines if not tfpriors_cli._is_startup_noise(line, 2)]
    assert kept == lines[6:]
    assert [line for line in lines if not tfpriors_cli._is_startup_noise(line, 0)] == lines


def test_make_demo_compiles_nothing():
    import shutil
    import subprocess

    if shutil.which("make") is None:
        pytest.skip("no make")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    # -n: print the commands; -o: take the install step as done.
    # Outside any make that runs the tests (`make test`): no "Entering directory" lines.
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS")}
    result = subprocess.run(
        ["make", "-n", "--no-print-directory", "-o", ".venv/.installed", "demo"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [".venv/bin/tfpriors", "demo"]
