"""Greedy non-maximum suppression, chunk ownership and the cross-chunk merge, in 2D and 3D.

Every function here takes image boxes ``(N, 4)`` ``[x0, y0, x1, y1]`` and cube boxes
``(N, 6)`` ``[x0, y0, z0, x1, y1, z1]`` alike (see :mod:`streamdet.engine.boxes`): one
implementation over the axes, its 2D results bit-identical to the 2D-only one.

Rule (exact)
------------
Boxes are visited by score descending, ties broken by input index ascending (a
stable sort). A visited box is kept unless an already *kept* box overlaps it by
strictly more than ``iou_threshold`` (``overlap > iou_threshold``; a pair exactly
at the threshold is NOT suppressed). ``overlap`` is IoU (``kind="iou"``) or DIoU
(``kind="diou"``, IoU - d^2/c^2, see :mod:`streamdet.engine.boxes`). The threshold must
lie in [0, 1]; since DIoU <= IoU, two boxes can only suppress each other if their
interiors intersect, which is what makes the implementation local.

Implementation
--------------
Candidate pairs come from a strip-and-sweep: every box is entered in each
horizontal strip (about two typical box heights tall) that it touches; within a
strip, entries sorted by ``x0`` meet only the later entries that start before they
end (exact integer-rank comparisons). In 3D the same sweep runs on the boxes'
projections onto the sky plane (x, y), and the overlap (which needs a positive
extent along z too) decides. A pair is reported only in the strip that
holds the top of its intersection, its overlap computed in vectorised blocks of
bounded memory. The greedy pass then visits only the boxes that can suppress
something. Cost is ``O(N log N + P)`` with ``P`` ~ a few times the number of
truly overlapping pairs, i.e. ~linear in N at a fixed source density.

Chunks, ownership and the merge
-------------------------------
The detector runs on overlapping chunks. Each chunk decodes the boxes of its
extended (core + halo) region, runs :func:`nms_detections` on them, and keeps
only the boxes it *owns* (:func:`owned`: centre inside its half-open core
region). Cores partition the image, so every box has exactly one owner.
:func:`merge` combines owned results of any number of chunks: it concatenates
them, sorts them into a canonical order (score descending, then centre x, centre
y, then every other column) and runs greedy NMS on the union. Hence:

* ``merge`` does not depend on the order of its arguments (only exact duplicate
  rows are interchangeable).
* If every chunk's local NMS is exact for the boxes it owns (the halo covers all
  boxes that influence them; in practice a halo of a few box sizes), the union of
  owned results is already the global NMS result: it has no pair above the
  threshold, ``merge`` keeps everything, and the tree reduction equals one global
  NMS whatever the grouping and the chunk size.
* More generally ``merge`` is exactly associative, and equal to greedy NMS of the
  union of all parts, whenever the union's suppression graph has no chain: no
  box ``b`` that is suppressed by a higher-scored box ``a`` (overlap > threshold)
  while itself overlapping a lower-scored box ``c`` above the threshold. Then
  greedy NMS removes exactly the boxes that have a higher-scored suppressor, a
  pairwise property no grouping can change.
* The known limit: a chain ``a > b > c`` (a-b and b-c above the threshold, a-c
  not) spread over three parts. Global greedy NMS keeps ``a`` and ``c``;
  ``merge(merge(A, B), C)`` keeps ``a, c`` but ``merge(A, merge(B, C))`` keeps
  only ``a``. Such chains only reach the merge when the halo is too small.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ..errors import StreamdetValueError
from .boxes import _diou, _iou, box_ndim, centre_columns, check_boxes
from .detections import Detections, _locate, _take_rows

__all__ = [
    "NMSKind",
    "merge",
    "merge_rows",
    "nms",
    "nms_detections",
    "owned",
    "pixel_core_region",
    "suppression_pairs",
]

NMSKind = Literal["iou", "diou"]

_KINDS: dict[str, Callable[[NDArray[np.float64], NDArray[np.float64]], NDArray[np.float64]]] = {
    "iou": _iou,
    "diou": _diou,
}

#: Number of candidate pairs handled per vectorised block (bounds temporary memory).
_BLOCK_PAIRS = 1 << 21


def _check_threshold(iou_threshold: float, kind: str) -> float:
    if kind not in _KINDS:
        raise StreamdetValueError(f"unknown NMS kind {kind!r}; expected one of {sorted(_KINDS)}")
    t = float(iou_threshold)
    if not 0.0 <= t <= 1.0:
        raise StreamdetValueError(f"iou_threshold must be in [0, 1], got {iou_threshold!r}")
    return t


def _check_scores(scores: ArrayLike, n: int) -> NDArray[np.float64]:
    s = np.asarray(scores, dtype=np.float64)
    if s.shape != (n,):
        raise StreamdetValueError(f"scores must have shape ({n},), got {np.shape(scores)}")
    if not np.isfinite(s).all():
        bad = int(np.flatnonzero(~np.isfinite(s))[0])
        raise StreamdetValueError(f"scores[{bad}] is not finite: {s[bad]}")
    return s


def _strip_height(boxes: NDArray[np.float64]) -> float:
    """Strips about twice the typical box height, but never more strips than boxes."""
    y1 = boxes[:, box_ndim(boxes) + 1]
    heights = y1 - boxes[:, 1]
    yspan = float(y1.max() - boxes[:, 1].min())
    return max(2.0 * float(np.median(heights)), yspan / boxes.shape[0], 1e-9)


def _strip_of(y: NDArray[np.float64], ymin: float, h: float) -> NDArray[np.int64]:
    """Strip index of ordinates ``y`` (monotone non-decreasing in ``y``)."""
    return np.floor((y - ymin) / h).astype(np.int64)


def _candidates(boxes: NDArray[np.float64], ymin: float, h: float
                ) -> tuple[NDArray[np.int64], NDArray[np.int64],
                           NDArray[np.int64], NDArray[np.int64]]:
    """Strip-and-sweep set-up: every box is entered in each horizontal strip it touches.

    Returns the entries sorted by (strip, x0) as ``(box, strip)``, and for each entry
    the half-open range ``[start, stop)`` of later entries of the same strip that
    start (x0) strictly before it ends (x1). Comparisons are exact (integer ranks).
    """
    n = boxes.shape[0]
    d = box_ndim(boxes)
    x0, y0, x1, y1 = boxes[:, 0], boxes[:, 1], boxes[:, d], boxes[:, d + 1]
    s0 = _strip_of(y0, ymin, h)
    s1 = _strip_of(y1, ymin, h)
    reps = s1 - s0 + 1
    box = np.repeat(np.arange(n, dtype=np.int64), reps)
    first = np.cumsum(reps) - reps
    strip = s0[box] + (np.arange(box.size, dtype=np.int64) - np.repeat(first, reps))
    sorted_x0 = np.sort(x0)
    r0 = np.searchsorted(sorted_x0, x0, side="left").astype(np.int64)  # #x0 < x0_i
    r1 = np.searchsorted(sorted_x0, x1, side="left").astype(np.int64)  # #x0 < x1_i
    key = strip * (n + 1) + r0[box]
    order = np.argsort(key, kind="stable")
    box, strip, key = box[order], strip[order], key[order]
    stop = np.searchsorted(key, strip * (n + 1) + r1[box], side="left").astype(np.int64)
    start = np.arange(1, box.size + 1, dtype=np.int64)
    return box, strip, start, np.maximum(stop, start)


def _pairs_above(boxes: NDArray[np.float64], t: float, kind: str
                 ) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Index pairs ``(i, j)``, ``i != j``, with ``overlap(i, j) > t`` (each pair once)."""
    n = boxes.shape[0]
    empty = np.zeros(0, np.int64)
    if n < 2:
        return empty, empty
    fn = _KINDS[kind]
    y1 = box_ndim(boxes) + 1
    ymin = float(boxes[:, 1].min())
    h_strip = _strip_height(boxes)
    box, strip, start, stop = _candidates(boxes, ymin, h_strip)
    counts = stop - start
    cum = np.cumsum(counts)
    ne = box.size
    out_i: list[NDArray[np.int64]] = []
    out_j: list[NDArray[np.int64]] = []
    k0 = 0
    while k0 < ne and cum[-1] > 0:
        base = int(cum[k0 - 1]) if k0 > 0 else 0
        k1 = int(np.searchsorted(cum, base + _BLOCK_PAIRS, side="right"))
        k1 = min(max(k1, k0 + 1), ne)
        c = counts[k0:k1]
        m = int(c.sum())
        if m:
            src = np.repeat(np.arange(k0, k1, dtype=np.int64), c)
            first = np.cumsum(c) - c
            dst = np.repeat(start[k0:k1], c) + (np.arange(m, dtype=np.int64) - np.repeat(first, c))
            i, j = box[src], box[dst]
            a, b = boxes[i], boxes[j]
            top = np.maximum(a[:, 1], b[:, 1])
            # y overlap, and report each pair only in the strip holding the top of the
            # intersection (both boxes are entered there).
            sel = (top < np.minimum(a[:, y1], b[:, y1])) & (
                _strip_of(top, ymin, h_strip) == strip[src])
            i, j, a, b = i[sel], j[sel], a[sel], b[sel]
            hit = fn(a, b) > t
            out_i.append(i[hit])
            out_j.append(j[hit])
        k0 = k1
    if not out_i:
        return empty, empty
    return np.concatenate(out_i).astype(np.int64), np.concatenate(out_j).astype(np.int64)


