"""The SDC2-like cube simulator: header, truth, rendered flux, slabs, noise, errors."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from astropy.cosmology import FlatLambdaCDM
from astropy.io import fits
from astropy.wcs import WCS

from streamdet.errors import OutputExistsError, StreamdetValueError
from streamdet.sim import _cube_population as pop
from streamdet.sim._cube_render import CubeGrid, SlabRenderer, line_width
from streamdet.sim.simulate_cube import (
    SDC2_CHANNEL_HZ,
    SDC2_NOISE,
    TRUTH_COLUMNS,
    _sky,
    cube_truth,
    simulate_cube,
)

REAL_TRUTH = Path(__file__).resolve().parents[2] / "shared/data/sdc2/sky_ldev_truthcat_v2.txt"
C_KMS = 299792.458


def _grid(nz: int = 200, ny: int = 96, nx: int = 96, f0: float = 1.0e9) -> CubeGrid:
    return CubeGrid(nx=nx, ny=ny, nz=nz, pixel_arcsec=2.8, beam_fwhm_arcsec=7.0, freq0=f0,
                    dfreq=SDC2_CHANNEL_HZ)


def _galaxies(rows: list[dict[str, float]]) -> pop.Galaxies:
    cols = {f: np.array([r[f] for r in rows], dtype=np.float64)
            for f in ("x", "y", "freq", "log_mass", "flux", "d_hi_kpc", "hi_size", "v_flat",
                      "inc", "pa")}
    cols["z"] = pop.F_HI / cols["freq"] - 1.0
    return pop.Galaxies(**cols)


def test_header_and_wcs(tmp_path: Path) -> None:
    out = tmp_path / "c.fits"
    t = simulate_cube(out, shape=(16, 24, 32), seed=2, channel_offset=100)
    with fits.open(out) as hdul:
        h = hdul[0].header
        data = hdul[0].data
    assert data.shape == (16, 24, 32) and data.dtype == np.dtype(">f4")
    assert (h["CTYPE1"], h["CTYPE2"], h["CTYPE3"]) == ("RA---SIN", "DEC--SIN", "FREQ")
    assert h["CDELT1"] == pytest.approx(-2.8 / 3600) and h["CDELT2"] == pytest.approx(2.8 / 3600)
    assert h["BMAJ"] == pytest.approx(7 / 3600) and h["BMIN"] == pytest.approx(7 / 3600)
    assert h["BPA"] == 0.0 and h["BUNIT"] == "JY/BEAM"
    assert h["CDELT3"] == SDC2_CHANNEL_HZ and h["CUNIT3"] == "Hz"
    assert h["SIMNGAL"] == len(t) and h["SIMNOISE"] == pytest.approx(SDC2_NOISE)
    w = WCS(h)
    ra, dec, f = w.all_pix2world([16], [12], [3], 0)
    assert (ra[0], dec[0]) == pytest.approx((180.0, -30.0))
    assert f[0] == pytest.approx(950e6 + 103 * SDC2_CHANNEL_HZ)


def test_truth_file_format_and_rows(tmp_path: Path) -> None:
    truth = tmp_path / "t.txt"
    t = simulate_cube(tmp_path / "c.fits", truth=truth, shape=(128, 128, 128), seed=5,
                      noise=0.0)
    assert len(t) >= 1
    lines = truth.read_text().splitlines()
    assert lines[0] == " ".join(TRUTH_COLUMNS)
    if REAL_TRUTH.exists():
        assert lines[0] == REAL_TRUTH.read_text().splitlines()[0]
    arr = np.loadtxt(truth, skiprows=1, ndmin=2)
    assert arr.shape == (len(t), 9)
    for k, col in enumerate(TRUTH_COLUMNS):
        np.testing.assert_allclose(arr[:, k], np.asarray(t[col], np.float64), rtol=1e-12)
    f0, f1 = 950e6 - 15e3, 950e6 + 127.5 * SDC2_CHANNEL_HZ
    assert np.all((t["central_freq"] >= f0) & (t["central_freq"] < f1))
    assert np.all((t["i"] >= 0) & (t["i"] <= 90) & (t["pa"] >= 0) & (t["pa"] < 360))
    assert np.all(t["line_flux_integral"] > 0.5) and np.all(t["w20"] > 20)


def test_rendered_flux_matches_the_line_flux() -> None:
    """Sum of a galaxy's voxels x channel width / beam area = its line flux (isolated)."""
    grid = _grid()
    rows = [  # small (5 sub-pixels), mid (3) and large (1) disks; face-on to edge-on
        dict(x=20.3, y=20.7, freq=1.0e9 + 50.2 * 30e3, log_mass=9.0, flux=10.0,
             d_hi_kpc=20.0, hi_size=2.0, v_flat=120.0, inc=10.0, pa=30.0),
        dict(x=70.6, y=25.1, freq=1.0e9 + 60.0 * 30e3, log_mass=9.5, flux=30.0,
             d_hi_kpc=30.0, hi_size=12.0, v_flat=200.0, inc=60.0, pa=200.0),
        dict(x=48.0, y=68.4, freq=1.0e9 + 120.7 * 30e3, log_mass=10.0, flux=100.0,
             d_hi_kpc=60.0, hi_size=40.0, v_flat=250.0, inc=89.0, pa=300.0),
    ]
    gal = _galaxies(rows)
    cube = SlabRenderer(gal, grid).render(0, grid.nz)
    total = 0.0
    boxes = [(slice(0, 40), slice(0, 40)), (slice(0, 60), slice(45, 96)),
             (slice(40, 96), slice(15, 85))]
    for row, (ys, xs) in zip(rows, boxes, strict=True):
        s = float(cube[:, ys, xs].sum()) * grid.dfreq / grid.beam_area_px      # Jy Hz
        assert s == pytest.approx(row["flux"], rel=2e-3)
        # the same in Jy km/s: channel width c dnu / nu
        s_v = float(cube[:, ys, xs].sum()) * C_KMS * grid.dfreq / row["freq"] / grid.beam_area_px
        assert s_v == pytest.approx(row["flux"] * C_KMS / row["freq"], rel=3e-3)
        total += s
    assert total == pytest.approx(float(cube.sum()) * grid.dfreq / grid.beam_area_px)
    # the receding half (low frequencies: nu = nu_sys (1 - v / c)) lies along the PA,
    # east of north, i.e. along (-sin PA, cos PA) in pixels (x towards lower RA)
    c = cube[:, 0:60, 45:96]
    yy, xx = np.mgrid[0:60, 45:96]
    lo, hi = c[:60].sum(axis=0), c[61:].sum(axis=0)
    d = np.array([(lo * xx).sum() / lo.sum() - (hi * xx).sum() / hi.sum(),
                  (lo * yy).sum() / lo.sum() - (hi * yy).sum() / hi.sum()])
    pa = math.radians(200.0)
    assert np.dot(d, [-math.sin(pa), math.cos(pa)]) > 0.9 * np.hypot(*d) > 1.0
    # w20 of the edge-on disk is about twice its rotation velocity
    w20 = line_width(gal, grid)
    assert w20[2] == pytest.approx(2 * 250 * math.sin(math.radians(89)), rel=0.15)
    assert w20[0] < 0.5 * w20[2]


