"""Chunked, out-of-core detection: a Dask graph over overlapping windows.

Data flow: image chunks (Zarr or FITS) -> window + halo -> normalise -> tiles ->
ONNX Runtime -> decode -> NMS in the window -> tree reduction of neighbouring
windows (cross-chunk NMS) -> catalogue in sky coordinates.
"""

from __future__ import annotations

import dataclasses
import os
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import dask
import dask.array as da
import dask.local
import numpy as np
from astropy.table import Table
from dask.delayed import Delayed, delayed
from dask.optimization import cull
from numpy.typing import NDArray

from .._progress import progress_bar
from ..catalogue.outputs import to_table
from ..errors import InvalidModelError, StreamdetValueError
from ..io.image import Image, open_image
from ..models import default_model
from ._infer import detect_window, window_tiles
from ._measure import MeasureConfig
from ._memory import release_free_memory
from ._plan import Window, padded_size, plan_windows, round_up
from ._resume import PartRef, PartsError, PartWriter
from .contract import Model, ModelContract, load_model
from .detections import Detections
from .nms import NMSKind, merge, merge_rows

__all__ = ["DetectConfig", "detect", "detect_pixels", "resolve_threshold"]

ImageLike = str | os.PathLike[str] | Image | NDArray[np.floating] | da.Array


@dataclass(frozen=True)
class DetectConfig:
    """Geometry and options of one detection run, resolved against the model.

    Attributes
    ----------
    chunk : int
        Side of the window cores, px (a multiple of the model stride).
    halo : int
        Context read around each core and tile, px (a multiple of the stride).
    margin : int
        Ring of cells decoded around each core for its NMS, px (a multiple of the stride).
    tile : int
        Side of the tile cores batched through the model, px.
    batch : int or None
        Tiles per forward pass; None: 1 on CPU, 8 on a GPU (decided where the model runs).
    threshold : float or tuple of float
        Objectness threshold, global or per prior.
    iou_threshold : float
        NMS overlap threshold.
    nms_kind : str
        ``"iou"`` or ``"diou"``.
    split_every : int
        Fan-in of the tree reduction that merges neighbouring windows.
    refine : bool
        Move detections onto the sub-pixel peak of the image.
    measure : MeasureConfig or None
        Beam, pixel scale and the model's measurement settings with which flux and
        shape are measured on the image (see ``detect``); None: the network's values
        are kept.
    """

    chunk: int
    halo: int
    margin: int
    tile: int
    batch: int | None
    threshold: float | tuple[float, ...]
    iou_threshold: float
    nms_kind: NMSKind
    split_every: int
    refine: bool = True
    measure: MeasureConfig | None = None


def resolve_threshold(contract: ModelContract,
                      threshold: float | str | Sequence[float] | None
                      ) -> float | tuple[float, ...]:
    """Turn a threshold argument (number, per-prior list, preset name, None) into values."""
    if threshold is None:
        threshold = "default"
    if isinstance(threshold, str):
        presets = contract.thresholds
        if threshold not in presets:
            raise StreamdetValueError(
                f"threshold preset {threshold!r} is not in the model; it has {sorted(presets)}")
        value: Any = presets[threshold]
    else:
        value = threshold
    if np.ndim(value) == 0:
        t = float(value)
        if not 0.0 <= t <= 1.0:
            raise StreamdetValueError(f"threshold {t} is outside [0, 1]")
        return t
    values = tuple(float(v) for v in value)
    if len(values) != contract.nbox or not all(0.0 <= v <= 1.0 for v in values):
        raise StreamdetValueError(
            f"threshold {values} must be {contract.nbox} values in [0, 1], one per prior")
    return values


def _configure(contract: ModelContract, image_chunks: tuple[int, int] | None,
               *, chunk: int | None, halo: int | None, tile: int | None, batch: int | None,
               threshold: float | str | Sequence[float] | None, iou_threshold: float | None,
               split_every: int, refine: bool = True, shape: tuple[int, ...] | None = None,
               nthreads: int | None = None, memory_per_thread: float | None = None
               ) -> DetectConfig:
    stride = contract.stride[-1]
    if len(set(contract.stride)) != 1:
        raise InvalidModelError(f"model stride {contract.stride} is not square")
    halo_px = contract.halo[-1] if halo is None else round_up(int(halo), stride)
    if halo is not None and halo < 0:
        raise StreamdetValueError(f"halo {halo} must be >= 0")
    tile_px = round_up(int(tile if tile is not None else contract.tile[-1]), stride)
    if chunk is None:
        # Whole multiples of the storage chunk, so each task reads whole chunks once.
        # >= 1024 px windows: the halo's share of the work stays moderate while a
        # window's pixels, tiles and ONNX Runtime buffers stay well under 100 MB.
        base = max(image_chunks) if image_chunks else 1024
        chunk = _auto_chunk(base, halo=halo_px, tile=tile_px, stride=stride, shape=shape,
                            nthreads=nthreads, memory_per_thread=memory_per_thread)
    chunk_px = round_up(int(chunk), stride)
    if chunk_px <= 0:
        raise StreamdetValueError(f"chunk {chunk} must be positive")
    tile_px = min(tile_px, chunk_px)
    if batch is not None and batch < 1:
        raise StreamdetValueError(f"batch {batch} must be >= 1")
    if split_every < 2:
        raise StreamdetValueError(f"split_every {split_every} must be >= 2")
    iou = float(contract.nms.get("iou_threshold", 0.5) if iou_threshold is None else iou_threshold)
    # Boxes near a core border can suppress or be suppressed by boxes just outside
    # it: decode a ring as wide as the largest prior so those decisions match a
    # whole-image NMS.
    margin = round_up(int(np.ceil(np.max(contract.priors_array))), stride)
    return DetectConfig(chunk=chunk_px, halo=halo_px, margin=margin, tile=tile_px,
                        batch=None if batch is None else int(batch),
                        threshold=resolve_threshold(contract, threshold), iou_threshold=iou,
                        nms_kind=_nms_kind(contract), split_every=split_every, refine=refine)


