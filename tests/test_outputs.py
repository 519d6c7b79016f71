"""Catalogue outputs: sky coordinates, primary beam, SDC1, file formats, region files."""

from __future__ import annotations

import importlib.util
import os
import warnings
from pathlib import Path

import astropy.units as u
import numpy as np
import pytest
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS, FITSFixedWarning
from scipy.ndimage import map_coordinates

from streamdet.catalogue import outputs
from streamdet.catalogue._pb import PrimaryBeam
from streamdet.catalogue.catalog import sdc1_pa
from streamdet.catalogue.outputs import (
    SDC1_COLUMNS,
    CatalogueWarning,
    NoWCSWarning,
    to_sdc1,
    to_table,
    write_catalogue,
    write_regions,
)
from streamdet.engine.detections import Detections
from streamdet.errors import (
    InvalidFITSError,
    OutputExistsError,
    StreamdetError,
    StreamdetFileNotFoundError,
    StreamdetValueError,
    WCSMissingError,
)

PB_FILE = Path("/work/shared/data/sdc1/PrimaryBeam_B1.fits")
needs_pb = pytest.mark.skipif(not PB_FILE.is_file(), reason="SDC1 primary beam not available")
NAMES = ("flux", "bmaj", "bmin", "pa")


def _sdc1_wcs(n: int = 4000, scale_arcsec: float = 0.6) -> WCS:
    """A 4-axis SDC1-like WCS (RA---SIN, DEC--SIN, FREQ, STOKES) centred on (0, -30)."""
    h = fits.Header()
    cards = {
        "NAXIS": 4, "NAXIS1": n, "NAXIS2": n, "NAXIS3": 1, "NAXIS4": 1,
        "CTYPE1": "RA---SIN", "CTYPE2": "DEC--SIN", "CTYPE3": "FREQ", "CTYPE4": "STOKES",
        "CRVAL1": 0.0, "CRVAL2": -30.0, "CRVAL3": 5.6e8, "CRVAL4": 1.0,
        "CRPIX1": n / 2 + 1, "CRPIX2": n / 2 + 1, "CRPIX3": 1.0, "CRPIX4": 1.0,
        "CDELT1": -scale_arcsec / 3600, "CDELT2": scale_arcsec / 3600, "CDELT3": 1e6,
        "CDELT4": 1.0, "CUNIT1": "deg", "CUNIT2": "deg", "CUNIT3": "Hz",
    }
    for k, v in cards.items():
        h[k] = v
    return WCS(h)


def _dets(n: int, *, size: float = 4000.0, seed: int = 0) -> Detections:
    rng = np.random.default_rng(seed)
    c = rng.uniform(0, size, (n, 2))
    wh = rng.uniform(4, 20, (n, 2))
    params = np.column_stack([
        rng.uniform(2e-6, 2e-3, n), rng.uniform(1, 6, n), rng.uniform(0.5, 6, n),
        rng.uniform(0, 180, n)])
    return Detections(
        boxes=np.concatenate([c - wh / 2, c + wh / 2], axis=1),
        objectness=rng.random(n).astype(np.float32),
        probability=rng.random(n).astype(np.float32),
        prior=rng.integers(0, 9, n).astype(np.int16),
        params=params, param_names=NAMES,
        chunk=rng.integers(0, 4, n).astype(np.int32))


def _sdc1_table(n: int = 30, seed: int = 0) -> Table:
    return to_table(_dets(n, seed=seed), wcs=_sdc1_wcs())


# ----------------------------------------------------------------- to_table


@pytest.mark.parametrize("block", [1 << 15, 7])
def test_pixel_to_world_against_astropy(block: int, monkeypatch: pytest.MonkeyPatch) -> None:
    # block 7: the conversion runs in many blocks, the last one partial
    monkeypatch.setattr(outputs, "_WCS_BLOCK", block)
    wcs = _sdc1_wcs()
    d = _dets(200)
    t = to_table(d, wcs=wcs)
    sc = wcs.celestial.pixel_to_world(d.centers[:, 0], d.centers[:, 1])
    np.testing.assert_allclose(t["ra"], sc.ra.wrap_at(360 * u.deg).deg, rtol=0, atol=1e-10)
    np.testing.assert_allclose(t["dec"], sc.dec.deg, rtol=0, atol=1e-10)
    assert np.all((t["ra"] >= 0) & (t["ra"] < 360))
    assert (t["ra"] > 359).any() and (t["ra"] < 1).any()  # both sides of RA 0
    assert t["ra"].unit == u.deg and t["dec"].unit == u.deg
    np.testing.assert_array_equal(t["x"], d.centers[:, 0])
    np.testing.assert_array_equal(t["y"], d.centers[:, 1])
    assert t["width"].dtype == t["width_arcsec"].dtype == np.float32   # sizes: float32
    np.testing.assert_allclose(t["width"], d.boxes[:, 2] - d.boxes[:, 0], rtol=1e-7)
    np.testing.assert_array_equal(np.column_stack([t[c] for c in ("x0", "y0", "x1", "y1")]),
                                  d.boxes)
    assert t["x"].unit == u.pix
    assert t.meta["pixel_scale_arcsec"] == pytest.approx(0.6, rel=1e-9)
    np.testing.assert_allclose(t["width_arcsec"], t["width"] * 0.6, rtol=1e-6)


