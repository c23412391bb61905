"""Atomic file writing: a crash never leaves a half-written file behind."""

import contextlib
import os
import tempfile


@contextlib.contextmanager
def atomic_path(path):
    """Yields a temporary path beside ``path``; renames it to ``path`` on success.

    The temporary file has the same suffix as ``path`` (``model.save`` checks
    for ``.keras``). On an exception it is removed and ``path`` is untouched.

    Example:

    >>> with atomic_path("out/model.keras") as tmp:
    ...     model.save(tmp)
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    base, suffix = os.path.splitext(os.path.basename(path))
    handle, temporary = tempfile.mkstemp(prefix=f".{base}.", suffix=f".tmp{suffix}",
                                         dir=directory)
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
