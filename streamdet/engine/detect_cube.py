"""Chunked detection in HI cubes: 3D windows with halos, a Dask graph, a tree reduction.

Data flow (the 2D engine's, one axis more): cube (Zarr from ``convert``, or FITS) ->
3D windows (cores partition the stride-padded cube; each read with a halo, long along
frequency) -> normalise -> ONNX Runtime (one forward pass per window) -> decode the
cells of the core and of a margin around it -> 3D NMS in the window -> the boxes whose
centre lies in the core -> tree reduction of neighbouring windows
(:func:`streamdet.engine.nms.merge`, ``split_every`` at a time) -> world coordinates ->
SDC2 catalogue (:func:`streamdet.catalogue.outputs.cube_table`).

Guarantees, as in 2D:

* **Chunk invariance.** Every window boundary is a multiple of the model's grid
  stride and the halo covers half the receptive field (``contract.halo``), so each
  core cell gets the output of a whole-cube forward pass (the zero padding beyond the
  stride-padded cube is where a whole-cube pass has it). The margin of decoded cells
  (default: the largest prior, rounded up to the stride, per axis) lets each window's
  NMS settle its own boxes as a whole-cube NMS would; ownership by box centre gives
  every box one window. The result does not depend on the window size (up to the
  floating-point differences of ONNX Runtime between input shapes; tested against a
  whole-cube single window).
* **Bounded memory.** A window task reads its own region from the store (no dask
  array of the cube is materialised); at most ``workers`` windows are in flight, and
  their results (a few rows each) are merged as neighbours complete. Memory is
  ``workers`` x (region voxels x ~3 float32 + the network's activations).
* **Tree reduction.** Windows are walked channel slab by slab (z, then y, then x)
  so that the groups of ``split_every`` merged together are neighbours.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import dask
import dask.array as da
import numpy as np
from astropy.table import Table
from dask.delayed import Delayed, delayed
from numpy.typing import NDArray

from ..catalogue.outputs import cube_table
from ..errors import InvalidModelError, StreamdetValueError, StreamdetWarning
from ..io._zarrstore import COORD
from ..io.image import Image, open_image
from ..models import default_model
from ._infer import _RUN_LOCK, skip_window
from ._measure3d import CubeMeasure, apply_measurements, measure_cube
from ._plan import Window, plan_windows, round_up
from ._resume import Parts, PartWriter, fingerprint, input_identity
from .contract import Model, ModelContract, load_model, normalise
from .decode import decode
from .detect import _here, resolve_threshold
from .detections import Detections
from .nms import NMSKind, merge, nms_detections, owned, pixel_core_region

__all__ = ["ChannelWidthWarning", "CubeConfig", "cube_geometry", "detect_cube",
           "detect_cube_voxels", "plan_cube"]

CubeLike = str | os.PathLike[str] | Image | NDArray[np.floating] | da.Array
Axes3 = tuple[int, int, int]


class ChannelWidthWarning(StreamdetWarning):
    """The cube's channel width differs from the one the model was trained for."""


@dataclass(frozen=True)
class CubeConfig:
    """Geometry and options of one cube detection run, resolved against the model.

    Attributes
    ----------
    window : (int, int, int)
        Core of the windows ``(z, y, x)``: channels, px, px (multiples of the stride).
    halo : (int, int, int)
        Context read around the decoded cells ``(z, y, x)`` (multiples of the stride).
    margin : (int, int, int)
        Ring of cells decoded around each core for its NMS ``(z, y, x)`` (multiples of
        the stride).
    threshold : float or tuple of float
        Objectness threshold, global or per prior.
    iou_threshold : float
        3D NMS overlap threshold.
    nms_kind : str
        ``"iou"`` or ``"diou"``.
    split_every : int
        Fan-in of the tree reduction (>= 2).
    workers : int
        Windows in flight at once (threads of the Dask scheduler).
    measure : CubeMeasure or None
        Measure each detection on the voxels (:mod:`streamdet.engine._measure3d`), or
        keep the network's parameters (None).
    """

    window: Axes3
    halo: Axes3
    margin: Axes3
    threshold: float | tuple[float, ...]
    iou_threshold: float
    nms_kind: NMSKind
    split_every: int
    workers: int
    measure: CubeMeasure | None = None

    @property
    def reach(self) -> Axes3:
        """How far a window's region extends beyond its core, per axis (halo + margin)."""
        return tuple(h + m for h, m in zip(self.halo, self.margin, strict=True))  # type: ignore[return-value]


