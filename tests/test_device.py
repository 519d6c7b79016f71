"""Devices: ``device=`` names to ONNX Runtime providers, refusals, GPU pinning, the Model's report.

Runs on the CPU build of onnxruntime: GPU providers are made "present" by monkeypatching
``onnxruntime.get_available_providers`` (no session is created on them, except where the
test checks ONNX Runtime's fallback to the CPU).
"""

from __future__ import annotations

import pickle
import warnings
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from streamdet.engine._onnx import bound_device, open_session, run_session
from streamdet.engine._providers import (
    CPU,
    CUDA,
    TENSORRT,
    DeviceUnavailableError,
    parse_device,
    provider_options,
    resolve_device,
)
from streamdet.engine.contract import Model, load_model
from streamdet.errors import StreamdetError, StreamdetValueError

CPU_ONLY = CUDA not in ort.get_available_providers()
needs_cpu_build = pytest.mark.skipif(not CPU_ONLY, reason="onnxruntime has a CUDA provider")


def _present(monkeypatch: pytest.MonkeyPatch, *providers: str) -> None:
    monkeypatch.setattr(ort, "get_available_providers", lambda: [*providers, CPU])


@pytest.fixture(scope="module")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("torch")
    from tests._models import make_test_model

    return make_test_model(tmp_path_factory.mktemp("device") / "tiny.onnx")


# --------------------------------------------------------------------------- names
@pytest.mark.parametrize(("name", "parsed"), [
    ("auto", ("auto", None)), ("cpu", ("cpu", None)), ("cuda", ("cuda", None)),
    ("cuda:1", ("cuda", 1)), (" CUDA:12 ", ("cuda", 12)), ("tensorrt:0", ("tensorrt", 0)),
    ("auto:3", ("auto", 3)),
])
def test_parse_device(name: str, parsed: tuple[str, int | None]) -> None:
    assert parse_device(name) == parsed


@pytest.mark.parametrize("name", ["gpu", "cuda:", "cuda:-1", "cuda:x", "cpu:0", "", "rocm"])
def test_parse_device_refuses(name: str) -> None:
    with pytest.raises(StreamdetValueError, match="device"):
        parse_device(name)


def test_provider_options_pin_gpu_providers_only() -> None:
    assert provider_options([TENSORRT, CUDA, CPU], 2) == [
        {"device_id": "2"}, {"device_id": "2"}, {}]
    assert provider_options([CUDA, CPU], None) == [{}, {}]
    with pytest.raises(StreamdetValueError, match="device_id"):
        provider_options([CUDA], -1)


# --------------------------------------------------------------------------- resolution
@needs_cpu_build
def test_auto_is_cpu_here_and_says_why() -> None:
    providers, text = resolve_device("auto")
    assert providers == [CPU]
    assert text == "CPUExecutionProvider (auto: no CUDA provider in this onnxruntime build)"
    assert resolve_device("cpu") == ([CPU], "CPUExecutionProvider (device cpu)")


@needs_cpu_build
@pytest.mark.parametrize(("device", "provider"), [("cuda", CUDA), ("cuda:1", CUDA),
                                                  ("tensorrt", TENSORRT)])
def test_gpu_devices_refused_without_provider(device: str, provider: str) -> None:
    with pytest.raises(DeviceUnavailableError) as info:
        resolve_device(device)
    msg = str(info.value)
    assert provider in msg and 'pip install "streamdet[gpu]"' in msg
    assert "onnxruntime-gpu" in msg and ort.__version__ in msg
    # catchable as streamdet's and as the builtin error
    assert isinstance(info.value, StreamdetError) and isinstance(info.value, ValueError)


def test_order_when_cuda_present(monkeypatch: pytest.MonkeyPatch) -> None:
    _present(monkeypatch, CUDA)
    providers, text = resolve_device("auto")
    assert providers == [CUDA, CPU]
    assert text.startswith("CUDAExecutionProvider on GPU 0 (auto")
    assert resolve_device("cuda:1") == ([CUDA, CPU],
                                        "CUDAExecutionProvider on GPU 1 (device cuda:1)")
    with pytest.raises(DeviceUnavailableError, match="TensorrtExecutionProvider"):
        resolve_device("tensorrt")


