"""The fuzz driver of the fused noise ops (fuzz/fuzz_lrt_sample.py) and its seed inputs.

The replay and random-input tests run the driver against the normal build of
the compiled op (a failure, not a skip, when a C++ compiler exists but the op
did not build). The contract check itself is tested against stand-in ops that
are right, wrong in their numbers or wrong in their errors, which need no
compiled op. The sanitizer run is ``make fuzz`` (``tests/ops/test_fuzz_op.py``
has its slow test, which runs every target).
"""

import glob
import os
import sys

import numpy as np
import pytest
import tensorflow as tf

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "fuzz"))

import fuzz_lrt_sample as driver  # noqa: E402  (fuzz/ is not a package)

needs_op = pytest.mark.usefixtures("fused_op")
REGRESSIONS = sorted(
    path
    for path in glob.glob(os.path.join(ROOT, "fuzz", "regressions", "lrt_sample", "*"))
    if os.path.isfile(path)
)
INT64_MAX = 2**63 - 1


def _call(**changes):
    """A valid call of ``LrtSample`` on 2 x 3 elements."""
    call = driver.Call(
        op="sample",
        values_shape=[2, 3],
        variance_shape=[2, 3],
        key=np.array([12345], np.uint64),
        counter=np.array([2**32 - 3, 7], np.uint64),
        offset=np.array(5, np.int64),
    )
    for name, value in changes.items():
        setattr(call, name, value)
    return call


class _StandIn:
    """Stands in for the op library: the contract's formula, optionally broken."""

    def __init__(self, shift=0, scale=1.0, error=None, check_nothing=False):
        self.shift, self.scale, self.error = shift, scale, error
        self.check_nothing = check_nothing

    def _run(self, op, values, variance, key, counter, offset, variance_floor):
        if self.error is not None:
            raise self.error
        if not tf.executing_eagerly():
            return tf.identity(values)  # the shape function: the shape of the values
        if self.check_nothing:
            return tf.zeros(tf.shape(values), tf.float32)
        if values.dtype != tf.float32 or offset.shape.rank != 0 or values.shape != variance.shape:
            raise tf.errors.InvalidArgumentError(None, None, "refused")
        n = int(np.prod(values.shape))
        eps = driver.reference_noise(key.numpy(), counter.numpy(), int(offset) + self.shift, n)
        out = driver.expected_output(
            op, values.numpy().reshape(-1), variance.numpy().reshape(-1), variance_floor, eps
        )
        return tf.constant(out.reshape(values.shape) * np.float32(self.scale))

    def lrt_sample(self, *args, variance_floor=0.0):
        return self._run("sample", *args, variance_floor)

    def lrt_sample_variance_grad(self, *args, variance_floor=0.0):
        return self._run("variance_grad", *args, variance_floor)


def test_seed_inputs_exist():
    """The hand-picked seeds are replayed (an empty folder would test nothing)."""
    names = {os.path.basename(path) for path in REGRESSIONS}
    assert {"seed-offset-at-int64-limit", "seed-128-bit-counter-wraps"} <= names


@needs_op
@pytest.mark.parametrize("path", REGRESSIONS, ids=os.path.basename)
def test_fuzz_seeds_replay(path):
    with open(path, "rb") as f:
        driver.check(driver.decode(f.read()))


@needs_op
def test_fuzz_driver_on_random_inputs():
    """A few hundred random inputs against the normal build, valid and hostile both seen."""
    rng = np.random.default_rng(0)
    valid, ops, corruptions = 0, set(), set()
    for _ in range(250):
        call = driver.decode(rng.integers(0, 256, rng.integers(0, 300), dtype=np.uint8).tobytes())
        valid += not driver.violations(call)
        ops.add(call.op)
        corruptions |= {change.split(":")[0].split("=")[0] for change in call.corruptions}
        driver.check(call)
    assert 60 <= valid <= 190
    assert ops == set(driver.OPS)
    assert {"values_shape", "key_shape", "counter_shape", "offset", "variance_floor"} <= corruptions


@needs_op
@pytest.mark.parametrize(
    "changes",
    [
        {"variance_floor": -0.0},  # valid: -0 >= 0
        {"variance_floor": -1e-46},  # valid: rounds to -0 in the float32 attribute
        {"variance_floor": 1e39},  # invalid: the float32 attribute is inf
        {"offset": np.array(INT64_MAX - 6, np.int64)},  # the last valid offset
        {"offset": np.array(INT64_MAX - 5, np.int64)},  # one past it
        {"variance_shape": [3, 2]},  # as many elements, another shape
        {"values_shape": [], "variance_shape": []},  # a scalar
        {"op": "variance_grad", "graph_mode": True, "known_seed": 3},
        {"gradient": True, "isa": "scalar"},
    ],
    ids=repr,
)
def test_fuzz_driver_on_edge_calls(changes):
    driver.check(_call(**changes))


