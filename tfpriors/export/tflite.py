"""Keras -> TFLite, with verification on a real TFLite runtime.

The steps: the deterministic inference graph, structural shrink, sparse storage,
quantization, then a check of the file on a TFLite runtime.
"""

import dataclasses
import os

import keras
import numpy as np

from tfpriors import _validation
from tfpriors.export.inference import ExportError, inference_model
from tfpriors.export.shrink import ShrinkSummary, without_gates
from tfpriors.export.shrink import shrink as shrink_model
from tfpriors.graph import walk
from tfpriors.io import atomic_path
from tfpriors.ops import builtin_ops_only

QUANTIZE_MODES = (None, "dynamic", "int8")
LATENCY_ROUNDS = 3
# TFLite stores a weight sparse only when enough of it is zero; below that the
# index arrays cost more than they save.
SPARSE_STORAGE_MIN_ZEROS = 0.3
# Builtin TFLite ops that draw random numbers: an inference graph must not have them.
RANDOM_OPS = {"RANDOM_STANDARD_NORMAL", "RANDOM_UNIFORM", "MULTINOMIAL"}
_TF_RANDOM_OP_PREFIXES = (
    "Random",
    "StatelessRandom",
    "StatelessTruncated",
    "Multinomial",
    "TruncatedNormal",
    "ParameterizedTruncatedNormal",
)


@dataclasses.dataclass
class ExportReport:
    """What :func:`to_tflite` wrote and how it ran on a TFLite runtime.

    The fields from ``runtime`` on are measured only when ``to_tflite`` gets
    ``verify_data`` (``dense_*`` only with ``compare_dense=True``); otherwise
    they are ``None``. ``print(report)`` gives a readable summary and
    ``report.to_dict()`` a JSON-ready dict.

    Attributes:
        path: the ``.tflite`` file written.
        size_bytes: its size.
        ops: the set of TFLite op names in the file.
        quantization: what the file holds: ``"none"``, ``"dynamic"`` or
            ``"int8"``; ``"none"`` for ``quantize="dynamic"`` when the float32
            file is the smaller one (``notes`` says so).
        sparse_storage: whether some weights are stored in TFLite's sparse encoding.
        sparse_layers: the names of the layers stored sparse.
        shrink: the :class:`ShrinkSummary` of the structural shrink.
        runtime: the TFLite runtime that ran the file.
        max_abs_diff: largest ``|TFLite - Keras|`` output difference on ``verify_data``.
        top1_agreement: fraction of ``verify_data`` where both agree on the top class.
        latency_ms: median latency of one invoke, one thread.
        dense_latency_ms: the same for the dense float32 export of the same
            architecture (unpruned, no shrink, dense storage, no quantization).
        dense_size_bytes: the size of that dense float32 export.
        notes: remarks on choices the exporter made (e.g. sparse storage dropped).
        units_kept: ``{layer name: (units kept, units before)}`` for every Dense
            (units) and Conv2D (filters) layer of the export graph, after the
            structural shrink (e.g. the units ``StructuredBayesianPruning`` kept).

    Example:
    >>> model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(4)])
    >>> report = tfpriors.export.to_tflite(model, "tiny.tflite")
    >>> report.path, sorted(report.ops), report.quantization
    ('tiny.tflite', ['FULLY_CONNECTED'], 'none')
    >>> report.latency_ms is None, report.speedup is None  # no verify_data given
    (True, True)
    >>> data = report.to_dict()  # JSON-ready
    >>> data["ops"], data["shrink"], data["speedup"]
    (['FULLY_CONNECTED'], {}, None)
    """

    path: str
    size_bytes: int
    ops: set
    quantization: str
    sparse_storage: bool
    sparse_layers: tuple
    shrink: ShrinkSummary
    runtime: str = None
    max_abs_diff: float = None
    top1_agreement: float = None
    latency_ms: float = None
    dense_latency_ms: float = None
    dense_size_bytes: int = None
    notes: tuple = ()
    units_kept: dict = dataclasses.field(default_factory=dict)

    @property
    def speedup(self):
        """Dense export latency over this export's latency (None when not measured)."""
        if self.latency_ms and self.dense_latency_ms:
            return self.dense_latency_ms / self.latency_ms
        return None

    def to_dict(self):
        """The fields as a JSON-ready dict (with ``ops`` sorted and ``speedup`` added)."""
        data = dataclasses.asdict(self)
        data["ops"] = sorted(self.ops)
        data["shrink"] = {name: list(sizes) for name, sizes in self.shrink.resized.items()}
        data["speedup"] = self.speedup
        return data

    def __str__(self):
        sparse = "yes: " + ", ".join(self.sparse_layers) if self.sparse_storage else "no"
        lines = [
            f"TFLite export: {self.path}",
            f"  size            {self.size_bytes:,d} bytes"
            + (
                f" (dense float32 export {self.dense_size_bytes:,d}, "
                f"{self.dense_size_bytes / self.size_bytes:.1f}x smaller)"
                if self.dense_size_bytes
                else ""
            ),
            f"  ops             {', '.join(sorted(self.ops))}",
            f"  quantization    {self.quantization}",
            f"  sparse storage  {sparse}",
            f"  shrink          {self.shrink}",
        ]
        lines.extend(f"  note            {note}" for note in self.notes)
        if self.runtime:
            lines.append(f"  runtime         {self.runtime} (XNNPACK, 1 thread)")
        if self.max_abs_diff is not None:
            lines.append(f"  max |diff|      {self.max_abs_diff:.3g} (vs Keras)")
            lines.append(f"  top-1 agreement {self.top1_agreement:.2%}")
        if self.latency_ms is not None:
            lines.append(
                f"  latency         {self.latency_ms:.4f} ms median, 1 thread"
                + (
                    f" (dense float32 export {self.dense_latency_ms:.4f} ms, "
                    f"{self.speedup:.2f}x faster)"
                    if self.dense_latency_ms
                    else ""
                )
            )
        return "\n".join(lines)


