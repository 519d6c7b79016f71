"""Rendering of HI galaxies as rotating inclined disks into channel slabs of a cube.

The disk model
--------------
* **Surface density**: flat inside a core radius ``s``, exponential outside with scale
  length ``EDGE_SCALE`` x R_HI (Wang et al. 2016: the outer HI profiles of galaxies are
  exponential with a scale length of ~0.2 R_HI), normalised so that ``Sigma(R_HI) = 1
  Msun/pc^2`` for the galaxy's mass (``s`` solved per galaxy; a galaxy too light for that
  even with ``s = R_HI`` keeps ``s = R_HI``, one too heavy ``s = 0``), truncated at ``s + 6``
  scale lengths.
* **Thickness**: intrinsic axis ratio ``Q0``; the projected minor axis is
  ``sqrt(cos^2 i + Q0^2 sin^2 i)`` of the major.
* **Rotation**: ``v(r) = v_flat (1 - exp(-r / r_t))`` with ``r_t = RISE_SCALE`` x R_HI;
  the line-of-sight velocity ``v(r) sin i cos(phi)`` (phi from the receding major axis,
  which points at the PA, east of north), plus a Gaussian velocity dispersion of
  ``SIGMA_V`` km/s.
* The disk is sampled by a polar grid of "particles" (``N_RING`` rings x ``N_AZ``
  azimuths, weights Sigma r dr dphi summing to the line flux). Each particle's emission,
  a Gaussian in frequency of sigma ``freq SIGMA_V / c`` centred at
  ``freq (1 - v_los / c)``, is integrated over each 30 kHz channel (the channel's boxcar
  response), deposited on a sub-pixel grid (5, 3 or 1 sub-pixels per pixel side for
  galaxies of R_HI < 1.5, < 5 or more pixels), convolved with the circular Gaussian
  restoring beam and sampled at the pixel centres, in Jy/beam. So a galaxy's voxels
  summed, times the channel width (Hz), divided by the beam area (pixels), give its line
  flux (Jy Hz), up to what falls outside the band.
* The truth's w20 is measured on the same particles' line profile (1 km/s bins, the
  dispersion included, before channelisation): the width between the outermost points at
  20 % of the peak.

Every stamp is a pure function of its galaxy's parameters; a slab sums the stamps that
touch it in one fixed order, so the cube does not depend on the slab height.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from numpy.typing import NDArray
from scipy.ndimage import gaussian_filter
from scipy.special import ndtr

from ._beam import BeamGeometry
from ._cube_population import C_KMS, Galaxies

__all__ = ["CubeGrid", "SlabRenderer", "core_fraction", "line_width", "particles"]

#: Exponential edge scale length, in units of R_HI.
EDGE_SCALE = 0.18
#: Rotation-curve rise scale, in units of R_HI.
RISE_SCALE = 0.2
#: Intrinsic axis ratio of the HI disk.
Q0 = 0.15
#: Gas velocity dispersion, km/s.
SIGMA_V = 8.0
N_RING = 48
N_AZ = 96
_EDGE_EXTENT = 6.0  # scale lengths beyond the core


@dataclasses.dataclass(frozen=True)
class CubeGrid(BeamGeometry):
    """Geometry of a cube: pixels, channels, beam.

    Attributes
    ----------
    nx, ny, nz : int
        Shape (FITS NAXIS1, NAXIS2, NAXIS3).
    pixel_arcsec : float
        Pixel side.
    beam_fwhm_arcsec : float
        FWHM of the circular restoring beam.
    freq0 : float
        Frequency of channel 0's centre, Hz.
    dfreq : float
        Channel width (and spacing), Hz, > 0.
    """

    nx: int
    ny: int
    nz: int
    pixel_arcsec: float
    beam_fwhm_arcsec: float
    freq0: float
    dfreq: float


def core_fraction(log_mass: NDArray[np.float64],
                  d_hi_kpc: NDArray[np.float64]) -> NDArray[np.float64]:
    """Core radius over R_HI of each galaxy's disk, shape (n,), in [0, 1].

    Solves ``M = A (pi s^2 + 2 pi h (s + h))`` with ``A = exp((R - s) / h)`` (Msun, pc;
    ``h = EDGE_SCALE R``), i.e. ``Sigma(R_HI) = 1 Msun/pc^2``, by bisection on ``s``.
    """
    lm = np.asarray(log_mass, np.float64) * math.log(10.0)
    r = np.asarray(d_hi_kpc, np.float64) * 500.0  # radius, pc
    h = EDGE_SCALE * r

    def log_m(s: NDArray[np.float64]) -> NDArray[np.float64]:
        return (r - s) / h + np.log(math.pi * s ** 2 + 2.0 * math.pi * h * (s + h))

    lo = np.zeros_like(r)
    hi = r.copy()
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        heavier = log_m(mid) > lm  # the mass at this core is too large: core bigger
        lo = np.where(heavier, mid, lo)
        hi = np.where(heavier, hi, mid)
    return np.clip(0.5 * (lo + hi) / r, 0.0, 1.0)


def particles(*, r_px: float, core: float, inc_deg: float, pa_deg: float,
              v_flat: float) -> tuple[NDArray[np.float64], NDArray[np.float64],
                                      NDArray[np.float64], NDArray[np.float64]]:
    """The disk's particles: pixel offsets, line-of-sight velocity and weight.

    Parameters
    ----------
    r_px : float
        R_HI (half of the HI diameter), pixels.
    core : float
        Core radius over R_HI (:func:`core_fraction`).
    inc_deg, pa_deg : float
        Inclination and position angle (receding major axis, east of north), deg.
    v_flat : float
        Flat rotation velocity, km/s.

    Returns
    -------
    dx, dy : ndarray, shape (N_RING * N_AZ,)
        Offsets from the centre along the pixel axes (x towards lower RA, y north), px.
    v : ndarray, shape (N_RING * N_AZ,)
        Line-of-sight velocity relative to the systemic, km/s (positive receding).
    w : ndarray, shape (N_RING * N_AZ,)
        Weights, summing to 1.
    """
    rmax = core + _EDGE_EXTENT * EDGE_SCALE
    dr = rmax / N_RING
    rho = (np.arange(N_RING) + 0.5) * dr                      # in units of R_HI
    sigma = np.where(rho < core, 1.0, np.exp(-(rho - core) / EDGE_SCALE))
    ring_w = sigma * rho * dr
    dphi = 2.0 * math.pi / N_AZ
    phi = (np.arange(N_AZ)[None, :] + 0.5 + 0.5 * (np.arange(N_RING)[:, None] % 2)) * dphi
    inc = math.radians(inc_deg)
    pa = math.radians(pa_deg)
    q = math.sqrt(math.cos(inc) ** 2 + (Q0 * math.sin(inc)) ** 2)
    r = rho[:, None] * r_px
    xp = r * np.cos(phi)                                       # along the receding major axis
    yp = r * np.sin(phi) * q
    east = xp * math.sin(pa) + yp * math.cos(pa)
    north = xp * math.cos(pa) - yp * math.sin(pa)
    vrot = v_flat * (1.0 - np.exp(-rho / RISE_SCALE))
    v = vrot[:, None] * math.sin(inc) * np.cos(phi)
    w = np.broadcast_to(ring_w[:, None], phi.shape) / (N_AZ * float(np.sum(ring_w)))
    return (-east).ravel(), north.ravel(), v.ravel(), np.ascontiguousarray(w).ravel()


def _r_px(g: Galaxies, i: int, grid: CubeGrid) -> float:
    return float(g.hi_size[i]) / 2.0 / grid.pixel_arcsec


def line_width(g: Galaxies, grid: CubeGrid) -> NDArray[np.float64]:
    """w20 of each galaxy's line profile (km/s), shape (n,).

    The profile is the particles' velocities histogrammed in 1 km/s bins and convolved
    with the dispersion ``SIGMA_V``; w20 is the width between the outermost points at
    20 % of its peak (linearly interpolated).
    """
    core = core_fraction(g.log_mass, g.d_hi_kpc)
    half = 5 * math.ceil(SIGMA_V)
    t = np.arange(-half, half + 1, dtype=np.float64)
    kern = np.exp(-0.5 * (t / SIGMA_V) ** 2)
    out = np.empty(len(g))
    for i in range(len(g)):
        _, _, v, w = particles(r_px=_r_px(g, i, grid), core=float(core[i]),
                               inc_deg=float(g.inc[i]), pa_deg=float(g.pa[i]),
                               v_flat=float(g.v_flat[i]))
        vmax = float(np.max(np.abs(v))) + half + 2
        nb = 2 * math.ceil(vmax) + 1
        edges = np.arange(nb + 1, dtype=np.float64) - (nb / 2.0)
        hist, _ = np.histogram(v, bins=edges, weights=w)
        prof = np.convolve(hist, kern, mode="same")
        level = 0.2 * float(prof.max())
        above = np.nonzero(prof >= level)[0]
        a, b = int(above[0]), int(above[-1])
        centres = 0.5 * (edges[1:] + edges[:-1])
        # interpolate the crossings outside the first/last bins above the level
        left = centres[a] - (prof[a] - level) / max(prof[a] - prof[a - 1], 1e-300)
        right = centres[b] + (prof[b] - level) / max(prof[b] - prof[b + 1], 1e-300)
        out[i] = right - left
    return out


@dataclasses.dataclass
class _Stamp:
    c0: int
    y0: int
    x0: int
    data: NDArray[np.float64]  # (nch, ny, nx) Jy/beam


class SlabRenderer:
    """Render galaxies into channel slabs ``[z0, z1)`` of a cube.

    Parameters
    ----------
    galaxies : Galaxies
        The population (positions in pixels of this grid).
    grid : CubeGrid
        The cube.

    Notes
    -----
    Slabs must be asked for in increasing, non-overlapping order (as the FITS file is
    written); a galaxy's stamp is made when the first slab it touches is rendered and
    dropped after its last.
    """

    def __init__(self, galaxies: Galaxies, grid: CubeGrid):
        self.g = galaxies
        self.grid = grid
        self.core = core_fraction(galaxies.log_mass, galaxies.d_hi_kpc)
        n = len(galaxies)
        vmax = (galaxies.v_flat * np.sin(np.radians(galaxies.inc)) + 6.0 * SIGMA_V) / C_KMS
        f_min = galaxies.freq * (1.0 - vmax)
        f_max = galaxies.freq * (1.0 + vmax)
        self.c_lo = np.floor((f_min - grid.freq0) / grid.dfreq + 0.5).astype(np.int64) - 1
        self.c_hi = np.ceil((f_max - grid.freq0) / grid.dfreq - 0.5).astype(np.int64) + 1
        self.c_lo = np.maximum(self.c_lo, 0)
        self.c_hi = np.minimum(self.c_hi, grid.nz - 1)
        live = self.c_lo <= self.c_hi
        idx = np.arange(n)[live]
        self.order = idx[np.lexsort((idx, self.c_lo[idx]))]
        self._next = 0
        self._active: dict[int, _Stamp] = {}

    def stamp(self, i: int) -> _Stamp:
        """Galaxy ``i``'s stamp over its channels ``c_lo[i]..c_hi[i]``, Jy/beam."""
        g, grid = self.g, self.grid
        r_px = _r_px(g, i, grid)
        k = 5 if r_px < 1.5 else (3 if r_px < 5.0 else 1)
        dx, dy, v, w = particles(r_px=r_px, core=float(self.core[i]),
                                 inc_deg=float(g.inc[i]), pa_deg=float(g.pa[i]),
                                 v_flat=float(g.v_flat[i]))
        sb = grid.beam_sigma_px
        extent = r_px * (float(self.core[i]) + _EDGE_EXTENT * EDGE_SCALE)
        hw = math.ceil(extent + 4.5 * sb) + 1
        xc, yc = round(float(g.x[i])), round(float(g.y[i]))
        npix = 2 * hw + 1
        nsub = npix * k
        ox, oy = xc - hw - 0.5, yc - hw - 0.5   # pixel coordinate of the stamp's corner
        ix = np.clip(np.floor((float(g.x[i]) + dx - ox) * k).astype(np.int64), 0, nsub - 1)
        iy = np.clip(np.floor((float(g.y[i]) + dy - oy) * k).astype(np.int64), 0, nsub - 1)
        c0, c1 = int(self.c_lo[i]), int(self.c_hi[i])
        f_sys = float(g.freq[i])
        fp = f_sys * (1.0 - v / C_KMS)
        sig_f = f_sys * SIGMA_V / C_KMS
        chan = np.arange(c0, c1 + 1, dtype=np.float64)
        edges = grid.freq0 + (np.concatenate([chan - 0.5, [chan[-1] + 0.5]])) * grid.dfreq
        cdf = ndtr((edges[None, :] - fp[:, None]) / sig_f)
        spec = np.diff(cdf, axis=1) * (w * float(g.flux[i]) / grid.dfreq)[:, None]  # Jy
        flat = iy * nsub + ix
        order = np.argsort(flat, kind="stable")
        uniq, starts = np.unique(flat[order], return_index=True)
        sums = np.add.reduceat(spec[order], starts, axis=0)
        nch = c1 - c0 + 1
        sub = np.zeros((nch, nsub * nsub))
        sub[:, uniq] = sums.T
        sub3 = gaussian_filter(sub.reshape(nch, nsub, nsub), sigma=(0.0, sb * k, sb * k),
                               mode="constant", truncate=4.0)
        beam_sub = 2.0 * math.pi * (sb * k) ** 2
        data = sub3[:, k // 2::k, k // 2::k] * beam_sub
        return _Stamp(c0=c0, y0=yc - hw, x0=xc - hw, data=data)

    def render(self, z0: int, z1: int) -> NDArray[np.float64]:
        """Channels ``z0 <= c < z1``: shape (z1 - z0, ny, nx), Jy/beam (float64)."""
        grid = self.grid
        out = np.zeros((z1 - z0, grid.ny, grid.nx))
        while self._next < len(self.order) and self.c_lo[self.order[self._next]] < z1:
            i = int(self.order[self._next])
            self._active[i] = self.stamp(i)
            self._next += 1
        for st in self._active.values():  # insertion order = the fixed global order
            self._add(out, st, z0, z1)
        for i in [i for i in self._active if self.c_hi[i] < z1]:
            del self._active[i]
        return out

    def _add(self, out: NDArray[np.float64], st: _Stamp, z0: int, z1: int) -> None:
        nch, sy, sx = st.data.shape
        a0, a1 = max(z0, st.c0), min(z1, st.c0 + nch)
        y0, y1 = max(0, st.y0), min(self.grid.ny, st.y0 + sy)
        x0, x1 = max(0, st.x0), min(self.grid.nx, st.x0 + sx)
        if a0 >= a1 or y0 >= y1 or x0 >= x1:
            return
        out[a0 - z0:a1 - z0, y0:y1, x0:x1] += st.data[a0 - st.c0:a1 - st.c0,
                                                      y0 - st.y0:y1 - st.y0,
                                                      x0 - st.x0:x1 - st.x0]
