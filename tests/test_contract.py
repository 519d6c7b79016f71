"""The model contract: parsing, validation, refusals, the Model wrapper, normalisation."""

from __future__ import annotations

import copy
import json
import math
import pickle
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from streamdet.engine.contract import (
    CONTRACT_KEY,
    FORMAT_KEY,
    Model,
    ModelContract,
    Normalisation,
    load_model,
    normalise,
)
from streamdet.errors import InvalidModelError, StreamdetFileNotFoundError, StreamdetValueError


def sdc1_doc() -> dict[str, Any]:
    """A complete, valid contract document, written out by hand from the spec."""
    return {
        "format_version": 1,
        "name": "sdc1-test",
        "description": "hand-written",
        "ndim": 2,
        "input": {"name": "image", "layout": "NCHW"},
        "output": {"name": "grid", "layout": "NKHW"},
        "stride": [16, 16],
        "receptive_field": [185, 185],
        "priors": [[6, 6]] * 6 + [[12, 9], [9, 12], [24, 24]],
        "box_channels": ["x", "y", "w", "h", "prob", "obj", "flux", "bmaj", "bmin",
                         "pa_cos", "pa_sin"],
        "box_encoding": {"xy": "cell_offset", "wh": "prior_exp"},
        "params": [
            {"name": "flux", "unit": "Jy", "decode": "log_minmax", "channels": ["flux"],
             "min": 1.97e-6, "max": 2e-3},
            {"name": "bmaj", "unit": "arcsec", "decode": "log_minmax", "channels": ["bmaj"],
             "min": 0.9, "max": 60},
            {"name": "bmin", "unit": "arcsec", "decode": "log_minmax", "channels": ["bmin"],
             "min": 0.3, "max": 30},
            {"name": "pa", "unit": "deg", "decode": "angle_cos_sin01",
             "channels": ["pa_cos", "pa_sin"], "period": 180},
        ],
        "normalisation": {"kind": "clip_tanh", "clip_min": 4e-7, "clip_max": 4e-5,
                          "tanh_scale": 3.0},
        "tile": [512, 512],
        "overlap": [32, 32],
        "pixel_scale_arcsec": 0.6,
        "beam_arcsec": [1.5, 1.5],
        "freq_mhz": 560,
        "nms": {"kind": "diou", "iou_threshold": 0.5},
        "thresholds": {"default": 0.3, "best": [0.2] * 6 + [0.3, 0.3, 0.4], "purity": 0.8},
        "training": {"command": "train --epochs 10"},
    }


def meta(doc: Any) -> dict[str, str]:
    return {CONTRACT_KEY: json.dumps(doc), FORMAT_KEY: "1"}


# --------------------------------------------------------------------------- parsing
def test_fields_and_round_trip() -> None:
    c = ModelContract.from_metadata(meta(sdc1_doc()))
    assert c.ndim == 2 and c.stride == (16, 16) and c.receptive_field == (185, 185)
    assert c.nbox == 9 and c.n_channels == 99
    assert c.priors[6] == (12.0, 9.0)
    assert c.priors_array.shape == (9, 2)
    assert c.param_names == ("flux", "bmaj", "bmin", "pa")
    assert c.param_channels == ("flux", "bmaj", "bmin", "pa_cos", "pa_sin")
    assert c.params[3].period == 180.0 and c.params[0].min == 1.97e-6
    assert c.normalisation == Normalisation("clip_tanh", 4e-7, 4e-5, 3.0)
    assert c.channel_index("obj") == 5
    assert c.output_channel(2, "obj") == 2 * 11 + 5
    assert c.beam_arcsec == (1.5, 1.5) and c.freq_mhz == 560.0
    assert c.thresholds["best"] == (0.2,) * 6 + (0.3, 0.3, 0.4)
    np.testing.assert_array_equal(c.threshold_values("purity"), np.full(9, 0.8))
    np.testing.assert_array_equal(c.threshold_values("best")[-1], 0.4)
    # Round trip through metadata, and the document itself survives.
    m = c.to_metadata()
    assert m[FORMAT_KEY] == "1"
    c2 = ModelContract.from_metadata(m)
    assert c2 == c
    assert c2.training == {"command": "train --epochs 10"}
    assert ModelContract.from_dict(json.loads(m[CONTRACT_KEY])).to_dict() == c.to_dict()
    # Contracts are hashable and picklable (they travel to Dask workers).
    assert hash(c) == hash(c2)
    assert pickle.loads(pickle.dumps(c)) == c


