"""Rendering of simulated sources and noise into image strips.

Compact sources are sums of elliptical Gaussian components (a point core, a
Gaussian, an exponential disc as a mixture of Gaussians). Convolution with the
circular Gaussian restoring beam is then analytic (the covariances add), and the
restored image is sampled at pixel centres, exactly as a CLEAN restoration is: a
point source of flux S at a pixel centre peaks at S (Jy/beam), the image sums to
S x beam area (pixels), and sub-pixel positions are exact. Lobed AGN are real
radio-galaxy images (templates) rotated, scaled to the LAS, integrated over the
pixels (supersampled) and convolved numerically with the sampled beam.

Each component is evaluated on a small stamp (+-5 sigma of its major axis) and
added into the strip being written; no full-size array is ever built. Values
depend only on the component and the pixel, so strips of any height join
seamlessly. The noise is white Gaussian noise drawn row by row from per-row seeded
generators, convolved along x and along y with kernels whose autocorrelations are
given (a map's measured noise autocorrelation, :func:`acf_kernel`), or by default with
a Gaussian of FWHM = beam / sqrt(2) (so its autocorrelation has the beam's FWHM),
computed per strip with a margin of rows: also independent of the strip height.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy.ndimage import map_coordinates
from scipy.optimize import nnls
from scipy.signal import fftconvolve

from ._beam import noise_kernel, separable_correlate
from ._population import AgnTemplates, Band, SourceDraw

__all__ = [
    "EXPONENTIAL_SCALE",
    "Components",
    "CorrelatedNoise",
    "Gaussians",
    "Patterns",
    "StripRenderer",
    "TemplateStamps",
    "acf_kernel",
    "exponential_mixture",
    "sidelobe_patterns",
    "source_components",
    "template_stamp",
]

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]

_FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))
_TRUNCATE = 5.0  # stamp half-width in sigmas of the component's major axis
_BUCKETS = (3, 4, 5, 6, 7, 8, 10, 12, 14, 16, 20, 24, 28, 32, 40, 48, 56, 64)
_CHUNK = 1 << 20  # stamp pixels evaluated at once
# sidelobe model (sidelobes=True), in units of the beam FWHM and of the source's peak
SIDELOBE_SNR = 300.0  # sources brighter than this many noise rms get sidelobes
_BOWL_DEPTH, _BOWL_WIDTH = 0.002, 3.0
_RING_AMP, _RING_PERIOD, _RING_DECAY = 0.004, 2.0, 4.0
_PATTERN_RADIUS = 12.0
_SPOKE_ANGLE = math.radians(17.0)  # orientation of the six-fold PSF spokes (fixed)
#: Scale length of an exponential disc (size 3) per unit of its catalogue axes: free fits
#: of the 9 resolved size-3 sources of the real 560 MHz SDC1 map give 0.21 b_maj (a
#: Gaussian would have FWHM 0.66 b_maj; ``docs/calibration.md``), not b_maj itself.
EXPONENTIAL_SCALE = 0.21


@functools.lru_cache(maxsize=1)
def exponential_mixture() -> tuple[FloatArray, FloatArray]:
    """Gaussian mixture of a 2-D exponential disc ``exp(-r/h) / (2 pi h^2)``.

    Returns
    -------
    weights : (K,) float64
        Flux fractions (sum 1), zero weights dropped.
    sigmas : (K,) float64
        Gaussian sigmas in units of the scale length ``h``.

    Notes
    -----
    Non-negative least squares on a grid of 12 log-spaced sigmas (0.02 h to 6 h),
    fitting both the profile (flux weighted) and the enclosed flux; the enclosed
    flux matches to 1e-3 and the profile to 3 % between 0.2 h and 6 h.
    """
    r = np.linspace(0.0, 20.0, 8000)[1:]
    sig = np.geomspace(0.02, 6.0, 12)
    prof = np.exp(-r[:, None] ** 2 / (2.0 * sig ** 2)) / sig ** 2  # x 1/(2 pi)
    enclosed = 1.0 - np.exp(-r[:, None] ** 2 / (2.0 * sig ** 2))
    target_prof = np.exp(-r)
    target_enc = 1.0 - (1.0 + r) * np.exp(-r)
    mat = np.vstack([prof * r[:, None], 0.3 * enclosed])
    rhs = np.concatenate([target_prof * r, 0.3 * target_enc])
    w, _ = nnls(mat, rhs)
    keep = w > 0
    w = w[keep] / w[keep].sum()
    return w.astype(np.float64), sig[keep].astype(np.float64)


@dataclass(frozen=True)
class Gaussians:
    """Elliptical Gaussian components of the restored image, in pixels.

    The image value at pixel ``p`` is
    ``amp / (2 pi sqrt(det S)) * exp(-(p - m)^T S^-1 (p - m) / 2)`` with mean
    ``m = (x, y)`` and covariance ``S = [[sxx, sxy], [sxy, syy]]`` (beam included),
    so ``amp`` is the component's sum over the image (Jy/beam x pixels).

    Attributes
    ----------
    x, y : (K,) float64
        Centre (0-based pixels).
    amp : (K,) float64
        Integral (flux x primary-beam gain x beam area in pixels).
    sxx, sxy, syy : (K,) float64
        Covariance (pixels^2).
    """

    x: FloatArray
    y: FloatArray
    amp: FloatArray
    sxx: FloatArray
    sxy: FloatArray
    syy: FloatArray

    def __len__(self) -> int:
        return int(self.x.size)


@dataclass(frozen=True)
class Patterns:
    """Sidelobe patterns (negative bowl and six-fold ringing) around bright sources.

    Attributes
    ----------
    x, y : (K,) float64
        Centre (pixels).
    peak : (K,) float64
        Apparent peak of the source (Jy/beam) that scales the pattern.
    fwhm_px : float
        Beam FWHM (pixels): the pattern's length unit.
    """

    x: FloatArray
    y: FloatArray
    peak: FloatArray
    fwhm_px: float

    def __len__(self) -> int:
        return int(self.x.size)


def _covariance(sig_a: FloatArray, sig_b: FloatArray,
                phi: FloatArray) -> tuple[FloatArray, FloatArray, FloatArray]:
    c, s = np.cos(phi), np.sin(phi)
    a2, b2 = sig_a ** 2, sig_b ** 2
    return a2 * c * c + b2 * s * s, (a2 - b2) * s * c, a2 * s * s + b2 * c * c


@dataclass(frozen=True)
class TemplateStamps:
    """Lobed AGN rendered from real AGN images (:class:`~._population.AgnTemplates`).

    Attributes
    ----------
    x, y : (K,) float64
        Core position (pixels): the template centre.
    amp : (K,) float64
        Integral over the image (flux x primary-beam gain x beam area in pixels).
    phi : (K,) float64
        Direction of the template's x axis (the source's major axis) in the pixel
        frame (radians from +x, counter-clockwise).
    scale : (K,) float64
        Image pixels per template pixel.
    mirror : (K,) float64
        +1 or -1 (template mirrored across its major axis).
    index : (K,) int64
        Template of each source.
    images : (M, T, T) float32
        The templates.
    beam_sigma_px : float
        Restoring-beam sigma (pixels).
    """

    x: FloatArray
    y: FloatArray
    amp: FloatArray
    phi: FloatArray
    scale: FloatArray
    mirror: FloatArray
    index: IntArray
    images: NDArray[np.float32]
    beam_sigma_px: float

    def __len__(self) -> int:
        return int(self.x.size)

    def half_width(self) -> IntArray:
        """Stamp half-width (pixels): the rotated template plus the beam."""
        t = self.images.shape[-1]
        return np.ceil(self.scale * (t / 2) * math.sqrt(2.0)
                       + _TRUNCATE * self.beam_sigma_px + 1).astype(np.int64)


@dataclass(frozen=True)
class Components:
    """Everything rendered for a field, and the truth centroids.

    Attributes
    ----------
    gaussians : Gaussians
        Point cores, Gaussian and exponential sources.
    stamps : TemplateStamps
        Lobed AGN bodies (their cores are in ``gaussians``).
    cent_x, cent_y : (N,) float64
        Flux-weighted centroid of each source (pixels).
    """

    gaussians: Gaussians
    stamps: TemplateStamps
    cent_x: FloatArray
    cent_y: FloatArray


def source_components(draw: SourceDraw, *, north_rad: FloatArray, gain: FloatArray,
                      band: Band, templates: AgnTemplates) -> Components:
    """The components of drawn sources, and their flux centroids.

    Parameters
    ----------
    draw : SourceDraw
        The sources (core positions in pixels, sizes in arcsec, PA east of north).
    north_rad : (N,) float64
        Direction of local north in the pixel frame (radians from +x, counter-clockwise);
        east is north + 90 deg (RA increasing to the left).
    gain : (N,) float64
        Primary-beam gain at each source.
    band : Band
        Pixel scale and restoring beam.
    templates : AgnTemplates
        Real AGN images for the lobed AGN (``draw.template`` indexes them).

    Returns
    -------
    Components
        Beam-convolved Gaussians, AGN template stamps and centroids.
    """
    pix = band.pixel_arcsec
    beam2 = band.beam_sigma_px ** 2
    scale = gain * band.beam_area_px
    phi = north_rad + np.radians(draw.pa)
    cf = np.clip(draw.core_frac, 0.0, 1.0)
    body = (1.0 - cf) * draw.flux * scale
    parts: list[tuple[FloatArray, ...]] = []

    def add(sel: NDArray[np.bool_], amp: FloatArray, sa: FloatArray, sb: FloatArray) -> None:
        sxx, sxy, syy = _covariance(sa, sb, phi[sel])
        parts.append((draw.x[sel], draw.y[sel], amp, sxx + beam2, sxy, syy + beam2))

    core = cf > 0
    zeros = np.zeros(int(core.sum()))
    add(core, (cf * draw.flux * scale)[core], zeros, zeros)
    gauss = (draw.size == 2) & (cf < 1)
    add(gauss, body[gauss], draw.bmaj[gauss] / pix / _FWHM_PER_SIGMA,
        draw.bmin[gauss] / pix / _FWHM_PER_SIGMA)
    expo = (draw.size == 3) & (cf < 1)
    for w, s in zip(*exponential_mixture(), strict=True):
        k = s * EXPONENTIAL_SCALE
        add(expo, body[expo] * w, draw.bmaj[expo] / pix * k, draw.bmin[expo] / pix * k)
    cols = [np.concatenate([p[i] for p in parts]) for i in range(6)]
    keep = cols[2] != 0
    gaussians = Gaussians(*(c[keep] for c in cols))

    lobed = (draw.size == 1) & (cf < 1) & (draw.template >= 0)
    idx = draw.template[lobed]
    tscale = draw.bmaj[lobed] / pix / templates.las[idx]
    stamps = TemplateStamps(x=draw.x[lobed], y=draw.y[lobed], amp=body[lobed], phi=phi[lobed],
                            scale=tscale, mirror=draw.mirror[lobed], index=idx,
                            images=templates.images, beam_sigma_px=band.beam_sigma_px)
    # centroid: (1 - cf) x the template's own centroid, rotated into the image
    cu, cv = templates.centroid[idx, 0], templates.centroid[idx, 1] * draw.mirror[lobed]
    p = phi[lobed]
    w = (1.0 - cf[lobed]) * tscale
    cent_x, cent_y = draw.x.copy(), draw.y.copy()
    cent_x[lobed] += w * (cu * np.cos(p) - cv * np.sin(p))
    cent_y[lobed] += w * (cu * np.sin(p) + cv * np.cos(p))
    return Components(gaussians=gaussians, stamps=stamps, cent_x=cent_x, cent_y=cent_y)


def template_stamp(st: TemplateStamps, i: int) -> tuple[int, int, FloatArray]:
    """Render lobed AGN ``i``: template resampled, pixel-integrated, beam-convolved.

    The template is sampled (bilinear) on a grid ``f`` times finer than the image
    (``f`` up to 8, so a fine pixel is at most one template pixel), summed over each
    image pixel, normalised to ``amp`` and convolved with the sampled restoring beam.

    Returns
    -------
    row0, col0 : int
        Image pixel of the stamp's first row and column.
    stamp : (2h + 1, 2h + 1) float64
        Jy/beam, summing to ``amp``.
    """
    h = int(st.half_width()[i])
    cx, cy = round(float(st.x[i])), round(float(st.y[i]))
    scale = float(st.scale[i])
    f = int(min(8, max(1, math.ceil(1.0 / scale))))
    n = 2 * h + 1
    fine = (np.arange(n * f) + 0.5) / f - 0.5 - h  # fine sample offsets from (cx, cy)
    dx = (cx - float(st.x[i])) + fine[None, :]
    dy = (cy - float(st.y[i])) + fine[:, None]
    c, s = math.cos(float(st.phi[i])), math.sin(float(st.phi[i]))
    img = st.images[int(st.index[i])]
    centre = (img.shape[-1] - 1) / 2
    u = (dx * c + dy * s) / scale + centre
    v = float(st.mirror[i]) * (-dx * s + dy * c) / scale + centre
    vals = map_coordinates(img, [v, u], order=1, mode="grid-constant", cval=0.0,
                           prefilter=False)
    model = vals.reshape(n, f, n, f).sum(axis=(1, 3))
    model *= float(st.amp[i]) / model.sum()
    r = math.ceil(_TRUNCATE * st.beam_sigma_px)
    t = np.arange(-r, r + 1, dtype=np.float64)
    k1 = np.exp(-0.5 * (t / st.beam_sigma_px) ** 2)
    k1 /= k1.sum()
    out = fftconvolve(model, np.outer(k1, k1), mode="same")
    return cy - h, cx - h, np.asarray(out, dtype=np.float64)


def sidelobe_patterns(draw: SourceDraw, *, gain: FloatArray, band: Band) -> Patterns:
    """Sidelobe patterns for the sources whose apparent flux exceeds SIDELOBE_SNR x noise."""
    apparent = draw.flux * gain
    sel = apparent > SIDELOBE_SNR * band.noise
    return Patterns(x=draw.x[sel], y=draw.y[sel], peak=apparent[sel],
                    fwhm_px=band.beam_fwhm_arcsec / band.pixel_arcsec)


# ---------------------------------------------------------------------------- stamps

@dataclass(frozen=True)
class _Bucket:
    """Components that share a stamp half-width, sorted by centre row."""

    hw: int
    cx: IntArray  # nearest pixel column of the centre
    cy: IntArray  # nearest pixel row of the centre (sorted)
    x: FloatArray
    y: FloatArray
    params: FloatArray  # (K, P) kernel parameters
    kernel: Callable[[FloatArray, FloatArray, FloatArray], FloatArray]


def _gauss_params(g: Gaussians) -> FloatArray:
    det = g.sxx * g.syy - g.sxy ** 2
    norm = g.amp / (2.0 * np.pi * np.sqrt(det))
    return np.stack([g.syy / det, -g.sxy / det, g.sxx / det, norm], axis=1)


def _gauss_kernel(dx: FloatArray, dy: FloatArray, p: FloatArray) -> FloatArray:
    """Gaussian stamps: dx (K, W) column offsets, dy (K, H) row offsets -> (K, H, W)."""
    ia, ib, ic, norm = p[:, 0], p[:, 1], p[:, 2], p[:, 3]
    t = (ib[:, None] * dy)[:, :, None] * dx[:, None, :]
    t *= -1.0
    t -= (0.5 * ia[:, None] * dx * dx)[:, None, :]
    t -= (0.5 * ic[:, None] * dy * dy)[:, :, None]
    np.exp(t, out=t)
    t *= norm[:, None, None]
    return t


def _pattern_kernel_for(fwhm: float) -> Callable[[FloatArray, FloatArray, FloatArray], FloatArray]:
    rmax = _PATTERN_RADIUS * fwhm

    def kernel(dx: FloatArray, dy: FloatArray, p: FloatArray) -> FloatArray:
        xx = dx[:, None, :]
        yy = dy[:, :, None]
        r = np.sqrt(xx * xx + yy * yy)
        theta = np.arctan2(yy, xx)
        bowl = -_BOWL_DEPTH * np.exp(-0.5 * (r / (_BOWL_WIDTH * fwhm)) ** 2)
        spokes = 0.5 + 0.5 * np.cos(6.0 * (theta - _SPOKE_ANGLE))
        ring = (_RING_AMP * np.sin(2.0 * np.pi * r / (_RING_PERIOD * fwhm))
                * np.exp(-r / (_RING_DECAY * fwhm)) * spokes)
        inner = 1.0 - np.exp(-((r / (1.5 * fwhm)) ** 4))  # leave the main lobe alone
        outer = np.clip(1.0 - (r / rmax) ** 2, 0.0, None) ** 2  # smooth edge
        out: FloatArray = (bowl + ring) * inner * outer * p[:, 0][:, None, None]
        return out

    return kernel


def _make_bucket(hw: int, x: FloatArray, y: FloatArray, params: FloatArray,
                 kernel: Callable[[FloatArray, FloatArray, FloatArray], FloatArray]) -> _Bucket:
    cx = np.rint(x).astype(np.int64)
    cy = np.rint(y).astype(np.int64)
    order = np.argsort(cy, kind="stable")
    return _Bucket(hw=hw, cx=cx[order], cy=cy[order], x=x[order], y=y[order],
                   params=params[order], kernel=kernel)


class StripRenderer:
    """Render Gaussian components (and sidelobe patterns) into horizontal strips.

    Parameters
    ----------
    gaussians : Gaussians
        Components to render.
    width : int
        Image width (pixels).
    patterns : Patterns or None
        Sidelobe patterns to add.
    """

    def __init__(self, gaussians: Gaussians, *, width: int, patterns: Patterns | None = None,
                 stamps: TemplateStamps | None = None):
        self.width = int(width)
        self._buckets: list[_Bucket] = []
        self._stamps = stamps
        self._stamp_cache: dict[int, tuple[int, int, FloatArray]] = {}
        if stamps is not None and len(stamps):
            self._stamp_hw = stamps.half_width()
            self._stamp_cy = np.rint(stamps.y).astype(np.int64)
            self._stamp_order = np.argsort(self._stamp_cy, kind="stable")
            self._stamp_cy_sorted = self._stamp_cy[self._stamp_order]
        if len(gaussians):
            lam = 0.5 * (gaussians.sxx + gaussians.syy) + np.sqrt(
                0.25 * (gaussians.sxx - gaussians.syy) ** 2 + gaussians.sxy ** 2)
            hw = np.ceil(_TRUNCATE * np.sqrt(lam)).astype(np.int64)
            edges = np.asarray(_BUCKETS)
            slot = np.searchsorted(edges, hw)  # smallest bucket >= hw
            params = _gauss_params(gaussians)
            for k in np.unique(slot):
                sel = slot == k
                if k < edges.size:
                    self._buckets.append(_make_bucket(int(edges[k]), gaussians.x[sel],
                                                      gaussians.y[sel], params[sel],
                                                      _gauss_kernel))
                else:  # large components: one bucket per distinct half-width
                    for h in np.unique(hw[sel]):
                        s2 = sel & (hw == h)
                        self._buckets.append(_make_bucket(int(h), gaussians.x[s2],
                                                          gaussians.y[s2], params[s2],
                                                          _gauss_kernel))
        if patterns is not None and len(patterns):
            hwp = math.ceil(_PATTERN_RADIUS * patterns.fwhm_px)
            self._buckets.append(_make_bucket(hwp, patterns.x, patterns.y,
                                              patterns.peak[:, None],
                                              _pattern_kernel_for(patterns.fwhm_px)))

    def render(self, y0: int, y1: int) -> FloatArray:
        """Rows ``y0 <= y < y1`` of the rendered image.

        Returns
        -------
        (y1 - y0, width) float64
            Jy/beam.
        """
        out = np.zeros((y1 - y0, self.width), np.float64)
        for b in self._buckets:
            lo = int(np.searchsorted(b.cy, y0 - b.hw, side="left"))
            hi = int(np.searchsorted(b.cy, y1 - 1 + b.hw, side="right"))
            if hi <= lo:
                continue
            if b.hw > _BUCKETS[-1]:
                for i in range(lo, hi):
                    self._add_clipped(out, y0, y1, b, i)
            else:
                step = max(1, _CHUNK // (2 * b.hw + 1) ** 2)
                for s in range(lo, hi, step):
                    self._add_stamps(out, y0, y1, b, s, min(hi, s + step))
        if self._stamps is not None and len(self._stamps):
            self._add_templates(out, y0, y1)
        return out

    def _add_templates(self, out: FloatArray, y0: int, y1: int) -> None:
        assert self._stamps is not None
        # stamps are pure functions of the source: cache those that reach later strips
        self._stamp_cache = {i: v for i, v in self._stamp_cache.items()
                             if v[0] + v[2].shape[0] > y0}
        hmax = int(self._stamp_hw.max())
        lo = int(np.searchsorted(self._stamp_cy_sorted, y0 - hmax, side="left"))
        hi = int(np.searchsorted(self._stamp_cy_sorted, y1 - 1 + hmax, side="right"))
        for i in self._stamp_order[lo:hi].tolist():
            h = int(self._stamp_hw[i])
            cy = int(self._stamp_cy[i])
            if cy + h < y0 or cy - h >= y1:
                continue
            if i not in self._stamp_cache:
                self._stamp_cache[i] = template_stamp(self._stamps, i)
            r0, c0, st = self._stamp_cache[i]
            a0, a1 = max(r0, y0), min(r0 + st.shape[0], y1)
            b0, b1 = max(c0, 0), min(c0 + st.shape[1], self.width)
            if a1 > a0 and b1 > b0:
                out[a0 - y0:a1 - y0, b0:b1] += st[a0 - r0:a1 - r0, b0 - c0:b1 - c0]

    def _add_stamps(self, out: FloatArray, y0: int, y1: int, b: _Bucket, s: int, e: int) -> None:
        off = np.arange(-b.hw, b.hw + 1)
        px = b.cx[s:e, None] + off
        py = b.cy[s:e, None] + off
        vals = b.kernel(px - b.x[s:e, None], py - b.y[s:e, None], b.params[s:e])
        row_ok = (py >= y0) & (py < y1)
        col_ok = (px >= 0) & (px < self.width)
        idx = (py - y0)[:, :, None] * self.width + px[:, None, :]
        flat = out.reshape(-1)
        if row_ok.all() and col_ok.all():
            np.add.at(flat, idx.reshape(-1), vals.reshape(-1))
        else:
            ok = row_ok[:, :, None] & col_ok[:, None, :]
            np.add.at(flat, idx[ok], vals[ok])

    def _add_clipped(self, out: FloatArray, y0: int, y1: int, b: _Bucket, i: int) -> None:
        r0, r1 = max(int(b.cy[i]) - b.hw, y0), min(int(b.cy[i]) + b.hw + 1, y1)
        c0, c1 = max(int(b.cx[i]) - b.hw, 0), min(int(b.cx[i]) + b.hw + 1, self.width)
        if r1 <= r0 or c1 <= c0:
            return
        dx = (np.arange(c0, c1) - b.x[i])[None, :]
        dy = (np.arange(r0, r1) - b.y[i])[None, :]
        out[r0 - y0:r1 - y0, c0:c1] += b.kernel(dx, dy, b.params[i:i + 1])[0]


# ----------------------------------------------------------------------------- noise

def acf_kernel(acf: tuple[float, ...] | list[float]) -> NDArray[np.float64]:
    """A symmetric 1-D kernel whose autocorrelation is ``acf`` (spectral factorisation).

    Parameters
    ----------
    acf : sequence of float
        Normalised autocorrelation at lags 1, 2, ..., L (pixels); lag 0 is 1.

    Returns
    -------
    (2 L + 1,) float64
        Zero-phase kernel ``k`` with ``sum(k * k) == 1`` whose autocorrelation matches
        ``acf`` as closely as a non-negative power spectrum allows (negative spectral
        values of the given sequence are clipped to 0).
    """
    rho = np.asarray(acf, dtype=np.float64)
    if rho.ndim != 1 or rho.size == 0 or not np.all(np.isfinite(rho)):
        raise ValueError(f"acf must be a non-empty 1-D sequence of finite numbers, got {acf!r}")
    lags = rho.size
    n = 8 * (lags + 1)
    full = np.zeros(n)
    full[0] = 1.0
    full[1:lags + 1] = rho
    full[n - lags:] = rho[::-1]
    power = np.clip(np.fft.rfft(full).real, 0.0, None)
    k = np.fft.irfft(np.sqrt(power), n)
    k = np.concatenate([k[n - lags:], k[:lags + 1]])
    return np.asarray(k / math.sqrt(float(np.sum(k * k))), dtype=np.float64)


class CorrelatedNoise:
    """Gaussian noise correlated on the beam scale, generated strip by strip.

    White noise is drawn row by row (row ``r`` from its own generator seeded by
    ``(seed, tag, r)``, including ``margin`` rows and columns beyond the image),
    convolved along x and y (with :func:`acf_kernel` of ``acf_x`` and ``acf_y`` where
    given, else a Gaussian of sigma ``beam_sigma_px / sqrt(2)``) and scaled to
    ``rms``. A pixel's value depends only on the seed and its neighbourhood.

    Parameters
    ----------
    seed : int
        Non-negative seed.
    tag : int
        Non-negative stream label (e.g. the band), mixed into every row's seed.
    width : int
        Image width (pixels).
    rms : float
        Target standard deviation (Jy/beam).
    beam_sigma_px : float
        Restoring-beam sigma (pixels).
    acf_x, acf_y : sequence of float, optional
        Noise autocorrelation along x and along y at lags 1, 2, ... (pixels), e.g. as
        measured on a real map; both or neither.
    """

    def __init__(self, *, seed: int, tag: int, width: int, rms: float, beam_sigma_px: float,
                 acf_x: tuple[float, ...] | None = None,
                 acf_y: tuple[float, ...] | None = None):
        self.seed, self.tag, self.width, self.rms = int(seed), int(tag), int(width), float(rms)
        if (acf_x is None) != (acf_y is None):
            raise ValueError("give both acf_x and acf_y, or neither")
        if acf_x is not None and acf_y is not None:
            kx, ky = acf_kernel(acf_x), acf_kernel(acf_y)
            half = max(kx.size, ky.size) // 2
            kx, ky = (np.pad(k, half - k.size // 2) for k in (kx, ky))
            self.margin = max(1, half)
        else:
            kx, self.margin = noise_kernel(beam_sigma_px)
            ky = kx
        self.kernel_x, self.kernel_y = kx, ky
        # standard deviation of the 2-D separable filter output for unit white noise
        self._scale = self.rms / math.sqrt(float(np.sum(kx * kx)) * float(np.sum(ky * ky)))

    def _row(self, r: int) -> NDArray[np.float32]:
        key = 2 * r if r >= 0 else -2 * r - 1  # non-negative, one-to-one
        ss = np.random.SeedSequence([self.seed, self.tag, 0x5EED, key])
        rng = np.random.Generator(np.random.PCG64(ss))
        return rng.standard_normal(self.width + 2 * self.margin, dtype=np.float32)

    def strip(self, y0: int, y1: int) -> NDArray[np.float32]:
        """Rows ``y0 <= y < y1`` of the noise image, shape (y1 - y0, width), Jy/beam."""
        m = self.margin
        white = np.stack([self._row(r) for r in range(y0 - m, y1 + m)])
        b = separable_correlate(white, self.kernel_x, self.kernel_y, m)
        b *= np.float32(self._scale)
        return b
