"""Perforated convolution kernels: the fused custom op when it is built, pure TF otherwise.

``make ops`` compiles ``custom_ops/perforated_conv.cc`` into
``tfpriors/ops/_perforated_conv.so``. When that file is missing or does not
load, :func:`perforated_conv2d` uses :func:`perforated_conv2d_reference`
(gathers and one matmul) and warns once.

Example:

>>> tfpriors.ops.has_fused_op()
True
"""

import os
import threading
import warnings

import numpy as np
import tensorflow as tf

from tfpriors.ops.reference import check_arguments, conv_geometry, patch_indices, perforated_conv2d_reference

# TFPRIORS_OPS_LIBRARY selects another build (the AddressSanitizer one in the slow test).
_LIBRARY_PATH = os.environ.get(
    "TFPRIORS_OPS_LIBRARY",
    os.path.join(os.path.dirname(os.path.abspath(__file__)), "_perforated_conv.so"))
IMPLEMENTATIONS = ("auto", "fused", "reference")

_lock = threading.Lock()
_state = {"loaded": False, "module": None, "error": None, "warned": False}


class FusedOpUnavailableWarning(UserWarning):
    """The compiled perforated convolution is missing; the pure-TF path runs instead."""


def _load():
    with _lock:
        if not _state["loaded"]:
            _state["loaded"] = True
            if not os.path.exists(_LIBRARY_PATH):
                _state["error"] = f"{_LIBRARY_PATH} does not exist (run `make ops`)"
            else:
                try:
                    _state["module"] = tf.load_op_library(_LIBRARY_PATH)
                except (tf.errors.NotFoundError, OSError) as error:
                    _state["error"] = f"{_LIBRARY_PATH} does not load: {error}"
        return _state["module"]


def has_fused_op():
    """True when the compiled fused perforated convolution is loaded."""
    return _load() is not None


def fused_op_module():
    """The loaded op library (``perforated_conv2d`` op), or None."""
    return _load()


def _warn_fallback():
    with _lock:
        if _state["warned"]:
            return
        _state["warned"] = True
    warnings.warn("tfpriors: the fused perforated convolution op is unavailable "
                  f"({_state['error']}); using the pure-TensorFlow implementation, which is "
                  "slower. Build it with `make ops`.", FusedOpUnavailableWarning, stacklevel=3)


def perforated_conv2d(inputs, kernel, kept, fill_index, output_shape, strides, pads,
                      implementation="auto"):
    """Perforated convolution of NHWC ``inputs`` with an HWIO ``kernel`` (no bias).

    Args:
        inputs: ``(N, H, W, C)`` float32 tensor.
        kernel: ``(kh, kw, C, O)`` float32 tensor.
        kept: sorted kept flat output positions ``(K,)``.
        fill_index: ``(out_h * out_w,)`` indices into ``kept``.
        output_shape: ``(out_h, out_w)``.
        strides: ``(sh, sw)``. pads: ``(pad_top, pad_left)``.
        implementation: ``"auto"`` (fused op when loaded, else pure TF with one
            warning), ``"fused"`` (raises when the op is missing) or ``"reference"``.

    Example:

    >>> y = tfpriors.ops.perforated_conv2d(x, w, mask.kept, mask.fill_index, (8, 8),
    ...                                    (1, 1), (1, 1))
    """
    if implementation not in IMPLEMENTATIONS:
        raise ValueError(f"`implementation` must be one of {list(IMPLEMENTATIONS)}; "
                         f"received {implementation!r}.")
    inputs, kernel, kept, fill_index, output_shape, strides, pads = check_arguments(
        inputs, kernel, kept, fill_index, output_shape, strides, pads)
    if inputs.shape[0] == 0:  # the op refuses empty batches; the answer is known
        return tf.zeros((0, *output_shape, kernel.shape[-1]), inputs.dtype)
    module = None if implementation == "reference" else _load()
    if module is None or inputs.dtype != tf.float32 or kernel.dtype != tf.float32:
        if implementation == "fused":
            raise RuntimeError("`implementation='fused'` needs the compiled op (float32 "
                               f"only): {_state['error'] or 'dtype is not float32'}.")
        if implementation == "auto" and module is None:
            _warn_fallback()
        return perforated_conv2d_reference(inputs, kernel, kept, fill_index, output_shape,
                                           strides, pads)
    return module.perforated_conv2d(
        inputs, kernel, tf.constant(np.asarray(kept, np.int32)) if not tf.is_tensor(kept)
        else kept, tf.constant(np.asarray(fill_index, np.int32))
        if not tf.is_tensor(fill_index) else fill_index,
        strides=list(strides), pads=list(pads), output_size=list(output_shape))


@tf.RegisterGradient("PerforatedConv2D")
def _perforated_conv2d_grad(op, grad):
    """Backward of the fused op: scatter-add of the fill, then the im2col transposes."""
    inputs, kernel, kept, fill_index = op.inputs
    kh, kw, channels, filters = kernel.shape
    strides = op.get_attr("strides")
    pads = op.get_attr("pads")
    out_h, out_w = op.get_attr("output_size")
    shape = tf.shape(inputs)
    batch, height, width = shape[0], shape[1], shape[2]
    count = tf.shape(kept)[0]
    # Every output position sends its gradient to the kept row that filled it.
    grad_rows = tf.math.unsorted_segment_sum(
        tf.transpose(tf.reshape(grad, (batch, out_h * out_w, filters)), (1, 0, 2)),
        fill_index, count)
    grad_rows = tf.reshape(tf.transpose(grad_rows, (1, 0, 2)), (-1, filters))
    taps = tf.reshape(patch_indices(kept, (height, width), (kh, kw), strides, pads, out_w,
                                    where=tf.where), (-1,))
    flat = tf.reshape(inputs, (batch, height * width, channels))
    flat = tf.concat([flat, tf.zeros_like(flat[:, :1])], axis=1)
    patches = tf.reshape(tf.gather(flat, taps, axis=1), (-1, kh * kw * channels))
    matrix = tf.reshape(kernel, (kh * kw * channels, filters))
    grad_kernel = tf.reshape(tf.matmul(patches, grad_rows, transpose_a=True), kernel.shape)
    grad_patches = tf.reshape(tf.matmul(grad_rows, matrix, transpose_b=True),
                              (batch, -1, channels))
    # Scatter-add of every tap back to its input pixel (the extra zero pixel dropped).
    grad_flat = tf.math.unsorted_segment_sum(tf.transpose(grad_patches, (1, 0, 2)), taps,
                                             height * width + 1)
    grad_inputs = tf.reshape(tf.transpose(grad_flat[:-1], (1, 0, 2)),
                             (batch, height, width, channels))
    return grad_inputs, grad_kernel, None, None


__all__ = ["FusedOpUnavailableWarning", "IMPLEMENTATIONS", "conv_geometry", "fused_op_module",
           "has_fused_op", "perforated_conv2d", "perforated_conv2d_reference"]
