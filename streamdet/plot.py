"""Figures for radio astronomers: image regions with catalogues overlaid, and catalogue
diagnostics against a truth catalogue.

:func:`plot_region` draws a region of an image (a Zarr store, a FITS file or an
:class:`~streamdet.io.Image`) on RA/Dec axes, reading only that region, lazily, with
detections (ellipses, or pixel boxes) and a truth catalogue overlaid, a legend, the
restoring beam and a colour bar in Jy/beam. :func:`plot_diagnostics` draws, for a full
streamdet catalogue (with ``objectness``) and a truth catalogue, the official SDC1 score
and purity against the objectness threshold, the parameter residuals of matched sources
against the true flux, and the source counts dN/dlogS.

The computations behind the figures are functions of their own, usable and tested without
a figure: :func:`resolve_region`, :func:`overlay_geometry`, :func:`match_catalogues`,
:func:`parameter_residuals`, :func:`threshold_curve`, :func:`source_counts`,
:func:`convolve_ellipses`;
:func:`region_figure` and :func:`diagnostics_figure` build the figures without writing
them.

matplotlib is an optional dependency (``pip install 'streamdet[plot]'``), imported only
when a figure is made. Figures are drawn on matplotlib's Agg canvas, never through
``pyplot``: no window opens and the global backend is left alone.
"""

from __future__ import annotations

import importlib
import math
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, Literal, TypeAlias

import astropy.units as u
import numpy as np
from astropy.table import Table
from astropy.wcs import WCS
from astropy.wcs.utils import proj_plane_pixel_scales
from numpy.typing import ArrayLike, NDArray

from ._atomic import atomic_path, check_output
from .errors import (
    StreamdetError,
    StreamdetFileNotFoundError,
    StreamdetValueError,
    WCSMissingError,
)
from .io import Image, open_image
from .outputs import _column, _ellipse

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from matplotlib.image import AxesImage

__all__ = [
    "DiagnosticsFigure",
    "Match",
    "Overlay",
    "PixelRegion",
    "RegionFigure",
    "Residuals",
    "ThresholdCurve",
    "convolve_ellipses",
    "diagnostics_figure",
    "match_catalogues",
    "overlay_geometry",
    "parameter_residuals",
    "plot_diagnostics",
    "plot_region",
    "read_catalogue",
    "region_figure",
    "resolve_region",
    "source_counts",
    "threshold_curve",
]

Stretch: TypeAlias = Literal["asinh", "linear", "log"]
CatalogueLike: TypeAlias = "Table | str | os.PathLike[str]"

PLOT_EXTRA_HINT = "install the plot extra: pip install 'streamdet[plot]'"
#: Colours of the overlays (blue/orange: distinguishable with colour-blindness).
DETECTION_COLOUR = "#00e5ff"
TRUTH_COLOUR = "#ff9f1c"
#: Figure formats written (from the output's extension).
FIGURE_FORMATS = ("png", "pdf", "svg")
#: Restoring-beam FWHM of the SDC1 bands, arcsec (the default match radius).
_BEAM_ARCSEC = {560: 1.5, 1400: 0.60, 9200: 0.0913}
# Size conventions of the SDC1 ``size`` code -> Gaussian FWHM, as in the ska_sdc scorer
# (ska_sdc.common.utils.constants): 1 LAS (5 sigma extent), 2 Gaussian FWHM, 3 exponential.
_TO_GAUSS = {1: 2.355 / 5.0, 2: 1.0, 3: math.sqrt(2.0)}
# (ra, dec) column pairs: for drawing (the centroid first) and for matching (the core first)
_DRAW_POSITIONS = (("ra", "dec"), ("ra_cent", "dec_cent"), ("ra_core", "dec_core"))
_MATCH_POSITIONS = (("ra", "dec"), ("ra_core", "dec_core"), ("ra_cent", "dec_cent"))
_BOX_COLUMNS = ("x0", "y0", "x1", "y1")
_CATALOGUE_SUFFIXES = {".ecsv": "ascii.ecsv", ".fits": "fits", ".fit": "fits",
                       ".fits.gz": "fits", ".parquet": "parquet"}


# ----------------------------------------------------------------------------- helpers


def _matplotlib() -> ModuleType:
    """Import matplotlib, or say how to install it."""
    try:
        return importlib.import_module("matplotlib")
    except ImportError:
        raise StreamdetError(f"plotting needs matplotlib; {PLOT_EXTRA_HINT}") from None


