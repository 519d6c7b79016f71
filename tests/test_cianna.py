"""CIANNA importer: save files written by CIANNA itself, reproduced by ONNX Runtime.

The reference network and forward outputs in ``/work/shared/data/cianna`` were written
by CIANNA (V-1.0); synthetic networks written here byte by byte (binary format) are
checked against a NumPy transcription of CIANNA's forward pass.
"""

from __future__ import annotations

import argparse
import json
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray

from export._cianna_cli import _PRESET_NAMES, add_cianna_arguments, run_cianna_export
from export._cianna_format import read_cianna
from export.cianna import PRESETS, import_cianna
from streamdet.engine.contract import load_model
from streamdet.engine.decode import decode
from streamdet.errors import (
    InvalidModelError,
    OutputExistsError,
    StreamdetFileNotFoundError,
    StreamdetValueError,
)

DATA = Path("/work/shared/data/cianna")
FORMATS = {"binary": "net_bin.dat", "text": "net_txt.dat"}

pytestmark = pytest.mark.skipif(not (DATA / "net_bin.dat").is_file(),
                                reason="CIANNA reference files not available")


# --------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def cianna_input() -> NDArray[np.float32]:
    """The four 64 x 64 reference images, (4, 1, 64, 64): rows y, columns x."""
    return np.load(DATA / "input.npy").reshape(4, 1, 64, 64).astype(np.float32)


