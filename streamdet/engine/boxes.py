"""Axis-aligned box utilities (the style of ``torchvision.ops``), in numpy, in 2D and 3D.

One convention throughout streamdet, the same for images and cubes: a box is
``[lo..., hi...]`` in 0-based pixel (voxel) coordinates of the full image or cube,
float64, one row per box.

* **2D** (images): shape ``(N, 4)``, columns ``[x0, y0, x1, y1]`` ("xyxy").
* **3D** (cubes): shape ``(N, 6)``, columns ``[x0, y0, z0, x1, y1, z1]``: x the
  column, y the row, z the channel (frequency plane).

The centre of pixel ``i`` is at ``i`` along every axis; a box spans ``x0 <= x < x1``
(and so on per axis). The dimensionality ``ndim`` of a box array is its number of
columns divided by two (:func:`box_ndim`); every function here serves both, one
implementation over the axes. Boxes must be finite with ``hi >= lo`` on every axis;
zero-extent (degenerate) boxes are allowed. The converters :func:`xyxy_to_cxcywh` and
:func:`cxcywh_to_xyxy` map ``[lo..., hi...]`` to ``[centre..., size...]`` (3D:
``[cx, cy, cz, w, h, d]``, ``d`` in channels) and back.

Conventions for degenerate cases (where torchvision would return NaN):

* IoU is 0 when the union (area, or volume in 3D) is 0.
* In DIoU the distance term ``d^2 / c^2`` is 0 when the enclosing box has a zero
  diagonal (two identical points), so DIoU is 0 there.

In 2D every value is computed with the same floating-point operations, in the same
order, as before 3D was added (results bit-identical).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ..errors import StreamdetValueError

__all__ = [
    "BOX_COLUMNS",
    "box_area",
    "box_diou",
    "box_diou_paired",
    "box_iou",
    "box_iou_paired",
    "box_ndim",
    "box_volume",
    "centre_columns",
    "centres",
    "check_boxes",
    "cxcywh_to_xyxy",
    "xyxy_to_cxcywh",
]

Boxes = NDArray[np.float64]

#: Column names of a box row per dimensionality.
BOX_COLUMNS: dict[int, tuple[str, ...]] = {
    2: ("x0", "y0", "x1", "y1"),
    3: ("x0", "y0", "z0", "x1", "y1", "z1"),
}
_AXES = "xyz"


def box_ndim(boxes: NDArray[np.generic]) -> int:
    """Dimensionality of a ``(N, 2 * ndim)`` box array: 2 for ``(N, 4)``, 3 for ``(N, 6)``."""
    return int(boxes.shape[-1]) // 2


def check_boxes(boxes: ArrayLike, *, name: str = "boxes", xyxy: bool = True,
                ndim: int | None = None) -> Boxes:
    """Validate and return boxes as a float64 ``(N, 2 * ndim)`` array.

    Parameters
    ----------
    boxes : array_like, (N, 4) or (N, 6)
        Boxes; ``N`` may be 0 (an empty ``(0,)`` input gives ``(0, 2 * ndim)``).
    name : str
        Name of the argument, for error messages.
    xyxy : bool
        If true, also require ``hi >= lo`` on every axis.
    ndim : {2, 3} or None
        Required dimensionality; None: 2 for 4 columns, 3 for 6 (an empty 1-D input is 2D).

    Returns
    -------
    (N, 2 * ndim) float64 ndarray

    Raises
    ------
    StreamdetValueError
        Wrong shape, non-finite values or (``xyxy``) negative extents.
    """
    arr = np.asarray(boxes, dtype=np.float64)
    if arr.size == 0 and arr.ndim <= 2:
        if ndim is None:
            ndim = 3 if arr.ndim == 2 and arr.shape[1] == 6 else 2
        return np.zeros((0, 2 * ndim), np.float64)
    widths = (4, 6) if ndim is None else (2 * ndim,)
    if arr.ndim != 2 or arr.shape[1] not in widths:
        shape = " or ".join(f"(N, {w})" for w in widths)
        raise StreamdetValueError(f"{name} must have shape {shape}, got {arr.shape}")
    finite = np.isfinite(arr).all(axis=1)
    if not finite.all():
        bad = int(np.flatnonzero(~finite)[0])
        raise StreamdetValueError(f"{name} row {bad} is not finite: {arr[bad].tolist()}")
    if xyxy:
        d = arr.shape[1] // 2
        neg = arr[:, d] < arr[:, 0]
        for k in range(1, d):
            neg |= arr[:, d + k] < arr[:, k]
        if neg.any():
            bad = int(np.flatnonzero(neg)[0])
            axes = " or ".join(f"{a}1 < {a}0" for a in _AXES[:d])
            raise StreamdetValueError(
                f"{name} row {bad} has {axes} ({'xyxy' if d == 2 else 'xyzxyz'} expected): "
                f"{arr[bad].tolist()}")
    return arr


def xyxy_to_cxcywh(boxes: ArrayLike) -> Boxes:
    """Convert ``[lo..., hi...]`` boxes to ``[centre..., size...]``.

    Parameters
    ----------
    boxes : array_like, (N, 4) or (N, 6)
        Boxes ``[x0, y0, x1, y1]`` (3D: ``[x0, y0, z0, x1, y1, z1]``), px.

    Returns
    -------
    (N, 4) or (N, 6) float64 ndarray
        Centre ``(cx, cy[, cz])`` and size ``(w, h[, d])``, px.
    """
    b = check_boxes(boxes)
    d = box_ndim(b)
    out = np.empty_like(b)
    for k in range(d):
        out[:, k] = 0.5 * (b[:, k] + b[:, d + k])
    for k in range(d):
        out[:, d + k] = b[:, d + k] - b[:, k]
    return out


def centre_columns(boxes: Boxes) -> tuple[NDArray[np.float64], ...]:
    """Centres of boxes as new columns ``(cx, cy[, cz])``, each (N,) float64, px.

    The same values as the first ``ndim`` columns of :func:`xyxy_to_cxcywh`, computed in
    place (no (N, ndim) or (N, 2 ndim) temporaries, for catalogues of ~10^6 rows); no checks.
    """
    d = box_ndim(boxes)
    cols = []
    for k in range(d):
        c = boxes[:, k] + boxes[:, d + k]
        c *= 0.5
        cols.append(c)
    return tuple(cols)


def centres(boxes: Boxes) -> NDArray[np.float64]:
    """(N, ndim) float64 centres ``(cx, cy[, cz])`` of ``(N, 2 ndim)`` boxes, px; no checks."""
    d = box_ndim(boxes)
    out: NDArray[np.float64] = 0.5 * (boxes[:, :d] + boxes[:, d:])
    return out


def cxcywh_to_xyxy(boxes: ArrayLike) -> Boxes:
    """Convert ``[centre..., size...]`` boxes to ``[lo..., hi...]``.

    Parameters
    ----------
    boxes : array_like, (N, 4) or (N, 6)
        Centre and size ``[cx, cy, w, h]`` (3D: ``[cx, cy, cz, w, h, d]``), px; sizes >= 0.

    Returns
    -------
    (N, 4) or (N, 6) float64 ndarray
        ``[x0, y0, x1, y1]`` (3D: ``[x0, y0, z0, x1, y1, z1]``), px.
    """
    b = check_boxes(boxes, xyxy=False)
    d = box_ndim(b)
    neg = (b[:, d:] < 0).any(axis=1)
    if neg.any():
        bad = int(np.flatnonzero(neg)[0])
        raise StreamdetValueError(f"boxes row {bad} has a negative width or height: "
                                  f"{b[bad].tolist()}")
    out = np.empty_like(b)
    for k in range(d):
        out[:, k] = b[:, k] - 0.5 * b[:, d + k]
    for k in range(d):
        out[:, d + k] = b[:, k] + 0.5 * b[:, d + k]
    return out


def _extent_product(b: Boxes) -> NDArray[np.float64]:
    """Area (2D) or volume (3D) of broadcastable ``(..., 2 ndim)`` boxes."""
    d = b.shape[-1] // 2
    out: NDArray[np.float64] = b[..., d] - b[..., 0]
    for k in range(1, d):
        out = out * (b[..., d + k] - b[..., k])
    return out


def box_area(boxes: ArrayLike) -> NDArray[np.float64]:
    """Area (2D) or volume (3D) of each box.

    Parameters
    ----------
    boxes : array_like, (N, 4) or (N, 6)
        Boxes, px.

    Returns
    -------
    (N,) float64 ndarray
        Areas, px^2 (3D: volumes, voxels).
    """
    return _extent_product(check_boxes(boxes))


def box_volume(boxes: ArrayLike) -> NDArray[np.float64]:
    """Volume of each 3D box (:func:`box_area` of ``(N, 6)`` boxes), voxels."""
    return _extent_product(check_boxes(boxes, ndim=3))


def _iou_and_union(a: Boxes, b: Boxes) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """IoU of broadcast-compatible ``(..., 2 ndim)`` arrays, with the union area (volume)."""
    d = a.shape[-1] // 2
    inter = np.clip(np.minimum(a[..., d], b[..., d]) - np.maximum(a[..., 0], b[..., 0]),
                    0.0, None)
    for k in range(1, d):
        inter = inter * np.clip(np.minimum(a[..., d + k], b[..., d + k])
                                - np.maximum(a[..., k], b[..., k]), 0.0, None)
    union = _extent_product(a) + _extent_product(b) - inter
    pos = union > 0
    iou = np.divide(inter, union, out=np.zeros(np.shape(inter)), where=pos)
    return iou, union


def _iou(a: Boxes, b: Boxes) -> NDArray[np.float64]:
    return _iou_and_union(a, b)[0]


def _diou(a: Boxes, b: Boxes) -> NDArray[np.float64]:
    iou = _iou(a, b)
    d = a.shape[-1] // 2
    c2: NDArray[np.float64] | None = None
    d2: NDArray[np.float64] | None = None
    for k in range(d):
        dk = 0.5 * ((a[..., k] + a[..., d + k]) - (b[..., k] + b[..., d + k]))
        ck = np.maximum(a[..., d + k], b[..., d + k]) - np.minimum(a[..., k], b[..., k])
        c2 = ck * ck if c2 is None else c2 + ck * ck
        d2 = dk * dk if d2 is None else d2 + dk * dk
    assert c2 is not None and d2 is not None
    term = np.divide(d2, c2, out=np.zeros(np.shape(d2)), where=c2 > 0)
    return iou - term


def _pairwise(a: ArrayLike, b: ArrayLike) -> tuple[Boxes, Boxes]:
    """Both arguments checked, of one dimensionality (an empty one takes the other's)."""
    aa, bb = check_boxes(a, name="a"), check_boxes(b, name="b")
    if aa.shape[1] != bb.shape[1]:
        if not len(aa):
            aa = np.zeros((0, bb.shape[1]), np.float64)
        elif not len(bb):
            bb = np.zeros((0, aa.shape[1]), np.float64)
        else:
            raise StreamdetValueError(
                f"boxes of one dimensionality expected, got a {aa.shape} and b {bb.shape}")
    return aa, bb


def box_iou(a: ArrayLike, b: ArrayLike) -> NDArray[np.float64]:
    """Pairwise intersection over union.

    Parameters
    ----------
    a : array_like, (N, 4) or (N, 6)
        Boxes, pixels (one dimensionality for both arguments).
    b : array_like, (M, 4) or (M, 6)
        Boxes, pixels.

    Returns
    -------
    (N, M) float64 ndarray
        IoU in [0, 1]; 0 where the union area is 0. Memory is ``8 N M`` bytes.
    """
    aa, bb = _pairwise(a, b)
    return _iou(aa[:, None, :], bb[None, :, :])


def box_diou(a: ArrayLike, b: ArrayLike) -> NDArray[np.float64]:
    """Pairwise distance-IoU: ``IoU - d^2 / c^2``.

    ``d`` is the distance between the box centres, ``c`` the diagonal of the
    smallest box enclosing both (Zheng et al. 2020).

    Parameters
    ----------
    a : array_like, (N, 4) or (N, 6)
        Boxes, pixels (one dimensionality for both arguments).
    b : array_like, (M, 4) or (M, 6)
        Boxes, pixels.

    Returns
    -------
    (N, M) float64 ndarray
        DIoU in [-1, 1] (-1 only for zero-area boxes); ``d^2/c^2`` is 0 where ``c`` is 0.
    """
    aa, bb = _pairwise(a, b)
    return _diou(aa[:, None, :], bb[None, :, :])


def _paired(a: ArrayLike, b: ArrayLike) -> tuple[Boxes, Boxes]:
    aa, bb = check_boxes(a, name="a"), check_boxes(b, name="b")
    if aa.shape != bb.shape:
        raise StreamdetValueError(
            f"paired boxes need the same shape, got a {aa.shape} and b {bb.shape}")
    return aa, bb


def box_iou_paired(a: ArrayLike, b: ArrayLike) -> NDArray[np.float64]:
    """IoU of corresponding rows: ``out[k] = IoU(a[k], b[k])``.

    Parameters
    ----------
    a, b : array_like, (N, 4) or (N, 6)
        Boxes, pixels (one dimensionality for both arguments).

    Returns
    -------
    (N,) float64 ndarray
    """
    aa, bb = _paired(a, b)
    return _iou(aa, bb)


def box_diou_paired(a: ArrayLike, b: ArrayLike) -> NDArray[np.float64]:
    """DIoU of corresponding rows: ``out[k] = DIoU(a[k], b[k])``.

    Parameters
    ----------
    a, b : array_like, (N, 4) or (N, 6)
        Boxes, pixels (one dimensionality for both arguments).

    Returns
    -------
    (N,) float64 ndarray
    """
    aa, bb = _paired(a, b)
    return _diou(aa, bb)