def _new_figure(figsize: tuple[float, float], dpi: float) -> Figure:
    """A figure on an Agg canvas (no pyplot, no window, global backend untouched)."""
    _matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    w, h = (float(v) for v in figsize)
    if not (np.isfinite(w) and np.isfinite(h) and w > 0 and h > 0):
        raise StreamdetValueError(f"figsize must be two positive numbers (inches), got {figsize}")
    if not (np.isfinite(dpi) and dpi > 0):
        raise StreamdetValueError(f"dpi must be positive, got {dpi}")
    fig = Figure(figsize=(w, h), dpi=dpi, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _figure_format(path: str | os.PathLike[str]) -> str:
    suffix = Path(path).suffix.lower().lstrip(".")
    fmt = suffix or "png"
    if fmt not in FIGURE_FORMATS:
        raise StreamdetValueError(f"cannot write a figure to {str(path)!r}: extension "
                                  f"{suffix!r} is not one of {list(FIGURE_FORMATS)}")
    return fmt


def _save(fig: Figure, out: str | os.PathLike[str], *, overwrite: bool) -> Path:
    """Write ``fig`` atomically, in the format of ``out``'s extension, at the figure's size."""
    fmt = _figure_format(out)
    with atomic_path(out, overwrite=overwrite) as tmp:
        fig.savefig(tmp, format=fmt, dpi=fig.dpi)
    return Path(out)


def read_catalogue(catalogue: CatalogueLike) -> Table:
    """Read a catalogue: an SDC1 text file, or an ECSV / FITS / Parquet table.

    Parameters
    ----------
    catalogue : astropy.table.Table or path
        A table is returned as is. ``.txt`` / ``.dat`` files are read as SDC1
        submissions (:func:`streamdet.catalog.read_sdc1`); ``.ecsv``, ``.fits`` and
        ``.parquet`` through :meth:`astropy.table.Table.read` (streamdet's full tables).

    Returns
    -------
    astropy.table.Table

    Raises
    ------
    StreamdetFileNotFoundError
        The file does not exist.
    StreamdetValueError
        Unknown extension, or a file that cannot be read as a table.
    """
    if isinstance(catalogue, Table):
        return catalogue
    p = Path(catalogue)
    if not p.is_file():
        raise StreamdetFileNotFoundError(f"catalogue {str(p)!r} does not exist")
    name = p.name.lower()
    if name.endswith((".txt", ".dat")):
        from .catalog import read_sdc1

        return read_sdc1(p)
    fmt = next((f for s, f in _CATALOGUE_SUFFIXES.items() if name.endswith(s)), None)
    if fmt is None:
        raise StreamdetValueError(f"catalogue {str(p)!r}: unknown extension; expected .txt/.dat "
                                  "(SDC1), .ecsv, .fits or .parquet")
    try:
        return Table.read(p, format=fmt)
    except Exception as exc:  # astropy raises many kinds for a bad file
        raise StreamdetValueError(f"cannot read catalogue {str(p)!r} as {fmt}: {exc}") from exc


def _position_columns(table: Table, pairs: tuple[tuple[str, str], ...]) -> tuple[str, str] | None:
    names = set(table.colnames)
    return next(((a, b) for a, b in pairs if a in names and b in names), None)


def _has_shape(table: Table) -> bool:
    names = set(table.colnames)
    return bool(({"bmaj", "bmin"} <= names or {"b_maj", "b_min"} <= names) and "pa" in names)


def _is_equatorial(cel: WCS) -> bool:
    return str(cel.wcs.ctype[cel.wcs.lng]).upper().startswith("RA")


def _world_to_pixel(cel: WCS, ra: NDArray[np.float64], dec: NDArray[np.float64]
                    ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """ICRS/equatorial (ra, dec) deg -> 0-based pixel (x, y) of ``cel``.

    For an equatorial WCS the catalogue's ra/dec are taken in the WCS's own frame (as
    :func:`streamdet.outputs.to_table` wrote them); other frames go through astropy.
    """
    if len(ra) == 0:
        return np.zeros(0), np.zeros(0)
    if _is_equatorial(cel):
        world: list[NDArray[np.float64]] = [ra, dec]
        if cel.wcs.lng == 1:
            world = [dec, ra]
        x, y = cel.world_to_pixel_values(*world)
    else:
        from astropy.coordinates import SkyCoord

        x, y = cel.world_to_pixel(SkyCoord(ra * u.deg, dec * u.deg, frame="icrs"))
    return np.asarray(x, np.float64).reshape(-1), np.asarray(y, np.float64).reshape(-1)


def _pixel_scales_arcsec(cel: WCS) -> tuple[float, float]:
    sx, sy = proj_plane_pixel_scales(cel)
    units = [u.Unit(cu) if str(cu) else u.deg for cu in cel.wcs.cunit]
    return (float((abs(sx) * units[0]).to_value(u.arcsec)),
            float((abs(sy) * units[1]).to_value(u.arcsec)))


# ----------------------------------------------------------------------------- regions


@dataclass(frozen=True)
class PixelRegion:
    """A rectangle of image pixels, 0-based, ``x0 <= x < x1``, ``y0 <= y < y1``.

    Attributes
    ----------
    x0, y0, x1, y1 : int
        Bounds, pixels (the array slice is ``data[y0:y1, x0:x1]``).
    clipped : bool
        Whether the request reached beyond the image and was cut to it.
    """

    x0: int
    y0: int
    x1: int
    y1: int
    clipped: bool = False

    @property
    def width(self) -> int:
        """Number of columns."""
        return self.x1 - self.x0

    @property
    def height(self) -> int:
        """Number of rows."""
        return self.y1 - self.y0

    @property
    def slices(self) -> tuple[slice, slice]:
        """``(slice(y0, y1), slice(x0, x1))``."""
        return slice(self.y0, self.y1), slice(self.x0, self.x1)


def _finite_numbers(values: Sequence[float], n: int, what: str) -> list[float]:
    try:
        out = [float(v) for v in values]
    except (TypeError, ValueError):
        raise StreamdetValueError(f"{what} must be {n} numbers, got {values!r}") from None
    if len(out) != n or not all(math.isfinite(v) for v in out):
        raise StreamdetValueError(f"{what} must be {n} finite numbers, got {values!r}")
    return out


def resolve_region(image: Image, *, region: Sequence[float] | None = None,
                   center: Sequence[float] | None = None,
                   size: float | Sequence[float] | None = None) -> PixelRegion:
    """The pixel rectangle of a region request.

    Parameters
    ----------
    image : Image
        The image (its last two axes are y, x).
    region : (x0, y0, x1, y1), optional
        Pixel bounds, 0-based, ``x1``/``y1`` exclusive; fractional bounds are widened
        to whole pixels.
    center : (ra, dec), optional
        Region centre, degrees (the image's equatorial frame); needs ``size`` and a
        celestial WCS. Exclusive with ``region``.
    size : float or (width, height)
        Region side(s), arcsec, with ``center``.

    Returns
    -------
    PixelRegion
        The region cut to the image (``clipped`` tells); the whole image when neither
        ``region`` nor ``center`` is given.

    Raises
    ------
    StreamdetValueError
        Bad bounds, both or half of the options, or a region wholly outside the image.
    WCSMissingError
        ``center`` given for an image without a celestial WCS.
    """
    ny, nx = image.shape[-2:]
    if region is not None and (center is not None or size is not None):
        raise StreamdetValueError("give a region either in pixels (region) or as center and "
                                  "size, not both")
    if region is not None:
        x0, y0, x1, y1 = _finite_numbers(region, 4, "region (x0, y0, x1, y1)")
        if not (x1 > x0 and y1 > y0):
            raise StreamdetValueError(f"region {tuple(region)} is empty: need x1 > x0 and "
                                      "y1 > y0 (pixels, 0-based, x1/y1 exclusive)")
        what = f"region x {x0:g}..{x1:g}, y {y0:g}..{y1:g} px"
        bounds = (math.floor(x0), math.floor(y0), math.ceil(x1), math.ceil(y1))
    elif center is not None or size is not None:
        if center is None or size is None:
            raise StreamdetValueError("a sky region needs both center (ra, dec in deg) and "
                                      "size (arcsec)")
        cel = image.celestial_wcs
        if cel is None:
            raise WCSMissingError(f"{image.path} has no celestial WCS: give the region in "
                                  "pixels (x0, y0, x1, y1)")
        ra, dec = _finite_numbers(center, 2, "center (ra, dec)")
        sizes = [size] if isinstance(size, int | float) else list(size)
        if len(sizes) == 1:
            sizes = sizes * 2
        w_as, h_as = _finite_numbers(sizes, 2, "size (arcsec)")
        if not (w_as > 0 and h_as > 0):
            raise StreamdetValueError(f"size must be positive (arcsec), got {size!r}")
        cx, cy = (float(v[0]) for v in _world_to_pixel(cel, np.array([ra]), np.array([dec])))
        if not (math.isfinite(cx) and math.isfinite(cy)):
            raise StreamdetValueError(f"center RA {ra:g}, Dec {dec:g} deg has no pixel position "
                                      f"in {image.path} (beyond the projection)")
        sx, sy = _pixel_scales_arcsec(cel)
        w = max(1, round(w_as / sx))
        h = max(1, round(h_as / sy))
        bx0 = math.floor(cx + 0.5 - w / 2)
        by0 = math.floor(cy + 0.5 - h / 2)
        bounds = (bx0, by0, bx0 + w, by0 + h)
        what = (f"region of {w_as:g}\" x {h_as:g}\" centred on RA {ra:g}, Dec {dec:g} deg "
                f"(pixel {cx:.1f}, {cy:.1f})")
    else:
        return PixelRegion(0, 0, nx, ny)
    cx0, cy0 = max(bounds[0], 0), max(bounds[1], 0)
    cx1, cy1 = min(bounds[2], nx), min(bounds[3], ny)
    if cx1 <= cx0 or cy1 <= cy0:
        raise StreamdetValueError(f"{what} lies outside the image {image.path} "
                                  f"({nx} x {ny} px)")
    return PixelRegion(cx0, cy0, cx1, cy1, clipped=(cx0, cy0, cx1, cy1) != bounds)


# ----------------------------------------------------------------------------- overlays


@dataclass(frozen=True)
class Overlay:
    """Shapes of a catalogue's sources within a region, in region pixels.

    Region pixel ``(0, 0)`` is the centre of image pixel ``(x0, y0)``.

    Attributes
    ----------
    kind : {"ellipse", "box"}
        Sky ellipses (from ra/dec, bmaj/bmin, pa) or pixel boxes (x0, y0, x1, y1).
    index : (M,) int
        Rows of the catalogue drawn (finite values, centre inside the region).
    x, y : (M,) float
        Centres, region pixels.
    width, height : (M,) float
        Ellipse full axes (major, minor; the catalogue's FWHM) or box sides, pixels.
    angle : (M,) float
        Angle of the major axis from the +x axis, counter-clockwise, degrees (0 for
        boxes).
    """

    kind: Literal["ellipse", "box"]
    index: NDArray[np.intp]
    x: NDArray[np.float64]
    y: NDArray[np.float64]
    width: NDArray[np.float64]
    height: NDArray[np.float64]
    angle: NDArray[np.float64]

    def __len__(self) -> int:
        return len(self.index)


def convolve_ellipses(bmaj: ArrayLike, bmin: ArrayLike, pa: ArrayLike,
                      beam: tuple[float, float, float]
                      ) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """FWHM ellipses of elliptical Gaussians convolved with a Gaussian beam.

    Second moments add: with the major axis along ``(sin PA, cos PA)`` in (east, north),
    ``S = bmaj^2 u u^T + bmin^2 v v^T`` and the result's axes and PA are the square roots
    of the eigenvalues and the direction of the major eigenvector of ``S + S_beam``.

    Parameters
    ----------
    bmaj, bmin : (N,) array_like
        FWHM axes, arcsec.
    pa : (N,) array_like
        Position angles, deg east of north.
    beam : (bmaj, bmin, bpa)
        Beam FWHM axes (arcsec) and position angle (deg).

    Returns
    -------
    bmaj, bmin, pa : (N,) float
        Convolved axes (arcsec) and PA (deg, in [0, 180)).
    """
    a, b, t = (np.asarray(v, np.float64) for v in (bmaj, bmin, np.radians(pa)))
    see = ((a * np.sin(t)) ** 2 + (b * np.cos(t)) ** 2)
    snn = ((a * np.cos(t)) ** 2 + (b * np.sin(t)) ** 2)
    sen = (a ** 2 - b ** 2) * np.sin(t) * np.cos(t)
    ba, bb, bt = beam[0], beam[1], math.radians(beam[2])
    see = see + (ba * math.sin(bt)) ** 2 + (bb * math.cos(bt)) ** 2
    snn = snn + (ba * math.cos(bt)) ** 2 + (bb * math.sin(bt)) ** 2
    sen = sen + (ba ** 2 - bb ** 2) * math.sin(bt) * math.cos(bt)
    mean, diff = 0.5 * (see + snn), np.hypot(0.5 * (see - snn), sen)
    major = np.sqrt(mean + diff)
    minor = np.sqrt(np.maximum(mean - diff, 0.0))
    phi = 0.5 * np.arctan2(2.0 * sen, see - snn)  # from east towards north
    return major, minor, np.mod(90.0 - np.degrees(phi), 180.0)


def _sky_ellipses(table: Table, cel: WCS, pos: tuple[str, str],
                  beam: tuple[float, float, float] | None = None
                  ) -> tuple[NDArray[np.float64], ...]:
    """Full-image pixel centre, axes (px) and angle (deg from +x) of sky ellipses.

    The axes' directions and lengths come from points offset along the PA (east of
    north) and across it on the sphere, so any projection, flip or rotation is right.
    With ``beam`` (arcsec, arcsec, deg) the ellipses are convolved with it.
    """
    from astropy.coordinates import offset_by

    ra = _column(table, (pos[0],), u.deg)
    dec = _column(table, (pos[1],), u.deg)
    bmaj, bmin, pa = _ellipse(table)
    if beam is not None:
        bmaj, bmin, pa = convolve_ellipses(bmaj, bmin, pa, beam)
    x, y = _world_to_pixel(cel, ra, dec)
    lon, lat = np.radians(ra), np.radians(dec)
    lengths = []
    angle = np.zeros(len(ra))
    for turn, full in ((0.0, bmaj), (90.0, bmin)):
        # offset by half the axis (at least 1 mas, so a point source keeps a direction)
        half = full / 2.0
        step = np.where(np.isfinite(half) & (half > 1e-3), half, 1e-3)
        with np.errstate(invalid="ignore"):
            lo, la = offset_by(lon, lat, np.radians(pa + turn), np.radians(step / 3600.0))
        ex, ey = _world_to_pixel(cel, np.degrees(np.asarray(lo.rad, np.float64)),
                                 np.degrees(np.asarray(la.rad, np.float64)))
        lengths.append(2.0 * np.hypot(ex - x, ey - y) * (half / step))
        if turn == 0.0:
            angle = np.degrees(np.arctan2(ey - y, ex - x))
    width, height = lengths
    return x, y, width, height, angle


def _inside(x: NDArray[np.float64], y: NDArray[np.float64], region: PixelRegion
            ) -> NDArray[np.bool_]:
    """Region-pixel centres within the region (half a pixel beyond its edge pixels' centres)."""
    with np.errstate(invalid="ignore"):
        return np.asarray((x >= -0.5) & (x < region.width - 0.5) & (y >= -0.5)
                          & (y < region.height - 0.5), np.bool_)


def overlay_geometry(table: Table, region: PixelRegion, *, wcs: WCS | None = None,
                     beam: tuple[float, float, float] | None = None,
                     what: str = "catalogue") -> Overlay:
    """Where a catalogue's sources fall in a region, and their shapes, in region pixels.

    Parameters
    ----------
    table : astropy.table.Table
        With sky positions and shapes (``ra``/``dec``, or ``ra_cent``/``dec_cent``,
        or ``ra_core``/``dec_core``, deg; ``bmaj``/``bmin`` or ``b_maj``/``b_min``,
        arcsec FWHM; ``pa``, deg east of north), drawn as ellipses when ``wcs`` is
        given; otherwise pixel boxes ``x0 y0 x1 y1`` (0-based full-image pixels, as
        in :func:`streamdet.outputs.to_table`).
    region : PixelRegion
        The region shown.
    wcs : astropy.wcs.WCS, optional
        Celestial WCS of the full image (pixel axes x, y).
    beam : (bmaj, bmin, bpa), optional
        Restoring beam (arcsec, arcsec, deg): ellipses are drawn convolved with it
        (:func:`convolve_ellipses`), the size a source appears in the image.
    what : str
        Name of the catalogue in error messages.

    Returns
    -------
    Overlay
        The rows with finite values whose centre lies inside the region (within
        half a pixel of its edge pixels' centres).

    Raises
    ------
    StreamdetValueError
        The table has neither usable sky columns nor pixel boxes.
    """
    names = set(table.colnames)
    pos = _position_columns(table, _DRAW_POSITIONS)
    if wcs is not None and pos is not None and _has_shape(table):
        kind: Literal["ellipse", "box"] = "ellipse"
        # centres first: the shapes (three projections each) only for rows in the region
        x, y = _world_to_pixel(wcs, _column(table, (pos[0],), u.deg),
                               _column(table, (pos[1],), u.deg))
        near = np.flatnonzero(_inside(x - region.x0, y - region.y0, region))
        width, height, angle = (np.full(len(x), np.nan) for _ in range(3))
        if len(near):
            shapes = _sky_ellipses(table[near], wcs, pos, beam)
            x[near], y[near], width[near], height[near], angle[near] = shapes
    elif set(_BOX_COLUMNS) <= names:
        kind = "box"
        b = [np.asarray(table[c], np.float64) for c in _BOX_COLUMNS]
        x, y = 0.5 * (b[0] + b[2]), 0.5 * (b[1] + b[3])
        width, height = b[2] - b[0], b[3] - b[1]
        angle = np.zeros(len(x))
    else:
        need = ("ra/dec (or ra_cent/dec_cent, ra_core/dec_core), bmaj/bmin (or b_maj/b_min) "
                "and pa")
        if pos is not None and _has_shape(table) and wcs is None:
            raise WCSMissingError(f"the {what} has sky positions only, but the image has no "
                                  "celestial WCS; give a table with pixel boxes x0 y0 x1 y1")
        raise StreamdetValueError(f"the {what} lacks the columns to draw: need {need}, or "
                                  f"pixel boxes x0 y0 x1 y1; it has {table.colnames}")
    x = x - region.x0
    y = y - region.y0
    good = (np.isfinite(x) & np.isfinite(y) & np.isfinite(width) & np.isfinite(height)
            & np.isfinite(angle))
    idx = np.flatnonzero(good & _inside(x, y, region))
    return Overlay(kind=kind, index=idx, x=x[idx], y=y[idx], width=width[idx],
                   height=height[idx], angle=angle[idx])


# ----------------------------------------------------------------------------- region figure


@dataclass(frozen=True)
class RegionFigure:
    """A figure of an image region, not yet written (see :func:`region_figure`).

    Attributes
    ----------
    figure : matplotlib.figure.Figure
        On an Agg canvas.
    ax : matplotlib.axes.Axes
        Image axes (``astropy.visualization.wcsaxes.WCSAxes`` with a celestial WCS);
        data coordinates are region pixels.
    image : matplotlib.image.AxesImage
        The image drawn; ``image.get_array()`` is :attr:`data`.
    data : (H, W) float32 array
        Pixels shown, Jy/beam: the region, or its ``step`` x ``step`` block means.
    region : PixelRegion
        Region of the image shown.
    step : int
        Downsampling factor (1: every pixel shown).
    vmin, vmax : float
        Display limits, Jy/beam.
    detections, truth : Overlay or None
        What was drawn of each catalogue.
    """

    figure: Figure
    ax: Axes
    image: AxesImage
    data: NDArray[np.float32]
    region: PixelRegion
    step: int
    vmin: float
    vmax: float
    detections: Overlay | None
    truth: Overlay | None

    def save(self, out: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
        """Write the figure atomically (``.png``, ``.pdf`` or ``.svg``, from ``out``)."""
        return _save(self.figure, out, overwrite=overwrite)


def _read_region(image: Image, region: PixelRegion, channel: int | None, max_side: int
                 ) -> tuple[NDArray[np.float32], int]:
    """Read only the region (lazily, through dask), block-averaged to <= ``max_side``."""
    data = image.data
    if data.ndim == 3:
        if channel is None:
            raise StreamdetValueError(f"{image.path} is a cube of {data.shape[0]} planes: give "
                                      "channel= (--channel) to plot one")
        if not 0 <= channel < data.shape[0]:
            raise StreamdetValueError(f"channel {channel} is outside 0..{data.shape[0] - 1}")
        data = data[channel]
    elif channel not in (None, 0):
        raise StreamdetValueError(f"channel {channel} given for a 2-D image")
    if max_side < 1:
        raise StreamdetValueError(f"max_side must be >= 1, got {max_side}")
    ys, xs = region.slices
    cut = data.data[ys, xs]
    step = max(1, math.ceil(max(region.width, region.height) / max_side))
    if step > 1:
        import dask.array as da

        step = min(step, region.width, region.height)
        cut = da.coarsen(np.nanmean, cut, {0: step, 1: step}, trim_excess=True)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Mean of empty slice", RuntimeWarning)
        values = np.asarray(cut.compute(), dtype=np.float32)
    return values, step


def _norm(data: NDArray[np.float32], stretch: str, percentiles: Sequence[float],
          vmin: float | None, vmax: float | None) -> Any:
    from astropy.visualization import AsinhStretch, ImageNormalize, LinearStretch, LogStretch

    stretches = {"asinh": AsinhStretch(a=0.1), "linear": LinearStretch(),
                 "log": LogStretch(a=1000.0)}
    if stretch not in stretches:
        raise StreamdetValueError(f"stretch {stretch!r} is not one of {list(stretches)}")
    plo, phi = _finite_numbers(percentiles, 2, "percentiles (low, high)")
    if not 0.0 <= plo < phi <= 100.0:
        raise StreamdetValueError(f"percentiles must satisfy 0 <= low < high <= 100, "
                                  f"got {tuple(percentiles)}")
    finite = data[np.isfinite(data)]
    if finite.size:
        lo, hi = (float(v) for v in np.percentile(finite, [plo, phi]))
    else:
        lo, hi = 0.0, 1.0
    lo = lo if vmin is None else float(vmin)
    hi = hi if vmax is None else float(vmax)
    if not (math.isfinite(lo) and math.isfinite(hi) and hi >= lo):
        raise StreamdetValueError(f"display limits vmin {lo!r} > vmax {hi!r}")
    if hi == lo:
        hi = lo + max(abs(lo) * 1e-6, 1e-12)
    return ImageNormalize(vmin=lo, vmax=hi, stretch=stretches[stretch], clip=True)


def _unit_label(bunit: str | None) -> str:
    if bunit is None or not bunit.strip():
        return "pixel value"
    return {"JY/BEAM": "Jy/beam", "JY/PIXEL": "Jy/pixel", "MJY/BEAM": "mJy/beam",
            "K": "K"}.get(bunit.strip().upper(), bunit.strip())


def _draw_overlay(ax: Axes, ov: Overlay, *, colour: str, linestyle: str, marker: str | None,
                  min_px: float) -> None:
    from matplotlib.collections import EllipseCollection, PolyCollection

    if len(ov) == 0:
        return
    w = np.maximum(ov.width, min_px)
    h = np.maximum(ov.height, min_px)
    style: dict[str, Any] = {"facecolors": "none", "edgecolors": colour, "linewidths": 1.1,
                             "linestyles": linestyle, "zorder": 3}
    if ov.kind == "ellipse":  # one vectorised artist, fast for 10^5 sources
        shapes: Any = EllipseCollection(w, h, ov.angle, units="xy",
                                        offsets=np.column_stack([ov.x, ov.y]),
                                        offset_transform=ax.transData, **style)
    else:
        corners = np.array([[-0.5, -0.5], [0.5, -0.5], [0.5, 0.5], [-0.5, 0.5]])
        verts = (np.column_stack([ov.x, ov.y])[:, None, :]
                 + corners[None, :, :] * np.column_stack([w, h])[:, None, :])
        shapes = PolyCollection(verts, closed=True, **style)
    ax.add_collection(shapes, autolim=False)
    if marker is not None:
        ax.plot(ov.x, ov.y, linestyle="none", marker=marker, color=colour, markersize=6,
                markeredgewidth=1.0, zorder=4)


def _draw_beam(ax: Axes, image: Image, region: PixelRegion, cel: WCS) -> bool:
    """The restoring beam as a filled ellipse in the lower-left corner."""
    from matplotlib.patches import Ellipse

    beam = image.beam_arcsec
    if (beam is None or not all(math.isfinite(v) for v in beam) or beam[0] <= 0
            or not _is_equatorial(cel)):
        return False
    sx, sy = _pixel_scales_arcsec(cel)
    pad = 0.6 * beam[0] / min(sx, sy) + 0.03 * min(region.width, region.height)
    world = cel.pixel_to_world_values(np.array([region.x0 + pad - 0.5]),
                                      np.array([region.y0 + pad - 0.5]))
    ra = np.asarray(world[cel.wcs.lng], np.float64).reshape(1)
    dec = np.asarray(world[cel.wcs.lat], np.float64).reshape(1)
    t = Table({"ra": ra, "dec": dec, "bmaj": [beam[0]], "bmin": [beam[1]], "pa": [beam[2]]})
    x, y, w, h, a = _sky_ellipses(t, cel, ("ra", "dec"))
    if not np.all(np.isfinite([x[0], y[0], w[0], h[0], a[0]])) or w[0] > 0.5 * region.width:
        return False
    ax.add_patch(Ellipse((x[0] - region.x0, y[0] - region.y0), max(w[0], 1.0), max(h[0], 1.0),
                         angle=a[0], facecolor="white", edgecolor="black", alpha=0.85,
                         linewidth=0.8, zorder=5))
    return True


def region_figure(image: Image | str | os.PathLike[str], *,
                  catalogue: CatalogueLike | None = None, truth: CatalogueLike | None = None,
                  region: Sequence[float] | None = None, center: Sequence[float] | None = None,
                  size: float | Sequence[float] | None = None, channel: int | None = None,
                  stretch: Stretch = "asinh", percentiles: Sequence[float] = (0.5, 99.9),
                  vmin: float | None = None, vmax: float | None = None, cmap: str = "gray",
                  title: str | None = None, figsize: tuple[float, float] | None = None,
                  dpi: float = 100.0, max_side: int = 2048, min_px: float = 1.5,
                  apparent: bool = True) -> RegionFigure:
    """Build the figure of :func:`plot_region` without writing it.

    Parameters are those of :func:`plot_region` (less ``out`` and ``overwrite``).

    Returns
    -------
    RegionFigure
    """
    img = image if isinstance(image, Image) else open_image(image)
    reg = resolve_region(img, region=region, center=center, size=size)
    cats = {k: (None if c is None else read_catalogue(c))
            for k, c in (("detections", catalogue), ("truth", truth))}
    cel = img.celestial_wcs
    beam = img.beam_arcsec if apparent else None
    overlays = {k: (None if t is None else overlay_geometry(t, reg, wcs=cel, beam=beam,
                                                             what=k))
                for k, t in cats.items()}
    data, step = _read_region(img, reg, channel, max_side)
    norm = _norm(data, stretch, percentiles, vmin, vmax)

    longest = max(reg.width, reg.height)
    panel_w = max(6.5 * reg.width / longest, 2.5)
    panel_h = max(6.5 * reg.height / longest, 2.5)
    if figsize is None:
        figsize = (round(max(panel_w + 2.6, 5.5), 2), round(panel_h + 2.2, 2))
    fig = _new_figure(figsize, dpi)
    if cel is not None:
        sub = cel.slice(reg.slices)
        ax = fig.add_subplot(1, 1, 1, projection=sub)
        frame = str(cel.wcs.radesys).strip() if _is_equatorial(cel) else ""
        lon, lat = ax.coords[cel.wcs.lng], ax.coords[cel.wcs.lat]
        if _is_equatorial(cel):
            lon.set_axislabel(f"Right Ascension ({frame})" if frame else "Right Ascension")
            lat.set_axislabel(f"Declination ({frame})" if frame else "Declination")
            lon.set_major_formatter("hh:mm:ss.s")
            lat.set_major_formatter("dd:mm:ss")
        else:
            lon.set_axislabel(str(cel.wcs.ctype[cel.wcs.lng]).split("-")[0])
            lat.set_axislabel(str(cel.wcs.ctype[cel.wcs.lat]).split("-")[0])
        lon.set_ticks(number=max(2, min(6, int(panel_w / 1.3))))
        lat.set_ticks(number=max(2, min(8, int(panel_h / 0.9))))
        ax.coords.grid(color="white", alpha=0.15, linestyle="solid", linewidth=0.5)
    else:
        from matplotlib.ticker import FuncFormatter

        ax = fig.add_subplot(1, 1, 1)
        ax.set_xlabel("x (px)")
        ax.set_ylabel("y (px)")
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v + reg.x0:g}"))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v + reg.y0:g}"))
    hb, wb = data.shape
    extent = (-0.5, wb * step - 0.5, -0.5, hb * step - 0.5)
    shown = ax.imshow(data, origin="lower", cmap=cmap, norm=norm, extent=extent,
                      interpolation="nearest" if step == 1 else "antialiased", zorder=1)
    ax.set_xlim(-0.5, reg.width - 0.5)
    ax.set_ylim(-0.5, reg.height - 0.5)
    ax.set_aspect("equal")

    from matplotlib.lines import Line2D

    handles: list[Any] = []
    det, tru = overlays["detections"], overlays["truth"]
    if tru is not None:
        _draw_overlay(ax, tru, colour=TRUTH_COLOUR, linestyle="--", marker="+", min_px=min_px)
        handles.append(Line2D([], [], color=TRUTH_COLOUR, linestyle="--", marker="+",
                              label=f"truth ({len(tru)})"))
    if det is not None:
        _draw_overlay(ax, det, colour=DETECTION_COLOUR, linestyle="-", marker=None,
                      min_px=min_px)
        handles.append(Line2D([], [], color=DETECTION_COLOUR, linestyle="none",
                              marker="o" if det.kind == "ellipse" else "s",
                              markerfacecolor="none", markersize=9,
                              label=f"detections ({len(det)})"))
    if cel is not None and _draw_beam(ax, img, reg, cel):
        bmaj, bmin, _ = img.beam_arcsec or (0.0, 0.0, 0.0)
        handles.append(Line2D([], [], color="white", markeredgecolor="black", linestyle="none",
                              marker="o", markersize=7,
                              label=f"beam {bmaj:.3g}\" x {bmin:.3g}\""))
    if handles:
        kinds = {o.kind for o in (det, tru) if o is not None}
        what = ("; ".join((["ellipses: FWHM" + (" convolved with the beam" if beam else "")]
                           if "ellipse" in kinds else [])
                          + (["boxes: detector boxes"] if "box" in kinds else [])))
        ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.1),
                  ncol=len(handles), frameon=False, fontsize="small",
                  title=what or None, title_fontsize="small")
    # a colour bar as tall as the image: an inset beside the (aspect-locked) axes box
    cbar = fig.colorbar(shown, cax=ax.inset_axes((1.03, 0.0, 0.035, 1.0)))
    cbar.set_label(_unit_label(img.bunit))
    if title is None:
        title = (f"{img.path.name}: x {reg.x0}:{reg.x1}, y {reg.y0}:{reg.y1}"
                 + (f" (block mean {step}x{step})" if step > 1 else "")
                 + (f", {img.freq_hz / 1e6:.6g} MHz" if img.freq_hz else ""))
    ax.set_title(title, fontsize="medium")
    return RegionFigure(figure=fig, ax=ax, image=shown, data=data, region=reg, step=step,
                        vmin=float(norm.vmin), vmax=float(norm.vmax), detections=det, truth=tru)


