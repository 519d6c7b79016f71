"""A small deterministic 3D ONNX detector for the cube tests (built with export/, needs torch).

The network is :class:`export.model3d.YoloCianna3D` with seeded random weights and
randomised batch-norm statistics (so the export's folding is exercised), two stages of
stride 2 (cells of 4 x 4 x 4 voxels: many boxes, many overlaps) and its objectness bias
shifted so that about ``obj_fraction`` of the cells of a calibration cube of noise and
bright blobs reach 0.5. Its line-flux range covers the simulated galaxies.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from _models import randomise_batchnorm

__all__ = ["calibration_cube", "make_test_model3d"]

NOISE = 30e-6


def calibration_cube(shape: tuple[int, int, int] = (64, 32, 32), *, seed: int = 7
                     ) -> np.ndarray:
    """Jy/beam noise (30 uJy) with a few bright blobs, ``(nz, ny, nx)`` float32."""
    rng = np.random.default_rng(seed)
    cube = rng.normal(0.0, NOISE, shape)
    zz, yy, xx = np.indices(shape)
    for _ in range(6):
        c = [rng.uniform(0, n) for n in shape]
        r2 = ((zz - c[0]) / 6) ** 2 + ((yy - c[1]) / 2) ** 2 + ((xx - c[2]) / 2) ** 2
        cube += 10 * NOISE * np.exp(-r2)
    return cube.astype(np.float32)


def make_test_model3d(path: str | os.PathLike[str], *, seed: int = 0,
                      obj_fraction: float = 0.05, **contract: Any) -> Path:
    """Export the small seeded 3D detector to ``path`` (overwritten) and return ``path``."""
    import torch

    from export.model3d import Detector3DConfig, YoloCianna3D, export_onnx3d
    from streamdet.engine.contract import normalise

    torch.manual_seed(seed)
    cfg = Detector3DConfig(width=4, max_channels=8, depth=0,
                           stage_strides=((2, 2, 2), (2, 2, 2)), priors=((4.0, 4.0, 8.0),))
    net = YoloCianna3D(cfg)
    randomise_batchnorm(net, seed + 1, affine=False)
    net.eval()
    from export.model3d import build_contract3d

    probe = build_contract3d(net)
    x = torch.from_numpy(normalise(calibration_cube(), probe)[None, None])
    with torch.no_grad():
        raw = net.raw(x)[0]
        nch = len(cfg.box_channels)
        j = cfg.box_channels.index("obj")
        logits = raw[j::nch].reshape(-1).double().numpy()
        shift = float(np.quantile(logits, 1.0 - obj_fraction))
        bias = net.head.bias
        assert bias is not None
        bias[j::nch] -= shift
    fields: dict[str, Any] = {"name": "streamdet-test-3d",
                              "description": "random weights, for tests only",
                              "tile": [64, 32, 32], "overlap": [16, 16, 16],
                              "channel_hz": 30e3, **contract}
    export_onnx3d(net, path, contract=fields, overwrite=True,
                  verify_sizes=((32, 16, 16),))
    return Path(path)
