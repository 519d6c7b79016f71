"""SDC2 catalogues: the SKA Science Data Challenge 2 (HI cube) submission format and score.

The format (what the official ``ska_sdc`` :class:`Sdc2Scorer` reads, its
``sub_cat_column_names``): whitespace-separated text, one header line naming the
columns, then one source per line with exactly the columns of :data:`SDC2_COLUMNS`:

=====================  =======  ===================================================
column                 unit     meaning
=====================  =======  ===================================================
id                     -        integer source identifier
ra                     deg      right ascension, in [0, 360)
dec                    deg      declination
hi_size                arcsec   HI major-axis diameter (at 1 Msun/pc^2 in the truth)
line_flux_integral     Jy Hz    integrated line flux
central_freq           Hz       frequency of the line centre
pa                     deg      kinematic position angle (receding side), east of
                                north, in [0, 360)
i                      deg      inclination, 0 face-on to 90 edge-on
w20                    km/s     line width at 20 % of the peak
=====================  =======  ===================================================

The truth catalogues of the challenge (and of :func:`streamdet.sim.simulate_cube.simulate_cube`)
use the same columns. The scorer (``ska-sdc`` 2.0.0) matches in physical space (the
angular-diameter distance of the central frequency, with the scorer's cosmology), keeps
the candidates within the truth source's beam-convolved size and line width, rejects
those whose multi-dimensional error (position, frequency, flux, size, w20) reaches 5,
and scores each match as the mean of 7 terms, each capped at 1: position (over
``sqrt(4 beam^2 + size^2)``, threshold 0.3), central frequency (over the line width in
Hz, 0.3), flux (relative, 0.1), HI size (relative, 0.3), PA (absolute difference
wrapped to 180 deg, 10 deg), w20 (relative, 0.3) and inclination (absolute, 10 deg).
The total is the sum of the matches' scores minus the number of false detections;
misses cost nothing. Rows with a central frequency outside 950-1150 MHz are dropped
by the scorer before matching (they count as false detections).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from astropy.table import Table

from ..errors import StreamdetError, StreamdetFileNotFoundError, StreamdetValueError
from ..io._atomic import atomic_path
from ._scorer import quiet_scorer, summary_text

__all__ = [
    "SDC2_COLUMNS",
    "SDC2_SCORED_BAND",
    "Sdc2Result",
    "read_sdc2",
    "score_sdc2",
    "to_sdc2",
    "write_sdc2",
]

#: The columns of an SDC2 catalogue, in order (the scorer's ``sub_cat_column_names``).
SDC2_COLUMNS: tuple[str, ...] = (
    "id", "ra", "dec", "hi_size", "line_flux_integral", "central_freq", "pa", "i", "w20",
)
#: Central frequencies the scorer keeps, Hz (open interval); other rows are dropped.
SDC2_SCORED_BAND = (0.95e9, 1.15e9)
#: The per-source terms of the SDC2 score, as the scorer names them.
SDC2_PARAMS: tuple[str, ...] = ("position", "central_freq", "flux", "hi_size", "pa", "w20", "i")

_WRITE_ROWS = 20000
_FORMATS = {
    "id": "{:d}", "ra": "{:.9f}", "dec": "{:.9f}", "hi_size": "{:.6f}",
    "line_flux_integral": "{:.9e}", "central_freq": "{:.6f}", "pa": "{:.6f}",
    "i": "{:.6f}", "w20": "{:.6f}",
}


def _numeric_columns(table: Any, what: str) -> dict[str, np.ndarray]:
    """The SDC2 columns of a table or data frame as checked numpy arrays."""
    found: Any = getattr(table, "colnames", None)
    if found is None:
        found = getattr(table, "columns", ())
    names = [str(c) for c in found]
    missing = [c for c in SDC2_COLUMNS if c not in names]
    if missing:
        raise StreamdetValueError(f"{what} catalogue lacks SDC2 column(s) {missing}; "
                                  f"expected {list(SDC2_COLUMNS)}")
    cols: dict[str, np.ndarray] = {}
    for name in SDC2_COLUMNS:
        col = np.asarray(table[name])
        if col.dtype.kind not in "iuf":
            raise StreamdetValueError(f"{what} catalogue: column {name!r} is not numeric "
                                      f"(dtype {col.dtype})")
        if col.ndim != 1:
            raise StreamdetValueError(f"{what} catalogue: column {name!r} is not "
                                      "one-dimensional")
        if name == "id":
            if col.dtype.kind == "f" and (not np.all(np.isfinite(col))
                                          or np.any(col != np.round(col))):
                raise StreamdetValueError(f"{what} catalogue: column 'id' must hold integers")
            ids = col.astype(np.int64)
            uniq, counts = np.unique(ids, return_counts=True)
            if np.any(counts > 1):
                dup = uniq[counts > 1]
                raise StreamdetValueError(
                    f"{what} catalogue: column 'id' must be unique (the scorer keeps one match "
                    f"per id); {len(dup)} id(s) repeat, e.g. {int(dup[0])}")
            cols[name] = ids
            continue
        col = col.astype(np.float64)
        bad = int(np.count_nonzero(~np.isfinite(col)))
        if bad:
            raise StreamdetValueError(f"{what} catalogue: column {name!r} has {bad} NaN/inf "
                                      "value(s); the SDC2 format allows none")
        cols[name] = col + 0.0  # -0.0 -> 0.0
    _check_ranges(cols, what)
    cols["ra"] = np.mod(cols["ra"], 360.0)
    cols["ra"][np.round(cols["ra"], 9) >= 360.0] = 0.0
    return cols


def _check_ranges(cols: dict[str, np.ndarray], what: str) -> None:
    def refuse(name: str, rule: str, mask: np.ndarray) -> None:
        k = int(np.flatnonzero(mask)[0])
        raise StreamdetValueError(
            f"{what} catalogue: column {name!r} must be {rule}; {int(mask.sum())} row(s) "
            f"are not (row {k}, id {int(cols['id'][k])}: {float(cols[name][k])!r})")

    checks = (("dec", "within [-90, 90] deg", np.abs(cols["dec"]) > 90.0),
              ("central_freq", "> 0 Hz", cols["central_freq"] <= 0.0),
              ("hi_size", ">= 0 arcsec", cols["hi_size"] < 0.0),
              ("w20", ">= 0 km/s", cols["w20"] < 0.0))
    for name, rule, mask in checks:
        if np.any(mask):
            refuse(name, rule, mask)


def to_sdc2(table: Any, *, what: str = "submitted") -> Table:
    """Reduce a table (or data frame) to the SDC2 columns, checked, RA wrapped to [0, 360).

    Parameters
    ----------
    table : astropy.table.Table or pandas.DataFrame
        One row per source with (at least) the columns of :data:`SDC2_COLUMNS`; other
        columns (the ``x``, ``y``, ``channel`` ... of a simulated truth) are left out.
    what : str
        Which catalogue this is, for error messages.

    Returns
    -------
    astropy.table.Table
        The columns of :data:`SDC2_COLUMNS`, ``id`` int64, the others float64; the
        input's ``meta`` kept.

    Raises
    ------
    StreamdetValueError
        A column is missing, not numeric or holds NaN/inf; ``id`` not unique integers;
        ``dec`` outside [-90, 90], ``central_freq`` <= 0, ``hi_size`` or ``w20`` negative.
    """
    cols = _numeric_columns(table, what)
    out = Table({name: cols[name] for name in SDC2_COLUMNS})
    meta = getattr(table, "meta", None)
    if isinstance(meta, dict):
        out.meta.update(meta)
    return out


def write_sdc2(table: Any, path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
    """Write a catalogue in the SDC2 submission format, atomically.

    Parameters
    ----------
    table : astropy.table.Table or pandas.DataFrame
        One row per source with (at least) the columns of :data:`SDC2_COLUMNS`; other
        columns are left out. RA is wrapped into [0, 360).
    path : str or os.PathLike
        Text file to write (a temporary file beside it is renamed into place when whole).
    overwrite : bool
        Replace an existing file (otherwise :class:`~streamdet.errors.OutputExistsError`).

    Returns
    -------
    pathlib.Path
        The path written.

    Raises
    ------
    StreamdetValueError
        As :func:`to_sdc2`; nothing is written.
    OutputExistsError
        ``path`` exists and ``overwrite`` is false (or is a directory).
    """
    cols = _numeric_columns(table, "submitted")
    fmt = " ".join(_FORMATS[c] for c in SDC2_COLUMNS) + "\n"
    n = len(cols["id"])
    with atomic_path(path, overwrite=overwrite) as tmp:
        with open(tmp, "w", encoding="ascii") as fh:
            fh.write(" ".join(SDC2_COLUMNS) + "\n")
            for s in range(0, n, _WRITE_ROWS):  # bounded memory for large catalogues
                rows = zip(*(cols[c][s:s + _WRITE_ROWS].tolist() for c in SDC2_COLUMNS),
                           strict=True)
                fh.writelines(fmt.format(*row) for row in rows)
    return Path(path)


def _is_numeric(parts: list[str]) -> bool:
    try:
        return all(math.isfinite(float(x)) for x in parts)
    except ValueError:
        return False


def read_sdc2(path: str | os.PathLike[str]) -> Table:
    """Read an SDC2 catalogue (submission or truth): a header line, then the 9 columns.

    Parameters
    ----------
    path : str or os.PathLike
        Whitespace text in the SDC2 format. The header line must name the columns of
        :data:`SDC2_COLUMNS` in order (case-insensitive); a file whose first line is
        numeric is read as header-less. Blank lines and ``#`` comments are skipped.

    Returns
    -------
    astropy.table.Table
        Columns of :data:`SDC2_COLUMNS`: ``id`` int64, the others float64.

    Raises
    ------
    StreamdetFileNotFoundError
        The file does not exist.
    StreamdetValueError
        The header names other columns, a data line does not hold 9 finite numbers, or
        a value is out of range (as :func:`to_sdc2`).
    """
    p = Path(path)
    if not p.is_file():
        raise StreamdetFileNotFoundError(f"catalogue {str(p)!r} does not exist")
    try:
        with open(p, encoding="utf-8") as fh:
            lines = [ln.split() for ln in fh if ln.strip() and not ln.lstrip().startswith("#")]
    except UnicodeDecodeError:
        raise StreamdetValueError(f"{str(p)!r} is not a text catalogue") from None
    if lines and not _is_numeric(lines[0]):
        header = tuple(h.lower() for h in lines[0])
        if header != SDC2_COLUMNS:
            raise StreamdetValueError(f"{str(p)!r}: header {lines[0]} is not the SDC2 header "
                                      f"{list(SDC2_COLUMNS)}")
        lines = lines[1:]
    ncol = len(SDC2_COLUMNS)
    for i, parts in enumerate(lines):
        if len(parts) != ncol or not _is_numeric(parts):
            raise StreamdetValueError(f"{str(p)!r}: data line {i + 1} has {len(parts)} fields "
                                      f"(or non-numeric ones); expected {ncol} numbers")
    values = (np.array(lines, dtype=np.float64).reshape(-1, ncol) if lines
              else np.zeros((0, ncol), np.float64))
    raw = Table({name: values[:, j] for j, name in enumerate(SDC2_COLUMNS)})
    try:
        return to_sdc2(raw, what=repr(str(p)))
    except StreamdetValueError as exc:
        raise StreamdetValueError(str(exc)) from None


@dataclass(frozen=True)
class Sdc2Result:
    """The official SDC2 score of a catalogue and its parts.

    Attributes
    ----------
    score : float
        Sum of the per-source scores of the matches (each in [0, 1], divided among
        duplicates of one true source) minus the number of false detections.
    n_det : int
        Submitted sources.
    n_match : int
        Submitted sources matched to a true source (multi-dimensional error < 5).
    n_false : int
        ``n_det - n_match``.
    purity : float
        ``n_match / n_det`` (0 when nothing was submitted).
    acc_pc : float
        Mean per-source score of the matches, percent.
    accuracy : dict of str to float
        Mean score of each term (position, central_freq, flux, hi_size, pa, w20, i) over
        the matches, in [0, 1] (empty without matches).
    n_truth : int
        Sources in the truth catalogue.
    """

    score: float
    n_det: int
    n_match: int
    n_false: int
    purity: float
    acc_pc: float
    n_truth: int
    accuracy: dict[str, float] = field(default_factory=dict)

    def summary(self) -> str:
        """Human-readable summary, one quantity per line."""
        return summary_text(score=self.score, n_det=self.n_det, n_match=self.n_match,
                            n_false=self.n_false, purity=self.purity, acc_pc=self.acc_pc,
                            accuracy=self.accuracy, key_width=12)


def _as_table(cat: Any, what: str) -> Table:
    if isinstance(cat, str | os.PathLike):
        p = Path(cat)
        if not p.is_file():
            raise StreamdetFileNotFoundError(f"{what} catalogue {str(p)!r} does not exist")
        try:
            return read_sdc2(p)
        except StreamdetValueError as exc:
            raise StreamdetValueError(f"{what} catalogue: {exc}") from None
    if isinstance(cat, Table) or hasattr(cat, "columns"):
        return to_sdc2(cat, what=what)
    raise StreamdetValueError(f"{what} catalogue must be a path, an astropy Table or a "
                              f"pandas DataFrame, got {type(cat).__name__}")


def _in_band(freq: np.ndarray) -> np.ndarray:
    lo, hi = SDC2_SCORED_BAND
    return np.asarray((freq > lo) & (freq < hi))


def score_sdc2(catalogue: Any, truth: Any, *, train: bool = False) -> Sdc2Result:
    """Score an SDC2 catalogue against a truth catalogue with the official scorer.

    Parameters
    ----------
    catalogue, truth : path, astropy Table or pandas DataFrame
        SDC2-format catalogues (columns :data:`SDC2_COLUMNS`; extra columns, such as
        those of :func:`streamdet.sim.simulate_cube.simulate_cube`'s truth, are ignored).
    train : bool
        Passed to ``Sdc2Scorer.run`` (the SDC2 scorer records it and scores the whole
        catalogue either way).

    Returns
    -------
    Sdc2Result
        An empty catalogue scores 0 (the scorer is not called); against a truth with no
        source in 950-1150 MHz every submitted source is false (score ``-n_det``).

    Raises
    ------
    StreamdetValueError
        A catalogue lacks a column, holds a non-numeric or non-finite value or a value
        out of range (see :func:`to_sdc2`); a truth source has ``line_flux_integral``
        or ``w20`` <= 0 (the scorer divides by them).
    StreamdetFileNotFoundError
        A catalogue file does not exist.
    StreamdetError
        The official scorer (``ska-sdc``) is not installed, or it failed.
    """
    sub = _as_table(catalogue, "submitted")
    true = _as_table(truth, "truth")
    for name in ("line_flux_integral", "w20"):
        bad = np.asarray(true[name]) <= 0.0
        if np.any(bad):
            raise StreamdetValueError(f"truth catalogue: column {name!r} must be > 0 (the "
                                      f"scorer divides by it); {int(bad.sum())} row(s) are not")
    n_det, n_truth = len(sub), len(true)
    if n_det == 0:
        return Sdc2Result(score=0.0, n_det=0, n_match=0, n_false=0, purity=0.0, acc_pc=0.0,
                          n_truth=n_truth)
    if not np.any(_in_band(np.asarray(true["central_freq"]))):
        # the scorer's k-d tree crashes on an empty (in-band) truth: nothing can match
        return Sdc2Result(score=-float(n_det), n_det=n_det, n_match=0, n_false=n_det,
                          purity=0.0, acc_pc=0.0, n_truth=n_truth)
    with quiet_scorer():
        try:
            from ska_sdc import Sdc2Scorer
        except ImportError as exc:
            raise StreamdetError(
                "SDC2 scoring needs the official scorer: pip install 'streamdet[score]' "
                f"(ska-sdc, pandas<3, setuptools<82); import failed: {exc}") from None
        sub_df = sub.to_pandas(index=False)
        true_df = true.to_pandas(index=False)
        try:
            result = Sdc2Scorer(sub_df, true_df).run(train=train, detail=True)
        except Exception as exc:  # the scorer raises bare exceptions of many kinds
            raise StreamdetError(f"the official SDC2 scorer failed: "
                                 f"{type(exc).__name__}: {exc}") from exc
    n_match = int(result.n_match)
    accuracy: dict[str, float] = {}
    scores = result.scores_df
    if scores is not None and len(scores):
        accuracy = {p: float(np.mean(scores[p])) for p in SDC2_PARAMS if p in scores}
    return Sdc2Result(score=float(result.value), n_det=int(result.n_det), n_match=n_match,
                      n_false=int(result.n_false),
                      purity=n_match / n_det if n_det else 0.0,
                      acc_pc=float(result.acc_pc) if n_match else 0.0, n_truth=n_truth,
                      accuracy=accuracy)
