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

from ..errors import StreamdetValueError
from ._beam import BeamGeometry

__all__ = [
    "BANDS",
    "FAINT_DEPTH",
    "POINTING",
    "SIZE_FLOOR_ARCSEC",
    "AgnTemplates",
    "Band",
    "FaintCounts",
    "Population",
    "SourceDraw",
    "agn_templates",
    "band",
    "draw_sources",
    "faint_counts",
    "population",
    "primary_beam",
]

_DATA = Path(__file__).resolve().parent.parent / "data"
#: Pointing centre of SDC1 (RA, Dec) in degrees: the primary beam's axis.
POINTING: tuple[float, float] = (0.0, -30.0)
#: Smallest size written or rendered (arcsec): the SDC1 scorer divides by sizes.
SIZE_FLOOR_ARCSEC = 1e-3
# pixel (arcsec) and circular restoring beam FWHM (arcsec) of the SDC1 images
_GEOMETRY = {560: (0.60, 1.5), 1400: (0.24, 0.60), 9200: (0.037, 0.0913)}
#: The SDC1 bands, in MHz.
BANDS: tuple[int, ...] = tuple(_GEOMETRY)
#: The faint population reaches down to ``flux_min / FAINT_DEPTH`` (0.8x the noise of the
#: 560 MHz map): fainter sources add next to nothing to the image.
FAINT_DEPTH = 10.0
#: The real sky model's counts below the 560 MHz catalogue's turnover, fitted on the real
#: SDC1 truth of B1_1000h_west (every embedded source, 8,978 in 0.0138 deg^2):
#: dN/dlnS = 112,244 deg^-2 x (S / 1 uJy) ** -0.426 from 0.1 to 7.1 uJy (17 bins of 0.25 in
#: ln S, residuals 0.87-1.10), and next to nothing below 0.1 uJy. The law fitted on the
#: catalogue's own faint end (S^-0.84 from 0.3 uJy) put 2.2x the real counts at 0.3-1 uJy
#: and none at 0.1-0.3 (``benchmarks/calibrate_sim.py``). Band -> (slope, dN/dlnS per
#: deg^2 at 1 uJy, faintest flux in Jy); other bands keep the catalogue's own law.
REAL_FAINT_COUNTS: dict[int, tuple[float, float, float]] = {560: (-0.426, 112_244.0, 1.0e-7)}
_COUNT_BIN = 0.25   # ln-flux bin of the measured counts
_DRAW_BIN = 0.05    # ln-flux bin of the faint draw


@dataclass(frozen=True)
class Band(BeamGeometry):
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


@dataclass(frozen=True)
class FaintCounts:
    """The sky's source counts below the catalogue's turnover (the faint population).

    The SDC1 truth catalogues are incomplete at their faint end: their differential
    counts per ln-flux turn over just above the catalogue's cut, where the real sky's
    keep rising. Below the turnover ``peak`` the counts are extended by the power law
    fitted over ``[peak, 8 peak]``::

        dN/dlnS = exp(log_amp) x (S / 1 Jy) ** slope      (catalogue sources)

    and the faint population fills the gap between that law and the catalogue down
    to ``flux_lo``. At 560 MHz the law is the real sky model's instead
    (:data:`REAL_FAINT_COUNTS`, fitted on the real SDC1 truth down to 0.1 uJy). Its
    sizes follow the catalogue's size-flux relation: a faint
    source copies a donor of the catalogue's faint end (not a lobed AGN) with its
    sizes scaled by ``(S / S_donor) ** size_slope``.

    Attributes
    ----------
    peak : float
        Flux (Jy) of the catalogue's highest count per ln-flux bin.
    slope : float
        Power-law index of dN/dlnS fitted over ``[peak, 8 peak]``.
    log_amp : float
        Natural log of the law's amplitude: catalogue sources per unit ln-flux at 1 Jy
        (the catalogue's density converts it to the sky).
    size_slope : float
        Index of median b_maj against flux over the same range.
    flux_lo : float
        Faintest flux drawn (Jy): ``flux_min / FAINT_DEPTH``.
    edges : (K + 1,) float64
        ln-flux bin edges (Jy) of the draw, ``flux_lo`` to just above ``peak``.
    fraction : (K,) float64
        Expected faint sources per bin, as a fraction of the catalogue's count.
    """

    peak: float
    slope: float
    log_amp: float
    size_slope: float
    flux_lo: float
    edges: NDArray[np.float64]
    fraction: NDArray[np.float64]

    @property
    def ratio(self) -> float:
        """Faint sources per catalogue source."""
        return float(self.fraction.sum())


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


