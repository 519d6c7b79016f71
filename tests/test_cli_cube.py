"""``streamdet simulate --cube``: the CLI over :func:`streamdet.simulate_cube`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from streamdet.cli import main
from streamdet.sim.simulate_cube import simulate_cube


def test_cli_cube_equals_the_api(tmp_path: Path) -> None:
    out, truth = tmp_path / "cube.fits", tmp_path / "truth.txt"
    argv = ["simulate", str(out), "--cube", "--truth", str(truth), "--shape", "96", "40", "40",
            "--seed", "7", "--channel-offset", "3000", "-q"]
    assert main(argv) == 0
    ref = tmp_path / "ref.fits"
    table = simulate_cube(ref, shape=(96, 40, 40), seed=7, channel_offset=3000)
    with fits.open(out) as a, fits.open(ref) as b:
        assert a[0].data.shape == (96, 40, 40)
        np.testing.assert_array_equal(a[0].data, b[0].data)
        assert a[0].header["CTYPE3"].startswith("FREQ")
    assert truth.read_text().splitlines()[0].split()[:3] == ["id", "ra", "dec"]
    assert len(truth.read_text().splitlines()) == 1 + len(table)


@pytest.mark.parametrize(("argv", "words"), [
    (["--cube", "--size", "64"], "--size does not apply to a cube"),
    (["--cube", "--freq", "1400", "--pb", "pb.fits"], "--freq, --pb do not apply"),
    (["--shape", "8", "8", "8"], "--shape applies only with --cube"),
    (["--continuum"], "--continuum applies only with --cube"),
])
def test_cli_cube_refuses_options_of_the_other_kind(tmp_path: Path, argv: list[str],
                                                    words: str,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "x.fits"
    assert main(["simulate", str(out), *argv, "-q"]) == 1
    assert words in capsys.readouterr().err
    assert not out.exists()


def test_cli_score_sdc2_matches_the_api(tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("ska_sdc")
    from streamdet.catalogue.sdc2 import score_sdc2

    truth = tmp_path / "truth.txt"
    simulate_cube(tmp_path / "c.fits", truth=truth, shape=(256, 96, 96), seed=3,
                  channel_offset=2000, noise=0.0)
    assert main(["score", str(truth), str(truth), "--sdc2"]) == 0
    out = capsys.readouterr().out
    ref = score_sdc2(truth, truth)
    assert ref.n_det > 0 and ref.score > 0
    assert out.strip() == ref.summary().strip()
    assert main(["score", str(truth), str(truth), "--sdc2", "--freq", "560"]) == 1
    assert "--freq does not apply to SDC2 scoring" in capsys.readouterr().err