def test_optional_fields_default() -> None:
    doc = sdc1_doc()
    for key in ("name", "description", "pixel_scale_arcsec", "beam_arcsec", "freq_mhz", "nms",
                "thresholds", "training"):
        del doc[key]
    c = ModelContract.from_dict(doc)
    assert c.name == "unnamed" and c.pixel_scale_arcsec is None and c.beam_arcsec is None
    assert c.nms == {"kind": "diou", "iou_threshold": 0.5}
    np.testing.assert_array_equal(c.threshold_values(), np.full(9, 0.5))


@pytest.mark.parametrize(("rf", "stride", "axis_ndim"), [
    ((185, 185), (16, 16), 2), ((125, 33), (16, 16), 2), ((32, 1), (16, 16), 2),
    ((64, 64), (16, 8), 2), ((17, 93, 9), (8, 16, 4), 3)])
def test_halo(rf: tuple[int, ...], stride: tuple[int, ...], axis_ndim: int) -> None:
    doc = sdc1_doc()
    doc["ndim"] = axis_ndim
    if axis_ndim == 3:
        doc["input"]["layout"], doc["output"]["layout"] = "NCDHW", "NKDHW"
        doc["priors"] = [[4, 4, 8]]
        doc["box_channels"] = ["x", "y", "z", "w", "h", "d", "obj", "flux", "bmaj", "bmin",
                               "pa_cos", "pa_sin"]
        doc["thresholds"] = {"default": 0.5}
    doc["stride"], doc["receptive_field"] = list(stride), list(rf)
    doc["tile"] = [s * 8 for s in stride]
    doc["overlap"] = [0] * axis_ndim
    c = ModelContract.from_dict(doc)
    for r, s, h in zip(rf, stride, c.halo, strict=True):
        expected = 0
        while expected < r / 2:  # smallest multiple of the stride covering half the field
            expected += s
        assert h == expected


# --------------------------------------------------------------------------- refusals
REQUIRED = ["format_version", "ndim", "input", "output", "stride", "receptive_field", "priors",
            "box_channels", "box_encoding", "params", "normalisation", "tile", "overlap"]


def test_refuses_no_contract() -> None:
    with pytest.raises(InvalidModelError, match="no streamdet contract"):
        ModelContract.from_metadata({"author": "someone"})


def test_refuses_bad_json() -> None:
    with pytest.raises(InvalidModelError, match="not valid JSON"):
        ModelContract.from_metadata({CONTRACT_KEY: '{"ndim": 2,', FORMAT_KEY: "1"})


def test_refuses_other_format_version() -> None:
    with pytest.raises(InvalidModelError, match="format_version"):
        ModelContract.from_metadata({CONTRACT_KEY: json.dumps(sdc1_doc()), FORMAT_KEY: "2"})
    doc = sdc1_doc()
    doc["format_version"] = 2
    with pytest.raises(InvalidModelError, match="format_version 2"):
        ModelContract.from_metadata(meta(doc))


@pytest.mark.parametrize("field", REQUIRED)
def test_refuses_missing_field(field: str) -> None:
    doc = sdc1_doc()
    del doc[field]
    with pytest.raises(InvalidModelError, match=f"missing required field '{field}'"):
        ModelContract.from_metadata(meta(doc))


def _mutate(path: str, value: Any) -> dict[str, Any]:
    doc = sdc1_doc()
    target: Any = doc
    keys: list[Any] = [int(k) if k.isdigit() else k for k in path.split(".")]
    for k in keys[:-1]:
        target = target[k]
    if value is KeyError:
        del target[keys[-1]]
    else:
        target[keys[-1]] = value
    return doc


