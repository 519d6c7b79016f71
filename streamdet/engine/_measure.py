"""Source characterisation on the image: forced photometry, and Gaussian fits of the
bright sources.

The network places and sizes its boxes well, but its flux and shape regressions are
coarse (a few 10^5 weights, grid cells of 4-8 px). Like the classical finders, the
engine then measures each source on the pixels themselves, vectorised over all the
detections of a window. Every source gets forced photometry: the peak of a Gaussian
with the network's shape convolved with the restoring beam, at the detection, by linear
least squares (the matched filter when the shape is right). From a peak of ``fit_snr``
times the local noise, a 2D elliptical Gaussian (peak, centre, covariance) is fitted by
Levenberg-Marquardt from that start (at lower signal-to-noise a free fit widens on the
noise and biases the flux up). Integrated flux is ``peak * sqrt(det C_obs / det C_beam)``
(Jy/beam -> Jy) and the intrinsic shape is ``C_obs - C_beam`` (deconvolution).

Conventions: pixel ``(i, j)`` is row ``y = i``, column ``x = j``; sizes are FWHM;
position angles are east of north with north along +y and east along -x (the SDC1 and
FITS convention for a RA axis with negative CDELT1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from ..errors import StreamdetValueError
from .detections import Detections

__all__ = [
    "MeasureConfig",
    "fit_amplitudes",
    "fit_gaussians",
    "local_background",
    "local_noise",
    "measure_sources",
    "shape_covariance",
    "shape_of",
]

_FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))
_PARAMS = ("flux", "bmaj", "bmin", "pa")
_APERTURE = 2.5                                   # fitted region, sigma of the start shape
_RADII = np.array([3, 4, 5, 7, 10, 14, 20])       # stamp half sides, px
_MAX_RADIUS = int(_RADII[-1])
_ITERATIONS = 6
_NOISE_HALF = 16                                  # local noise box half side, px
_NOISE_STEP = 4                                   # ... sampled every 4 px: 9 x 9 samples


def shape_covariance(fwhm_major: NDArray[np.float64], fwhm_minor: NDArray[np.float64],
                     pa_deg: NDArray[np.float64]) -> NDArray[np.float64]:
    """Pixel covariance matrices of elliptical Gaussians.

    Parameters
    ----------
    fwhm_major, fwhm_minor : (N,) float64, px
    pa_deg : (N,) float64, deg east of north

    Returns
    -------
    (N, 2, 2) float64
        Covariance in (x, y) pixel coordinates, px^2.
    """
    theta = np.deg2rad(np.asarray(pa_deg, np.float64))
    s_major = np.asarray(fwhm_major, np.float64) / _FWHM_PER_SIGMA
    s_minor = np.asarray(fwhm_minor, np.float64) / _FWHM_PER_SIGMA
    ux, uy = -np.sin(theta), np.cos(theta)          # major axis: north -> +y, east -> -x
    cov = np.empty((theta.size, 2, 2))
    cov[:, 0, 0] = s_major ** 2 * ux * ux + s_minor ** 2 * uy * uy
    cov[:, 1, 1] = s_major ** 2 * uy * uy + s_minor ** 2 * ux * ux
    cov[:, 0, 1] = cov[:, 1, 0] = (s_major ** 2 - s_minor ** 2) * ux * uy
    return cov


def shape_of(cov: NDArray[np.float64]
             ) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """FWHM major, minor (px) and PA (deg east of north, in [0, 180)) of covariances.

    Negative eigenvalues (a shape narrower than the beam after deconvolution) count
    as zero width.
    """
    w, v = np.linalg.eigh(np.asarray(cov, np.float64))   # ascending eigenvalues
    w = np.clip(w, 0.0, None)
    major = _FWHM_PER_SIGMA * np.sqrt(w[:, 1])
    minor = _FWHM_PER_SIGMA * np.sqrt(w[:, 0])
    pa = np.mod(np.rad2deg(np.arctan2(-v[:, 0, 1], v[:, 1, 1])), 180.0)
    return major, minor, pa


@dataclass(frozen=True)
class _Stamps:
    """The stamps of N sources, (N, P) each (fitted pixels first when compact).

    ``gx, gy``: pixel offsets from each stamp's central pixel ``(cx, cy)``; ``pix``: the
    data there (0 where not fitted); ``weight``: 1 where fitted (inside the image,
    finite, within the aperture of the starting shape); ``p0``: (N, 6) start parameters
    (peak by linear least squares, centre offsets, inverse covariance terms); ``unit``:
    (N,) the peak the same fit gives for data of ones on the same pixels (what a
    constant level adds to the peak, per unit level).
    """

    gx: NDArray[np.float64]
    gy: NDArray[np.float64]
    pix: NDArray[np.float64]
    weight: NDArray[np.float64]
    cx: NDArray[np.float64]
    cy: NDArray[np.float64]
    p0: NDArray[np.float64]
    unit: NDArray[np.float64]


def _box_samples(img: NDArray[np.floating], ix: NDArray[np.int64], iy: NDArray[np.int64],
                 off: NDArray[np.int64]) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
    """Pixels ``img[iy + dy, ix + dx]`` for every pair of offsets ``dy, dx`` in ``off``.

    Returns
    -------
    pix : (N, K^2) float64
        Row-major over the box (row offset slow, column offset fast); out-of-image
        samples hold the nearest edge pixel.
    inside : (N, K^2) bool
        The sample lies in ``img``.
    """
    ny, nx = img.shape
    n = len(ix)
    rows, cols = iy[:, None] + off[None, :], ix[:, None] + off[None, :]   # (N, K)
    inside = (((rows >= 0) & (rows < ny))[:, :, None]
              & ((cols >= 0) & (cols < nx))[:, None, :]).reshape(n, -1)
    flat = (rows.clip(0, ny - 1) * nx)[:, :, None] + cols.clip(0, nx - 1)[:, None, :]
    pix = np.asarray(img).ravel()[flat.reshape(n, -1)].astype(np.float64)
    return pix, inside


def _stamps(img: NDArray[np.floating], centres: NDArray[np.float64],
            cov0: NDArray[np.float64], *, origin: tuple[int, int], radius: int,
            aperture: float, compact: bool = True) -> _Stamps:
    """The stamps of N sources; ``compact``: fitted pixels first and the stamps cut to
    the largest fitted count (what an iterative fit pays for), else the whole squares."""
    n = centres.shape[0]
    off = np.arange(-radius, radius + 1)
    ix = np.rint(centres[:, 0]).astype(np.int64) - origin[1]
    iy = np.rint(centres[:, 1]).astype(np.int64) - origin[0]
    side = off.size
    pix, inside = _box_samples(img, ix, iy, off)
    valid = inside & np.isfinite(pix)
    pix = np.where(valid, pix, 0.0)
    # Coordinates relative to each stamp's central pixel keep the numbers small.
    cx = (ix + origin[1]).astype(np.float64)
    cy = (iy + origin[0]).astype(np.float64)
    gy = np.broadcast_to(np.repeat(off, side).astype(np.float64), (n, side * side))
    gx = np.broadcast_to(np.tile(off, side).astype(np.float64), (n, side * side))

    inv0 = np.linalg.inv(cov0)
    p = np.column_stack([np.zeros(n), centres[:, 0] - cx, centres[:, 1] - cy,
                         inv0[:, 0, 0], inv0[:, 0, 1], inv0[:, 1, 1]])
    dx, dy = gx - p[:, 1:2], gy - p[:, 2:3]
    q0 = p[:, 3:4] * dx * dx + 2.0 * p[:, 4:5] * dx * dy + p[:, 5:6] * dy * dy
    fitted = valid & (q0 <= aperture ** 2)
    if compact:
        # Fitted pixels first, the stamp cut to the largest fitted count: the square
        # corners outside the aperture cost nothing.
        order = np.argsort(~fitted, axis=1, kind="stable")
        order = order[:, :max(int(fitted.sum(axis=1).max()), 1)]
        gx, gy, q0, pix = (np.take_along_axis(a, order, axis=1) for a in (gx, gy, q0, pix))
        fitted = np.take_along_axis(fitted, order, axis=1)
    weight = fitted.astype(np.float64)
    pix = pix * weight
    e0 = np.exp(-0.5 * q0) * weight
    norm = np.maximum(np.einsum("np,np->n", e0, e0), 1e-300)
    p[:, 0] = np.einsum("np,np->n", e0, pix) / norm
    unit = np.einsum("np,np->n", e0, weight) / norm
    return _Stamps(gx=gx, gy=gy, pix=pix, weight=weight, cx=cx, cy=cy, p0=p, unit=unit)


def fit_amplitudes(data: NDArray[np.floating], centres: NDArray[np.float64],
                   cov: NDArray[np.float64], *, origin: tuple[int, int] = (0, 0),
                   radius: int = 7, aperture: float = 2.5
                   ) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
    """Forced photometry: the peak of a Gaussian of known shape and centre per source.

    The linear least-squares amplitude over the pixels of a ``(2 radius + 1)^2``
    stamp that lie within ``aperture`` sigma of the shape (the matched-filter estimate
    in white noise when the shape is right); pixels outside ``data`` or not finite are
    left out.

    Parameters
    ----------
    data : (ny, nx) float array, Jy/beam
        ``data[i, j]`` is image pixel ``(origin[0] + i, origin[1] + j)``.
    centres : (N, 2) float64
        Centres ``(x, y)``, image px.
    cov : (N, 2, 2) float64
        Observed (beam-convolved) covariances, px^2.
    origin, radius, aperture
        As in :func:`fit_gaussians`.

    Returns
    -------
    peak : (N,) float64, Jy/beam
    ok : (N,) bool
        Finite, with at least 7 pixels fitted.
    """
    peak, ok, _ = _amplitudes_and_unit(data, centres, cov, origin=origin, radius=radius,
                                       aperture=aperture)
    return peak, ok


def _amplitudes_and_unit(data: NDArray[np.floating], centres: NDArray[np.float64],
                         cov: NDArray[np.float64], *, origin: tuple[int, int], radius: int,
                         aperture: float
                         ) -> tuple[NDArray[np.float64], NDArray[np.bool_], NDArray[np.float64]]:
    """:func:`fit_amplitudes`, and the peak the same fit gives for data of ones on the
    same pixels, (N,) (the least-squares peak is linear in the data: a constant level
    adds that times the level), from one cut of the stamps."""
    centres = np.asarray(centres, np.float64).reshape(-1, 2)
    if centres.shape[0] == 0:
        return np.zeros(0), np.zeros(0, np.bool_), np.zeros(0)
    st = _stamps(np.asarray(data), centres, cov, origin=origin, radius=radius,
                 aperture=aperture, compact=False)
    peak = st.p0[:, 0]
    return peak, np.isfinite(peak) & (st.weight.sum(axis=1) >= 7), st.unit


def fit_gaussians(data: NDArray[np.floating], centres: NDArray[np.float64],
                  cov0: NDArray[np.float64], *, origin: tuple[int, int] = (0, 0),
                  radius: int = 7, aperture: float = 2.5, iterations: int = 8
                  ) -> tuple[NDArray[np.float64], NDArray[np.float64],
                             NDArray[np.float64], NDArray[np.bool_]]:
    """Fit one elliptical Gaussian per source (Levenberg-Marquardt, all sources at once).

    Each fit uses the pixels of a ``(2 radius + 1)^2`` stamp around the source that lie
    within ``aperture`` sigma of the starting shape; pixels outside ``data`` or not
    finite are left out.

    Parameters
    ----------
    data : (ny, nx) float array, Jy/beam
        Image pixels; ``data[i, j]`` is image pixel ``(origin[0] + i, origin[1] + j)``.
    centres : (N, 2) float64
        Starting centres ``(x, y)``, image px.
    cov0 : (N, 2, 2) float64
        Starting (observed, beam-convolved) covariances, px^2.
    origin : (int, int)
        ``(y0, x0)`` image pixel of ``data[0, 0]``.
    radius : int
        Half side of the fitting stamp, px.
    aperture : float
        Radius of the fitted region in units of the starting shape's sigma.
    iterations : int
        Levenberg-Marquardt steps.

    Returns
    -------
    peak : (N,) float64, Jy/beam
    centres : (N, 2) float64, image px
    cov : (N, 2, 2) float64, px^2 (observed)
    ok : (N,) bool
        The fit converged to a positive peak and a positive-definite shape.
    """
    centres = np.asarray(centres, np.float64).reshape(-1, 2)
    n = centres.shape[0]
    if n == 0:
        return np.zeros(0), np.zeros((0, 2)), np.zeros((0, 2, 2)), np.zeros(0, np.bool_)
    st = _stamps(np.asarray(data), centres, cov0, origin=origin, radius=radius,
                 aperture=aperture)
    gx, gy, pix, weight, cx, cy = st.gx, st.gy, st.pix, st.weight, st.cx, st.cy
    p = st.p0.copy()

    def evaluate(p: NDArray[np.float64]) -> tuple[NDArray[np.float64], ...]:
        """Residuals and the terms of the Jacobian; every term outside the fitted region
        is zero through the masked exponential ``e``."""
        dx, dy = gx - p[:, 1:2], gy - p[:, 2:3]
        u = p[:, 3:4] * dx + p[:, 4:5] * dy           # (C^-1 d)_x
        v = p[:, 4:5] * dx + p[:, 5:6] * dy           # (C^-1 d)_y
        e = dx * u
        e += dy * v
        e *= -0.5
        np.exp(e, out=e)
        e *= weight
        resid = pix - p[:, 0:1] * e
        return resid, e, dx, dy, u, v, np.einsum("np,np->n", resid, resid)

    state = list(evaluate(p))
    chi2 = state.pop()
    damping = np.full(n, 1e-3)
    eye = np.eye(6)
    jac = np.empty((n, 6, gx.shape[1]))
    for _ in range(iterations):
        resid, e, dx, dy, u, v = state
        ae = p[:, 0:1] * e
        jac[:, 0] = e
        np.multiply(ae, u, out=jac[:, 1])
        np.multiply(ae, v, out=jac[:, 2])
        ae *= -0.5
        np.multiply(ae, dx, out=jac[:, 4])             # -ae dx / 2: the d/dC^-1_xx term...
        np.multiply(jac[:, 4], dx, out=jac[:, 3])
        np.multiply(ae, dy, out=jac[:, 5])
        np.multiply(jac[:, 5], dy, out=jac[:, 5])
        np.multiply(jac[:, 4], dy, out=jac[:, 4])      # ... and the cross term, -ae dx dy
        jac[:, 4] *= 2.0
        hess = np.matmul(jac, jac.transpose(0, 2, 1))
        grad = np.matmul(jac, resid[:, :, None])
        diag = np.diagonal(hess, axis1=1, axis2=2)
        # J J^T is positive semi-definite; with every diagonal term positive, the
        # damped matrix is positive definite and the step exists.
        good = np.all(diag > 0, axis=1) & np.all(np.isfinite(hess), axis=(1, 2))
        lhs = hess + damping[:, None, None] * diag[:, :, None] * eye
        step = np.zeros((n, 6))
        if good.any():
            step[good] = np.linalg.solve(lhs[good], grad[good])[:, :, 0]
        trial = p + step
        legal = ((trial[:, 3] > 0) & (trial[:, 5] > 0)
                 & (trial[:, 3] * trial[:, 5] > trial[:, 4] ** 2)
                 & np.all(np.isfinite(trial), axis=1) & good)
        trial = np.where(legal[:, None], trial, p)
        t_state = list(evaluate(trial))
        t_chi2 = t_state.pop()
        better = legal & (t_chi2 < chi2)
        p = np.where(better[:, None], trial, p)
        keep = better[:, None]
        for now, tried in zip(state, t_state, strict=True):
            np.copyto(now, tried, where=keep)
        chi2 = np.where(better, t_chi2, chi2)
        damping = np.where(better, damping * 0.3, damping * 10.0)
    p[:, 1] += cx
    p[:, 2] += cy
    inv = np.empty((n, 2, 2))
    inv[:, 0, 0], inv[:, 1, 1] = p[:, 3], p[:, 5]
    inv[:, 0, 1] = inv[:, 1, 0] = p[:, 4]
    ok = ((p[:, 0] > 0) & (p[:, 3] > 0) & (p[:, 5] > 0) & (p[:, 3] * p[:, 5] > p[:, 4] ** 2)
          & np.all(np.isfinite(p), axis=1) & (weight.sum(axis=1) >= 7))
    cov = np.where(ok[:, None, None], np.linalg.inv(np.where(ok[:, None, None], inv, eye[:2, :2])),
                   cov0)
    return p[:, 0], p[:, 1:3].copy(), cov, ok


def local_noise(data: NDArray[np.floating], centres: NDArray[np.float64], *,
                origin: tuple[int, int] = (0, 0), half: int = _NOISE_HALF,
                step: int = _NOISE_STEP) -> NDArray[np.float64]:
    """Robust noise around each source: 1.4826 x the median absolute deviation of the
    pixels on a ``step`` px grid in a ``(2 half + 1)^2`` box centred on it.

    Depends only on the pixels around each source (not on the window the source was
    found in), so that measurements are the same whatever the chunking; the source
    itself covers a few of the samples, which the median ignores.

    Parameters
    ----------
    data : (ny, nx) float array, Jy/beam
        ``data[i, j]`` is image pixel ``(origin[0] + i, origin[1] + j)``.
    centres : (N, 2) float64
        ``(x, y)``, image px.

    Returns
    -------
    (N,) float64
        Jy/beam; NaN where no sample is finite.
    """
    return local_background(data, centres, origin=origin, half=half, step=step)[1]


def local_background(data: NDArray[np.floating], centres: NDArray[np.float64], *,
                     origin: tuple[int, int] = (0, 0), half: int = _NOISE_HALF,
                     step: int = _NOISE_STEP
                     ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Median and robust noise (:func:`local_noise`) of the same samples around each source.

    Returns
    -------
    level, noise : (N,) float64
        Jy/beam; NaN where no sample is finite.
    """
    img = np.asarray(data)
    n = len(centres)
    if n == 0:
        return np.zeros(0), np.zeros(0)
    off = np.arange(-half, half + 1, step)
    ix = np.rint(centres[:, 0]).astype(np.int64) - origin[1]
    iy = np.rint(centres[:, 1]).astype(np.int64) - origin[0]
    sample, inside = _box_samples(img, ix, iy, off)
    if not inside.all():
        sample[~inside] = np.nan
    med = _row_medians(sample)
    noise: NDArray[np.float64] = 1.4826 * _row_medians(np.abs(sample - med[:, None]))
    return med, noise


