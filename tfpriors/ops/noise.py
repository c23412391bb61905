"""Fused Gaussian noise of the local reparameterization trick.

Layers with Gaussian weights sample their pre-activations as
``mean + sqrt(variance) * eps`` with ``eps ~ N(0, 1)`` (Kingma, Salimans &
Welling 2015). In plain TensorFlow that is a normal draw the size of the
layer's output, written to memory, then three element-wise passes, and as
many again in the backward pass: for a convolution, more time than the
convolution itself. :func:`lrt_sample` does it in one pass:

* ``"fused"``: the compiled ``LrtSample`` op (``make ops``). ``eps`` comes from
  a counter-based generator (Philox-4x32-10 and Box-Muller), so each element's
  noise is a function of (seed, element) alone: it is drawn in registers,
  chunk by chunk on TensorFlow's thread pool, with AVX-512 or AVX2 code chosen
  at run time, and the gradient op draws it again instead of storing it. A
  CUDA kernel draws the same numbers on GPUs (``make ops-cuda``).
* ``"tensorflow"``: ``tf.random.stateless_normal`` and the arithmetic, the
  pure-TF fallback.

Both give the same numbers (to float rounding): the generator *is*
TensorFlow's stateless normal stream, so ``eps`` is
``tf.random.stateless_normal(shape, seed)`` whichever runs, and a seed gives
the same training run with or without the compiled op.

Example:
>>> mean = np.zeros((2, 3), "float32")
>>> variance = np.full((2, 3), 4.0, "float32")
>>> sample = tfpriors.ops.lrt_sample(mean, variance, seed=[1, 2])
>>> eps = tf.random.stateless_normal((2, 3), seed=[1, 2])
>>> bool(np.allclose(sample, 2.0 * eps, atol=1e-5))
True
"""

import contextlib
import threading

import numpy as np
import tensorflow as tf

from tfpriors import _validation
from tfpriors.ops import library

NOISE_IMPLEMENTATIONS = ("auto", "fused", "tensorflow")
# The dtypes the compiled op takes (16-bit values are computed in float32).
_FUSED_DTYPES = (tf.float16, tf.bfloat16, tf.float32)
_default = threading.local()


def noise_implementation(name):
    """A context in which ``implementation="auto"`` means ``name`` (per thread).

    The layers call :func:`lrt_sample` with ``"auto"``; this chooses what they
    trace, e.g. to time the pure-TF path against the compiled one.

    Args:
        name: one of ``"auto"``, ``"fused"``, ``"tensorflow"``.

    Returns:
        A context manager.

    Raises:
        ValueError: when ``name`` is not one of those.

    Example:
    >>> layer = tfpriors.layers.SparseVDDense(3, seed=0, dataset_size=100)
    >>> x = np.ones((4, 5), "float32")
    >>> fused = layer(x, training=True)  # the compiled op where it is built
    >>> with tfpriors.ops.noise_implementation("tensorflow"):
    ...     plain = layer(x, training=True)
    >>> plain.shape == fused.shape
    True
    """
    _check_implementation(name, "name")  # now, not when the context is entered
    return _default_implementation(name)


@contextlib.contextmanager
def _default_implementation(name):
    previous = getattr(_default, "name", "auto")
    _default.name = name
    try:
        yield
    finally:
        _default.name = previous


def _check_implementation(name, argument="implementation"):
    if not isinstance(name, str) or name not in NOISE_IMPLEMENTATIONS:
        raise ValueError(
            f"`{argument}` must be one of {list(NOISE_IMPLEMENTATIONS)}; received {name!r}."
        )


def _resolve(implementation, dtype):
    _check_implementation(implementation)
    if implementation == "auto":
        implementation = getattr(_default, "name", "auto")
    if implementation == "auto":
        if dtype not in _FUSED_DTYPES:
            return "tensorflow"
        if library.load() is None:
            library.warn_fallback()
            return "tensorflow"
        # Without AVX2 the op's portable code (18 ms on 2.1M elements here) is slower
        # than TensorFlow's own draw (15 ms), which gives the same numbers.
        if library.noise_isa() == "scalar":
            return "tensorflow"
        return "fused"
    if implementation == "fused":
        if dtype not in _FUSED_DTYPES:
            raise ValueError(
                "`implementation`='fused' takes float16, bfloat16 or float32 values; "
                f"received {dtype.name}."
            )
        if library.load() is None:
            raise RuntimeError(f"The compiled ops are not loaded: {library.load_error()}.")
    return implementation


def _tensor(value, name):
    try:
        return tf.convert_to_tensor(value)
    except (TypeError, ValueError) as error:
        raise ValueError(f"`{name}` must be a tensor or array; received {value!r}.") from error


def _check_seed(seed):
    seed = _tensor(seed, "seed")
    if seed.dtype not in (tf.int32, tf.int64):
        raise ValueError(f"`seed` must hold int32 or int64 values; received {seed.dtype.name}.")
    if seed.shape.rank is not None and seed.shape != (2,):
        raise ValueError(f"`seed` must have shape (2,); received {tuple(seed.shape)}.")
    return seed