def test_cube_truth_matches_the_cube(tmp_path: Path) -> None:
    """In a noise-free simulated cube each isolated galaxy's voxels hold its truth flux."""
    out = tmp_path / "c.fits"
    shape = (256, 128, 128)
    t = simulate_cube(out, shape=shape, seed=11, noise=0.0)
    assert t is not None
    data = fits.getdata(out).astype(np.float64)
    grid, _, gal, table = _sky(*shape, 11, 950e6, 180.0, -30.0, 0.0, False)
    r = SlabRenderer(gal, grid)
    boxes = {int(i): r.stamp(int(i)) for i in r.order}
    checked = 0
    for i, st in boxes.items():
        nch, sy, sx = st.data.shape
        inside = (st.y0 >= 0 and st.x0 >= 0 and st.y0 + sy <= shape[1]
                  and st.x0 + sx <= shape[2] and r.c_lo[i] > 0 and r.c_hi[i] < shape[0] - 1)
        alone = all(j == i or st.c0 + nch <= o.c0 or o.c0 + o.data.shape[0] <= st.c0
                    or st.y0 + sy <= o.y0 or o.y0 + o.data.shape[1] <= st.y0
                    or st.x0 + sx <= o.x0 or o.x0 + o.data.shape[2] <= st.x0
                    for j, o in boxes.items())
        if not (inside and alone):
            continue
        block = data[st.c0:st.c0 + nch, st.y0:st.y0 + sy, st.x0:st.x0 + sx]
        s = block.sum() * grid.dfreq / grid.beam_area_px
        assert s == pytest.approx(float(t["line_flux_integral"][i]), rel=2e-3)
        checked += 1
    assert checked >= 1
    np.testing.assert_array_equal(np.asarray(table["w20"]), np.asarray(t["w20"]))


