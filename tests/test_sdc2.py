"""SDC2 catalogues (streamdet.catalogue.sdc2) and the SoFiA-2 benchmark peer
(benchmarks/_sofia.py)."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from streamdet.catalogue.sdc2 import SDC2_COLUMNS, read_sdc2, score_sdc2, to_sdc2, write_sdc2
from streamdet.errors import (
    OutputExistsError,
    StreamdetError,
    StreamdetFileNotFoundError,
    StreamdetValueError,
)
from streamdet.sim.simulate_cube import cube_truth, simulate_cube

ROOT = Path(__file__).resolve().parents[1]


def _load_sofia() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_sofia", ROOT / "benchmarks" / "_sofia.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["bench_sofia"] = mod
    spec.loader.exec_module(mod)
    return mod


sofia = _load_sofia()


@pytest.fixture(scope="module")
def truth() -> Table:
    """A simulated SDC2 truth (no cube rendered): 82 galaxies, every column of the format."""
    t = cube_truth(shape=(1024, 256, 256), seed=1)
    assert len(t) > 50
    return t


# ----------------------------------------------------------------------------- format

def test_round_trip(truth: Table, tmp_path: Path) -> None:
    path = write_sdc2(truth, tmp_path / "cat.txt")
    lines = path.read_text().splitlines()
    assert lines[0].split() == list(SDC2_COLUMNS)
    assert len(lines) == len(truth) + 1
    back = read_sdc2(path)
    assert back.colnames == list(SDC2_COLUMNS)
    assert back["id"].dtype == np.int64
    np.testing.assert_array_equal(back["id"], truth["id"])
    for name, atol in (("ra", 1e-9), ("dec", 1e-9), ("hi_size", 1e-6), ("central_freq", 1e-6),
                       ("pa", 1e-6), ("i", 1e-6), ("w20", 1e-6)):
        np.testing.assert_allclose(back[name], truth[name], rtol=0, atol=atol, err_msg=name)
    np.testing.assert_allclose(back["line_flux_integral"], truth["line_flux_integral"],
                               rtol=1e-9)
    # the simulator's own truth file reads the same
    t2 = tmp_path / "truth.txt"
    simulate_cube(tmp_path / "c.fits", truth=t2, shape=(16, 16, 16), seed=2, noise=0.0)
    assert read_sdc2(t2).colnames == list(SDC2_COLUMNS)


def test_round_trip_empty_and_headerless(tmp_path: Path) -> None:
    empty = Table({c: np.zeros(0, np.int64 if c == "id" else np.float64) for c in SDC2_COLUMNS})
    back = read_sdc2(write_sdc2(empty, tmp_path / "empty.txt"))
    assert len(back) == 0 and back.colnames == list(SDC2_COLUMNS)
    p = tmp_path / "nohead.txt"
    p.write_text("# a comment\n\n7 -0.5 -30 5 3.2 1.0e9 10 45 200\n")
    t = read_sdc2(p)
    assert len(t) == 1 and t["id"][0] == 7 and t["ra"][0] == pytest.approx(359.5)


def test_real_development_truth_reads() -> None:
    real = ROOT.parent / "shared" / "data" / "sdc2" / "sky_ldev_truthcat_v2.txt"
    if not real.is_file():
        pytest.skip("real SDC2 development truth not present")
    t = read_sdc2(real)
    assert len(t) == 11091


def _row(**change: float) -> Table:
    values = {"id": 1, "ra": 180.0, "dec": -30.0, "hi_size": 5.0, "line_flux_integral": 3.0,
              "central_freq": 1.0e9, "pa": 10.0, "i": 45.0, "w20": 200.0}
    values.update(change)
    return Table({k: [v] for k, v in values.items()})


@pytest.mark.parametrize(("change", "match"), [
    ({"dec": 91.0}, "dec"),
    ({"central_freq": 0.0}, "central_freq"),
    ({"hi_size": -1.0}, "hi_size"),
    ({"w20": -5.0}, "w20"),
    ({"pa": math.nan}, "NaN"),
    ({"line_flux_integral": math.inf}, "NaN/inf"),
    ({"id": 1.5}, "integers"),
])
def test_write_refuses_bad_values(change: dict[str, float], match: str, tmp_path: Path) -> None:
    out = tmp_path / "bad.txt"
    with pytest.raises(StreamdetValueError, match=match):
        write_sdc2(_row(**change), out)
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_write_refuses_missing_and_text_columns(tmp_path: Path) -> None:
    t = _row()
    del t["w20"]
    with pytest.raises(StreamdetValueError, match=r"lacks SDC2 column\(s\) \['w20'\]"):
        write_sdc2(t, tmp_path / "a.txt")
    t = _row()
    t["pa"] = ["north"]
    with pytest.raises(StreamdetValueError, match="'pa' is not numeric"):
        write_sdc2(t, tmp_path / "b.txt")
    assert list(tmp_path.iterdir()) == []


def test_refuses_repeated_ids(tmp_path: Path) -> None:
    from astropy.table import vstack
    two = vstack([_row(), _row(ra=1.0)])
    with pytest.raises(StreamdetValueError, match="'id' must be unique"):
        write_sdc2(two, tmp_path / "d.txt")
    p = tmp_path / "e.txt"
    p.write_text(" ".join(SDC2_COLUMNS) + "\n" + "1 2 3 4 5 6 7 8 9\n" * 2)
    with pytest.raises(StreamdetValueError, match="unique"):
        read_sdc2(p)


def test_write_overwrite(tmp_path: Path) -> None:
    out = write_sdc2(_row(), tmp_path / "c.txt")
    with pytest.raises(OutputExistsError):
        write_sdc2(_row(ra=1.0), out)
    write_sdc2(_row(ra=1.0), out, overwrite=True)
    assert read_sdc2(out)["ra"][0] == 1.0


@pytest.mark.parametrize(("text", "match"), [
    ("id ra dec size flux freq pa i w20\n", "not the SDC2 header"),
    (" ".join(SDC2_COLUMNS) + "\n1 2 3\n", "data line 1 has 3 fields"),
    (" ".join(SDC2_COLUMNS) + "\n1 2 3 4 5 6 7 8 x\n", "non-numeric"),
    (" ".join(SDC2_COLUMNS) + "\n1 2 3 4 5 6 7 8 nan\n", "non-numeric"),
    (" ".join(SDC2_COLUMNS) + "\n1 2 95 4 5 6 7 8 9\n", "'dec' must be within"),
])
def test_read_refuses(text: str, match: str, tmp_path: Path) -> None:
    p = tmp_path / "cat.txt"
    p.write_text(text)
    with pytest.raises(StreamdetValueError, match=match):
        read_sdc2(p)


def test_read_missing_and_binary(tmp_path: Path) -> None:
    with pytest.raises(StreamdetFileNotFoundError):
        read_sdc2(tmp_path / "none.txt")
    p = tmp_path / "bin.txt"
    p.write_bytes(b"\xff\xfe\x00\x81" * 10)
    with pytest.raises(StreamdetValueError):
        read_sdc2(p)


def test_to_sdc2_drops_extra_columns(truth: Table) -> None:
    t = to_sdc2(truth)
    assert t.colnames == list(SDC2_COLUMNS) and "channel" in truth.colnames
    assert t.meta["seed"] == 1


# ----------------------------------------------------------------------------- score

def test_score_truth_against_itself_and_perturbed(truth: Table, tmp_path: Path) -> None:
    pytest.importorskip("ska_sdc")
    n = len(truth)
    same = score_sdc2(truth, truth)
    assert same.n_det == n and same.n_match == n and same.n_false == 0
    assert same.purity == 1.0 and same.n_truth == n
    assert same.score == pytest.approx(n, rel=1e-9)
    assert set(same.accuracy) == {"position", "central_freq", "flux", "hi_size", "pa", "w20",
                                  "i"}
    assert all(v == pytest.approx(1.0) for v in same.accuracy.values())
    assert "score" in same.summary()

    # the same through files and a pandas frame
    sub = write_sdc2(truth, tmp_path / "sub.txt")
    tru = write_sdc2(truth, tmp_path / "tru.txt")
    assert score_sdc2(sub, tru).score == pytest.approx(n, rel=1e-6)
    assert score_sdc2(to_sdc2(truth).to_pandas(), tru).score == pytest.approx(n, rel=1e-6)

    # positions shifted: lower, and lower the further (north, arcsec)
    scores = []
    for shift in (0.0, 5.0, 6.5):
        moved = to_sdc2(truth)
        moved["dec"] = moved["dec"] + shift / 3600.0
        r = score_sdc2(moved, truth)
        scores.append((r.score, r.accuracy["position"]))
    assert scores[0][0] > scores[1][0] > scores[2][0] > 0
    assert scores[0][1] > scores[1][1] > scores[2][1]

    # every parameter perturbed a little: between 0 and N, each term below 1
    rng = np.random.default_rng(0)
    noisy = to_sdc2(truth)
    for name in ("line_flux_integral", "hi_size", "w20"):
        noisy[name] = noisy[name] * rng.uniform(0.5, 1.5, n)
    noisy["pa"] = np.mod(noisy["pa"] + rng.normal(0, 30, n), 360.0)
    noisy["i"] = np.clip(noisy["i"] + rng.normal(0, 15, n), 0, 90)
    r = score_sdc2(noisy, truth)
    assert 0.3 * n < r.score < 0.95 * n
    assert r.n_match >= 0.9 * n
    for name in ("flux", "hi_size", "pa", "w20", "i"):
        assert r.accuracy[name] < 0.99, name

    # false detections cost one each
    fakes = to_sdc2(truth)[:10]
    fakes["central_freq"] = fakes["central_freq"] + 5e6
    fakes["id"] = fakes["id"] + 10_000
    from astropy.table import vstack
    both = vstack([to_sdc2(truth), fakes])
    r = score_sdc2(both, truth)
    assert r.n_det == n + 10 and r.n_match == n
    assert r.score == pytest.approx(n - 10, rel=1e-9)
    assert r.purity == pytest.approx(n / (n + 10))


def test_score_edge_cases(truth: Table) -> None:
    pytest.importorskip("ska_sdc")
    empty = to_sdc2(truth)[:0]
    r = score_sdc2(empty, truth)
    assert (r.score, r.n_det, r.n_match, r.purity) == (0.0, 0, 0, 0.0)
    # a truth with nothing in the scored band: every detection is false
    off = to_sdc2(truth)
    off["central_freq"] = 0.8e9
    r = score_sdc2(to_sdc2(truth)[:5], off)
    assert (r.score, r.n_det, r.n_match, r.n_false) == (-5.0, 5, 0, 5)
    # a truth of no source at all
    r = score_sdc2(to_sdc2(truth)[:3], empty)
    assert (r.score, r.n_false) == (-3.0, 3)


def test_score_errors(truth: Table, tmp_path: Path) -> None:
    with pytest.raises(StreamdetFileNotFoundError, match="submitted"):
        score_sdc2(tmp_path / "none.txt", truth)
    bad = to_sdc2(truth)
    bad["line_flux_integral"][0] = 0.0
    with pytest.raises(StreamdetValueError, match="line_flux_integral"):
        score_sdc2(truth, bad)
    with pytest.raises(StreamdetValueError, match="must be a path"):
        score_sdc2(42, truth)
    t = to_sdc2(truth)
    del t["i"]
    with pytest.raises(StreamdetValueError, match="submitted catalogue lacks"):
        score_sdc2(t, truth)
    p = tmp_path / "bad.txt"
    p.write_text("nonsense header here\n")
    with pytest.raises(StreamdetValueError, match="truth catalogue"):
        score_sdc2(truth, p)
    assert issubclass(StreamdetValueError, StreamdetError)


# ----------------------------------------------------------------------------- SoFiA-2 peer

def _cube_header() -> fits.Header:
    h = fits.Header()
    for k, v in (("NAXIS", 3), ("NAXIS1", 64), ("NAXIS2", 64), ("NAXIS3", 100),
                 ("CTYPE1", "RA---SIN"), ("CRVAL1", 180.0), ("CDELT1", -2.8 / 3600),
                 ("CRPIX1", 33.0), ("CUNIT1", "deg"), ("CTYPE2", "DEC--SIN"),
                 ("CRVAL2", -30.0), ("CDELT2", 2.8 / 3600), ("CRPIX2", 33.0),
                 ("CUNIT2", "deg"), ("CTYPE3", "FREQ"), ("CRVAL3", 1.0e9),
                 ("CDELT3", 3.0e4), ("CRPIX3", 1.0), ("CUNIT3", "Hz"),
                 ("BMAJ", 7.0 / 3600), ("BMIN", 7.0 / 3600)):
        h[k] = v
    return h


_CAT = """# SoFiA source catalogue
#
#                           1             2             3             4             5             6             7             8             9            10            11            12            13
#                        name            id             x             y             z         f_sum           rel          flag           w20       ell_maj       ell_min        ell_pa        kin_pa
#                                                     pix           pix           pix         Jy*Hz                                          Hz           pix           pix           deg           deg

    SoFiA J120000.00-300000.0             1     32.000000     32.000000     10.000000      5.000000      0.950000             0   6.00000e+05      5.000000      3.000000     20.000000     30.000000
    SoFiA J120001.00-300001.0             2     10.000000     20.000000     50.000000      1.000000      0.300000             4   1.50000e+05      1.000000      1.000000    -40.000000     -1.000000
