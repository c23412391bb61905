"""Loading the compiled ops (``make ops``) and handing them a BLAS.

``custom_ops/perforated_conv.cc`` is compiled into ``tfpriors/ops/_perforated_conv.so``
(by ``make ops``, or into the wheel by ``python -m build --wheel``). Before it is
loaded, the TensorFlow version it was compiled against is read from the file: a
library built for another TensorFlow is never loaded (its ABI may differ); the ops
then fall back to pure TensorFlow with one :class:`FusedOpUnavailableWarning` that
says why.

Once loaded, the library gets the ``cblas_sgemm`` of the OpenBLAS shipped by the
``scipy-openblas32`` wheel, set to one thread: each of TensorFlow's intra-op threads
multiplies its own cache-sized block, and OpenBLAS picks the fastest kernel of the
CPU it runs on (AVX2, AVX-512, ...). Without it the library multiplies with Eigen.

Example:

>>> tfpriors.ops.has_fused_op()
True
>>> tfpriors.ops.library.gemm_backend()
'openblas'
"""

import ctypes
import os
import re
import threading
import warnings

import tensorflow as tf

_HERE = os.path.dirname(os.path.abspath(__file__))
CPU_LIBRARY = os.path.join(_HERE, "_perforated_conv.so")
# `make ops-cuda`: the same ops, and the CUDA kernel registered for the GPU.
GPU_LIBRARY = os.path.join(_HERE, "_perforated_conv_gpu.so")


# TFPRIORS_OPS_LIBRARY selects another build (the sanitizer builds of the fuzz tests).
LIBRARY_PATH = os.environ.get("TFPRIORS_OPS_LIBRARY") or None


def library_path():
    """The library that :func:`load` loads: ``TFPRIORS_OPS_LIBRARY``, else the GPU build
    when it exists and TensorFlow sees a GPU, else the CPU build."""
    if LIBRARY_PATH is not None:
        return LIBRARY_PATH
    if os.path.exists(GPU_LIBRARY) and tf.config.list_physical_devices("GPU"):
        return GPU_LIBRARY
    return CPU_LIBRARY
_BUILD_TAG = re.compile(rb"tfpriors-built-against-tensorflow=([^;\x00]{1,64});")

_lock = threading.Lock()
_state = {"loaded": False, "module": None, "error": None, "warned": False, "gemm": None}


class FusedOpUnavailableWarning(UserWarning):
    """The compiled op is missing or unusable; the pure-TF path runs instead."""


def built_against(path=None):
    """The TensorFlow version a compiled op library was built against, or None.

    Read from the file's bytes, without loading it.
    """
    path = library_path() if path is None else path
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"`path` must be a file path; received {path!r}.")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"`path` {path!r} is not a file.")
    with open(path, "rb") as handle:
        match = _BUILD_TAG.search(handle.read())
    return match.group(1).decode("ascii", "replace") if match else None


def _openblas_sgemm():
    """(address of cblas_sgemm, keep-alive handle) of a one-thread OpenBLAS, or (None, None)."""
    try:
        import scipy_openblas32
    except ImportError:
        return None, None
    path = os.path.join(scipy_openblas32.get_lib_dir(),
                        f"lib{scipy_openblas32.get_library()}.so")
    try:
        blas = ctypes.CDLL(path)
    except OSError:
        return None, None
    prefix = "scipy_" if scipy_openblas32.get_library().startswith("scipy_") else ""
    try:
        sgemm = getattr(blas, f"{prefix}cblas_sgemm")
        set_threads = getattr(blas, f"{prefix}openblas_set_num_threads")
    except AttributeError:
        return None, None
    # The ops call sgemm from each of TensorFlow's worker threads on its own block: one
    # OpenBLAS thread per call. This OpenBLAS copy is ours (NumPy and SciPy bundle theirs).
    set_threads(1)
    return ctypes.cast(sgemm, ctypes.c_void_p).value, blas


def _load_library():
    path = library_path()
    if not os.path.exists(path):
        return None, f"{path} does not exist (run `make ops`)"
    version = built_against(path)
    # Custom ops keep their ABI within a TensorFlow minor release (2.21.x).
    if version is None or version.split(".")[:2] != tf.__version__.split(".")[:2]:
        return None, (f"{path} was built against TensorFlow {version or 'unknown'}, but "
                      f"TensorFlow {tf.__version__} is running (rebuild it: `make ops`)")
    try:
        module = tf.load_op_library(path)
    except (tf.errors.NotFoundError, OSError) as error:
        return None, f"{path} does not load: {error}"
    try:
        # The same file as TensorFlow loaded: dlopen returns the same library instance.
        handle = ctypes.CDLL(path)
        address, blas = _openblas_sgemm()
        handle.tfpriors_set_sgemm.argtypes = [ctypes.c_void_p]
        handle.tfpriors_set_sgemm(address)
        handle.tfpriors_gemm_backend.restype = ctypes.c_char_p
        _state["gemm"] = handle.tfpriors_gemm_backend().decode()
        _state["blas"] = blas
    except (OSError, AttributeError) as error:
        return None, f"{path} has no BLAS hook ({error}); rebuild it: `make ops`"
    return module, None


def load():
    """The loaded op module (``perforated_conv2d``, ``conv_at_positions``, ...), or None."""
    with _lock:
        if not _state["loaded"]:
            _state["loaded"] = True
            _state["module"], _state["error"] = _load_library()
        return _state["module"]


def has_fused_op():
    """True when the compiled ops are loaded."""
    return load() is not None


def fused_op_module():
    """The loaded op library, or None (:func:`load_error` says why)."""
    return load()


def load_error():
    """Why the compiled ops are not loaded (a sentence), or None when they are."""
    load()
    return _state["error"]


def gemm_backend():
    """What the compiled ops multiply with: ``"openblas"``, ``"eigen"``, or None (not loaded)."""
    load()
    return _state["gemm"]


def warn_fallback():
    """Warns once per process that the pure-TF path replaces the compiled op."""
    with _lock:
        if _state["warned"]:
            return
        _state["warned"] = True
    warnings.warn("tfpriors: the fused perforated convolution op is unavailable "
                  f"({_state['error']}); using the pure-TensorFlow implementation, which is "
                  "slower. Build it with `make ops`.", FusedOpUnavailableWarning, stacklevel=4)


__all__ = ["CPU_LIBRARY", "FusedOpUnavailableWarning", "GPU_LIBRARY", "LIBRARY_PATH",
           "built_against", "fused_op_module", "library_path",
           "gemm_backend", "has_fused_op", "load", "load_error", "warn_fallback"]
