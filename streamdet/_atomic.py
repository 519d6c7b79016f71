"""Safe, atomic outputs: checked paths, one writer at a time.

:func:`check_output` refuses, before anything is written, an output that must never be
replaced, even with ``overwrite``: a directory (for a file output), a device, pipe or
socket, or one of the command's inputs. :func:`atomic_path` writes under the output's
lock (:func:`streamdet._lock.output_lock`: a second writer is refused at once) to a
temporary name beside it and renames it onto the output at the end; without
``overwrite`` the rename never replaces a file that appeared meanwhile.
:func:`writing` holds the lock for longer (a whole command) and is re-entrant in its
thread, so the writer inside takes it again freely.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import tempfile
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path

from .errors import OutputExistsError, StreamdetValueError

__all__ = ["atomic_path", "check_output", "writing"]

PathLike = str | os.PathLike[str]

_held = threading.local()        # lock files held through writing(), per thread


def _kind(mode: int) -> str | None:
    """What a file of this ``st_mode`` is, when it is not a regular file."""
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return "directory"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "device"
    if stat.S_ISFIFO(mode):
        return "named pipe"
    if stat.S_ISSOCK(mode):
        return "socket"
    return "special file"


def _same(a: Path, b: PathLike) -> bool:
    try:
        return os.path.samefile(a, b)
    except (OSError, ValueError):
        return False


def check_output(path: PathLike, *, overwrite: bool, inputs: Iterable[PathLike] = (),
                 store: bool = False) -> Path:
    """Validate an output path before anything is written.

    Parameters
    ----------
    path : str or os.PathLike
        The output.
    overwrite : bool
        Whether an existing regular file may be replaced.
    inputs : iterable of path
        The inputs of the command: the output is never one of them (nor a link to one).
    store : bool
        The output is a directory store whose writer (``convert``) decides itself what
        it replaces: a directory there is left to it. Otherwise the output is a file and
        an existing directory is refused, whatever ``overwrite``.

    Returns
    -------
    pathlib.Path
        The output path.

    Raises
    ------
    OutputExistsError
        The path exists and ``overwrite`` is false, or it is something never replaced (a
        directory, device, named pipe or socket).
    StreamdetValueError
        The path is an input; its directory is missing or not writable.
    """
    p = Path(path)
    try:
        present = os.lstat(p)
    except FileNotFoundError:
        present = None
    except OSError as exc:
        raise StreamdetValueError(f"cannot use output {str(p)!r}: {exc.strerror or exc}") from None
    if present is not None:
        for inp in inputs:
            if _same(p, inp):
                raise StreamdetValueError(f"output {str(p)!r} is the input {str(inp)!r}; "
                                          "refusing to overwrite it")
        try:
            mode = os.stat(p).st_mode      # what a link points to
        except OSError:
            mode = present.st_mode         # a dangling link: the link itself
        kind = _kind(mode)
        if kind == "directory" and not store:
            raise OutputExistsError(f"output {str(p)!r} is a directory, which is never "
                                    "replaced; name a file to write")
        if kind is not None and kind != "directory":
            raise OutputExistsError(f"output {str(p)!r} is a {kind}, not a regular file; "
                                    "it is never replaced")
        if not overwrite:
            raise OutputExistsError(f"output {str(p)!r} exists; pass overwrite=True "
                                    "(--overwrite)")
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.is_dir():
        raise StreamdetValueError(f"output directory {str(parent)!r} does not exist")
    if not os.access(parent, os.W_OK):
        raise StreamdetValueError(f"output directory {str(parent)!r} is not writable")
    return p


@contextlib.contextmanager
def writing(path: PathLike) -> Iterator[None]:
    """Hold the exclusive lock on the output ``path`` (see :mod:`streamdet._lock`).

    Re-entrant within a thread: a writer inside (e.g. :func:`atomic_path`) takes the
    same output's lock again without waiting; another thread or process is refused with
    :class:`~streamdet.errors.OutputLockedError`.
    """
    from ._lock import lock_path, output_lock

    key = str(lock_path(path))
    held: set[str] = _held.__dict__.setdefault("keys", set())
    if key in held:
        yield
        return
    with output_lock(path):
        held.add(key)
        try:
            yield
        finally:
            held.discard(key)


def _commit(tmp: Path, target: Path, *, overwrite: bool) -> None:
    """Move the finished ``tmp`` onto ``target``; without ``overwrite``, never replace."""
    check_output(target, overwrite=True)  # nothing slipped in that is never replaced
    if overwrite:
        os.replace(tmp, target)
        return
    if tmp.is_dir() and not tmp.is_symlink():
        if os.path.lexists(target):
            raise _appeared(target)
        os.rename(tmp, target)
        return
    try:
        os.link(tmp, target, follow_symlinks=False)  # fails if target exists: no replace
    except FileExistsError:
        raise _appeared(target) from None
    except OSError:  # no hard links on this file system
        if os.path.lexists(target):
            raise _appeared(target) from None
        os.rename(tmp, target)
        return
    tmp.unlink()


def _appeared(target: Path) -> OutputExistsError:
    return OutputExistsError(f"output {str(target)!r} appeared while it was being written and "
                             "was not replaced; pass overwrite=True (--overwrite)")


@contextlib.contextmanager
def atomic_path(path: PathLike, *, overwrite: bool = False,
                inputs: Iterable[PathLike] = ()) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` on success.

    The output's lock is held throughout (a second writer, in this process or another,
    is refused at once). On any exception the temporary file (or directory) is removed
    and ``path`` is left as it was. Without ``overwrite`` an output that appeared while
    it was written is not replaced (:class:`~streamdet.errors.OutputExistsError`).
    """
    inputs = tuple(inputs)
    target = check_output(path, overwrite=overwrite, inputs=inputs)
    with writing(target):
        check_output(target, overwrite=overwrite, inputs=inputs)  # again, under the lock
        fd, tmpname = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp",
                                       dir=target.parent)
        os.close(fd)
        os.unlink(tmpname)
        tmp = Path(tmpname)
        try:
            yield tmp
            _commit(tmp, target, overwrite=overwrite)
        finally:
            if tmp.is_dir() and not tmp.is_symlink():
                shutil.rmtree(tmp, ignore_errors=True)
            elif tmp.exists():
                tmp.unlink()
