"""Fuzz target of the fused noise ops ``LrtSample`` / ``LrtSampleVarianceGrad``.

Every fuzz input is decoded into one call of one of the two raw ops:
``lrt_sample(mean, variance, key, counter, offset, variance_floor)``, which is
``mean + sqrt(variance + floor) * eps``, or
``lrt_sample_variance_grad(grad, variance, ...)``, which is
``grad * eps / (2 sqrt(variance + floor))``; ``eps[i]`` is element
``offset + i`` of TensorFlow's ``StatelessRandomNormalV2(key, counter, alg=Philox)``.
The decoder builds a valid call first (shapes of rank 0 to 5, some larger than a
2,048-element chunk; keys and counters at the 32- and 64-bit wrap points;
offsets from 0 to ``2**63 - 1 - n``; values with NaN, infinities, negative and
subnormal variances; each vector code of the CPU) and then applies zero to
three corruptions: mismatched, zero-size and huge shapes, wrong dtypes, keys and
counters of the wrong shape, negative or overflowing offsets of any rank, and
``variance_floor`` attributes that are negative, NaN or infinite.

The contract checked on every input:

- a valid call returns, element by element, the formula above with ``eps`` from
  TensorFlow's own stateless kernel (:func:`reference_noise`, which advances
  the 128-bit counter itself for offsets too large to draw), within
  ``1e-5 * (1 + magnitude of the terms)``, with NaN and infinities where the
  formula in float32 has them;
- an invalid call raises ``InvalidArgumentError`` (or ``ValueError`` /
  ``TypeError`` from shape inference and argument conversion);
- in graph mode the shape function accepts every valid call and infers a
  shape compatible with the eager output;
- the gradient registered for ``LrtSample`` passes the incoming gradient to
  the mean and gives the variance the formula of ``LrtSampleVarianceGrad``.

Validity is decided here (:func:`violations`), independently of the C++
checks, so an op that accepts a bad offset is a finding too. Anything else
raises :class:`ContractViolation`, which atheris reports as a crash; memory
errors, undefined behaviour and hangs are caught by the sanitizers and
libFuzzer.

TensorFlow runs kernels with denormals flushed to zero (FTZ / DAZ), so each
element may also match the formula computed with subnormal inputs and
intermediates flushed.

    python fuzz/fuzz_lrt_sample.py [libFuzzer flags] [corpus dirs]

(through ``fuzz/run_fuzz.py --target lrt_sample``, which preloads the
sanitizer runtimes).
"""

import dataclasses
import os
import sys

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

# The byte reader, the finding and the libFuzzer set-up are the other target's.
from fuzz_perforated_conv import (  # noqa: E402
    ByteReader,
    ContractViolation,
    run_fuzzer,
)

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
MASK64 = 2**64 - 1
FLT_MAX = float(np.finfo(np.float32).max)
FLT_MIN = float(np.finfo(np.float32).tiny)  # the smallest normal float32
OPS = ("sample", "variance_grad")
# The vector code of the op: "auto" is the CPU's widest; a narrower one is forced
# (tfpriors.ops.library.select_noise_isa) where the CPU runs it.
ISAS = ("auto", "scalar", "avx2", "avx512")
# Cap on the elements of a valid call; corruptions may grow a shape up to 4x.
MAX_ELEMENTS = 1 << 16
MAX_MATERIALISED = 4 * MAX_ELEMENTS
# Up to this many elements the reference draws the stream from its start; past it,
# it advances the counter by offset // 4 blocks first.
DIRECT_LIMIT = 1 << 17
HUGE_DIMENSIONS = (2**20, 2**31 - 1, 2**31, 2**40, 2**62)
# 64-bit key and counter words at the points where the 128-bit counter carries.
INTERESTING_WORDS = (
    0,
    1,
    2**32 - 1,
    2**32 - 5,
    2**32 - 64,
    2**32,
    2**63,
    MASK64,
    MASK64 - 3,
    MASK64 - 64,
)
VALID_FLOORS = (0.0, 0.0, 1e-8, 0.5, 1.0, 1e-45, FLT_MAX, -0.0)
BAD_FLOORS = (-1.0, -1e-30, float("nan"), float("inf"), float("-inf"), 1e39, -FLT_MAX)
# Floors that look odd but are valid once rounded to the float32 attribute.
ODD_FLOORS = (-1e-46, 5e-324, 3.4028235e38)
VALUE_KINDS = ("normal", "positive", "special", "zero", "tiny", "huge")
SPECIAL_VALUES = np.array(
    [np.nan, np.inf, -np.inf, 0.0, -0.0, FLT_MAX, -FLT_MAX, 1e-40, -1e-40, FLT_MIN, -1.0],
    np.float32,
)


