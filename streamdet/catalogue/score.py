"""Scoring SDC1 catalogues with the official SKA scorer (``ska-sdc``)."""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from astropy.table import Table

from ..errors import (
    StreamdetError,
    StreamdetFileNotFoundError,
    StreamdetValueError,
    StreamdetWarning,
)
from ._scorer import quiet_scorer, summary_text
from .catalog import read_sdc1

__all__ = ["SDC1_FREQS", "BandWarning", "ScoreResult", "catalogue_band", "score", "sdc1_band"]

#: Bands the official SDC1 scorer knows, MHz.
SDC1_FREQS = (560, 1400, 9200)

class BandWarning(StreamdetWarning):
    """A catalogue is scored in another band than the one it was made at."""


_PARAMS = ("position", "flux", "b_maj", "b_min", "pa", "core_frac", "class")


@dataclass(frozen=True)
class ScoreResult:
    """The official SDC1 score of a catalogue and its parts.

    Attributes
    ----------
    score : float
        Sum of the per-source scores of the matches minus the number of false detections.
    n_det : int
        Submitted sources scored (those outside the training box when ``train=False``).
    n_match : int
        Submitted sources matched to a true source.
    n_false : int
        Submitted sources without a match.
    purity : float
        ``n_match / n_det`` (0 when nothing was submitted).
    acc_pc : float
        Mean per-source accuracy of the matches, percent.
    accuracy : dict of str to float
        Mean score of each term (position, flux, b_maj, b_min, pa, core_frac, class), in [0, 1].
    freq : int
        Band, MHz.
    """

    score: float
    n_det: int
    n_match: int
    n_false: int
    purity: float
    acc_pc: float
    freq: int
    accuracy: dict[str, float] = field(default_factory=dict)

    def summary(self) -> str:
        """Human-readable summary, one quantity per line."""
        return summary_text(score=self.score, n_det=self.n_det, n_match=self.n_match,
                            n_false=self.n_false, purity=self.purity, acc_pc=self.acc_pc,
                            accuracy=self.accuracy, key_width=10)


_TABLE_SUFFIXES = {".ecsv": "ascii.ecsv", ".fits": "fits", ".fit": "fits",
                   ".parquet": "parquet"}


def _read(cat: Any, what: str) -> Any:
    """A catalogue as a table: an SDC1 text file is read as such; an ECSV / FITS / Parquet
    file (the full table ``detect`` writes) and a table from :func:`streamdet.detect` are
    reduced to the SDC1 columns (:func:`streamdet.catalogue.outputs.to_sdc1`), their meta kept."""
    if isinstance(cat, str | os.PathLike):
        p = Path(cat)
        fmt = _TABLE_SUFFIXES.get(p.suffix.lower())
        if fmt is None:
            cat = read_sdc1(p)
        elif not p.is_file():
            raise StreamdetFileNotFoundError(f"{what} catalogue {str(p)!r} does not exist")
        else:
            try:
                cat = Table.read(p, format=fmt)
            except Exception as exc:  # astropy raises many kinds for a bad file
                raise StreamdetValueError(f"cannot read the {what} catalogue {str(p)!r} as "
                                          f"{fmt}: {exc}") from None
    if (isinstance(cat, Table) and not set(_SDC1_NEEDED) <= set(cat.colnames)
            and {"ra", "dec"} <= set(cat.colnames)):
        from .outputs import to_sdc1

        cat = to_sdc1(cat)
    return cat


_SDC1_NEEDED = ("ra_core", "dec_core", "flux", "b_maj", "b_min", "pa")


def _frame(cat: Any, what: str) -> Any:
    cat = _read(cat, what)
    if isinstance(cat, Table):
        cat = cat.to_pandas()
    missing = [c for c in _SDC1_NEEDED if c not in getattr(cat, "columns", ())]
    if missing:
        raise StreamdetValueError(f"{what} catalogue lacks SDC1 columns {missing}")
    return cat


def sdc1_band(freq_hz: float) -> int:
    """The SDC1 band (MHz) of a frequency: the nearest, within a factor 1.5.

    Raises
    ------
    StreamdetValueError
        No SDC1 band is that near.
    """
    mhz = float(freq_hz) / 1e6
    if not (math.isfinite(mhz) and mhz > 0):
        raise StreamdetValueError(f"frequency {freq_hz!r} Hz is not positive")
    band = min(SDC1_FREQS, key=lambda b: abs(math.log(mhz / b)))
    if not 1 / 1.5 <= mhz / band <= 1.5:
        raise StreamdetValueError(f"{mhz:g} MHz is in no SDC1 band {SDC1_FREQS} (MHz)")
    return band