def suppression_pairs(boxes: ArrayLike, *, iou_threshold: float, kind: NMSKind = "diou"
                      ) -> NDArray[np.int64]:
    """All pairs of boxes whose overlap is strictly above the threshold.

    Parameters
    ----------
    boxes : array_like, (N, 4) or (N, 6)
        Boxes, pixels (see :mod:`streamdet.engine.boxes`).
    iou_threshold : float
        Threshold in [0, 1].
    kind : {"iou", "diou"}
        Overlap measure.

    Returns
    -------
    (P, 2) int64 ndarray
        Pairs ``(i, j)`` with ``i < j``, sorted lexicographically.
    """
    t = _check_threshold(iou_threshold, kind)
    b = check_boxes(boxes)
    i, j = _pairs_above(b, t, kind)
    lo, hi = np.minimum(i, j), np.maximum(i, j)
    pairs = np.stack([lo, hi], axis=1) if lo.size else np.zeros((0, 2), np.int64)
    if len(pairs):
        pairs = pairs[np.lexsort((pairs[:, 1], pairs[:, 0]))]
    return pairs


def nms(boxes: ArrayLike, scores: ArrayLike, *, iou_threshold: float,
        kind: NMSKind = "diou", groups: ArrayLike | None = None) -> NDArray[np.int64]:
    """Greedy non-maximum suppression.

    Parameters
    ----------
    boxes : array_like, (N, 4) or (N, 6)
        Boxes, pixels (see :mod:`streamdet.engine.boxes`).
    scores : array_like, (N,)
        Finite scores; higher is better.
    iou_threshold : float
        In [0, 1]. A box is suppressed by a kept box when their overlap is strictly
        greater than this value (equal is not suppressed).
    kind : {"iou", "diou"}
        Overlap measure.
    groups : array_like, (N,), optional
        Group label of each box: boxes of the same group never suppress each other
        (used when merging chunks, each already NMS'd on its own).

    Returns
    -------
    (K,) int64 ndarray
        Indices of the kept boxes, by score descending (ties: lower index first).
    """
    t = _check_threshold(iou_threshold, kind)
    b = check_boxes(boxes)
    n = b.shape[0]
    s = _check_scores(scores, n)
    order = np.argsort(-s, kind="stable").astype(np.int64)
    if n < 2:
        return order
    i, j = _pairs_above(b, t, kind)
    if groups is not None:
        g = np.asarray(groups)
        if g.shape != (n,):
            raise StreamdetValueError(f"groups must have shape ({n},), got {g.shape}")
        across = g[i] != g[j]
        i, j = i[across], j[across]
    if i.size == 0:
        return order
    rank = np.empty(n, np.int64)
    rank[order] = np.arange(n, dtype=np.int64)
    ri, rj = rank[i], rank[j]
    src = np.minimum(ri, rj)  # ranks: the higher-priority box suppresses the other
    dst = np.maximum(ri, rj)
    srt = np.argsort(src, kind="stable")
    src, dst = src[srt], dst[srt]
    heads, starts = np.unique(src, return_index=True)
    stops = np.append(starts[1:], src.size)
    suppressed = np.zeros(n, np.bool_)  # indexed by rank
    for h, a, z in zip(heads.tolist(), starts.tolist(), stops.tolist(), strict=True):
        if not suppressed[h]:
            suppressed[dst[a:z]] = True
    return order[~suppressed]


