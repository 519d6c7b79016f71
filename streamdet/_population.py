"""The simulator's bands, primary beam and source population (packaged SDC1 data).

The data files in ``streamdet/data`` are derived from the real SDC1 material by
``tools/make_population.py`` (see its docstring for every choice made there):

* ``sdc1_population.npz``: per band, the true fluxes, sizes, core fractions, size
  and class codes of the SDC1 training truth catalogue (9.2 GHz: the 1.4 GHz
  population moved to 9.2 GHz, because the 9.2 GHz catalogue has only 30 rows),
  the sky density of catalogued sources and the map noise.
* ``pb_560.npz``: the azimuthally averaged 560 MHz primary beam of SDC1.
* ``agn_templates.npz``: 78 real extended radio-galaxy images (the AGN stamps the
  SDC1 sky model drew its steep-spectrum AGN from), 48 x 48 pixels each.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import ArrayLike, NDArray

from .errors import StreamdetValueError

__all__ = [
    "BANDS",
    "POINTING",
    "SIZE_FLOOR_ARCSEC",
    "AgnTemplates",
    "Band",
    "Population",
    "SourceDraw",
    "agn_templates",
    "band",
    "draw_sources",
    "population",
    "primary_beam",
]

_DATA = Path(__file__).resolve().parent / "data"
#: Pointing centre of SDC1 (RA, Dec) in degrees: the primary beam's axis.
POINTING: tuple[float, float] = (0.0, -30.0)
#: Smallest size written or rendered (arcsec): the SDC1 scorer divides by sizes.
SIZE_FLOOR_ARCSEC = 1e-3
# pixel (arcsec) and circular restoring beam FWHM (arcsec) of the SDC1 images
_GEOMETRY = {560: (0.60, 1.5), 1400: (0.24, 0.60), 9200: (0.037, 0.0913)}
#: The SDC1 bands, in MHz.
BANDS: tuple[int, ...] = tuple(_GEOMETRY)


@dataclass(frozen=True)
class Band:
    """Imaging parameters of one SDC1 band.

    Attributes
    ----------
    freq : int
        Centre frequency (MHz).
    pixel_arcsec : float
        Pixel side (arcsec).
    beam_fwhm_arcsec : float
        FWHM of the circular restoring beam (arcsec).
    noise : float
        Rms of the map noise (Jy/beam), as in a 1000 h SDC1 map.
    density : float
        Sky density of truth-catalogue sources (per square degree).
    flux_min : float
        Faintest true flux in the band's SDC1 truth catalogue (Jy).
    """

    freq: int
    pixel_arcsec: float
    beam_fwhm_arcsec: float
    noise: float
    density: float
    flux_min: float

    @property
    def beam_sigma_px(self) -> float:
        """Gaussian sigma of the restoring beam, in pixels."""
        return self.beam_fwhm_arcsec / self.pixel_arcsec / (2.0 * math.sqrt(2.0 * math.log(2.0)))

    @property
    def beam_area_px(self) -> float:
        """Beam solid angle in pixels (2 pi sigma^2): flux (Jy) = sum (Jy/beam) / area."""
        return 2.0 * math.pi * self.beam_sigma_px ** 2


@dataclass(frozen=True)
class Population:
    """The resampled source population of one band (one row per catalogue source).

    Attributes
    ----------
    flux : (M,) float32
        True integrated flux (Jy).
    bmaj, bmin : (M,) float32
        Major and minor size (arcsec; meaning set by ``size``).
    core_frac : (M,) float32
        Core fraction in [0, 1].
    size : (M,) uint8
        1 largest angular scale (lobed AGN), 2 Gaussian FWHM, 3 exponential scale length.
    cls : (M,) uint8
        1 steep-spectrum AGN, 2 flat-spectrum AGN, 3 star-forming galaxy.
    """

    flux: NDArray[np.float32]
    bmaj: NDArray[np.float32]
    bmin: NDArray[np.float32]
    core_frac: NDArray[np.float32]
    size: NDArray[np.uint8]
    cls: NDArray[np.uint8]


@dataclass(frozen=True)
class SourceDraw:
    """Sources drawn for one field, in pixel coordinates (0-based, pixel centre at i).

    Attributes
    ----------
    x, y : (N,) float64
        Core position (pixels).
    flux : (N,) float64
        True flux (Jy).
    bmaj, bmin : (N,) float64
        Sizes (arcsec), floored at :data:`SIZE_FLOOR_ARCSEC`.
    pa : (N,) float64
        Position angle of the major axis, degrees east of north, in [0, 360).
    core_frac : (N,) float64
        Core fraction.
    size, cls : (N,) int64
        Size and class codes.
    template : (N,) int64
        Index of the real AGN image (:func:`agn_templates`) a lobed AGN is drawn
        from; -1 for the other sources.
    mirror : (N,) float64
        +1 or -1: whether the template is mirrored across its major axis.
    """

    x: NDArray[np.float64]
    y: NDArray[np.float64]
    flux: NDArray[np.float64]
    bmaj: NDArray[np.float64]
    bmin: NDArray[np.float64]
    pa: NDArray[np.float64]
    core_frac: NDArray[np.float64]
    size: NDArray[np.int64]
    cls: NDArray[np.int64]
    template: NDArray[np.int64]
    mirror: NDArray[np.float64]

    def __len__(self) -> int:
        return int(self.x.size)


@dataclass(frozen=True)
class AgnTemplates:
    """Real extended radio-galaxy images, major axis along x, core at the centre.

    Attributes
    ----------
    images : (K, T, T) float32
        Brightness (peak 1), row ``y``, column ``x``; the core is at ((T-1)/2, (T-1)/2).
    las : (K,) float64
        Largest angular size along x (template pixels): the 0.5 %-99.5 % flux extent.
    minor : (K,) float64
        The same extent along y (template pixels).
    centroid : (K, 2) float64
        Flux centroid (x, y) relative to the core (template pixels).
    """

    images: NDArray[np.float32]
    las: NDArray[np.float64]
    minor: NDArray[np.float64]
    centroid: NDArray[np.float64]

    def __len__(self) -> int:
        return int(self.las.size)


def _check_freq(freq: int) -> int:
    if isinstance(freq, bool) or not isinstance(freq, (int, np.integer)) or int(freq) not in BANDS:
        raise StreamdetValueError(f"freq must be one of {list(BANDS)} (MHz), got {freq!r}")
    return int(freq)


@functools.lru_cache(maxsize=1)
def _population_file() -> dict[str, NDArray[np.generic]]:
    with np.load(_DATA / "sdc1_population.npz") as npz:
        out = {k: npz[k] for k in npz.files}
    for arr in out.values():
        arr.setflags(write=False)  # shared by every caller
    return out


@functools.lru_cache(maxsize=1)
def _pb_profile() -> tuple[NDArray[np.float64], NDArray[np.float64], float]:
    with np.load(_DATA / "pb_560.npz") as npz:
        return (npz["radius_deg"].astype(np.float64), npz["gain"].astype(np.float64),
                float(npz["freq_mhz"]))


@functools.lru_cache(maxsize=1)
def agn_templates() -> AgnTemplates:
    """The packaged AGN templates (from the SDC1/SDC2 AGN stamps, ``agn_templates.npz``)."""
    with np.load(_DATA / "agn_templates.npz") as npz:
        images = npz["images"].astype(np.float32)
        out = AgnTemplates(images=images, las=npz["las"].astype(np.float64),
                           minor=npz["minor"].astype(np.float64),
                           centroid=npz["centroid"].astype(np.float64))
    for arr in (out.images, out.las, out.minor, out.centroid):
        arr.setflags(write=False)
    return out


def band(freq: int) -> Band:
    """The imaging parameters of an SDC1 band (``freq`` in MHz: 560, 1400 or 9200)."""
    f = _check_freq(freq)
    data = _population_file()
    pixel, fwhm = _GEOMETRY[f]
    return Band(freq=f, pixel_arcsec=pixel, beam_fwhm_arcsec=fwhm,
                noise=float(data[f"b{f}_noise"]), density=float(data[f"b{f}_density"]),
                flux_min=float(data[f"b{f}_flux_min"]))


def population(freq: int) -> Population:
    """The packaged source population of a band (see the module docstring)."""
    f = _check_freq(freq)
    d = _population_file()

    def f32(name: str) -> NDArray[np.float32]:
        return np.asarray(d[f"b{f}_{name}"], dtype=np.float32)

    def u8(name: str) -> NDArray[np.uint8]:
        return np.asarray(d[f"b{f}_{name}"], dtype=np.uint8)

    return Population(flux=f32("flux"), bmaj=f32("bmaj"), bmin=f32("bmin"),
                      core_frac=f32("core_frac"), size=u8("size"), cls=u8("class"))


def primary_beam(separation_deg: ArrayLike, freq: int) -> NDArray[np.float64]:
    """Primary-beam gain at an angular distance from the pointing centre.

    The SDC1 560 MHz beam, azimuthally averaged, its angular scale multiplied by
    ``560 / freq``; linear interpolation in radius, the last tabulated gain (about
    0.014 at 2.26 deg x 560/freq) beyond the table.

    Parameters
    ----------
    separation_deg : float or (N,) array
        Angular distance from :data:`POINTING` (degrees).
    freq : int
        Band (MHz).

    Returns
    -------
    (N,) float64
        Gain in (0, 1], 1 on axis.
    """
    f = _check_freq(freq)
    radius, gain, f0 = _pb_profile()
    r = np.asarray(separation_deg, dtype=np.float64) * (f / f0)
    return np.asarray(np.interp(r, radius, gain), dtype=np.float64)


def draw_sources(rng: np.random.Generator, *, size: int, freq: int) -> SourceDraw:
    """Draw the sources of a ``size`` x ``size`` field: Poisson count, bootstrap rows.

    The count is Poisson with mean ``density x area`` (area = (size x pixel)^2);
    the properties are resampled with replacement from :func:`population`; positions
    are uniform over the image (sub-pixel), position angles uniform in [0, 360).
    Lobed AGN (size 1) get a random real AGN template, randomly mirrored; their
    ``bmin`` becomes the template's minor extent at the drawn LAS (``bmaj``), so
    the truth describes the image.

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of randomness (the draw is a pure function of its state).
    size : int
        Image side (pixels).
    freq : int
        Band (MHz).

    Returns
    -------
    SourceDraw
        The sources, sorted by ``y`` then ``x``.
    """
    b = band(freq)
    pop = population(freq)
    side_deg = size * b.pixel_arcsec / 3600.0
    n = int(rng.poisson(b.density * side_deg * side_deg))
    rows = rng.integers(0, pop.flux.size, size=n)
    x = rng.uniform(-0.5, size - 0.5, size=n)
    y = rng.uniform(-0.5, size - 0.5, size=n)
    pa = rng.uniform(0.0, 360.0, size=n)
    tpl = agn_templates()
    template = rng.integers(0, len(tpl), size=n)
    mirror = np.where(rng.random(n) < 0.5, -1.0, 1.0)
    size_code = pop.size[rows].astype(np.int64)
    lobed = size_code == 1
    template[~lobed] = -1
    mirror[~lobed] = 1.0
    bmaj = np.maximum(pop.bmaj[rows].astype(np.float64), SIZE_FLOOR_ARCSEC)
    bmin = pop.bmin[rows].astype(np.float64)
    bmin[lobed] = bmaj[lobed] * tpl.minor[template[lobed]] / tpl.las[template[lobed]]
    bmin = np.clip(bmin, SIZE_FLOOR_ARCSEC, bmaj)
    order = np.lexsort((x, y))
    return SourceDraw(
        x=x[order], y=y[order], flux=pop.flux[rows].astype(np.float64)[order],
        bmaj=bmaj[order], bmin=bmin[order], pa=pa[order],
        core_frac=pop.core_frac[rows].astype(np.float64)[order], size=size_code[order],
        cls=pop.cls[rows].astype(np.int64)[order], template=template[order].astype(np.int64),
        mirror=mirror[order])