@dataclasses.dataclass
class Call:
    """One call of a raw noise op, as the fuzzer built it.

    ``values`` is the first input: the mean for ``"sample"``, the incoming
    gradient for ``"variance_grad"``.
    """

    op: str
    values_shape: list
    variance_shape: list
    key: np.ndarray
    counter: np.ndarray
    offset: np.ndarray
    variance_floor: float = 0.0
    values_dtype: str = "float32"
    variance_dtype: str = "float32"
    values_kind: str = "normal"
    variance_kind: str = "positive"
    seed: int = 0
    isa: str = "auto"
    graph_mode: bool = False
    known_seed: int = 0
    gradient: bool = False
    corruptions: list = dataclasses.field(default_factory=list)


def _size(shape):
    """The number of elements of ``shape`` (a Python int: no overflow)."""
    size = 1
    for d in shape:
        size *= int(d)
    return size


def _word(reader):
    if reader.flag(3):
        return reader.choice(INTERESTING_WORDS)
    return reader.integer(0, MASK64)


def _valid_shape(reader):
    rank = reader.integer(0, 5)
    shape = [reader.integer(1, 8) for _ in range(rank)]
    if rank and reader.flag(3):
        # One long axis, so that some calls cross the op's 2,048-element chunks.
        axis = reader.integer(0, rank - 1)
        others = _size(shape) // shape[axis]
        cap = reader.choice((64, 512, 4096, MAX_ELEMENTS))
        shape[axis] = reader.integer(1, max(1, cap // others))
    return shape


def _valid_offset(reader, n):
    kind = reader.integer(0, 7)
    if kind <= 2:
        return 0
    if kind == 3:
        return reader.integer(0, 64)
    if kind == 4:
        return reader.integer(0, 10_000)
    if kind == 5:
        # Around block 2**32: the low counter word wraps within the draw.
        return 4 * 2**32 - reader.integer(0, 4 * 64)
    if kind == 6:
        return reader.integer(0, 2**62)
    return max(0, INT64_MAX - n - reader.integer(0, 8))


def _valid_call(reader):
    """A well-formed call: every rule of the ops holds."""
    op = reader.choice(OPS)
    shape = _valid_shape(reader)
    n = _size(shape)
    offset = _valid_offset(reader, n)
    return Call(
        op=op,
        values_shape=list(shape),
        variance_shape=list(shape),
        key=np.array([_word(reader)], np.uint64),
        counter=np.array([_word(reader), _word(reader)], np.uint64),
        offset=np.array(offset, np.int64),
        variance_floor=reader.choice(VALID_FLOORS),
        values_kind=reader.choice(("normal", "normal", *VALUE_KINDS)),
        variance_kind=reader.choice(("positive", "positive", *VALUE_KINDS)),
        seed=reader.integer(0, 2**16),
        isa=reader.choice(ISAS),
    )


def _corrupt_shape(reader, call):
    which = reader.choice(("values", "variance", "both"))
    shape = list(getattr(call, f"{which}_shape" if which != "both" else "values_shape"))
    kind = reader.integer(0, 5)
    axis = reader.integer(0, max(len(shape) - 1, 0))
    if kind == 0:
        shape = shape or [1]
        shape[axis] = 0
    elif kind == 1:
        # A zero-size tensor whose other dimensions are huge: no memory, big numbers.
        shape = shape + [1] * (2 - len(shape))
        shape[axis] = 0
        shape[(axis + 1 + reader.integer(0, len(shape) - 2)) % len(shape)] = reader.choice(
            HUGE_DIMENSIONS
        )
    elif kind == 2 and shape:
        shape[axis] += reader.integer(1, 3)
    elif kind == 3:
        shape = shape[:-1] if shape and reader.flag() else shape + [1]
    elif kind == 4:
        shape = shape[::-1]
    else:
        shape = [reader.integer(1, 4) for _ in range(reader.integer(0, 5))]
    for name in ("values", "variance") if which == "both" else (which,):
        setattr(call, f"{name}_shape", list(shape))
    return f"{which}_shape:{kind}"


def _corrupt_dtype(reader, call):
    which = reader.choice(("values", "variance", "key", "counter", "offset"))
    if which in ("values", "variance"):
        dtype = reader.choice(("float64", "float16", "bfloat16", "int32"))
        setattr(call, f"{which}_dtype", dtype)
    elif which in ("key", "counter"):
        dtype = reader.choice(("int64", "uint32", "int32", "float32"))
        with np.errstate(invalid="ignore"):  # float32 -> int of a huge word: any value
            setattr(call, which, getattr(call, which).astype(dtype))
    else:
        dtype = reader.choice(("int32", "uint64", "float32"))
        with np.errstate(invalid="ignore"):
            call.offset = call.offset.astype(dtype)
    return f"{which}_dtype={dtype}"


def _corrupt_table(reader, call, name, shapes):
    table = getattr(call, name)
    shape = reader.choice(shapes)
    fill = table.flat[0] if table.size else 0
    setattr(call, name, np.full(shape, fill, table.dtype))
    return f"{name}_shape={list(shape)}"


def _corrupt_offset(reader, call):
    kind = reader.integer(0, 3)
    n = _size(call.values_shape)
    if kind == 0:
        value = reader.choice((-1, -2, -4, -(2**32), INT64_MIN))
    elif kind == 1:
        value = INT64_MAX - n + reader.integer(0, 4) - 2  # around the last valid offset
    elif kind == 2:
        value = reader.choice((INT64_MAX, INT64_MAX - 3, 2**62, 2**34 + 3))
    else:
        shape = reader.choice(((1,), (1, 1), (0,), (2,)))
        call.offset = np.full(
            shape, call.offset.flat[0] if call.offset.size else 0, call.offset.dtype
        )
        return f"offset_shape={list(shape)}"
    value = min(max(value, INT64_MIN), INT64_MAX)
    call.offset = np.array(value, np.int64).astype(call.offset.dtype)
    return f"offset={value}"


def _corrupt_floor(reader, call):
    call.variance_floor = reader.choice(BAD_FLOORS + ODD_FLOORS)
    return f"variance_floor={call.variance_floor}"


def decode(data):
    """The :class:`Call` that the fuzz input ``data`` describes."""
    reader = ByteReader(data)
    call = _valid_call(reader)
    for _ in range(reader.choice((0, 0, 1, 1, 2, 3))):
        kind = reader.choice(("shape", "dtype", "key", "counter", "offset", "floor"))
        if kind == "shape":
            change = _corrupt_shape(reader, call)
        elif kind == "dtype":
            change = _corrupt_dtype(reader, call)
        elif kind == "key":
            change = _corrupt_table(reader, call, "key", ((2,), (), (1, 1), (0,), (3,)))
        elif kind == "counter":
            change = _corrupt_table(
                reader, call, "counter", ((1,), (3,), (), (2, 1), (1, 2), (0,), (4,))
            )
        elif kind == "offset":
            change = _corrupt_offset(reader, call)
        else:
            change = _corrupt_floor(reader, call)
        call.corruptions.append(change)
    call.graph_mode = reader.flag(4)
    call.known_seed = reader.integer(0, 255)
    call.gradient = call.op == "sample" and reader.flag(4)
    return call


def _float32_floor(value):
    """The float32 that the ``variance_floor`` attribute holds for ``value``."""
    with np.errstate(over="ignore"):
        return np.float32(value)


def violations(call):
    """Why the op must refuse ``call``: the rules of lrt_sample.cc, written again."""
    found = []
    if call.values_dtype != "float32" or call.variance_dtype != "float32":
        found.append("dtype: values and variance must be float32")
    if call.key.dtype != np.uint64 or call.counter.dtype != np.uint64:
        found.append("dtype: key and counter must be uint64")
    if call.offset.dtype != np.int64:
        found.append("dtype: offset must be int64")
    floor = _float32_floor(call.variance_floor)
    if not (np.isfinite(floor) and floor >= 0):
        found.append("variance_floor must be finite and >= 0")
    if list(call.values_shape) != list(call.variance_shape):
        found.append("shape: values and variance differ")
    if call.key.shape != (1,):
        found.append("shape: key must be [1]")
    if call.counter.shape != (2,):
        found.append("shape: counter must be [2]")
    if call.offset.ndim != 0:
        found.append("rank: offset must be a scalar")
    if found:
        return found
    offset, n = int(call.offset), _size(call.values_shape)
    if offset < 0 or offset > INT64_MAX - n:
        found.append("offset must be in [0, 2**63 - 1 - n]")
    return found


def _materialisable(call):
    return all(
        0 in shape or _size(shape) <= MAX_MATERIALISED
        for shape in (call.values_shape, call.variance_shape)
    )


def _values(kind, shape, rng):
    """float32 values of one kind (see :data:`VALUE_KINDS`)."""
    n = _size(shape)
    base = rng.standard_normal(n)
    if kind == "positive":
        base = np.abs(base) * 10.0 ** rng.integers(-3, 4)
    elif kind == "special":
        base = base.copy()
        where = rng.random(n) < 0.25
        base[where] = rng.choice(SPECIAL_VALUES, int(where.sum()))
    elif kind == "zero":
        base = np.where(rng.random(n) < 0.5, 0.0, -0.0)
    elif kind == "tiny":
        base = base * 1e-38
    elif kind == "huge":
        base = base * 1e37
    return base.astype(np.float32).reshape(shape)


def _tensor(shape, dtype, kind, rng):
    """A tensor for a ``values`` / ``variance`` input (tensors, not NumPy arrays: the
    generated op wrapper would silently cast a float64 array to float32)."""
    import tensorflow as tf

    if 0 in shape:
        return tf.zeros(shape, dtype)  # NumPy refuses shapes whose byte size overflows
    values = _values(kind, shape, rng)
    if dtype == "int32":
        return tf.constant(np.nan_to_num(values, posinf=0, neginf=0).clip(-1e6, 1e6), tf.int32)
    return tf.cast(tf.constant(values), dtype)


_module = None


def op_module():
    """The loaded op library (``TFPRIORS_OPS_LIBRARY`` selects the sanitizer build)."""
    global _module
    if _module is None:
        import tfpriors.ops

        _module = tfpriors.ops.fused_op_module()
        if _module is None:
            raise RuntimeError(f"the fused op is not built: {tfpriors.ops.library.load_error()}")
    return _module


def _raw_op(call, values, variance, key, counter, offset):
    module = op_module()
    op = module.lrt_sample if call.op == "sample" else module.lrt_sample_variance_grad
    return op(values, variance, key, counter, offset, variance_floor=call.variance_floor)


def _select_isa(name):
    """Forces the op's vector code; False when this CPU (or build) cannot run it."""
    from tfpriors.ops import library

    try:
        library.select_noise_isa(name)
    except (ValueError, RuntimeError):
        return False
    return True


def _graph_shape(call, tensors):
    """The output shape that the shape function infers, some dimensions or ranks unknown."""
    import tensorflow as tf

    rng = np.random.default_rng(call.known_seed)

    def placeholder(value):
        if rng.random() < 0.1:
            return tf.compat.v1.placeholder(value.dtype, None)
        shape = [d if rng.random() < 0.7 else None for d in value.shape]
        return tf.compat.v1.placeholder(value.dtype, shape)

    with tf.Graph().as_default():
        return _raw_op(call, *(placeholder(t) for t in tensors)).shape


def reference_noise(key, counter, offset, n, direct_limit=DIRECT_LIMIT):
    """Elements ``[offset, offset + n)`` of ``StatelessRandomNormalV2(key, counter, alg=1)``.

    Element ``j`` of that stream is lane ``j % 4`` of the Philox block at the
    128-bit counter ``counter[0] + 2**64 * counter[1] + j // 4``. Up to
    ``direct_limit`` elements the stream is drawn from its start and sliced;
    past it, the counter is advanced by ``offset // 4`` blocks here (modulo
    2**128) and the first ``offset % 4`` elements of that draw are dropped.

    Args:
        key: one uint64 (the Philox key, as ``StatelessRandomGetKeyCounter`` gives it).
        counter: two uint64, the low word first.
        offset: the first element, an int >= 0.
        n: the number of elements.
        direct_limit: the largest ``offset + n`` drawn from the start.

    Returns:
        A float32 NumPy vector of ``n`` normals.
    """
    import tensorflow as tf

    key = tf.constant(np.asarray(key, np.uint64).reshape([1]))
    counter = [int(word) for word in np.asarray(counter, np.uint64).reshape([2])]
    if n == 0:
        return np.zeros([0], np.float32)
    if offset + n <= direct_limit:
        skip, start = 0, offset
    else:
        skip, start = offset // 4, offset % 4
    position = (counter[0] + (counter[1] << 64) + skip) % 2**128
    advanced = tf.constant([position & MASK64, position >> 64], tf.uint64)
    draw = tf.raw_ops.StatelessRandomNormalV2(
        shape=[start + n], key=key, counter=advanced, alg=1, dtype=tf.float32
    )
    return draw.numpy()[start:]


def _flush(x):
    """``x`` with float32 subnormals flushed to (signed) zero, as FTZ / DAZ do."""
    return np.where(np.abs(x) < FLT_MIN, np.float32(0) * x, x).astype(np.float32)


def expected_output(op, values, variance, floor, eps, flush=False):
    """The op's formula in float32, in the kernel's order of operations.

    ``flush``: subnormal inputs and intermediates flushed to zero (TensorFlow's
    threads run with FTZ / DAZ set).
    """
    f = _flush if flush else (lambda x: np.asarray(x, np.float32))
    values, variance = f(values), f(variance)
    floor = f(np.float32(floor))
    eps = np.asarray(eps, np.float32)
    with np.errstate(all="ignore"):
        root = f(np.sqrt(f(variance + floor)))
        if op == "sample":
            return f(values + f(root * eps))
        return f(f(f(np.float32(0.5) * values) * eps) / root)


def _tolerance_scale(op, values, variance, floor, eps):
    """The magnitude of the terms of each element (float64), for the tolerance."""
    values, eps = np.abs(np.asarray(values, np.float64)), np.abs(np.asarray(eps, np.float64))
    with np.errstate(all="ignore"):
        root = np.sqrt(np.abs(np.asarray(variance, np.float64) + float(np.float32(floor))))
        if op == "sample":
            return values + root * (1.0 + eps)
        return 0.5 * values * (1.0 + eps) / root


def mismatches(op, got, values, variance, floor, eps):
    """Flat indices where ``got`` breaks the contract (see the module docstring)."""
    got = np.asarray(got, np.float64).reshape(-1)
    values = np.asarray(values, np.float32).reshape(-1)
    variance = np.asarray(variance, np.float32).reshape(-1)
    eps = np.asarray(eps, np.float32).reshape(-1)
    with np.errstate(all="ignore"):
        scale = _tolerance_scale(op, values, variance, floor, eps)
        tolerance = 1e-5 * (1.0 + scale)
        # inf * 0 or 0 / 0 in one and inf * tiny in the other: eps near a zero crossing.
        ambiguous = (np.abs(eps) < 1e-5) & ~np.isfinite(scale)
        accepted = ambiguous.copy()
        for flush in (False, True):
            expected = expected_output(op, values, variance, floor, eps, flush)
            expected = expected.astype(np.float64)
            close = np.isfinite(expected) & np.isfinite(got) & (np.abs(got - expected) <= tolerance)
            same = (np.isnan(expected) & np.isnan(got)) | (np.isinf(expected) & (got == expected))
            # Overflow decided by the last bit of eps: finite near FLT_MAX vs. infinity.
            edge = FLT_MAX * (1 - 1e-4)
            overflow = (np.sign(got) == np.sign(expected)) & (
                (np.isinf(expected) & (np.abs(got) >= edge))
                | (np.isinf(got) & (np.abs(expected) >= edge))
            )
            accepted |= close | same | overflow
    return np.flatnonzero(~accepted)


def _compare(call, what, got, values, variance, eps):
    bad = mismatches(
        "sample" if what == "output" else "variance_grad",
        got,
        values,
        variance,
        call.variance_floor,
        eps,
    )
    if bad.size:
        i = bad[0]
        expected = expected_output(
            "sample" if what == "output" else "variance_grad",
            np.asarray(values).reshape(-1)[i : i + 1],
            np.asarray(variance).reshape(-1)[i : i + 1],
            call.variance_floor,
            np.asarray(eps).reshape(-1)[i : i + 1],
        )[0]
        raise ContractViolation(
            f"{what} differs from the reference at {bad.size} of {np.size(got)} elements; "
            f"first at flat index {i}: got {np.asarray(got).reshape(-1)[i]!r}, expected "
            f"{expected!r} (values {np.asarray(values).reshape(-1)[i]!r}, variance "
            f"{np.asarray(variance).reshape(-1)[i]!r}, eps {np.asarray(eps).reshape(-1)[i]!r}): "
            f"{call}"
        )


def _check_gradient(call, values, variance, key, counter, offset, eps):
    """The registered gradient of ``LrtSample``: identity for the mean, the formula of
    ``LrtSampleVarianceGrad`` for the variance."""
    import tensorflow as tf

    upstream = tf.constant(
        np.random.default_rng(call.seed + 1)
        .standard_normal(call.values_shape)
        .astype(np.float32)
        .reshape(call.values_shape)
    )
    with tf.GradientTape() as tape:
        tape.watch([values, variance])
        y = _raw_op(call, values, variance, key, counter, offset)
    mean_grad, variance_grad = tape.gradient(y, [values, variance], output_gradients=upstream)
    if not np.array_equal(np.asarray(mean_grad), upstream.numpy(), equal_nan=True):
        raise ContractViolation(f"the gradient of the mean is not the incoming one: {call}")
    _compare(call, "variance gradient", variance_grad.numpy(), upstream.numpy(), variance, eps)


def check(call):
    """Runs ``call`` and raises :class:`ContractViolation` when it breaks the contract."""
    import tensorflow as tf

    if not _materialisable(call):
        return
    rng = np.random.default_rng(call.seed)
    try:
        values = _tensor(call.values_shape, call.values_dtype, call.values_kind, rng)
        variance = _tensor(call.variance_shape, call.variance_dtype, call.variance_kind, rng)
    except tf.errors.InvalidArgumentError:
        return  # TensorFlow itself cannot hold more than 2**63 - 1 elements, even zero-size
    key, counter, offset = (tf.constant(a) for a in (call.key, call.counter, call.offset))
    tensors = (values, variance, key, counter, offset)
    refusals = (tf.errors.InvalidArgumentError, ValueError, TypeError)
    reasons = violations(call)
    inferred = None
    if call.graph_mode:
        try:
            inferred = _graph_shape(call, tensors)
        except refusals as error:
            if not reasons:
                raise ContractViolation(
                    f"shape function refused a valid call ({error}): {call}"
                ) from error
    forced = call.isa != "auto" and _select_isa(call.isa)
    try:
        y = _raw_op(call, *tensors)
        if not reasons and call.gradient and y.shape.num_elements():
            eps = reference_noise(call.key, call.counter, int(call.offset), y.shape.num_elements())
            _check_gradient(call, values, variance, key, counter, offset, eps)
    except refusals as error:
        if not reasons:
            raise ContractViolation(
                f"valid call refused ({type(error).__name__}: {error}): {call}"
            ) from error
        return
    except tf.errors.OpError as error:
        raise ContractViolation(
            f"{type(error).__name__} instead of InvalidArgument: {error}; {call}"
        ) from error
    finally:
        if forced:
            _select_isa("auto")
    if reasons:
        raise ContractViolation(f"invalid call accepted ({'; '.join(reasons)}): {call}")
    if y.shape != tuple(call.values_shape) or y.dtype != tf.float32:
        raise ContractViolation(f"output {y.dtype.name}{list(y.shape)}, not float32: {call}")
    if inferred is not None and not inferred.is_compatible_with(y.shape):
        raise ContractViolation(f"shape function inferred {inferred}, eager gave {y.shape}: {call}")
    if not y.shape.num_elements():
        return  # (NumPy cannot hold some zero-size shapes: 2**62 x 0 overflows its byte count)
    eps = reference_noise(call.key, call.counter, int(call.offset), y.shape.num_elements())
    what = "output" if call.op == "sample" else "variance gradient"
    _compare(call, what, y.numpy(), values.numpy(), variance.numpy(), eps)


def test_one_input(data):
    """The libFuzzer entry point: decode, run, check."""
    check(decode(data))


def main():
    op_module()  # loads TensorFlow and the op before libFuzzer starts timing inputs
    # Python coverage of the decoder and the contract checks (not of TensorFlow). Not of
    # `mismatches`: atheris 3.0's comparison tracing keeps every NumPy array that an
    # instrumented `<` / `==` returns (120 MB per 1,000 inputs, until -rss_limit_mb).
    run_fuzzer(
        [
            decode,
            violations,
            check,
            _valid_call,
            _valid_shape,
            _valid_offset,
            _corrupt_shape,
            _corrupt_dtype,
            _corrupt_table,
            _corrupt_offset,
        ],
        test_one_input,
    )


if __name__ == "__main__":
    main()
