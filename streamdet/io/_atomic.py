"""Safe, atomic outputs: checked paths, one writer at a time, one temporary name.

:func:`check_output` refuses, before anything is written, an output that must never be
replaced, even with ``overwrite``: a directory (for a file output), a device, pipe or
socket, or one of the command's inputs. :func:`atomic_path` writes under the output's
lock (:func:`streamdet.io._lock.output_lock`: a second writer is refused at once) to one
temporary name beside it, ``.NAME.PID.tmp``, and renames it onto the output at the end;
without ``overwrite`` the rename never replaces a file that appeared meanwhile. Temporary
files of the same output left by killed writers (their pid not running) are removed
when the output is next written. :func:`writing` holds the lock for longer (a whole
command) and is re-entrant in its thread, so the writer inside takes it again freely.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import stat
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from ..errors import OutputExistsError, StreamdetValueError
from ._lock import lock_path, output_lock, pid_alive

__all__ = ["atomic_path", "check_output", "remove_stale_temps", "temp_path", "writing"]

PathLike = str | os.PathLike[str]

#: Temporary files named as before pids were in the names (``tempfile.mkstemp``'s 8
#: random characters, once nested) are removed once this old, seconds.
LEGACY_TEMP_AGE_S = 600.0

_held = threading.local()        # lock files held through writing(), per thread
_active: set[str] = set()        # temporary paths being written by this process
_active_guard = threading.Lock()


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
    """Hold the exclusive lock on the output ``path`` (see :mod:`streamdet.io._lock`).

    Re-entrant within a thread: a writer inside (e.g. :func:`atomic_path`) takes the
    same output's lock again without waiting; another thread or process is refused with
    :class:`~streamdet.errors.OutputLockedError`.
    """

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


def temp_path(path: PathLike, pid: int | None = None) -> Path:
    """The temporary name of an output while ``pid`` (default: this process) writes it:
    ``.NAME.PID.tmp`` beside it."""
    p = Path(path)
    return p.parent / f".{p.name}.{os.getpid() if pid is None else pid}.tmp"


def _remove(victim: Path) -> bool:
    try:
        if victim.is_dir() and not victim.is_symlink():
            shutil.rmtree(victim)
        else:
            victim.unlink()
    except FileNotFoundError:
        return False
    except OSError:
        return False
    return True


def remove_stale_temps(path: PathLike) -> list[Path]:
    """Delete the temporary files of the output ``path`` left by killed writers.

    Those named ``.NAME.PID.tmp`` whose pid is not running (and not this process's), and
    those named as by older versions (``.NAME.XXXXXXXX.tmp``, once nested
    ``..NAME.XXXXXXXX.tmp.XXXXXXXX.tmp``) older than :data:`LEGACY_TEMP_AGE_S`. Other
    files are never touched. Returns what was removed.
    """
    p = Path(path)
    parent = p.parent if str(p.parent) else Path(".")
    name = re.escape(p.name)
    current = re.compile(rf"\.{name}\.(\d+)\.tmp")
    rand = r"[a-z0-9_]{8}"
    legacy = re.compile(rf"(?:\.{name}\.{rand}\.tmp|\.\.{name}\.{rand}\.tmp\.{rand}\.tmp)")
    try:
        names = os.listdir(parent)
    except OSError:
        return []
    removed: list[Path] = []
    now = time.time()
    for entry in names:
        victim = parent / entry
        m = current.fullmatch(entry)
        if m is not None:
            pid = int(m.group(1))
            stale = pid != os.getpid() and not pid_alive(pid)
        elif legacy.fullmatch(entry):
            try:
                stale = now - os.lstat(victim).st_mtime > LEGACY_TEMP_AGE_S
            except OSError:
                stale = False
        else:
            continue
        if stale and str(victim.absolute()) not in _active and _remove(victim):
            removed.append(victim)
    return removed


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
    is refused at once); stale temporary files of the output are removed first; the
    temporary name is ``.NAME.PID.tmp`` (one per output). On any exception the
    temporary file (or directory) is removed and ``path`` is left as it was. Without
    ``overwrite`` an output that appeared while it was written is not replaced
    (:class:`~streamdet.errors.OutputExistsError`).
    """
    inputs = tuple(inputs)
    target = check_output(path, overwrite=overwrite, inputs=inputs)
    with writing(target):
        check_output(target, overwrite=overwrite, inputs=inputs)  # again, under the lock
        remove_stale_temps(target)
        tmp = temp_path(target)
        key = str(tmp.absolute())
        with _active_guard:
            if key in _active:
                raise StreamdetValueError(f"output {str(target)!r} is already being written "
                                          "by this process")
            _active.add(key)
        try:
            _remove(tmp)  # a leftover of an earlier process with this pid
            yield tmp
            _commit(tmp, target, overwrite=overwrite)
        finally:
            _remove(tmp)
            with _active_guard:
                _active.discard(key)
