"""Scale-out throughput: ``detect`` on a local Dask cluster of 1 and 2 worker processes.

For each image size (default 4096^2 and 16384^2; the 16384^2 store is a simulated
4096^2 SDC1-like 560 MHz field tiled 4 x 4, so it costs seconds to build rather than a
35 s, 2 GB simulation; the detector's work per pixel is the same), each worker count runs
in a fresh process that starts a ``distributed.LocalCluster`` (processes, one thread each,
loopback, no dashboard), opens each worker's ONNX Runtime session once (not timed: it is
the same whatever the image), then times ``streamdet.detect(store, client=client,
parts=DIR)`` (a parts directory, as the command line always keeps: the windows'
detections and the tree reduction's partial catalogues go to disk, not the workers'
memory; ``--no-parts`` runs without one):

* **Mpix/s** of image, end to end (the catalogue back on the client);
* **speed-up** from 1 to 2 workers (target >= 1.8x on this 2-core machine);
* **start s**: the cluster's start and each worker's warm-up (imports, the session, one
  512^2 detection, a first read of the store), which a command pays once per run and
  which the Mpix/s do not include;
* **scheduler overhead per task**: (a) the CPU time of the process that holds the client
  and the scheduler (``LocalCluster`` runs its scheduler there) while the graph runs
  (``streamdet.engine._cluster.compute``), per task of the graph; (b) the round trip of a
  trivial task through the same cluster (``client.map`` of as many no-op tasks as the
  detection graph has, wall time / tasks); (c) the workers' idle share during the run,
  from the task stream: (wall x threads - busy time) / tasks;
* **CPU seconds** of the workers together, and of the client/scheduler process, during
  the run: on a machine shared with other work (where the wall-clock speed-up says
  little) the work added by distributing it;
* **peak RSS per worker**: every worker process's RSS sampled with psutil every 0.1 s
  during the run, the largest of the workers: while the windows run (until the last
  window task ends: target flat from 4096^2 to 16384^2), and over the whole run ("at
  end": the last merges, the root's on one worker, hold the catalogue itself, ~60 bytes
  a source per copy); and the client process's own peak (VmHWM).

With ``--threaded``, the ordinary single-process run (threads) is timed too, for scale.
Runs are repeated ``--repeat`` times interleaved; the fastest counts, RSS is the largest.

    python benchmarks/bench_scale.py [--sizes 4096 16384] [--workers 1 2] [--repeat 1]
        [--workdir DIR] [--threaded]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_detect import _model_for

import streamdet

BLOCK = 2880


def _prepare(size: int, workdir: Path, *, base: int = 4096, seed: int = 4096) -> Path:
    """A Zarr store of ``size``^2 (1024^2 chunks): a simulated ``base``^2 field, tiled."""
    store = workdir / f"scale_{size}_{base}.zarr"
    if store.exists():
        return store
    tile_fits = workdir / f"scale_tile_{base}.fits"
    if not tile_fits.exists():
        streamdet.simulate(tile_fits, size=base, freq=560, seed=seed, quiet=True)
    if size == base:
        streamdet.convert(tile_fits, store, chunks=1024, quiet=True)
        return store
    if size % base:
        raise SystemExit(f"size {size} must be a multiple of {base}")
    from astropy.io import fits

    with fits.open(tile_fits, memmap=True) as hdul:
        header = hdul[0].header.copy()
        data = np.asarray(hdul[0].data, np.float32)
    plane = data.reshape(data.shape[-2:])
    reps = size // base
    header["NAXIS1"], header["NAXIS2"] = size, size
    header["CRPIX1"] = header["CRPIX1"] + (size - base) / 2
    header["CRPIX2"] = header["CRPIX2"] + (size - base) / 2
    big = workdir / f"scale_{size}.fits"
    with open(big, "wb") as f:
        f.write(header.tostring().encode("ascii"))
        row = np.tile(plane, (1, reps)).astype(">f4").tobytes()
        for _ in range(reps):
            f.write(row)
        nbytes = size * size * 4 * int(np.prod(data.shape[:-2]))
        f.write(b"\0" * (-nbytes % BLOCK))
    streamdet.convert(big, store, chunks=1024, quiet=True)
    big.unlink()
    return store


_CHILD = r"""
import json, os, sys, threading, time, warnings
warnings.simplefilter("ignore")
import logging
logging.getLogger("distributed").setLevel(logging.ERROR)
import psutil
import distributed
import streamdet
import streamdet.engine._cluster as _cluster
from streamdet.engine._cluster import model_spec, worker_model
from streamdet.engine.contract import load_model

