"""Scoring SDC1 catalogues with the official SKA scorer (``ska-sdc``)."""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from astropy.table import Table

from .catalog import read_sdc1
from .errors import StreamdetError, StreamdetValueError

__all__ = ["SDC1_FREQS", "ScoreResult", "score"]

#: Bands the official SDC1 scorer knows, MHz.
SDC1_FREQS = (560, 1400, 9200)

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
        lines = [
            f"score      {self.score:.2f}",
            f"N_det      {self.n_det}",
            f"N_match    {self.n_match}",
            f"N_false    {self.n_false}",
            f"purity     {self.purity:.4f}",
            f"accuracy   {self.acc_pc:.2f} %",
        ]
        lines += [f"  {k:<10s} {v:.4f}" for k, v in self.accuracy.items()]
        return "\n".join(lines)


def _frame(cat: Any, what: str) -> Any:
    if isinstance(cat, str | os.PathLike):
        cat = read_sdc1(cat)
    if isinstance(cat, Table):
        cat = cat.to_pandas()
    missing = [c for c in ("ra_core", "dec_core", "flux", "b_maj", "b_min", "pa")
               if c not in getattr(cat, "columns", ())]
    if missing:
        raise StreamdetValueError(f"{what} catalogue lacks SDC1 columns {missing}")
    return cat


@contextlib.contextmanager
def _quiet_scorer() -> Iterator[None]:
    """Keep the scorer's logging.basicConfig and deprecation chatter off the user's screen."""
    root = logging.getLogger()
    null = logging.NullHandler()
    added = not root.handlers
    if added:
        root.addHandler(null)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        if added:
            root.removeHandler(null)


def score(catalogue: Any, truth: Any, *, freq: int = 560, train: bool = False,
          mode: int = 0) -> ScoreResult:
    """Score an SDC1 catalogue against a truth catalogue with the official scorer.

    Parameters
    ----------
    catalogue, truth : path, astropy Table or pandas DataFrame
        SDC1-format catalogues (``id ra_core dec_core ra_cent dec_cent flux core_frac
        b_maj b_min pa size class``).
    freq : {560, 1400, 9200}
        Band, MHz.
    train : bool
        ``False`` (the challenge's rule) scores outside the SDC1 training box only;
        ``True`` scores inside it only.
    mode : {0, 1}
        Positions used: 0 core, 1 centroid.

    Returns
    -------
    ScoreResult
    """
    if freq not in SDC1_FREQS:
        raise StreamdetValueError(f"freq {freq} MHz is not an SDC1 band {SDC1_FREQS}")
    sub = _frame(catalogue, "submitted")
    true = _frame(truth, "truth")
    with _quiet_scorer():
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
