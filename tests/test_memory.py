"""Handing freed heap memory back to the system (glibc's malloc_trim)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from streamdet.engine._memory import _malloc_trim, release_free_memory

_CHILD = """
import numpy as np
from streamdet.engine._memory import release_free_memory

def rss_mb():
    return next(float(l.split()[1]) / 1024 for l in open("/proc/self/status")
                if l.startswith("VmRSS:"))

# 48 MB in 4 KB arrays (below glibc's mmap threshold: on the heap), then a live
# allocation after them, so that freeing them cannot shrink the heap from its top.
blocks = [np.ones(1000, np.float32) for _ in range(12000)]
pin = np.ones(1000, np.float32)
del blocks
before = rss_mb()
release_free_memory()
print(before - rss_mb())
"""


@pytest.mark.skipif(_malloc_trim() is None, reason="needs glibc (malloc_trim)")
def test_release_free_memory_returns_freed_heap_pages() -> None:
    out = subprocess.run([sys.executable, "-c", _CHILD], check=True, capture_output=True,
                         text=True)
    released_mb = float(out.stdout.strip().splitlines()[-1])
    assert released_mb > 30.0


def test_release_free_memory_says_whether_it_trimmed() -> None:
    assert release_free_memory() is (_malloc_trim() is not None)
