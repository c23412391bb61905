"""Pure-TensorFlow convolutions at chosen positions.

They are the fallback path, the export graph and the test oracle of the compiled
ops. The forward pass is an im2col restricted to the kept output positions (one
``tf.gather`` of input pixels), one matmul with the kernel reshaped to
``(kh * kw * in_channels, filters)``, and one ``tf.gather`` along positions
that fills every output position from its nearest kept neighbour. Autodiff
turns both gathers into scatter-adds for the backward pass. Every op here is
a TFLite builtin (GATHER, RESHAPE, FULLY_CONNECTED / BATCH_MATMUL, CONCATENATION).
"""

import numpy as np
import tensorflow as tf

from tfpriors import _validation

# Strides, pads and output sizes from 2**20 on are refused, as by the compiled op
# (custom_ops/perforated_conv.cc): larger ones overflow TensorFlow's int32 attributes,
# and an MKL graph pass aborts the process on them.
ATTRIBUTE_LIMIT = 1 << 20


def check_images(value, name):
    """``value`` as a 4-D float tensor without empty dimensions (but an empty batch)."""
    if not tf.is_tensor(value):
        value = tf.constant(_validation.numeric_array(value, name, "float32"))
    if value.shape.rank != 4:
        raise ValueError(f"`{name}` must be a 4-D tensor; received shape {value.shape}.")
    if not value.dtype.is_floating:
        raise TypeError(f"`{name}` must be float; received dtype {value.dtype.name}.")
    # Only an input's batch may be empty (a known empty result).
    first = 1 if name == "inputs" else 0
    if 0 in tuple(value.shape)[first:]:
        raise ValueError(f"`{name}` has an empty dimension: shape {tuple(value.shape)}.")
    return value


def _index_table(value, name, length, bound, bound_name):
    """A rank-1 int table with ``length`` entries in ``[0, bound)`` (checked when concrete)."""
    if tf.is_tensor(value):
        if value.shape.rank != 1:
            raise ValueError(f"`{name}` must be a 1-D table; received shape {value.shape}.")
        return value
    table = _validation.numeric_array(value, name, "float64")
    if table.ndim != 1 or (length is not None and len(table) != length) or not len(table):
        expected = f"({length},)" if length is not None else "(K,) with K >= 1"
        raise ValueError(f"`{name}` must have shape {expected}; received {table.shape}.")
    if np.any(table != np.round(table)) or table.min() < 0 or table.max() >= bound:
        raise ValueError(f"`{name}` must hold integers in [0, {bound - 1}] ({bound_name}).")
    return table.astype(np.int32)


def check_arguments(inputs, kernel, kept, fill_index, output_shape, strides, pads):
    """Validates the arguments of a perforated convolution; returns them normalised.

    The fused op checks all of this again in C++; checking here first gives
    Python users a ``ValueError`` / ``TypeError`` naming the argument.
    """
    inputs = check_images(inputs, "inputs")
    kernel = check_images(kernel, "kernel")
    if None not in (inputs.shape[-1], kernel.shape[2]) and inputs.shape[-1] != kernel.shape[2]:
        raise ValueError(
            f"`kernel` has {kernel.shape[2]} input channels but `inputs` has {inputs.shape[-1]}."
        )
    output_shape = _validation.int_tuple(output_shape, "output_shape", 2)
    strides = _validation.int_tuple(strides, "strides", 2)
    pads = check_pads(pads)
    for name, values in (("output_shape", output_shape), ("strides", strides), ("pads", pads)):
        if max(values) >= ATTRIBUTE_LIMIT:
            raise ValueError(f"`{name}` must be below {ATTRIBUTE_LIMIT}; received {values}.")
    kept, fill_index = check_tables(kept, fill_index, output_shape)
    return inputs, kernel, kept, fill_index, output_shape, strides, pads


