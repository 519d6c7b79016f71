"""Training loop, validation scoring, resume, configs and the ``train`` CLI."""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnx")

from astropy.io import fits  # noqa: E402
from astropy.table import Table  # noqa: E402

import export.train as train_mod  # noqa: E402
from export._cli import add_export_parser  # noqa: E402
from export._data import load_field, simulated_field  # noqa: E402
from export._train_cli import add_train_parser  # noqa: E402
from export.onnx_export import load_checkpoint  # noqa: E402
from export.train import (  # noqa: E402
    TrainConfig,
    _choose_thresholds,
    _official_scorer,
    score_catalogue,
    train,
)
from streamdet.engine.contract import load_model  # noqa: E402
from streamdet.errors import (  # noqa: E402
    OutputExistsError,
    StreamdetFileNotFoundError,
    StreamdetValueError,
)
from streamdet.sim.simulate import simulate  # noqa: E402

CONFIGS = Path(__file__).resolve().parents[1] / "configs"

TINY: dict[str, Any] = {
    "name": "tiny", "width": 4, "depth": 0, "fields": 1, "field_size": 256, "val_size": 256,
    "cutout": 128, "batch": 4, "steps": 30, "lr": 5e-3, "warmup_steps": 5,
    "shape_assign_steps": 10, "val_every": 1000, "checkpoint_every": 10, "log_every": 5,
    "threads": 1, "seed": 7, "reinject_after": 15,
}


