"""The ``tfpriors`` command line: ``tfpriors demo`` and ``tfpriors export``.

The two commands::

    tfpriors demo [--epochs N] [--out DIR] [--seed S]
    tfpriors export MODEL.keras OUT.tflite [--quantize none|dynamic|int8] [--verify DATA]
                    [--batch-size N] [--no-shrink] [--report JSON]

``demo`` trains LeNet-300-100 on the embedded digits data: a dense baseline,
then the same network sparsified with Sparse Variational Dropout and
fine-tuned. It prints both accuracies and the compression, and writes the
Sparse VD model (``model.keras``) and a picture of what it removed
(``sparsity.png``). ``export`` writes a .tflite file and checks it on LiteRT.
The functions behind them (:func:`run_demo`, :func:`run_export`,
:func:`main`) can be called from Python too.

Example:
In a shell::

    tfpriors demo --epochs 150 --out tfpriors_demo
    tfpriors export tfpriors_demo/model.keras model.tflite --quantize dynamic --verify digits

The export from Python, on a small saved model:

>>> from tfpriors.cli import run_export
>>> model = keras.Sequential([keras.Input((64,)), tfpriors.layers.SparseVDDense(10)])
>>> model.save("model.keras")
>>> report = run_export("model.keras", "model.tflite", verify="digits")
>>> report.path, report.top1_agreement
('model.tflite', 1.0)
"""

import argparse
import contextlib
import dataclasses
import os
import sys
import tempfile
import time
import zipfile

DEFAULT_OUT = "tfpriors_demo"
MODEL_FILE = "model.keras"
PLOT_FILE = "sparsity.png"

# The demo recipe: pretrain dense, `tfpriors.sparsify` it, fine-tune with the
# KL weight warmed up over the first third of the epochs (the paper's recipe
# for pretrained nets). On digits (5 seeds, batch 64, adam 1e-3) it beat
# Sparse VD from scratch on accuracy at similar compression: 100 epochs
# 96.3% vs 95.7% test accuracy at 92x vs 94x; 150 epochs 96.8% vs 96.6% at
# 106x vs 116x, with a smaller spread over seeds. 150 epochs take about half
# a minute on 2 CPU cores.
DEFAULT_EPOCHS = 150
DENSE_EPOCHS = 20
BATCH_SIZE = 64
WARMUP_FRACTION = 1 / 3
DIGITS_IMAGE_SHAPE = (8, 8)


