"""Which exact implementation of a perforated convolution is fastest: measured once per shape.

:func:`choose` times every applicable implementation of
:func:`tfpriors.ops.perforated_conv2d` (``"strided"`` for lattice masks,
``"fused"`` when the compiled op is loaded, ``"reference"``, ``"dense"``) on
random data at batch 1 and batch 16, as medians of interleaved repeats, and
keeps the one with the least total time relative to the best at each batch.
The answer is cached per process for the shape (input, kernel, strides, pads,
mask, dtype); :class:`~tfpriors.layers.PerforatedConv2D` also saves it in its
config, so a loaded model runs the same implementation without timing again.

Layers too small for a timing to mean anything (under ``MIN_TIMED_MACS``
multiply-adds per image), and every layer when the environment variable
``TFPRIORS_AUTOTUNE=0`` is set, get the rule instead: strided for a lattice,
else the compiled op when loaded, else pure TF.

Example:
>>> mask = tfpriors.perforation.lattice_mask((8, 8), 0.5)
>>> tfpriors.ops.autotune.choose((8, 8, 3), (3, 3), 4, (1, 1), (1, 1), (8, 8),
...                              mask.kept, mask.fill_index)  # too small to time: the rule
Selection(small_batch='strided', large_batch='strided')
"""

import collections
import contextlib
import hashlib
import os
import threading
import time

import numpy as np
import tensorflow as tf

from tfpriors import _validation
from tfpriors.ops import library
from tfpriors.ops.conv import lattice_of, perforated_conv2d
from tfpriors.ops.reference import check_pads, check_tables

MIN_TIMED_MACS = 2_000_000
TIMING_BATCHES = (1, 16)
# Batches below this run the implementation timed at batch 1, others the one timed at 16.
SMALL_BATCH_LIMIT = 8
TIMING_REPEATS = 5
# Fast candidates get more repeats, up to this many seconds of timing per candidate.
TIMING_SECONDS = 0.2
MAX_REPEATS = 40
# A candidate within this fraction of the fastest counts as fast as it; the first of
# those in candidates() order is taken (strided before fused before pure TF).
TIE = 0.05

_lock = threading.Lock()
_cache = {}


def _check_dtype(dtype):
    """``dtype`` as a floating ``tf.DType``; else raises TypeError."""
    try:
        dtype = tf.as_dtype(dtype)
    except TypeError:
        raise TypeError(f"`dtype` must be a float dtype; received {dtype!r}.") from None
    if not dtype.is_floating:
        raise TypeError(f"`dtype` must be a float dtype; received {dtype.name}.")
    return dtype


def _check_mask(kept, output_shape, fill_index=None):
    """The mask's tables and ``output_shape``, checked (``fill_index`` may be None)."""
    output_shape = _validation.int_tuple(output_shape, "output_shape", 2)
    if fill_index is None:
        kept, _ = check_tables(
            kept, np.zeros(output_shape[0] * output_shape[1], np.int32), output_shape
        )
        return kept, None, output_shape
    kept, fill_index = check_tables(kept, fill_index, output_shape)
    return kept, fill_index, output_shape


def _check_geometry(input_shape, kernel_size, filters, strides, pads):
    """The convolution's geometry, checked and normalised to tuples and ints."""
    return (
        _validation.int_tuple(input_shape, "input_shape", 3),
        _validation.int_tuple(kernel_size, "kernel_size", 2),
        _validation.positive_int(filters, "filters"),
        _validation.int_tuple(strides, "strides", 2),
        check_pads(pads),
    )


def candidates(kept, output_shape, dtype="float32"):
    """The exact implementations that can run this mask and dtype, preferred first.

    ``"strided"`` for a lattice, ``"fused"`` for float32 when the compiled op is
    loaded, then ``"reference"`` and ``"dense"``, which run every mask.

    Args:
        kept: the mask's kept flat positions.
        output_shape: ``(height, width)`` of the convolution's output.
        dtype: the compute dtype.

    Returns:
        A list of implementation names.

    Example:
    >>> lattice = tfpriors.perforation.lattice_mask((8, 8), 0.5)
    >>> tfpriors.ops.autotune.candidates(lattice.kept, (8, 8), "float16")
    ['strided', 'reference', 'dense']
    >>> uniform = tfpriors.perforation.uniform_mask((8, 8), 0.5, seed=0)
    >>> tfpriors.ops.autotune.candidates(uniform.kept, (8, 8))[-2:]  # "fused" first if loaded
    ['reference', 'dense']
    """
    kept, _, output_shape = _check_mask(kept, output_shape)
    dtype = _check_dtype(dtype)
    names = []
    if lattice_of(kept, output_shape) is not None:
        names.append("strided")
    if dtype == tf.float32 and library.has_fused_op():
        names.append("fused")
    names += ["reference", "dense"]
    return names


