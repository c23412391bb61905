"""Every implementation of the perforated convolution and of the convolution at chosen
positions against a NumPy oracle, their gradients against finite differences, the
lattice detection, the auto choice and the portable, versioned build."""

import os
import shutil
import subprocess
import sys
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tfpriors
from tfpriors.layers import PerforatedConv2D
from tfpriors.ops import autotune, library
from tfpriors.perforation import make_mask
from tfpriors.perforation.masks import lattice_mask

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from strategies import conv_geometries  # noqa: E402  (tests/ops is not a package)

EXAMPLES = int(os.environ.get("TFPRIORS_FUZZ_EXAMPLES", "40"))


def numpy_conv(x, w, strides, pads, output_shape):
    """The convolution at every output position, by definition (zero padding)."""
    kh, kw, _, filters = w.shape
    out_h, out_w = output_shape
    need_h = (out_h - 1) * strides[0] + kh
    need_w = (out_w - 1) * strides[1] + kw
    padded = np.zeros(
        (
            x.shape[0],
            max(need_h, x.shape[1] + pads[0]),
            max(need_w, x.shape[2] + pads[1]),
            x.shape[3],
        ),
        np.float64,
    )
    padded[:, pads[0] : pads[0] + x.shape[1], pads[1] : pads[1] + x.shape[2]] = x
    out = np.zeros((x.shape[0], out_h, out_w, filters))
    for i in range(out_h):
        for j in range(out_w):
            patch = padded[
                :, i * strides[0] : i * strides[0] + kh, j * strides[1] : j * strides[1] + kw
            ]
            out[:, i, j] = np.einsum("nabc,abco->no", patch, w)
    return out


def oracle(x, w, mask, strides, pads):
    full = numpy_conv(x, w, strides, pads, mask.output_shape)
    flat = full.reshape(x.shape[0], -1, w.shape[-1])[:, mask.nearest]
    return flat.reshape(x.shape[0], *mask.output_shape, w.shape[-1])


@st.composite
def layer_cases(draw):
    n = draw(st.integers(1, 3))
    h, w = draw(st.integers(2, 9)), draw(st.integers(2, 9))
    c, o = draw(st.integers(1, 4)), draw(st.integers(1, 5))
    k = draw(st.sampled_from([(1, 1), (3, 3), (2, 3), (3, 1)]))
    strides = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    padding = draw(st.sampled_from(["same", "valid"]))
    if padding == "valid" and (h < k[0] or w < k[1]):
        padding = "same"
    rate = draw(st.sampled_from([0.25, 0.5, 0.6, 0.75, 0.9]))
    kind = draw(st.sampled_from(["uniform", "grid", "lattice", "structure"]))
    return dict(
        x_shape=(n, h, w, c),
        kernel=(*k, c, o),
        strides=strides,
        padding=padding,
        rate=rate,
        kind=kind,
        seed=draw(st.integers(0, 100)),
    )


def _case_arrays(case):
    rng = np.random.default_rng(case["seed"])
    x = rng.normal(size=case["x_shape"]).astype("float32")
    w = rng.normal(size=case["kernel"]).astype("float32")
    out_h, out_w, pad_top, pad_left = tfpriors.ops.conv_geometry(
        case["x_shape"][1:3], case["kernel"][:2], case["strides"], case["padding"]
    )
    mask = make_mask(case["kind"], (out_h, out_w), case["rate"], seed=case["seed"])
    return x, w, mask, (pad_top, pad_left)


def _implementations(mask):
    names = ["reference", "dense"]
    if tfpriors.ops.lattice_of(mask.kept, mask.output_shape) is not None:
        names.append("strided")
    if tfpriors.ops.has_fused_op():
        names.append("fused")
    return names


@settings(
    max_examples=EXAMPLES, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck)
)
@given(layer_cases())
def test_every_implementation_equals_the_definition(case):
    x, w, mask, pads = _case_arrays(case)
    expected = oracle(x, w, mask, case["strides"], pads)
    for implementation in _implementations(mask):
        got = tfpriors.ops.perforated_conv2d(
            x,
            w,
            mask.kept,
            mask.fill_index,
            mask.output_shape,
            case["strides"],
            pads,
            implementation=implementation,
        )
        np.testing.assert_allclose(
            got.numpy(), expected, atol=1e-4, rtol=1e-4, err_msg=implementation
        )


