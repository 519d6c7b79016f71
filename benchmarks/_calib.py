"""Measurements shared by ``calibrate_sim.py``: one code path for the real and the simulated field.

Every function takes an image (2-D float64, Jy/beam, rows = y) and/or a :class:`Field`
truth (pixel positions in that image, true fluxes, primary-beam gains), so the real
cutout and the simulated one are measured identically.
"""

from __future__ import annotations

import itertools
import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS, FITSFixedWarning
from numpy.typing import NDArray
from scipy.ndimage import map_coordinates
from scipy.optimize import least_squares, nnls

__all__ = [
    "ANNULI",
    "FLUX_EDGES",
    "PERCENTILES",
    "REAL_DIR",
    "Field",
    "angle_diff",
    "autocorr",
    "binned",
    "bright_pixel_owners",
    "bright_profile",
    "brightest",
    "celestial_wcs",
    "clip_good",
    "counts",
    "expected_autocorr",
    "exponential_mixture",
    "flux_scale",
    "fmt",
    "load_real",
    "md_table",
    "noise_mask",
    "noise_stats",
    "orientation",
    "peak_ratios",
    "pixel_stats",
    "read_image",
    "read_truth",
    "real_pb",
    "shape_fit",
    "stack",
]

FloatArray = NDArray[np.float64]

REAL_DIR = Path(os.environ.get("STREAMDET_REAL_DIR",
                               Path(__file__).resolve().parents[2] / "shared" / "data"
                               / "sdc1" / "real"))
PB_FILE = REAL_DIR.parent / "PrimaryBeam_B1.fits"
PERCENTILES = (0.1, 1.0, 5.0, 25.0, 50.0, 75.0, 95.0, 99.0, 99.9)
#: flux bins (Jy): half-dex from 10 nJy to 10 mJy
FLUX_EDGES = 10.0 ** np.arange(-8.0, -1.99, 0.5)
#: annuli (px) of the bright-source profile
ANNULI = (2, 3, 4, 6, 8, 12, 16, 22, 30)
FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))


@dataclass
class Field:
    """An image and its truth, positions in the image's 0-based pixels."""

    image: FloatArray
    pixel_arcsec: float
    beam_arcsec: float
    flux: FloatArray
    pb: FloatArray
    b_maj: FloatArray
    b_min: FloatArray
    pa: FloatArray
    core_frac: FloatArray
    size: NDArray[np.int64]
    cls: NDArray[np.int64]
    x_core: FloatArray
    y_core: FloatArray
    x_cent: FloatArray
    y_cent: FloatArray

    @property
    def area_deg2(self) -> float:
        ny, nx = self.image.shape
        return nx * ny * (self.pixel_arcsec / 3600.0) ** 2

    @property
    def beam_sigma_px(self) -> float:
        return self.beam_arcsec / self.pixel_arcsec / FWHM_PER_SIGMA

    @property
    def beam_area_px(self) -> float:
        return 2.0 * math.pi * self.beam_sigma_px ** 2

    @property
    def apparent(self) -> FloatArray:
        return self.flux * self.pb

    def select(self, keep: NDArray[np.bool_]) -> Field:
        out = {k: (v[keep] if isinstance(v, np.ndarray) and v.ndim == 1 else v)
               for k, v in self.__dict__.items()}
        return Field(**out)


