"""Open images lazily (a Zarr store from :func:`streamdet.convert`, or a FITS file) and
describe them.

:func:`open_image` never loads pixels: it returns an :class:`Image` whose ``data`` is a
dask-backed :class:`xarray.DataArray` with dims ``("y", "x")`` or ``("freq", "y", "x")``.
A FITS file is read block by block at computed offsets (no memory map, so reading a
large file does not grow the resident set). :func:`info` describes a store (or a FITS
file) without reading pixels.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import xarray as xr
from astropy.io import fits
from astropy.wcs import WCS
from astropy.wcs.utils import proj_plane_pixel_scales
from dask.base import tokenize
from numpy.typing import NDArray

from ..errors import (
    IncompleteStoreError,
    StreamdetFileNotFoundError,
    StreamdetValueError,
    StreamdetWarning,
)
from ._fits import FitsImage, read_block, scan_fits, sky_metadata
from ._zarrstore import (
    ARRAY,
    COORD,
    DEFAULT_CHUNKS_CUBE,
    DEFAULT_CHUNKS_IMAGE,
    load_progress,
    open_array,
    read_coord,
    read_meta,
    shape_spec,
    stored_bytes,
    wcs_from_meta,
)

__all__ = [
    "Image",
    "NoCelestialWCSWarning",
    "StoreInfo",
    "info",
    "open_image",
]


class NoCelestialWCSWarning(StreamdetWarning):
    """An image has no celestial WCS: results stay in pixel coordinates."""


Beam = tuple[float, float, float]


@dataclass(frozen=True, eq=False)
class Image:
    """A lazily loaded image or cube with its sky metadata.

    Attributes
    ----------
    data : xarray.DataArray
        Dask-backed float32 pixels, dims ``("y", "x")`` or ``("freq", "y", "x")``; for a
        cube along a spectral axis, coordinate ``freq`` holds each plane's world
        coordinate (Hz for FREQ).
    wcs : astropy.wcs.WCS or None
        Celestial WCS (pixel axes x, y), plus the spectral axis for a cube (x, y, freq);
        None when the image has none.
    header : astropy.io.fits.Header
        The full FITS header of the converted HDU.
    beam : tuple of float or None
        Restoring beam (bmaj, bmin, bpa), degrees.
    freq_hz : float or None
        Frequency of a 2-D image (from its degenerate FREQ axis), Hz; None for cubes
        (see ``data.freq``) and when unknown.
    bunit : str or None
        Brightness unit (BUNIT), e.g. ``"JY/BEAM"``.
    path : pathlib.Path
        The store or FITS file.
    complete : bool
        False only for an incomplete store opened with ``allow_incomplete=True``.
    """

    data: xr.DataArray
    wcs: WCS | None
    header: fits.Header
    beam: Beam | None
    freq_hz: float | None
    bunit: str | None
    path: Path
    complete: bool = True

    @property
    def shape(self) -> tuple[int, ...]:
        """Array shape, ``(ny, nx)`` or ``(nfreq, ny, nx)``."""
        return tuple(int(n) for n in self.data.shape)

    @property
    def dims(self) -> tuple[str, ...]:
        """Dimension names."""
        return tuple(str(d) for d in self.data.dims)

    @property
    def celestial_wcs(self) -> WCS | None:
        """The 2-D celestial part of :attr:`wcs` (pixel axes x, y), or None."""
        return None if self.wcs is None else self.wcs.celestial

    @property
    def pixel_scale_arcsec(self) -> float | None:
        """Pixel side, arcsec (geometric mean of the two axes), or None without WCS."""
        cel = self.celestial_wcs
        if cel is None:
            return None
        sx, sy = proj_plane_pixel_scales(cel)
        return float(math.sqrt(abs(sx * sy)) * 3600.0)

    @property
    def beam_arcsec(self) -> Beam | None:
        """Restoring beam (bmaj arcsec, bmin arcsec, bpa deg), or None."""
        if self.beam is None:
            return None
        return (self.beam[0] * 3600.0, self.beam[1] * 3600.0, self.beam[2])


class _FitsArray:
    """Array-like over a FITS image HDU for :func:`dask.array.from_array`: each slice is
    read from the file on demand."""

    def __init__(self, img: FitsImage) -> None:
        self.img = img
        self.shape = img.shape
        self.ndim = len(img.shape)
        self.dtype = np.dtype(np.float32)

    def __getitem__(self, key: tuple[slice, ...]) -> NDArray[np.float32]:
        if not isinstance(key, tuple):
            key = (key,)
        region = []
        for k, n in zip(key, self.shape, strict=True):
            if not isinstance(k, slice):
                raise StreamdetValueError(f"FITS blocks are read by slices, got {k!r}")
            start, stop, step = k.indices(n)
            if step != 1:
                raise StreamdetValueError(f"FITS blocks are read with step 1, got {k!r}")
            region.append((start, max(start, stop)))
        return read_block(self.img, tuple(region))

    def __dask_tokenize__(self) -> Any:
        img = self.img
        return (str(img.path.resolve()), img.hdu, img.file_size, img.mtime_ns)


def _dask_chunks(shape: tuple[int, ...], chunks: int | Sequence[int] | None,
                 default: tuple[int, ...]) -> tuple[int, ...]:
    req = default if chunks is None else shape_spec(chunks, "chunks", shape, default[:-2])
    return tuple(min(c, n) for c, n in zip(req, shape, strict=True))


def _open_store(p: Path, chunks: int | Sequence[int] | None, allow_incomplete: bool) -> Image:
    meta = read_meta(p)
    if not meta.complete and not allow_incomplete:
        raise IncompleteStoreError(f"store {str(p)!r} is incomplete ({_progress_text(p)}); "
                                   "run streamdet convert again to finish it")
    array = open_array(p)
    dchunks = _dask_chunks(meta.shape, chunks, meta.chunks)
    data = da.from_zarr(array, chunks=dchunks)
    coord = read_coord(p) if len(meta.dims) == 3 else None
    coords = {COORD: coord} if coord is not None else {}
    attrs = {"units": meta.bunit} if meta.bunit else {}
    return Image(data=xr.DataArray(data, dims=meta.dims, coords=coords, name=ARRAY, attrs=attrs),
                 wcs=wcs_from_meta(meta), header=meta.header, beam=meta.beam,
                 freq_hz=meta.freq_hz, bunit=meta.bunit, path=p, complete=meta.complete)


#: Dask chunks of a FITS cube opened directly (freq, y, x): 16 MiB pieces, whole multiples of
#: the Zarr cube chunks (``DEFAULT_CHUNKS_CUBE``, 1 MiB, sized for reading 3D windows from a
#: store), so that a large FITS cube does not become a graph of millions of 1 MiB tasks.
_FITS_CHUNKS_CUBE = tuple(4 * c if i else c for i, c in enumerate(DEFAULT_CHUNKS_CUBE))


def _open_fits(p: Path, chunks: int | Sequence[int] | None, hdu: int | None) -> Image:
    img = scan_fits(p, hdu=hdu)
    sky = sky_metadata(img)
    dchunks = _dask_chunks(img.shape, chunks,
                           _FITS_CHUNKS_CUBE if len(img.shape) == 3 else DEFAULT_CHUNKS_IMAGE)
    reader = _FitsArray(img)
    data = da.from_array(reader, chunks=dchunks, lock=False, asarray=False, fancy=False,
                         meta=np.empty((0,) * len(img.shape), np.float32),
                         name=f"fits-{tokenize(reader)}")
    coords: dict[str, Any] = {}
    if sky.channels is not None:
        coords[COORD] = xr.Variable((COORD,), sky.channels,
                                    attrs={"units": sky.channel_unit} if sky.channel_unit else {})
    attrs = {"units": sky.bunit} if sky.bunit else {}
    return Image(data=xr.DataArray(data, dims=img.dims, coords=coords, name=ARRAY, attrs=attrs),
                 wcs=sky.wcs, header=img.header, beam=sky.beam, freq_hz=sky.freq_hz,
                 bunit=sky.bunit, path=p, complete=True)


def open_image(path: str | os.PathLike[str], *, chunks: int | Sequence[int] | None = None,
               hdu: int | None = None, allow_incomplete: bool = False) -> Image:
    """Open a Zarr store written by :func:`streamdet.convert`, or a FITS file, lazily.

    Parameters
    ----------
    path : path-like
        Zarr store (directory) or uncompressed FITS file.
    chunks : int or tuple of int, optional
        Dask chunks: spatial side (px) or full shape; default the store's chunks, or for
        FITS 1024 x 1024 (images) and 64 x 256 x 256 (cubes).
    hdu : int, optional
        FITS only: HDU index; default the first HDU holding image data.
    allow_incomplete : bool
        Open an incomplete store (unwritten chunks read as NaN).

    Returns
    -------
    Image

    Raises
    ------
    StreamdetFileNotFoundError
        ``path`` does not exist.
    IncompleteStoreError
        The store is incomplete and ``allow_incomplete`` is False.
    InvalidFITSError, StreamdetValueError
        Unusable FITS file, or a directory that is not a streamdet store.
    """
    p = Path(path)
    if not p.exists():
        raise StreamdetFileNotFoundError(f"input {str(p)!r} does not exist")
    if p.is_dir():
        return _open_store(p, chunks, allow_incomplete)
    return _open_fits(p, chunks, hdu)


@dataclass(frozen=True)
class StoreInfo:
    """A description of a store (or a FITS file), read without loading pixels.

    Attributes
    ----------
    path : pathlib.Path
        The store or file.
    kind : str
        ``"zarr"`` or ``"fits"``.
    complete : bool
        Whether the store was written to the end (always True for FITS).
    shape : tuple of int
        ``(ny, nx)`` or ``(nfreq, ny, nx)``.
    dims : tuple of str
        Dimension names.
    dtype : str
        Pixel type as read (``"float32"``).
    chunks, shards : tuple of int or None
        Zarr chunk and shard shapes (None for FITS / unsharded).
    codec : str or None
        Zarr compression.
    hdu : int
        FITS HDU (converted, or that would be read).
    has_celestial_wcs : bool
        Whether a celestial WCS is known.
    wcs_summary : str
        Projection, reference point and pixel scale, or ``"no celestial WCS"``.
    beam : tuple of float or None
        (bmaj, bmin, bpa), degrees.
    freq_hz : float or None
        Frequency of a 2-D image, Hz.
    bunit : str or None
        Brightness unit.
    blocks_done, blocks_total : int or None
        Write-blocks finished and in all, for an incomplete store.
    source : str or None
        FITS file a store was converted from.
    stored_bytes : int
        Size on disk, bytes.
    """

    path: Path
    kind: str
    complete: bool
    shape: tuple[int, ...]
    dims: tuple[str, ...]
    dtype: str
    chunks: tuple[int, ...] | None
    shards: tuple[int, ...] | None
    codec: str | None
    hdu: int
    has_celestial_wcs: bool
    wcs_summary: str
    beam: Beam | None
    freq_hz: float | None
    bunit: str | None
    blocks_done: int | None
    blocks_total: int | None
    source: str | None
    stored_bytes: int

    def summary(self) -> str:
        """Several lines for humans."""
        what = "Zarr store" if self.kind == "zarr" else f"FITS file (HDU {self.hdu})"
        if self.kind == "fits":
            state = "readable"
        elif self.complete:
            state = "complete"
        else:
            state = (f"INCOMPLETE ({self.blocks_done or 0}/{self.blocks_total or '?'} blocks "
                     "written; run streamdet convert again to finish)")
        lines = [f"{self.path}: {what}, {state}",
                 f"  shape     {' x '.join(map(str, self.shape))} {self.dtype} "
                 f"({', '.join(self.dims)})"]
        if self.kind == "zarr":
            chunks = "x".join(map(str, self.chunks or ()))
            shards = "x".join(map(str, self.shards)) if self.shards else "none"
            lines.append(f"  chunks    {chunks}, shards {shards}, codec {self.codec}, "
                         f"{self.stored_bytes / 1e6:.1f} MB on disk")
            if self.source:
                lines.append(f"  source    {self.source} (HDU {self.hdu})")
        else:
            lines.append(f"  size      {self.stored_bytes / 1e6:.1f} MB")
        lines.append(f"  wcs       {self.wcs_summary}")
        if self.beam is not None:
            lines.append(f"  beam      {self.beam[0] * 3600:.4g}\" x {self.beam[1] * 3600:.4g}\" "
                         f"PA {self.beam[2]:.4g} deg")
        else:
            lines.append("  beam      unknown")
        if self.freq_hz is not None:
            lines.append(f"  freq      {self.freq_hz / 1e6:.6g} MHz")
        if self.bunit:
            lines.append(f"  bunit     {self.bunit}")
        return "\n".join(lines)


def _wcs_summary(wcs: WCS | None) -> str:
    if wcs is None:
        return "no celestial WCS"
    cel = wcs.celestial
    ctype = "/".join(str(c) for c in cel.wcs.ctype)
    lon, lat = (float(v) for v in cel.wcs.crval)
    px, py = (float(v) for v in cel.wcs.crpix)
    sx, sy = proj_plane_pixel_scales(cel)
    text = (f"{ctype}, reference ({lon:.6f}, {lat:.6f}) deg at pixel ({px:g}, {py:g}) "
            f"(1-based), pixel {abs(sx) * 3600:.4g}\" x {abs(sy) * 3600:.4g}\"")
    if wcs.naxis == 3 and wcs.wcs.spec >= 0:
        spec = wcs.sub([wcs.wcs.spec + 1])
        text += (f"; spectral {spec.wcs.ctype[0]} {spec.wcs.crval[0]:.6g} {spec.wcs.cunit[0]} "
                 f"at plane {spec.wcs.crpix[0]:g}, step {spec.wcs.cdelt[0]:.6g}")
    return text


def _progress_text(path: Path) -> str:
    done, total = load_progress(path)
    return f"{len(done)}/{total if total else '?'} blocks written"


def info(path: str | os.PathLike[str], *, hdu: int | None = None) -> StoreInfo:
    """Describe a Zarr store written by :func:`streamdet.convert`, or a FITS file.

    Parameters
    ----------
    path : path-like
        Store directory or FITS file.
    hdu : int, optional
        FITS only: HDU index; default the first HDU holding image data.

    Returns
    -------
    StoreInfo

    Raises
    ------
    StreamdetFileNotFoundError, InvalidFITSError, StreamdetValueError
        Missing path, unusable FITS file, or a directory that is not a streamdet store.
    """
    p = Path(path)
    if not p.exists():
        raise StreamdetFileNotFoundError(f"input {str(p)!r} does not exist")
    if p.is_dir():
        meta = read_meta(p)
        wcs = wcs_from_meta(meta)
        done, total = load_progress(p) if not meta.complete else (set(), None)
        return StoreInfo(
            path=p, kind="zarr", complete=meta.complete, shape=meta.shape, dims=meta.dims,
            dtype="float32", chunks=meta.chunks, shards=meta.shards, codec=meta.codec,
            hdu=meta.hdu, has_celestial_wcs=wcs is not None, wcs_summary=_wcs_summary(wcs),
            beam=meta.beam, freq_hz=meta.freq_hz, bunit=meta.bunit,
            blocks_done=None if meta.complete else len(done),
            blocks_total=None if meta.complete else total,
            source=str(meta.source.get("path")), stored_bytes=stored_bytes(p))
    img = scan_fits(p, hdu=hdu)
    sky = sky_metadata(img)
    return StoreInfo(
        path=p, kind="fits", complete=True, shape=img.shape, dims=img.dims, dtype="float32",
        chunks=None, shards=None, codec=None, hdu=img.hdu, has_celestial_wcs=sky.wcs is not None,
        wcs_summary=_wcs_summary(sky.wcs), beam=sky.beam, freq_hz=sky.freq_hz, bunit=sky.bunit,
        blocks_done=None, blocks_total=None, source=None, stored_bytes=img.file_size)