def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer; received {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer; received {value}")
    return value


def _non_negative_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0; received {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0; received {value}")
    return value


def _directory(text):
    if not text:
        raise argparse.ArgumentTypeError("must be a directory path; received ''")
    if os.path.exists(text) and not os.path.isdir(text):
        raise argparse.ArgumentTypeError(
            f"must be a directory; {text!r} exists and is not a directory"
        )
    return text


def build_parser():
    """The argument parser of ``tfpriors`` (one subparser per command).

    Returns:
        An ``argparse.ArgumentParser``; the parsed namespace has ``command``,
        the command's options, ``handler`` (the function running it) and
        ``parser`` (the command's subparser).

    Example:
    >>> from tfpriors.cli import build_parser
    >>> args = build_parser().parse_args(["demo", "--epochs", "20"])
    >>> args.command, args.epochs, args.out, args.seed
    ('demo', 20, 'tfpriors_demo', 0)
    >>> args = build_parser().parse_args(["export", "model.keras", "model.tflite"])
    >>> args.quantize, args.verify, args.batch_size
    ('none', None, 1)
    """
    parser = argparse.ArgumentParser(
        prog="tfpriors",
        description="Prior knowledge for Keras 3 models: Sparse Variational Dropout and friends.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    demo = commands.add_parser(
        "demo",
        help="dense vs Sparse VD LeNet-300-100 on digits; saves model and plot",
        description="Trains LeNet-300-100 (64-300-100-10) on the embedded 8x8 digits "
        "(1,347 train / 450 test images): a dense baseline, then the same "
        "network sparsified with Sparse Variational Dropout "
        "(tfpriors.sparsify) and fine-tuned. Prints test accuracy and "
        f"compression, and writes {MODEL_FILE} (the Sparse VD model) and "
        f"{PLOT_FILE} into --out.",
    )
    demo.add_argument(
        "--epochs",
        type=_positive_int,
        default=DEFAULT_EPOCHS,
        metavar="N",
        help=f"Sparse VD fine-tuning epochs (default {DEFAULT_EPOCHS}); the "
        f"dense baseline trains for min(N, {DENSE_EPOCHS})",
    )
    demo.add_argument(
        "--out",
        type=_directory,
        default=DEFAULT_OUT,
        metavar="DIR",
        help=f"output directory, created if missing (default ./{DEFAULT_OUT})",
    )
    demo.add_argument(
        "--seed",
        type=_non_negative_int,
        default=0,
        help="random seed of initialisation and training (default 0)",
    )
    demo.set_defaults(handler=_demo_command, parser=demo)

    export = commands.add_parser(
        "export",
        help="export a .keras model to TFLite and verify it on LiteRT",
        description="Exports a saved Keras model (tfpriors layers included) to a .tflite "
        "file: deterministic inference graph, dead units removed, sparse "
        "storage where it pays, optional quantization. With --verify, runs "
        "the file on a TFLite runtime and compares it with Keras.",
    )
    export.add_argument("model", help="the saved model (.keras)")
    export.add_argument("output", help="the .tflite file to write")
    export.add_argument(
        "--quantize",
        choices=["none", "dynamic", "int8"],
        default="none",
        help="weight quantization (default none); int8 calibrates on "
        "the --verify training split or the first 200 .npy rows",
    )
    export.add_argument(
        "--verify",
        metavar="DATA",
        help="a data set name (digits, mnist, fashion_mnist, cifar10) or "
        "a .npy file of inputs to check the export on",
    )
    export.add_argument(
        "--batch-size",
        type=_positive_int,
        default=1,
        metavar="N",
        help="fixed batch dimension of the exported graph (default 1)",
    )
    export.add_argument("--no-shrink", action="store_true", help="keep dead units and filters")
    export.add_argument("--report", metavar="JSON", help="also write the report as JSON")
    export.set_defaults(handler=_export_command, parser=export)
    return parser


class CommandError(Exception):
    """A failure the CLI reports as one line, without a traceback.

    Example:
    >>> from tfpriors.cli import CommandError, run_export
    >>> try:
    ...     run_export("missing.keras", "model.tflite")
    ... except CommandError as error:
    ...     print(error)
    no model file at 'missing.keras'.
    """


def _load_verify_data(spec, input_shape):
    """Returns ``(calibration samples, verification samples)`` for ``--verify``."""
    import numpy as np

    import tfpriors

    if spec.endswith(".npy"):
        if not os.path.isfile(spec):
            raise CommandError(f"--verify: no file at '{spec}'.")
        try:
            data = np.load(spec, allow_pickle=False).astype("float32")
        except Exception as error:
            raise CommandError(
                f"--verify: '{spec}' is not a readable .npy file ({error})."
            ) from None
        return data[:200], data
    if spec not in tfpriors.datasets.LOADERS:
        raise CommandError(
            f"--verify must be a .npy file or one of "
            f"{sorted(tfpriors.datasets.LOADERS)}; received {spec!r}."
        )
    try:
        (x_train, _), (x_test, _) = tfpriors.datasets.load(spec, flat=len(input_shape) == 1)
    except tfpriors.datasets.DatasetUnavailableError as error:
        raise CommandError(str(error)) from None
    if tuple(x_test.shape[1:]) != tuple(input_shape):
        raise CommandError(
            f"--verify: {spec} inputs have shape {x_test.shape[1:]}, the "
            f"model takes {tuple(input_shape)}."
        )
    return x_train[:200], x_test


def _load_keras_model(path):
    import keras

    import tfpriors  # noqa: F401  (registers the tfpriors layers for loading)

    if not os.path.isfile(path):
        raise CommandError(f"no model file at '{path}'.")
    if not zipfile.is_zipfile(path):
        raise CommandError(
            f"'{path}' is not a .keras file (not a zip archive: truncated or another format?)."
        )
    try:
        return keras.models.load_model(path)
    except Exception as error:  # keras raises many kinds for truncated / foreign files
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise CommandError(
            f"'{path}' could not be loaded as a Keras model (truncated or "
            f"not a .keras file?): {type(error).__name__}: "
            f"{first_line[:200]}"
        ) from None


def run_export(
    model_path, output, quantize="none", verify=None, batch_size=1, shrink=True, report_path=None
):
    """Loads ``model_path``, exports it to ``output`` and returns the ExportReport.

    What ``tfpriors export`` runs; see :func:`tfpriors.export.to_tflite`.

    Args:
        model_path: the saved model (``.keras``).
        output: the ``.tflite`` file to write.
        quantize: ``"none"``, ``"dynamic"`` or ``"int8"`` (which needs ``verify``).
        verify: a data set name of ``tfpriors.datasets.LOADERS`` or a ``.npy``
            file of inputs: the file is run on a TFLite runtime and compared
            with Keras; the first 200 training inputs calibrate ``int8``.
        batch_size: fixed batch dimension of the exported graph.
        shrink: remove dead units and filters.
        report_path: optional JSON file to write the report to.

    Returns:
        The :class:`tfpriors.export.ExportReport`.

    Raises:
        CommandError: for a missing or unreadable model, bad ``verify`` data,
            ``int8`` without ``verify``, or a model that cannot be exported.

    Example:
    >>> from tfpriors.cli import run_export
    >>> model = keras.Sequential([keras.Input((64,)), tfpriors.layers.SparseVDDense(10)])
    >>> model.save("model.keras")
    >>> report = run_export("model.keras", "model.tflite", verify="digits",
    ...                     report_path="report.json")
    >>> report.path, sorted(report.ops), report.top1_agreement
    ('model.tflite', ['FULLY_CONNECTED'], 1.0)
    >>> import json
    >>> json.load(open("report.json"))["quantization"]
    'none'
    """
    _initialize_devices()
    import json

    import tfpriors
    from tfpriors.io import atomic_path

    model = _load_keras_model(model_path)
    representative, verify_data = None, None
    if verify is not None:
        representative, verify_data = _load_verify_data(verify, model.inputs[0].shape[1:])
    elif quantize == "int8":
        raise CommandError("--quantize int8 needs --verify DATA to calibrate on.")
    try:
        report = tfpriors.export.to_tflite(
            model,
            output,
            quantize=None if quantize == "none" else quantize,
            representative_data=representative,
            verify_data=verify_data,
            batch_size=batch_size,
            shrink=shrink,
        )
    except ValueError as error:  # ExportError included: the message names the layer
        raise CommandError(str(error)) from None
    if report_path:
        with atomic_path(report_path) as temporary:
            with open(temporary, "w") as f:
                json.dump(report.to_dict(), f, indent=2)
    return report


def _export_command(args):
    if not args.output.endswith(".tflite"):
        args.parser.error(f"argument output: must end in .tflite; received {args.output!r}")
    try:
        report = run_export(
            args.model,
            args.output,
            quantize=args.quantize,
            verify=args.verify,
            batch_size=args.batch_size,
            shrink=not args.no_shrink,
            report_path=args.report,
        )
    except CommandError as error:
        print(f"tfpriors export: error: {error}", file=sys.stderr)
        return 1
    print(report)
    return 0


@dataclasses.dataclass
class DemoResult:
    """What :func:`run_demo` trained, measured and wrote.

    Attributes:
        model: the trained Sparse VD model.
        dense_model: the dense baseline.
        dense_accuracy: test accuracy of the dense baseline.
        sparse_accuracy: test accuracy of the Sparse VD model.
        report: the :class:`tfpriors.CompressionReport` of the Sparse VD model.
        dense_weights: number of weights of the dense baseline.
        model_path: where the Sparse VD model was saved.
        plot_path: where the sparsity plot was written.
        seconds: wall time of the run.

    Example:
    >>> from tfpriors.cli import DemoResult
    >>> model = tfpriors.models.lenet_300_100((64,), 10, kind="sparse_vd")
    >>> result = DemoResult(model=model, dense_model=None, dense_accuracy=0.97,
    ...                     sparse_accuracy=0.968, report=tfpriors.compression_report(model),
    ...                     dense_weights=50200, model_path="model.keras",
    ...                     plot_path="sparsity.png", seconds=30.0)
    >>> result.report.total_weights
    50200
    """

    model: object
    dense_model: object
    dense_accuracy: float
    sparse_accuracy: float
    report: object
    dense_weights: int
    model_path: str
    plot_path: str
    seconds: float


@contextlib.contextmanager
def _native_stderr_hidden_unless_failing():
    """Hides what C++ code writes to stderr in the block, unless the block fails."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with tempfile.TemporaryFile() as captured:
            os.dup2(captured.fileno(), 2)
            try:
                yield
            except BaseException:
                os.dup2(saved, 2)
                captured.seek(0)
                sys.stderr.write(captured.read().decode(errors="replace"))
                raise
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _initialize_devices():
    # TensorFlow 2.21 probes CUDA when it first lists devices and logs a
    # scary "failed call to cuInit" on CPU-only machines, whatever
    # TF_CPP_MIN_LOG_LEVEL says. The demo runs on CPU; keep that line out of
    # its output unless the user asked for TensorFlow's logs.
    import tensorflow as tf

    if os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2") == "0":
        tf.config.list_logical_devices()
        return
    with _native_stderr_hidden_unless_failing():
        tf.config.list_logical_devices()


def run_demo(epochs=DEFAULT_EPOCHS, out=DEFAULT_OUT, seed=0):
    """Trains a dense baseline on digits, sparsifies and fine-tunes it; saves model and plot.

    Args:
        epochs: Sparse VD fine-tuning epochs; the dense baseline trains for
            ``min(epochs, 20)``.
        out: existing output directory.
        seed: random seed for Keras, NumPy and Python.

    Returns:
        A :class:`DemoResult`.

    Example:
    The command runs 150 epochs; one is enough to see what comes back:

    >>> from tfpriors.cli import format_summary, run_demo
    >>> result = run_demo(epochs=1, out=".", seed=0)
    digits: 1,347 training / 450 test images, 64 features; LeNet-300-100, batch 64
    >>> result.model_path, result.plot_path, result.dense_weights
    ('./model.keras', './sparsity.png', 50200)
    >>> bool(0.0 <= result.sparse_accuracy <= 1.0), bool(result.report.total_compression >= 1)
    (True, True)
    >>> print(format_summary(result))
                    test accuracy  weights kept  compression  sparsity
    ------------------------------------------------------------------
    dense baseline  ...
    Sparse VD       ...
    """
    _initialize_devices()
    import keras

    import tfpriors
    from tfpriors.io import atomic_path
    from tfpriors.plotting import plot_sparsity

    start = time.perf_counter()
    keras.utils.set_random_seed(seed)
    (x_train, y_train), (x_test, y_test) = tfpriors.datasets.load_digits()
    num_classes = int(y_train.max()) + 1
    print(
        f"digits: {len(x_train):,} training / {len(x_test):,} test images, "
        f"{x_train.shape[1]} features; LeNet-300-100, batch {BATCH_SIZE}",
        flush=True,
    )
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    # The name carries over to the sparsified model, its file and its plot.
    dense = tfpriors.models.lenet_300_100(
        x_train.shape[1:], num_classes, kind="dense", name="lenet_300_100"
    )
    dense.compile("adam", loss, metrics=["accuracy"])
    dense.fit(
        x_train,
        y_train,
        epochs=min(epochs, DENSE_EPOCHS),
        batch_size=BATCH_SIZE,
        verbose=0,
        callbacks=[
            tfpriors.callbacks.EpochProgressBar("dense baseline", keys=["loss", "accuracy"])
        ],
    )
    _, dense_accuracy = dense.evaluate(x_test, y_test, batch_size=len(x_test), verbose=0)

    sparse = tfpriors.sparsify(dense)
    tfpriors.set_dataset_size(sparse, len(x_train))
    sparse.compile("adam", loss, metrics=["accuracy"])
    warmup_end = max(1, round(WARMUP_FRACTION * epochs))
    sparse.fit(
        x_train,
        y_train,
        epochs=epochs,
        batch_size=BATCH_SIZE,
        verbose=0,
        callbacks=[
            tfpriors.callbacks.KLWarmup(0, warmup_end),
            tfpriors.callbacks.SparsityMonitor(per_layer=False),
            tfpriors.callbacks.EpochProgressBar(
                "Sparse VD", keys=["loss", "accuracy", "kl_weight", "compression"]
            ),
        ],
    )
    _, sparse_accuracy = sparse.evaluate(x_test, y_test, batch_size=len(x_test), verbose=0)

    model_path = os.path.join(out, MODEL_FILE)
    with atomic_path(model_path) as temporary:
        sparse.save(temporary)
    plot_path = os.path.join(out, PLOT_FILE)
    plot_sparsity(sparse, plot_path, input_image_shape=DIGITS_IMAGE_SHAPE)

    return DemoResult(
        model=sparse,
        dense_model=dense,
        dense_accuracy=float(dense_accuracy),
        sparse_accuracy=float(sparse_accuracy),
        report=tfpriors.compression_report(sparse),
        dense_weights=tfpriors.compression_report(dense).total_weights,
        model_path=model_path,
        plot_path=plot_path,
        seconds=time.perf_counter() - start,
    )


def format_summary(result):
    """The demo's result table (a string).

    Args:
        result: a :class:`DemoResult`.

    Returns:
        The table comparing the dense baseline with the Sparse VD model, a string.

    Example:
    >>> from tfpriors.cli import DemoResult, format_summary
    >>> model = tfpriors.models.lenet_300_100((64,), 10, kind="sparse_vd")
    >>> result = DemoResult(model=model, dense_model=None, dense_accuracy=0.97,
    ...                     sparse_accuracy=0.968, report=tfpriors.compression_report(model),
    ...                     dense_weights=50200, model_path="model.keras",
    ...                     plot_path="sparsity.png", seconds=30.0)
    >>> print(format_summary(result))
                    test accuracy  weights kept  compression  sparsity
    ------------------------------------------------------------------
    dense baseline         97.00%        50,200         1.0x     0.00%
    Sparse VD              96.80%        ...
    """
    report = result.report
    rows = [
        ("", "test accuracy", "weights kept", "compression", "sparsity"),
        (
            "dense baseline",
            f"{result.dense_accuracy:.2%}",
            f"{result.dense_weights:,}",
            "1.0x",
            f"{0:.2%}",
        ),
        (
            "Sparse VD",
            f"{result.sparse_accuracy:.2%}",
            f"{report.total_nonzero:,}",
            f"{report.total_compression:.1f}x",
            f"{report.total_sparsity:.2%}",
        ),
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(
            [row[0].ljust(widths[0])]
            + [cell.rjust(width) for cell, width in zip(row[1:], widths[1:])]
        )
        for row in rows
    ]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def _demo_command(args):
    try:
        os.makedirs(args.out, exist_ok=True)
    except OSError as error:
        args.parser.error(
            f"argument --out: cannot create directory {args.out!r}: {error.strerror or error}"
        )
    result = run_demo(epochs=args.epochs, out=args.out, seed=args.seed)
    print()
    print(format_summary(result))
    print()
    print("Sparse VD layers (weights kept at evaluation):")
    print(result.report)
    print()
    print(
        f"wrote {result.model_path}  (the Sparse VD model; `import tfpriors` before "
        "keras.models.load_model)"
    )
    print(f"wrote {result.plot_path}  (sparsity per layer and first-layer mask)")
    print(f"done in {result.seconds:.0f} s")
    return 0


def main(argv=None):
    """Entry point of the ``tfpriors`` console script; returns the exit code.

    Usage errors exit through ``SystemExit(2)`` (argparse's convention),
    naming the bad argument.

    Args:
        argv: the arguments, without the program name; default ``sys.argv[1:]``.

    Returns:
        The exit code: 0 on success, 1 when a command failed (the error is
        printed on stderr as one line), 130 when interrupted.

    Example:
    ``main`` takes what follows ``tfpriors`` on the command line, e.g. for
    ``tfpriors export model.keras model.tflite --verify digits``:

    >>> from tfpriors.cli import main
    >>> model = keras.Sequential([keras.Input((64,)), tfpriors.layers.SparseVDDense(10)])
    >>> model.save("model.keras")
    >>> main(["export", "model.keras", "model.tflite", "--verify", "digits"])
    TFLite export: model.tflite
    ...
      top-1 agreement 100.00%
    ...
    0
    >>> main(["export", "missing.keras", "model.tflite"])  # the error goes to stderr
    1
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        parser.exit(
            2, f"\n{parser.prog}: error: a command is required, e.g. `{parser.prog} demo`\n"
        )
    try:
        return args.handler(args)
    except KeyboardInterrupt:
        print(f"\n{parser.prog}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