def test_auto_prefers_cuda_over_tensorrt(monkeypatch: pytest.MonkeyPatch) -> None:
    _present(monkeypatch, TENSORRT, CUDA)
    providers, text = resolve_device("auto")
    assert providers == [CUDA, CPU] and "TensorRT present but only used" in text
    providers, text = resolve_device("tensorrt:1")
    assert providers == [TENSORRT, CUDA, CPU]
    assert text.startswith("TensorrtExecutionProvider on GPU 1")
    # a build with TensorRT alone: auto stays on the CPU, tensorrt falls back to the CPU
    _present(monkeypatch, TENSORRT)
    assert resolve_device("auto")[0] == [CPU]
    assert resolve_device("tensorrt")[0] == [TENSORRT, CPU]
    assert resolve_device("cpu")[0] == [CPU]


# --------------------------------------------------------------------------- sessions
def test_cpu_model(model_path: Path) -> None:
    m = load_model(model_path, device="cpu", threads=1)
    assert m.active_providers == (CPU,) and not m.uses_gpu and not m.io_binding
    assert m.device_description == "CPUExecutionProvider (device cpu)"
    assert m.precision == "fp32"
    x = np.random.default_rng(0).random((2, 1, 64, 64)).astype(np.float32)
    ref = load_model(model_path, providers=[CPU], threads=1).run(x)
    np.testing.assert_array_equal(m.run(x), ref)


@needs_cpu_build
def test_auto_model_reports_cpu(model_path: Path) -> None:
    m = load_model(model_path)
    assert m.device == "auto" and m.active_providers == (CPU,)
    assert m.device_description == ("CPUExecutionProvider (auto: no CUDA provider in this "
                                    "onnxruntime build)")


@needs_cpu_build
@pytest.mark.parametrize("device", ["cuda", "tensorrt:0"])
def test_load_model_refuses_missing_gpu(model_path: Path, device: str) -> None:
    with pytest.raises(DeviceUnavailableError, match=r'streamdet\[gpu\]'):
        load_model(model_path, device=device)


def test_providers_and_device_together(model_path: Path) -> None:
    # providers win over the default device ...
    m = load_model(model_path, providers=[CPU], device="auto")
    assert m.active_providers == (CPU,) and m.device_description.startswith(
        "CPUExecutionProvider (providers given")
    # ... and are refused with any explicit device, before a session is made
    with pytest.raises(StreamdetValueError, match=r"either providers .* or device"):
        load_model(model_path, providers=[CPU], device="cpu")
    with pytest.raises(StreamdetValueError, match="either providers"):
        Model(model_path, m.contract, providers=[CPU], device="cuda:0")
    with pytest.raises(StreamdetValueError, match="unknown device"):
        load_model(model_path, device="gpu")