@functools.lru_cache(maxsize=len(BANDS))
def faint_counts(freq: int) -> FaintCounts:
    """The faint population's counts of a band, measured from :func:`population`.

    See :class:`FaintCounts` for the model. The fit uses the ln-flux bins (width
    0.25) from the catalogue's faintest flux upwards that hold more than 20 sources.
    """
    f = _check_freq(freq)
    pop = population(f)
    flux = pop.flux.astype(np.float64)
    bmaj = pop.bmaj.astype(np.float64)
    lo = float(flux.min())
    edges = lo * np.exp(_COUNT_BIN * np.arange(int(np.log(flux.max() / lo) / _COUNT_BIN) + 2))
    counts, _ = np.histogram(flux, edges)
    centre = np.sqrt(edges[:-1] * edges[1:])
    k = int(np.argmax(counts))
    fit = (centre >= centre[k]) & (centre <= 8.0 * centre[k]) & (counts > 20)
    slope, log_amp = np.polyfit(np.log(centre[fit]), np.log(counts[fit] / _COUNT_BIN), 1)
    which = np.digitize(flux, edges) - 1
    med = np.array([np.median(bmaj[which == i]) for i in np.flatnonzero(fit)])
    size_slope = float(np.polyfit(np.log(centre[fit]), np.log(med), 1)[0])
    flux_lo = float(band(f).flux_min) / FAINT_DEPTH
    real = REAL_FAINT_COUNTS.get(f)
    if real is not None:
        # the real sky's counts, in catalogue rows: density x area sources per catalogue
        slope, per_deg2, flux_lo = real
        log_amp = math.log(per_deg2 * flux.size / band(f).density) - slope * math.log(1e-6)
    top = float(edges[k + 1])
    n_bins = int(np.ceil(np.log(top / flux_lo) / _DRAW_BIN))
    draw_edges = flux_lo * np.exp(_DRAW_BIN * np.arange(n_bins + 1))
    mid = np.sqrt(draw_edges[:-1] * draw_edges[1:])
    law = np.exp(log_amp) * mid ** slope * _DRAW_BIN
    have, _ = np.histogram(flux, draw_edges)
    fraction = np.clip(law - have, 0.0, None) / flux.size
    return FaintCounts(peak=float(centre[k]), slope=float(slope), log_amp=float(log_amp),
                       size_slope=size_slope, flux_lo=flux_lo, edges=draw_edges,
                       fraction=fraction)


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


def draw_sources(rng: np.random.Generator, *, size: int, freq: int,
                 faint: bool = True, agn_fraction: float | None = None) -> SourceDraw:
    """Draw the sources of a ``size`` x ``size`` field: Poisson count, bootstrap rows.

    The count is Poisson with mean ``density x area`` (area = (size x pixel)^2);
    the properties are resampled with replacement from :func:`population`; positions
    are uniform over the image (sub-pixel), position angles uniform in [0, 360).
    Lobed AGN (size 1) get a random real AGN template, randomly mirrored; their
    ``bmin`` becomes the template's minor extent at the drawn LAS (``bmaj``), so
    the truth describes the image. With ``faint``, the faint population
    (:func:`faint_counts`) is drawn after them from the same generator, so the
    catalogue sources are the same with or without it.

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of randomness (the draw is a pure function of its state).
    size : int
        Image side (pixels).
    freq : int
        Band (MHz).
    faint : bool
        Add the faint population below the catalogue's turnover.
    agn_fraction : float, optional
        Fraction of the catalogue sources resampled from the population's AGN
        (classes 1 and 2); None: the population's own mix (plain bootstrap).

    Returns
    -------
    SourceDraw
        The sources, sorted by ``y`` then ``x``.
    """
    b = band(freq)
    pop = population(freq)
    side_deg = size * b.pixel_arcsec / 3600.0
    n = int(rng.poisson(b.density * side_deg * side_deg))
    if agn_fraction is None:
        rows = rng.integers(0, pop.flux.size, size=n)
    else:
        agn = np.flatnonzero(pop.cls != 3)
        sfg = np.flatnonzero(pop.cls == 3)
        is_agn = rng.random(n) < agn_fraction
        rows = np.where(is_agn, agn[rng.integers(0, agn.size, size=n)],
                        sfg[rng.integers(0, sfg.size, size=n)])
    flux = pop.flux[rows].astype(np.float64)
    bmaj = np.maximum(pop.bmaj[rows].astype(np.float64), SIZE_FLOOR_ARCSEC)
    bmin = pop.bmin[rows].astype(np.float64)
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
    bmin[lobed] = bmaj[lobed] * tpl.minor[template[lobed]] / tpl.las[template[lobed]]
    if faint:
        counts = faint_counts(freq)
        per_bin = rng.poisson(counts.fraction * b.density * side_deg * side_deg)
        k = np.repeat(np.arange(per_bin.size), per_bin)
        m = k.size
        ln_lo = np.log(counts.edges[k])
        f_flux = np.exp(ln_lo + rng.random(m) * (np.log(counts.edges[k + 1]) - ln_lo))
        donors = np.flatnonzero((pop.flux < 1.5 * counts.peak) & (pop.size != 1))
        d = donors[rng.integers(0, donors.size, size=m)]
        scale = (f_flux / pop.flux[d]) ** counts.size_slope
        rows = np.concatenate([rows, d])
        flux = np.concatenate([flux, f_flux])
        bmaj = np.concatenate([bmaj, np.maximum(pop.bmaj[d] * scale, SIZE_FLOOR_ARCSEC)])
        bmin = np.concatenate([bmin, pop.bmin[d] * scale])
        x = np.concatenate([x, rng.uniform(-0.5, size - 0.5, size=m)])
        y = np.concatenate([y, rng.uniform(-0.5, size - 0.5, size=m)])
        pa = np.concatenate([pa, rng.uniform(0.0, 360.0, size=m)])
        template = np.concatenate([template, np.full(m, -1, dtype=template.dtype)])
        mirror = np.concatenate([mirror, np.ones(m)])
        size_code = np.concatenate([size_code, pop.size[d].astype(np.int64)])
    bmin = np.clip(bmin, SIZE_FLOOR_ARCSEC, bmaj)
    order = np.lexsort((x, y))
    return SourceDraw(
        x=x[order], y=y[order], flux=flux[order], bmaj=bmaj[order], bmin=bmin[order],
        pa=pa[order], core_frac=pop.core_frac[rows].astype(np.float64)[order],
        size=size_code[order], cls=pop.cls[rows].astype(np.int64)[order],
        template=template[order].astype(np.int64), mirror=mirror[order])
