"""Tests of the SDC1-like field simulator (streamdet.sim.simulate) and the SDC1 catalogue I/O."""

from __future__ import annotations

import gzip
import math
import os
import tracemalloc
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS

from streamdet import simulate
from streamdet.catalogue.catalog import SDC1_COLUMNS, read_sdc1, write_sdc1
from streamdet.errors import OutputExistsError, StreamdetFileNotFoundError, StreamdetValueError
from streamdet.sim._population import (
    FAINT_DEPTH,
    REAL_FAINT_COUNTS,
    SIZE_FLOOR_ARCSEC,
    SourceDraw,
    agn_templates,
    band,
    draw_sources,
    faint_counts,
    population,
    primary_beam,
)
from streamdet.sim._render import (
    CorrelatedNoise,
    StripRenderer,
    exponential_mixture,
    source_components,
)
from streamdet.sim.simulate import FLUX_SCALE, MISSING_MEAN, NOISE_ACF, _simulate, _thermal_acf

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "sdc1"
FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))


def _image(path: Path) -> tuple[np.ndarray, fits.Header]:
    with fits.open(path) as hdul:
        return np.asarray(hdul[0].data, dtype=np.float64), hdul[0].header.copy()


def _one_source(*, x: float, y: float, flux: float, bmaj: float, bmin: float, pa: float,
                size: int, core_frac: float = 0.0, template: int = 0,
                mirror: float = 1.0) -> SourceDraw:
    def f(v: float) -> np.ndarray:
        return np.array([v], np.float64)

    return SourceDraw(x=f(x), y=f(y), flux=f(flux), bmaj=f(bmaj), bmin=f(bmin), pa=f(pa),
                      core_frac=f(core_frac), size=np.array([size], np.int64),
                      cls=np.array([1 if size == 1 else 3], np.int64),
                      template=np.array([template if size == 1 else -1], np.int64),
                      mirror=f(mirror))


