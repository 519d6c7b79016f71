"""Tests of the peer-finder helpers of the quality benchmark (``benchmarks/_peers.py``).

References are independent of the code under test: convolution by FFT on a grid,
images rendered from sky offsets (astropy ``spherical_offsets_to``), the simulator's
own truth. The SEP and PyBDSF runs are skipped where those packages are missing.
"""

from __future__ import annotations

import importlib.util
import math
import sys
import warnings
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from astropy import units as u
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS
from scipy.signal import fftconvolve

import streamdet
from streamdet.catalogue.outputs import to_sdc1

ROOT = Path(__file__).resolve().parents[1]
FWHM = 2.0 * math.sqrt(2.0 * math.log(2.0))


def _load_peers() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_peers", ROOT / "benchmarks" / "_peers.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["bench_peers"] = mod
    spec.loader.exec_module(mod)
    return mod


peers = _load_peers()


# ----------------------------------------------------------------------------- helpers

def _gauss_ne(n: np.ndarray, e: np.ndarray, fmaj: float, fmin: float, pa: float) -> np.ndarray:
    """Unit-peak elliptical Gaussian at offsets (north, east), FWHMs and PA east of north."""
    t = math.radians(pa)
    along = n * math.cos(t) + e * math.sin(t)
    across = -n * math.sin(t) + e * math.cos(t)
    return np.exp(-0.5 * ((along / (fmaj / FWHM)) ** 2 + (across / (fmin / FWHM)) ** 2))


def _moment_shape(img: np.ndarray, n: np.ndarray, e: np.ndarray) -> tuple[float, float, float]:
    """FWHMs and PA (east of north) from the brute-force second moments of ``img``."""
    w = img / img.sum()
    cn, ce = (w * n).sum(), (w * e).sum()
    cov = np.array([[(w * (n - cn) ** 2).sum(), (w * (n - cn) * (e - ce)).sum()],
                    [(w * (n - cn) * (e - ce)).sum(), (w * (e - ce) ** 2).sum()]])
    vals, vecs = np.linalg.eigh(cov)
    pa = math.degrees(math.atan2(vecs[1, 1], vecs[0, 1])) % 180.0
    return FWHM * math.sqrt(vals[1]), FWHM * math.sqrt(vals[0]), pa


def _pa_diff(a: float, b: float) -> float:
    d = (a - b) % 180.0
    return min(d, 180.0 - d)


def _header(n: int, *, pixel: float = 0.6, beam: float = 1.5, cdelt1_sign: float = -1.0,
            rot_deg: float = 0.0) -> fits.Header:
    """SDC1-like 4-axis header: SIN at (RA 0, Dec -30), optional rotation/flip of the x axis."""
    h = fits.Header()
    h["NAXIS"] = 4
    for k, v in ((1, n), (2, n), (3, 1), (4, 1)):
        h[f"NAXIS{k}"] = v
    h["BUNIT"] = "JY/BEAM"
    h["BMAJ"], h["BMIN"], h["BPA"] = beam / 3600.0, beam / 3600.0, 0.0
    h["CTYPE1"], h["CRVAL1"], h["CRPIX1"] = "RA---SIN", 0.0, n / 2 + 1.0
    h["CDELT1"] = cdelt1_sign * pixel / 3600.0
    h["CTYPE2"], h["CRVAL2"], h["CRPIX2"] = "DEC--SIN", -30.0, n / 2 + 1.0
    h["CDELT2"] = pixel / 3600.0
    if rot_deg:
        c, s = math.cos(math.radians(rot_deg)), math.sin(math.radians(rot_deg))
        h["PC1_1"], h["PC1_2"], h["PC2_1"], h["PC2_2"] = c, -s, s, c
    h["CTYPE3"], h["CRVAL3"], h["CDELT3"], h["CRPIX3"] = "FREQ", 5.6e8, 1e6, 1.0
    h["CTYPE4"], h["CRVAL4"], h["CDELT4"], h["CRPIX4"] = "STOKES", 1.0, 1.0, 1.0
    return h