def _single_input_shape(model):
    if len(model.inputs) != 1 or len(keras.tree.flatten(model.outputs)) != 1:
        raise ExportError(
            f"`model` must have one input and one output to be exported; "
            f"'{model.name}' has {len(model.inputs)} and "
            f"{len(keras.tree.flatten(model.outputs))}."
        )
    return tuple(model.inputs[0].shape[1:])


def _frozen_function(model, batch_size):
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    spec = tf.TensorSpec((batch_size, *_single_input_shape(model)), tf.float32)
    function = tf.function(lambda x: model(x, training=False), autograph=False)
    with builtin_ops_only():  # the compiled op is no TFLite builtin: its pure-TF form
        frozen = convert_variables_to_constants_v2(function.get_concrete_function(spec))
    for op in frozen.graph.get_operations():
        if op.type.startswith(_TF_RANDOM_OP_PREFIXES):
            layer = _layer_of_op(model, op.name)
            raise ExportError(
                f"Layer '{layer}' draws random numbers at inference "
                f"(op {op.type}); exported graphs must be deterministic."
            )
    return frozen


def _layer_of_op(model, op_name):
    # Keras names ops "<model>/<layer>_<n>/..." inside traced functions.
    names = sorted((layer.name for layer in walk(model)), key=len, reverse=True)
    for part in op_name.split("/"):
        for name in names:
            if part == name or part.startswith(name + "_"):
                return name
    return op_name


def _sparse_candidates(model):
    """Dense layers whose kernels are sparse enough for TFLite's sparse encoding."""
    names = []
    for layer in walk(model):
        if isinstance(layer, keras.layers.Dense):
            kernel = keras.ops.convert_to_numpy(layer.kernel)
            if np.mean(kernel == 0) >= SPARSE_STORAGE_MIN_ZEROS:
                names.append(layer.name)
    return tuple(names)


def _convert(model, batch_size, quantize, representative_data, sparse):
    import tensorflow as tf

    frozen = _frozen_function(model, batch_size)
    # With the function itself as `trackable_obj`, the converter keeps the
    # concrete-function path that a frozen graph needs (a tf.Module would be
    # saved and reloaded as a SavedModel first) and, unlike without one, does not
    # warn that it is deprecated.
    converter = tf.lite.TFLiteConverter.from_concrete_functions([frozen], trackable_obj=frozen)
    optimizations = []
    if quantize is not None:
        optimizations.append(tf.lite.Optimize.DEFAULT)
    if sparse:
        optimizations.append(tf.lite.Optimize.EXPERIMENTAL_SPARSITY)
    converter.optimizations = optimizations
    if quantize == "int8":
        samples = np.asarray(representative_data, "float32")

        def representative_dataset():
            for start in range(0, len(samples), batch_size):
                chunk = samples[start : start + batch_size]
                if len(chunk) == batch_size:
                    yield [chunk]

        converter.representative_dataset = representative_dataset
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    # Only builtin ops: no Flex (select TF ops) and no custom ops.
    if quantize != "int8":
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    try:
        return converter.convert()
    except Exception as error:  # the converter raises ConverterError and others
        raise ExportError(
            f"The TFLite converter refused '{model.name}' with builtin ops "
            f"only: {str(error).strip().splitlines()[0]}"
        ) from error


@dataclasses.dataclass
class _RunnableFile:
    content: bytes
    sparse_layers: tuple
    interpreter: object
    runtime: str
    notes: list


