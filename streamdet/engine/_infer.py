"""Inference on one window: normalise, tile, run the model, decode, NMS."""

from __future__ import annotations

import threading
from collections import defaultdict

import numpy as np
from numpy.typing import NDArray

from ._measure import MeasureConfig
from ._plan import Window, plan_windows, round_up
from ._refine import one_per_peak, refine_centres
from .contract import Model, normalise
from .decode import decode
from .detections import Detections
from .nms import NMSKind, nms_detections, owned

__all__ = ["detect_window", "even_tile", "owned_region", "refine_detections", "shift_to",
           "skip_window", "window_tiles"]

# A model whose session spreads one forward pass over several intra-op threads runs
# one pass at a time per process (no oversubscription); single-threaded sessions run
# one pass per Dask thread, concurrently.
_RUN_LOCK = threading.Lock()


def even_tile(bounds: tuple[int, int, int, int], tile: int, stride: int) -> int:
    """Tile side that cuts ``bounds`` into near-equal tiles of about ``tile`` px.

    Avoids thin leftover tiles (each costing a full halo) when the window is not a whole
    number of tiles: ``n = round(side / tile)`` tiles per axis, at least one.
    """
    side = max(bounds[1] - bounds[0], bounds[3] - bounds[2])
    n = max(1, round(side / tile))
    return round_up(-(-side // n), stride)


def window_tiles(window: Window, *, tile: int, halo: int, margin: int,
                 limit: tuple[int, int, int, int], stride: int) -> list[Window]:
    """The tiles one window runs through the model: its core grown by ``margin`` (clipped
    to ``limit``, the stride-padded image), cut into near-equal tiles with a ``halo``."""
    cy0, cy1, cx0, cx1 = window.core
    ly0, ly1, lx0, lx1 = limit
    grown = (max(ly0, cy0 - margin), min(ly1, cy1 + margin),
             max(lx0, cx0 - margin), min(lx1, cx1 + margin))
    return plan_windows(grown, core=even_tile(grown, tile, stride), halo=halo, stride=stride,
                        limit=window.region)


def skip_window(core: NDArray[np.floating]) -> bool:
    """Whether a core holds no signal at all (every pixel NaN or exactly zero)."""
    if not np.any(core):
        return True             # every pixel exactly zero
    if np.isfinite(np.min(core)) and np.isfinite(np.max(core)):
        return False            # a non-zero pixel and no NaN/inf (the cheap, usual case)
    finite = np.isfinite(core)
    return not bool(np.any(core[finite] != 0))


def detect_window(data: NDArray[np.floating], window: Window, model: Model, *, tile: int,
                  halo: int, margin: int, limit: tuple[int, int, int, int], batch: int | None,
                  threshold: float | NDArray[np.float64],
                  iou_threshold: float, nms_kind: NMSKind, refine: bool = True,
                  measure: MeasureConfig | None = None
                  ) -> Detections:
    """Detect sources whose grid cells lie in ``window.core``.

    Parameters
    ----------
    data : (ny, nx) float array, Jy/beam
        Image pixels of ``window.region`` that lie inside the image; rows and columns
        of the region beyond the image (stride padding) are zero-filled here.
    window : Window
        Core and region of this task, image px.
    model : Model
        The detector.
    tile : int
        Side of the tile cores the window is cut into for batching, px.
    halo : int
        Context around each tile core, px (a multiple of the stride).
    margin : int
        Width of the ring of cells around the core that is decoded too, px (a multiple of
        the stride): boxes there take part in this window's NMS, so that the fate of the
        core's boxes is decided as in a whole-image NMS; only boxes whose centre lies in
        the core are returned. ``window.region`` must cover core + margin + halo.
    limit : tuple of int
        ``(y0, y1, x0, x1)`` of the stride-padded image.
    batch : int or None
        Tiles per forward pass; None: the model's
        :attr:`~streamdet.engine.contract.Model.default_batch`.
    threshold : float or (nbox,) float
        Objectness threshold, global or per prior.
    iou_threshold : float
        NMS overlap threshold.
    nms_kind : str
        ``"iou"`` or ``"diou"``.
    refine : bool
        Move each owned box onto the sub-pixel peak of the image
        (:func:`refine_detections`) before the window's NMS, so that the NMS here and
        in the cross-window merge compare the same boxes, and ownership is decided on
        the refined centres.
    measure : MeasureConfig or None
        Measure flux and shape on ``data`` (:func:`streamdet.engine._measure.measure_sources`);
        None keeps the network's values.

    Returns
    -------
    Detections
        Boxes in image px after NMS within the window, tagged with ``window.index``.
    """
    contract = model.contract
    names = contract.param_names
    ry0, _, rx0, _ = window.region
    cy0, cy1, cx0, cx1 = window.core
    if skip_window(np.asarray(data[cy0 - ry0:cy1 - ry0, cx0 - rx0:cx1 - rx0])):
        return Detections.empty(names)
    buf = np.zeros(window.region_shape, np.float32)
    normalise(np.asarray(data), contract, out=buf[:data.shape[0], :data.shape[1]])

    stride = contract.stride[-1]
    tiles = window_tiles(window, tile=tile, halo=halo, margin=margin, limit=limit, stride=stride)
    groups: dict[tuple[int, ...], list[Window]] = defaultdict(list)
    for t in tiles:
        groups[t.region_shape].append(t)

    per_call = model.default_batch if batch is None else batch
    parts = []
    for group in groups.values():
        for start in range(0, len(group), per_call):
            members = group[start:start + per_call]
            stack = np.stack([
                buf[t.region[0] - ry0:t.region[1] - ry0, t.region[2] - rx0:t.region[3] - rx0]
                for t in members])[:, None]
            if model.threads == 1:
                grid = model.run(stack)
            else:
                with _RUN_LOCK:
                    grid = model.run(stack)
            for k, t in enumerate(members):
                gy0 = (t.core[0] - t.region[0]) // stride
                gy1 = (t.core[1] - t.region[0]) // stride
                gx0 = (t.core[2] - t.region[2]) // stride
                gx1 = (t.core[3] - t.region[2]) // stride
                cells = grid[k:k + 1, :, gy0:gy1, gx0:gx1]
                parts.append(decode(cells, contract, threshold=threshold,
                                    origins=np.array([[t.core[2], t.core[0]]], np.float64)))
    dets = Detections.concat(parts) if parts else Detections.empty(names)
    if refine and len(dets):
        dets = refine_detections(dets, np.asarray(data), origin=(ry0, rx0))
    dets = nms_detections(dets, iou_threshold=iou_threshold, kind=nms_kind)
    # Ownership by (refined) box centre (see owned_region).
    dets = owned(dets, owned_region(window, limit)).with_chunk(window.index)
    if measure is not None and len(dets):
        dets = measure(dets, np.asarray(data), origin=(ry0, rx0))
    return dets


def owned_region(window: Window, limit: tuple[int, int, int, int]
                 ) -> tuple[float, float, float, float]:
    """``(x0, y0, x1, y1)`` px of the box centres ``window`` owns: pixel ``i`` spans
    ``[i - 0.5, i + 0.5)``, and a core side on the edge of ``limit`` (the stride-padded
    image) is unbounded."""
    cy0, cy1, cx0, cx1 = window.core
    ly0, ly1, lx0, lx1 = limit
    inf = np.inf
    return (-inf if cx0 == lx0 else cx0 - 0.5, -inf if cy0 == ly0 else cy0 - 0.5,
            inf if cx1 == lx1 else cx1 - 0.5, inf if cy1 == ly1 else cy1 - 0.5)


def refine_detections(dets: Detections, data: NDArray[np.floating], *,
                      origin: tuple[int, int]) -> Detections:
    """Move every box onto the sub-pixel image peak and keep one box per peak.

    Parameters
    ----------
    dets : Detections
        Decoded boxes, image px.
    data : (ny, nx) float array, Jy/beam
        Pixels around the boxes; ``data[0, 0]`` is image pixel ``origin`` ``(y0, x0)``.
    origin : tuple of int
        ``(y0, x0)``.

    Returns
    -------
    Detections
        The boxes translated onto their refined centres
        (:func:`streamdet.engine._refine.refine_centres`), without the duplicates that land on
        a peak another box of higher objectness holds
        (:func:`streamdet.engine._refine.one_per_peak`); input order otherwise.
    """
    centres = refine_centres(data, dets.centers, origin=origin)
    keep = one_per_peak(centres, dets.objectness, dets.boxes)
    if keep.size < len(dets):
        dets, centres = dets.take(keep), centres[keep]
    return shift_to(dets, centres)


def shift_to(dets: Detections, centres: NDArray[np.float64]) -> Detections:
    """Return ``dets`` with each box translated so that its centre is ``centres[i]``."""
    delta = centres - dets.centers
    boxes = dets.boxes + np.concatenate([delta, delta], axis=1)
    return Detections(boxes=boxes, objectness=dets.objectness, probability=dets.probability,
                      prior=dets.prior, params=dets.params, param_names=dets.param_names,
                      chunk=dets.chunk)
