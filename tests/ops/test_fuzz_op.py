"""The fuzz driver of the fused op (fuzz/), the regressions it found, and a sanitizer run.

The regression inputs and the random-input run check every path that applies:
the compiled op (a failure, not a skip, when a C++ compiler exists but the op
did not build; a skip only without a compiler) and the pure-TensorFlow path that
runs where the op is not built (always).
"""

import glob
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

import tfpriors
from tfpriors.ops import perforated_conv2d_reference

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "fuzz"))

import fuzz_perforated_conv as driver  # noqa: E402  (fuzz/ is not a package)

# Fails instead of skipping when a C++ compiler exists but the op is missing (conftest).
needs_op = pytest.mark.usefixtures("fused_op")
# The files directly in fuzz/regressions/ (fuzz/regressions/lrt_sample/ is the noise op's).
REGRESSIONS = sorted(
    path
    for path in glob.glob(os.path.join(ROOT, "fuzz", "regressions", "*"))
    if os.path.isfile(path)
)


@pytest.fixture(params=["op", "pure-tf"])
def target(request):
    """What a fuzz input runs against: the compiled op, or the pure-TensorFlow path."""
    if request.param == "op":
        request.getfixturevalue("fused_op")  # fails or skips as conftest decides
    return request.param


def test_regressions_exist():
    """Both findings of the fuzzer are replayed (an empty folder would test nothing)."""
    names = {os.path.basename(path) for path in REGRESSIONS}
    assert {"reference-permuted-fill-all-kept", "shape-function-output-size-overflow"} <= names


def test_reference_honours_a_permuted_fill_when_every_position_is_kept():
    """Found by fuzzing: the reference skipped fill_index whenever nothing was dropped."""
    x = np.arange(2 * 3 * 1 * 1, dtype="float32").reshape(2, 3, 1, 1)
    w = np.ones((1, 1, 1, 1), "float32")
    y = perforated_conv2d_reference(x, w, [0, 1, 2], [2, 0, 0], (3, 1), (1, 1), (0, 0))
    np.testing.assert_array_equal(y.numpy()[..., 0, 0], [[2, 0, 0], [5, 3, 3]])


@needs_op
def test_shape_function_refuses_an_output_size_whose_product_overflows():
    """Found by fuzzing: 6 * (2**63 - 1) wrapped to -6 and MakeDim aborted the process."""
    module = tfpriors.ops.fused_op_module()
    with tf.Graph().as_default():
        with pytest.raises(ValueError, match="too large"):
            module.perforated_conv2d(
                tf.compat.v1.placeholder(tf.float32, [1, 4, 4, 1]),
                tf.compat.v1.placeholder(tf.float32, [3, 3, 1, 1]),
                tf.compat.v1.placeholder(tf.int32, [1]),
                tf.compat.v1.placeholder(tf.int32, [None]),
                strides=[1, 1],
                pads=[0, 0],
                output_size=[6, 2**63 - 1],
            )


@needs_op
@pytest.mark.parametrize("attribute", ["strides", "pads"])
def test_shape_function_checks_strides_and_pads_like_the_kernel(attribute):
    attributes = dict(strides=[1, 1], pads=[0, 0], output_size=[2, 2])
    attributes[attribute] = [1, -1]
    with tf.Graph().as_default():
        with pytest.raises(ValueError, match=attribute):
            tfpriors.ops.fused_op_module().perforated_conv2d(
                tf.zeros([1, 2, 2, 1]),
                tf.zeros([1, 1, 1, 1]),
                tf.constant([0]),
                tf.constant([0, 0, 0, 0]),
                **attributes,
            )


@pytest.mark.parametrize("path", REGRESSIONS, ids=os.path.basename)
def test_fuzz_regressions_replay(path, target):
    with open(path, "rb") as f:
        driver.check(driver.decode(f.read()), target)


def test_fuzz_driver_on_random_inputs(target):
    """A few hundred random inputs against the normal build, valid and hostile both seen."""
    rng = np.random.default_rng(0)
    valid = 0
    for _ in range(200):
        call = driver.decode(rng.integers(0, 256, rng.integers(0, 300), dtype=np.uint8).tobytes())
        valid += not driver.violations(call)
        driver.check(call, target)
    assert 40 <= valid <= 160


def test_pure_tf_path_refuses_attributes_that_abort_tensorflow():
    """Found by fuzzing the pure-TF path: a stride of 2**63 - 1 reached TensorFlow's MKL
    graph pass, which aborted the process; the Python checks now refuse it first."""
    x, w = np.ones((1, 4, 4, 1), "float32"), np.ones((3, 3, 1, 1), "float32")
    fill = np.zeros(4, "int32")
    for name, strides, output_shape in (
        ("strides", (1, 2**63 - 1), (2, 2)),
        ("output_shape", (1, 1), (1 << 20, 1)),
    ):
        with pytest.raises(ValueError, match=f"`{name}`"):
            tfpriors.ops.perforated_conv2d(
                x, w, [0], fill, output_shape, strides, (0, 0), implementation="reference"
            )


