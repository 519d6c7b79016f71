"""Detection throughput and memory: end-to-end `detect` against raw ONNX Runtime.

For each image size, a simulated SDC1-like 560 MHz field is converted to Zarr, then:

* **end to end**: ``streamdet.detect`` on the store in a fresh subprocess (peak RSS from
  ``VmHWM``), wall time -> Mpix/s of image;
* **raw**: ONNX Runtime alone, same model and batch, every core on one forward pass at a
  time (``--threads``: the fastest way to run the model alone), on tiles held in memory with
  exactly the shapes and counts the engine's plan runs (timed on a sample of each shape,
  extrapolated to the whole plan) -> the time the model alone needs for the same work.

Both are run ``--repeat`` times, interleaved; the fastest run of each counts and the
largest peak RSS is reported.

With ``--formats``, each end-to-end run also writes the catalogue (``write_catalogue``, as
``streamdet detect -o``) in each format named, one fresh process per format: one row per
size and format, with the seconds of writing and the peak RSS of detect plus writing, and
per format the ratio of the largest image's peak to the smallest's (issue 14: the peak must
not depend on the format; target <= 1.2x for each).

The ratio raw_time / end_to_end_time says how well loading, decoding, NMS and merging
hide behind compute (target >= 0.9). Peak RSS of the largest image should stay within
1.2x that of the smallest and under 1.5 GB.

    python benchmarks/bench_detect.py --sizes 4096 16384 [--model M.onnx] [--no-measure]
        [--no-faint] [--workdir DIR] [--formats ecsv txt parquet fits]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

import streamdet
from streamdet.engine._infer import window_tiles
from streamdet.engine._plan import padded_size, plan_windows
from streamdet.engine.contract import load_model
from streamdet.engine.detect import _configure


def _model_for(store: Path, model: Path | None) -> Path:
    """The model given, or the bundled default that detect itself picks for the image."""
    if model is not None:
        return model
    from streamdet.models import default_model

    img = streamdet.open_image(store)
    return default_model(freq_hz=img.freq_hz, pixel_scale_arcsec=img.pixel_scale_arcsec)


def _prepare(size: int, workdir: Path, *, faint: bool) -> Path:
    stem = f"field_{size}" + ("_faint" if faint else "")
    fits_path = workdir / f"{stem}.fits"
    store = workdir / f"{stem}.zarr"
    if not store.exists():
        if not fits_path.exists():
            streamdet.simulate(fits_path, size=size, freq=560, seed=size, faint=faint,
                               quiet=True)
        streamdet.convert(fits_path, store, chunks=1024, quiet=True)
        fits_path.unlink()
    return store


_CHILD = """
import json, resource, sys, time, warnings
import streamdet
store, model = sys.argv[1], sys.argv[2]
batch, threads = int(sys.argv[3]) or None, int(sys.argv[4]) or None
measure = sys.argv[5] == "1"
fmt, out = sys.argv[6], sys.argv[7]
t0 = time.perf_counter()
table = streamdet.detect(store, model=model, batch=batch, threads=threads, measure=measure,
                         quiet=True)
dt = time.perf_counter() - t0
write_s, size = 0.0, 0
if fmt:
    from pathlib import Path
    from streamdet.catalogue.outputs import write_catalogue
    t1 = time.perf_counter()
    write_catalogue(table, out, format=fmt, overwrite=True)
    write_s = time.perf_counter() - t1
    size = Path(out).stat().st_size
# VmHWM, not getrusage: Linux carries the parent's pre-exec peak into ru_maxrss.
rss = next(float(line.split()[1]) / 1024 for line in open("/proc/self/status")
           if line.startswith("VmHWM:"))
print(json.dumps({"seconds": dt, "rss_mb": rss, "n": len(table), "write_s": write_s,
                  "bytes": size}))
