"""Catalogue quality: streamdet against SEP and PyBDSF, scored by the official SDC1 scorer.

Three sections, side by side in one run (``--sections``):

* **(a) real**: the real SDC1 560 MHz validation region (``benchmarks/_real.py``: rows
  620-956 of ``B1_1000h_west``, never used for training; the real truth lists every
  embedded source), scored inside the SDC1 training box (``train=True``) -- the headline;
* **(b) sim**: fresh simulated fields (``streamdet.simulate``, seeds never used in
  training or tuning, ``--seeds``) at 560 MHz and 1.4 GHz (``--freqs``), centred south of
  the pointing (:func:`default_offset`) so that the SDC1 training box, which the scorer's
  ``train=False`` rule drops, stays outside them;
* **(c) shifted**: one simulated sky the models were not made for: noise 30% higher,
  another primary-beam position, another morphology mix (10% AGN among the
  catalogue sources, about five times the population's 2.1% at 560 MHz).

Each field is searched by:

* **streamdet** (``detect`` on the FITS file, CPU, ``--threads`` ONNX Runtime threads),
  threshold presets ``best`` and ``purity`` of the model;
* **SEP** (``sep``: background mesh, beam-matched filter, Kron fluxes, isophotal
  moments corrected for the isophote cut, beam-deconvolved), at each ``--sep-thresh``;
* **PyBDSF** (``bdsf``: Gaussian fitting; deconvolved sizes of the source list), at
  each ``--bdsf-thresh`` (peak threshold; islands at 3 sigma; ``beam=`` given where
  the header has no BPA).

Every finder runs in a fresh subprocess (time from reading the image to the catalogue,
imports excluded; peak RSS of the process). All catalogues get the same primary-beam
correction (``_peers.pb_gain``: truth fluxes are true, unattenuated fluxes) and the
same SDC1 conversion (``streamdet.catalogue.outputs.to_sdc1`` defaults: size 2, class 3,
core_frac 0.0375); see ``benchmarks/_peers.py``. Peers are given several thresholds
and the ratio uses the best of them (chosen on each field itself, which favours them).

The peers are benchmark-only dependencies, not streamdet's::

    pip install sep bdsf

Usage::

    python benchmarks/bench_quality.py [--sections real sim shifted] [--freqs 560 1400]
        [--size 2048] [--seeds 4242424 5151515] [--model M.onnx] [--workdir DIR]
        [--skip-peers] [--skip-streamdet] [--threads 2] [--presets best purity]
        [--sep-thresh ...] [--bdsf-thresh 4 5] [--no-faint]

Prints, per field, a Markdown table (finder, threshold, score, N_det, N_match, purity,
acc_pc, time, peak RSS) and the per-term accuracies; then a summary, one line per
field, of streamdet's best preset at purity >= 0.95 against PyBDSF and the best peer;
writes ``results.json`` in the work directory.
"""

from __future__ import annotations

import argparse
import dataclasses
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
from streamdet.catalogue.catalog import read_sdc1, write_sdc1
from streamdet.errors import StreamdetError
from streamdet.sim.simulate import SKY_VERSION

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
    from streamdet.sim._population import band

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


def _score(row: Row, raw_path: Path, truth: Path, freq: int, workdir: Path, *,
           train: bool = False) -> Row:
    raw = Table.read(raw_path, format="ascii.ecsv")
    cat = sdc1_catalogue(raw, freq=freq)
    sub = workdir / (raw_path.stem + ".sdc1.txt")
    write_sdc1(cat, sub, overwrite=True)
    res = streamdet.score(cat, truth, freq=freq, train=train)
    row.score, row.n_det, row.n_match = res.score, res.n_det, res.n_match
    row.purity, row.acc_pc, row.accuracy = res.purity, res.acc_pc, dict(res.accuracy)
    return row


def _run(finder: str, label: str, options: dict[str, Any], image: Path, truth: Path,
         freq: int, workdir: Path, *, train: bool = False) -> Row:
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
    _score(row, out, truth, freq, workdir, train=train)
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


@dataclass(frozen=True)
class Field:
    """One image to score every finder on."""

    section: str
    name: str
    image: Path
    truth: Path
    freq: int
    train: bool            # score inside the SDC1 training box (the real region lies there)
    n_true: int
    note: str = ""


#: The shifted sky (section c): noise 30% above the band's, another primary-beam
#: position, five times the population's share of AGN, and a map calibrated to its sky
#: (flux scale 1, where the real SDC1 map and the simulator's default carry 0.92).
SHIFTED = {"noise_factor": 1.3, "offset": (0.35, -0.85), "agn_fraction": 0.10, "seed": 6_161_616,
           "flux_scale": 1.0}