def plot_region(image: Image | str | os.PathLike[str], *, out: str | os.PathLike[str],
                catalogue: CatalogueLike | None = None, truth: CatalogueLike | None = None,
                region: Sequence[float] | None = None, center: Sequence[float] | None = None,
                size: float | Sequence[float] | None = None, channel: int | None = None,
                stretch: Stretch = "asinh", percentiles: Sequence[float] = (0.5, 99.9),
                vmin: float | None = None, vmax: float | None = None, cmap: str = "gray",
                title: str | None = None, figsize: tuple[float, float] | None = None,
                dpi: float = 100.0, max_side: int = 2048, min_px: float = 1.5,
                apparent: bool = True, overwrite: bool = False) -> Path:
    """Draw a region of an image on RA/Dec axes with catalogues overlaid, to a file.

    Only the region is read, lazily (``open_image(image).data[y0:y1, x0:x1]``).

    Parameters
    ----------
    image : Image or path
        Zarr store from :func:`streamdet.convert`, FITS file, or an opened image.
    out : path
        Figure to write (``.png``, ``.pdf`` or ``.svg``), atomically; a PNG is
        ``figsize * dpi`` pixels.
    catalogue : Table or path, optional
        Detections, drawn as ellipses (solid, cyan) from ra/dec, bmaj/bmin (or
        b_maj/b_min, arcsec FWHM) and pa (deg east of north), or, for tables with
        pixel positions only (or an image without WCS), as pixel boxes x0 y0 x1 y1.
        Paths: SDC1 text (``.txt``) or ``.ecsv``/``.fits``/``.parquet`` tables.
    truth : Table or path, optional
        True sources, drawn as dashed orange ellipses with a ``+`` at the centre.
    region : (x0, y0, x1, y1), optional
        Pixel bounds, 0-based, x1/y1 exclusive.
    center : (ra, dec), optional
        Centre, deg; with ``size`` (arcsec, one side or (width, height)). Without
        ``region`` or ``center`` the whole image is shown.
    channel : int, optional
        Plane of a cube.
    stretch : {"asinh", "linear", "log"}
        Display stretch between the limits.
    percentiles : (low, high)
        Display limits as percentiles of the pixels shown.
    vmin, vmax : float, optional
        Display limits in the image unit (Jy/beam), overriding the percentiles.
    cmap : str
        Colour map.
    title : str, optional
        Default: file name, region and frequency.
    figsize : (float, float), optional
        Inches; default fitted to the region's aspect ratio (about 8 inches wide).
    dpi : float
        Dots per inch.
    max_side : int
        A region larger than this (pixels) is shown as block means of ``ceil(side /
        max_side)`` pixels a side (bounded memory for a whole SDC1 image).
    min_px : float
        Smallest drawn ellipse axis / box side, pixels (point sources stay visible).
    apparent : bool
        Draw sky ellipses convolved with the restoring beam (the size a source
        appears in the image; the catalogue sizes are intrinsic); False draws the
        catalogue's FWHM as they are. Needs the image's beam (else as False).
    overwrite : bool
        Replace an existing ``out``.

    Returns
    -------
    pathlib.Path
        ``out``.

    Raises
    ------
    StreamdetError
        matplotlib is not installed.
    OutputExistsError
        ``out`` exists and ``overwrite`` is False.
    StreamdetValueError, WCSMissingError, StreamdetFileNotFoundError
        Bad region (e.g. outside the image), missing catalogue columns or files.
    """
    _figure_format(out)
    check_output(out, overwrite=overwrite)
    rf = region_figure(image, catalogue=catalogue, truth=truth, region=region, center=center,
                       size=size, channel=channel, stretch=stretch, percentiles=percentiles,
                       vmin=vmin, vmax=vmax, cmap=cmap, title=title, figsize=figsize, dpi=dpi,
                       max_side=max_side, min_px=min_px, apparent=apparent)
    return rf.save(out, overwrite=overwrite)