@pytest.fixture(scope="module")
def imported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Both reference save files imported with the SDC1 preset."""
    out = tmp_path_factory.mktemp("cianna")
    return {fmt: import_cianna(DATA / name, out / f"{fmt}.onnx", preset="sdc1-cianna2024")
            for fmt, name in FORMATS.items()}


def _raw() -> NDArray[np.float32]:
    return np.fromfile(DATA / "forward_raw.dat", np.float32).reshape(4, 117, 4, 4)


def _decoded() -> NDArray[np.float32]:
    return np.fromfile(DATA / "forward_decoded.dat", np.float32).reshape(4, 9, 13, 4, 4)


# --------------------------------------------------------------------------- reference files
@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_reproduces_cianna_raw_output(imported: dict[str, Path], cianna_input: NDArray[Any],
                                      fmt: str) -> None:
    out = load_model(imported[fmt], providers=["CPUExecutionProvider"]).run(cianna_input)
    raw = _raw()
    assert out.shape == raw.shape
    # Text files print weights with 6 significant digits, hence the looser atol there.
    np.testing.assert_allclose(out, raw, rtol=1e-4, atol=1e-6 if fmt == "binary" else 1e-5)


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_decoding_matches_cianna_decoded_output(imported: dict[str, Path],
                                                cianna_input: NDArray[Any], fmt: str) -> None:
    model = load_model(imported[fmt], providers=["CPUExecutionProvider"])
    dets = decode(model.run(cianna_input), model.contract, threshold=0.0, origins=(0, 0))
    # decode walks (image, box, gy, gx) in C order: put CIANNA's output in that order.
    ref = _decoded().transpose(0, 1, 3, 4, 2).reshape(-1, 13).astype(np.float64)
    assert len(dets.boxes) == ref.shape[0] == 4 * 9 * 16
    np.testing.assert_array_equal(dets.prior, np.tile(np.repeat(np.arange(9), 16), 4))
    # CIANNA's pixel i spans [i, i+1); streamdet centres it on i: boxes differ by 0.5 px.
    cianna_xyxy = ref[:, [0, 1, 3, 4]]
    np.testing.assert_allclose(dets.boxes + 0.5, cianna_xyxy, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(dets.probability, ref[:, 6], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(dets.objectness, ref[:, 7], rtol=1e-4, atol=1e-5)

    # Parameters: CIANNA's decoded forward keeps the activated values; decode them with
    # the SDC1 normalisation written out here (ln min-max clipped to [0, 1]; PA from
    # cos and (sin + 1)/2, reduced modulo 180 deg).
    v = ref[:, 8:13]
    lims = {"flux": (1.97197897e-6, 2e-3), "bmaj": (0.9, 60.0), "bmin": (0.3, 30.0)}
    expected = [np.exp(np.log(lo) + np.clip(v[:, i], 0, 1) * (np.log(hi) - np.log(lo)))
                for i, (lo, hi) in enumerate(lims.values())]
    expected.append(np.mod(np.degrees(np.arctan2(2 * v[:, 4] - 1, v[:, 3])), 180.0))
    assert dets.param_names == ("flux", "bmaj", "bmin", "pa")
    for i, exp in enumerate(expected[:3]):
        np.testing.assert_allclose(dets.params[:, i], exp, rtol=1e-4)
    dpa = np.abs(dets.params[:, 3] - expected[3])
    assert np.all(np.minimum(dpa, 180.0 - dpa) < 1e-3)


def test_text_and_binary_give_the_same_model(imported: dict[str, Path]) -> None:
    models = {fmt: load_model(p, providers=["CPUExecutionProvider"])
              for fmt, p in imported.items()}
    rng = np.random.default_rng(3)
    x = (rng.random((2, 1, 96, 128)) ** 3).astype(np.float32)  # not the saved 64 x 64 size
    out = {fmt: m.run(x) for fmt, m in models.items()}
    assert out["binary"].shape == (2, 117, 6, 8)
    np.testing.assert_allclose(out["text"], out["binary"], rtol=1e-4, atol=1e-5)
    cb, ct = (models[f].contract.to_dict() for f in ("binary", "text"))
    assert cb["training"]["cianna_format"] == "binary"
    assert ct["training"]["cianna_format"] == "text"
    for c in (cb, ct):
        del c["training"]
    assert cb == ct


def test_sdc1_preset_contract(imported: dict[str, Path]) -> None:
    c = load_model(imported["binary"], providers=["CPUExecutionProvider"]).contract
    net = read_cianna(DATA / "net_bin.dat")
    assert c.box_channels == ("x", "y", "z", "w", "h", "d", "prob", "obj",
                              "flux", "bmaj", "bmin", "pa_cos", "pa_sin")
    assert c.priors == tuple((float(w), float(h)) for w, h, _ in net.yolo.priors)
    assert c.stride == (16, 16) and c.tile == (512, 512) and c.overlap == (32, 32)
    assert c.normalisation.kind == "clip_tanh"
    assert (c.normalisation.clip_min, c.normalisation.clip_max) == (4e-7, 4e-5)
    assert c.pixel_scale_arcsec == 0.6 and c.freq_mhz == 560.0 and c.nms["kind"] == "diou"
    assert set(c.thresholds) == {"default", "best", "purity"}
    assert c.threshold_values("purity").shape == (9,)
    assert [p.decode for p in c.params] == ["log_minmax"] * 3 + ["angle_cos_sin01"]
    # Receptive field: the usual recursion over the README's layer list.
    r, jump = 1, 1
    for k, s in [(5, 1), (2, 2), (3, 1), (2, 2), (1, 1), (2, 2), (3, 1), (2, 2), (3, 1),
                 (1, 1), (1, 1)]:
        r, jump = r + (k - 1) * jump, jump * s
    assert c.receptive_field == (r, r)
    assert c.training["cianna_format"] == "binary" and "group_norm" in c.training


# --------------------------------------------------------------------------- synthetic nets
def _activ(text: str) -> bytes:
    return text.encode("ascii").ljust(40, b"\0")


def write_binary(path: Path, in_dims: tuple[int, int, int, int],
                 layers: list[dict[str, Any]]) -> Path:
    """Write a CIANNA V-1.0 binary save file (little-endian int32/float32 records)."""
    blob = struct.pack("<4i", *in_dims)
    for ly in layers:
        if ly["type"] == "C":
            blob += b"C" + struct.pack("<17i", ly["nb"], *ly["f"], *ly["s"], *ly["p"], 0, 0, 0,
                                       *ly["in"])
            blob += struct.pack("<2f", ly["dropout"], ly["bias"]) + _activ(ly["act"])
            if "yolo" in ly:
                ints, priors, slopes = ly["yolo"]
                blob += struct.pack("<5i", *ints)
                blob += np.asarray(priors, "<f4").T.tobytes() + np.asarray(slopes, "<f4").tobytes()
            blob += np.asarray(ly["w"], "<f4").tobytes()
        else:
            blob += b"N" + _activ("GN") + struct.pack("<2i", ly["group"], ly["set_off"])
            blob += _activ(ly["act"]) + np.asarray(ly["gamma"], "<f4").tobytes()
            blob += np.asarray(ly["beta"], "<f4").tobytes()
    path.write_bytes(blob)
    return path


def synthetic_layers(rng: np.random.Generator, *, norm: bool = True, scale: float = 1.0
                     ) -> tuple[tuple[int, int, int, int], list[dict[str, Any]]]:
    """A 48 (x) x 32 (y) network: non-square kernel, saturated ReLU, dropout, GN with a
    set-off group, and a YOLO layer with 2 boxes, 1 class and 2 parameters."""
    w0 = rng.normal(0, 1.5 * scale, (6, 3 * 5 * 1 + 1))
    w1 = rng.normal(0, 0.4 * scale, (8, 2 * 2 * 6 + 1))
    w2 = rng.normal(0, 0.5 * scale, (22, 8 + 1))
    layers: list[dict[str, Any]] = [
        {"type": "C", "nb": 6, "f": (3, 5, 1), "s": (1, 1, 1), "p": (1, 2, 0),
         "in": (48, 32, 1, 1), "dropout": 0.0, "bias": 0.1, "act": "RELU_S2.00_L0.10",
         "w": w0},
        {"type": "C", "nb": 8, "f": (2, 2, 1), "s": (2, 2, 1), "p": (0, 0, 0),
         "in": (48, 32, 1, 6), "dropout": 0.3, "bias": 0.1, "act": "RELU_S800.00_L0.05",
         "w": w1},
    ]
    if norm:
        layers.append({"type": "N", "group": 2, "set_off": 1, "act": "LIN",
                       "gamma": rng.uniform(0.5, 2, 4), "beta": rng.normal(0, 0.3, 4)})
    slopes = [[0.5, 6, -6], [0.5, 1.2, -1.2], [0.2, 6, -6], [0.5, 6, -6], [1, 6, -6],
              [0.5, 1.5, -0.2]]
    layers.append({"type": "C", "nb": 22, "f": (1, 1, 1), "s": (1, 1, 1), "p": (0, 0, 0),
                   "in": (24, 16, 1, 8), "dropout": 0.0, "bias": 0.5, "act": "YOLO",
                   "yolo": ((2, 1, 2, 2, 0), [[4, 6, 0], [8, 5, 0]], slopes), "w": w2})
    return (48, 32, 1, 1), layers


def numpy_forward(x: NDArray[np.float64], layers: list[dict[str, Any]]) -> NDArray[np.float64]:
    """CIANNA's inference forward pass (AVG_MODEL), transcribed from its C sources."""
    for ly in layers:
        if ly["type"] == "C":
            fx, fy, _ = ly["f"]
            px, py, _ = ly["p"]
            sx, sy, _ = ly["s"]
            w = np.asarray(ly["w"], np.float32).astype(np.float64)
            xp = np.pad(x, ((0, 0), (0, 0), (py, py), (px, px)))
            win = np.lib.stride_tricks.sliding_window_view(xp, (fy, fx), axis=(2, 3))
            win = win[:, :, ::sy, ::sx]  # (N, C, Gy, Gx, fy, fx)
            flat = win.transpose(0, 2, 3, 1, 4, 5).reshape(*win.shape[:1], *win.shape[2:4], -1)
            bias = np.float64(np.float32(ly["bias"]))
            x = (flat @ w[:, :-1].T + w[:, -1] * bias).transpose(0, 3, 1, 2)
            if ly["dropout"] > 0.01:
                x = x * (1.0 - np.float64(np.float32(ly["dropout"])))
            x = _numpy_activation(x, ly)
        else:
            n, c, h, wd = x.shape
            g = x.reshape(n, c // ly["group"], -1)
            mean = g.mean(axis=2, keepdims=True)
            var = ((g - mean) ** 2).mean(axis=2, keepdims=True)
            gamma = np.asarray(ly["gamma"], np.float32)[None, :, None]
            beta = np.asarray(ly["beta"], np.float32)[None, :, None]
            out = gamma * (g - mean) / np.sqrt(var + 1e-3) + beta
            n_group = c // ly["group"]
            out[:, n_group - ly["set_off"]:] = g[:, n_group - ly["set_off"]:]
            x = out.reshape(n, c, h, wd)
    return x


def _numpy_activation(x: NDArray[np.float64], ly: dict[str, Any]) -> NDArray[np.float64]:
    act = ly["act"]
    if act.startswith("RELU"):
        sat = float(act.split("_S")[1].split("_")[0])
        leak = float(act.split("_L")[1])
        return np.where(x <= 0, x * leak, np.where(x > sat, sat + (x - sat) * leak, x))
    if act != "YOLO":
        return x
    (_, nb_class, nb_param, fit_dim, _), _, slopes = ly["yolo"]
    sm = np.asarray(slopes, np.float32).astype(np.float64)
    out = x.copy()
    for k in range(x.shape[1]):
        col = k % (8 + nb_class + nb_param)
        v = x[:, k]

        def sig(row: int, v: NDArray[np.float64] = v) -> NDArray[np.float64]:
            t = np.clip(-sm[row, 0] * v, sm[row, 2], sm[row, 1])
            return np.asarray(1.0 / (1.0 + np.exp(t)))

        if col < 3:
            out[:, k] = sig(0) if fit_dim > col else 0.5
        elif col < 6:
            out[:, k] = np.clip(sm[1, 0] * v, sm[1, 2], sm[1, 1]) if fit_dim > col - 3 else 0.0
        elif col in (6, 7):
            out[:, k] = sig(col - 4)
        elif col < 8 + nb_class:
            out[:, k] = sig(4)
        else:
            out[:, k] = np.clip(sm[5, 0] * v, sm[5, 2], sm[5, 1])
    return out


def test_synthetic_network_matches_numpy_transcription(tmp_path: Path) -> None:
    rng = np.random.default_rng(11)
    in_dims, layers = synthetic_layers(rng)
    src = write_binary(tmp_path / "net.dat", in_dims, layers)
    out = import_cianna(src, tmp_path / "net.onnx", param_channels=["flux", "size"])
    model = load_model(out, providers=["CPUExecutionProvider"])
    x = rng.random((3, 1, 32, 48))
    got = model.run(x.astype(np.float32))
    ref = numpy_forward(x.astype(np.float32).astype(np.float64), layers)
    assert got.shape == ref.shape == (3, 22, 16, 24)
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)
    # The test must exercise every branch: saturated ReLU and clipped YOLO channels.
    first = numpy_forward(x, layers[:1])
    assert (first > 2.0).any() and (first < 0).any()
    c = model.contract
    assert c.box_channels[8:] == ("class0", "flux", "size")
    assert [p.name for p in c.params] == ["flux", "size"]
    assert c.priors == ((4.0, 6.0), (8.0, 5.0))
    assert c.normalisation.kind == "none" and c.tile == (32, 48)


