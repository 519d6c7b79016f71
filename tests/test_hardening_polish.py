"""The command line for a new user (issue 18, item 9): catalogue formats by name only, the
options (not the API keywords) in errors, defaults in --help, no traceback when the
reader of a pipe goes away, a warning for a model of another band, and a checkout that
the Quickstart leaves clean."""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from astropy.table import Table
from conftest import FitsCase

from streamdet.cli import cli_message, main
from streamdet.engine.contract import Model, load_model
from streamdet.io.convert import convert
from streamdet.io.image import open_image
from streamdet.models import ModelFitWarning, bundled_models, check_model_fits

ROOT = Path(__file__).resolve().parents[1]
# the module (streamdet.detect, streamdet.engine.detect: the function)
DETECT = importlib.import_module("streamdet.engine.detect")
MODELS = {p.name: p for p in bundled_models()}


def sky_table(n: int = 6, seed: int = 0) -> Table:
    rng = np.random.default_rng(seed)
    x, y = rng.uniform(10, 200, n), rng.uniform(10, 180, n)
    return Table({"x": x, "y": y, "ra": rng.uniform(0.0, 0.02, n),
                  "dec": rng.uniform(-30.02, -30.0, n), "flux": rng.uniform(1e-4, 1e-3, n),
                  "bmaj": rng.uniform(1.5, 3.0, n), "bmin": rng.uniform(1.0, 1.5, n),
                  "pa": rng.uniform(0, 180, n)})


@pytest.fixture
def fake_detect(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, object]]:
    """detect returns a small table at once; the calls' keywords are recorded."""
    calls: list[dict[str, object]] = []

    def fake(image: Any, **kwargs: Any) -> Table:
        # The model as detect itself takes it (loaded, checked against the image).
        model = DETECT._load(kwargs.get("model"), image, threads=kwargs.get("threads"))
        calls.append({**kwargs, "model": model})
        return sky_table()

    monkeypatch.setattr(DETECT, "detect", fake)
    return calls


def _one_line_error(rc: int, err: str) -> None:
    assert rc == 1, err
    assert len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err


# ------------------------------------------------------------------- catalogue formats

