"""export.retune: the purity preset chosen again on pooled simulated fields."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")

from export.retune import main, retune_best, retune_measure, retune_purity
from streamdet.engine.contract import load_model
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


@pytest.mark.parametrize("key, grid", [("bmin_resolved", (0.0, 100.0)),
                                       ("bmaj_resolved", (0.0, 100.0)),
                                       ("flux_scale", (0.5, 1.0))])
def test_retune_measure_writes_the_best_scoring_value(tmp_path: Path, key: str,
                                                      grid: tuple[float, float]) -> None:
    src = default_model(freq_hz=560e6, pixel_scale_arcsec=0.6)
    out = tmp_path / "m.onnx"
    scores = retune_measure(src, out, freq=560, seeds=[77], size=768, offset=(0.0, -0.8),
                            workdir=tmp_path / "fields", key=key, grid=grid)
    assert set(scores) == set(grid)
    assert scores[grid[0]] != scores[grid[1]]    # the measurement changed, and the score
    before, after = load_model(src).contract, load_model(out).contract
    assert after.measure[key] == max(scores, key=lambda v: scores[v])
    for other in {"bmin_resolved", "bmaj_resolved", "flux_scale"} - {key}:
        assert after.measure[other] == before.measure[other]
    if key == "flux_scale":
        assert after.measure[key] > 0.5      # halving the fluxes cannot score better
        with pytest.raises(StreamdetValueError, match="flux_scale"):
            retune_measure(src, tmp_path / "n.onnx", freq=560, seeds=[77], size=768,
                           offset=(0.0, -0.8), workdir=tmp_path / "fields", key=key,
                           grid=(0.0, 1.0))
    assert after.thresholds == before.thresholds
    with pytest.raises(StreamdetValueError, match="grid"):
        retune_measure(src, tmp_path / "n.onnx", freq=560, seeds=[77], size=768,
                       offset=(0.0, -0.8), workdir=tmp_path / "fields", grid=(-1.0,))
    with pytest.raises(StreamdetValueError, match="key"):
        retune_measure(src, tmp_path / "n.onnx", freq=560, seeds=[77], size=768,
                       offset=(0.0, -0.8), workdir=tmp_path / "fields", key="flux")


def test_retune_best_keeps_the_highest_score_at_the_purity_floor(tmp_path: Path) -> None:
    src = default_model(freq_hz=560e6, pixel_scale_arcsec=0.6)
    kw = dict(freq=560, seeds=[77], size=768, offset=(0.0, -0.8), workdir=tmp_path / "f")
    before = load_model(src).contract
    res = retune_best(src, tmp_path / "a.onnx", min_purity=0.01, grid=(0.3, 0.9), **kw)
    after = load_model(tmp_path / "a.onnx").contract
    # the model's own preset is a candidate: the choice never scores lower
    assert res["score"] >= res["previous_score"]
    assert np.allclose(after.thresholds["best"], res["best"])
    assert np.allclose(after.thresholds["default"], res["best"])  # default was best
    assert after.thresholds["purity"] == before.thresholds["purity"]
    assert after.measure == before.measure
    # a floor no candidate's purity reaches is refused, and nothing is written
    with pytest.raises(StreamdetValueError, match="no candidate"):
        retune_best(src, tmp_path / "b.onnx", min_purity=1.0, grid=(0.05,), **kw)
    assert not (tmp_path / "b.onnx").exists()
    # a higher floor can only keep the purity at or above it
    res2 = retune_best(src, tmp_path / "c.onnx", min_purity=0.97, grid=(0.3, 0.5, 0.7, 0.9),
                       **kw)
    assert res2["purity"] >= 0.97
    with pytest.raises(StreamdetValueError, match="grid"):
        retune_best(src, tmp_path / "d.onnx", grid=(1.5,), **kw)


def test_labelled_images_are_groups_of_their_own(tmp_path: Path) -> None:
    """A simulated field given as a labelled image (no seeds) chooses what it chooses as a
    seed; beside the pool it is a second group whose purity must hold too."""
    from export._data import simulated_field

    src = default_model(freq_hz=560e6, pixel_scale_arcsec=0.6)
    kw = dict(freq=560, size=768, offset=(0.0, -0.8), workdir=tmp_path / "f")
    grid = (0.3, 0.5, 0.7)
    as_seed = retune_best(src, tmp_path / "a.onnx", seeds=[77], min_purity=0.9, grid=grid,
                          **kw)
    image, truth = simulated_field(tmp_path / "f", size=768, freq=560, seed=77,
                                   offset=(0.0, -0.8))
    alone = retune_best(src, tmp_path / "b.onnx", seeds=[], images=[(image, truth, False)],
                        min_purity=0.9, grid=grid, **kw)
    assert np.allclose(alone["best"], as_seed["best"])
    assert alone["score"] == pytest.approx(as_seed["score"])
    both = retune_best(src, tmp_path / "c.onnx", seeds=[78], images=[(image, truth, False)],
                       min_purity=0.9, grid=grid, **kw)
    assert len(both["group_scores"]) == 2 and min(both["group_purity"]) >= 0.9
    assert both["score"] == pytest.approx(sum(both["group_scores"]))
    with pytest.raises(StreamdetValueError, match="seed or labelled image"):
        retune_best(src, tmp_path / "d.onnx", seeds=[], min_purity=0.9, grid=grid, **kw)
