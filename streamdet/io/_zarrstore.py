"""Private layout of the Zarr v3 stores written by :func:`streamdet.convert`.

A store is a Zarr v3 group holding:

- ``image``: float32 array, dims ``(y, x)`` or ``(freq, y, x)`` (``dimension_names``), fill
  value NaN, attribute ``units`` (BUNIT);
- ``freq`` (cubes with a spectral axis only): the world coordinate of each plane, attribute
  ``units``, so ``xarray.open_zarr`` shows it as a coordinate;
- group attributes: ``streamdet_complete`` (true only once every block is written),
  ``streamdet_format``, ``streamdet_version``, ``streamdet_convert`` (shape, dims, chunks,
  shards, codec, write-block shape, HDU), ``streamdet_source`` (the FITS file's path, size,
  mtime), ``fits_header`` (the full header, one card per line), ``wcs`` (celestial, plus
  spectral for cubes, as header cards), ``beam`` (degrees), ``freq_hz``, ``bunit``;
- while a conversion is unfinished, ``streamdet-progress.json``: the write-blocks done so far.

Crash safety: a store is built (group, arrays, progress file) in a hidden directory beside
its path, ``.NAME.creating-PID``, and renamed onto the path only when whole, so a store at
its path always has its ``image`` array; a store is removed by renaming it to
``.NAME.removing-PID`` first. Either kind left by a killed process is deleted by the next
conversion of the same path (:func:`remove_stale_siblings`). The completeness attribute is
the last metadata written.

Metadata is consolidated when the store is completed, so ``xarray.open_zarr(store)`` opens it
without warnings.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr
import zarr
from astropy.io import fits
from astropy.wcs import WCS
from numpy.typing import NDArray
from zarr.codecs import BloscCodec, BloscShuffle, ZstdCodec

from .._version import __version__
from ..errors import IncompleteStoreError, StreamdetFileNotFoundError, StreamdetValueError
from ._fits import wcs_from_cards

__all__ = [
    "ARRAY",
    "CODECS",
    "COMPLETE",
    "COORD",
    "DEFAULT_CHUNKS_CUBE",
    "DEFAULT_CHUNKS_IMAGE",
    "FORMAT",
    "PROGRESS",
    "StoreMeta",
    "create_store",
    "finish_store",
    "is_zarr_store",
    "load_progress",
    "open_array",
    "read_coord",
    "read_meta",
    "remove_partials",
    "remove_stale_siblings",
    "remove_store",
    "save_progress",
    "shape_spec",
    "stored_bytes",
    "structure_problem",
    "wcs_from_meta",
]

ARRAY = "image"
COORD = "freq"
COMPLETE = "streamdet_complete"
FORMAT = 1
PROGRESS = "streamdet-progress.json"
CODECS = ("zstd", "blosc", "none")
DEFAULT_CHUNKS_IMAGE = (1024, 1024)
DEFAULT_CHUNKS_CUBE = (64, 64, 64)  # (freq, y, x): suits 3D windows, see docs/cube_chunks.md
ZSTD_LEVEL = 1  # zstd level 1: ~1.3 GB/s/core on noise-like float32, ratio within 1% of level 3
_PARTIAL = re.compile(r"\.[0-9a-f]{32}\.partial$")  # zarr LocalStore's temporary files
_CREATING = "creating"  # .NAME.creating-PID: a store being built, renamed onto NAME when whole
_REMOVING = "removing"  # .NAME.removing-PID: a store being deleted


def _compressors(codec: str) -> Any:
    if codec == "zstd":
        return [ZstdCodec(level=ZSTD_LEVEL)]
    if codec == "blosc":
        # lz4 with bit shuffle: on noise-dominated float32 maps it compresses better than
        # zstd (1.14x vs 1.08x on a simulated SDC1 field) and decompresses 2x faster
        return [BloscCodec(cname="lz4", clevel=5, shuffle=BloscShuffle.bitshuffle, typesize=4)]
    if codec == "none":
        return None
    raise StreamdetValueError(f"codec must be one of {', '.join(CODECS)}; got {codec!r}")


@dataclass(frozen=True)
class StoreMeta:
    """What :func:`streamdet.convert` recorded in a store.

    Attributes
    ----------
    path : pathlib.Path
        The store.
    complete : bool
        Whether every block was written.
    shape, dims, chunks : tuple
        Array shape (numpy order), dimension names, chunk shape.
    shards : tuple of int or None
        Shard shape, or None.
    codec : str
        ``"zstd"``, ``"blosc"`` or ``"none"``.
    block : tuple of int
        Write-block shape (whole shards, or whole chunks when unsharded).
    hdu : int
        FITS HDU converted.
    source : dict
        ``path``, ``size``, ``mtime_ns`` of the FITS file.
    header : astropy.io.fits.Header
        The full FITS header of the HDU.
    wcs_cards : dict or None
        WCS header cards (celestial, plus spectral for cubes).
    beam : tuple of float or None
        (bmaj, bmin, bpa) in degrees.
    freq_hz : float or None
        Frequency of a 2-D image, Hz.
    bunit : str or None
        Brightness unit.
    """

    path: Path
    complete: bool
    shape: tuple[int, ...]
    dims: tuple[str, ...]
    chunks: tuple[int, ...]
    shards: tuple[int, ...] | None
    codec: str
    block: tuple[int, ...]
    hdu: int
    source: dict[str, Any]
    header: fits.Header
    wcs_cards: dict[str, Any] | None
    beam: tuple[float, float, float] | None
    freq_hz: float | None
    bunit: str | None


def is_zarr_store(path: Path) -> bool:
    """True when ``path`` is a directory holding a Zarr v3 root (``zarr.json``)."""
    return path.is_dir() and (path / "zarr.json").is_file()


def read_meta(path: str | os.PathLike[str]) -> StoreMeta:
    """Read a store's streamdet attributes.

    Raises
    ------
    StreamdetFileNotFoundError
        ``path`` does not exist.
    StreamdetValueError
        ``path`` is not a Zarr store written by streamdet.
    """
    p = Path(path)
    if not p.exists():
        raise StreamdetFileNotFoundError(f"store {str(p)!r} does not exist")
    if not is_zarr_store(p):
        raise StreamdetValueError(f"{str(p)!r} is not a Zarr v3 store (no zarr.json)")
    try:
        attrs = json.loads((p / "zarr.json").read_text())["attributes"]
        if attrs.get("streamdet_format") != FORMAT:
            raise KeyError("streamdet_format")
        conv = attrs["streamdet_convert"]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            header = fits.Header.fromstring(attrs["fits_header"], sep="\n")
        beam = attrs.get("beam")
        return StoreMeta(
            path=p, complete=bool(attrs.get(COMPLETE, False)), shape=tuple(conv["shape"]),
            dims=tuple(conv["dims"]), chunks=tuple(conv["chunks"]),
            shards=tuple(conv["shards"]) if conv["shards"] else None, codec=str(conv["codec"]),
            block=tuple(conv["block"]), hdu=int(conv["hdu"]),
            source=dict(attrs["streamdet_source"]),
            header=header, wcs_cards=attrs.get("wcs"),
            beam=(float(beam["bmaj_deg"]), float(beam["bmin_deg"]), float(beam["bpa_deg"]))
            if beam else None,
            freq_hz=attrs.get("freq_hz"), bunit=attrs.get("bunit"))
    except (KeyError, TypeError, ValueError) as exc:
        raise StreamdetValueError(f"{str(p)!r} is a Zarr store but not one written by "
                                  f"streamdet convert (bad or missing attribute: {exc})") from None


def shape_spec(value: int | Sequence[int], name: str, shape: tuple[int, ...],
              default_lead: tuple[int, ...]) -> tuple[int, ...]:
    """An int (spatial side, ``default_lead`` before it) or a full tuple -> a full tuple of
    positive ints with one entry per axis of ``shape``."""
    if isinstance(value, int | np.integer) and not isinstance(value, bool):
        out = (*default_lead, int(value), int(value))
    elif isinstance(value, Sequence) and not isinstance(value, str):
        out = tuple(value)
    else:
        raise StreamdetValueError(f"{name} must be an int or a tuple of ints, got {value!r}")
    if len(out) != len(shape):
        raise StreamdetValueError(f"{name} {value!r} has {len(out)} axes; the array has "
                                  f"{len(shape)} (shape {shape})")
    if not all(isinstance(v, int | np.integer) and not isinstance(v, bool) and v >= 1
               for v in out):
        raise StreamdetValueError(f"{name} must be positive integers, got {value!r}")
    return tuple(int(v) for v in out)


def read_coord(path: Path) -> xr.Variable | None:
    """The ``freq`` coordinate of a cube store, or None."""
    root = zarr.open_group(path, mode="r", zarr_format=3)
    if COORD not in root:
        return None
    coord = root[COORD]
    if not isinstance(coord, zarr.Array):
        return None
    return xr.Variable((COORD,), np.asarray(coord[:]), attrs=dict(coord.attrs))


def wcs_from_meta(meta: StoreMeta) -> WCS | None:
    """The stored WCS (celestial, plus spectral for cubes), sized to the array; or None."""
    return None if not meta.wcs_cards else wcs_from_cards(meta.wcs_cards, shape=meta.shape)


_ACTIVE: set[str] = set()  # names of the sibling directories this process is using now


def _sibling(path: Path, kind: str) -> Path:
    return path.parent / f".{path.name}.{kind}-{os.getpid()}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by another user
        return True
    return True


def remove_stale_siblings(path: Path, *, all_stale: bool = False) -> list[Path]:
    """Delete the ``.NAME.creating-PID`` / ``.NAME.removing-PID`` directories beside ``path``
    left by killed or interrupted processes (those whose PID is not running, or with
    ``all_stale``, for a caller holding the store's lock, every one not in use by this
    process); return them."""
    parent = path.parent if str(path.parent) else Path(".")
    removed: list[Path] = []
    prefixes = tuple(f".{path.name}.{kind}-" for kind in (_CREATING, _REMOVING))
    try:
        names = os.listdir(parent)
    except OSError:
        return removed
    for name in names:
        prefix = next((p for p in prefixes if name.startswith(p)), None)
        if prefix is None or not name[len(prefix):].isdigit():
            continue
        pid = int(name[len(prefix):])
        victim = parent / name
        if str(victim.absolute()) in _ACTIVE or (
                not all_stale and pid != os.getpid() and _pid_alive(pid)):
            continue
        if victim.is_dir() and not victim.is_symlink():
            shutil.rmtree(victim, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                victim.unlink()
        removed.append(victim)
    return removed


def remove_store(path: Path) -> None:
    """Delete a store directory: rename it aside first (one atomic step), then delete it, so
    a kill part-way never leaves a half-deleted store at ``path``."""
    trash = _sibling(path, _REMOVING)
    _ACTIVE.add(str(trash.absolute()))
    try:
        if trash.exists():
            shutil.rmtree(trash)
        os.rename(path, trash)
        shutil.rmtree(trash)
    finally:
        _ACTIVE.discard(str(trash.absolute()))


def create_store(path: Path, *, shape: tuple[int, ...], dims: tuple[str, ...],
                 chunks: tuple[int, ...], shards: tuple[int, ...] | None, codec: str,
                 attrs: dict[str, Any], bunit: str | None,
                 channels: NDArray[np.float64] | None, channel_unit: str | None,
                 n_blocks: int) -> None:
    """Create an empty, incomplete store (group, ``image`` array, ``freq`` coordinate, a
    progress file with none of its ``n_blocks`` write-blocks done).

    The store is built in ``.NAME.creating-PID`` beside ``path`` and renamed onto ``path``
    (which must not exist, or be an empty directory) when whole: a kill at any point
    leaves either no store or a whole empty one."""
    group_attrs = {"streamdet_format": FORMAT, "streamdet_version": __version__,
                   COMPLETE: False, **attrs}
    tmp = _sibling(path, _CREATING)
    _ACTIVE.add(str(tmp.absolute()))
    try:
        if tmp.exists():
            shutil.rmtree(tmp)
        root = zarr.open_group(tmp, mode="w-", zarr_format=3, attributes=group_attrs)
        root.create_array(ARRAY, shape=shape, dtype="float32", chunks=chunks, shards=shards,
                          compressors=_compressors(codec), fill_value=np.nan,
                          dimension_names=dims, attributes={"units": bunit} if bunit else {})
        if channels is not None:
            coord = root.create_array(COORD, shape=channels.shape, dtype="float64",
                                      chunks=channels.shape, compressors=None,
                                      dimension_names=(COORD,),
                                      attributes={"units": channel_unit} if channel_unit
                                      else {})
            coord[...] = channels
        save_progress(tmp, (), n_blocks)
        os.rename(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        _ACTIVE.discard(str(tmp.absolute()))


def structure_problem(path: Path, meta: StoreMeta, *, coord: bool) -> str | None:
    """Why an incomplete store cannot be resumed (its ``image`` array is missing or does
    not match its recorded layout, or its ``freq`` coordinate is missing), or None."""
    try:
        root = zarr.open_group(path, mode="r", zarr_format=3)
        arr = root[ARRAY] if ARRAY in root else None
        if not isinstance(arr, zarr.Array):
            return f"no {ARRAY!r} array"
        if (arr.shape, arr.dtype, arr.chunks, arr.shards) != (
                meta.shape, np.dtype("float32"), meta.chunks, meta.shards):
            return f"the {ARRAY!r} array does not match the recorded layout"
        if coord and not isinstance(root[COORD] if COORD in root else None, zarr.Array):
            return f"no {COORD!r} coordinate"
    except Exception as exc:  # zarr raises many types on damaged metadata
        return f"unreadable metadata ({type(exc).__name__}: {exc})"
    return None


def open_array(path: Path, *, write: bool = False) -> zarr.Array[Any]:
    """The ``image`` array of a store."""
    root = zarr.open_group(path, mode="r+" if write else "r", zarr_format=3)
    arr = root[ARRAY] if ARRAY in root else None
    if arr is None:
        raise IncompleteStoreError(f"{str(path)!r} has no {ARRAY!r} array (an interrupted "
                                   "conversion); run streamdet convert again to finish it")
    if not isinstance(arr, zarr.Array):
        raise StreamdetValueError(f"{str(path)!r}: {ARRAY!r} is not an array")
    return arr


def _runs(ids: Iterable[int]) -> list[list[int]]:
    runs: list[list[int]] = []
    for i in sorted(set(ids)):
        if runs and runs[-1][1] == i:
            runs[-1][1] = i + 1
        else:
            runs.append([i, i + 1])
    return runs


def save_progress(path: Path, done: Iterable[int], total: int) -> None:
    """Atomically record the write-blocks done (as ``[start, stop)`` runs)."""
    tmp = path / f".{PROGRESS}.tmp"
    tmp.write_text(json.dumps({"format": FORMAT, "total": total, "done": _runs(done)}))
    os.replace(tmp, path / PROGRESS)


def load_progress(path: Path) -> tuple[set[int], int | None]:
    """Write-blocks done and their total, as last saved (empty, None when unknown)."""
    try:
        data = json.loads((path / PROGRESS).read_text())
        done = {i for start, stop in data["done"] for i in range(int(start), int(stop))}
        total = int(data["total"]) or None
    except (OSError, KeyError, TypeError, ValueError):
        return set(), None
    return done, total


def remove_partials(path: Path) -> None:
    """Delete temporary chunk (and progress) files left by a killed writer."""
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            if _PARTIAL.search(name) or name == f".{PROGRESS}.tmp":
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join(dirpath, name))


def finish_store(path: Path) -> None:
    """Consolidate metadata, then mark the store complete (the last metadata written; a kill
    before it leaves a store that a re-run finishes) and drop the progress file."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "consolidated metadata is not part of the v3 spec"
        zarr.consolidate_metadata(path)
    root = zarr.open_group(path, mode="r+", zarr_format=3)
    root.attrs.update({COMPLETE: True})
    with contextlib.suppress(FileNotFoundError):
        (path / PROGRESS).unlink()


def stored_bytes(path: Path) -> int:
    """Total size of the files under a store, bytes."""
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.path.getsize(os.path.join(dirpath, name))
    return total
