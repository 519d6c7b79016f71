"""Benchmark ``streamdet.convert`` against a plain file copy: throughput and peak memory.

Writes (if absent) an SDC1-like ``SIZE x SIZE`` big-endian float32 FITS image (noise plus
bright pixels; 1 GiB at the default 16384) in ``--workdir`` (default: a temporary directory,
removed afterwards), then measures, in this order:

1. a plain copy (``shutil.copyfile``) of the FITS file to a new file;
2. ``streamdet.convert`` of the FITS file in a child process (wall time measured around the
   child, peak RSS from ``getrusage(RUSAGE_CHILDREN).ru_maxrss``);
3. a second plain copy.

Fairness: page caches cannot be dropped without root, so the FITS file is read from the
page cache by every step (it was just written or read). ``os.sync()`` runs before each step
(untimed) so that no step pays for the previous one's write-back, and again after it
(timed): a copy into the page cache can run at memory speed while a conversion compresses,
so the headline compares the time until the output is on disk ("on disk"); the time until
the call returned is printed too. The copy figure is the mean of the copies before and after
the conversion; the conversion is timed inside ``convert()`` (the child's wall time, which
adds interpreter start and imports, is printed as well). Throughput is FITS data bytes per
second (10^6 B/s).

Targets: peak RSS < 400 MB and convert throughput >= 0.5 x copy.

Usage::

    python benchmarks/bench_convert.py                 # 16384^2 (1 GiB), temporary dir
    python benchmarks/bench_convert.py --size 4096     # quick
    python benchmarks/bench_convert.py --workdir /data/bench --keep
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from astropy.io import fits

_CHILD = """
import json, sys, time
from streamdet.io.convert import convert
t0 = time.perf_counter()
r = convert(sys.argv[1], sys.argv[2], chunks={chunks}, shard={shard}, codec={codec!r},
            verify={verify}, overwrite=True, quiet=True)
print(json.dumps({{"seconds": time.perf_counter() - t0, "stored": r.bytes_stored,
                   "summary": r.summary()}}))
