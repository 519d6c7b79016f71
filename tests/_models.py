"""Small deterministic ONNX detectors for the tests (built with export/, so they need torch).

Use :func:`make_test_model` directly, or through a session-scoped fixture, e.g.::

    @pytest.fixture(scope="session")
    def tiny_model(tmp_path_factory):
        return make_test_model(tmp_path_factory.mktemp("models") / "tiny.onnx")
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["TEST_CONTRACT", "build_test_network", "calibration_image", "make_test_model"]

TEST_CONTRACT: dict[str, Any] = {
    "name": "streamdet-test",
    "description": "random weights, for tests only",
    "tile": [256, 256],
    "overlap": [32, 32],
    "pixel_scale_arcsec": 0.6,
    "beam_arcsec": [1.5, 1.5],
    "freq_mhz": 560.0,
    "thresholds": {"default": 0.5,
                   "best": [0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.45, 0.45, 0.4],
                   "purity": 0.7},
}
"""Contract fields of the test detector (the rest are export defaults)."""


def calibration_image(size: int = 256, *, seed: int = 1234) -> np.ndarray:
    """A normalised-looking ``(size, size)`` float32 image: faint background and bright spots."""
    rng = np.random.default_rng(seed)
    img = 0.05 * rng.random((size, size))
    ys, xs = rng.integers(0, size, (2, size // 4))
    img[ys, xs] = 0.5 + 0.5 * rng.random(ys.size)
    return img.astype(np.float32)


def randomise_batchnorm(net: Any, seed: int, *, affine: bool) -> None:
    """Give every batch norm of ``net`` (2D or 3D) seeded non-trivial running statistics
    (and, with ``affine``, weight and bias), so that folding them into the convolutions
    is exercised."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d | torch.nn.BatchNorm3d):
                c = m.num_features
                assert m.running_mean is not None and m.running_var is not None
                m.running_mean.copy_(0.1 * torch.randn(c, generator=gen))
                m.running_var.copy_(0.5 + torch.rand(c, generator=gen))
                if affine:
                    m.weight.copy_(0.75 + 0.5 * torch.rand(c, generator=gen))
                    m.bias.copy_(0.1 * torch.randn(c, generator=gen))


def build_test_network(*, width: int = 8, depth: int = 1, seed: int = 0,
                       obj_fraction: float = 0.1, norm: str = "batch",
                       **config: Any) -> Any:
    """A seeded :class:`export.model.YoloCianna` in eval mode.

    Batch-norm statistics are randomised (so the export's batch-norm folding is
    exercised) and the objectness bias is set so that about ``obj_fraction`` of
    all (cell, prior) pairs of :func:`calibration_image` reach objectness 0.5.
    """
    import torch

    from export.model import DetectorConfig, YoloCianna

    torch.manual_seed(seed)
    net = YoloCianna(DetectorConfig(width=width, depth=depth, norm=norm, **config))
    randomise_batchnorm(net, seed + 1, affine=True)
    net.eval()
    if not 0.0 < obj_fraction < 1.0:
        return net
    x = torch.from_numpy(calibration_image()[None, None])
    with torch.no_grad():
        raw = net.raw(x)[0]
        nch = len(net.config.box_channels)
        j = net.config.box_channels.index("obj")
        logits = raw[j::nch].reshape(-1).double().numpy()
        shift = float(np.quantile(logits, 1.0 - obj_fraction))
        bias = net.head.bias
        assert bias is not None
        bias[j::nch] -= shift
    return net


def make_test_model(path: str | os.PathLike[str], *, width: int = 8, depth: int = 1,
                    seed: int = 0, obj_fraction: float = 0.1,
                    contract: Mapping[str, Any] | None = None, overwrite: bool = True,
                    **config: Any) -> Path:
    """Export a small seeded detector to ``path`` and return ``path``.

    Parameters
    ----------
    path : path-like
        ONNX file to write.
    width, depth : int
        Network size (see :class:`export.model.DetectorConfig`); the default network
        has a receptive field of 125 px and a halo of 64 px.
    seed : int
        Seed of the weights.
    obj_fraction : float
        Fraction of (cell, prior) pairs of the calibration image at objectness >= 0.5.
    contract : mapping, optional
        Contract fields overriding :data:`TEST_CONTRACT`.
    overwrite : bool
        Replace an existing file.
    **config
        Further :class:`export.model.DetectorConfig` fields (priors, box_channels...).
    """
    from export.onnx_export import export_onnx

    net = build_test_network(width=width, depth=depth, seed=seed, obj_fraction=obj_fraction,
                             **config)
    fields = {**TEST_CONTRACT, **dict(contract or {})}
    if "priors" in config and "thresholds" not in (contract or {}):
        fields["thresholds"] = {"default": 0.5}
    export_onnx(net, path, contract=fields, overwrite=overwrite)
    return Path(path)
