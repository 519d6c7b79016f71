"""Simulate an SKA SDC1-like continuum field: a FITS image and its truth catalogue.

What is simulated
-----------------
* **Header** as in the SDC1 images: 4 axes (RA---SIN, DEC--SIN, FREQ, STOKES, the
  last two of length 1), reference pixel at the centre (1-based ``size/2 + 1``),
  per band pixel 0.60"/0.24"/0.037" and circular restoring beam 1.5"/0.60"/0.0913"
  (BMAJ/BMIN/BPA in degrees) at 560/1400/9200 MHz, ``BUNIT = 'JY/BEAM'``,
  ``CRVAL3`` the frequency in Hz. The field centre is (RA 0, Dec -30) moved by
  ``offset``; the primary beam stays pointed at (RA 0, Dec -30), as in SDC1.
* **Sources** resampled (bootstrap) from the real SDC1 training truth catalogues
  (``streamdet/data/sdc1_population.npz``, made by ``tools/make_population.py``):
  a Poisson number with mean density x area (61,600 / 63,300 / 27,100 sources per
  square degree at 560 / 1400 / 9200 MHz, measured from the catalogues), uniform
  sub-pixel positions, uniform position angles. The 9.2 GHz catalogue has only 30
  sources, so that band resamples the 1.4 GHz population moved to 9.2 GHz (fluxes
  scaled with spectral index -0.7, or 0 for flat-spectrum AGN; sizes scaled per
  size/class to the 9.2 GHz medians).
* **Morphology** by the ``size`` code: 2 = elliptical Gaussian (b_maj/b_min are
  FWHMs), 3 = exponential disc (scale lengths 0.21 b_maj and 0.21 b_min along the
  axes, as free fits of the real 560 MHz map's size-3 sources give:
  ``_render.EXPONENTIAL_SCALE``), 1 = lobed AGN: a point core with ``core_frac`` of
  the flux plus one of 78 real extended radio-galaxy images (the AGN stamps SDC1 drew its
  steep-spectrum AGN from; packaged as 48 x 48 templates), randomly chosen and
  mirrored, its major axis along the PA, scaled so that its 0.5-99.5 % flux
  extent equals the LAS (``b_min`` then is the template's minor extent;
  ``ra_cent``/``dec_cent`` is the flux centroid). Any source with ``core_frac > 0``
  gets a point core. PA is east of north.
* **Faint population** (``faint=True``, the default): the SDC1 training catalogues
  are incomplete at their faint end (their counts per ln-flux turn over at 2.4-3x
  their faintest flux, where the real sky's keep rising), and the real maps hold
  the sources below that as confusion: about 90 % of the labelled SDC1 sky is
  fainter than what can be detected. Below the turnover the counts continue as
  the power law fitted over the factor of 8 above it (dN/dlnS ~ S^-0.84 at
  560 MHz, S^-0.60 at 1400 MHz) down to a tenth of the catalogue's faintest flux
  (0.3 uJy at 560 MHz); sizes follow the catalogue's size-flux relation
  (b ~ S^0.61 at 560 MHz, S^0.67 at 1400 MHz). That adds 9.6 (560 MHz) / 6.0
  (1400 MHz) faint sources per catalogue source
  (``streamdet.sim._population.faint_counts``). They are in the
  truth like every other source, as in the SDC1 truth catalogues (the sky model
  the image was made from), so finding a real faint source is a match and a
  noise peak or a blend is a false detection.
* **Primary beam**: the real SDC1 560 MHz beam (azimuthal average), its angular
  size scaled by 560/freq, evaluated at each source's core. **Restoring beam**:
  the convolution is analytic (every component is a Gaussian) and the image is
  sampled at pixel centres, so a point source of true flux S has peak S x PB and
  the image sums to S x PB x beam area. The truth flux is the true flux.
* **Noise**: Gaussian, correlated on the beam scale (autocorrelation FWHM = beam),
  rms 0.38 uJy/beam at 560 MHz (a real SDC1 B1 1000 h map), 0.101 uJy/beam at
  1400 MHz and 0.0144 uJy/beam at 9200 MHz (scaled by the faintest truth flux of
  each band's catalogue). ``sidelobes=True`` adds, around sources brighter than
  300 x rms, a broad negative bowl (0.2 % of the peak deep, sigma 3 beams) and
  six-fold ringing (0.4 % of the peak), as left by an imperfect deconvolution.
* **Scoring caution**: the SDC1 scorer with ``train=False`` drops the truth and
  submitted sources inside the SDC1 training box (560 MHz: RA -0.6723..0, Dec
  -29.9400..-29.4061). With the default ``offset=(0, 0)`` the field is centred on
  the pointing, where the PB is 1, as in SDC1; fields of more than ~0.12 deg
  (~700 px at 560 MHz, ~1800 px at 1400 MHz) overlap that box in their north-west
  corner (about 16 % of a 2048 px 560 MHz field), and those sources are not scored.
  An offset such as ``(0, -0.5)`` keeps a 560 MHz field of up to ~0.88 deg clear.

The image is written in strips of rows (header first, then big-endian float32
rows), so memory stays bounded (a few hundred MB for a 16384^2 field); the
result does not depend on the strip height.
"""