# ----------------------------------------------------------------------------- diagnostics


@dataclass(frozen=True)
class Match:
    """One-to-one positional matches between a catalogue and a truth catalogue.

    Attributes
    ----------
    catalogue_index, truth_index : (M,) int
        Matched rows.
    separation_arcsec : (M,) float
        Separations, arcsec.
    radius_arcsec : float
        The match radius used.
    """

    catalogue_index: NDArray[np.intp]
    truth_index: NDArray[np.intp]
    separation_arcsec: NDArray[np.float64]
    radius_arcsec: float

    def __len__(self) -> int:
        return len(self.catalogue_index)


def _positions(table: Table, what: str) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    pos = _position_columns(table, _MATCH_POSITIONS)
    if pos is None:
        raise StreamdetValueError(f"the {what} catalogue lacks sky positions (ra/dec or "
                                  f"ra_core/dec_core); it has {table.colnames}")
    return _column(table, (pos[0],), u.deg), _column(table, (pos[1],), u.deg)


def match_catalogues(catalogue: Table, truth: Table, *, radius_arcsec: float) -> Match:
    """Match each catalogue source to its nearest true source within a radius, one-to-one.

    Each source takes its nearest true source (``SkyCoord.match_to_catalog_sky``);
    where several claim the same one, the closest keeps it. Positions: ``ra``/``dec``
    or the core ``ra_core``/``dec_core`` (deg).

    Parameters
    ----------
    catalogue, truth : astropy.table.Table
        N and T rows.
    radius_arcsec : float
        Largest separation of a match, arcsec.

    Returns
    -------
    Match
        Ordered by catalogue row.
    """
    from astropy.coordinates import SkyCoord

    if not (math.isfinite(radius_arcsec) and radius_arcsec > 0):
        raise StreamdetValueError(f"match radius must be positive (arcsec), got {radius_arcsec}")
    ra, dec = _positions(catalogue, "detection")
    tra, tdec = _positions(truth, "truth")
    ok = np.flatnonzero(np.isfinite(ra) & np.isfinite(dec))
    tok = np.flatnonzero(np.isfinite(tra) & np.isfinite(tdec))
    empty = Match(np.zeros(0, np.intp), np.zeros(0, np.intp), np.zeros(0), float(radius_arcsec))
    if len(ok) == 0 or len(tok) == 0:
        return empty
    sc = SkyCoord(ra[ok] * u.deg, dec[ok] * u.deg)
    tsc = SkyCoord(tra[tok] * u.deg, tdec[tok] * u.deg)
    if len(tok) == 1:  # match_to_catalog_sky needs a catalogue of two or more
        sep = np.asarray(sc.separation(tsc[0]).to_value(u.arcsec), np.float64).reshape(-1)
        nearest = np.zeros(len(ok), np.intp)
    else:
        idx, sep2d, _ = sc.match_to_catalog_sky(tsc)
        nearest = np.asarray(idx, np.intp)
        sep = np.asarray(sep2d.to_value(u.arcsec), np.float64)
    within = np.flatnonzero(sep <= radius_arcsec)
    # the closest detection keeps each true source: sort by separation, keep first claims
    order = within[np.lexsort((within, sep[within]))]
    _, first = np.unique(nearest[order], return_index=True)
    keep = np.sort(order[first])
    return Match(catalogue_index=ok[keep].astype(np.intp),
                 truth_index=tok[nearest[keep]].astype(np.intp),
                 separation_arcsec=sep[keep], radius_arcsec=float(radius_arcsec))


