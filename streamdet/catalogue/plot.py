"""Figures for radio astronomers: image regions with catalogues overlaid, and catalogue
diagnostics against a truth catalogue.

:func:`plot_region` draws a region of an image (a Zarr store, a FITS file or an
:class:`~streamdet.io.image.Image`) on RA/Dec axes, reading only that region, lazily, with
detections (ellipses, or pixel boxes) and a truth catalogue overlaid, a legend, the
restoring beam and a colour bar in (u/m)Jy/beam. What is drawn stays readable and the
legend says what it is: at most ``max_markers`` (2000) sources of each catalogue, the
brightest ("detections: brightest 2000 of 13770"), optionally above an objectness cut;
of the truth only the sources that could be detected (expected peak at least
``truth_snr`` times the noise, measured by the MAD of the pixels); the beam's key is the
beam drawn on the image, at its display size; colour-bar ticks never overlap.
:func:`plot_diagnostics` draws, for a full streamdet catalogue (with ``objectness``) and
a truth catalogue, the official SDC1 score and purity against the objectness threshold,
the parameter residuals of matched sources against the true flux, and the source counts
dN/dlogS, in the band the image's header or the catalogue says
(:func:`diagnostics_band`).

The computations behind the figures are functions of their own, usable and tested without
a figure: :func:`resolve_region`, :func:`overlay_geometry`, :func:`select_markers`,
:func:`expected_peak`, :func:`robust_noise`, :func:`match_catalogues`,
:func:`parameter_residuals`, :func:`threshold_curve`, :func:`source_counts`,
:func:`convolve_ellipses`, :func:`diagnostics_band`;
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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, Literal, TypeAlias

import astropy.units as u
import numpy as np
from astropy.table import Table
from astropy.wcs import WCS
from astropy.wcs.utils import proj_plane_pixel_scales
from numpy.typing import ArrayLike, NDArray

from ..errors import (
    StreamdetError,
    StreamdetFileNotFoundError,
    StreamdetValueError,
    WCSMissingError,
)
from ..io._atomic import atomic_path, check_output
from ..io.image import Image, open_image
from .outputs import _column, _ellipse

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.colorbar import Colorbar
    from matplotlib.figure import Figure
    from matplotlib.image import AxesImage
    from matplotlib.patches import Ellipse

__all__ = [
    "DiagnosticsFigure",
    "MarkerSelection",
    "Match",
    "Overlay",
    "PixelRegion",
    "RegionFigure",
    "Residuals",
    "ThresholdCurve",
    "convolve_ellipses",
    "diagnostics_band",
    "diagnostics_figure",
    "expected_peak",
    "match_catalogues",
    "overlay_geometry",
    "parameter_residuals",
    "plot_diagnostics",
    "plot_region",
    "read_catalogue",
    "region_figure",
    "resolve_region",
    "robust_noise",
    "select_markers",
    "source_counts",
    "threshold_curve",
]

Stretch: TypeAlias = Literal["asinh", "linear", "log"]
CatalogueLike: TypeAlias = "Table | str | os.PathLike[str]"

PLOT_EXTRA_HINT = "install the plot extra: pip install 'streamdet[plot]'"
#: Colours of the overlays (blue/orange: distinguishable with colour-blindness).
DETECTION_COLOUR = "#00e5ff"
TRUTH_COLOUR = "#ff9f1c"
#: Most sources of a catalogue a region figure draws by default (the brightest).
MAX_MARKERS = 2000
#: Default cut of a truth overlay: expected peak at least this many times the noise.
TRUTH_SNR = 5.0
#: Side (pixels) of the central full-resolution window the noise is measured on when a
#: region is shown as block means.
NOISE_WINDOW = 1024
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
        submissions (:func:`streamdet.catalogue.catalog.read_sdc1`); ``.ecsv``, ``.fits`` and
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
    :func:`streamdet.catalogue.outputs.to_table` wrote them); other frames go through astropy.
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
    in_region : int or None
        Rows with finite values whose centre lies in the region before a cut or
        thinning chose the M drawn (see :func:`select_markers`); None: all are drawn.
    """

    kind: Literal["ellipse", "box"]
    index: NDArray[np.intp]
    x: NDArray[np.float64]
    y: NDArray[np.float64]
    width: NDArray[np.float64]
    height: NDArray[np.float64]
    angle: NDArray[np.float64]
    in_region: int | None = None

    def __len__(self) -> int:
        return len(self.index)

    @property
    def n_region(self) -> int:
        """Rows with finite values whose centre lies in the region, drawn or not
        (``in_region``; the number drawn where it was not recorded)."""
        return len(self) if self.in_region is None else self.in_region


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
        in :func:`streamdet.catalogue.outputs.to_table`).
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
    return _overlay(table, region, wcs=wcs, beam=beam, what=what)