def _runnable_file(model, batch_size, quantize, representative_data, sparse_layers):
    """Converts ``model``; drops sparse storage when the runtime cannot run the file."""
    from tfpriors_mobile import ModelFileError, load_interpreter

    content = _convert(model, batch_size, quantize, representative_data, bool(sparse_layers))
    try:
        interpreter, runtime = load_interpreter(model_content=content, num_threads=1)
        return _RunnableFile(content, sparse_layers, interpreter, runtime, [])
    except ModelFileError as error:
        if not sparse_layers:
            raise ExportError(f"The exported file does not run: {error}") from error
    # XNNPACK (LiteRT 2.3) cannot prepare quantized weights stored sparse;
    # a file the default runtime cannot run is worth less than a few bytes.
    note = (
        "sparse storage dropped: the runtime's XNNPACK delegate cannot "
        f"run it with quantize={quantize!r}"
    )
    content = _convert(model, batch_size, quantize, representative_data, False)
    interpreter, runtime = load_interpreter(model_content=content, num_threads=1)
    return _RunnableFile(content, (), interpreter, runtime, [note])


def _check_ops(ops, path):
    bad = sorted(
        op
        for op in ops
        if op.startswith("Flex") or op in RANDOM_OPS or op == "CUSTOM" or not op.isupper()
    )
    if bad:
        raise ExportError(
            f"The export {path} contains ops that are not deterministic builtin TFLite ops: {bad}."
        )


def _validate_samples(data, name, input_shape):
    data = np.asarray(data, dtype="float32")
    if data.ndim != len(input_shape) + 1 or tuple(data.shape[1:]) != input_shape:
        raise ValueError(
            f"`{name}` must have shape (n, {', '.join(map(str, input_shape))}); "
            f"received {tuple(data.shape)}."
        )
    return _validation.finite_batch(data, name)


