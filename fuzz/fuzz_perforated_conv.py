"""Fuzz target of the fused ``PerforatedConv2D`` op (atheris / libFuzzer).

Every fuzz input is decoded into one call of the raw op: shapes (zero-size and
huge dimensions included), the ``kept`` and ``fill_index`` tables (unsorted,
duplicated, negative, out of range, wrong rank or dtype) and the ``strides``,
``pads`` and ``output_size`` attributes (zero, negative, too long, near the
int32 / int64 limits). The decoder builds a valid call first and then applies
zero to three corruptions, so about a third of the inputs are valid and are
checked for correct numbers, not just for the absence of a crash.

The contract checked on every input:

- a valid call returns ``(N, out_h, out_w, filters)`` equal to
  :func:`tfpriors.ops.perforated_conv2d_reference`, and so does its gradient;
- an invalid call raises ``InvalidArgumentError`` (or ``ValueError`` /
  ``TypeError`` from shape inference and argument conversion);
- in graph mode the shape function accepts every valid call and infers a
  shape compatible with the eager output.

Anything else raises :class:`ContractViolation`, which atheris reports as a
crash; memory errors, undefined behaviour and hangs are caught by the
sanitizers and libFuzzer themselves. Validity is decided here, independently
of the C++ checks (:func:`violations`), so an op that accepts a bad table is a
finding too.

The decoder reads bytes with its own small :class:`ByteReader` instead of
``atheris.FuzzedDataProvider`` so that the same bytes decode to the same call
without atheris installed (the quick test in ``tests/ops/test_fuzz_op.py``
replays inputs that way).

Run it through ``make fuzz`` / ``fuzz/run_fuzz.py``, which preload the
sanitizer runtimes; directly:

    python fuzz/fuzz_perforated_conv.py [libFuzzer flags] [corpus dirs]
"""

import dataclasses
import os
import sys

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

INT32_MAX = 2**31 - 1
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
# The op refuses strides, pads and output sizes from 2**20 on (perforated_conv.cc).
ATTRIBUTE_LIMIT = 2**20
# Attribute values around every bound the op and TensorFlow care about.
INTERESTING_ATTRIBUTES = (
    0,
    -1,
    1,
    2,
    3,
    ATTRIBUTE_LIMIT - 1,
    ATTRIBUTE_LIMIT,
    46341,
    INT32_MAX,
    INT32_MAX + 1,
    2**32,
    2**32 + 1,
    2**62,
    INT64_MAX,
    INT64_MIN,
    -(2**31),
)
INTERESTING_INDICES = (-1, -2, INT32_MAX, -(2**31), 2**16)
# Tables longer than this are never materialised: a call that would need one is
# given a short table instead (and is invalid for that reason).
MAX_TABLE = 1 << 20
# Cap on the elements of a tensor with no zero dimension, so every call fits in memory.
MAX_ELEMENTS = 1 << 16
HUGE_DIMENSIONS = (2**20, 2**31 - 1, 2**31, 2**40, 2**62)


class ContractViolation(AssertionError):
    """The op broke its contract on a fuzz input (a finding)."""


class ByteReader:
    """Reads integers and choices from fuzz bytes; past the end everything reads as 0."""

    def __init__(self, data):
        self._data = bytes(data)
        self._offset = 0

    def integer(self, low, high):
        """An integer in ``[low, high]``."""
        span = high - low
        if span <= 0:
            return low
        width = (span.bit_length() + 7) // 8
        chunk = self._data[self._offset : self._offset + width]
        self._offset += width
        return low + int.from_bytes(chunk, "little") % (span + 1)

    def flag(self, one_in=2):
        """True with probability about ``1 / one_in``."""
        return self.integer(0, one_in - 1) == 0

    def choice(self, options):
        return options[self.integer(0, len(options) - 1)]


@dataclasses.dataclass
class Call:
    """One call of the raw op, as the fuzzer built it."""

    x_shape: list
    w_shape: list
    kept: np.ndarray
    fill: np.ndarray
    strides: list
    pads: list
    output_size: list
    x_dtype: str = "float32"
    w_dtype: str = "float32"
    seed: int = 0
    graph_mode: bool = False
    known_dims: tuple = (True,) * 8
    gradient: bool = False
    corruptions: list = dataclasses.field(default_factory=list)


