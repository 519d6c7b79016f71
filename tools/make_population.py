"""Derive the simulator's packaged data from the real SDC1 material.

Reads the SDC1 training truth catalogues and the 560 MHz primary-beam model from
``shared/data/sdc1`` (or ``--src``) and writes two compact files:

``streamdet/data/sdc1_population.npz``
    Per band (``b560``, ``b1400``, ``b9200``): float32 ``flux`` (Jy, true flux),
    ``bmaj``/``bmin`` (arcsec), ``core_frac``; uint8 ``size`` (1 LAS, 2 Gaussian,
    3 exponential) and ``class`` (1 SS-AGN, 2 FS-AGN, 3 SFG). Scalars per band:
    ``density`` (sources per square degree, measured from the catalogue positions),
    ``noise`` (Jy/beam, see below) and ``flux_min`` (Jy).
``streamdet/data/pb_560.npz``
    The azimuthally averaged 560 MHz primary-beam gain: ``radius_deg`` and ``gain``.
``streamdet/data/agn_templates.npz``
    The real extended radio-galaxy images of ``agn_stamps`` (major axis along x,
    core at the centre) resampled to ``TEMPLATE`` x ``TEMPLATE`` float16 (peak 1),
    each with its largest angular size ``las`` and minor extent ``minor`` (the
    0.5 %-99.5 % flux-quantile extents along x and y, template pixels) and its flux
    ``centroid`` (x, y) relative to the centre (template pixels).

Choices (all documented in ``streamdet.sim.simulate``):

* density = number of catalogue rows / footprint, the footprint being the RA x Dec
  box spanned by the positions, each side widened by (n + 1) / (n - 1) (the
  unbiased range estimator for n uniform points; it matters only for 9.2 GHz).
* noise: 0.38 uJy/beam at 560 MHz (a real SDC1 B1 1000 h map), scaled to the other
  bands by the ratio of the faintest flux in each band's truth catalogue (SDC1
  cut each truth catalogue at a fixed multiple of its map noise).
* 9.2 GHz: its catalogue has only 30 sources, too few to resample. Its population
  is the 1.4 GHz one with fluxes scaled by (9200/1400)^alpha (alpha = -0.7 for
  steep-spectrum AGN and SFGs, 0 for flat-spectrum AGN) and sizes scaled, per
  (size, class) group with at least 3 sources at 9.2 GHz, by the ratio of the
  median 9.2 GHz to 1.4 GHz major axis (1 otherwise). The density and the noise
  still come from the 9.2 GHz catalogue itself.
* cleaning: core_frac clipped to [0, 1]; bmin <= bmaj; zero sizes kept (the
  simulator floors sizes when it renders and writes them).

Usage::

    python tools/make_population.py [--src DIR] [--out DIR]
"""

from __future__ import annotations

import argparse
import gzip
import io
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS, FITSFixedWarning
from numpy.typing import NDArray

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SRC = ROOT.parent / "shared" / "data" / "sdc1"
CATALOGUES = {560: "TrainingSet_B1_v2_ML.txt.gz", 1400: "TrainingSet_B2_v2_ML.txt",
              9200: "TrainingSet_B5_v2_ML.txt"}
NOISE_560 = 0.38e-6  # Jy/beam, real SDC1 B1 1000 h map (MAD-based rms)
SPECTRAL_INDEX = {1: -0.7, 2: 0.0, 3: -0.7}
TEMPLATE = 48  # side of an AGN template (pixels)
CROP = 0.3  # template half-width, as a fraction of the stamp side (the source spans ~0.4)
# column order of the SDC1 training catalogues
COLS = ("id", "ra_core", "dec_core", "ra_cent", "dec_cent", "flux", "core_frac", "bmaj",
        "bmin", "pa", "size", "class", "selection", "x", "y")


def read_training(path: Path) -> dict[str, NDArray[np.float64]]:
    """Read an SDC1 training catalogue: free-text header lines, then 15 numeric columns."""
    raw = gzip.open(path, "rt") if path.suffix == ".gz" else path.open()
    rows: list[list[float]] = []
    with raw as fh:
        for line in fh:
            parts = line.split()
            if len(parts) != len(COLS):
                continue
            try:
                rows.append([float(p) for p in parts])
            except ValueError:
                continue  # the column-title line
    arr = np.asarray(rows, dtype=np.float64)
    return {name: arr[:, i] for i, name in enumerate(COLS)}