def test_bias_and_activation_are_applied_before_the_fill_identically():
    x, w, mask, pads = _case_arrays(
        dict(
            x_shape=(2, 6, 6, 3),
            kernel=(3, 3, 3, 4),
            strides=(1, 1),
            padding="same",
            rate=0.5,
            kind="lattice",
            seed=3,
        )
    )
    bias = np.linspace(-1, 1, 4).astype("float32")
    expected = np.maximum(oracle(x, w, mask, (1, 1), pads) + bias, 0)
    for implementation in _implementations(mask):
        got = tfpriors.ops.perforated_conv2d(
            x,
            w,
            mask.kept,
            mask.fill_index,
            (6, 6),
            (1, 1),
            pads,
            implementation=implementation,
            bias=bias,
            activation=tf.nn.relu,
        )
        np.testing.assert_allclose(got.numpy(), expected, atol=1e-4, err_msg=implementation)


@pytest.mark.parametrize("implementation", ["reference", "strided", "dense", "fused"])
def test_gradients_match_finite_differences(implementation, request):
    if implementation == "fused":
        request.getfixturevalue("fused_op")
    rng = np.random.default_rng(2)
    mask = lattice_mask((5, 4), 0.5)  # a lattice, so that every implementation applies
    x = tf.constant(rng.normal(size=(2, 5, 4, 2)).astype("float32"))
    kernel = tf.constant(rng.normal(size=(3, 3, 2, 3)).astype("float32"))

    @tf.function
    def f(x, kernel):
        return tfpriors.ops.perforated_conv2d(
            x,
            kernel,
            mask.kept,
            mask.fill_index,
            (5, 4),
            (1, 1),
            (1, 1),
            implementation=implementation,
        )

    theoretical, numerical = tf.test.compute_gradient(f, [x, kernel], delta=1e-2)
    for t, n in zip(theoretical, numerical):
        np.testing.assert_allclose(t, n, atol=5e-3)


@st.composite
def position_cases(draw):
    geometry = draw(conv_geometries(max_batch=4, max_stride=2, max_filters=4))
    n, out = geometry["x_shape"][0], tuple(geometry["size"])
    # Any positions of the batch: unsorted, repeated, some images untouched.
    positions = draw(st.lists(st.integers(0, n * out[0] * out[1] - 1), max_size=30))
    return dict(
        x_shape=tuple(geometry["x_shape"]),
        kernel=tuple(geometry["w_shape"]),
        strides=tuple(geometry["strides"]),
        pads=tuple(geometry["pads"]),
        out=out,
        positions=positions,
        seed=draw(st.integers(0, 100)),
    )


@pytest.mark.usefixtures("fused_op")
@settings(
    max_examples=EXAMPLES, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck)
)
@given(position_cases())
def test_conv_at_positions_and_its_gradients(case):
    rng = np.random.default_rng(case["seed"])
    x = tf.constant(rng.normal(size=case["x_shape"]).astype("float32"))
    w = tf.constant(rng.normal(size=case["kernel"]).astype("float32"))
    positions = tf.constant(np.asarray(case["positions"], np.int32))
    full = numpy_conv(x.numpy(), w.numpy(), case["strides"], case["pads"], case["out"])
    expected = full.reshape(-1, case["kernel"][-1])[case["positions"]]
    upstream = tf.constant(
        rng.normal(size=(len(case["positions"]), case["kernel"][-1])).astype("float32")
    )
    results = {}
    for implementation in ("reference", "fused"):
        with tf.GradientTape() as tape:
            tape.watch([x, w])
            rows = tfpriors.ops.conv_at_positions(
                x,
                w,
                positions,
                case["out"],
                case["strides"],
                case["pads"],
                implementation=implementation,
            )
            loss = tf.reduce_sum(rows * upstream)
        np.testing.assert_allclose(rows.numpy(), expected.reshape(rows.shape), atol=1e-4)
        results[implementation] = tape.gradient(loss, [x, w])
    for fused, reference in zip(results["fused"], results["reference"]):
        np.testing.assert_allclose(fused.numpy(), reference.numpy(), atol=1e-4)


@pytest.mark.usefixtures("fused_op")
def test_conv_at_positions_refuses_bad_positions_without_crashing():
    module = tfpriors.ops.fused_op_module()
    x, w = tf.zeros((2, 4, 4, 1)), tf.zeros((3, 3, 1, 2))
    for bad in ([32], [-1], [[0]]):
        with pytest.raises((tf.errors.InvalidArgumentError, ValueError), match="positions"):
            module.conv_at_positions(
                x, w, tf.constant(bad, tf.int32), strides=[1, 1], pads=[1, 1], output_size=[4, 4]
            )
    with pytest.raises(tf.errors.InvalidArgumentError, match="grad_rows"):
        module.conv_at_positions_backprop_filter(
            x,
            w,
            tf.constant([0, 1]),
            tf.zeros((3, 2)),
            strides=[1, 1],
            pads=[1, 1],
            output_size=[4, 4],
        )