def _axes(value: int | Sequence[int] | None, default: Axes3, what: str, *, minimum: int
          ) -> Axes3:
    if value is None:
        return default
    vals = [value] * 3 if isinstance(value, int | np.integer) else list(value)
    if len(vals) != 3:
        raise StreamdetValueError(f"{what} must be one integer or three (z, y, x), got {value!r}")
    out = []
    for v in vals:
        if isinstance(v, bool) or not isinstance(v, int | np.integer) or v < minimum:
            raise StreamdetValueError(f"{what} must be integers >= {minimum}, got {value!r}")
        out.append(int(v))
    return (out[0], out[1], out[2])


def configure(contract: ModelContract, shape: Sequence[int], *,
              window: int | Sequence[int] | None = None,
              halo: int | Sequence[int] | None = None,
              margin: int | Sequence[int] | None = None,
              threshold: float | str | Sequence[float] | None = None,
              iou_threshold: float | None = None, split_every: int = 8,
              workers: int | None = None, measure: CubeMeasure | None = None) -> CubeConfig:
    """Resolve the options of a run against the model's contract and the cube's shape.

    Every size is rounded up to the model stride per axis; the window is clipped to the
    padded cube. Defaults: window ``(256, 128, 128)``; halo ``contract.halo``; margin the
    largest prior per axis (``(w, h, d)`` -> z, y, x) rounded up to the stride; the
    contract's threshold preset and NMS; ``workers`` the CPU count.
    """
    if contract.ndim != 3:
        raise InvalidModelError(f"cube detection needs a 3D detector; this one is "
                                f"{contract.ndim}D")
    stride: Axes3 = contract.stride  # type: ignore[assignment]
    padded = tuple(round_up(max(int(n), 1), s) for n, s in zip(shape, stride, strict=True))
    w = _axes(window, (256, 128, 128), "window", minimum=1)
    w = tuple(min(round_up(v, s), p)  # type: ignore[assignment]
              for v, s, p in zip(w, stride, padded, strict=True))
    h = _axes(halo, contract.halo, "halo", minimum=0)  # type: ignore[arg-type]
    h = tuple(round_up(v, s) for v, s in zip(h, stride, strict=True))  # type: ignore[assignment]
    largest = contract.priors_array.max(axis=0)[::-1]        # (d, h, w) -> z, y, x
    dm: Axes3 = tuple(round_up(math.ceil(v), s)  # type: ignore[assignment]
                      for v, s in zip(largest, stride, strict=True))
    m = _axes(margin, dm, "margin", minimum=0)
    m = tuple(round_up(v, s) for v, s in zip(m, stride, strict=True))  # type: ignore[assignment]
    if isinstance(split_every, bool) or not isinstance(split_every, int) or split_every < 2:
        raise StreamdetValueError(f"split_every must be an integer >= 2, got {split_every!r}")
    n_workers = (os.cpu_count() or 1) if workers is None else int(workers)
    if n_workers < 1:
        raise StreamdetValueError(f"workers must be >= 1, got {workers!r}")
    iou = float(contract.nms["iou_threshold"] if iou_threshold is None else iou_threshold)
    if not 0.0 <= iou <= 1.0:
        raise StreamdetValueError(f"iou_threshold must be in [0, 1], got {iou_threshold!r}")
    kind: NMSKind = "iou" if contract.nms.get("kind") == "iou" else "diou"
    return CubeConfig(window=w, halo=h, margin=m,
                      threshold=resolve_threshold(contract, threshold), iou_threshold=iou,
                      nms_kind=kind, split_every=split_every, workers=n_workers,
                      measure=measure)


def plan_cube(shape: Sequence[int], cfg: CubeConfig, stride: Sequence[int]) -> list[Window]:
    """The windows of a cube: cores of ``cfg.window`` partitioning the stride-padded cube.

    Parameters
    ----------
    shape : (nz, ny, nx)
        Cube shape, voxels.
    cfg : CubeConfig
    stride : (sz, sy, sx)
        The model's grid stride.

    Returns
    -------
    list of Window
        In z-slab, y-row, x order; regions grown by ``cfg.reach`` and clipped.
    """
    padded = [round_up(max(int(n), 1), s) for n, s in zip(shape, stride, strict=True)]
    bounds = tuple(v for p in padded for v in (0, p))
    return plan_windows(bounds, core=cfg.window, halo=cfg.reach, stride=tuple(stride),
                        limit=bounds)