class _WrongOp:
    """Stands in for the op library: adds ``offset`` to the right answer, or raises."""

    def __init__(self, offset=0.0, error=None):
        self.offset, self.error = offset, error

    def perforated_conv2d(self, x, w, kept, fill, strides, pads, output_size):
        if self.error is not None:
            raise self.error
        return (
            perforated_conv2d_reference(
                x, w, kept.numpy(), fill.numpy(), output_size, strides, pads
            )
            + self.offset
        )


class _AcceptsAnything:
    """Stands in for an op library that checks nothing: zeros of the requested shape."""

    def perforated_conv2d(self, x, w, kept, fill, strides, pads, output_size):
        return tf.zeros((x.shape[0], *output_size, w.shape[3]), x.dtype)


def _valid_call():
    return driver.Call(
        x_shape=[1, 3, 3, 1],
        w_shape=[2, 2, 1, 1],
        kept=np.array([0, 3], np.int32),
        fill=np.array([0, 0, 1, 1], np.int32),
        strides=[1, 1],
        pads=[0, 0],
        output_size=[2, 2],
    )


def test_contract_check_catches_wrong_numbers_and_wrong_errors(monkeypatch):
    monkeypatch.setattr(driver, "op_module", lambda: _WrongOp())
    driver.check(_valid_call())
    monkeypatch.setattr(driver, "op_module", lambda: _WrongOp(offset=0.5))
    with pytest.raises(driver.ContractViolation, match="differs from the reference"):
        driver.check(_valid_call())
    monkeypatch.setattr(
        driver, "op_module", lambda: _WrongOp(error=tf.errors.InternalError(None, None, "boom"))
    )
    with pytest.raises(driver.ContractViolation, match="InternalError"):
        driver.check(_valid_call())
    # An op that accepts an out-of-range table is a finding even when nothing crashes.
    # (The reference now refuses such a table itself, so this stand-in answers zeros.)
    bad = _valid_call()
    bad.kept = np.array([0, 4], np.int32)
    monkeypatch.setattr(driver, "op_module", lambda: _AcceptsAnything())
    with pytest.raises(driver.ContractViolation, match="invalid call accepted"):
        driver.check(bad)


def test_byte_reader_is_total():
    reader = driver.ByteReader(b"\xff")
    assert reader.integer(0, 3) == 3
    assert reader.integer(5, 2**40) == 5  # past the end: the low bound
    assert reader.choice("abc") == "a"


_PLANTED_OVERFLOW = """
#include <stdlib.h>
int overflow(int i) { int* a = malloc(4 * sizeof(int)); a[0] = 1; int v = a[i]; free(a); return v; }
"""
_PLANTED_TARGET = """
import ctypes, sys
import atheris
library = ctypes.CDLL(sys.argv.pop(1))
atheris.Setup(sys.argv, lambda data: library.overflow(10))
assert ctypes.CDLL(None).tfpriors_register_native_coverage() == 1
atheris.Fuzz()
"""