def test_galactic_image_gives_icrs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(outputs, "_WCS_BLOCK", 16)
    w = WCS(naxis=2)
    w.wcs.ctype = ["GLON-CAR", "GLAT-CAR"]
    w.wcs.crval = [30.0, 1.0]
    w.wcs.crpix = [2001.0, 2001.0]
    w.wcs.cdelt = [-0.6 / 3600, 0.6 / 3600]
    d = _dets(100)
    t = to_table(d, wcs=w)
    sc = w.pixel_to_world(d.centers[:, 0], d.centers[:, 1]).icrs
    np.testing.assert_allclose(t["ra"], sc.ra.deg, rtol=0, atol=1e-10)
    np.testing.assert_allclose(t["dec"], sc.dec.deg, rtol=0, atol=1e-10)


def test_params_units_and_columns() -> None:
    d = _dets(10)
    t = to_table(d, wcs=_sdc1_wcs())
    for k, name in enumerate(NAMES):
        np.testing.assert_array_equal(t[name], d.params[:, k])
    assert t["flux"].unit == u.Jy and t["bmaj"].unit == u.arcsec and t["pa"].unit == u.deg
    np.testing.assert_array_equal(t["objectness"], d.objectness)
    np.testing.assert_array_equal(t["probability"], d.probability)
    np.testing.assert_array_equal(t["prior"], d.prior)
    np.testing.assert_array_equal(t["chunk"], d.chunk)
    assert t.meta["n_sources"] == 10 and t.meta["creator"].startswith("streamdet")
    t2 = to_table(d, wcs=_sdc1_wcs(), param_units={"flux": "mJy"}, meta={"model": "m.onnx"})
    assert t2["flux"].unit == u.mJy and t2.meta["model"] == "m.onnx"


@pytest.mark.parametrize("pb", [None, pytest.param(PB_FILE, marks=needs_pb)])
def test_table_without_copies_equals_the_copied_one(pb: Path | None) -> None:
    d = _dets(200, size=12000.0, seed=5)
    wcs = _sdc1_wcs(n=12000)
    a, b = to_table(d, wcs=wcs, pb=pb), to_table(d, wcs=wcs, pb=pb, copy=False)
    assert a.colnames == b.colnames
    for name in a.colnames:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
        assert a[name].unit == b[name].unit and a[name].dtype == b[name].dtype
    assert np.shares_memory(b["x0"], d.boxes) and np.shares_memory(b["bmaj"], d.params)
    assert not any(np.shares_memory(a[n], arr) for n in a.colnames
                   for arr in (d.boxes, d.params, d.objectness, d.chunk))


def test_empty_detections_give_empty_table_with_columns() -> None:
    full = to_table(_dets(3), wcs=_sdc1_wcs())
    empty = to_table(Detections.empty(NAMES), wcs=_sdc1_wcs())
    assert len(empty) == 0
    assert empty.colnames == full.colnames
    assert len(to_sdc1(empty)) == 0
    assert to_sdc1(empty).colnames == list(SDC1_COLUMNS)


def test_no_wcs_warns_and_gives_pixel_columns() -> None:
    with pytest.warns(NoWCSWarning, match="pixel columns only"):
        t = to_table(_dets(5))
    assert "ra" not in t.colnames and "x" in t.colnames
    assert "width_arcsec" not in t.colnames
    with pytest.warns(NoWCSWarning, match="no celestial axes"):
        to_table(_dets(5), wcs=WCS(naxis=2))
    with pytest.raises(WCSMissingError, match="ra/dec"):
        to_sdc1(t)


@needs_pb
def test_pb_without_wcs_refused() -> None:
    with pytest.warns(NoWCSWarning), pytest.raises(WCSMissingError, match="primary-beam"):
        to_table(_dets(5), pb=PB_FILE)


# ------------------------------------------------------------- primary beam


