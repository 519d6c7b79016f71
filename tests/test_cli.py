"""The command line as a whole: version, help of every subcommand, error conventions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import streamdet
from streamdet.cli import main
from streamdet.engine.contract import load_model

SUBCOMMANDS = ["simulate", "convert", "info", "detect", "score", "plot", "export", "train"]
CIANNA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "cianna"


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"streamdet {streamdet.__version__}"


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    assert exc.value.code == 0
    assert f"streamdet {command}" in capsys.readouterr().out


def test_usage_error_exit_code(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["simulate"])
    assert exc.value.code == 2
    assert "OUT.fits" in capsys.readouterr().err


def test_export_needs_an_input(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["export", "-o", str(tmp_path / "m.onnx")]) == 1
    err = capsys.readouterr().err
    assert "CHECKPOINT or --from-cianna" in err and len(err.strip().splitlines()) == 1


@pytest.mark.skipif(not CIANNA.is_dir(), reason="shared CIANNA fixtures not present")
def test_export_from_cianna_then_detect(tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("onnx")
    onnx_path = tmp_path / "cianna.onnx"
    assert main(["export", "--from-cianna", str(CIANNA / "net_bin.dat"), "-o", str(onnx_path),
                 "--preset", "sdc1-cianna2024", "-q"]) == 0
    model = load_model(onnx_path)
    assert model.contract.nbox == 9 and model.contract.param_names == ("flux", "bmaj", "bmin",
                                                                       "pa")
    field = tmp_path / "field.fits"
    streamdet.simulate(field, size=512, seed=11, quiet=True)
    out = tmp_path / "cat.ecsv"
    assert main(["detect", str(field), "-o", str(out), "--model", str(onnx_path), "-q"]) == 0
    from astropy.table import Table

    table = Table.read(out, format="ascii.ecsv")
    assert np.all(np.isfinite(np.asarray(table["ra"])))


def test_simulate_no_faint_equals_the_api(tmp_path: Path) -> None:
    from astropy.io import fits

    from streamdet.catalogue.catalog import read_sdc1

    for flag, faint in (([], True), (["--no-faint"], False)):
        stem = "f" if faint else "n"
        assert main(["simulate", str(tmp_path / f"{stem}.fits"), "--truth",
                     str(tmp_path / f"{stem}.txt"), "--size", "128", "--seed", "5", "--quiet",
                     *flag]) == 0
        api = streamdet.simulate(tmp_path / f"{stem}_api.fits", size=128, seed=5, faint=faint,
                                 quiet=True)
        assert fits.getheader(tmp_path / f"{stem}.fits")["SIMFAINT"] is faint
        assert len(read_sdc1(tmp_path / f"{stem}.txt")) == len(api)
        assert np.array_equal(fits.getdata(tmp_path / f"{stem}.fits"),
                              fits.getdata(tmp_path / f"{stem}_api.fits"))
    assert len(read_sdc1(tmp_path / "f.txt")) > 4 * len(read_sdc1(tmp_path / "n.txt"))
