"""Gaussian fits on the image: against scipy's least squares and known sources."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import least_squares

from streamdet.engine._measure import (
    fit_amplitudes,
    fit_gaussians,
    local_noise,
    measure_sources,
    shape_covariance,
    shape_of,
)
from streamdet.engine.detections import Detections
from streamdet.errors import StreamdetValueError

NAMES = ("flux", "bmaj", "bmin", "pa")
BEAM_PX = (2.5, 2.5, 0.0)
SCALE = 0.6  # arcsec / px


def _render(shape: tuple[int, int], centres: np.ndarray, peaks: np.ndarray,
            covs: np.ndarray) -> np.ndarray:
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]].astype(np.float64)
    img = np.zeros(shape)
    for (x, y), a, c in zip(centres, peaks, covs, strict=True):
        inv = np.linalg.inv(c)
        dx, dy = xx - x, yy - y
        img += a * np.exp(-0.5 * (inv[0, 0] * dx * dx + 2 * inv[0, 1] * dx * dy
                                  + inv[1, 1] * dy * dy))
    return img


def _grid_sources(n_side: int, rng: np.random.Generator, spacing: int = 24
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    g = (np.arange(n_side) + 1) * spacing
    centres = np.array([(x, y) for y in g for x in g], np.float64)
    centres += rng.uniform(-0.5, 0.5, centres.shape)
    n = len(centres)
    major = rng.uniform(2.6, 6.0, n)
    covs = shape_covariance(major, major * rng.uniform(0.5, 1.0, n), rng.uniform(0, 180, n))
    return centres, rng.uniform(1.0, 5.0, n), covs


def test_shape_covariance_round_trip_and_pa_convention() -> None:
    rng = np.random.default_rng(0)
    major, minor, pa = rng.uniform(2, 9, 50), rng.uniform(0.5, 2, 50), rng.uniform(0, 180, 50)
    got = shape_of(shape_covariance(major, minor, pa))
    np.testing.assert_allclose(got[0], major, rtol=1e-9)
    np.testing.assert_allclose(got[1], minor, rtol=1e-9)
    np.testing.assert_allclose(np.cos(np.deg2rad(2 * (got[2] - pa))), 1.0, atol=1e-9)
    # PA 0 is north (+y), PA 90 is east (-x)
    north, east = shape_covariance(np.array([4.0, 4.0]), np.array([1.0, 1.0]),
                                   np.array([0.0, 90.0]))
    assert north[1, 1] > north[0, 0] and east[0, 0] > east[1, 1]


def test_fit_matches_scipy_least_squares() -> None:
    """Same model, same pixels (the stamp within the aperture), same optimum."""
    rng = np.random.default_rng(1)
    centres, peaks, covs = _grid_sources(4, rng)
    img = _render((130, 130), centres, peaks, covs) + rng.normal(0, 0.05, (130, 130))
    start = shape_covariance(*shape_of(covs)[:2] * rng.uniform(0.8, 1.25, (2, len(covs))),
                             shape_of(covs)[2] + rng.uniform(-15, 15, len(covs)))
    radius, aperture = 14, 2.5
    peak, cen, cov, ok = fit_gaussians(img, centres, start, radius=radius, aperture=aperture,
                                       iterations=30)
    assert ok.all()
    for k in range(len(centres)):
        ix, iy = np.rint(centres[k]).astype(int)
        yy, xx = np.mgrid[iy - radius:iy + radius + 1, ix - radius:ix + radius + 1]
        inv0 = np.linalg.inv(start[k])
        dx, dy = xx - centres[k, 0], yy - centres[k, 1]
        sel = (inv0[0, 0] * dx * dx + 2 * inv0[0, 1] * dx * dy + inv0[1, 1] * dy * dy
               <= aperture ** 2)
        px, py, val = xx[sel], yy[sel], img[yy[sel], xx[sel]]

        def resid(p: np.ndarray, px: np.ndarray = px, py: np.ndarray = py,
                  val: np.ndarray = val) -> np.ndarray:
            ddx, ddy = px - p[1], py - p[2]
            return val - p[0] * np.exp(-0.5 * (p[3] * ddx * ddx + 2 * p[4] * ddx * ddy
                                               + p[5] * ddy * ddy))

        p0 = [img[iy, ix], *centres[k], inv0[0, 0], inv0[0, 1], inv0[1, 1]]
        ref = least_squares(resid, p0, xtol=1e-12, ftol=1e-12).x
        ref_cov = np.linalg.inv([[ref[3], ref[4]], [ref[4], ref[5]]])
        np.testing.assert_allclose(peak[k], ref[0], rtol=1e-4)
        np.testing.assert_allclose(cen[k], ref[1:3], atol=1e-4)
        np.testing.assert_allclose(cov[k], ref_cov, rtol=1e-3, atol=1e-4)


def test_measure_recovers_flux_and_deconvolved_shape() -> None:
    rng = np.random.default_rng(2)
    n_side = 5
    g = (np.arange(n_side) + 1) * 30.0
    centres = np.array([(x, y) for y in g for x in g]) + rng.uniform(-0.5, 0.5, (25, 2))
    major = rng.uniform(2.0, 6.0, 25)                     # intrinsic FWHM, px
    minor = major * rng.uniform(0.6, 1.0, 25)
    minor[:5] = 0.2                                       # unresolved minor axes
    pa = rng.uniform(0, 180, 25)
    beam = shape_covariance(np.array([BEAM_PX[0]]), np.array([BEAM_PX[1]]),
                            np.array([BEAM_PX[2]]))[0]
    observed = shape_covariance(major, minor, pa) + beam
    flux = rng.uniform(1e-4, 1e-2, 25)                   # Jy
    peaks = flux / np.sqrt(np.linalg.det(observed) / np.linalg.det(beam))
    img = _render((180, 180), centres, peaks, observed).astype(np.float32)
    net = np.column_stack([flux * 0.6, major * SCALE * 1.4, np.full(25, 0.77),
                           np.mod(pa + 20, 180)])       # a coarse network's guesses
    half = np.full((25, 2), 4.0)
    dets = Detections(boxes=np.hstack([centres - half, centres + half]),
                      objectness=np.ones(25, np.float32), probability=np.ones(25, np.float32),
                      prior=np.zeros(25, np.int16), params=net, param_names=NAMES,
                      chunk=np.zeros(25, np.int32))
    got = measure_sources(dets, img, origin=(0, 0), beam_px=BEAM_PX, pixel_scale_arcsec=SCALE)
    np.testing.assert_array_equal(got.boxes, dets.boxes)
    np.testing.assert_allclose(got.param("flux"), flux, rtol=2e-3)
    np.testing.assert_allclose(got.param("bmaj"), major * SCALE, rtol=2e-3)
    np.testing.assert_allclose(got.param("bmin")[5:], minor[5:] * SCALE, rtol=5e-3)
    np.testing.assert_array_equal(got.param("bmin")[:5], 0.77)   # unresolved: kept
    d_pa = np.deg2rad(got.param("pa") - pa)
    assert np.all(np.cos(2 * d_pa) > np.cos(np.deg2rad(2 * 0.5)))
    # the same sources cut out with an offset origin give the same result
    sub = measure_sources(dets, img[20:, 10:], origin=(20, 10), beam_px=BEAM_PX,
                          pixel_scale_arcsec=SCALE)
    np.testing.assert_allclose(sub.params[5:], got.params[5:], rtol=1e-9)
    # bmin_resolved 0: every fitted minor axis replaces the network's (the unresolved ones
    # measure well under the beam); a large one keeps all of the network's
    every = measure_sources(dets, img, origin=(0, 0), beam_px=BEAM_PX,
                            pixel_scale_arcsec=SCALE, bmin_resolved=0.0)
    np.testing.assert_array_equal(every.param("bmin")[5:], got.param("bmin")[5:])
    assert np.all(every.param("bmin")[:5] < 0.5 * BEAM_PX[1] * SCALE)
    none = measure_sources(dets, img, origin=(0, 0), beam_px=BEAM_PX,
                           pixel_scale_arcsec=SCALE, bmin_resolved=100.0)
    np.testing.assert_array_equal(none.param("bmin"), 0.77)
    np.testing.assert_array_equal(none.param("flux"), got.param("flux"))
    # bmaj_resolved: the fitted major axis replaces the network's only where it is at
    # least that many beams; elsewhere the network's stays, never below the minor axis
    limit = 1.2 * BEAM_PX[0]
    part = measure_sources(dets, img, origin=(0, 0), beam_px=BEAM_PX,
                           pixel_scale_arcsec=SCALE, bmaj_resolved=1.2)
    big = got.param("bmaj") / SCALE >= limit           # the fitted major axes
    assert 0 < big.sum() < len(big)
    np.testing.assert_array_equal(part.param("bmaj")[big], got.param("bmaj")[big])
    np.testing.assert_array_equal(part.param("bmaj")[~big],
                                  np.maximum(net[~big, 1], part.param("bmin")[~big]))
    np.testing.assert_array_equal(part.param("bmin"), got.param("bmin"))
    np.testing.assert_array_equal(part.param("flux"), got.param("flux"))


def test_failed_fits_keep_the_network_values() -> None:
    img = np.zeros((60, 60), np.float32)
    img[30, 30] = np.nan
    img[40:, :] = -1.0                                    # no positive source anywhere
    params = np.array([[1e-3, 1.0, 0.5, 10.0], [2e-3, 2.0, 1.0, 20.0]])
    dets = Detections(boxes=np.array([[26.0, 26, 34, 34], [10, 45, 18, 53]]),
                      objectness=np.ones(2, np.float32), probability=np.ones(2, np.float32),
                      prior=np.zeros(2, np.int16), params=params, param_names=NAMES,
                      chunk=np.zeros(2, np.int32))
    got = measure_sources(dets, img, origin=(0, 0), beam_px=BEAM_PX, pixel_scale_arcsec=SCALE)
    np.testing.assert_array_equal(got.params, params)


@pytest.mark.parametrize("names", [NAMES, ("flux", "size")])
def test_empty_and_other_parameter_sets_pass_through(names: tuple[str, ...]) -> None:
    empty = Detections.empty(names)
    assert len(measure_sources(empty, np.zeros((8, 8)), origin=(0, 0), beam_px=BEAM_PX,
                               pixel_scale_arcsec=SCALE)) == 0
    if names != NAMES:
        d = Detections(boxes=np.array([[1.0, 1, 5, 5]]), objectness=np.ones(1, np.float32),
                       probability=np.ones(1, np.float32), prior=np.zeros(1, np.int16),
                       params=np.array([[1.0, 2.0]]), param_names=names,
                       chunk=np.zeros(1, np.int32))
        assert measure_sources(d, np.ones((8, 8)), origin=(0, 0), beam_px=BEAM_PX,
                               pixel_scale_arcsec=SCALE) is d
    no_fit = fit_gaussians(np.zeros((8, 8)), np.zeros((0, 2)), np.zeros((0, 2, 2)))
    assert [a.shape[0] for a in no_fit] == [0, 0, 0, 0]


def _dets_at(centres: np.ndarray, net: np.ndarray) -> Detections:
    n = len(centres)
    half = np.full((n, 2), 4.0)
    return Detections(boxes=np.hstack([centres - half, centres + half]),
                      objectness=np.ones(n, np.float32), probability=np.ones(n, np.float32),
                      prior=np.zeros(n, np.int16), params=net, param_names=NAMES,
                      chunk=np.zeros(n, np.int32))


def test_forced_photometry_recovers_peaks_of_known_shapes() -> None:
    rng = np.random.default_rng(12)
    centres, peaks, covs = _grid_sources(6, rng)
    img = _render((170, 170), centres, peaks, covs)
    got, ok = fit_amplitudes(img, centres, covs, radius=10, aperture=2.5)
    assert ok.all()
    np.testing.assert_allclose(got, peaks, rtol=1e-9)          # noise-free: exact
    # in white noise the estimate is unbiased, its scatter the matched filter's
    noisy = img + rng.normal(0, 0.2, img.shape)
    err = fit_amplitudes(noisy, centres, covs, radius=10, aperture=2.5)[0] - peaks
    assert abs(err.mean()) < 0.05 and 0.02 < err.std() < 0.2
    # a cut-out with its origin gives the same; sources with no pixels are not ok
    sub, sub_ok = fit_amplitudes(img[50:, 30:], centres, covs, origin=(50, 30), radius=10)
    inside = (centres[:, 1] > 50 + 12) & (centres[:, 0] > 30 + 12)
    assert sub_ok[inside].all()
    np.testing.assert_allclose(sub[inside], got[inside], rtol=1e-9)
    far = np.array([[500.0, 500.0]])
    assert not fit_amplitudes(img, far, covs[:1])[1][0]
    assert fit_amplitudes(img, np.zeros((0, 2)), np.zeros((0, 2, 2)))[0].shape == (0,)


def test_local_noise_ignores_the_source_and_the_cut_out() -> None:
    rng = np.random.default_rng(13)
    img = rng.normal(0.0, 2.0, (400, 400))
    centres = rng.uniform(40, 360, (200, 2))
    img_src = img + _render(img.shape, centres[:1], np.array([500.0]),
                            shape_covariance(np.array([3.0]), np.array([3.0]),
                                             np.array([0.0])))
    noise = local_noise(img_src, centres)
    assert 1.7 < np.median(noise) < 2.3                       # 81 samples each
    assert 1.4 < noise[0] < 2.6                               # a 500-sigma source on it
    # the same pixels in a cut-out give the same value: no dependence on the window
    sub = local_noise(img_src[30:, 20:], centres, origin=(30, 20))
    inside = (np.rint(centres[:, 1]) >= 30 + 16) & (np.rint(centres[:, 0]) >= 20 + 16)
    assert 0 < inside.sum() < len(centres)
    np.testing.assert_array_equal(sub[inside], noise[inside])
    img_src[:] = np.nan
    assert np.isnan(local_noise(img_src, centres[:2])).all()


def test_fit_snr_chooses_which_sources_get_the_free_fit() -> None:
    rng = np.random.default_rng(14)
    centres = _grid_sources(6, rng)[0]
    n = len(centres)
    major = rng.uniform(1.5, 4.0, n)                           # intrinsic FWHM, px
    minor, pa = major * rng.uniform(0.5, 1.0, n), rng.uniform(0, 180, n)
    beam = shape_covariance(np.array([BEAM_PX[0]]), np.array([BEAM_PX[1]]),
                            np.array([BEAM_PX[2]]))[0]
    covs = shape_covariance(major, minor, pa) + beam
    peaks = np.geomspace(2.0, 200.0, n)                        # SNR 2 .. 200 at noise 1
    img = _render((170, 170), centres, peaks, covs) + rng.normal(0, 1.0, (170, 170))
    # the network's shape is 30% too large and its PA 20 deg off
    net = np.column_stack([np.ones(len(peaks)), major * SCALE * 1.3, minor * SCALE * 1.3,
                           np.mod(pa + 20, 180)])
    dets = _dets_at(centres, net)
    kw = dict(origin=(0, 0), beam_px=BEAM_PX, pixel_scale_arcsec=SCALE, bmin_resolved=0.0)
    forced = measure_sources(dets, img, fit_snr=None, **kw)
    np.testing.assert_array_equal(forced.params[:, 1:], net[:, 1:])   # shapes kept
    start = shape_covariance(net[:, 1] / SCALE, net[:, 2] / SCALE, net[:, 3]) + beam
    area = np.sqrt(np.linalg.det(start) / np.linalg.det(beam))
    np.testing.assert_allclose(forced.param("flux"),
                               fit_amplitudes(img, centres, start, radius=10)[0] * area,
                               rtol=0.05)
    every = measure_sources(dets, img, fit_snr=0.0, **kw)
    some = measure_sources(dets, img, fit_snr=20.0, **kw)
    snr = peaks / local_noise(img, centres)
    bright = snr > 25
    faint = snr < 15
    assert bright.sum() > 5 and faint.sum() > 5
    np.testing.assert_allclose(some.params[bright], every.params[bright], rtol=1e-12)
    np.testing.assert_array_equal(some.params[faint], forced.params[faint])
    # where the fit is used, the shape error of the network is gone
    np.testing.assert_allclose(some.param("bmaj")[bright], major[bright] * SCALE, rtol=0.1)
    with pytest.raises(StreamdetValueError, match="fit_snr"):
        measure_sources(dets, img, fit_snr=-1.0, **kw)


def test_background_takes_the_local_level_out_of_forced_photometry() -> None:
    """On a map whose zero level lies below its sources (as an interferometer's does),
    forced photometry above the local median recovers the fluxes measured on the same
    sources over zero; above zero it is biased by the level times the shape's area."""
    rng = np.random.default_rng(21)
    centres, peaks, covs = _grid_sources(6, rng, spacing=40)
    img = _render((280, 280), centres, peaks, covs) + rng.normal(0, 0.05, (280, 280))
    # the network's shape: the observed covariance less the beam, as FWHM axes in arcsec
    beam = shape_covariance(np.array([BEAM_PX[0]]), np.array([BEAM_PX[1]]), np.array([0.0]))
    major, minor, pa = shape_of(covs - beam)
    net = np.column_stack([np.ones(len(centres)), major * SCALE, minor * SCALE, pa])
    dets = _dets_at(centres, net)
    kw = dict(origin=(0, 0), beam_px=BEAM_PX, pixel_scale_arcsec=SCALE, fit_snr=None)
    flat = measure_sources(dets, img, **kw).param("flux")
    level = -0.3
    low = measure_sources(dets, img + level, **kw).param("flux")
    fixed = measure_sources(dets, img + level, background=True, **kw).param("flux")
    assert np.all(low < flat - 0.1)                       # biased low by the level
    np.testing.assert_allclose(fixed, flat, rtol=0.03)
    # with no level to take out the two agree closely (the median is ~0 here)
    np.testing.assert_allclose(measure_sources(dets, img, background=True, **kw).param("flux"),
                               flat, rtol=0.03)


def test_flux_scale_divides_the_measured_fluxes_only() -> None:
    """A map carrying ``flux_scale`` of its sky's flux: forced and fitted fluxes are
    divided by it (a map scaled by k measured with flux_scale k gives the unscaled map's
    fluxes), shapes and positions are unchanged, and a bad value is refused by name."""
    rng = np.random.default_rng(5)
    centres, peaks, covs = _grid_sources(5, rng, spacing=40)
    img = _render((240, 240), centres, peaks, covs) + rng.normal(0, 0.02, (240, 240))
    beam = shape_covariance(np.array([BEAM_PX[0]]), np.array([BEAM_PX[1]]), np.array([0.0]))
    major, minor, pa = shape_of(covs - beam)
    dets = _dets_at(centres, np.column_stack([np.ones(len(centres)), major * SCALE,
                                              minor * SCALE, pa]))
    for fit_snr in (None, 0.0):
        kw = dict(origin=(0, 0), beam_px=BEAM_PX, pixel_scale_arcsec=SCALE, fit_snr=fit_snr)
        ref = measure_sources(dets, img, **kw)
        got = measure_sources(dets, 0.8 * img, flux_scale=0.8, **kw)
        np.testing.assert_allclose(got.param("flux"), ref.param("flux"), rtol=1e-6)
        np.testing.assert_allclose(got.param("bmaj"), ref.param("bmaj"), rtol=1e-4)
        plain = measure_sources(dets, 0.8 * img, **kw).param("flux")
        np.testing.assert_allclose(plain, 0.8 * ref.param("flux"), rtol=1e-6)
    for bad in (0.0, -2.0, float("nan")):
        with pytest.raises(ValueError, match="flux_scale"):
            measure_sources(dets, img, origin=(0, 0), beam_px=BEAM_PX, pixel_scale_arcsec=SCALE,
                            flux_scale=bad)
