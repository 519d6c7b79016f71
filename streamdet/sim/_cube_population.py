"""The physical HI galaxy population of the simulated SDC2-like cubes.

Every galaxy is drawn from physical relations, then selected by a soft line-flux floor as
the SDC2 sky model was (its truth catalogue lists no galaxy below ~1.3 Jy Hz):

* **Cosmology**: flat Lambda-CDM, H0 = 67.74 km/s/Mpc, Omega_m = 0.3089 (Planck 2015).
* **Redshift from frequency**: ``z = F_HI / nu - 1`` with the HI rest frequency
  ``F_HI = 1420.405751 MHz``.
* **HI mass function** (ALFALFA, Jones et al. 2018, MNRAS 477, 2): a Schechter function
  ``phi(M) dlog10 M = ln(10) phi* (M / M*)^(alpha + 1) exp(-M / M*) dlog10 M`` with
  ``phi* = 4.5e-3 h70^3 Mpc^-3 dex^-1``, ``log10 M* = 9.94 - 2 log10 h70`` (Msun),
  ``alpha = -1.25``, no evolution; galaxies are Poisson in comoving volume.
* **Line flux from mass** (Meyer et al. 2017, PASA 34, 52):
  ``M_HI = 2.356e5 D_L^2 S_V / (1 + z)`` (Msun, Mpc, Jy km/s) with ``S_V`` the line
  integral over the observed-frame velocity ``dV = c dnu / nu``; in frequency units
  ``M_HI = 49.7 D_L^2 S`` with ``S`` in Jy Hz (``2.356e5 c / F_HI``, no ``1 + z``).
* **Selection**: a galaxy is in the sky model with probability
  ``Phi((log10 S - log10 FLUX_FLOOR) / FLOOR_WIDTH_DEX)`` (a soft floor of
  :data:`FLUX_FLOOR` Jy Hz, fitted to the low end of the real truth's flux distribution).
* **HI size** (Wang et al. 2016, MNRAS 460, 2143): ``log10 D_HI = 0.506 log10 M_HI - 3.293``
  (kpc, Msun; the diameter at 1 Msun/pc^2), plus :data:`SIZE_OFFSET_DEX` and a Gaussian
  scatter, both measured on the real SDC2 truth (its sizes sit
  0.10 dex above the relation, scatter 0.19 dex at log M = 8.25 falling to 0.10 above 9,
  :func:`size_scatter`); angular size ``D_HI / D_A``.
* **Rotation velocity**: an HI Tully-Fisher-like relation
  ``log10 v_flat = TF_ZERO + TF_SLOPE (log10 M_HI - 9)`` (km/s) with
  :data:`TF_SCATTER_DEX` scatter; the line width w20 is then measured on the rendered
  disk's line profile (:func:`streamdet.sim._cube_render.line_width`).
* **Orientation**: ``cos i`` uniform in [0, 1] (isotropic), PA uniform in [0, 360) deg
  (the receding half of the major axis, east of north).
* **Positions**: uniform over the cube's footprint (no clustering; the real cube has it,
  which is why its counts per MHz scatter more than Poisson).
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math

import numpy as np
from numpy.typing import NDArray
from scipy.special import ndtr

__all__ = [
    "C_KMS",
    "FLOOR_WIDTH_DEX",
    "FLUX_FLOOR",
    "F_HI",
    "Galaxies",
    "angular_diameter_distance",
    "draw_galaxies",
    "expected_count",
    "hi_mass",
    "himf",
    "line_flux",
    "luminosity_distance",
]

#: HI rest frequency, Hz.
F_HI = 1420.405751e6
#: Speed of light, km/s.
C_KMS = 299792.458
#: Cosmology (Planck 2015: H0 km/s/Mpc, Omega_m).
H0 = 67.74
OMEGA_M = 0.3089
_H70 = H0 / 70.0
#: HI mass function (Jones et al. 2018, ALFALFA 100 %), converted to H0 above.
HIMF_PHI_STAR = 4.5e-3 * _H70 ** 3     # Mpc^-3 dex^-1
HIMF_LOG_MSTAR = 9.94 - 2.0 * math.log10(_H70)  # log10 Msun
HIMF_ALPHA = -1.25
#: M_HI = MASS_PER_FLUX * D_L^2 * S (Msun, Mpc, Jy Hz): 2.356e5 c / F_HI.
MASS_PER_FLUX = 2.356e5 * C_KMS / F_HI
#: Soft line-flux floor of the sky model (Jy Hz) and its width (dex), fitted to the real
#: SDC2 development truth (no galaxy below 1.34 Jy Hz; the counts turn over at 2-2.5).
FLUX_FLOOR = 1.75
FLOOR_WIDTH_DEX = 0.04
#: HI size-mass relation (Wang et al. 2016) and the real truth's offset and scatter.
SIZE_SLOPE = 0.506
SIZE_ZERO = -3.293
SIZE_OFFSET_DEX = 0.10
#: The real truth's size scatter falls with mass (0.19 dex at log M = 8.25, 0.09-0.12
#: above 9): the scatter used is ``clip(0.19 - 0.12 (log M - 8.25), 0.10, 0.19)``.
SIZE_SCATTER_SLOPE = -0.12
#: Tully-Fisher-like relation for the flat rotation velocity (km/s).
TF_ZERO = 2.09
TF_SLOPE = 0.25
TF_SCATTER_DEX = 0.13
#: Lowest mass drawn before selection, log10 Msun (far below any selected galaxy).
_LOG_M_GRID = np.linspace(6.0, 12.0, 2401)


@functools.lru_cache(maxsize=1)
def _distance_table() -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """(z, comoving distance Mpc) on a fine grid, z in [0, 6].

    ``D_C = (c / H0) int_0^z dz' / E(z')`` with ``E = sqrt(Om (1 + z)^3 + 1 - Om)`` (flat,
    no radiation, as astropy's ``FlatLambdaCDM(H0, Om0)``), by the trapezoid rule on
    steps of 1e-4 (relative error < 1e-8).
    """
    z = np.linspace(0.0, 6.0, 60001)
    inv_e = 1.0 / np.sqrt(OMEGA_M * (1.0 + z) ** 3 + (1.0 - OMEGA_M))
    steps = 0.5 * (inv_e[1:] + inv_e[:-1]) * np.diff(z)
    dc = (C_KMS / H0) * np.concatenate([[0.0], np.cumsum(steps)])
    return z, dc


def comoving_distance(z: NDArray[np.float64] | float) -> NDArray[np.float64]:
    """Line-of-sight comoving distance, Mpc, shape of ``z`` (0 <= z <= 6)."""
    zt, dc = _distance_table()
    return np.interp(np.asarray(z, dtype=np.float64), zt, dc)


def luminosity_distance(z: NDArray[np.float64] | float) -> NDArray[np.float64]:
    """Luminosity distance ``(1 + z) D_C``, Mpc, shape of ``z``."""
    zz = np.asarray(z, dtype=np.float64)
    return (1.0 + zz) * comoving_distance(zz)


def angular_diameter_distance(z: NDArray[np.float64] | float) -> NDArray[np.float64]:
    """Angular diameter distance ``D_C / (1 + z)``, Mpc, shape of ``z``."""
    zz = np.asarray(z, dtype=np.float64)
    return comoving_distance(zz) / (1.0 + zz)


def hi_mass(flux_jy_hz: NDArray[np.float64] | float,
            z: NDArray[np.float64] | float) -> NDArray[np.float64]:
    """HI mass (Msun) of a line flux ``S`` (Jy Hz) at redshift ``z``: ``49.7 D_L^2 S``.

    Equivalent to ``2.356e5 D_L^2 S_V / (1 + z)`` with ``S_V = S c / nu_obs`` in Jy km/s.
    """
    return MASS_PER_FLUX * luminosity_distance(z) ** 2 * np.asarray(flux_jy_hz, np.float64)


def line_flux(mass_msun: NDArray[np.float64] | float,
              z: NDArray[np.float64] | float) -> NDArray[np.float64]:
    """Line flux (Jy Hz) of an HI mass (Msun) at redshift ``z``; inverse of :func:`hi_mass`."""
    return np.asarray(mass_msun, np.float64) / (MASS_PER_FLUX * luminosity_distance(z) ** 2)


def himf(log_mass: NDArray[np.float64]) -> NDArray[np.float64]:
    """The HI mass function, galaxies per Mpc^3 per dex, at ``log10 M_HI`` (Msun)."""
    x = 10.0 ** (np.asarray(log_mass, np.float64) - HIMF_LOG_MSTAR)
    return math.log(10.0) * HIMF_PHI_STAR * x ** (HIMF_ALPHA + 1.0) * np.exp(-x)


def size_scatter(log_mass: NDArray[np.float64]) -> NDArray[np.float64]:
    """Scatter (dex) of log10 D_HI about the size-mass relation at ``log10 M_HI``."""
    return np.clip(0.19 + SIZE_SCATTER_SLOPE * (np.asarray(log_mass) - 8.25), 0.10, 0.19)


def selection(flux_jy_hz: NDArray[np.float64]) -> NDArray[np.float64]:
    """Probability that a galaxy of line flux ``S`` (Jy Hz) is in the sky model."""
    s = np.maximum(np.asarray(flux_jy_hz, np.float64), 1e-300)
    return np.asarray(ndtr((np.log10(s) - math.log10(FLUX_FLOOR)) / FLOOR_WIDTH_DEX))


@dataclasses.dataclass(frozen=True)
class Galaxies:
    """A drawn HI population: arrays of shape (n,), one entry per galaxy.

    Attributes
    ----------
    x, y : ndarray
        0-based pixel position of the dynamical centre (float).
    freq : ndarray
        Observed frequency of the systemic velocity (the truth's ``central_freq``), Hz.
    z : ndarray
        Redshift ``F_HI / freq - 1``.
    log_mass : ndarray
        log10 HI mass, Msun.
    flux : ndarray
        Integrated line flux, Jy Hz (the truth's ``line_flux_integral``).
    d_hi_kpc : ndarray
        HI diameter at 1 Msun/pc^2, kpc.
    hi_size : ndarray
        The same, arcsec (the truth's ``hi_size``).
    v_flat : ndarray
        Flat rotation velocity, km/s.
    inc : ndarray
        Inclination, deg (0 face-on).
    pa : ndarray
        Position angle of the receding major axis, deg east of north, [0, 360).
    """

    x: NDArray[np.float64]
    y: NDArray[np.float64]
    freq: NDArray[np.float64]
    z: NDArray[np.float64]
    log_mass: NDArray[np.float64]
    flux: NDArray[np.float64]
    d_hi_kpc: NDArray[np.float64]
    hi_size: NDArray[np.float64]
    v_flat: NDArray[np.float64]
    inc: NDArray[np.float64]
    pa: NDArray[np.float64]

    def __len__(self) -> int:
        return int(self.x.shape[0])


def _bins(f_lo: float, f_hi: float) -> NDArray[np.float64]:
    """Frequency bin edges of at most 1 MHz over [f_lo, f_hi], Hz."""
    nb = max(1, math.ceil((f_hi - f_lo) / 1e6))
    return np.linspace(f_lo, f_hi, nb + 1)


def _shell_volume(f_a: float, f_b: float, solid_angle_sr: float) -> float:
    """Comoving volume (Mpc^3) between frequencies f_a < f_b over ``solid_angle_sr``."""
    z_near, z_far = F_HI / f_b - 1.0, F_HI / f_a - 1.0
    d = comoving_distance(np.array([z_near, z_far]))
    return float(solid_angle_sr / 3.0 * (d[1] ** 3 - d[0] ** 3))


def expected_count(f_lo: float, f_hi: float, solid_angle_sr: float) -> float:
    """Expected number of selected galaxies between ``f_lo`` and ``f_hi`` (Hz) over
    ``solid_angle_sr`` (sr): volume x the HI mass function x the selection."""
    edges = _bins(f_lo, f_hi)
    lm = _LOG_M_GRID
    dlm = float(lm[1] - lm[0])
    total = 0.0
    for a, b in itertools.pairwise(edges):
        zc = F_HI / (0.5 * (a + b)) - 1.0
        p = selection(line_flux(10.0 ** lm, zc))
        total += _shell_volume(a, b, solid_angle_sr) * float(np.sum(himf(lm) * p)) * dlm
    return total


def draw_galaxies(rng: np.random.Generator, *, nx: int, ny: int, pixel_deg: float,
                  f_lo: float, f_hi: float) -> Galaxies:
    """Draw the selected HI galaxies of a cube's footprint and band.

    Parameters
    ----------
    rng : numpy.random.Generator
        The only source of randomness.
    nx, ny : int
        Footprint in pixels; positions are uniform in [-0.5, n - 0.5).
    pixel_deg : float
        Pixel side, deg (solid angle ``nx ny pixel^2``).
    f_lo, f_hi : float
        Band edges, Hz (``0 < f_lo < f_hi < F_HI``).

    Returns
    -------
    Galaxies
        Sorted by frequency bin, then in draw order. ``w20`` is measured later on the
        rendered disks.
    """
    solid = nx * ny * math.radians(pixel_deg) ** 2
    edges = _bins(f_lo, f_hi)
    lm = _LOG_M_GRID
    parts: list[dict[str, NDArray[np.float64]]] = []
    for a, b in itertools.pairwise(edges):
        # candidates above the mass whose flux is 5 floor widths below the floor at the
        # bin's nearest edge, thinned by the selection at their own redshift
        z_near = F_HI / b - 1.0
        s_min = FLUX_FLOOR * 10.0 ** (-5.0 * FLOOR_WIDTH_DEX)
        lm_min = float(np.log10(hi_mass(s_min, z_near)))
        grid = lm[lm >= lm_min]
        dens = himf(grid)
        cdf = np.concatenate([[0.0], np.cumsum(0.5 * (dens[1:] + dens[:-1]) * np.diff(grid))])
        n_exp = _shell_volume(a, b, solid) * float(cdf[-1])
        n = int(rng.poisson(n_exp))
        freq = rng.uniform(a, b, n)
        logm = np.interp(rng.uniform(0.0, cdf[-1], n), cdf, grid)
        z = F_HI / freq - 1.0
        flux = line_flux(10.0 ** logm, z)
        keep = rng.uniform(0.0, 1.0, n) < selection(flux)
        parts.append({"freq": freq[keep], "log_mass": logm[keep], "z": z[keep],
                      "flux": flux[keep]})
    cols = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    n = int(cols["freq"].shape[0])
    x = rng.uniform(-0.5, nx - 0.5, n)
    y = rng.uniform(-0.5, ny - 0.5, n)
    logm = cols["log_mass"]
    log_d = (SIZE_ZERO + SIZE_SLOPE * logm + SIZE_OFFSET_DEX
             + rng.normal(0.0, 1.0, n) * size_scatter(logm))
    d_hi = 10.0 ** log_d
    da_kpc = angular_diameter_distance(cols["z"]) * 1e3
    hi_size = np.degrees(d_hi / da_kpc) * 3600.0
    v_flat = 10.0 ** (TF_ZERO + TF_SLOPE * (logm - 9.0) + rng.normal(0.0, TF_SCATTER_DEX, n))
    inc = np.degrees(np.arccos(rng.uniform(0.0, 1.0, n)))
    pa = rng.uniform(0.0, 360.0, n)
    return Galaxies(x=x, y=y, freq=cols["freq"], z=cols["z"], log_mass=logm,
                    flux=cols["flux"], d_hi_kpc=d_hi, hi_size=hi_size, v_flat=v_flat,
                    inc=inc, pa=pa)
