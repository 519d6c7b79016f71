"""Peer source finders (SEP, PyBDSF) and streamdet, run alike and converted to SDC1 alike.

Used by ``benchmarks/bench_quality.py``. Every finder runs in a fresh subprocess
(:func:`run_finder`) that reads the FITS image, finds sources and writes a raw
catalogue with the same columns for all finders:

``ra``, ``dec`` (deg), ``flux`` (Jy, *apparent*: not primary-beam corrected),
``bmaj``, ``bmin`` (deconvolved FWHM, arcsec), ``pa`` (deg east of north).

The parent then applies the *same* primary-beam correction to all of them
(:func:`pb_gain`, the simulator's own beam) and the *same* SDC1 conversion
(:func:`sdc1_catalogue`, i.e. :func:`streamdet.catalogue.outputs.to_sdc1` with its defaults:
size 2, class 3, core_frac 0.0375), so the finders differ only in what they find
and measure.

Conversions (:func:`moments_to_sky`, :func:`deconvolve`):

* SEP's second moments ``x2, y2, xy`` are those of the *filtered* image (SEP and
  SExtractor measure them on the detection image) over the pixels inside the
  detection isophote. Two exact corrections for a Gaussian: divide by the fraction
  of the second moment kept inside an isophote at ``thresh / cpeak``
  (:func:`truncation_factor`), then subtract the filter kernel's own moments
  (moments add under convolution). Without them the deconvolved sizes of sources
  smaller than the beam (most of SDC1) are mostly noise: the deconvolution
  amplifies any bias of the convolved size. The moments (px^2, pixel grid, y up)
  are then mapped to the local (north, east) frame with the WCS Jacobian at each
  source, so the RA axis direction (``CDELT1 < 0``) and any rotation are handled by
  the WCS, not by hand. FWHM = 2 sqrt(2 ln 2) sigma.
* Deconvolution of the restoring beam is the exact 2D Gaussian one: covariance of
  the source minus covariance of the beam (both in the north/east frame), then its
  axes and PA; negative axes are clipped to ``SIZE_FLOOR_ARCSEC``.
* SEP's flux is a Kron (``FLUX_AUTO``-like) sum in Jy/beam x px, divided by the beam
  area in px (2 pi sigma_maj sigma_min); sources with a small Kron ellipse use a
  circle of ``r_min_beams`` beam sigmas.
* PyBDSF's source list (``srl``) gives ``Total_flux`` (Jy), ``DC_Maj``,
  ``DC_Min`` (deconvolved FWHM, deg) and ``DC_PA`` (deg east of north) directly.

Run as a script (what :func:`run_finder` does)::

    python benchmarks/_peers.py FINDER IMAGE.fits OUT.ecsv '{"option": value}'

prints one JSON line ``{"seconds", "rss_mb", "n"}``: ``seconds`` from reading the
image to the raw catalogue in memory (imports and writing excluded), ``rss_mb`` the
peak resident memory of the process, imports included (or of its largest child, if
larger: PyBDSF may fork workers).
"""

from __future__ import annotations

import gc
import importlib
import json
import math
import os
import resource
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS
from numpy.typing import ArrayLike, NDArray

__all__ = [
    "FINDERS",
    "FWHM_PER_SIGMA",
    "SIZE_FLOOR_ARCSEC",
    "bdsf_catalogue",
    "beam_of",
    "deconvolve",
    "moments_to_sky",
    "pb_gain",
    "run_finder",
    "sdc1_catalogue",
    "sep_catalogue",
    "streamdet_catalogue",
    "truncation_factor",
]

#: FWHM of a Gaussian in units of its sigma.
FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))
#: Smallest size written (arcsec), for unresolved sources (the scorer divides by sizes).
SIZE_FLOOR_ARCSEC = 1e-3
#: The finders :func:`run_finder` knows.
FINDERS = ("sep", "bdsf", "streamdet")