def rule(kept, output_shape, dtype="float32"):
    """The choice without timing: the first of :func:`candidates` (never ``"dense"``).

    Args:
        kept: the mask's kept flat positions.
        output_shape: ``(height, width)`` of the convolution's output.
        dtype: the compute dtype.

    Returns:
        ``"strided"``, ``"fused"`` or ``"reference"``.

    Example:
    >>> lattice = tfpriors.perforation.lattice_mask((8, 8), 0.5)
    >>> tfpriors.ops.autotune.rule(lattice.kept, (8, 8))
    'strided'
    >>> uniform = tfpriors.perforation.uniform_mask((8, 8), 0.5, seed=0)
    >>> tfpriors.ops.autotune.rule(uniform.kept, (8, 8), "float16")  # no compiled op for it
    'reference'
    """
    return candidates(kept, output_shape, dtype)[0]


def _key(input_shape, kernel_size, filters, strides, pads, output_shape, kept, fill_index, dtype):
    """The cache key of a choice: the geometry, a hash of the mask's tables, the dtype."""
    tables = hashlib.sha1(
        np.asarray(kept, np.int32).tobytes() + np.asarray(fill_index, np.int32).tobytes()
    ).hexdigest()
    return (
        input_shape,
        kernel_size,
        filters,
        strides,
        pads,
        output_shape,
        tables,
        dtype.name,
        library.has_fused_op(),
    )


def measure(
    input_shape,
    kernel_size,
    filters,
    strides,
    pads,
    output_shape,
    kept,
    fill_index,
    dtype="float32",
    batches=TIMING_BATCHES,
    repeats=TIMING_REPEATS,
):
    """Median seconds of every candidate: ``{name: [seconds at each batch]}``.

    Each candidate of :func:`candidates` runs as a ``tf.function`` on random data,
    interleaved with the others, at least ``repeats`` times (fast ones up to
    ``MAX_REPEATS`` times, within ``TIMING_SECONDS`` each).

    Args:
        input_shape: ``(height, width, channels)`` of one input.
        kernel_size: ``(kh, kw)``.
        filters: the number of output channels.
        strides: ``(sh, sw)``.
        pads: ``(pad_top, pad_left)``.
        output_shape: ``(out_h, out_w)``.
        kept: the mask's kept flat positions.
        fill_index: the mask's fill map (indices into ``kept``).
        dtype: the compute dtype.
        batches: the batch sizes timed.
        repeats: the least number of timed runs per median.

    Returns:
        ``{name: [median seconds at each of batches]}``.

    Example:
    >>> mask = tfpriors.perforation.uniform_mask((8, 8), 0.5, seed=0)
    >>> seconds = tfpriors.ops.autotune.measure((8, 8, 3), (3, 3), 4, (1, 1), (1, 1), (8, 8),
    ...                                         mask.kept, mask.fill_index, batches=(1,))
    >>> sorted(seconds) == sorted(tfpriors.ops.autotune.candidates(mask.kept, (8, 8)))
    True
    >>> all(len(times) == 1 and times[0] > 0 for times in seconds.values())
    True
    """
    input_shape, kernel_size, filters, strides, pads = _check_geometry(
        input_shape, kernel_size, filters, strides, pads
    )
    kept, fill_index, output_shape = _check_mask(kept, output_shape, fill_index)
    dtype = _check_dtype(dtype)
    batches = [
        _validation.positive_int(b, "batches")
        for b in _validation.sequence(batches, "batches", "a sequence of positive ints")
    ]
    repeats = _validation.positive_int(repeats, "repeats")
    rng = np.random.default_rng(0)
    names = candidates(kept, output_shape, dtype)
    kernel = tf.constant(rng.normal(size=(*kernel_size, input_shape[-1], filters)), dtype)
    seconds = {name: [] for name in names}
    with quiet_retracing(), tf.init_scope():  # eager even when built inside a trace
        for batch in batches:
            x = tf.constant(rng.normal(size=(batch, *input_shape)), dtype)
            functions = {
                name: tf.function(
                    lambda x, name=name: perforated_conv2d(
                        x,
                        kernel,
                        kept,
                        fill_index,
                        output_shape,
                        strides,
                        pads,
                        implementation=name,
                    )
                )
                for name in names
            }
            first = {}
            for name, function in functions.items():
                function(x).numpy()  # traced and warm
                start = time.perf_counter()
                function(x).numpy()
                first[name] = time.perf_counter() - start
            rounds = max(
                repeats, min(MAX_REPEATS, int(TIMING_SECONDS / max(max(first.values()), 1e-6)))
            )
            times = {name: [] for name in names}
            for _ in range(rounds):
                for name, function in functions.items():
                    start = time.perf_counter()
                    function(x).numpy()
                    times[name].append(time.perf_counter() - start)
            for name in names:
                seconds[name].append(float(np.median(times[name])))
    return seconds


