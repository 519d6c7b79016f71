"""Stream a FITS image or cube into a chunked, compressed Zarr v3 store, restartably.

The FITS data are never loaded whole: the array is cut into *write-blocks* (whole shards,
or whole chunks when unsharded, grouped along x up to 4 MiB), and a few threads each
read one block from the file (``readinto`` at computed offsets), decode it to native
float32 and hand it to Zarr, which compresses its chunks in parallel (zstd and blosc
release the GIL). Because a block always covers whole shards, no two writers ever touch
the same shard (writing a shard piecewise from several writers loses data).

Chunk defaults: 1024 x 1024 for an image; 64 x 64 x 64 (freq, y, x) for a cube, both
clipped to the array's extent. The cube default is sized for the 3D detector's windows
(64 x 64 px x 256 channels, read with halos of 16 px and 64 channels): the window cores are
whole multiples of it, so a window decodes ~3.7x the bytes it uses, against ~12x for the
former 64 x 256 x 256 and ~31x for per-channel or spatially wide chunks, and reads 4x
faster; its 1 MiB chunks also convert fastest (docs/cube_chunks.md has the measurements
and ``benchmarks/bench_cube_chunks.py`` the benchmark). Cube write-blocks join chunks
along x up to 16 MiB, so the FITS file is read in (channel, row) pieces of >= 1 KiB where
the chunk shape allows.

Restart: the blocks done are recorded in ``streamdet-progress.json`` inside the store
(atomically, at most every half second and when the run stops for any reason). Running
the same conversion again on an incomplete store resumes: only blocks not recorded are
(re)written, and writing a block is idempotent, so the content equals that of an
uninterrupted run. The attribute ``streamdet_complete`` becomes true only at the very end.
The store itself is built beside its path and renamed into place when whole, so a kill at
any point of a conversion, its creation included, leaves a state that a re-run finishes:
no store, a whole store to resume, or (from an older version) a store whose creation was
cut short, which is recreated.
"""

from __future__ import annotations

import itertools
import math
import os
import time
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import zarr

from .._progress import progress_bar
from ..errors import IncompleteStoreError, OutputExistsError, StreamdetValueError
from ._atomic import check_output
from ._fits import (
    FitsImage,
    Region,
    SkyMeta,
    read_block,
    scan_fits,
    sky_metadata,
    wcs_to_cards,
)
from ._lock import output_lock
from ._zarrstore import (
    CODECS,
    DEFAULT_CHUNKS_CUBE,
    DEFAULT_CHUNKS_IMAGE,
    StoreMeta,
    create_store,
    finish_store,
    is_zarr_store,
    load_progress,
    open_array,
    read_meta,
    remove_partials,
    remove_stale_siblings,
    remove_store,
    save_progress,
    shape_spec,
    stored_bytes,
    structure_problem,
)
from .image import NoCelestialWCSWarning

__all__ = ["DEFAULT_CHUNKS_CUBE", "DEFAULT_CHUNKS_IMAGE", "ConvertReport", "convert", "verify"]

_BLOCK_BYTES = 4 << 20  # target float32 size of one write-block (one 1024^2 chunk)
# Cubes: 16 MiB write-blocks. A block of narrow cube chunks is read from the FITS file one
# (channel, row) piece at a time; four 64-px chunks side by side make those pieces 1 KiB
# instead of 256 B (4x fewer reads, the Python per-read cost dominating), for two 16 MiB
# blocks in flight.
_BLOCK_BYTES_CUBE = 16 << 20
_INFLIGHT_BYTES = 16 << 20  # float32 bytes of the blocks in flight (each costs ~3x in memory)
_WORKERS = 4  # most blocks in flight (each is read, then compressed by Zarr's threads)
_T = TypeVar("_T")
_SAVE_EVERY_S = 0.5  # progress-file updates at most this often (plus one when the run stops)