# SEP's (and SExtractor's) default detection filter
_SEP_KERNEL = np.array([[1.0, 2.0, 1.0], [2.0, 4.0, 2.0], [1.0, 2.0, 1.0]], np.float32)
_RAW_COLUMNS = ("ra", "dec", "flux", "bmaj", "bmin", "pa")


# --------------------------------------------------------------------------- geometry

def pb_gain(ra: ArrayLike, dec: ArrayLike, *, freq: int) -> NDArray[np.float64]:
    """Primary-beam gain at sky positions: the simulator's own beam model.

    The gain by which :func:`streamdet.simulate` attenuated a source at (ra, dec):
    :func:`streamdet.sim._population.primary_beam` of the great-circle distance from the
    SDC1 pointing :data:`streamdet.sim._population.POINTING`.

    Parameters
    ----------
    ra, dec : (N,) array_like
        Degrees.
    freq : int
        Band, MHz.

    Returns
    -------
    (N,) float64
        Gain in (0, 1].
    """
    from astropy.coordinates import angular_separation

    from streamdet.sim._population import POINTING, primary_beam

    ra_r = np.radians(np.asarray(ra, np.float64))
    dec_r = np.radians(np.asarray(dec, np.float64))
    sep = np.degrees(angular_separation(ra_r, dec_r, math.radians(POINTING[0]),
                                        math.radians(POINTING[1])))
    return primary_beam(np.asarray(sep, np.float64), freq)


def _cov(fwhm_maj: NDArray[np.float64], fwhm_min: NDArray[np.float64],
         pa_deg: NDArray[np.float64]) -> tuple[NDArray[np.float64], NDArray[np.float64],
                                               NDArray[np.float64]]:
    """(nn, ee, ne) of the covariance (FWHM^2 units) of ellipses in the (north, east) frame."""
    t = np.radians(pa_deg)
    c, s = np.cos(t), np.sin(t)
    a2, b2 = fwhm_maj ** 2, fwhm_min ** 2
    return a2 * c * c + b2 * s * s, a2 * s * s + b2 * c * c, (a2 - b2) * s * c


def _axes(nn: NDArray[np.float64], ee: NDArray[np.float64], ne: NDArray[np.float64], *,
          floor: float) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """Axes (sqrt of eigenvalues, clipped at ``floor``) and PA (deg in [0, 180)) of (nn, ee, ne)."""
    half_sum = 0.5 * (nn + ee)
    radius = np.hypot(0.5 * (nn - ee), ne)
    big = np.sqrt(np.clip(half_sum + radius, floor ** 2, None))
    small = np.sqrt(np.clip(half_sum - radius, floor ** 2, None))
    pa = np.mod(np.degrees(0.5 * np.arctan2(2.0 * ne, nn - ee)), 180.0)
    pa[pa >= 180.0] = 0.0
    return big, small, pa


def deconvolve(bmaj: ArrayLike, bmin: ArrayLike, pa: ArrayLike, *,
               beam: tuple[float, float, float],
               floor: float = SIZE_FLOOR_ARCSEC
               ) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """Remove a Gaussian restoring beam from Gaussian source shapes.

    Covariances add under convolution, so the intrinsic covariance is the
    measured one minus the beam's (both in the north/east frame); its axes and
    orientation are the deconvolved FWHMs and PA. Axes whose variance comes out
    negative (unresolved along that axis) are set to ``floor``.

    Parameters
    ----------
    bmaj, bmin : (N,) array_like
        Measured (beam-convolved) FWHMs, arcsec.
    pa : (N,) array_like
        Measured PA of the major axis, deg east of north.
    beam : (float, float, float)
        Restoring beam (BMAJ, BMIN FWHM in arcsec; BPA in deg east of north).
    floor : float
        Smallest axis returned, arcsec.

    Returns
    -------
    bmaj, bmin, pa : (N,) float64
        Deconvolved FWHMs (arcsec, ``bmaj >= bmin >= floor``) and PA (deg in [0, 180)).
    """
    m = _cov(np.asarray(bmaj, np.float64), np.asarray(bmin, np.float64),
             np.asarray(pa, np.float64))
    b = _cov(np.array([beam[0]], np.float64), np.array([beam[1]], np.float64),
             np.array([beam[2]], np.float64))
    return _axes(m[0] - b[0], m[1] - b[1], m[2] - b[2], floor=floor)


