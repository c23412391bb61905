import contextlib
import io
import os

import keras
import matplotlib.image
import numpy as np
import pytest

import tfpriors
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


def test_out_must_not_be_a_file(tmp_path, capsys):
    existing = tmp_path / "file.txt"
    existing.write_text("not a directory")
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["demo", "--out", str(existing)])
    assert exit_info.value.code == 2
    assert "--out" in capsys.readouterr().err
    assert existing.read_text() == "not a directory"


def test_out_that_cannot_be_created_is_reported(tmp_path, capsys):
    existing = tmp_path / "file.txt"
    existing.write_text("")
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["demo", "--epochs", "1", "--out", str(existing / "sub")])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert "--out" in error and "cannot create directory" in error


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