def _offsets(wcs: WCS, ra0: float, dec0: float, shape: tuple[int, int]
             ) -> tuple[np.ndarray, np.ndarray]:
    """(north, east) offsets in arcsec of every pixel centre from (ra0, dec0)."""
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]]
    ra, dec = wcs.wcs_pix2world(xx.ravel(), yy.ravel(), 0)
    c0 = SkyCoord(ra0 * u.deg, dec0 * u.deg)
    de, dn = c0.spherical_offsets_to(SkyCoord(ra * u.deg, dec * u.deg))
    return (dn.to_value(u.arcsec).reshape(shape), de.to_value(u.arcsec).reshape(shape))


# (x, y) px, flux Jy, deconvolved FWHMs arcsec, PA deg east of north
SOURCES = [((60.3, 70.6), 2e-3, 3.0, 1.5, 30.0),
           ((190.7, 60.2), 1e-3, 4.0, 2.0, 120.0),
           ((70.1, 190.4), 3e-3, 3.5, 2.5, 75.0),
           ((185.5, 180.8), 1.5e-3, 2.0, 1.0, 160.0)]
BEAM = 1.5


@pytest.fixture(scope="module")
def field(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Table]:
    """256^2 field of four resolved Gaussians (known flux, size, PA) plus weak white noise."""
    n = 256
    header = _header(n)
    wcs = WCS(header).celestial
    img = np.zeros((n, n))
    rows = []
    for (x, y), flux, fmaj, fmin, pa in SOURCES:
        ra, dec = (float(v[0]) for v in wcs.wcs_pix2world([x], [y], 0))
        dn, de = _offsets(wcs, ra, dec, (n, n))
        cmaj, cmin = math.hypot(fmaj, BEAM), math.hypot(fmin, BEAM)   # PA kept: round beam
        img += flux * BEAM ** 2 / (cmaj * cmin) * _gauss_ne(dn, de, cmaj, cmin, pa)
        rows.append((ra, dec, flux, fmaj, fmin, pa))
    img += np.random.default_rng(5).normal(0.0, 2e-7, img.shape)
    path = tmp_path_factory.mktemp("peers") / "field.fits"
    fits.writeto(path, img.astype(">f4")[None, None], header)
    return path, Table(rows=rows, names=("ra", "dec", "flux", "bmaj", "bmin", "pa"))


def _check_recovery(raw: Table, truth: Table, *, flux_tol: float, size_tol: float,
                    pa_tol: float) -> None:
    assert len(raw) == len(truth)
    c_raw = SkyCoord(raw["ra"] * u.deg, raw["dec"] * u.deg)
    c_true = SkyCoord(truth["ra"] * u.deg, truth["dec"] * u.deg)
    idx, sep, _ = c_true.match_to_catalog_sky(c_raw)
    assert np.all(sep.to_value(u.arcsec) < 0.05)
    m = raw[idx]
    np.testing.assert_allclose(m["flux"], truth["flux"], rtol=flux_tol)
    np.testing.assert_allclose(m["bmaj"], truth["bmaj"], rtol=size_tol)
    np.testing.assert_allclose(m["bmin"], truth["bmin"], rtol=size_tol)
    for got, want in zip(m["pa"], truth["pa"], strict=True):
        assert _pa_diff(float(got), float(want)) < pa_tol


# ----------------------------------------------------------------------------- geometry

@pytest.mark.parametrize(("src", "beam"), [((2.0, 0.8, 35.0), (1.5, 1.5, 0.0)),
                                           ((3.0, 1.2, 110.0), (1.8, 1.1, 20.0)),
                                           ((1.0, 0.9, 170.0), (1.5, 1.0, 80.0))])
def test_deconvolve_inverts_numerical_convolution(src: tuple[float, float, float],
                                                  beam: tuple[float, float, float]) -> None:
    step = 0.04
    ax = np.arange(-300, 301) * step
    n, e = np.meshgrid(ax, ax, indexing="ij")
    conv = fftconvolve(_gauss_ne(n, e, *src), _gauss_ne(n, e, *beam), mode="same")
    cmaj, cmin, cpa = _moment_shape(conv, n, e)
    dmaj, dmin, dpa = peers.deconvolve([cmaj], [cmin], [cpa], beam=beam)
    np.testing.assert_allclose([dmaj[0], dmin[0]], src[:2], rtol=2e-3)
    assert _pa_diff(float(dpa[0]), src[2]) < 0.5