@pytest.mark.parametrize(("path", "value", "message"), [
    ("params.0.decode", "sqrt_minmax", "unknown decode kind 'sqrt_minmax'"),
    ("params.3.decode", "angle", "unknown decode kind 'angle'"),
    ("params.0.min", KeyError, "missing required field 'min'"),
    ("params.0.min", -1.0, "min must be > 0"),
    ("params.1.max", 0.5, "max 0.5 must be greater than min"),
    ("params.3.period", 720, "period 720"),
    ("params.3.channels", ["pa_cos"], "must have 2 entries"),
    ("params.0.channels", ["fluxx"], re.escape("reads channel(s) ['fluxx']")),
    ("box_encoding.wh", "prior_linear", "unknown box_encoding.wh 'prior_linear'"),
    ("normalisation.kind", "zscale", "unknown normalisation kind 'zscale'"),
    ("normalisation.clip_max", 1e-7, "clip_max"),
    ("ndim", 4, "ndim 4"),
    ("ndim", "2", "ndim must be an integer"),
    ("stride", [16], "stride must have 2 entries"),
    ("stride", [16, 0], r"stride\[1\] must be >= 1"),
    ("receptive_field", [185, 18.5], "must be an integer"),
    ("priors", [], "priors is empty"),
    ("priors.2", [6, 6, 6], r"priors\[2\] must have 2 entries"),
    ("priors.0", [6, -6], "must be > 0"),
    ("box_channels", ["x", "y", "w", "h", "prob", "flux", "bmaj", "bmin", "pa_cos", "pa_sin"],
     re.escape("lacks required channel(s) ['obj']")),
    ("box_channels.1", "x", "duplicate"),
    ("input.layout", "NHWC", "input.layout 'NHWC'"),
    ("tile", [500, 512], "multiple of the stride"),
    ("overlap", [512, 32], "overlap"),
    ("nms.kind", "soft", "unknown nms.kind 'soft'"),
    ("nms.iou_threshold", 1.5, "iou_threshold"),
    ("measure", {"bmin_resolved": -0.1}, "bmin_resolved"),
    ("measure", {"bmin_resolved": "half"}, "bmin_resolved"),
    ("measure", {"bmaj_resolved": float("nan")}, "bmaj_resolved"),
    ("measure", {"fit_snr": -1.0}, "fit_snr"),
    ("measure", {"fit_snr": "bright"}, "fit_snr"),
    ("measure", [0.5], "measure must be"),
    ("thresholds.best", [0.2, 0.3], "one per prior"),
    ("thresholds.purity", 1.5, r"\[0, 1\]"),
    ("thresholds.default", KeyError, "'default' preset"),
    ("beam_arcsec", [1.5], "beam_arcsec must have 2 entries"),
    ("name", 3, "name must be a string"),
])
def test_refuses_bad_field(path: str, value: Any, message: str) -> None:
    with pytest.raises(InvalidModelError, match=message):
        ModelContract.from_metadata(meta(_mutate(path, value)), source="model 'x.onnx'")


def test_measurement_settings_default_and_round_trip() -> None:
    doc = sdc1_doc()
    doc.pop("measure", None)
    c = ModelContract.from_dict(doc)            # a contract written before the field
    assert c.measure == {"bmin_resolved": 0.5, "bmaj_resolved": 0.0, "fit_snr": 0.0,
                         "background": False, "flux_scale": 1.0}
    doc["measure"] = {"bmin_resolved": 0.0}     # one written before bmaj_resolved
    d = ModelContract.from_dict(doc)
    assert d.measure == {"bmin_resolved": 0.0, "bmaj_resolved": 0.0, "fit_snr": 0.0,
                         "background": False, "flux_scale": 1.0}
    for fit_snr, background, scale in ((20.0, True, 0.9), (None, False, 1.0)):  # None: forced
        doc["measure"] = {"bmin_resolved": 1.0, "bmaj_resolved": 0.5, "fit_snr": fit_snr,
                          "background": background, "flux_scale": scale}
        e = ModelContract.from_dict(doc)
        assert ModelContract.from_dict(e.to_dict()).measure == {
            "bmin_resolved": 1.0, "bmaj_resolved": 0.5, "fit_snr": fit_snr,
            "background": background, "flux_scale": scale}
    doc["measure"] = {"background": 1}
    with pytest.raises(InvalidModelError, match=r"measure\.background 1 must be true or false"):
        ModelContract.from_dict(doc)
    for bad in (0.0, -1.0, float("inf"), "x"):
        doc["measure"] = {"flux_scale": bad}
        with pytest.raises(InvalidModelError, match=r"measure\.flux_scale"):
            ModelContract.from_dict(doc)


def test_refuses_non_object() -> None:
    with pytest.raises(InvalidModelError, match="JSON object"):
        ModelContract.from_metadata({CONTRACT_KEY: "[1, 2]"})


def test_direct_construction_is_validated() -> None:
    c = ModelContract.from_dict(sdc1_doc())
    with pytest.raises(InvalidModelError, match="lacks required"):
        ModelContract(ndim=2, stride=(16, 16), receptive_field=(9, 9), priors=((6.0, 6.0),),
                      box_channels=("x", "y", "w", "h"), params=(),
                      normalisation=c.normalisation, tile=(64, 64), overlap=(0, 0))
    # Lists are accepted and stored as tuples, so the contract stays hashable.
    lists: dict[str, Any] = {
        "stride": [16, 16], "receptive_field": [9, 9], "priors": [[6, 6], [9, 12]],
        "box_channels": ["x", "y", "w", "h", "obj"], "params": [], "tile": [64, 64],
        "overlap": [0, 0], "thresholds": {"default": [0.5, 0.25]}}
    d = ModelContract(ndim=2, normalisation=c.normalisation, **lists)
    assert d.priors == ((6.0, 6.0), (9.0, 12.0)) and d.thresholds["default"] == (0.5, 0.25)
    assert ModelContract.from_dict(d.to_dict()) == d
    hash(d)


