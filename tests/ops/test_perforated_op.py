"""The fused op against the pure-TF oracle, and hostile inputs: InvalidArgument, no crash."""

import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tfpriors
from tfpriors.ops import perforated_conv2d_reference
from tfpriors.perforation import PerforationMask

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from strategies import conv_geometries  # noqa: E402  (tests/ops is not a package)

# Fails instead of skipping when a C++ compiler exists but the op is missing (conftest).
needs_op = pytest.mark.usefixtures("fused_op")
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FUZZ_EXAMPLES = int(os.environ.get("TFPRIORS_FUZZ_EXAMPLES", "60"))


def _op(x, w, kept, fill, strides, pads, size):
    return tfpriors.ops.fused_op_module().perforated_conv2d(
        x, w, kept, fill, strides=list(strides), pads=list(pads), output_size=list(size)
    )


@st.composite
def cases(draw):
    geometry = draw(conv_geometries())
    out = tuple(geometry["size"])
    size = out[0] * out[1]
    kept = sorted(draw(st.sets(st.integers(0, size - 1), min_size=1, max_size=size)))
    mask = PerforationMask(out, kept)
    hostile = draw(
        st.sampled_from(
            [
                None,
                "kept_high",
                "kept_negative",
                "kept_unsorted",
                "fill_high",
                "fill_negative",
                "fill_short",
                "channels",
                "empty_batch",
                "output_size",
                "pads",
                "strides",
                "rank",
                "kept_empty",
            ]
        )
    )
    return dict(
        geometry,
        kept=mask.kept.tolist(),
        fill=mask.fill_index.tolist(),
        hostile=hostile,
        value=draw(st.integers(-(2**31), 2**31 - 1)),
    )


def _corrupt(case):
    hostile, case = case["hostile"], dict(case)
    kept, fill, size = list(case["kept"]), list(case["fill"]), case["size"]
    big = abs(case["value"]) + size[0] * size[1]
    if hostile == "kept_high":
        kept[-1] = big
    elif hostile == "kept_negative":
        kept[0] = -1 - abs(case["value"]) % 1000
    elif hostile == "kept_unsorted":
        kept = kept + [kept[0]]
    elif hostile == "fill_high":
        fill[-1] = len(kept) + abs(case["value"]) % 1000
    elif hostile == "fill_negative":
        fill[0] = -1
    elif hostile == "fill_short":
        fill = fill[:-1]
    elif hostile == "channels":
        case["w_shape"] = case["w_shape"][:2] + [case["w_shape"][2] + 1, case["w_shape"][3]]
    elif hostile == "empty_batch":
        case["x_shape"] = [0] + case["x_shape"][1:]
    elif hostile == "output_size":
        case["size"] = [-size[0], size[1]]
    elif hostile == "pads":
        case["pads"] = [case["w_shape"][0], -1]
    elif hostile == "strides":
        case["strides"] = [0, 1]
    elif hostile == "rank":
        case["x_shape"] = case["x_shape"][1:]
    elif hostile == "kept_empty":
        kept = []
    case["kept"], case["fill"] = kept, fill
    return case


def check_case(case):
    rng = np.random.default_rng(abs(case["value"]) % 1000)
    bad = _corrupt(case)
    x = rng.normal(size=bad["x_shape"]).astype("float32")
    w = rng.normal(size=bad["w_shape"]).astype("float32")
    kept = np.asarray(bad["kept"], np.int32)
    fill = np.asarray(bad["fill"], np.int32)
    if case["hostile"] is None:
        got = _op(x, w, kept, fill, bad["strides"], bad["pads"], bad["size"]).numpy()
        expected = perforated_conv2d_reference(
            x, w, kept, fill, bad["size"], bad["strides"], bad["pads"]
        ).numpy()
        np.testing.assert_allclose(got, expected, atol=1e-4)
    else:
        with pytest.raises((tf.errors.InvalidArgumentError, ValueError)):
            _op(x, w, kept, fill, bad["strides"], bad["pads"], bad["size"]).numpy()


@needs_op
@settings(
    max_examples=FUZZ_EXAMPLES,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)
