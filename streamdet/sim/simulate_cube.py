"""Simulate an SKA SDC2-like HI cube: a FITS cube and its truth catalogue.

What is simulated
-----------------
* **Grid** as the SDC2 cubes: axes RA---SIN, DEC--SIN, FREQ (FITS order NAXIS1 = x,
  NAXIS2 = y, NAXIS3 = frequency; numpy shape ``(nz, ny, nx)``), 2.8" pixels, a circular
  7" restoring beam (BMAJ/BMIN/BPA in the header), 30 kHz channels starting at 950 MHz
  (the SDC2 band is 950-1150 MHz, 6668 channels), ``BUNIT = 'JY/BEAM'``; the field centre
  defaults to the development cube's (RA 180, Dec -30).
* **Galaxies**: a physical HI population (:mod:`streamdet.sim._cube_population`: the ALFALFA
  HI mass function, redshift from frequency, line flux from mass and luminosity distance,
  the Wang et al. 2016 size-mass relation, a Tully-Fisher-like rotation velocity,
  isotropic inclinations, uniform PAs), selected by the SDC2 sky model's soft line-flux
  floor, calibrated on the real SDC2 development truth (``benchmarks/calibrate_cube.py``,
  ``docs/calibration_cube.md``). Rendered as rotating, inclined, slightly thick disks
  (:mod:`streamdet.sim._cube_render`): line-of-sight velocity field, dispersion, channel
  integration, beam convolution. Not from the real HI templates (those stay unseen, for
  independent tests).
* **Noise**: Gaussian, correlated on the beam scale (autocorrelation FWHM = beam),
  independent between channels, rms :data:`SDC2_NOISE` per channel by default.
* **Continuum** (``continuum=True``): bright point sources with power-law spectra
  (``S ~ nu^alpha``, alpha ~ N(-0.7, 0.3)), counts N(>S) = 100 deg^-2 (S / 1 mJy)^-1.5 at
  1050 MHz up to 1 Jy, as left in a cube before continuum subtraction. They are not in
  the HI truth (the header's ``SIMNCONT`` counts them).

The truth lists every galaxy of the sky model (most of them far below the noise), in the
SDC2 truth format: ``id ra dec hi_size line_flux_integral central_freq pa i w20`` (deg,
deg, arcsec, Jy Hz, Hz, deg, deg, km/s).

The cube is written in slabs of channels (header, then big-endian float32 planes) to a
temporary file beside the output, renamed into place when whole; memory stays bounded
by one slab (and the stamps of the galaxies it holds), so a cube larger than RAM works.
The bytes are a pure function of the arguments, whatever the slab height.
"""

from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS
from numpy.typing import NDArray

from .._checks import check_int
from .._progress import progress_bar
from .._version import __version__
from ..errors import StreamdetValueError
from ..io._atomic import atomic_path, check_output
from ._beam import noise_kernel, separable_correlate
from ._cube_population import C_KMS, F_HI, Galaxies, draw_galaxies
from ._cube_render import CubeGrid, SlabRenderer, line_width

__all__ = [
    "SDC2_BAND",
    "SDC2_BEAM_ARCSEC",
    "SDC2_CHANNEL_HZ",
    "SDC2_NOISE",
    "SDC2_PIXEL_ARCSEC",
    "TRUTH_COLUMNS",
    "cube_truth",
    "simulate_cube",
    "write_truth",
]

#: SDC2 pixel side, arcsec.
SDC2_PIXEL_ARCSEC = 2.8
#: SDC2 restoring beam FWHM, arcsec (circular).
SDC2_BEAM_ARCSEC = 7.0
#: SDC2 channel width, Hz.
SDC2_CHANNEL_HZ = 30e3
#: SDC2 band, Hz (channel 0 is centred on its lower edge, as in the challenge cubes).
SDC2_BAND = (950e6, 1150e6)
#: Noise rms per 30 kHz channel, Jy/beam: the SDC2 cube's (2000 h SKA1-Mid). The SDC2
#: material (Hartley et al. 2023, MNRAS 523, 1967; the challenge pages) gives the
#: integration time, not a number here; 30 uJy/beam is the order of the published
#: per-channel noise and makes the truth's ~10 % brightest galaxies (line flux >~ 20 Jy Hz,
#: w20 ~ 200 km/s) 5-sigma detections, as the challenge's teams found.
SDC2_NOISE = 30e-6
#: Columns of the SDC2 truth catalogue, in order.
TRUTH_COLUMNS = ("id", "ra", "dec", "hi_size", "line_flux_integral", "central_freq", "pa",
                 "i", "w20")