#: Bytes a window holds per pixel of its region while it runs (its pixels, the
#: normalised tiles, ONNX Runtime's activations of one tile, decoding), measured
#: generously: a 1024^2 window of the bundled model peaks near 100 MB.
WINDOW_BYTES_PER_PX = 64


def _auto_chunk(base: int, *, halo: int, tile: int, stride: int,
                shape: tuple[int, ...] | None, nthreads: int | None,
                memory_per_thread: float | None) -> int:
    """The default window side: from the storage chunk, the cluster and its memory.

    Whole multiples of the storage chunk ``base``, so each task reads whole chunks once,
    and >= 1024 px, so the halo's share of the work stays moderate. On a cluster
    (``nthreads`` given) the side is then lowered (by halves, never under the model
    tile nor 256 px) while the image would give fewer than two windows per worker
    thread, so every thread has work and a lost worker's share is small; and while a
    window (``WINDOW_BYTES_PER_PX`` per pixel of core plus halo) would take more than
    half of a thread's share of the worker memory (``memory_per_thread``).
    """
    chunk = round_up(max(base, 1024), base)
    if nthreads is None:
        return chunk
    floor = max(round_up(tile, stride), round_up(256, stride))

    def too_big(c: int) -> bool:
        return (memory_per_thread is not None
                and (c + 2 * halo) ** 2 * WINDOW_BYTES_PER_PX > memory_per_thread / 2)

    def too_few(c: int) -> bool:
        if shape is None:
            return False
        n = (-(-int(shape[0]) // c)) * (-(-int(shape[1]) // c))
        return n < 2 * nthreads

    while chunk > floor and (too_big(chunk) or too_few(chunk)):
        smaller = chunk - base if chunk - base >= max(base, 1024) else round_up(chunk // 2,
                                                                                stride)
        chunk = max(floor, smaller)
    return chunk


def _nms_kind(contract: ModelContract) -> NMSKind:
    kind = str(contract.nms.get("kind", "diou"))
    if kind not in ("iou", "diou"):
        raise InvalidModelError(f"model NMS kind {kind!r} is not 'iou' or 'diou'")
    return "iou" if kind == "iou" else "diou"


def _as_array(image: ImageLike) -> tuple[da.Array, Image | None]:
    if isinstance(image, Image):
        return image.data.data, image
    if isinstance(image, str | os.PathLike):
        img = open_image(image)
        return img.data.data, img
    arr = image if isinstance(image, da.Array) else da.from_array(np.asarray(image))
    return arr, None


Piece = tuple[int, int, NDArray[np.floating]]
Strip = tuple[int, int, int]  # block (i, j) and the window that needs a part of it
#: What a window task returns: its detections (or, on a cluster with parts, a reference
#: to them on disk) and the halo strips it hands on to windows later in the walk.
WindowResult = tuple["Detections | PartRef", dict[Strip, Piece]]


class _BlockReader:
    """Reads one block of a Dask array inside another task.

    Holds the block's culled subgraph (for a Zarr or FITS image: the array handle and
    one getter) and runs it synchronously, so the read happens when the task that
    needs the data runs, not when the scheduler would choose to run a load task.
    An opaque object, so that ``delayed`` does not unpack the graph it carries.
    """

    __slots__ = ("graph", "key", "origin")

    def __init__(self, graph: Any, key: Any, origin: tuple[int, int]) -> None:
        self.graph, self.key, self.origin = graph, key, origin

    def __call__(self) -> NDArray[np.floating]:
        return np.asarray(dask.local.get_sync(self.graph, self.key))


def _block_readers(arr: da.Array, y_edges: NDArray[np.integer], x_edges: NDArray[np.integer]
                   ) -> dict[tuple[int, int], _BlockReader]:
    """One reader per block of a 2D Dask array, keyed by block index.

    ``y_edges``, ``x_edges``: cumulative block boundaries (``numblocks + 1`` each).
    """
    graph = dict(arr.__dask_graph__())
    readers = {}
    for i in range(arr.numblocks[0]):
        for j in range(arr.numblocks[1]):
            key = (arr.name, i, j)
            readers[(i, j)] = _BlockReader(cull(graph, [key])[0], key,
                                           (int(y_edges[i]), int(x_edges[j])))
    return readers


def _blocks_of(bounds: tuple[int, int, int, int], y_edges: NDArray[np.integer],
               x_edges: NDArray[np.integer]) -> list[tuple[int, int]]:
    """Block indices ``(i, j)`` of the blocks that the region ``bounds`` (y0, y1, x0, x1)
    overlaps, row by row."""
    iy = range(int(np.searchsorted(y_edges, bounds[0], side="right")) - 1,
               int(np.searchsorted(y_edges, bounds[1], side="left")))
    ix = range(int(np.searchsorted(x_edges, bounds[2], side="right")) - 1,
               int(np.searchsorted(x_edges, bounds[3], side="left")))
    return [(i, j) for i in iy for j in ix]


def _assemble(pieces: list[Piece], bounds: tuple[int, int, int, int]) -> NDArray[np.float32]:
    """Cut the region ``bounds`` (y0, y1, x0, x1) out of array pieces at their origins."""
    y0, y1, x0, x1 = bounds
    out = np.empty((y1 - y0, x1 - x0), np.float32)
    for by, bx, block in pieces:
        ya, yb = max(y0, by), min(y1, by + block.shape[0])
        xa, xb = max(x0, bx), min(x1, bx + block.shape[1])
        if ya < yb and xa < xb:
            out[ya - y0:yb - y0, xa - x0:xb - x0] = block[ya - by:yb - by, xa - bx:xb - bx]
    return out


def _read_cut(reader: _BlockReader, wanted: dict[int, tuple[int, int, int, int]],
              after: Any = None) -> dict[int, Piece]:
    """Read one storage chunk and copy out the parts that other windows need (halos).

    Copies, not views, so that the chunk itself is freed at once; ``wanted`` maps a
    window index to the (y0, y1, x0, x1) image bounds it needs from this chunk.
    ``after`` is only a scheduling dependency (see :func:`_build_graph`).
    """
    block = reader()
    oy, ox = reader.origin
    return {w: (y0, x0, np.array(block[y0 - oy:y1 - oy, x0 - ox:x1 - ox]))
            for w, (y0, y1, x0, x1) in wanted.items()}


def _take(source: WindowResult | dict[int, Piece], which: Strip | int, *,
          keep: bool = False) -> Piece:
    """One halo strip out of what a window (``(dets, handed)``) or a read-and-cut task
    (window index -> piece) produced, removed from it unless ``keep``.

    Every strip has exactly one consumer, so once taken nothing else needs it: its
    memory goes back as soon as its consumer is done with it, not when the producer's
    result is released (which also waits for the tree reduction's merge of the
    producer's detections, and for the window that the bound on windows in flight
    gates on it). On a cluster (``keep``) the strip stays: a consumer whose result was
    lost with a worker is run again where the producer's result still is, and must find
    its strip there (a consumer on another worker takes from its own copy anyway).
    """
    pieces = source[1] if isinstance(source, tuple) else source
    if keep:
        return pieces[which]  # type: ignore[index]
    return pieces.pop(which)  # type: ignore[arg-type]


def _detect_from_blocks(own: list[_BlockReader], sources: list[Any],
                        picks: tuple[Any, ...], bounds: tuple[int, int, int, int],
                        window: Window, model: Model,
                        emit: dict[Strip, tuple[int, int, int, int]], gate: Any = None, *,
                        parts: PartWriter | None = None, reuse: bool = False,
                        by_ref: bool = False, keep_strips: bool = False,
                        **options: Any) -> WindowResult:
    """Detect in one window; also hand on, as copies, the parts of its own chunks that
    windows later in the walk need as halo (``emit``: (i, j, consumer) -> image bounds).

    ``sources[k]`` is the result of the task that holds this window's ``k``-th halo
    strip (an earlier window, or a chunk's read-and-cut task) and ``picks[k]`` which of
    its strips it is: the strips are picked here, not by tasks of their own (each task
    costs the scheduler about a millisecond).

    With ``parts``, the window's detections are persisted (:mod:`streamdet.engine._resume`);
    with ``reuse`` too they are read back from there instead of computed (the chunks
    are then read only when there is something to hand on; a part that cannot be read
    is computed and written again); with ``by_ref`` the task returns a
    :class:`~streamdet.engine._resume.PartRef` to them instead of the detections. ``gate`` is
    only a scheduling dependency (the bound on windows in flight, see
    :func:`_build_graph`). ``keep_strips``: see :func:`_take`.
    """
    pieces = [_take(src, k, keep=keep_strips) for src, k in zip(sources, picks, strict=True)]
    del sources
    dets = None
    if reuse and parts is not None:
        try:
            dets = parts.load(window.index)
        except PartsError:  # unreadable (a disk that lost it): computed again instead
            dets = None
        if dets is not None and not emit:
            return (parts.ref(window.index) if by_ref else dets), {}
    pieces = [(*r.origin, r()) for r in own] + pieces
    data = _assemble(pieces, bounds)
    del pieces
    handed = {strip: (y0, x0, np.array(data[y0 - bounds[0]:y1 - bounds[0],
                                            x0 - bounds[2]:x1 - bounds[2]]))
              for strip, (y0, y1, x0, x1) in emit.items()}
    if dets is None:
        dets = detect_window(data, window, model, **options)
        if parts is not None:
            parts.save(window.index, dets)
    del data
    if by_ref and parts is not None:
        return parts.ref(window.index), handed
    return dets, handed


def _dets_of(result: Any) -> Detections:
    """The detections of a window's result, of a merge's, or behind a reference."""
    if isinstance(result, tuple):
        result = result[0]
    if isinstance(result, PartRef):
        return result.load()
    out: Detections = result
    return out


def _root_task(*parts: Any, cfg: DetectConfig) -> Detections:
    """The root merge as a task of the graph (on a cluster: run on a worker)."""
    return _root_merge([_dets_of(p) for p in parts], cfg)


def _walk(windows: list[Window], shape: tuple[int, int]) -> list[Window]:
    """The order in which windows are built, run and merged: row by row along the
    image's shorter side.

    Halo strips wait from their owner (or their read) to their consumer, so those held
    at once are about one row of windows' worth: the frontier of the walk, as long as
    the shorter side, whatever the image's length. The tree reduction merges windows in
    this order, so every merge joins neighbours.
    """
    if shape[1] <= shape[0]:
        return sorted(windows, key=lambda w: (w.core[0], w.core[2]))
    return sorted(windows, key=lambda w: (w.core[2], w.core[0]))


def plan(arr: da.Array, model: Model, cfg: DetectConfig) -> tuple[
        list[Window], tuple[int, int, int, int]]:
    """The windows of a run, in walk order, and the stride-padded image bounds."""
    ny, nx = arr.shape
    stride = model.contract.stride[-1]
    limit = (0, padded_size(ny, stride), 0, padded_size(nx, stride))
    windows = _walk(plan_windows(limit, core=cfg.chunk, halo=cfg.halo + cfg.margin,
                                 stride=stride, limit=limit), (ny, nx))
    return windows, limit


def _build_graph(arr: da.Array, model: Model, cfg: DetectConfig, *, lag: int = 2,
                 model_task: Any = None, inflight: int | None = None,
                 parts: PartWriter | None = None, done: frozenset[int] = frozenset(),
                 root: bool = False, by_ref: bool = False, keep_strips: bool = False
                 ) -> tuple[list[Delayed], list[Window], tuple[int, int, int, int]]:
    """The detection graph: reads, halo cuts, windows and the tree reduction up to its
    last ``<= split_every`` results (whose merge, :func:`_root_merge`, is the caller's),
    or with ``root`` up to the catalogue itself (one key).

    ``model_task``: what the model key holds (default: ``model`` itself; on a cluster
    the task that opens each worker's own session, :func:`streamdet.engine._cluster.shared`).
    ``inflight``: windows started before the one ``inflight`` places earlier in the walk
    has finished (None: no bound beyond the halo cuts' ``lag``; the threaded scheduler
    runs in the walk's order anyway, a cluster's scheduler needs it). ``parts``: persist
    each window's detections there; ``done``: the windows whose detections are read
    back from there instead; ``by_ref`` (with ``parts``): windows and merges hand on
    references to their detections on disk, not the detections (see
    :func:`_merge_and_release`), so that no worker holds the partial catalogues.
    ``keep_strips``: a window leaves the halo strips it takes in their producer's result
    (on a cluster, where a window may be run again after a worker is lost; see
    :func:`_take`).

    Built as one low-level graph (a dict of tasks), not by chaining ``delayed`` calls,
    whose merged graphs grow with every dependency: building and culling those costs
    seconds of scheduler time on a 16384^2 image.
    """
    ny, nx = arr.shape
    windows, limit = plan(arr, model, cfg)
    position = {w.index: p for p, w in enumerate(windows)}
    by_ref = by_ref and parts is not None
    token = dask.base.tokenize(arr.name, model.path, cfg, lag, inflight, root, by_ref,
                               keep_strips, None if parts is None else str(parts.directory),
                               sorted(done))
    # Reads happen inside the tasks that use the data, so none waits in memory for a
    # consumer that the scheduler has not reached. A storage chunk inside a window's
    # core is read by that window alone, which hands the parts that windows further on
    # in the walk (the next row) need as halo on to them. The parts that the others
    # need are read and cut by one task per chunk, gated on the window `lag` places
    # before the first of them in the walk, so it runs just in time. A window picks its
    # strips out of the results of those tasks itself (no task per strip: on a cluster
    # each task costs the scheduler about a millisecond); the results wait until their
    # last consumer has run, along the walk's frontier.
    y_edges = np.cumsum((0, *arr.chunks[0]))
    x_edges = np.cumsum((0, *arr.chunks[1]))
    readers = _block_readers(arr, y_edges, x_edges)
    bounds_of: dict[int, tuple[int, int, int, int]] = {}
    own: dict[int, list[_BlockReader]] = defaultdict(list)
    owner: dict[tuple[int, int], int] = {}
    wanted: dict[tuple[int, int], dict[int, tuple[int, int, int, int]]] = defaultdict(dict)
    for w in windows:
        y0, y1, x0, x1 = w.region
        bounds = bounds_of[w.index] = (y0, min(y1, ny), x0, min(x1, nx))
        cy0, cy1, cx0, cx1 = w.core
        for i, j in _blocks_of(bounds, y_edges, x_edges):
            by0, by1 = int(y_edges[i]), int(y_edges[i + 1])
            bx0, bx1 = int(x_edges[j]), int(x_edges[j + 1])
            if cy0 <= by0 and by1 <= cy1 and cx0 <= bx0 and bx1 <= cx1:
                own[w.index].append(readers[(i, j)])
                owner[(i, j)] = w.index
            else:
                wanted[(i, j)][w.index] = (max(by0, bounds[0]), min(by1, bounds[1]),
                                           max(bx0, bounds[2]), min(bx1, bounds[3]))
    # A window that owns a chunk hands its parts on to the windows more than `lag`
    # places after it in the walk (a strip then waits only from its owner to its
    # consumer); the others get theirs from the chunk's read-and-cut task.
    cuts_for: dict[int, list[tuple[tuple[int, int], dict[int, tuple[int, int, int, int]]]]]
    cuts_for = defaultdict(list)  # position of the first consumer -> its chunks to cut
    emit: dict[int, dict[Strip, tuple[int, int, int, int]]] = defaultdict(dict)
    for ij, need in wanted.items():
        early = need
        if ij in owner:
            # Only to windows more than `lag` places on: a window never waits for the
            # one just before it, so `lag` windows can always run at once.
            o = owner[ij]
            early = {w: b for w, b in need.items() if position[w] - position[o] <= lag}
            emit[o].update({(*ij, w): b for w, b in need.items() if w not in early})
        if early:
            cuts_for[min(position[w] for w in early)].append((ij, early))
    model_key = f"model-{token}"
    run = partial(_detect_from_blocks, tile=cfg.tile, halo=cfg.halo, margin=cfg.margin,
                  limit=limit, batch=cfg.batch,
                  threshold=np.asarray(cfg.threshold) if isinstance(cfg.threshold, tuple)
                  else cfg.threshold,
                  iou_threshold=cfg.iou_threshold, nms_kind=cfg.nms_kind, refine=cfg.refine,
                  measure=cfg.measure, parts=parts, keep_strips=keep_strips)
    reuse = partial(run, reuse=True)
    if by_ref:
        run, reuse = partial(run, by_ref=True), partial(reuse, by_ref=True)
    dsk: dict[str, Any] = {model_key: model if model_task is None else model_task}
    # The halo strips of each window: the key of the task that holds each (an earlier
    # window, or a chunk's read-and-cut task) and which of its strips it is.
    sources: dict[int, list[str]] = defaultdict(list)
    picks: dict[int, list[Any]] = defaultdict(list)
    results: list[str] = []
    for p, w in enumerate(windows):
        gate = results[p - lag] if p >= lag else None
        for (i, j), need in cuts_for[p]:
            cut = f"halo-{token}-{i}-{j}"
            dsk[cut] = (_read_cut, readers[(i, j)], need, gate)
            for w_index in need:
                sources[w_index].append(cut)
                picks[w_index].append(w_index)
        key = f"window-{token}-{w.index}"
        held = results[p - inflight] if inflight is not None and p >= inflight else None
        dsk[key] = (reuse if w.index in done else run, own[w.index], sources.pop(w.index, []),
                    tuple(picks.pop(w.index, [])), bounds_of[w.index], w, model_key,
                    emit[w.index], held)
        for i, j, consumer in emit[w.index]:
            sources[consumer].append(key)
            picks[consumer].append((i, j, consumer))
        results.append(key)
    if not results:
        return [delayed(Detections.empty)(model.contract.param_names)], windows, limit
    # Tree reduction, in walk order: every merge joins neighbouring windows. The root
    # merge is left to the caller (see `_root_merge`). With `by_ref`, each merge writes
    # its partial catalogue into the parts directory and hands on a reference to it.
    combine = partial(_merge_and_release, iou_threshold=cfg.iou_threshold, kind=cfg.nms_kind)
    level = 0
    while len(results) > cfg.split_every:
        below = results
        results = []
        for i in range(0, len(below), cfg.split_every):
            key = f"merge-{token}-{level}-{i // cfg.split_every}"
            step = (partial(combine, store=parts, name=f"{level}-{i // cfg.split_every}")
                    if by_ref else combine)
            dsk[key] = (step, *below[i:i + cfg.split_every])
            results.append(key)
        level += 1
    if root:
        dsk[f"catalogue-{token}"] = (partial(_root_task, cfg=cfg), *results)
        return [Delayed(f"catalogue-{token}", dsk)], windows, limit
    return [Delayed(key, dsk) for key in results], windows, limit


def _merge_and_release(*parts: Any, iou_threshold: float, kind: NMSKind,
                       store: PartWriter | None = None, name: str = ""
                       ) -> Detections | PartRef:
    """One tree-reduction step; then the memory freed so far goes back to the system.

    ``parts``: detections, window results or references to either on disk
    (:func:`_dets_of`). With ``store`` the merged detections are written there (as
    ``merge-NAME.npz``) and a reference to them is returned.

    The windows before it have freed their pixels, tiles and buffers by now, in the
    arenas of whichever threads ran them; without the trim, a long run's resident set
    grows with freed fragments that later allocations of other sizes cannot reuse.
    """
    merged = merge(*[_dets_of(p) for p in parts], iou_threshold=iou_threshold, kind=kind,
                   resolved=True)
    del parts
    if store is not None:
        ref = store.save_merged(name, merged)
        del merged
        release_free_memory()
        return ref
    release_free_memory()
    return merged


def _root_merge(parts: list[Detections], cfg: DetectConfig) -> Detections:
    """The last step of the tree reduction, run on the gathered top-level results.

    Consumes ``parts`` (the caller must hold no other reference): each output column
    is built while the parts' copy of that column is dropped and its memory handed
    back, so the catalogue is held about once, not twice, at the end of a large run.
    """
    if len(parts) == 1:
        return parts.pop()
    rows = merge_rows(parts, iou_threshold=cfg.iou_threshold, kind=cfg.nms_kind, resolved=True)
    release_free_memory()
    return Detections.gather(parts, rows, consume=True, after_column=release_free_memory)


class _Progress(dask.callbacks.Callback):
    """Counts finished windows on a tqdm bar (tiles done / total, Mpix/s)."""

    def __init__(self, windows: list[Window], cfg: DetectConfig, quiet: bool | None, *,
                 limit: tuple[int, int, int, int], stride: int) -> None:
        super().__init__()
        self._pixels = {f"-{w.index}": w.core_pixels for w in windows}
        tiles_per = {w.index: len(window_tiles(w, tile=cfg.tile, halo=cfg.halo,
                                               margin=cfg.margin, limit=limit, stride=stride))
                     for w in windows}
        self._tiles = {f"-{i}": n for i, n in tiles_per.items()}
        self.bar = progress_bar(total=sum(tiles_per.values()), desc="detect", unit="tile",
                                quiet=quiet)
        self._done_px = 0

    def _posttask(self, key: Any, result: Any, dsk: Any, state: Any, worker_id: Any) -> None:
        name = key if isinstance(key, str) else str(key)
        if not name.startswith("window-"):
            return
        suffix = "-" + name.rsplit("-", 1)[1]
        self._done_px += self._pixels.get(suffix, 0)
        elapsed = self.bar.format_dict.get("elapsed", 0.0) or 1e-9
        self.bar.set_postfix_str(f"{self._done_px / elapsed / 1e6:.1f} Mpix/s", refresh=False)
        self.bar.update(self._tiles.get(suffix, 0))


def detect_pixels(image: ImageLike, *, model: str | os.PathLike[str] | Model | None = None,
                  chunk: int | None = None, halo: int | None = None, tile: int | None = None,
                  batch: int | None = None, threads: int | None = None,
                  threshold: float | str | Sequence[float] | None = None,
                  iou_threshold: float | None = None, split_every: int = 4,
                  refine: bool = True, measure: bool = True, client: Any = None,
                  device: str | None = None, parts: str | os.PathLike[str] | None = None,
                  resume: bool = False, worker_timeout: float = 120.0,
                  quiet: bool | None = True) -> Detections:
    """Run the detector over an image, chunk by chunk; return detections in pixels.

    Parameters are those of :func:`detect`; the result is a :class:`Detections` in
    image pixels (xyxy, 0-based), before any world-coordinate conversion.
    """
    arr, img = _as_array(image)
    if arr.ndim != 2:
        raise StreamdetValueError(
            f"image has {arr.ndim} dimensions {arr.shape}; the 2D detector needs (y, x)")
    mdl = _load(model, img, threads=threads, device=_here(device, client))
    if mdl.contract.ndim != arr.ndim:
        raise InvalidModelError(f"model {mdl.path} is {mdl.contract.ndim}D but the image is "
                                f"{arr.ndim}D")
    if resume and parts is None:
        raise StreamdetValueError("resume needs parts: the directory of the per-window "
                                  "results to resume from")
    image_chunks = (int(arr.chunksize[0]), int(arr.chunksize[1]))
    workers = memory = None
    if client is not None:
        from ._cluster import total_threads, worker_memory

        workers, memory = total_threads(client), worker_memory(client)
    cfg = _configure(mdl.contract, image_chunks, chunk=chunk, halo=halo, tile=tile,
                     batch=batch, threshold=threshold, iou_threshold=iou_threshold,
                     split_every=split_every, refine=refine, shape=arr.shape,
                     nthreads=workers, memory_per_thread=memory)
    if measure:
        cfg = dataclasses.replace(cfg, measure=_measurement(mdl.contract, img))
    writer, done = None, frozenset[int]()
    if parts is not None:
        from ._resume import Parts, fingerprint, input_identity

        header = img.header.tostring() if img is not None and img.header is not None else None
        stamp = fingerprint(
            model_path=mdl.path, device=_device_of(mdl) if client is None else
            f"{device or mdl.device} (on the workers)",
            input_id=input_identity(arr, path=img.path if img is not None else None,
                                    header=header),
            options=cfg)
        store = Parts(parts, stamp, resume=resume)
        writer = store.writer
        windows, _ = plan(arr, mdl, cfg)
        done = frozenset(store.done() & {w.index for w in windows})
    if client is not None:
        from ._cluster import compute, shared

        lag = max(2, workers or 0)
        task = shared(mdl, device=device)
        (root,), windows, limit = _build_graph(arr, mdl, cfg, lag=lag, model_task=task,
                                               inflight=2 * lag, parts=writer, done=done,
                                               root=True, by_ref=writer is not None,
                                               keep_strips=True)
        prefix = root.key.replace("catalogue-", "window-", 1) + "-"
        return compute(client, root, worker_timeout=worker_timeout,
                       progress=(prefix, len(windows)), quiet=quiet)
    lag = max(2, os.cpu_count() or 2)
    tops, windows, limit = _build_graph(arr, mdl, cfg, lag=lag, parts=writer, done=done)
    progress = _Progress(windows, cfg, quiet, limit=limit, stride=mdl.contract.stride[-1])
    with progress:
        # The threaded scheduler itself (not the name "threads"): dask then skips looking
        # for a distributed client, which costs an import of distributed (~0.15 s).
        parts_ = list(dask.compute(*tops, scheduler=dask.threaded.get, num_workers=lag,
                                   optimize_graph=False))
    progress.bar.close()
    parts_ = [_dets_of(p) for p in parts_]  # no other reference: the root merge consumes them
    return _root_merge(parts_, cfg)


def _here(device: str | None, client: Any) -> str | None:
    """The device of the client's own copy of the model: with a cluster, a GPU device is
    the workers' (the client, a login node say, may have none; it only reads the model's
    contract), so the client opens the model on the CPU."""
    if client is None or device is None:
        return device
    from ._providers import parse_device

    return "cpu" if parse_device(device)[0] in ("cuda", "tensorrt") else device


def _device_of(model: Model) -> str:
    """The device a model runs on, for a fingerprint: as asked, and the provider that
    runs it here."""
    try:
        first = model.active_providers[0]
    except (IndexError, AttributeError):
        first = "?"
    return f"{model.device} ({first})"


def _measurement(contract: ModelContract, img: Image | None) -> MeasureConfig | None:
    """How to measure the sources on the image, or None where it cannot be done.

    The image's own restoring beam and pixel scale when its header has them, else those
    the model was trained for (None when neither is known); the model's measurement
    settings (``measure`` in its contract).
    """
    scale = img.pixel_scale_arcsec if img is not None else None
    beam = img.beam_arcsec if img is not None else None
    scale = scale or contract.pixel_scale_arcsec
    if beam is None and contract.beam_arcsec is not None:
        beam = (contract.beam_arcsec[0], contract.beam_arcsec[1], 0.0)
    if beam is None or not scale:
        return None
    m = contract.measure
    fit_snr = m["fit_snr"]
    return MeasureConfig(beam_px=(beam[0] / scale, beam[1] / scale, float(beam[2])),
                         pixel_scale_arcsec=float(scale),
                         bmin_resolved=float(m["bmin_resolved"]),
                         bmaj_resolved=float(m["bmaj_resolved"]),
                         fit_snr=None if fit_snr is None else float(fit_snr),
                         background=bool(m.get("background", False)),
                         flux_scale=float(m.get("flux_scale", 1.0)))


def _load(model: str | os.PathLike[str] | Model | None, img: Image | None, *,
          threads: int | None, device: str | None = None) -> Model:
    """The model to run: the one given (warned about when it was made for another band
    or pixel scale than the image's), else the bundled model that fits the image.

    ``device`` (None: ``"auto"``) applies to a model given by path; a :class:`Model`
    keeps its own unless ``device`` names another, when it is reopened there.
    """
    if isinstance(model, Model) and device is not None and device != model.device:
        model = model.path
    dev = "auto" if device is None else device
    if model is None:
        model = default_model(freq_hz=img.freq_hz if img is not None else None,
                              pixel_scale_arcsec=img.pixel_scale_arcsec
                              if img is not None else None)
        return load_model(Path(model), ndim=2, threads=1 if threads is None else threads,
                          device=dev)
    if not isinstance(model, Model):
        model = load_model(Path(model), ndim=2, threads=1 if threads is None else threads,
                           device=dev)
    if img is not None:
        from ..models import check_model_fits

        check_model_fits(model, freq_hz=img.freq_hz, pixel_scale_arcsec=img.pixel_scale_arcsec)
    return model


def detect(image: ImageLike, *, model: str | os.PathLike[str] | Model | None = None,
           chunk: int | None = None, halo: int | None = None, tile: int | None = None,
           batch: int | None = None, threads: int | None = None,
           threshold: float | str | Sequence[float] | None = None,
           iou_threshold: float | None = None, pb: str | os.PathLike[str] | None = None,
           split_every: int = 4, refine: bool = True, measure: bool = True,
           client: Any = None, device: str | None = None,
           parts: str | os.PathLike[str] | None = None, resume: bool = False,
           worker_timeout: float = 120.0, quiet: bool | None = True) -> Table:
    """Detect and characterise sources in an image of any size, out of core.

    Parameters
    ----------
    image : path, Image, or (ny, nx) array
        A Zarr store written by :func:`streamdet.convert`, a FITS file (streamed, never
        loaded whole), an :class:`Image`, or an in-memory array in Jy/beam (pixel
        catalogue only).
    model : path or Model, optional
        ONNX detector carrying the streamdet contract; default: the bundled model that
        fits the image's frequency and pixel scale.
    chunk : int, optional
        Window core side, px; default: a whole multiple of the storage chunk, >= 1024.
    halo : int, optional
        Context around windows and tiles, px; default: the model's receptive-field halo
        (which makes results independent of the chunking).
    tile : int, optional
        Tile core side batched through the model, px; default: the model's tile.
    batch : int, optional
        Tiles per ONNX Runtime call; default 1 on CPU (batching gains no speed there and
        multiplies the activation memory), 8 on a GPU.
    threads : int, optional
        ONNX Runtime intra-op threads of one forward pass. Default: one thread per pass
        and as many windows in flight as cores, which keeps every core busy with
        inference while the others read and decode. With ``threads > 1`` one pass
        runs at a time per process.
    threshold : float, sequence of float, or str, optional
        Objectness threshold (one value or one per prior) or a preset stored in the model
        (``"default"``, ``"best"``, ``"purity"``).
    iou_threshold : float, optional
        NMS overlap threshold; default: the model's.
    pb : path, optional
        Primary-beam FITS image: fluxes are divided by its value at each source.
    split_every : int
        Fan-in of the tree reduction that merges neighbouring windows.
    refine : bool
        Move each detection onto the sub-pixel peak of the image around it (a parabola
        through the brightest pixel and its neighbours), which the small grid-cell
        regression of the network cannot resolve as finely; ``False`` keeps the
        network's positions.
    measure : bool
        Measure the sources on the image, with the model's ``measure`` settings: every
        flux by forced photometry (a Gaussian of the network's shape convolved with the
        restoring beam, the image's, else the model's, fitted for its peak at the
        detection), and from a peak of the model's ``measure.fit_snr`` times the local
        noise a free elliptical Gaussian fit, deconvolved by the beam, for flux, PA and
        the axes where they are resolved (a free fit on a faint source widens on the
        noise). ``False`` keeps the network's coarser values.
    client : distributed.Client, optional
        Run on an existing Dask cluster instead of local threads (see
        :mod:`streamdet.engine._cluster`): each worker process opens its own ONNX Runtime
        session once; the windows in flight are bounded (two per worker thread); the
        tree reduction, its root included, runs on the workers and only the catalogue
        comes back; with ``parts`` the windows and merges hand on references to their
        detections written there, so no worker holds the growing partial catalogues
        (its memory stays flat with the image's size). A lost worker's windows are
        recomputed by the others; with no worker left for ``worker_timeout`` s,
        :class:`~streamdet.engine._cluster.NoWorkersError`.
    device : str, optional
        Where the model runs: ``"auto"`` (default), ``"cpu"``, ``"cuda[:K]"``,
        ``"tensorrt[:K]"`` (see :func:`streamdet.load_model`). With a ``client``, on the
        workers (the client reads the model's contract on its CPU).
    parts : path, optional
        A directory in which each window's detections are persisted as it finishes
        (one atomic file per window, and the run's fingerprint: model bytes, input,
        options; :mod:`streamdet.engine._resume`). Without ``resume`` an existing one is
        replaced. The caller removes it when it has what it needs.
    resume : bool
        Reuse the windows already in ``parts`` and compute only the others; refused
        (:class:`~streamdet.engine._resume.PartsMismatchError`) where they were made with
        another model, input or option.
    worker_timeout : float
        With a ``client``: seconds without any worker before the run is abandoned.
    quiet : bool or None
        ``False`` or ``None`` shows a progress bar on a terminal.

    Returns
    -------
    astropy.table.Table
        One row per source: pixel box and centre, RA/Dec (deg) when the image has a
        celestial WCS, decoded parameters, objectness, prior and window of origin.
    """
    arr, img = _as_array(image)
    mdl = _load(model, img, threads=threads, device=_here(device, client))
    dets = detect_pixels(img if img is not None else arr, model=mdl, chunk=chunk, halo=halo,
                         tile=tile, batch=batch, threads=threads, threshold=threshold,
                         iou_threshold=iou_threshold, split_every=split_every, refine=refine,
                         measure=measure, client=client, device=device, parts=parts,
                         resume=resume, worker_timeout=worker_timeout, quiet=quiet)
    pixel_scale = img.pixel_scale_arcsec if img is not None else None
    wcs = img.celestial_wcs if img is not None else None
    beam = None
    if pb is not None:
        from ..catalogue._pb import PrimaryBeam

        beam = PrimaryBeam.from_fits(pb)
    units = {p.name: p.unit for p in mdl.contract.params if p.unit}
    return to_table(dets, wcs=wcs, pixel_scale_arcsec=pixel_scale, pb=beam, param_units=units,
                    copy=False, meta={"model": mdl.contract.name, "model_file": str(mdl.path),
                          "image": str(img.path) if img is not None else "array"})