from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path

import numpy as np
from astropy import units as u
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.table import Column, Table
from astropy.wcs import WCS

from .._checks import check_int, check_positive
from .._progress import progress_bar
from .._version import __version__
from ..catalogue.catalog import SDC1_COLUMNS, sdc1_pa, write_sdc1
from ..errors import StreamdetValueError
from ..io._atomic import atomic_path, check_output
from ._population import (
    BANDS,
    POINTING,
    Band,
    SourceDraw,
    agn_templates,
    band,
    draw_sources,
    primary_beam,
)
from ._render import (
    CorrelatedNoise,
    StripRenderer,
    sidelobe_patterns,
    source_components,
)

__all__ = ["simulate", "write_primary_beam"]

_MIN_SIZE = 64
_FITS_BLOCK = 2880
#: Version of the simulated sky: bumped whenever the same arguments give another image or
#: truth, so that caches keyed by the arguments (training and benchmark fields) are not
#: reused across versions. 2: calibrated on the real SDC1 map (faint counts, noise, zero
#: mean) with PAs in the SDC1 convention. 3: the real map's flux scale (FLUX_SCALE) and noise
#: autocorrelation (NOISE_ACF).
SKY_VERSION = 3
#: Noise rms added, as a fraction of the band's map noise (``Band.noise``, the MAD of a
#: real 1000 h map: 0.38 uJy/beam at 560 MHz). The MAD holds the confusion of the faint
#: sources too: with the faint population calibrated on the real truth, a noise of
#: 0.32 uJy/beam gives the real map's MAD of 0.38 (``benchmarks/calibrate_sim.py``). No real
#: map of the other bands: their noise is the map's.
THERMAL: dict[int, float] = {560: 0.32 / 0.38}
#: Share of the sky's mean brightness an interferometer misses: the real 560 MHz map
#: averages 0.06 uJy/beam where its truth's sources give 0.40 (``zero_mean``).
MISSING_MEAN = 0.85
#: The map's flux per unit of sky flux (S x PB): the real 560 MHz SDC1 map carries 0.92 of
#: its truth's flux. Free elliptical Gaussian fits to isolated compact sources (size 2,
#: b_maj < 0.7") give 0.89-0.92 of S x PB on the real map against 0.96-1.01 on simulated
#: fields at the same position, with no trend in PB gain (``docs/calibration.md``). No real
#: map of the other bands: 1 there.
FLUX_SCALE: dict[int, float] = {560: 0.92}
#: Noise autocorrelation along x and along y at lags 1-12 px, measured on the source-free
#: pixels of the real 560 MHz map (narrower than the beam along x, with a negative lobe of
#: -0.14 at 3 px; 1.73" along y; ``docs/calibration.md``). It holds the faint sources'
#: confusion too (CONFUSION_SHARE of the variance, correlated as the beam convolved with
#: itself), which the simulator renders: the thermal noise's own autocorrelation is what
#: remains. Other bands: noise correlated as the beam.
NOISE_ACF: dict[int, tuple[tuple[float, ...], tuple[float, ...]]] = {560: (
    (0.6366, 0.0673, -0.141, -0.0972, -0.0521, -0.0387, -0.0078, 0.0332, 0.0424, 0.0181,
     -0.0009, -0.0081),
    (0.714, 0.2259, -0.0151, -0.029, 0.0101, 0.0248, 0.0094, -0.0157, -0.0234, -0.009,
     0.011, 0.026))}