def celestial_wcs(header: fits.Header) -> WCS:
    """The celestial WCS of an SDC1-style header (4 axes, or NAXIS=2 with CTYPE3/4)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        return WCS(header).celestial


def read_image(path: Path) -> tuple[FloatArray, fits.Header]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")                 # BLANK on float data
        with fits.open(path) as hdul:
            data = np.asarray(hdul[0].data, dtype=np.float64)
            header = hdul[0].header.copy()
    while data.ndim > 2:
        data = data[0]
    return data, header


def read_truth(path: Path) -> dict[str, FloatArray]:
    t = np.genfromtxt(path, names=True)
    return {name: np.asarray(t[name], dtype=np.float64) for name in t.dtype.names}


def real_pb(ra: FloatArray, dec: FloatArray) -> FloatArray:
    """Gain of the real SDC1 560 MHz primary beam (PrimaryBeam_B1.fits), bilinear."""
    data, header = read_image(PB_FILE)
    wcs = celestial_wcs(header)
    x, y = wcs.all_world2pix(np.mod(ra, 360.0), dec, 0)
    return np.asarray(map_coordinates(data, [y, x], order=1, mode="nearest"), np.float64)


def load_real() -> tuple[Field, WCS, fits.Header]:
    """The real cutout, its truth (every embedded source whose centroid falls in the image)
    and the real PB at each source."""
    img_path, truth_path = REAL_DIR / "B1_1000h_west.fits", REAL_DIR / "B1_1000h_west_truth.txt"
    if not img_path.exists():
        raise FileNotFoundError(f"real SDC1 data not found: {img_path} (set STREAMDET_REAL_DIR)")
    image, header = read_image(img_path)
    wcs = celestial_wcs(header)
    t = read_truth(truth_path)
    xc, yc = wcs.all_world2pix(np.mod(t["ra_core"], 360.0), t["dec_core"], 0)
    xm, ym = wcs.all_world2pix(np.mod(t["ra_cent"], 360.0), t["dec_cent"], 0)
    pix = abs(float(header["CDELT2"])) * 3600.0
    beam = float(header["BMAJ"]) * 3600.0
    field = Field(image=image, pixel_arcsec=pix, beam_arcsec=beam, flux=t["flux"],
                  pb=real_pb(t["ra_core"], t["dec_core"]), b_maj=t["b_maj"], b_min=t["b_min"],
                  pa=t["pa"], core_frac=t["core_frac"], size=t["size"].astype(np.int64),
                  cls=t["class"].astype(np.int64), x_core=np.asarray(xc), y_core=np.asarray(yc),
                  x_cent=np.asarray(xm), y_cent=np.asarray(ym))
    # the published truth also lists ~2 % of sources whose centroid lies up to ~11 px beyond
    # the cutout's edges: keep those inside, the selection applied to the simulated truth
    ny, nx = image.shape
    inside = ((field.x_cent >= -0.5) & (field.x_cent < nx - 0.5) & (field.y_cent >= -0.5)
              & (field.y_cent < ny - 0.5))
    return field.select(inside), wcs, header


# ------------------------------------------------------------------------ pixel values

def mad_sigma(v: FloatArray) -> float:
    med = np.median(v)
    return float(1.4826 * np.median(np.abs(v - med)))


def pixel_stats(img: FloatArray) -> dict[str, float]:
    v = img.ravel()
    out = {f"p{p:g}": float(x) for p, x in zip(PERCENTILES, np.percentile(v, PERCENTILES),
                                                strict=True)}
    sig = mad_sigma(v)
    med = float(np.median(v))
    out["mean"] = float(v.mean())
    out["sigma_mad"] = sig
    for k in (3, 5, 10):
        out[f"frac>{k}sig"] = float(np.mean(v - med > k * sig))
    c = v - v.mean()
    out["skew"] = float(np.mean(c ** 3) / np.mean(c ** 2) ** 1.5)
    p5, p50, p95 = np.percentile(v, [5, 50, 95])
    out["skew_q"] = float((p95 + p5 - 2 * p50) / (p95 - p5))
    return out


def bright_pixel_owners(f: Field, threshold: float, flux_min: float) -> dict[int, int]:
    """Pixels above ``threshold`` (Jy/beam), by the size code of the nearest truth source
    (core) brighter than ``flux_min`` (S x PB); key 0: all."""
    from scipy.spatial import cKDTree

    hi = np.argwhere(f.image > threshold)
    sel = np.flatnonzero(f.apparent > flux_min)
    out = {0: len(hi), 1: 0, 2: 0, 3: 0}
    if len(hi) and sel.size:
        _, j = cKDTree(np.c_[f.x_core[sel], f.y_core[sel]]).query(hi[:, ::-1])
        for c in (1, 2, 3):
            out[c] = int(np.sum(f.size[sel][j] == c))
    return out


# ------------------------------------------------------------------------------- noise

def noise_mask(f: Field, *, flux_min: float, border: int = 0) -> NDArray[np.bool_]:
    """True where a pixel is 'source-free': away from every truth source brighter
    (apparent) than ``flux_min`` by 2 beam FWHM plus half its size (capped at 20")."""
    ny, nx = f.image.shape
    bad = np.zeros((ny, nx), bool)
    fwhm_px = f.beam_arcsec / f.pixel_arcsec
    sel = np.flatnonzero(f.apparent > flux_min)
    rad = 2.0 * fwhm_px + 0.5 * np.minimum(f.b_maj[sel], 20.0) / f.pixel_arcsec
    for (x, y), r in zip(((f.x_core[i], f.y_core[i]) for i in sel), rad, strict=True):
        _disk(bad, x, y, r)
    for (x, y), r in zip(((f.x_cent[i], f.y_cent[i]) for i in sel), rad, strict=True):
        _disk(bad, x, y, r)
    if border:
        bad[:border], bad[-border:], bad[:, :border], bad[:, -border:] = True, True, True, True
    return ~bad


def _disk(mask: NDArray[np.bool_], x: float, y: float, r: float) -> None:
    ny, nx = mask.shape
    x0, x1 = max(0, math.floor(x - r)), min(nx, math.ceil(x + r) + 1)
    y0, y1 = max(0, math.floor(y - r)), min(ny, math.ceil(y + r) + 1)
    if x1 <= x0 or y1 <= y0:
        return
    yy, xx = np.ogrid[y0:y1, x0:x1]
    mask[y0:y1, x0:x1] |= (xx - x) ** 2 + (yy - y) ** 2 <= r * r


def clip_good(img: FloatArray, good: NDArray[np.bool_], k: float = 5.0) -> NDArray[np.bool_]:
    """``good`` less the pixels beyond k sigma (MAD) of its median: source remnants."""
    v = img[good]
    med = float(np.median(v))
    return good & (np.abs(img - med) < k * mad_sigma(v))


def noise_stats(img: FloatArray, good: NDArray[np.bool_]) -> dict[str, float]:
    v = img[good]
    med = float(np.median(v))
    neg = v[v < med] - med
    return {"sigma_mad_all": mad_sigma(img.ravel()), "sigma_mad_free": mad_sigma(v),
            "std_free": float(np.std(v)), "sigma_neg_free": float(np.sqrt(np.mean(neg ** 2))),
            "median_free": med, "free_frac": float(good.mean())}


def autocorr(img: FloatArray, good: NDArray[np.bool_], lags: tuple[int, ...],
             axis: int) -> list[float]:
    """Normalised autocorrelation at ``lags`` along ``axis`` (1 = x, 0 = y), over the
    pairs of pixels that are both ``good``; mean and variance of the good pixels."""
    m = float(img[good].mean())
    var = float(img[good].var())
    a = np.where(good, img - m, 0.0)
    out = []
    for lag in lags:
        if axis == 1:
            p, q, g = a[:, :-lag], a[:, lag:], good[:, :-lag] & good[:, lag:]
        else:
            p, q, g = a[:-lag], a[lag:], good[:-lag] & good[lag:]
        out.append(float(np.sum(p * q * g) / g.sum() / var))
    return out


def expected_autocorr(lags: tuple[int, ...], beam_sigma_px: float) -> list[float]:
    """Noise correlated on the beam scale (autocorrelation FWHM = beam, the simulator's model)."""
    return [math.exp(-0.5 * (lag / beam_sigma_px) ** 2) for lag in lags]


# ------------------------------------------------------------------------------ truths

def counts(f: Field) -> dict[str, FloatArray | float]:
    """Counts per half-dex flux bin, per deg^2 and per unit ln-flux, and totals."""
    n, _ = np.histogram(f.flux, FLUX_EDGES)
    dln = math.log(FLUX_EDGES[1] / FLUX_EDGES[0])
    area = f.area_deg2
    return {"n": n.astype(np.float64), "dnds": n / area / dln, "area": area,
            "density": f.flux.size / area, "frac_below_3uJy": float(np.mean(f.flux < 3e-6)),
            "flux_per_deg2": float(f.flux.sum() / area),
            "flux_per_deg2_above_3uJy": float(f.flux[f.flux >= 3e-6].sum() / area),
            "apparent_per_deg2": float(f.apparent.sum() / area),
            # mean sky brightness the truth implies (Jy/beam): its integral over the pixels
            "sky_mean": float(f.apparent.sum() * f.beam_area_px / f.image.size)}


def binned(flux: FloatArray, values: FloatArray, stat: str = "median",
           min_n: int = 5) -> FloatArray:
    which = np.digitize(flux, FLUX_EDGES) - 1
    out = np.full(FLUX_EDGES.size - 1, np.nan)
    for i in range(out.size):
        v = values[which == i]
        if v.size >= min_n:
            out[i] = np.median(v) if stat == "median" else np.mean(v)
    return out


# ------------------------------------------------------------------------ bright sources

def brightest(f: Field, k: int, margin: int) -> NDArray[np.int64]:
    ny, nx = f.image.shape
    inside = ((f.x_core >= margin) & (f.x_core < nx - 1 - margin)
              & (f.y_core >= margin) & (f.y_core < ny - 1 - margin))
    idx = np.flatnonzero(inside)
    return idx[np.argsort(f.apparent[idx])[::-1][:k]]


def bright_profile(f: Field, idx: NDArray[np.int64]) -> tuple[FloatArray, FloatArray]:
    """Per source (rows) and annulus (columns): the median pixel value (Jy/beam) and it
    divided by the source's apparent flux (S x PB)."""
    r_max = ANNULI[-1]
    yy, xx = np.mgrid[-r_max - 1:r_max + 2, -r_max - 1:r_max + 2]
    vals = np.full((idx.size, len(ANNULI) - 1), np.nan)
    for row, i in enumerate(idx):
        cx, cy = round(f.x_core[i]), round(f.y_core[i])
        stamp = f.image[cy - r_max - 1:cy + r_max + 2, cx - r_max - 1:cx + r_max + 2]
        r = np.hypot(xx + cx - f.x_core[i], yy + cy - f.y_core[i])
        for j, (a, b) in enumerate(itertools.pairwise(ANNULI)):
            ring = (r >= a) & (r < b)
            vals[row, j] = np.median(stamp[ring])
    return vals, vals / f.apparent[idx][:, None]


def exponential_mixture() -> tuple[FloatArray, FloatArray]:
    """Weights and sigmas (in scale lengths) of a Gaussian mixture of the 2-D exponential
    disc exp(-r/h): non-negative least squares on 12 log-spaced sigmas, fitting the
    profile and the enclosed flux (the construction the simulator documents)."""
    r = np.linspace(0.0, 20.0, 8000)[1:]
    sig = np.geomspace(0.02, 6.0, 12)
    prof = np.exp(-r[:, None] ** 2 / (2.0 * sig ** 2)) / sig ** 2
    enclosed = 1.0 - np.exp(-r[:, None] ** 2 / (2.0 * sig ** 2))
    mat = np.vstack([prof * r[:, None], 0.3 * enclosed])
    rhs = np.concatenate([np.exp(-r) * r, 0.3 * (1.0 - (1.0 + r) * np.exp(-r))])
    w, _ = nnls(mat, rhs)
    keep = w > 0
    return w[keep] / w[keep].sum(), sig[keep]


def stack(f: Field, idx: NDArray[np.int64], r: int) -> FloatArray:
    """Mean of (stamp - its median) / (S x PB) over the sources ``idx`` (stamps of radius
    ``r`` on the pixel nearest the core; sources too near an edge skipped)."""
    ny, nx = f.image.shape
    acc = np.zeros((2 * r + 1, 2 * r + 1))
    n = 0
    for i in idx:
        cx, cy = round(f.x_core[i]), round(f.y_core[i])
        if cx - r < 0 or cy - r < 0 or cx + r >= nx or cy + r >= ny:
            continue
        st = f.image[cy - r:cy + r + 1, cx - r:cx + r + 1]
        acc += (st - np.median(st)) / f.apparent[i]
        n += 1
    return acc / max(n, 1)


def _model_peak(f: Field, i: int, px: float, py: float,
                exp_mix: tuple[FloatArray, FloatArray], convention: str = "90+pa") -> float:
    """Model value (Jy/beam) at pixel (px, py) of source ``i``: Gaussian (size 2) or
    exponential disc (size 3, b_maj/b_min the scale lengths, as a Gaussian mixture), plus
    the point core, convolved with the beam; the major axis at ``_phi(pa, convention)``."""
    s2 = f.beam_sigma_px ** 2
    phi = _phi(f.pa[i], convention)
    c, s = math.cos(phi), math.sin(phi)
    dx, dy = px - f.x_core[i], py - f.y_core[i]
    cf = min(max(f.core_frac[i], 0.0), 1.0)
    total = f.apparent[i] * f.beam_area_px

    def gauss(sa: float, sb: float) -> float:
        sxx = sa * sa * c * c + sb * sb * s * s + s2
        syy = sa * sa * s * s + sb * sb * c * c + s2
        sxy = (sa * sa - sb * sb) * s * c
        det = sxx * syy - sxy * sxy
        q = (syy * dx * dx - 2 * sxy * dx * dy + sxx * dy * dy) / det
        return math.exp(-0.5 * q) / (2 * math.pi * math.sqrt(det))

    val = cf * gauss(0.0, 0.0)
    a, b = f.b_maj[i] / f.pixel_arcsec, f.b_min[i] / f.pixel_arcsec
    if f.size[i] == 3:
        w, sig = exp_mix
        val += (1 - cf) * sum(wk * gauss(a * sk, b * sk) for wk, sk in zip(w, sig, strict=True))
    else:
        val += (1 - cf) * gauss(a / FWHM_PER_SIGMA, b / FWHM_PER_SIGMA)
    return total * val


def peak_ratios(f: Field, idx: NDArray[np.int64],
                exp_mix: tuple[FloatArray, FloatArray],
                convention: str = "90+pa") -> tuple[FloatArray, FloatArray]:
    """For sources ``idx``: the brightest pixel within 1 px of the core / (S x PB), and
    that pixel / the model's value at the same pixel (NaN for lobed AGN, size 1)."""
    ratio = np.empty(idx.size)
    model = np.full(idx.size, np.nan)
    ny, nx = f.image.shape
    for k, i in enumerate(idx):
        cx, cy = round(f.x_core[i]), round(f.y_core[i])
        y0, x0 = max(cy - 1, 0), max(cx - 1, 0)
        box = f.image[y0:min(cy + 2, ny), x0:min(cx + 2, nx)]
        j = int(np.argmax(box))
        py, px = y0 + j // box.shape[1], x0 + j % box.shape[1]
        ratio[k] = box.flat[j] / f.apparent[i]
        if f.size[i] != 1:
            model[k] = box.flat[j] / _model_peak(f, int(i), float(px), float(py), exp_mix,
                                                  convention)
    return ratio, model


def orientation(f: Field, idx: NDArray[np.int64]) -> FloatArray:
    """Direction of the major axis in the image (deg from +x, counter-clockwise, 0-180) from
    the second moments of the pixels above half the stamp's peak in a box of radius
    1.5 b_maj around the centroid (NaN where too few pixels)."""
    out = np.full(idx.size, np.nan)
    ny, nx = f.image.shape
    for k, i in enumerate(idx):
        r = max(4, math.ceil(1.5 * f.b_maj[i] / f.pixel_arcsec))
        cx, cy = round(f.x_cent[i]), round(f.y_cent[i])
        if cx - r < 0 or cy - r < 0 or cx + r >= nx or cy + r >= ny:
            continue
        st = f.image[cy - r:cy + r + 1, cx - r:cx + r + 1]
        yy, xx = np.mgrid[-r:r + 1, -r:r + 1].astype(np.float64)
        w = np.where(st > 0.5 * st.max(), st, 0.0)
        if np.count_nonzero(w) < 6:
            continue
        m = w.sum()
        mx, my = (w * xx).sum() / m, (w * yy).sum() / m
        sxx = (w * (xx - mx) ** 2).sum() / m
        syy = (w * (yy - my) ** 2).sum() / m
        sxy = (w * (xx - mx) * (yy - my)).sum() / m
        out[k] = (0.5 * math.degrees(math.atan2(2 * sxy, sxx - syy))) % 180.0
    return out


def angle_diff(a: FloatArray, b: FloatArray) -> FloatArray:
    """|a - b| for axes (deg, 0-90)."""
    d = np.mod(a - b, 180.0)
    return np.minimum(d, 180.0 - d)


def _profile(f: Field, i: int, xx: FloatArray, yy: FloatArray, k: float, phi: float,
             prof: str, exp_mix: tuple[FloatArray, FloatArray]) -> FloatArray:
    """Unit-flux image (Jy/beam per Jy) of source ``i``'s body at pixels (xx, yy): axes
    k x (b_maj, b_min), major axis at ``phi`` (rad from +x), 'g' Gaussian (FWHM) or 'e'
    exponential disc (scale lengths), convolved with the beam."""
    s2 = f.beam_sigma_px ** 2
    c, s = math.cos(phi), math.sin(phi)
    dx, dy = xx - f.x_core[i], yy - f.y_core[i]
    a, b = k * f.b_maj[i] / f.pixel_arcsec, k * f.b_min[i] / f.pixel_arcsec
    comps = ([(1.0, a / FWHM_PER_SIGMA, b / FWHM_PER_SIGMA)] if prof == "g"
             else [(w, a * sg, b * sg) for w, sg in zip(*exp_mix, strict=True)])
    out = np.zeros_like(dx)
    for w, sa, sb in comps:
        sxx = sa * sa * c * c + sb * sb * s * s + s2
        syy = sa * sa * s * s + sb * sb * c * c + s2
        sxy = (sa * sa - sb * sb) * s * c
        det = sxx * syy - sxy * sxy
        out += w * np.exp(-0.5 * (syy * dx * dx - 2 * sxy * dx * dy + sxx * dy * dy) / det) / (
            2 * math.pi * math.sqrt(det))
    return out * f.beam_area_px


def _stamp(f: Field, i: int, r: int) -> tuple[FloatArray, FloatArray, FloatArray] | None:
    ny, nx = f.image.shape
    cx, cy = round(f.x_core[i]), round(f.y_core[i])
    if cx - r < 0 or cy - r < 0 or cx + r >= nx or cy + r >= ny:
        return None
    yy, xx = np.mgrid[cy - r:cy + r + 1, cx - r:cx + r + 1].astype(np.float64)
    return xx, yy, f.image[cy - r:cy + r + 1, cx - r:cx + r + 1]


def flux_scale(f: Field, idx: NDArray[np.int64], phi_of_pa: str,
               exp_mix: tuple[FloatArray, FloatArray]) -> FloatArray:
    """Fitted flux / (S x PB) of compact sources: the truth's own shape (Gaussian, FWHM
    b_maj x b_min, point core) at the truth position, amplitude and a constant fitted
    (linear least squares) on a 9 x 9 px stamp."""
    out = np.full(idx.size, np.nan)
    for k, i in enumerate(idx):
        st = _stamp(f, int(i), 4)
        if st is None:
            continue
        xx, yy, img = st
        phi = _phi(f.pa[i], phi_of_pa)
        cf = min(max(f.core_frac[i], 0.0), 1.0)
        g = (cf * _profile(f, int(i), xx, yy, 0.0, phi, "g", exp_mix)
             + (1 - cf) * _profile(f, int(i), xx, yy, 1.0, phi, "g", exp_mix)).ravel()
        a = np.linalg.lstsq(np.c_[g, np.ones_like(g)], img.ravel(), rcond=None)[0][0]
        out[k] = a / f.apparent[i]
    return out


def _phi(pa: float, convention: str) -> float:
    """Major-axis direction (rad from +x) for a truth PA under a convention."""
    deg = {"90+pa": 90.0 + pa, "-pa": -pa, "pa": pa, "90-pa": 90.0 - pa}[convention]
    return math.radians(deg)


def shape_fit(f: Field, i: int, prof: str,
              exp_mix: tuple[FloatArray, FloatArray]) -> tuple[float, float, float, float]:
    """Free fit of a resolved source: the truth's axes scaled by k, direction phi, flux and a
    constant, profile 'g' or 'e', at the truth position, on a stamp of radius 2 b_maj.

    Returns (k, phi in deg from +x (0-180), flux / (S x PB), reduced cost)."""
    r = max(6, math.ceil(2.0 * f.b_maj[i] / f.pixel_arcsec))
    st = _stamp(f, i, r)
    if st is None:
        return (math.nan,) * 4
    xx, yy, img = st
    app = f.apparent[i]
    best = None
    for phi0 in (0.0, 0.5 * math.pi):
        def res(p: FloatArray, phi0: float = phi0) -> FloatArray:
            return (p[0] * app * _profile(f, i, xx, yy, p[1], p[2], prof, exp_mix) + p[3] * 1e-6
                    - img).ravel() / 1e-6
        fit = least_squares(res, [1.0, 1.0, phi0, 0.0],
                            bounds=([0.0, 0.03, -10.0, -100.0], [50.0, 20.0, 10.0, 100.0]))
        if best is None or fit.cost < best.cost:
            best = fit
    assert best is not None
    return (float(best.x[1]), math.degrees(float(best.x[2])) % 180.0, float(best.x[0]),
            float(best.cost / img.size))


# ---------------------------------------------------------------------------- markdown

def fmt(v: float | None, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    if v == 0:
        return "0"
    a = abs(v)
    if a >= 1e5 or a < 1e-3:
        return f"{v:.{digits - 1}e}"
    return f"{v:.{max(0, digits - 1 - math.floor(math.log10(a)))}f}"


def md_table(headers: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(" --- " for _ in headers) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def free_fit_scale(f: Field, lo: float, hi: float, *, isolation_px: float = 4.0,
                   radius: int = 5) -> FloatArray:
    """Free elliptical-Gaussian fits of isolated compact sources: (N, 3) rows of
    (sigma_x px, sigma_y px, fitted flux / (S x PB)).

    Sources of size 2 with b_maj < 0.7" and S x PB in [lo, hi) Jy, no other truth source
    brighter than 0.5 uJy (apparent) within ``isolation_px``; amplitude, centre, sigma_x,
    sigma_y (axis-aligned) and a constant fitted on a (2 radius + 1)^2 stamp; flux =
    amplitude x sigma_x sigma_y / sigma_beam^2. Independent of the truth's shape and of
    the beam the header states, so it measures the map's flux scale.
    """
    img = f.image
    ny, nx = img.shape
    app = f.apparent
    sel = np.flatnonzero((app >= lo) & (app < hi) & (f.size == 2) & (f.b_maj < 0.7))
    bright = app > 0.5e-6
    bx, by = f.x_core[bright], f.y_core[bright]
    yy, xx = np.mgrid[-radius:radius + 1, -radius:radius + 1]
    out = []
    for i in sel:
        x, y = f.x_core[i], f.y_core[i]
        if not (radius + 1 <= x < nx - radius - 2 and radius + 1 <= y < ny - radius - 2):
            continue
        if np.sum(np.hypot(bx - x, by - y) < isolation_px) > 1:
            continue
        ix, iy = round(x), round(y)
        st = img[iy - radius:iy + radius + 1, ix - radius:ix + radius + 1]

        def resid(p: FloatArray, st: FloatArray = st) -> FloatArray:
            a, cx, cy, sx, sy, c = p
            return (a * np.exp(-0.5 * (((xx - cx) / sx) ** 2 + ((yy - cy) / sy) ** 2)) + c
                    - st).ravel()

        p0 = [float(st[radius, radius]), x - ix, y - iy, 1.1, 1.1, 0.0]
        res = least_squares(resid, p0, bounds=([0, -2, -2, 0.4, 0.4, -1e-5],
                                               [1, 2, 2, 4, 4, 1e-5]))
        a, _, _, sx, sy, _ = res.x
        out.append((sx, sy, a * sx * sy / f.beam_sigma_px ** 2 / app[i]))
    return np.asarray(out, dtype=np.float64).reshape(-1, 3)
