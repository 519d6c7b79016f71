"""Argument checks shared by the public functions: a clear StreamdetValueError naming the
argument and the bad value."""

from __future__ import annotations

import numpy as np

from .errors import StreamdetValueError

__all__ = ["check_int"]


def check_int(name: str, value: object, minimum: int) -> int:
    """``value`` as an int, refused unless it is an integer (not a bool) >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise StreamdetValueError(f"{name} must be an integer, got {value!r}")
    if int(value) < minimum:
        raise StreamdetValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)
