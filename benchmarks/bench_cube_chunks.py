"""Chunk shapes for HI cubes: convert cost against the read cost of the 3D detector's windows.

A simulated SDC2-like cube (FITS) is converted to Zarr with several chunk shapes; for each
the script reports the conversion's wall time and peak RSS (each conversion in a fresh
process), the store's size (compression ratio), and the read cost of the access pattern
of the 3D detector: input windows of 256 channels x 64 x 64 px (the seed's 64 x 64 x 256
input) as cores tiling the cube, each read with a halo (default 64 channels, 16 px),
visited in the detector's order (C order over (freq, y, x) cores: x fastest, like
``plan_windows`` in 2D). Read cost:

- chunks touched per window, and *read amplification*: bytes decompressed per useful
  byte (useful: the window's voxels, halo included), computed over every window of the
  cube; Zarr decodes each chunk a read touches whole, so a window reading straight from
  the store decodes every chunk it touches (``amp``), while a reader that keeps decoded
  chunks in a bounded LRU cache (``--cache-mib``) across windows in the detector's order
  decodes each chunk again only after eviction (``amp LRU``);
- wall seconds per window, read straight from the store with ``zarr.Array.__getitem__``,
  over a sample of interior windows: *cold* (the store's files evicted from the OS page
  cache with ``posix_fadvise(DONTNEED)`` first) and *warm* (the same windows again);
- for contrast, a full-frequency spectrum at one position (what SoFiA-style line
  extraction reads): chunks touched, amplification, cold and warm seconds.

Usage (the figures in docs/cube_chunks.md)::

    nice -n 19 python benchmarks/bench_cube_chunks.py --shape 1024 512 512 --workdir /tmp/cubebench

Timings are ratios within one run: the machine may be shared.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

Shape3 = tuple[int, int, int]
Box = tuple[tuple[int, int], tuple[int, int], tuple[int, int]]

CANDIDATES: list[tuple[str, Shape3]] = [
    ("old default", (64, 256, 256)),
    ("freq-long", (256, 128, 128)),
    ("freq-long", (512, 128, 128)),
    ("freq-long, window-sized", (256, 64, 64)),
    ("cubic", (128, 128, 128)),
    ("window-aligned", (128, 64, 64)),
    ("window-aligned", (64, 64, 64)),
    ("window-aligned, small", (128, 32, 32)),
    ("spatially wide", (32, 512, 512)),
    ("per-channel planes", (1, 512, 512)),
]

_CHILD = r"""
import json, sys, time
t_import = time.perf_counter()
from streamdet.io.convert import convert
def hwm():
    for line in open('/proc/self/status'):
        if line.startswith('VmHWM:'):
            return int(line.split()[1]) * 1024
    return 0
base = hwm()
t0 = time.perf_counter()
r = convert(sys.argv[1], sys.argv[2], chunks=tuple(json.loads(sys.argv[3])), overwrite=True,
            quiet=True)
print(json.dumps({"seconds": time.perf_counter() - t0, "hwm": hwm(), "base_hwm": base,
                  "stored": r.bytes_stored, "bytes_in": r.bytes_in, "blocks": r.n_blocks,
                  "chunks": list(r.chunks)}))
"""


@dataclass(frozen=True)
class Result:
    """Figures for one chunk shape."""

    label: str
    chunks: Shape3
    convert_s: float
    convert_rss: int
    base_rss: int
    ratio: float
    touched: float
    amp: float
    amp_lru: float
    cold_s: float
    warm_s: float
    spec_touched: int
    spec_amp: float
    spec_cold_s: float
    spec_warm_s: float


def windows(shape: Shape3, core: Shape3, halo: Shape3) -> Iterator[Box]:
    """Window regions (core plus halo, clipped to the cube), in the detector's order."""
    edges = [[(s, min(s + c, n)) for s in range(0, n, c)] for n, c in zip(shape, core,
                                                                          strict=True)]
    for ez in edges[0]:
        for ey in edges[1]:
            for ex in edges[2]:
                yield tuple((max(0, a - h), min(n, b + h))  # type: ignore[misc]
                            for (a, b), h, n in zip((ez, ey, ex), halo, shape, strict=True))