"""

#: --formats names: write_catalogue's formats, and the extensions detect maps to them
_FORMATS = {"sdc1": "sdc1", "txt": "sdc1", "ecsv": "ecsv", "fits": "fits",
            "parquet": "parquet"}
_SUFFIX = {"sdc1": ".txt", "ecsv": ".ecsv", "fits": ".fits", "parquet": ".parquet"}


def _end_to_end(store: Path, model: Path, batch: int, threads: int, *, measure: bool,
                fmt: str | None = None) -> dict[str, float]:
    """Seconds, peak RSS and source count of ``detect`` in a fresh process (batch 0: auto);
    with ``fmt``, the catalogue is also written in that format (seconds of writing, bytes;
    the peak RSS then covers detect and writing)."""
    out_path = store.with_name(store.stem + "_bench" + _SUFFIX[fmt]) if fmt else Path("")
    try:
        out = subprocess.run([sys.executable, "-c", _CHILD, str(store), str(model), str(batch),
                              str(threads), "1" if measure else "0", fmt or "", str(out_path)],
                             check=True, capture_output=True, text=True)
    finally:
        if fmt:
            out_path.unlink(missing_ok=True)
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def _raw(store: Path, model_path: Path, batch: int, threads: int) -> float:
    """Seconds ONNX Runtime alone needs for every tile the engine's plan runs (batch 0:
    the engine's default for this machine)."""
    model = load_model(model_path, threads=threads)
    batch = batch or model.default_batch
    c = model.contract
    img = streamdet.open_image(store)
    ny, nx = img.shape
    chunks = tuple(int(n) for n in img.data.data.chunksize)
    cfg = _configure(c, (chunks[0], chunks[1]), chunk=None, halo=None, tile=None, batch=batch,
                     threshold=None, iou_threshold=None, split_every=4)
    s = c.stride[-1]
    limit = (0, padded_size(ny, s), 0, padded_size(nx, s))
    shapes: Counter[tuple[int, int]] = Counter()
    for w in plan_windows(limit, core=cfg.chunk, halo=cfg.halo + cfg.margin, stride=s,
                          limit=limit):
        for t in window_tiles(w, tile=cfg.tile, halo=cfg.halo, margin=cfg.margin, limit=limit,
                              stride=s):
            shapes[t.region_shape] += 1
    rng = np.random.default_rng(0)
    total = 0.0
    for shape, count in shapes.items():
        n = min(count, batch)
        x = rng.random((n, 1, *shape), dtype=np.float32)
        model.run(x)                                    # warm-up
        reps = max(1, min(8, count // n))
        t0 = time.perf_counter()
        for _ in range(reps):
            model.run(x)
        per_tile = (time.perf_counter() - t0) / (reps * n)
        total += per_tile * count
    return total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[4096, 16384])
    ap.add_argument("--model", type=Path, default=None)
    ap.add_argument("--batch", type=int, default=0,
                    help="tiles per model call (default 0: the engine's default, 1 on CPU)")
    ap.add_argument("--repeat", type=int, default=3,
                    help="runs of each measurement, interleaved; the fastest counts "
                         "(shared machines are noisy)")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 2,
                    help="intra-op threads of the raw measurement (default: every core)")
    ap.add_argument("--engine-threads", type=int, default=0,
                    help="detect's threads option (default 0: the engine's default)")
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--no-faint", action="store_true",
                    help="simulate the fields without the faint population (fewer detections)")
    ap.add_argument("--no-measure", action="store_true",
                    help="detect(measure=False): keep the network's fluxes and sizes")
    ap.add_argument("--formats", nargs="+", default=None, choices=sorted(_FORMATS),
                    metavar="FMT",
                    help="also write the catalogue in each format (ecsv, txt or sdc1, fits, "
                         "parquet), one process per format, and report each one's peak RSS")
    args = ap.parse_args()
    formats: list[str | None] = ([_FORMATS[f] for f in dict.fromkeys(args.formats)]
                                 if args.formats else [None])
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench_detect_"))
    workdir.mkdir(parents=True, exist_ok=True)
    print(f"batch {args.batch or 'default'}, best of {args.repeat}, raw threads {args.threads}, "
          f"engine threads {args.engine_threads or 'default'}, "
          f"measurement {'off' if args.no_measure else 'on'}, workdir {workdir}")
    with_fmt = formats != [None]
    fmt_head = f" {'format':>8} {'write s':>8} {'file MB':>8}" if with_fmt else ""
    print(f"{'size':>7}{fmt_head} {'Mpix':>8} {'e2e s':>8} {'e2e Mpix/s':>11} {'raw s':>8} "
          f"{'raw Mpix/s':>11} {'e2e/raw':>8} {'peak RSS MB':>12} {'sources':>8}")
    peaks: dict[str | None, list[tuple[int, float]]] = {f: [] for f in formats}
    for size in args.sizes:
        store = _prepare(size, workdir, faint=not args.no_faint)
        model = _model_for(store, args.model)
        print(f"model {model}")
        runs: dict[str | None, list[dict[str, float]]] = {f: [] for f in formats}
        raws = []
        for _ in range(args.repeat):
            for fmt in formats:
                runs[fmt].append(_end_to_end(store, model, args.batch, args.engine_threads,
                                             measure=not args.no_measure, fmt=fmt))
            raws.append(_raw(store, model, args.batch, args.threads))
        raw = min(raws)
        mpix = size * size / 1e6
        for fmt in formats:
            e2e = min(runs[fmt], key=lambda r: r["seconds"])
            e2e["rss_mb"] = max(r["rss_mb"] for r in runs[fmt])
            e2e["write_s"] = min(r["write_s"] for r in runs[fmt])
            ratio = raw / e2e["seconds"]
            peaks[fmt].append((size, e2e["rss_mb"]))
            fmt_cols = (f" {fmt:>8} {e2e['write_s']:>8.2f} {e2e['bytes'] / 1e6:>8.1f}"
                        if with_fmt else "")
            print(f"{size:>7}{fmt_cols} {mpix:>8.1f} {e2e['seconds']:>8.1f} "
                  f"{mpix / e2e['seconds']:>11.2f} {raw:>8.1f} {mpix / raw:>11.2f} "
                  f"{ratio:>8.2f} {e2e['rss_mb']:>12.0f} {int(e2e['n']):>8}", flush=True)
    for fmt, rows in peaks.items():
        if len(rows) > 1:
            print(f"peak RSS ratio {rows[-1][0]}^2 / {rows[0][0]}^2"
                  + (f" ({fmt})" if fmt else "") + f": {rows[-1][1] / rows[0][1]:.2f}")
    if with_fmt and len(formats) > 1:
        for size in args.sizes:
            at = [rss for f in formats for s, rss in peaks[f] if s == size]
            print(f"{size}^2: peak RSS over formats {min(at):.0f}-{max(at):.0f} MB "
                  f"(largest / smallest {max(at) / min(at):.2f})")
    print(f"(parent peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB)")


if __name__ == "__main__":
    main()
