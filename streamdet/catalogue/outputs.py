"""From detections to catalogues: tables, SDC1 and SDC2 submissions, files and region files.

:func:`to_table` turns :class:`~streamdet.engine.detections.Detections` (pixels) into an
astropy table with sky coordinates and primary-beam corrected fluxes;
:func:`to_sdc1` reduces it to the SDC1 submission columns; :func:`cube_table` turns 3D
detections of an HI cube (voxels) into the physical SDC2 columns (RA/Dec, central
frequency, redshift, line flux, HI size, w20, PA, inclination); :func:`write_catalogue`
and :func:`write_regions` write files atomically, a block of rows at a time (the memory
of writing is a block's, whatever the size of the catalogue).
"""

from __future__ import annotations

import datetime as _dt
import gc
import importlib.util
import io
import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import astropy.units as u
import numpy as np
from astropy.io import fits
from astropy.io.fits.verify import VerifyWarning
from astropy.table import Column, Table
from astropy.wcs import WCS
from astropy.wcs.utils import proj_plane_pixel_scales
from numpy.typing import NDArray

from .._version import __version__
from ..engine.boxes import centre_columns
from ..engine.detections import Detections
from ..errors import StreamdetError, StreamdetValueError, StreamdetWarning, WCSMissingError
from ..io._atomic import atomic_path, check_output
from ._pb import PrimaryBeam
from .catalog import sdc1_pa

__all__ = [
    "C_KMS",
    "DEFAULT_PARAM_UNITS",
    "HI_REST_HZ",
    "SDC1_COLUMNS",
    "CatalogueWarning",
    "NoWCSWarning",
    "cube_table",
    "to_sdc1",
    "to_table",
    "write_catalogue",
    "write_regions",
]

#: Units of the SDC1 model parameters (used when the caller gives none).
DEFAULT_PARAM_UNITS: dict[str, str] = {
    "flux": "Jy", "bmaj": "arcsec", "bmin": "arcsec", "pa": "deg",
}

#: The columns of an SDC1 submission, in order (as in :mod:`streamdet.catalogue.catalog`).
SDC1_COLUMNS: tuple[str, ...] = (
    "id", "ra_core", "dec_core", "ra_cent", "dec_cent", "flux", "core_frac",
    "b_maj", "b_min", "pa", "size", "class",
)

#: Rest frequency of the HI 21 cm line, Hz.
HI_REST_HZ = 1420.405752e6
#: Speed of light, km/s.
C_KMS = 299792.458
#: Inclination written for a model without an inclination output, deg (the median of
#: isotropic orientations, cos i uniform).
_DEFAULT_INCLINATION = 60.0

CatalogueFormat = Literal["sdc1", "sdc2", "ecsv", "fits", "parquet"]
_ASTROPY_FORMATS = {"ecsv": "ascii.ecsv", "fits": "fits", "parquet": "parquet"}


class NoWCSWarning(StreamdetWarning):
    """A catalogue was made without a celestial WCS: pixel columns only."""


class CatalogueWarning(StreamdetWarning):
    """Rows were dropped or a catalogue is empty or incomplete."""


def _celestial(wcs: WCS | None) -> WCS | None:
    if wcs is None:
        warnings.warn("no WCS given: the catalogue has pixel columns only (no ra/dec)",
                      NoWCSWarning, stacklevel=3)
        return None
    if not wcs.has_celestial:
        warnings.warn(f"the WCS has no celestial axes (CTYPE {list(wcs.wcs.ctype)}): the "
                      "catalogue has pixel columns only (no ra/dec)", NoWCSWarning, stacklevel=3)
        return None
    return wcs.celestial


_WCS_BLOCK = 1 << 15  # rows per pixel -> world call