def _overlay(table: Table, region: PixelRegion, *, wcs: WCS | None,
             beam: tuple[float, float, float] | None, what: str,
             choose: Callable[[NDArray[np.intp]], NDArray[np.intp]] | None = None) -> Overlay:
    """:func:`overlay_geometry`, drawing only the rows ``choose`` keeps of those in the region.

    ``choose`` gets the rows (ascending) with finite values whose centre lies in the
    region and returns those to draw; shapes are computed for these only.
    """
    names = set(table.colnames)
    pos = _position_columns(table, _DRAW_POSITIONS)
    if wcs is not None and pos is not None and _has_shape(table):
        kind: Literal["ellipse", "box"] = "ellipse"
        # centres first: the shapes (three projections each) only for rows drawn
        x, y = _world_to_pixel(wcs, _column(table, (pos[0],), u.deg),
                               _column(table, (pos[1],), u.deg))
        bmaj, bmin, pa = _ellipse(table)
        finite = np.isfinite(bmaj) & np.isfinite(bmin) & np.isfinite(pa)
    elif set(_BOX_COLUMNS) <= names:
        kind = "box"
        b = [np.asarray(table[c], np.float64) for c in _BOX_COLUMNS]
        x, y = 0.5 * (b[0] + b[2]), 0.5 * (b[1] + b[3])
        finite = np.isfinite(b[2] - b[0]) & np.isfinite(b[3] - b[1])
    else:
        need = ("ra/dec (or ra_cent/dec_cent, ra_core/dec_core), bmaj/bmin (or b_maj/b_min) "
                "and pa")
        if pos is not None and _has_shape(table) and wcs is None:
            raise WCSMissingError(f"the {what} has sky positions only, but the image has no "
                                  "celestial WCS; give a table with pixel boxes x0 y0 x1 y1")
        raise StreamdetValueError(f"the {what} lacks the columns to draw: need {need}, or "
                                  f"pixel boxes x0 y0 x1 y1; it has {table.colnames}")
    rx, ry = x - region.x0, y - region.y0
    near = np.flatnonzero(finite & np.isfinite(rx) & np.isfinite(ry) & _inside(rx, ry, region))
    rows = near if choose is None else np.sort(np.asarray(choose(near), np.intp))
    if kind == "ellipse":
        width, height, angle = (np.full(len(rows), np.nan) for _ in range(3))
        if len(rows):
            assert pos is not None and wcs is not None
            cx, cy, width, height, angle = _sky_ellipses(table[rows], wcs, pos, beam)
            rx[rows], ry[rows] = cx - region.x0, cy - region.y0
    else:
        width, height = (b[2] - b[0])[rows], (b[3] - b[1])[rows]
        angle = np.zeros(len(rows))
    ox, oy = rx[rows], ry[rows]
    good = (np.isfinite(ox) & np.isfinite(oy) & np.isfinite(width) & np.isfinite(height)
            & np.isfinite(angle) & _inside(ox, oy, region))
    return Overlay(kind=kind, index=rows[good], x=ox[good], y=oy[good], width=width[good],
                   height=height[good], angle=angle[good],
                   in_region=None if choose is None else len(near))


# ----------------------------------------------------------------------------- what is drawn


@dataclass(frozen=True)
class MarkerSelection:
    """What of a catalogue a region figure draws, and why (for the legend).

    Attributes
    ----------
    in_region : int
        Rows with finite values whose centre lies in the region.
    passed : int
        Of those, the rows that pass ``cut`` (``in_region`` without a cut).
    drawn : int
        Rows drawn: the ``passed`` rows, or the first ``max_markers`` of them by ``rank``.
    cut : str or None
        The cut applied, in words (``"objectness >= 0.5"``, ``"peak >= 5 sigma ..."``).
    rank : str or None
        How the drawn rows were chosen when there were more than ``max_markers``:
        ``"brightest"`` (by flux), ``"most confident"`` (by objectness) or ``"evenly
        spread"`` (every k-th row, for tables with neither); None when not thinned.
    note : str or None
        Why a cut asked for was not applied (e.g. an image in K).
    """

    in_region: int
    passed: int
    drawn: int
    cut: str | None = None
    rank: str | None = None
    note: str | None = None

    def label(self, name: str) -> str:
        """Legend text, e.g. ``"detections: brightest 2000 of 13770"``."""
        if self.cut is None and self.rank is None:
            text = f"{name} ({self.drawn})"
        elif self.rank is None:
            text = f"{name}: {self.drawn} of {self.in_region} with {self.cut}"
        elif self.cut is None:
            text = f"{name}: {self.rank} {self.drawn} of {self.in_region}"
        else:
            text = (f"{name}: {self.rank} {self.drawn} of the {self.passed} with {self.cut} "
                    f"({self.in_region} in view)")
        return text + (f" ({self.note})" if self.note else "")


def robust_noise(data: ArrayLike) -> float | None:
    """Noise of image pixels from their median absolute deviation, ``1.4826 * MAD``.

    Robust to the sources (a few per cent of the pixels): the standard deviation of
    Gaussian noise.

    Parameters
    ----------
    data : array_like
        Pixels; non-finite ones are left out.

    Returns
    -------
    float or None
        Noise in the pixels' unit; None without finite pixels.
    """
    v = np.asarray(data, np.float64).reshape(-1)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return None
    return float(1.4826 * np.median(np.abs(v - np.median(v))))