def test_lattice_detection_and_lattice_masks():
    assert tfpriors.ops.lattice_of([0, 2, 8, 10], (4, 4)) == ((0, 2, 2), (0, 2, 2))
    assert tfpriors.ops.lattice_of([5], (4, 4)) == ((1, 1, 1), (1, 1, 1))
    assert tfpriors.ops.lattice_of([0, 2, 9], (4, 4)) is None  # not a product
    assert tfpriors.ops.lattice_of([0, 1, 3], (1, 4)) is None  # uneven steps
    every_other_row = lattice_mask((56, 56), 0.5)
    assert every_other_row.rate == 0.5
    assert tfpriors.ops.lattice_of(every_other_row.kept, (56, 56)) == ((0, 2, 28), (0, 1, 56))
    quarter = lattice_mask((28, 28), 0.75)
    assert tfpriors.ops.lattice_of(quarter.kept, (28, 28)) == ((0, 2, 14), (0, 2, 14))
    # No lattice has rate 0.25: the nearest lower one (the plain convolution) is taken.
    assert lattice_mask((8, 8), 0.25).rate == 0.0
    with pytest.raises(ValueError, match="rate"):
        lattice_mask((8, 8), 1.0)


def test_auto_choice_is_measured_once_per_shape_and_cached(monkeypatch):
    autotune.clear_cache()
    calls = []
    real_measure = autotune.measure

    def counting_measure(*args, **kwargs):
        calls.append(args[0])
        return real_measure(*args, **kwargs, batches=(1,), repeats=1)

    monkeypatch.setattr(autotune, "measure", counting_measure)
    monkeypatch.setattr(autotune, "MIN_TIMED_MACS", 0)
    monkeypatch.delenv("TFPRIORS_AUTOTUNE", raising=False)
    mask = lattice_mask((8, 8), 0.75)
    first = PerforatedConv2D(8, 3, padding="same", mask=mask)
    first.build((None, 8, 8, 4))
    assert first.selected_implementation in autotune.candidates(mask.kept, (8, 8))
    second = PerforatedConv2D(8, 3, padding="same", mask=mask)
    second.build((None, 8, 8, 4))
    assert len(calls) == 1 and second.selected_implementation == first.selected_implementation
    # Without timing (TFPRIORS_AUTOTUNE=0) the rule applies: a lattice runs strided.
    monkeypatch.setenv("TFPRIORS_AUTOTUNE", "0")
    autotune.clear_cache()
    third = PerforatedConv2D(8, 3, padding="same", mask=mask)
    third.build((None, 8, 8, 4))
    assert third.selected_implementation == "strided" and len(calls) == 1


def test_auto_choice_is_saved_and_loaded_without_timing(tmp_path, monkeypatch):
    inputs = keras.Input((8, 8, 3))
    outputs = PerforatedConv2D(4, 3, padding="same", rate=0.5, mask="uniform", seed=1, name="conv")(
        inputs
    )
    model = keras.Model(inputs, outputs)
    chosen = model.get_layer("conv").selected_implementation
    small = model.get_layer("conv").small_batch_implementation
    assert model.get_layer("conv").get_config()["selected_implementation"] == chosen
    assert model.get_layer("conv").get_config()["small_batch_implementation"] == small
    model.save(tmp_path / "m.keras")

    def no_timing(*args, **kwargs):
        raise AssertionError("a loaded layer must reuse its saved choice")

    monkeypatch.setattr(autotune, "choose", no_timing)
    loaded = keras.models.load_model(tmp_path / "m.keras")
    assert loaded.get_layer("conv").selected_implementation == chosen
    assert loaded.get_layer("conv").small_batch_implementation == small
    x = np.random.default_rng(0).normal(size=(2, 8, 8, 3)).astype("float32")
    np.testing.assert_allclose(loaded(x).numpy(), model(x).numpy(), atol=1e-6)


