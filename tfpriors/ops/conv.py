"""Convolutions at chosen output positions: every implementation behind one interface.

A perforated convolution computes the convolution at the kept output positions
("rows") and fills every other position from its nearest kept one. The rows
can be computed four exact ways; which one is fastest depends on the shape,
the mask and the CPU (:mod:`tfpriors.ops.autotune` measures it):

* ``"fused"``: the compiled ``ConvAtPositions`` op (``make ops``): im2col of
  cache-sized blocks of rows, each multiplied on its own thread by a packed
  AVX-512 micro-kernel (OpenBLAS on other CPUs), with its own gradient ops;
* ``"reference"``: pure TensorFlow: one ``tf.gather`` of input pixels and one
  ``tf.matmul`` (TFLite: GATHER + FULLY_CONNECTED);
* ``"strided"``: only when the kept positions form a regular lattice (every
  ``s``-th row and ``t``-th column): one strided convolution (oneDNN on
  x86), no gather at all, and a broadcast fill when the fill map is blocks;
* ``"dense"``: the convolution at every position, then the kept rows picked:
  never faster than ``Conv2D``, the exact fallback at low rates.

Bias and activation, when given, are applied to the rows before the fill (they
commute with copying values), so they cost ``1 - rate`` of a dense layer's.

Example:
>>> x = np.random.default_rng(0).normal(size=(2, 16, 16, 3)).astype("float32")
>>> w = np.random.default_rng(1).normal(size=(3, 3, 3, 8)).astype("float32")
>>> mask = tfpriors.perforation.grid_mask((16, 16), 0.5, seed=0)
>>> y = tfpriors.ops.perforated_conv2d(x, w, mask.kept, mask.fill_index, (16, 16),
...                                    (1, 1), (1, 1), implementation="reference")
>>> y.shape
TensorShape([2, 16, 16, 8])
>>> dense = tfpriors.ops.perforated_conv2d(x, w, mask.kept, mask.fill_index, (16, 16),
...                                        (1, 1), (1, 1), implementation="dense")
>>> bool(np.allclose(y, dense, atol=1e-4))  # every implementation is exact
True
"""

import contextlib
import threading

import keras
import numpy as np
import tensorflow as tf

from tfpriors import _validation
from tfpriors.ops import library
from tfpriors.ops.reference import (
    check_arguments,
    check_images,
    check_pads,
    check_positions,
    conv_at_positions_reference,
    fill,
    kept_rows_reference,
)

IMPLEMENTATIONS = ("auto", "fused", "reference", "strided", "dense")
_export = threading.local()


@contextlib.contextmanager
def builtin_ops_only():
    """A context in which every perforated convolution traces as the pure-TF "reference".

    Inside it, every perforated convolution and convolution at chosen positions
    traces as GATHER + FULLY_CONNECTED: graphs for TFLite have builtin ops only, and
    on LiteRT (XNNPACK) that form is also the fastest (measured on lattice masks:
    2.3x / 3.9x CONV_2D at rates 0.5 / 0.75 against 2.0x / 3.7x for a strided
    CONV_2D and a GATHER fill). The setting is per thread.

    Example:
    >>> model = keras.Sequential([
    ...     keras.Input((8, 8, 1)),
    ...     tfpriors.layers.PerforatedConv2D(4, 3, padding="same", rate=0.5, mask="grid"),
    ... ])
    >>> spec = tf.TensorSpec((1, 8, 8, 1))
    >>> with tfpriors.ops.builtin_ops_only():
    ...     concrete = tf.function(model).get_concrete_function(spec)
    >>> types = {op.type for op in concrete.graph.get_operations()}
    >>> sorted(types & {"ConvAtPositions", "PerforatedConv2D", "GatherV2", "MatMul"})
    ['GatherV2', 'MatMul']
    """
    previous = getattr(_export, "active", False)
    _export.active = True
    try:
        yield
    finally:
        _export.active = previous


