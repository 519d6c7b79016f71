"""Axis-aligned box utilities (the style of ``torchvision.ops``), in numpy.

One convention throughout streamdet: boxes are ``xyxy`` in 0-based pixel
coordinates of the full image, float64, shape ``(N, 4)`` with columns
``[x0, y0, x1, y1]`` (the centre of pixel ``i`` is at ``i``; a box spans
``x0 <= x < x1``). Boxes must be finite with ``x1 >= x0`` and ``y1 >= y0``;
zero-area (degenerate) boxes are allowed.

Conventions for degenerate cases (where torchvision would return NaN):

* IoU is 0 when the union area is 0 (two zero-area boxes).
* In DIoU the distance term ``d^2 / c^2`` is 0 when the enclosing box has a zero
  diagonal (two identical points), so DIoU is 0 there.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

from .errors import StreamdetValueError

__all__ = [
    "box_area",
    "box_diou",
    "box_diou_paired",
    "box_iou",
    "box_iou_paired",
    "centre_columns",
    "check_boxes",
    "cxcywh_to_xyxy",
    "xyxy_to_cxcywh",
]

Boxes = NDArray[np.float64]


def check_boxes(boxes: ArrayLike, *, name: str = "boxes", xyxy: bool = True) -> Boxes:
    """Validate and return boxes as a float64 ``(N, 4)`` array.

    Parameters
    ----------
    boxes : array_like, (N, 4)
        Boxes; ``N`` may be 0 (an empty ``(0,)`` or ``(0, 4)`` input gives ``(0, 4)``).
    name : str
        Name of the argument, for error messages.
    xyxy : bool
        If true, also require ``x1 >= x0`` and ``y1 >= y0``.

    Returns
    -------
    (N, 4) float64 ndarray

    Raises
    ------
    StreamdetValueError
        Wrong shape, non-finite values or (``xyxy``) negative widths or heights.
    """
    arr = np.asarray(boxes, dtype=np.float64)
    if arr.size == 0 and arr.ndim <= 2:
        return np.zeros((0, 4), np.float64)
    if arr.ndim != 2 or arr.shape[1] != 4:
        raise StreamdetValueError(f"{name} must have shape (N, 4), got {arr.shape}")
    finite = np.isfinite(arr).all(axis=1)
    if not finite.all():
        bad = int(np.flatnonzero(~finite)[0])
        raise StreamdetValueError(f"{name} row {bad} is not finite: {arr[bad].tolist()}")
    if xyxy:
        neg = (arr[:, 2] < arr[:, 0]) | (arr[:, 3] < arr[:, 1])
        if neg.any():
            bad = int(np.flatnonzero(neg)[0])
            raise StreamdetValueError(
                f"{name} row {bad} has x1 < x0 or y1 < y0 (xyxy expected): {arr[bad].tolist()}")
    return arr


def xyxy_to_cxcywh(boxes: ArrayLike) -> Boxes:
    """Convert ``[x0, y0, x1, y1]`` boxes to ``[cx, cy, w, h]``.

    Parameters
    ----------
    boxes : array_like, (N, 4)
        xyxy boxes, pixels.

    Returns
    -------
    (N, 4) float64 ndarray
        Centre ``(cx, cy)`` and size ``(w, h)``, pixels.
    """
    b = check_boxes(boxes)
    out = np.empty_like(b)
    out[:, 0] = 0.5 * (b[:, 0] + b[:, 2])
    out[:, 1] = 0.5 * (b[:, 1] + b[:, 3])
    out[:, 2] = b[:, 2] - b[:, 0]
    out[:, 3] = b[:, 3] - b[:, 1]
    return out


def centre_columns(boxes: Boxes) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Centres of xyxy boxes as two new columns ``(cx, cy)``, each (N,) float64, px.

    The same values as the first two columns of :func:`xyxy_to_cxcywh`, computed in
    place (no (N, 2) or (N, 4) temporaries, for catalogues of ~10^6 rows); no checks.
    """
    cx = boxes[:, 0] + boxes[:, 2]
    cx *= 0.5
    cy = boxes[:, 1] + boxes[:, 3]
    cy *= 0.5
    return cx, cy


