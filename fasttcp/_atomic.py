"""Output files appear whole or not at all.

Every file fasttcp writes by name (flow records, plots, generated captures) is written to a
temporary beside its target and renamed into place only when the writer finishes: a run that
fails or is interrupted (Ctrl-C, SIGTERM) leaves no file that looks complete but is not, and an
existing file at the target stays as it was.
"""
from __future__ import annotations

import os
import secrets
import shutil
from contextlib import contextmanager
from typing import Iterator, Union

__all__ = ["atomic_output", "PARTIAL_MARK"]

#: Part of every temporary's name: ``.OUT-partial-<random><OUT's extension>`` (no dot before
#: the mark, so a target without an extension gets a temporary without one).
PARTIAL_MARK = "-partial-"
# a long target name is cut so the temporary's name stays within NAME_MAX (255 bytes)
_NAME_ROOM = 200


def _temporary_name(path: str) -> str:
    folder, base = os.path.split(os.path.abspath(path))
    # the temporary keeps the target's extension: writers choose their format by it
    # (".gz" compresses a capture, ".png" / ".svg" picks matplotlib's backend)
    extension = os.path.splitext(base)[1][:16]
    return os.path.join(folder, f".{base[:_NAME_ROOM]}{PARTIAL_MARK}"
                                f"{secrets.token_hex(4)}{extension}")


def _remove(temporary: str) -> None:
    """Removes the temporary if it is there (an error may come before it is made, or after
    it is renamed)."""
    if os.path.isdir(temporary) and not os.path.islink(temporary):
        shutil.rmtree(temporary, ignore_errors=True)
    else:
        try:
            os.unlink(temporary)
        except FileNotFoundError:
            pass


@contextmanager
def atomic_output(path: Union[str, os.PathLike], directory: bool = False) -> Iterator[str]:
    """A temporary path beside `path` for a writer to write to, renamed to `path` when the
    block ends normally and removed when it raises (KeyboardInterrupt included).

    Parameters
    ----------
    path : str or path-like
        The target. A file there is replaced only by the rename; a directory there is an
        error (for a `directory` output: unless it is empty).
    directory : bool
        The output is a directory (a Parquet dataset): the temporary is made as one.

    Yields
    ------
    str
        The temporary's path, created empty (mode 0666 or 0777 less the umask), ending in
        the target's extension.

    Raises
    ------
    OSError
        When the temporary cannot be made or renamed (the target directory is missing or not
        writable, a non-empty directory stands at `path`); nothing is left behind.

    Examples
    --------
    >>> import os, tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     target = os.path.join(tmp, "out.txt")
    ...     try:
    ...         with atomic_output(target) as temporary, open(temporary, "w") as f:
    ...             _ = f.write("half")
    ...             raise KeyboardInterrupt
    ...     except KeyboardInterrupt:
    ...         pass
    ...     os.listdir(tmp)
    []
    """
    target = os.fspath(path)
    if os.path.isdir(target) and not (directory and not os.listdir(target)):
        raise IsADirectoryError(f"{target}: a directory is in the way"
                                + (" (and not empty)" if directory else ""))
    temporary = _temporary_name(target)
    # made inside the try: a signal right after the temporary is created still removes it
    try:
        while not _create(temporary, target, directory):
            temporary = _temporary_name(target)
        yield temporary
        os.replace(temporary, target)
    except BaseException:
        _remove(temporary)
        raise


def _create(temporary: str, target: str, directory: bool) -> bool:
    """Makes the temporary; False if its name is taken (a 32-bit random name: draw again)."""
    try:
        if directory:
            os.mkdir(temporary, 0o777)
        else:
            os.close(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    except FileExistsError:
        return False
    except OSError as error:    # named after the target: the temporary means nothing to users
        raise OSError(error.errno, error.strerror, target) from None
    return True
