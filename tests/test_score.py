"""Scoring through the official scorer: perfect truth, degraded catalogues, errors, CLI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from astropy.table import Table

from streamdet.catalog import read_sdc1, write_sdc1
from streamdet.cli import main
from streamdet.errors import StreamdetValueError
from streamdet.score import score

pytest.importorskip("ska_sdc", exc_type=ImportError)


def _truth(n: int = 300, seed: int = 0) -> Table:
    """A truth catalogue away from the SDC1 training box (RA < 0.5 deg, Dec < -30)."""
    rng = np.random.default_rng(seed)
    ra = rng.uniform(0.05, 0.25, n)
    dec = rng.uniform(-30.25, -30.05, n)
    bmaj = rng.uniform(0.8, 3.0, n)
    return Table({
        "id": np.arange(n), "ra_core": ra, "dec_core": dec, "ra_cent": ra, "dec_cent": dec,
        "flux": 10 ** rng.uniform(-5.5, -3.5, n), "core_frac": np.zeros(n),
        "b_maj": bmaj, "b_min": bmaj * rng.uniform(0.4, 1.0, n),
        "pa": rng.uniform(0, 180, n), "size": np.full(n, 2), "class": np.full(n, 3)})


def test_truth_scores_perfectly() -> None:
    truth = _truth()
    r = score(truth, truth, freq=560)
    assert r.n_det == r.n_match == len(truth)
    assert r.n_false == 0 and r.purity == 1.0
    assert r.score == pytest.approx(len(truth), rel=1e-9)
    assert r.acc_pc == pytest.approx(100.0)
    assert all(v == pytest.approx(1.0) for v in r.accuracy.values())


def test_false_and_missed_sources_cost(tmp_path: Path) -> None:
    truth = _truth()
    sub = truth.copy()
    sub = sub[:200]                                 # 100 missed
    sub["ra_core"][:20] += 0.01                     # 20 moved far away: false detections
    sub["ra_cent"][:20] += 0.01
    sub["flux"] *= 1.5                              # fluxes off by 50%
    path = tmp_path / "sub.txt"
    write_sdc1(sub, path)
    r = score(path, truth, freq=560)
    assert r.n_det == 200 and r.n_match == 180 and r.n_false == 20
    assert r.purity == pytest.approx(0.9)
    assert r.accuracy["flux"] < 0.9 and r.accuracy["position"] == pytest.approx(1.0)
    assert r.score < 180 - 20 + 1e-9


def test_empty_submission_scores_zero() -> None:
    r = score(_truth()[:0], _truth(), freq=560)
    assert (r.score, r.n_det, r.n_match) == (0.0, 0, 0)


def test_bad_inputs(tmp_path: Path) -> None:
    with pytest.raises(StreamdetValueError, match="1000"):
        score(_truth(), _truth(), freq=1000)
    with pytest.raises(StreamdetValueError, match="lacks SDC1 columns"):
        score(Table({"ra": [1.0]}), _truth())
    with pytest.raises(FileNotFoundError):
        score(tmp_path / "none.txt", _truth())


def test_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    truth = _truth()
    path = tmp_path / "truth.txt"
    write_sdc1(truth, path)
    assert len(read_sdc1(path)) == len(truth)
    assert main(["score", str(path), str(path), "--freq", "560"]) == 0
    out = capsys.readouterr().out
    assert f"N_match    {len(truth)}" in out and "purity     1.0000" in out
    assert main(["score", str(tmp_path / "none.txt"), str(path)]) == 1
    assert "none.txt" in capsys.readouterr().err