def test_deconvolve_unresolved_gives_floor() -> None:
    maj, mn, pa = peers.deconvolve([1.5, 1.6], [1.4, 1.5], [0.0, 0.0], beam=(1.5, 1.5, 0.0))
    assert mn[0] == peers.SIZE_FLOOR_ARCSEC and maj[0] == peers.SIZE_FLOOR_ARCSEC
    np.testing.assert_allclose(maj[1], math.sqrt(1.6 ** 2 - 1.5 ** 2))
    assert mn[1] == peers.SIZE_FLOOR_ARCSEC and pa[1] == 0.0


@pytest.mark.parametrize(("sign", "rot"), [(-1.0, 0.0), (1.0, 0.0), (-1.0, 25.0)])
@pytest.mark.parametrize("pa", [0.0, 40.0, 95.0, 150.0])
def test_moments_to_sky_convention(sign: float, rot: float, pa: float) -> None:
    """Pixel moments of an image rendered from sky offsets give back its FWHMs and PA."""
    n = 64
    wcs = WCS(_header(n, pixel=0.3, cdelt1_sign=sign, rot_deg=rot)).celestial
    x0, y0 = 31.3, 32.6
    ra0, dec0 = (float(v[0]) for v in wcs.wcs_pix2world([x0], [y0], 0))
    dn, de = _offsets(wcs, ra0, dec0, (n, n))
    img = _gauss_ne(dn, de, 2.4, 1.2, pa)
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float64)
    w = img / img.sum()
    mx, my = (w * xx).sum(), (w * yy).sum()
    x2, y2 = (w * (xx - mx) ** 2).sum(), (w * (yy - my) ** 2).sum()
    xy = (w * (xx - mx) * (yy - my)).sum()
    bmaj, bmin, got = peers.moments_to_sky(wcs, [mx], [my], [x2], [y2], [xy])
    np.testing.assert_allclose([bmaj[0], bmin[0]], [2.4, 1.2], rtol=2e-3)
    assert _pa_diff(float(got[0]), pa) < 0.2


def test_pb_gain_is_the_simulators_beam(tmp_path: Path) -> None:
    truth = streamdet.simulate(tmp_path / "f.fits", size=256, freq=1400, seed=3,
                               offset=(0.4, -0.6), noise=False, quiet=True)
    assert len(truth) > 10 and float(np.ptp(truth["pb"])) > 0
    got = peers.pb_gain(truth["ra_core"], truth["dec_core"], freq=1400)
    np.testing.assert_allclose(got, truth["pb"], rtol=1e-9)


def test_sdc1_catalogue_corrects_pb_and_uses_to_sdc1_defaults() -> None:
    raw = Table({"ra": [0.1, 359.8, 0.2], "dec": [-30.5, -30.2, np.nan],
                 "flux": [1e-4, 2e-4, 3e-4], "bmaj": [1.0, 0.5, 1.0],
                 "bmin": [0.5, 0.8, 0.5], "pa": [10.0, 20.0, 30.0]})
    cat = peers.sdc1_catalogue(raw, freq=560)
    assert len(cat) == 2                               # the NaN row is dropped
    gain = peers.pb_gain(raw["ra"][:2], raw["dec"][:2], freq=560)
    assert np.all(gain < 1.0)
    np.testing.assert_allclose(cat["flux"], np.asarray(raw["flux"][:2]) / gain)
    ref = to_sdc1(Table({"ra": [0.1], "dec": [-30.5], "flux": [1.0], "bmaj": [1.0],
                         "bmin": [0.5], "pa": [10.0]}))
    for col in ("core_frac", "size", "class"):
        assert np.all(cat[col] == ref[col][0])
    np.testing.assert_allclose(cat["b_maj"], [1.0, 0.8])      # axes swapped where needed
    np.testing.assert_allclose(cat["pa"], [80.0, -20.0])     # SDC1 convention: 90 - PA


# ----------------------------------------------------------------------------- peers

def test_sep_recovers_known_sources(field: tuple[Path, Table]) -> None:
    pytest.importorskip("sep")
    path, truth = field
    raw = peers.sep_catalogue(path, thresh=5.0)
    _check_recovery(raw, truth, flux_tol=0.01, size_tol=0.01, pa_tol=0.5)


