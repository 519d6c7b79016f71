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

from streamdet import outputs
from streamdet._pb import PrimaryBeam
from streamdet.detections import Detections
from streamdet.errors import (
    InvalidFITSError,
    OutputExistsError,
    StreamdetError,
    StreamdetFileNotFoundError,
    StreamdetValueError,
    WCSMissingError,
)
from streamdet.outputs import (
    SDC1_COLUMNS,
    CatalogueWarning,
    NoWCSWarning,
    to_sdc1,
    to_table,
    write_catalogue,
    write_regions,
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
    np.testing.assert_allclose(s["pa"][swapped], np.mod(t["pa"][swapped] + 90, 180))
    np.testing.assert_array_equal(s["pa"][~swapped], t["pa"][~swapped])
    assert np.all((s["pa"] >= 0) & (s["pa"] < 180))
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
    catalog = pytest.importorskip("streamdet.catalog")
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
    catalog = pytest.importorskip("streamdet.catalog")
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
    catalog = pytest.importorskip("streamdet.catalog")
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
    np.testing.assert_allclose(np.mod(ang - 90.0, 180.0), s["pa"], atol=1e-6)
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