@pytest.mark.parametrize("name", ["x.csv", "catalogue", "x.fits.gz", "x.TXT.bak"])
def test_unknown_extension_is_refused(fits_2d: FitsCase, tmp_path: Path, name: str,
                                      fake_detect: list[dict[str, object]],
                                      capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / name
    rc = main(["detect", str(fits_2d.path), "-o", str(out), "-q"])
    err = capsys.readouterr().err
    _one_line_error(rc, err)
    assert str(out) in err and "--format" in err
    for known in (".txt", ".dat", ".ecsv", ".fits", ".parquet"):
        assert known in err
    assert not out.exists() and not fake_detect  # refused before any work


def test_any_extension_with_format(fits_2d: FitsCase, tmp_path: Path,
                                   fake_detect: list[dict[str, object]]) -> None:
    out = tmp_path / "x.csv"
    assert main(["detect", str(fits_2d.path), "-o", str(out), "--format", "ecsv", "-q"]) == 0
    assert len(Table.read(out, format="ascii.ecsv")) == len(sky_table())
    assert main(["detect", str(fits_2d.path), "-o", str(tmp_path / "x.FITS"), "-q"]) == 0
    assert len(Table.read(tmp_path / "x.FITS", format="fits")) == len(sky_table())


# ------------------------------------------------------------ options, not keywords

def test_errors_name_the_option_not_the_keyword(fits_2d: FitsCase, tmp_path: Path,
                                                fake_detect: list[dict[str, object]],
                                                capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cat.txt"
    out.write_text("old")
    rc = main(["detect", str(fits_2d.path), "-o", str(out), "-q"])
    err = capsys.readouterr().err
    _one_line_error(rc, err)
    assert "pass --overwrite" in err and "overwrite=True" not in err
    store = tmp_path / "s.zarr"
    convert(fits_2d.path, store, chunks=128, quiet=True)
    rc = main(["convert", str(fits_2d.path), str(store), "--chunks", "128", "-q"])
    err = capsys.readouterr().err
    _one_line_error(rc, err)
    assert "pass --overwrite to convert again" in err and "overwrite=True" not in err


def test_cli_message() -> None:
    assert (cli_message("x exists; pass overwrite=True (--overwrite)")
            == "x exists; pass --overwrite")
    assert (cli_message("pass freq=F (--freq F) with F one of 560, 1400")
            == "pass --freq F with F one of 560, 1400")
    for same in ("'a' is being written by pid 1 (lock file '.a.lock')",
                 "size (a=1) (--not an option", "chunks=3 (default)"):
        assert cli_message(same) == same


# ------------------------------------------------------------------------- --help

@pytest.mark.parametrize("command,shown", [
    ("simulate", ["(default: 2048)", "(default: 560)", "(default: 0)", "(default: 0.0 0.0)"]),
    ("convert", ["(default: zstd)"]),
    ("score", ["default: the band the catalogue was made at"]),
])
def test_help_shows_defaults(command: str, shown: list[str],
                             capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main([command, "--help"])
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    for s in shown:
        assert s in text, text


# ------------------------------------------------------------------------ pipes

@pytest.mark.parametrize("buffered", [True, False], ids=["buffered", "unbuffered"])
@pytest.mark.parametrize("argv", [["--help"], ["--version"], ["detect", "--help"],
                                  ["info", "IMAGE"]])
def test_a_closed_pipe_is_no_traceback(argv: list[str], buffered: bool,
                                       fits_2d: FitsCase) -> None:
    """``streamdet ... | head`` where head has gone: no traceback, no "Exception ignored"."""
    argv = [str(fits_2d.path) if a == "IMAGE" else a for a in argv]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    if not buffered:
        env["PYTHONUNBUFFERED"] = "1"
    r, w = os.pipe()
    os.close(r)  # the reader is gone before anything is written
    try:
        proc = subprocess.run([sys.executable, "-m", "streamdet", *argv], stdout=w,
                              stderr=subprocess.PIPE, text=True, timeout=120, cwd=ROOT,
                              env=env)
    finally:
        os.close(w)
    assert "Traceback" not in proc.stderr and "Exception ignored" not in proc.stderr, proc.stderr
    assert "BrokenPipe" not in proc.stderr
    # the output ends the command as a SIGPIPE would (argparse ignores the error of its own
    # messages, help and version, when they are written at once: 0 then)
    assert proc.returncode in ((141,) if argv[0] == "info" else (0, 141))


@pytest.mark.skipif(shutil.which("head") is None, reason="no head")
def test_pipe_into_head() -> None:
    proc = subprocess.run(f"{sys.executable} -m streamdet detect --help | head -n 1",
                          shell=True, capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.stdout.startswith("usage: streamdet detect")
    assert "Traceback" not in proc.stderr and "Exception ignored" not in proc.stderr


# ------------------------------------------------------------ a model of another band

def test_model_of_another_band_warns(fits_sdc1: FitsCase, fits_quirks: FitsCase,
                                     tmp_path: Path, fake_detect: list[dict[str, object]],
                                     capsys: pytest.CaptureFixture[str]) -> None:
    """fits_sdc1: 560 MHz, 0.6" pixels; fits_quirks: 1400 MHz, 0.6" pixels."""
    cases = [(fits_sdc1, "sdc1_560.onnx", []),
             (fits_sdc1, "sdc1_1400.onnx", ["made for 1400 MHz but the image is at 560 MHz",
                                            "0.24 arcsec pixels"]),
             (fits_quirks, "sdc1_560.onnx", ["made for 560 MHz but the image is at 1400 MHz"])]
    for k, (image, name, words) in enumerate(cases):
        out = tmp_path / f"cat{k}.ecsv"
        argv = ["detect", str(image.path), "-o", str(out), "--model", str(MODELS[name]), "-q"]
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            assert main(argv) == 0
        got = [str(w.message) for w in seen if issubclass(w.category, ModelFitWarning)]
        assert len(got) == (1 if words else 0), got
        for w in words:
            assert w in got[0] and name in got[0], got
        assert capsys.readouterr().err == ""
        model = fake_detect[-1]["model"]
        assert isinstance(model, Model) and model.path == MODELS[name]
        # the band of the image, for score
        meta = Table.read(out, format="ascii.ecsv").meta
        assert meta["freq_hz"] == pytest.approx(5.6e8 if image is fits_sdc1 else 1.4e9)


_WARN_CLI = """
import sys, importlib
from astropy.table import Table
m = importlib.import_module("streamdet.engine.detect")
m.detect = lambda image, **k: (m._load(k["model"], image, threads=None), Table({"x": [1.0]}))[1]
from streamdet.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_model_warning_reaches_the_terminal(fits_quirks: FitsCase, tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-c", _WARN_CLI, "detect", str(fits_quirks.path),
                           "-o", str(tmp_path / "c.ecsv"), "--model",
                           str(MODELS["sdc1_560.onnx"]), "-q"], capture_output=True,
                          text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert "ModelFitWarning" in proc.stderr and "made for 560 MHz" in proc.stderr


def test_detect_api_warns_on_a_model_of_another_band(fits_quirks: FitsCase,
                                                     fits_sdc1: FitsCase) -> None:
    """The Python API checks the model it is given as the CLI does (a path or a Model)."""
    image = open_image(fits_quirks.path)  # 1400 MHz
    for model in (MODELS["sdc1_560.onnx"], load_model(MODELS["sdc1_560.onnx"])):
        with pytest.warns(ModelFitWarning, match="made for 560 MHz but the image is at 1400"):
            DETECT.detect(image, model=model, measure=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        DETECT.detect(open_image(fits_sdc1.path), model=MODELS["sdc1_560.onnx"],
                      measure=False)  # 560 MHz, 0.6" pixels: it fits, silent


def test_check_model_fits() -> None:
    m560 = load_model(MODELS["sdc1_560.onnx"])
    assert check_model_fits(m560, freq_hz=5.6e8, pixel_scale_arcsec=0.6)
    assert check_model_fits(m560, freq_hz=8.3e8, pixel_scale_arcsec=0.7)  # within 1.5x, 25%
    assert check_model_fits(m560, freq_hz=None, pixel_scale_arcsec=None)  # nothing known
    with pytest.warns(ModelFitWarning, match="factor 1.5"):
        assert not check_model_fits(m560, freq_hz=8.5e8, pixel_scale_arcsec=None)
    with pytest.warns(ModelFitWarning, match="25%"):
        assert not check_model_fits(m560, freq_hz=None, pixel_scale_arcsec=0.4)


# --------------------------------------------------------------------- the checkout

def test_quickstart_outputs_are_ignored() -> None:
    if not (ROOT / ".git").exists() or shutil.which("git") is None:
        pytest.skip("not a git checkout")
    names = ["field.fits", "truth.txt", "pb.fits", "catalogue.txt", "field.zarr",
             "field.zarr/zarr.json", "other.zarr"]
    proc = subprocess.run(["git", "check-ignore", "--no-index", *names], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert sorted(proc.stdout.split()) == sorted(names)
    # and nothing the repository holds is ignored
    tracked = subprocess.run(["git", "ls-files", "-ci", "--exclude-standard"], cwd=ROOT,
                             capture_output=True, text=True, timeout=60).stdout
    assert tracked.strip() == ""
