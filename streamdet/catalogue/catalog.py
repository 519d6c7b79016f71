"""SDC1 catalogues: write and read the SKA Science Data Challenge 1 submission format.

The format (what the official ``ska_sdc`` scorer reads): whitespace-separated text,
one header line naming the columns, then one source per line with exactly the
columns of :data:`SDC1_COLUMNS`:

=========  =======  ==================================================
column     unit     meaning
=========  =======  ==================================================
id         -        integer source identifier
ra_core    deg      right ascension of the core, in [0, 360)
dec_core   deg      declination of the core
ra_cent    deg      right ascension of the flux-weighted centroid
dec_cent   deg      declination of the centroid
flux       Jy       integrated, primary-beam corrected flux density
core_frac  -        fraction of the flux in the core
b_maj      arcsec   major axis size (meaning set by ``size``)
b_min      arcsec   minor axis size
pa         deg      position angle of the major axis, east of north
size       -        1 largest angular scale, 2 Gaussian FWHM, 3 exponential
class      -        1 steep-spectrum AGN, 2 flat-spectrum AGN, 3 SFG
=========  =======  ==================================================
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
from astropy.table import Table
from numpy.typing import ArrayLike, NDArray

from ..errors import StreamdetFileNotFoundError, StreamdetValueError
from ..io._atomic import atomic_path

__all__ = ["SDC1_COLUMNS", "read_sdc1", "sdc1_pa", "write_sdc1"]

#: The columns of an SDC1 catalogue, in order.
SDC1_COLUMNS: tuple[str, ...] = (
    "id", "ra_core", "dec_core", "ra_cent", "dec_cent", "flux", "core_frac",
    "b_maj", "b_min", "pa", "size", "class",
)
_WRITE_ROWS = 20000


def sdc1_pa(pa: ArrayLike) -> NDArray[np.float64]:
    """Convert position angles between astronomy's convention and the SDC1 catalogues'.

    A source's PA in the SDC1 truth catalogues is not measured east of north: the major
    axis of a Gaussian or exponential source lies at ``-pa`` from the image's +x axis
    (west), which is an astronomical PA of ``90 - pa`` (the real 560 MHz truth against
    its image: 2.9 deg median difference for 36 elongated sources, 42 deg with ``pa``
    east of north; ``benchmarks/calibrate_sim.py``), in (-90, 90]. The official
    scorer folds angles without wrapping them, so a submission must use the truth's
    convention and range. The map is its own inverse: ``sdc1_pa(sdc1_pa(x)) == x``
    modulo 180.

    Parameters
    ----------
    pa : array_like
        Degrees, either convention.

    Returns
    -------
    ndarray of float64
        ``90 - pa`` reduced to (-90, 90], degrees.
    """
    out = np.asarray(90.0 - np.asarray(pa, np.float64), np.float64)
    out = np.mod(out + 90.0, 180.0) - 90.0       # [-90, 90)
    out[out == -90.0] = 90.0
    return out
_INT_COLUMNS = frozenset({"id", "size", "class"})
# printf formats: positions to 1e-9 deg (3.6 micro-arcsec), fluxes to 10 significant digits
_FORMATS = {
    "id": "{:d}", "ra_core": "{:.9f}", "dec_core": "{:.9f}", "ra_cent": "{:.9f}",
    "dec_cent": "{:.9f}", "flux": "{:.9e}", "core_frac": "{:.6f}", "b_maj": "{:.6f}",
    "b_min": "{:.6f}", "pa": "{:.6f}", "size": "{:d}", "class": "{:d}",
}


def _checked_columns(table: Table) -> dict[str, np.ndarray]:
    missing = [c for c in SDC1_COLUMNS if c not in table.colnames]
    if missing:
        raise StreamdetValueError(f"catalogue lacks SDC1 column(s) {missing}; "
                                  f"expected {list(SDC1_COLUMNS)}")
    cols: dict[str, np.ndarray] = {}
    for name in SDC1_COLUMNS:
        col = np.asarray(table[name])
        if col.dtype.kind not in "iufb":
            raise StreamdetValueError(f"column {name!r} is not numeric (dtype {col.dtype})")
        if name in _INT_COLUMNS:
            if col.dtype.kind == "f":
                if not np.all(np.isfinite(col)) or np.any(col != np.round(col)):
                    raise StreamdetValueError(f"column {name!r} must hold integers")
            cols[name] = col.astype(np.int64)
        else:
            col = col.astype(np.float64)
            if not np.all(np.isfinite(col)):
                bad = int(np.count_nonzero(~np.isfinite(col)))
                raise StreamdetValueError(f"column {name!r} has {bad} NaN/inf value(s); "
                                          "the SDC1 format allows none")
            cols[name] = col + 0.0  # -0.0 -> 0.0
    for name in ("ra_core", "ra_cent"):
        cols[name] = np.mod(cols[name], 360.0)
        # tiny negatives wrap to 360 - eps, which the 1e-9 deg format would print as 360
        cols[name][np.round(cols[name], 9) >= 360.0] = 0.0
    return cols


def write_sdc1(table: Table, path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
    """Write a catalogue in the SDC1 submission format, atomically.

    Parameters
    ----------
    table : astropy.table.Table
        One row per source with (at least) the columns of :data:`SDC1_COLUMNS`;
        other columns are left out. RA is wrapped into [0, 360).
    path : str or os.PathLike
        Text file to write.
    overwrite : bool
        Replace an existing file (otherwise :class:`~streamdet.errors.OutputExistsError`).

    Returns
    -------
    pathlib.Path
        The path written.

    Raises
    ------
    StreamdetValueError
        A column is missing, not numeric, or holds NaN/inf.
    """
    cols = _checked_columns(table)
    fmt = " ".join(_FORMATS[c] for c in SDC1_COLUMNS) + "\n"
    n = len(cols["id"])
    with atomic_path(path, overwrite=overwrite) as tmp:
        with open(tmp, "w", encoding="ascii") as fh:
            fh.write(" ".join(SDC1_COLUMNS) + "\n")
            for s in range(0, n, _WRITE_ROWS):  # bounded memory for large catalogues
                rows = zip(*(cols[c][s:s + _WRITE_ROWS].tolist() for c in SDC1_COLUMNS),
                           strict=True)
                fh.writelines(fmt.format(*row) for row in rows)
    return Path(path)


def read_sdc1(path: str | os.PathLike[str]) -> Table:
    """Read an SDC1 catalogue (one header line, then the 12 columns).

    Parameters
    ----------
    path : str or os.PathLike
        Text file in the SDC1 submission format. A header line naming the columns is
        expected; a file whose first line is numeric is read as header-less.

    Returns
    -------
    astropy.table.Table
        Columns of :data:`SDC1_COLUMNS`: ``id``, ``size``, ``class`` int64, the
        others float64 (units as in the module docstring).

    Raises
    ------
    StreamdetFileNotFoundError
        The file does not exist.
    StreamdetValueError
        A line does not have 12 numeric fields, or the header names other columns.
    """
    p = Path(path)
    if not p.is_file():
        raise StreamdetFileNotFoundError(f"catalogue {str(p)!r} does not exist")
    with open(p, encoding="utf-8") as fh:
        lines = [ln.split() for ln in fh if ln.strip() and not ln.lstrip().startswith("#")]
    if lines and not _is_numeric(lines[0]):
        header = [h.lower() for h in lines[0]]
        if tuple(header) != SDC1_COLUMNS:
            raise StreamdetValueError(f"{str(p)!r}: header {lines[0]} is not the SDC1 header "
                                      f"{list(SDC1_COLUMNS)}")
        lines = lines[1:]
    ncol = len(SDC1_COLUMNS)
    for i, parts in enumerate(lines):
        if len(parts) != ncol or not _is_numeric(parts):
            raise StreamdetValueError(f"{str(p)!r}: data line {i + 1} has {len(parts)} fields "
                                      f"(or non-numeric ones); expected {ncol} numbers")
    values = (np.array(lines, dtype=np.float64).reshape(-1, ncol) if lines
              else np.zeros((0, ncol), np.float64))
    out = Table()
    for j, name in enumerate(SDC1_COLUMNS):
        col = values[:, j]
        out[name] = col.astype(np.int64) if name in _INT_COLUMNS else col
    return out


def _is_numeric(parts: list[str]) -> bool:
    try:
        return all(math.isfinite(float(x)) for x in parts)
    except ValueError:
        return False