def test_small_and_large_batches_may_run_different_implementations():
    """A saved choice of two implementations: an unknown batch picks one at run time."""
    inputs = keras.Input((8, 8, 3))
    layer = PerforatedConv2D(
        4,
        3,
        padding="same",
        rate=0.5,
        mask="uniform",
        seed=2,
        selected_implementation="reference",
        small_batch_implementation="dense",
        name="conv",
    )
    model = keras.Model(inputs, layer(inputs))
    assert (layer.small_batch_implementation, layer.selected_implementation) == (
        "dense",
        "reference",
    )
    function = tf.function(
        lambda x: model(x, training=False),
        input_signature=[tf.TensorSpec((None, 8, 8, 3), tf.float32)],
    )
    graph = function.get_concrete_function().graph
    assert any(op.type in ("If", "StatelessIf") for op in graph.get_operations())
    rng = np.random.default_rng(0)
    weights = [w.numpy() for w in layer.weights]
    for batch in (1, 16):
        x = rng.normal(size=(batch, 8, 8, 3)).astype("float32")
        expected = oracle(x, weights[0], layer.mask, (1, 1), (1, 1)) + weights[1]
        np.testing.assert_allclose(function(x).numpy(), expected, atol=1e-4)


def test_explicit_strided_needs_a_lattice():
    with pytest.raises(ValueError, match="lattice"):
        PerforatedConv2D(4, 3, rate=0.5, mask="uniform", implementation="strided").build(
            (None, 8, 8, 1)
        )
    with pytest.raises(ValueError, match="implementation"):
        PerforatedConv2D(4, 3, rate=0.5, implementation="fast")