def _sim_field(section: str, workdir: Path, *, size: int, freq: int, seed: int,
               offset: tuple[float, float], faint: bool = True,
               noise_scale: float = 1.0, agn_fraction: float | None = None,
               flux_scale: float | None = None, note: str = "") -> Field:
    tag = "" if noise_scale == 1.0 else f"_n{noise_scale:g}"
    tag += "" if agn_fraction is None else f"_agn{agn_fraction:g}"
    tag += "" if flux_scale is None else f"_fs{flux_scale:g}"
    stem = (f"field_{freq}_{size}_s{seed}_{offset[0]:+g}_{offset[1]:+g}"
            + ("_faint" if faint else "") + tag + f"_sky{SKY_VERSION}")
    image, truth = workdir / f"{stem}.fits", workdir / f"{stem}.truth.txt"
    if not (image.exists() and truth.exists()):
        table = streamdet.simulate(image, truth=truth, size=size, freq=freq, seed=seed,
                                   offset=offset, faint=faint, noise_scale=noise_scale,
                                   agn_fraction=agn_fraction, flux_scale=flux_scale,
                                   overwrite=True, quiet=True)
    else:
        table = read_sdc1(truth)
    n_box = in_training_box(table["ra_core"], table["dec_core"], freq)
    note = note + (f"; {n_box} truth rows in the SDC1 training box, not scored" if n_box else "")
    return Field(section, f"{freq} MHz seed {seed}", image, truth, freq, False, len(table),
                 note)


def fields(sections: list[str], workdir: Path, *, size: int, seeds: list[int],
           freqs: list[int], faint: bool = True,
           offset: tuple[float, float] | None = None) -> list[Field]:
    """The benchmark's images: (a) the real validation region, (b) fresh simulated
    fields per band and seed, (c) the shifted simulated sky."""
    out: list[Field] = []
    if "real" in sections:
        from _real import REGIONS, real_region

        try:
            image, truth, n = real_region("val", workdir)
        except FileNotFoundError as exc:
            print(f"note: {exc}; section (a) skipped", file=sys.stderr)
        else:
            y0, y1 = REGIONS["val"]
            out.append(Field("a", "real SDC1 560 MHz validation region", image, truth, 560,
                             True, n, f"rows {y0}-{y1 - 1} of B1_1000h_west (520 x "
                             f"{y1 - y0} px), real truth: every embedded source"))
    if "sim" in sections:
        for freq in freqs:
            for seed in seeds:
                off = offset if offset is not None else default_offset(size, freq)
                out.append(_sim_field("b", workdir, size=size, freq=freq, seed=seed,
                                      offset=off, faint=faint,
                                      note=f"{size}^2 px, offset {off} deg"))
    if "shifted" in sections:
        from streamdet.sim._population import band

        rms = SHIFTED["noise_factor"] * band(560).noise
        f = _sim_field("c", workdir, size=size, freq=560, seed=int(SHIFTED["seed"]),
                       offset=SHIFTED["offset"], faint=faint,
                       noise_scale=float(SHIFTED["noise_factor"]),
                       agn_fraction=float(SHIFTED["agn_fraction"]),
                       flux_scale=float(SHIFTED["flux_scale"]),
                       note=(f"{size}^2 px, noise {rms * 1e6:.3f} uJy/beam (1.3x), offset "
                             f"{SHIFTED['offset']} deg, AGN fraction "
                             f"{SHIFTED['agn_fraction']:g}, flux scale "
                             f"{SHIFTED['flux_scale']:g}"))
        out.append(dataclasses.replace(f, name="shifted sky, 560 MHz"))
    return out


def run_field(f: Field, args: argparse.Namespace, workdir: Path) -> list[Row]:
    """Every finder on one field."""
    rows: list[Row] = []
    model = None if args.skip_streamdet else _model(args.model, f.image)
    if model is not None:
        for preset in args.presets:
            rows.append(_run("streamdet", preset, {"model": str(model), "threshold": preset,
                                                   "threads": args.threads},
                             f.image, f.truth, f.freq, workdir, train=f.train))
    if not args.skip_peers:
        sep_th = args.sep_thresh or ([2.25, 2.5, 3.0] if f.freq == 1400 else [2.5, 3.0, 5.0])
        for name, module, threshs, key in (("sep", "sep", sep_th, "thresh"),
                                           ("bdsf", "bdsf", args.bdsf_thresh, "thresh_pix")):
            if importlib.util.find_spec(module) is None:
                rows.append(Row(finder=name, threshold="-",
                                note=f"not installed: pip install {module}"))
                continue
            for th in threshs:
                rows.append(_run(name, f"{th:g} sigma", {key: th}, f.image, f.truth, f.freq,
                                 workdir, train=f.train))
    return rows