#: Version of the simulated cube sky (bump when the same arguments give other bytes).
CUBE_SKY_VERSION = 1
_CENTRE = (180.0, -30.0)
_MIN_SIDE = 8
_SLAB_VOXELS = 1 << 23  # voxels per slab by default (64 MB as float64)
_FITS_BLOCK = 2880
_CONT_DENSITY = 100.0        # deg^-2 above _CONT_SMIN
_CONT_SMIN, _CONT_SMAX = 1e-3, 1.0  # Jy at 1050 MHz
_CONT_FREF = 1.05e9


def simulate_cube(path: str | os.PathLike[str], *,
                  truth: str | os.PathLike[str] | None = None,
                  shape: tuple[int, int, int] = (256, 64, 64), seed: int = 0,
                  channel_offset: int = 0, freq_start: float | None = None,
                  centre: tuple[float, float] = _CENTRE, noise: float = SDC2_NOISE,
                  continuum: bool = False, galaxies: bool = True,
                  slab_channels: int | None = None,
                  overwrite: bool = False, quiet: bool | None = True) -> Table:
    """Write a simulated SDC2-like HI cube (FITS) and return its truth catalogue.

    Parameters
    ----------
    path : str or os.PathLike
        FITS cube to write: float32, Jy/beam, numpy shape ``(nz, ny, nx)``.
    truth : str or os.PathLike, optional
        Truth catalogue to write, in the SDC2 truth format (whitespace text, header line
        ``id ra dec hi_size line_flux_integral central_freq pa i w20``).
    shape : (int, int, int)
        ``(nz, ny, nx)``: channels and pixels, each >= 8. The SDC2 development cube is
        (6668, 1286, 1286), the challenge cube (6668, 5851, 5851).
    seed : int
        Non-negative seed; the cube and truth are a pure function of all the arguments
        but ``slab_channels``, ``overwrite`` and ``quiet``.
    channel_offset : int
        First channel, counted in 30 kHz channels from 950 MHz (>= 0): channel ``k`` of
        the cube is centred on ``950 MHz + (channel_offset + k) x 30 kHz``.
    freq_start : float, optional
        Centre of the first channel, Hz, instead of ``channel_offset`` (not both). The
        band must stay below the HI rest frequency (1420.405751 MHz) and above 300 MHz.
    centre : (float, float)
        (RA, Dec) of the field centre, deg (Dec within (-89, 89)).
    noise : float
        Noise rms per channel, Jy/beam (>= 0; 0: no noise). Default :data:`SDC2_NOISE`.
    continuum : bool
        Add bright continuum point sources with power-law spectra (not in the truth).
    galaxies : bool
        ``False``: no HI galaxies (an empty truth): noise (and continuum) alone.
    slab_channels : int, optional
        Channels rendered and written at a time (>= 1); default: about 8 million voxels.
        Does not change the output.
    overwrite : bool
        Replace existing outputs (otherwise :class:`~streamdet.errors.OutputExistsError`).
    quiet : bool or None
        ``True`` hides the progress bar; ``None`` shows it on a terminal only.

    Returns
    -------
    astropy.table.Table
        One row per galaxy of the sky model, the SDC2 truth columns (``id`` int, ``ra``
        [0, 360) and ``dec`` deg, ``hi_size`` arcsec, ``line_flux_integral`` Jy Hz,
        ``central_freq`` Hz, ``pa`` deg, ``i`` deg, ``w20`` km/s) followed by ``x``,
        ``y`` (0-based pixel), ``channel`` (0-based, fractional, of ``central_freq``),
        ``z``, ``log_mhi`` (log10 Msun), ``v_flat`` (km/s). ``meta`` holds the grid.

    Raises
    ------
    StreamdetValueError
        A bad ``shape``, ``seed``, ``channel_offset``, ``freq_start``, ``centre``,
        ``noise`` or ``slab_channels`` (the message names the value), or ``truth`` equal
        to ``path``.
    OutputExistsError
        An output exists and ``overwrite`` is false.
    """
    nz, ny, nx = _check_shape(shape)
    s = check_int("seed", seed, 0)
    f0 = _check_band(_first_freq(channel_offset, freq_start), nz)
    ra0, dec0 = _check_centre(centre)
    rms = _check_float("noise", noise, 0.0)
    if slab_channels is None:
        slab = max(1, min(nz, _SLAB_VOXELS // (nx * ny)))
    else:
        slab = check_int("slab_channels", slab_channels, 1)
    out = Path(path)
    check_output(out, overwrite=overwrite)
    tpath = None
    if truth is not None:
        tpath = Path(truth)
        if tpath.resolve() == out.resolve():
            raise StreamdetValueError(f"truth {str(tpath)!r} must differ from the cube path")
        check_output(tpath, overwrite=overwrite)

    grid, header, gal, table = _sky(nz, ny, nx, s, f0, ra0, dec0, rms, bool(continuum),
                                    galaxies=bool(galaxies))
    cont = _continuum(np.random.Generator(np.random.PCG64(
        np.random.SeedSequence([s, 0xC0BE, 1]))), grid) if continuum else None
    header["SIMNCONT"] = (0 if cont is None else len(cont[0]), "continuum sources")
    renderer = SlabRenderer(gal, grid)
    noise_gen = ChannelNoise(seed=s, ny=ny, nx=nx, rms=rms,
                             beam_sigma_px=grid.beam_sigma_px) if rms > 0 else None
    with atomic_path(out, overwrite=overwrite) as tmp:
        with open(tmp, "wb") as fh, progress_bar(total=nz, desc="simulate cube",
                                                 unit="channel", quiet=quiet) as bar:
            fh.write(header.tostring().encode("ascii"))
            for z0 in range(0, nz, slab):
                z1 = min(nz, z0 + slab)
                block = renderer.render(z0, z1)
                if cont is not None:
                    _add_continuum(block, cont, grid, z0)
                if noise_gen is not None:
                    for c in range(z0, z1):
                        block[c - z0] += noise_gen.plane(c)
                block.astype(">f4").tofile(fh)
                bar.update(z1 - z0)
            nbytes = 4 * nx * ny * nz
            fh.write(b"\0" * (-nbytes % _FITS_BLOCK))
        if tpath is not None:
            write_truth(table, tpath, overwrite=overwrite)
    return table


def cube_truth(*, shape: tuple[int, int, int] = (256, 64, 64), seed: int = 0,
               channel_offset: int = 0, freq_start: float | None = None,
               centre: tuple[float, float] = _CENTRE) -> Table:
    """The truth :func:`simulate_cube` would write for these arguments, without the cube.

    Draws the same galaxies (and measures their w20) as :func:`simulate_cube` with the
    same ``shape``, ``seed``, band and ``centre``; nothing is rendered or written. Used to
    calibrate the population on whole development-cube footprints
    (``benchmarks/calibrate_cube.py``). Same parameters, returns and errors as there.
    """
    nz, ny, nx = _check_shape(shape)
    s = check_int("seed", seed, 0)
    f0 = _check_band(_first_freq(channel_offset, freq_start), nz)
    ra0, dec0 = _check_centre(centre)
    return _sky(nz, ny, nx, s, f0, ra0, dec0, 0.0, False)[3]


def _sky(nz: int, ny: int, nx: int, seed: int, f0: float, ra0: float, dec0: float,
         rms: float, continuum: bool, *,
         galaxies: bool = True) -> tuple[CubeGrid, fits.Header, Galaxies, Table]:
    """The grid, header, galaxies and truth of a cube (no pixels)."""
    f_last = f0 + (nz - 1) * SDC2_CHANNEL_HZ
    grid = CubeGrid(nx=nx, ny=ny, nz=nz, pixel_arcsec=SDC2_PIXEL_ARCSEC,
                    beam_fwhm_arcsec=SDC2_BEAM_ARCSEC, freq0=f0, dfreq=SDC2_CHANNEL_HZ)
    header = _header(grid, ra0, dec0, seed=seed, noise=rms, continuum=continuum)
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, 0xC0BE, 0])))
    gal = draw_galaxies(rng, nx=nx, ny=ny, pixel_deg=SDC2_PIXEL_ARCSEC / 3600.0,
                        f_lo=f0 - SDC2_CHANNEL_HZ / 2, f_hi=f_last + SDC2_CHANNEL_HZ / 2)
    if not galaxies:
        gal = Galaxies(**{f.name: getattr(gal, f.name)[:0] for f in dataclasses.fields(gal)})
    w20 = line_width(gal, grid)
    header["SIMNGAL"] = (len(gal), "number of simulated HI galaxies")
    table = _truth_table(gal, w20, WCS(header).celestial, grid)
    table.meta.update({"shape": (nz, ny, nx), "seed": seed, "freq0_hz": f0,
                       "channel_hz": SDC2_CHANNEL_HZ, "pixel_arcsec": SDC2_PIXEL_ARCSEC,
                       "beam_fwhm_arcsec": SDC2_BEAM_ARCSEC, "noise_jy_beam": rms,
                       "centre_deg": (ra0, dec0), "continuum": continuum})
    return grid, header, gal, table


