"""streamdet.catalogue.plot: region figures (pixels shown, overlays, geometry, lazy reads),
diagnostics (residuals, matching, scorer curve, counts), errors and the ``plot`` subcommand."""

from __future__ import annotations

import argparse
import math
import struct
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.table import Table, vstack
from astropy.wcs import WCS

import streamdet
import streamdet.io.image as sio
from streamdet.catalogue._plot_cli import add_plot_parser
from streamdet.catalogue.catalog import read_sdc1, sdc1_pa
from streamdet.catalogue.plot import (
    PixelRegion,
    convolve_ellipses,
    diagnostics_figure,
    match_catalogues,
    overlay_geometry,
    parameter_residuals,
    plot_diagnostics,
    plot_region,
    region_figure,
    resolve_region,
    source_counts,
    threshold_curve,
)
from streamdet.errors import (
    OutputExistsError,
    StreamdetError,
    StreamdetFileNotFoundError,
    StreamdetValueError,
    WCSMissingError,
)

pytest.importorskip("matplotlib")

REGION = (40, 60, 200, 180)  # x0, y0, x1, y1: not square, so a transposition shows


@pytest.fixture(scope="module")
def field(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Table]:
    """A 256^2 simulated 560 MHz field, its truth file and truth table."""
    d = tmp_path_factory.mktemp("field")
    truth = streamdet.simulate(d / "f.fits", truth=d / "t.txt", size=256, seed=11, faint=False,
                               quiet=True)
    return d / "f.fits", d / "t.txt", truth


def _fits_pixels(path: Path) -> np.ndarray:
    """The image as astropy.io.fits reads it, (y, x) native float32."""
    with fits.open(path) as hdul:
        return np.asarray(hdul[0].data, dtype=np.float32).reshape(hdul[0].data.shape[-2:])


def _fits_wcs(path: Path) -> WCS:
    return WCS(fits.getheader(path)).celestial


def _png_size(path: Path) -> tuple[int, int]:
    blob = path.read_bytes()
    assert blob[:8] == b"\x89PNG\r\n\x1a\n"
    assert blob[12:16] == b"IHDR"
    width, height = struct.unpack(">II", blob[16:24])
    return width, height


def _in_region(x: np.ndarray, y: np.ndarray, region: tuple[int, int, int, int]) -> np.ndarray:
    x0, y0, x1, y1 = region
    return (x >= x0 - 0.5) & (x < x1 - 0.5) & (y >= y0 - 0.5) & (y < y1 - 0.5)


# ----------------------------------------------------------------------------- region figures


def test_region_png_size_pixels_and_overlays(field: tuple[Path, Path, Table],
                                             tmp_path: Path) -> None:
    image, truth_path, truth = field
    out = plot_region(image, catalogue=truth_path, truth=truth_path, region=REGION,
                      out=tmp_path / "r.png", figsize=(6.0, 5.0), dpi=80)
    assert out == tmp_path / "r.png"
    assert _png_size(out) == (480, 400)
    from matplotlib.image import imread

    assert imread(out).shape[:2] == (400, 480)

    rf = region_figure(image, catalogue=truth_path, truth=truth_path, region=REGION)
    x0, y0, x1, y1 = REGION
    expected = _fits_pixels(image)[y0:y1, x0:x1]
    array = rf.image.get_array()
    assert array is not None
    shown = np.ma.getdata(array)
    assert shown.shape == (y1 - y0, x1 - x0) and rf.step == 1
    np.testing.assert_array_equal(shown, expected)
    np.testing.assert_array_equal(rf.data, expected)
    assert rf.region == PixelRegion(*REGION)
    lo, hi = np.percentile(expected, [0.5, 99.9])
    assert rf.vmin == pytest.approx(lo) and rf.vmax == pytest.approx(hi)

    # ellipses: one per catalogue row whose centroid falls in the region
    written = read_sdc1(truth_path)  # positions as written (1e-9 deg)
    px, py = _fits_wcs(image).all_world2pix(np.asarray(written["ra_cent"]),
                                            np.asarray(written["dec_cent"]), 0)
    inside = np.flatnonzero(_in_region(px, py, REGION))
    assert 5 < len(inside) < len(truth)
    assert rf.detections is not None and rf.truth is not None
    assert rf.detections.kind == "ellipse"
    np.testing.assert_array_equal(rf.detections.index, inside)
    np.testing.assert_array_equal(rf.truth.index, inside)
    np.testing.assert_allclose(rf.detections.x, px[inside] - x0, atol=1e-6)
    np.testing.assert_allclose(rf.detections.y, py[inside] - y0, atol=1e-6)
    from matplotlib.collections import EllipseCollection

    drawn = [c for c in rf.ax.collections if isinstance(c, EllipseCollection)]
    assert [np.shape(c.get_offsets())[0] for c in drawn] == [len(inside)] * 2
    box = rf.ax.get_legend()
    assert box is not None
    legend = [t.get_text() for t in box.get_texts()]
    assert f"detections ({len(inside)})" in legend
    # the simulated truth without its faint population is bright: every source passes
    assert legend[0].startswith(f"truth: {len(inside)} of {len(inside)} with peak \u2265 5\u03c3")
    assert any(t.startswith("beam 1.5\"") for t in legend)
    assert rf.ax.coords[0].get_axislabel().startswith("Right Ascension")  # type: ignore[attr-defined]
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    assert isinstance(rf.figure.canvas, FigureCanvasAgg)