def expected_peak(table: Table, beam: tuple[float, float, float] | None) -> NDArray[np.float64]:
    """Peak brightness (Jy/beam) each source of a catalogue would have in the image.

    For an elliptical Gaussian of integrated flux S and FWHM axes a, b convolved with a
    beam of FWHM A, B to axes a', b' (:func:`convolve_ellipses`), the peak is
    ``S A B / (a' b')`` Jy/beam. Sizes are taken as Gaussian FWHM, converted from an
    SDC1 ``size`` code (1 LAS, 3 exponential) as the official scorer does. A ``pb``
    column (the primary-beam gain, which :func:`streamdet.simulate` writes in its
    truth table) multiplies the flux; an SDC1 truth file holds the intrinsic flux, so
    away from the pointing centre the image's peak is lower than this.

    Parameters
    ----------
    table : astropy.table.Table
        With ``flux`` (Jy) and, for resolved sources, ``bmaj``/``bmin`` (or
        ``b_maj``/``b_min``, arcsec) and ``pa``.
    beam : (bmaj, bmin, bpa) or None
        Restoring beam, arcsec and deg; None: sources taken as unresolved (peak = S).

    Returns
    -------
    (N,) float
        Jy/beam; NaN where the flux is not finite.
    """
    flux = _column(table, ("flux",), u.Jy)
    if "pb" in table.colnames:
        gain = np.asarray(table["pb"], np.float64)
        flux = flux * np.where(np.isfinite(gain) & (gain > 0), gain, 1.0)
    if beam is None or not _has_shape(table):
        return flux
    bmaj, bmin, pa = _ellipse(table)
    g = _size_code(table, len(table))
    g = np.where(np.isfinite(g), g, 1.0)
    a = np.where(np.isfinite(bmaj), bmaj * g, 0.0)
    b = np.where(np.isfinite(bmin), bmin * g, 0.0)
    major, minor, _ = convolve_ellipses(a, b, np.where(np.isfinite(pa), pa, 0.0), beam)
    return np.asarray(flux * beam[0] * beam[1] / (major * minor), np.float64)


class _Chooser:
    """The ``choose`` of :func:`_overlay`: a row cut, then at most ``max_markers`` rows by
    rank (flux, else objectness, else evenly spread); records what it did."""

    def __init__(self, table: Table, *, max_markers: int, keep: NDArray[np.bool_] | None,
                 cut: str | None, note: str | None) -> None:
        self.max_markers = max_markers
        self.keep = keep
        self.cut = cut
        self.note = note
        self.key: NDArray[np.float64] | None = None
        self.rank = "evenly spread"
        for column, rank in (("flux", "brightest"), ("objectness", "most confident")):
            if column in table.colnames:
                self.key = (_column(table, ("flux",), u.Jy) if column == "flux"
                            else np.asarray(table[column], np.float64))
                self.rank = rank
                break
        self.selection = MarkerSelection(0, 0, 0)

    def __call__(self, near: NDArray[np.intp]) -> NDArray[np.intp]:
        rows = near if self.keep is None else near[self.keep[near]]
        thinned = 0 < self.max_markers < len(rows)
        if thinned:
            if self.key is None:
                pick = np.linspace(0, len(rows) - 1, self.max_markers).round().astype(np.intp)
                rows = rows[np.unique(pick)]
            else:
                key = self.key[rows]
                key = np.where(np.isfinite(key), key, -np.inf)
                order = np.argsort(-key, kind="stable")  # brightest first, ties by row
                rows = rows[order[: self.max_markers]]
        self.selection = MarkerSelection(
            in_region=len(near), passed=len(near) if self.keep is None else
            int(self.keep[near].sum()), drawn=len(rows), cut=self.cut,
            rank=self.rank if thinned else None, note=self.note)
        return rows