#: Share of the source-free pixels' variance that is confusion: 1 - (0.32 / 0.337)^2, the
#: thermal noise (THERMAL) against the real map's source-free MAD.
CONFUSION_SHARE = 0.1
_STRIP_PIXELS = 1 << 21  # pixels per strip (2 Mpix: 16 MB as float64)


def simulate(path: str | os.PathLike[str], *, truth: str | os.PathLike[str] | None = None,
             size: int = 2048, freq: int = 560, seed: int = 0,
             offset: tuple[float, float] = (0.0, 0.0), noise: bool = True,
             sidelobes: bool = False, faint: bool = True, zero_mean: bool = True,
             noise_scale: float = 1.0, flux_scale: float | None = None,
             agn_fraction: float | None = None, overwrite: bool = False,
             quiet: bool | None = None) -> Table:
    """Write a simulated SDC1-like continuum image (FITS) and return its truth.

    Parameters
    ----------
    path : str or os.PathLike
        FITS image to write: shape (1, 1, size, size) float32, Jy/beam.
    truth : str or os.PathLike, optional
        Truth catalogue to write in the SDC1 submission format
        (:func:`streamdet.catalogue.catalog.write_sdc1`).
    size : int
        Image side in pixels (>= 64).
    freq : int
        Band in MHz: 560, 1400 or 9200 (sets pixel, beam, noise and population).
    seed : int
        Non-negative random seed; the image and truth are a pure function of
        (seed, size, freq, offset, noise, sidelobes, faint, zero_mean, noise_scale,
        flux_scale, agn_fraction).
    offset : (float, float)
        (dRA, dDec) in degrees of the field centre from (RA 0, Dec -30).
    noise : bool
        Add the correlated map noise.
    sidelobes : bool
        Add negative bowls and ringing around the brightest sources.
    faint : bool
        Add the faint population below the catalogue's turnover (rendered and in
        the truth); ``False`` draws the catalogue population alone, whose sources
        are the same as with it.
    zero_mean : bool
        Take the sky's mean brightness out, as an interferometer does (it misses the
        total flux): every pixel less :data:`MISSING_MEAN` of the sources' attenuated
        flux per beam of the field (header ``SIMLEVEL``). The real 560 MHz SDC1 map
        averages 0.06 uJy/beam (median -0.22), the sky it shows ~0.4
        (``benchmarks/calibrate_sim.py``). ``False``: sources on a zero background.
    noise_scale : float
        Multiplies the map noise (> 0): 1 gives the band's (a 1000 h SDC1 map).
    flux_scale : float, optional
        The map's flux per unit of sky flux (> 0): sources are rendered with
        ``flux_scale`` x their attenuated flux, the truth keeps the true flux. Default:
        the band's (:data:`FLUX_SCALE`: 0.92 at 560 MHz, as the real SDC1 map; 1 in the
        other bands, which have no real map here).
    agn_fraction : float, optional
        Fraction in [0, 1] of the catalogue population's sources drawn from its AGN
        (classes 1 and 2: lobed and compact); default: the population's own mix. The
        faint population is unchanged. A shifted sky for robustness checks.
    overwrite : bool
        Replace existing outputs (otherwise :class:`~streamdet.errors.OutputExistsError`).
    quiet : bool or None
        ``True`` hides the progress bar; ``None`` shows it on a terminal only.

    Returns
    -------
    astropy.table.Table
        One row per source, the SDC1 columns (``id ra_core dec_core ra_cent dec_cent
        flux core_frac b_maj b_min pa size class``: deg, Jy, arcsec, deg; true,
        unattenuated flux; RA in [0, 360)) followed by ``x``, ``y`` (0-based pixel
        of the core) and ``pb`` (primary-beam gain at the core). ``meta`` holds the
        band parameters.

    Raises
    ------
    StreamdetValueError
        Bad ``freq``, ``size``, ``seed``, ``offset``, ``noise_scale``, ``flux_scale`` or
        ``agn_fraction``,
        or ``truth`` equal to ``path``.
    OutputExistsError
        An output exists and ``overwrite`` is false.
    """
    return _simulate(path, truth=truth, size=size, freq=freq, seed=seed, offset=offset,
                     noise=noise, sidelobes=sidelobes, faint=faint, zero_mean=zero_mean,
                     noise_scale=noise_scale, flux_scale=flux_scale,
                     agn_fraction=agn_fraction, overwrite=overwrite, quiet=quiet)