def density(cat: dict[str, NDArray[np.float64]]) -> float:
    """Sources per square degree over the footprint spanned by the core positions."""
    n = cat["ra_core"].size
    widen = (n + 1) / (n - 1)
    ra = cat["ra_core"]
    dec = cat["dec_core"]
    dra = (ra.max() - ra.min()) * widen
    dmid = 0.5 * (dec.max() + dec.min())
    ddec = (dec.max() - dec.min()) * widen
    lo, hi = np.radians(dmid - ddec / 2), np.radians(dmid + ddec / 2)
    area_sr = np.radians(dra) * (np.sin(hi) - np.sin(lo))
    return float(n / (area_sr * (180.0 / np.pi) ** 2))


def clean(cat: dict[str, NDArray[np.float64]]) -> dict[str, NDArray[np.generic]]:
    """The per-source columns the simulator resamples, cleaned and compacted."""
    bmaj = np.maximum(cat["bmaj"], 0.0)
    bmin = np.minimum(np.maximum(cat["bmin"], 0.0), bmaj)
    return {
        "flux": cat["flux"].astype(np.float32),
        "bmaj": bmaj.astype(np.float32),
        "bmin": bmin.astype(np.float32),
        "core_frac": (np.clip(cat["core_frac"], 0.0, 1.0) + 0.0).astype(np.float32),  # no -0.0
        "size": cat["size"].astype(np.uint8),
        "class": cat["class"].astype(np.uint8),
    }


def scaled_9200(pop1400: dict[str, NDArray[np.generic]],
                cat9200: dict[str, NDArray[np.float64]]) -> tuple[dict[str, NDArray[np.generic]],
                                                                   dict[tuple[int, int], float]]:
    """The 1.4 GHz population moved to 9.2 GHz (see the module docstring)."""
    out = {k: np.array(v, copy=True) for k, v in pop1400.items()}
    cls = out["class"].astype(int)
    size = out["size"].astype(int)
    alpha = np.vectorize(SPECTRAL_INDEX.__getitem__)(cls)
    out["flux"] = (out["flux"] * (9200.0 / 1400.0) ** alpha).astype(np.float32)
    factors: dict[tuple[int, int], float] = {}
    for s in (1, 2, 3):
        for c in (1, 2, 3):
            m14 = (size == s) & (cls == c)
            m92 = (cat9200["size"] == s) & (cat9200["class"] == c)
            if not m14.any():
                continue
            f = 1.0
            if m92.sum() >= 3:
                med14 = float(np.median(np.asarray(out["bmaj"])[m14]))
                med92 = float(np.median(cat9200["bmaj"][m92]))
                if med14 > 0 and med92 > 0:
                    f = med92 / med14
            factors[(s, c)] = f
            out["bmaj"][m14] = (np.asarray(out["bmaj"])[m14] * f).astype(np.float32)
            out["bmin"][m14] = (np.asarray(out["bmin"])[m14] * f).astype(np.float32)
    return out, factors


def primary_beam_profile(path: Path) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """Azimuthal average of the PB map in rings one map pixel wide about the pointing centre.

    Rings cut by the map edge are averaged over the pixels present (the beam is
    nearly circular); the profile is forced to be non-increasing.
    """
    with fits.open(path) as hdul:
        data = np.squeeze(np.asarray(hdul[0].data, dtype=np.float64))
        with warnings.catch_warnings():  # 4-axis WCS keywords on a 2-axis image
            warnings.simplefilter("ignore", FITSFixedWarning)
            wcs = WCS(hdul[0].header).celestial
    ny, nx = data.shape
    yy, xx = np.mgrid[0:ny, 0:nx]
    ra, dec = wcs.all_pix2world(xx.ravel(), yy.ravel(), 0)
    cra, cdec = wcs.wcs.crval
    # great-circle separation from the pointing centre (the reference pixel)
    d1, d2 = np.radians(dec), np.radians(cdec)
    dra = np.radians(ra - cra)
    cosang = np.sin(d1) * np.sin(d2) + np.cos(d1) * np.cos(d2) * np.cos(dra)
    sep = np.degrees(np.arccos(np.clip(cosang, -1.0, 1.0))).reshape(ny, nx)
    step = abs(float(wcs.wcs.cdelt[1]))
    ring = np.rint(sep / step).astype(int)
    radius = [0.0]
    gain = [1.0]  # the beam is normalised to 1 on axis
    for k in range(1, int(ring.max()) + 1):
        sel = ring == k
        if sel.sum() < 4:  # rings cut by the map edge: keep those with a few pixels
            break
        radius.append(k * step)
        gain.append(float(data[sel].mean()))
    g = np.minimum.accumulate(np.asarray(gain))  # monotone non-increasing
    return np.asarray(radius, np.float32), g.astype(np.float32)


def _extent(profile: NDArray[np.float64]) -> float:
    """Distance between the 0.5 % and 99.5 % quantiles of a 1-D flux profile (pixels)."""
    c = np.cumsum(profile) / profile.sum()
    grid = np.arange(profile.size, dtype=np.float64)
    return float(np.interp(0.995, c, grid) - np.interp(0.005, c, grid))