def _check_band(f0: float, nz: int) -> float:
    f_last = f0 + (nz - 1) * SDC2_CHANNEL_HZ
    if not (300e6 <= f0 - SDC2_CHANNEL_HZ / 2 and f_last + SDC2_CHANNEL_HZ / 2 < F_HI):
        raise StreamdetValueError(
            f"the band {f0 / 1e6:.4f}-{f_last / 1e6:.4f} MHz ({nz} channels from "
            f"{f0 / 1e6:.4f} MHz) must lie within 300-{F_HI / 1e6:.6f} MHz (HI redshift > 0)")
    return f0


def write_truth(table: Table, path: str | os.PathLike[str], *, overwrite: bool = False) -> None:
    """Write the SDC2 truth columns of ``table`` as whitespace text (atomically)."""
    with atomic_path(path, overwrite=overwrite) as tmp:
        with open(tmp, "w", encoding="ascii") as fh:
            fh.write(" ".join(TRUTH_COLUMNS) + "\n")
            cols = [np.asarray(table[c], dtype=np.float64) for c in TRUTH_COLUMNS[1:]]
            ids = np.asarray(table["id"], dtype=np.int64)
            for k in range(len(table)):
                fh.write(f"{ids[k]} " + " ".join(repr(float(c[k])) for c in cols) + "\n")


