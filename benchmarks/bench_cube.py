"""SDC2 benchmark on simulated HI cubes: streamdet's cube detection beside SoFiA-2.

For each seed (two fresh ones by default) a cube of at least 512 x 512 x 1024 voxels
(numpy ``(nz, ny, nx)`` = ``(1024, 512, 512)`` by default, in the middle of the SDC2
band) and its truth are simulated with :func:`streamdet.sim.simulate_cube.simulate_cube`;
SoFiA-2 runs on it with Team SoFiA's SDC2 settings (``benchmarks/_sofia.py``) and its
catalogue, converted to the SDC2 format, is scored against the cube's truth with
:func:`streamdet.catalogue.sdc2.score_sdc2` (the official ``ska_sdc.Sdc2Scorer``) at each
reliability threshold. A Markdown table is printed: finder, setting, score, N_det,
N_match, purity, time (s), Mvoxel/s end to end, the model's own Mvoxel/s and peak RSS
(MB) of the finder; then the mean score of each of the scorer's seven terms over the
matches.

SoFiA-2's reliability threshold only drops sources after linking, so by default it runs
once, at the lowest threshold asked for, and the higher thresholds are that catalogue
cut at ``rel >= threshold`` (same sources and parameters as separate runs; the time and
RSS shown are that one run's). ``--separate-runs`` runs SoFiA once per threshold.

streamdet's half (``--skip-streamdet`` leaves it out) runs ``streamdet.detect_cube`` on
the FITS cube in a fresh process (the bundled 3D model unless ``--model``): its wall time
(reading the cube included), voxels per second end to end, its peak RSS (VmHWM), and the
model alone on the run's largest window (all cores; window-core voxels per second, the
ceiling of the end-to-end rate). Then (``--no-large`` skips it) a cube 4x larger, twice
the pixels on each sky axis, from the first seed, is detected the same way: its peak RSS
against the first cube's shows whether memory stays flat.

Build SoFiA-2 first (outside the repository)::

    bash ../shared/peers/build_sofia2.sh /work/peers/sofia2

Run::

    python benchmarks/bench_cube.py                           # two seeds, 1024 x 512 x 512
    python benchmarks/bench_cube.py --seeds 5151001 --json out.json
    python benchmarks/bench_cube.py --shape 256 128 128 --seeds 1 --skip-streamdet  # quick
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from astropy.io import fits
from astropy.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _sofia

from streamdet.catalogue.sdc2 import Sdc2Result, score_sdc2, to_sdc2
from streamdet.errors import StreamdetError
from streamdet.sim.simulate_cube import CUBE_SKY_VERSION, SDC2_NOISE, cube_truth, simulate_cube

#: Fresh seeds: the 3D detector trains on seeds 0, 1, 2, ... (export/train3d.py).
DEFAULT_SEEDS = (5_151_001, 5_151_002)
#: (nz, ny, nx): 512 x 512 pixels, 1024 channels (30.7 MHz).
DEFAULT_SHAPE = (1024, 512, 512)
#: Reliability thresholds of SoFiA-2: Team SoFiA's 0.1, and higher ones.
DEFAULT_THRESHOLDS = (0.1, 0.3, 0.6, 0.8, 0.9)
#: SDC2 channels in the band (950-1150 MHz at 30 kHz).
SDC2_CHANNELS = 6668


@dataclasses.dataclass
class Row:
    """One line of the results table."""

    seed: int
    finder: str
    setting: str
    score: float | None = None
    n_det: int | None = None
    n_match: int | None = None
    purity: float | None = None
    seconds: float | None = None
    rss_mb: float | None = None
    mvox_s: float | None = None
    model_mvox_s: float | None = None
    note: str = ""
    accuracy: dict[str, float] = dataclasses.field(default_factory=dict)

    @classmethod
    def scored(cls, seed: int, finder: str, setting: str, r: Sdc2Result, *,
               seconds: float, rss_mb: float, mvox_s: float | None = None,
               model_mvox_s: float | None = None, note: str = "") -> Row:
        return cls(seed=seed, finder=finder, setting=setting, score=r.score, n_det=r.n_det,
                   n_match=r.n_match, purity=r.purity, seconds=seconds, rss_mb=rss_mb,
                   mvox_s=mvox_s, model_mvox_s=model_mvox_s, note=note,
                   accuracy=dict(r.accuracy))


def _fmt(value: float | int | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def markdown(rows: Sequence[Row]) -> str:
    """The results as a Markdown table."""
    head = ("| seed | finder | setting | score | N_det | N_match | purity | time s | "
            "Mvoxel/s | model Mvoxel/s | peak RSS MB | note |")
    lines = [head, "| " + " | ".join(["---"] * 12) + " |"]
    for r in rows:
        lines.append(f"| {r.seed} | {r.finder} | {r.setting} | {_fmt(r.score, '.2f')} | "
                     f"{_fmt(r.n_det, 'd')} | {_fmt(r.n_match, 'd')} | "
                     f"{_fmt(r.purity, '.3f')} | {_fmt(r.seconds, '.1f')} | "
                     f"{_fmt(r.mvox_s, '.2f')} | {_fmt(r.model_mvox_s, '.2f')} | "
                     f"{_fmt(r.rss_mb, '.0f')} | {r.note} |")
    return "\n".join(lines)


def markdown_accuracy(rows: Sequence[Row]) -> str:
    """Mean score of each SDC2 term over the matches of each scored row, as Markdown."""
    terms = ("position", "central_freq", "flux", "hi_size", "pa", "w20", "i")
    lines = ["| seed | finder | setting | " + " | ".join(terms) + " |",
             "| " + " | ".join(["---"] * (3 + len(terms))) + " |"]
    for r in rows:
        if r.accuracy:
            vals = " | ".join(_fmt(r.accuracy.get(t), ".2f") for t in terms)
            lines.append(f"| {r.seed} | {r.finder} | {r.setting} | {vals} |")
    return "\n".join(lines)


def run_sofia_rows(seed: int, cube: Path, truth: Table, work: Path, *,
                   thresholds: Sequence[float], separate: bool, threads: int,
                   sofia: str | None, timeout: float | None) -> list[Row]:
    """SoFiA-2 on one cube, scored at each reliability threshold."""
    header = fits.getheader(cube)
    rows: list[Row] = []
    if separate:
        for thr in thresholds:
            run = _sofia.run_sofia(cube, work / f"sofia-r{thr:g}", reliability_threshold=thr,
                                   threads=threads, sofia=sofia, timeout=timeout)
            cat = _sofia.to_sdc2(run.catalogue, header)
            rows.append(Row.scored(seed, "SoFiA-2", f"reliability {thr:g}",
                                   score_sdc2(cat, truth), seconds=run.seconds,
                                   rss_mb=run.rss_mb, note="own run"))
        return rows
    low = min(thresholds)
    run = _sofia.run_sofia(cube, work / "sofia", reliability_threshold=low, threads=threads,
                           sofia=sofia, timeout=timeout)
    for thr in thresholds:
        cat = _sofia.to_sdc2(run.catalogue, header, min_rel=thr)
        note = "run" if thr == low else f"run at {low:g}, cut at rel >= {thr:g}"
        rows.append(Row.scored(seed, "SoFiA-2", f"reliability {thr:g}", score_sdc2(cat, truth),
                               seconds=run.seconds, rss_mb=run.rss_mb, note=note))
    return rows


#: streamdet's half runs in a fresh process (its own peak RSS, no simulation in it): detect
#: the cube, write the catalogue, then time the model alone on the run's largest window.
_CHILD = r"""
import json, os, sys, time
import numpy as np
import streamdet
from streamdet.engine.contract import load_model
from streamdet.engine.detect_cube import configure, plan_cube
cube, out, opts = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
t0 = time.perf_counter()
cat = streamdet.detect_cube(cube, **opts)
seconds = time.perf_counter() - t0
cat.write(out, format="ascii.ecsv", overwrite=True)
# VmHWM, not getrusage: Linux carries the parent's pre-exec peak into ru_maxrss.
rss = next(float(line.split()[1]) / 1024 for line in open("/proc/self/status")
           if line.startswith("VmHWM"))
