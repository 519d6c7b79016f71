"""Atomic output: write to a temporary name beside the target, then rename."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from .errors import OutputExistsError, StreamdetValueError

__all__ = ["atomic_path", "check_output"]


def check_output(path: str | os.PathLike[str], *, overwrite: bool) -> Path:
    """Validate an output path: parent exists and, unless ``overwrite``, the path does not.

    Returns
    -------
    pathlib.Path
        The output path.
    """
    p = Path(path)
    if p.exists() and not overwrite:
        raise OutputExistsError(f"output {str(p)!r} exists; pass overwrite=True (--overwrite)")
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.is_dir():
        raise StreamdetValueError(f"output directory {str(parent)!r} does not exist")
    if not os.access(parent, os.W_OK):
        raise StreamdetValueError(f"output directory {str(parent)!r} is not writable")
    return p


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` on success.

    On any exception the temporary file (or directory) is removed and ``path`` is
    left as it was.
    """
    target = check_output(path, overwrite=overwrite)
    fd, tmpname = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    os.unlink(tmpname)
    tmp = Path(tmpname)
    try:
        yield tmp
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()