@dataclass(frozen=True)
class ConvertReport:
    """What :func:`convert` did.

    Attributes
    ----------
    source : pathlib.Path
        FITS file read.
    store : pathlib.Path
        Zarr store written.
    hdu : int
        HDU converted.
    shape : tuple of int
        Array shape, ``(ny, nx)`` or ``(nfreq, ny, nx)``.
    dims : tuple of str
        Dimension names.
    chunks : tuple of int
        Chunk shape.
    shards : tuple of int or None
        Shard shape, or None without sharding.
    codec : str
        ``"zstd"``, ``"blosc"`` or ``"none"``.
    n_blocks : int
        Write-blocks in the array.
    n_blocks_written : int
        Write-blocks written by this run (the rest were done by an interrupted run).
    n_chunks_written, n_chunks_skipped : int
        Chunks written by this run, and chunks already done and skipped.
    bytes_in : int
        FITS data bytes read by this run.
    bytes_stored : int
        Size of the store on disk, bytes.
    seconds : float
        Wall time of this run, s.
    resumed : bool
        Whether this run resumed an interrupted conversion.
    verified : bool or None
        True when ``verify=True`` checked every block; None when not asked.
    has_celestial_wcs : bool
        Whether a celestial WCS was found and stored.
    beam : tuple of float or None
        Restoring beam (bmaj, bmin, bpa), degrees.
    freq_hz : float or None
        Frequency of a 2-D image, Hz.
    """

    source: Path
    store: Path
    hdu: int
    shape: tuple[int, ...]
    dims: tuple[str, ...]
    chunks: tuple[int, ...]
    shards: tuple[int, ...] | None
    codec: str
    n_blocks: int
    n_blocks_written: int
    n_chunks_written: int
    n_chunks_skipped: int
    bytes_in: int
    bytes_stored: int
    seconds: float
    resumed: bool
    verified: bool | None
    has_celestial_wcs: bool
    beam: tuple[float, float, float] | None
    freq_hz: float | None

    @property
    def throughput_mb_s(self) -> float:
        """FITS data read per second of wall time, MB/s (10^6 bytes)."""
        return self.bytes_in / 1e6 / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        """One paragraph for humans."""
        shape = " x ".join(str(n) for n in self.shape)
        chunks = "x".join(str(n) for n in self.chunks)
        shards = "x".join(str(n) for n in self.shards) if self.shards else "none"
        text = (f"converted {self.source} (HDU {self.hdu}) -> {self.store}: {shape} float32 "
                f"({', '.join(self.dims)}), chunks {chunks}, shards {shards}, codec {self.codec}; "
                f"{self.n_chunks_written} chunks written")
        if self.resumed or self.n_chunks_skipped:
            text += f", {self.n_chunks_skipped} already done (resumed)"
        ratio = self.bytes_in / self.bytes_stored if self.bytes_stored and self.bytes_in else None
        text += (f"; {self.bytes_in / 1e6:.1f} MB read in {self.seconds:.2f} s "
                 f"({self.throughput_mb_s:.0f} MB/s); store {self.bytes_stored / 1e6:.1f} MB")
        if ratio is not None and not self.resumed:
            text += f" (ratio {ratio:.2f})"
        text += "; celestial WCS kept" if self.has_celestial_wcs else "; no celestial WCS"
        if self.beam is not None:
            text += (f"; beam {self.beam[0] * 3600:.3g}\" x {self.beam[1] * 3600:.3g}\" "
                     f"PA {self.beam[2]:.3g} deg")
        if self.freq_hz is not None:
            text += f"; {self.freq_hz / 1e6:.6g} MHz"
        if self.verified:
            text += "; verified against the FITS data"
        return text + "."