store, model_path, nworkers = sys.argv[1], sys.argv[2], int(sys.argv[3])
parts = sys.argv[4] or None   # "" : no parts directory (the Python API's default)


def noop(i):
    return i


_compute, _cpu = _cluster.compute, []


def _timed_compute(*args, **kwargs):
    # the CPU of this process (client and scheduler) while the graph runs, without the
    # client's own work before (graph) and after (the table in sky coordinates)
    t = time.process_time()
    try:
        return _compute(*args, **kwargs)
    finally:
        _cpu.append(time.process_time() - t)


_cluster.compute = _timed_compute


def warm(spec):
    # imports, the session and one small detection, in this worker (untimed)
    import numpy as np
    from streamdet.engine.detect import detect_pixels
    model = worker_model(spec)
    rng = np.random.default_rng(0)
    detect_pixels(rng.normal(0, 4e-7, (512, 512)).astype("f4"), model=model, threads=1)
    from streamdet.io.image import open_image
    open_image(store).data[:64, :64].values   # the store's first read (zarr's set-up)
    return os.getpid()


if __name__ == "__main__":
    t_start = time.perf_counter()
    with distributed.LocalCluster(n_workers=nworkers, threads_per_worker=1, processes=True,
                                  host="127.0.0.1", dashboard_address="127.0.0.1:0",
                                  silence_logs=logging.ERROR) as cluster, \
            distributed.Client(cluster) as client:
        spec = model_spec(load_model(model_path, threads=1))
        client.run(warm, spec)   # each worker's imports and session, once, untimed
        start_s = time.perf_counter() - t_start
        pids = list(client.run(os.getpid).values())
        procs = [psutil.Process(p) for p in pids]
        samples = []   # (time, pid, rss)
        stop = threading.Event()

        def sample():
            while not stop.is_set():
                for pr in procs:
                    try:
                        samples.append((time.time(), pr.pid, pr.memory_info().rss))
                    except psutil.Error:
                        pass
                stop.wait(0.1)

        def cpu_of(pr):
            t = pr.cpu_times()
            return t.user + t.system

        cpu_before = [cpu_of(pr) for pr in procs]
        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        with distributed.get_task_stream(client) as ts:
            t0 = time.perf_counter()
            table = streamdet.detect(store, model=model_path, client=client, threads=1,
                                     parts=parts)
            wall = time.perf_counter() - t0
        if parts:
            from streamdet.engine._resume import remove_parts
            remove_parts(parts)
        cpu = sum(_cpu)
        worker_cpu = sum(cpu_of(pr) - c for pr, c in zip(procs, cpu_before))
        stop.set()
        sampler.join()
        busy = sum(s["stop"] - s["start"] for task in ts.data for s in task["startstops"]
                   if s["action"] == "compute")
        # the window phase ends when the last window task does; the merges above it, the
        # root's on one worker, hold the catalogue itself
        windows_end = max(s["stop"] for task in ts.data for s in task["startstops"]
                          if s["action"] == "compute" and str(task["key"]).startswith("window-"))
        peak = {p: max([r for t, q, r in samples if q == p] or [0]) for p in pids}
        peak_windows = {p: max([r for t, q, r in samples if q == p and t <= windows_end] or [0])
                        for p in pids}
        ntasks = len(ts.data)
        t1 = time.perf_counter()
        client.gather(client.map(noop, range(ntasks), pure=False))
        noop_s = time.perf_counter() - t1
        rss = next(float(line.split()[1]) / 1024 for line in open("/proc/self/status")
                   if line.startswith("VmHWM:"))
    print(json.dumps({"seconds": wall, "n": len(table), "tasks": ntasks, "busy_s": busy,
                      "start_s": start_s, "sched_ms": 1e3 * cpu / max(1, ntasks),
                      "sched_s": cpu, "worker_cpu_s": worker_cpu,
                      "noop_ms": 1e3 * noop_s / max(1, ntasks),
                      "idle_ms": 1e3 * (wall * nworkers - busy) / max(1, ntasks),
                      "worker_rss_mb": [peak[p] / 2**20 for p in pids],
                      "window_rss_mb": [peak_windows[p] / 2**20 for p in pids],
                      "client_rss_mb": rss}))