class ChannelNoise:
    """Gaussian noise correlated on the beam scale, one channel plane at a time.

    Channel ``c``'s white noise, ``(ny + 2m, nx + 2m)`` float32 with a margin ``m`` of 4
    filter sigmas, comes from its own generator seeded by ``(seed, c)``; it is convolved
    with a Gaussian of sigma ``beam_sigma_px / sqrt(2)`` (so the noise's autocorrelation
    is the beam) and scaled to ``rms``. Channels are independent, as in a cube imaged
    channel by channel; a plane depends only on the seed and its index.

    Parameters
    ----------
    seed : int
        Non-negative seed.
    ny, nx : int
        Plane shape, pixels.
    rms : float
        Standard deviation, Jy/beam.
    beam_sigma_px : float
        Restoring-beam sigma, pixels.
    """

    def __init__(self, *, seed: int, ny: int, nx: int, rms: float, beam_sigma_px: float):
        self.seed, self.ny, self.nx = int(seed), int(ny), int(nx)
        k, self.margin = noise_kernel(beam_sigma_px)
        self.kernel = k.astype(np.float32)
        self.scale = np.float32(float(rms) / float(np.sum(k * k)))

    def plane(self, channel: int) -> NDArray[np.float32]:
        """Channel ``channel``'s noise, shape (ny, nx), Jy/beam."""
        m = self.margin
        rng = np.random.Generator(np.random.PCG64(
            np.random.SeedSequence([self.seed, 0xC0BE, 2, int(channel)])))
        white = rng.standard_normal((self.ny + 2 * m, self.nx + 2 * m), dtype=np.float32)
        out = separable_correlate(white, self.kernel, self.kernel, m)
        out *= self.scale
        return out