def check_tables(kept, fill_index, output_shape):
    """Validates a mask's tables for ``output_shape``; returns them as int32 (or tensors).

    ``kept``: strictly increasing flat positions; ``fill_index``: one index
    into ``kept`` per output position.
    """
    positions = output_shape[0] * output_shape[1]
    kept = _index_table(
        kept, "kept", None, positions, f"flat positions of the `output_shape` {output_shape}"
    )
    if not tf.is_tensor(kept) and np.any(np.diff(kept) <= 0):
        raise ValueError("`kept` must be strictly increasing flat output positions.")
    count = kept.shape[0]
    fill_index = _index_table(
        fill_index,
        "fill_index",
        positions,
        count if count is not None else np.iinfo(np.int32).max,
        "indices into `kept`",
    )
    return kept, fill_index


def check_positions(positions, inputs, output_shape):
    """``positions`` as an int32 tensor of flat ``image * P + position`` entries.

    Checked against the batch of ``inputs`` when both are known.
    """
    if tf.is_tensor(positions):
        if positions.shape.rank != 1 or not positions.dtype.is_integer:
            raise ValueError(
                "`positions` must be a 1-D integer tensor; received "
                f"{positions.dtype.name} of shape {positions.shape}."
            )
        return tf.cast(positions, tf.int32)
    bound = (
        int(inputs.shape[0]) * output_shape[0] * output_shape[1]
        if inputs.shape[0] is not None
        else np.iinfo(np.int32).max
    )
    positions = _validation.numeric_array(positions, "positions", "float64")
    if (
        positions.ndim != 1
        or np.any(positions != np.round(positions))
        or (positions.size and (positions.min() < 0 or positions.max() >= bound))
    ):
        raise ValueError(
            f"`positions` must be a 1-D sequence of integers in [0, {bound}) "
            "(image * out_h * out_w + flat position) for the batch of "
            f"{inputs.shape[0]} `inputs`."
        )
    return tf.constant(positions.astype(np.int32))


def check_pads(pads):
    """``pads`` as a tuple of two non-negative ints (pad_top, pad_left)."""
    try:
        pads = tuple(pads)
    except TypeError:
        pads = None
    if (
        pads is None
        or len(pads) != 2
        or any(isinstance(p, bool) or not isinstance(p, (int, np.integer)) or p < 0 for p in pads)
    ):
        raise ValueError("`pads` must be two non-negative integers (pad_top, pad_left).")
    return tuple(int(p) for p in pads)


