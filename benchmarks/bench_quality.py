"""Catalogue quality: streamdet against SEP and PyBDSF, scored by the official SDC1 scorer.

One simulated SDC1-like field (``streamdet.simulate``, a seed never used in training,
centred south of the pointing (:func:`default_offset`) so that the SDC1 training box,
which the scorer's ``train=False`` rule drops, stays outside it) is searched by:

* **streamdet** (``detect`` on the FITS file, CPU, ``--threads`` ONNX Runtime threads),
  threshold presets ``best`` and ``purity`` of the model;
* **SEP** (``sep``: background mesh, beam-matched filter, Kron fluxes, isophotal
  moments corrected for the isophote cut, beam-deconvolved), at each ``--sep-thresh``;
* **PyBDSF** (``bdsf``: Gaussian fitting; deconvolved sizes of the source list), at
  each ``--bdsf-thresh`` (peak threshold; islands at 3 sigma).

Every finder runs in a fresh subprocess (time from reading the image to the catalogue,
imports excluded; peak RSS of the process). All catalogues get the same primary-beam
correction (the simulator's own beam, ``_peers.pb_gain``: truth fluxes are true,
unattenuated fluxes) and the same SDC1 conversion (``streamdet.outputs.to_sdc1``
defaults: size 2, class 3, core_frac 0.0375); see ``benchmarks/_peers.py``. Peers
are given several thresholds and the ratio uses the best of them (tuned on this very
field, which favours the peers).

The peers are benchmark-only dependencies, not streamdet's::

    pip install sep bdsf

Usage::

    python benchmarks/bench_quality.py [--freq 560|1400] [--size 4096] [--seed S]
        [--model M.onnx] [--workdir DIR] [--skip-peers] [--skip-streamdet]
        [--offset DRA DDEC] [--threads 2] [--presets best purity]
        [--sep-thresh 2.25 2.5 3 5] [--bdsf-thresh 4 5] [--no-faint]

The default thresholds hold each peer's best on the confused-sky fields of both bands
(PyBDSF 4 sigma at 560 MHz, SEP 2.25 sigma at 1.4 GHz; the README lists the scans).

Prints a Markdown table (finder, threshold, score, N_det, N_match, purity, acc_pc,
time, peak RSS), the per-term accuracies, and streamdet's score / best peer score;
writes ``results.json`` in the work directory.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from astropy.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _peers import run_finder, sdc1_catalogue

import streamdet
from streamdet.catalog import read_sdc1, write_sdc1
from streamdet.errors import StreamdetError

#: Default seed of the field: training uses seeds 0.. (fields) and seed + 1_000_003
#: (validation) of ``export.train.TrainConfig`` (seed 0 by default); this is neither.
DEFAULT_SEED = 4_242_424
#: SDC1 training box (scorer constants, deg; RA in -180..180): ``train=False`` drops it.
TRAIN_BOX = {560: (-0.6723, 0.0, -29.9400, -29.4061), 1400: (-0.2688, 0.0, -29.9400, -29.7265)}


def default_offset(size: int, freq: int) -> tuple[float, float]:
    """Field centre offset (deg) south of the pointing that keeps the field clear of the box.

    ``0.5 x 560 / freq`` deg south (the same primary-beam geometry in both bands), or
    more when the field is so tall that its north edge (plus 0.07 deg) would reach
    the training box, whose south edge lies 0.06 deg north of the pointing.
    """
    from streamdet._population import band

    half = 0.5 * size * band(freq).pixel_arcsec / 3600.0
    return (0.0, -round(max(0.5 * 560.0 / freq, half + 0.07), 3))


def in_training_box(ra: Any, dec: Any, freq: int) -> int:
    """How many of the positions (deg) lie in the SDC1 training box of the band."""
    ra_min, ra_max, dec_min, dec_max = TRAIN_BOX[freq]
    r = np.mod(np.asarray(ra, np.float64) + 180.0, 360.0) - 180.0
    d = np.asarray(dec, np.float64)
    return int(np.count_nonzero((r > ra_min) & (r < ra_max) & (d > dec_min) & (d < dec_max)))


@dataclass
class Row:
    """One finder run and its official score."""

    finder: str
    threshold: str
    score: float = math.nan
    n_det: int = 0
    n_match: int = 0
    purity: float = math.nan
    acc_pc: float = math.nan
    seconds: float = math.nan
    rss_mb: float = math.nan
    accuracy: dict[str, float] = field(default_factory=dict)
    note: str = ""


def _field(workdir: Path, *, size: int, freq: int, seed: int,
           offset: tuple[float, float], faint: bool) -> tuple[Path, Path, int, int]:
    stem = (f"field_{freq}_{size}_s{seed}_{offset[0]:+g}_{offset[1]:+g}"
            + ("_faint" if faint else ""))
    image, truth = workdir / f"{stem}.fits", workdir / f"{stem}.truth.txt"
    if not (image.exists() and truth.exists()):
        table = streamdet.simulate(image, truth=truth, size=size, freq=freq, seed=seed,
                                   offset=offset, faint=faint, overwrite=True, quiet=True)
    else:
        table = read_sdc1(truth)
    return image, truth, len(table), in_training_box(table["ra_core"], table["dec_core"], freq)


def _model(arg: Path | None, image: Path) -> Path | None:
    if arg is not None:
        return arg
    from streamdet.models import default_model

    img = streamdet.open_image(image)
    try:
        return default_model(freq_hz=img.freq_hz, pixel_scale_arcsec=img.pixel_scale_arcsec)
    except StreamdetError as exc:
        print(f"note: no bundled model for this image ({exc}); streamdet rows skipped",
              file=sys.stderr)
        return None


def _score(row: Row, raw_path: Path, truth: Path, freq: int, workdir: Path) -> Row:
    raw = Table.read(raw_path, format="ascii.ecsv")
    cat = sdc1_catalogue(raw, freq=freq)
    sub = workdir / (raw_path.stem + ".sdc1.txt")
    write_sdc1(cat, sub, overwrite=True)
    res = streamdet.score(cat, truth, freq=freq)
    row.score, row.n_det, row.n_match = res.score, res.n_det, res.n_match
    row.purity, row.acc_pc, row.accuracy = res.purity, res.acc_pc, dict(res.accuracy)
    return row


def _run(finder: str, label: str, options: dict[str, Any], image: Path, truth: Path,
         freq: int, workdir: Path) -> Row:
    row = Row(finder=finder, threshold=label)
    out = workdir / f"{image.stem}.{finder}_{label}.ecsv"
    t0 = time.perf_counter()
    try:
        stats = run_finder(finder, image, out, options)
    except RuntimeError as exc:
        row.note = str(exc).splitlines()[-1][:200]
        print(f"  {finder} {label}: FAILED {row.note}", file=sys.stderr, flush=True)
        return row
    row.seconds, row.rss_mb = float(stats["seconds"]), float(stats["rss_mb"])
    _score(row, out, truth, freq, workdir)
    print(f"  {finder} {label}: score {row.score:.1f}, {row.n_det} detections, "
          f"{row.seconds:.1f} s ({time.perf_counter() - t0:.1f} s with start-up and "
          "scoring)", file=sys.stderr, flush=True)
    return row


def _fmt(v: float, spec: str) -> str:
    return "-" if isinstance(v, float) and math.isnan(v) else format(v, spec)


def markdown(rows: list[Row]) -> str:
    """The results as a Markdown table (one line per finder and threshold)."""
    lines = ["| finder | threshold | score | N_det | N_match | purity | acc_pc | time s "
             "| peak RSS MB |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        name = r.finder + (f" ({r.note})" if r.note else "")
        lines.append(f"| {name} | {r.threshold} | {_fmt(r.score, '.1f')} | {r.n_det} | "
                     f"{r.n_match} | {_fmt(r.purity, '.3f')} | {_fmt(r.acc_pc, '.1f')} | "
                     f"{_fmt(r.seconds, '.1f')} | {_fmt(r.rss_mb, '.0f')} |")
    return "\n".join(lines)


def accuracy_table(rows: list[Row]) -> str:
    """Mean score of each SDC1 term per row, as a Markdown table."""
    terms = ("position", "flux", "b_maj", "b_min", "pa", "core_frac", "class")
    lines = ["| finder | threshold | " + " | ".join(terms) + " |",
             "| --- | --- |" + " ---: |" * len(terms)]
    for r in rows:
        if r.accuracy:
            lines.append(f"| {r.finder} | {r.threshold} | "
                         + " | ".join(f"{r.accuracy.get(t, math.nan):.3f}" for t in terms)
                         + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[Row]:
    """Command-line entry point; returns the rows."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--freq", type=int, choices=(560, 1400), default=560)
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--seed", type=int, default=DEFAULT_SEED)
    ap.add_argument("--offset", type=float, nargs=2, default=None, metavar=("DRA", "DDEC"),
                    help="field centre offset from the pointing, deg (default: "
                         "default_offset(size, freq))")
    ap.add_argument("--model", type=Path, default=None,
                    help="ONNX model (default: the bundled model for the image)")
    ap.add_argument("--threads", type=int, default=2, help="streamdet ONNX Runtime threads")
    ap.add_argument("--presets", nargs="+", default=["best", "purity"])
    ap.add_argument("--sep-thresh", type=float, nargs="+", default=[2.25, 2.5, 3.0, 5.0])
    ap.add_argument("--bdsf-thresh", type=float, nargs="+", default=[4.0, 5.0])
    ap.add_argument("--no-faint", action="store_true",
                    help="simulate the field without the faint population")
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--skip-peers", action="store_true")
    ap.add_argument("--skip-streamdet", action="store_true")
    args = ap.parse_args(argv)

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench_quality_"))
    workdir.mkdir(parents=True, exist_ok=True)
    offset = ((float(args.offset[0]), float(args.offset[1])) if args.offset is not None
              else default_offset(args.size, args.freq))
    image, truth, n_true, n_box = _field(workdir, size=args.size, freq=args.freq, seed=args.seed,
                                         offset=offset, faint=not args.no_faint)
    print(f"field: {args.size}^2 px at {args.freq} MHz, seed {args.seed}, offset {offset} deg, "
          f"{'without' if args.no_faint else 'with'} the faint population, "
          f"{n_true} true sources ({n_box} in the SDC1 training box, not scored); {image}",
          flush=True)

    rows: list[Row] = []
    model = None if args.skip_streamdet else _model(args.model, image)
    if model is not None:
        print(f"model: {model} (threads {args.threads})", flush=True)
        for preset in args.presets:
            rows.append(_run("streamdet", preset, {"model": str(model), "threshold": preset,
                                                   "threads": args.threads},
                             image, truth, args.freq, workdir))
    if not args.skip_peers:
        for name, module, threshs, key in (("sep", "sep", args.sep_thresh, "thresh"),
                                           ("bdsf", "bdsf", args.bdsf_thresh, "thresh_pix")):
            if importlib.util.find_spec(module) is None:
                rows.append(Row(finder=name, threshold="-",
                                note=f"not installed: pip install {module}"))
                continue
            for th in threshs:
                rows.append(_run(name, f"{th:g} sigma", {key: th}, image, truth, args.freq,
                                 workdir))

    print()
    print(markdown(rows))
    print()
    print(accuracy_table(rows))
    peers = [r.score for r in rows if r.finder != "streamdet" and not math.isnan(r.score)]
    best = max(peers, default=math.nan)
    for r in rows:
        if r.finder == "streamdet" and not math.isnan(r.score) and best > 0:
            print(f"\nstreamdet {r.threshold} / best peer: {r.score:.1f} / {best:.1f} = "
                  f"{r.score / best:.2f}", end="")
    print()
    with open(workdir / "results.json", "w", encoding="utf-8") as fh:
        json.dump({"freq": args.freq, "size": args.size, "seed": args.seed,
                   "faint": not args.no_faint,
                   "offset": offset, "n_true": n_true, "model": str(model),
                   "cpus": os.cpu_count(), "rows": [asdict(r) for r in rows]}, fh, indent=1)
    return rows


if __name__ == "__main__":
    main()
