"""GPU inference (onnxruntime-gpu): same results as on the CPU. Skipped without a GPU.

Run on a GPU machine with ``pip install -e ".[gpu,dev]" && python -m pytest -q -m gpu``.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from streamdet.engine._onnx import bound_device, run_session
from streamdet.engine.contract import load_model
from streamdet.engine.detect import detect_pixels
from streamdet.models import default_model

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif("CUDAExecutionProvider" not in ort.get_available_providers(),
                       reason="no CUDA execution provider (install streamdet[gpu] on a GPU)"),
]


def _field(seed: int = 2, shape: tuple[int, int] = (1100, 900)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = rng.normal(0, 4e-7, shape).astype(np.float32)
    img[rng.integers(0, shape[0], 200), rng.integers(0, shape[1], 200)] += 2e-5
    return img


def _default() -> Path:
    return default_model(freq_hz=560e6, pixel_scale_arcsec=0.6)


def test_cuda_matches_cpu() -> None:
    path = _default()
    img = _field()
    cpu = detect_pixels(img, model=load_model(path, device="cpu"))
    gpu = detect_pixels(img, model=load_model(path, device="cuda"))
    assert len(cpu) == len(gpu) > 0
    np.testing.assert_allclose(np.sort(gpu.boxes[:, 0]), np.sort(cpu.boxes[:, 0]), atol=1e-2)


def test_auto_takes_cuda_and_says_so() -> None:
    m = load_model(_default())
    assert m.active_providers[0] == "CUDAExecutionProvider" and m.uses_gpu
    assert m.device_description.startswith("CUDAExecutionProvider on GPU 0 (auto")
    assert m.default_batch == 8


def test_io_binding_equals_plain_run() -> None:
    m = load_model(_default(), device="cuda:0")
    assert m.io_binding and bound_device(m.session) == ("cuda", 0)
    rng = np.random.default_rng(4)
    x = rng.random((8, 1, 256, 256)).astype(np.float32) ** 4
    bound = m.run(x)  # through session.io_binding()
    c = m.contract
    plain = run_session(m.session, c.input_name, c.output_name, x)  # session.run
    assert bound.dtype == np.float32 and bound.shape == plain.shape == m.output_shape(x.shape)
    np.testing.assert_allclose(bound, plain, rtol=0, atol=1e-6)
    # and both agree with the CPU provider
    cpu = load_model(_default(), device="cpu").run(x)
    np.testing.assert_allclose(bound, cpu, rtol=0, atol=1e-3)


def test_device_index_pins_the_gpu() -> None:
    m = load_model(_default(), device="cuda:0")
    assert m.session.get_provider_options()["CUDAExecutionProvider"]["device_id"] == "0"
    try:
        listing = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True,
                                 check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("nvidia-smi cannot count the GPUs")
    if len(listing.splitlines()) < 2:
        pytest.skip("one GPU: cuda:1 cannot be checked")
    m1 = load_model(_default(), device="cuda:1")
    assert bound_device(m1.session) == ("cuda", 1)
    assert m1.device_description == "CUDAExecutionProvider on GPU 1 (device cuda:1)"


def test_fp16_on_gpu_close_to_fp32(tmp_path: Path) -> None:
    """Float16 compute on the GPU (not just rounded weights, as on the CPU provider)."""
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("torch")
    from export.onnx_export import FP16_ATOL, to_fp16

    path = _default()
    onnx.save(to_fp16(onnx.load(str(path))), str(tmp_path / "half.onnx"))
    x = np.random.default_rng(5).random((4, 1, 256, 256)).astype(np.float32) ** 4
    ref = load_model(path, device="cpu").run(x)
    half = load_model(tmp_path / "half.onnx", device="cuda")
    assert half.io_binding
    got = half.run(x)
    assert np.isfinite(got).all()
    assert np.abs(got - ref).max() <= FP16_ATOL
    img = _field(7, (768, 768))
    a = detect_pixels(img, model=load_model(path, device="cpu"))
    b = detect_pixels(img, model=half)
    assert abs(len(a) - len(b)) <= max(1, len(a) // 100)