def test_sanitizer_setup_reports_a_planted_heap_overflow(tmp_path, monkeypatch):
    """The preload order of run_fuzz.py (coverage bridge, libasan, libstdc++) still lets
    ASan catch an overflow in a g++-instrumented library and libFuzzer keep the input."""
    pytest.importorskip("atheris")
    if shutil.which("gcc") is None or shutil.which("g++") is None:
        pytest.skip("no gcc")
    import run_fuzz

    (tmp_path / "overflow.c").write_text(_PLANTED_OVERFLOW)
    (tmp_path / "target.py").write_text(_PLANTED_TARGET)
    bridge = tmp_path / "fuzz_coverage.so"
    for source, target, flags in (
        (os.path.join(ROOT, "custom_ops", "fuzz_coverage.c"), bridge, ["-ldl"]),
        (
            tmp_path / "overflow.c",
            tmp_path / "overflow.so",
            ["-fsanitize=address", "-fsanitize-coverage=trace-pc,trace-cmp"],
        ),
    ):
        subprocess.run(
            ["gcc", "-shared", "-fPIC", "-O1", "-g", str(source), "-o", str(target), *flags],
            check=True,
        )
    monkeypatch.setattr(run_fuzz, "COVERAGE_LIBRARY", str(bridge))
    result = subprocess.run(
        [
            sys.executable,
            str(tmp_path / "target.py"),
            str(tmp_path / "overflow.so"),
            "-runs=10",
            f"-artifact_prefix={tmp_path}{os.sep}",
        ],
        env=run_fuzz.sanitizer_environment("unused"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    log = result.stdout + result.stderr
    assert result.returncode != 0
    kind, message = run_fuzz.classify(log)
    assert (kind, message.split()[0]) == ("AddressSanitizer", "heap-buffer-overflow"), log
    assert glob.glob(str(tmp_path / "crash-*"))


@pytest.mark.slow
def test_fuzz_under_sanitizers(tmp_path):
    """One minute of make fuzz (ASan + UBSan build, every target): no finding."""
    pytest.importorskip("atheris")
    if shutil.which("g++") is None:
        pytest.skip("no g++")
    built = [
        os.path.join(ROOT, "tfpriors", "ops", "_perforated_conv_fuzz.so"),
        os.path.join(ROOT, "build", "fuzz_coverage.so"),
    ]
    sources = [
        os.path.join(ROOT, "custom_ops", name)
        for name in (
            "perforated_conv.cc",
            "lrt_sample.cc",
            "philox_normal.h",
            "philox_normal_simd.inc",
            "fuzz_coverage.c",
        )
    ]
    newest_source = max(os.path.getmtime(path) for path in sources)
    if any(not os.path.exists(path) or os.path.getmtime(path) < newest_source for path in built):
        subprocess.run(
            [sys.executable, os.path.join(ROOT, "custom_ops", "build.py"), "--fuzz"],
            check=True,
            cwd=ROOT,
        )
    out = tmp_path / "fuzz.json"
    result = subprocess.run(
        [
            sys.executable,
            os.path.join(ROOT, "fuzz", "run_fuzz.py"),
            "--seconds",
            "60",
            "--corpus",
            str(tmp_path / "corpus"),
            "--artifacts",
            str(tmp_path / "artifacts"),
            "--out",
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    summary = json.loads(out.read_text())
    assert summary["findings"] == [], result.stdout[-3000:]
    assert result.returncode == 0
    assert summary["executions"] > 0
    assert summary["targets_run"] == ["perforated_conv", "lrt_sample"]
    assert all(summary["targets"][t]["executions"] > 0 for t in summary["targets_run"])


def _run(target, executions, findings=()):
    return {
        "target": target,
        "op": target,
        "seconds": 10.0,
        "stopped_early": False,
        "executions": executions,
        "executions_per_second": executions / 10.0,
        "processes": 1,
        "findings": [{"target": target, "kind": "ContractViolation", **f} for f in findings],
        "corpus": f"fuzz/corpus/{target}",
        "corpus_files": 3,
        "corpus_bytes": 30,
        "native_coverage": True,
        "libfuzzer_command": "python fuzz/x.py",
    }


def test_summary_keeps_the_history_and_records_each_target(tmp_path):
    """run_fuzz.py's JSON: a file from before the second target keeps its runs (counted
    as perforated_conv), each target gets its own entry, findings say their target."""
    import run_fuzz

    sys.path.insert(0, os.path.join(ROOT, "bench"))
    import _report_fuzz

    path = tmp_path / "fuzz.json"
    old = {"timestamp": "t0", "command": "old", "seconds": 100.0, "executions": 7}
    old |= {"processes": 1, "corpus_files": 0, "findings": 0, "native_coverage": False}
    old |= {"stopped_early": False}
    path.write_text(json.dumps(old | {"libfuzzer_command": "x", "history": [old]}))
    run_fuzz.write_summary(
        str(path), {"lrt_sample": _run("lrt_sample", 50, [{"message": "m"}])}, "a"
    )
    assert json.loads(path.read_text())["targets"]["perforated_conv"]["command"] == "old"
    run_fuzz.write_summary(str(path), {"perforated_conv": _run("perforated_conv", 20)}, "b")
    summary = json.loads(path.read_text())
    assert [h.get("target") for h in summary["history"]] == [None, "lrt_sample", "perforated_conv"]
    assert summary["by_target"]["perforated_conv"]["executions"] == 27
    assert summary["by_target"]["lrt_sample"]["findings"] == 1
    assert set(summary["targets"]) == {"lrt_sample", "perforated_conv"}
    assert summary["targets"]["lrt_sample"]["findings"][0]["target"] == "lrt_sample"
    assert summary["targets"]["perforated_conv"]["command"] == "b"
    assert summary["findings"] == [] and summary["targets_run"] == ["perforated_conv"]
    assert summary["total_executions"] == 77
    rows = [line for line in _report_fuzz.section(summary) if line.startswith("| ")][1:]
    targets = [row.split(" | ")[1] for row in rows]
    assert targets == ["perforated_conv", "lrt_sample", "perforated_conv"]