@dataclass(frozen=True)
class _Grid:
    """Write-blocks of an array: a regular grid of ``block``-shaped regions, C order."""

    shape: tuple[int, ...]
    block: tuple[int, ...]

    @property
    def counts(self) -> tuple[int, ...]:
        return tuple(-(-n // b) for n, b in zip(self.shape, self.block, strict=True))

    @property
    def n(self) -> int:
        return math.prod(self.counts)

    def region(self, index: int) -> Region:
        pos = np.unravel_index(index, self.counts)
        return tuple((int(p) * b, min((int(p) + 1) * b, n))
                     for p, b, n in zip(pos, self.block, self.shape, strict=True))


def _n_chunks(region: Region, chunks: tuple[int, ...]) -> int:
    return math.prod(-(-(b - a) // c) for (a, b), c in zip(region, chunks, strict=True))


def _layout(shape: tuple[int, ...], chunks: int | Sequence[int] | None,
            shard: int | Sequence[int] | None
            ) -> tuple[tuple[int, ...], tuple[int, ...] | None, tuple[int, ...]]:
    """Chunk shape, shard shape and write-block shape for an array, all clipped to it."""
    default = DEFAULT_CHUNKS_CUBE if len(shape) == 3 else DEFAULT_CHUNKS_IMAGE
    lead = default[:-2]
    req = default if chunks is None else shape_spec(chunks, "chunks", shape, lead)
    clipped = tuple(min(c, n) for c, n in zip(req, shape, strict=True))
    shards: tuple[int, ...] | None = None
    if shard is not None:
        sreq = shape_spec(shard, "shard", shape, req[:-2])
        for s, c in zip(sreq, req, strict=True):
            if s % c:
                raise StreamdetValueError(f"shard {shard!r} must be a whole multiple of the "
                                          f"chunks {req}")
        shards = tuple(n if c >= n else min(s, -(-n // c) * c)
                       for s, c, n in zip(sreq, clipped, shape, strict=True))
    unit = shards or clipped
    per_unit = math.prod(unit) * 4
    target = _BLOCK_BYTES_CUBE if len(shape) == 3 else _BLOCK_BYTES
    along_x = max(1, min(target // per_unit, -(-shape[-1] // unit[-1])))
    block = (*unit[:-1], unit[-1] * along_x)
    return clipped, shards, block


def _write_block(array: zarr.Array[Any], img: FitsImage, region: Region) -> None:
    """Read one block from the FITS file and store it."""
    array[tuple(slice(a, b) for a, b in region)] = read_block(img, region)


def _source_id(img: FitsImage) -> dict[str, Any]:
    return {"path": str(img.path.resolve()), "size": img.file_size, "mtime_ns": img.mtime_ns}


def _differences(meta: StoreMeta, img: FitsImage, params: dict[str, Any]) -> list[str]:
    old = {"shape": list(meta.shape), "chunks": list(meta.chunks),
           "shards": list(meta.shards) if meta.shards else None, "codec": meta.codec,
           "hdu": meta.hdu}
    diffs = [f"{key} {old[key]} vs {params[key]}" for key in old if old[key] != params[key]]
    if (meta.source.get("size"), meta.source.get("mtime_ns")) != (img.file_size, img.mtime_ns):
        diffs.append(f"source {meta.source.get('path')!r} (size/mtime differ)")
    return diffs


def _remove_output(out: Path) -> None:
    if out.is_dir() and not out.is_symlink():
        if not is_zarr_store(out) and any(out.iterdir()):
            raise StreamdetValueError(f"refusing to overwrite {str(out)!r}: a non-empty "
                                      "directory that is not a Zarr store")
        remove_store(out)
    else:
        out.unlink()


def _prepare(out: Path, img: FitsImage, params: dict[str, Any], *, overwrite: bool,
             coord: bool) -> tuple[StoreMeta | None, set[int]]:
    """Remove, reject or resume an existing output; return its metadata and blocks done.

    A store whose creation was interrupted (streamdet's own, incomplete, without a usable
    ``image`` array) and an empty directory are replaced without ``overwrite``: they hold
    nothing to keep."""
    check_output(out, overwrite=True, store=True)  # parent exists and is writable
    if out.resolve() == img.path.resolve():
        raise StreamdetValueError(f"output {str(out)!r} is the input file")
    remove_stale_siblings(out, all_stale=True)  # under the lock: no other writer
    if out.is_dir() and not out.is_symlink() and not any(out.iterdir()):
        out.rmdir()
    if not (out.exists() or out.is_symlink()):
        return None, set()
    if overwrite:
        _remove_output(out)
        return None, set()
    try:
        meta = read_meta(out)
    except StreamdetValueError:
        raise OutputExistsError(f"output {str(out)!r} exists; pass overwrite=True "
                                "(--overwrite)") from None
    if meta.complete:
        raise OutputExistsError(f"output {str(out)!r} exists and is complete; pass "
                                "overwrite=True (--overwrite) to convert again")
    if structure_problem(out, meta, coord=coord) is not None:
        remove_store(out)  # killed while being created: no block was written, start afresh
        return None, set()
    diffs = _differences(meta, img, params)
    if diffs:
        raise StreamdetValueError(f"{str(out)!r} holds an unfinished conversion with other "
                                  f"parameters ({'; '.join(diffs)}); pass overwrite=True "
                                  "(--overwrite) to start again")
    done, total = load_progress(out)
    if total is not None and total != _Grid(meta.shape, meta.block).n:
        done = set()
    remove_partials(out)
    return meta, done


def _run_blocks(grid: _Grid, todo: list[int], task: Callable[[int], _T], *,
                on_done: Callable[[int, _T], None], min_workers: int, desc: str, initial: int,
                quiet: bool | None) -> None:
    """Run ``task(index)`` over blocks in a few threads; ``on_done(index, result)`` in order
    of completion. As many blocks as fit in ``_INFLIGHT_BYTES`` are in flight (at least
    ``min_workers``, at most ``_WORKERS``). On any error (or Ctrl-C) no block is started any
    more, those running are waited for (and reported), then the first error is raised."""
    fit = _INFLIGHT_BYTES // (math.prod(grid.block) * 4)
    workers = max(min_workers, min(_WORKERS, fit))
    bar = progress_bar(total=grid.n, desc=desc, unit="block", quiet=quiet, initial=initial)
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="streamdet")
    futures: dict[Future[_T], int] = {}
    error: BaseException | None = None
    try:
        remaining = iter(todo)
        while True:
            if error is None:  # keep `workers` blocks in flight
                for index in itertools.islice(remaining, workers - len(futures)):
                    futures[pool.submit(task, index)] = index
            if not futures:
                break
            finished, _ = wait(futures, return_when=FIRST_COMPLETED)
            for fut in finished:
                index = futures.pop(fut)
                exc = fut.exception()
                if exc is not None:
                    error = error or exc
                else:
                    on_done(index, fut.result())
                    bar.update(1)
    except BaseException as exc:  # Ctrl-C while waiting: let running blocks finish
        error = exc
        for fut, index in futures.items():
            if not fut.cancelled() and fut.exception() is None:
                on_done(index, fut.result())
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        bar.close()
    if error is not None:
        raise error


def convert(fits_path: str | os.PathLike[str], store: str | os.PathLike[str], *,
            chunks: int | Sequence[int] | None = None, shard: int | Sequence[int] | None = None,
            codec: str = "zstd", hdu: int | None = None, overwrite: bool = False,
            verify: bool = False, quiet: bool | None = None) -> ConvertReport:
    """Convert a FITS image or cube to a chunked Zarr v3 store without loading it.

    Parameters
    ----------
    fits_path : path-like
        Uncompressed FITS file. Degenerate axes are dropped: the store holds ``(y, x)`` or
        ``(freq, y, x)`` native float32 (BSCALE/BZERO applied, BLANK and NaN as NaN).
    store : path-like
        Directory of the Zarr store to write.
    chunks : int or tuple of int, optional
        Spatial chunk side (px) or the full chunk shape; default 1024 for images,
        64 x 64 x 64 (freq, y, x) for cubes (sized for the 3D detector's 64 x 64 x 256
        windows; see docs/cube_chunks.md); clipped to the array. An int for a cube sets
        y and x and keeps the default's 64 channels.
    shard : int or tuple of int, optional
        Spatial shard side (px) or full shard shape, a whole multiple of ``chunks``;
        default: no sharding.
    codec : {"zstd", "blosc", "none"}
        Compression: zstd (level 1), blosc (lz4 with bit shuffle: on noise-dominated
        float32 maps ~5% smaller than zstd and twice as fast to read, for ~50 MB more
        peak memory in the conversion), or none.
    hdu : int, optional
        HDU index; default the first HDU holding image data.
    overwrite : bool
        Replace an existing store. Without it, an existing complete store raises
        :class:`~streamdet.errors.OutputExistsError`, and an incomplete one written with
        the same parameters from the same file is resumed.
    verify : bool
        After writing, compare every block with the FITS data (see :func:`verify`).
    quiet : bool or None
        ``True`` hides the progress bar; ``None`` shows it on a terminal only.

    Returns
    -------
    ConvertReport

    Raises
    ------
    StreamdetFileNotFoundError, InvalidFITSError, OutputExistsError, StreamdetValueError
        Missing, non-FITS, truncated or unusable input; existing output; bad options; a
        block that does not verify.

    Warns
    -----
    NoCelestialWCSWarning
        The image has no celestial WCS (the store is written without one).
    """
    t0 = time.perf_counter()
    if codec not in CODECS:
        raise StreamdetValueError(f"codec must be one of {', '.join(CODECS)}; got {codec!r}")
    img = scan_fits(fits_path, hdu=hdu)
    chunk_shape, shard_shape, block = _layout(img.shape, chunks, shard)
    sky = sky_metadata(img)
    out = Path(store)
    params = {"shape": list(img.shape), "chunks": list(chunk_shape),
              "shards": list(shard_shape) if shard_shape else None, "codec": codec,
              "hdu": img.hdu}
    check_output(out, overwrite=True, store=True)  # parent exists and is writable
    with output_lock(out):  # one writer at a time: a second is refused at once
        return _convert_locked(out, img, params, sky, chunk_shape, shard_shape, block,
                               codec=codec, overwrite=overwrite, verify=verify,
                               quiet=quiet, t0=t0)


def _convert_locked(out: Path, img: FitsImage, params: dict[str, Any], sky: SkyMeta,
                    chunk_shape: tuple[int, ...], shard_shape: tuple[int, ...] | None,
                    block: tuple[int, ...], *, codec: str, overwrite: bool, verify: bool,
                    quiet: bool | None, t0: float) -> ConvertReport:
    """The conversion proper, under the store's lock."""
    meta, done = _prepare(out, img, params, overwrite=overwrite,
                          coord=sky.channels is not None)
    resumed = meta is not None
    grid = _Grid(img.shape, block if meta is None else meta.block)
    if meta is None:
        attrs = {
            "streamdet_convert": {**params, "dims": list(img.dims), "block": list(block)},
            "streamdet_source": _source_id(img),
            "fits_header": img.header.tostring(sep="\n", endcard=False, padding=False),
            "wcs": wcs_to_cards(sky.wcs) if sky.wcs is not None else None,
            "beam": dict(zip(("bmaj_deg", "bmin_deg", "bpa_deg"), sky.beam, strict=True))
            if sky.beam else None,
            "freq_hz": sky.freq_hz,
            "bunit": sky.bunit,
        }
        create_store(out, shape=img.shape, dims=img.dims, chunks=chunk_shape,
                     shards=shard_shape, codec=codec, attrs=attrs, bunit=sky.bunit,
                     channels=sky.channels, channel_unit=sky.channel_unit, n_blocks=grid.n)
    if sky.wcs is None:
        warnings.warn(NoCelestialWCSWarning(f"{str(img.path)!r}: {sky.problem}; the store has "
                                            "pixel coordinates only"), stacklevel=3)
    array = open_array(out, write=True)
    todo = [i for i in range(grid.n) if i not in done]
    last_save = time.monotonic()

    def record(index: int, _result: None) -> None:
        nonlocal last_save
        done.add(index)
        if time.monotonic() - last_save >= _SAVE_EVERY_S:
            save_progress(out, done, grid.n)
            last_save = time.monotonic()

    try:
        _run_blocks(grid, todo, lambda i: _write_block(array, img, grid.region(i)),
                    on_done=record, min_workers=2,  # two keep reading and compressing overlapped
                    desc=f"convert {img.path.name}", initial=len(done), quiet=quiet)
    finally:
        save_progress(out, done, grid.n)
    verified: bool | None = None
    if verify:
        bad = _check(img, out, grid, quiet=quiet)
        if bad is not None:
            done.discard(bad[0])  # a re-run rewrites the bad block
            save_progress(out, done, grid.n)
            raise StreamdetValueError(bad[1])
        verified = True
    finish_store(out)
    return ConvertReport(
        source=img.path, store=out, hdu=img.hdu, shape=img.shape, dims=img.dims,
        chunks=chunk_shape, shards=shard_shape, codec=codec, n_blocks=grid.n,
        n_blocks_written=len(todo),
        n_chunks_written=sum(_n_chunks(grid.region(i), chunk_shape) for i in todo),
        n_chunks_skipped=sum(_n_chunks(grid.region(i), chunk_shape)
                             for i in range(grid.n) if i not in todo),
        bytes_in=sum(math.prod(b - a for a, b in grid.region(i)) for i in todo)
        * img.raw_dtype.itemsize, bytes_stored=stored_bytes(out),
        seconds=time.perf_counter() - t0, resumed=resumed, verified=verified,
        has_celestial_wcs=sky.wcs is not None, beam=sky.beam, freq_hz=sky.freq_hz)


def _describe_region(dims: tuple[str, ...], region: Region) -> str:
    return ", ".join(f"{d} {a}:{b}" for d, (a, b) in zip(dims, region, strict=True))


def _compare_block(img: FitsImage, array: zarr.Array[Any], region: Region,
                   index: int, store: Path) -> str | None:
    """None when the store holds exactly the FITS block (NaN where NaN), else why not."""
    where = f"block {index} ({_describe_region(img.dims, region)})"
    expected = read_block(img, region)
    try:
        got = np.asarray(array[tuple(slice(a, b) for a, b in region)])
    except Exception as exc:  # a corrupted chunk fails to decode in many ways
        return f"{str(store)!r}: {where} cannot be read ({type(exc).__name__}: {exc})"
    if got.shape != expected.shape or got.dtype != expected.dtype:
        return f"{str(store)!r}: {where} has shape {got.shape} {got.dtype}, not {expected.shape}"
    if (got.view(np.uint32) == expected.view(np.uint32)).all():  # bit for bit: no copies
        return None
    if np.array_equal(got, expected, equal_nan=True):  # NaN with other payloads
        return None
    diff = ~((got == expected) | (np.isnan(got) & np.isnan(expected)))
    first = tuple(int(i) + a for i, (a, _b) in zip(np.argwhere(diff)[0], region, strict=True))
    pos = ", ".join(f"{d}={i}" for d, i in zip(img.dims, first, strict=True))
    return (f"{str(store)!r}: {where} differs from {str(img.path)!r} in {int(diff.sum())} "
            f"pixels, first at ({pos}): {got[diff][0]!r} in the store, {expected[diff][0]!r} "
            "in the FITS file")


def _check(img: FitsImage, store: Path, grid: _Grid, *,
           quiet: bool | None) -> tuple[int, str] | None:
    """The lowest-numbered bad block found (index, message), or None when all agree."""
    array = open_array(store)
    bad: dict[int, str] = {}

    def task(index: int) -> str | None:
        return _compare_block(img, array, grid.region(index), index, store)

    def collect(index: int, message: str | None) -> None:
        if message is not None:
            bad[index] = message

    _run_blocks(grid, list(range(grid.n)), task, on_done=collect, min_workers=1,
                desc=f"verify {store.name}", initial=0, quiet=quiet)
    if not bad:
        return None
    first = min(bad)
    return first, bad[first]


def verify(fits_path: str | os.PathLike[str], store: str | os.PathLike[str], *,
           hdu: int | None = None, quiet: bool | None = None) -> bool:
    """Check that a store holds exactly the FITS data, block by block.

    Each write-block of the store is read back and compared with the same block decoded
    from the FITS file (float32, bit for bit; NaN where NaN).

    Parameters
    ----------
    fits_path : path-like
        The FITS file converted.
    store : path-like
        The Zarr store written by :func:`convert`.
    hdu : int, optional
        HDU index; default the HDU recorded in the store.
    quiet : bool or None
        ``True`` hides the progress bar; ``None`` shows it on a terminal only.

    Returns
    -------
    bool
        True when every block matches.

    Raises
    ------
    IncompleteStoreError
        The store is incomplete.
    StreamdetValueError
        A block differs or cannot be read (the message names the first such block), or
        the shapes differ.
    """
    meta = read_meta(store)
    if not meta.complete:
        raise IncompleteStoreError(f"store {str(meta.path)!r} is incomplete (an interrupted "
                                   "conversion); run convert again to finish it")
    img = scan_fits(fits_path, hdu=meta.hdu if hdu is None else hdu)
    if img.shape != meta.shape:
        raise StreamdetValueError(f"{str(img.path)!r} HDU {img.hdu} has shape {img.shape}; "
                                  f"the store {str(meta.path)!r} has {meta.shape}")
    bad = _check(img, meta.path, _Grid(meta.shape, meta.block), quiet=quiet)
    if bad is not None:
        raise StreamdetValueError(f"verify failed: {bad[1]}")
    return True