@given(cases())
def test_fuzz_matches_reference_or_refuses(case):
    check_case(case)


@needs_op
def test_op_inside_tf_function_with_unknown_batch():
    mask = PerforationMask((4, 4), [0, 5, 10, 15])
    w = tf.constant(np.ones((3, 3, 2, 3), "float32"))

    @tf.function(input_signature=[tf.TensorSpec((None, 4, 4, 2), tf.float32)])
    def f(x):
        return tfpriors.ops.perforated_conv2d(
            x, w, mask.kept, mask.fill_index, (4, 4), (1, 1), (1, 1), implementation="fused"
        )

    assert f.get_concrete_function().structured_outputs.shape.as_list() == [None, 4, 4, 3]
    x = np.random.default_rng(0).normal(size=(3, 4, 4, 2)).astype("float32")
    expected = perforated_conv2d_reference(x, w, mask.kept, mask.fill_index, (4, 4), (1, 1), (1, 1))
    np.testing.assert_allclose(f(x).numpy(), expected.numpy(), atol=1e-5)


def test_fallback_warns_once(monkeypatch):
    from tfpriors import ops

    monkeypatch.setitem(ops.library._state, "loaded", True)
    monkeypatch.setitem(ops.library._state, "module", None)
    monkeypatch.setitem(ops.library._state, "error", "test: missing")
    monkeypatch.setitem(ops.library._state, "warned", False)
    assert not ops.has_fused_op()
    x, w = np.ones((1, 3, 3, 1), "float32"), np.ones((3, 3, 1, 1), "float32")
    mask = PerforationMask((3, 3), [0, 4, 8])
    with pytest.warns(ops.FusedOpUnavailableWarning, match="make ops"):
        y = ops.perforated_conv2d(x, w, mask.kept, mask.fill_index, (3, 3), (1, 1), (1, 1))
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ops.perforated_conv2d(x, w, mask.kept, mask.fill_index, (3, 3), (1, 1), (1, 1))
    np.testing.assert_allclose(y.numpy()[0, 1, 1, 0], 9.0)
    with pytest.raises(RuntimeError, match="fused"):
        ops.perforated_conv2d(
            x, w, mask.kept, mask.fill_index, (3, 3), (1, 1), (1, 1), implementation="fused"
        )


def test_bad_implementation():
    with pytest.raises(ValueError, match="implementation"):
        tfpriors.ops.perforated_conv2d(
            None, None, [0], [0], (1, 1), (1, 1), (0, 0), implementation="gpu"
        )


@pytest.mark.slow
def test_fuzz_under_address_sanitizer():
    """Builds the op with -fsanitize=address (make ops-asan) and runs the fuzz under it."""
    import shutil

    if shutil.which("g++") is None:
        pytest.skip("no g++")
    library = os.path.join(ROOT, "tfpriors", "ops", "_perforated_conv_asan.so")
    source = os.path.join(ROOT, "custom_ops", "perforated_conv.cc")
    if not os.path.exists(library) or os.path.getmtime(library) < os.path.getmtime(source):
        subprocess.run(
            [sys.executable, os.path.join(ROOT, "custom_ops", "build.py"), "--asan"],
            check=True,
            cwd=ROOT,
        )

    def runtime_library(name):
        return subprocess.run(
            ["g++", f"-print-file-name={name}"], capture_output=True, text=True, check=True
        ).stdout.strip()

    # libstdc++ preloaded too: ASan must find the real __cxa_throw to intercept it.
    preload = f"{runtime_library('libasan.so')} {runtime_library('libstdc++.so')}"
    env = dict(
        os.environ,
        LD_PRELOAD=preload,
        ASAN_OPTIONS="detect_leaks=0",
        TFPRIORS_OPS_LIBRARY=library,
        TFPRIORS_FUZZ_EXAMPLES="300",
        PYTHONPATH=ROOT,
    )
    implementations = os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "test_implementations.py"
    )
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:xdist",
            "-p",
            "no:cacheprovider",
            os.path.abspath(__file__),
            implementations,
            "-k",
            "fuzz_matches or unknown_batch or conv_at_positions or gemm_kernel",
            "-m",
            "not slow",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "6 passed" in result.stdout