def test_violations_follow_the_ops_rules():
    assert driver.violations(_call()) == []
    assert driver.violations(_call(variance_floor=-1e-46)) == []
    assert driver.violations(_call(offset=np.array(INT64_MAX - 6, np.int64))) == []
    for changes in (
        {"variance_floor": float("nan")},
        {"variance_floor": 1e39},
        {"variance_floor": -1e-30},
        {"offset": np.array(INT64_MAX - 5, np.int64)},
        {"offset": np.array(-1, np.int64)},
        {"offset": np.array([5], np.int64)},
        {"offset": np.array(5, np.int32)},
        {"key": np.array([1, 2], np.uint64)},
        {"counter": np.array([1, 2], np.int64)},
        {"variance_shape": [3, 2]},
        {"values_dtype": "float64"},
    ):
        assert driver.violations(_call(**changes)), changes


def test_contract_check_catches_wrong_numbers_and_wrong_errors(monkeypatch):
    monkeypatch.setattr(driver, "op_module", lambda: _StandIn())
    driver.check(_call())
    driver.check(_call(op="variance_grad", graph_mode=True))
    driver.check(_call(variance_shape=[3, 2]))  # refused, as it must be
    for stand_in, message in (
        (_StandIn(shift=1), "differs from the reference"),
        (_StandIn(scale=1.001), "differs from the reference"),
        (_StandIn(error=tf.errors.InternalError(None, None, "boom")), "InternalError"),
        (_StandIn(error=tf.errors.InvalidArgumentError(None, None, "no")), "valid call refused"),
    ):
        monkeypatch.setattr(driver, "op_module", lambda stand_in=stand_in: stand_in)
        with pytest.raises(driver.ContractViolation, match=message):
            driver.check(_call(op="variance_grad"))
    # An op that accepts a bad offset is a finding even when nothing crashes.
    monkeypatch.setattr(driver, "op_module", lambda: _StandIn(check_nothing=True))
    with pytest.raises(driver.ContractViolation, match="invalid call accepted"):
        driver.check(_call(offset=np.array(-1, np.int64)))
    # A shape function that refuses a valid call.
    monkeypatch.setattr(
        driver, "op_module", lambda: _StandIn(error=ValueError("Dimensions must be equal"))
    )
    with pytest.raises(driver.ContractViolation, match="shape function refused"):
        driver.check(_call(graph_mode=True))


def test_mismatches_accepts_rounding_and_flushed_subnormals_only():
    eps = np.array([0.5, -1.25, 2.0, 0.75], np.float32)
    values = np.array([1.0, 1e-40, -2.0, np.nan], np.float32)
    variance = np.array([4.0, 0.0, 1e-40, 1.0], np.float32)
    exact = driver.expected_output("sample", values, variance, 0.0, eps)
    assert driver.mismatches("sample", exact, values, variance, 0.0, eps).size == 0
    assert driver.mismatches("sample", exact * (1 + 1e-7), values, variance, 0.0, eps).size == 0
    flushed = driver.expected_output("sample", values, variance, 0.0, eps, flush=True)
    assert flushed[1] == 0 and exact[1] != 0  # the mean 1e-40 is flushed
    assert driver.mismatches("sample", flushed, values, variance, 0.0, eps).size == 0
    wrong = exact.copy()
    wrong[0] += 1e-3
    np.testing.assert_array_equal(
        driver.mismatches("sample", wrong, values, variance, 0.0, eps), [0]
    )
    finite_for_nan = np.where(np.isnan(exact), 0.0, exact)
    np.testing.assert_array_equal(
        driver.mismatches("sample", finite_for_nan, values, variance, 0.0, eps), [3]
    )
    # The gradient at variance 0: +-inf, and NaN where the incoming gradient is 0.
    grad = np.array([1.0, 0.0], np.float32)
    zero = np.zeros(2, np.float32)
    expected = driver.expected_output("variance_grad", grad, zero, 0.0, eps[:2])
    assert np.isinf(expected[0]) and np.isnan(expected[1])
    assert driver.mismatches("variance_grad", expected, grad, zero, 0.0, eps[:2]).size == 0
    np.testing.assert_array_equal(
        driver.mismatches("variance_grad", -expected, grad, zero, 0.0, eps[:2]), [0]
    )


@pytest.mark.parametrize(
    "counter, offset",
    [
        ((0, 0), 0),
        ((2**32 - 3, 7), 4097),
        ((2**64 - 3, 5), 21),  # the low 64-bit word carries into the high one
        ((2**64 - 3, 2**64 - 1), 43),  # the 128-bit counter wraps to 0
    ],
)
def test_reference_noise_advancing_the_counter_matches_a_direct_draw(counter, offset):
    direct = driver.reference_noise([99], counter, offset, 37)
    advanced = driver.reference_noise([99], counter, offset, 37, direct_limit=0)
    np.testing.assert_array_equal(direct, advanced)
    whole = tf.raw_ops.StatelessRandomNormalV2(
        shape=[offset + 37],
        key=tf.constant([99], tf.uint64),
        counter=tf.constant(counter, tf.uint64),
        alg=1,
    )
    np.testing.assert_array_equal(direct, whole.numpy()[offset:])


def test_decoder_is_total():
    """Any bytes decode to a call: none, all zero (a valid call) or all 0xff."""
    for data in (b"", b"\0" * 64, b"\xff" * 1024):
        driver.violations(driver.decode(data))
    assert driver.violations(driver.decode(b"")) == []
    reader = driver.ByteReader(b"\xff")
    assert reader.integer(0, 3) == 3
    assert reader.integer(5, 2**64) == 5  # past the end: the low bound
