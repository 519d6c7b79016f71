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

from streamdet._onnx import bound_device, open_session, run_session
from streamdet._providers import (
    CPU,
    CUDA,
    TENSORRT,
    DeviceUnavailableError,
    parse_device,
    provider_options,
    resolve_device,
)
from streamdet.contract import Model, load_model
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


def test_plain_run_without_binding_on_cpu(model_path: Path) -> None:
    session, _ = open_session(model_path, device="cpu")
    assert bound_device(session) is None
    x = np.random.default_rng(3).random((1, 1, 32, 48)).astype(np.float32)
    out = run_session(session, "image", "grid", x)
    np.testing.assert_array_equal(out, session.run(["grid"], {"image": x})[0])