def _check_offset(offset):
    if isinstance(offset, (int, np.integer)) and not isinstance(offset, bool):
        if offset < 0:
            raise ValueError(f"`offset` must be >= 0; received {offset}.")
        return tf.constant(int(offset), tf.int64)
    offset = _tensor(offset, "offset")
    if not offset.dtype.is_integer or (offset.shape.rank is not None and offset.shape.rank):
        raise ValueError(f"`offset` must be an integer scalar; received {offset!r}.")
    return tf.cast(offset, tf.int64)


def lrt_sample(mean, variance, seed, *, variance_floor=0.0, offset=0, implementation="auto"):
    """``mean + sqrt(variance + variance_floor) * eps`` with ``eps ~ N(0, 1)``, in one pass.

    ``eps`` is TensorFlow's stateless normal stream of ``seed``: with
    ``offset=0`` it is ``tf.random.stateless_normal(tf.shape(mean), seed)``;
    in general element ``i`` (row-major) of the result uses element
    ``offset + i`` of a stateless draw over more elements. A replica of a
    distributed step passes the position of its rows in the global batch, so
    that its noise is the single-device noise of those rows.

    The gradient with respect to ``mean`` is the incoming gradient; with
    respect to ``variance`` it is ``grad * eps / (2 sqrt(variance + floor))``,
    computed by the compiled ``LrtSampleVarianceGrad`` op, which draws
    ``eps`` again from the seed rather than keeping it.

    Args:
        mean: the pre-activations' means (float16, bfloat16 or float32 for the
            compiled op; any float dtype for ``"tensorflow"``).
        variance: their variances, the shape and dtype of ``mean``.
        seed: a shape ``(2,)`` int32 or int64 tensor, as for
            ``tf.random.stateless_normal``.
        variance_floor: a number >= 0 added to the variance under the square
            root (keeps it differentiable at zero).
        offset: the stream position of the first element, an integer >= 0
            (a Python int or an int scalar tensor).
        implementation: ``"auto"`` (the compiled op when it is loaded, the
            dtype allows it and the CPU has AVX2 or AVX-512; else pure
            TensorFlow, with one warning when the compiled ops are missing),
            ``"fused"`` or ``"tensorflow"``.

    Returns:
        The sampled tensor, the shape and dtype of ``mean``.

    Raises:
        ValueError: on mismatched shapes or dtypes, a bad seed, offset,
            floor or implementation name.
        RuntimeError: for ``"fused"`` when the compiled ops are not loaded.

    Example:
    >>> mean = np.zeros((4, 3), "float32")
    >>> variance = np.ones((4, 3), "float32")
    >>> whole = tfpriors.ops.lrt_sample(mean, variance, seed=[5, 6])
    >>> rows_2_3 = tfpriors.ops.lrt_sample(mean[2:], variance[2:], seed=[5, 6], offset=6)
    >>> bool(np.allclose(whole[2:], rows_2_3))  # a replica holding rows 2 and 3
    True
    """
    mean = _tensor(mean, "mean")
    variance = _tensor(variance, "variance")
    if not mean.dtype.is_floating:
        raise ValueError(f"`mean` must hold floating-point values; received {mean.dtype.name}.")
    if variance.dtype != mean.dtype:
        raise ValueError(
            f"`variance` must have the dtype of `mean` ({mean.dtype.name}); "
            f"received {variance.dtype.name}."
        )
    if not mean.shape.is_compatible_with(variance.shape):
        raise ValueError(
            f"`variance` must have the shape of `mean` {tuple(mean.shape)}; "
            f"received {tuple(variance.shape)}."
        )
    floor = _validation.real_number(variance_floor, "variance_floor")
    if floor < 0:
        raise ValueError(f"`variance_floor` must be >= 0; received {variance_floor!r}.")
    seed = _check_seed(seed)
    offset = _check_offset(offset)
    if _resolve(implementation, mean.dtype) == "tensorflow":
        return _sample_tensorflow(mean, variance, seed, floor, offset)
    key, counter = tf.raw_ops.StatelessRandomGetKeyCounter(seed=seed)
    sample = library.load().lrt_sample(
        tf.cast(mean, tf.float32),
        tf.cast(variance, tf.float32),
        key,
        counter,
        offset,
        variance_floor=floor,
    )
    return tf.cast(sample, mean.dtype)


def _sample_tensorflow(mean, variance, seed, floor, offset):
    """The pure-TF form of :func:`lrt_sample`: the same stream, drawn as a tensor."""
    shape = tf.shape(mean)
    if tf.get_static_value(offset) == 0:
        eps = tf.random.stateless_normal(shape, seed, dtype=mean.dtype)
    else:
        size = tf.cast(tf.reduce_prod(shape), tf.int64)
        eps = tf.random.stateless_normal(tf.reshape(offset + size, [1]), seed, dtype=mean.dtype)
        eps = tf.reshape(eps[offset:], shape)
    return mean + tf.sqrt(variance + tf.cast(floor, mean.dtype)) * eps


@tf.RegisterGradient("LrtSample")
def _lrt_sample_grad(op, grad):
    """Mean: the gradient itself. Variance: the compiled op, which redraws eps."""
    _, variance, key, counter, offset = op.inputs
    variance_grad = library.load().lrt_sample_variance_grad(
        grad, variance, key, counter, offset, variance_floor=op.get_attr("variance_floor")
    )
    return grad, variance_grad, None, None, None


__all__ = ["NOISE_IMPLEMENTATIONS", "lrt_sample", "noise_implementation"]