def nms_detections(dets: Detections, *, iou_threshold: float,
                   kind: NMSKind = "diou") -> Detections:
    """Greedy NMS of detections scored by objectness.

    Parameters
    ----------
    dets : Detections
        Detections (N rows).
    iou_threshold : float
        In [0, 1]; suppression when overlap > threshold (see :func:`nms`).
    kind : {"iou", "diou"}
        Overlap measure.

    Returns
    -------
    Detections
        The kept rows, by objectness descending (ties: input order).
    """
    keep = nms(dets.boxes, dets.objectness, iou_threshold=iou_threshold, kind=kind)
    return dets.take(keep)


def owned(dets: Detections, region: Sequence[float]) -> Detections:
    """Select the detections whose box centre lies in a half-open region.

    Parameters
    ----------
    dets : Detections
        Detections of one chunk (full-image pixel coordinates), 2D or 3D.
    region : (x0, y0, x1, y1) or (x0, y0, z0, x1, y1, z1) floats
        Core region in the same continuous pixel coordinates as the boxes (as many
        axes as they have); a centre ``(cx, cy)`` is owned when ``x0 <= cx < x1`` and
        ``y0 <= cy < y1`` (3D: and ``z0 <= cz < z1``). Use ``-inf`` / ``inf`` for sides
        on the image border (decoded centres can fall half a pixel outside the image),
        see :func:`pixel_core_region`.

    Returns
    -------
    Detections
        The owned rows, in their input order.
    """
    d = dets.ndim
    names = "(x0, y0, x1, y1)" if d == 2 else "(x0, y0, z0, x1, y1, z1)"
    if len(region) != 2 * d:
        raise StreamdetValueError(f"region must be {names}, got {region!r}")
    r = [float(v) for v in region]
    if any(np.isnan(v) for v in r) or any(r[d + k] < r[k] for k in range(d)):
        raise StreamdetValueError(f"region must be {names} with lo <= hi on every axis, "
                                  f"got {tuple(region)!r}")
    c = dets.centers
    sel = (c[:, 0] >= r[0]) & (c[:, 0] < r[d])
    for k in range(1, d):
        sel &= (c[:, k] >= r[k]) & (c[:, k] < r[d + k])
    return dets.take(sel)