@dataclass(frozen=True)
class Residuals:
    """Parameter residuals of matched sources.

    Attributes
    ----------
    match : Match
        The M matches.
    truth_flux : (M,) float
        True flux, Jy.
    flux_ratio : (M,) float
        Measured / true flux.
    bmaj_ratio, bmin_ratio : (M,) float
        Measured / true axis, both as Gaussian FWHM (the SDC1 ``size`` conversions of
        the official scorer: LAS x 2.355/5, exponential x sqrt 2); NaN where the true
        axis is 0.
    pa_diff : (M,) float
        Measured - true PA, deg, in [-90, 90).
    offset_arcsec : (M,) float
        Position offset, arcsec.
    """

    match: Match
    truth_flux: NDArray[np.float64]
    flux_ratio: NDArray[np.float64]
    bmaj_ratio: NDArray[np.float64]
    bmin_ratio: NDArray[np.float64]
    pa_diff: NDArray[np.float64]
    offset_arcsec: NDArray[np.float64]


def _size_code(table: Table, n: int) -> NDArray[np.float64]:
    if "size" not in table.colnames:
        return np.ones(n)
    codes = np.asarray(table["size"], np.float64)
    return np.array([_TO_GAUSS.get(int(c), np.nan) if np.isfinite(c) else np.nan
                     for c in codes.tolist()])