class _Reader:
    """Reads a region of the cube inside a task (not a dask collection: the graph holds
    no chunk of the cube, and nothing is read before the window's task runs)."""

    def __init__(self, arr: da.Array | NDArray[np.floating]) -> None:
        self.arr = arr

    def __call__(self, region: tuple[int, ...]) -> NDArray[np.float32]:
        z0, z1, y0, y1, x0, x1 = region
        shape = self.arr.shape
        part = self.arr[z0:min(z1, shape[0]), y0:min(y1, shape[1]), x0:min(x1, shape[2])]
        if isinstance(part, da.Array):
            out: NDArray[np.float32] = np.asarray(part.compute(scheduler="sync"), np.float32)
            return out
        return np.asarray(part, np.float32)


def _run(model: Model, batch: NDArray[np.float32]) -> NDArray[np.float32]:
    if model.threads == 1:
        return model.run(batch)
    with _RUN_LOCK:     # one multi-threaded pass at a time (the 2D engine's lock)
        return model.run(batch)


def detect_window3d(reader: _Reader, window: Window, model: Model, cfg: CubeConfig,
                    padded: Axes3) -> Detections:
    """Detections owned by one window (boxes in cube voxels), after the window's 3D NMS.

    Parameters
    ----------
    reader : callable
        Gives the voxels of a region (the part inside the cube), Jy/beam.
    window : Window
    model : Model
        A 3D detector.
    cfg : CubeConfig
    padded : (nz, ny, nx)
        The stride-padded cube shape.
    """
    c = model.contract
    names = c.param_names
    data = reader(window.region)
    rz, _, ry, _, rx, _ = window.region
    z0, z1, y0, y1, x0, x1 = window.core
    if skip_window(data[z0 - rz:z1 - rz, y0 - ry:y1 - ry, x0 - rx:x1 - rx]):
        return Detections.empty(names, ndim=3).with_chunk(window.index)
    buf = np.zeros(window.region_shape, np.float32)
    normalise(data, c, out=buf[:data.shape[0], :data.shape[1], :data.shape[2]])
    grid = _run(model, buf[None, None])
    del buf
    # the decoded cells: core grown by the margin, clipped to the padded cube
    m = cfg.margin
    dec = [(max(0, window.core[2 * a] - m[a]), min(padded[a], window.core[2 * a + 1] + m[a]))
           for a in range(3)]
    reg0 = (rz, ry, rx)
    s = c.stride
    sl = tuple(slice((lo - r) // st, (hi - r) // st)
               for (lo, hi), r, st in zip(dec, reg0, s, strict=True))
    cells = grid[(slice(None), slice(None), *sl)]
    dets = decode(cells, c, threshold=np.asarray(cfg.threshold, np.float64),
                  origins=np.array([dec[2][0], dec[1][0], dec[0][0]], np.float64))
    dets = nms_detections(dets, iou_threshold=cfg.iou_threshold, kind=cfg.nms_kind)
    region = pixel_core_region((x0, x1), (y0, y1), z_range=(z0, z1), image_shape=padded)
    mine = owned(dets, region)
    if cfg.measure is not None and len(mine):
        meas = measure_cube(data, (rz, ry, rx), mine, cfg.measure, limit=cfg.reach)
        mine = apply_measurements(mine, meas, cfg.measure)
    return mine.with_chunk(window.index)


def _tree(leaves: list[Delayed], cfg: CubeConfig) -> Delayed:
    """Merge neighbouring leaves ``split_every`` at a time until one remains."""
    level = leaves
    depth = 0
    while len(level) > 1:
        level = [delayed(merge, pure=True, name=f"cube-merge-{depth}-{k}")(
                     *level[k:k + cfg.split_every], iou_threshold=cfg.iou_threshold,
                     kind=cfg.nms_kind)
                 for k in range(0, len(level), cfg.split_every)]
        depth += 1
    if depth == 0:      # a single window: still one merge (canonical order), like the root
        return delayed(merge, pure=True)(*level, iou_threshold=cfg.iou_threshold,
                                         kind=cfg.nms_kind)
    return level[0]


def _as_cube(cube: CubeLike) -> tuple[da.Array | NDArray[np.floating], Image | None]:
    if isinstance(cube, Image):
        return cube.data.data, cube
    if isinstance(cube, str | os.PathLike):
        img = open_image(cube)
        return img.data.data, img
    arr = cube if isinstance(cube, da.Array) else np.asarray(cube)
    return arr, None


def _model(model: str | os.PathLike[str] | Model | None, *, img: Image | None,
           threads: int | None, device: str) -> Model:
    if model is None:
        freq = pixel = None
        if img is not None:
            pixel = img.pixel_scale_arcsec
            if COORD in img.data.coords:
                freq = float(np.median(np.asarray(img.data.coords[COORD].values)))
        model = default_model(freq_hz=freq, pixel_scale_arcsec=pixel, ndim=3)
    if isinstance(model, Model):
        if model.contract.ndim != 3:
            raise InvalidModelError(f"cube detection needs a 3D detector; {model!r} is "
                                    f"{model.contract.ndim}D")
        return model
    return load_model(model, ndim=3, threads=1 if threads is None else threads,
                      device=device)


def detect_cube_voxels(cube: CubeLike, *, model: str | os.PathLike[str] | Model | None,
                       window: int | Sequence[int] | None = None,
                       halo: int | Sequence[int] | None = None,
                       margin: int | Sequence[int] | None = None,
                       threshold: float | str | Sequence[float] | None = None,
                       iou_threshold: float | None = None, split_every: int = 8,
                       workers: int | None = None, threads: int | None = None,
                       device: str = "auto", client: Any = None,
                       worker_timeout: float = 120.0,
                       parts: str | os.PathLike[str] | None = None,
                       resume: bool = False,
                       measure: CubeMeasure | None = None) -> Detections:
    """Detect sources in a cube: 3D detections in voxels (no sky coordinates).

    Parameters
    ----------
    cube : path, Image, (nz, ny, nx) ndarray or dask array
        Jy/beam voxels, numpy order (channel, row, column).
    model : path or Model
        A 3D detector (contract ``ndim`` 3).
    window : int or (z, y, x), optional
        Window core, channels and px (default ``(256, 128, 128)``), rounded up to the
        stride. The result does not depend on it.
    halo, margin : int or (z, y, x), optional
        Context around the decoded cells and ring of decoded cells around each core
        (see :func:`configure`).
    threshold : float, sequence or str, optional
        Objectness threshold, one per prior, or a preset of the model (default
        ``"default"``).
    iou_threshold : float, optional
        3D NMS threshold (default: the contract's).
    split_every : int
        Fan-in of the tree reduction.
    workers : int, optional
        Windows in flight (threads), default the CPU count; with a ``client`` each
        worker runs as many as it has threads.
    threads : int, optional
        ONNX Runtime intra-op threads per forward pass (default 1).
    device : str
        Where the model runs (see :func:`streamdet.engine.contract.load_model`); with a
        ``client``, on the workers (the caller opens the model on its CPU, for the
        contract).
    client : distributed.Client, optional
        Run the windows and the tree reduction on this Dask cluster (each worker opens
        the model once); only the final detections come back. The result is the same
        as without it.
    worker_timeout : float
        With a ``client``: seconds without any worker before the run is abandoned.
    parts : path-like, optional
        A directory where each window's detections are written as it finishes (one
        file per window, atomically), with the run's fingerprint (model bytes, device,
        input, options); removed by the caller once the catalogue is written.
    resume : bool
        Reuse the windows already in ``parts`` and compute only the others; parts of
        another model, input or option are refused (``PartsMismatchError``).
    measure : CubeMeasure, optional
        The cube's beam, channels and pixels: measure each detection's line flux, PA
        and HI size on the voxels (see :func:`cube_geometry`); default: keep the
        network's values.

    Returns
    -------
    Detections
        Boxes ``(N, 6)`` ``[x0, y0, z0, x1, y1, z1]`` in voxels of the whole cube, in
        the merge's canonical order (objectness descending), tagged with their window.
    """
    arr, img = _as_cube(cube)
    if arr.ndim != 3:
        raise StreamdetValueError(f"a cube must have 3 axes (channel, y, x), got shape "
                                  f"{arr.shape}")
    m = _model(model, img=img, threads=threads, device=_here(device, client) or "auto")
    cfg = configure(m.contract, arr.shape, window=window, halo=halo, margin=margin,
                    threshold=threshold, iou_threshold=iou_threshold,
                    split_every=split_every, workers=workers, measure=measure)
    run_parts = _parts(arr, img, m, cfg, parts=parts, resume=resume, device=device,
                       client=client)
    return _compute(arr, m, cfg, client=client, device=device, worker_timeout=worker_timeout,
                    parts=run_parts)


def _window_saved(writer: PartWriter, reader: _Reader, window: Window, model: Model,
                  cfg: CubeConfig, padded: Axes3) -> Detections:
    """:func:`detect_window3d`, its result also written (atomically) as the window's part."""
    dets = detect_window3d(reader, window, model, cfg, padded)
    writer.save(window.index, dets)
    return dets


def _parts_of(arr: da.Array | NDArray[np.floating], img: Image | None, model: Model,
              cfg: CubeConfig, *, parts: str | os.PathLike[str], resume: bool,
              device: str | None, client: Any) -> Parts:
    """The run's parts directory, checked against its fingerprint (model bytes, device,
    input identity, every option)."""
    from .detect import _device_of

    darr = arr if isinstance(arr, da.Array) else da.from_array(np.asarray(arr))
    header = img.header.tostring() if img is not None and img.header is not None else None
    stamp = fingerprint(
        model_path=model.path, options={"cube": cfg},
        device=_device_of(model) if client is None else f"{device or model.device} "
        "(on the workers)",
        input_id=input_identity(darr, path=img.path if img is not None else None,
                                header=header))
    return Parts(parts, stamp, resume=resume)


def _parts(arr: da.Array | NDArray[np.floating], img: Image | None, model: Model,
           cfg: CubeConfig, *, parts: str | os.PathLike[str] | None, resume: bool,
           device: str | None, client: Any) -> Parts | None:
    if parts is None:
        if resume:
            raise StreamdetValueError("resume needs parts: the directory of the per-window "
                                      "results to resume from")
        return None
    return _parts_of(arr, img, model, cfg, parts=parts, resume=resume, device=device,
                     client=client)


def _compute(arr: da.Array | NDArray[np.floating], model: Model, cfg: CubeConfig, *,
             client: Any = None, device: str | None = None, worker_timeout: float = 120.0,
             parts: Parts | None = None) -> Detections:
    stride = model.contract.stride
    padded: Axes3 = tuple(round_up(max(int(n), 1), s)  # type: ignore[assignment]
                          for n, s in zip(arr.shape, stride, strict=True))
    windows = plan_cube(arr.shape, cfg, stride)
    reader = _Reader(arr)
    task_model = model
    if client is not None:      # each worker opens one session, shared by its tasks
        from ._cluster import shared_model

        task_model = shared_model(model, device=device)
    if parts is None:
        leaves = [delayed(detect_window3d, pure=True, name=f"cube-window-{w.index}")(
                      reader, w, task_model, cfg, padded) for w in windows]
    else:   # finished windows are read back; the others computed and saved
        done = parts.done()
        w_ = parts.writer
        leaves = [delayed(w_.load, pure=True, name=f"cube-part-{w.index}")(w.index)
                  if w.index in done else
                  delayed(_window_saved, pure=True, name=f"cube-window-{w.index}")(
                      w_, reader, w, task_model, cfg, padded) for w in windows]
    root = _tree(leaves, cfg)
    if client is not None:      # the tree runs on the workers; only the root comes back
        from ._cluster import compute

        result: Detections = compute(client, root, worker_timeout=worker_timeout)
        return result
    (out,) = dask.compute(root, scheduler="threads", num_workers=cfg.workers)
    result = out
    return result


def cube_geometry(img: Image, contract: ModelContract) -> CubeMeasure | None:
    """The measurement's view of a cube: beam, pixel and channels from its header.

    The beam is the header's ``BMAJ`` (else the model's training beam), the pixel side
    the WCS's (else the model's), the channels the spectral coordinate of the planes.
    None when the cube has no spectral coordinate (nothing to measure velocities on).
    """
    if COORD not in img.data.coords:
        return None
    freq = np.asarray(img.data.coords[COORD].values, np.float64)
    if freq.size < 2 or not np.all(np.isfinite(freq[:2])) or freq[1] == freq[0]:
        return None
    pixel = img.pixel_scale_arcsec or contract.pixel_scale_arcsec
    beam_arcsec = (float(img.beam[0]) * 3600.0 if img.beam is not None
                   else contract.beam_arcsec[0] if contract.beam_arcsec else None)
    if not pixel or not beam_arcsec:
        return None
    return CubeMeasure(pixel_arcsec=float(pixel), beam_fwhm_arcsec=float(beam_arcsec),
                       freq0_hz=float(freq[0]), freq_step_hz=float(freq[1] - freq[0]))


def _check_channel(contract: ModelContract, img: Image | None) -> None:
    if img is None or img.wcs is None or contract.channel_hz is None or img.wcs.wcs.spec < 0:
        return
    spec = img.wcs.sub([img.wcs.wcs.spec + 1])
    dnu = abs(float(spec.pixel_scale_matrix[0, 0]))
    if dnu > 0 and abs(dnu / contract.channel_hz - 1.0) > 0.01:
        warnings.warn(f"the cube's channels are {dnu:.6g} Hz wide, the model was trained on "
                      f"{contract.channel_hz:.6g} Hz: its line widths in channels differ",
                      ChannelWidthWarning, stacklevel=3)


def detect_cube(store: CubeLike, *, model: str | os.PathLike[str] | Model | None = None,
                window: int | Sequence[int] | None = None,
                halo: int | Sequence[int] | None = None,
                margin: int | Sequence[int] | None = None,
                threshold: float | str | Sequence[float] | None = None,
                iou_threshold: float | None = None, split_every: int = 8,
                workers: int | None = None, threads: int | None = None,
                device: str = "auto", client: Any = None, worker_timeout: float = 120.0,
                parts: str | os.PathLike[str] | None = None, resume: bool = False,
                measure: bool = True, pixel_scale_arcsec: float | None = None) -> Table:
    """Detect HI sources in a cube and return their SDC2 catalogue (with voxel columns).

    Parameters
    ----------
    store : path, Image, ndarray or dask array
        A Zarr store written by ``convert`` (or a FITS cube): Jy/beam, axes RA, Dec,
        FREQ; an array has no WCS and is refused (use :func:`detect_cube_voxels`).
    model : path or Model, optional
        A 3D detector; default: the bundled 3D model that fits the cube's band and pixel
        scale (see :func:`streamdet.models.default_model`).
    window, halo, margin, threshold, iou_threshold, split_every, workers, threads, device
        As :func:`detect_cube_voxels`.
    client, worker_timeout
        As :func:`detect_cube_voxels`: a Dask cluster to run on.
    parts, resume
        As :func:`detect_cube_voxels`: per-window results on disk, and resuming from them.
    measure : bool
        Measure the line flux, PA and HI size of each detection on the cube's voxels
        (:mod:`streamdet.engine._measure3d`; the geometry from the cube's header, see
        :func:`cube_geometry`); ``False`` keeps the network's values.
    pixel_scale_arcsec : float, optional
        Pixel side for box-derived sizes (default: from the WCS).

    Returns
    -------
    astropy.table.Table
        :func:`streamdet.catalogue.outputs.cube_table`: ``id ra dec hi_size line_flux_integral
        central_freq pa i w20`` (deg, deg, arcsec, Jy Hz, Hz, deg, deg, km/s), then
        ``redshift``, voxel positions and boxes, objectness. ``meta`` records the
        model, the window geometry and the cube.

    Raises
    ------
    InvalidModelError
        No model given and no bundled 3D model fits the cube, or a 2D model.
    WCSMissingError
        The cube has no celestial or FREQ axis.
    """
    arr, img = _as_cube(store)
    if img is None:
        raise StreamdetValueError("detect_cube needs a store or FITS cube with a WCS; "
                                  "for a bare array use detect_cube_voxels")
    if arr.ndim != 3:
        raise StreamdetValueError(f"{img.path} is not a cube (shape {arr.shape}); use "
                                  "streamdet.detect for images")
    m = _model(model, img=img, threads=threads, device=_here(device, client) or "auto")
    _check_channel(m.contract, img)
    geom = cube_geometry(img, m.contract) if measure else None
    cfg = configure(m.contract, arr.shape, window=window, halo=halo, margin=margin,
                    threshold=threshold, iou_threshold=iou_threshold,
                    split_every=split_every, workers=workers, measure=geom)
    run_parts = _parts(arr, img, m, cfg, parts=parts, resume=resume, device=device,
                       client=client)
    dets = _compute(arr, m, cfg, client=client, device=device, worker_timeout=worker_timeout,
                    parts=run_parts)
    table = cube_table(dets, wcs=img.wcs, pixel_scale_arcsec=pixel_scale_arcsec)
    meta: dict[str, Any] = {
        "input": str(img.path), "shape": list(arr.shape), "model": str(m.path),
        "model_name": m.contract.name, "window": list(cfg.window), "halo": list(cfg.halo),
        "margin": list(cfg.margin), "threshold": cfg.threshold,
        "iou_threshold": cfg.iou_threshold, "nms_kind": cfg.nms_kind,
        "measured": geom is not None,
    }
    table.meta.update(meta)
    return table