def pixel_core_region(x_range: tuple[int, int], y_range: tuple[int, int], *,
                      image_shape: tuple[int, ...], z_range: tuple[int, int] | None = None
                      ) -> tuple[float, ...]:
    """Ownership region of a chunk core given by pixel index ranges.

    Pixel ``i`` spans ``[i - 0.5, i + 0.5)``, so the core of pixels
    ``x_start .. x_stop - 1`` is ``[x_start - 0.5, x_stop - 0.5)``. Sides on the
    image border are extended to infinity so that every decoded box has an owner.

    Parameters
    ----------
    x_range, y_range : (start, stop) ints
        Half-open pixel index ranges of the core along x (columns) and y (rows).
    image_shape : (ny, nx) or (nz, ny, nx) ints
        Shape of the full image, or of the cube (then ``z_range`` is needed).
    z_range : (start, stop) ints, optional
        Half-open channel range of the core of a cube.

    Returns
    -------
    (x0, y0, x1, y1) or (x0, y0, z0, x1, y1, z1) floats
        Region for :func:`owned`.
    """
    if (z_range is None) != (len(image_shape) == 2):
        raise StreamdetValueError(f"a core of an image of shape {image_shape} needs "
                                  f"{'no' if len(image_shape) == 2 else 'a'} z_range")
    ranges = [x_range, y_range] + ([] if z_range is None else [z_range])
    sizes = list(image_shape[::-1])
    if not all(0 <= a < b <= n for (a, b), n in zip(ranges, sizes, strict=True)):
        where = f"core x_range {x_range} / y_range {y_range}" + (
            "" if z_range is None else f" / z_range {z_range}")
        raise StreamdetValueError(f"{where} outside image of shape {tuple(image_shape)}")
    return (tuple(-np.inf if a == 0 else a - 0.5 for a, _ in ranges)
            + tuple(np.inf if b == n else b - 0.5
                    for (_, b), n in zip(ranges, sizes, strict=True)))


BoxRows = NDArray[np.float64] | Callable[[NDArray[np.intp]], NDArray[np.float64]]
"""(N, 4) or (N, 6) boxes, or a function that returns the boxes of the rows it is given."""


def _rows_of(boxes: BoxRows) -> Callable[[NDArray[np.intp]], NDArray[np.float64]]:
    if isinstance(boxes, np.ndarray):
        return boxes.__getitem__
    return boxes


