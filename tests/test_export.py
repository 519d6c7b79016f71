"""PyTorch detector -> ONNX export: receptive field, verification, chunking invariance, CLI."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")

from export import onnx_export  # noqa: E402
from export._cli import add_export_parser  # noqa: E402
from export.model import DetectorConfig, YoloCianna, receptive_field  # noqa: E402
from export.onnx_export import (  # noqa: E402
    ExportVerificationError,
    build_contract,
    export_onnx,
    load_checkpoint,
    save_checkpoint,
)
from streamdet.engine.contract import CONTRACT_KEY, FORMAT_KEY, ModelContract, load_model  # noqa: E402
from streamdet.errors import (  # noqa: E402
    OutputExistsError,
    StreamdetError,
    StreamdetFileNotFoundError,
    StreamdetValueError,
)
from tests._models import build_test_network, make_test_model  # noqa: E402

SMALL: dict[str, Any] = {"width": 8, "depth": 1}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_test_model(tmp_path_factory.mktemp("export") / "tiny.onnx")


@pytest.fixture(scope="module")
def default_net() -> YoloCianna:
    """The default-size network, seeded, with random batch-norm statistics."""
    net = build_test_network(width=16, depth=2, seed=5)
    assert net.config == DetectorConfig(norm="batch")  # the defaults
    return net


@pytest.fixture(scope="module")
def default_onnx(default_net: YoloCianna, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("export") / "default.onnx"
    export_onnx(default_net, path)
    return path


# --------------------------------------------------------------------------- receptive field
def test_receptive_field_formula() -> None:
    # Two 3x3 convs: 5 px; a stride-2 3x3 then a 3x3: 3 + 2*2 = 7 px, starting 1 + 2 before;
    # a stride-2 5x5 then a 3x3 (at jump 2): 5 + 2*2 = 9 px.
    assert receptive_field([(3, 1, 1), (3, 1, 1)]) == (5, -2)
    assert receptive_field([(3, 2, 1), (3, 1, 1)]) == (7, -3)
    assert receptive_field([(5, 2, 2), (3, 2, 1), (1, 1, 0)]) == (9, -4)


@pytest.mark.parametrize("config", [SMALL, {}, {"width": 4, "depth": 0, "kernel": 5}])
def test_receptive_field_matches_gradient(config: dict[str, Any]) -> None:
    """Output cell g depends on exactly the input pixels [g*S + start, g*S + start + R)."""
    torch.manual_seed(0)
    net = YoloCianna(DetectorConfig(**config)).eval()
    r, start, s = net.receptive_field, net.receptive_start, net.config.stride
    size = 2 * s * (-(-(r + s) // s)) + 2 * s  # room on both sides of the window
    x = torch.rand(1, 1, size, size, dtype=torch.float64, requires_grad=True)
    net = net.double()
    g = size // s // 2
    out = net(x)
    out[0, :, g, g].sum().backward()
    assert x.grad is not None
    support = x.grad[0, 0].abs() > 0
    rows = torch.nonzero(support.any(dim=1)).flatten()
    cols = torch.nonzero(support.any(dim=0)).flatten()
    assert int(rows[0]) == g * s + start and int(rows[-1]) == g * s + start + r - 1
    assert int(cols[0]) == g * s + start and int(cols[-1]) == g * s + start + r - 1
    # The halo the engine derives from R covers the window on both sides of a cell.
    c = build_contract(net)
    halo = c.halo[0]
    assert halo >= -start and halo >= start + r - s


def test_default_network_geometry(default_net: YoloCianna) -> None:
    c = build_contract(default_net)
    assert c.stride == (16, 16)
    assert c.receptive_field == (185, 185) and c.halo == (96, 96)
    assert default_net.receptive_start == -92
    assert c.nbox == 9 and c.n_channels == 99
    assert c.priors == ((6.0, 6.0),) * 6 + ((12.0, 9.0), (9.0, 12.0), (24.0, 24.0))
    # a new export measures by forced photometry, the free fit from a 20-sigma peak
    assert c.measure["fit_snr"] == 20.0


# --------------------------------------------------------------------------- export
def test_export_writes_contract_and_matches_torch(default_net: YoloCianna,
                                                  default_onnx: Path) -> None:
    proto = onnx.load(str(default_onnx))
    onnx.checker.check_model(proto, full_check=True)
    props = {p.key: p.value for p in proto.metadata_props}
    assert props[FORMAT_KEY] == "1"
    doc = json.loads(props[CONTRACT_KEY])
    assert doc["receptive_field"] == [185, 185] and doc["ndim"] == 2
    assert {n.op_type for n in proto.graph.node} <= {
        "Conv", "LeakyRelu", "Sigmoid", "Div", "Tanh", "Mul", "Where"}  # batch norm folded
    dims = [d.dim_param or d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["N", 1, "H", "W"]
    # An input size and batch the export did not verify on.
    model = load_model(default_onnx, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(7).random((3, 1, 64, 320)).astype(np.float32)
    with torch.no_grad():
        ref = default_net(torch.from_numpy(x)).numpy()
    got = model.run(x)
    assert got.shape == (3, 99, 4, 20)
    np.testing.assert_allclose(got, ref, rtol=1e-3, atol=1e-5)
    # Activations follow the contract: sizes bounded, everything else in [0, 1].
    c = model.contract
    size = np.zeros(99, bool)
    size[[c.output_channel(b, ch) for b in range(9) for ch in ("w", "h")]] = True
    assert np.all(np.abs(got[:, size]) <= default_net.config.wh_bound)
    assert np.all((got[:, ~size] >= 0) & (got[:, ~size] <= 1))


def test_export_refuses_mismatch_and_leaves_nothing(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    net = build_test_network(**SMALL)
    real = onnx_export._ort_forward

    def wrong(path: Path, x: np.ndarray) -> np.ndarray:
        out = real(path, x)
        out[0, 0, 0, 0] += 0.01
        return out

    monkeypatch.setattr(onnx_export, "_ort_forward", wrong)
    out = tmp_path / "m.onnx"
    with pytest.raises(ExportVerificationError, match=r"1 of \d+ values"):
        export_onnx(net, out)
    assert list(tmp_path.iterdir()) == []


def test_export_overrides(tmp_path: Path) -> None:
    net = build_test_network(**SMALL)
    c = export_onnx(net, tmp_path / "a.onnx", contract={
        "name": "mine", "thresholds": {"default": 0.3}, "tile": [256, 256], "freq_mhz": 1400,
        "stride": [16, 16]})  # a derived field set to its own value is accepted
    assert c.name == "mine" and c.freq_mhz == 1400.0 and c.tile == (256, 256)
    assert load_model(tmp_path / "a.onnx").contract == c
    with pytest.raises(StreamdetValueError, match="derived from the network"):
        export_onnx(net, tmp_path / "b.onnx", contract={"receptive_field": [64, 64]})
    with pytest.raises(OutputExistsError):
        export_onnx(net, tmp_path / "a.onnx")
    with pytest.raises(StreamdetValueError, match="opset"):
        export_onnx(net, tmp_path / "c.onnx", opset=9)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.onnx"]


def test_unbounded_sizes_and_no_batchnorm(tmp_path: Path) -> None:
    net = build_test_network(**SMALL, norm="none", wh_bound=0.0)
    export_onnx(net, tmp_path / "plain.onnx", opset=13)
    x = np.random.default_rng(2).random((1, 1, 96, 64)).astype(np.float32)
    with torch.no_grad():
        ref = net(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(load_model(tmp_path / "plain.onnx").run(x), ref, rtol=1e-3,
                               atol=1e-5)


def test_band_scaled_fields() -> None:
    """The SDC1 noise and beam give YOLO-CIANNA's limits exactly; bad values are refused."""
    exact = onnx_export.band_scaled_fields(onnx_export.SDC1_NOISE, onnx_export.SDC1_BEAM)
    assert exact["normalisation"] == onnx_export.SDC1_NORMALISATION
    assert exact["params"] == [dict(p) for p in onnx_export.SDC1_PARAMS]
    half = onnx_export.band_scaled_fields(onnx_export.SDC1_NOISE / 2, onnx_export.SDC1_BEAM * 4)
    assert half["normalisation"]["clip_min"] == pytest.approx(2e-7)
    assert half["normalisation"]["tanh_scale"] == 3.0
    sizes = {p["name"]: p for p in half["params"]}
    assert sizes["flux"]["min"] == pytest.approx(1.97e-6 / 2)
    # a floor never climbs above half the ceiling (a 4x beam would put 0.3 x 4 = 1.2 arcsec)
    assert sizes["bmaj"]["min"] == pytest.approx(3.6)
    huge = onnx_export.band_scaled_fields(onnx_export.SDC1_NOISE, 1e3)
    assert {p["name"]: p for p in huge["params"]}["bmin"]["min"] == 15.0
    floors = onnx_export.band_scaled_fields(3.8e-7, 0.6, size_floor_beams=(0.1, 0.03))
    limits = {p["name"]: p.get("min") for p in floors["params"]}
    assert limits["bmaj"] == pytest.approx(0.06) and limits["bmin"] == pytest.approx(0.018)
    with pytest.raises(StreamdetValueError, match="size_floor_beams"):
        onnx_export.band_scaled_fields(3.8e-7, 0.6, size_floor_beams=(0.1, 0.2))
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(StreamdetValueError, match="noise"):
            onnx_export.band_scaled_fields(bad, 1.5)
        with pytest.raises(StreamdetValueError, match="beam_arcsec"):
            onnx_export.band_scaled_fields(3.8e-7, bad)


