"""The ``tfpriors`` console script: the command line is read before TensorFlow loads.

``import tfpriors`` imports TensorFlow (the layers register themselves with Keras
when the package is imported), which takes seconds and logs start-up lines. So the
console script starts here, outside the ``tfpriors`` package: ``tfpriors --help``,
usage errors, a missing model file and an output path that cannot be written are
answered at once, before TensorFlow is imported and before any training or
conversion starts. Only then does :func:`main` import TensorFlow, with its start-up
log lines left out, and run the command of :mod:`tfpriors.cli` (where
:func:`build_parser`, :func:`main` and :class:`CommandError` can be imported too).

A failing command prints one line, ``tfpriors COMMAND: error: ...``, on stderr and
exits with status 1; usage errors exit with status 2 (argparse's convention).

Example:
>>> from tfpriors_cli import build_parser
>>> args = build_parser().parse_args(["export", "model.keras", "model.tflite"])
>>> args.command, args.model, args.output
('export', 'model.keras', 'model.tflite')
"""

import argparse
import contextlib
import os
import re
import sys
import tempfile
import zipfile

DEFAULT_OUT = "tfpriors_demo"
MODEL_FILE = "model.keras"
PLOT_FILE = "sparsity.png"
# The demo recipe (see tfpriors/cli.py): Sparse VD fine-tuning epochs, and the
# epochs of the dense baseline it starts from.
DEFAULT_EPOCHS = 150
DENSE_EPOCHS = 20

# TensorFlow's own default is 0 (everything). The CLI shows warnings and errors of
# TensorFlow's C++ code only; TF_CPP_MIN_LOG_LEVEL=0 shows the rest again.
DEFAULT_TF_LOG_LEVEL = "2"


class CommandError(Exception):
    """A failure the CLI reports as one line, without a traceback.

    Example:
    >>> from tfpriors_cli import CommandError, check_model_file
    >>> try:
    ...     check_model_file("missing.keras")
    ... except CommandError as error:
    ...     print(error)
    no model file at 'missing.keras'.
    """


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


def _path(text):
    if not text:
        raise argparse.ArgumentTypeError("must be a path; received ''")
    return text


def _tflite_path(text):
    if not text.endswith(".tflite"):
        raise argparse.ArgumentTypeError(f"must end in .tflite; received {text!r}")
    return text


def _cause(error):
    return error.strerror or str(error)


def _check_can_create_in(directory, target, argument):
    """Raises CommandError unless a file can be created in ``directory``.

    A missing ``directory`` is checked at its nearest existing parent, where the
    writer will create it.
    """
    existing = directory or os.curdir
    while not os.path.exists(existing):
        parent = os.path.dirname(existing) or os.curdir
        if parent == existing:
            break
        existing = parent
    if not os.path.isdir(existing):
        raise CommandError(f"cannot write {target} ({argument}): {existing!r} is not a directory.")
    try:
        handle, probe = tempfile.mkstemp(prefix=".tfpriors-write-check-", dir=existing)
    except OSError as error:
        raise CommandError(f"cannot write {target} ({argument}): {_cause(error)}.") from None
    os.close(handle)
    os.remove(probe)


def check_output_file(path, argument):
    """Raises :class:`CommandError` unless the file ``path`` can be written; writes nothing.

    The command writes ``path`` atomically (a temporary file beside it, then a
    rename), creating missing folders: so ``path`` must not be a folder, and a
    file must be creatable in its folder (or in the nearest existing parent of a
    folder still to be created).

    Args:
        path: the file the command will write.
        argument: the command-line name of ``path``, for the message.

    Raises:
        CommandError: naming ``path``, ``argument`` and the cause (e.g.
            "Permission denied").

    Example:
    >>> from tfpriors_cli import CommandError, check_output_file
    >>> check_output_file("new/model.tflite", "output")  # writable: nothing happens
    >>> import os
    >>> os.path.exists("new")  # and nothing is created
    False
    >>> with open("file.txt", "w") as handle:
    ...     _ = handle.write("a file, not a folder")
    >>> try:
    ...     check_output_file("file.txt/model.tflite", "output")
    ... except CommandError as error:
    ...     print(error)
    cannot write 'file.txt/model.tflite' (output): 'file.txt' is not a directory.
    """
    if os.path.isdir(path):
        raise CommandError(f"cannot write {path!r} ({argument}): it is a directory.")
    directory = os.path.dirname(path) or os.curdir
    _check_can_create_in(directory, repr(path), argument)