def select_markers(table: Table, region: PixelRegion, *, wcs: WCS | None = None,
                   beam: tuple[float, float, float] | None = None, max_markers: int = 0,
                   keep: ArrayLike | None = None, cut: str | None = None,
                   note: str | None = None, what: str = "catalogue"
                   ) -> tuple[Overlay, MarkerSelection]:
    """:func:`overlay_geometry` of the rows a figure draws: those passing a cut, thinned.

    Parameters
    ----------
    table, region, wcs, beam, what
        As for :func:`overlay_geometry`.
    max_markers : int
        Draw at most this many of the rows in the region that pass ``keep``: the
        brightest (``flux``), else those of highest ``objectness``, else an even spread
        of rows. 0 draws them all.
    keep : (N,) bool array_like, optional
        Rows passing the cut (all when None).
    cut : str, optional
        The cut in words, for the legend.
    note : str, optional
        Added to the legend text (e.g. why a cut was not applied).

    Returns
    -------
    overlay : Overlay
        With ``in_region`` the rows in the region before the cut and thinning.
    selection : MarkerSelection
        The counts and the legend text (:meth:`MarkerSelection.label`).
    """
    if isinstance(max_markers, bool) or not isinstance(max_markers, int | np.integer) \
            or max_markers < 0:
        raise StreamdetValueError(f"max_markers must be a whole number >= 0 (0: draw all), "
                                  f"got {max_markers!r}")
    mask = None
    if keep is not None:
        mask = np.asarray(keep, np.bool_).reshape(-1)
        if len(mask) != len(table):
            raise StreamdetValueError(f"keep has {len(mask)} values for {len(table)} rows")
    chooser = _Chooser(table, max_markers=int(max_markers), keep=mask, cut=cut, note=note)
    ov = _overlay(table, region, wcs=wcs, beam=beam, what=what, choose=chooser)
    sel = chooser.selection
    if sel.drawn != len(ov):  # a shape that did not project (beyond the projection's edge)
        sel = MarkerSelection(sel.in_region, sel.passed, len(ov), sel.cut, sel.rank, sel.note)
    return ov, sel


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
    selections : dict of str to MarkerSelection
        For ``"detections"`` and ``"truth"`` (those given): the counts in the region,
        the cut, the thinning, and the legend text.
    noise : float or None
        Noise (Jy/beam) the truth cut used: given, or ``1.4826 * MAD`` of the
        full-resolution pixels (:func:`robust_noise`); None without a truth cut.
    beam : matplotlib.patches.Ellipse or None
        The restoring beam drawn on the image (data units: region pixels); the legend's
        key is drawn from it at the same display size.
    colorbar : matplotlib.colorbar.Colorbar or None
        The colour bar.
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
    selections: dict[str, MarkerSelection] = field(default_factory=dict)
    noise: float | None = None
    beam: Ellipse | None = None
    colorbar: Colorbar | None = None

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


def _draw_beam(ax: Axes, image: Image, region: PixelRegion, cel: WCS) -> Ellipse | None:
    """The restoring beam as a filled ellipse in the lower-left corner, at its true size.

    The ellipse has the header's BMAJ, BMIN and BPA projected at that corner
    (:func:`_sky_ellipses`); None when the image has no beam, or it would cover more
    than half the region.
    """
    from matplotlib.patches import Ellipse

    beam = _valid_beam(image)
    if beam is None or not _is_equatorial(cel):
        return None
    sx, sy = _pixel_scales_arcsec(cel)
    pad = 0.6 * beam[0] / min(sx, sy) + 0.03 * min(region.width, region.height)
    world = cel.pixel_to_world_values(np.array([region.x0 + pad - 0.5]),
                                      np.array([region.y0 + pad - 0.5]))
    ra = np.asarray(world[cel.wcs.lng], np.float64).reshape(1)
    dec = np.asarray(world[cel.wcs.lat], np.float64).reshape(1)
    t = Table({"ra": ra, "dec": dec, "bmaj": [beam[0]], "bmin": [beam[1]], "pa": [beam[2]]})
    x, y, w, h, a = _sky_ellipses(t, cel, ("ra", "dec"))
    if not np.all(np.isfinite([x[0], y[0], w[0], h[0], a[0]])) or w[0] > 0.5 * region.width:
        return None
    patch = Ellipse((x[0] - region.x0, y[0] - region.y0), float(w[0]), float(h[0]),
                    angle=float(a[0]), facecolor="white", edgecolor="black", alpha=0.85,
                    linewidth=0.8, zorder=5)
    ax.add_patch(patch)
    return patch


def _valid_beam(image: Image) -> tuple[float, float, float] | None:
    beam = image.beam_arcsec
    if beam is None or not all(math.isfinite(v) for v in beam) or beam[0] <= 0 or beam[1] <= 0:
        return None
    return float(beam[0]), float(beam[1]), float(beam[2])


def _noise_pixels(image: Image, region: PixelRegion, channel: int | None,
                  data: NDArray[np.float32], step: int) -> NDArray[np.float32]:
    """Full-resolution pixels to measure the noise on: those shown, or (block means
    shown) the central ``NOISE_WINDOW`` square of the region."""
    if step == 1:
        return data
    w, h = min(NOISE_WINDOW, region.width), min(NOISE_WINDOW, region.height)
    x0 = region.x0 + (region.width - w) // 2
    y0 = region.y0 + (region.height - h) // 2
    values, _ = _read_region(image, PixelRegion(x0, y0, x0 + w, y0 + h), channel, max(w, h))
    return values