def _independent_pb(ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
    """Read the PB with astropy directly; bilinear via scipy on its 2D WCS."""
    with fits.open(PB_FILE) as hdul:
        data = np.asarray(hdul[0].data, np.float64)
        header = hdul[0].header
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        w = WCS(header, naxis=2)
    sc = SkyCoord(ra * u.deg, dec * u.deg, frame="icrs")
    px, py = w.world_to_pixel(sc)
    return np.asarray(map_coordinates(data.reshape(data.shape[-2:]), [py, px], order=1,
                                      mode="nearest"))


@needs_pb
def test_primary_beam_sampling_matches_independent_read() -> None:
    pb = PrimaryBeam.from_fits(PB_FILE)
    assert pb.shape == (33, 36)
    rng = np.random.default_rng(0)
    ra = np.mod(rng.uniform(-0.9, 0.9, 300), 360.0)
    dec = rng.uniform(-30.8, -29.2, 300)
    np.testing.assert_allclose(pb.response(ra, dec), _independent_pb(ra, dec), rtol=1e-9)
    # at the reference pixel (FITS 15, 13): the stored value
    with fits.open(PB_FILE) as hdul:
        assert pb.response([0.0], [hdul[0].header["CRVAL2"]])[0] == pytest.approx(
            float(hdul[0].data[12, 14]), rel=1e-9)
    far = pb.response([10.0], [-30.0])
    assert np.isnan(far[0])
    near = pb.response([10.0], [-30.0], outside="nearest")
    np.testing.assert_allclose(near, _independent_pb(np.array([10.0]), np.array([-30.0])),
                               rtol=1e-9)  # the nearest edge value
    assert pb.response([], []).shape == (0,)
    with pytest.raises(StreamdetValueError, match="outside"):
        pb.response([0.0], [-30.0], outside="clip")  # type: ignore[arg-type]


def test_primary_beam_file_errors(tmp_path: Path) -> None:
    with pytest.raises(StreamdetFileNotFoundError):
        PrimaryBeam.from_fits(tmp_path / "missing.fits")
    bad = tmp_path / "bad.fits"
    bad.write_text("not a fits file")
    with pytest.raises(InvalidFITSError):
        PrimaryBeam.from_fits(bad)
    nowcs = tmp_path / "nowcs.fits"
    fits.PrimaryHDU(np.ones((4, 4), np.float32)).writeto(nowcs)
    with pytest.raises(WCSMissingError):
        PrimaryBeam.from_fits(nowcs)


@needs_pb
def test_flux_is_pb_corrected() -> None:
    wcs = _sdc1_wcs(n=12000)
    d = _dets(80, size=12000.0, seed=3)  # +-1 deg around the beam centre
    t = to_table(d, wcs=wcs, pb=PB_FILE)
    ref = _independent_pb(np.asarray(t["ra"]), np.asarray(t["dec"]))
    np.testing.assert_allclose(t["pb"], ref, rtol=1e-9)
    np.testing.assert_allclose(t["flux"], d.param("flux") / ref, rtol=1e-9)
    np.testing.assert_array_equal(t["flux_apparent"], d.param("flux"))
    assert t["flux"].unit == u.Jy and t.meta["pb_source"] == str(PB_FILE)
    assert np.all(t["flux"] > t["flux_apparent"])


@needs_pb
def test_sources_outside_the_beam_are_nan_then_dropped() -> None:
    wcs = _sdc1_wcs(n=24000, scale_arcsec=1.2)  # 8 deg wide: corners beyond the PB image
    d = _dets(60, size=24000.0, seed=4)
    with pytest.warns(CatalogueWarning, match="outside the primary beam"):
        t = to_table(d, wcs=wcs, pb=PB_FILE, pb_outside="nan")
    out = ~np.isfinite(np.asarray(t["flux"]))
    assert 0 < out.sum() < len(t)
    with pytest.warns(CatalogueWarning, match="dropping"):
        s = to_sdc1(t)
    assert len(s) == (~out).sum()
    np.testing.assert_array_equal(s["id"], np.arange(len(s)))


def _independent_profile() -> tuple[np.ndarray, np.ndarray]:
    """Annulus means (one pixel wide) of the PB map around CRVAL, via SkyCoord."""
    with fits.open(PB_FILE) as hdul:
        data = np.asarray(hdul[0].data, np.float64)
        header = hdul[0].header
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        w = WCS(header, naxis=2)
    yy, xx = np.mgrid[0:data.shape[0], 0:data.shape[1]]
    sky = w.pixel_to_world(xx.ravel(), yy.ravel())
    centre = SkyCoord(header["CRVAL1"] * u.deg, header["CRVAL2"] * u.deg, frame="icrs")
    sep = sky.separation(centre).deg
    step = abs(header["CDELT2"] + abs(header["CDELT1"])) / 2
    k = np.floor(sep / step).astype(int)
    radius = np.array([sep[k == i].mean() for i in np.unique(k)])
    value = np.array([data.ravel()[k == i].mean() for i in np.unique(k)])
    return radius, value


@needs_pb
def test_radial_extrapolation_beyond_the_map() -> None:
    pb = PrimaryBeam.from_fits(PB_FILE)
    radius, value = _independent_profile()
    np.testing.assert_allclose(pb.radial_profile()[0], radius, rtol=1e-6)
    np.testing.assert_allclose(pb.radial_profile()[1], value, rtol=1e-6)
    assert np.all(np.diff(value) < 0)  # a beam falls off with radius
    rng = np.random.default_rng(1)
    ra = np.mod(rng.uniform(-3.2, 3.2, 400), 360.0)
    dec = rng.uniform(-32.8, -27.2, 400)
    inside = np.isfinite(pb.response(ra, dec))
    got = pb.response(ra, dec, outside="radial")
    np.testing.assert_array_equal(got[inside], pb.response(ra, dec)[inside])
    sep = SkyCoord(ra * u.deg, dec * u.deg).separation(
        SkyCoord(0 * u.deg, -30.0000013981 * u.deg)).deg
    expect = np.interp(sep, radius, value, right=np.nan)
    np.testing.assert_allclose(got[~inside], expect[~inside], rtol=1e-6)
    assert (~inside).sum() > 100 and np.isnan(got[sep > radius[-1]]).all()


@needs_pb
def test_default_pb_extrapolates_and_counts() -> None:
    wcs = _sdc1_wcs(n=9000, scale_arcsec=1.2)  # 3 deg wide: beyond the map on one side
    d = _dets(100, size=9000.0, seed=5)
    t = to_table(d, wcs=wcs, pb=PB_FILE)
    assert np.isfinite(np.asarray(t["flux"])).all()
    assert 0 < t.meta["pb_extrapolated"] < len(t)


# -------------------------------------------------------------------- SDC1


def test_to_sdc1_columns_and_shapes() -> None:
    t = _sdc1_table(50)
    s = to_sdc1(t)
    assert s.colnames == list(SDC1_COLUMNS)
    np.testing.assert_array_equal(s["ra_core"], t["ra"])
    np.testing.assert_array_equal(s["ra_cent"], t["ra"])
    np.testing.assert_array_equal(s["dec_cent"], t["dec"])
    np.testing.assert_array_equal(s["flux"], t["flux"])
    assert np.all(s["b_maj"] >= s["b_min"])
    swapped = np.asarray(t["bmin"] > t["bmaj"])
    assert swapped.any() and (~swapped).any()
    np.testing.assert_array_equal(s["b_maj"], np.maximum(t["bmaj"], t["bmin"]))
    # PA in the SDC1 catalogues' convention: 90 - PA east of north, in (-90, 90]
    east = np.mod(90.0 - np.asarray(s["pa"]), 180.0)
    np.testing.assert_allclose(east[swapped], np.mod(t["pa"][swapped] + 90, 180))
    np.testing.assert_allclose(east[~swapped], np.mod(t["pa"][~swapped], 180))
    assert np.all((s["pa"] > -90) & (s["pa"] <= 90))
    # its own inverse, modulo 180, into (-90, 90]
    np.testing.assert_allclose(sdc1_pa(sdc1_pa([0.0, 45.0, 90.0, 135.0, 179.0, -90.0])),
                               [0.0, 45.0, 90.0, -45.0, -1.0, 90.0])
    assert set(s["size"]) == {2} and set(s["class"]) == {3}
    assert np.all(s["core_frac"] == 0.0375)


def test_to_sdc1_converts_units_and_refuses_missing_columns() -> None:
    t = _sdc1_table(5)
    t["flux"] = t["flux"].to(u.mJy)
    t["bmaj"] = t["bmaj"].to(u.deg)
    s = to_sdc1(t)
    np.testing.assert_allclose(s["flux"], _sdc1_table(5)["flux"], rtol=1e-12)
    np.testing.assert_allclose(s["b_maj"], to_sdc1(_sdc1_table(5))["b_maj"], rtol=1e-12)
    t.remove_column("pa")
    with pytest.raises(StreamdetValueError, match="'pa'"):
        to_sdc1(t)
    t2 = _sdc1_table(5)
    t2["flux"].unit = u.deg
    with pytest.raises(StreamdetValueError, match="not convertible"):
        to_sdc1(t2)


def test_sdc1_columns_agree_with_catalog_module() -> None:
    catalog = pytest.importorskip("streamdet.catalogue.catalog")
    assert tuple(catalog.SDC1_COLUMNS) == SDC1_COLUMNS


# ------------------------------------------------------------------ formats


def _assert_same_table(a: Table, b: Table) -> None:
    assert a.colnames == b.colnames
    for c in a.colnames:
        np.testing.assert_array_equal(np.asarray(a[c]), np.asarray(b[c]), err_msg=c)
        assert (a[c].unit or None) == (b[c].unit or None), c


@pytest.mark.parametrize("fmt", ["ecsv", "fits", "parquet"])
@pytest.mark.parametrize("n", [0, 25])
def test_round_trip(tmp_path: Path, fmt: str, n: int) -> None:
    if fmt == "parquet" and importlib.util.find_spec("pyarrow") is None:
        pytest.skip("pyarrow is not installed")
    t = _sdc1_table(n) if n else to_table(Detections.empty(NAMES), wcs=_sdc1_wcs())
    path = tmp_path / f"cat.{fmt}"
    assert write_catalogue(t, path, format=fmt) == path  # type: ignore[arg-type]
    back = Table.read(path)
    _assert_same_table(t, back)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp left


def test_sdc1_round_trip(tmp_path: Path) -> None:
    catalog = pytest.importorskip("streamdet.catalogue.catalog")
    t = _sdc1_table(40)
    path = tmp_path / "sub.txt"
    write_catalogue(t, path)
    header = path.read_text().splitlines()[0].split()
    assert header == list(SDC1_COLUMNS)
    back = catalog.read_sdc1(path)
    s = to_sdc1(t)
    assert back.colnames == list(SDC1_COLUMNS) and len(back) == 40
    for c in SDC1_COLUMNS:
        # the text format keeps 1e-9 deg, 10 significant digits of flux, 1e-6 of the rest
        np.testing.assert_allclose(back[c], s[c], rtol=1e-9, atol=6e-7, err_msg=c)
    # an SDC1 table is written as it is
    path2 = tmp_path / "sub2.txt"
    write_catalogue(s, path2)
    assert path2.read_text() == path.read_text()


def test_empty_sdc1_is_header_only_with_warning(tmp_path: Path) -> None:
    catalog = pytest.importorskip("streamdet.catalogue.catalog")
    t = to_table(Detections.empty(NAMES), wcs=_sdc1_wcs())
    path = tmp_path / "empty.txt"
    with pytest.warns(CatalogueWarning, match="empty SDC1"):
        write_catalogue(t, path)
    assert path.read_text().split() == list(SDC1_COLUMNS)
    assert len(catalog.read_sdc1(path)) == 0


def test_sdc1_refused_without_sky_positions(tmp_path: Path) -> None:
    with pytest.warns(NoWCSWarning):
        t = to_table(_dets(5))
    with pytest.raises(WCSMissingError):
        write_catalogue(t, tmp_path / "x.txt")
    assert not list(tmp_path.iterdir())
    write_catalogue(t, tmp_path / "x.ecsv", format="ecsv")  # pixel catalogues are fine


def test_overwrite_and_bad_paths(tmp_path: Path) -> None:
    t = _sdc1_table(3)
    path = tmp_path / "c.ecsv"
    write_catalogue(t, path, format="ecsv")
    with pytest.raises(OutputExistsError):
        write_catalogue(t, path, format="ecsv")
    write_catalogue(_sdc1_table(4, seed=1), path, format="ecsv", overwrite=True)
    assert len(Table.read(path)) == 4
    with pytest.raises(StreamdetValueError, match="does not exist"):
        write_catalogue(t, tmp_path / "nope" / "c.ecsv", format="ecsv")
    with pytest.raises(StreamdetValueError, match="unknown catalogue format"):
        write_catalogue(t, tmp_path / "c.csv", format="csv")  # type: ignore[arg-type]


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0,
                    reason="root can write to read-only directories")