def _order_by_score_and_centre(boxes: BoxRows, objectness: NDArray[np.floating]
                               ) -> NDArray[np.intp] | None:
    """Objectness descending, then centre x, centre y (3D: centre z); None when those tie.

    One stable sort on the score; only the runs of tied scores are then sorted by
    centre, so no centre keys of size N are built (the root merge of a 16384^2 image
    orders ~6e5 rows while its parts are still held).
    """
    neg = np.negative(objectness)                   # exact for any float dtype
    order = np.argsort(neg, kind="stable")
    ranked = neg[order]
    tied = np.flatnonzero(ranked[1:] == ranked[:-1])
    del ranked
    if tied.size == 0:
        return order
    run = np.zeros(order.size, np.bool_)            # every place in a run of equal scores
    run[tied] = True
    run[tied + 1] = True
    pos = np.flatnonzero(run)
    del run
    rows = order[pos]
    cols = centre_columns(_rows_of(boxes)(rows))
    score = neg[rows]
    # runs keep their places (pos is sorted by score); inside a run, centre x then y (z)
    within = np.lexsort((*cols[::-1], score))
    o = score[within]
    same = o[1:] == o[:-1]
    for c in cols:
        cw = c[within]
        same &= cw[1:] == cw[:-1]
    if np.any(same):
        return None
    order[pos] = rows[within]
    return order


def _canonical_order(d: Detections) -> NDArray[np.intp]:
    """Deterministic order: objectness descending, centre x, y (z), then all columns."""
    order = _order_by_score_and_centre(d.boxes, d.objectness)
    if order is not None:
        return order            # the first three keys decide every place
    c = d.centers
    keys: list[NDArray[np.generic]] = []
    for k in range(d.params.shape[1] - 1, -1, -1):
        keys.append(d.params[:, k])
    keys += [d.chunk, d.prior, -d.probability.astype(np.float64)]
    keys += [d.boxes[:, k] for k in range(d.boxes.shape[1] - 1, -1, -1)]
    keys += [c[:, k] for k in range(c.shape[1] - 1, -1, -1)]
    keys += [-d.objectness.astype(np.float64)]
    return np.lexsort(keys)


def merge(*parts: Detections, iou_threshold: float, kind: NMSKind = "diou",
          resolved: bool = False) -> Detections:
    """Merge the owned detections of neighbouring chunks (one tree-reduction step).

    Sorts the union of the parts canonically (objectness descending, then centre x,
    centre y, then the other columns) and runs greedy NMS on it (only overlapping
    boxes interact); boxes of the same chunk (``Detections.chunk``) never suppress
    each other, since each chunk was already NMS'd on its own. See the module
    docstring for when the result is exactly associative.

    Parameters
    ----------
    *parts : Detections
        Results of chunks (or of earlier merges), sharing the same parameter names.
    iou_threshold : float
        In [0, 1]; suppression when overlap > threshold.
    kind : {"iou", "diou"}
        Overlap measure.
    resolved : bool
        Each part is already free of overlaps between its chunks (a chunk's own result,
        or an earlier merge's, whose kept boxes of different chunks overlap at most the
        threshold): boxes of one part are then never compared again, which gives the
        same rows with fewer candidates (:func:`merge_rows`).

    Returns
    -------
    Detections
        Kept rows in canonical order; independent of the order of ``parts``.
        No parts gives an empty set without parameters.
    """
    _check_threshold(iou_threshold, kind)
    if not parts:
        return Detections.empty()
    return Detections.gather(parts, merge_rows(parts, iou_threshold=iou_threshold, kind=kind,
                                               resolved=resolved))


