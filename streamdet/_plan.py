"""Chunk and tile geometry for chunked inference.

The image is cut into *cores* that partition the stride-padded image; each core
is read with a *halo* of context so that a fully convolutional model sees, for
every grid cell of the core, exactly what a whole-image forward pass would see.
All boundaries are multiples of the model's grid stride, so chunked and
whole-image grids coincide.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

from .errors import StreamdetValueError

__all__ = ["Window", "padded_size", "plan_windows", "round_up"]


def round_up(value: int, multiple: int) -> int:
    """Return the smallest multiple of ``multiple`` that is >= ``value``."""
    return math.ceil(value / multiple) * multiple


def padded_size(size: int, stride: int) -> int:
    """Return an image side padded up to a whole number of grid cells."""
    return round_up(max(size, 1), stride)


@dataclass(frozen=True)
class Window:
    """A core region and the larger input region read around it (0-based px, half-open).

    Attributes
    ----------
    index : int
        Row-major index of the window among its siblings.
    core : tuple of int
        ``(y0, y1, x0, x1)`` of the region whose grid cells this window owns.
    region : tuple of int
        ``(y0, y1, x0, x1)`` of the input read: the core grown by the halo, clipped to
        the stride-padded image.
    """

    index: int
    core: tuple[int, int, int, int]
    region: tuple[int, int, int, int]

    @property
    def region_shape(self) -> tuple[int, int]:
        """``(ny, nx)`` of the input region."""
        y0, y1, x0, x1 = self.region
        return (y1 - y0, x1 - x0)

    @property
    def core_pixels(self) -> int:
        """Number of pixels of the core."""
        y0, y1, x0, x1 = self.core
        return (y1 - y0) * (x1 - x0)


def _edges(size: int, step: int) -> Iterator[tuple[int, int]]:
    for start in range(0, size, step):
        yield start, min(start + step, size)


def plan_windows(bounds: tuple[int, int, int, int], *, core: int, halo: int, stride: int,
                 limit: tuple[int, int, int, int]) -> list[Window]:
    """Cut ``bounds`` into cores of side ``core`` with a ``halo`` of context.

    Parameters
    ----------
    bounds : tuple of int
        ``(y0, y1, x0, x1)`` of the area to cover (its origin a multiple of ``stride``).
    core : int
        Core side in px; a positive multiple of ``stride``.
    halo : int
        Context added on each side, px; a non-negative multiple of ``stride``.
    stride : int
        Grid stride of the model, px.
    limit : tuple of int
        ``(y0, y1, x0, x1)`` that regions are clipped to (the stride-padded image).

    Returns
    -------
    list of Window
        Windows in row-major order; their cores partition ``bounds``.
    """
    if core <= 0 or core % stride:
        raise StreamdetValueError(f"chunk size {core} must be a positive multiple of the "
                                  f"model stride {stride}")
    if halo < 0 or halo % stride:
        raise StreamdetValueError(f"halo {halo} must be a non-negative multiple of the "
                                  f"model stride {stride}")
    by0, by1, bx0, bx1 = bounds
    ly0, ly1, lx0, lx1 = limit
    windows: list[Window] = []
    for y0, y1 in _edges(by1 - by0, core):
        for x0, x1 in _edges(bx1 - bx0, core):
            c = (by0 + y0, by0 + y1, bx0 + x0, bx0 + x1)
            r = (max(ly0, c[0] - halo), min(ly1, c[1] + halo),
                 max(lx0, c[2] - halo), min(lx1, c[3] + halo))
            windows.append(Window(index=len(windows), core=c, region=r))
    return windows