def agn_templates(folder: Path) -> dict[str, Any]:
    """Resample the AGN stamps to compact templates (see the module docstring)."""
    from scipy.ndimage import gaussian_filter, map_coordinates

    images, las, minor, cent, names = [], [], [], [], []
    for path in sorted(folder.glob("*.fits*")):
        with fits.open(path) as hdul:
            d = np.nan_to_num(np.squeeze(np.asarray(hdul[0].data, dtype=np.float64)))
        d = np.clip(d, 0.0, None)
        if d.ndim != 2 or d.sum() <= 0:
            continue
        ny, nx = d.shape
        half = CROP * min(nx, ny)  # square crop about the stamp centre (the core)
        q = 2.0 * half / TEMPLATE  # stamp pixels per template pixel
        sm = gaussian_filter(d, 0.4 * q) if q > 1 else d
        j = (np.arange(TEMPLATE) + 0.5) * q - half  # template pixel centres, from the centre
        yy, xx = np.meshgrid(j + (ny - 1) / 2, j + (nx - 1) / 2, indexing="ij")
        t = map_coordinates(sm, [yy, xx], order=1, mode="grid-constant", cval=0.0,
                            prefilter=False)
        t = np.clip(t, 0.0, None) / t.max()
        t16 = t.astype(np.float16)
        tf = t16.astype(np.float64)
        tot = tf.sum()
        centre = (TEMPLATE - 1) / 2
        grid = np.arange(TEMPLATE, dtype=np.float64)
        px, py = tf.sum(axis=0), tf.sum(axis=1)
        images.append(t16)
        las.append(_extent(px))
        minor.append(_extent(py))
        cent.append(((px @ grid) / tot - centre, (py @ grid) / tot - centre))
        names.append(path.name.split(".fits")[0])
    return {"images": np.stack(images), "las": np.asarray(las, np.float32),
            "minor": np.asarray(minor, np.float32), "centroid": np.asarray(cent, np.float32),
            "names": np.asarray(names)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--src", type=Path, default=DEFAULT_SRC)
    ap.add_argument("--out", type=Path, default=ROOT / "streamdet" / "data")
    args = ap.parse_args()

    cats = {f: read_training(args.src / name) for f, name in CATALOGUES.items()}
    pops = {f: clean(c) for f, c in cats.items() if f != 9200}
    pops[9200], factors = scaled_9200(pops[1400], cats[9200])
    fmin = {f: float(c["flux"].min()) for f, c in cats.items()}

    arrays: dict[str, Any] = {}
    for f in (560, 1400, 9200):
        for k, v in pops[f].items():
            arrays[f"b{f}_{k}"] = v
        arrays[f"b{f}_density"] = np.float64(density(cats[f]))
        arrays[f"b{f}_flux_min"] = np.float64(fmin[f])
        arrays[f"b{f}_noise"] = np.float64(NOISE_560 * fmin[f] / fmin[560])
        arrays[f"b{f}_n_catalogue"] = np.int64(cats[f]["flux"].size)
    arrays["b9200_size_factors"] = np.array(
        [[s, c, v] for (s, c), v in sorted(factors.items())], np.float64)
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    (args.out / "sdc1_population.npz").write_bytes(buf.getvalue())

    radius, gain = primary_beam_profile(args.src / "PrimaryBeam_B1.fits")
    buf = io.BytesIO()
    np.savez_compressed(buf, radius_deg=radius, gain=gain, freq_mhz=np.float64(560.0))
    (args.out / "pb_560.npz").write_bytes(buf.getvalue())

    tpl = agn_templates(args.src / "agn_stamps")
    buf = io.BytesIO()
    np.savez_compressed(buf, **tpl)
    (args.out / "agn_templates.npz").write_bytes(buf.getvalue())
    print(f"{tpl['images'].shape[0]} AGN templates; LAS (template px) "
          f"{np.round(np.percentile(tpl['las'], [0, 50, 100]), 1).tolist()}")

    for f in (560, 1400, 9200):
        print(f"{f:5d} MHz: {pops[f]['flux'].size:6d} rows, density "
              f"{float(arrays[f'b{f}_density']):9.1f} /deg2, noise "
              f"{float(arrays[f'b{f}_noise']) * 1e6:.4f} uJy/beam, flux_min {fmin[f]:.3e} Jy")
    print("9200 MHz size factors (size, class, factor):", factors)
    print("PB profile:", np.round(radius, 4).tolist(), np.round(gain, 4).tolist())


if __name__ == "__main__":
    main()