def test_slab_height_does_not_change_the_bytes(tmp_path: Path) -> None:
    kw = dict(shape=(96, 128, 128), seed=7, continuum=True, channel_offset=3000)
    a, b, c = tmp_path / "a.fits", tmp_path / "b.fits", tmp_path / "c.fits"
    ta = simulate_cube(a, slab_channels=1, **kw)  # type: ignore[arg-type]
    simulate_cube(b, slab_channels=13, **kw)  # type: ignore[arg-type]
    simulate_cube(c, **kw)  # type: ignore[arg-type]
    assert len(ta) >= 2
    assert a.read_bytes() == b.read_bytes() == c.read_bytes()
    d = tmp_path / "d.fits"
    simulate_cube(d, slab_channels=13, **{**kw, "seed": 8})  # type: ignore[arg-type]
    assert d.read_bytes() != a.read_bytes()


def test_noise_level_of_an_empty_cube(tmp_path: Path) -> None:
    out = tmp_path / "n.fits"
    t = simulate_cube(out, shape=(48, 96, 96), seed=3, noise=25e-6, galaxies=False)
    assert len(t) == 0
    data = fits.getdata(out).astype(np.float64)
    assert float(np.std(data)) == pytest.approx(25e-6, rel=0.03)
    assert abs(float(np.mean(data))) < 1e-6
    per_channel = data.std(axis=(1, 2))
    assert np.all(np.abs(per_channel / 25e-6 - 1) < 0.15)
    # correlated on the beam scale: the autocorrelation is the beam (sigma 1.06 px)
    rho = float(np.mean(data[:, :, 1:] * data[:, :, :-1])) / float(np.var(data))
    beam_sigma = 7.0 / 2.8 / (2 * math.sqrt(2 * math.log(2)))
    assert rho == pytest.approx(math.exp(-1 / (2 * beam_sigma ** 2)), abs=0.03)


def test_flux_mass_distance_round_trip() -> None:
    z = np.array([0.235, 0.3, 0.495])
    m = np.array([1e8, 3e9, 5e10])
    s = pop.line_flux(m, z)
    np.testing.assert_allclose(pop.hi_mass(s, z), m, rtol=1e-12)
    cosmo = FlatLambdaCDM(H0=pop.H0, Om0=pop.OMEGA_M)
    dl = cosmo.luminosity_distance(z).value
    np.testing.assert_allclose(pop.luminosity_distance(z), dl, rtol=1e-6)
    nu = pop.F_HI / (1 + z)
    s_v = s * C_KMS / nu                                  # Jy km/s
    np.testing.assert_allclose(2.356e5 * dl ** 2 * s_v / (1 + z), m, rtol=1e-4)
    # a 1e9 Msun galaxy at 1050 MHz is a few Jy Hz, as in the SDC2 truth
    assert 2.0 < float(pop.line_flux(1e9, pop.F_HI / 1.05e9 - 1)) < 6.0


def test_population_counts_match_the_development_cube() -> None:
    """The HI mass function with the flux floor predicts the real truth's 11,091 galaxies
    (within 7 %: the real truth has ~5 % more galaxies at every flux above the floor)."""
    area = (1286 * 2.8 / 3600 * math.pi / 180) ** 2
    n = pop.expected_count(950e6 - 15e3, 950e6 + 6667.5 * 30e3, area)
    assert n == pytest.approx(11091, rel=0.07)


def test_population_is_deterministic_and_physical() -> None:
    a = cube_truth(shape=(2000, 256, 256), seed=4)
    b = cube_truth(shape=(2000, 256, 256), seed=4)
    assert len(a) > 100
    for col in TRUTH_COLUMNS:
        np.testing.assert_array_equal(np.asarray(a[col]), np.asarray(b[col]))
    cos_i = np.cos(np.radians(np.asarray(a["i"])))
    assert 0.4 < float(np.median(cos_i)) < 0.6
    # sizes follow the size-mass relation (D_HI / D_A)
    d_a = pop.angular_diameter_distance(np.asarray(a["z"])) * 1e3
    d_hi = np.radians(np.asarray(a["hi_size"]) / 3600) * d_a
    resid = np.log10(d_hi) - (0.506 * np.asarray(a["log_mhi"]) - 3.293)
    assert float(np.mean(resid)) == pytest.approx(pop.SIZE_OFFSET_DEX, abs=0.03)