def _ratio(a: NDArray[np.float64], b: NDArray[np.float64]) -> NDArray[np.float64]:
    ok = np.isfinite(a) & np.isfinite(b) & (b != 0)
    return np.divide(a, b, out=np.full(len(a), np.nan), where=ok)


def _default_radius(freq: int) -> float:
    if freq not in _BEAM_ARCSEC:
        raise StreamdetValueError(f"freq {freq} MHz is not an SDC1 band {tuple(_BEAM_ARCSEC)}; "
                                  "give the match radius")
    return _BEAM_ARCSEC[freq]


def parameter_residuals(catalogue: Table, truth: Table, *, radius_arcsec: float | None = None,
                        freq: int = 560) -> Residuals:
    """Match a catalogue to the truth and compare the parameters of the matches.

    Parameters
    ----------
    catalogue : astropy.table.Table
        ``ra``, ``dec`` (or ``ra_core``, ``dec_core``), ``flux`` (Jy), ``bmaj``/``bmin``
        (or ``b_maj``/``b_min``, arcsec) and ``pa`` (deg); sizes are Gaussian FWHM unless
        an SDC1 ``size`` column says otherwise.
    truth : astropy.table.Table
        An SDC1 catalogue (``ra_core``, ``dec_core``, ``flux``, ``b_maj``, ``b_min``,
        ``pa``, ``size``).
    radius_arcsec : float, optional
        Match radius; default the restoring beam FWHM of the band.
    freq : {560, 1400, 9200}
        Band, MHz (for the default radius).

    Returns
    -------
    Residuals
    """
    radius = _default_radius(freq) if radius_arcsec is None else float(radius_arcsec)
    m = match_catalogues(catalogue, truth, radius_arcsec=radius)
    ci, ti = m.catalogue_index, m.truth_index
    flux = _column(catalogue, ("flux",), u.Jy)[ci]
    tflux = _column(truth, ("flux",), u.Jy)[ti]
    bmaj, bmin, pa = (v[ci] for v in _ellipse(catalogue))
    tbmaj, tbmin, tpa = (v[ti] for v in _ellipse(truth))
    g = _size_code(catalogue, len(catalogue))[ci]
    tg = _size_code(truth, len(truth))[ti]
    pa_diff = np.mod(pa - tpa + 90.0, 180.0) - 90.0
    return Residuals(match=m, truth_flux=tflux, flux_ratio=_ratio(flux, tflux),
                     bmaj_ratio=_ratio(bmaj * g, tbmaj * tg),
                     bmin_ratio=_ratio(bmin * g, tbmin * tg), pa_diff=pa_diff,
                     offset_arcsec=m.separation_arcsec.copy())


def source_counts(flux: ArrayLike, bins: ArrayLike) -> NDArray[np.float64]:
    """Differential source counts per dex, dN/dlog10(S).

    Parameters
    ----------
    flux : (N,) array_like
        Fluxes, Jy; non-finite and non-positive values are left out.
    bins : (B+1,) array_like
        Increasing bin edges, Jy.

    Returns
    -------
    (B,) float
        Number of sources in each bin divided by its width in dex.
    """
    s = np.asarray(flux, np.float64).reshape(-1)
    edges = np.asarray(bins, np.float64).reshape(-1)
    if len(edges) < 2 or not np.all(edges > 0) or not np.all(np.diff(edges) > 0):
        raise StreamdetValueError("bins must be two or more increasing positive edges (Jy)")
    s = s[np.isfinite(s) & (s > 0)]
    counts, _ = np.histogram(s, bins=edges)
    return counts / np.diff(np.log10(edges))


