"""Chunk and tile geometry for chunked inference.

The image is cut into *cores* that partition the stride-padded image; each core
is read with a *halo* of context so that a fully convolutional model sees, for
every grid cell of the core, exactly what a whole-image forward pass would see.
All boundaries are multiples of the model's grid stride, so chunked and
whole-image grids coincide.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from ..errors import StreamdetValueError

__all__ = ["Window", "padded_size", "plan_windows", "round_up"]


def round_up(value: int, multiple: int) -> int:
    """Return the smallest multiple of ``multiple`` that is >= ``value``."""
    return math.ceil(value / multiple) * multiple


def padded_size(size: int, stride: int) -> int:
    """Return an image side padded up to a whole number of grid cells."""
    return round_up(max(size, 1), stride)


def _edges(size: int, step: int) -> Iterator[tuple[int, int]]:
    for start in range(0, size, step):
        yield start, min(start + step, size)


Axes = tuple[int, ...]


@dataclass(frozen=True)
class Window:
    """A core region and the larger input region read around it (0-based, half-open).

    The same for images and cubes: bounds are flat ``(lo, hi)`` pairs in numpy axis
    order, ``(y0, y1, x0, x1)`` for an image, ``(z0, z1, y0, y1, x0, x1)`` for a cube.

    Attributes
    ----------
    index : int
        Row-major index of the window among its siblings (the last axis fastest).
    core : tuple of int
        Bounds of the region whose grid cells this window owns.
    region : tuple of int
        Bounds of the input read: the core grown by the halo, clipped to the
        stride-padded image.
    """

    index: int
    core: Axes
    region: Axes

    @property
    def ndim(self) -> int:
        """Number of axes (2 for an image, 3 for a cube)."""
        return len(self.core) // 2

    @property
    def region_shape(self) -> Axes:
        """Shape of the input region, numpy order (``(ny, nx)``, ``(nz, ny, nx)``)."""
        r = self.region
        return tuple(r[2 * a + 1] - r[2 * a] for a in range(self.ndim))

    @property
    def core_pixels(self) -> int:
        """Number of pixels (voxels) of the core."""
        c = self.core
        return math.prod(c[2 * a + 1] - c[2 * a] for a in range(self.ndim))


def _per_axis(value: int | Sequence[int], n: int, what: str) -> Axes:
    vals = (value,) * n if isinstance(value, int) else tuple(int(v) for v in value)
    if len(vals) != n:
        raise StreamdetValueError(f"{what} {value!r} must be one integer or {n}")
    return vals


def plan_windows(bounds: Sequence[int], *, core: int | Sequence[int],
                 halo: int | Sequence[int], stride: int | Sequence[int],
                 limit: Sequence[int]) -> list[Window]:
    """Cut ``bounds`` into cores of side ``core`` with a ``halo`` of context, in N dimensions.

    Parameters
    ----------
    bounds : tuple of 2N int
        ``(y0, y1, x0, x1)`` (image) or ``(z0, z1, y0, y1, x0, x1)`` (cube) of the area
        to cover, numpy axis order (its origin a multiple of ``stride``).
    core : int or N int
        Core side per axis, px; positive multiples of ``stride``.
    halo : int or N int
        Context added on each side per axis, px; non-negative multiples of ``stride``.
    stride : int or N int
        Grid stride of the model per axis, px.
    limit : tuple of 2N int
        Bounds that regions are clipped to (the stride-padded image).

    Returns
    -------
    list of Window
        Windows in row-major order (last axis fastest); their cores partition ``bounds``.
    """
    n = len(bounds) // 2
    if len(bounds) != 2 * n or len(limit) != 2 * n or n < 1:
        raise StreamdetValueError(f"bounds {tuple(bounds)!r} and limit {tuple(limit)!r} must "
                                  "be (lo, hi) pairs of the same axes")
    cores, halos = _per_axis(core, n, "chunk size"), _per_axis(halo, n, "halo")
    strides = _per_axis(stride, n, "stride")
    for c, h, s in zip(cores, halos, strides, strict=True):
        if c <= 0 or c % s:
            raise StreamdetValueError(f"chunk size {c} must be a positive multiple of the "
                                      f"model stride {s}")
        if h < 0 or h % s:
            raise StreamdetValueError(f"halo {h} must be a non-negative multiple of the "
                                      f"model stride {s}")
    axes = [[(bounds[2 * a] + lo, bounds[2 * a] + hi)
             for lo, hi in _edges(bounds[2 * a + 1] - bounds[2 * a], cores[a])]
            for a in range(n)]
    windows: list[Window] = []
    for spans in itertools.product(*axes):
        cb = tuple(v for span in spans for v in span)
        rb = tuple(max(limit[2 * a], cb[2 * a] - halos[a]) if k == 0
                   else min(limit[2 * a + 1], cb[2 * a + 1] + halos[a])
                   for a in range(n) for k in range(2))
        windows.append(Window(index=len(windows), core=cb, region=rb))
    return windows