@pytest.mark.parametrize(("kwargs", "words"), [
    ({"shape": (4, 64, 64)}, "shape[0] must be >= 8, got 4"),
    ({"shape": (64, 64)}, "shape must be three integers"),
    ({"shape": (64, 64.5, 64)}, "shape[1] must be an integer, got 64.5"),
    ({"seed": -1}, "seed must be >= 0, got -1"),
    ({"noise": -1e-6}, "noise must be a finite number >= 0, got -1e-06"),
    ({"noise": float("nan")}, "noise must be a finite number"),
    ({"channel_offset": -2}, "channel_offset must be >= 0, got -2"),
    ({"freq_start": 1.5e9}, "must lie within 300-1420.405751 MHz"),
    ({"freq_start": 1.0e9, "channel_offset": 5}, "not both"),
    ({"centre": (180.0, 95.0)},
     "centre must be finite with Dec in (-89, 89) deg, got (180.0, 95.0)"),
    ({"slab_channels": 0}, "slab_channels must be >= 1, got 0"),
])
def test_bad_arguments_name_the_value(tmp_path: Path, kwargs: dict[str, object],
                                      words: str) -> None:
    out = tmp_path / "c.fits"
    with pytest.raises(StreamdetValueError) as err:
        simulate_cube(out, **kwargs)  # type: ignore[arg-type]
    assert words in str(err.value)
    assert not out.exists()


def test_existing_output_is_kept_without_overwrite(tmp_path: Path) -> None:
    out, truth = tmp_path / "c.fits", tmp_path / "t.txt"
    out.write_bytes(b"keep")
    with pytest.raises(OutputExistsError):
        simulate_cube(out, shape=(16, 16, 16))
    assert out.read_bytes() == b"keep"
    truth.write_text("keep")
    with pytest.raises(OutputExistsError):
        simulate_cube(tmp_path / "other.fits", truth=truth, shape=(16, 16, 16))
    assert truth.read_text() == "keep" and not (tmp_path / "other.fits").exists()
    with pytest.raises(StreamdetValueError, match="must differ"):
        simulate_cube(out, truth=out, shape=(16, 16, 16), overwrite=True)
    simulate_cube(out, truth=truth, shape=(16, 16, 16), overwrite=True)
    assert fits.getdata(out).shape == (16, 16, 16)
    assert truth.read_text().startswith("id ra dec")
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")) == [
        "c.fits", "t.txt"]


def test_cube_round_trips_through_convert(tmp_path: Path) -> None:
    from streamdet.io.convert import convert
    from streamdet.io.image import open_image

    out = tmp_path / "c.fits"
    simulate_cube(out, shape=(40, 32, 48), seed=6, channel_offset=10)
    convert(out, tmp_path / "c.zarr", quiet=True)
    img = open_image(tmp_path / "c.zarr")
    assert img.dims == ("freq", "y", "x") and img.shape == (40, 32, 48)
    np.testing.assert_array_equal(img.data.values, fits.getdata(out).astype(np.float32))
    np.testing.assert_allclose(img.data["freq"].values,
                               950e6 + SDC2_CHANNEL_HZ * (10 + np.arange(40)), rtol=1e-12)
    assert img.beam is not None and img.beam[0] == pytest.approx(7 / 3600)
    assert img.bunit == "JY/BEAM"


def test_continuum_sources_have_power_law_spectra(tmp_path: Path) -> None:
    out = tmp_path / "c.fits"
    simulate_cube(out, shape=(24, 256, 256), seed=1, noise=0.0, galaxies=False,
                  continuum=True)
    header = fits.getheader(out)
    assert header["SIMNCONT"] >= 1 and header["SIMCONT"] is True
    data = fits.getdata(out).astype(np.float64)
    y, x = np.unravel_index(int(np.argmax(data[0])), data.shape[1:])
    spec = data[:, y, x]
    assert np.all(spec > 1e-4)   # bright: >= 1 mJy at 1050 MHz, a few hundred uJy here
    freq = 950e6 + SDC2_CHANNEL_HZ * np.arange(24)
    fit = np.polyfit(np.log(freq), np.log(spec), 1)
    assert -3.0 < fit[0] < 2.0
    np.testing.assert_allclose(np.polyval(fit, np.log(freq)), np.log(spec), atol=1e-5)