model = load_model(cat.meta["model"], ndim=3, threads=os.cpu_count() or 1)
cfg = configure(model.contract, cat.meta["shape"], window=cat.meta["window"],
                halo=cat.meta["halo"], margin=cat.meta["margin"])
win = max(plan_cube(cat.meta["shape"], cfg, model.contract.stride),
          key=lambda w: w.core_pixels)
x = np.random.default_rng(0).normal(size=(1, 1, *win.region_shape)).astype(np.float32)
model.run(x)
t1 = time.perf_counter()
for _ in range(3):
    model.run(x)
per_window = (time.perf_counter() - t1) / 3
print(json.dumps({"seconds": seconds, "rss_mb": rss, "n": len(cat),
                  "model_core_voxels_s": win.core_pixels / per_window,
                  "region": list(win.region_shape), "core": win.core_pixels}))
"""


def run_streamdet(cube: Path, out: Path, *, options: dict[str, Any] | None = None,
                  timeout: float | None = None) -> dict[str, Any]:
    """``streamdet.detect_cube`` on ``cube`` in a fresh process; its catalogue in ``out``.

    Returns
    -------
    dict
        ``seconds`` (detection, reading the cube included; not the interpreter start),
        ``rss_mb`` (the process's peak), ``n``, ``model_core_voxels_s`` (the model alone
        on the run's largest window, all cores, window cores per second: the ceiling of
        the end-to-end rate).
    """
    opts = {k: v for k, v in (options or {}).items() if v is not None}
    proc = subprocess.run([sys.executable, "-c", _CHILD, str(cube), str(out), json.dumps(opts)],
                          capture_output=True, text=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        raise StreamdetError(f"streamdet's cube detection failed:\n{proc.stderr[-2000:]}")
    doc: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return doc


def run_streamdet_rows(seed: int, cube: Path, truth: Table, work: Path, *,
                       options: dict[str, Any] | None = None,
                       timeout: float | None = None) -> list[Row]:
    """streamdet's cube detection on one cube, scored (a 'skipped' row when it cannot run:
    no 3D model fits the cube)."""
    opts = options or {}
    try:
        run = run_streamdet(cube, work / "streamdet.ecsv", options=opts, timeout=timeout)
    except StreamdetError as exc:
        return [Row(seed=seed, finder="streamdet", setting="-", note=f"skipped: {exc}")]
    cat = Table.read(work / "streamdet.ecsv", format="ascii.ecsv")
    r = score_sdc2(to_sdc2(cat), truth)
    setting = (Path(str(opts["model"])).name if opts.get("model") else "default model") + (
        f", obj >= {opts['threshold']}" if opts.get("threshold") is not None else "")
    nvox = math.prod(fits.getdata(cube, memmap=True).shape)
    return [Row.scored(seed, "streamdet", setting, r, seconds=run["seconds"],
                       rss_mb=run["rss_mb"], mvox_s=nvox / run["seconds"] / 1e6,
                       model_mvox_s=run["model_core_voxels_s"] / 1e6,
                       note="own process")]


def large_cube_rows(root: Path, *, seed: int, shape: tuple[int, int, int], offset: int,
                    args: argparse.Namespace) -> list[Row]:
    """streamdet on a cube 4x larger than ``shape`` (twice as many pixels on each sky
    axis): its peak RSS against the first cube's shows whether memory stays flat."""
    nz, ny, nx = shape
    big = (nz, 2 * ny, 2 * nx)
    work = root / f"large{seed}"
    work.mkdir(exist_ok=True)
    cube = work / "cube.fits"
    if args.reuse and _same_cube(cube, seed=seed, shape=big, offset=offset):
        truth = cube_truth(shape=big, seed=seed, channel_offset=offset)
    else:
        truth = simulate_cube(cube, truth=work / "truth.txt", shape=big, seed=seed,
                              channel_offset=offset, overwrite=True)
    new = run_streamdet_rows(seed, cube, truth, work, options={
        "model": args.model, "threshold": args.threshold, "window": args.window},
        timeout=args.timeout)
    for r in new:
        r.note = f"{nz} x {2 * ny} x {2 * nx} (4x) cube; " + r.note
    if not args.keep:
        cube.unlink(missing_ok=True)
    return new