def _records(workdir: Path, kind: str) -> list[dict[str, Any]]:
    lines = (workdir / "log.jsonl").read_text(encoding="utf-8").splitlines()
    return [r for r in map(json.loads, lines) if r["kind"] == kind]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="streamdet")
    sub = parser.add_subparsers(dest="command", required=True)
    add_train_parser(sub)
    add_export_parser(sub)
    return parser


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 30-step run through the CLI handler, on a 256 px field."""
    root = tmp_path_factory.mktemp("train")
    cfg = root / "tiny.json"
    cfg.write_text(json.dumps({"comment": "test", **TINY}), encoding="utf-8")
    workdir = root / "run"
    args = _parser().parse_args(["train", "--config", str(cfg), "--workdir", str(workdir), "-q"])
    assert args.func(args) == 0
    return workdir


# --------------------------------------------------------------------------- the loop
def test_training_reduces_the_loss(tiny_run: Path) -> None:
    recs = _records(tiny_run, "train")
    assert [r["step"] for r in recs] == [5, 10, 15, 20, 25, 30]
    first = np.mean([r["loss"] for r in recs[:2]])
    last = np.mean([r["loss"] for r in recs[-2:]])
    assert last < 0.75 * first
    assert all(r["n_pos"] > 0 for r in recs)  # sources were assigned
    # re-injection is logged, and off before reinject_after (15)
    assert all(r["n_reinjected"] == 0 for r in recs if r["step"] <= 15)
    assert all(np.isfinite(r["loss"]) and r["steps_per_s"] > 0 for r in recs)


def test_validation_record_and_presets(tiny_run: Path) -> None:
    (val,) = _records(tiny_run, "val")
    assert val["step"] == 30
    assert val["scorer"] == ("ska_sdc" if _official_scorer() is not None else "proxy") \
        or val["n_det"] == 0
    assert set(val["thresholds"]) == {"default", "best", "purity"}
    assert 0.0 <= val["purity"] <= 1.0
    # the best checkpoint carries the presets and provenance; model.onnx is its export
    ckpt = load_checkpoint(tiny_run / "best.pt")
    assert ckpt.contract["thresholds"] == val["thresholds"]
    assert ckpt.contract["training"]["step"] == 30
    assert ckpt.contract["training"]["config"]["width"] == 4
    model = load_model(tiny_run / "model.onnx")
    assert set(model.contract.thresholds) == {"default", "best", "purity"}
    assert model.contract.freq_mhz == 560.0 and model.contract.pixel_scale_arcsec == 0.6
    assert (tiny_run / "val" / "model.onnx").is_file()


def test_streamdet_export_of_the_best_checkpoint(tiny_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "exported.onnx"
    args = _parser().parse_args(["export", str(tiny_run / "best.pt"), "-o", str(out), "-q"])
    assert args.func(args) == 0
    a = load_model(out).contract
    b = load_model(tiny_run / "model.onnx").contract
    assert a.thresholds == b.thresholds and a.priors == b.priors


def test_workdir_guards(tiny_run: Path, tmp_path: Path) -> None:
    config = TrainConfig.from_dict(TINY)
    with pytest.raises(OutputExistsError):
        train(config, tiny_run, quiet=True)
    with pytest.raises(StreamdetFileNotFoundError):
        train(config, tmp_path / "empty", resume=True, quiet=True)


def test_resume_continues_from_the_saved_step(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    config = TrainConfig.from_dict({**TINY, "steps": 9, "checkpoint_every": 3, "log_every": 1,
                                    "threads": 1})
    straight, broken = tmp_path / "straight", tmp_path / "broken"
    train(config, straight, quiet=True)
    shutil.copytree(straight / "fields", broken / "fields")

    calls = {"n": 0}
    real_loss = train_mod.yolo_loss

    def failing_loss(*a: Any, **k: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 8:  # dies during step 8: the last state is the one of step 6
            raise KeyboardInterrupt
        return real_loss(*a, **k)

    monkeypatch.setattr(train_mod, "yolo_loss", failing_loss)
    with pytest.raises(KeyboardInterrupt):
        train(config, broken, quiet=True)
    state = torch.load(broken / "state.pt", weights_only=True)
    assert state["step"] == 6
    monkeypatch.setattr(train_mod, "yolo_loss", real_loss)
    train(config, broken, resume=True, quiet=True)
    steps = [r["step"] for r in _records(broken, "train")]
    assert steps == [1, 2, 3, 4, 5, 6, 7, 7, 8, 9]  # step 7 ran twice: before and after
    assert torch.load(broken / "state.pt", weights_only=True)["step"] == 9
    # same random draws and optimiser state: the resumed run ends with the same weights
    a = load_checkpoint(straight / "last.pt").model.state_dict()
    b = load_checkpoint(broken / "last.pt").model.state_dict()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------- scoring
def _perturbed_submission(truth: Table, rng: np.random.Generator) -> Table:
    n = len(truth)
    keep = rng.random(n) < 0.7
    sub = Table()
    t = truth[keep]
    m = len(t)
    shift = 0.2 / 3600.0
    sub["ra_core"] = np.asarray(t["ra_core"]) + rng.normal(0, shift, m)
    sub["dec_core"] = np.asarray(t["dec_core"]) + rng.normal(0, shift, m)
    sub["ra_cent"] = sub["ra_core"]
    sub["dec_cent"] = sub["dec_core"]
    sub["flux"] = np.asarray(t["flux"]) * rng.lognormal(0, 0.15, m)
    sub["core_frac"] = np.full(m, 0.0375)
    sub["b_maj"] = np.asarray(t["b_maj"]) * rng.lognormal(0, 0.2, m)
    sub["b_min"] = np.minimum(np.asarray(t["b_min"]) * rng.lognormal(0, 0.2, m), sub["b_maj"])
    sub["pa"] = np.mod(np.asarray(t["pa"]) + rng.normal(0, 15, m), 180.0)
    sub["size"] = np.full(m, 2)
    sub["class"] = np.full(m, 3)
    # false detections far from any source: 40 random positions, then drop real matches
    fake = Table()
    k = 40
    ra0, dec0 = float(np.mean(t["ra_core"])), float(np.mean(t["dec_core"]))
    fake["ra_core"] = ra0 + rng.uniform(-0.04, 0.04, k)
    fake["dec_core"] = dec0 + rng.uniform(-0.04, 0.04, k)
    for name in sub.colnames[2:]:
        fake[name] = sub[name][:k] if name not in ("ra_cent", "dec_cent") else (
            fake["ra_core"] if name == "ra_cent" else fake["dec_core"])
    from astropy.table import vstack

    out = vstack([sub, fake[sub.colnames]])
    out.add_column(np.arange(len(out), dtype=np.int64), name="id", index=0)
    return out


def test_proxy_score_agrees_with_the_official_scorer(tmp_path: Path) -> None:
    if _official_scorer() is None:
        pytest.skip("ska_sdc is not installed")
    truth = simulate(tmp_path / "f.fits", size=512, seed=3, offset=(0.0, -0.8), faint=False,
                     quiet=True)
    truth = truth[list(truth.colnames[:12])]
    sub = _perturbed_submission(truth, np.random.default_rng(0))
    official, c_off, who = score_catalogue(sub, truth, 560)
    proxy, c_proxy, who_p = score_catalogue(sub, truth, 560, use_official=False)
    assert (who, who_p) == ("ska_sdc", "proxy")
    assert official > 0.3 * len(truth)
    assert proxy == pytest.approx(official, rel=0.03)
    # the same submitted sources are matched, and their scores agree
    np.testing.assert_array_equal(c_off >= 0, c_proxy >= 0)
    np.testing.assert_allclose(c_proxy[c_off >= 0], c_off[c_off >= 0], atol=0.02)
    assert c_off.sum() == pytest.approx(official, rel=1e-9)  # contributions add up


def test_proxy_score_on_a_crowded_truth(tmp_path: Path) -> None:
    """With the faint population the truth is ~10x denser: a few matches are resolved
    differently (the official sieve is not reproduced exactly), the total stays close."""
    if _official_scorer() is None:
        pytest.skip("ska_sdc is not installed")
    truth = simulate(tmp_path / "f.fits", size=512, seed=3, offset=(0.0, -0.8), quiet=True)
    truth = truth[list(truth.colnames[:12])]
    sub = _perturbed_submission(truth, np.random.default_rng(0))
    official, c_off, _ = score_catalogue(sub, truth, 560)
    proxy, c_proxy, _ = score_catalogue(sub, truth, 560, use_official=False)
    assert proxy == pytest.approx(official, rel=0.02)
    assert np.mean((c_off >= 0) == (c_proxy >= 0)) > 0.98


def test_score_catalogue_empty_and_bad_ids() -> None:
    empty = Table(names=("id",), dtype=(np.int64,))
    assert score_catalogue(empty, Table(), 560)[0] == 0.0
    bad = Table({"id": np.array([1, 2])})
    with pytest.raises(StreamdetValueError):
        score_catalogue(bad, Table(), 560)


def test_choose_thresholds_hand_case() -> None:
    # prior 0: matched detections at obj 0.9 (0.8) and 0.6 (0.5), a false one at 0.3
    # prior 1: a false one at 0.95, a matched one at 0.5 (0.9)
    obj = np.array([0.9, 0.6, 0.3, 0.95, 0.5])
    prior = np.array([0, 0, 0, 1, 1])
    contrib = np.array([0.8, 0.5, -1.0, -1.0, 0.9])
    best, t_pur, reached = _choose_thresholds(obj, prior, contrib, 2, lo=0.05,
                                              purity_target=0.98, min_count=1)
    # prior 0: any t in (0.3, 0.6] keeps 1.3; the lowest grid value is 0.31
    # prior 1: keeping both gives -0.1, nothing 0: the best is t in (0.95, ...] -> 0.96
    assert best == [0.31, 0.96]
    # purity: t in (0.3, 0.5] keeps 0.9, 0.6, 0.95, 0.5 (3 of 4 matched: 0.75);
    # t in (0.6, 0.9] keeps 0.9, 0.95 (0.5); t in (0.9, 0.95] keeps 0.95 (0)
    # -> 0.98 is never reached: the threshold of the best purity (0.75) is chosen
    assert not reached and t_pur == pytest.approx(0.31)
    _, t2, reached2 = _choose_thresholds(obj, prior, np.abs(contrib), 2, lo=0.05,
                                             purity_target=0.98, min_count=1)
    assert reached2 and t2 == pytest.approx(0.05)  # everything matched


# --------------------------------------------------------------------------- data
def test_load_field_matches_the_simulator(tmp_path: Path) -> None:
    image, truth_path = simulated_field(tmp_path, size=300, freq=560, seed=5,
                                        offset=(0.0, -1.0))
    table = simulate(tmp_path / "again.fits", size=300, freq=560, seed=5, offset=(0.0, -1.0),
                     quiet=True)
    field = load_field(image, truth_path)
    assert field.noise == pytest.approx(3.8e-7)
    assert field.beam_arcsec == pytest.approx(1.5) and field.pixel_arcsec == pytest.approx(0.6)
    order = np.argsort(np.asarray(table["y"]), kind="stable")
    # lobed AGN: the field uses the centroid, the simulator's x, y is the core
    core = np.asarray(table["core_frac"])[order] == 0
    assert np.abs(field.truth.x - np.asarray(table["x"])[order])[core].max() < 1e-3
    assert np.abs(field.truth.y - np.asarray(table["y"])[order])[core].max() < 1e-3
    np.testing.assert_allclose(field.truth.pb, np.asarray(table["pb"])[order], rtol=1e-6)
    assert field.region[0] >= 0 and field.region[1] <= 300
    # without the simulator's header cards the gain is 1 and the noise is estimated
    with fits.open(image) as hdul:
        header = hdul[0].header
        for key in ("PBRA", "PBDEC", "SIMNOISE"):
            del header[key]
        hdul.writeto(tmp_path / "plain.fits")
    plain = load_field(tmp_path / "plain.fits", truth_path)
    assert np.all(plain.truth.pb == 1.0)
    assert plain.noise == pytest.approx(3.8e-7, rel=0.15)


# --------------------------------------------------------------------------- config
def test_config_round_trip_and_errors(tmp_path: Path) -> None:
    config = TrainConfig.from_dict(TINY)
    assert TrainConfig.from_dict(config.to_dict()) == config
    floored = dataclasses.replace(config, size_floor_beams=(0.1, 0.03))
    assert TrainConfig.from_dict(json.loads(json.dumps(floored.to_dict()))) == floored
    with pytest.raises(StreamdetValueError, match="unknown TrainConfig"):
        TrainConfig.from_dict({"widht": 3})
    with pytest.raises(StreamdetValueError, match="cutout"):
        dataclasses.replace(config, cutout=100)
    with pytest.raises(StreamdetValueError, match="no training data"):
        dataclasses.replace(config, fields=0)
    with pytest.raises(StreamdetValueError, match="reinject"):
        dataclasses.replace(config, reinject_obj=2.0)
    with pytest.raises(StreamdetValueError, match="ignore_snr_min"):
        dataclasses.replace(config, ignore_snr_min=config.snr_min + 1)
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]", encoding="utf-8")
    with pytest.raises(StreamdetValueError):
        TrainConfig.from_json(bad)
    with pytest.raises(StreamdetFileNotFoundError):
        TrainConfig.from_json(tmp_path / "missing.json")


@pytest.mark.parametrize("name,freq", [("sdc1_560.json", 560), ("sdc1_1400.json", 1400)])
def test_shipped_configs_are_valid(name: str, freq: int) -> None:
    """Each shipped config describes the network of the model bundled for its band."""
    from streamdet.engine.contract import load_model
    from streamdet.models import default_model

    config = TrainConfig.from_json(CONFIGS / name)
    assert config.freq == freq
    assert config.cutout == 256
    bundled = load_model(default_model(freq_hz=freq * 1e6,
                                       pixel_scale_arcsec={560: 0.6, 1400: 0.24}[freq]))
    assert config.network().stride == bundled.contract.stride[-1]
    net = bundled.contract.training["network"]
    assert (config.width, config.depth, config.stages) == (net["width"], net["depth"],
                                                           net["stages"])
    # The config reproduces the limits the bundled network was trained with.
    fields = train_mod._contract_fields(config, [])
    assert fields["normalisation"] == bundled.contract.to_dict()["normalisation"]
    assert fields["params"] == bundled.contract.to_dict()["params"]


def test_band_scaled_limits_follow_the_training_band() -> None:
    """At 1.4 GHz the clip floor and the smallest decodable flux and sizes scale with the
    band's noise and beam; ``band_scaled=False`` keeps YOLO-CIANNA's 560 MHz limits."""
    from streamdet.sim._population import band

    c560 = train_mod._contract_fields(TrainConfig(freq=560), [])
    c1400 = train_mod._contract_fields(TrainConfig(freq=1400), [])
    fixed = train_mod._contract_fields(TrainConfig(freq=1400, band_scaled=False), [])
    assert fixed["normalisation"] == c560["normalisation"]
    assert fixed["params"] == c560["params"]
    r_noise = band(1400).noise / band(560).noise
    r_beam = band(1400).beam_fwhm_arcsec / band(560).beam_fwhm_arcsec
    n560, n1400 = c560["normalisation"], c1400["normalisation"]
    assert n1400["clip_min"] == pytest.approx(n560["clip_min"] * r_noise, rel=1e-12)
    assert n1400["clip_max"] == pytest.approx(n560["clip_max"] * r_noise, rel=1e-12)
    # the floor sits at the same multiple of each band's noise (about 1 sigma)
    assert n1400["clip_min"] / band(1400).noise == pytest.approx(
        n560["clip_min"] / band(560).noise)
    lim560 = {p["name"]: p for p in c560["params"]}
    lim1400 = {p["name"]: p for p in c1400["params"]}
    assert lim1400["flux"]["min"] == pytest.approx(lim560["flux"]["min"] * r_noise)
    assert lim1400["flux"]["min"] < band(1400).flux_min  # the faintest catalogued source fits
    for name in ("bmaj", "bmin"):
        assert lim1400[name]["min"] == pytest.approx(lim560[name]["min"] * r_beam)
        assert lim1400[name]["max"] == lim560[name]["max"]
    assert lim1400["pa"] == lim560["pa"]


def test_cli_image_truth_pairs(tmp_path: Path) -> None:
    args = _parser().parse_args(["train", "--workdir", str(tmp_path / "w"), "--image", "a.fits"])
    with pytest.raises(StreamdetValueError, match="pairs"):
        args.func(args)


def test_read_truth_training_set_format(tmp_path: Path) -> None:
    import gzip

    from export._data import read_truth

    lines = ["COLUMN1:    ID    [none]    Source ID",
             "COLUMN13:    SELECTION    [none]",
             "0,1 to record that the source has not/has been injected",
             "  ID  RA (core)  DEC (core)  RA (centroid) DEC (centroid) FLUX Core frac BMAJ BMIN "
             "PA SIZE CLASS SELECTION x y",
             "7 -0.5 -29.8 -0.5001 -29.8001 3.4e-05 0.0 5.6 5.5 328.5 1 1 1 19704.5 17712.9",
             "8 -0.4 -29.7 -0.4 -29.7 1.6e-05 0.0 0.8 0.2 346.6 2 3 0 18020.3 18182.1",
             "9 -0.3 -29.6 -0.3 -29.6 2.6e-05 0.0 1.8 0.9 46.6 3 3 1 18000.3 18100.1"]
    path = tmp_path / "ts.txt.gz"
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        fh.write("\n".join(lines) + "\n")
    t = read_truth(path)
    assert t["id"].tolist() == [7, 9]  # the SELECTION 0 source is not in the map
    assert t["size"].tolist() == [1, 3] and t["ra_cent"][0] == pytest.approx(-0.5001)
    # an SDC1 submission-format file reads as it is
    sub = tmp_path / "sub.txt"
    sub.write_text("id ra_core dec_core ra_cent dec_cent flux core_frac b_maj b_min pa size "
                   "class\n1 0.1 -30 0.1 -30 1e-5 0 1 1 0 2 3\n", encoding="utf-8")
    assert read_truth(sub)["id"].tolist() == [1]
    shared = Path("/work/shared/data/sdc1/TrainingSet_B1_v2_ML.txt.gz")
    if shared.is_file():
        assert len(read_truth(shared)) == 19222  # every row of B1 was injected
