"""Exclusive locks on outputs: one writer per store or file at a time.

:func:`output_lock` holds ``.NAME.lock`` beside the output ``NAME`` for as long as the
output is written. The lock is an ``flock`` on that file (released by the kernel when its
holder dies, however it dies), and the file says who holds it (JSON: pid, host, start
time, command line), so a second writer is refused at once with a message naming the
holder. A lock file left by a killed process (its flock free; its pid, on this host, not
running) is stale: it is taken over. On a file system without ``flock`` the file alone
is the lock: created exclusively, and taken over when its pid is dead on this host.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ..errors import OutputLockedError, StreamdetValueError

__all__ = ["HeldLock", "LockOwner", "lock_path", "output_lock", "pid_alive", "read_owner"]

try:
    import fcntl
except ImportError:  # pragma: no cover - not on POSIX
    fcntl = None  # type: ignore[assignment]

_NO_FLOCK = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL}
_BUSY = {errno.EAGAIN, errno.EWOULDBLOCK, errno.EACCES}


@dataclass(frozen=True)
class LockOwner:
    """Who holds (or held) a lock, as its lock file says."""

    pid: int | None
    host: str | None
    since: float | None
    command: str | None

    def describe(self) -> str:
        """``pid 123 on host h since 2025-01-01 12:00:00 (streamdet convert ...)``."""
        parts = [f"pid {self.pid}" if self.pid is not None else "an unknown process"]
        if self.host:
            parts.append(f"on host {self.host}")
        if self.since is not None:
            parts.append("since " + time.strftime("%Y-%m-%d %H:%M:%S",
                                                  time.localtime(self.since)))
        text = " ".join(parts)
        return text + (f" ({self.command})" if self.command else "")


def lock_path(path: str | os.PathLike[str]) -> Path:
    """The lock file of an output: ``.NAME.lock`` in the (resolved) directory holding it."""
    p = Path(path)
    parent = (p.parent if str(p.parent) else Path(".")).resolve()
    return parent / f".{p.name}.lock"


def read_owner(lock: Path) -> LockOwner | None:
    """What a lock file says, or None when it is missing or unreadable."""
    try:
        data = json.loads(lock.read_text())
        pid = data.get("pid")
        since = data.get("since")
        return LockOwner(pid=int(pid) if isinstance(pid, int) else None,
                         host=str(data["host"]) if data.get("host") else None,
                         since=float(since) if isinstance(since, int | float) else None,
                         command=str(data["command"]) if data.get("command") else None)
    except (OSError, ValueError, TypeError, AttributeError):
        return None


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` runs on this host (another user's counts as running)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    except (OverflowError, ValueError):
        return False
    return True


def _is_stale(owner: LockOwner | None) -> bool:
    """A lock file whose holder is known dead: same host, pid not running."""
    return (owner is not None and owner.pid is not None and owner.host == socket.gethostname()
            and owner.pid != os.getpid() and not pid_alive(owner.pid))


def _record() -> bytes:
    command = " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]) if sys.argv else ""
    return json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": time.time(),
                       "command": command[:300]}).encode()


def _write_record(fd: int) -> None:
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, _record())


def _refuse(output: Path, lock: Path, owner: LockOwner | None) -> OutputLockedError:
    who = owner.describe() if owner is not None else "another process"
    return OutputLockedError(f"{str(output)!r} is being written by {who}; wait for it to "
                             f"finish or stop it (lock file {str(lock)!r})")


def _flock(fd: int) -> bool | None:
    """True: locked; False: held by another; None: the file system has no flock."""
    if fcntl is None:  # pragma: no cover
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in _BUSY:
            return False
        if exc.errno in _NO_FLOCK:
            return None
        raise
    return True


def _acquire_flock(output: Path, lock: Path) -> tuple[int | None, bool]:
    """Lock with flock: (fd, took_over), or (None, False) when flock is not supported."""
    for _ in range(100):
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            got = _flock(fd)
            if got is None:
                os.close(fd)
                return None, False
            if not got:
                raise _refuse(output, lock, read_owner(lock))
            try:  # the file may have been unlinked (released) between open and flock
                same = os.path.samestat(os.fstat(fd), os.stat(lock))
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                continue
            took_over = os.fstat(fd).st_size > 0  # a record left by a killed holder
            _write_record(fd)
            return fd, took_over
        except BaseException:
            with contextlib.suppress(OSError):
                os.close(fd)
            raise
    raise OutputLockedError(f"cannot lock {str(output)!r}: {str(lock)!r} keeps changing")


def _acquire_file(output: Path, lock: Path) -> tuple[int, bool]:
    """Lock with the file alone (no flock): the record is written beside the lock and
    hard-linked onto it (it appears whole, or not at all); a dead holder's is taken over."""
    took_over = False
    tmp = lock.with_name(f"{lock.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        tmp.write_bytes(_record())
        for _ in range(100):
            try:
                os.link(tmp, lock)
            except FileExistsError:
                owner = read_owner(lock)
                empty = owner is None and _size(lock) == 0  # left by a probe for flock
                if not empty and not _is_stale(owner):
                    raise _refuse(output, lock, owner) from None
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(lock)
                took_over = took_over or not empty
                continue
            return os.open(lock, os.O_RDWR), took_over
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()
    raise OutputLockedError(f"cannot lock {str(output)!r}: {str(lock)!r} keeps changing")


def _size(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except OSError:
        return None


@dataclass
class HeldLock:
    """A lock held by this process (from :func:`output_lock`)."""

    output: Path
    path: Path
    took_over: bool
    uses_flock: bool


@contextlib.contextmanager
def output_lock(output: str | os.PathLike[str]) -> Iterator[HeldLock]:
    """Hold the exclusive lock on ``output`` (a store or a file) while writing it.

    Raises
    ------
    OutputLockedError
        Another process (or another writer in this one) holds it; the message names the
        holder's pid and host.
    StreamdetValueError
        The lock file cannot be created (directory missing or not writable).
    """
    out = Path(output)
    lock = lock_path(out)
    try:
        fd, took_over = _acquire_flock(out, lock)
        uses_flock = fd is not None
        if fd is None:
            fd, took_over = _acquire_file(out, lock)
    except OSError as exc:
        raise StreamdetValueError(f"cannot create the lock file {str(lock)!r} for "
                                  f"{str(out)!r}: {exc.strerror or exc}") from None
    held = HeldLock(output=out, path=lock, took_over=took_over, uses_flock=uses_flock)
    try:
        yield held
    finally:
        with contextlib.suppress(OSError):  # unlink while still holding it, then release
            if os.path.samestat(os.fstat(fd), os.stat(lock)):
                os.unlink(lock)
        os.close(fd)

