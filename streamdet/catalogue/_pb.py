"""Primary-beam model: read a PB image from FITS and sample it at sky positions.

The SDC1 560 MHz beam (``PrimaryBeam_B1.fits``) is a 36 x 33 pixel image of
~0.081 deg pixels, SIN projection centred on (RA 0, Dec -30), peak 0.999 at the
reference pixel, down to ~0.007 at the corners. Its header has NAXIS = 2 but also
carries FREQ and STOKES axis keywords (astropy then builds a 4-axis WCS and warns);
only the celestial part of the WCS is used. Dimensionless (a gain in [0, 1]).

The map is cut asymmetrically: it reaches only ~1.1 deg from the beam centre on
one side (where the response is still ~0.4), while an SDC1 560 MHz image is
5.46 deg wide. ``outside="radial"`` therefore extrapolates beyond the map with
the map's own azimuthally averaged profile around the beam centre (CRVAL), which
the map samples out to ~2.3 deg (response ~0.01); the beam is slightly
elliptical, so such values carry ~15% errors.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from astropy.coordinates import angular_separation
from astropy.io import fits
from astropy.wcs import WCS, FITSFixedWarning
from numpy.typing import ArrayLike, NDArray

from ..errors import (
    InvalidFITSError,
    StreamdetFileNotFoundError,
    StreamdetValueError,
    WCSMissingError,
)

__all__ = ["PrimaryBeam"]


@dataclass(frozen=True, eq=False)
class PrimaryBeam:
    """A primary-beam response image with its celestial WCS.

    Attributes
    ----------
    data : (ny, nx) float64
        Beam response (dimensionless gain), row ``y``, column ``x``.
    wcs : astropy.wcs.WCS
        Two-axis celestial WCS of ``data`` (0-based pixel convention in use).
    source : str
        Where the beam came from (file path), for provenance.
    """

    data: NDArray[np.float64]
    wcs: WCS
    source: str = ""

    def __post_init__(self) -> None:
        if self.data.ndim != 2 or min(self.data.shape) < 1:
            raise StreamdetValueError(f"primary beam data must be 2D, got shape {self.data.shape}")
        if self.wcs.naxis != 2 or not self.wcs.has_celestial:
            raise WCSMissingError(f"primary beam WCS must be 2D celestial, got {self.wcs.naxis} "
                                  f"axes {list(self.wcs.wcs.ctype)}")

    @classmethod
    def from_fits(cls, path: str | os.PathLike[str], *, hdu: int | str = 0) -> PrimaryBeam:
        """Read a primary-beam image from a FITS file.

        Parameters
        ----------
        path : str or os.PathLike
            FITS file holding the beam image; extra axes of length 1 (FREQ, STOKES)
            are dropped.
        hdu : int or str
            HDU index or name.

        Returns
        -------
        PrimaryBeam

        Raises
        ------
        StreamdetFileNotFoundError
            The file does not exist.
        InvalidFITSError
            Not FITS, no image in the HDU, or more than one plane.
        WCSMissingError
            The header has no celestial WCS.
        """
        p = Path(path)
        if not p.is_file():
            raise StreamdetFileNotFoundError(f"primary beam file {str(p)!r} does not exist")
        try:
            with fits.open(p, memmap=False) as hdul:
                h = hdul[hdu]
                header = h.header.copy()
                raw = h.data
                data = None if raw is None else np.array(raw, dtype=np.float64)
        except (OSError, KeyError, IndexError, TypeError, ValueError) as exc:
            raise InvalidFITSError(f"cannot read primary beam {str(p)!r} (hdu {hdu!r}): "
                                   f"{exc}") from exc
        if data is None or data.ndim < 2:
            raise InvalidFITSError(f"primary beam {str(p)!r} hdu {hdu!r} holds no image")
        extra = data.shape[:-2]
        if any(n != 1 for n in extra):
            raise InvalidFITSError(f"primary beam {str(p)!r} has shape {data.shape}; expected "
                                   "one plane (extra axes of length 1)")
        data = data.reshape(data.shape[-2:])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FITSFixedWarning)
            try:
                wcs = WCS(header)
            except Exception as exc:  # astropy raises several types for bad WCS headers
                raise WCSMissingError(f"primary beam {str(p)!r} has an unusable WCS: "
                                      f"{exc}") from exc
        if not wcs.has_celestial:
            raise WCSMissingError(f"primary beam {str(p)!r} has no celestial WCS "
                                  f"(CTYPE {list(wcs.wcs.ctype)})")
        cel = wcs.celestial
        if cel.wcs.lng != 0 or cel.wcs.lat != 1:
            raise WCSMissingError(f"primary beam {str(p)!r}: expected longitude on axis 1 and "
                                  f"latitude on axis 2, got CTYPE {list(cel.wcs.ctype)}")
        return cls(data=data, wcs=cel, source=str(p))

    @property
    def shape(self) -> tuple[int, int]:
        """``(ny, nx)`` of the beam image."""
        return (int(self.data.shape[0]), int(self.data.shape[1]))

    def radial_profile(self) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Azimuthally averaged response around the beam centre (the WCS CRVAL).

        Returns
        -------
        radius : (K,) float64
            Mean separation of the pixels of each annulus (one pixel wide), degrees.
        value : (K,) float64
            Mean finite response of those pixels.
        """
        ny, nx = self.shape
        yy, xx = np.mgrid[0:ny, 0:nx]
        lon, lat = self.wcs.pixel_to_world_values(xx.ravel(), yy.ravel())
        lon0, lat0 = (np.deg2rad(float(v)) for v in self.wcs.wcs.crval)
        sep = np.rad2deg(angular_separation(np.deg2rad(lon), np.deg2rad(lat), lon0, lat0))
        vals = self.data.ravel()
        ok = np.isfinite(sep) & np.isfinite(vals)
        step = float(np.mean([abs(q.to_value("deg")) for q in self.wcs.proj_plane_pixel_scales()]))
        k = np.floor(sep[ok] / step).astype(np.int64)
        n = np.bincount(k)
        used = n > 0
        radius = np.bincount(k, weights=sep[ok])[used] / n[used]
        value = np.bincount(k, weights=vals[ok])[used] / n[used]
        return radius, value

    def response(self, ra: ArrayLike, dec: ArrayLike, *,
                 outside: Literal["nan", "nearest", "radial"] = "nan") -> NDArray[np.float64]:
        """Beam response at sky positions, bilinearly interpolated.

        Pixel ``i`` of the beam image has its value at pixel coordinate ``i``
        (0-based); positions between pixel centres are interpolated bilinearly,
        positions in the outer half pixel take the edge values.

        Parameters
        ----------
        ra, dec : array_like, (N,)
            ICRS right ascension and declination, degrees (any RA wrap).
        outside : {"nan", "nearest", "radial"}
            Positions beyond the image footprint (more than half a pixel outside)
            get NaN, the value of the nearest edge, or the value of the map's
            :meth:`radial_profile` at their separation from the beam centre (NaN
            beyond the outermost annulus).

        Returns
        -------
        (N,) float64 ndarray
            Dimensionless response; NaN where undefined (outside, or a NaN in the beam).
        """
        if outside not in ("nan", "nearest", "radial"):
            raise StreamdetValueError(
                f"outside must be 'nan', 'nearest' or 'radial', got {outside!r}")
        ra_a = np.atleast_1d(np.asarray(ra, dtype=np.float64))
        dec_a = np.atleast_1d(np.asarray(dec, dtype=np.float64))
        if ra_a.shape != dec_a.shape or ra_a.ndim != 1:
            raise StreamdetValueError(f"ra and dec must be 1D of equal length, got shapes "
                                      f"{ra_a.shape} and {dec_a.shape}")
        if ra_a.size == 0:
            return np.zeros(0, np.float64)
        px, py = self.wcs.world_to_pixel_values(ra_a, dec_a)
        px = np.asarray(px, np.float64)
        py = np.asarray(py, np.float64)
        value = _bilinear(self.data, px, py, outside="nearest" if outside == "nearest" else "nan")
        if outside == "radial":
            ny, nx = self.shape
            beyond = ~((px >= -0.5) & (px <= nx - 0.5) & (py >= -0.5) & (py <= ny - 0.5))
            if beyond.any():
                radius, prof = self.radial_profile()
                lon0, lat0 = (np.deg2rad(float(v)) for v in self.wcs.wcs.crval)
                sep = np.rad2deg(angular_separation(np.deg2rad(ra_a[beyond]),
                                                    np.deg2rad(dec_a[beyond]), lon0, lat0))
                value[beyond] = np.interp(sep, radius, prof, left=prof[0], right=np.nan)
        return value