def lattice_of(kept, output_shape):
    """The regular lattice that ``kept`` forms, or None.

    Args:
        kept: distinct flat output positions (``row * width + col``).
        output_shape: ``(height, width)`` of the output.

    Returns:
        ``((row0, row_step, rows), (col0, col_step, cols))`` when the kept flat
        positions are exactly rows ``row0 + i * row_step`` times columns
        ``col0 + j * col_step`` (a single row or column has step 1); else None.

    Example:
    >>> tfpriors.ops.lattice_of([0, 2, 8, 10], (4, 4))
    ((0, 2, 2), (0, 2, 2))
    >>> tfpriors.ops.lattice_of([0, 2, 9], (4, 4)) is None
    True
    """
    height, width = _validation.int_tuple(output_shape, "output_shape", 2)
    kept = _validation.numeric_array(kept, "kept", "float64")
    if (
        kept.ndim != 1
        or not kept.size
        or np.any(kept != np.round(kept))
        or kept.min() < 0
        or kept.max() >= height * width
        or len(np.unique(kept)) != kept.size
    ):
        raise ValueError(
            f"`kept` must be distinct flat positions in [0, {height * width}) "
            f"(a 1-D integer sequence); received shape {kept.shape}."
        )
    kept = kept.astype(np.int64)
    rows, cols = np.unique(kept // width), np.unique(kept % width)
    if rows.size * cols.size != kept.size:
        return None
    if not np.array_equal(np.sort(kept), (rows[:, None] * width + cols[None, :]).reshape(-1)):
        return None
    axes = []
    for values in (rows, cols):
        steps = np.diff(values)
        if steps.size and np.any(steps != steps[0]):
            return None
        axes.append((int(values[0]), int(steps[0]) if steps.size else 1, int(values.size)))
    return tuple(axes)


def _same_padding(size, kernel, stride):
    """(output size, pad before) of TensorFlow's "SAME" padding along one axis."""
    out = -(-size // stride)
    return out, max((out - 1) * stride + kernel - size, 0) // 2


def _lattice_conv(inputs, kernel, lattice, strides, pads):
    """The convolution at the lattice's positions: ``(N, rows, cols, filters)``.

    Kept row ``row0 + i * step`` reads input rows from ``(row0 + i * step) *
    stride - pad``: one convolution with stride ``step * stride`` over the input
    cropped or zero-padded to exactly the rows the lattice reads. "VALID" or
    "SAME" padding is used when it reads those rows (their gradients are
    oneDNN's fast ones; explicit padding in the convolution is not), else an
    explicit ``tf.pad``.
    """
    kh, kw = int(kernel.shape[0]), int(kernel.shape[1])
    sizes = (int(inputs.shape[1]), int(inputs.shape[2]))
    crops, paddings, conv_strides, same = [], [], [], []
    for (start, step, count), stride, pad, size, k in zip(lattice, strides, pads, sizes, (kh, kw)):
        step = step * stride if count > 1 else 1
        first = start * stride - pad  # input index of the first tap read
        end = first + (count - 1) * step + k  # one past the last one
        crops.append((max(first, 0), min(end, size)))
        paddings.append((max(-first, 0), max(end - size, 0)))
        conv_strides.append(step)
        same.append(_same_padding(size, k, step) == (count, max(-first, 0)))
    (top, bottom), (left, right) = crops
    if bottom <= top or right <= left:  # the lattice reads only padding
        shape = tf.stack([tf.shape(inputs)[0], lattice[0][2], lattice[1][2], int(kernel.shape[-1])])
        return tf.zeros(shape, inputs.dtype)
    if (top, bottom, left, right) != (0, sizes[0], 0, sizes[1]):
        inputs = inputs[:, top:bottom, left:right]
    elif all(same):
        return tf.nn.conv2d(inputs, kernel, conv_strides, "SAME")
    if not any(before or after for before, after in paddings):
        return tf.nn.conv2d(inputs, kernel, conv_strides, "VALID")
    return _padded_conv(inputs, kernel, conv_strides, paddings)


def _padded_conv(inputs, kernel, strides, paddings):
    """``conv2d`` with explicit zero padding, whose gradients are those of ``tf.pad`` + "VALID".

    TensorFlow's CPU gradients of an explicitly padded convolution do not run oneDNN
    and take about 1.5x as long, while its forward pass needs no padded copy.
    """
    explicit = [[0, 0], list(paddings[0]), list(paddings[1]), [0, 0]]

    @tf.custom_gradient
    def convolve(x, w):
        def gradient(upstream):
            padded = tf.pad(x, explicit)
            steps = [1, strides[0], strides[1], 1]
            grad_padded = tf.raw_ops.Conv2DBackpropInput(
                input_sizes=tf.shape(padded),
                filter=w,
                out_backprop=upstream,
                strides=steps,
                padding="VALID",
            )
            (top, _), (left, _) = paddings
            grad_x = grad_padded[:, top : top + tf.shape(x)[1], left : left + tf.shape(x)[2]]
            grad_w = tf.raw_ops.Conv2DBackpropFilter(
                input=padded,
                filter_sizes=tf.shape(w),
                out_backprop=upstream,
                strides=steps,
                padding="VALID",
            )
            return grad_x, grad_w

        return tf.nn.conv2d(x, w, strides, explicit), gradient

    return convolve(inputs, kernel)


def _block_plan(nearest_line, kept_line):
    """(block, start) when the fill along one axis is a broadcast of blocks; else None.

    That is when every kept index fills a run of ``block`` outputs (the first and
    last runs may be shorter).
    """
    index = np.searchsorted(kept_line, nearest_line)
    counts = np.bincount(index, minlength=len(kept_line))
    if np.any(np.diff(index) < 0) or np.any(counts == 0):
        return None
    block = int(counts.max())
    if len(counts) > 2 and np.any(counts[1:-1] != block):
        return None
    return block, block - int(counts[0])


def _lattice_fill(rows, lattice, kept, fill_index, output_shape):
    """``(N, R, C, F)`` lattice outputs -> ``(N, height, width, F)`` by the mask's fill map.

    A broadcast of blocks when the map is one (its gradient is a sum), else a gather
    (the lattice's raster order is the order of ``kept``).
    """
    height, width = output_shape
    (_, _, count_r), (_, _, count_c) = lattice
    filters = rows.shape[-1]
    grid = np.asarray(kept)[np.asarray(fill_index)].reshape(height, width)
    row_of, col_of = grid // width, grid % width
    separable = np.all(row_of == row_of[:, :1]) and np.all(col_of == col_of[:1, :])
    kept_rows, kept_cols = np.unique(row_of), np.unique(col_of)
    plans = (
        (_block_plan(row_of[:, 0], kept_rows), _block_plan(col_of[0], kept_cols))
        if separable and len(kept_rows) == count_r and len(kept_cols) == count_c
        else (None, None)
    )
    if None in plans:
        return fill(tf.reshape(rows, (-1, count_r * count_c, filters)), fill_index, output_shape)
    (block_r, start_r), (block_c, start_c) = plans
    batch = tf.shape(rows)[0]
    blocks = tf.broadcast_to(
        rows[:, :, None, :, None, :], tf.stack([batch, count_r, block_r, count_c, block_c, filters])
    )
    blocks = tf.reshape(blocks, tf.stack([batch, count_r * block_r, count_c * block_c, filters]))
    if (start_r, start_c, count_r * block_r, count_c * block_c) != (0, 0, height, width):
        blocks = blocks[:, start_r : start_r + height, start_c : start_c + width]
    return blocks


def _batch_positions(inputs, kept, per_image):
    """Flat positions ``n * per_image + kept[k]`` of every image and kept position."""
    batch = tf.shape(inputs)[0]
    kept = tf.constant(np.asarray(kept, np.int32)) if not tf.is_tensor(kept) else kept
    return tf.reshape(tf.range(batch)[:, None] * per_image + kept[None, :], (-1,))


def _check_implementation(implementation):
    """``implementation`` if it is one of :data:`IMPLEMENTATIONS`; else raises ValueError."""
    if implementation not in IMPLEMENTATIONS:
        raise ValueError(
            f"`implementation` must be one of {list(IMPLEMENTATIONS)}; received {implementation!r}."
        )
    return implementation


def fused_module_for(implementation, dtype):
    """The compiled op module for ``implementation`` and ``dtype``, or None for pure TF.

    The module when ``implementation`` (``"auto"`` / ``"fused"``) and ``dtype``
    (float32) can use it outside a TFLite export (:func:`builtin_ops_only`).

    Args:
        implementation: one of :data:`IMPLEMENTATIONS`.
        dtype: the compute dtype of the inputs.

    Returns:
        The op module, or None for the pure-TF path.

    Raises:
        RuntimeError: for ``"fused"`` without the compiled op or with a dtype other
            than float32 (``"auto"`` warns once instead and returns None).

    Example:
    >>> tfpriors.ops.conv.fused_module_for("reference", "float32") is None
    True
    >>> tfpriors.ops.conv.fused_module_for("auto", "float16") is None  # float32 only
    True
    """
    return _fused_module(implementation, tf.as_dtype(dtype))


def _fused_module(implementation, dtype):
    """The op module for ``implementation``, or None for the pure-TF path."""
    if getattr(_export, "active", False):
        return None
    if implementation == "reference" or dtype != tf.float32:
        if implementation == "fused":
            raise RuntimeError(
                f"`implementation='fused'` runs float32 only; received {dtype.name} inputs."
            )
        return None
    module = library.load()
    if module is None:
        if implementation == "fused":
            raise RuntimeError(
                f"`implementation='fused'` needs the compiled op: {library.load_error()}."
            )
        library.warn_fallback()
    return module


def kept_rows(inputs, kernel, kept, output_shape, strides, pads, implementation):
    """The convolution at the kept positions of every image: ``(N, K, filters)``.

    Computed by the compiled op (``"fused"``, or ``"auto"`` when it is loaded) or in
    pure TF (``"reference"``). Arguments are those of :func:`perforated_conv2d`,
    already checked.
    """
    filters = int(kernel.shape[-1])
    count = int(kept.shape[0])
    module = _fused_module(implementation, inputs.dtype)
    if module is None:
        return kept_rows_reference(inputs, kernel, kept, output_shape, strides, pads)
    per_image = output_shape[0] * output_shape[1]
    rows = module.conv_at_positions(
        inputs,
        kernel,
        _batch_positions(inputs, kept, per_image),
        strides=list(strides),
        pads=list(pads),
        output_size=list(output_shape),
    )
    return tf.reshape(rows, (-1, count, filters))


def perforated_conv2d(
    inputs,
    kernel,
    kept,
    fill_index,
    output_shape,
    strides,
    pads,
    implementation="auto",
    bias=None,
    activation=None,
):
    """Perforated convolution of NHWC ``inputs`` with an HWIO ``kernel``.

    Args:
        inputs: ``(N, H, W, C)`` float tensor.
        kernel: ``(kh, kw, C, O)`` float tensor.
        kept: sorted kept flat output positions ``(K,)``.
        fill_index: ``(out_h * out_w,)`` indices into ``kept``.
        output_shape: ``(out_h, out_w)``.
        strides: ``(sh, sw)``.
        pads: ``(pad_top, pad_left)``, the zero padding before the first row and
            column (:func:`conv_geometry` gives TensorFlow's).
        implementation: ``"auto"`` (compiled op when loaded, else pure TF with
            one warning), ``"fused"`` (raises when the op is missing),
            ``"reference"``, ``"strided"`` (lattice masks only) or ``"dense"``.
        bias: optional ``(O,)`` added to the computed rows.
        activation: optional callable (or Keras activation name) applied to the
            computed rows.

    Returns:
        ``(N, out_h, out_w, O)``: the convolution at kept positions, the
        nearest kept value elsewhere.

    Example:
    >>> x = np.random.default_rng(0).normal(size=(2, 8, 8, 3)).astype("float32")
    >>> w = np.random.default_rng(1).normal(size=(3, 3, 3, 4)).astype("float32")
    >>> mask = tfpriors.perforation.uniform_mask((8, 8), 0.5, seed=0)
    >>> y = tfpriors.ops.perforated_conv2d(x, w, mask.kept, mask.fill_index, (8, 8),
    ...                                    (1, 1), (1, 1), activation="relu")
    >>> y.shape
    TensorShape([2, 8, 8, 4])
    >>> conv = tf.nn.relu(tf.nn.conv2d(x, w, 1, "SAME")).numpy().reshape(2, 64, 4)
    >>> flat = y.numpy().reshape(2, 64, 4)
    >>> bool(np.allclose(flat[:, mask.kept], conv[:, mask.kept], atol=1e-4))
    True
    >>> bool(np.array_equal(flat, flat[:, mask.nearest]))  # the rest copies a kept value
    True
    """
    _check_implementation(implementation)
    inputs, kernel, kept, fill_index, output_shape, strides, pads = check_arguments(
        inputs, kernel, kept, fill_index, output_shape, strides, pads
    )
    if inputs.shape[0] == 0:  # the op refuses empty batches; the answer is known
        return tf.zeros((0, *output_shape, kernel.shape[-1]), inputs.dtype)
    if tf.is_tensor(kept) or tf.is_tensor(fill_index):
        raise TypeError(
            "`kept` and `fill_index` must be concrete integer tables (NumPy "
            "arrays or lists), not tensors."
        )
    if bias is not None:
        bias = tf.cast(
            _validation.numeric_array(bias, "bias", "float32") if not tf.is_tensor(bias) else bias,
            inputs.dtype,
        )
        if tuple(bias.shape) != (kernel.shape[-1],):
            raise ValueError(
                f"`bias` must have shape ({kernel.shape[-1]},) (one per filter); "
                f"received {tuple(bias.shape)}."
            )
    if activation is not None:
        try:
            activation = keras.activations.get(activation)
        except (ValueError, TypeError) as error:
            raise ValueError(
                f"`activation` must be None, a callable or the name of a Keras "
                f"activation; received {activation!r} ({error})."
            ) from None
    if getattr(_export, "active", False):
        implementation = "reference"
    height, width = output_shape
    if implementation == "strided":
        lattice = lattice_of(kept, output_shape)
        if lattice is None:
            raise ValueError(
                "`implementation='strided'` needs `kept` to be a regular lattice "
                "(every s-th row times every t-th column; see "
                "tfpriors.perforation.lattice_mask)."
            )
        rows = _lattice_conv(inputs, kernel, lattice, strides, pads)
    elif implementation == "dense":
        # Every position, then one gather of each position's nearest kept value.
        rows = _lattice_conv(inputs, kernel, ((0, 1, height), (0, 1, width)), strides, pads)
    else:
        rows = kept_rows(inputs, kernel, kept, output_shape, strides, pads, implementation)
    if bias is not None:
        rows = rows + bias
    if activation is not None:
        rows = activation(rows)
    if implementation == "strided":
        return _lattice_fill(rows, lattice, kept, fill_index, output_shape)
    if implementation == "dense":
        nearest = np.asarray(kept, np.int32)[np.asarray(fill_index)]
        return fill(tf.reshape(rows, (-1, height * width, rows.shape[-1])), nearest, output_shape)
    return fill(rows, fill_index, output_shape)


def conv_at_positions(
    inputs, kernel, positions, output_shape, strides, pads, implementation="auto"
):
    """The convolution of a batch at chosen output positions, one row per position.

    Row ``m`` is the output at image ``positions[m] // P``, flat position
    ``positions[m] % P`` (``P = out_h * out_w``). The engine of the perforated
    convolution, shared by the sparse inference of
    :class:`~tfpriors.layers.ResidualUnit` (SACT, probabilistic ACT).

    Args:
        inputs: ``(N, H, W, C)`` float tensor with static H, W, C.
        kernel: ``(kh, kw, C, O)`` float tensor.
        positions: ``(M,)`` int tensor (or sequence) of flat positions in
            ``[0, N * P)``.
        output_shape: ``(out_h, out_w)``, as :func:`perforated_conv2d`.
        strides: ``(sh, sw)``, as :func:`perforated_conv2d`.
        pads: ``(pad_top, pad_left)``, as :func:`perforated_conv2d`.
        implementation: ``"auto"``, ``"fused"`` or ``"reference"``.

    Returns:
        ``(M, O)``: the convolution at each position.

    Example:
    >>> x = np.random.default_rng(0).normal(size=(2, 8, 8, 3)).astype("float32")
    >>> w = np.random.default_rng(1).normal(size=(3, 3, 3, 4)).astype("float32")
    >>> active = np.random.default_rng(2).uniform(size=(2, 8, 8)) < 0.25
    >>> positions = tf.where(tf.reshape(active, [-1]))[:, 0]
    >>> rows = tfpriors.ops.conv_at_positions(x, w, positions, (8, 8), (1, 1), (1, 1))
    >>> rows.shape == (active.sum(), 4)  # one row of 4 filters per active position
    True
    >>> conv = tf.nn.conv2d(x, w, 1, "SAME").numpy().reshape(-1, 4)
    >>> bool(np.allclose(rows, conv[positions.numpy()], atol=1e-4))
    True
    """
    _check_implementation(implementation)
    if implementation in ("strided", "dense"):
        raise ValueError(
            "`implementation` of conv_at_positions must be 'auto', 'fused' or "
            f"'reference'; received {implementation!r}."
        )
    output_shape = _validation.int_tuple(output_shape, "output_shape", 2)
    strides = _validation.int_tuple(strides, "strides", 2)
    pads = check_pads(pads)
    inputs, kernel = check_images(inputs, "inputs"), check_images(kernel, "kernel")
    if inputs.shape[-1] != kernel.shape[2]:
        raise ValueError(
            f"`kernel` has {kernel.shape[2]} input channels but `inputs` has {inputs.shape[-1]}."
        )
    if None in tuple(inputs.shape[1:]):
        raise ValueError(
            "`inputs` must have a known height, width and channels; received "
            f"shape {tuple(inputs.shape)}."
        )
    positions = check_positions(positions, inputs, output_shape)
    if inputs.shape[0] == 0:  # no image, no position: the answer is known
        return tf.zeros((0, kernel.shape[-1]), inputs.dtype)
    module = _fused_module(implementation, inputs.dtype)
    if module is None:
        return conv_at_positions_reference(inputs, kernel, positions, output_shape, strides, pads)
    return module.conv_at_positions(
        inputs,
        kernel,
        positions,
        strides=list(strides),
        pads=list(pads),
        output_size=list(output_shape),
    )


def _grad_ops(op):
    """The op module and the ``strides`` / ``pads`` / ``output_size`` attributes of ``op``."""
    module = library.load()
    attrs = {name: op.get_attr(name) for name in ("strides", "pads", "output_size")}
    return module, attrs


@tf.RegisterGradient("ConvAtPositions")
def _conv_at_positions_grad(op, grad):
    """Backward of ``ConvAtPositions``: the compiled input and filter gradient ops."""
    inputs, kernel, positions = op.inputs
    module, attrs = _grad_ops(op)
    return (
        module.conv_at_positions_backprop_input(inputs, kernel, positions, grad, **attrs),
        module.conv_at_positions_backprop_filter(inputs, kernel, positions, grad, **attrs),
        None,
    )


# Inference only (SACT / PACT units at running positions); training runs the dense unit.
tf.no_gradient("SparseResidualUnit")


@tf.RegisterGradient("PerforatedConv2D")
def _perforated_conv2d_grad(op, grad):
    """Backward of the fused op: the fill's scatter-add, then ConvAtPositions' gradients."""
    inputs, kernel, kept, fill_index = op.inputs
    module, attrs = _grad_ops(op)
    out_h, out_w = attrs["output_size"]
    filters = tf.shape(grad)[-1]
    batch = tf.shape(inputs)[0]
    count = tf.shape(kept)[0]
    # Every output position sends its gradient to the kept row that filled it.
    segments = tf.reshape(tf.range(batch)[:, None] * count + fill_index[None, :], (-1,))
    grad_rows = tf.math.unsorted_segment_sum(
        tf.reshape(grad, (-1, filters)), segments, batch * count
    )
    positions = tf.reshape(tf.range(batch)[:, None] * (out_h * out_w) + kept[None, :], (-1,))
    return (
        module.conv_at_positions_backprop_input(inputs, kernel, positions, grad_rows, **attrs),
        module.conv_at_positions_backprop_filter(inputs, kernel, positions, grad_rows, **attrs),
        None,
        None,
    )


__all__ = [
    "IMPLEMENTATIONS",
    "builtin_ops_only",
    "conv_at_positions",
    "fused_module_for",
    "lattice_of",
    "perforated_conv2d",
]