def test_channel_index_unknown() -> None:
    c = ModelContract.from_dict(sdc1_doc())
    with pytest.raises(StreamdetValueError, match="no box channel 'z'"):
        c.channel_index("z")
    with pytest.raises(StreamdetValueError, match="preset 'fast'"):
        c.threshold_values("fast")


# --------------------------------------------------------------------------- normalisation
def _normalise_ref(x: float, lo: float, hi: float, scale: float) -> float:
    if math.isnan(x):
        return 0.0
    v = min(max(x, lo), hi)
    return math.tanh(scale * (v - lo) / (hi - lo))


def test_normalise_clip_tanh_matches_reference() -> None:
    rng = np.random.default_rng(3)
    data = rng.normal(1e-5, 2e-5, (17, 23))
    data[0, :5] = [np.nan, -np.inf, np.inf, 0.0, 1.0]
    data = data.astype(">f4")  # big-endian, as FITS stores it
    c = ModelContract.from_dict(sdc1_doc())
    out = normalise(data, c)
    assert out.dtype == np.float32 and out.shape == data.shape
    ref = np.array([[_normalise_ref(float(v), 4e-7, 4e-5, 3.0) for v in row] for row in data])
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-6)
    assert out[0, 0] == 0.0 and out[0, 1] == 0.0 and out[0, 3] == 0.0
    assert out[0, 2] == pytest.approx(math.tanh(3.0), rel=1e-6)
    assert np.isnan(data[0, 0])  # the input is not modified


def test_normalise_none() -> None:
    doc = sdc1_doc()
    doc["normalisation"] = {"kind": "none"}
    c = ModelContract.from_dict(doc)
    data = np.array([[1.5, np.nan], [-np.inf, -2.0]])
    np.testing.assert_array_equal(normalise(data, c), [[1.5, 0.0], [0.0, -2.0]])


# --------------------------------------------------------------------------- ONNX files
onnx = pytest.importorskip("onnx")


@pytest.fixture(scope="module")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("torch")
    from tests._models import make_test_model

    return make_test_model(tmp_path_factory.mktemp("contract") / "tiny.onnx")


def _with_metadata(src: Path, dst: Path, update: dict[str, str] | None = None,
                   drop: tuple[str, ...] = ()) -> Path:
    proto = onnx.load(str(src))
    props = {p.key: p.value for p in proto.metadata_props}
    for key in drop:
        props.pop(key, None)
    props.update(update or {})
    del proto.metadata_props[:]
    onnx.helper.set_model_props(proto, props)
    onnx.save(proto, str(dst))
    return dst


def _contract_doc(path: Path) -> dict[str, Any]:
    proto = onnx.load(str(path))
    doc: dict[str, Any] = json.loads(
        next(p.value for p in proto.metadata_props if p.key == CONTRACT_KEY))
    return doc


def test_load_model(model_path: Path) -> None:
    m = load_model(model_path, ndim=2, threads=1)
    assert isinstance(m, Model) and m.path == model_path
    assert m.contract.name == "streamdet-test" and m.contract.n_channels == 99
    x = np.random.default_rng(0).random((3, 1, 64, 96)).astype(np.float32)
    out = m.run(x)
    assert out.shape == (3, 99, 4, 6) and out.dtype == np.float32
    # Tiles of a batch are independent of each other.
    np.testing.assert_allclose(m.run(x[1:2]), out[1:2], rtol=1e-5, atol=1e-6)
    with pytest.raises(StreamdetValueError, match="multiples of the model stride"):
        m.run(x[:, :, :40])
    with pytest.raises(StreamdetValueError, match="shape"):
        m.run(x[:, 0])