def _jacobian(wcs: WCS, x: NDArray[np.float64], y: NDArray[np.float64]
              ) -> tuple[NDArray[np.float64], ...]:
    """d(north, east)/d(x, y) in arcsec per pixel at 0-based pixel positions (x, y).

    Returns ``(n_x, n_y, e_x, e_y)`` with e.g. ``e_x`` = arcsec east per pixel along +x.
    """
    h = 0.5
    _, dec0 = wcs.wcs_pix2world(x, y, 0)

    def step(dx: float, dy: float) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        r1, d1 = wcs.wcs_pix2world(x + dx, y + dy, 0)
        r2, d2 = wcs.wcs_pix2world(x - dx, y - dy, 0)
        dra = np.mod(r1 - r2 + 180.0, 360.0) - 180.0
        north = (d1 - d2) * 3600.0 / (2.0 * h)
        east = dra * np.cos(np.radians(dec0)) * 3600.0 / (2.0 * h)
        return np.asarray(north, np.float64), np.asarray(east, np.float64)

    n_x, e_x = step(h, 0.0)
    n_y, e_y = step(0.0, h)
    return n_x, n_y, e_x, e_y


def moments_to_sky(wcs: WCS, x: ArrayLike, y: ArrayLike, x2: ArrayLike, y2: ArrayLike,
                   xy: ArrayLike) -> tuple[NDArray[np.float64], NDArray[np.float64],
                                           NDArray[np.float64]]:
    """Second moments on the pixel grid to Gaussian FWHMs and PA on the sky.

    Parameters
    ----------
    wcs : astropy.wcs.WCS
        Two-axis celestial WCS of the image (0-based pixels, ``x`` the first axis).
    x, y : (N,) array_like
        Source positions, 0-based px.
    x2, y2, xy : (N,) array_like
        Second central moments, px^2 (SEP's ``x2``, ``y2``, ``xy``).

    Returns
    -------
    bmaj, bmin : (N,) float64
        FWHM along the axes, arcsec (2 sqrt(2 ln 2) x sqrt of the eigenvalues).
    pa : (N,) float64
        PA of the major axis, deg east of north, in [0, 180).
    """
    xa = np.asarray(x, np.float64)
    ya = np.asarray(y, np.float64)
    sxx, syy, sxy = (np.asarray(v, np.float64) for v in (x2, y2, xy))
    n_x, n_y, e_x, e_y = _jacobian(wcs, xa, ya)
    # Sigma_sky = J Sigma_pix J^T with J = [[n_x, n_y], [e_x, e_y]]
    nn = n_x * n_x * sxx + 2.0 * n_x * n_y * sxy + n_y * n_y * syy
    ee = e_x * e_x * sxx + 2.0 * e_x * e_y * sxy + e_y * e_y * syy
    ne = n_x * e_x * sxx + (n_x * e_y + n_y * e_x) * sxy + n_y * e_y * syy
    f2 = FWHM_PER_SIGMA ** 2
    return _axes(f2 * nn, f2 * ee, f2 * ne, floor=0.0)


def truncation_factor(peak_over_level: ArrayLike) -> NDArray[np.float64]:
    """Fraction of a Gaussian's second moment kept inside one of its isophotes.

    For a 2D Gaussian (any ellipticity) cut at the isophote where the profile is
    ``1 / r`` of its peak, the second moment of the pixels inside, along any axis,
    is ``sigma^2 [1 - (1 + U) e^-U] / (1 - e^-U)`` with ``U = ln r``.

    Parameters
    ----------
    peak_over_level : (N,) array_like
        Peak over isophote level (values <= 1 give the U -> 0 limit, 1/2).

    Returns
    -------
    (N,) float64
        Factor in [1/2, 1); divide measured second moments by it.
    """
    u = np.log(np.clip(np.asarray(peak_over_level, np.float64), 1.0 + 1e-6, None))
    e = np.exp(-u)
    return np.asarray((1.0 - (1.0 + u) * e) / (1.0 - e), np.float64)