def check_output_directory(path, argument):
    """Creates the folder ``path`` if missing; raises :class:`CommandError` unless writable.

    Args:
        path: the folder the command will write its files into.
        argument: the command-line name of ``path``, for the message.

    Raises:
        CommandError: naming ``path``, ``argument`` and the cause.

    Example:
    >>> from tfpriors_cli import CommandError, check_output_directory
    >>> check_output_directory("runs/demo", "--out")
    >>> import os
    >>> os.path.isdir("runs/demo")
    True
    >>> with open("file.txt", "w") as handle:
    ...     _ = handle.write("a file, not a folder")
    >>> try:
    ...     check_output_directory("file.txt", "--out")
    ... except CommandError as error:
    ...     print(error)
    cannot write into 'file.txt' (--out): it is not a directory.
    """
    if os.path.exists(path) and not os.path.isdir(path):
        raise CommandError(f"cannot write into {path!r} ({argument}): it is not a directory.")
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as error:
        raise CommandError(
            f"cannot create directory {path!r} ({argument}): {_cause(error)}."
        ) from None
    _check_can_create_in(path, f"into {path!r}", argument)


def add_output_folder(parser, name):
    """Adds ``--out``, an example's output folder (default ``examples_out/<name>``).

    Pair it with :func:`parse_args_with_output`, which checks the folder
    before the example starts any work.

    Args:
        parser: the example's ``argparse.ArgumentParser``.
        name: the example's name, the default folder's last part.

    Example:
    >>> import argparse
    >>> from tfpriors_cli import add_output_folder, parse_args_with_output
    >>> parser = argparse.ArgumentParser()
    >>> add_output_folder(parser, "my_example")
    >>> parse_args_with_output(parser, []).out
    'examples_out/my_example'
    """
    parser.add_argument(
        "--out",
        default=os.path.join("examples_out", name),
        help="output folder, created if missing (default: %(default)s)",
    )


def parse_args_with_output(parser, argv=None):
    """Parses ``argv`` and checks ``--out`` before any training: a bad folder is a usage error.

    Args:
        parser: a parser given ``--out`` by :func:`add_output_folder`.
        argv: the arguments (default ``sys.argv[1:]``).

    Returns:
        The parsed arguments; ``args.out`` exists and is writable.

    Example:
    >>> import argparse
    >>> from tfpriors_cli import add_output_folder, parse_args_with_output
    >>> parser = argparse.ArgumentParser()
    >>> add_output_folder(parser, "my_example")
    >>> import os
    >>> os.path.isdir(parse_args_with_output(parser, ["--out", "runs/one"]).out)
    True
    """
    args = parser.parse_args(argv)
    try:
        check_output_directory(args.out, "--out")
    except CommandError as error:
        parser.error(str(error))
    return args


def check_model_file(path):
    """Raises :class:`CommandError` unless ``path`` is a file that can be a ``.keras`` model.

    A ``.keras`` file is a zip archive; this catches a missing, truncated or
    foreign file without importing Keras.

    Args:
        path: the model file.

    Raises:
        CommandError: when ``path`` is missing or not a zip archive.

    Example:
    >>> from tfpriors_cli import CommandError, check_model_file
    >>> with open("notes.keras", "w") as handle:
    ...     _ = handle.write("not a model")
    >>> try:
    ...     check_model_file("notes.keras")
    ... except CommandError as error:
    ...     print(error)
    'notes.keras' is not a .keras file (not a zip archive: truncated or another format?).
    """
    if not os.path.isfile(path):
        raise CommandError(f"no model file at '{path}'.")
    if not zipfile.is_zipfile(path):
        raise CommandError(
            f"'{path}' is not a .keras file (not a zip archive: truncated or another format?)."
        )


def _check_demo(args):
    check_output_directory(args.out, "--out")
    for name in (MODEL_FILE, PLOT_FILE):
        check_output_file(os.path.join(args.out, name), "--out")


def _check_export(args):
    check_model_file(args.model)
    check_output_file(args.output, "output")
    if args.report:
        if os.path.abspath(args.report) == os.path.abspath(args.output):
            raise CommandError(f"--report {args.report!r} must not be the output file.")
        check_output_file(args.report, "--report")


def _run_demo(args):
    from tfpriors import cli

    return cli._demo_command(args)


def _run_export(args):
    from tfpriors import cli

    return cli._export_command(args)