def merge_rows(parts: Sequence[Detections], *, iou_threshold: float, kind: NMSKind = "diou",
               resolved: bool = False) -> NDArray[np.intp]:
    """Rows of the concatenation of ``parts`` that :func:`merge` keeps, in its order.

    ``merge(*parts)`` is ``Detections.gather(parts, merge_rows(parts))``; the gather can
    then consume the parts (see :meth:`Detections.gather`).

    Returns
    -------
    (M,) intp
        Indices into the concatenation of ``parts``, in canonical order.
    """
    _check_threshold(iou_threshold, kind)
    if not parts:
        return np.zeros(0, np.intp)
    ndim = parts[0].ndim
    for p in parts[1:]:
        if p.ndim != ndim:
            raise StreamdetValueError(f"cannot merge {p.ndim}D detections with {ndim}D ones")
    # The sort and the NMS need only boxes, scores and chunks: the union of the other
    # columns is gathered once, for the rows kept, and nothing of size N is permuted
    # but the order itself (the root merge of a 16384^2 image joins ~6e5 rows, and the
    # parts are still held while it runs).
    boxes = _union_rows([p.boxes for p in parts])   # the union's boxes, read row by row
    objectness = np.concatenate([p.objectness for p in parts])
    order = _order_by_score_and_centre(boxes, objectness)
    if order is None:           # ties on the first keys: sort on every column
        order = _canonical_order(Detections.concat(list(parts)))
    # With resolved parts, pairs inside a part cannot suppress (greedy NMS kept them both
    # at most the threshold apart), so the part is the group: fewer, larger groups.
    chunk = (np.concatenate([np.full(len(p), i, np.int64) for i, p in enumerate(parts)])
             if resolved else np.concatenate([p.chunk for p in parts]))
    # Only boxes that reach into another chunk's extent can suppress or be suppressed
    # (same-chunk pairs never interact, and an overlap above a threshold >= 0 needs
    # intersecting boxes): NMS runs on those, in the canonical order; the others are kept.
    sub = order[_near_other_groups(boxes, chunk)[order]]
    keep_sub = nms(boxes(sub), objectness[sub], iou_threshold=iou_threshold, kind=kind,
                   groups=chunk[sub])
    del objectness, chunk
    kept = np.ones(len(order), np.bool_)
    kept[sub] = False
    kept[sub[keep_sub]] = True
    rows: NDArray[np.intp] = order[kept[order]]
    return rows


def _union_rows(arrays: Sequence[NDArray[np.float64]]
                ) -> Callable[[NDArray[np.intp]], NDArray[np.float64]]:
    """Rows of the concatenation of ``arrays`` (each (n_k, 4) or (n_k, 6)), unbuilt."""
    lengths = [len(a) for a in arrays]

    def take(index: NDArray[np.intp]) -> NDArray[np.float64]:
        rows: NDArray[np.float64] = _take_rows(arrays, _locate(lengths, index))
        return rows

    return take


def _near_other_groups(boxes: BoxRows, groups: NDArray[np.integer]) -> NDArray[np.bool_]:
    """Mask of the boxes that touch the bounding rectangle of another group's boxes.

    Parameters
    ----------
    boxes : (N, 4) or (N, 6) float64, px, or a function giving the boxes of given rows
    groups : (N,) int
        Group label (chunk of origin) of each box.

    Returns
    -------
    (N,) bool
        A superset of the boxes that intersect a box of another group.
    """
    n = len(groups)
    mask = np.zeros(n, np.bool_)
    if n < 2:
        return mask
    rows_of = _rows_of(boxes)
    order = np.argsort(groups, kind="stable")
    g = np.asarray(groups)[order]
    starts = np.flatnonzero(np.r_[True, g[1:] != g[:-1]])
    del g
    if starts.size < 2:
        return mask
    stops = np.append(starts[1:], n)
    # (G, 2 ndim) bounding box of each group's boxes, read group by group (no sorted
    # copy of the boxes: the root merge of a large image holds ~6e5 of them)
    rect = np.array([_bounds(rows_of(order[a:b])) for a, b in zip(starts, stops, strict=True)])
    d = rect.shape[1] // 2
    lo, hi = rect[:, :d], rect[:, d:]
    for a in range(starts.size):
        touch = (lo[:, 0] <= hi[a, 0]) & (hi[:, 0] >= lo[a, 0])
        for k in range(1, d):
            touch &= (lo[:, k] <= hi[a, k]) & (hi[:, k] >= lo[a, k])
        others = np.flatnonzero(touch)
        others = others[others != a]
        if others.size == 0:
            continue
        rows = order[starts[a]:stops[a]]
        mine = rows_of(rows)
        near = np.zeros(mine.shape[0], np.bool_)
        for o in others.tolist():
            hit = (mine[:, 0] <= hi[o, 0]) & (mine[:, d] >= lo[o, 0])
            for k in range(1, d):
                hit &= (mine[:, k] <= hi[o, k]) & (mine[:, d + k] >= lo[o, k])
            near |= hit
        mask[rows] = near
    return mask


def _bounds(b: NDArray[np.float64]) -> NDArray[np.float64]:
    """(2 ndim,) lo..., hi... of the box that holds the boxes ``b`` (M >= 1, 2 ndim)."""
    d = b.shape[1] // 2
    return np.concatenate([b[:, :d].min(axis=0), b[:, d:].max(axis=0)])