def chunk_ids(box: Box, chunks: Shape3) -> list[Shape3]:
    """Indices of the chunks a region touches."""
    ranges = [range(a // c, -(-b // c)) for (a, b), c in zip(box, chunks, strict=True)]
    return [(i, j, k) for i in ranges[0] for j in ranges[1] for k in ranges[2]]


def chunk_bytes(idx: Shape3, chunks: Shape3, shape: Shape3) -> int:
    """Decoded bytes of one chunk (edge chunks are stored whole, padded, by Zarr)."""
    del idx, shape  # Zarr v3 regular chunks: edge chunks are full-size
    return math.prod(chunks) * 4


def read_geometry(shape: Shape3, chunks: Shape3, core: Shape3, halo: Shape3,
                  cache_bytes: int) -> tuple[float, float, float]:
    """(chunks touched per window, amplification, amplification with an LRU cache)."""
    useful = decoded = decoded_lru = touched = n = 0
    lru: OrderedDict[Shape3, int] = OrderedDict()
    held = 0
    for box in windows(shape, core, halo):
        ids = chunk_ids(box, chunks)
        n += 1
        touched += len(ids)
        useful += math.prod(b - a for a, b in box) * 4
        for idx in ids:
            size = chunk_bytes(idx, chunks, shape)
            decoded += size
            if idx in lru:
                lru.move_to_end(idx)
                continue
            decoded_lru += size
            lru[idx] = size
            held += size
            while held > cache_bytes and len(lru) > 1:
                held -= lru.popitem(last=False)[1]
    return touched / n, decoded / useful, decoded_lru / useful


def evict(store: Path) -> None:
    """Drop a store's files from the OS page cache (clean pages; no root needed)."""
    for dirpath, _dirs, files in os.walk(store):
        for name in files:
            fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def timed_reads(store: Path, boxes: list[Box], spectrum: tuple[int, int], *, repeats: int
                ) -> tuple[float, float, float, float]:
    """Seconds per window cold and warm, and a spectrum's seconds cold and warm (each the
    best of ``repeats`` passes)."""
    import zarr

    arr = zarr.open_group(store, mode="r")["image"]
    assert isinstance(arr, zarr.Array)

    def window_pass() -> float:
        t0 = time.perf_counter()
        for box in boxes:
            np.asarray(arr[tuple(slice(a, b) for a, b in box)])
        return (time.perf_counter() - t0) / len(boxes)

    def spectrum_read() -> float:
        t0 = time.perf_counter()
        np.asarray(arr[:, spectrum[0], spectrum[1]])
        return time.perf_counter() - t0

    cold = warm = spec_cold = spec_warm = math.inf
    for _ in range(repeats):  # best of `repeats`: the machine may be shared
        evict(store)
        cold = min(cold, window_pass())
        warm = min(warm, window_pass())
        evict(store)
        spec_cold = min(spec_cold, spectrum_read())
        spec_warm = min(spec_warm, spectrum_read())
    return cold, warm, spec_cold, spec_warm


def sample(shape: Shape3, core: Shape3, halo: Shape3, n: int) -> list[Box]:
    """Up to ``n`` consecutive interior windows (full halos), in the detector's order."""
    inner = [b for b in windows(shape, core, halo)
             if all(b_ - a == c + 2 * h for (a, b_), c, h in zip(b, core, halo, strict=True))]
    return inner[:n] if inner else list(windows(shape, core, halo))[:n]


def run_convert(fits_path: Path, store: Path, chunks: Shape3) -> dict[str, float]:
    """Convert in a fresh process; its wall time, peak RSS and the store's size."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    out = subprocess.run([sys.executable, "-c", _CHILD, str(fits_path), str(store),
                          json.dumps(list(chunks))], check=True, capture_output=True, text=True,
                         env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _mib(n: float) -> str:
    return f"{n / 2**20:.0f}"


def table(results: list[Result], shape: Shape3, core: Shape3, halo: Shape3,
          cache_mib: int) -> str:
    """The Markdown table."""
    base = next((r for r in results if r.label == "old default"), results[0])
    lines = [
        f"Cube {shape[0]} x {shape[1]} x {shape[2]} (freq, y, x) float32 "
        f"({math.prod(shape) * 4 / 2**30:.2f} GiB); windows: core {core[0]} ch x {core[1]} x "
        f"{core[2]} px, halo {halo[0]} ch / {halo[1]} px, input "
        f"{core[0] + 2 * halo[0]} x {core[1] + 2 * halo[1]} x {core[2] + 2 * halo[2]}. "
        f"Convert time and window time also as a ratio to the old default.",
        "",
        "| chunks (freq x y x x) | MiB/chunk | convert s (x old) | convert peak RSS MiB "
        "(after import) | store ratio | chunks/window | amp | amp LRU "
        f"{cache_mib} MiB | window s cold (x old) | window s warm (x old) | spectrum: chunks "
        "| amp | s cold | s warm |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: "
        "| ---: | ---: |",
    ]
    for r in results:
        lines.append(
            f"| {' x '.join(map(str, r.chunks))} ({r.label}) "
            f"| {math.prod(r.chunks) * 4 / 2**20:.3g} "
            f"| {r.convert_s:.1f} ({r.convert_s / base.convert_s:.2f}) | {_mib(r.convert_rss)} "
            f"({_mib(r.base_rss)}) | {r.ratio:.3f} | {r.touched:.1f} | {r.amp:.1f} | "
            f"{r.amp_lru:.2f} | {r.cold_s:.3f} ({r.cold_s / base.cold_s:.2f}) | "
            f"{r.warm_s:.3f} ({r.warm_s / base.warm_s:.2f}) | {r.spec_touched} | "
            f"{r.spec_amp:.0f} | {r.spec_cold_s:.3f} | {r.spec_warm_s:.3f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; print the Markdown table and the command."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shape", type=int, nargs=3, default=(1024, 512, 512),
                   metavar=("NFREQ", "NY", "NX"))
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--workdir", type=Path, default=Path("/tmp/cubebench"))
    p.add_argument("--core", type=int, nargs=3, default=(256, 64, 64))
    p.add_argument("--halo", type=int, nargs=3, default=(64, 16, 16))
    p.add_argument("--sample", type=int, default=16, help="windows timed per layout")
    p.add_argument("--cache-mib", type=int, default=256)
    p.add_argument("--repeats", type=int, default=2, help="timed passes (best kept)")
    p.add_argument("--only", type=str, nargs="*", default=None,
                   help="chunk shapes to run, e.g. 64x256x256 256x128x128")
    p.add_argument("--keep", action="store_true", help="keep the stores")
    args = p.parse_args(argv)
    shape: Shape3 = tuple(args.shape)  # type: ignore[assignment]
    core: Shape3 = tuple(args.core)  # type: ignore[assignment]
    halo: Shape3 = tuple(args.halo)  # type: ignore[assignment]
    args.workdir.mkdir(parents=True, exist_ok=True)
    fits_path = args.workdir / f"cube_{'x'.join(map(str, shape))}_s{args.seed}.fits"
    if not fits_path.exists():
        from streamdet.sim.simulate_cube import simulate_cube

        t0 = time.perf_counter()
        simulate_cube(fits_path, shape=shape, seed=args.seed, channel_offset=2000)
        print(f"simulated {fits_path} in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    cands = CANDIDATES
    if args.only:
        want = {tuple(int(v) for v in s.split("x")) for s in args.only}
        cands = [c for c in CANDIDATES if c[1] in want] + [
            ("extra", w) for w in want if w not in {c[1] for c in CANDIDATES}]  # type: ignore
    boxes = sample(shape, core, halo, args.sample)
    spectrum = (shape[1] // 2 + 3, shape[2] // 2 + 5)
    results: list[Result] = []
    for label, req in cands:
        chunks: Shape3 = tuple(min(c, n) for c, n in zip(req, shape, strict=True))  # type: ignore
        store = args.workdir / f"c{'x'.join(map(str, chunks))}.zarr"
        conv = run_convert(fits_path, store, chunks)
        touched, amp, amp_lru = read_geometry(shape, chunks, core, halo, args.cache_mib << 20)
        cold, warm, spec_cold, spec_warm = timed_reads(store, boxes, spectrum,
                                                          repeats=args.repeats)
        spec_ids = chunk_ids(((0, shape[0]), (spectrum[0], spectrum[0] + 1),
                              (spectrum[1], spectrum[1] + 1)), chunks)
        results.append(Result(
            label=label, chunks=chunks, convert_s=conv["seconds"], convert_rss=int(conv["hwm"]),
            base_rss=int(conv["base_hwm"]), ratio=conv["bytes_in"] / conv["stored"],
            touched=touched, amp=amp, amp_lru=amp_lru, cold_s=cold, warm_s=warm,
            spec_touched=len(spec_ids),
            spec_amp=len(spec_ids) * math.prod(chunks) * 4 / (shape[0] * 4),
            spec_cold_s=spec_cold, spec_warm_s=spec_warm))
        print(f"{chunks}: convert {conv['seconds']:.1f} s, RSS {_mib(conv['hwm'])} MiB, "
              f"amp {amp:.1f}, cold {cold:.3f} s/window", file=sys.stderr, flush=True)
        if not args.keep:
            import shutil

            shutil.rmtree(store)
    print(table(results, shape, core, halo, args.cache_mib))
    print()
    print("Command: nice -n 19 python benchmarks/bench_cube_chunks.py "
          + " ".join(sys.argv[1:] if argv is None else argv))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
