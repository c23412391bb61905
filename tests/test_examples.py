"""The scripts in examples/: `--help` without a run, outputs under `--out`, no TF start-up lines.

All scripts run in one fresh Python process (TensorFlow is imported once), each as
``__main__`` through ``runpy``. The process watches for a run starting: once the
script has started TensorFlow, loading a data set or calling ``fit`` is recorded
and refused.
"""

import ast
import glob
import json
import os
import subprocess
import sys
import textwrap

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = sorted(glob.glob(os.path.join(ROOT, "examples", "*.py")))
NAMES = [os.path.splitext(os.path.basename(path))[0] for path in EXAMPLES]


def _source(path):
    with open(path, encoding="utf-8") as file:
        return file.read()


# The scripts that write files (they take --out); the others only print.
WRITERS = {
    name
    for name, path in zip(NAMES, EXAMPLES)
    if '"--out"' in _source(path) or "add_output_folder(" in _source(path)
}
# Settings that make each script's whole run short (--out is added).
TINY_RUNS = {
    "adaptive_digits": ["--epochs", "1"],
    "distill_digits": ["--epochs", "3", "--samples", "2", "--distill-epochs", "1"],
    "distill_regression": ["--epochs", "4", "--samples", "2"],
    "dwp_digits": ["--sources", "1", "--source-epochs", "1", "--vae-epochs", "1", "--steps", "5"],
    "export_tflite": ["--epochs", "1"],
    "gps_digits": ["--epochs", "1", "--pool-size", "4", "--policy-length", "1"],
    "hypernet_digits": ["--epochs", "1"],
    "perforation_digits": ["--epochs", "1", "--fine-tune-epochs", "1", "--size", "8"],
    "sparse_vd": ["--pretrain-epochs", "1", "--epochs", "1"],
    "structured_mnist": ["--pretrain-epochs", "1", "--epochs", "1"],
    "tta_digits": ["--epochs", "1", "--members", "2"],
}
# What TensorFlow 2.21 prints on stderr while it starts (on a machine without a GPU).
STARTUP_LINES = (
    "absl::InitializeLog",
    "oneDNN custom operations",
    "cudart_stub",
    "cuInit",
    "cpu_feature_guard",
    "rebuild TensorFlow",
)
HEAVY_MODULES = ("keras", "tensorflow", "tfpriors")

DRIVER = textwrap.dedent(
    """
    import contextlib, io, json, runpy, sys, traceback
    import tfpriors_cli

    watch, cases = json.loads(sys.stdin.read())
    events, watching, real_start = [], [], tfpriors_cli.start_tensorflow

    def refuse(name):
        def refused(*args, **kwargs):
            events.append(name)
            raise RuntimeError(f"the example started a run: it called {name}")
        return refused

    def start_and_watch():
        real_start()
        import keras, tfpriors
        if not watching:
            watching.append(True)
            keras.Model.fit = refuse("keras.Model.fit")
            for name in [n for n in dir(tfpriors.datasets) if n.startswith("load")]:
                setattr(tfpriors.datasets, name, refuse(f"tfpriors.datasets.{name}"))

    if watch:
        tfpriors_cli.start_tensorflow = start_and_watch
    results = []
    for path, argv in cases:
        out, err, code, before = io.StringIO(), io.StringIO(), "returned", len(events)
        sys.argv = [path, *argv]
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                runpy.run_path(path, run_name="__main__")
            except SystemExit as exit:
                code = exit.code
            except Exception:
                code = traceback.format_exc()
        results.append(
            {"code": code, "stdout": out.getvalue(), "stderr": err.getvalue(),
             "events": events[before:]}
        )
    print(json.dumps(results))
    """
)


def run_examples(cases, cwd, watch=True, timeout=300):
    """Runs ``[(script path, argv), ...]`` in one process; (results, the process's stderr).

    ``watch``: refuse (and record) data loading and ``fit`` once TensorFlow started.
    """
    env = dict(os.environ, KERAS_BACKEND="tensorflow")
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)  # as a user runs them
    done = subprocess.run(
        [sys.executable, "-c", DRIVER],
        input=json.dumps([watch, cases]),
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout.splitlines()[-1]), done.stderr