def cxcywh_to_xyxy(boxes: ArrayLike) -> Boxes:
    """Convert ``[cx, cy, w, h]`` boxes to ``[x0, y0, x1, y1]``.

    Parameters
    ----------
    boxes : array_like, (N, 4)
        Centre and size, pixels; ``w, h >= 0``.

    Returns
    -------
    (N, 4) float64 ndarray
        xyxy boxes, pixels.
    """
    b = check_boxes(boxes, xyxy=False)
    if ((b[:, 2] < 0) | (b[:, 3] < 0)).any():
        bad = int(np.flatnonzero((b[:, 2] < 0) | (b[:, 3] < 0))[0])
        raise StreamdetValueError(f"boxes row {bad} has a negative width or height: "
                                  f"{b[bad].tolist()}")
    out = np.empty_like(b)
    out[:, 0] = b[:, 0] - 0.5 * b[:, 2]
    out[:, 1] = b[:, 1] - 0.5 * b[:, 3]
    out[:, 2] = b[:, 0] + 0.5 * b[:, 2]
    out[:, 3] = b[:, 1] + 0.5 * b[:, 3]
    return out


def box_area(boxes: ArrayLike) -> NDArray[np.float64]:
    """Area of each box.

    Parameters
    ----------
    boxes : array_like, (N, 4)
        xyxy boxes, pixels.

    Returns
    -------
    (N,) float64 ndarray
        Areas, square pixels.
    """
    b = check_boxes(boxes)
    return (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])


def _iou_and_union(a: Boxes, b: Boxes) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """IoU of broadcast-compatible ``(..., 4)`` arrays, with the union area."""
    iw = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0.0, None)
    ih = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0.0, None)
    inter = iw * ih
    area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
    area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    union = area_a + area_b - inter
    pos = union > 0
    iou = np.divide(inter, union, out=np.zeros(np.shape(inter)), where=pos)
    return iou, union


def _iou(a: Boxes, b: Boxes) -> NDArray[np.float64]:
    return _iou_and_union(a, b)[0]


def _diou(a: Boxes, b: Boxes) -> NDArray[np.float64]:
    iou = _iou(a, b)
    dx = 0.5 * ((a[..., 0] + a[..., 2]) - (b[..., 0] + b[..., 2]))
    dy = 0.5 * ((a[..., 1] + a[..., 3]) - (b[..., 1] + b[..., 3]))
    cw = np.maximum(a[..., 2], b[..., 2]) - np.minimum(a[..., 0], b[..., 0])
    ch = np.maximum(a[..., 3], b[..., 3]) - np.minimum(a[..., 1], b[..., 1])
    c2 = cw * cw + ch * ch
    d2 = dx * dx + dy * dy
    term = np.divide(d2, c2, out=np.zeros(np.shape(d2)), where=c2 > 0)
    return iou - term


def box_iou(a: ArrayLike, b: ArrayLike) -> NDArray[np.float64]:
    """Pairwise intersection over union.

    Parameters
    ----------
    a : array_like, (N, 4)
        xyxy boxes, pixels.
    b : array_like, (M, 4)
        xyxy boxes, pixels.

    Returns
    -------
    (N, M) float64 ndarray
        IoU in [0, 1]; 0 where the union area is 0. Memory is ``8 N M`` bytes.
    """
    aa, bb = check_boxes(a, name="a"), check_boxes(b, name="b")
    return _iou(aa[:, None, :], bb[None, :, :])


def box_diou(a: ArrayLike, b: ArrayLike) -> NDArray[np.float64]:
    """Pairwise distance-IoU: ``IoU - d^2 / c^2``.

    ``d`` is the distance between the box centres, ``c`` the diagonal of the
    smallest box enclosing both (Zheng et al. 2020).

    Parameters
    ----------
    a : array_like, (N, 4)
        xyxy boxes, pixels.
    b : array_like, (M, 4)
        xyxy boxes, pixels.

    Returns
    -------
    (N, M) float64 ndarray
        DIoU in [-1, 1] (-1 only for zero-area boxes); ``d^2/c^2`` is 0 where ``c`` is 0.
    """
    aa, bb = check_boxes(a, name="a"), check_boxes(b, name="b")
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
    a, b : array_like, (N, 4)
        xyxy boxes, pixels.

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
    a, b : array_like, (N, 4)
        xyxy boxes, pixels.

    Returns
    -------
    (N,) float64 ndarray
    """
    aa, bb = _paired(a, b)
    return _diou(aa, bb)
