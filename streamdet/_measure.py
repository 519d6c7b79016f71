"""Source characterisation on the image: an elliptical Gaussian fitted at each detection.

The network places and sizes its boxes well, but its flux and shape regressions are
coarse (a few 10^5 weights, grid cells of 4-8 px). Like the classical finders, the
engine then measures each source on the pixels themselves: a 2D elliptical Gaussian
(peak, centre, covariance) is fitted by Levenberg-Marquardt, vectorised over all the
detections of a window, starting from the network's position and shape convolved with
the restoring beam. Integrated flux is ``peak * sqrt(det C_obs / det C_beam)``
(Jy/beam -> Jy) and the intrinsic shape is ``C_obs - C_beam`` (deconvolution).

Conventions: pixel ``(i, j)`` is row ``y = i``, column ``x = j``; sizes are FWHM;
position angles are east of north with north along +y and east along -x (the SDC1 and
FITS convention for a RA axis with negative CDELT1).
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray

from .detections import Detections

__all__ = ["fit_gaussians", "measure_sources", "shape_covariance", "shape_of"]

_FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))
_PARAMS = ("flux", "bmaj", "bmin", "pa")
_APERTURE = 2.5                                   # fitted region, sigma of the start shape
_RADII = np.array([3, 4, 5, 7, 10, 14, 20])       # stamp half sides, px
_MAX_RADIUS = int(_RADII[-1])
_ITERATIONS = 6


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
    img = np.asarray(data)
    ny, nx = img.shape
    off = np.arange(-radius, radius + 1)
    ix = np.rint(centres[:, 0]).astype(np.int64) - origin[1]
    iy = np.rint(centres[:, 1]).astype(np.int64) - origin[0]
    yy = (iy[:, None] + off[None, :])[:, :, None] + np.zeros_like(off)[None, None, :]
    xx = (ix[:, None] + off[None, :])[:, None, :] + np.zeros_like(off)[None, :, None]
    yy, xx = yy.reshape(n, -1), xx.reshape(n, -1)           # (N, P) pixel rows, columns
    inside = (yy >= 0) & (yy < ny) & (xx >= 0) & (xx < nx)
    pix = img[np.clip(yy, 0, ny - 1), np.clip(xx, 0, nx - 1)].astype(np.float64)
    valid = inside & np.isfinite(pix)
    pix = np.where(valid, pix, 0.0)
    # Coordinates relative to each stamp's central pixel keep the numbers small.
    cx = (ix + origin[1]).astype(np.float64)
    cy = (iy + origin[0]).astype(np.float64)
    gx = (xx - ix[:, None]).astype(np.float64)
    gy = (yy - iy[:, None]).astype(np.float64)

    inv0 = np.linalg.inv(cov0)
    p = np.column_stack([np.zeros(n), centres[:, 0] - cx, centres[:, 1] - cy,
                         inv0[:, 0, 0], inv0[:, 0, 1], inv0[:, 1, 1]])
    dx, dy = gx - p[:, 1:2], gy - p[:, 2:3]
    q0 = p[:, 3:4] * dx * dx + 2.0 * p[:, 4:5] * dx * dy + p[:, 5:6] * dy * dy
    fitted = valid & (q0 <= aperture ** 2)
    # Fitted pixels first, the stamp cut to the largest fitted count: the square
    # corners outside the aperture cost nothing.
    order = np.argsort(~fitted, axis=1, kind="stable")[:, :max(int(fitted.sum(axis=1).max()), 1)]
    gx, gy, q0 = (np.take_along_axis(a, order, axis=1) for a in (gx, gy, q0))
    weight = np.take_along_axis(fitted, order, axis=1).astype(np.float64)
    pix = np.take_along_axis(pix, order, axis=1) * weight
    e0 = np.exp(-0.5 * q0) * weight
    p[:, 0] = np.einsum("np,np->n", e0, pix) / np.maximum(np.einsum("np,np->n", e0, e0), 1e-300)

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


def measure_sources(dets: Detections, data: NDArray[np.floating], *, origin: tuple[int, int],
                    beam_px: tuple[float, float, float], pixel_scale_arcsec: float,
                    bmin_resolved: float = 0.5, bmaj_resolved: float = 0.0,
                    max_shift: float = 1.5) -> Detections:
    """Replace the network's flux, bmaj, bmin and PA by a Gaussian fit on the image.

    The minor (major) axis is replaced only where it is resolved: at least
    ``bmin_resolved`` (``bmaj_resolved``) times the beam's.

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
    max_shift : float
        A fit whose centre moved farther than this (px) from the detection is taken to
        have locked onto a neighbour: the network's values are kept.

    Returns
    -------
    Detections
        Same boxes and scores; measured parameters where the fit succeeded.
    """
    if len(dets) == 0 or not set(_PARAMS) <= set(dets.param_names):
        return dets
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
    n = len(dets)
    peak, centres, cov = np.zeros(n), np.zeros((n, 2)), start.copy()
    ok = np.zeros(n, np.bool_)
    for r in np.unique(radius).tolist():
        sel = np.flatnonzero(radius == r)
        peak[sel], centres[sel], cov[sel], ok[sel] = fit_gaussians(
            data, dets.centers[sel], start[sel], origin=origin, radius=r, aperture=_APERTURE,
            iterations=_ITERATIONS)
    ok &= np.hypot(*(centres - dets.centers).T) <= max_shift
    intrinsic_major, intrinsic_minor, pa = shape_of(cov - beam)
    flux = peak * np.sqrt(np.linalg.det(cov) / np.linalg.det(beam))
    params[ok, col["flux"]] = flux[ok]
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
    return Detections(boxes=dets.boxes, objectness=dets.objectness,
                      probability=dets.probability, prior=dets.prior, params=params,
                      param_names=dets.param_names, chunk=dets.chunk)