@pytest.fixture(scope="module")
def help_runs(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("examples")
    (cwd / "a_file").write_text("not a folder")
    cases = [(path, ["--help"]) for path in EXAMPLES]
    cases.append((os.path.join(ROOT, "examples", "tta_digits.py"), ["--out", "a_file"]))
    results, stderr = run_examples(cases, cwd)
    return dict(zip(NAMES, results[: len(NAMES)])), results[-1], stderr, cwd


def test_there_are_examples():
    assert len(NAMES) >= 10
    assert {"tta_digits", "gps_digits", "hypernet_digits", "perforation_digits"} <= WRITERS


@pytest.mark.parametrize("name", NAMES)
def test_help_prints_usage_and_starts_no_run(help_runs, name):
    result = help_runs[0][name]
    assert result["code"] == 0, result
    assert result["stdout"].startswith(f"usage: {name}.py"), result["stdout"]
    assert "--help" in result["stdout"]
    assert result["events"] == [] and result["stderr"] == ""
    if name in WRITERS:  # outputs under --out, by default a folder git ignores
        assert f"examples_out/{name}" in result["stdout"].replace("\n", " ")


def test_help_writes_nothing_and_prints_no_tensorflow_startup_lines(help_runs):
    *_, stderr, cwd = help_runs
    assert sorted(os.listdir(cwd)) == ["a_file"]  # no output folder was created
    startup = [line for line in stderr.splitlines() if any(m in line for m in STARTUP_LINES)]
    assert not startup, stderr
    assert stderr == "", stderr


def test_an_unwritable_out_is_a_usage_error_before_any_run(help_runs):
    result = help_runs[1]
    assert result["code"] == 2, result  # argparse's usage error
    assert "--out" in result["stderr"] and "a_file" in result["stderr"], result["stderr"]
    assert "not a directory" in result["stderr"]
    assert result["events"] == []  # refused before the data were loaded


def test_default_output_folder_is_ignored_by_git():
    with open(os.path.join(ROOT, ".gitignore"), encoding="utf-8") as file:
        patterns = file.read().splitlines()
    assert "/examples_out/" in patterns


@pytest.mark.parametrize("path", EXAMPLES, ids=NAMES)
def test_tensorflow_starts_quietly_before_it_is_imported(path):
    """`start_tensorflow()` (which drops TensorFlow's start-up lines) runs first."""
    body = ast.parse(_source(path)).body
    start = [
        i
        for i, node in enumerate(body)
        if isinstance(node, ast.Expr)
        and isinstance(node.value, ast.Call)
        and getattr(node.value.func, "id", None) == "start_tensorflow"
    ]
    assert start, "the example never calls start_tensorflow()"
    for i, node in enumerate(body):
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            modules = [node.module or ""]
        else:
            continue
        heavy = [m for m in modules if m.split(".")[0] in HEAVY_MODULES]
        assert not heavy or i > start[0], f"line {node.lineno} imports {heavy} first"


@pytest.mark.slow
def test_every_example_runs_and_writes_only_under_out(tmp_path):
    assert set(TINY_RUNS) == set(NAMES)
    cases = []
    for path, name in zip(EXAMPLES, NAMES):
        out = ["--out", str(tmp_path / "out" / name)] if name in WRITERS else []
        cases.append((path, TINY_RUNS[name] + out))
    results, stderr = run_examples(cases, tmp_path, watch=False, timeout=1800)
    for name, result in zip(NAMES, results):
        assert result["code"] in ("returned", 0), (name, result, stderr[-3000:])
    assert sorted(os.listdir(tmp_path)) == ["out"]  # nothing beside --out
    assert sorted(os.listdir(tmp_path / "out")) == sorted(WRITERS)
    for name in WRITERS:
        assert os.listdir(tmp_path / "out" / name), f"{name} wrote nothing into --out"
    startup = [line for line in stderr.splitlines() if any(m in line for m in STARTUP_LINES)]
    assert not startup, stderr