def to_tflite(
    model,
    path,
    quantize=None,
    representative_data=None,
    verify_data=None,
    shrink=True,
    sparse_storage=True,
    batch_size=1,
    latency_repeats=50,
    compare_dense=True,
):
    """Exports a (tfpriors or plain) Keras model to a .tflite file.

    The export graph is the model's deterministic inference mode: tfpriors
    layers become built-in layers holding their posterior means with pruned
    weights at zero; dead units and filters are removed (``shrink``); Dense
    kernels with >= 30% zeros left are stored sparse (``sparse_storage``);
    then optional quantization. Only builtin TFLite ops are allowed.

    Args:
        model: a built Sequential or functional model with one input and output.
        path: where to write the ``.tflite`` file (written atomically).
        quantize: ``None`` (float32), ``"dynamic"`` (int8 weights, float
            activations) or ``"int8"`` (full integer; needs ``representative_data``).
            Quantized weights cannot be stored sparse (the runtime's XNNPACK
            delegate does not run them), so ``"dynamic"`` writes the float32
            file instead when that one is not larger; the report says so.
        representative_data: input samples for int8 calibration.
        verify_data: input samples; when given, the file is run on a TFLite
            runtime and compared with ``model(x, training=False)``, and its
            latency is measured beside the dense float32 export of the same
            architecture.
        shrink: remove dead units / filters.
        sparse_storage: use TFLite's sparse encoding where it pays.
        batch_size: the fixed batch dimension of the exported graph.
        latency_repeats: timed invokes per latency median.
        compare_dense: with ``verify_data``, also export and time the dense
            float32 architecture (no pruning, no shrink, no sparse storage, no
            quantization): what a plain export of the model would give.

    Returns:
        An :class:`ExportReport`.

    Raises:
        ExportError: when a layer cannot be exported (unknown to the exporter,
            random at inference, or refused by the converter with builtin ops).
        ValueError: for invalid arguments, e.g. ``quantize="int8"`` without
            ``representative_data``.

    Example:
    >>> (x_train, y_train), (x_test, y_test) = tfpriors.datasets.load_digits()
    >>> model = keras.Sequential([keras.Input((64,)),
    ...                           tfpriors.layers.SparseVDDense(16, activation="relu"),
    ...                           tfpriors.layers.SparseVDDense(10)])
    >>> report = tfpriors.export.to_tflite(model, "digits.tflite", quantize="dynamic",
    ...                                    verify_data=x_test[:100], compare_dense=False)
    >>> print(report)
    TFLite export: digits.tflite
      size            ... bytes
      ops             FULLY_CONNECTED
      quantization    dynamic
      sparse storage  no
      shrink          no dead units
      runtime         ... (XNNPACK, 1 thread)
      max |diff|      ... (vs Keras)
      top-1 agreement ...%
      latency         ... ms median, 1 thread
    >>> bool(report.max_abs_diff < 0.1)
    True
    """
    if quantize not in QUANTIZE_MODES:
        raise ValueError(
            f"`quantize` must be one of {list(QUANTIZE_MODES)}; received {quantize!r}."
        )
    if not isinstance(path, (str, os.PathLike)) or not str(path).endswith(".tflite"):
        raise ValueError(f"`path` must be a file path ending in '.tflite'; received {path!r}.")
    batch_size = _validation.positive_int(batch_size, "batch_size")
    latency_repeats = _validation.positive_int(latency_repeats, "latency_repeats")
    plain = inference_model(model)
    input_shape = _single_input_shape(plain)
    if quantize == "int8":
        if representative_data is None:
            raise ValueError(
                "`quantize='int8'` needs `representative_data` (a few hundred "
                "input samples) to calibrate the activations."
            )
        representative_data = _validate_samples(
            representative_data, "representative_data", input_shape
        )
    if verify_data is not None:
        verify_data = _validate_samples(verify_data, "verify_data", input_shape)

    summary = ShrinkSummary({})
    exported = plain
    if shrink:
        exported, summary = shrink_model(plain)
    from tfpriors_mobile import load_interpreter, median_latency_ms, op_names, run_batch

    sparse_layers = _sparse_candidates(exported) if sparse_storage else ()
    file = _runnable_file(exported, batch_size, quantize, representative_data, sparse_layers)
    quantization = quantize or "none"
    if quantize == "dynamic":
        # Quantized weights cannot keep their sparse storage (see _runnable_file), so
        # the quantized file of a sparse model can be the larger one: never write it then.
        float_file = _runnable_file(exported, batch_size, None, None, sparse_layers)
        if len(float_file.content) <= len(file.content):
            float_file.notes.append(
                f"quantize='dynamic' not applied: the float32 file is smaller "
                f"({len(float_file.content):,} bytes; quantized {len(file.content):,}"
                + (", without sparse storage)" if file.notes else ")")
            )
            file, quantization = float_file, "none"
    ops = op_names(model_content=file.content)
    _check_ops(ops, path)
    with atomic_path(path) as temporary:
        with open(temporary, "wb") as f:
            f.write(file.content)
    report = ExportReport(
        path=str(path),
        size_bytes=len(file.content),
        ops=ops,
        quantization=quantization,
        sparse_storage=bool(file.sparse_layers),
        sparse_layers=file.sparse_layers,
        shrink=summary,
        runtime=file.runtime,
        units_kept=_units_kept(plain, exported),
        notes=tuple(file.notes),
    )
    if verify_data is None:
        return report

    expected = keras.ops.convert_to_numpy(model.predict(verify_data, verbose=0, batch_size=256))
    actual = run_batch(file.interpreter, verify_data)
    report.max_abs_diff = float(np.max(np.abs(actual - expected)))
    report.top1_agreement = float(
        np.mean(
            actual.reshape(len(actual), -1).argmax(1)
            == expected.reshape(len(expected), -1).argmax(1)
        )
    )
    example = verify_data[:batch_size]
    if not compare_dense:
        report.latency_ms = median_latency_ms(file.interpreter, example, repeats=latency_repeats)
        return report
    # The baseline is what a plain export gives: float32, unpruned, dense storage.
    dense_content = _convert(_dense_architecture(model), batch_size, None, None, sparse=False)
    dense_interpreter, _ = load_interpreter(model_content=dense_content, num_threads=1)
    report.dense_size_bytes = len(dense_content)
    # Alternate the two files so that drift of a noisy machine hits both alike.
    ours, dense = [], []
    for _ in range(LATENCY_ROUNDS):
        ours.append(median_latency_ms(file.interpreter, example, repeats=latency_repeats))
        dense.append(median_latency_ms(dense_interpreter, example, repeats=latency_repeats))
    report.latency_ms = float(np.median(ours))
    report.dense_latency_ms = float(np.median(dense))
    return report


def _units_kept(plain, exported):
    """``{name: (kept, before)}`` of the Dense / Conv2D layers of the export graph."""
    after = {layer.name: layer for layer in walk(exported)}
    units = {}
    for layer in walk(plain):
        if type(layer) in (keras.layers.Dense, keras.layers.Conv2D) and layer.name in after:
            size = int(layer.kernel.shape[-1])
            units[layer.name] = (int(after[layer.name].kernel.shape[-1]), size)
    return units


def _dense_architecture(model):
    """The same architecture with unpruned posterior means and no gates: the dense baseline."""
    model = without_gates(model)
    plain = inference_model(model)
    for layer, original in zip(walk(plain), walk(model)):
        if hasattr(original, "inference_layer") and hasattr(original, "kernel"):
            layer.kernel.assign(original.kernel)
    return plain