def conv_geometry(input_hw, kernel_size, strides, padding):
    """Output size and leading pads of a dilation-1 convolution, as TensorFlow pads.

    With "same" padding TensorFlow puts ``pad_total // 2`` before and the rest
    after.

    Args:
        input_hw: ``(height, width)`` of the input.
        kernel_size: ``(kh, kw)``.
        strides: ``(sh, sw)``.
        padding: ``"same"`` or ``"valid"``.

    Returns:
        ``(out_height, out_width, pad_top, pad_left)``.

    Example:
    >>> tfpriors.ops.conv_geometry((8, 8), (3, 3), (1, 1), "same")
    (8, 8, 1, 1)
    >>> tfpriors.ops.conv_geometry((8, 8), (3, 3), (2, 2), "valid")
    (3, 3, 0, 0)
    """
    input_hw = _validation.int_tuple(input_hw, "input_hw", 2)
    kernel_size = _validation.int_tuple(kernel_size, "kernel_size", 2)
    strides = _validation.int_tuple(strides, "strides", 2)
    padding = _validation.one_of(padding, "padding", {"same", "valid"})
    out, pads = [], []
    for size, k, s in zip(input_hw, kernel_size, strides):
        if padding == "same":
            o = -(-size // s)
            pads.append(max((o - 1) * s + k - size, 0) // 2)
        else:
            o = (size - k) // s + 1
            pads.append(0)
        if o <= 0:
            raise ValueError(
                f"`input_hw` {tuple(input_hw)} is smaller than the kernel "
                f"{tuple(kernel_size)} with padding='valid'."
            )
        out.append(o)
    return out[0], out[1], pads[0], pads[1]


def patch_indices(kept, input_hw, kernel_size, strides, pads, out_width, where=np.where):
    """Flat input pixel read by every tap of every kept position; ``H * W`` means zero.

    Works on NumPy arrays (``where=np.where``) and on tensors (``where=tf.where``).
    Returns ``(K, kh * kw)`` indices in ``[0, H * W]``.
    """
    height, width = input_hw
    kh, kw = kernel_size
    rows = (kept // out_width) * strides[0] - pads[0]
    cols = (kept % out_width) * strides[1] - pads[1]
    tap_rows = np.repeat(np.arange(kh), kw).astype(np.int32)
    tap_cols = np.tile(np.arange(kw), kh).astype(np.int32)
    i = rows[:, None] + tap_rows[None, :]
    j = cols[:, None] + tap_cols[None, :]
    inside = (i >= 0) & (i < height) & (j >= 0) & (j < width)
    return where(inside, i * width + j, height * width)


def _flat_with_zero(inputs):
    """``(N, H, W, C)`` -> ``(N, H * W + 1, C)`` with a zero pixel at the end for padding."""
    shape = tf.shape(inputs)
    flat = tf.reshape(inputs, (shape[0], shape[1] * shape[2], shape[3]))
    return tf.concat([flat, tf.zeros_like(flat[:, :1])], axis=1)


def kept_rows_reference(inputs, kernel, kept, output_shape, strides, pads):
    """The convolution at the kept positions of every image, ``(N, K, filters)``.

    One gather of input pixels (the kept-position im2col) and one matmul.
    """
    kh, kw, channels, filters = kernel.shape
    input_hw = (int(inputs.shape[1]), int(inputs.shape[2]))
    kept = np.asarray(kept, np.int64)
    taps = patch_indices(kept, input_hw, (kh, kw), strides, pads, output_shape[1])
    flat = _flat_with_zero(inputs)
    # (N, K * kh * kw, C) -> (N * K, kh * kw * C): rows of the kept-position im2col.
    patches = tf.gather(flat, tf.constant(taps.reshape(-1), tf.int32), axis=1)
    patches = tf.reshape(patches, (-1, kh * kw * channels))
    rows = tf.matmul(patches, tf.reshape(kernel, (kh * kw * channels, filters)))
    return tf.reshape(rows, (-1, len(kept), filters))


def conv_at_positions_reference(inputs, kernel, positions, output_shape, strides, pads):
    """The convolution at flat positions ``n * P + p`` of a batch, ``(M, filters)``.

    The pure-TF form of :func:`tfpriors.ops.conv_at_positions`. ``positions`` may
    be a tensor (its values known only at run time): the taps are computed in
    TensorFlow and gathered from the flattened batch.

    Args:
        inputs: ``(N, H, W, C)`` float tensor with static H, W, C.
        kernel: ``(kh, kw, C, O)`` float tensor.
        positions: ``(M,)`` flat positions in ``[0, N * P)`` (``P = out_h * out_w``).
        output_shape: ``(out_h, out_w)``.
        strides: ``(sh, sw)``.
        pads: ``(pad_top, pad_left)``.

    Returns:
        ``(M, O)``: the convolution at each position.

    Example:
    >>> x = np.arange(16, dtype="float32").reshape(1, 4, 4, 1)
    >>> w = np.ones((3, 3, 1, 1), "float32")  # sums of 3x3 windows
    >>> rows = tfpriors.ops.conv_at_positions_reference(x, w, [0, 5], (4, 4), (1, 1), (1, 1))
    >>> rows.numpy()
    array([[10.],
           [45.]], dtype=float32)
    """
    inputs, kernel = check_images(inputs, "inputs"), check_images(kernel, "kernel")
    output_shape = _validation.int_tuple(output_shape, "output_shape", 2)
    strides = _validation.int_tuple(strides, "strides", 2)
    pads = check_pads(pads)
    positions = check_positions(positions, inputs, output_shape)
    if inputs.shape[0] == 0:  # no image, no position: the answer is known
        return tf.zeros((0, kernel.shape[-1]), inputs.dtype)
    kh, kw, channels, filters = kernel.shape
    height, width = int(inputs.shape[1]), int(inputs.shape[2])
    per_image = output_shape[0] * output_shape[1]
    positions = tf.cast(positions, tf.int32)
    images = positions // per_image
    taps = patch_indices(
        positions % per_image,
        (height, width),
        (kh, kw),
        strides,
        pads,
        output_shape[1],
        where=tf.where,
    )
    batch_pixels = tf.shape(inputs)[0] * height * width
    # The zero pixel of the padding sits after the whole batch.
    index = tf.where(
        taps == height * width, batch_pixels, images[:, None] * (height * width) + taps
    )
    flat = tf.reshape(inputs, (-1, channels))
    flat = tf.concat([flat, tf.zeros_like(flat[:1])], axis=0)
    patches = tf.reshape(tf.gather(flat, index), (-1, kh * kw * channels))
    return tf.matmul(patches, tf.reshape(kernel, (kh * kw * channels, filters)))


def perforated_conv2d_reference(inputs, kernel, kept, fill_index, output_shape, strides, pads):
    """Perforated convolution of NHWC ``inputs`` (no bias, no activation).

    Args:
        inputs: ``(N, H, W, C)`` float tensor.
        kernel: ``(kh, kw, C, O)`` float tensor.
        kept: sorted kept flat output positions, ``(K,)`` int array.
        fill_index: ``(out_h * out_w,)`` index into ``kept`` filling each position.
        output_shape: ``(out_h, out_w)``.
        strides: ``(sh, sw)``.
        pads: ``(pad_top, pad_left)``.

    Returns:
        ``(N, out_h, out_w, O)``: the convolution at kept positions, nearest
        kept value elsewhere.

    Example:
    >>> x = np.random.default_rng(0).normal(size=(2, 8, 8, 3)).astype("float32")
    >>> w = np.random.default_rng(1).normal(size=(3, 3, 3, 4)).astype("float32")
    >>> mask = tfpriors.perforation.lattice_mask((8, 8), 0.75)
    >>> y = tfpriors.ops.perforated_conv2d_reference(
    ...     x, w, mask.kept, mask.fill_index, (8, 8), (1, 1), (1, 1)
    ... )
    >>> y.shape
    TensorShape([2, 8, 8, 4])
    >>> conv = tf.nn.conv2d(x, w, 1, "SAME").numpy().reshape(2, 64, 4)
    >>> bool(np.allclose(y.numpy().reshape(2, 64, 4), conv[:, mask.nearest], atol=1e-4))
    True
    """
    inputs, kernel, kept, fill_index, output_shape, strides, pads = check_arguments(
        inputs, kernel, kept, fill_index, output_shape, strides, pads
    )
    rows = kept_rows_reference(inputs, kernel, kept, output_shape, strides, pads)
    return fill(rows, fill_index, output_shape)


def fill(rows, fill_index, output_shape):
    """``(N, K, F)`` kept rows -> ``(N, height, width, F)``: position p takes row ``fill_index[p]``.

    One GATHER (none when every position is kept and fills itself).
    """
    fill_index = np.asarray(fill_index, np.int32)
    # Every position kept *and* filled from itself: the gather would be the identity.
    # (A permuted fill_index with every position kept still needs it; found by fuzzing.)
    if not np.array_equal(fill_index, np.arange(rows.shape[1])):
        rows = tf.gather(rows, tf.constant(fill_index), axis=1)
    return tf.reshape(rows, (-1, output_shape[0], output_shape[1], rows.shape[-1]))