@dataclass(frozen=True)
class ThresholdCurve:
    """Official SDC1 score against the objectness threshold.

    Attributes
    ----------
    thresholds : (K,) float
        Objectness thresholds (rows with ``objectness >= t`` are submitted).
    score, purity : (K,) float
        Score and purity of each submission.
    n_det, n_match : (K,) int
        Sources scored and matched.
    freq : int
        Band, MHz.
    """

    thresholds: NDArray[np.float64]
    score: NDArray[np.float64]
    purity: NDArray[np.float64]
    n_det: NDArray[np.int64]
    n_match: NDArray[np.int64]
    freq: int

    @property
    def best(self) -> int:
        """Index of the best score."""
        return int(np.argmax(self.score))


_DIAG_COLUMNS = ("objectness", "flux", "pa")


def _check_full_table(table: Table) -> None:
    missing = [c for c in _DIAG_COLUMNS if c not in table.colnames]
    if _position_columns(table, _MATCH_POSITIONS) is None:
        missing.insert(0, "ra/dec")
    if not _has_shape(table):
        missing.append("bmaj/bmin")
    if missing:
        raise StreamdetValueError(f"the catalogue lacks column(s) {missing}; diagnostics need a "
                                  "full streamdet table (streamdet detect -o CAT.ecsv: ra, dec, "
                                  f"flux, bmaj, bmin, pa, objectness); it has {table.colnames}")


def _finite_full_rows(table: Table) -> NDArray[np.bool_]:
    ra, dec = _positions(table, "detection")
    flux = _column(table, ("flux",), u.Jy)
    bmaj, bmin, pa = _ellipse(table)
    obj = np.asarray(table["objectness"], np.float64)
    return np.asarray(np.isfinite(ra) & np.isfinite(dec) & np.isfinite(flux) & np.isfinite(bmaj)
                      & np.isfinite(bmin) & np.isfinite(pa) & np.isfinite(obj), np.bool_)


def _sdc1_truth(truth: Table) -> Table:
    from .catalog import SDC1_COLUMNS

    missing = [c for c in SDC1_COLUMNS if c not in truth.colnames]
    if missing:
        raise StreamdetValueError(f"the truth catalogue lacks SDC1 column(s) {missing}")
    return truth[list(SDC1_COLUMNS)]


def threshold_curve(catalogue: Table, truth: Table, *, freq: int = 560,
                    thresholds: int | Sequence[float] = 12, train: bool = False
                    ) -> ThresholdCurve:
    """Score the rows above each objectness threshold with the official SDC1 scorer.

    Each selection goes through :func:`streamdet.outputs.to_sdc1` (Gaussian sizes,
    class SFG, core fraction 0.0375) and :func:`streamdet.score`.

    Parameters
    ----------
    catalogue : astropy.table.Table
        A full streamdet table (``ra``, ``dec``, ``flux``, ``bmaj``, ``bmin``, ``pa``,
        ``objectness``); rows with non-finite values are left out.
    truth : astropy.table.Table
        The SDC1 truth catalogue.
    freq : {560, 1400, 9200}
        Band, MHz.
    thresholds : int or sequence of float
        Number of thresholds evenly spaced from the lowest to the highest objectness,
        or the thresholds.
    train : bool
        Score inside the SDC1 training box instead of outside it.

    Returns
    -------
    ThresholdCurve

    Raises
    ------
    StreamdetError
        The official scorer (``ska-sdc``) is not installed.
    """
    from .outputs import to_sdc1
    from .score import score

    _check_full_table(catalogue)
    good = _finite_full_rows(catalogue)
    table = catalogue[good]
    obj = np.asarray(table["objectness"], np.float64)
    if isinstance(thresholds, int | np.integer):
        if thresholds < 1:
            raise StreamdetValueError(f"thresholds must be >= 1, got {thresholds}")
        lo, hi = (float(obj.min()), float(obj.max())) if len(obj) else (0.0, 1.0)
        grid = np.linspace(lo, hi, int(thresholds))
    else:
        grid = np.asarray(thresholds, np.float64).reshape(-1)
        if len(grid) == 0 or not np.all(np.isfinite(grid)):
            raise StreamdetValueError(f"thresholds must be finite numbers, got {thresholds!r}")
    true_sdc1 = _sdc1_truth(truth)
    sdc1 = to_sdc1(table)
    results = [score(sdc1[obj >= t], true_sdc1, freq=freq, train=train) for t in grid.tolist()]
    return ThresholdCurve(thresholds=grid,
                          score=np.array([r.score for r in results], np.float64),
                          purity=np.array([r.purity for r in results], np.float64),
                          n_det=np.array([r.n_det for r in results], np.int64),
                          n_match=np.array([r.n_match for r in results], np.int64), freq=freq)