def _truth_cut(table: Table, image: Image, sigma: float | None, snr: float, given: bool
               ) -> tuple[NDArray[np.bool_] | None, str | None, str | None]:
    """(keep, cut, note) of the truth: the sources whose peak could be seen."""
    if snr == 0:
        return None, None, None
    unit = _unit_label(image.bunit)
    if image.bunit is not None and image.bunit.strip() and unit != "Jy/beam":
        return None, None, f"not cut: the image is in {unit}, not Jy/beam"
    if "flux" not in table.colnames:
        return None, None, "not cut: no flux column"
    if sigma is None or not sigma > 0:
        return None, None, "not cut: no noise in the pixels"
    from ._plot_artists import brightness_scale

    with np.errstate(invalid="ignore", divide="ignore"):
        keep = np.asarray(expected_peak(table, _valid_beam(image)) >= snr * sigma, np.bool_)
    factor, label = brightness_scale(sigma, sigma, "Jy/beam")
    how = "given" if given else "MAD"
    return keep, f"peak \u2265 {snr:g}\u03c3 (\u03c3 {sigma * factor:.2g} {label}, {how})", None


def _beam_extent_px(beam: Ellipse) -> tuple[float, float]:
    """Full width and height (data pixels) of the beam ellipse's bounding box."""
    t = math.radians(beam.angle)
    a, b = 0.5 * beam.width, 0.5 * beam.height
    return (2.0 * math.hypot(a * math.cos(t), b * math.sin(t)),
            2.0 * math.hypot(a * math.sin(t), b * math.cos(t)))


def _check_marker_options(max_markers: int, min_objectness: float | None, truth_snr: float,
                          noise: float | None) -> None:
    if isinstance(max_markers, bool) or not isinstance(max_markers, int | np.integer) \
            or max_markers < 0:
        raise StreamdetValueError(f"max_markers must be a whole number >= 0 (0: draw every "
                                  f"source), got {max_markers!r}")
    if min_objectness is not None and not math.isfinite(float(min_objectness)):
        raise StreamdetValueError(f"min_objectness must be a number, got {min_objectness!r}")
    if not (math.isfinite(float(truth_snr)) and truth_snr >= 0):
        raise StreamdetValueError(f"truth_snr must be >= 0 (0: draw every true source), got "
                                  f"{truth_snr!r}")
    if noise is not None and not (math.isfinite(float(noise)) and noise > 0):
        raise StreamdetValueError(f"noise must be positive (Jy/beam), got {noise!r}")