def _pixel_to_icrs(cel: WCS, x: NDArray[np.float64], y: NDArray[np.float64]
                   ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """0-based pixel centres -> ICRS (ra in [0, 360), dec), degrees."""
    if len(x) == 0:
        return np.zeros(0), np.zeros(0)
    lng_type = str(cel.wcs.ctype[cel.wcs.lng]).upper()
    ra, dec = np.empty(len(x)), np.empty(len(x))
    # In blocks: wcslib's and astropy's temporaries (several arrays per row) stay a
    # few MB however large the catalogue.
    for i in range(0, len(x), _WCS_BLOCK):
        part = slice(i, i + _WCS_BLOCK)
        if lng_type.startswith("RA"):
            world = cel.pixel_to_world_values(x[part], y[part])
            ra[part], dec[part] = world[cel.wcs.lng], world[cel.wcs.lat]
        else:  # galactic, ecliptic, ...: through astropy's frame transforms
            sc = cel.pixel_to_world(x[part], y[part]).icrs
            ra[part], dec[part] = sc.ra.deg, sc.dec.deg
    np.mod(ra, 360.0, out=ra)
    ra[ra >= 360.0] = 0.0
    return ra, dec


def _pixel_scale(cel: WCS | None, given: float | None) -> float | None:
    if given is not None:
        s = float(given)
        if not (np.isfinite(s) and s > 0):
            raise StreamdetValueError(f"pixel_scale_arcsec must be positive, got {given!r}")
        return s
    if cel is None:
        return None
    scales = proj_plane_pixel_scales(cel)
    units = [u.Unit(cu) if str(cu) else u.deg for cu in cel.wcs.cunit]
    arcsec = [float((s * un).to_value(u.arcsec)) for s, un in zip(scales, units, strict=True)]
    return float(np.mean(arcsec))


def to_table(dets: Detections, *, wcs: WCS | None = None,
             pixel_scale_arcsec: float | None = None,
             pb: PrimaryBeam | str | os.PathLike[str] | None = None,
             param_units: Mapping[str, str] | None = None, flux_param: str = "flux",
             pb_outside: Literal["nan", "nearest", "radial"] = "radial",
             meta: Mapping[str, Any] | None = None, copy: bool = True) -> Table:
    """Turn detections into a catalogue table.

    Parameters
    ----------
    dets : Detections
        Detections in full-image pixels (N rows).
    wcs : astropy.wcs.WCS, optional
        WCS of the image (any number of axes; its celestial part is used). Without
        one (or without celestial axes) the table has pixel columns only and a
        :class:`NoWCSWarning` is issued.
    pixel_scale_arcsec : float, optional
        Pixel size, arcsec; default: from the WCS. Adds ``width_arcsec`` and
        ``height_arcsec``.
    pb : PrimaryBeam or path, optional
        Primary beam: the flux parameter is divided by the beam response at each
        source's (ra, dec). Needs a celestial WCS.
    param_units : mapping of str to str, optional
        Unit of each parameter; default :data:`DEFAULT_PARAM_UNITS`.
    flux_param : str
        Name of the flux parameter corrected by the primary beam.
    pb_outside : {"radial", "nan", "nearest"}
        Response beyond the beam image (see :meth:`PrimaryBeam.response`): the
        map's azimuthally averaged profile at the source's distance from the beam
        centre (default; the SDC1 beam map is smaller than the SDC1 image), NaN, or
        the nearest edge value. Where the response is NaN or not positive the
        corrected flux is NaN, with a :class:`CatalogueWarning`; ``meta`` counts the
        extrapolated sources in ``pb_extrapolated``.
    meta : mapping, optional
        Extra provenance merged into ``table.meta``.
    copy : bool
        ``False`` lets the box, parameter and score columns share memory with
        ``dets`` (which must then not be modified): no second copy of a large
        catalogue.

    Returns
    -------
    astropy.table.Table
        Columns (units in ``Column.unit``): ``x``, ``y`` (box centre, px),
        ``ra``, ``dec`` (deg, ICRS, ra in [0, 360); with a WCS), ``width``,
        ``height`` (px, float32), ``width_arcsec``, ``height_arcsec`` (float32; with a
        pixel scale),
        each parameter by name, ``flux_apparent`` and ``pb`` (with ``pb``),
        ``objectness``, ``probability``, ``prior``, ``chunk``, and the box ``x0``,
        ``y0``, ``x1``, ``y1`` (px; four flat columns rather than one (N, 4) column
        because astropy cannot read back an empty ECSV table with a multidimensional
        column). ``meta`` holds provenance. Zero detections give zero rows with the
        same columns.

    Raises
    ------
    WCSMissingError
        ``pb`` given without a celestial WCS.
    StreamdetValueError
        ``pb`` given but there is no ``flux_param`` parameter.
    """
    cel = _celestial(wcs)
    scale = _pixel_scale(cel, pixel_scale_arcsec)
    units = dict(DEFAULT_PARAM_UNITS)
    if param_units is not None:
        units.update(param_units)
    boxes = dets.boxes.astype(np.float64, copy=False)
    x, y = centre_columns(boxes)             # no (N, 2) temporaries: ~5.7e5 rows at 16384^2
    # Sizes in float32 (7 significant digits: ample for a size; positions stay float64),
    # computed in float64 and rounded once.
    width = np.subtract(boxes[:, 2], boxes[:, 0], out=np.empty(len(boxes), np.float32))
    height = np.subtract(boxes[:, 3], boxes[:, 1], out=np.empty(len(boxes), np.float32))

    # Columns are gathered first and handed over without another copy (a 16384^2
    # field gives ~350k rows); with copy=False the box, parameter and score columns
    # are views of the detections' own arrays.
    cols: dict[str, NDArray[Any]] = {"x": x, "y": y}
    col_units: dict[str, u.UnitBase] = {"x": u.pix, "y": u.pix}
    ra = dec = None
    if cel is not None:
        ra, dec = _pixel_to_icrs(cel, x, y)
        cols["ra"], cols["dec"] = ra, dec
        col_units["ra"] = col_units["dec"] = u.deg
    cols["width"], cols["height"] = width, height
    col_units["width"] = col_units["height"] = u.pix
    if scale is not None:
        cols["width_arcsec"] = width * np.float32(scale)
        cols["height_arcsec"] = height * np.float32(scale)
        col_units["width_arcsec"] = col_units["height_arcsec"] = u.arcsec
    params = dets.params
    for k, name in enumerate(dets.param_names):
        cols[name] = params[:, k] if not copy else params[:, k].copy()
        if units.get(name):
            col_units[name] = u.Unit(units[name])
    t = Table(cols, copy=False)
    for name, unit in col_units.items():
        t[name].unit = unit

    prov: dict[str, Any] = {
        "creator": f"streamdet {__version__}",
        "date": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "n_sources": len(dets),
        "params": ",".join(dets.param_names),
        "pixel_convention": "0-based, pixel i centred at i; box xyxy",
    }
    if scale is not None:
        prov["pixel_scale_arcsec"] = scale
    if cel is not None:
        prov["wcs_ctype"] = ",".join(str(c) for c in cel.wcs.ctype)
        prov["wcs_crval"] = ",".join(repr(float(v)) for v in cel.wcs.crval)
        prov["wcs_radesys"] = str(cel.wcs.radesys)

    if pb is not None:
        if ra is None or dec is None:
            raise WCSMissingError("primary-beam correction needs sky positions, but there is "
                                  "no celestial WCS")
        if flux_param not in dets.param_names:
            raise StreamdetValueError(f"primary-beam correction needs a {flux_param!r} "
                                      f"parameter; have {dets.param_names}")
        beam = pb if isinstance(pb, PrimaryBeam) else PrimaryBeam.from_fits(pb)
        resp = beam.response(ra, dec, outside=pb_outside)
        inside = np.isfinite(beam.response(ra, dec, outside="nan"))
        prov["pb_extrapolated"] = int(np.count_nonzero(~inside & np.isfinite(resp)))
        apparent = np.asarray(t[flux_param], np.float64)
        ok = np.isfinite(resp) & (resp > 0)
        corrected = np.divide(apparent, resp, out=np.full(len(t), np.nan), where=ok)
        if not ok.all():
            warnings.warn(f"{int((~ok).sum())} of {len(t)} sources lie outside the primary "
                          f"beam {beam.source!r} (or where it is not positive): their "
                          f"{flux_param!r} is NaN", CatalogueWarning, stacklevel=2)
        t[flux_param] = corrected
        t[flux_param].unit = units.get(flux_param) or None
        t["flux_apparent"] = apparent
        t["flux_apparent"].unit = units.get(flux_param) or None
        t["pb"] = resp
        t["pb"].unit = u.dimensionless_unscaled
        prov["pb_source"] = beam.source
        prov["pb_corrected"] = flux_param
    tail: dict[str, NDArray[Any]] = {
        "objectness": dets.objectness.astype(np.float32, copy=copy),
        "probability": dets.probability.astype(np.float32, copy=copy),
        "prior": dets.prior.astype(np.int16, copy=copy),
        "chunk": dets.chunk.astype(np.int32, copy=copy),
    }
    for k, name in enumerate(("x0", "y0", "x1", "y1")):
        tail[name] = boxes[:, k] if not copy else boxes[:, k].copy()
    t.add_columns(list(tail.values()), names=list(tail), copy=False)
    for name in ("x0", "y0", "x1", "y1"):
        t[name].unit = u.pix
    prov.update(meta or {})
    t.meta.update(prov)
    return t


def _spectral_wcs(wcs: WCS) -> WCS:
    """The 1-D frequency axis of a cube's WCS (pixel axis z), or raise WCSMissingError."""
    if wcs.naxis < 3 or wcs.wcs.spec < 0:
        raise WCSMissingError(f"the WCS has no spectral axis (CTYPE {list(wcs.wcs.ctype)}): "
                              "a cube catalogue needs one to give central frequencies")
    spec = wcs.sub([wcs.wcs.spec + 1])
    ctype = str(spec.wcs.ctype[0]).upper()
    if not ctype.startswith("FREQ"):
        raise WCSMissingError(f"the spectral axis is {ctype!r}; cube catalogues need a FREQ "
                              "axis (Hz)")
    return spec


def cube_table(dets: Detections, *, wcs: WCS | None,
               pixel_scale_arcsec: float | None = None) -> Table:
    """Physical catalogue of 3D detections in an HI cube, SDC2 columns first.

    Positions: the box centre ``(x, y, z)`` (0-based voxels; z the channel) goes through
    the cube's WCS to ICRS RA/Dec (deg) and the frequency of the channel (Hz); the
    redshift is ``HI_REST_HZ / central_freq - 1``. The model's decoded parameters give
    ``line_flux_integral`` (Jy Hz), ``hi_size`` (arcsec), ``w20`` (km/s), ``pa`` (deg,
    [0, 360)) and ``i`` (deg). A model without one of them gets it from the box: ``w20``
    from its depth ``d`` (channels) as ``d * c * dnu / nu`` (``dnu`` the channel width at
    the centre), ``hi_size`` from ``sqrt(w h)`` times the pixel scale, ``pa`` 0 and ``i``
    60 deg; ``line_flux_integral`` has no box equivalent and is required.

    Parameters
    ----------
    dets : Detections
        3D detections, boxes ``(N, 6)`` ``[x0, y0, z0, x1, y1, z1]`` in cube voxels.
    wcs : astropy.wcs.WCS
        The cube's WCS: celestial axes on pixel axes x, y and a FREQ axis on z.
    pixel_scale_arcsec : float, optional
        Pixel side, arcsec (default: from the WCS); used only for a box-derived size.

    Returns
    -------
    astropy.table.Table
        ``id`` (1-based, by objectness descending as the detections come), ``ra``,
        ``dec``, ``hi_size``, ``line_flux_integral``, ``central_freq``, ``pa``, ``i``,
        ``w20`` (the columns of :data:`streamdet.catalogue.sdc2.SDC2_COLUMNS`), then
        ``redshift``, ``x``, ``y``, ``z`` (voxels), ``box_w``, ``box_h`` (px),
        ``box_d`` (channels), ``objectness``, ``probability``, ``prior``, ``chunk``.
        ``meta["ndim"]`` is 3.

    Raises
    ------
    StreamdetValueError
        Not 3D detections, or no ``line_flux_integral`` parameter.
    WCSMissingError
        No WCS, no celestial axes or no FREQ axis.
    """
    if dets.ndim != 3:
        raise StreamdetValueError(f"cube_table needs 3D detections, got {dets.ndim}D ones")
    if wcs is None or not wcs.has_celestial:
        raise WCSMissingError("a cube catalogue needs the cube's celestial WCS for RA/Dec")
    if "line_flux_integral" not in dets.param_names:
        raise StreamdetValueError(f"the model gives no line_flux_integral (its parameters: "
                                  f"{dets.param_names}); an SDC2 catalogue needs one")
    b = dets.boxes
    x, y, z = centre_columns(b)
    size = b[:, 3:] - b[:, :3]
    ra, dec = _pixel_to_icrs(wcs.celestial, x, y)
    spec = _spectral_wcs(wcs)
    n = len(dets)
    if n:
        freq = np.asarray(spec.all_pix2world(z, 0)[0], np.float64)
        dnu = np.abs(np.asarray(spec.all_pix2world(z + 0.5, 0)[0], np.float64)
                     - np.asarray(spec.all_pix2world(z - 0.5, 0)[0], np.float64))
    else:
        freq = dnu = np.zeros(0)
    names = dets.param_names

    def param(name: str) -> NDArray[np.float64] | None:
        return dets.param(name).astype(np.float64) if name in names else None

    w20 = param("w20")
    if w20 is None:
        w20 = size[:, 2] * C_KMS * dnu / np.where(freq > 0, freq, np.inf)
    hi_size = param("hi_size")
    if hi_size is None:
        scale = _pixel_scale(wcs.celestial, pixel_scale_arcsec) or 1.0
        hi_size = np.sqrt(size[:, 0] * size[:, 1]) * scale
    pa = param("pa")
    if pa is None:
        pa = np.zeros(n)
    incl = param("i")
    if incl is None:
        incl = np.full(n, _DEFAULT_INCLINATION)
    flux = dets.param("line_flux_integral").astype(np.float64)
    with np.errstate(divide="ignore"):
        redshift = HI_REST_HZ / freq - 1.0
    table = Table()
    table["id"] = np.arange(1, n + 1, dtype=np.int64)
    table["ra"] = Column(ra, unit=u.deg)
    table["dec"] = Column(dec, unit=u.deg)
    table["hi_size"] = Column(hi_size, unit=u.arcsec)
    table["line_flux_integral"] = Column(flux, unit=u.Jy * u.Hz)
    table["central_freq"] = Column(freq, unit=u.Hz)
    table["pa"] = Column(np.mod(pa, 360.0), unit=u.deg)
    table["i"] = Column(incl, unit=u.deg)
    table["w20"] = Column(w20, unit=u.km / u.s)
    table["redshift"] = redshift
    table["x"], table["y"], table["z"] = x, y, z
    table["box_w"], table["box_h"], table["box_d"] = size[:, 0], size[:, 1], size[:, 2]
    table["objectness"] = dets.objectness
    table["probability"] = dets.probability
    table["prior"] = dets.prior
    table["chunk"] = dets.chunk
    table.meta["ndim"] = 3
    table.meta["streamdet_version"] = __version__
    return table


def _column(table: Table, names: tuple[str, ...], unit: u.UnitBase) -> NDArray[np.float64]:
    """First existing column of ``names`` as float64 in ``unit`` (unitless: assumed)."""
    for name in names:
        if name in table.colnames:
            col = table[name]
            values = np.asarray(col, dtype=np.float64)
            if col.unit is not None and col.unit != u.dimensionless_unscaled:
                try:
                    values = (values * col.unit).to_value(unit)
                except u.UnitConversionError as exc:
                    raise StreamdetValueError(f"column {name!r} has unit {col.unit}, not "
                                              f"convertible to {unit}") from exc
            return values
    raise StreamdetValueError(f"table lacks a {' / '.join(repr(n) for n in names)} column; "
                              f"it has {table.colnames}")


def _ellipse(table: Table) -> tuple[NDArray[np.float64], NDArray[np.float64],
                                    NDArray[np.float64]]:
    """``(bmaj, bmin, pa)`` in arcsec, arcsec, deg with ``bmaj >= bmin`` and PA east of
    north in [0, 180).

    An SDC1 catalogue's PA (a table with ``b_maj``, not ``bmaj``) is converted from the
    SDC1 convention (:func:`streamdet.catalogue.catalog.sdc1_pa`). Where ``bmin > bmaj`` the axes
    are swapped and the PA turned by 90 deg.
    """
    bmaj = _column(table, ("bmaj", "b_maj"), u.arcsec)
    bmin = _column(table, ("bmin", "b_min"), u.arcsec)
    pa = _column(table, ("pa",), u.deg)
    if "bmaj" not in table.colnames:
        pa = sdc1_pa(pa)
    swap = bmin > bmaj
    bmaj, bmin = np.where(swap, bmin, bmaj), np.where(swap, bmaj, bmin)
    pa = np.mod(np.where(swap, pa + 90.0, pa), 180.0)
    pa[pa >= 180.0] = 0.0
    return bmaj, bmin, pa


def to_sdc1(table: Table, *, core_frac: float = 0.0375, size: int = 2,
            source_class: int = 3) -> Table:
    """Reduce a catalogue table to the SDC1 submission columns.

    Positions are used for both the core and the centroid; sizes are Gaussian FWHM
    (``size`` 2) of star-forming galaxies (``class`` 3) with ``core_frac`` 0.0375,
    as the YOLO-CIANNA SDC1 submission did. Where ``bmin > bmaj`` the axes are
    swapped and PA turned by 90 deg; PA is written in the SDC1 catalogues' convention
    (:func:`streamdet.catalogue.catalog.sdc1_pa`: ``90 -`` the PA east of north, in (-90, 90]).

    Parameters
    ----------
    table : astropy.table.Table
        From :func:`to_table`: needs ``ra``, ``dec`` and ``flux``, ``bmaj``,
        ``bmin``, ``pa`` (or ``b_maj``, ``b_min``); units are converted from the
        column units (Jy, arcsec, deg assumed where a column has none).
    core_frac : float
        Core fraction written for every source.
    size : int
        Size class (1 LAS, 2 Gaussian, 3 exponential).
    source_class : int
        Source class (1 SS-AGN, 2 FS-AGN, 3 SFG).

    Returns
    -------
    astropy.table.Table
        Columns ``id ra_core dec_core ra_cent dec_cent flux core_frac b_maj b_min pa
        size class``; ``id`` runs 0..N-1. Rows with a non-finite value are dropped
        with a :class:`CatalogueWarning`.

    Raises
    ------
    WCSMissingError
        The table has no ``ra``/``dec`` (made without a WCS).
    StreamdetValueError
        A needed column is missing or has incompatible units; bad class values.
    """
    if "ra" not in table.colnames or "dec" not in table.colnames:
        raise WCSMissingError("the catalogue has no ra/dec columns (made without a celestial "
                              "WCS); an SDC1 catalogue needs sky positions")
    if size not in (1, 2, 3) or source_class not in (1, 2, 3):
        raise StreamdetValueError(f"size {size!r} and source_class {source_class!r} must be "
                                  "1, 2 or 3")
    if not (np.isfinite(core_frac) and 0.0 <= core_frac <= 1.0):
        raise StreamdetValueError(f"core_frac must be in [0, 1], got {core_frac!r}")
    ra = _column(table, ("ra",), u.deg)
    dec = _column(table, ("dec",), u.deg)
    flux = _column(table, ("flux",), u.Jy)
    bmaj, bmin, pa = _ellipse(table)
    np.mod(ra, 360.0, out=ra)
    ra[ra >= 360.0] = 0.0
    good = np.isfinite(ra) & np.isfinite(dec) & np.isfinite(flux) & np.isfinite(bmaj) \
        & np.isfinite(bmin) & np.isfinite(pa)
    if not good.all():
        warnings.warn(f"dropping {int((~good).sum())} of {len(good)} sources with non-finite "
                      "position, flux or shape from the SDC1 catalogue", CatalogueWarning,
                      stacklevel=2)
    n = int(good.sum())
    out = Table()
    out["id"] = np.arange(n, dtype=np.int64)
    for name, values, unit in (("ra_core", ra, u.deg), ("dec_core", dec, u.deg),
                               ("ra_cent", ra, u.deg), ("dec_cent", dec, u.deg),
                               ("flux", flux, u.Jy)):
        out[name] = values[good]
        out[name].unit = unit
    out["core_frac"] = np.full(n, float(core_frac))
    out["b_maj"] = bmaj[good]
    out["b_maj"].unit = u.arcsec
    out["b_min"] = bmin[good]
    out["b_min"].unit = u.arcsec
    out["pa"] = sdc1_pa(pa[good])
    out["pa"].unit = u.deg
    out["size"] = np.full(n, size, np.int64)
    out["class"] = np.full(n, source_class, np.int64)
    out.meta.update(table.meta)
    return out


def _is_sdc1(table: Table) -> bool:
    return tuple(table.colnames) == SDC1_COLUMNS


# ------------------------------------------------------------ writing in blocks
#
# Every format is written a block of rows at a time, so that the memory of writing is
# bounded by a block, not the table: astropy's writers format or convert the whole table
# at once (its ECSV writer holds every value as a Python string, ~8x the text: 0.9 GB
# more for the ~430k sources of a 16384^2 field). The files are the ones astropy writes
# (the tests compare them with astropy's whole-table writes): the headers come from
# astropy itself, written for a zero-row slice of the table.

_BLOCK_ROWS: int | None = None       # rows per block for every format (tests); None: below
_TEXT_BLOCK_VALUES = 1 << 16         # values per block of text (~7 MB of Python strings)
_BINARY_BLOCK_BYTES = 1 << 21        # bytes of records per block of FITS or parquet (~3x)


class _NotBlockable(Exception):
    """A block's header differs from the whole table's: write the table in one piece."""


def _block_rows(table: Table, *, text: bool) -> int:
    if _BLOCK_ROWS is not None:
        return max(1, int(_BLOCK_ROWS))
    if text:
        return max(1, _TEXT_BLOCK_VALUES // max(1, len(table.colnames)))
    row_bytes = sum(int(np.prod(table[c].shape[1:], dtype=np.int64)) * table[c].dtype.itemsize
                    for c in table.colnames)
    return max(1, _BINARY_BLOCK_BYTES // max(1, row_bytes))


def _row_slices(n: int, rows: int) -> list[slice]:
    """Consecutive slices of ``rows`` rows covering ``range(n)`` (the last one partial)."""
    return [slice(i, min(i + rows, n)) for i in range(0, n, rows)]


def _plain(table: Table, kinds: str) -> bool:
    """Every column a plain 1-d, unmasked :class:`~astropy.table.Column` of these kinds."""
    return all(type(table[c]) is Column and table[c].ndim == 1 and table[c].dtype.kind in kinds
               for c in table.colnames)


def _str_values(values: NDArray[Any]) -> list[str]:
    """``str`` of each value as a NumPy scalar: astropy's ECSV text of a column."""
    if values.dtype.kind == "f" and values.dtype.itemsize == 8:
        # repr of a Python float is the shortest round-trip text, as NumPy's str of a
        # float64 (the same digits and the same switch to exponents), and faster
        return list(map(repr, values.tolist()))
    if values.dtype.kind in "biu":
        return list(map(str, values.tolist()))          # ints, True / False
    return list(map(str, values))                       # float32 and others: NumPy's own


def _write_ecsv(table: Table, tmp: Path) -> None:
    head = io.StringIO()
    table[:0].write(head, format="ascii.ecsv")         # astropy's own header (YAML)
    header = head.getvalue()
    rows = _block_rows(table, text=True)
    with open(tmp, "w", encoding="utf-8", newline="") as fh:
        fh.write(header)
        if _plain(table, "biuf"):
            # Numbers only: astropy writes str(value) of each, space-separated, nothing to
            # quote; formatted here a block at a time.
            cols = [np.asarray(table[c]) for c in table.colnames]
            for part in _row_slices(len(table), rows):
                strs = [_str_values(c[part]) for c in cols]
                fh.write(os.linesep.join(map(" ".join, zip(*strs, strict=True))) + os.linesep)
                del strs
            return
        # Anything else (strings, masked values, mixins, arrays): astropy writes each block,
        # its header dropped.
        for part in _row_slices(len(table), rows):
            text = io.StringIO()
            table[part].write(text, format="ascii.ecsv")
            value = text.getvalue()
            if not value.startswith(header):
                raise _NotBlockable
            fh.write(value[len(header):])
            del text, value
            gc.collect()  # the writer's objects hold the block's strings in reference cycles


def _fits_file(table: Table) -> io.BytesIO:
    """The FITS file astropy writes for ``table`` (as ``Table.write(format="fits")``)."""
    out = io.BytesIO()
    table.write(out, format="fits")
    return out


def _card_offset(image: bytes, keyword: str, start: int = 0) -> int:
    key = keyword.ljust(8).encode("ascii") + b"= "
    for off in range(start, len(image), 80):
        if image[off:off + 10] == key:
            return off
    raise _NotBlockable


def _write_fits(table: Table, tmp: Path) -> None:
    template = _fits_file(table[:0]).getvalue()              # primary + table header, no rows
    n = len(table)
    if n == 0:
        tmp.write_bytes(template)
        return
    primary = len(fits.PrimaryHDU().header.tostring())
    naxis1 = _card_offset(template, "NAXIS1", primary)
    naxis2 = _card_offset(template, "NAXIS2", primary)
    row_bytes = int(fits.Card.fromstring(template[naxis1:naxis1 + 80]).value)
    old = fits.Card.fromstring(template[naxis2:naxis2 + 80])
    card = fits.Card("NAXIS2", n, old.comment).image.encode("ascii")
    size = len(template)
    with open(tmp, "wb") as fh:
        fh.write(template[:naxis2] + card + template[naxis2 + 80:])
        for part in _row_slices(n, _block_rows(table, text=False)):
            rows = part.stop - part.start
            with _fits_file(table[part]).getbuffer() as block:
                # the block's header must be the table's but for NAXIS2
                if (len(block) < size + rows * row_bytes or block[:naxis2] != template[:naxis2]
                        or block[naxis2 + 80:size] != template[naxis2 + 80:size]):
                    raise _NotBlockable
                fh.write(block[size:size + rows * row_bytes])
        fh.write(b"\0" * (-(n * row_bytes) % 2880))


def _write_parquet(table: Table, tmp: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    if len(table) == 0 or not _plain(table, "biufSU"):
        raise _NotBlockable  # masked, mixin or array columns: astropy's whole-table writer
    table[:0].write(tmp, format="parquet")             # astropy's own schema and metadata
    schema = pq.read_schema(tmp)
    cols = [np.asarray(table[c]) for c in table.colnames]
    # as astropy's writer: little-endian values, one row group per block
    with pq.ParquetWriter(tmp, schema, version="2.4") as writer:
        for part in _row_slices(len(table), _block_rows(table, text=False)):
            arrays = [pa.array(c[part].astype(c.dtype.newbyteorder("<"), copy=False),
                               type=schema.field(name).type)
                      for name, c in zip(table.colnames, cols, strict=True)]
            writer.write_table(pa.Table.from_arrays(arrays, schema=schema))
            del arrays


_BLOCK_WRITERS = {"ecsv": _write_ecsv, "fits": _write_fits, "parquet": _write_parquet}


def _write_sdc1(table: Table, tmp: Path) -> tuple[int, int]:
    """The SDC1 text of ``table`` (an SDC1 table as it is, else through :func:`to_sdc1`),
    a block at a time: the file :func:`streamdet.catalogue.catalog.write_sdc1` writes.

    Returns the number of sources written and of those dropped (non-finite values).
    """
    from .catalog import _FORMATS, _checked_columns

    as_is = _is_sdc1(table)
    fmt = " ".join(_FORMATS[c] for c in SDC1_COLUMNS) + "\n"
    written = 0
    with open(tmp, "w", encoding="ascii") as fh:
        fh.write(" ".join(SDC1_COLUMNS) + "\n")
        for part in _row_slices(len(table), _block_rows(table, text=True)):
            block = table[part]
            if not as_is:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", CatalogueWarning)  # counted: one warning
                    block = to_sdc1(block)
                block["id"] += written                     # ids run 0..N-1 over the blocks
            cols = _checked_columns(block)
            rows = zip(*(cols[c].tolist() for c in SDC1_COLUMNS), strict=True)
            fh.writelines(fmt.format(*row) for row in rows)
            written += len(block)
            del block, cols, rows
    return written, (0 if as_is else len(table) - written)


def write_catalogue(table: Table, path: str | os.PathLike[str], *,
                    format: CatalogueFormat = "sdc1", overwrite: bool = False) -> Path:
    """Write a catalogue, atomically.

    Every format is written a block of rows at a time: the memory needed beyond the
    table's is bounded by a block (a few MB), whatever the number of rows.

    Parameters
    ----------
    table : astropy.table.Table
        From :func:`to_table` (or :func:`to_sdc1` for ``"sdc1"``).
    path : str or os.PathLike
        Output file.
    format : {"sdc1", "sdc2", "ecsv", "fits", "parquet"}
        ``"sdc2"``: the SDC2 submission text of a cube catalogue (:func:`cube_table`),
        through :func:`streamdet.catalogue.sdc2.write_sdc2` (its columns only; refused with
        none of them). ``"sdc1"``: the SDC1 submission text (through :func:`to_sdc1` unless the
        table already has exactly the SDC1 columns; the file
        :func:`streamdet.catalogue.catalog.write_sdc1` writes); an empty catalogue gives a
        header-only file and a :class:`CatalogueWarning` (the official scorer
        cannot score it). ``"ecsv"``, ``"fits"``, ``"parquet"``: the whole table
        with units and meta, the file astropy's ``Table.write`` writes (headers
        and schema from astropy; parquet in row groups; parquet needs
        ``pyarrow``). Tables with masked, mixin or multidimensional columns are
        written by astropy in one piece where a block could differ (FITS,
        parquet).
    overwrite : bool
        Replace an existing file (otherwise
        :class:`~streamdet.errors.OutputExistsError`).

    Returns
    -------
    pathlib.Path
        The path written.

    Raises
    ------
    StreamdetValueError
        Unknown format, or the output directory is missing or not writable.
    WCSMissingError
        ``"sdc1"`` for a table without ra/dec.
    StreamdetError
        ``"parquet"`` without ``pyarrow`` installed.
    """
    if format not in ("sdc1", "sdc2", *_ASTROPY_FORMATS):
        raise StreamdetValueError(f"unknown catalogue format {format!r}; expected one of "
                                  f"{['sdc1', 'sdc2', *_ASTROPY_FORMATS]}")
    if format == "sdc2":
        from .sdc2 import write_sdc2

        if len(table) == 0:
            warnings.warn(f"writing an empty SDC2 catalogue to {str(path)!r} (header only)",
                          CatalogueWarning, stacklevel=2)
        return write_sdc2(table, path, overwrite=overwrite)
    if format == "parquet" and importlib.util.find_spec("pyarrow") is None:
        raise StreamdetError("writing parquet needs the 'pyarrow' package: "
                             "pip install pyarrow (or choose format 'ecsv' or 'fits')")
    check_output(path, overwrite=overwrite)
    if format == "sdc1":
        # a table that cannot be written is refused before any file exists
        if _is_sdc1(table):
            from .catalog import _checked_columns

            _checked_columns(table[:0])
        else:
            to_sdc1(table[:0])
        if len(table) == 0:
            warnings.warn(f"writing an empty SDC1 catalogue to {str(path)!r} (header only); "
                          "the SDC1 scorer cannot score an empty catalogue",
                          CatalogueWarning, stacklevel=2)
        with atomic_path(path, overwrite=overwrite) as tmp:
            written, dropped = _write_sdc1(table, tmp)
            # (before the rename: a warning turned into an error leaves no file)
            if dropped:
                warnings.warn(f"dropping {dropped} of {len(table)} sources with non-finite "
                              "position, flux or shape from the SDC1 catalogue",
                              CatalogueWarning, stacklevel=2)
            if written == 0 and len(table):
                warnings.warn(f"writing an empty SDC1 catalogue to {str(path)!r} (header "
                              "only); the SDC1 scorer cannot score an empty catalogue",
                              CatalogueWarning, stacklevel=2)
        return Path(path)
    with atomic_path(path, overwrite=overwrite) as tmp, warnings.catch_warnings():
        # Long meta keys become FITS HIERARCH cards; astropy warns about each one.
        warnings.simplefilter("ignore", VerifyWarning)
        try:
            _BLOCK_WRITERS[format](table, tmp)
        except _NotBlockable:
            tmp.unlink(missing_ok=True)
            table.write(tmp, format=_ASTROPY_FORMATS[format])
    return Path(path)


def _finite_rows(*cols: NDArray[np.float64]) -> NDArray[np.bool_]:
    good = np.ones(len(cols[0]), np.bool_)
    for c in cols:
        good &= np.isfinite(c)
    return good


def write_regions(table: Table, path: str | os.PathLike[str], *,
                  overwrite: bool = False) -> Path:
    """Write a DS9 / CARTA region file of the catalogue, atomically.

    With sky positions and shapes (``ra``, ``dec``, ``bmaj``/``b_maj``,
    ``bmin``/``b_min``, ``pa``): one ICRS ellipse per source whose axes are the
    FWHM (DS9 takes semi-axes: FWHM/2, in arcsec), DS9 angle = PA + 90 deg (PA east
    of north; DS9 measures from the x axis). Otherwise: one image-pixel box per
    detection (from ``x0``, ``y0``, ``x1``, ``y1`` or ``x``, ``y``, ``width``,
    ``height``; DS9 image coordinates are 1-based). Rows with non-finite values are
    skipped with a :class:`CatalogueWarning`.

    The text is formatted here, vectorised, in the DS9 dialect that the
    ``regions`` package writes and reads (building ``regions`` objects costs about
    1 ms per source, minutes for an SDC1 catalogue), a block of rows at a time.

    Parameters
    ----------
    table : astropy.table.Table
        From :func:`to_table` or :func:`to_sdc1`.
    path : str or os.PathLike
        Output ``.reg`` file.
    overwrite : bool
        Replace an existing file.

    Returns
    -------
    pathlib.Path
        The path written.
    """
    check_output(path, overwrite=overwrite)
    names = set(table.colnames)
    ra_name = "ra" if "ra" in names else ("ra_cent" if "ra_cent" in names else None)
    dec_name = "dec" if "dec" in names else ("dec_cent" if "dec_cent" in names else None)
    has_shape = ({"bmaj", "bmin"} <= names or {"b_maj", "b_min"} <= names) and "pa" in names
    sky = bool(ra_name and dec_name and has_shape)
    if not sky and not ({"x0", "y0", "x1", "y1"} <= names
                        or {"x", "y", "width", "height"} <= names):
        raise StreamdetValueError("a region file needs ra/dec with bmaj/bmin/pa, or pixel "
                                  f"boxes; the table has {table.colnames}")
    skipped = 0
    with atomic_path(path, overwrite=overwrite) as tmp:
        with open(tmp, "w", encoding="ascii") as fh:
            fh.write("# Region file format: DS9 streamdet " + __version__ + "\n")
            fh.write("icrs\n" if sky else "image\n")
            # a block of rows at a time: the text of one block in memory, not the table's
            for part in _row_slices(len(table), _block_rows(table, text=True)):
                block = table[part]
                lines = (_sky_regions(block, ra_name or "", dec_name or "") if sky
                         else _pixel_regions(block))
                skipped += len(block) - len(lines)
                fh.writelines(line + "\n" for line in lines)
                del block, lines
        if skipped:  # before the rename: a warning turned into an error leaves no file
            warnings.warn(f"skipping {skipped} of {len(table)} sources with non-finite "
                          "values in the region file", CatalogueWarning, stacklevel=2)
    return Path(path)


def _sky_regions(table: Table, ra_name: str, dec_name: str) -> list[str]:
    """DS9 ICRS ellipses of the rows with finite values."""
    ra = _column(table, (ra_name,), u.deg)
    dec = _column(table, (dec_name,), u.deg)
    bmaj, bmin, pa = _ellipse(table)
    good = _finite_rows(ra, dec, bmaj, bmin, pa)
    return [f'ellipse({r:.9f},{d:.9f},{a:.6f}",{b:.6f}",{p:.6f})'
            for r, d, a, b, p in zip(ra[good].tolist(), dec[good].tolist(),
                                     (bmaj[good] / 2).tolist(), (bmin[good] / 2).tolist(),
                                     np.mod(pa[good] + 90.0, 360.0).tolist(), strict=True)]


def _pixel_regions(table: Table) -> list[str]:
    """DS9 image boxes (1-based) of the rows with finite values."""
    names = set(table.colnames)
    if {"x0", "y0", "x1", "y1"} <= names:
        b = np.stack([np.asarray(table[c], np.float64) for c in ("x0", "y0", "x1", "y1")],
                     axis=1).reshape(-1, 4)
        x, y = 0.5 * (b[:, 0] + b[:, 2]), 0.5 * (b[:, 1] + b[:, 3])
        w, h = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
    else:
        x, y = np.asarray(table["x"], np.float64), np.asarray(table["y"], np.float64)
        w = np.asarray(table["width"], np.float64)
        h = np.asarray(table["height"], np.float64)
    good = _finite_rows(x, y, w, h)
    return [f"box({cx:.6f},{cy:.6f},{bw:.6f},{bh:.6f},0)"
            for cx, cy, bw, bh in zip((x[good] + 1).tolist(), (y[good] + 1).tolist(),
                                      w[good].tolist(), h[good].tolist(), strict=True)]