def _best(rows: list[Row], finder: str | None = None, *, min_purity: float = 0.0) -> Row | None:
    """Highest-scoring row of a finder (of any peer when None) at or above a purity."""
    cand = [r for r in rows if not math.isnan(r.score) and r.purity >= min_purity
            and (r.finder == finder if finder else r.finder != "streamdet")]
    return max(cand, key=lambda r: r.score, default=None)


def summary(results: list[tuple[Field, list[Row]]]) -> str:
    """One line per field: streamdet's best preset against PyBDSF and the best peer."""
    lines = ["| section | field | streamdet (preset) | purity | PyBDSF best | best peer | "
             "x PyBDSF | x best peer |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for f, rows in results:
        sd = _best(rows, "streamdet", min_purity=0.95) or _best(rows, "streamdet")
        bd, peer = _best(rows, "bdsf"), _best(rows)
        if sd is None:
            continue

        def ratio(r: Row | None, sd: Row = sd) -> str:
            return f"{sd.score / r.score:.2f}" if r is not None and r.score > 0 else "-"

        lines.append(
            f"| ({f.section}) | {f.name} | {sd.score:.1f} ({sd.threshold}) | {sd.purity:.3f} | "
            + (f"{bd.score:.1f} ({bd.threshold})" if bd else "-") + " | "
            + (f"{peer.finder} {peer.score:.1f} ({peer.threshold})" if peer else "-")
            + f" | {ratio(bd)} | {ratio(peer)} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[tuple[Field, list[Row]]]:
    """Command-line entry point; returns each field with its rows."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sections", nargs="+", choices=("real", "sim", "shifted"),
                    default=["real", "sim", "shifted"],
                    help="(a) real validation region, (b) simulated fields, (c) shifted sky")
    ap.add_argument("--freqs", type=int, nargs="+", choices=(560, 1400), default=[560, 1400])
    ap.add_argument("--size", type=int, default=2048, help="simulated field side, px")
    ap.add_argument("--seeds", type=int, nargs="+", default=[DEFAULT_SEED, 5_151_515])
    ap.add_argument("--offset", type=float, nargs=2, default=None, metavar=("DRA", "DDEC"),
                    help="simulated field centre offset from the pointing, deg (default: "
                         "default_offset(size, freq))")
    ap.add_argument("--model", type=Path, default=None,
                    help="ONNX model (default: the bundled model for each image)")
    ap.add_argument("--threads", type=int, default=2, help="streamdet ONNX Runtime threads")
    ap.add_argument("--presets", nargs="+", default=["best", "purity"])
    ap.add_argument("--sep-thresh", type=float, nargs="+", default=None,
                    help="SEP thresholds, sigma (default 2.5 3 5; 2.25 2.5 3 at 1.4 GHz)")
    ap.add_argument("--bdsf-thresh", type=float, nargs="+", default=[4.0, 5.0])
    ap.add_argument("--no-faint", action="store_true",
                    help="simulate the fields without the faint population")
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--skip-peers", action="store_true")
    ap.add_argument("--skip-streamdet", action="store_true")
    args = ap.parse_args(argv)

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench_quality_"))
    workdir.mkdir(parents=True, exist_ok=True)
    offset = (float(args.offset[0]), float(args.offset[1])) if args.offset else None
    todo = fields(args.sections, workdir, size=args.size, seeds=args.seeds, freqs=args.freqs,
                  faint=not args.no_faint, offset=offset)
    results: list[tuple[Field, list[Row]]] = []
    for f in todo:
        print(f"\n### ({f.section}) {f.name}: {f.n_true} true sources; {f.note}\n"
              f"{f.image}", flush=True)
        rows = run_field(f, args, workdir)
        results.append((f, rows))
        print()
        print(markdown(rows))
        print()
        print(accuracy_table(rows), flush=True)
    print("\n### Summary (streamdet: its best preset at purity >= 0.95; peers: their best "
          "threshold on each field)\n")
    print(summary(results))
    with open(workdir / "results.json", "w", encoding="utf-8") as fh:
        json.dump({"cpus": os.cpu_count(), "model": str(args.model),
                   "fields": [{**{k: str(v) if isinstance(v, Path) else v
                                  for k, v in asdict(f).items()},
                               "rows": [asdict(r) for r in rows]} for f, rows in results]},
                  fh, indent=1)
    print(f"\nresults: {workdir / 'results.json'}")
    return results


if __name__ == "__main__":
    main()
