"""Loading the compiled ops (``make ops``) and handing them a BLAS.

``custom_ops/perforated_conv.cc`` is compiled into ``tfpriors/ops/_perforated_conv.so``
(by ``make ops``, or into the wheel by ``python -m build --wheel``). Before it is
loaded, the TensorFlow version it was compiled against is read from the file: a
library built for another TensorFlow is never loaded (its ABI may differ); the ops
then fall back to pure TensorFlow with one :class:`FusedOpUnavailableWarning` that
says why.

The library multiplies the im2col rows by the filter with its own packed AVX-512
micro-kernel when the CPU has AVX-512 (checked at run time; the library is compiled for
baseline x86-64). For the filter gradient, and on CPUs without AVX-512, it uses the
``cblas_sgemm`` of the OpenBLAS shipped by the ``scipy-openblas32`` wheel, set to one
thread, which picks its own kernel for the CPU (Eigen without it). Each of
TensorFlow's intra-op threads multiplies its own cache-sized block.

Example:
>>> loaded = tfpriors.ops.has_fused_op()
>>> loaded == (tfpriors.ops.library.load_error() is None)
True
>>> tfpriors.ops.library.gemm_backend() in ("avx512", "openblas", "eigen", None)
True
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
    """The path of the library that :func:`load` loads.

    ``TFPRIORS_OPS_LIBRARY`` when it is set, else the GPU build when it exists and
    TensorFlow sees a GPU, else the CPU build.

    Returns:
        A file path (which need not exist: :func:`load_error` then says so).

    Example:
    >>> path = tfpriors.ops.library.library_path()
    >>> path.endswith(".so")
    True
    """
    if LIBRARY_PATH is not None:
        return LIBRARY_PATH
    if os.path.exists(GPU_LIBRARY) and tf.config.list_physical_devices("GPU"):
        return GPU_LIBRARY
    return CPU_LIBRARY


_BUILD_TAG = re.compile(rb"tfpriors-built-against-tensorflow=([^;\x00]{1,64});")

_lock = threading.Lock()
_state = {"loaded": False, "module": None, "error": None, "warned": False, "handle": None}


class FusedOpUnavailableWarning(UserWarning):
    """The compiled op is missing or unusable; the pure-TF path runs instead.

    Issued once per process (by :func:`warn_fallback`), with the reason.

    Example:
    >>> import warnings
    >>> issubclass(tfpriors.ops.FusedOpUnavailableWarning, UserWarning)
    True
    >>> with warnings.catch_warnings():  # silence it where the pure-TF path is expected
    ...     warnings.simplefilter("ignore", tfpriors.ops.FusedOpUnavailableWarning)
    ...     y = tfpriors.ops.conv_at_positions(
    ...         np.ones((1, 4, 4, 1), "float32"), np.ones((3, 3, 1, 2), "float32"),
    ...         [0, 5], (4, 4), (1, 1), (1, 1),
    ...     )
    >>> y.numpy()
    array([[4., 4.],
           [9., 9.]], dtype=float32)
    """


def built_against(path=None):
    """The TensorFlow version a compiled op library was built against, or None.

    Read from the file's bytes, without loading it: the build embeds the tag
    ``tfpriors-built-against-tensorflow=<version>;``. :func:`load` refuses a library
    built for another TensorFlow minor release.

    Args:
        path: the library file; default :func:`library_path`.

    Returns:
        The version string, or None when the file carries no tag.

    Raises:
        FileNotFoundError: when ``path`` is not a file.

    Example:
    >>> with open("tagged.so", "wb") as handle:
    ...     _ = handle.write(b"ELF...tfpriors-built-against-tensorflow=2.21.0;...")
    >>> tfpriors.ops.library.built_against("tagged.so")
    '2.21.0'
    >>> with open("untagged.so", "wb") as handle:
    ...     _ = handle.write(b"ELF")
    >>> tfpriors.ops.library.built_against("untagged.so") is None
    True
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
    path = os.path.join(scipy_openblas32.get_lib_dir(), f"lib{scipy_openblas32.get_library()}.so")
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
        return None, (
            f"{path} was built against TensorFlow {version or 'unknown'}, but "
            f"TensorFlow {tf.__version__} is running (rebuild it: `make ops`)"
        )
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
        handle.tfpriors_select_gemm.argtypes = [ctypes.c_char_p]
        handle.tfpriors_select_gemm.restype = ctypes.c_int
        handle.tfpriors_noise_isa.restype = ctypes.c_int
        handle.tfpriors_select_noise_isa.argtypes = [ctypes.c_int]
        handle.tfpriors_select_noise_isa.restype = ctypes.c_int
        _state["handle"] = handle
        _state["blas"] = blas
    except (OSError, AttributeError) as error:
        return None, f"{path} has no BLAS hook ({error}); rebuild it: `make ops`"
    return module, None


def load():
    """The loaded op module (``perforated_conv2d``, ``conv_at_positions``, ...), or None.

    The library is loaded once per process, on the first call; :func:`load_error`
    says why it is None.

    Example:
    >>> module = tfpriors.ops.library.load()
    >>> module is None or hasattr(module, "conv_at_positions")
    True
    """
    with _lock:
        if not _state["loaded"]:
            _state["loaded"] = True
            _state["module"], _state["error"] = _load_library()
        return _state["module"]


def has_fused_op():
    """True when the compiled ops are loaded.

    Example:
    >>> tfpriors.ops.has_fused_op() == (tfpriors.ops.fused_op_module() is not None)
    True
    """
    return load() is not None


def fused_op_module():
    """The loaded op library, or None (:func:`load_error` says why).

    Example:
    >>> module = tfpriors.ops.fused_op_module()
    >>> module is None or hasattr(module, "perforated_conv2d")
    True
    """
    return load()