def region_figure(image: Image | str | os.PathLike[str], *,
                  catalogue: CatalogueLike | None = None, truth: CatalogueLike | None = None,
                  region: Sequence[float] | None = None, center: Sequence[float] | None = None,
                  size: float | Sequence[float] | None = None, channel: int | None = None,
                  stretch: Stretch = "asinh", percentiles: Sequence[float] = (0.5, 99.9),
                  vmin: float | None = None, vmax: float | None = None, cmap: str = "gray",
                  title: str | None = None, figsize: tuple[float, float] | None = None,
                  dpi: float = 100.0, max_side: int = 2048, min_px: float = 1.5,
                  apparent: bool = True, max_markers: int = MAX_MARKERS,
                  min_objectness: float | None = None, truth_snr: float = TRUTH_SNR,
                  noise: float | None = None) -> RegionFigure:
    """Build the figure of :func:`plot_region` without writing it.

    Parameters are those of :func:`plot_region` (less ``out`` and ``overwrite``).

    Returns
    -------
    RegionFigure
    """
    _matplotlib()
    from matplotlib.font_manager import FontProperties
    from matplotlib.lines import Line2D
    from matplotlib.patches import Ellipse
    from matplotlib.ticker import FuncFormatter

    from ._plot_artists import BeamKeyHandler, SpacedTicks, brightness_scale, format_tick

    _check_marker_options(max_markers, min_objectness, truth_snr, noise)
    img = image if isinstance(image, Image) else open_image(image)
    reg = resolve_region(img, region=region, center=center, size=size)
    cats = {k: (None if c is None else read_catalogue(c))
            for k, c in (("detections", catalogue), ("truth", truth))}
    cel = img.celestial_wcs
    beam = _valid_beam(img) if apparent else None
    data, step = _read_region(img, reg, channel, max_side)
    norm = _norm(data, stretch, percentiles, vmin, vmax)
    sigma = noise
    if sigma is None and cats["truth"] is not None and truth_snr > 0:
        sigma = robust_noise(_noise_pixels(img, reg, channel, data, step))

    overlays: dict[str, Overlay | None] = {"detections": None, "truth": None}
    selections: dict[str, MarkerSelection] = {}
    for key, table in cats.items():
        if table is None:
            continue
        keep: NDArray[np.bool_] | None = None
        cut = note = None
        if key == "detections" and min_objectness is not None:
            if "objectness" not in table.colnames:
                raise StreamdetValueError("min_objectness (--min-objectness) needs a catalogue "
                                          f"with an objectness column; it has {table.colnames}")
            with np.errstate(invalid="ignore"):
                keep = np.asarray(table["objectness"], np.float64) >= float(min_objectness)
            cut = f"objectness \u2265 {float(min_objectness):g}"
        elif key == "truth":
            keep, cut, note = _truth_cut(table, img, sigma, float(truth_snr), noise is not None)
        overlays[key], selections[key] = select_markers(
            table, reg, wcs=cel, beam=beam, max_markers=int(max_markers), keep=keep, cut=cut,
            note=note, what=key)

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

    handles: list[Any] = []
    handler_map: dict[Any, Any] = {}
    det, tru = overlays["detections"], overlays["truth"]
    if tru is not None:
        _draw_overlay(ax, tru, colour=TRUTH_COLOUR, linestyle="--", marker="+", min_px=min_px)
        handles.append(Line2D([], [], color=TRUTH_COLOUR, linestyle="--", marker="+",
                              label=selections["truth"].label("truth")))
    if det is not None:
        _draw_overlay(ax, det, colour=DETECTION_COLOUR, linestyle="-", marker=None,
                      min_px=min_px)
        handles.append(Line2D([], [], color=DETECTION_COLOUR, linestyle="none",
                              marker="o" if det.kind == "ellipse" else "s",
                              markerfacecolor="none", markersize=9,
                              label=selections["detections"].label("detections")))
    legend_pt = float(FontProperties(size="small").get_size_in_points())
    beam_patch = _draw_beam(ax, img, reg, cel) if cel is not None else None
    room = (0.0, 0.0)
    proxy = None
    if beam_patch is not None:
        bmaj, bmin, bpa = _valid_beam(img) or (0.0, 0.0, 0.0)
        # display inches per image pixel, before layout: the panel over the region
        fig_w, fig_h = (float(v) for v in fig.get_size_inches())
        per_px = max(min((fig_w - 2.6) / reg.width, (fig_h - 2.2) / reg.height), 0.2 / longest)
        ext_w, ext_h = (e * per_px * 72.0 for e in _beam_extent_px(beam_patch))  # points
        room = (1.2 * ext_w, 1.2 * ext_h)
        text = f"beam {bmaj:.3g}\" x {bmin:.3g}\", PA {bpa:.3g}\u00b0"
        if max(ext_w, ext_h) * dpi / 72.0 < 2.0:
            text += " (to scale: under 2 screen pixels)"
        proxy = Ellipse((0.0, 0.0), 1.0, 1.0, label=text)
        handles.append(proxy)
        handler_map[proxy] = BeamKeyHandler(beam_patch, ax, room)
    if handles:
        kinds = {o.kind for o in (det, tru) if o is not None}
        what = ("; ".join((["ellipses: FWHM" + (" convolved with the beam" if beam else "")]
                           if "ellipse" in kinds else [])
                          + (["boxes: detector boxes"] if "box" in kinds else [])))
        wide = sum(len(h.get_label()) for h in handles) > 80
        legend_style: dict[str, Any] = dict(
            handles=handles, handler_map=handler_map, loc="upper center",
            bbox_to_anchor=(0.5, -0.1), ncol=1 if wide else len(handles), frameon=False,
            fontsize=legend_pt, title=what or None, title_fontsize=legend_pt)
        ax.legend(**legend_style)
    # a colour bar as tall as the image: an inset beside the (aspect-locked) axes box;
    # ticks spaced by their display positions (an asinh bar crowds equal steps at its
    # foot), labelled in uJy/mJy/Jy
    cbar = fig.colorbar(shown, cax=ax.inset_axes((1.03, 0.0, 0.035, 1.0)))
    lo, hi = float(norm.vmin), float(norm.vmax)
    factor, unit = brightness_scale(lo, hi, _unit_label(img.bunit))
    cbar.ax.tick_params(labelsize=legend_pt)
    cbar.locator = SpacedTicks(legend_pt)
    cbar.formatter = FuncFormatter(lambda v, _: format_tick(v, factor, hi - lo))
    cbar.minorticks_off()
    cbar.set_label(unit)
    if title is None:
        title = (f"{img.path.name}: x {reg.x0}:{reg.x1}, y {reg.y0}:{reg.y1}"
                 + (f" (block mean {step}x{step})" if step > 1 else "")
                 + (f", {img.freq_hz / 1e6:.6g} MHz" if img.freq_hz else ""))
    ax.set_title(title, fontsize="medium")
    if beam_patch is not None and proxy is not None and max(room) > 0.7 * legend_pt:
        # a beam key larger than a line of text: lay the figure out, measure the beam
        # drawn, and give its key that room (a larger legend only shrinks the image, and
        # the beam with it)
        fig.draw_without_rendering()
        box = beam_patch.get_window_extent()
        need = (1.1 * box.width * 72.0 / dpi, 1.1 * box.height * 72.0 / dpi)
        if need[0] > room[0] or need[1] > room[1]:
            handler_map[proxy] = BeamKeyHandler(beam_patch, ax, (max(need[0], room[0]),
                                                                 max(need[1], room[1])))
            ax.legend(**legend_style)
    return RegionFigure(figure=fig, ax=ax, image=shown, data=data, region=reg, step=step,
                        vmin=lo, vmax=hi, detections=det, truth=tru, selections=selections,
                        noise=sigma, beam=beam_patch, colorbar=cbar)