def _render_one(draw: SourceDraw, *, freq: int = 560, npix: int = 256, gain: float = 0.8,
                strip: int = 64) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Render sources with north = +y (east = -x); return image and centroids."""
    b = band(freq)
    c = source_components(draw, north_rad=np.full(len(draw), np.pi / 2),
                          gain=np.full(len(draw), gain), band=b, templates=agn_templates())
    r = StripRenderer(c.gaussians, width=npix, stamps=c.stamps)
    img = np.vstack([r.render(y0, min(npix, y0 + strip)) for y0 in range(0, npix, strip)])
    return img, c.cent_x, c.cent_y


def _scorer() -> Any:
    with warnings.catch_warnings():  # ska_sdc imports pkg_resources and uses old pandas API
        warnings.simplefilter("ignore")
        mod = pytest.importorskip("ska_sdc")
        import ska_sdc.sdc1.dc_defns as defns
    return mod.Sdc1Scorer, defns


# ------------------------------------------------------------------------ header / WCS

@pytest.mark.parametrize(("freq", "pixel", "fwhm"),
                         [(560, 0.60, 1.5), (1400, 0.24, 0.60), (9200, 0.037, 0.0913)])
def test_header_and_wcs_per_band(tmp_path: Path, freq: int, pixel: float, fwhm: float) -> None:
    n = 128
    out = tmp_path / "f.fits"
    simulate(out, size=n, freq=freq, seed=2, offset=(0.1, -0.2), noise=False, quiet=True)
    data, h = _image(out)
    assert data.shape == (1, 1, n, n)
    assert h["NAXIS"] == 4 and h["NAXIS3"] == 1 and h["NAXIS4"] == 1
    assert (h["CTYPE1"], h["CTYPE2"], h["CTYPE3"], h["CTYPE4"]) == (
        "RA---SIN", "DEC--SIN", "FREQ", "STOKES")
    assert h["BUNIT"] == "JY/BEAM"
    assert h["CDELT1"] == pytest.approx(-pixel / 3600)
    assert h["CDELT2"] == pytest.approx(pixel / 3600)
    assert h["BMAJ"] == pytest.approx(fwhm / 3600) and h["BMIN"] == pytest.approx(fwhm / 3600)
    assert h["BPA"] == 0.0
    assert h["CRVAL3"] == pytest.approx(freq * 1e6)
    assert h["CRPIX1"] == n / 2 + 1 and h["CRPIX2"] == n / 2 + 1
    w = WCS(h).celestial
    ra, dec = w.all_pix2world([n / 2], [n / 2], 0)
    assert ra[0] == pytest.approx(0.1) and dec[0] == pytest.approx(-30.2)
    # pixel scale on the sky, measured through the WCS
    _, dec1 = w.all_pix2world([n / 2], [n / 2 + 1], 0)
    assert (dec1[0] - dec[0]) * 3600 == pytest.approx(pixel, rel=1e-6)


# --------------------------------------------------------------------------- rendering

@pytest.mark.parametrize(("size", "bmaj", "bmin", "core_frac"), [
    (2, SIZE_FLOOR_ARCSEC, SIZE_FLOOR_ARCSEC, 0.0),  # point source
    (2, 3.0, 1.0, 0.0),  # Gaussian
    (2, 2.0, 1.2, 0.7),  # core + Gaussian (flat-spectrum AGN)
    (3, 4.0, 1.5, 0.0),  # exponential disc
    (1, 30.0, 12.0, 0.02),  # lobed AGN (real template)
    (1, 3.0, 1.0, 0.0),  # small lobed AGN (supersampled template)
])
@pytest.mark.parametrize("freq", [560, 9200])
def test_flux_conserved_isolated_source(size: int, bmaj: float, bmin: float, core_frac: float,
                                        freq: int) -> None:
    b = band(freq)
    scale = b.pixel_arcsec / 0.6  # same source in pixels at every band
    npix = 256
    draw = _one_source(x=127.37, y=128.81, flux=2e-4, bmaj=bmaj * scale, bmin=bmin * scale,
                       pa=33.0, size=size, core_frac=core_frac)
    img, _, _ = _render_one(draw, freq=freq, npix=npix, gain=0.8)
    beam_area = math.pi / (4 * math.log(2)) * (b.beam_fwhm_arcsec / b.pixel_arcsec) ** 2
    assert img.sum() / beam_area == pytest.approx(2e-4 * 0.8, rel=0.01)


def test_point_source_is_the_restoring_beam() -> None:
    b = band(560)
    sig = 1.5 / 0.6 / FWHM_PER_SIGMA
    for x, y in ((100.0, 120.0), (100.3, 119.8)):
        draw = _one_source(x=x, y=y, flux=1e-3, bmaj=SIZE_FLOOR_ARCSEC, bmin=SIZE_FLOOR_ARCSEC,
                           pa=0.0, size=2)
        img, _, _ = _render_one(draw, freq=b.freq, gain=0.5)
        yy, xx = np.mgrid[110:131, 90:111]
        expect = 0.5e-3 * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sig ** 2))
        np.testing.assert_allclose(img[110:131, 90:111], expect, rtol=1e-5, atol=1e-10)
    # at a pixel centre the peak is S x PB (Jy/beam)
    draw = _one_source(x=50.0, y=60.0, flux=1e-3, bmaj=SIZE_FLOOR_ARCSEC,
                       bmin=SIZE_FLOOR_ARCSEC, pa=0.0, size=2)
    img, _, _ = _render_one(draw, gain=0.5)
    assert img.max() == pytest.approx(0.5e-3, rel=1e-6) and img[60, 50] == img.max()


@pytest.mark.parametrize(("pa", "axis"), [(0.0, (0.0, 1.0)), (90.0, (-1.0, 0.0)),
                                          (45.0, (-1.0, 1.0)), (150.0, (-1.0, -math.sqrt(3)))])
def test_position_angle_east_of_north(pa: float, axis: tuple[float, float]) -> None:
    """North is +y and east is -x (RA grows to the left): PA is measured from +y to -x."""
    draw = _one_source(x=128.2, y=127.6, flux=1e-3, bmaj=12.0, bmin=2.0, pa=pa, size=2)
    img, _, _ = _render_one(draw)
    yy, xx = np.mgrid[0:256, 0:256]
    w = img / img.sum()
    mx, my = (w * xx).sum(), (w * yy).sum()
    cov = np.array([[(w * (xx - mx) ** 2).sum(), (w * (xx - mx) * (yy - my)).sum()],
                    [(w * (xx - mx) * (yy - my)).sum(), (w * (yy - my) ** 2).sum()]])
    vals, vecs = np.linalg.eigh(cov)
    major = vecs[:, 1]
    ax = np.asarray(axis) / np.hypot(*axis)
    assert abs(float(major @ ax)) == pytest.approx(1.0, abs=1e-4)
    # second moment along the major axis: (bmaj FWHM)^2 + beam^2, in sigma^2 units
    expect = ((12.0 / 0.6) ** 2 + (1.5 / 0.6) ** 2) / FWHM_PER_SIGMA ** 2
    assert vals[1] == pytest.approx(expect, rel=0.01)


def _most_elongated_template() -> int:
    t = agn_templates()
    return int(np.argmax(t.las / t.minor))


@pytest.mark.parametrize("mirror", [1.0, -1.0])
def test_lobed_agn_from_a_real_template(mirror: float) -> None:
    k = _most_elongated_template()
    tpl = agn_templates()
    las = 60.0  # arcsec = 100 px at 560 MHz
    draw = _one_source(x=120.4, y=131.7, flux=1e-3, bmaj=las, bmin=10.0, pa=60.0, size=1,
                       core_frac=0.05, template=k, mirror=mirror)
    img, cx, cy = _render_one(draw, strip=37)
    np.testing.assert_array_equal(img, _render_one(draw, strip=256)[0])  # strips join exactly
    yy, xx = np.mgrid[0:256, 0:256]
    w = img / img.sum()
    mx, my = (w * xx).sum(), (w * yy).sum()
    # the truth centroid is the image's flux centroid
    assert mx == pytest.approx(cx[0], abs=0.1) and my == pytest.approx(cy[0], abs=0.1)
    # major axis along PA 60 (north-east: -x, +y in this frame)
    cov = np.array([[(w * (xx - mx) ** 2).sum(), (w * (xx - mx) * (yy - my)).sum()],
                    [(w * (xx - mx) * (yy - my)).sum(), (w * (yy - my) ** 2).sum()]])
    major = np.linalg.eigh(cov)[1][:, 1]
    axis = np.array([-math.sin(math.radians(60)), math.cos(math.radians(60))])
    assert abs(float(major @ axis)) > math.cos(math.radians(3))
    # the 0.5-99.5 % flux extent along the axis is the LAS (widened by the beam)
    proj = (xx - 120.4) * axis[0] + (yy - 131.7) * axis[1]
    order = np.argsort(proj.ravel())
    cum = np.cumsum(img.ravel()[order]) / img.sum()
    p = proj.ravel()[order]
    extent = np.interp(0.995, cum, p) - np.interp(0.005, cum, p)
    assert extent == pytest.approx(las / 0.6, rel=0.1)
    # the drawn b_min of a lobed AGN is the template's minor extent at that LAS
    assert tpl.minor[k] / tpl.las[k] < 0.5


def test_lobed_agn_mirror_flips_the_minor_axis() -> None:
    k = int(np.argmax(np.abs(agn_templates().centroid[:, 1])))
    cents = []
    for mirror in (1.0, -1.0):
        draw = _one_source(x=128.0, y=128.0, flux=1e-3, bmaj=60.0, bmin=10.0, pa=0.0, size=1,
                           template=k, mirror=mirror)
        img, cx, cy = _render_one(draw)
        yy, xx = np.mgrid[0:256, 0:256]
        mx, my = (img * xx).sum() / img.sum(), (img * yy).sum() / img.sum()
        assert mx == pytest.approx(cx[0], abs=0.05) and my == pytest.approx(cy[0], abs=0.05)
        cents.append((mx - 128.0, my - 128.0))
    # PA 0: major axis along +y; the minor axis is x, flipped by the mirror
    assert cents[0][1] == pytest.approx(cents[1][1], abs=0.02)
    assert cents[0][0] == pytest.approx(-cents[1][0], abs=0.02) and abs(cents[0][0]) > 0.5


def test_exponential_mixture_matches_disc() -> None:
    w, s = exponential_mixture()
    assert w.sum() == pytest.approx(1.0) and np.all(w > 0)
    for r in (0.3, 1.0, 1.678, 3.0, 6.0):
        enclosed = float(np.sum(w * (1.0 - np.exp(-r * r / (2 * s * s)))))
        assert enclosed == pytest.approx(1.0 - (1.0 + r) * math.exp(-r), abs=2e-3)


# -------------------------------------------------------------------------- end to end

def _peak_fit(img: np.ndarray, x0: int, y0: int) -> tuple[float, float, float]:
    """Vertex and height of a 2-D quadratic fitted to log(img) on the 3x3 around (x0, y0)."""
    dy, dx = np.mgrid[-1:2, -1:2]
    v = np.log(img[y0 - 1:y0 + 2, x0 - 1:x0 + 2]).ravel()
    a = np.stack([np.ones(9), dx.ravel(), dy.ravel(), dx.ravel() ** 2, dx.ravel() * dy.ravel(),
                  dy.ravel() ** 2], axis=1)
    c = np.linalg.lstsq(a, v, rcond=None)[0]
    hess = np.array([[2 * c[3], c[4]], [c[4], 2 * c[5]]])
    off = np.linalg.solve(hess, -c[1:3])
    peak = c[0] + c[1:3] @ off + 0.5 * off @ hess @ off
    return x0 + off[0], y0 + off[1], float(np.exp(peak))


def test_truth_positions_and_fluxes_match_image_peaks(tmp_path: Path) -> None:
    out = tmp_path / "f.fits"
    truth = simulate(out, size=512, freq=560, seed=1, noise=False, faint=False, zero_mean=False,
                     quiet=True)
    data, h = _image(out)
    img = data[0, 0]
    w = WCS(h).celestial
    px, py = w.all_world2pix(truth["ra_core"], truth["dec_core"], 0)
    app = np.asarray(truth["flux"] * truth["pb"])
    checked = 0
    for i in np.argsort(-app):
        if truth["size"][i] != 2 or truth["b_maj"][i] > 1.0 or app[i] < 20e-6:
            continue
        if not (10 < px[i] < 500 and 10 < py[i] < 500):
            continue
        near = np.hypot(px - px[i], py - py[i]) < 15
        near[i] = False
        if np.any(app[near] > 0.002 * app[i]):
            continue
        x0, y0 = int(np.rint(px[i])), int(np.rint(py[i]))
        j = np.unravel_index(np.argmax(img[y0 - 2:y0 + 3, x0 - 2:x0 + 3]), (5, 5))
        xf, yf, peak = _peak_fit(img, x0 - 2 + int(j[1]), y0 - 2 + int(j[0]))
        assert xf == pytest.approx(px[i], abs=0.05) and yf == pytest.approx(py[i], abs=0.05)
        beam2 = 1.5 ** 2
        # the map carries flux_scale of the sky's flux (the real 560 MHz map's, 0.92)
        expect = app[i] * truth.meta["flux_scale"] * beam2 / math.sqrt(
            (beam2 + truth["b_maj"][i] ** 2) * (beam2 + truth["b_min"][i] ** 2))
        assert peak == pytest.approx(expect, rel=0.01)
        checked += 1
    assert checked >= 3
    assert truth.meta["flux_scale"] == FLUX_SCALE[560] == 0.92


def test_seeded_determinism(tmp_path: Path) -> None:
    kw: dict[str, Any] = dict(size=200, freq=1400, noise=True, sidelobes=True, quiet=True)
    t1 = simulate(tmp_path / "a.fits", truth=tmp_path / "a.txt", seed=7, **kw)
    t2 = simulate(tmp_path / "b.fits", truth=tmp_path / "b.txt", seed=7, **kw)
    t3 = simulate(tmp_path / "c.fits", truth=tmp_path / "c.txt", seed=8, **kw)
    assert (tmp_path / "a.fits").read_bytes() == (tmp_path / "b.fits").read_bytes()
    assert (tmp_path / "a.txt").read_bytes() == (tmp_path / "b.txt").read_bytes()
    assert len(t1) == len(t2) and np.array_equal(t1["ra_core"], t2["ra_core"])
    assert (tmp_path / "a.fits").read_bytes() != (tmp_path / "c.fits").read_bytes()
    assert len(t3) != len(t1) or not np.array_equal(t1["flux"], t3["flux"])


def test_strip_height_does_not_change_the_image(tmp_path: Path) -> None:
    kw: dict[str, Any] = dict(truth=None, size=300, freq=560, seed=4, offset=(0.0, 0.0),
                              noise=True, sidelobes=True, faint=True, overwrite=False,
                              quiet=True)
    _simulate(tmp_path / "a.fits", strip_rows=7, **kw)
    _simulate(tmp_path / "b.fits", strip_rows=1000, **kw)
    a, _ = _image(tmp_path / "a.fits")
    b, _ = _image(tmp_path / "b.fits")
    assert np.array_equal(a, b)
    assert np.count_nonzero(a) == a.size


def test_noise_rms_and_beam_scale_correlation() -> None:
    b = band(560)
    gen = CorrelatedNoise(seed=3, tag=560, width=600, rms=b.noise, beam_sigma_px=b.beam_sigma_px)
    img = np.vstack([gen.strip(y0, y0 + 100) for y0 in range(0, 600, 100)]).astype(np.float64)
    assert img.std() == pytest.approx(b.noise, rel=0.03)
    assert abs(img.mean()) < 0.05 * b.noise
    # autocorrelation = the beam: rho(d) = exp(-d^2 / (2 sigma_beam^2))
    sig = 1.5 / 0.6 / FWHM_PER_SIGMA
    for d in (1, 2):
        rx = np.mean(img[:, d:] * img[:, :-d]) / img.var()
        ry = np.mean(img[d:, :] * img[:-d, :]) / img.var()
        expect = math.exp(-d * d / (2 * sig * sig))
        assert rx == pytest.approx(expect, abs=0.03) and ry == pytest.approx(expect, abs=0.03)


def test_noise_in_the_image_has_the_requested_rms(tmp_path: Path) -> None:
    simulate(tmp_path / "n.fits", size=512, freq=560, seed=9, noise=True, quiet=True)
    simulate(tmp_path / "c.fits", size=512, freq=560, seed=9, noise=False, quiet=True)
    noisy, h = _image(tmp_path / "n.fits")
    clean, _ = _image(tmp_path / "c.fits")
    assert h["SIMNOISE"] == pytest.approx(0.38e-6)  # a real SDC1 B1 1000 h map's MAD ...
    assert h["SIMTHERM"] == pytest.approx(0.32e-6)  # ... of which noise, the rest confusion
    assert (noisy - clean).std() == pytest.approx(0.32e-6, rel=0.03)
    mad = 1.4826 * np.median(np.abs(noisy - np.median(noisy)))
    assert mad == pytest.approx(0.38e-6, rel=0.1)
    simulate(tmp_path / "x.fits", size=512, freq=560, seed=9, noise_scale=1.3, quiet=True)
    louder, h = _image(tmp_path / "x.fits")
    assert h["SIMNOISE"] == pytest.approx(1.3 * 0.38e-6)
    assert (louder - clean).std() == pytest.approx(1.3 * 0.32e-6, rel=0.03)
    assert band(1400).noise < band(560).noise and band(9200).noise < band(1400).noise


def test_sidelobes_only_near_bright_sources(tmp_path: Path) -> None:
    simulate(tmp_path / "a.fits", size=512, freq=560, seed=11, noise=False, zero_mean=False,
             quiet=True)
    t = simulate(tmp_path / "b.fits", size=512, freq=560, seed=11, noise=False, zero_mean=False,
                 sidelobes=True, quiet=True)
    a, _ = _image(tmp_path / "a.fits")
    b, _ = _image(tmp_path / "b.fits")
    diff = (b - a)[0, 0]
    bright = np.asarray(t["flux"] * t["pb"]) > 300 * 0.38e-6
    assert bright.any()
    yy, xx = np.mgrid[0:512, 0:512]
    near = np.zeros((512, 512), bool)
    for x, y in zip(t["x"][bright], t["y"][bright], strict=True):
        near |= np.hypot(xx - x, yy - y) <= 12 * 2.5 + 1
    assert np.all(diff[~near] == 0)
    assert diff[near].min() < 0  # negative bowls


# --------------------------------------------------------------------- truth catalogue

def test_truth_file_format_and_round_trip(tmp_path: Path) -> None:
    t = simulate(tmp_path / "f.fits", truth=tmp_path / "t.txt", size=256, freq=560, seed=5,
                 offset=(-0.3, 0.0), quiet=True)  # RA of the field straddles 0/360
    lines = (tmp_path / "t.txt").read_text().splitlines()
    assert lines[0].split() == list(SDC1_COLUMNS)
    assert len(lines) == len(t) + 1
    rows = np.array([[float(v) for v in ln.split()] for ln in lines[1:]])
    assert rows.shape == (len(t), 12) and np.all(np.isfinite(rows))
    assert np.all((rows[:, 1] >= 0) & (rows[:, 1] < 360) & (rows[:, 3] >= 0) & (rows[:, 3] < 360))
    assert set(np.unique(rows[:, 10])) <= {1, 2, 3} and set(np.unique(rows[:, 11])) <= {1, 2, 3}
    assert np.all(rows[:, 7] > 0) and np.all(rows[:, 8] > 0) and np.all(rows[:, 8] <= rows[:, 7])
    assert np.all((rows[:, 6] >= 0) & (rows[:, 6] <= 1))
    back = read_sdc1(tmp_path / "t.txt")
    assert back.colnames == list(SDC1_COLUMNS)
    for c in ("id", "size", "class"):
        assert back[c].dtype == np.int64 and np.array_equal(back[c], t[c])
    for c, tol in (("ra_core", 1e-9), ("dec_core", 1e-9), ("ra_cent", 1e-9),
                   ("dec_cent", 1e-9), ("core_frac", 1e-6), ("b_maj", 1e-6), ("b_min", 1e-6),
                   ("pa", 1e-6)):
        np.testing.assert_allclose(back[c], t[c], rtol=0, atol=tol)
    np.testing.assert_allclose(back["flux"], t["flux"], rtol=1e-9)


def test_write_read_sdc1_edge_cases(tmp_path: Path) -> None:
    t = Table({c: [1.0, 2.0] for c in SDC1_COLUMNS})
    t["ra_core"] = [-0.5, 359.99999999999]
    t["ra_cent"] = [720.25, -1e-20]
    t["core_frac"] = [-0.0, 0.5]
    p = write_sdc1(t, tmp_path / "c.txt")
    back = read_sdc1(p)
    np.testing.assert_allclose(back["ra_core"], [359.5, 0.0], atol=1e-8)
    np.testing.assert_allclose(back["ra_cent"], [0.25, 0.0], atol=1e-8)
    assert "-0.0" not in p.read_text()
    with pytest.raises(OutputExistsError):
        write_sdc1(t, p)
    write_sdc1(t[:1], p, overwrite=True)
    assert len(read_sdc1(p)) == 1
    bad = t.copy()
    bad["flux"] = [np.nan, 1.0]
    with pytest.raises(StreamdetValueError, match="flux"):
        write_sdc1(bad, tmp_path / "nan.txt")
    assert not (tmp_path / "nan.txt").exists()
    with pytest.raises(StreamdetValueError, match="b_min"):
        write_sdc1(t[[c for c in SDC1_COLUMNS if c != "b_min"]], tmp_path / "m.txt")
    with pytest.raises(StreamdetFileNotFoundError):
        read_sdc1(tmp_path / "missing.txt")
    (tmp_path / "h.txt").write_text("id ra dec\n1 2 3\n")
    with pytest.raises(StreamdetValueError, match="header"):
        read_sdc1(tmp_path / "h.txt")
    (tmp_path / "s.txt").write_text(" ".join(SDC1_COLUMNS) + "\n1 2 3\n")
    with pytest.raises(StreamdetValueError, match="line 1"):
        read_sdc1(tmp_path / "s.txt")
    (tmp_path / "e.txt").write_text(" ".join(SDC1_COLUMNS) + "\n")
    assert len(read_sdc1(tmp_path / "e.txt")) == 0


@pytest.mark.parametrize("offset", [(0.0, 0.0), (0.0, 0.06)])
def test_official_scorer_gives_truth_a_perfect_score(tmp_path: Path,
                                                     offset: tuple[float, float]) -> None:
    scorer, defns = _scorer()
    simulate(tmp_path / "f.fits", truth=tmp_path / "t.txt", size=512, freq=560, seed=6,
             offset=offset, quiet=True)
    df = read_sdc1(tmp_path / "t.txt").to_pandas()
    # sources in the SDC1 training box are dropped by train=False (RA as -180..180)
    lim = defns.TRAIN_LIM[560]
    ra = np.where(df["ra_core"] > 180, df["ra_core"] - 360, df["ra_core"])
    inside = ((ra > lim["ra_min"]) & (ra < lim["ra_max"]) & (df["dec_core"] > lim["dec_min"])
              & (df["dec_core"] < lim["dec_max"]))
    expected = int((~inside).sum())
    assert expected > 100
    if offset == (0.0, 0.0):
        assert expected == len(df)  # a 512 px field at the pointing misses the box
    else:
        assert 0 < int(inside.sum()) < len(df)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        score = scorer(df, df.copy(), 560).run(mode=0, train=False)
    assert score.n_match == expected and score.n_false == 0
    assert score.value == pytest.approx(expected)
    assert score.acc_pc == pytest.approx(100.0)


# ------------------------------------------------------------------------- population

def test_source_count_is_poisson_density_times_area() -> None:
    for freq in (560, 1400, 9200):
        b = band(freq)
        n = 6000
        expect = b.density * (n * b.pixel_arcsec / 3600) ** 2
        counts = [len(draw_sources(np.random.default_rng(s), size=n, freq=freq, faint=False))
                  for s in range(3)]
        for c in counts:
            assert abs(c - expect) < 5 * math.sqrt(expect)
        assert len(set(counts)) == 3


def test_faint_counts_continue_the_catalogue_law() -> None:
    for freq in (560, 1400, 9200):
        c = faint_counts(freq)
        flux = population(freq).flux.astype(np.float64)
        real = REAL_FAINT_COUNTS.get(freq)
        assert c.edges[0] == pytest.approx(c.flux_lo) and c.edges[-1] > c.peak
        assert -1.5 < c.slope < 0.0 and 0.3 < c.size_slope < 1.0
        assert c.ratio > 3.0
        if real is not None:            # the real sky's law, in catalogue rows
            assert (c.slope, c.flux_lo) == (real[0], real[2])
            per_deg2 = np.exp(c.log_amp) * 1e-6 ** c.slope * band(freq).density / flux.size
            assert per_deg2 == pytest.approx(real[1], rel=1e-9)
            continue
        assert c.flux_lo == pytest.approx(band(freq).flux_min / FAINT_DEPTH)
        # the law reproduces the catalogue's counts over [peak, 8 peak] (20% per ln-bin of 0.5)
        for lo in np.arange(np.log(c.peak), np.log(8 * c.peak) - 0.5, 0.5):
            n = np.count_nonzero((np.log(flux) >= lo) & (np.log(flux) < lo + 0.5))
            law = np.exp(c.log_amp) * (
                np.exp((lo + 0.5) * c.slope) - np.exp(lo * c.slope)) / c.slope
            assert n == pytest.approx(law, rel=0.2), (freq, lo)
    for freq in (560, 1400, 9200):
        c = faint_counts(freq)
        flux = population(freq).flux.astype(np.float64)
        # catalogue + faint population = the law below the peak, where the catalogue is short
        mid = np.sqrt(c.edges[:-1] * c.edges[1:])
        law = np.exp(c.log_amp) * mid ** c.slope * np.diff(np.log(c.edges)) / flux.size
        have = np.histogram(flux, c.edges)[0] / flux.size
        short = have < law
        np.testing.assert_allclose((have + c.fraction)[short], law[short], rtol=1e-9)
        assert np.all(c.fraction[~short] == 0.0)


def test_faint_population_draw() -> None:
    n, freq = 3000, 560
    b, c = band(freq), faint_counts(freq)
    bright = draw_sources(np.random.default_rng(4), size=n, freq=freq, faint=False)
    every = draw_sources(np.random.default_rng(4), size=n, freq=freq)
    # the catalogue sources are the same with or without the faint population
    key = {(round(float(x), 9), round(float(y), 9)): i for i, (x, y) in
           enumerate(zip(every.x, every.y, strict=True))}
    idx = np.array([key[(round(float(x), 9), round(float(y), 9))]
                    for x, y in zip(bright.x, bright.y, strict=True)])
    for name in ("flux", "bmaj", "bmin", "pa", "core_frac", "size", "cls", "template"):
        np.testing.assert_array_equal(getattr(every, name)[idx], getattr(bright, name))
    faint = np.ones(len(every), bool)
    faint[idx] = False
    expect = c.ratio * b.density * (n * b.pixel_arcsec / 3600) ** 2
    assert abs(faint.sum() - expect) < 5 * math.sqrt(expect)
    f = every.flux[faint]
    assert f.min() >= c.flux_lo and f.max() <= c.edges[-1]
    assert np.all(every.size[faint] != 1) and np.all(every.template[faint] == -1)
    assert np.all(every.bmin <= every.bmaj) and np.all(every.bmin >= SIZE_FLOOR_ARCSEC)
    assert np.all(np.diff(every.y) >= 0)
    # sizes follow the size-flux relation: median b_maj per flux decade ~ S ** size_slope
    lf = np.log10(f)
    centres, medians = [], []
    for lo in np.arange(lf.min(), lf.max() - 0.5, 0.25):
        m = (lf >= lo) & (lf < lo + 0.25)
        if m.sum() > 200:
            centres.append(lo + 0.125)
            medians.append(np.log10(np.median(every.bmaj[faint][m])))
    slope = np.polyfit(centres, medians, 1)[0]
    assert slope == pytest.approx(c.size_slope, abs=0.1)


def test_simulate_faint_population(tmp_path: Path) -> None:
    kw: dict[str, Any] = dict(size=256, freq=560, seed=21, offset=(0.0, -0.5), quiet=True)
    with_f = simulate(tmp_path / "a.fits", truth=tmp_path / "a.txt", **kw)
    without = simulate(tmp_path / "b.fits", truth=tmp_path / "b.txt", faint=False, **kw)
    assert fits.getheader(tmp_path / "a.fits")["SIMFAINT"] is True
    assert fits.getheader(tmp_path / "b.fits")["SIMFAINT"] is False
    assert with_f.meta["faint"] and not without.meta["faint"]
    assert len(with_f) > 4 * len(without)
    assert len(read_sdc1(tmp_path / "a.txt")) == len(with_f)
    # every source of the faint-free field is in the full one, with the same values
    pos = {(round(float(r), 9), round(float(d), 9)) for r, d in
           zip(with_f["ra_core"], with_f["dec_core"], strict=True)}
    assert all((round(float(r), 9), round(float(d), 9)) in pos for r, d in
               zip(without["ra_core"], without["dec_core"], strict=True))
    # the faint sources add their flux to the noise-free image (without taking the sky's
    # mean out)
    kw["noise"] = False
    kw["zero_mean"] = False
    simulate(tmp_path / "c.fits", faint=False, **kw)
    simulate(tmp_path / "d.fits", **kw)
    extra = _image(tmp_path / "d.fits")[0].sum() - _image(tmp_path / "c.fits")[0].sum()
    only = np.setdiff1d(np.arange(len(with_f)), np.flatnonzero(np.isin(
        np.asarray(with_f["ra_core"]), np.asarray(without["ra_core"]))))
    expect = float(np.sum(np.asarray(with_f["flux"])[only] * np.asarray(with_f["pb"])[only]))
    assert extra / band(560).beam_area_px == pytest.approx(expect * FLUX_SCALE[560], rel=0.03)


def _training(name: str) -> np.ndarray:
    path = SHARED / name
    if not path.exists():
        pytest.skip(f"{path} not available")
    rows = []
    with (gzip.open(path, "rt") if name.endswith(".gz") else open(path)) as fh:
        for line in fh:
            parts = line.split()
            if len(parts) == 15 and parts[0].isdigit():
                rows.append([float(p) for p in parts])
    return np.array(rows)


@pytest.mark.parametrize(("freq", "name"), [(560, "TrainingSet_B1_v2_ML.txt.gz"),
                                            (1400, "TrainingSet_B2_v2_ML.txt")])
def test_packaged_population_is_the_sdc1_catalogue(freq: int, name: str) -> None:
    cat = _training(name)
    pop = population(freq)
    assert pop.flux.size == cat.shape[0]
    np.testing.assert_allclose(np.sort(pop.flux), np.sort(cat[:, 5]), rtol=1e-6)
    np.testing.assert_array_equal(np.bincount(pop.size, minlength=4),
                                  np.bincount(cat[:, 10].astype(int), minlength=4))
    # density against the scorer's training-box area (an independent footprint)
    box = {560: (-0.6723, 0.0, -29.9400, -29.4061), 1400: (-0.2688, 0.0, -29.9400, -29.7265)}
    ra0, ra1, d0, d1 = box[freq]
    area = (math.radians(ra1 - ra0) * (math.sin(math.radians(d1)) - math.sin(math.radians(d0)))
            * (180 / math.pi) ** 2)
    assert band(freq).density == pytest.approx(cat.shape[0] / area, rel=0.02)


def test_primary_beam_matches_the_scorer_table() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pytest.importorskip("ska_sdc")
        from ska_sdc.data.data_resources import pb_info_df
    # Miriad annulus k spans [k, k+1) steps of 116.4571" at 1.4 GHz (x 1400/freq)
    for freq in (560, 1400):
        step = 116.4571 * 1400 / freq / 3600
        k = np.arange(1, 20)
        theirs = pb_info_df["average"].to_numpy()[k] / 1000
        mine = primary_beam((k + 0.5) * step, freq)
        np.testing.assert_allclose(mine, theirs, atol=0.02)
    assert primary_beam(0.0, 9200) == pytest.approx(1.0)


# ------------------------------------------------------------------- inputs and outputs

def test_bad_inputs(tmp_path: Path) -> None:
    out = tmp_path / "f.fits"
    with pytest.raises(StreamdetValueError, match="700"):
        simulate(out, freq=700, size=64)
    with pytest.raises(StreamdetValueError, match="32"):
        simulate(out, size=32)
    with pytest.raises(StreamdetValueError, match="size"):
        simulate(out, size=100.0)  # type: ignore[arg-type]
    with pytest.raises(StreamdetValueError, match="seed"):
        simulate(out, size=64, seed=-1)
    with pytest.raises(StreamdetValueError, match="Dec"):
        simulate(out, size=64, offset=(0.0, -65.0))
    with pytest.raises(StreamdetValueError, match="finite"):
        simulate(out, size=64, offset=(float("nan"), 0.0))
    with pytest.raises(StreamdetValueError, match="differ"):
        simulate(out, truth=out, size=64)
    assert list(tmp_path.iterdir()) == []


def test_existing_outputs(tmp_path: Path) -> None:
    img, cat = tmp_path / "f.fits", tmp_path / "t.txt"
    cat.write_text("keep")
    with pytest.raises(OutputExistsError):
        simulate(img, truth=cat, size=64, quiet=True)
    assert not img.exists() and cat.read_text() == "keep"
    simulate(img, truth=cat, size=64, quiet=True, overwrite=True)
    assert read_sdc1(cat).colnames == list(SDC1_COLUMNS)
    before = img.read_bytes()
    with pytest.raises(OutputExistsError):
        simulate(img, size=64, seed=1, quiet=True)
    assert img.read_bytes() == before


def test_failure_leaves_nothing_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = {"n": 0}
    original = StripRenderer.render

    def failing(self: StripRenderer, y0: int, y1: int) -> np.ndarray:
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("disk on fire")
        return original(self, y0, y1)

    monkeypatch.setattr(StripRenderer, "render", failing)
    with pytest.raises(RuntimeError, match="disk on fire"):
        _simulate(tmp_path / "f.fits", truth=tmp_path / "t.txt", size=128, freq=560, seed=0,
                  offset=(0.0, 0.0), noise=True, sidelobes=False, faint=True, overwrite=False,
                  quiet=True, strip_rows=16)
    assert os.listdir(tmp_path) == []


def test_memory_stays_bounded_by_the_strip(tmp_path: Path) -> None:
    n = 2048
    band(560), population(560)  # packaged data loaded once, outside the measurement
    _simulate(tmp_path / "w.fits", truth=None, size=64, freq=560, seed=0, offset=(0.0, 0.0),
              noise=True, sidelobes=False, faint=True, overwrite=False, quiet=True)
    tracemalloc.start()
    try:
        # without the faint population: the source list (O(sources), ~170k rows with it
        # at 2048^2) would dominate what this test bounds, the pixels held at once
        _simulate(tmp_path / "f.fits", truth=None, size=n, freq=560, seed=0, offset=(0.0, 0.0),
                  noise=True, sidelobes=False, faint=False, overwrite=False, quiet=True,
                  strip_rows=32)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert (tmp_path / "f.fits").stat().st_size >= 4 * n * n
    assert peak < 0.5 * 4 * n * n  # less than half of the float32 image


def test_primary_beam_file_matches_the_truth_gain(tmp_path: Path) -> None:
    """The PB map written for ``detect --pb`` gives the gain the simulator applied."""
    from streamdet.catalogue._pb import PrimaryBeam
    from streamdet.sim.simulate import write_primary_beam

    truth = simulate(tmp_path / "f.fits", size=256, freq=1400, seed=5, offset=(0.3, -0.2),
                     quiet=True)
    pb_path = write_primary_beam(tmp_path / "pb.fits", freq=1400, pixel_deg=0.02,
                                 size_deg=3.0)
    gain = PrimaryBeam.from_fits(pb_path).response(np.asarray(truth["ra_core"]),
                                                   np.asarray(truth["dec_core"]))
    np.testing.assert_allclose(gain, np.asarray(truth["pb"]), rtol=2e-3)
    with pytest.raises(OutputExistsError):
        write_primary_beam(pb_path, freq=1400)
    with pytest.raises(StreamdetValueError, match="1234"):
        write_primary_beam(tmp_path / "x.fits", freq=1234)


def test_zero_mean_takes_the_sky_mean_out(tmp_path: Path) -> None:
    """The image is the sky less one level: the sources' attenuated flux per beam."""
    kw: dict[str, Any] = dict(size=400, freq=560, seed=8, noise=False, quiet=True)
    simulate(tmp_path / "flat.fits", zero_mean=False, **kw)
    truth = simulate(tmp_path / "zm.fits", **kw)
    flat = np.squeeze(_image(tmp_path / "flat.fits")[0]).astype(np.float64)
    got4, header = _image(tmp_path / "zm.fits")
    got = np.squeeze(got4).astype(np.float64)
    assert header["SIMZMEAN"] is True
    level = float(np.sum(np.asarray(truth["flux"]) * np.asarray(truth["pb"]))) \
        * band(560).beam_area_px / 400 ** 2 * MISSING_MEAN * truth.meta["flux_scale"]
    assert header["SIMLEVEL"] == pytest.approx(level, rel=1e-12) and level > 0
    np.testing.assert_allclose(got, flat - level, rtol=0, atol=1e-6 * float(flat.max()))
    # the image's mean is ~0 (sources cut by the edges make up the difference)
    assert abs(got.mean()) < 0.25 * flat.mean()
    assert np.median(got) < 0 < np.median(flat)


REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "sdc1" / "real"


@pytest.mark.skipif(not (REAL / "B1_1000h_west_truth.txt").exists(),
                    reason="real SDC1 truth not available")
def test_simulated_counts_match_the_real_truth() -> None:
    """Per 0.5 dex from 0.1 to 32 uJy, the simulated 560 MHz sky holds as many sources per
    square degree as the real SDC1 truth (every embedded source) within 15%."""
    real = read_sdc1(REAL / "B1_1000h_west_truth.txt")
    area_real = 520 * 957 * (0.6 / 3600) ** 2
    n = 3000
    draw = draw_sources(np.random.default_rng(12), size=n, freq=560)
    area_sim = (n * 0.6 / 3600) ** 2
    edges = np.geomspace(1e-7, 10 ** -4.5, 8)
    got = np.histogram(draw.flux, edges)[0] / area_sim
    want = np.histogram(np.asarray(real["flux"]), edges)[0] / area_real
    np.testing.assert_allclose(got, want, rtol=0.15)


def test_cli_shifted_sky_options(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from streamdet.cli import main

    out = tmp_path / "s.fits"
    assert main(["simulate", str(out), "--size", "128", "--noise-scale", "1.3",
                 "--agn-fraction", "0.5", "--no-zero-mean", "-q"]) == 0
    h = fits.getheader(out)
    assert h["SIMNOISE"] == pytest.approx(1.3 * 0.38e-6) and h["SIMZMEAN"] is False
    assert h["SIMLEVEL"] == 0.0
    assert main(["simulate", str(tmp_path / "t.fits"), "--agn-fraction", "2", "-q"]) == 1
    assert "agn_fraction must be in [0, 1]" in capsys.readouterr().err
    assert not (tmp_path / "t.fits").exists()


def test_flux_scale_renders_that_share_of_the_sky_and_keeps_the_truth(tmp_path: Path) -> None:
    """flux_scale multiplies every rendered source (the image without noise and sky level
    scales exactly) and leaves the truth alone; the band's default is the real map's."""
    kw: dict[str, Any] = dict(size=256, freq=560, seed=4, noise=False, zero_mean=False,
                              quiet=True)
    one = simulate(tmp_path / "one.fits", flux_scale=1.0, **kw)
    half = simulate(tmp_path / "half.fits", flux_scale=0.5, **kw)
    default = simulate(tmp_path / "def.fits", **kw)
    a, b, c = (np.squeeze(_image(tmp_path / f)[0]).astype(np.float64)
               for f in ("one.fits", "half.fits", "def.fits"))
    np.testing.assert_allclose(b, 0.5 * a, rtol=1e-5, atol=1e-12)
    np.testing.assert_allclose(c, FLUX_SCALE[560] * a, rtol=1e-5, atol=1e-12)
    for t in (half, default):
        np.testing.assert_array_equal(np.asarray(t["flux"]), np.asarray(one["flux"]))
    assert fits.getheader(tmp_path / "half.fits")["SIMFSCAL"] == 0.5
    assert simulate(tmp_path / "b14.fits", freq=1400, size=128, seed=1, noise=False,
                    quiet=True).meta["flux_scale"] == 1.0   # no real map: unscaled
    for bad in (0.0, -1.0, float("nan"), "x"):
        with pytest.raises(StreamdetValueError, match="flux_scale"):
            simulate(tmp_path / "bad.fits", flux_scale=bad, overwrite=True, **kw)


def test_noise_has_the_real_maps_autocorrelation(tmp_path: Path) -> None:
    """At 560 MHz the thermal noise is correlated as measured on the real map, less the
    confusion's share: along x narrower than the beam with a negative lobe at 3 px,
    wider along y; at 1400 MHz as the beam (no real map)."""
    n = 768
    for freq in (560, 1400):
        simulate(tmp_path / f"n{freq}.fits", size=n, freq=freq, seed=3, faint=False,
                 zero_mean=False, quiet=True)
        simulate(tmp_path / f"s{freq}.fits", size=n, freq=freq, seed=3, faint=False,
                 zero_mean=False, noise=False, quiet=True)
        noise = (np.squeeze(_image(tmp_path / f"n{freq}.fits")[0]).astype(np.float64)
                 - np.squeeze(_image(tmp_path / f"s{freq}.fits")[0]).astype(np.float64))
        noise -= noise.mean()
        var = noise.var()

        def ac(lag: int, axis: int, noise: np.ndarray = noise, var: float = var) -> float:
            if axis == 1:
                return float((noise[:, :-lag] * noise[:, lag:]).mean() / var)
            return float((noise[:-lag] * noise[lag:]).mean() / var)

        acf = _thermal_acf(band(freq))
        if freq == 560:
            assert acf is not None and NOISE_ACF[560][0][2] < -0.1
            for lag in (1, 2, 3, 5):
                assert ac(lag, 1) == pytest.approx(acf[0][lag - 1], abs=0.015)
                assert ac(lag, 0) == pytest.approx(acf[1][lag - 1], abs=0.015)
            assert ac(3, 1) < -0.1 and ac(1, 0) > ac(1, 1) + 0.05
        else:
            assert acf is None
            sigma = band(freq).beam_sigma_px
            for lag in (1, 2):
                expect = math.exp(-0.5 * (lag / sigma) ** 2)
                assert ac(lag, 1) == pytest.approx(expect, abs=0.03)
                assert ac(lag, 0) == pytest.approx(expect, abs=0.03)