def test_fallback_refused_for_explicit_gpu(model_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """onnxruntime-gpu falls back to the CPU silently when CUDA cannot start."""
    _present(monkeypatch, CUDA)  # "present" but this build cannot create it
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # ort's own "not available" warning
        with pytest.raises(DeviceUnavailableError, match="could not start it and fell back"):
            open_session(model_path, device="cuda:1")
        session, text = open_session(model_path, device="auto")
    assert session.get_providers() == [CPU]
    assert text.startswith("CPUExecutionProvider (auto") and "could not start" in text


def test_pickled_model_keeps_its_device(model_path: Path) -> None:
    m = load_model(model_path, device="cpu")
    m2 = pickle.loads(pickle.dumps(m))
    assert m2.device == "cpu" and m2._session is None
    assert m2.device_description == "CPUExecutionProvider (device cpu)"
    assert "device='cpu'" in repr(m2)
    dask = pytest.importorskip("dask")
    assert dask.base.tokenize(m) != dask.base.tokenize(load_model(model_path))


def test_with_device_defers_the_session(model_path: Path) -> None:
    m = load_model(model_path, providers=[CPU])
    gpu = m.with_device("cuda:3")  # no session yet: refused only where it would run
    assert gpu._session is None and gpu.device == "cuda:3" and gpu.providers is None
    assert gpu.contract == m.contract and gpu.path == m.path
    assert pickle.loads(pickle.dumps(gpu)).device == "cuda:3"
    if CPU_ONLY:
        with pytest.raises(DeviceUnavailableError, match="CUDAExecutionProvider"):
            _ = gpu.session
    assert m.with_device("cpu").device_description == "CPUExecutionProvider (device cpu)"
    with pytest.raises(StreamdetValueError, match="unknown device"):
        m.with_device("gpu")


def test_plain_run_without_binding_on_cpu(model_path: Path) -> None:
    session, _ = open_session(model_path, device="cpu")
    assert bound_device(session) is None
    x = np.random.default_rng(3).random((1, 1, 32, 48)).astype(np.float32)
    out = run_session(session, "image", "grid", x)
    np.testing.assert_array_equal(out, session.run(["grid"], {"image": x})[0])


# --------------------------------------------------------------------------- FP16 export
@pytest.fixture(scope="module")
def fp16_pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The tests' detector exported in fp32 and fp16 (same seeded weights)."""
    pytest.importorskip("torch")
    pytest.importorskip("onnx")
    from export.onnx_export import export_onnx
    from tests._models import TEST_CONTRACT, build_test_network

    d = tmp_path_factory.mktemp("fp16")
    net = build_test_network()
    export_onnx(net, d / "fp32.onnx", contract=TEST_CONTRACT)
    export_onnx(net, d / "fp16.onnx", contract=TEST_CONTRACT, precision="fp16")
    return d / "fp32.onnx", d / "fp16.onnx"


def test_fp16_export_graph_and_contract(fp16_pair: tuple[Path, Path]) -> None:
    import onnx

    from export.onnx_export import FP16_ATOL

    p32, p16 = fp16_pair
    proto = onnx.load(str(p16))
    onnx.checker.check_model(proto, full_check=True)
    f16 = onnx.TensorProto.FLOAT16
    # every weight in float16, a Cast at each end, I/O float32 as the contract says
    assert proto.graph.initializer and all(
        t.data_type == f16 for t in proto.graph.initializer if t.name != "size_mask")
    assert [n.op_type for n in proto.graph.node][0::len(proto.graph.node) - 1] == ["Cast"] * 2
    io = [*proto.graph.input, *proto.graph.output]
    assert all(v.type.tensor_type.elem_type == onnx.TensorProto.FLOAT for v in io)
    assert p16.stat().st_size < 0.6 * p32.stat().st_size  # half the weight bytes
    m16, m32 = load_model(p16, device="cpu"), load_model(p32, device="cpu")
    assert m16.precision == "fp16" and m32.precision == "fp32"
    check = m16.contract.training["fp16_check"]
    assert 0 < check["max_abs"] <= FP16_ATOL and check["atol"] == FP16_ATOL
    assert check["inputs"] == [[2, 1, 128, 128], [2, 1, 256, 192]]
    # the rest of the contract is the fp32 one
    t32 = dict(m32.contract.training)
    t16 = {k: v for k, v in m16.contract.training.items()
           if k not in ("precision", "fp16_check")}
    assert t16 == t32 and m16.contract == m32.contract


def test_fp16_outputs_close_to_fp32_on_cpu(fp16_pair: tuple[Path, Path]) -> None:
    """On a batch and size the export did not check.

    ONNX Runtime's CPU provider computes the float16 graph (Casts around the ops it has
    no float16 kernel for), so the outputs differ from fp32 by the rounding of the
    weights to 11 significant bits: ~5e-5 on this network (1.4e-3 on a trained 560 MHz
    network). 2e-3 allows that with margin while failing a wrong conversion (a missed
    Cast, a changed activation), which shifts values by 1e-1 or more.
    """
    p32, p16 = fp16_pair
    m16, m32 = load_model(p16, device="cpu"), load_model(p32, device="cpu")
    from tests._models import calibration_image

    x = np.stack([calibration_image(160, seed=s)[None, :, :128] for s in (5, 6, 7)])
    a, b = m32.run(x), m16.run(x)
    assert b.dtype == np.float32 and b.shape == a.shape == (3, 99, 10, 8)
    err = np.abs(b - a)
    assert 0 < err.max() < 2e-3, err.max()  # really rounded, and close


def test_fp16_detections_match_fp32(tmp_path: Path) -> None:
    """The bundled 560 MHz detector converted to fp16 finds the same sources.

    (The tests' random network puts almost every objectness at 0.5, so its detections
    are decided by the rounding itself; a trained network's are not.)
    """
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("torch")
    from export.onnx_export import to_fp16
    from streamdet.engine.detect import detect_pixels
    from streamdet.models import default_model

    path = default_model(freq_hz=560e6, pixel_scale_arcsec=0.6)
    onnx.save(to_fp16(onnx.load(str(path))), str(tmp_path / "half.onnx"))
    rng = np.random.default_rng(2)
    img = rng.normal(0, 4e-7, (640, 640)).astype(np.float32)
    img[rng.integers(0, 640, 120), rng.integers(0, 640, 120)] += 2e-5
    d32 = detect_pixels(img, model=load_model(path, device="cpu"))
    d16 = detect_pixels(img, model=load_model(tmp_path / "half.onnx", device="cpu"))
    assert len(d32) == len(d16) > 50
    for axis in range(4):  # box corners, px
        np.testing.assert_allclose(np.sort(d16.boxes[:, axis]), np.sort(d32.boxes[:, axis]),
                                   atol=0.01)


def test_fp16_export_refused_above_tolerance(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    from export.onnx_export import ExportVerificationError, export_onnx
    from tests._models import build_test_network

    out = tmp_path / "m.onnx"
    with pytest.raises(ExportVerificationError, match=r"FP16 export differs .* tolerance 1e-09"):
        export_onnx(build_test_network(), out, precision="fp16", fp16_atol=1e-9)
    assert list(tmp_path.iterdir()) == []  # nothing left behind
    with pytest.raises(StreamdetValueError, match="precision"):
        export_onnx(build_test_network(), out, precision="int8")


def test_to_fp16_refuses_what_it_cannot_convert() -> None:
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("torch")
    from onnx import TensorProto, helper, numpy_helper

    from export.onnx_export import to_fp16

    def graph(op: str, w: np.ndarray) -> onnx.ModelProto:
        g = helper.make_graph(
            [helper.make_node(op, ["x", "w"], ["y"])], "g",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
            initializer=[numpy_helper.from_array(w, "w")])
        return helper.make_model(g)

    ok = to_fp16(graph("Mul", np.array([2.0], np.float32)))
    assert [n.op_type for n in ok.graph.node] == ["Cast", "Mul", "Cast"]
    with pytest.raises(StreamdetValueError, match="MatMul"):
        to_fp16(graph("MatMul", np.array([2.0], np.float32)))
    with pytest.raises(StreamdetValueError, match="does not fit in float16"):
        to_fp16(graph("Mul", np.array([1e6], np.float32)))


def test_cli_export_fp16(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("torch")
    import argparse

    from export._cli import add_export_parser
    from export.onnx_export import save_checkpoint
    from tests._models import build_test_network

    parser = argparse.ArgumentParser(prog="streamdet")
    add_export_parser(parser.add_subparsers(dest="command", required=True))
    ckpt = save_checkpoint(build_test_network(), tmp_path / "net.pt")
    out = tmp_path / "net16.onnx"
    args = parser.parse_args(["export", str(ckpt), "-o", str(out), "--fp16"])
    assert args.func(args) == 0
    text = capsys.readouterr().out
    assert "FP16 weights and compute" in text and "grid max abs difference" in text
    assert load_model(out).precision == "fp16"
    args = parser.parse_args(["export", "-o", str(tmp_path / "c.onnx"), "--fp16",
                              "--from-cianna", str(tmp_path / "net.dat")])
    with pytest.raises(StreamdetValueError, match="--fp16"):
        args.func(args)