def _simulate(path: str | os.PathLike[str], *, truth: str | os.PathLike[str] | None,
              size: int, freq: int, seed: int, offset: tuple[float, float], noise: bool,
              sidelobes: bool, faint: bool, overwrite: bool, quiet: bool | None,
              zero_mean: bool = True, noise_scale: float = 1.0,
              flux_scale: float | None = None,
              agn_fraction: float | None = None, strip_rows: int | None = None) -> Table:
    """:func:`simulate` with the strip height as a parameter (tests vary it)."""
    b = band(freq)
    scale = check_positive("noise_scale", noise_scale)
    fscale = (FLUX_SCALE.get(b.freq, 1.0) if flux_scale is None
              else check_positive("flux_scale", flux_scale))
    if scale != 1.0:
        b = dataclasses.replace(b, noise=b.noise * scale)
    if agn_fraction is not None and not 0.0 <= float(agn_fraction) <= 1.0:
        raise StreamdetValueError(f"agn_fraction must be in [0, 1], got {agn_fraction!r}")
    n = check_int("size", size, _MIN_SIZE)
    s = check_int("seed", seed, 0)
    centre = _centre(offset)
    rows = max(1, int(strip_rows)) if strip_rows is not None else max(
        16, min(n, _STRIP_PIXELS // n))
    out = Path(path)
    check_output(out, overwrite=overwrite)
    if truth is not None:
        tpath = Path(truth)
        if tpath.resolve() == out.resolve():
            raise StreamdetValueError(f"truth {str(tpath)!r} must differ from the image path")
        check_output(tpath, overwrite=overwrite)

    header = _header(n, b, centre, seed=s, noise=noise, sidelobes=sidelobes, faint=faint,
                     zero_mean=zero_mean)
    wcs = WCS(header).celestial
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([s, b.freq, 0])))
    draw = draw_sources(rng, size=n, freq=b.freq, faint=bool(faint),
                        agn_fraction=None if agn_fraction is None else float(agn_fraction))
    ra, dec = wcs.all_pix2world(draw.x, draw.y, 0)
    north = _north_angle(wcs, ra, dec, draw.x, draw.y, b)
    gain = primary_beam(_separation(ra, dec, *POINTING), b.freq)
    comps = source_components(draw, north_rad=north, gain=gain * fscale, band=b,
                              templates=agn_templates())
    ra_c, dec_c = wcs.all_pix2world(comps.cent_x, comps.cent_y, 0)
    header["SIMNSRC"] = (len(draw), "number of simulated sources")
    table = _truth_table(draw, ra, dec, ra_c, dec_c, gain)
    table.meta.update({"freq_mhz": b.freq, "size": n, "seed": s, "offset_deg": centre,
                       "pixel_arcsec": b.pixel_arcsec, "beam_fwhm_arcsec": b.beam_fwhm_arcsec,
                       "noise_jy_beam": b.noise if noise else 0.0, "density_deg2": b.density,
                       "faint": bool(faint), "zero_mean": bool(zero_mean),
                       "flux_scale": fscale})
    header["SIMFSCAL"] = (fscale, "map flux per unit of sky flux")

    patterns = sidelobe_patterns(draw, gain=gain * fscale, band=b) if sidelobes else None
    # Free the draw and its sky positions before the renderer makes its sorted copies of
    # the components, and the components after: with the faint population a 16384^2
    # field holds 4.6 million sources.
    del draw, ra, dec, ra_c, dec_c, north, gain
    renderer = StripRenderer(comps.gaussians, width=n, stamps=comps.stamps, patterns=patterns)
    del comps, patterns
    # what an interferometer misses: the sky's mean brightness, Jy/beam
    level = (float(np.sum(np.asarray(table["flux"]) * np.asarray(table["pb"]))) * fscale
             * b.beam_area_px / float(n * n) * MISSING_MEAN) if zero_mean else 0.0
    header["SIMLEVEL"] = (level, "[Jy/beam] sky mean taken out")
    thermal = b.noise * THERMAL.get(b.freq, 1.0)
    acf = _thermal_acf(b)
    noise_gen = (CorrelatedNoise(seed=s, tag=b.freq, width=n, rms=thermal,
                                 beam_sigma_px=b.beam_sigma_px,
                                 acf_x=None if acf is None else acf[0],
                                 acf_y=None if acf is None else acf[1]) if noise else None)
    with atomic_path(out, overwrite=overwrite) as tmp:
        with open(tmp, "wb") as fh, progress_bar(total=n, desc="simulate", unit="row",
                                                 quiet=quiet) as bar:
            fh.write(header.tostring().encode("ascii"))
            for y0 in range(0, n, rows):
                y1 = min(n, y0 + rows)
                strip = renderer.render(y0, y1) - level
                if noise_gen is not None:
                    strip += noise_gen.strip(y0, y1)
                strip.astype(">f4").tofile(fh)
                bar.update(y1 - y0)
            nbytes = 4 * n * n
            fh.write(b"\0" * (-nbytes % _FITS_BLOCK))
        if truth is not None:
            write_sdc1(table, truth, overwrite=overwrite)
    return table