def test_model_pickles_by_path(model_path: Path) -> None:
    dask = pytest.importorskip("dask")
    m = load_model(model_path, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(1).random((1, 1, 48, 48)).astype(np.float32)
    ref = m.run(x)
    blob = pickle.dumps(m)
    assert len(blob) < 10_000  # the session and the weights are not pickled
    m2 = pickle.loads(blob)
    assert m2._session is None and m2.contract == m.contract
    np.testing.assert_array_equal(m2.run(x), ref)
    assert m2.session is m2.session  # created once, then cached
    assert dask.base.tokenize(m) == dask.base.tokenize(copy.copy(m2))


def test_refuses_missing_file(tmp_path: Path) -> None:
    with pytest.raises(StreamdetFileNotFoundError, match="does not exist"):
        load_model(tmp_path / "nope.onnx")


def test_refuses_non_onnx(tmp_path: Path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_text("this is not a protobuf")
    with pytest.raises(InvalidModelError, match="not a valid ONNX model"):
        load_model(bad)


def test_engine_refuses_model_without_contract(model_path: Path, tmp_path: Path) -> None:
    bare = _with_metadata(model_path, tmp_path / "bare.onnx", drop=(CONTRACT_KEY, FORMAT_KEY))
    with pytest.raises(InvalidModelError, match="carries no streamdet contract"):
        load_model(bare)


def test_detect_refuses_model_without_contract(model_path: Path, tmp_path: Path) -> None:
    detect = pytest.importorskip("streamdet.engine.detect")
    bare = _with_metadata(model_path, tmp_path / "bare.onnx", drop=(CONTRACT_KEY, FORMAT_KEY))
    with pytest.raises(InvalidModelError, match="carries no streamdet contract"):
        detect.detect_pixels(np.zeros((64, 64), np.float32), model=bare)


def test_refuses_bad_json_in_file(model_path: Path, tmp_path: Path) -> None:
    bad = _with_metadata(model_path, tmp_path / "badjson.onnx", {CONTRACT_KEY: "{oops"})
    with pytest.raises(InvalidModelError, match="not valid JSON"):
        load_model(bad)


def test_refuses_unknown_decode_in_file(model_path: Path, tmp_path: Path) -> None:
    doc = _contract_doc(model_path)
    doc["params"][0]["decode"] = "cubic"
    bad = _with_metadata(model_path, tmp_path / "decode.onnx", {CONTRACT_KEY: json.dumps(doc)})
    with pytest.raises(InvalidModelError, match="unknown decode kind 'cubic'"):
        load_model(bad)


def test_refuses_missing_field_in_file(model_path: Path, tmp_path: Path) -> None:
    doc = _contract_doc(model_path)
    del doc["priors"]
    bad = _with_metadata(model_path, tmp_path / "missing.onnx", {CONTRACT_KEY: json.dumps(doc)})
    with pytest.raises(InvalidModelError, match="missing required field 'priors'"):
        load_model(bad)


@pytest.mark.parametrize("change", ["fewer_priors", "more_channels"])
def test_refuses_channels_inconsistent_with_output(model_path: Path, tmp_path: Path,
                                                   change: str) -> None:
    doc = _contract_doc(model_path)
    if change == "fewer_priors":
        doc["priors"] = doc["priors"][:8]
        doc["thresholds"] = {"default": 0.5}
    else:
        doc["box_channels"] = [*doc["box_channels"], "z"]
    bad = _with_metadata(model_path, tmp_path / "k.onnx", {CONTRACT_KEY: json.dumps(doc)})
    with pytest.raises(InvalidModelError, match="99 channels"):
        load_model(bad)


def test_refuses_wrong_ndim(model_path: Path, tmp_path: Path) -> None:
    with pytest.raises(InvalidModelError, match="2D detector but a 3D one is needed"):
        load_model(model_path, ndim=3)
    doc = _contract_doc(model_path)
    doc.update(ndim=3, stride=[16, 16, 16], receptive_field=[125] * 3, tile=[256] * 3,
               overlap=[0] * 3, priors=[[6, 6, 6]] * 9,
               box_channels=[*doc["box_channels"][:2], "z", *doc["box_channels"][2:4], "d",
                             *doc["box_channels"][4:]],
               input={"name": "image", "layout": "NCDHW"},
               output={"name": "grid", "layout": "NKDHW"})
    bad = _with_metadata(model_path, tmp_path / "3d.onnx", {CONTRACT_KEY: json.dumps(doc)})
    with pytest.raises(InvalidModelError, match="ranks 4/4 do not match the contract's ndim 3"):
        load_model(bad)


def test_refuses_wrong_input_name(model_path: Path, tmp_path: Path) -> None:
    doc = _contract_doc(model_path)
    doc["input"]["name"] = "pixels"
    bad = _with_metadata(model_path, tmp_path / "name.onnx", {CONTRACT_KEY: json.dumps(doc)})
    with pytest.raises(InvalidModelError, match="input 'pixels'"):
        load_model(bad)