def test_test_model_objectness_fraction(tiny: Path) -> None:
    from tests._models import calibration_image

    m = load_model(tiny)
    grid = m.run(calibration_image()[None, None])
    obj = grid[0, m.contract.channel_index("obj")::len(m.contract.box_channels)]
    frac = float(np.mean(obj >= 0.5))
    assert 0.05 < frac < 0.2


# --------------------------------------------------------------------------- chunking
def _regions(n_cells: int) -> list[tuple[int, int, int, int]]:
    """Cell regions (gy0, gy1, gx0, gx1): interior, corners, edges, single cells."""
    last = n_cells
    return [(6, 10, 5, 11), (0, 3, 0, 2), (last - 3, last, last - 4, last), (7, 8, 0, 1),
            (0, 1, 7, 9), (last - 1, last, 3, 4), (9, 10, last - 1, last), (0, last, 4, 6),
            (3, 4, 3, 4), (0, last, 0, last)]


def _crop_matches(model_path: Path, *, tol: float = 1e-4, halo_shrink: int = 0
                  ) -> list[float]:
    """Max |crop - full| over each region's cells, the crop being region + halo."""
    m = load_model(model_path, providers=["CPUExecutionProvider"])
    c = m.contract
    s = c.stride[0]
    halo = c.halo[0] - halo_shrink
    size = 256
    rng = np.random.default_rng(4)
    img = (rng.random((size, size)) ** 6).astype(np.float32)
    full = m.run(img[None, None])[0]
    errors = []
    for gy0, gy1, gx0, gx1 in _regions(size // s):
        y0, y1 = max(0, gy0 * s - halo), min(size, gy1 * s + halo)
        x0, x1 = max(0, gx0 * s - halo), min(size, gx1 * s + halo)
        out = m.run(img[None, None, y0:y1, x0:x1])[0]
        part = out[:, gy0 - y0 // s:gy1 - y0 // s, gx0 - x0 // s:gx1 - x0 // s]
        errors.append(float(np.abs(part - full[:, gy0:gy1, gx0:gx1]).max()))
    return errors


@pytest.mark.parametrize("which", ["tiny", "default_onnx"])
def test_crop_with_halo_equals_whole_image(which: str, request: pytest.FixtureRequest) -> None:
    """The property chunked inference relies on, including at the image borders."""
    path = request.getfixturevalue(which)
    errors = _crop_matches(path)
    assert max(errors) < 1e-4, errors


def test_crop_with_too_small_halo_differs(tiny: Path) -> None:
    """Control: one stride less halo than the contract's changes interior cells."""
    errors = _crop_matches(tiny, halo_shrink=16)
    assert errors[0] > 1e-4  # the interior region's crop no longer holds its field
    assert errors[-1] < 1e-4  # the whole image is its own crop


# --------------------------------------------------------------------------- checkpoints + CLI
def test_checkpoint_round_trip(tmp_path: Path) -> None:
    net = build_test_network(**SMALL, seed=3)
    ckpt = save_checkpoint(net, tmp_path / "net.pt", contract={"name": "from-ckpt",
                                                               "freq_mhz": 560})
    loaded = load_checkpoint(ckpt)
    assert loaded.model.config == net.config and loaded.contract["name"] == "from-ckpt"
    assert not loaded.model.training
    x = torch.rand(1, 1, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(x), net(x), rtol=0, atol=0)
    c = export_onnx(ckpt, tmp_path / "net.onnx", contract={"description": "d"})
    assert c.name == "from-ckpt" and c.description == "d" and c.freq_mhz == 560.0
    with pytest.raises(OutputExistsError):
        save_checkpoint(net, ckpt)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(StreamdetValueError, match="not a readable checkpoint"):
        load_checkpoint(tmp_path / "junk.pt")
    torch.save({"weights": 1}, tmp_path / "other.pt")
    with pytest.raises(StreamdetValueError, match="not a streamdet checkpoint"):
        load_checkpoint(tmp_path / "other.pt")


def _cli() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="streamdet")
    add_export_parser(parser.add_subparsers(dest="command", required=True))
    return parser


def test_cli_export(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ckpt = save_checkpoint(build_test_network(**SMALL), tmp_path / "net.pt")
    out = tmp_path / "net.onnx"
    args = _cli().parse_args(["export", str(ckpt), "-o", str(out), "--opset", "17"])
    assert args.func(args) == 0
    assert "receptive field 125 px, halo 64 px" in capsys.readouterr().out
    assert isinstance(load_model(out).contract, ModelContract)
    args = _cli().parse_args(["export", str(ckpt), "-o", str(out), "-q"])
    with pytest.raises(OutputExistsError):
        args.func(args)
    args = _cli().parse_args(["export", str(ckpt), "-o", str(out), "-q", "--overwrite"])
    assert args.func(args) == 0 and capsys.readouterr().out == ""
    args = _cli().parse_args(["export", str(tmp_path / "nope.pt"), "-o", str(out)])
    with pytest.raises(StreamdetFileNotFoundError, match=r"nope\.pt"):
        args.func(args)


def test_cli_export_without_torch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "torch" else real(name, *a))
    args = _cli().parse_args(["export", "x.pt", "-o", str(tmp_path / "x.onnx")])
    with pytest.raises(StreamdetError, match=r"pip install streamdet\[train\]"):
        args.func(args)
