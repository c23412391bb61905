"""Load a .tflite file on the best available runtime, run it on batches, time it.

Runtimes, in order: ``ai-edge-litert`` (LiteRT, the maintained runtime),
``tflite-runtime`` (its predecessor), then ``tf.lite`` (only when TensorFlow
is installed anyway).
"""

import os
import statistics
import time

import numpy as np


class ModelFileError(ValueError):
    """A .tflite file is missing, truncated or not a TFLite model."""


def _interpreter_classes():
    try:
        from ai_edge_litert.interpreter import Interpreter

        yield "ai_edge_litert", Interpreter
    except ImportError:
        pass
    try:
        from tflite_runtime.interpreter import Interpreter

        yield "tflite_runtime", Interpreter
    except ImportError:
        pass
    try:
        import tensorflow as tf

        yield "tf.lite", tf.lite.Interpreter
    except ImportError:
        pass


def _read_model(model_path, model_content):
    if (model_path is None) == (model_content is None):
        raise ValueError("Give exactly one of `model_path` and `model_content`.")
    if model_path is not None:
        if not os.path.isfile(model_path):
            raise ModelFileError(f"No TFLite model at '{model_path}' (file not found).")
        with open(model_path, "rb") as f:
            model_content = f.read()
        source = f"'{model_path}'"
    else:
        source = "the given bytes"
    # A FlatBuffer TFLite model carries the identifier "TFL3" at bytes 4..8;
    # checking it first turns garbage into a clear error instead of a crash.
    if len(model_content) < 8 or model_content[4:8] != b"TFL3":
        raise ModelFileError(f"{source} is not a TFLite model (no TFL3 identifier).")
    return model_content, source


def load_interpreter(model_path=None, model_content=None, num_threads=1, delegates=True):
    """Returns ``(interpreter, runtime name)`` with tensors allocated.

    Args:
        model_path: path of a .tflite file, or
        model_content: its bytes.
        num_threads: CPU threads of the interpreter (1 for phone-like timings).
        delegates: apply the runtime's default delegate (XNNPACK on CPU).

    Raises:
        ModelFileError: the file is missing or not a valid TFLite model.
        ImportError: no TFLite runtime is installed.
    """
    model_content, source = _read_model(model_path, model_content)
    errors = []
    for name, interpreter_class in _interpreter_classes():
        try:
            options = {}
            if not delegates:
                options["experimental_op_resolver_type"] = _no_delegate_resolver(interpreter_class)
            interpreter = interpreter_class(
                model_content=model_content, num_threads=num_threads, **options
            )
            interpreter.allocate_tensors()
            return interpreter, name
        except (ValueError, RuntimeError) as error:
            errors.append(f"{name}: {error}")
            break  # a corrupt file fails the same way on every runtime
    if not errors:
        raise ImportError(
            "No TFLite runtime found: install ai-edge-litert (pip install ai-edge-litert)."
        )
    reason = errors[0].splitlines()[0]
    if "flatbuffer" in reason.lower():
        raise ModelFileError(f"{source} is truncated or corrupted ({reason}).")
    raise ModelFileError(f"{source} could not be loaded by {reason}")


def _no_delegate_resolver(interpreter_class):
    import importlib

    module = importlib.import_module(interpreter_class.__module__)
    return module.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES


def op_names(model_path=None, model_content=None):
    """The set of operator names stored in a model (e.g. {'FULLY_CONNECTED', 'CONV_2D'}).

    Read with the default delegates off, so the names are the file's own ops
    rather than the DELEGATE nodes XNNPACK puts in their place.
    """
    interpreter, _ = load_interpreter(model_path, model_content, delegates=False)
    return {detail["op_name"] for detail in interpreter._get_ops_details()}


def _quantize(x, detail):
    scale, zero_point = detail["quantization"]
    if detail["dtype"] in (np.int8, np.uint8) and scale:
        info = np.iinfo(detail["dtype"])
        return np.clip(np.round(x / scale + zero_point), info.min, info.max).astype(detail["dtype"])
    return x.astype(detail["dtype"])


def _dequantize(y, detail):
    scale, zero_point = detail["quantization"]
    if detail["dtype"] in (np.int8, np.uint8) and scale:
        return (y.astype("float32") - zero_point) * scale
    return y


def run_batch(interpreter, x):
    """Runs the single-input model on every example of ``x``; returns float outputs.

    Files exported with a fixed batch size are run chunk by chunk; a file
    with a dynamic batch dimension is resized once.
    """
    x = np.asarray(x)
    (input_detail,) = interpreter.get_input_details()
    expected = tuple(int(d) for d in input_detail["shape"][1:])
    if x.ndim != len(expected) + 1 or tuple(x.shape[1:]) != expected:
        raise ValueError(
            f"`input` must have shape (batch, {', '.join(map(str, expected))}) "
            f"for this model; received {tuple(x.shape)}."
        )
    if not np.issubdtype(x.dtype, np.number):
        raise ValueError(f"`input` must be numeric; received dtype {x.dtype}.")
    if len(x) == 0:
        raise ValueError("`input` holds no examples (batch size 0).")
    batch = int(input_detail["shape"][0])
    if input_detail["shape_signature"][0] == -1 and batch != len(x):
        interpreter.resize_tensor_input(input_detail["index"], [len(x), *expected])
        interpreter.allocate_tensors()
        batch = len(x)
        input_detail = interpreter.get_input_details()[0]
    output_detail = interpreter.get_output_details()[0]
    outputs = []
    for start in range(0, len(x), batch):
        chunk = x[start : start + batch]
        pad = batch - len(chunk)
        if pad:
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], pad, axis=0)])
        interpreter.set_tensor(input_detail["index"], _quantize(chunk, input_detail))
        interpreter.invoke()
        result = _dequantize(interpreter.get_tensor(output_detail["index"]), output_detail)
        outputs.append(result[: batch - pad])
    return np.concatenate(outputs).astype("float32")


def median_latency_ms(interpreter, example, repeats=50, warmup=5):
    """Median wall time of one ``invoke`` on ``example`` (one batch), in milliseconds."""
    (input_detail,) = interpreter.get_input_details()
    example = np.asarray(example)
    batch = int(input_detail["shape"][0])
    if len(example) != batch:
        if input_detail["shape_signature"][0] == -1:
            interpreter.resize_tensor_input(input_detail["index"], list(example.shape))
            interpreter.allocate_tensors()
            input_detail = interpreter.get_input_details()[0]
        else:
            example = np.resize(example, (batch, *example.shape[1:]))
    interpreter.set_tensor(input_detail["index"], _quantize(example, input_detail))
    for _ in range(warmup):
        interpreter.invoke()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        interpreter.invoke()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)