def build_parser():
    """The argument parser of ``tfpriors`` (one subparser per command).

    Building and using it imports no TensorFlow.

    Returns:
        An ``argparse.ArgumentParser``; the parsed namespace has ``command``,
        the command's options, ``check`` (the checks of its files, run before
        anything else), ``handler`` (the function running it) and ``parser``
        (the command's subparser).

    Example:
    >>> from tfpriors_cli import build_parser
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
        type=_path,
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
    demo.set_defaults(check=_check_demo, handler=_run_demo, parser=demo)

    export = commands.add_parser(
        "export",
        help="export a .keras model to TFLite and verify it on LiteRT",
        description="Exports a saved Keras model (tfpriors layers included) to a .tflite "
        "file: deterministic inference graph, dead units removed, sparse "
        "storage where it pays, optional quantization. With --verify, runs "
        "the file on a TFLite runtime and compares it with Keras.",
    )
    export.add_argument("model", help="the saved model (.keras)")
    export.add_argument("output", type=_tflite_path, help="the .tflite file to write")
    export.add_argument(
        "--quantize",
        choices=["none", "dynamic", "int8"],
        default="none",
        help="weight quantization (default none); dynamic falls back to float32 "
        "when that file is smaller; int8 calibrates on the --verify training "
        "split or the first 200 .npy rows",
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
    export.add_argument(
        "--report", type=_path, metavar="JSON", help="also write the report as JSON"
    )
    export.set_defaults(check=_check_export, handler=_run_export, parser=export)
    return parser


# TensorFlow's C++ log lines ("I0000 00:00:1796141261.226722    9197 port.cc:153] ...").
_LOG_LINE = re.compile(r"^([IWEF])\d{4} [\d:.]+\s+\d+ [^\]\s]+:\d+\] ")
_SEVERITY = {"I": 0, "W": 1, "E": 2, "F": 3}
# Printed while TensorFlow's libraries load, before TF_CPP_MIN_LOG_LEVEL is applied:
# absl's banner, and the second line of cpu_feature_guard's message.
_STARTUP_TEXT = (
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    "To enable the following instructions: ",
)
# Logged as an error by every CPU-only machine when the devices are listed.
_NO_GPU_TEXT = "failed call to cuInit"


def _log_level():
    try:
        return int(os.environ.get("TF_CPP_MIN_LOG_LEVEL", DEFAULT_TF_LOG_LEVEL))
    except ValueError:
        return int(DEFAULT_TF_LOG_LEVEL)


def _is_startup_noise(line, level):
    if level <= 0:
        return False
    if line.startswith(_STARTUP_TEXT) or _NO_GPU_TEXT in line:
        return True
    match = _LOG_LINE.match(line)
    return bool(match) and _SEVERITY[match.group(1)] < level


@contextlib.contextmanager
def _startup_lines_filtered(level):
    """Keeps TensorFlow's start-up log lines (written by C++ to fd 2) out of stderr.

    What else the block writes to stderr (Python warnings, errors) is written
    again after it, whether the block fails or not.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    captured = tempfile.TemporaryFile()
    os.dup2(captured.fileno(), 2)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        with captured:
            captured.seek(0)
            lines = captured.read().decode(errors="replace").splitlines(keepends=True)
        kept = [line for line in lines if not _is_startup_noise(line, level)]
        if kept:
            sys.stderr.write("".join(kept))
            sys.stderr.flush()


def start_tensorflow():
    """Imports TensorFlow and tfpriors and lists the devices, without start-up lines.

    TensorFlow 2.21 logs its start-up lines (absl's "All log messages before
    absl::InitializeLog()", "oneDNN custom operations are on", "cudart_stub ...",
    "failed call to cuInit" on a CPU-only machine) while its libraries load, before
    ``TF_CPP_MIN_LOG_LEVEL`` takes effect, so no setting silences them. Here they
    are read off stderr during the import and dropped, by the rule of
    ``TF_CPP_MIN_LOG_LEVEL`` (default 2 here: warnings and errors are kept, and
    ``TF_CPP_MIN_LOG_LEVEL=0`` keeps every line); anything else is written
    again. When TensorFlow is not imported yet, ``TF_CPP_MIN_LOG_LEVEL`` is set to
    2 if unset, so that its later C++ log lines follow the same rule.

    Example:
    >>> from tfpriors_cli import start_tensorflow
    >>> start_tensorflow()  # TensorFlow is already running here: it lists the devices
    >>> import sys
    >>> "tensorflow" in sys.modules
    True
    """
    if "tensorflow" not in sys.modules:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", DEFAULT_TF_LOG_LEVEL)
    with _startup_lines_filtered(_log_level()):
        import tensorflow as tf

        import tfpriors  # noqa: F401  (registers the layers for loading)

        tf.config.list_logical_devices()


def main(argv=None):
    """Entry point of the ``tfpriors`` console script; returns the exit code.

    Parses the arguments and checks the command's files (no TensorFlow yet),
    then starts TensorFlow (:func:`start_tensorflow`) and runs the command.
    Usage errors exit through ``SystemExit(2)`` (argparse's convention), naming
    the bad argument.

    Args:
        argv: the arguments, without the program name; default ``sys.argv[1:]``.

    Returns:
        The exit code: 0 on success, 1 when a command failed (the error is
        printed on stderr as one line), 130 when interrupted.

    Example:
    ``main`` takes what follows ``tfpriors`` on the command line:

    >>> from tfpriors_cli import main
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
    prefix = f"{parser.prog} {args.command}: error:"
    try:
        args.check(args)
        try:
            start_tensorflow()
        except ImportError as error:  # e.g. another Keras backend selected
            raise CommandError(str(error).strip().splitlines()[0]) from None
        return args.handler(args)
    except CommandError as error:
        print(f"{prefix} {error}", file=sys.stderr)
        return 1
    except OSError as error:  # e.g. a write that failed after the checks: a full disk
        where = f"{error.filename!r}: " if error.filename else ""
        print(f"{prefix} {where}{_cause(error)}.", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"\n{parser.prog}: interrupted", file=sys.stderr)
        return 130


__all__ = [
    "CommandError",
    "build_parser",
    "check_model_file",
    "check_output_directory",
    "check_output_file",
    "main",
    "start_tensorflow",
]
