"""export.retune: the purity preset chosen again on pooled simulated fields."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")

from export.retune import main, retune_bmin, retune_purity
from streamdet.contract import load_model
from streamdet.errors import OutputExistsError, StreamdetValueError
from streamdet.models import default_model


def test_retune_purity_rewrites_only_the_purity_preset(tmp_path: Path) -> None:
    src = default_model(freq_hz=560e6, pixel_scale_arcsec=0.6)
    out = tmp_path / "m.onnx"
    res = retune_purity(src, out, freq=560, seeds=[77], size=768, offset=(0.0, -0.8),
                        purity_target=0.97, workdir=tmp_path / "fields")
    assert res["purity"] >= 0.97 and res["kept"] > 0
    before, after = load_model(src).contract, load_model(out).contract
    assert after.thresholds["purity"] == pytest.approx(res["purity_threshold"])
    assert np.allclose(after.thresholds["best"], before.thresholds["best"])
    assert after.priors == before.priors
    # A stricter target needs a threshold at least as high on the same fields.
    res2 = retune_purity(src, out, freq=560, seeds=[77], size=768, offset=(0.0, -0.8),
                         purity_target=0.995, workdir=tmp_path / "fields", overwrite=True)
    assert res2["purity_threshold"] >= res["purity_threshold"]


def test_retune_refuses_bad_input(tmp_path: Path) -> None:
    src = default_model(freq_hz=560e6, pixel_scale_arcsec=0.6)
    out = tmp_path / "m.onnx"
    out.write_bytes(b"keep me")
    with pytest.raises(OutputExistsError):
        retune_purity(src, out, freq=560, seeds=[1], size=256, offset=(0.0, -0.8),
                      purity_target=0.9, workdir=tmp_path)
    assert out.read_bytes() == b"keep me"
    with pytest.raises(StreamdetValueError, match="purity target"):
        retune_purity(src, tmp_path / "n.onnx", freq=560, seeds=[1], size=256,
                      offset=(0.0, -0.8), purity_target=1.5, workdir=tmp_path)
    with pytest.raises(SystemExit):
        main([str(src), "--freq", "560"])         # no -o


def test_retune_bmin_writes_the_best_scoring_value(tmp_path: Path) -> None:
    src = default_model(freq_hz=560e6, pixel_scale_arcsec=0.6)
    out = tmp_path / "m.onnx"
    scores = retune_bmin(src, out, freq=560, seeds=[77], size=768, offset=(0.0, -0.8),
                         workdir=tmp_path / "fields", grid=(0.0, 100.0))
    assert set(scores) == {0.0, 100.0}
    assert scores[0.0] != scores[100.0]          # the minor axes changed, and so the score
    before, after = load_model(src).contract, load_model(out).contract
    assert after.measure["bmin_resolved"] == max(scores, key=lambda v: scores[v])
    assert after.thresholds == before.thresholds
    with pytest.raises(StreamdetValueError, match="grid"):
        retune_bmin(src, tmp_path / "n.onnx", freq=560, seeds=[77], size=768,
                    offset=(0.0, -0.8), workdir=tmp_path / "fields", grid=(-1.0,))