def test_portable_build_flags_and_recorded_version(fused_op):
    sys.path.insert(0, os.path.join(ROOT, "custom_ops"))
    import build

    assert not any(flag.startswith(("-march", "-mavx", "-mfma")) for flag in build.PORTABLE_FLAGS)
    assert library.built_against() == tf.__version__
    objdump = shutil.which("objdump")
    if objdump is not None:
        # Wide registers only inside the micro-kernels and the noise op's vector code,
        # compiled for their own target and called after a CPUID check: the library
        # loads and runs on any x86-64 CPU.
        disassembly = subprocess.run(
            [objdump, "-d", "-C", "--no-show-raw-insn", library.library_path()],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        wide = set()
        function = None
        for line in disassembly.splitlines():
            if line.endswith(">:"):
                function = line
            elif "%ymm" in line or "%zmm" in line:
                wide.add(function)
        targeted = ("packed_gemm::", "philox::avx512::", "philox::avx2::")
        assert wide and all(any(t in name for t in targeted) for name in wide), sorted(wide)[:5]
        # Both instruction sets of the noise op are there, each in its own functions.
        assert any("philox::avx512::" in name for name in wide)
        assert any("philox::avx2::" in name for name in wide)


def test_a_library_built_for_another_tensorflow_is_not_loaded(fused_op, tmp_path, monkeypatch):
    data = open(library.library_path(), "rb").read()
    tag = f"tfpriors-built-against-tensorflow={tf.__version__};".encode()
    assert tag in data
    other = tmp_path / "_perforated_conv.so"
    other.write_bytes(data.replace(tag, b"tfpriors-built-against-tensorflow=1.0.0;"))
    monkeypatch.setattr(library, "LIBRARY_PATH", str(other))
    for key, value in {
        "loaded": False,
        "module": None,
        "error": None,
        "warned": False,
        "handle": None,
    }.items():
        monkeypatch.setitem(library._state, key, value)
    assert not library.has_fused_op()
    assert "built against TensorFlow 1.0.0" in library.load_error()
    x = np.ones((1, 4, 4, 1), "float32")
    mask = make_mask("uniform", (4, 4), 0.5, seed=0)
    with pytest.warns(library.FusedOpUnavailableWarning, match="1.0.0"):
        tfpriors.ops.perforated_conv2d(
            x, np.ones((3, 3, 1, 1), "float32"), mask.kept, mask.fill_index, (4, 4), (1, 1), (1, 1)
        )
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once only
        tfpriors.ops.perforated_conv2d(
            x, np.ones((3, 3, 1, 1), "float32"), mask.kept, mask.fill_index, (4, 4), (1, 1), (1, 1)
        )


@pytest.mark.skipif(not tf.config.list_physical_devices("GPU"), reason="no GPU visible")
def test_gpu_kernel_matches_the_reference(fused_op):
    rng = np.random.default_rng(0)
    mask = make_mask("uniform", (8, 8), 0.5, seed=0)
    x = rng.normal(size=(2, 8, 8, 3)).astype("float32")
    w = rng.normal(size=(3, 3, 3, 4)).astype("float32")
    with tf.device("/GPU:0"):
        got = fused_op.perforated_conv2d(
            x, w, mask.kept, mask.fill_index, strides=[1, 1], pads=[1, 1], output_size=[8, 8]
        )
    assert "GPU" in got.device
    np.testing.assert_allclose(got.numpy(), oracle(x, w, mask, (1, 1), (1, 1)), atol=1e-4)


@pytest.mark.parametrize("kernel", ["avx512", "blas"])
def test_every_gemm_kernel_equals_the_definition(kernel, fused_op):
    """The packed micro-kernels and the BLAS fallback, on every remainder of the tiles."""
    available = {"avx512": "avx512f"}
    flags = open("/proc/cpuinfo").read() if os.path.exists("/proc/cpuinfo") else ""
    if kernel in available and f" {available[kernel]} " not in f" {flags} ":
        pytest.skip(f"this CPU has no {kernel}")
    try:
        assert library.select_gemm(kernel) == (kernel if kernel != "blas" else "openblas")
        rng = np.random.default_rng(0)
        for rows, filters, channels in [(1, 1, 1), (13, 33, 5), (25, 17, 3), (97, 64, 16)]:
            x = tf.constant(rng.normal(size=(2, 7, 7, channels)).astype("float32"))
            w = tf.constant(rng.normal(size=(3, 3, channels, filters)).astype("float32"))
            positions = tf.constant(
                rng.choice(98, size=min(rows, 98), replace=False).astype("int32")
            )
            full = numpy_conv(x.numpy(), w.numpy(), (1, 1), (1, 1), (7, 7))
            expected = full.reshape(-1, filters)[positions.numpy()]
            upstream = tf.constant(rng.normal(size=expected.shape).astype("float32"))
            with tf.GradientTape() as tape:
                tape.watch([x, w])
                got = tfpriors.ops.conv_at_positions(
                    x, w, positions, (7, 7), (1, 1), (1, 1), implementation="fused"
                )
                loss = tf.reduce_sum(got * upstream)
            np.testing.assert_allclose(got.numpy(), expected, atol=1e-4, rtol=1e-4)
            grads = tape.gradient(loss, [x, w])
            with tf.GradientTape() as tape:
                tape.watch([x, w])
                loss = tf.reduce_sum(
                    tfpriors.ops.conv_at_positions_reference(
                        x, w, positions, (7, 7), (1, 1), (1, 1)
                    )
                    * upstream
                )
            for got_grad, want in zip(grads, tape.gradient(loss, [x, w])):
                np.testing.assert_allclose(got_grad.numpy(), want.numpy(), atol=1e-4)
    finally:
        library.select_gemm("auto")
    with pytest.raises(ValueError, match="name"):
        library.select_gemm("sse9")


def test_a_compiler_failure_is_reported_with_its_first_error(tmp_path):
    """custom_ops/build.py stops with the compiler's first error (make test shows it)."""
    sys.path.insert(0, os.path.join(ROOT, "custom_ops"))
    import build

    error = build.first_error(
        "x.cc:1:1: warning: w\nx.cc:3:5: error: 'y' was not declared\n    3 | y;\nmore"
    )
    assert error.startswith("x.cc:3:5: error: 'y' was not declared")
    if shutil.which(os.environ.get("CXX", "g++")) is None:
        pytest.skip("no C++ compiler")
    source = tmp_path / "broken.cc"
    source.write_text("int f() { return undeclared_name; }\n")
    with pytest.raises(build.BuildError, match="undeclared_name"):
        build.run([os.environ.get("CXX", "g++"), "-c", str(source), "-o", str(tmp_path / "x.o")])


def test_sparse_residual_unit_refuses_bad_shapes_without_crashing(fused_op):
    x = tf.zeros((2, 5, 5, 3))
    active = tf.zeros((2, 5, 5), tf.bool)
    k, b = tf.zeros((3, 3, 3, 3)), tf.zeros((3,))
    good = dict(input=x, active=active, kernel1=k, bias1=b, kernel2=k, bias2=b)
    bad_cases = {
        "active": dict(good, active=tf.zeros((2, 5, 4), tf.bool)),
        "odd": dict(good, kernel1=tf.zeros((2, 2, 3, 3)), kernel2=tf.zeros((2, 2, 3, 3))),
        "preserve": dict(good, kernel1=tf.zeros((3, 3, 3, 4))),
        "bias": dict(good, bias2=tf.zeros((4,))),
        "4-D": dict(good, input=tf.zeros((5, 5, 3))),
    }
    for match, arguments in bad_cases.items():
        with pytest.raises((tf.errors.InvalidArgumentError, ValueError), match=match):
            fused_op.sparse_residual_unit(**arguments)
    # Nothing active: the input, unchanged; an empty batch works too.
    np.testing.assert_array_equal(fused_op.sparse_residual_unit(**good).numpy(), x.numpy())
    empty = dict(good, input=tf.zeros((0, 5, 5, 3)), active=tf.zeros((0, 5, 5), tf.bool))
    assert fused_op.sparse_residual_unit(**empty).shape == (0, 5, 5, 3)