"""

_THREADED = r"""
import json, sys, time
import streamdet
store, model_path = sys.argv[1], sys.argv[2]
t0 = time.perf_counter()
table = streamdet.detect(store, model=model_path)
wall = time.perf_counter() - t0
rss = next(float(line.split()[1]) / 1024 for line in open("/proc/self/status")
           if line.startswith("VmHWM:"))
print(json.dumps({"seconds": wall, "n": len(table), "rss_mb": rss}))
"""


def _run(code: str, *args: str) -> dict[str, float]:
    out = subprocess.run([sys.executable, "-c", code, *args], check=True, capture_output=True,
                         text=True)
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[4096, 16384])
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--base", type=int, default=4096,
                    help="side of the simulated field that larger stores tile")
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--no-parts", action="store_true",
                    help="run without a parts directory (the Python API's default; the "
                         "command line always keeps one): the partial catalogues of the "
                         "tree reduction are then held in the workers' memory")
    ap.add_argument("--threaded", action="store_true",
                    help="also time the ordinary single-process (threaded) run")
    args = ap.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench_scale_"))
    workdir.mkdir(parents=True, exist_ok=True)
    print(f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} at start, "
          f"best of {args.repeat}, workdir {workdir}, "
          f"{'no parts' if args.no_parts else 'parts directory'}", flush=True)
    print(f"{'size':>6} {'workers':>8} {'e2e s':>7} {'Mpix/s':>7} {'speed-up':>9} "
          f"{'start s':>8} {'tasks':>6} {'sched CPU ms/task':>18} {'noop ms/task':>13} "
          f"{'idle ms/task':>13} "
          f"{'worker RSS MB':>14} {'(at end)':>10} {'client RSS MB':>14} {'sources':>8} "
          f"{'worker CPU s':>13} {'sched CPU s':>12}",
          flush=True)
    peaks: dict[int, list[float]] = {}
    for size in args.sizes:
        store = _prepare(size, workdir, base=min(args.base, size))
        model = _model_for(store, None)
        mpix = size * size / 1e6
        runs: dict[int, list[dict[str, float]]] = {n: [] for n in args.workers}
        threaded = []
        for _ in range(args.repeat):
            for n in args.workers:
                parts = "" if args.no_parts else str(workdir / f".bench_scale_{n}.parts")
                runs[n].append(_run(_CHILD, str(store), str(model), str(n), parts))
            if args.threaded:
                threaded.append(_run(_THREADED, str(store), str(model)))
        first = None
        for n in args.workers:
            best = min(runs[n], key=lambda r: r["seconds"])
            worker_rss = max(max(r["worker_rss_mb"]) for r in runs[n])  # type: ignore[call-overload]
            window_rss = max(max(r["window_rss_mb"]) for r in runs[n])  # type: ignore[call-overload]
            client_rss = max(r["client_rss_mb"] for r in runs[n])
            first = first or best["seconds"]
            peaks.setdefault(n, []).append(window_rss)
            print(f"{size:>6} {n:>8} {best['seconds']:>7.1f} {mpix / best['seconds']:>7.2f} "
                  f"{first / best['seconds']:>8.2f}x {best['start_s']:>8.1f} "
                  f"{int(best['tasks']):>6} {best['sched_ms']:>18.2f} "
                  f"{best['noop_ms']:>13.2f} {best['idle_ms']:>13.2f} {window_rss:>14.0f} "
                  f"{worker_rss:>10.0f} "
                  f"{client_rss:>14.0f} {int(best['n']):>8} {best['worker_cpu_s']:>13.1f} "
                  f"{best['sched_s']:>12.1f}", flush=True)
        if threaded:
            best = min(threaded, key=lambda r: r["seconds"])
            rss = max(r["rss_mb"] for r in threaded)
            print(f"{size:>6} {'threads':>8} {best['seconds']:>7.1f} "
                  f"{mpix / best['seconds']:>7.2f} {'':>9} {'':>8} {'':>6} {'':>18} {'':>13} "
                  f"{'':>13} "
                  f"{'':>14} {'':>10} {rss:>14.0f} {int(best['n']):>8}", flush=True)
    for n, rows in peaks.items():
        if len(rows) > 1:
            print(f"{n} worker(s): peak worker RSS while the windows run, "
                  f"{args.sizes[-1]}^2 / {args.sizes[0]}^2 = "
                  f"{rows[-1] / rows[0]:.2f}")
    print(f"load average {os.getloadavg()[0]:.2f} at the end")


if __name__ == "__main__":
    main()
