"""Handing freed heap memory back to the operating system (glibc only).

A long detection run allocates and frees many arrays of a few MB in several threads.
glibc keeps freed memory in each thread's arena for reuse; arrays of other sizes, or
allocated by another thread, cannot reuse it, so the resident set of a long run grows
with fragments that nothing uses. ``malloc_trim(0)`` returns the free pages of every
arena to the kernel (what Dask's distributed workers do to "trim memory"). On other C
libraries (macOS, Windows, musl) this is a no-op.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import sys
from collections.abc import Callable

__all__ = ["release_free_memory"]


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim: Callable[[int], int] = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    return trim


def release_free_memory() -> bool:
    """Return the free pages of the C heap to the operating system.

    Returns
    -------
    bool
        True where glibc's ``malloc_trim`` was called (whatever it released).
    """
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True
