"""Files: atomic writes and clear errors for truncated or corrupted files.

A crash never leaves a half-written file behind (:func:`atomic_path`), and
reading a truncated or corrupted archive raises :class:`CorruptFileError` naming
the file (:func:`check_archive`, :func:`load_model`).
"""

import contextlib
import os
import tempfile
import zipfile

from tfpriors import _validation


@contextlib.contextmanager
def atomic_path(path, argument="path"):
    """Yields a temporary path beside ``path``; renames it to ``path`` on success.

    The temporary file has the same suffix as ``path`` (``model.save`` checks
    for ``.keras``). On an exception it is removed and ``path`` is untouched.

    Args:
        path: the file to write; its directory is created if needed.
        argument: the caller's name for ``path``, used in error messages.

    Yields:
        The temporary path to write to.

    Example:
    >>> import os
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    >>> with tfpriors.io.atomic_path("out/model.keras") as tmp:
    ...     model.save(tmp)
    >>> os.listdir("out")  # the temporary file was renamed
    ['model.keras']
    >>> try:
    ...     with tfpriors.io.atomic_path("out/model.keras") as tmp:
    ...         raise RuntimeError("crash while writing")
    ... except RuntimeError:
    ...     pass
    >>> os.listdir("out")  # the old file is untouched, nothing is left behind
    ['model.keras']
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"`{argument}` must be a file path; received {path!r}.")
    path = os.fspath(path)
    if not path or os.path.isdir(path):
        raise ValueError(f"`{argument}` must name a file; received {path!r}.")
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    base, suffix = os.path.splitext(os.path.basename(path))
    handle, temporary = tempfile.mkstemp(prefix=f".{base}.", suffix=f".tmp{suffix}", dir=directory)
    os.close(handle)
    # mkstemp makes the file private (0600); give it the permissions a plain
    # open() would have given.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(temporary, 0o666 & ~umask)
    try:
        yield temporary
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(temporary)
        raise


class CorruptFileError(ValueError):
    """A file tfpriors reads is truncated or corrupted.

    Example:
    >>> with open("broken.keras", "wb") as handle:
    ...     _ = handle.write(b"PK not really a zip archive")
    >>> try:
    ...     tfpriors.io.load_model("broken.keras")
    ... except tfpriors.io.CorruptFileError as error:
    ...     print(str(error)[:52])
    `path` 'broken.keras' is truncated or corrupted: it
    """


def check_archive(path, what, argument="path"):
    """Raises :class:`CorruptFileError` unless ``path`` is a complete zip archive.

    ``.keras`` models and ``.npz`` state files are zip archives; a file cut
    short by a crash or a partial copy loses its central directory or some
    member's data, which this finds before a loader fails with a misleading
    message ("File not found", "BadZipFile").

    Args:
        path: the file.
        what: what the file should be, for the message (e.g. "a .keras model").
        argument: the name of the caller's argument that gave ``path``.

    Raises:
        FileNotFoundError: when ``path`` does not exist.
        CorruptFileError: when it is not a complete zip archive or a member
            fails its checksum.

    Example:
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    >>> model.save("model.keras")
    >>> tfpriors.io.check_archive("model.keras", "a .keras model")  # complete: no error
    >>> data = open("model.keras", "rb").read()
    >>> with open("cut.keras", "wb") as handle:  # a copy cut short
    ...     _ = handle.write(data[: len(data) // 2])
    >>> tfpriors.io.check_archive("cut.keras", "a .keras model", argument="filepath")
    Traceback (most recent call last):
    ...
    tfpriors.io.CorruptFileError: `filepath` 'cut.keras' is truncated or corrupted: ...
    """
    path = _validation.file_path(path, argument)
    if not os.path.exists(path):
        raise FileNotFoundError(f"`{argument}`: no such file '{path}' ({what}).")
    try:
        with zipfile.ZipFile(path) as archive:
            damaged = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as error:
        raise CorruptFileError(
            f"`{argument}` '{path}' is truncated or corrupted: it is not "
            f"a complete zip archive, so not {what} ({error})."
        ) from None
    if damaged is not None:
        raise CorruptFileError(
            f"`{argument}` '{path}' is corrupted: its member '{damaged}' "
            f"fails its checksum, so it is not {what}."
        )


def load_model(path, **kwargs):
    """``keras.models.load_model`` with one clear error for a damaged file.

    Keras reports a truncated ``.keras`` file as "File not found"; this checks
    the archive first and raises :class:`CorruptFileError` naming the file.

    Args:
        path: a ``.keras`` file.
        **kwargs: passed to ``keras.models.load_model`` (``custom_objects``,
            ``compile``, ``safe_mode``).

    Returns:
        The loaded model.

    Example:
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)], name="tiny")
    >>> model.save("model.keras")
    >>> tfpriors.io.load_model("model.keras").name
    'tiny'
    """
    import keras

    check_archive(path, "a .keras model")
    return keras.models.load_model(path, **kwargs)


def save_figure(figure, path, argument="path", dpi=None):
    """Writes a matplotlib ``figure`` to ``path`` atomically; the format follows the suffix.

    Every tfpriors plot returns its figure and, given a path, writes it with this.

    Args:
        figure: a matplotlib ``Figure``.
        path: the file to write; its suffix picks the format (PNG when there is
            none).
        argument: the caller's name for ``path``, used in error messages.
        dpi: resolution; None keeps the figure's.

    Returns:
        ``figure``.

    Example:
    >>> from matplotlib.figure import Figure
    >>> figure = Figure(figsize=(2, 2))
    >>> _ = figure.subplots().plot([0, 1], [1, 0])
    >>> figure = tfpriors.io.save_figure(figure, "line.png", dpi=50)
    >>> open("line.png", "rb").read(4)[1:]  # the PNG signature
    b'PNG'
    """
    if not callable(getattr(figure, "savefig", None)):
        raise TypeError(f"`figure` must be a matplotlib Figure; received {figure!r}.")
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"`{argument}` must be a file path; received {path!r}.")
    if dpi is not None and (
        isinstance(dpi, bool) or not isinstance(dpi, (int, float)) or not 0 < dpi < 10_000
    ):
        raise ValueError(f"`dpi` must be None or a positive number; received {dpi!r}.")
    suffix = os.path.splitext(os.fspath(path))[1][1:].lower()
    with atomic_path(path, argument) as temporary:
        figure.savefig(temporary, format=suffix or "png", dpi=dpi)
    return figure
