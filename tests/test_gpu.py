"""GPU inference (onnxruntime-gpu): same catalogue as on the CPU. Skipped without a GPU."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from streamdet.contract import load_model
from streamdet.detect import detect_pixels
from streamdet.models import default_model

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif("CUDAExecutionProvider" not in ort.get_available_providers(),
                       reason="no CUDA execution provider (install streamdet[gpu] on a GPU)"),
]


def test_cuda_matches_cpu() -> None:
    path = default_model(freq_hz=560e6, pixel_scale_arcsec=0.6)
    rng = np.random.default_rng(2)
    img = rng.normal(0, 4e-7, (1100, 900)).astype(np.float32)
    img[rng.integers(0, 1100, 200), rng.integers(0, 900, 200)] += 2e-5
    cpu = detect_pixels(img, model=load_model(path, providers=["CPUExecutionProvider"]))
    gpu = detect_pixels(img, model=load_model(path, providers=["CUDAExecutionProvider"]))
    assert len(cpu) == len(gpu) > 0
    np.testing.assert_allclose(np.sort(gpu.boxes[:, 0]), np.sort(cpu.boxes[:, 0]), atol=1e-2)