"""  # noqa: E501


def test_sofia_catalogue_and_conversion(tmp_path: Path) -> None:
    p = tmp_path / "s_cat.txt"
    p.write_text(_CAT)
    raw = sofia.read_sofia_catalogue(p)
    assert len(raw) == 2 and raw["id"].dtype == np.int64 and raw["x"][1] == 10.0
    h = _cube_header()
    cat = sofia.to_sdc2(raw, h)
    assert cat.colnames == list(SDC2_COLUMNS)
    # centroid at the reference pixel (0-based 32 = CRPIX 33): the field centre
    assert cat["ra"][0] == pytest.approx(180.0) and cat["dec"][0] == pytest.approx(-30.0)
    assert cat["central_freq"][0] == pytest.approx(1.0e9 + 10 * 3e4)
    assert cat["line_flux_integral"][0] == 5.0
    f = cat["central_freq"][0]
    assert cat["w20"][0] == pytest.approx(299792.458 * 6e5 / f)
    fwhm = math.sqrt(2 * math.log(2)) * 2.8
    maj, mnr = math.sqrt((5 * fwhm) ** 2 - 49), math.sqrt((3 * fwhm) ** 2 - 49)
    assert cat["hi_size"][0] == pytest.approx(maj)
    q = mnr / maj
    assert cat["i"][0] == pytest.approx(math.degrees(math.acos(math.sqrt((q * q - 0.04) / 0.96))))
    assert cat["pa"][0] == pytest.approx(210.0)      # kinematic PA + 180: the receding side
    # unresolved: size 0, inclination 60; no kinematic PA: the ellipse's, wrapped
    assert cat["hi_size"][1] == 0.0 and cat["i"][1] == 60.0 and cat["pa"][1] == 320.0
    # the reliability cut of a run at a higher threshold
    assert len(sofia.to_sdc2(raw, h, min_rel=0.6)) == 1
    write_sdc2(cat, tmp_path / "sdc2.txt")
    # no source at all
    assert len(sofia.to_sdc2(raw[:0], h)) == 0


def test_sofia_parameter_file(tmp_path: Path) -> None:
    par = sofia.parameter_file(tmp_path / "cube.fits", tmp_path / "w", name="x",
                               reliability_threshold=0.6, threads=2,
                               overrides={"scfind.threshold": "4.0"})
    text = par.read_text()
    settings = {k.strip(): v.strip() for k, v in (ln.split("=", 1) for ln in text.splitlines())}
    assert settings["scfind.kernelsXY"] == "0, 3, 6"
    assert settings["scfind.kernelsZ"] == "0, 3, 7, 15, 31"
    assert settings["scfind.threshold"] == "4.0"
    assert settings["linker.radiusXY"] == settings["linker.radiusZ"] == "2"
    assert settings["linker.minSizeXY"] == settings["linker.minSizeZ"] == "3"
    assert settings["reliability.enable"] == "true"
    assert settings["reliability.threshold"] == "0.6"
    assert settings["parameter.physical"] == "true"
    assert settings["pipeline.threads"] == "2"
    assert settings["input.data"] == str((tmp_path / "cube.fits").resolve())
    with pytest.raises(StreamdetValueError):
        sofia.parameter_file(tmp_path / "cube.fits", tmp_path, reliability_threshold=1.5)


@pytest.mark.slow
def test_sofia_runs(tmp_path: Path) -> None:
    """SoFiA-2 itself (skipped where it is not built): finds the bright galaxies of a small
    cube, and a run at reliability 0.6 is the run at 0.1 cut at rel >= 0.6."""
    if sofia.find_sofia() is None:
        pytest.skip("SoFiA-2 not built (bash ../shared/peers/build_sofia2.sh DIR; $SOFIA2)")
    pytest.importorskip("ska_sdc")
    cube = tmp_path / "c.fits"
    truth = simulate_cube(cube, shape=(384, 192, 192), seed=3, noise=5e-6)
    low = sofia.run_sofia(cube, tmp_path / "low", reliability_threshold=0.1, threads=2)
    high = sofia.run_sofia(cube, tmp_path / "high", reliability_threshold=0.6, threads=2)
    assert low.returncode == 0 and low.seconds > 0 and low.rss_mb > 10
    h = fits.getheader(cube)
    cut = sofia.to_sdc2(low.catalogue, h, min_rel=0.6)
    direct = sofia.to_sdc2(high.catalogue, h)
    assert len(cut) == len(direct) > 0
    for name in SDC2_COLUMNS[1:]:
        np.testing.assert_allclose(cut[name], direct[name], rtol=1e-6, err_msg=name)
    r = score_sdc2(direct, truth)
    assert r.n_match >= 1 and r.purity >= 0.5 and r.score > 0
    assert r.accuracy["position"] > 0.8 and r.accuracy["central_freq"] > 0.8


def _load_bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_cube",
                                                  ROOT / "benchmarks" / "bench_cube.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["bench_cube"] = mod
    spec.loader.exec_module(mod)
    return mod


def test_bench_cube_plumbing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The benchmark's plumbing on a tiny cube: streamdet (a test 3D model) runs in its own
    process and is scored with its rates and peak RSS, as is the 4x cube; a kept cube is
    reused; --skip-streamdet leaves streamdet out."""
    pytest.importorskip("torch")
    from _models3d import make_test_model3d

    bench = _load_bench()
    model = make_test_model3d(tmp_path / "tiny3d.onnx")
    work = tmp_path / "w"
    argv = ["--shape", "32", "16", "16", "--seeds", "9", "--skip-sofia", "--workdir", str(work),
            "--keep", "--reuse", "--json", str(tmp_path / "rows.json"), "--model", str(model),
            "--threshold", "0.2"]
    assert bench.main(argv) == 0
    out = capsys.readouterr()
    assert "| seed | finder | setting | score | N_det | N_match | purity |" in out.out
    rows = json.loads((tmp_path / "rows.json").read_text())["rows"]
    assert [r["finder"] for r in rows] == ["streamdet", "streamdet"]
    for r in rows:
        assert r["score"] is not None and r["n_det"] >= r["n_match"] >= 0
        assert r["mvox_s"] > 0 and r["model_mvox_s"] > 0 and r["rss_mb"] > 50
    assert "(4x) cube" in rows[1]["note"]
    cube = work / "seed9" / "cube.fits"
    assert bench._same_cube(cube, seed=9, shape=(32, 16, 16), offset=3318)
    assert not bench._same_cube(cube, seed=8, shape=(32, 16, 16), offset=3318)
    assert bench._same_cube(work / "large9" / "cube.fits", seed=9, shape=(32, 32, 32),
                            offset=3318)
    assert bench.main(argv) == 0
    assert "reused" in capsys.readouterr().err
    assert bench.main([*argv[:7], "--skip-streamdet"]) == 0
    assert "| 9 | streamdet |" not in capsys.readouterr().out
