"""Sub-pixel refinement of detection centres on the image itself."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

__all__ = ["one_per_peak", "refine_centres"]


def refine_centres(data: NDArray[np.floating], centres: NDArray[np.float64], *,
                   origin: tuple[int, int], max_shift: float = 1.5) -> NDArray[np.float64]:
    """Move detection centres onto the sub-pixel peak of the image.

    For each centre, the brightest pixel of its 3x3 neighbourhood is found and a
    parabola is fitted through it and its two neighbours along each axis; the vertex
    is the refined centre. A centre stays where the network put it when the
    neighbourhood leaves ``data``, holds a non-finite pixel, is not a local peak
    (no downward curvature), or when the vertex lies more than ``max_shift`` px away.

    Parameters
    ----------
    data : (ny, nx) float array, Jy/beam
        Image pixels; pixel ``(i, j)`` of ``data`` is image pixel
        ``(origin[0] + i, origin[1] + j)``.
    centres : (N, 2) float64
        Centres ``(x, y)`` in image pixels (0-based, pixel centres on integers).
    origin : tuple of int
        ``(y0, x0)``: image pixel of ``data[0, 0]``.
    max_shift : float
        Largest accepted move, px.

    Returns
    -------
    (N, 2) float64
        Refined centres, image pixels.
    """
    out = np.array(centres, dtype=np.float64, copy=True).reshape(-1, 2)
    if out.shape[0] == 0:
        return out
    ny, nx = data.shape
    y0, x0 = origin
    ix = np.rint(out[:, 0]).astype(np.int64) - x0
    iy = np.rint(out[:, 1]).astype(np.int64) - y0
    inside = (ix >= 2) & (ix < nx - 2) & (iy >= 2) & (iy < ny - 2)
    ix = np.where(inside, ix, 2)
    iy = np.where(inside, iy, 2)
    img = np.asarray(data)
    best = np.full(out.shape[0], -np.inf)
    bx, by = ix.copy(), iy.copy()
    all_finite = np.ones(out.shape[0], np.bool_)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            v = img[iy + dy, ix + dx].astype(np.float64)
            all_finite &= np.isfinite(v)
            better = v > best
            best = np.where(better, v, best)
            bx = np.where(better, ix + dx, bx)
            by = np.where(better, iy + dy, by)
    c = img[by, bx].astype(np.float64)
    left, right = img[by, bx - 1].astype(np.float64), img[by, bx + 1].astype(np.float64)
    up, down = img[by - 1, bx].astype(np.float64), img[by + 1, bx].astype(np.float64)
    curv_x = left - 2 * c + right
    curv_y = up - 2 * c + down
    finite = all_finite & np.isfinite(left) & np.isfinite(right) & np.isfinite(up) \
        & np.isfinite(down)
    peak = finite & (curv_x < 0) & (curv_y < 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        off_x = np.clip(0.5 * (left - right) / np.where(peak, curv_x, -1.0), -0.5, 0.5)
        off_y = np.clip(0.5 * (up - down) / np.where(peak, curv_y, -1.0), -0.5, 0.5)
    new_x = bx + off_x + x0
    new_y = by + off_y + y0
    ok = inside & peak & (np.hypot(new_x - out[:, 0], new_y - out[:, 1]) <= max_shift)
    out[ok, 0] = new_x[ok]
    out[ok, 1] = new_y[ok]
    return out


def one_per_peak(centres: NDArray[np.float64], objectness: NDArray[np.floating],
                 boxes: NDArray[np.float64]) -> NDArray[np.intp]:
    """Rows to keep so that no two detections share a refined centre.

    Two boxes of one source (two priors, or two cells) are often refined onto the same
    image peak, where they get bit-identical centres; the box of higher objectness is
    the source, the others are duplicates (an IoU-based NMS keeps both when their sizes
    differ). Ties are broken by the box itself (smaller first), so the choice does not
    depend on the order of the rows.

    Parameters
    ----------
    centres : (N, 2) float64
        Refined centres ``(x, y)``, image px (:func:`refine_centres`).
    objectness : (N,) float
        Scores; the highest of each group of equal centres is kept.
    boxes : (N, 4) float64, xyxy px
        The boxes (tie-break only).

    Returns
    -------
    (K,) intp
        Indices of the kept rows, ascending.
    """
    n = centres.shape[0]
    if n < 2:
        return np.arange(n, dtype=np.intp)
    score = np.negative(np.asarray(objectness, np.float64))
    order = np.lexsort((boxes[:, 3], boxes[:, 2], boxes[:, 1], boxes[:, 0], score,
                        centres[:, 1], centres[:, 0]))
    ranked = centres[order]
    first = np.r_[True, np.any(ranked[1:] != ranked[:-1], axis=1)]
    keep: NDArray[np.intp] = np.sort(order[first])
    return keep