def _thermal_acf(b: Band) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    """The thermal noise's autocorrelation along x and y (lags 1, 2, ...), or None.

    The band's measured map autocorrelation (:data:`NOISE_ACF`) less the confusion's
    share (:data:`CONFUSION_SHARE`), correlated as the beam convolved with itself.
    """
    measured = NOISE_ACF.get(b.freq)
    if measured is None:
        return None
    w = CONFUSION_SHARE

    def thermal(rho: tuple[float, ...]) -> tuple[float, ...]:
        lags = np.arange(1, len(rho) + 1, dtype=np.float64)
        conf = np.exp(-lags ** 2 / (4.0 * b.beam_sigma_px ** 2))
        return tuple(float(v) for v in (np.asarray(rho) - w * conf) / (1.0 - w))

    return thermal(measured[0]), thermal(measured[1])


def _centre(offset: tuple[float, float]) -> tuple[float, float]:
    try:
        dra, ddec = (float(v) for v in offset)
    except (TypeError, ValueError):
        raise StreamdetValueError(f"offset must be two numbers (dRA, dDec) in degrees, "
                                  f"got {offset!r}") from None
    if not (math.isfinite(dra) and math.isfinite(ddec)):
        raise StreamdetValueError(f"offset must be finite, got {offset!r}")
    dec = POINTING[1] + ddec
    if not -89.0 < dec < 89.0:
        raise StreamdetValueError(f"offset {offset!r} puts the field centre at Dec {dec:g}; "
                                  "it must stay within (-89, 89) deg")
    return (POINTING[0] + dra) % 360.0, dec