def test_run_finder_subprocess(field: tuple[Path, Table], tmp_path: Path) -> None:
    pytest.importorskip("sep")
    path, _ = field
    out = tmp_path / "sep.ecsv"
    ballast = np.ones(50_000_000)      # 400 MB in this (parent) process
    stats = peers.run_finder("sep", path, out, {"thresh": 5.0})
    del ballast
    assert set(stats) == {"seconds", "rss_mb", "n"}
    assert stats["n"] == len(SOURCES) and stats["seconds"] > 0
    # the child's own peak (numpy, astropy, sep and a 256^2 image), not the parent's size
    assert 10 < stats["rss_mb"] < 300
    child = Table.read(out, format="ascii.ecsv")
    here = peers.sep_catalogue(path, thresh=5.0)
    for col in ("ra", "dec", "flux", "bmaj", "bmin", "pa"):
        np.testing.assert_allclose(child[col], here[col], rtol=1e-12)
    with pytest.raises(RuntimeError, match="sep failed"):
        peers.run_finder("sep", tmp_path / "missing.fits", out)


def test_bdsf_recovers_known_sources(field: tuple[Path, Table], tmp_path: Path) -> None:
    pytest.importorskip("bdsf")
    path, truth = field
    with warnings.catch_warnings():
        # PyBDSF's own deprecation chatter (numpy/astropy API it uses) is not ours to fix
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        raw = peers.bdsf_catalogue(path, workdir=tmp_path, ncores=1)
    _check_recovery(raw, truth, flux_tol=0.01, size_tol=0.01, pa_tol=0.5)


@pytest.mark.parametrize("ratio", [1.5, 4.0, 30.0, 1000.0])
def test_truncation_factor_matches_brute_force(ratio: float) -> None:
    """Second moment of an elliptical Gaussian's pixels above peak / ratio, on a fine grid."""
    ax = np.arange(-1000, 1001) * 0.01
    yy, xx = np.meshgrid(ax, ax, indexing="ij")
    sx, sy = 2.0, 1.0
    img = np.exp(-0.5 * ((xx / sx) ** 2 + (yy / sy) ** 2))
    w = np.where(img >= 1.0 / ratio, img, 0.0)
    w /= w.sum()
    got = float(peers.truncation_factor([ratio])[0])
    np.testing.assert_allclose((w * xx ** 2).sum() / sx ** 2, got, rtol=2e-3)
    np.testing.assert_allclose((w * yy ** 2).sum() / sy ** 2, got, rtol=2e-3)


def _load_bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_quality",
                                                  ROOT / "benchmarks" / "bench_quality.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["bench_quality"] = mod          # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


def test_in_training_box_agrees_with_the_scorer() -> None:
    pytest.importorskip("ska_sdc")
    import pandas as pd
    from ska_sdc.sdc1.utils.prep import refine_area

    bench = _load_bench()
    rng = np.random.default_rng(2)
    for freq in (560, 1400):
        ra = rng.uniform(-1.0, 0.5, 4000) % 360.0
        dec = rng.uniform(-30.3, -29.2, 4000)
        frame = pd.DataFrame({"ra_core": np.where(ra > 180, ra - 360, ra), "dec_core": dec})
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            inside = len(refine_area(frame, freq, train=True))
        assert inside > 100
        assert bench.in_training_box(ra, dec, freq) == inside


@pytest.mark.parametrize("freq", [560, 1400])
@pytest.mark.parametrize("size", [512, 4096, 16384])
def test_default_offset_keeps_the_field_clear(freq: int, size: int) -> None:
    """No pixel of the field (edges sampled) falls in the training box."""
    from streamdet.sim._population import band

    bench = _load_bench()
    dra, ddec = bench.default_offset(size, freq)
    h = _header(size, pixel=band(freq).pixel_arcsec)
    h["CRVAL1"], h["CRVAL2"] = dra % 360.0, -30.0 + ddec
    wcs = WCS(h).celestial
    t = np.linspace(-0.5, size - 0.5, 257)
    edge_x = np.concatenate([t, t, np.full_like(t, -0.5), np.full_like(t, size - 0.5)])
    edge_y = np.concatenate([np.full_like(t, -0.5), np.full_like(t, size - 0.5), t, t])
    ra, dec = wcs.wcs_pix2world(edge_x, edge_y, 0)
    assert bench.in_training_box(ra, dec, freq) == 0
    assert float(dec.max()) < -29.94                  # south of the box, not just beside it
    assert bench.in_training_box([359.9], [-29.8], freq) == 1       # the box itself counts