def test_receptive_field_is_what_the_network_sees(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    in_dims, layers = synthetic_layers(rng, norm=False, scale=0.05)
    src = write_binary(tmp_path / "net.dat", in_dims, layers)
    model = load_model(import_cianna(src, tmp_path / "net.onnx"),
                       providers=["CPUExecutionProvider"])
    base = rng.random((1, 1, 32, 48)).astype(np.float32)
    gy, gx = 8, 12  # a cell far from the borders
    seen = []
    for axis, n in ((2, 32), (3, 48)):
        batch = np.repeat(base, n, axis=0)
        for i in range(n):
            idx = (i, 0, i, 2 * gx) if axis == 2 else (i, 0, 2 * gy, i)
            batch[idx] += 1.0
        out = model.run(batch)[:, :, gy, gx]
        seen.append(int((np.abs(out - model.run(base)[:, :, gy, gx]) > 0).any(axis=1).sum()))
    assert tuple(seen) == model.contract.receptive_field


# --------------------------------------------------------------------------- bad files
def _expect_invalid(path: Path, tmp_path: Path, match: str) -> None:
    out = tmp_path / "out.onnx"
    with pytest.raises(InvalidModelError, match=match):
        import_cianna(path, out)
    assert not out.exists() and not list(tmp_path.glob(".out.onnx.*"))


def test_random_bytes_are_not_a_cianna_network(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for i in range(5):
        p = tmp_path / f"random{i}.dat"
        p.write_bytes(rng.integers(0, 256, 4000, dtype=np.uint8).tobytes())
        _expect_invalid(p, tmp_path, "not a CIANNA network|corrupted")
    (tmp_path / "empty.dat").write_bytes(b"")
    _expect_invalid(tmp_path / "empty.dat", tmp_path, "empty file")


@pytest.mark.parametrize("cut", [3, 16, 17, 40, 150, 20_000, 58_000, 117_016])
def test_truncated_binary_file(tmp_path: Path, cut: int) -> None:
    data = (DATA / "net_bin.dat").read_bytes()
    assert cut < len(data)
    p = tmp_path / "cut.dat"
    p.write_bytes(data[:cut])
    _expect_invalid(p, tmp_path, "truncated")


def test_truncated_text_file(tmp_path: Path) -> None:
    lines = (DATA / "net_txt.dat").read_text().splitlines(keepends=True)
    for keep in (1, 5, 200, len(lines) - 3):
        p = tmp_path / "cut.dat"
        p.write_text("".join(lines[:keep]))
        _expect_invalid(p, tmp_path, "truncated")


def test_text_file_with_unknown_or_unsupported_layer(tmp_path: Path) -> None:
    text = (DATA / "net_txt.dat").read_text()
    assert "N GN S4_O0LIN" in text
    p = tmp_path / "bad.dat"
    p.write_text(text.replace("N GN S4_O0LIN", "Q GN S4_O0LIN"))
    _expect_invalid(p, tmp_path, "unknown layer type 'Q'")
    p.write_text(text.replace("N GN S4_O0LIN", "P2x2x1.2x2x1s0x0x0p0g_0.000000dMAX LIN"))
    _expect_invalid(p, tmp_path, r"pooling layers \('P'\) are not supported")


def test_binary_file_with_unsupported_parts(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    in_dims, layers = synthetic_layers(rng)
    layers[0]["act"] = "LOGI_S10.00_B1.00"
    _expect_invalid(write_binary(tmp_path / "logi.dat", in_dims, layers), tmp_path,
                    "activation 'LOGI.*not supported")
    in_dims, layers = synthetic_layers(rng)
    data = write_binary(tmp_path / "net.dat", in_dims, layers).read_bytes()
    first_layer_end = 16 + 1 + 17 * 4 + 8 + 40 + 6 * 16 * 4
    dense = data[:first_layer_end] + b"D" + data[first_layer_end + 1:]
    (tmp_path / "dense.dat").write_bytes(dense)
    _expect_invalid(tmp_path / "dense.dat", tmp_path, r"dense layers \('D'\) are not supported")
    in_dims, layers = synthetic_layers(rng)
    _expect_invalid(write_binary(tmp_path / "noyolo.dat", in_dims, layers[:2]), tmp_path,
                    "not a YOLO convolution")


def test_bad_arguments(tmp_path: Path) -> None:
    src = DATA / "net_bin.dat"
    with pytest.raises(StreamdetFileNotFoundError):
        import_cianna(tmp_path / "missing.dat", tmp_path / "m.onnx")
    with pytest.raises(StreamdetValueError, match="unknown CIANNA preset"):
        import_cianna(src, tmp_path / "m.onnx", preset="sdc2")
    with pytest.raises(StreamdetValueError, match="derived from the CIANNA network"):
        import_cianna(src, tmp_path / "m.onnx", stride=[8, 8])
    with pytest.raises(StreamdetValueError, match="unknown contract field"):
        import_cianna(src, tmp_path / "m.onnx", colour="red")
    with pytest.raises(StreamdetValueError, match="param_channels"):
        import_cianna(src, tmp_path / "m.onnx", param_channels=["a", "b"])
    rng = np.random.default_rng(4)
    in_dims, layers = synthetic_layers(rng)
    with pytest.raises(StreamdetValueError, match="preset 'sdc1-cianna2024' needs"):
        import_cianna(write_binary(tmp_path / "n.dat", in_dims, layers), tmp_path / "m.onnx",
                      preset="sdc1-cianna2024")
    assert not (tmp_path / "m.onnx").exists()
    (tmp_path / "m.onnx").write_bytes(b"keep")
    with pytest.raises(OutputExistsError):
        import_cianna(src, tmp_path / "m.onnx")
    assert (tmp_path / "m.onnx").read_bytes() == b"keep"


# --------------------------------------------------------------------------- CLI, engine
def test_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert tuple(PRESETS) == _PRESET_NAMES
    parser = argparse.ArgumentParser(prog="streamdet export")
    parser.add_argument("checkpoint", nargs="?")  # as the export subcommand has
    add_cianna_arguments(parser, with_output=True)
    fields = tmp_path / "fields.json"
    fields.write_text(json.dumps({"description": "from json", "name": "json-name"}))
    out = tmp_path / "m.onnx"
    args = parser.parse_args(["--from-cianna", str(DATA / "net_txt.dat"), "-o", str(out),
                              "--preset", "sdc1-cianna2024", "--contract", str(fields),
                              "--name", "mine", "--threshold", "0.3", "--pixel-scale", "0.7"])
    assert run_cianna_export(args) == 0
    assert "receptive field 72 px" in capsys.readouterr().out
    c = load_model(out, providers=["CPUExecutionProvider"]).contract
    assert (c.name, c.description, c.pixel_scale_arcsec) == ("mine", "from json", 0.7)
    assert c.thresholds["default"] == 0.3
    assert c.threshold_values("purity").tolist() == PRESETS["sdc1-cianna2024"]["thresholds"][
        "purity"]
    args = parser.parse_args(["--from-cianna", str(DATA / "net_bin.dat"), "-o", str(out)])
    with pytest.raises(OutputExistsError):
        run_cianna_export(args)


def test_engine_runs_an_imported_model_end_to_end(tmp_path: Path,
                                                  imported: dict[str, Path]) -> None:
    from streamdet import detect, simulate

    image = tmp_path / "field.fits"
    simulate(image, size=512, seed=7, quiet=True)
    table = detect(image, model=imported["binary"], threshold=0.5, quiet=True)
    # Random weights: junk detections, but a complete catalogue of them.
    assert {"flux", "bmaj", "bmin", "pa"} <= set(table.colnames)
    assert 0 < len(table) <= (512 // 16) ** 2 * 9
    for name in ("flux", "bmaj", "bmin", "pa"):
        assert np.all(np.isfinite(np.asarray(table[name])))
    assert np.all((np.asarray(table["pa"]) >= 0) & (np.asarray(table["pa"]) < 180))