def _check_float(name: str, value: object, minimum: float) -> float:
    try:
        v = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise StreamdetValueError(f"{name} must be a number, got {value!r}") from None
    if isinstance(value, bool) or not math.isfinite(v) or v < minimum:
        raise StreamdetValueError(f"{name} must be a finite number >= {minimum:g}, "
                                  f"got {value!r}")
    return v


def _check_shape(shape: object) -> tuple[int, int, int]:
    try:
        dims: tuple[object, ...] = tuple(shape)  # type: ignore[arg-type]
    except TypeError:
        raise StreamdetValueError(f"shape must be three integers (nz, ny, nx), "
                                  f"got {shape!r}") from None
    if len(dims) != 3:
        raise StreamdetValueError(f"shape must be three integers (nz, ny, nx), got {shape!r}")
    nz, ny, nx = (check_int(f"shape[{k}]", v, _MIN_SIDE) for k, v in enumerate(dims))
    return nz, ny, nx


def _first_freq(channel_offset: object, freq_start: float | None) -> float:
    off = check_int("channel_offset", channel_offset, 0)
    if freq_start is None:
        return SDC2_BAND[0] + off * SDC2_CHANNEL_HZ
    if off != 0:
        raise StreamdetValueError(f"give channel_offset ({off}) or freq_start "
                                  f"({freq_start!r}), not both")
    return _check_float("freq_start", freq_start, 1.0)


def _check_centre(centre: object) -> tuple[float, float]:
    try:
        ra, dec = (float(v) for v in centre)  # type: ignore[attr-defined]
    except (TypeError, ValueError):
        raise StreamdetValueError(f"centre must be two numbers (RA, Dec) in degrees, "
                                  f"got {centre!r}") from None
    if not (math.isfinite(ra) and math.isfinite(dec) and -89.0 < dec < 89.0):
        raise StreamdetValueError(f"centre must be finite with Dec in (-89, 89) deg, "
                                  f"got {centre!r}")
    return ra % 360.0, dec


def _header(grid: CubeGrid, ra0: float, dec0: float, *, seed: int, noise: float,
            continuum: bool) -> fits.Header:
    h = fits.Header()
    h["SIMPLE"] = True
    h["BITPIX"] = -32
    h["NAXIS"] = 3
    h["NAXIS1"] = grid.nx
    h["NAXIS2"] = grid.ny
    h["NAXIS3"] = grid.nz
    h["EXTEND"] = True
    h["BUNIT"] = "JY/BEAM"
    h["BTYPE"] = "Intensity"
    h["CTYPE1"] = "RA---SIN"
    h["CRVAL1"] = ra0
    h["CDELT1"] = -grid.pixel_arcsec / 3600.0
    h["CRPIX1"] = grid.nx / 2 + 1
    h["CUNIT1"] = "deg"
    h["CTYPE2"] = "DEC--SIN"
    h["CRVAL2"] = dec0
    h["CDELT2"] = grid.pixel_arcsec / 3600.0
    h["CRPIX2"] = grid.ny / 2 + 1
    h["CUNIT2"] = "deg"
    h["CTYPE3"] = "FREQ"
    h["CRVAL3"] = grid.freq0
    h["CDELT3"] = grid.dfreq
    h["CRPIX3"] = 1.0
    h["CUNIT3"] = "Hz"
    h["SPECSYS"] = "BARYCENT"
    h["RESTFRQ"] = F_HI
    h["RADESYS"] = "ICRS"
    h["EQUINOX"] = 2000.0
    h["BMAJ"] = grid.beam_fwhm_arcsec / 3600.0
    h["BMIN"] = grid.beam_fwhm_arcsec / 3600.0
    h["BPA"] = 0.0
    h["TELESCOP"] = "SKA1-Mid (simulated)"
    h["ORIGIN"] = f"streamdet {__version__}"
    h["SIMSKY"] = (CUBE_SKY_VERSION, "version of the simulated cube sky")
    h["SIMSEED"] = (seed, "random seed")
    h["SIMNOISE"] = (noise, "[Jy/beam] noise rms per channel")
    h["SIMCONT"] = (continuum, "continuum point sources added")
    return h