def test_only_the_region_is_read(field: tuple[Path, Path, Table],
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    image = field[0]
    reads: list[tuple[tuple[int, int], ...]] = []
    original = sio.read_block

    def recording(img: Any, region: tuple[tuple[int, int], ...]) -> np.ndarray:
        reads.append(region)
        return original(img, region)

    monkeypatch.setattr(sio, "read_block", recording)
    img = streamdet.open_image(image, chunks=64)
    rf = region_figure(img, region=(140, 150, 180, 190))
    assert reads, "no pixels were read"
    for (ys, ye), (xs, xe) in reads:  # within the 64 px chunks that hold the region
        assert 128 <= ys < ye <= 192 and 128 <= xs < xe <= 192
    np.testing.assert_array_equal(rf.data, _fits_pixels(image)[150:190, 140:180])


def test_zarr_store_and_downsampling(field: tuple[Path, Path, Table], tmp_path: Path) -> None:
    image = field[0]
    store = tmp_path / "f.zarr"
    streamdet.convert(image, store, chunks=64, quiet=True)
    pixels = _fits_pixels(image)
    rf = region_figure(store, region=REGION)
    np.testing.assert_array_equal(rf.data, pixels[60:180, 40:200])

    rf = region_figure(store, max_side=100)  # whole 256^2 image as 3x3 block means
    assert rf.step == 3 and rf.data.shape == (85, 85)
    ref = pixels[:255, :255].astype(np.float64).reshape(85, 3, 85, 3).mean(axis=(1, 3))
    np.testing.assert_allclose(rf.data, ref, rtol=1e-5, atol=1e-12)
    assert rf.image.get_extent() == [-0.5, 254.5, -0.5, 254.5]


def test_sky_region_from_center_and_size(field: tuple[Path, Path, Table]) -> None:
    image = field[0]
    img = streamdet.open_image(image)
    ra, dec = _fits_wcs(image).all_pix2world([[100.0, 120.0]], 0)[0]
    # 18" x 12" at 0.6"/px: 30 x 20 px centred on pixel (100, 120)
    reg = resolve_region(img, center=(ra, dec), size=(18.0, 12.0))
    assert reg == PixelRegion(85, 110, 115, 130)
    assert resolve_region(img, center=(ra, dec), size=18.0) == PixelRegion(85, 105, 115, 135)
    ra0, dec0 = _fits_wcs(image).all_pix2world([[2.0, 250.0]], 0)[0]
    corner = resolve_region(img, center=(ra0, dec0), size=12.0)
    assert corner == PixelRegion(0, 240, 12, 256, clipped=True)
    assert resolve_region(img) == PixelRegion(0, 0, 256, 256)
    assert resolve_region(img, region=(10.2, 20.7, 30.1, 40.0)) == PixelRegion(10, 20, 31, 40)


@pytest.mark.parametrize("pa, angle", [(0.0, 90.0), (90.0, 180.0), (45.0, 135.0),
                                       (150.0, 60.0)])
def test_ellipse_geometry_on_the_sky(field: tuple[Path, Path, Table], pa: float,
                                     angle: float) -> None:
    """PA east of north: north is +y, east is -x (RA grows to the left)."""
    image = field[0]
    cel = _fits_wcs(image)
    ra, dec = cel.all_pix2world([[128.0, 128.0]], 0)[0]  # the reference pixel
    t = Table({"ra": [ra], "dec": [dec], "bmaj": [6.0], "bmin": [3.0], "pa": [pa]})
    ov = overlay_geometry(t, PixelRegion(100, 100, 160, 160), wcs=cel)
    assert ov.kind == "ellipse" and len(ov) == 1
    assert ov.x[0] == pytest.approx(28.0, abs=1e-6) and ov.y[0] == pytest.approx(28.0, abs=1e-6)
    assert ov.width[0] == pytest.approx(10.0, rel=1e-6)  # 6" / 0.6"
    assert ov.height[0] == pytest.approx(5.0, rel=1e-6)
    # an ellipse's axis is a direction modulo 180 deg
    assert math.cos(2 * math.radians(ov.angle[0] - angle)) == pytest.approx(1.0, abs=1e-10)

    beam = (1.5, 1.5, 0.0)
    conv = overlay_geometry(t, PixelRegion(100, 100, 160, 160), wcs=cel, beam=beam)
    assert conv.width[0] == pytest.approx(math.hypot(6.0, 1.5) / 0.6, rel=1e-6)
    assert conv.height[0] == pytest.approx(math.hypot(3.0, 1.5) / 0.6, rel=1e-6)
    assert math.cos(2 * math.radians(conv.angle[0] - angle)) == pytest.approx(1.0, abs=1e-8)


def test_convolve_ellipses_against_covariance_eigenvectors() -> None:
    rng = np.random.default_rng(3)
    bmaj = rng.uniform(0.5, 5.0, 50)
    bmin = bmaj * rng.uniform(0.1, 1.0, 50)
    pa = rng.uniform(0.0, 180.0, 50)
    beam = (1.7, 0.9, 35.0)

    def cov(a: float, b: float, p: float) -> np.ndarray:
        t = math.radians(p)
        rot = np.array([[math.sin(t), math.cos(t)], [math.cos(t), -math.sin(t)]])  # (e, n)
        return rot @ np.diag([a * a, b * b]) @ rot.T

    got = convolve_ellipses(bmaj, bmin, pa, beam)
    for k in range(50):
        w, v = np.linalg.eigh(cov(bmaj[k], bmin[k], pa[k]) + cov(*beam))
        assert got[0][k] == pytest.approx(math.sqrt(w[1]), rel=1e-9)
        assert got[1][k] == pytest.approx(math.sqrt(w[0]), rel=1e-9)
        e, n = v[:, 1]
        assert math.sin(math.radians(got[2][k] - math.degrees(math.atan2(e, n)))) \
            == pytest.approx(0.0, abs=1e-9)


def test_pixel_boxes_and_image_without_wcs(fits_nowcs: Any, tmp_path: Path) -> None:
    boxes = Table({"x0": [2.0, 10.0, 45.0], "y0": [3.0, 30.0, 5.0], "x1": [8.0, 14.0, 49.0],
                   "y1": [7.0, 38.0, 9.0], "objectness": [0.9, 0.5, 0.7]})
    rf = region_figure(fits_nowcs.path, catalogue=boxes, region=(0, 0, 30, 40))
    assert rf.detections is not None and rf.detections.kind == "box"
    np.testing.assert_array_equal(rf.detections.index, [0, 1])  # the third lies at x 47
    np.testing.assert_allclose(rf.detections.x, [5.0, 12.0])
    np.testing.assert_allclose(rf.detections.width, [6.0, 4.0])
    np.testing.assert_array_equal(rf.data, fits_nowcs.expected[:40, :30])
    assert rf.ax.get_xlabel() == "x (px)"
    rf.save(tmp_path / "b.svg")
    assert (tmp_path / "b.svg").read_text().lstrip().startswith("<?xml")
    sky = Table({"ra": [0.0], "dec": [-30.0], "bmaj": [1.0], "bmin": [1.0], "pa": [0.0]})
    with pytest.raises(WCSMissingError, match="no celestial WCS"):
        region_figure(fits_nowcs.path, catalogue=sky)
    with pytest.raises(WCSMissingError):
        region_figure(fits_nowcs.path, center=(0.0, -30.0), size=10.0)


def test_cube_plane(fits_cube: Any) -> None:
    with pytest.raises(StreamdetValueError, match="channel"):
        region_figure(fits_cube.path)
    rf = region_figure(fits_cube.path, channel=3, region=(40, 5, 70, 20))
    np.testing.assert_array_equal(rf.data, fits_cube.expected[3, 5:20, 40:70])
    with pytest.raises(StreamdetValueError, match="outside"):
        region_figure(fits_cube.path, channel=20)


def test_region_errors(field: tuple[Path, Path, Table], tmp_path: Path) -> None:
    image, truth_path, _ = field
    with pytest.raises(StreamdetValueError, match="outside the image"):
        plot_region(image, region=(300, 0, 400, 50), out=tmp_path / "x.png")
    with pytest.raises(StreamdetValueError, match="outside the image"):
        plot_region(image, center=(1.0, -30.0), size=30.0, out=tmp_path / "x.png")
    with pytest.raises(StreamdetValueError, match="no pixel position"):
        plot_region(image, center=(180.0, -30.0), size=30.0, out=tmp_path / "x.png")
    with pytest.raises(StreamdetValueError, match="empty"):
        plot_region(image, region=(50, 50, 50, 80), out=tmp_path / "x.png")
    with pytest.raises(StreamdetValueError, match="both"):
        plot_region(image, region=(0, 0, 9, 9), center=(0.0, -30.0), size=5.0,
                    out=tmp_path / "x.png")
    with pytest.raises(StreamdetValueError, match="size"):
        plot_region(image, center=(0.0, -30.0), out=tmp_path / "x.png")
    with pytest.raises(StreamdetValueError, match="stretch"):
        plot_region(image, stretch="sqrt", out=tmp_path / "x.png")  # type: ignore[arg-type]
    with pytest.raises(StreamdetValueError, match="lacks the columns"):
        plot_region(image, catalogue=Table({"flux": [1.0]}), out=tmp_path / "x.png")
    with pytest.raises(StreamdetFileNotFoundError, match=r"nope\.txt"):
        plot_region(image, catalogue=tmp_path / "nope.txt", out=tmp_path / "x.png")
    with pytest.raises(StreamdetValueError, match="extension"):
        plot_region(image, out=tmp_path / "x.jpg")
    assert not (tmp_path / "x.png").exists()

    out = tmp_path / "r.png"
    out.write_bytes(b"keep")
    with pytest.raises(OutputExistsError):
        plot_region(image, region=REGION, out=out)
    assert out.read_bytes() == b"keep"
    plot_region(image, region=REGION, truth=truth_path, stretch="log", out=out, overwrite=True)
    width, height = region_figure(image, region=REGION).figure.get_size_inches()
    assert width == pytest.approx(9.1)  # default: a 6.5" image panel plus margins
    assert _png_size(out) == (round(width * 100), round(height * 100))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.png"]  # no temporary left


def test_missing_matplotlib_is_a_clear_error(field: tuple[Path, Path, Table], tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(StreamdetError, match=r"streamdet\[plot\]"):
        plot_region(field[0], region=REGION, out=tmp_path / "r.png")
    assert not (tmp_path / "r.png").exists()


# ----------------------------------------------------------------------------- what is drawn


def _random_detections(image: Path, n: int, seed: int = 0) -> Table:
    """``n`` detections spread over the 256^2 field, distinct fluxes and objectness."""
    rng = np.random.default_rng(seed)
    x, y = rng.uniform(0.0, 255.0, n), rng.uniform(0.0, 255.0, n)
    ra, dec = _fits_wcs(image).all_pix2world(x, y, 0)
    return Table({"ra": ra, "dec": dec, "flux": rng.permutation(np.logspace(-7, -3, n)),
                  "bmaj": np.full(n, 1.2), "bmin": np.full(n, 0.8),
                  "pa": rng.uniform(0.0, 180.0, n), "objectness": rng.uniform(0.0, 1.0, n)})


def _ellipse_counts(rf: Any) -> list[int]:
    from matplotlib.collections import EllipseCollection

    return [int(np.shape(c.get_offsets())[0]) for c in rf.ax.collections
            if isinstance(c, EllipseCollection)]


def _legend(rf: Any) -> list[str]:
    box = rf.ax.get_legend()
    assert box is not None
    return [t.get_text() for t in box.get_texts()]


def test_whole_field_draws_the_brightest(field: tuple[Path, Path, Table]) -> None:
    image = field[0]
    cat = _random_detections(image, 3000)
    flux = np.asarray(cat["flux"])
    obj = np.asarray(cat["objectness"])

    rf = region_figure(image, catalogue=cat)  # default: at most 2000 markers
    assert _ellipse_counts(rf) == [2000]
    brightest = np.sort(np.argsort(-flux)[:2000])
    assert rf.detections is not None
    np.testing.assert_array_equal(rf.detections.index, brightest)
    assert rf.detections.n_region == 3000
    assert "detections: brightest 2000 of 3000" in _legend(rf)
    sel = rf.selections["detections"]
    assert (sel.in_region, sel.passed, sel.drawn, sel.rank) == (3000, 3000, 2000, "brightest")

    rf = region_figure(image, catalogue=cat, max_markers=0)  # 0: all
    assert _ellipse_counts(rf) == [3000] and "detections (3000)" in _legend(rf)

    # a region: "of" counts the sources in it, the brightest of those are drawn
    cel = _fits_wcs(image)
    px, py = cel.all_world2pix(np.asarray(cat["ra"]), np.asarray(cat["dec"]), 0)
    inside = np.flatnonzero(_in_region(px, py, REGION))
    rf = region_figure(image, catalogue=cat, region=REGION, max_markers=100)
    assert _ellipse_counts(rf) == [100]
    assert rf.detections is not None
    np.testing.assert_array_equal(rf.detections.index,
                                  np.sort(inside[np.argsort(-flux[inside])[:100]]))
    assert f"detections: brightest 100 of {len(inside)}" in _legend(rf)

    # an objectness cut, then the brightest of what passes
    rf = region_figure(image, catalogue=cat, min_objectness=0.5, max_markers=300)
    passed = np.flatnonzero(obj >= 0.5)
    assert rf.detections is not None
    np.testing.assert_array_equal(rf.detections.index,
                                  np.sort(passed[np.argsort(-flux[passed])[:300]]))
    assert (f"detections: brightest 300 of the {len(passed)} with objectness \u2265 0.5 "
            "(3000 in view)") in _legend(rf)
    rf = region_figure(image, catalogue=cat, min_objectness=0.5, max_markers=0)
    assert _ellipse_counts(rf) == [len(passed)]
    assert f"detections: {len(passed)} of 3000 with objectness \u2265 0.5" in _legend(rf)

    # without flux: the most confident; with neither: an even spread of rows
    no_flux = cat.copy()
    del no_flux["flux"]
    rf = region_figure(image, catalogue=no_flux, max_markers=50)
    assert rf.detections is not None
    np.testing.assert_array_equal(rf.detections.index, np.sort(np.argsort(-obj)[:50]))
    assert "detections: most confident 50 of 3000" in _legend(rf)
    del no_flux["objectness"]
    rf = region_figure(image, catalogue=no_flux, max_markers=4)
    assert rf.detections is not None
    np.testing.assert_array_equal(rf.detections.index, [0, 1000, 1999, 2999])
    assert "detections: evenly spread 4 of 3000" in _legend(rf)

    with pytest.raises(StreamdetValueError, match="max_markers"):
        region_figure(image, catalogue=cat, max_markers=-1)
    with pytest.raises(StreamdetValueError, match="objectness column"):
        region_figure(image, catalogue=field[1], min_objectness=0.5)


def _truth_rows(image: Path, flux: np.ndarray, size_arcsec: np.ndarray, seed: int = 4
                ) -> tuple[Table, np.ndarray, np.ndarray]:
    """SDC1-like truth rows at random places of the field (Gaussian sizes, SDC1 PA)."""
    rng = np.random.default_rng(seed)
    n = len(flux)
    x, y = rng.uniform(20.0, 235.0, n), rng.uniform(20.0, 235.0, n)
    ra, dec = _fits_wcs(image).all_pix2world(x, y, 0)
    t = Table({"id": np.arange(n), "ra_core": ra, "dec_core": dec, "ra_cent": ra,
               "dec_cent": dec, "flux": flux, "core_frac": np.zeros(n),
               "b_maj": size_arcsec, "b_min": size_arcsec, "pa": np.zeros(n),
               "size": np.full(n, 2), "class": np.full(n, 3)})
    return t, x, y


def _mad_sigma(values: np.ndarray) -> float:
    v = np.asarray(values, np.float64).reshape(-1)
    return float(1.4826 * np.median(np.abs(v - np.median(v))))


def test_truth_overlay_draws_only_the_detectable(field: tuple[Path, Path, Table],
                                                  tmp_path: Path) -> None:
    image = field[0]
    sigma = _mad_sigma(_fits_pixels(image))
    assert 2e-7 < sigma < 6e-7  # the simulator's 560 MHz noise
    # point sources at 1, 4.9, 5.1 and 20 sigma, and discs of 6" FWHM holding 20 sigma:
    # the beam (1.5") spreads those to a peak of 20 * 1.5^2 / (6^2 + 1.5^2) = 1.2 sigma
    snr = np.repeat([1.0, 4.9, 5.1, 20.0, 20.0], 10)
    size = np.where(np.arange(50) >= 40, 6.0, 0.0)
    truth, _, _ = _truth_rows(image, snr * sigma, size)
    seen = np.flatnonzero((snr > 5.0) & (size == 0.0))

    rf = region_figure(image, truth=truth)
    assert rf.noise == pytest.approx(sigma, rel=1e-9)
    assert rf.truth is not None
    np.testing.assert_array_equal(rf.truth.index, seen)
    assert _ellipse_counts(rf) == [len(seen)]
    crosses = [ln for ln in rf.ax.get_lines() if ln.get_marker() == "+"]
    assert len(crosses) == 1 and len(np.asarray(crosses[0].get_xdata())) == len(seen)
    micro = f"{sigma * 1e6:.2g}"
    assert (f"truth: {len(seen)} of 50 with peak \u2265 5\u03c3 (\u03c3 {micro} \u00b5Jy/beam, "
            "MAD)") in _legend(rf)

    rf = region_figure(image, truth=truth, truth_snr=0)  # 0: every true source
    assert _ellipse_counts(rf) == [50] and "truth (50)" in _legend(rf)
    rf = region_figure(image, truth=truth, truth_snr=3.0, noise=2.0 * sigma)  # 1.5 sigma
    assert rf.truth is not None
    np.testing.assert_array_equal(rf.truth.index, np.flatnonzero((snr == 20.0) & (size == 0)))
    assert any("(\u03c3 " in t and ", given)" in t for t in _legend(rf))
    # the primary beam's gain (the simulator's truth table has it) lowers the peak
    faded = truth.copy()
    faded["pb"] = np.where(snr == 20.0, 0.1, 1.0)
    rf = region_figure(image, truth=faded)
    assert rf.truth is not None
    np.testing.assert_array_equal(rf.truth.index, np.flatnonzero(snr == 5.1))

    # block means shown: the noise is measured on full-resolution pixels (here all)
    rf = region_figure(image, truth=truth, max_side=100)
    assert rf.step == 3 and rf.noise == pytest.approx(sigma, rel=1e-9)
    assert _mad_sigma(rf.data) < 0.8 * sigma  # what the block means would have said
    assert rf.truth is not None
    np.testing.assert_array_equal(rf.truth.index, seen)

    # an image not in Jy/beam: no cut, and the legend says why
    kelvin = tmp_path / "k.fits"
    with fits.open(image) as hdul:
        hdul[0].header["BUNIT"] = "K"
        hdul.writeto(kelvin)
    rf = region_figure(kelvin, truth=truth)
    assert _ellipse_counts(rf) == [50]
    assert "truth (50) (not cut: the image is in K, not Jy/beam)" in _legend(rf)
    with pytest.raises(StreamdetValueError, match="truth_snr"):
        region_figure(image, truth=truth, truth_snr=-1.0)
    with pytest.raises(StreamdetValueError, match="noise"):
        region_figure(image, truth=truth, noise=0.0)


def test_expected_peak_of_gaussians() -> None:
    from streamdet.catalogue.plot import expected_peak, robust_noise

    beam = (1.5, 1.5, 0.0)
    t = Table({"flux": [1.0, 2.0, 1.0], "bmaj": [3.0, 0.0, 4.0], "bmin": [1.0, 0.0, 4.0],
               "pa": [0.0, 0.0, 0.0]})
    want = [1.5 ** 2 / (math.hypot(3.0, 1.5) * math.hypot(1.0, 1.5)), 2.0,
            1.5 ** 2 / (4.0 ** 2 + 1.5 ** 2)]
    np.testing.assert_allclose(expected_peak(t, beam), want, rtol=1e-12)
    np.testing.assert_allclose(expected_peak(t, None), [1.0, 2.0, 1.0])
    # SDC1 sizes: an exponential disc's scale is sqrt(2) x its Gaussian-equivalent FWHM
    sdc1 = Table({"flux": [1.0], "b_maj": [2.0], "b_min": [2.0], "pa": [0.0], "size": [3]})
    g = 2.0 * math.sqrt(2.0)
    assert expected_peak(sdc1, beam)[0] == pytest.approx(1.5 ** 2 / (g * g + 1.5 ** 2))
    rng = np.random.default_rng(0)
    noise = rng.normal(0.0, 2.0, 200_000)
    noise[:4000] += 1e3  # 2% bright sources barely move it
    got = robust_noise(noise)
    assert got is not None and got == pytest.approx(2.0, rel=0.03)
    assert robust_noise(np.array([np.nan])) is None


def _with_beam(src: Path, dst: Path, bmaj: float, bmin: float, bpa: float) -> Path:
    with fits.open(src) as hdul:
        hdul[0].header["BMAJ"] = bmaj / 3600.0
        hdul[0].header["BMIN"] = bmin / 3600.0
        hdul[0].header["BPA"] = bpa
        hdul.writeto(dst)
    return dst


@pytest.mark.parametrize("region, figsize", [((100, 100, 160, 140), None), (None, None),
                                             ((0, 0, 256, 256), (5.0, 4.0))])
def test_legend_beam_is_the_image_beam(field: tuple[Path, Path, Table], tmp_path: Path,
                                       region: tuple[int, int, int, int] | None,
                                       figsize: tuple[float, float] | None) -> None:
    from matplotlib.patches import Ellipse

    image = _with_beam(field[0], tmp_path / "e.fits", 3.0, 1.5, 30.0)
    rf = region_figure(image, region=region, figsize=figsize, catalogue=field[1])
    rf.figure.canvas.draw()
    renderer = rf.figure.canvas.get_renderer()  # type: ignore[attr-defined]
    beam = rf.beam
    assert beam is not None
    # on the image: the header's beam, 3" x 1.5" at 0.6"/px, PA 30 deg east of north
    # (north +y, east -x: 120 deg from +x)
    assert beam.width == pytest.approx(5.0, rel=1e-4)
    assert beam.height == pytest.approx(2.5, rel=1e-4)
    assert math.cos(2 * math.radians(beam.angle - 120.0)) == pytest.approx(1.0, abs=1e-6)
    legend = rf.ax.get_legend()
    assert legend is not None
    keys = [h for h in legend.legend_handles if isinstance(h, Ellipse)]
    assert len(keys) == 1
    key = keys[0]
    # the same outline in display pixels, only moved
    a = beam.get_transform().transform(beam.get_path().vertices)
    b = key.get_transform().transform(key.get_path().vertices)
    scale = float(np.ptp(a[:, 0]))
    assert scale > 0.5
    np.testing.assert_allclose(a - a.mean(axis=0), b - b.mean(axis=0), atol=1e-6 * scale)
    box_a, box_b = beam.get_window_extent(renderer), key.get_window_extent(renderer)
    assert box_b.width == pytest.approx(box_a.width, rel=1e-6)
    assert box_b.height == pytest.approx(box_a.height, rel=1e-6)
    # the key sits in the legend, not over its text
    frame = legend.get_window_extent(renderer)
    assert frame.x0 - 1 <= box_b.x0 and box_b.x1 <= frame.x1 + 1
    assert frame.y0 - 1 <= box_b.y0 and box_b.y1 <= frame.y1 + 1
    texts = [t.get_window_extent(renderer) for t in legend.get_texts()]
    assert not any(box_b.overlaps(t) for t in texts)
    assert 'beam 3" x 1.5", PA 30\u00b0' in " ".join(_legend(rf))


def _overlapping(boxes: list[Any]) -> list[tuple[int, int]]:
    return [(i, j) for i in range(len(boxes)) for j in range(i + 1, len(boxes))
            if boxes[i].overlaps(boxes[j])]


@pytest.mark.parametrize("stretch", ["asinh", "log", "linear"])
@pytest.mark.parametrize("figsize, dpi", [(None, 100.0), ((4.0, 3.0), 60.0),
                                          ((12.0, 10.0), 150.0)])
def test_colour_bar_ticks_do_not_overlap(field: tuple[Path, Path, Table], stretch: str,
                                         figsize: tuple[float, float] | None,
                                         dpi: float) -> None:
    rf = region_figure(field[0], stretch=stretch, figsize=figsize,  # type: ignore[arg-type]
                       dpi=dpi)
    rf.figure.canvas.draw()
    renderer = rf.figure.canvas.get_renderer()  # type: ignore[attr-defined]
    cbar = rf.colorbar
    assert cbar is not None
    labels = [t for t in cbar.ax.yaxis.get_ticklabels() if t.get_visible() and t.get_text()]
    assert len(labels) >= 3
    boxes = [t.get_window_extent(renderer) for t in labels]
    assert _overlapping(boxes) == []
    # labelled in uJy/beam, as the tick values say, in order up the bar
    assert cbar.ax.get_ylabel() == "\u00b5Jy/beam"
    values = np.array([float(t.get_text().replace("\u2212", "-")) for t in labels])
    ticks = np.array([t.get_position()[1] for t in labels])
    np.testing.assert_allclose(values, ticks * 1e6, rtol=1e-5, atol=1e-9)
    assert np.all(np.diff([b.y0 for b in boxes]) > 0) and np.all(np.diff(values) > 0)
    assert rf.vmin - 1e-12 <= ticks.min() and ticks.max() <= rf.vmax + 1e-12
    # the check sees crowded labels
    cbar.set_ticks(np.linspace(rf.vmin, rf.vmax, 300))
    rf.figure.canvas.draw()
    crowded = [t.get_window_extent(renderer) for t in cbar.ax.yaxis.get_ticklabels()
               if t.get_visible() and t.get_text()]
    assert _overlapping(crowded)


def test_cli_defaults_are_the_api_defaults() -> None:
    import streamdet.catalogue._plot_cli as cli
    import streamdet.catalogue.plot as plot

    assert cli.MAX_MARKERS == plot.MAX_MARKERS and cli.TRUTH_SNR == plot.TRUTH_SNR


# ----------------------------------------------------------------------------- diagnostics


def _from_truth(truth: Table, *, flux_factor: float, seed: int = 0) -> Table:
    """A full streamdet-like table made of the truth, fluxes scaled by ``flux_factor``."""
    rng = np.random.default_rng(seed)
    return Table({"ra": truth["ra_core"], "dec": truth["dec_core"],
                  "flux": np.asarray(truth["flux"]) * flux_factor,
                  "bmaj": truth["b_maj"], "bmin": truth["b_min"],
                  "pa": sdc1_pa(truth["pa"]),           # east of north, as detect writes
                  "size": truth["size"],
                  "objectness": rng.uniform(0.5, 1.0, len(truth)).astype(np.float32)})


def _false_rows(truth: Table, n: int, seed: int = 1) -> Table:
    """Detections at least 10" from every true source, inside the field, low objectness."""
    rng = np.random.default_rng(seed)
    tsc = SkyCoord(truth["ra_core"], truth["dec_core"], unit="deg")
    ra: list[float] = []
    dec: list[float] = []
    while len(ra) < n:
        r = rng.uniform(-0.015, 0.015) % 360.0
        d = rng.uniform(-30.015, -29.985)
        if SkyCoord(r, d, unit="deg").separation(tsc).min().arcsec > 10.0:
            ra.append(r)
            dec.append(d)
    return Table({"ra": ra, "dec": dec, "flux": 10 ** rng.uniform(-6, -5, n),
                  "bmaj": np.full(n, 1.2), "bmin": np.full(n, 1.0), "pa": np.zeros(n),
                  "size": np.full(n, 2),
                  "objectness": rng.uniform(0.0, 0.45, n).astype(np.float32)})


def test_residuals_of_a_perturbed_truth(field: tuple[Path, Path, Table]) -> None:
    truth = field[2]
    cat = _from_truth(truth, flux_factor=1.3)
    res = parameter_residuals(cat, truth, freq=560)
    assert len(res.match) == len(truth) and res.match.radius_arcsec == 1.5
    np.testing.assert_array_equal(res.match.catalogue_index, res.match.truth_index)
    np.testing.assert_allclose(res.flux_ratio, 1.3, rtol=1e-12)
    np.testing.assert_allclose(res.truth_flux, truth["flux"], rtol=0)
    for ratio, col in ((res.bmaj_ratio, "b_maj"), (res.bmin_ratio, "b_min")):
        ok = np.asarray(truth[col]) > 0
        np.testing.assert_allclose(ratio[ok], 1.0, rtol=1e-12)
        assert np.all(np.isnan(ratio[~ok]))
    np.testing.assert_allclose(res.pa_diff, 0.0, atol=1e-9)
    np.testing.assert_allclose(res.offset_arcsec, 0.0, atol=1e-6)

    # shifted north by 0.4": the offsets are 0.4"; PA turned by 170 deg is -10 deg
    moved = cat.copy()
    moved["dec"] = np.asarray(moved["dec"]) + 0.4 / 3600
    moved["pa"] = np.mod(np.asarray(moved["pa"]) + 170.0, 360.0)
    res = parameter_residuals(moved, truth, radius_arcsec=1.0)
    assert len(res.match) == len(truth)
    np.testing.assert_allclose(res.offset_arcsec, 0.4, rtol=1e-6)
    ok = np.asarray(truth["b_maj"]) > np.asarray(truth["b_min"])
    np.testing.assert_allclose(res.pa_diff[ok], -10.0, atol=1e-9)


def test_size_conventions_and_one_to_one_matching() -> None:
    # truth: an exponential disc (size 3) and a LAS (size 1); detections: Gaussian FWHM
    truth = Table({"ra_core": [10.0, 10.01], "dec_core": [-30.0, -30.0], "flux": [1e-4, 2e-4],
                   "b_maj": [2.0, 5.0], "b_min": [1.0, 2.0], "pa": [30.0, 60.0],
                   "size": [3, 1]})
    cat = Table({"ra": [10.0, 10.0 + 0.3 / 3600, 10.01, 10.02],
                 "dec": [-30.0, -30.0, -30.0 + 0.2 / 3600, -30.0],
                 "flux": [1e-4, 5e-5, 3e-4, 1e-4], "bmaj": [2.0 * math.sqrt(2), 1.0, 5.0, 1.0],
                 "bmin": [1.0, 1.0, 1.0, 1.0], "pa": [60.0, 0.0, 20.0, 0.0]})
    # (the truth's PAs 30 and 60 are in the SDC1 convention: 60 and 30 east of north)
    m = match_catalogues(cat, truth, radius_arcsec=1.0)
    # rows 0 and 1 claim truth 0: the closer (row 0) keeps it; row 3 is 31" away
    np.testing.assert_array_equal(m.catalogue_index, [0, 2])
    np.testing.assert_array_equal(m.truth_index, [0, 1])
    res = parameter_residuals(cat, truth, radius_arcsec=1.0)
    np.testing.assert_allclose(res.flux_ratio, [1.0, 1.5])
    # Gaussian FWHM vs exponential scale length: x sqrt 2; vs LAS: x 2.355 / 5
    np.testing.assert_allclose(res.bmaj_ratio, [1.0, 5.0 / (5.0 * 2.355 / 5.0)])
    np.testing.assert_allclose(res.pa_diff, [0.0, -10.0])
    assert len(match_catalogues(cat[:0], truth, radius_arcsec=1.0)) == 0


def test_source_counts_per_dex() -> None:
    flux = np.array([1.5e-5, 2e-5, 5e-5, 3e-4, np.nan, -1.0])
    got = source_counts(flux, [1e-5, 1e-4, 1e-3])
    np.testing.assert_allclose(got, [3.0, 1.0])
    got = source_counts(flux, [1e-5, 10 ** -4.5, 1e-3])  # half a dex, then 1.5 dex
    np.testing.assert_allclose(got, [2 / 0.5, 2 / 1.5])
    with pytest.raises(StreamdetValueError):
        source_counts(flux, [1e-4, 1e-5])


def test_threshold_curve_with_the_official_scorer(field: tuple[Path, Path, Table]) -> None:
    pytest.importorskip("ska_sdc", exc_type=ImportError)
    truth = field[2]
    good = _from_truth(truth, flux_factor=1.0)
    bad = _false_rows(truth, 12)
    cat = vstack([good, bad])
    grid = [0.0, 0.2, 0.4, 0.6, 0.8]
    curve = threshold_curve(cat, truth, thresholds=grid)
    obj = np.asarray(cat["objectness"])
    is_true = np.arange(len(cat)) < len(good)
    for k, t in enumerate(grid):
        above = obj >= t
        assert curve.n_det[k] == above.sum()
        assert curve.n_match[k] == (above & is_true).sum()
        assert curve.purity[k] == pytest.approx((above & is_true).sum() / above.sum())
    assert curve.purity[0] < 1.0 and curve.purity[-1] == 1.0
    assert curve.best == int(np.argmax(curve.score))
    auto = threshold_curve(cat, truth, thresholds=4)
    np.testing.assert_allclose(auto.thresholds, np.linspace(obj.min(), obj.max(), 4))


def test_diagnostics_figure_and_file(field: tuple[Path, Path, Table], tmp_path: Path) -> None:
    pytest.importorskip("ska_sdc", exc_type=ImportError)
    _, truth_path, truth = field
    cat = vstack([_from_truth(truth, flux_factor=0.8), _false_rows(truth, 5)])
    cat.write(tmp_path / "cat.ecsv")
    df = diagnostics_figure(tmp_path / "cat.ecsv", truth_path, thresholds=5, freq=560)
    assert df.curve is not None and df.note is None
    assert len(df.curve.thresholds) == 5
    np.testing.assert_allclose(df.residuals.flux_ratio, 0.8, rtol=1e-9)
    assert set(df.axes) == {"score", "flux", "size", "pa", "position", "counts"}
    line = df.axes["score"].get_lines()[0]
    np.testing.assert_allclose(np.asarray(line.get_ydata(), np.float64), df.curve.score)
    out = plot_diagnostics(tmp_path / "cat.ecsv", truth_path, out=tmp_path / "d.png",
                           thresholds=5, figsize=(12.0, 8.0), dpi=50, image=field[0])
    assert _png_size(out) == (600, 400)
    with pytest.raises(OutputExistsError):
        plot_diagnostics(cat, truth, out=out)


def test_diagnostics_without_the_scorer(field: tuple[Path, Path, Table],
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    truth = field[2]
    monkeypatch.setitem(sys.modules, "ska_sdc", None)
    df = diagnostics_figure(_from_truth(truth, flux_factor=2.0), truth)
    assert df.curve is None and df.note is not None and "ska_sdc" in df.note
    texts = [t.get_text() for t in df.axes["score"].texts]
    assert any("skipped" in t for t in texts)
    np.testing.assert_allclose(df.residuals.flux_ratio, 2.0, rtol=1e-12)


def test_diagnostics_needs_a_full_table(field: tuple[Path, Path, Table], tmp_path: Path) -> None:
    _, truth_path, truth = field
    with pytest.raises(StreamdetValueError, match="objectness"):
        plot_diagnostics(truth_path, truth_path, out=tmp_path / "d.png")
    no_truth = Table({"ra_core": [0.0], "dec_core": [-30.0]})
    with pytest.raises(StreamdetValueError, match="SDC1 column"):
        diagnostics_figure(_from_truth(truth, flux_factor=1.0), no_truth)
    (tmp_path / "cat.csv").write_text("a\n1\n")
    with pytest.raises(StreamdetValueError, match="extension"):
        diagnostics_figure(tmp_path / "cat.csv", truth)
    assert not (tmp_path / "d.png").exists()


@pytest.fixture(scope="module")
def field_1400(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Table]:
    """A 192^2 simulated 1.4 GHz field (0.6" beam), its truth file and truth table."""
    d = tmp_path_factory.mktemp("field1400")
    truth = streamdet.simulate(d / "g.fits", truth=d / "g.txt", size=192, freq=1400, seed=5,
                               faint=False, quiet=True)
    return d / "g.fits", d / "g.txt", truth


def test_diagnostics_band_from_a_1400_mhz_image(field_1400: tuple[Path, Path, Table],
                                                tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib

    import streamdet.catalogue.plot as plot
    from streamdet.catalogue.plot import diagnostics_band
    from streamdet.catalogue.score import BandWarning, ScoreResult

    image, truth_path, truth = field_1400
    assert streamdet.open_image(image).freq_hz == pytest.approx(1.4e9)
    # the scorer, recording the band it is asked for (the real one is tested above)
    bands: list[int] = []

    def fake_score(sub: Any, true: Any, *, freq: int | None = None, train: bool = False,
                   mode: int = 0) -> ScoreResult:
        assert freq is not None
        bands.append(freq)
        return ScoreResult(score=float(len(sub)), n_det=len(sub), n_match=len(sub), n_false=0,
                           purity=1.0, acc_pc=100.0, freq=freq)

    # (streamdet.catalogue.score is also the package's name for the function: take the module)
    monkeypatch.setattr(importlib.import_module("streamdet.catalogue.score"), "score", fake_score)
    monkeypatch.setattr(plot, "_scorer_problem", lambda: None)
    cat = _from_truth(truth, flux_factor=0.9)
    assert not cat.meta  # an SDC1 text truth and this table: neither says the band
    cat.write(tmp_path / "cat.ecsv")

    # the image's header says 1.4 GHz: the scorer's band and the default match radius
    df = diagnostics_figure(tmp_path / "cat.ecsv", truth_path, image=image, thresholds=3)
    assert (df.freq, df.band_source) == (1400, "the header of g.fits")
    assert bands == [1400] * 3 and df.curve is not None and df.curve.freq == 1400
    assert df.residuals.match.radius_arcsec == 0.6  # the 1.4 GHz beam, not 560 MHz's 1.5"
    assert len(df.residuals.match) == len(truth)
    assert "1400 MHz (from the header of g.fits)" in df.figure.get_suptitle()

    # what detect records: freq_hz in the table's meta
    cat.meta["freq_hz"] = 1.4e9
    assert diagnostics_band(cat, None) == (1400, "the catalogue")
    df = diagnostics_figure(cat, truth_path, thresholds=2)
    assert df.freq == 1400 and df.residuals.match.radius_arcsec == 0.6
    # the simulator's truth table carries its band too
    assert diagnostics_band(Table(cat, meta={}), truth) == (1400, "the truth")

    # nothing says: a clear error, no figure
    cat.meta.clear()
    with pytest.raises(StreamdetValueError, match=r"cannot tell the band.*--freq"):
        diagnostics_figure(cat, truth_path)
    with pytest.raises(StreamdetValueError, match="cannot tell the band"):
        plot_diagnostics(cat, truth_path, out=tmp_path / "none.png")
    assert not (tmp_path / "none.png").exists()
    with pytest.raises(StreamdetValueError, match="not an SDC1 band"):
        diagnostics_figure(cat, truth_path, freq=700)

    # given against the header: used, with a warning
    bands.clear()
    with pytest.warns(BandWarning, match="560 MHz .* at 1400 MHz"):
        df = diagnostics_figure(cat, truth_path, image=image, freq=560, thresholds=2)
    assert df.freq == 560 and bands == [560, 560] and df.residuals.match.radius_arcsec == 1.5

    # the command line: IMAGE with --diagnostics gives the band
    bands.clear()
    code, stdout, _ = _cli([str(image), "--diagnostics", str(tmp_path / "cat.ecsv"), "-t",
                            str(truth_path), "--thresholds", "2", "--dpi", "30", "-o",
                            str(tmp_path / "d.png")], capsys)
    assert code == 0 and "1400 MHz, from the header of g.fits" in stdout and bands == [1400] * 2
    code, stdout, _ = _cli(["--diagnostics", str(tmp_path / "cat.ecsv"), "-t", str(truth_path),
                            "--freq", "1400", "--thresholds", "2", "--dpi", "30", "-o",
                            str(tmp_path / "e.png")], capsys)
    assert code == 0 and "1400 MHz, given" in stdout


def test_diagnostics_band_from_an_image_without_frequency(fits_nowcs: Any,
                                                          field: tuple[Path, Path, Table]
                                                          ) -> None:
    from streamdet.catalogue.plot import diagnostics_band

    cat = _from_truth(field[2], flux_factor=1.0)
    with pytest.raises(StreamdetValueError, match="gives no frequency"):
        diagnostics_band(cat, None, image=fits_nowcs.path)
    assert diagnostics_band(cat, None, image=fits_nowcs.path, freq=9200) == (9200, "given")


# ----------------------------------------------------------------------------- command line


def _cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """Run ``streamdet plot`` as streamdet.cli.main does (errors: one line, status 1)."""
    parser = argparse.ArgumentParser(prog="streamdet")
    add_plot_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["plot", *argv])
    try:
        code = args.func(args)
    except StreamdetError as exc:
        print(f"streamdet plot: error: {exc}", file=sys.stderr)
        code = 1
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_cli_region_and_diagnostics(field: tuple[Path, Path, Table], tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    image, truth_path, truth = field
    out = tmp_path / "r.png"
    code, stdout, _ = _cli([str(image), "-c", str(truth_path), "-t", str(truth_path),
                            "--region", *map(str, REGION), "-o", str(out),
                            "--figsize", "5", "4", "--dpi", "60"], capsys)
    assert code == 0 and _png_size(out) == (300, 240)
    assert "x 40:200, y 60:180" in stdout and "detections" in stdout
    code, stdout, _ = _cli([str(image), "-c", str(truth_path), "-t", str(truth_path),
                            "--region", *map(str, REGION), "--max-markers", "5",
                            "--truth-snr", "0", "-o", str(tmp_path / "m.png")], capsys)
    assert code == 0 and "detections: brightest 5 of " in stdout
    assert "truth: brightest 5 of " in stdout and "peak" not in stdout
    code, stdout, _ = _cli([str(image), "-t", str(truth_path), "--noise", "1e-3",
                            "-o", str(tmp_path / "n.png")], capsys)
    assert code == 0 and "truth: 0 of " in stdout and "given" in stdout

    ra, dec = _fits_wcs(image).all_pix2world([[100.0, 120.0]], 0)[0]
    code, stdout, _ = _cli([str(image), "--center", str(ra), str(dec), "--size", "18", "-o",
                            str(tmp_path / "c.pdf")], capsys)
    assert code == 0 and "x 85:115, y 105:135" in stdout
    assert (tmp_path / "c.pdf").read_bytes()[:4] == b"%PDF"

    code, _, err = _cli([str(image), "-o", str(out)], capsys)
    assert code == 1 and "exists" in err and err.count("\n") == 1
    code, _, err = _cli([str(image), "--center", "0", "-30", "-o", str(tmp_path / "z.png")],
                        capsys)
    assert code == 1 and "--size" in err
    code, _, err = _cli([str(image), "--region", "300", "0", "400", "10", "-o",
                         str(tmp_path / "z.png")], capsys)
    assert code == 1 and "outside the image" in err
    with pytest.raises(SystemExit) as exc:
        _cli([str(image), "--region", "0", "0", "9", "9", "--center", "0", "-30", "-o",
              str(tmp_path / "z.png")], capsys)
    assert exc.value.code == 2

    cat = _from_truth(truth, flux_factor=1.1)
    cat.write(tmp_path / "cat.ecsv")
    code, _, err = _cli(["--diagnostics", str(tmp_path / "cat.ecsv"), "-o",
                         str(tmp_path / "d.png")], capsys)
    assert code == 1 and "-t TRUTH" in err
    # an SDC1 text truth and a table without freq_hz: nothing says the band
    code, _, err = _cli(["--diagnostics", str(tmp_path / "cat.ecsv"), "-t", str(truth_path),
                         "-o", str(tmp_path / "d.png")], capsys)
    assert code == 1 and "cannot tell the band" in err and "--freq" in err
    assert err.count("\n") == 1
    code, _, err = _cli(["--diagnostics", str(tmp_path / "cat.ecsv"), "-t", str(truth_path),
                         "--max-markers", "10", "-o", str(tmp_path / "d.png")], capsys)
    assert code == 1 and "--max-markers is for image plots" in err
    code, _, err = _cli([str(image), "--freq", "560", "-o", str(tmp_path / "z.png")], capsys)
    assert code == 1 and "--freq is for --diagnostics" in err
    code, stdout, _ = _cli([str(image), "--diagnostics", str(tmp_path / "cat.ecsv"), "-t",
                            str(truth_path), "--thresholds", "3", "--figsize", "9", "6",
                            "--dpi", "40", "-o", str(tmp_path / "d.png")], capsys)
    assert code == 0 and _png_size(tmp_path / "d.png") == (360, 240)
    assert "diagnostics" in stdout and "560 MHz, from the header of f.fits" in stdout
    assert not (tmp_path / "z.png").exists()


def test_cli_wired_into_streamdet(capsys: pytest.CaptureFixture[str]) -> None:
    from streamdet.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    if " plot " not in capsys.readouterr().out.replace("\n", " "):
        pytest.skip("'plot' is not yet wired into streamdet.cli")
    with pytest.raises(SystemExit) as exc:
        main(["plot", "--help"])
    assert exc.value.code == 0 and "--diagnostics" in capsys.readouterr().out