@contextlib.contextmanager
def quiet_retracing():
    """A context in which TensorFlow's logger shows errors only.

    Timing many shapes traces many tf.functions, which TensorFlow reports as
    "retracing" warnings; the logger's level is restored on exit.

    Example:
    >>> logger = tf.get_logger()
    >>> before = logger.level
    >>> with tfpriors.ops.autotune.quiet_retracing():
    ...     print(logger.level == 40)  # logging.ERROR
    True
    >>> logger.level == before
    True
    """
    logger = tf.get_logger()
    level = logger.level
    logger.setLevel("ERROR")
    try:
        yield
    finally:
        logger.setLevel(level)


class Selection(collections.namedtuple("Selection", ["small_batch", "large_batch"])):
    """What :func:`choose` picked: for batches below ``SMALL_BATCH_LIMIT`` and the others.

    Example:
    >>> selection = tfpriors.ops.autotune.Selection("fused", "strided")
    >>> selection.for_batch(1), selection.for_batch(32)
    ('fused', 'strided')
    """

    def for_batch(self, batch):
        """The implementation for a (static) batch size."""
        return self.small_batch if batch < SMALL_BATCH_LIMIT else self.large_batch


def _fastest(seconds, column):
    """The first candidate within ``TIE`` of the fastest at batch ``column``."""
    best = min(times[column] for times in seconds.values())
    return next(name for name, times in seconds.items() if times[column] <= best * (1 + TIE))


def choose(
    input_shape,
    kernel_size,
    filters,
    strides,
    pads,
    output_shape,
    kept,
    fill_index,
    dtype="float32",
):
    """The fastest exact implementations for this shape and mask (cached per process).

    Layers under ``MIN_TIMED_MACS`` multiply-adds per image, and every layer when
    ``TFPRIORS_AUTOTUNE=0``, get :func:`rule` without timing; others are timed by
    :func:`measure`.

    Args:
        input_shape: ``(height, width, channels)`` of one input.
        kernel_size: ``(kh, kw)``.
        filters: the number of output channels.
        strides: ``(sh, sw)``.
        pads: ``(pad_top, pad_left)``.
        output_shape: ``(out_h, out_w)``.
        kept: the mask's kept flat positions.
        fill_index: the mask's fill map (indices into ``kept``).
        dtype: the compute dtype.

    Returns:
        A :class:`Selection` of ``"strided"``, ``"fused"``, ``"reference"`` or
        ``"dense"`` for small and for large batches.

    Example:
    >>> mask = tfpriors.perforation.uniform_mask((8, 8), 0.5, seed=0)
    >>> selection = tfpriors.ops.autotune.choose((8, 8, 3), (3, 3), 4, (1, 1), (1, 1), (8, 8),
    ...                                          mask.kept, mask.fill_index)
    >>> selection.small_batch in ("fused", "reference")  # the rule: the op when loaded
    True
    >>> selection.for_batch(32) == selection.large_batch
    True
    """
    input_shape, kernel_size, filters, strides, pads = _check_geometry(
        input_shape, kernel_size, filters, strides, pads
    )
    kept, fill_index, output_shape = _check_mask(kept, output_shape, fill_index)
    dtype = _check_dtype(dtype)
    key = _key(
        input_shape, kernel_size, filters, strides, pads, output_shape, kept, fill_index, dtype
    )
    with _lock:
        if key in _cache:
            return _cache[key]
    macs = len(kept) * int(np.prod(kernel_size)) * int(input_shape[-1]) * int(filters)
    if os.environ.get("TFPRIORS_AUTOTUNE", "1") == "0" or macs < MIN_TIMED_MACS:
        choice = rule(kept, output_shape, dtype)
        selection = Selection(choice, choice)
    else:
        seconds = measure(
            input_shape, kernel_size, filters, strides, pads, output_shape, kept, fill_index, dtype
        )
        selection = Selection(_fastest(seconds, 0), _fastest(seconds, -1))
    with _lock:
        _cache[key] = selection
    return selection


def clear_cache():
    """Forgets every choice (the next :func:`choose` times again).

    Example:
    >>> mask = tfpriors.perforation.lattice_mask((8, 8), 0.5)
    >>> shape = ((8, 8, 3), (3, 3), 4, (1, 1), (1, 1), (8, 8), mask.kept, mask.fill_index)
    >>> first = tfpriors.ops.autotune.choose(*shape)
    >>> tfpriors.ops.autotune.clear_cache()
    >>> tfpriors.ops.autotune.choose(*shape) == first  # chosen again, not remembered
    True
    """
    with _lock:
        _cache.clear()


__all__ = [
    "MAX_REPEATS",
    "MIN_TIMED_MACS",
    "SMALL_BATCH_LIMIT",
    "TIE",
    "TIMING_BATCHES",
    "TIMING_REPEATS",
    "TIMING_SECONDS",
    "candidates",
    "choose",
    "clear_cache",
    "measure",
    "quiet_retracing",
    "rule",
]