def _kernel_moments(kernel: NDArray[np.float32]) -> tuple[float, float, float]:
    """Second central moments (x2, y2, xy; px^2) of a filter kernel indexed [y, x]."""
    w = np.asarray(kernel, np.float64)
    w = w / w.sum()
    yy, xx = np.mgrid[0:w.shape[0], 0:w.shape[1]].astype(np.float64)
    mx, my = float((w * xx).sum()), float((w * yy).sum())
    return (float((w * (xx - mx) ** 2).sum()), float((w * (yy - my) ** 2).sum()),
            float((w * (xx - mx) * (yy - my)).sum()))


def _beam_pixel_cov(wcs: WCS, beam: tuple[float, float, float],
                    at: tuple[float, float]) -> NDArray[np.float64]:
    """(2, 2) covariance (sigma^2, px^2, order x, y) of the restoring beam at pixel ``at``."""
    nn, ee, ne = _cov(np.array([beam[0]]), np.array([beam[1]]), np.array([beam[2]]))
    sky = np.array([[nn[0], ne[0]], [ne[0], ee[0]]]) / FWHM_PER_SIGMA ** 2
    n_x, n_y, e_x, e_y = _jacobian(wcs, np.array([at[0]]), np.array([at[1]]))
    jac = np.array([[n_x[0], n_y[0]], [e_x[0], e_y[0]]])
    jinv = np.linalg.inv(jac)
    return np.asarray(jinv @ sky @ jinv.T, np.float64)


def beam_of(header: fits.Header) -> tuple[float, float, float]:
    """Restoring beam (BMAJ, BMIN in arcsec; BPA in deg) from a FITS header."""
    try:
        return (float(header["BMAJ"]) * 3600.0, float(header["BMIN"]) * 3600.0,
                float(header.get("BPA", 0.0)))
    except KeyError:
        raise ValueError("the image header has no BMAJ/BMIN restoring beam") from None


def _raw_table(ra: ArrayLike, dec: ArrayLike, flux: ArrayLike, bmaj: ArrayLike,
               bmin: ArrayLike, pa: ArrayLike) -> Table:
    t = Table()
    for name, values in zip(_RAW_COLUMNS, (ra, dec, flux, bmaj, bmin, pa), strict=True):
        t[name] = np.asarray(values, np.float64)
    t["ra"] = np.mod(t["ra"], 360.0)
    return t


# --------------------------------------------------------------------------- finders

def _read_image(path: str | os.PathLike[str]) -> tuple[NDArray[np.float32], WCS, fits.Header]:
    with fits.open(path, memmap=False) as hdul:
        header = hdul[0].header
        data = np.asarray(hdul[0].data)
    data = np.ascontiguousarray(data.reshape(data.shape[-2:]), dtype=np.float32)
    return data, WCS(header).celestial, header