def _valid_call(reader):
    """A well-formed call: every rule of the op holds."""
    n = reader.integer(1, 3)
    h, w = reader.integer(1, 9), reader.integer(1, 9)
    c, o = reader.integer(1, 4), reader.integer(1, 5)
    kh, kw = reader.integer(1, 4), reader.integer(1, 4)
    strides = [reader.integer(1, 3), reader.integer(1, 3)]
    pads = [reader.integer(0, kh - 1), reader.integer(0, kw - 1)]
    if reader.flag(3):
        # Any positive output size is valid: positions past the image read zero padding.
        size = [reader.integer(1, 10), reader.integer(1, 10)]
    else:
        size = [
            max(1, (h + 2 * pads[0] - kh) // strides[0] + 1),
            max(1, (w + 2 * pads[1] - kw) // strides[1] + 1),
        ]
    return Call(
        x_shape=[n, h, w, c],
        w_shape=[kh, kw, c, o],
        kept=None,
        fill=None,
        strides=strides,
        pads=pads,
        output_size=size,
        seed=reader.integer(0, 2**16),
    )


def _tables(reader, positions):
    """Valid ``kept`` / ``fill_index`` tables for ``positions`` output positions."""
    if positions <= 0 or positions > MAX_TABLE:
        return np.zeros([1], np.int32), np.zeros([1], np.int32)
    if positions <= 256:
        chosen = [p for p in range(positions) if reader.flag(2)] or [
            reader.integer(0, positions - 1)
        ]
    else:
        # Large outputs: a few kept positions, the ends often among them.
        picks = {reader.integer(0, positions - 1) for _ in range(reader.integer(1, 16))}
        if reader.flag():
            picks |= {0, positions - 1}
        chosen = sorted(picks)
    kept = np.asarray(chosen, np.int32)
    if reader.flag():
        # Nearest kept position, as PerforationMask builds it.
        fill = np.clip(np.searchsorted(kept, np.arange(positions)), 0, len(kept) - 1)
    else:
        rng = np.random.default_rng(reader.integer(0, 2**16))
        fill = rng.integers(0, len(kept), positions)
    return kept, fill.astype(np.int32)


def _positions(size):
    if len(size) != 2 or size[0] <= 0 or size[1] <= 0:
        return 0
    return size[0] * size[1]


def _corrupt_attribute(reader, call):
    name = reader.choice(("strides", "pads", "output_size"))
    values = list(getattr(call, name))
    kind = reader.integer(0, 3)
    if kind == 0 and values:
        values[reader.integer(0, len(values) - 1)] = reader.choice(INTERESTING_ATTRIBUTES)
    elif kind == 1:
        values = values[: reader.integer(0, 1)]
    elif kind == 2:
        values = values + [reader.choice(INTERESTING_ATTRIBUTES)]
    else:
        values = [reader.choice(INTERESTING_ATTRIBUTES), reader.choice(INTERESTING_ATTRIBUTES)]
    setattr(call, name, values)
    return f"{name}={values}"


def _corrupt_table(reader, call):
    name = reader.choice(("kept", "fill"))
    table = np.array(getattr(call, name))
    dtype = table.dtype  # an earlier corruption may have changed it: edits go through int64
    table = table.astype(np.int64)
    kind = reader.integer(0, 9)
    if table.ndim != 1:
        kind = reader.choice((6, 9))  # already the wrong rank: only dtype or emptiness
    where = reader.integer(0, max(table.size - 1, 0))
    positions = _positions(call.output_size)
    if kind == 0 and table.size:
        table[where] = reader.choice(INTERESTING_INDICES)
    elif kind == 1 and table.size:
        # Just past the valid range: positions for kept, len(kept) for fill.
        bound = positions if name == "kept" else np.size(call.kept)
        table[where] = min(bound + reader.integer(0, 1), INT32_MAX)
    elif kind == 2 and table.size:
        table = np.append(table, table[where])  # a duplicate (kept: no longer increasing)
    elif kind == 3 and table.size > 1:
        table = table[::-1].copy()
    elif kind == 4:
        table = table[: reader.integer(0, max(len(table) - 1, 0))]
    elif kind == 5:
        table = np.append(table, np.zeros(reader.integer(1, 3), np.int64))
    elif kind == 6:
        dtype = np.dtype(reader.choice(("int64", "float32", "uint8")))
    elif kind == 7:
        table = table.reshape(reader.choice(((1, -1), (-1, 1)))) if table.size else table[None]
    elif kind == 8:
        table = np.asarray(table.flat[0] if table.size else 0, table.dtype)  # a scalar
    else:
        table = np.zeros([0], np.int64)
    setattr(call, name, table.astype(dtype))
    return f"{name}:{kind}"


def _corrupt_shape(reader, call):
    name = reader.choice(("x_shape", "w_shape"))
    shape = list(getattr(call, name))
    kind = reader.integer(0, 4)
    axis = reader.integer(0, len(shape) - 1)
    if kind == 0:
        shape[axis] = 0
    elif kind == 1:
        # A zero-size tensor whose other dimensions are huge: no memory, big numbers.
        shape[axis] = 0
        shape[reader.integer(0, len(shape) - 1)] = reader.choice(HUGE_DIMENSIONS)
    elif kind == 2:
        shape[axis] += reader.integer(1, 3)  # channels mismatch when it hits them
    elif kind == 3:
        shape = shape[:-1] if reader.flag() else shape + [1]
    else:
        setattr(call, name[0] + "_dtype", reader.choice(("float64", "float16", "int32")))
    setattr(call, name, shape)
    return f"{name}:{kind}"


def decode(data):
    """The :class:`Call` that the fuzz input ``data`` describes."""
    reader = ByteReader(data)
    call = _valid_call(reader)
    corruptions = reader.choice((0, 0, 1, 1, 2, 3))
    planned = [reader.choice(("attribute", "table", "shape")) for _ in range(corruptions)]
    # Attributes first, so the tables are drawn for the (possibly new) output size.
    for _ in range(planned.count("attribute")):
        call.corruptions.append(_corrupt_attribute(reader, call))
    call.kept, call.fill = _tables(reader, _positions(call.output_size))
    for kind in planned:
        if kind == "table":
            call.corruptions.append(_corrupt_table(reader, call))
        elif kind == "shape":
            call.corruptions.append(_corrupt_shape(reader, call))
    call.graph_mode = reader.flag(4)
    call.known_dims = tuple(reader.flag(3) is False for _ in range(8))
    call.gradient = reader.flag(4)
    return call


def violations(call):
    """Why the op must refuse ``call``: the rules of perforated_conv.cc, written again."""
    found = []
    if call.x_dtype != "float32" or call.w_dtype != "float32":
        found.append("dtype: input and filter must be float32")
    if call.kept.dtype != np.int32 or call.fill.dtype != np.int32:
        found.append("dtype: kept and fill_index must be int32")
    if len(call.x_shape) != 4 or len(call.w_shape) != 4:
        found.append("rank: input and filter must be 4-D")
    if call.kept.ndim != 1 or call.fill.ndim != 1:
        found.append("rank: kept and fill_index must be 1-D")
    if len(call.strides) != 2 or min(call.strides) <= 0:
        found.append("strides must be 2 positive integers")
    if len(call.pads) != 2 or min(call.pads) < 0:
        found.append("pads must be 2 non-negative integers")
    if len(call.output_size) != 2 or min(call.output_size) <= 0:
        found.append("output_size must be 2 positive integers")
    attributes = list(call.strides) + list(call.pads) + list(call.output_size)
    positions = _positions(call.output_size)
    if max(attributes, default=0) >= ATTRIBUTE_LIMIT or positions >= INT32_MAX:
        found.append("attributes too large")
    if found:
        return found
    if 0 in call.x_shape or 0 in call.w_shape[:2] + call.w_shape[3:]:
        found.append("empty dimension")
    if call.w_shape[2] != call.x_shape[3]:
        found.append("channels mismatch")
    if call.pads[0] >= call.w_shape[0] or call.pads[1] >= call.w_shape[1]:
        found.append("pads must be smaller than the kernel")
    kept, fill = call.kept, call.fill
    if not 1 <= len(kept) <= positions:
        found.append("kept length")
    if len(fill) != positions:
        found.append("fill_index length")
    if len(kept) and (kept.min() < 0 or kept.max() >= positions):
        found.append("kept out of range")
    if len(kept) > 1 and np.any(np.diff(kept.astype(np.int64)) <= 0):
        found.append("kept not strictly increasing")
    if len(fill) and (fill.min() < 0 or fill.max() >= len(kept)):
        found.append("fill_index out of range")
    return found


def _tensor(shape, dtype, rng):
    """A tensor of ``shape`` and ``dtype``; zero-size shapes may have huge other dimensions.

    Tensors, not NumPy arrays, go to the op: the generated op wrapper would silently
    cast a float64 array to float32, and the dtype checks are part of what is fuzzed.
    """
    import tensorflow as tf

    if 0 in shape:
        return tf.zeros(shape, dtype)  # NumPy refuses shapes whose byte size overflows
    if int(np.prod(shape, dtype=np.float64)) > MAX_ELEMENTS:
        raise ValueError(f"fuzz decoder bug: shape {shape} is too large to materialise")
    return tf.constant(rng.normal(size=shape).astype(dtype))


def _materialisable(call):
    """False when a shape corruption asked for a non-empty tensor too large for memory."""
    return all(
        0 in shape or np.prod(shape, dtype=np.float64) <= MAX_ELEMENTS
        for shape in (call.x_shape, call.w_shape)
    )


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


def _raw_op(x, w, kept, fill, call):
    return op_module().perforated_conv2d(
        x,
        w,
        kept,
        fill,
        strides=list(call.strides),
        pads=list(call.pads),
        output_size=list(call.output_size),
    )


def _graph_shape(call, x, w, kept, fill):
    """The output shape that the shape function infers, some input dimensions unknown."""
    import tensorflow as tf

    known = iter(call.known_dims)

    def placeholder(value):
        shape = [d if next(known, True) else None for d in value.shape]
        return tf.compat.v1.placeholder(value.dtype, shape)

    with tf.Graph().as_default():
        output = _raw_op(placeholder(x), placeholder(w), placeholder(kept), placeholder(fill), call)
        return output.shape


def _check_gradient(x, w, call):
    import tensorflow as tf

    from tfpriors.ops import perforated_conv2d_reference

    upstream = tf.constant(
        np.random.default_rng(call.seed + 1)
        .normal(size=[call.x_shape[0], *call.output_size, call.w_shape[3]])
        .astype("float32")
    )
    grads = []
    for compute in (
        lambda: _raw_op(x, w, call.kept, call.fill, call),
        lambda: perforated_conv2d_reference(
            x, w, call.kept, call.fill, call.output_size, call.strides, call.pads
        ),
    ):
        with tf.GradientTape() as tape:
            tape.watch([x, w])
            y = compute()
        grads.append([g.numpy() for g in tape.gradient(y, [x, w], output_gradients=upstream)])
    for name, got, expected in zip(("input", "filter"), grads[0], grads[1]):
        if not np.allclose(got, expected, atol=1e-3, rtol=1e-3):
            raise ContractViolation(
                f"{name} gradient differs from the reference by "
                f"{np.max(np.abs(got - expected)):.3g}: {call}"
            )


def _definition(x, w, call):
    """The perforated convolution by its definition, in NumPy (no TensorFlow, no tfpriors).

    Output position ``(i, j)`` is the sum over the kernel window at
    ``(i * sh - pad_top, j * sw - pad_left)``, zero outside the input; position
    ``p`` then takes the value at ``kept[fill[p]]``. (NumPy, not ``tf.nn.conv2d``:
    TensorFlow's oneDNN convolution returns garbage for some strides larger than
    what remains of the input, e.g. width 4, kernel 3, stride 3.)
    """
    x, w = np.asarray(x, np.float64), np.asarray(w, np.float64)
    (sh, sw), (pad_top, pad_left) = call.strides, call.pads
    (out_h, out_w), (kh, kw) = call.output_size, call.w_shape[:2]
    height = max(x.shape[1] + pad_top, (out_h - 1) * sh + kh)
    width = max(x.shape[2] + pad_left, (out_w - 1) * sw + kw)
    padded = np.zeros((x.shape[0], height, width, x.shape[3]))
    padded[:, pad_top : pad_top + x.shape[1], pad_left : pad_left + x.shape[2]] = x
    full = np.empty((x.shape[0], out_h * out_w, w.shape[3]))
    for i in range(out_h):
        for j in range(out_w):
            window = padded[:, i * sh : i * sh + kh, j * sw : j * sw + kw]
            full[:, i * out_w + j] = np.einsum("nhwc,hwco->no", window, w)
    nearest = np.asarray(call.kept, np.int64)[np.asarray(call.fill, np.int64)]
    return full[:, nearest].reshape(x.shape[0], out_h, out_w, w.shape[3])


def _check_pure_tf(call):
    """The contract of the pure-TensorFlow path, which runs where the op is not built.

    ``tfpriors.ops.perforated_conv2d`` without the op: a valid call gives the
    convolution's definition (:func:`_definition`) with the ``"reference"``
    and the ``"dense"`` implementations both; an invalid one is refused with
    ``ValueError`` / ``TypeError`` / ``InvalidArgumentError``, except where the
    Python entry point takes the value on purpose (:data:`PYTHON_ACCEPTS`) or the
    batch is empty (the answer is known: zero rows).
    """
    import tensorflow as tf

    import tfpriors

    if not _materialisable(call):
        return
    rng = np.random.default_rng(call.seed)
    try:
        x = _tensor(call.x_shape, call.x_dtype, rng)
        w = _tensor(call.w_shape, call.w_dtype, rng)
    except tf.errors.InvalidArgumentError:
        return
    empty_batch = call.x_shape[:1] == [0] and 0 not in call.x_shape[1:] + call.w_shape
    reasons = [
        reason
        for reason in violations(_int32_tables(call))
        if not any(reason.startswith(accepted) for accepted in PYTHON_ACCEPTS)
        and not (reason == "empty dimension" and empty_batch)
    ]
    arguments = (x, w, call.kept, call.fill, call.output_size, call.strides, call.pads)
    refusals = (tf.errors.InvalidArgumentError, ValueError, TypeError)
    answers = {}
    for implementation in ("reference", "dense"):
        try:
            answers[implementation] = tfpriors.ops.perforated_conv2d(
                *arguments, implementation=implementation
            ).numpy()
        except refusals as error:
            if not reasons:
                raise ContractViolation(
                    f"valid call refused by the {implementation} implementation "
                    f"({type(error).__name__}: {error}): {call}"
                ) from error
            return
        except tf.errors.OpError as error:
            raise ContractViolation(
                f"{type(error).__name__} instead of a refusal: {error}; {call}"
            ) from error
    if reasons:
        raise ContractViolation(f"invalid call accepted ({'; '.join(reasons)}): {call}")
    expected_shape = (call.x_shape[0], *call.output_size, call.w_shape[3])
    expected = _definition(x, w, _int32_tables(call)) if call.x_shape[0] else None
    for implementation, y in answers.items():
        if y.shape != expected_shape:
            raise ContractViolation(
                f"{implementation}: output shape {y.shape} != {expected_shape}: {call}"
            )
        if expected is not None and not np.allclose(y, expected, atol=1e-4, rtol=1e-4):
            raise ContractViolation(
                f"{implementation} differs from the definition by "
                f"{np.max(np.abs(y - expected)):.3g}: {call}"
            )


def check(call, target="op"):
    """Runs ``call`` and raises :class:`ContractViolation` when it breaks the contract.

    ``target``: ``"op"`` (the compiled op, against the reference) or
    ``"pure-tf"`` (the pure-TensorFlow path, see :func:`_check_pure_tf`).
    """
    import tensorflow as tf

    from tfpriors.ops import perforated_conv2d_reference

    if target == "pure-tf":
        return _check_pure_tf(call)
    if target != "op":
        raise ValueError(f"`target` must be 'op' or 'pure-tf'; received {target!r}.")
    if not _materialisable(call):
        return
    rng = np.random.default_rng(call.seed)
    try:
        x = _tensor(call.x_shape, call.x_dtype, rng)
        w = _tensor(call.w_shape, call.w_dtype, rng)
    except tf.errors.InvalidArgumentError:
        return  # TensorFlow itself cannot hold more than 2**63 - 1 elements, even zero-size
    kept, fill = tf.constant(call.kept), tf.constant(call.fill)
    refusals = (tf.errors.InvalidArgumentError, ValueError, TypeError)
    reasons = violations(call)
    if call.graph_mode:
        try:
            inferred = _graph_shape(call, x, w, kept, fill)
        except refusals as error:
            if not reasons:
                raise ContractViolation(
                    f"shape function refused a valid call ({error}): {call}"
                ) from error
            inferred = None
    try:
        y = _raw_op(x, w, kept, fill, call).numpy()
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
    if reasons:
        raise ContractViolation(f"invalid call accepted ({'; '.join(reasons)}): {call}")
    expected_shape = (call.x_shape[0], *call.output_size, call.w_shape[3])
    if y.shape != expected_shape:
        raise ContractViolation(f"output shape {y.shape} != {expected_shape}: {call}")
    if call.graph_mode and not inferred.is_compatible_with(expected_shape):
        raise ContractViolation(
            f"shape function inferred {inferred}, eager gave {expected_shape}: {call}"
        )
    expected = perforated_conv2d_reference(
        x, w, call.kept, call.fill, call.output_size, call.strides, call.pads
    ).numpy()
    if not np.allclose(y, expected, atol=1e-4, rtol=1e-4):
        raise ContractViolation(
            f"output differs from the reference by {np.max(np.abs(y - expected)):.3g}: {call}"
        )
    if call.gradient:
        _check_gradient(x, w, call)


# Rules of the raw op that the Python entry point does not share, with the reason
# (prefixes of the reasons of :func:`violations`).
PYTHON_ACCEPTS = {
    "pads must be smaller than the kernel": "the reference pads with zeros to any width",
}


def _int32_tables(call):
    """``call`` with its tables as int32 where they hold integers that fit.

    The Python entry point converts tables of any numeric dtype holding integers.
    """
    tables = []
    for table in (call.kept, call.fill):
        table = np.asarray(table)
        wide = table.astype(np.float64)
        if table.size and np.all(wide == np.round(wide)) and np.all(np.abs(wide) < 2**31):
            table = table.astype(np.int32)
        tables.append(table)
    return dataclasses.replace(call, kept=tables[0], fill=tables[1])


def test_one_input(data):
    """The libFuzzer entry point: decode, run, check."""
    check(decode(data))


def _register_native_coverage():
    """Hands the op's edge counters to libFuzzer when build/fuzz_coverage.so is preloaded."""
    import ctypes

    try:
        register = ctypes.CDLL(None).tfpriors_register_native_coverage
    except AttributeError:
        return False
    return bool(register())


def run_fuzzer(functions, entry_point):
    """Instruments ``functions`` for Python coverage, then hands ``entry_point`` to libFuzzer.

    Shared by every fuzz target of fuzz/: the target's op is loaded first, so that
    libFuzzer does not time TensorFlow's start-up.
    """
    import atheris

    for function in functions:
        atheris.instrument_func(function)
    atheris.Setup(sys.argv, entry_point)
    # After Setup, which loads atheris' libFuzzer module; before Fuzz, which starts it.
    native = _register_native_coverage()
    print(
        f"INFO: tfpriors native coverage: {'on' if native else 'off'}", file=sys.stderr, flush=True
    )
    atheris.Fuzz()


def main():
    op_module()  # loads TensorFlow and the op before libFuzzer starts timing inputs
    # Python coverage of the decoder and the contract checks (not of TensorFlow: far too
    # slow), so libFuzzer also keeps inputs that reach a new corruption or a new rule.
    run_fuzzer(
        [
            decode,
            violations,
            check,
            _valid_call,
            _tables,
            _corrupt_attribute,
            _corrupt_table,
            _corrupt_shape,
        ],
        test_one_input,
    )


if __name__ == "__main__":
    main()
