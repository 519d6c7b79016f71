"""streamdet.plot: region figures (pixels shown, overlays, geometry, lazy reads), diagnostics
(residuals, matching, scorer curve, counts), errors and the ``plot`` subcommand."""

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
import streamdet.io as sio
from streamdet._plot_cli import add_plot_parser
from streamdet.catalog import read_sdc1, sdc1_pa
from streamdet.errors import (
    OutputExistsError,
    StreamdetError,
    StreamdetFileNotFoundError,
    StreamdetValueError,
    WCSMissingError,
)
from streamdet.plot import (
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
    assert f"detections ({len(inside)})" in legend and f"truth ({len(inside)})" in legend
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
    df = diagnostics_figure(tmp_path / "cat.ecsv", truth_path, thresholds=5)
    assert df.curve is not None and df.note is None
    assert len(df.curve.thresholds) == 5
    np.testing.assert_allclose(df.residuals.flux_ratio, 0.8, rtol=1e-9)
    assert set(df.axes) == {"score", "flux", "size", "pa", "position", "counts"}
    line = df.axes["score"].get_lines()[0]
    np.testing.assert_allclose(np.asarray(line.get_ydata(), np.float64), df.curve.score)
    out = plot_diagnostics(tmp_path / "cat.ecsv", truth_path, out=tmp_path / "d.png",
                           thresholds=5, figsize=(12.0, 8.0), dpi=50)
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
    code, _, err = _cli([str(image), "--diagnostics", str(tmp_path / "cat.ecsv"), "-t",
                         str(truth_path), "-o", str(tmp_path / "d.png")], capsys)
    assert code == 1 and "leave out IMAGE" in err
    code, stdout, _ = _cli(["--diagnostics", str(tmp_path / "cat.ecsv"), "-t", str(truth_path),
                            "--thresholds", "3", "--figsize", "9", "6", "--dpi", "40", "-o",
                            str(tmp_path / "d.png")], capsys)
    assert code == 0 and _png_size(tmp_path / "d.png") == (360, 240)
    assert "diagnostics" in stdout
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