"""


def write_fits(path: Path, size: int, *, seed: int = 0) -> None:
    """Write an SDC1-like big-endian float32 image strip by strip (bounded memory)."""
    header = fits.Header()
    for key, value in [("SIMPLE", True), ("BITPIX", -32), ("NAXIS", 2), ("NAXIS1", size),
                       ("NAXIS2", size), ("CTYPE1", "RA---SIN"), ("CRVAL1", 0.0),
                       ("CDELT1", -1.6667e-4), ("CRPIX1", size / 2 + 1), ("CUNIT1", "deg"),
                       ("CTYPE2", "DEC--SIN"), ("CRVAL2", -30.0), ("CDELT2", 1.6667e-4),
                       ("CRPIX2", size / 2 + 1), ("CUNIT2", "deg"), ("BMAJ", 4.1667e-4),
                       ("BMIN", 4.1667e-4), ("BPA", 0.0), ("BUNIT", "JY/BEAM")]:
        header[key] = value
    rng = np.random.default_rng(seed)
    tmp = path.with_suffix(".partial")
    with open(tmp, "wb") as f:
        f.write(header.tostring().encode("ascii"))
        rows = max(1, (16 << 20) // (4 * size))
        for y0 in range(0, size, rows):
            strip = rng.normal(0.0, 4e-7, (min(rows, size - y0), size)).astype(">f4")
            hot = rng.integers(0, strip.size, strip.size // 5000)
            strip.reshape(-1)[hot] += np.float32(1e-4)
            f.write(strip.tobytes())
        f.write(b"\0" * (-(4 * size * size) % 2880))
    os.replace(tmp, path)


def _sync() -> float:
    """Flush dirty pages to disk; return the seconds it took."""
    t0 = time.perf_counter()
    os.sync()
    return time.perf_counter() - t0


def timed_copy(src: Path, dst: Path) -> tuple[float, float]:
    """Copy ``src``; return (seconds until the copy returned, seconds until it was on disk)."""
    _sync()
    t0 = time.perf_counter()
    shutil.copyfile(src, dst)
    cached = time.perf_counter() - t0
    durable = cached + _sync()
    dst.unlink()
    return cached, durable


def timed_convert(src: Path, dst: Path, args: argparse.Namespace) -> dict[str, float | str]:
    """Convert in a child process; times (inside convert, child wall), sync time, peak RSS."""
    code = _CHILD.format(chunks=args.chunks, shard=args.shard, codec=args.codec,
                         verify=args.verify)
    _sync()
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code, str(src), str(dst)], check=True,
                          capture_output=True, text=True)
    wall = time.perf_counter() - t0
    sync = _sync()
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # KiB on Linux
    return {"wall": wall, "inner": out["seconds"], "sync": sync, "stored": out["stored"],
            "peak_mb": peak_kb * 1024 / 1e6, "summary": out["summary"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=16384, help="image side, px")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="where the FITS file is kept (default: a temporary directory)")
    parser.add_argument("--keep", action="store_true",
                        help="keep the store (and the FITS file of a temporary directory)")
    parser.add_argument("--chunks", type=int, default=None, help="chunk side (default 1024)")
    parser.add_argument("--shard", type=int, default=None, help="shard side (default none)")
    parser.add_argument("--codec", default="zstd", choices=("zstd", "blosc", "none"))
    parser.add_argument("--verify", action="store_true", help="convert with verify=True")
    args = parser.parse_args(argv)

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench_convert_"))
    workdir.mkdir(parents=True, exist_ok=True)
    src = workdir / f"bench_{args.size}.fits"
    store = workdir / f"bench_{args.size}.zarr"
    try:
        if not src.exists():
            t0 = time.perf_counter()
            write_fits(src, args.size)
            print(f"wrote {src} in {time.perf_counter() - t0:.1f} s")
        mb = 4 * args.size * args.size / 1e6
        copies = [timed_copy(src, workdir / "copy.fits")]
        conv = timed_convert(src, store, args)
        copies.append(timed_copy(src, workdir / "copy.fits"))
        copy_cached = sum(c[0] for c in copies) / 2
        copy_durable = sum(c[1] for c in copies) / 2
        inner, wall, sync = float(conv["inner"]), float(conv["wall"]), float(conv["sync"])
        print(conv["summary"])
        print(f"image     {args.size} x {args.size} float32, {mb:.0f} MB; codec {args.codec}, "
              f"chunks {args.chunks or 1024}, shard {args.shard}")
        print("          returned: MB/s (s)         on disk (+ os.sync): MB/s (s)")
        for i, (cached, durable) in enumerate(copies, start=1):
            print(f"copy {i}    {mb / cached:6.0f} ({cached:5.2f})          "
                  f"{mb / durable:6.0f} ({durable:5.2f})")
        print(f"convert   {mb / inner:6.0f} ({inner:5.2f})          "
              f"{mb / (inner + sync):6.0f} ({inner + sync:5.2f})   inside convert()")
        print(f"          {mb / wall:6.0f} ({wall:5.2f})          "
              f"{mb / (wall + sync):6.0f} ({wall + sync:5.2f})   child process wall "
              "(interpreter + imports included)")
        ratio = copy_durable / (inner + sync)
        print(f"ratio to copy (on disk, inside convert): {ratio:.2f}   "
              f"[returned: {copy_cached / inner:.2f}; on disk, child wall: "
              f"{copy_durable / (wall + sync):.2f}]   target >= 0.5: "
              f"{'ok' if ratio >= 0.5 else 'MISSED'}")
        peak = float(conv["peak_mb"])
        print(f"peak RSS  {peak:.0f} MB (child process)   target < 400: "
              f"{'ok' if peak < 400 else 'MISSED'}")
        print(f"store     {float(conv['stored']) / 1e6:.0f} MB "
              f"(compression ratio {mb * 1e6 / float(conv['stored']):.3f})")
    finally:
        if not args.keep:
            shutil.rmtree(store, ignore_errors=True)
            if args.workdir is None:
                shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