def _same_cube(path: Path, *, seed: int, shape: tuple[int, int, int], offset: int) -> bool:
    """Whether ``path`` is the cube :func:`simulate_cube` would write for these arguments
    (default noise, no continuum), from its header and size."""
    if not path.is_file():
        return False
    try:
        h = fits.getheader(path)
    except OSError:
        return False
    nz, ny, nx = shape
    expect = {"NAXIS1": nx, "NAXIS2": ny, "NAXIS3": nz, "SIMSEED": seed,
              "SIMSKY": CUBE_SKY_VERSION, "SIMCONT": False, "SIMNOISE": SDC2_NOISE}
    if any(h.get(k) != v for k, v in expect.items()):
        return False
    data_bytes = -(-4 * nx * ny * nz // 2880) * 2880
    freq0 = 950e6 + offset * 30e3
    return (abs(float(h.get("CRVAL3", 0.0)) - freq0) < 1.0
            and path.stat().st_size == len(h.tostring()) + data_bytes)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", type=int, nargs=3, metavar=("NZ", "NY", "NX"),
                    default=DEFAULT_SHAPE, help="cube shape, channels first (default: "
                    "%(default)s)")
    ap.add_argument("--seeds", type=int, nargs="+", default=DEFAULT_SEEDS,
                    help="simulation seeds, one cube each (default: %(default)s)")
    ap.add_argument("--channel-offset", type=int, default=None,
                    help="first channel from 950 MHz (default: the middle of the SDC2 band)")
    ap.add_argument("--thresholds", type=float, nargs="+", default=DEFAULT_THRESHOLDS,
                    help="SoFiA-2 reliability thresholds (default: %(default)s)")
    ap.add_argument("--separate-runs", action="store_true",
                    help="run SoFiA-2 once per threshold instead of cutting one run")
    ap.add_argument("--sofia", default=None, help="SoFiA-2 binary (default: $SOFIA2, "
                    f"{_sofia.DEFAULT_BUILD}, or sofia on PATH)")
    ap.add_argument("--threads", type=int, default=0, help="SoFiA-2 threads (0: all cores)")
    ap.add_argument("--timeout", type=float, default=None, help="seconds per SoFiA-2 run")
    ap.add_argument("--skip-sofia", action="store_true", help="leave SoFiA-2 out")
    ap.add_argument("--skip-streamdet", action="store_true",
                    help="leave streamdet out")
    ap.add_argument("--model", default=None,
                    help="streamdet: 3D ONNX detector (default: the bundled one that fits)")
    ap.add_argument("--threshold", type=float, default=None,
                    help="streamdet: objectness threshold (default: the model's)")
    ap.add_argument("--window", type=int, nargs=3, default=None, metavar=("Z", "Y", "X"),
                    help="streamdet: window core (default 256 128 128)")
    ap.add_argument("--workdir", default=None, help="directory for cubes and outputs "
                    "(default: a temporary one, removed at the end)")
    ap.add_argument("--keep", action="store_true", help="keep the cubes and outputs")
    ap.add_argument("--reuse", action="store_true",
                    help="reuse a cube already in --workdir made with the same seed, shape, "
                    "band and simulator version (a cube is a pure function of those)")
    ap.add_argument("--json", default=None, help="also write the rows as JSON here")
    ap.add_argument("--no-large", dest="large", action="store_false",
                    help="skip the memory check on a cube 4x larger (twice the pixels on "
                    "each sky axis) that streamdet alone runs on")
    args = ap.parse_args(argv)

    nz, ny, nx = args.shape
    offset = (max(0, (SDC2_CHANNELS - nz) // 2) if args.channel_offset is None
              else args.channel_offset)
    if not args.skip_sofia and _sofia.find_sofia(args.sofia) is None:
        print(f"SoFiA-2 not found: bash {_sofia.BUILD_SCRIPT} {_sofia.DEFAULT_BUILD.parent} "
              "(or --sofia PATH, or --skip-sofia)", file=sys.stderr)
        return 1
    made = args.workdir is None
    root = Path(tempfile.mkdtemp(prefix="bench_cube-") if made else args.workdir)
    root.mkdir(parents=True, exist_ok=True)
    rows: list[Row] = []
    try:
        for seed in args.seeds:
            work = root / f"seed{seed}"
            work.mkdir(exist_ok=True)
            cube = work / "cube.fits"
            t0 = time.perf_counter()
            if args.reuse and _same_cube(cube, seed=seed, shape=(nz, ny, nx), offset=offset):
                truth = cube_truth(shape=(nz, ny, nx), seed=seed, channel_offset=offset)
                what = "reused"
            else:
                truth = simulate_cube(cube, truth=work / "truth.txt", shape=(nz, ny, nx),
                                      seed=seed, channel_offset=offset, overwrite=True)
                what = "simulated"
            sim_s = time.perf_counter() - t0
            print(f"seed {seed}: {what} {nz} x {ny} x {nx} voxels "
                  f"({950 + offset * 0.03:.2f}-{950 + (offset + nz - 1) * 0.03:.2f} MHz, "
                  f"{len(truth)} galaxies) in {sim_s:.0f} s", file=sys.stderr, flush=True)
            if not args.skip_sofia:
                new = run_sofia_rows(seed, cube, truth, work, thresholds=args.thresholds,
                                     separate=args.separate_runs, threads=args.threads,
                                     sofia=args.sofia, timeout=args.timeout)
                rows += new
                print(f"seed {seed}: SoFiA-2 {new[0].seconds:.0f} s, "
                      f"{new[0].rss_mb:.0f} MB", file=sys.stderr, flush=True)
            if not args.skip_streamdet:
                rows += run_streamdet_rows(seed, cube, truth, work, options={
                    "model": args.model, "threshold": args.threshold,
                    "window": args.window}, timeout=args.timeout)
                print(f"seed {seed}: streamdet {rows[-1].seconds or 0:.0f} s, "
                      f"{rows[-1].rss_mb or 0:.0f} MB", file=sys.stderr, flush=True)
            if not args.keep:
                cube.unlink(missing_ok=True)
        if args.large and not args.skip_streamdet:
            rows += large_cube_rows(root, seed=args.seeds[0], shape=(nz, ny, nx),
                                    offset=offset, args=args)
    finally:
        if made and not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    print(f"Cubes: {nz} x {ny} x {nx} voxels (channels x y x x), channel offset {offset}; "
          f"seeds {', '.join(map(str, args.seeds))}.\n")
    print(markdown(rows))
    if any(r.accuracy for r in rows):
        print("\nMean score of each term over the matches (1 = within the scorer's threshold):"
              "\n")
        print(markdown_accuracy(rows))
    if args.json:
        Path(args.json).write_text(json.dumps(
            {"shape": [nz, ny, nx], "channel_offset": offset, "seeds": list(args.seeds),
             "rows": [dataclasses.asdict(r) for r in rows]}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