def _row_medians(a: NDArray[np.float64]) -> NDArray[np.float64]:
    """Median of the finite values of each row (NaN for none): one sort, NaNs last."""
    a = np.sort(a, axis=1)
    k = np.isfinite(a).sum(axis=1)
    rows = np.arange(a.shape[0])
    lo, hi = a[rows, np.maximum(k - 1, 0) // 2], a[rows, np.minimum(k // 2, a.shape[1] - 1)]
    return np.where(k > 0, 0.5 * (lo + hi), np.nan)


@dataclass(frozen=True)
class MeasureConfig:
    """How detections are measured on the image (see :func:`measure_sources`).

    Attributes
    ----------
    beam_px : (float, float, float)
        Restoring beam FWHM major, minor (px) and PA (deg).
    pixel_scale_arcsec : float
        Pixel size, arcsec.
    bmin_resolved, bmaj_resolved : float
        Fitted axes replace the network's from these fractions of the beam's.
    fit_snr : float or None
        Peak signal-to-noise from which a source's shape is fitted; None: never.
    background : bool
        Forced photometry above the local median (:func:`local_background`).
    flux_scale : float
        The map's flux per unit of sky flux: measured fluxes are divided by it.
    """

    beam_px: tuple[float, float, float]
    pixel_scale_arcsec: float
    bmin_resolved: float = 0.5
    bmaj_resolved: float = 0.0
    fit_snr: float | None = 0.0
    background: bool = False
    flux_scale: float = 1.0

    def __call__(self, dets: Detections, data: NDArray[np.floating], *,
                 origin: tuple[int, int]) -> Detections:
        return measure_sources(dets, data, origin=origin, beam_px=self.beam_px,
                               pixel_scale_arcsec=self.pixel_scale_arcsec,
                               bmin_resolved=self.bmin_resolved,
                               bmaj_resolved=self.bmaj_resolved, fit_snr=self.fit_snr,
                               background=self.background, flux_scale=self.flux_scale)


def measure_sources(dets: Detections, data: NDArray[np.floating], *, origin: tuple[int, int],
                    beam_px: tuple[float, float, float], pixel_scale_arcsec: float,
                    bmin_resolved: float = 0.5, bmaj_resolved: float = 0.0,
                    fit_snr: float | None = 0.0, background: bool = False,
                    flux_scale: float = 1.0, max_shift: float = 1.5,
                    iterations: int = _ITERATIONS) -> Detections:
    """Measure flux (and, for the brighter sources, shape) of detections on the image.

    Every source gets forced photometry: the peak of a Gaussian with the network's
    shape convolved with the beam, fitted by linear least squares at the detection
    (:func:`fit_amplitudes`), times the shape's area in beams. A free elliptical
    Gaussian fit (:func:`fit_gaussians`) at low signal-to-noise widens on noise and
    biases the flux; where the peak reaches ``fit_snr`` times the noise around the
    source (:func:`local_noise`) the free fit replaces flux and PA, and the minor (major)
    axis where it is resolved: at least ``bmin_resolved`` (``bmaj_resolved``) times
    the beam's.

    Parameters
    ----------
    dets : Detections
        With parameters ``flux`` (Jy), ``bmaj``, ``bmin`` (arcsec, deconvolved FWHM) and
        ``pa`` (deg); other parameter sets are returned unchanged.
    data : (ny, nx) float array, Jy/beam
        Pixels around the detections; ``data[i, j]`` is image pixel
        ``(origin[0] + i, origin[1] + j)``.
    origin : (int, int)
        ``(y0, x0)`` image pixel of ``data[0, 0]``.
    beam_px : (float, float, float)
        Restoring beam FWHM major, minor (px) and PA (deg).
    pixel_scale_arcsec : float
        Pixel size, arcsec.
    bmin_resolved : float
        Smallest deconvolved minor axis, as a fraction of the beam's minor axis, that
        replaces the network's (0: always); a model's contract says which suits it.
    bmaj_resolved : float
        The same for the major axis, against the beam's major axis (default 0).
    fit_snr : float or None
        Peak signal-to-noise from which the free fit is used (0: every source, as
        before forced photometry existed; None: none, forced photometry only).
    background : bool
        Fit the forced peak above the median of the pixels around the source
        (:func:`local_background`) rather than above zero: an interferometric map's zero
        level lies below its sources (the real 560 MHz SDC1 map's median is -0.6 sigma),
        which biases a zero-based flux low by the level times the shape's area.
    flux_scale : float
        The map's flux per unit of sky flux (its flux calibration against the sky it
        shows; 1: calibrated): the measured fluxes are divided by it. The real SDC1
        560 MHz map carries ~0.92 of its truth's flux (``docs/calibration.md``).
    max_shift : float
        A fit whose centre moved farther than this (px) from the detection is taken to
        have locked onto a neighbour: the forced photometry is kept.
    iterations : int
        Levenberg-Marquardt steps of the free fit.

    Returns
    -------
    Detections
        Same boxes and scores; measured parameters where the photometry (fit)
        succeeded, the network's elsewhere.
    """
    if len(dets) == 0 or not set(_PARAMS) <= set(dets.param_names):
        return dets
    if fit_snr is not None and not (math.isfinite(fit_snr) and fit_snr >= 0):
        raise StreamdetValueError(f"fit_snr {fit_snr!r} must be a finite number >= 0 or None")
    if not (math.isfinite(flux_scale) and flux_scale > 0):
        raise StreamdetValueError(f"flux_scale {flux_scale!r} must be a finite number > 0")
    col = {name: dets.param_names.index(name) for name in _PARAMS}
    params = dets.params.astype(np.float64, copy=True)
    scale = float(pixel_scale_arcsec)
    beam = shape_covariance(np.array([beam_px[0]]), np.array([beam_px[1]]),
                            np.array([beam_px[2]]))[0]
    start_major = np.nan_to_num(params[:, col["bmaj"]] / scale, nan=0.0).clip(0.0, None)
    start_minor = np.nan_to_num(params[:, col["bmin"]] / scale, nan=0.0).clip(0.0, None)
    start_minor = np.minimum(start_minor, start_major)
    start = shape_covariance(start_major, start_minor,
                             np.nan_to_num(params[:, col["pa"]])) + beam
    # Stamps as small as each source allows: sources share a stamp size by classes.
    sigma = np.sqrt(np.linalg.eigvalsh(start)[:, 1])
    need = np.clip(np.ceil(_APERTURE * sigma), 3, _MAX_RADIUS).astype(np.int64)
    radius = _RADII[np.searchsorted(_RADII, need)]
    centres0 = dets.centers
    n = len(dets)
    forced, forced_ok, unit = np.zeros(n), np.zeros(n, np.bool_), np.zeros(n)
    classes = [(r, np.flatnonzero(radius == r)) for r in np.unique(radius).tolist()]
    for r, sel in classes:
        forced[sel], forced_ok[sel], unit[sel] = _amplitudes_and_unit(
            data, centres0[sel], start[sel], origin=origin, radius=r, aperture=_APERTURE)
    level = noise = None
    if background or (fit_snr is not None and fit_snr > 0):
        level, noise = local_background(data, centres0, origin=origin)
    if background:
        assert level is not None
        # the least-squares peak is linear in the data: a constant level adds it times
        # the peak fitted to data of ones on the same pixels
        forced = forced - np.nan_to_num(level) * unit
    forced_ok &= forced > 0
    area = np.sqrt(np.linalg.det(start) / np.linalg.det(beam))
    params[forced_ok, col["flux"]] = (forced * area)[forced_ok] / flux_scale
    if fit_snr is None:
        return _with_params(dets, params)
    fit = np.ones(n, np.bool_)
    if fit_snr > 0:
        assert noise is not None
        with np.errstate(invalid="ignore"):
            fit = forced_ok & ~(forced < fit_snr * noise)
    peak, centres, cov = np.zeros(n), centres0.copy(), start.copy()
    ok = np.zeros(n, np.bool_)
    for r, sel in classes:
        sel = sel[fit[sel]]
        if sel.size:
            peak[sel], centres[sel], cov[sel], ok[sel] = fit_gaussians(
                data, centres0[sel], start[sel], origin=origin, radius=r,
                aperture=_APERTURE, iterations=iterations)
    ok &= np.hypot(*(centres - centres0).T) <= max_shift
    intrinsic_major, intrinsic_minor, pa = shape_of(cov - beam)
    flux = peak * np.sqrt(np.linalg.det(cov) / np.linalg.det(beam))
    params[ok, col["flux"]] = flux[ok] / flux_scale
    major_ok = ok & (intrinsic_major >= bmaj_resolved * beam_px[0])
    params[major_ok, col["bmaj"]] = intrinsic_major[major_ok] * scale
    # A minor axis well under the beam's is hard to measure against the noise: there
    # the network's estimate (which has learnt the population) may be the better one.
    resolved = ok & (intrinsic_minor >= bmin_resolved * beam_px[1])
    params[resolved, col["bmin"]] = intrinsic_minor[resolved] * scale
    # where the network's major axis is kept it stays no smaller than the minor axis
    mixed = ok & ~major_ok
    params[mixed, col["bmaj"]] = np.maximum(params[mixed, col["bmaj"]], params[mixed, col["bmin"]])
    params[ok, col["pa"]] = pa[ok]
    return _with_params(dets, params)


def _with_params(dets: Detections, params: NDArray[np.float64]) -> Detections:
    """``dets`` with new parameter values, in the dtype of its own."""
    return Detections(boxes=dets.boxes, objectness=dets.objectness,
                      probability=dets.probability, prior=dets.prior,
                      params=params.astype(dets.params.dtype, copy=False),
                      param_names=dets.param_names, chunk=dets.chunk)
