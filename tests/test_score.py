"""Scoring through the official scorer: perfect truth, degraded catalogues, errors, CLI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from astropy.table import Table

from streamdet.catalogue.catalog import read_sdc1, write_sdc1
from streamdet.catalogue.score import score
from streamdet.cli import main
from streamdet.errors import StreamdetValueError

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


# --------------------------------------------- the band, and detect's full tables (item 9)

def _full_table(n: int = 200, seed: int = 0) -> Table:
    """A catalogue as ``detect`` returns it: sky positions, shapes and other columns."""
    rng = np.random.default_rng(seed)
    bmaj = rng.uniform(1.0, 3.0, n)
    return Table({"x": rng.uniform(0, 100, n), "y": rng.uniform(0, 100, n),
                  "ra": rng.uniform(0.05, 0.25, n), "dec": rng.uniform(-30.25, -30.05, n),
                  "flux": 10 ** rng.uniform(-5.5, -3.5, n), "bmaj": bmaj,
                  "bmin": bmaj * rng.uniform(0.4, 1.0, n), "pa": rng.uniform(0, 180, n),
                  "objectness": rng.uniform(0.5, 1.0, n)})


def test_sdc1_band() -> None:
    from streamdet.catalogue.score import sdc1_band

    assert sdc1_band(5.6e8) == 560 and sdc1_band(1.4e9) == 1400 and sdc1_band(9.2e9) == 9200
    assert sdc1_band(7.0e8) == 560 and sdc1_band(1.2e9) == 1400
    with pytest.raises(StreamdetValueError, match="no SDC1 band"):
        sdc1_band(3.5e9)


def test_band_is_required_for_sdc1_text(tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "truth.txt"
    write_sdc1(_truth(), path)
    with pytest.raises(StreamdetValueError, match="cannot tell the band"):
        score(path, path)
    assert main(["score", str(path), str(path)]) == 1
    err = capsys.readouterr().err
    assert "pass --freq F with F one of 560, 1400, 9200" in err and "freq=" not in err
    assert len(err.strip().splitlines()) == 1


def test_full_ecsv_table_of_detect_is_scored(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    from streamdet.catalogue.outputs import to_sdc1, write_catalogue

    table = _full_table()
    table.meta["freq_hz"] = 1.4e9  # as streamdet detect records the image's band
    cat = tmp_path / "cat.ecsv"
    write_catalogue(table, cat, format="ecsv")
    truth = tmp_path / "truth.txt"
    write_sdc1(to_sdc1(table), truth)
    assert main(["score", str(cat), str(truth)]) == 0  # no --freq: 1400 from the catalogue
    out = capsys.readouterr().out
    assert f"N_match    {len(table)}" in out and "purity     1.0000" in out
    assert score(cat, truth).freq == 1400
    assert score(table, truth).freq == 1400  # the table itself, as detect() returns it
    assert score(cat, truth, freq=1400).n_match == len(table)
    with pytest.warns(UserWarning, match="scoring at 560 MHz a catalogue made at 1400 MHz"):
        score(cat, truth, freq=560)
    for fmt in ("fits", "parquet"):
        if fmt == "parquet":
            pytest.importorskip("pyarrow")
        path = tmp_path / f"cat.{fmt}"
        write_catalogue(table, path, format=fmt)  # type: ignore[arg-type]
        r = score(path, truth)
        assert (r.freq, r.n_match) == (1400, len(table))


def test_band_from_the_image_the_catalogue_names(tmp_path: Path) -> None:
    from astropy.io import fits

    from streamdet.catalogue.outputs import to_sdc1
    from streamdet.catalogue.score import catalogue_band

    image = tmp_path / "field.fits"
    header = fits.Header()
    for key, value in (("CTYPE1", "RA---SIN"), ("CRVAL1", 0.0), ("CDELT1", -1.6667e-4),
                       ("CRPIX1", 5.0), ("CTYPE2", "DEC--SIN"), ("CRVAL2", -30.0),
                       ("CDELT2", 1.6667e-4), ("CRPIX2", 5.0), ("CTYPE3", "FREQ"),
                       ("CRVAL3", 9.2e9), ("CDELT3", 1e6), ("CRPIX3", 1.0)):
        header[key] = value
    fits.PrimaryHDU(np.zeros((1, 8, 8), np.float32), header=header).writeto(image)
    table = _full_table(30)
    table.meta["image"] = str(image)  # as streamdet.detect records it
    assert catalogue_band(table) == 9200
    assert catalogue_band(to_sdc1(table)) == 9200  # the meta survives the reduction
    table.meta["image"] = str(tmp_path / "gone.fits")
    assert catalogue_band(table) is None
    assert catalogue_band(_truth()) is None