def plot_region(image: Image | str | os.PathLike[str], *, out: str | os.PathLike[str],
                catalogue: CatalogueLike | None = None, truth: CatalogueLike | None = None,
                region: Sequence[float] | None = None, center: Sequence[float] | None = None,
                size: float | Sequence[float] | None = None, channel: int | None = None,
                stretch: Stretch = "asinh", percentiles: Sequence[float] = (0.5, 99.9),
                vmin: float | None = None, vmax: float | None = None, cmap: str = "gray",
                title: str | None = None, figsize: tuple[float, float] | None = None,
                dpi: float = 100.0, max_side: int = 2048, min_px: float = 1.5,
                apparent: bool = True, max_markers: int = MAX_MARKERS,
                min_objectness: float | None = None, truth_snr: float = TRUTH_SNR,
                noise: float | None = None, overwrite: bool = False) -> Path:
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
        True sources, drawn as dashed orange ellipses with a ``+`` at the centre;
        only those that could be detected (``truth_snr``).
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
    max_markers : int
        Draw at most this many sources of each catalogue in the region: the
        brightest (``flux``; else highest ``objectness``; else an even spread), so a
        whole field of 10^4 detections stays readable. The legend says what was drawn
        (``"detections: brightest 2000 of 13770"``). 0 draws every source.
    min_objectness : float, optional
        Draw only detections with ``objectness`` at least this (before thinning);
        the legend says so.
    truth_snr : float
        Draw only the true sources that could be detected: expected peak brightness
        (:func:`expected_peak`: flux, size convolved with the beam, the ``pb`` gain
        where the table has one) at least ``truth_snr`` times the noise. The legend
        gives the cut and the noise. 0 draws every true source; an image not in
        Jy/beam, or a truth without ``flux``, is not cut (the legend says so).
    noise : float, optional
        Noise for the truth cut, Jy/beam. Default ``1.4826 * MAD`` of the pixels
        shown (:func:`robust_noise`); of the central 1024^2 full-resolution pixels
        when the region is shown as block means.
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
                       max_side=max_side, min_px=min_px, apparent=apparent,
                       max_markers=max_markers, min_objectness=min_objectness,
                       truth_snr=truth_snr, noise=noise)
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


def diagnostics_band(catalogue: Table | None, truth: Table | None = None, *,
                     freq: int | None = None,
                     image: Image | str | os.PathLike[str] | None = None) -> tuple[int, str]:
    """The SDC1 band of a diagnostics plot, and what said so.

    The first that says: ``freq``; the header of ``image`` (the frequency axis or
    keyword :attr:`streamdet.io.image.Image.freq_hz`); the catalogue's meta (``freq_hz``,
    which ``streamdet detect`` writes, or the header of the image it names), then the
    truth's, as :func:`streamdet.catalogue.score.catalogue_band` reads them. A ``freq`` that
    differs from what the image or catalogues say is used, with a
    :class:`streamdet.catalogue.score.BandWarning`.

    Parameters
    ----------
    catalogue, truth : astropy.table.Table or None
        The catalogues plotted.
    freq : {560, 1400, 9200}, optional
        Band, MHz, given.
    image : Image or path, optional
        The image the catalogue was made from.

    Returns
    -------
    band, source : int, str
        MHz, and where it came from (``"given"``, ``"the header of f.fits"``, ``"the
        catalogue"``, ``"the truth"``).

    Raises
    ------
    StreamdetValueError
        ``freq`` is not an SDC1 band; ``image``'s header gives no frequency (and no
        ``freq``); or nothing says.
    """
    from .score import SDC1_FREQS, BandWarning, catalogue_band, sdc1_band

    if freq is not None and freq not in SDC1_FREQS:
        raise StreamdetValueError(f"freq {freq} MHz is not an SDC1 band {SDC1_FREQS}")
    known: int | None = None
    source = ""
    if image is not None:
        img = image if isinstance(image, Image) else open_image(image)
        if img.freq_hz:
            known, source = sdc1_band(img.freq_hz), f"the header of {img.path.name}"
        elif freq is None:
            raise StreamdetValueError(f"the header of {img.path} gives no frequency: give "
                                      "the band, freq=F (--freq F) with F one of "
                                      f"{', '.join(map(str, SDC1_FREQS))} (MHz)")
    for what, table in (("the catalogue", catalogue), ("the truth", truth)):
        if known is None and table is not None:
            known, source = catalogue_band(table), what
    if freq is None:
        if known is None:
            raise StreamdetValueError(
                "cannot tell the band: the catalogues carry no frequency (freq_hz; an SDC1 "
                "text file carries none) and no image was given; give freq=F (--freq F) "
                f"with F one of {', '.join(map(str, SDC1_FREQS))} (MHz), or the image "
                "(image=, IMAGE on the command line)")
        return known, source
    if known is not None and known != freq:
        warnings.warn(f"plotting at {freq} MHz a catalogue {source} puts at {known} MHz",
                      BandWarning, stacklevel=3)
    return int(freq), "given"