def _scorer_problem() -> str | None:
    """Why the official scorer cannot be imported, or None."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            importlib.import_module("ska_sdc")
    except Exception as exc:  # ImportError, or pkg_resources missing under new setuptools
        return f"{type(exc).__name__}: {exc}"
    return None


@dataclass(frozen=True)
class DiagnosticsFigure:
    """A diagnostics figure, not yet written (see :func:`diagnostics_figure`).

    Attributes
    ----------
    figure : matplotlib.figure.Figure
        On an Agg canvas.
    axes : dict of str to matplotlib.axes.Axes
        ``"score"``, ``"flux"``, ``"size"``, ``"pa"``, ``"position"``, ``"counts"``.
    curve : ThresholdCurve or None
        None when the scorer is not installed (the panel says so).
    residuals : Residuals
        Of all rows of the catalogue with finite values.
    note : str or None
        Why the score panel is empty.
    """

    figure: Figure
    axes: dict[str, Axes]
    curve: ThresholdCurve | None
    residuals: Residuals
    note: str | None

    def save(self, out: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
        """Write the figure atomically (``.png``, ``.pdf`` or ``.svg``, from ``out``)."""
        return _save(self.figure, out, overwrite=overwrite)


def _binned_median(x: NDArray[np.float64], y: NDArray[np.float64], edges: NDArray[np.float64],
                   min_count: int = 5) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    which = np.digitize(x, edges) - 1
    xs, ys = [], []
    for k in range(len(edges) - 1):
        sel = which == k
        if int(sel.sum()) >= min_count:
            xs.append(math.sqrt(edges[k] * edges[k + 1]))
            ys.append(float(np.median(y[sel])))
    return np.array(xs), np.array(ys)


def _robust_limits(values: Sequence[NDArray[np.float64]], ref: float, pad: float = 0.15
                   ) -> tuple[float, float]:
    v = np.concatenate([np.asarray(a, np.float64) for a in values]) if values else np.zeros(0)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return ref - 1.0, ref + 1.0
    lo, hi = (float(q) for q in np.percentile(v, [1.0, 99.0]))
    lo, hi = min(lo, ref), max(hi, ref)
    span = max(hi - lo, 1e-3 * max(abs(ref), 1.0))
    return lo - pad * span, hi + pad * span


def diagnostics_figure(catalogue: CatalogueLike, truth: CatalogueLike, *, freq: int = 560,
                       thresholds: int | Sequence[float] = 12,
                       radius_arcsec: float | None = None, train: bool = False,
                       title: str | None = None, figsize: tuple[float, float] = (15.0, 9.0),
                       dpi: float = 100.0) -> DiagnosticsFigure:
    """Build the figure of :func:`plot_diagnostics` without writing it.

    Parameters are those of :func:`plot_diagnostics` (less ``out`` and ``overwrite``).

    Returns
    -------
    DiagnosticsFigure
    """
    cat = read_catalogue(catalogue)
    tru = read_catalogue(truth)
    _check_full_table(cat)
    _sdc1_truth(tru)
    radius = _default_radius(freq) if radius_arcsec is None else float(radius_arcsec)
    good = _finite_full_rows(cat)
    n_bad = int((~good).sum())
    full = cat[good]
    res = parameter_residuals(full, tru, radius_arcsec=radius, freq=freq)
    problem = _scorer_problem()
    curve = None if problem is not None else threshold_curve(full, tru, freq=freq,
                                                             thresholds=thresholds, train=train)

    fig = _new_figure(figsize, dpi)
    grid = fig.subplots(2, 3)
    axes = {"score": grid[0, 0], "flux": grid[0, 1], "size": grid[0, 2],
            "pa": grid[1, 0], "position": grid[1, 1], "counts": grid[1, 2]}
    tflux = res.truth_flux
    flo, fhi = _flux_range(tflux, full, tru)
    edges = np.logspace(math.log10(flo), math.log10(fhi), 13)

    ax = axes["score"]
    if curve is not None:
        ax.plot(curve.thresholds, curve.score, "o-", color="C0", label="score")
        ax.axvline(curve.thresholds[curve.best], color="C0", linestyle=":", linewidth=1)
        ax.set_ylabel("SDC1 score", color="C0")
        twin = ax.twinx()
        twin.plot(curve.thresholds, curve.purity, "s--", color="C3", label="purity")
        twin.set_ylabel("purity", color="C3")
        twin.set_ylim(-0.02, 1.02)
        b = curve.best
        ax.set_title(f"official score vs threshold (best {curve.score[b]:.1f} at "
                     f"{curve.thresholds[b]:.3g}, purity {curve.purity[b]:.2f})",
                     fontsize="medium")
    else:
        ax.text(0.5, 0.5, "score panel skipped:\nthe official scorer (ska-sdc) is not\n"
                f"available ({PLOT_EXTRA_HINT.replace('plot', 'score')})",
                ha="center", va="center", transform=ax.transAxes, fontsize="small", wrap=True)
        ax.set_title("official score vs threshold", fontsize="medium")
    ax.set_xlabel("objectness threshold")

    def residual_panel(key: str, series: list[tuple[NDArray[np.float64], str, str]],
                       ref: float, ylabel: str, title_: str) -> None:
        a = axes[key]
        for values, colour, label in series:
            a.scatter(tflux, values, s=8, alpha=0.5, color=colour, label=label, linewidths=0)
            mx, my = _binned_median(tflux, values, edges)
            if len(mx):
                a.plot(mx, my, "-", color=colour, linewidth=2, label=f"{label}: median")
        a.axhline(ref, color="k", linewidth=0.8)
        a.set_xscale("log")
        a.set_xlim(edges[0], edges[-1])
        a.set_ylim(*_robust_limits([s[0] for s in series], ref))
        a.set_xlabel("true flux (Jy)")
        a.set_ylabel(ylabel)
        a.set_title(title_, fontsize="medium")
        a.legend(fontsize="x-small", loc="best")

    residual_panel("flux", [(res.flux_ratio, "C0", "flux")], 1.0, "measured / true flux",
                   "flux ratio of matched sources")
    residual_panel("size", [(res.bmaj_ratio, "C1", "bmaj"), (res.bmin_ratio, "C2", "bmin")],
                   1.0, "measured / true size (Gaussian FWHM)", "size ratio")
    residual_panel("pa", [(res.pa_diff, "C4", "PA")], 0.0, "measured - true PA (deg)",
                   "position angle difference")
    axes["pa"].set_ylim(-95, 95)
    residual_panel("position", [(res.offset_arcsec, "C5", "offset")], 0.0,
                   "position offset (arcsec)", "position offset")
    axes["position"].axhline(radius, color="grey", linestyle=":", linewidth=1)
    axes["position"].set_ylim(0.0, radius * 1.05)

    ax = axes["counts"]
    det_flux = _column(full, ("flux",), u.Jy)
    ax.stairs(source_counts(_column(tru, ("flux",), u.Jy), edges), edges, color=TRUTH_COLOUR,
              linewidth=1.5, label=f"truth ({len(tru)})")
    ax.stairs(source_counts(det_flux, edges), edges, color="C0", linewidth=1.5,
              label=f"detections ({len(full)})")
    if curve is not None:
        sel = np.asarray(full["objectness"], np.float64) >= curve.thresholds[curve.best]
        ax.stairs(source_counts(det_flux[sel], edges), edges, color="C0", linestyle="--",
                  label=f"above best threshold ({int(sel.sum())})")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(edges[0], edges[-1])
    ax.set_xlabel("flux (Jy)")
    ax.set_ylabel("dN / dlog S (per dex)")
    ax.set_title("source counts", fontsize="medium")
    ax.legend(fontsize="x-small")

    note = None if problem is None else f"scorer unavailable: {problem}"
    label = "catalogue" if isinstance(catalogue, Table) else Path(catalogue).name
    head = title or (f"{label}: {len(full)} detections, {len(tru)} true sources, "
                     f"{len(res.match)} matched within {radius:g}\", {freq} MHz")
    if n_bad:
        head += f" ({n_bad} rows with non-finite values left out)"
    fig.suptitle(head)
    return DiagnosticsFigure(figure=fig, axes=axes, curve=curve, residuals=res, note=note)


def _flux_range(tflux: NDArray[np.float64], cat: Table, truth: Table) -> tuple[float, float]:
    values = np.concatenate([tflux, _column(cat, ("flux",), u.Jy),
                             _column(truth, ("flux",), u.Jy)])
    values = values[np.isfinite(values) & (values > 0)]
    if values.size == 0:
        return 1e-6, 1e-3
    lo, hi = float(values.min()), float(values.max())
    if hi <= lo * 1.01:
        lo, hi = lo / 2, hi * 2
    return lo * 0.99, hi * 1.01


def plot_diagnostics(catalogue: CatalogueLike, truth: CatalogueLike, *,
                     out: str | os.PathLike[str], freq: int = 560,
                     thresholds: int | Sequence[float] = 12, radius_arcsec: float | None = None,
                     train: bool = False, title: str | None = None,
                     figsize: tuple[float, float] = (15.0, 9.0), dpi: float = 100.0,
                     overwrite: bool = False) -> Path:
    """Draw the diagnostics of a streamdet catalogue against a truth catalogue, to a file.

    Six panels: (a) the official SDC1 score and purity of the rows above each
    objectness threshold (:func:`threshold_curve`; skipped, with a note, without
    ``ska-sdc``); (b) flux ratio, size ratios, PA difference and position offset of
    the matched sources against the true flux (:func:`parameter_residuals`: nearest
    true source within ``radius_arcsec``, one-to-one), with running medians; (c) the
    source counts dN/dlogS of the truth, the detections and those above the best
    threshold.

    Parameters
    ----------
    catalogue : Table or path
        A full streamdet table (``.ecsv``/``.fits``/``.parquet`` from ``streamdet
        detect``): ra, dec, flux, bmaj, bmin, pa, objectness.
    truth : Table or path
        SDC1 truth catalogue (text file or table).
    out : path
        Figure to write (``.png``, ``.pdf``, ``.svg``), atomically.
    freq : {560, 1400, 9200}
        Band, MHz.
    thresholds : int or sequence of float
        Number of thresholds between the lowest and highest objectness, or the values.
    radius_arcsec : float, optional
        Match radius for the residuals; default the band's beam FWHM.
    train : bool
        Score inside the SDC1 training box instead of outside it.
    title : str, optional
        Figure title; default names the catalogue and counts sources and matches.
    figsize : (float, float)
        Inches.
    dpi : float
        Dots per inch.
    overwrite : bool
        Replace an existing ``out``.

    Returns
    -------
    pathlib.Path
        ``out``.

    Raises
    ------
    StreamdetValueError
        The catalogue is not a full streamdet table, or the truth not SDC1.
    OutputExistsError
        ``out`` exists and ``overwrite`` is False.
    """
    _figure_format(out)
    check_output(out, overwrite=overwrite)
    df = diagnostics_figure(catalogue, truth, freq=freq, thresholds=thresholds,
                            radius_arcsec=radius_arcsec, train=train, title=title,
                            figsize=figsize, dpi=dpi)
    return df.save(out, overwrite=overwrite)
