"""Pixel geometry of a circular Gaussian restoring beam, shared by the image and cube skies."""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray
from scipy.ndimage import correlate1d

__all__ = ["FWHM_PER_SIGMA", "BeamGeometry", "noise_kernel", "separable_correlate"]

#: FWHM of a Gaussian in units of its sigma: ``2 sqrt(2 ln 2)``.
FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))


class BeamGeometry:
    """Mixin of a (frozen) dataclass with ``pixel_arcsec`` and ``beam_fwhm_arcsec`` fields."""

    pixel_arcsec: float
    beam_fwhm_arcsec: float

    @property
    def beam_sigma_px(self) -> float:
        """Gaussian sigma of the restoring beam, pixels."""
        return self.beam_fwhm_arcsec / self.pixel_arcsec / FWHM_PER_SIGMA

    @property
    def beam_area_px(self) -> float:
        """Beam solid angle, pixels (``2 pi sigma^2``): flux (Jy) = sum (Jy/beam) / area."""
        return 2.0 * math.pi * self.beam_sigma_px ** 2


def noise_kernel(beam_sigma_px: float) -> tuple[NDArray[np.float64], int]:
    """One axis of the filter that correlates white noise on the beam.

    A Gaussian of sigma ``beam_sigma_px / sqrt(2)`` out to 4 sigmas, so that filtered
    white noise has the beam as its autocorrelation.

    Parameters
    ----------
    beam_sigma_px : float
        Restoring-beam sigma, pixels.

    Returns
    -------
    kernel : (2 margin + 1,) float64
        Unnormalised weights (peak 1).
    margin : int
        Half-width, pixels (>= 1).
    """
    sigma = beam_sigma_px / math.sqrt(2.0)
    margin = max(1, math.ceil(4.0 * sigma))
    t = np.arange(-margin, margin + 1, dtype=np.float64)
    return np.exp(-0.5 * (t / sigma) ** 2), margin


def separable_correlate(white: NDArray[np.float32], kernel_x: NDArray[np.floating],
                        kernel_y: NDArray[np.floating], margin: int) -> NDArray[np.float32]:
    """Correlate white noise along x, then y, and cut away its margins.

    Parameters
    ----------
    white : (..., ny + 2 margin, nx + 2 margin) float32
        White noise with ``margin`` extra pixels on every side of the last two axes.
    kernel_x, kernel_y : 1-D float
        Weights along x (last axis) and y.
    margin : int

    Returns
    -------
    (..., ny, nx) float32
        Unscaled (its rms is ``sqrt(sum(kx^2) sum(ky^2))`` for unit white noise).
    """
    m = margin
    nx, ny = white.shape[-1] - 2 * m, white.shape[-2] - 2 * m
    a = correlate1d(white, kernel_x, axis=-1, mode="constant")[..., m:m + nx]
    b = correlate1d(a, kernel_y, axis=-2, mode="constant")[..., m:m + ny, :]
    out: NDArray[np.float32] = b
    return out