def _default_radius(freq: int) -> float:
    if freq not in _BEAM_ARCSEC:
        raise StreamdetValueError(f"freq {freq} MHz is not an SDC1 band {tuple(_BEAM_ARCSEC)}; "
                                  "give the match radius")
    return _BEAM_ARCSEC[freq]


def parameter_residuals(catalogue: Table, truth: Table, *, radius_arcsec: float | None = None,
                        freq: int | None = None) -> Residuals:
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
    freq : {560, 1400, 9200}, optional
        Band, MHz, for the default radius; default the band the catalogues say
        (:func:`diagnostics_band`).

    Returns
    -------
    Residuals
    """
    if radius_arcsec is None:
        radius = _default_radius(diagnostics_band(catalogue, truth, freq=freq)[0])
    else:
        radius = float(radius_arcsec)
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


def threshold_curve(catalogue: Table, truth: Table, *, freq: int | None = None,
                    thresholds: int | Sequence[float] = 12, train: bool = False
                    ) -> ThresholdCurve:
    """Score the rows above each objectness threshold with the official SDC1 scorer.

    Each selection goes through :func:`streamdet.catalogue.outputs.to_sdc1` (Gaussian sizes,
    class SFG, core fraction 0.0375) and :func:`streamdet.score`.

    Parameters
    ----------
    catalogue : astropy.table.Table
        A full streamdet table (``ra``, ``dec``, ``flux``, ``bmaj``, ``bmin``, ``pa``,
        ``objectness``); rows with non-finite values are left out.
    truth : astropy.table.Table
        The SDC1 truth catalogue.
    freq : {560, 1400, 9200}, optional
        Band, MHz; default the band the catalogues say (:func:`diagnostics_band`).
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
    StreamdetValueError
        No ``freq``, and the catalogues do not say their band.
    """
    _check_full_table(catalogue)
    band = diagnostics_band(catalogue, truth, freq=freq)[0]
    return _threshold_curve(catalogue, truth, freq=band, thresholds=thresholds, train=train)


def _threshold_curve(catalogue: Table, truth: Table, *, freq: int,
                     thresholds: int | Sequence[float], train: bool) -> ThresholdCurve:
    """:func:`threshold_curve` at a known band (no band check)."""
    from .outputs import to_sdc1
    from .score import BandWarning, score

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
    with warnings.catch_warnings():  # the band was checked once, by the caller
        warnings.simplefilter("ignore", BandWarning)
        results = [score(sdc1[obj >= t], true_sdc1, freq=freq, train=train)
                   for t in grid.tolist()]
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
    freq : int
        Band, MHz, of the scorer and the default match radius.
    band_source : str
        Where the band came from (:func:`diagnostics_band`).
    """

    figure: Figure
    axes: dict[str, Axes]
    curve: ThresholdCurve | None
    residuals: Residuals
    note: str | None
    freq: int = 0
    band_source: str = ""

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


def diagnostics_figure(catalogue: CatalogueLike, truth: CatalogueLike, *,
                       freq: int | None = None,
                       image: Image | str | os.PathLike[str] | None = None,
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
    freq, band_source = diagnostics_band(cat, tru, freq=freq, image=image)
    radius = _default_radius(freq) if radius_arcsec is None else float(radius_arcsec)
    good = _finite_full_rows(cat)
    n_bad = int((~good).sum())
    full = cat[good]
    res = parameter_residuals(full, tru, radius_arcsec=radius, freq=freq)
    problem = _scorer_problem()
    curve = None if problem is not None else _threshold_curve(full, tru, freq=freq,
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
                     f"{len(res.match)} matched within {radius:g}\", {freq} MHz "
                     f"({'given' if band_source == 'given' else 'from ' + band_source})")
    if n_bad:
        head += f" ({n_bad} rows with non-finite values left out)"
    fig.suptitle(head)
    return DiagnosticsFigure(figure=fig, axes=axes, curve=curve, residuals=res, note=note,
                             freq=freq, band_source=band_source)


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
                     out: str | os.PathLike[str], freq: int | None = None,
                     image: Image | str | os.PathLike[str] | None = None,
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
    freq : {560, 1400, 9200}, optional
        Band, MHz (the scorer's, and the default match radius). Default: from the
        header of ``image``, else from the catalogue's meta (``freq_hz``, which
        ``streamdet detect`` writes), else the truth's (:func:`diagnostics_band`);
        required where nothing says (SDC1 text files carry no band).
    image : Image or path, optional
        The image the catalogue was made from: its header gives the band.
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
        The catalogue is not a full streamdet table, or the truth not SDC1; no band
        given or known.
    OutputExistsError
        ``out`` exists and ``overwrite`` is False.
    """
    _figure_format(out)
    check_output(out, overwrite=overwrite)
    df = diagnostics_figure(catalogue, truth, freq=freq, image=image, thresholds=thresholds,
                            radius_arcsec=radius_arcsec, train=train, title=title,
                            figsize=figsize, dpi=dpi)
    return df.save(out, overwrite=overwrite)