def _header(n: int, b: Band, centre: tuple[float, float], *, seed: int, noise: bool,
            sidelobes: bool, faint: bool, zero_mean: bool = True) -> fits.Header:
    cdelt = b.pixel_arcsec / 3600.0
    beam = b.beam_fwhm_arcsec / 3600.0
    hz = b.freq * 1e6
    cards: list[tuple[str, object, str]] = [
        ("SIMPLE", True, "conforms to FITS standard"),
        ("BITPIX", -32, "IEEE single precision"),
        ("NAXIS", 4, ""),
        ("NAXIS1", n, ""),
        ("NAXIS2", n, ""),
        ("NAXIS3", 1, ""),
        ("NAXIS4", 1, ""),
        ("EXTEND", True, ""),
        ("BSCALE", 1.0, ""),
        ("BZERO", 0.0, ""),
        ("BUNIT", "JY/BEAM", "brightness unit"),
        ("BTYPE", "Intensity", ""),
        ("OBJECT", f"SDC1-like B{ {560: 1, 1400: 2, 9200: 5}[b.freq]} field", ""),
        ("BMAJ", beam, "[deg] restoring beam major axis FWHM"),
        ("BMIN", beam, "[deg] restoring beam minor axis FWHM"),
        ("BPA", 0.0, "[deg] restoring beam position angle"),
        ("EQUINOX", 2000.0, ""),
        ("RADESYS", "FK5", ""),
        ("CTYPE1", "RA---SIN", ""),
        ("CRVAL1", centre[0], "[deg]"),
        ("CDELT1", -cdelt, "[deg]"),
        ("CRPIX1", n // 2 + 1.0, ""),
        ("CUNIT1", "deg", ""),
        ("CTYPE2", "DEC--SIN", ""),
        ("CRVAL2", centre[1], "[deg]"),
        ("CDELT2", cdelt, "[deg]"),
        ("CRPIX2", n // 2 + 1.0, ""),
        ("CUNIT2", "deg", ""),
        ("CTYPE3", "FREQ", ""),
        ("CRVAL3", hz, "[Hz]"),
        ("CDELT3", 1.0e6, "[Hz]"),
        ("CRPIX3", 1.0, ""),
        ("CUNIT3", "Hz", ""),
        ("CTYPE4", "STOKES", ""),
        ("CRVAL4", 1.0, "Stokes I"),
        ("CDELT4", 1.0, ""),
        ("CRPIX4", 1.0, ""),
        ("CUNIT4", "", ""),
        ("RESTFRQ", hz, "[Hz]"),
        ("SPECSYS", "TOPOCENT", ""),
        ("ORIGIN", f"streamdet {__version__}", ""),
        ("SIMSEED", seed, "random seed"),
        ("SIMNOISE", b.noise if noise else 0.0, "[Jy/beam] map noise (noise + confusion)"),
        ("SIMTHERM", b.noise * THERMAL.get(b.freq, 1.0) if noise else 0.0,
         "[Jy/beam] rms of the noise added"),
        ("SIMSIDEL", bool(sidelobes), "sidelobes added"),
        ("SIMFAINT", bool(faint), "faint population below the catalogue added"),
        ("SIMSKY", SKY_VERSION, "version of the simulated sky"),
        ("SIMZMEAN", bool(zero_mean), "the sky's mean brightness taken out"),
        ("PBRA", POINTING[0], "[deg] primary-beam pointing RA"),
        ("PBDEC", POINTING[1], "[deg] primary-beam pointing Dec"),
    ]
    return fits.Header(cards)


def _separation(ra: np.ndarray, dec: np.ndarray, ra0: float, dec0: float) -> np.ndarray:
    """Great-circle distance (deg) from (ra0, dec0), haversine form."""
    d1, d0 = np.radians(dec), math.radians(dec0)
    hav = (np.sin(0.5 * (d1 - d0)) ** 2
           + np.cos(d1) * math.cos(d0) * np.sin(0.5 * np.radians(ra - ra0)) ** 2)
    return np.degrees(2.0 * np.arcsin(np.sqrt(np.clip(hav, 0.0, 1.0))))


def _north_angle(wcs: WCS, ra: np.ndarray, dec: np.ndarray, x: np.ndarray, y: np.ndarray,
                 b: Band) -> np.ndarray:
    """Direction of local north in the pixel frame (radians from +x) at each source."""
    step = b.pixel_arcsec / 3600.0
    xn, yn = wcs.all_world2pix(ra, np.minimum(dec + step, 90.0), 0)
    return np.asarray(np.arctan2(yn - y, xn - x), dtype=np.float64)


def _wrap_ra(ra: np.ndarray) -> np.ndarray:
    out = np.mod(np.asarray(ra, np.float64), 360.0)
    out[out >= 360.0] = 0.0
    return out


def _truth_table(draw: SourceDraw, ra: np.ndarray, dec: np.ndarray, ra_c: np.ndarray,
                 dec_c: np.ndarray, gain: np.ndarray) -> Table:
    n = len(draw)
    cols = {
        "id": Column(np.arange(1, n + 1, dtype=np.int64)),
        "ra_core": Column(_wrap_ra(ra), unit=u.deg),
        "dec_core": Column(np.asarray(dec, np.float64), unit=u.deg),
        "ra_cent": Column(_wrap_ra(ra_c), unit=u.deg),
        "dec_cent": Column(np.asarray(dec_c, np.float64), unit=u.deg),
        "flux": Column(draw.flux, unit=u.Jy),
        "core_frac": Column(draw.core_frac),
        "b_maj": Column(draw.bmaj, unit=u.arcsec),
        "b_min": Column(draw.bmin, unit=u.arcsec),
        "pa": Column(sdc1_pa(draw.pa), unit=u.deg),
        "size": Column(draw.size),
        "class": Column(draw.cls),
        "x": Column(draw.x, unit=u.pix),
        "y": Column(draw.y, unit=u.pix),
        "pb": Column(gain),
    }
    assert tuple(cols)[:len(SDC1_COLUMNS)] == SDC1_COLUMNS
    return Table(cols)


def write_primary_beam(path: str | os.PathLike[str], *, freq: int = 560, size_deg: float = 8.0,
                       pixel_deg: float = 0.05, overwrite: bool = False) -> Path:
    """Write the primary beam that :func:`simulate` applies, as a FITS image.

    The beam of the simulator (the SDC1 560 MHz model, azimuthally averaged, scaled by
    ``560 / freq``), pointed at RA 0, Dec -30 on a coarse SIN grid, like the challenge's
    ``PrimaryBeam_B1.fits``; give it to ``streamdet detect --pb`` to correct fluxes.

    Parameters
    ----------
    path : str or os.PathLike
        FITS file to write (atomically).
    freq : {560, 1400, 9200}
        Band, MHz.
    size_deg : float
        Side of the map, degrees.
    pixel_deg : float
        Pixel side, degrees.
    overwrite : bool
        Replace an existing file.

    Returns
    -------
    pathlib.Path
        The file written.
    """
    if freq not in BANDS:
        raise StreamdetValueError(f"freq {freq} MHz is not an SDC1 band {BANDS}")
    if not (0 < pixel_deg < size_deg <= 90):
        raise StreamdetValueError(
            f"need 0 < pixel_deg ({pixel_deg}) < size_deg ({size_deg}) <= 90")
    n = round(size_deg / pixel_deg) | 1          # odd: the pointing on a pixel centre
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---SIN", "DEC--SIN"]
    w.wcs.crval = list(POINTING)
    w.wcs.crpix = [(n + 1) / 2, (n + 1) / 2]
    w.wcs.cdelt = [-pixel_deg, pixel_deg]
    yy, xx = np.mgrid[0:n, 0:n]
    ra, dec = w.pixel_to_world_values(xx.ravel(), yy.ravel())
    centre = SkyCoord(*POINTING, unit="deg")
    sep = centre.separation(SkyCoord(ra, dec, unit="deg")).deg
    gain = primary_beam(sep, freq).reshape(n, n).astype(np.float32)
    header = w.to_header()
    header["BUNIT"] = ""
    header["COMMENT"] = f"streamdet {__version__} simulator primary beam at {freq} MHz"
    out = Path(path)
    with atomic_path(out, overwrite=overwrite) as tmp:
        fits.PrimaryHDU(gain, header=header).writeto(tmp, output_verify="silentfix")
    return out