def _bilinear(data: NDArray[np.float64], px: NDArray[np.float64], py: NDArray[np.float64], *,
              outside: str) -> NDArray[np.float64]:
    """Bilinear sample of ``data[y, x]`` at 0-based pixel coordinates ``(px, py)``."""
    ny, nx = data.shape
    good = np.isfinite(px) & np.isfinite(py)
    inside = good & (px >= -0.5) & (px <= nx - 0.5) & (py >= -0.5) & (py <= ny - 0.5)
    x = np.clip(np.where(good, px, 0.0), 0.0, nx - 1.0)
    y = np.clip(np.where(good, py, 0.0), 0.0, ny - 1.0)
    x0 = np.minimum(np.floor(x).astype(np.int64), max(nx - 2, 0))
    y0 = np.minimum(np.floor(y).astype(np.int64), max(ny - 2, 0))
    x1 = np.minimum(x0 + 1, nx - 1)
    y1 = np.minimum(y0 + 1, ny - 1)
    fx = x - x0
    fy = y - y0
    v = ((1 - fx) * (1 - fy) * data[y0, x0] + fx * (1 - fy) * data[y0, x1]
         + (1 - fx) * fy * data[y1, x0] + fx * fy * data[y1, x1])
    keep = inside if outside == "nan" else good
    return np.where(keep, v, np.nan)
