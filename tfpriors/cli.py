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

The argument parser, the checks of the files a command writes, and :func:`main`
live in :mod:`tfpriors_cli` (outside this package, so that ``tfpriors --help``
and usage errors answer without importing TensorFlow) and are importable from
here as well.

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

import dataclasses
import os
import sys
import time

from tfpriors_cli import (  # noqa: F401  (re-exported: the parser and its checks)
    DEFAULT_EPOCHS,
    DEFAULT_OUT,
    DENSE_EPOCHS,
    MODEL_FILE,
    PLOT_FILE,
    CommandError,
    build_parser,
    check_model_file,
    check_output_directory,
    check_output_file,
    main,
    start_tensorflow,
)

# The demo recipe: pretrain dense, `tfpriors.sparsify` it, fine-tune with the
# KL weight warmed up over the first third of the epochs (the paper's recipe
# for pretrained nets). On digits (5 seeds, batch 64, adam 1e-3) it beat
# Sparse VD from scratch on accuracy at similar compression: 100 epochs
# 96.3% vs 95.7% test accuracy at 92x vs 94x; 150 epochs 96.8% vs 96.6% at
# 106x vs 116x, with a smaller spread over seeds. 150 epochs take about half
# a minute on 2 CPU cores. DEFAULT_EPOCHS and DENSE_EPOCHS live in tfpriors_cli
# (the help text shows them).
BATCH_SIZE = 64
WARMUP_FRACTION = 1 / 3
DIGITS_IMAGE_SHAPE = (8, 8)


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

    check_model_file(path)
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
        CommandError: for a missing or unreadable model, an ``output`` or
            ``report_path`` that cannot be written (checked before anything
            is loaded; when a write fails, neither file is left behind), bad
            ``verify`` data, ``int8`` without ``verify``, or a model that cannot
            be exported.

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
    check_model_file(model_path)
    check_output_file(output, "output")
    if report_path:
        check_output_file(report_path, "report_path")
    start_tensorflow()
    import json

    import tfpriors
    from tfpriors.io import atomic_path

    model = _load_keras_model(model_path)
    representative, verify_data = None, None
    if verify is not None:
        representative, verify_data = _load_verify_data(verify, model.inputs[0].shape[1:])
    elif quantize == "int8":
        raise CommandError("--quantize int8 needs --verify DATA to calibrate on.")
    writing = output
    try:
        # The .tflite file appears only once the report is written too.
        with atomic_path(output, "output") as temporary:
            report = tfpriors.export.to_tflite(
                model,
                temporary,
                quantize=None if quantize == "none" else quantize,
                representative_data=representative,
                verify_data=verify_data,
                batch_size=batch_size,
                shrink=shrink,
            )
            report.path = os.fspath(output)
            if report_path:
                writing = report_path
                with atomic_path(report_path, "report_path") as temporary_report:
                    with open(temporary_report, "w") as f:
                        json.dump(report.to_dict(), f, indent=2)
    except ValueError as error:  # ExportError included: the message names the layer
        raise CommandError(str(error)) from None
    except OSError as error:  # the checks passed, the write failed: a full disk, ...
        raise CommandError(
            f"cannot write {os.fspath(writing)!r}: {error.strerror or error}."
        ) from None
    return report


def _export_command(args):
    report = run_export(
        args.model,
        args.output,
        quantize=args.quantize,
        verify=args.verify,
        batch_size=args.batch_size,
        shrink=not args.no_shrink,
        report_path=args.report,
    )
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


def run_demo(epochs=DEFAULT_EPOCHS, out=DEFAULT_OUT, seed=0):
    """Trains a dense baseline on digits, sparsifies and fine-tunes it; saves model and plot.

    Args:
        epochs: Sparse VD fine-tuning epochs; the dense baseline trains for
            ``min(epochs, 20)``.
        out: output directory, created if missing.
        seed: random seed for Keras, NumPy and Python.

    Returns:
        A :class:`DemoResult`.

    Raises:
        CommandError: when ``out`` cannot be written (checked before training)
            or a write fails (the message says what was written).

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
    model_path = os.path.join(out, MODEL_FILE)
    plot_path = os.path.join(out, PLOT_FILE)
    check_output_directory(out, "out")
    for path in (model_path, plot_path):
        check_output_file(path, "out")
    start_tensorflow()
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

    try:
        with atomic_path(model_path) as temporary:
            sparse.save(temporary)
    except OSError as error:  # the checks passed, the write failed: a full disk, ...
        raise CommandError(f"cannot write {model_path!r}: {error.strerror or error}.") from None
    try:
        plot_sparsity(sparse, plot_path, input_image_shape=DIGITS_IMAGE_SHAPE)
    except OSError as error:
        raise CommandError(
            f"cannot write {plot_path!r}: {error.strerror or error} (the model was "
            f"saved to {model_path!r})."
        ) from None

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


if __name__ == "__main__":
    sys.exit(main())