def sep_catalogue(path: str | os.PathLike[str], *, thresh: float = 3.0, minarea: int = 5,
                  back_size: int = 64, deblend_cont: float = 0.005, kron_fact: float = 2.5,
                  r_min_beams: float = 3.0, filter_beam: bool = False,
                  truncation: bool = True) -> Table:
    """Find and measure sources with SEP (Source Extractor as a library).

    Background and rms from :class:`sep.Background` (``back_size`` px meshes, 3x3
    median filter); detection at ``thresh`` x the global rms, with SEP's default 3x3
    filter (``filter_beam=True``: a matched filter, the restoring beam, which found
    fewer sources here: the image is already beam-convolved); flux in a Kron ellipse
    of ``kron_fact`` Kron radii (a circle of ``r_min_beams`` beam sigmas where that
    ellipse is smaller); shapes from the isophotal second moments (see the module
    docstring), deconvolved.

    Parameters
    ----------
    path : path
        FITS image in Jy/beam with a celestial WCS and BMAJ/BMIN.
    thresh : float
        Detection threshold, in units of the global background rms.
    minarea : int
        Minimum number of connected pixels (the 560 and 1400 MHz beams cover ~7 px).
    back_size : int
        Background mesh, px.
    deblend_cont : float
        SEP's deblending contrast.
    kron_fact : float
        Kron aperture in Kron radii.
    r_min_beams : float
        Smallest aperture radius, in beam sigmas.
    filter_beam : bool
        Filter with the restoring beam before thresholding.
    truncation : bool
        Correct the isophotal moments for the isophote cut (:func:`truncation_factor`).

    Returns
    -------
    astropy.table.Table
        Raw catalogue (``ra dec flux bmaj bmin pa``; apparent flux in Jy).
    """
    import sep

    data, wcs, header = _read_image(path)
    beam = beam_of(header)
    ny, nx = data.shape
    cov = _beam_pixel_cov(wcs, beam, (0.5 * (nx - 1), 0.5 * (ny - 1)))   # sigma^2, px^2
    sig_area = math.sqrt(float(np.linalg.det(cov)))                     # sigma_maj sigma_min
    bkg = sep.Background(data, bw=back_size, bh=back_size, fw=3, fh=3)
    bkg.subfrom(data)
    rms = float(bkg.globalrms)
    kernel = _SEP_KERNEL
    if filter_beam:
        half = math.ceil(3.0 * math.sqrt(float(np.max(np.linalg.eigvalsh(cov)))))
        r = np.arange(-half, half + 1, dtype=np.float64)
        yy, xx = np.meshgrid(r, r, indexing="ij")
        inv = np.linalg.inv(cov)
        q = inv[0, 0] * xx * xx + 2.0 * inv[0, 1] * xx * yy + inv[1, 1] * yy * yy
        kernel = np.exp(-0.5 * q).astype(np.float32)
    sep.set_extract_pixstack(max(300_000, data.size // 4))
    sep.set_sub_object_limit(4096)
    objs = sep.extract(data, thresh, err=rms, minarea=minarea, deblend_cont=deblend_cont,
                       filter_kernel=kernel)
    x = objs["x"].astype(np.float64)
    y = objs["y"].astype(np.float64)
    a = np.maximum(objs["a"].astype(np.float64), 0.5)
    b = np.maximum(objs["b"].astype(np.float64), 0.5)
    # float32 theta can round past pi/2, which SEP's aperture functions refuse
    theta = np.clip(objs["theta"].astype(np.float64), -0.5 * math.pi, 0.5 * math.pi)
    kron, _ = sep.kron_radius(data, x, y, a, b, theta, 6.0)
    kron = np.where(np.isfinite(kron) & (kron > 0), kron, 0.0)
    flux, _, _ = sep.sum_ellipse(data, x, y, a, b, theta, kron_fact * np.maximum(kron, 1.0),
                                 subpix=1)
    r_min = r_min_beams * math.sqrt(sig_area)
    small = kron_fact * kron * np.sqrt(a * b) < r_min
    if small.any():
        cflux, _, _ = sep.sum_circle(data, x[small], y[small], r_min, subpix=1)
        flux[small] = cflux
    flux = np.asarray(flux, np.float64) / (2.0 * math.pi * sig_area)
    # SEP measures the moments on the filtered image: undo the isophote cut (optional)
    # and the kernel's own covariance (moments add under convolution)
    x2, y2, xy = (objs[k].astype(np.float64) for k in ("x2", "y2", "xy"))
    if truncation:
        level = np.maximum(np.asarray(objs["thresh"], np.float64), 1e-30)
        frac = truncation_factor(np.asarray(objs["cpeak"], np.float64) / level)
        x2, y2, xy = x2 / frac, y2 / frac, xy / frac
    kx2, ky2, kxy = _kernel_moments(kernel)
    x2, y2, xy = x2 - kx2, y2 - ky2, xy - kxy
    cmaj, cmin, cpa = moments_to_sky(wcs, x, y, x2, y2, xy)
    dmaj, dmin, dpa = deconvolve(cmaj, cmin, cpa, beam=beam)
    ra, dec = wcs.wcs_pix2world(x, y, 0)
    return _raw_table(ra, dec, flux, dmaj, dmin, dpa)


def bdsf_catalogue(path: str | os.PathLike[str], *, thresh_isl: float = 3.0,
                   thresh_pix: float = 5.0, workdir: str | os.PathLike[str] | None = None,
                   ncores: int = 2) -> Table:
    """Find and measure sources with PyBDSF (Gaussian fitting, source list ``srl``).

    ``bdsf.process_image`` with the image's frequency (CRVAL3, Hz), islands at
    ``thresh_isl`` sigma, peaks at ``thresh_pix`` sigma; the source list gives
    ``RA``, ``DEC`` (deg), ``Total_flux`` (Jy), ``DC_Maj``, ``DC_Min`` (deconvolved
    FWHM, deg; 0 when unresolved, floored at :data:`SIZE_FLOOR_ARCSEC`), ``DC_PA``
    (deg east of north).

    Parameters
    ----------
    path : path
        FITS image.
    thresh_isl, thresh_pix : float
        PyBDSF's island and peak thresholds (sigma).
    workdir : path, optional
        Where PyBDSF writes its log and the source list; default: next to the image.
    ncores : int
        Processes PyBDSF may use.

    Returns
    -------
    astropy.table.Table
        Raw catalogue (``ra dec flux bmaj bmin pa``; apparent flux in Jy).
    """
    import bdsf

    header = fits.getheader(path)
    freq_hz = None
    for k in range(1, int(header.get("NAXIS", 0)) + 1):
        if str(header.get(f"CTYPE{k}", "")).upper().startswith("FREQ"):
            freq_hz = float(header[f"CRVAL{k}"])
    wd = Path(workdir) if workdir is not None else Path(path).parent
    srl = wd / (Path(path).stem + f".bdsf_{thresh_isl:g}_{thresh_pix:g}.srl.fits")
    with warnings.catch_warnings():
        # PyBDSF leaves the FITS file open; it is closed (with a ResourceWarning) when
        # its image object is collected, here, where that warning is expected
        warnings.simplefilter("ignore", ResourceWarning)
        # a header without BPA (the real SDC1 images): PyBDSF needs the beam given
        beam = (None if "BPA" in header else
                (float(header["BMAJ"]), float(header["BMIN"]), 0.0))
        img = bdsf.process_image(str(path), frequency=freq_hz, thresh_isl=thresh_isl,
                                 thresh_pix=thresh_pix, quiet=True, ncores=ncores,
                                 beam=beam)
        img.write_catalog(outfile=str(srl), format="fits", catalog_type="srl", clobber=True)
        del img
        gc.collect()
    if not srl.exists():      # PyBDSF writes nothing when it finds nothing
        return _raw_table([], [], [], [], [], [])
    t = Table.read(srl, format="fits")
    floor = SIZE_FLOOR_ARCSEC
    maj = np.maximum(np.asarray(t["DC_Maj"], np.float64) * 3600.0, floor)
    mn = np.maximum(np.asarray(t["DC_Min"], np.float64) * 3600.0, floor)
    return _raw_table(t["RA"], t["DEC"], t["Total_flux"], np.maximum(maj, mn),
                      np.minimum(maj, mn), np.mod(np.asarray(t["DC_PA"], np.float64), 180.0))


def streamdet_catalogue(path: str | os.PathLike[str], *, model: str | None = None,
                        threshold: str | float | None = None, threads: int = 2) -> Table:
    """Run :func:`streamdet.detect` on the FITS image (streamed), no primary-beam correction.

    Returns
    -------
    astropy.table.Table
        Raw catalogue (``ra dec flux bmaj bmin pa``; apparent flux in Jy; sizes as
        the model predicts them).
    """
    import streamdet
    from streamdet.catalogue.outputs import _ellipse

    table = streamdet.detect(path, model=model, threshold=threshold, threads=threads,
                             quiet=True)
    flux = np.asarray(table["flux"].quantity.to_value("Jy") if table["flux"].unit
                      else table["flux"], np.float64)
    bmaj, bmin, pa = _ellipse(table)
    return _raw_table(table["ra"], table["dec"], flux, bmaj, bmin, pa)


_RUNNERS: dict[str, Callable[..., Table]] = {
    "sep": sep_catalogue, "bdsf": bdsf_catalogue, "streamdet": streamdet_catalogue}


# --------------------------------------------------------------------------- conversion

def sdc1_catalogue(raw: Table, *, freq: int) -> Table:
    """Primary-beam correct a raw catalogue and reduce it to the SDC1 columns.

    Fluxes are divided by :func:`pb_gain` at each source; the SDC1 table is made by
    :func:`streamdet.catalogue.outputs.to_sdc1` with its defaults (the same for every finder).

    Parameters
    ----------
    raw : astropy.table.Table
        ``ra dec flux bmaj bmin pa`` (deg, deg, apparent Jy, arcsec, arcsec, deg).
    freq : int
        Band, MHz.

    Returns
    -------
    astropy.table.Table
        SDC1 columns; rows with non-finite values dropped.
    """

    from streamdet.catalogue.outputs import CatalogueWarning, to_sdc1

    t = Table()
    for name in _RAW_COLUMNS:
        t[name] = np.asarray(raw[name], np.float64)
    t["flux"] = t["flux"] / pb_gain(t["ra"], t["dec"], freq=freq)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CatalogueWarning)   # non-finite rows: dropped
        return to_sdc1(t)


# --------------------------------------------------------------------------- subprocess

def _peak_rss_mb() -> float:
    """Peak RSS (MB) of this process, or of its largest finished child if larger.

    ``VmHWM`` of ``/proc/self/status`` (the peak of the current address space), not
    ``getrusage(RUSAGE_SELF)``: Linux carries the pre-``exec`` peak (the parent's size
    at fork) into the latter, so a child of a big parent would report the parent's size.
    """
    own = float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)   # KiB; fallback
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    own = float(line.split()[1])
                    break
    except OSError:
        pass
    kids = float(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
    return max(own, kids) / 1024.0


def run_finder(finder: str, image: str | os.PathLike[str], out: str | os.PathLike[str],
               options: Mapping[str, Any] | None = None,
               timeout: float | None = None) -> dict[str, float]:
    """Run one finder in a fresh Python process; write its raw catalogue (ECSV) to ``out``.

    Parameters
    ----------
    finder : {"sep", "bdsf", "streamdet"}
        Which finder.
    image : path
        FITS image.
    out : path
        Raw catalogue to write (ECSV, overwritten).
    options : mapping, optional
        Keyword arguments of the finder's function (JSON-serialisable).
    timeout : float, optional
        Seconds before the child is killed.

    Returns
    -------
    dict
        ``seconds`` (finding, in the child), ``rss_mb`` (peak RSS of the child), ``n``.

    Raises
    ------
    RuntimeError
        The child failed (its stderr tail in the message).
    """
    if finder not in FINDERS:
        raise ValueError(f"finder must be one of {FINDERS}, got {finder!r}")
    cmd = [sys.executable, str(Path(__file__).resolve()), finder, str(image), str(out),
           json.dumps(dict(options or {}))]
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env,
                          check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{finder} failed (exit {proc.returncode}): "
                           f"{proc.stderr.strip()[-2000:]}")
    result: dict[str, float] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def _main(argv: list[str]) -> None:
    finder, image, out, opts = argv[0], argv[1], argv[2], json.loads(argv[3])
    if finder == "bdsf":
        opts.setdefault("workdir", str(Path(out).parent))
    importlib.import_module(finder)    # imports are not timed
    t0 = time.perf_counter()
    raw = _RUNNERS[finder](image, **opts)
    seconds = time.perf_counter() - t0
    raw.write(out, format="ascii.ecsv", overwrite=True)
    print(json.dumps({"seconds": seconds, "rss_mb": _peak_rss_mb(), "n": len(raw)}))


if __name__ == "__main__":
    _main(sys.argv[1:])