def _truth_table(gal: Galaxies, w20: np.ndarray, wcs: WCS, grid: CubeGrid) -> Table:
    ra, dec = wcs.all_pix2world(gal.x, gal.y, 0)
    return Table({
        "id": np.arange(len(gal), dtype=np.int64),
        "ra": np.mod(np.asarray(ra, np.float64), 360.0),
        "dec": np.asarray(dec, np.float64),
        "hi_size": gal.hi_size,
        "line_flux_integral": gal.flux,
        "central_freq": gal.freq,
        "pa": gal.pa,
        "i": gal.inc,
        "w20": w20,
        "x": gal.x,
        "y": gal.y,
        "channel": (gal.freq - grid.freq0) / grid.dfreq,
        "z": gal.z,
        "log_mhi": gal.log_mass,
        "v_flat": gal.v_flat,
    })


def _continuum(rng: np.random.Generator, grid: CubeGrid) -> tuple[np.ndarray, ...]:
    """Continuum point sources: (x, y, S at 1050 MHz in Jy, spectral index)."""
    area = grid.nx * grid.ny * (grid.pixel_arcsec / 3600.0) ** 2
    n = int(rng.poisson(_CONT_DENSITY * area))
    x = rng.uniform(-0.5, grid.nx - 0.5, n)
    y = rng.uniform(-0.5, grid.ny - 0.5, n)
    u = rng.uniform(0.0, 1.0, n)
    frac = 1.0 - (_CONT_SMIN / _CONT_SMAX) ** 1.5
    flux = _CONT_SMIN * (1.0 - u * frac) ** (-1.0 / 1.5)
    alpha = rng.normal(-0.7, 0.3, n)
    return x, y, flux, alpha


def _add_continuum(block: np.ndarray, cont: tuple[np.ndarray, ...], grid: CubeGrid,
                   z0: int) -> None:
    """Add the continuum sources to channels ``z0 .. z0 + len(block)`` (Jy/beam)."""
    x, y, flux, alpha = cont
    nch = block.shape[0]
    freqs = grid.freq0 + (z0 + np.arange(nch)) * grid.dfreq
    sb = grid.beam_sigma_px
    hw = math.ceil(5.0 * sb)
    for k in range(len(x)):
        xc, yc = round(float(x[k])), round(float(y[k]))
        x0, x1 = max(0, xc - hw), min(grid.nx, xc + hw + 1)
        y0, y1 = max(0, yc - hw), min(grid.ny, yc + hw + 1)
        if x0 >= x1 or y0 >= y1:
            continue
        gx = np.exp(-0.5 * ((np.arange(x0, x1) - x[k]) / sb) ** 2)
        gy = np.exp(-0.5 * ((np.arange(y0, y1) - y[k]) / sb) ** 2)
        spec = flux[k] * (freqs / _CONT_FREF) ** alpha[k]
        block[:, y0:y1, x0:x1] += spec[:, None, None] * (gy[:, None] * gx[None, :])[None]


def channel_kms(freq_hz: float | np.ndarray) -> np.ndarray:
    """Velocity width (km/s) of a 30 kHz channel at ``freq_hz``: ``c dnu / nu``."""
    return np.asarray(C_KMS * SDC2_CHANNEL_HZ / np.asarray(freq_hz, np.float64))