def test_non_writable_directory(tmp_path: Path) -> None:
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        with pytest.raises(StreamdetValueError, match="not writable"):
            write_catalogue(_sdc1_table(3), ro / "c.ecsv", format="ecsv")
    finally:
        ro.chmod(0o700)


def test_parquet_without_pyarrow_is_a_clear_error(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec

    def fake(name: str, *args: object) -> object:
        return None if name == "pyarrow" else real(name, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(importlib.util, "find_spec", fake)
    with pytest.raises(StreamdetError, match="pip install pyarrow"):
        write_catalogue(_sdc1_table(3), tmp_path / "c.parquet", format="parquet")
    assert not list(tmp_path.iterdir())


# ------------------------------------------------------------------ regions


def test_sky_regions_parse_back(tmp_path: Path) -> None:
    from regions import EllipseSkyRegion, Regions

    t = _sdc1_table(20)
    path = tmp_path / "cat.reg"
    write_regions(t, path)
    regs = Regions.read(str(path), format="ds9")
    assert len(regs) == 20 and all(isinstance(r, EllipseSkyRegion) for r in regs)
    s = to_sdc1(t)
    ra = np.array([r.center.ra.deg for r in regs])
    dec = np.array([r.center.dec.deg for r in regs])
    np.testing.assert_allclose(ra, s["ra_core"], atol=1e-7)
    np.testing.assert_allclose(dec, s["dec_core"], atol=1e-7)
    np.testing.assert_allclose([r.width.to_value(u.arcsec) for r in regs], s["b_maj"],
                               rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose([r.height.to_value(u.arcsec) for r in regs], s["b_min"],
                               rtol=1e-5, atol=1e-4)
    ang = np.array([r.angle.to_value(u.deg) for r in regs])
    np.testing.assert_allclose(np.mod(ang - 90.0, 180.0), np.mod(90.0 - s["pa"], 180.0),
                               atol=1e-6)
    with pytest.raises(OutputExistsError):
        write_regions(t, path)
    write_regions(t, path, overwrite=True)


def test_pixel_regions_parse_back(tmp_path: Path) -> None:
    from regions import RectanglePixelRegion, Regions

    d = _dets(15)
    with pytest.warns(NoWCSWarning):
        t = to_table(d)
    path = tmp_path / "pix.reg"
    write_regions(t, path)
    regs = Regions.read(str(path), format="ds9")
    assert len(regs) == 15 and all(isinstance(r, RectanglePixelRegion) for r in regs)
    np.testing.assert_allclose([r.center.x for r in regs], d.centers[:, 0], atol=1e-6)
    np.testing.assert_allclose([r.center.y for r in regs], d.centers[:, 1], atol=1e-6)
    np.testing.assert_allclose([r.width for r in regs], d.boxes[:, 2] - d.boxes[:, 0],
                               atol=1e-6)
    np.testing.assert_allclose([r.height for r in regs], d.boxes[:, 3] - d.boxes[:, 1],
                               atol=1e-6)


def test_empty_region_file_parses(tmp_path: Path) -> None:
    from regions import Regions

    t = to_table(Detections.empty(NAMES), wcs=_sdc1_wcs())
    path = tmp_path / "empty.reg"
    write_regions(t, path)
    assert len(Regions.read(str(path), format="ds9")) == 0
    with pytest.raises(StreamdetValueError, match="does not exist"):
        write_regions(t, tmp_path / "nope" / "x.reg")


# ------------------------------------------------------------ blocked writers
#
# Every format is written a block of rows at a time (issue 14: astropy's ECSV writer held
# the whole table as text). A block of 5 rows gives several blocks and a partial last one;
# each file is compared with the one written another way (astropy's whole-table writer,
# catalog.write_sdc1, one block).

BLOCK = 5


@pytest.fixture
def blocks(monkeypatch: pytest.MonkeyPatch) -> list[list[slice]]:
    """Blocks of BLOCK rows; records the slices each writer ran over."""
    monkeypatch.setattr(outputs, "_BLOCK_ROWS", BLOCK)
    seen: list[list[slice]] = []
    real = outputs._row_slices

    def spy(n: int, rows: int) -> list[slice]:
        out = real(n, rows)
        seen.append(out)
        return out

    monkeypatch.setattr(outputs, "_row_slices", spy)
    return seen


def _assert_blocked(seen: list[list[slice]], n: int) -> None:
    assert seen, "the writer did not go through blocks"
    parts = seen[-1]
    assert [p.start for p in parts] == list(range(0, n, BLOCK))
    assert sum(p.stop - p.start for p in parts) == n
    if n > 2 * BLOCK and n % BLOCK:
        assert len(parts) > 2 and parts[-1].stop - parts[-1].start == n % BLOCK


def _numbers_table(n: int, seed: int = 3) -> Table:
    """A catalogue from to_table plus columns of every numeric kind, with awkward values."""
    rng = np.random.default_rng(seed)
    t = to_table(_dets(n, seed=seed), wcs=_sdc1_wcs())
    t["i8"] = rng.integers(-2**62, 2**62, n, dtype=np.int64)
    t["i1"] = rng.integers(-128, 128, n).astype(np.int8)
    t["u2"] = rng.integers(0, 2**16, n).astype(np.uint16)
    t["flag"] = rng.random(n) < 0.5
    special = np.array([0.0, -0.0, np.nan, np.inf, -np.inf, 1e16, 9999999999999998.0, 1e-4,
                        9.9999e-5, 5e-324, 1.7976931348623157e308, 0.1, 1 / 3, 2.0**53])
    f8 = rng.integers(0, 2**63, n, dtype=np.uint64).view(np.float64)   # any bit pattern
    f8[:min(n, len(special))] = special[:n]
    f4 = rng.integers(0, 2**32, n, dtype=np.uint64).astype(np.uint32).view(np.float32)
    special4 = np.array([0.0, -0.0, np.nan, np.inf, -np.inf, 1e16, 1e-4, 9.9999e-5, 1e-45,
                         3.4028235e38, 0.1, 1 / 3, 2.0**24, 16777217.0], np.float32)
    f4[:min(n, len(special4))] = special4[:n]
    t["f8"], t["f4"] = f8, f4
    t["f4"].unit = u.mJy
    t["f4"].description = "float32 of any bit pattern"
    t["x"].format = ".3f"
    return t


def _mixed_table(n: int, seed: int = 4) -> Table:
    """Strings, masked values and a 2-d column: not numbers alone."""
    from astropy.table import MaskedColumn

    rng = np.random.default_rng(seed)
    t = to_table(_dets(n, seed=seed), wcs=_sdc1_wcs())
    t["name"] = np.array([f'src "{i}", a b' for i in range(n)], dtype="U16")
    t["snr"] = MaskedColumn(rng.normal(10, 3, n), mask=rng.random(n) < 0.3, unit=u.one)
    t["count"] = MaskedColumn(rng.integers(0, 100, n), mask=rng.random(n) < 0.3)
    t["pair"] = rng.normal(size=(n, 2))
    return t


def _astropy_write(t: Table, path: Path, fmt: str) -> None:
    from astropy.io.fits.verify import VerifyWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", VerifyWarning)   # HIERARCH cards, as write_catalogue
        t.write(path, format={"ecsv": "ascii.ecsv"}.get(fmt, fmt))


def _assert_same_read(a: Path, b: Path) -> None:
    """Both files read back alike: columns, dtypes, units, descriptions, formats, values
    (every bit of every float but NaN payloads), meta."""
    ta, tb = Table.read(a), Table.read(b)
    assert ta.colnames == tb.colnames and len(ta) == len(tb)
    for c in ta.colnames:
        assert ta[c].dtype == tb[c].dtype, c
        assert (ta[c].unit or None) == (tb[c].unit or None), c
        assert ta[c].description == tb[c].description and ta[c].format == tb[c].format, c
        np.testing.assert_array_equal(np.asarray(ta[c]), np.asarray(tb[c]), err_msg=c)
        assert np.array_equal(np.ma.getmaskarray(ta[c]), np.ma.getmaskarray(tb[c])), c
    assert dict(ta.meta) == dict(tb.meta)


@pytest.mark.parametrize("fmt", ["ecsv", "fits"])
@pytest.mark.parametrize("n", [0, 1, 23])
@pytest.mark.parametrize("make", [_numbers_table, _mixed_table], ids=["numbers", "mixed"])
def test_blocked_file_is_astropys(tmp_path: Path, blocks: list[list[slice]], fmt: str, n: int,
                                  make: object) -> None:
    t = make(n)  # type: ignore[operator]
    if fmt == "ecsv":
        t.meta["nested"] = {"list": [1, 2.5, "x"], "text": "a: b"}   # YAML, not FITS
    ours, ref = tmp_path / f"ours.{fmt}", tmp_path / f"ref.{fmt}"
    write_catalogue(t, ours, format=fmt)  # type: ignore[arg-type]
    _astropy_write(t, ref, fmt)
    assert ours.read_bytes() == ref.read_bytes()      # the very file astropy writes
    if n:
        _assert_blocked(blocks, n)
        _assert_same_read(ours, ref)
        back = Table.read(ours)
        for c in t.colnames:   # and what was written, to the last bit (NaN payloads aside)
            # (astropy reads its own FITS int8 column back as bool, and strings as bytes)
            if t[c].dtype.kind != "U" and not (fmt == "fits" and c == "i1"):
                mask = np.ma.getmaskarray(t[c])   # (FITS masks NaN on reading: data kept)
                np.testing.assert_array_equal(np.ma.getdata(back[c])[~mask],
                                              np.ma.getdata(t[c])[~mask], err_msg=c)
    elif make is _numbers_table:
        _assert_same_read(ours, ref)                   # empty in, empty out, same columns
        assert len(Table.read(ours)) == 0 and Table.read(ours).colnames == t.colnames
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize("n", [0, 1, 23])
@pytest.mark.parametrize("make", [_numbers_table, _mixed_table], ids=["numbers", "mixed"])
def test_blocked_parquet_reads_as_astropys(tmp_path: Path, blocks: list[list[slice]], n: int,
                                           make: object) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    t = make(n)  # type: ignore[operator]
    t.meta["nested"] = {"list": [1, 2.5, "x"]}
    if make is _mixed_table:
        t.remove_column("pair")          # astropy cannot write an empty table with it
    ours, ref = tmp_path / "ours.parquet", tmp_path / "ref.parquet"
    write_catalogue(t, ours, format="parquet")
    _astropy_write(t, ref, "parquet")
    _assert_same_read(ours, ref)
    assert pq.read_schema(ours).equals(pq.read_schema(ref), check_metadata=True)
    if n and make is _numbers_table:
        _assert_blocked(blocks, n)
        assert pq.ParquetFile(ours).num_row_groups == -(-n // BLOCK)   # one per block
    assert len(Table.read(ours)) == n


def _nan_rows(t: Table, rows: list[int]) -> Table:
    for r in rows:
        if r < len(t):
            t["flux"][r] = np.nan
    return t


@pytest.mark.parametrize("n", [1, 23])
def test_blocked_sdc1_is_write_sdc1s_file(tmp_path: Path, blocks: list[list[slice]],
                                          n: int) -> None:
    from streamdet.catalogue.catalog import write_sdc1

    t = _nan_rows(_sdc1_table(n, seed=2), [3, 11, 12, 22])
    bad = int(np.count_nonzero(~np.isfinite(t["flux"])))
    ours, ref = tmp_path / "ours.txt", tmp_path / "ref.txt"
    if bad:
        with pytest.warns(CatalogueWarning, match=f"dropping {bad} of {n} sources") as rec:
            write_catalogue(t, ours)
        assert len(rec) == 1                           # one warning, all blocks counted
        with pytest.warns(CatalogueWarning, match="dropping"):
            s = to_sdc1(t)
    else:
        write_catalogue(t, ours)
        s = to_sdc1(t)
    write_sdc1(s, ref)
    assert ours.read_bytes() == ref.read_bytes()
    _assert_blocked(blocks, n)
    ids = [int(line.split()[0]) for line in ours.read_text().splitlines()[1:]]
    assert ids == list(range(n - bad))                 # ids run on across the blocks
    # an SDC1 table, written as it is
    ours2, ref2 = tmp_path / "ours2.txt", tmp_path / "ref2.txt"
    s["id"] = np.arange(len(s)) * 7 + 3
    write_catalogue(s, ours2)
    write_sdc1(s, ref2)
    assert ours2.read_bytes() == ref2.read_bytes()


def test_blocked_sdc1_with_every_row_dropped(tmp_path: Path, blocks: list[list[slice]]) -> None:
    t = _sdc1_table(12)
    t["flux"] = np.nan
    path = tmp_path / "none.txt"
    with pytest.warns(CatalogueWarning) as rec:
        write_catalogue(t, path)
    assert [str(w.message).split()[0] for w in rec] == ["dropping", "writing"]
    assert path.read_text().split() == list(SDC1_COLUMNS)
    # with warnings as errors nothing is left behind
    with warnings.catch_warnings():
        warnings.simplefilter("error", CatalogueWarning)
        with pytest.raises(CatalogueWarning):
            write_catalogue(t, tmp_path / "err.txt")
    assert not (tmp_path / "err.txt").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize("sky", [True, False])
@pytest.mark.parametrize("n", [0, 1, 23])
def test_blocked_regions_are_one_blocks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                        blocks: list[list[slice]], sky: bool, n: int) -> None:
    if sky:
        t = _sdc1_table(n, seed=6)
    else:
        with pytest.warns(NoWCSWarning):
            t = to_table(_dets(n, seed=6))
    for r in (4, 20):
        if r < n:
            t["pa" if sky else "x0"][r] = np.nan if sky else np.inf
    bad = 2 if n > 20 else (1 if n > 4 else 0)
    ours, ref = tmp_path / "ours.reg", tmp_path / "ref.reg"
    for path, rows in ((ours, BLOCK), (ref, 10**9)):
        monkeypatch.setattr(outputs, "_BLOCK_ROWS", rows)
        if bad:
            with pytest.warns(CatalogueWarning, match=f"skipping {bad} of {n}") as rec:
                write_regions(t, path)
            assert len(rec) == 1
        else:
            write_regions(t, path)
        if rows == BLOCK:
            _assert_blocked(blocks, n)
    assert ours.read_bytes() == ref.read_bytes()
    lines = ours.read_text().splitlines()
    assert lines[1] == ("icrs" if sky else "image") and len(lines) == 2 + n - bad


# A 200k-row catalogue (a 16384^2 field gives 4-6e5): writing it must take a block's
# memory, not the table's. astropy's ECSV writer took ~8x the text of the table.
_BIG = 200_000


@pytest.fixture(scope="module")
def big_table() -> tuple[Table, int]:
    """The catalogue and the size of its whole text (the ECSV data lines, from a sample)."""
    import io

    t = to_table(_dets(_BIG, size=12000.0, seed=8), wcs=_sdc1_wcs(n=12000), copy=False)
    head, sample = io.StringIO(), io.StringIO()
    t[:0].write(head, format="ascii.ecsv")
    t[:2000].write(sample, format="ascii.ecsv")
    text = (len(sample.getvalue()) - len(head.getvalue())) * (_BIG // 2000)
    return t, text


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["ecsv", "fits", "parquet", "sdc1", "regions"])
def test_writing_takes_a_blocks_memory(tmp_path: Path, big_table: tuple[Table, int],
                                       fmt: str) -> None:
    import gc
    import tracemalloc

    t, text = big_table
    pa = pytest.importorskip("pyarrow") if fmt == "parquet" else None
    path = tmp_path / f"big.{fmt}"
    gc.collect()
    pool = None
    if pa is not None:        # pyarrow's buffers are not Python allocations: counted apart
        pool = pa.proxy_memory_pool(pa.default_memory_pool())
        _ARROW_POOLS.append(pool)     # kept: arrow may free into it after the test
        previous = pa.default_memory_pool()
        pa.set_memory_pool(pool)
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        if fmt == "regions":
            write_regions(t, path)
        else:
            write_catalogue(t, path, format=fmt)  # type: ignore[arg-type]
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
        if pa is not None:
            pa.set_memory_pool(previous)
    if pool is not None:
        peak += pool.max_memory()
    assert path.stat().st_size > 0.1 * text
    # well under the text of the whole table (~57 MB): a block's text or records
    assert peak < text / 5, f"{fmt}: {peak / 1e6:.1f} MB for a {text / 1e6:.0f} MB text"


_ARROW_POOLS: list[object] = []