def catalogue_band(catalogue: Any) -> int | None:
    """The SDC1 band (MHz) a catalogue was made at, or None when it cannot be known.

    From its meta: ``freq_hz`` (which ``streamdet detect`` writes), else the header of
    the image it names (``image``, which :func:`streamdet.detect` records) where that
    file still exists. An SDC1 text file carries neither.
    """
    meta = {str(k).lower(): v for k, v in (getattr(catalogue, "meta", None) or {}).items()}
    for key, scale in (("freq_hz", 1.0), ("freq_mhz", 1e6)):
        value = meta.get(key)
        if isinstance(value, int | float | str) and not isinstance(value, bool):
            try:
                return sdc1_band(float(value) * scale)
            except ValueError:
                continue
    image = meta.get("image")
    if isinstance(image, str) and image != "array" and os.path.exists(image):
        from ..io.image import open_image

        try:
            freq_hz = open_image(image).freq_hz
        except StreamdetError:
            return None
        if freq_hz:
            return sdc1_band(freq_hz)
    return None


def score(catalogue: Any, truth: Any, *, freq: int | None = None, train: bool = False,
          mode: int = 0) -> ScoreResult:
    """Score an SDC1 catalogue against a truth catalogue with the official scorer.

    Parameters
    ----------
    catalogue, truth : path, astropy Table or pandas DataFrame
        SDC1-format catalogues (``id ra_core dec_core ra_cent dec_cent flux core_frac
        b_maj b_min pa size class``), or streamdet's full tables (from
        :func:`streamdet.detect`, or ``.ecsv`` / ``.fits`` / ``.parquet`` files that
        ``streamdet detect`` writes), reduced to the SDC1 columns with
        :func:`streamdet.catalogue.outputs.to_sdc1`.
    freq : {560, 1400, 9200}, optional
        Band, MHz. Default: the band the catalogue (else the truth) was made at
        (:func:`catalogue_band`); required where neither says (SDC1 text files).
    train : bool
        ``False`` (the challenge's rule) scores outside the SDC1 training box only;
        ``True`` scores inside it only.
    mode : {0, 1}
        Positions used: 0 core, 1 centroid.

    Returns
    -------
    ScoreResult

    Raises
    ------
    StreamdetValueError
        ``freq`` not an SDC1 band, or not given and not known from the catalogues.
    """
    if freq is not None and freq not in SDC1_FREQS:
        raise StreamdetValueError(f"freq {freq} MHz is not an SDC1 band {SDC1_FREQS}")
    sub_table = _read(catalogue, "submitted")
    true_table = _read(truth, "truth")
    sub = _frame(sub_table, "submitted")
    true = _frame(true_table, "truth")
    made_at = catalogue_band(sub_table) or catalogue_band(true_table)
    if freq is None:
        if made_at is None:
            raise StreamdetValueError(
                "cannot tell the band of the catalogues (an SDC1 text file carries none); "
                "pass freq=F (--freq F) with F one of 560, 1400, 9200 (MHz)")
        freq = made_at
    elif made_at is not None and made_at != freq:
        warnings.warn(f"scoring at {freq} MHz a catalogue made at {made_at} MHz",
                      BandWarning, stacklevel=2)
    with quiet_scorer():
        try:
            from ska_sdc import Sdc1Scorer
        except ImportError as exc:
            raise StreamdetError(
                "scoring needs the official scorer: pip install 'streamdet[score]' "
                f"(ska-sdc, pandas<3, setuptools<82); import failed: {exc}") from None
        if len(sub) == 0:   # the official scorer crashes on an empty submission
            return ScoreResult(score=0.0, n_det=0, n_match=0, n_false=0, purity=0.0,
                               acc_pc=0.0, freq=freq)
        result = Sdc1Scorer(sub, true, freq).run(mode=mode, train=train, detail=True)
    n_det, n_match = int(result.n_det), int(result.n_match)
    accuracy: dict[str, float] = {}
    scores = result.scores_df
    if scores is not None and len(scores):
        accuracy = {p: float(np.mean(scores[p])) for p in _PARAMS if p in scores}
    return ScoreResult(score=float(result.value), n_det=n_det, n_match=n_match,
                       n_false=int(result.n_false),
                       purity=n_match / n_det if n_det else 0.0,
                       acc_pc=float(result.acc_pc) if n_match else 0.0, freq=freq,
                       accuracy=accuracy)
