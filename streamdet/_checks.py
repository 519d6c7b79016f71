"""Argument checks shared by the public functions: a clear StreamdetValueError naming the
argument and the bad value."""

from __future__ import annotations

import math

import numpy as np

from .errors import StreamdetValueError

__all__ = ["check_int", "check_positive"]


def check_int(name: str, value: object, minimum: int) -> int:
    """``value`` as an int, refused unless it is an integer (not a bool) >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise StreamdetValueError(f"{name} must be an integer, got {value!r}")
    if int(value) < minimum:
        raise StreamdetValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def check_positive(name: str, value: object) -> float:
    """``value`` as a float, refused unless it is a finite number > 0."""
    try:
        v = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        v = math.nan
    if not (math.isfinite(v) and v > 0):
        raise StreamdetValueError(f"{name} must be a positive number, got {value!r}")
    return v