def load_error():
    """Why the compiled ops are not loaded (a sentence), or None when they are.

    Example:
    >>> error = tfpriors.ops.library.load_error()
    >>> (error is None) == tfpriors.ops.has_fused_op()
    True
    """
    load()
    return _state["error"]


GEMM_CHOICES = ("auto", "avx512", "blas")


def gemm_backend():
    """What the compiled ops' forward pass multiplies with.

    Returns:
        ``"avx512"``, ``"openblas"``, ``"eigen"``, or None when the compiled ops are
        not loaded.

    Example:
    >>> tfpriors.ops.gemm_backend() in ("avx512", "openblas", "eigen", None)
    True
    """
    if load() is None:
        return None
    return _state["handle"].tfpriors_gemm_backend().decode()


def select_gemm(name="auto"):
    """Chooses the GEMM of the compiled ops (for tests and benchmarks).

    Args:
        name: ``"auto"`` (the packed AVX-512 kernel when this CPU runs it: the
            default), ``"avx512"`` or ``"blas"`` (OpenBLAS, else Eigen).

    Returns:
        :func:`gemm_backend` after the change.

    Raises:
        ValueError: when ``name`` is unknown or this CPU cannot run that kernel.
        RuntimeError: when the compiled ops are not loaded.

    Example:
    >>> library = tfpriors.ops.library
    >>> before = library.gemm_backend()  # None when the compiled ops are not loaded
    >>> blas = None
    >>> if before is not None:  # (select_gemm raises RuntimeError without them)
    ...     blas = library.select_gemm("blas")  # OpenBLAS, or Eigen without it
    ...     # The choice is process-wide: restore what ran before.
    ...     _ = library.select_gemm("avx512" if before == "avx512" else "blas")
    >>> blas in ("openblas", "eigen", None)
    True
    >>> library.gemm_backend() == before
    True
    """
    if name not in GEMM_CHOICES:
        raise ValueError(f"`name` must be one of {list(GEMM_CHOICES)}; received {name!r}.")
    if load() is None:
        raise RuntimeError(f"The compiled ops are not loaded: {load_error()}.")
    if _state["handle"].tfpriors_select_gemm(name.encode()) != 0:
        raise ValueError(f"`name`={name!r}: this CPU cannot run that kernel.")
    return gemm_backend()


NOISE_ISAS = ("scalar", "avx2", "avx512")


def noise_isa():
    """The vector code the compiled noise op (``LrtSample``) runs on this CPU.

    Chosen at run time from CPUID: the library itself is compiled for
    baseline x86-64, and carries AVX2 and AVX-512 versions of its loops.

    Returns:
        ``"avx512"``, ``"avx2"`` or ``"scalar"``, or None when the compiled ops
        are not loaded.

    Example:
    >>> tfpriors.ops.library.noise_isa() in ("avx512", "avx2", "scalar", None)
    True
    """
    if load() is None:
        return None
    return NOISE_ISAS[_state["handle"].tfpriors_noise_isa()]


def select_noise_isa(name="auto"):
    """Chooses the vector code of the compiled noise op (for tests and benchmarks).

    Args:
        name: ``"auto"`` (the widest this CPU runs: the default), ``"avx512"``,
            ``"avx2"`` or ``"scalar"``.

    Returns:
        :func:`noise_isa` after the change.

    Raises:
        ValueError: when ``name`` is unknown or this CPU cannot run that code.
        RuntimeError: when the compiled ops are not loaded.

    Example:
    >>> library = tfpriors.ops.library
    >>> if library.noise_isa() is not None:  # the compiled ops are loaded
    ...     assert library.select_noise_isa("scalar") == "scalar"
    ...     _ = library.select_noise_isa("auto")  # back to the widest
    >>> library.noise_isa() in ("avx512", "avx2", "scalar", None)
    True
    """
    choices = ("auto", *NOISE_ISAS)
    if name not in choices:
        raise ValueError(f"`name` must be one of {list(choices)}; received {name!r}.")
    if load() is None:
        raise RuntimeError(f"The compiled ops are not loaded: {load_error()}.")
    code = -1 if name == "auto" else NOISE_ISAS.index(name)
    if _state["handle"].tfpriors_select_noise_isa(code) != 0:
        raise ValueError(f"`name`={name!r}: this CPU cannot run that code.")
    return noise_isa()


def warn_fallback():
    """Warns once per process that the pure-TF path replaces the compiled op.

    The ``"auto"`` implementations call it when the compiled op is not loaded; the
    :class:`FusedOpUnavailableWarning` says why, and later calls are silent.

    Example:
    >>> import warnings
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     tfpriors.ops.library.warn_fallback()
    ...     tfpriors.ops.library.warn_fallback()
    >>> len(caught) <= 1  # at most once per process
    True
    """
    with _lock:
        if _state["warned"]:
            return
        _state["warned"] = True
    warnings.warn(
        "tfpriors: the compiled ops (fused perforated convolution, fused noise) are "
        f"unavailable ({_state['error']}); using the pure-TensorFlow implementations, "
        "which are slower. Build them with `make ops`.",
        FusedOpUnavailableWarning,
        stacklevel=4,
    )


__all__ = [
    "CPU_LIBRARY",
    "FusedOpUnavailableWarning",
    "GPU_LIBRARY",
    "LIBRARY_PATH",
    "built_against",
    "fused_op_module",
    "library_path",
    "GEMM_CHOICES",
    "gemm_backend",
    "has_fused_op",
    "load",
    "load_error",
    "NOISE_ISAS",
    "noise_isa",
    "select_gemm",
    "select_noise_isa",
    "warn_fallback",
]
