"""A YOLO-CIANNA-style fully convolutional detector in PyTorch.

Layout (2D): a stem convolution at full resolution, ``stages`` stride-2 stages of
``1 + depth`` convolutions each (grid cell ``2**stages`` px, 16 by default), a head
convolution and a 1x1 output convolution with ``nbox * len(box_channels)``
channels. Every convolution has an odd kernel with 'same' zero padding
(``kernel // 2``), so the network is fully convolutional and equivariant to
translations by a multiple of the grid stride; its receptive field follows exactly
from the layer list (:func:`receptive_field`).

Normalisation is batch norm (or none), never group/instance/layer norm: those
use statistics of the whole input and would make a tile's output depend on the
tile's size, which breaks chunked inference. In inference mode batch norm is a
per-channel affine map, folded into the convolutions at export.

The output is already activated as the streamdet contract says: ``w`` and ``h``
are ``t`` (size = prior * exp(t)), bounded as ``wh_bound * tanh(raw / wh_bound)``;
every other channel (x, y offsets in the cell, probability, objectness,
parameters in [0, 1]) goes through a sigmoid.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn

from streamdet.errors import StreamdetValueError

__all__ = [
    "DEFAULT_BOX_CHANNELS",
    "DEFAULT_PRIORS",
    "ConvBlock",
    "DetectorConfig",
    "FusedConv",
    "YoloCianna",
    "fold_batchnorm",
    "receptive_field",
]

DEFAULT_PRIORS: tuple[tuple[float, float], ...] = (
    ((6.0, 6.0),) * 6 + ((12.0, 9.0), (9.0, 12.0), (24.0, 24.0)))
"""SDC1 box priors ``(w, h)`` in px: six 6x6, 12x9, 9x12, 24x24."""

DEFAULT_BOX_CHANNELS: tuple[str, ...] = (
    "x", "y", "w", "h", "prob", "obj", "flux", "bmaj", "bmin", "pa_cos", "pa_sin")
"""Channels of one box, in output order."""

_SIZE_CHANNELS = ("w", "h")


@dataclass(frozen=True)
class DetectorConfig:
    """Architecture of a :class:`YoloCianna` network.

    Attributes
    ----------
    width : int
        Filters of the stem and of the first stage; stage ``k`` has
        ``min(width * 2**k, max_channels)``.
    depth : int
        Stride-1 convolutions per stage after its stride-2 convolution.
    stages : int
        Number of stride-2 stages; the grid stride is ``2**stages`` px.
    kernel : int
        Odd kernel size of every spatial convolution.
    max_channels : int
        Cap on the number of filters.
    priors : tuple of (w, h)
        Box priors in px.
    box_channels : tuple of str
        Channels of one box; must contain x, y, w, h and obj.
    norm : str
        ``"batch"`` or ``"none"``.
    negative_slope : float
        Leaky ReLU slope.
    wh_bound : float
        Bound of the size channels ``t`` (``wh_bound * tanh(raw / wh_bound)``); 0: unbounded.
    """

    width: int = 16
    depth: int = 2
    stages: int = 4
    kernel: int = 3
    max_channels: int = 256
    priors: tuple[tuple[float, float], ...] = DEFAULT_PRIORS
    box_channels: tuple[str, ...] = DEFAULT_BOX_CHANNELS
    norm: str = "batch"
    negative_slope: float = 0.1
    wh_bound: float = 4.0

    def __post_init__(self) -> None:
        for name in ("width", "stages", "max_channels"):
            if getattr(self, name) < 1:
                raise StreamdetValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.depth < 0:
            raise StreamdetValueError(f"depth must be >= 0, got {self.depth}")
        if self.kernel < 1 or self.kernel % 2 == 0:
            raise StreamdetValueError(f"kernel must be odd and positive, got {self.kernel}")
        if not self.priors or any(len(p) != 2 or min(p) <= 0 for p in self.priors):
            raise StreamdetValueError(f"priors must be (w, h) pairs > 0, got {self.priors}")
        missing = [c for c in ("x", "y", "w", "h", "obj") if c not in self.box_channels]
        if missing or len(set(self.box_channels)) != len(self.box_channels):
            raise StreamdetValueError(
                f"box_channels {self.box_channels} must be unique and contain x, y, w, h, obj")
        if self.norm not in ("batch", "none"):
            raise StreamdetValueError(f"norm must be 'batch' or 'none', got {self.norm!r}")
        if self.wh_bound < 0:
            raise StreamdetValueError(f"wh_bound must be >= 0, got {self.wh_bound}")

    @property
    def stride(self) -> int:
        """Grid stride, px."""
        return int(2 ** self.stages)

    @property
    def nbox(self) -> int:
        """Boxes per cell."""
        return len(self.priors)

    @property
    def n_outputs(self) -> int:
        """Output channels ``nbox * len(box_channels)``."""
        return self.nbox * len(self.box_channels)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (JSON and ``torch.load(weights_only=True)`` friendly)."""
        d = asdict(self)
        d["priors"] = [list(p) for p in self.priors]
        d["box_channels"] = list(self.box_channels)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> DetectorConfig:
        """Inverse of :meth:`to_dict`; unknown keys are refused."""
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(d) - known)
        if unknown:
            raise StreamdetValueError(f"unknown DetectorConfig field(s) {unknown}")
        kw = dict(d)
        if "priors" in kw:
            kw["priors"] = tuple(tuple(float(v) for v in p) for p in kw["priors"])
        if "box_channels" in kw:
            kw["box_channels"] = tuple(kw["box_channels"])
        return cls(**kw)


def receptive_field(layers: Sequence[tuple[int, int, int]]) -> tuple[int, int]:
    """Exact receptive field of a chain of convolutions along one axis.

    Parameters
    ----------
    layers : sequence of (kernel, stride, padding)
        The spatial layers in order (1x1 and pointwise layers may be left out).

    Returns
    -------
    (R, start) : tuple of int
        Output cell ``g`` depends on input pixels ``g * S + start`` to
        ``g * S + start + R - 1`` inclusive (``S`` the product of the strides).
    """
    size, jump, start = 1, 1, 0
    for kernel, stride, padding in layers:
        size += (kernel - 1) * jump
        start -= padding * jump
        jump *= stride
    return size, start


@dataclass(frozen=True)
class FusedConv:
    """One convolution with batch norm folded in, as numpy arrays (for ONNX export).

    Attributes
    ----------
    weight : (C_out, C_in, k, k) float32
    bias : (C_out,) float32
    stride, padding : int
    negative_slope : float or None
        Leaky ReLU slope applied after the convolution, None for no activation.
    """

    weight: NDArray[np.float32]
    bias: NDArray[np.float32]
    stride: int
    padding: int
    negative_slope: float | None


class ConvBlock(nn.Module):
    """Convolution ('same' zero padding) + optional batch norm + leaky ReLU."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, *, norm: str,
                 negative_slope: float) -> None:
        super().__init__()
        self.kernel, self.stride, self.padding = kernel, stride, kernel // 2
        self.negative_slope = negative_slope
        self.conv = nn.Conv2d(c_in, c_out, kernel, stride, padding=self.padding,
                              bias=norm != "batch")
        self.norm: nn.Module = nn.BatchNorm2d(c_out) if norm == "batch" else nn.Identity()
        self.act = nn.LeakyReLU(negative_slope)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.act(self.norm(self.conv(x)))
        return out

    def fused(self) -> FusedConv:
        """Weights with the (inference-mode) batch norm folded in."""
        w, b = fold_batchnorm(self.conv, self.norm)
        return FusedConv(weight=w, bias=b, stride=self.stride, padding=self.padding,
                         negative_slope=self.negative_slope)


def fold_batchnorm(conv: nn.Conv2d | nn.Conv3d, norm: nn.Module
                   ) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """A convolution's weights and bias with its inference-mode batch norm folded in.

    Parameters
    ----------
    conv : torch.nn.Conv2d or torch.nn.Conv3d
        Weights (C_out, C_in, *kernel) and optional bias (C_out,).
    norm : torch.nn.BatchNorm2d, torch.nn.BatchNorm3d or torch.nn.Identity
        The batch norm after it (running statistics), or none.

    Returns
    -------
    weight : (C_out, C_in, *kernel) float32
    bias : (C_out,) float32
        Computed in float64, then rounded.
    """
    with torch.no_grad():
        w = conv.weight.detach().double()
        b = (conv.bias.detach().double() if conv.bias is not None
             else torch.zeros(w.shape[0], dtype=torch.float64))
        if isinstance(norm, nn.BatchNorm2d | nn.BatchNorm3d):
            assert norm.running_var is not None and norm.running_mean is not None
            scale = norm.weight.detach().double() / torch.sqrt(
                norm.running_var.double() + norm.eps)
            w = w * scale.reshape(-1, *([1] * (w.dim() - 1)))
            b = (b - norm.running_mean.double()) * scale + norm.bias.detach().double()
    return w.float().numpy().copy(), b.float().numpy().copy()


class YoloCianna(nn.Module):
    """YOLO-CIANNA-style 2D detector; ``forward`` returns the contract's activated grid.

    Parameters
    ----------
    config : DetectorConfig
        Architecture.

    Notes
    -----
    ``forward(x)``: ``x`` (N, 1, H, W) normalised pixels, H and W multiples of
    ``config.stride``; returns (N, nbox * len(box_channels), H / stride, W / stride).
    """

    def __init__(self, config: DetectorConfig | None = None) -> None:
        super().__init__()
        cfg = DetectorConfig() if config is None else config
        self.config = cfg
        block = {"norm": cfg.norm, "negative_slope": cfg.negative_slope}
        blocks = [ConvBlock(1, cfg.width, cfg.kernel, 1, **block)]  # type: ignore[arg-type]
        c = cfg.width
        for stage in range(cfg.stages):
            c_out = min(cfg.width * 2 ** stage, cfg.max_channels)
            blocks.append(ConvBlock(c, c_out, cfg.kernel, 2, **block))  # type: ignore[arg-type]
            c = c_out
            blocks += [ConvBlock(c, c, cfg.kernel, 1, **block)  # type: ignore[arg-type]
                       for _ in range(cfg.depth)]
        blocks.append(ConvBlock(c, c, cfg.kernel, 1, **block))  # type: ignore[arg-type]
        self.features = nn.Sequential(*blocks)
        self.head = nn.Conv2d(c, cfg.n_outputs, 1)
        size = torch.tensor([name in _SIZE_CHANNELS for name in cfg.box_channels] * cfg.nbox)
        self.register_buffer("_size_mask", size.view(1, -1, 1, 1), persistent=False)

    # ----------------------------------------------------------------- geometry
    def layer_geometry(self) -> list[tuple[int, int, int]]:
        """``(kernel, stride, padding)`` of every spatial layer, in order."""
        geo = [(b.kernel, b.stride, b.padding) for b in self.blocks]
        return [*geo, (1, 1, 0)]

    @property
    def blocks(self) -> list[ConvBlock]:
        """The convolution blocks before the 1x1 output layer."""
        return [m for m in self.features if isinstance(m, ConvBlock)]

    @property
    def receptive_field(self) -> int:
        """Receptive field of one output cell, px (per axis)."""
        return receptive_field(self.layer_geometry())[0]

    @property
    def receptive_start(self) -> int:
        """Offset of the receptive field of cell ``g``: it starts at ``g * stride + start``."""
        return receptive_field(self.layer_geometry())[1]

    # ----------------------------------------------------------------- forward
    def raw(self, x: torch.Tensor) -> torch.Tensor:
        """Pre-activation outputs (logits and raw size channels), for training losses."""
        out: torch.Tensor = self.head(self.features(x))
        return out

    def activate(self, z: torch.Tensor) -> torch.Tensor:
        """Apply the contract's activations to raw outputs ``z``."""
        b = self.config.wh_bound
        size = b * torch.tanh(z / b) if b > 0 else z
        mask: torch.Tensor = self._size_mask  # type: ignore[assignment]
        return torch.where(mask, size, torch.sigmoid(z))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activate(self.raw(x))

    # ----------------------------------------------------------------- export helpers
    def fused_layers(self) -> list[FusedConv]:
        """Every convolution with batch norm folded, the output layer last (no activation)."""
        layers = [b.fused() for b in self.blocks]
        w = self.head.weight.detach().float().numpy().copy()
        bias = self.head.bias
        assert bias is not None
        layers.append(FusedConv(weight=w, bias=bias.detach().float().numpy().copy(),
                                stride=1, padding=0, negative_slope=None))
        return layers

    def size_mask(self) -> NDArray[np.bool_]:
        """``(K,)`` True for the size channels ``w``/``h`` of every box."""
        mask: torch.Tensor = self._size_mask  # type: ignore[assignment]
        return mask.view(-1).cpu().numpy().copy()

    def set_output_bias(self, channel: str, value: float) -> None:
        """Set the output-layer bias of ``channel`` for every box (e.g. objectness prior)."""
        if channel not in self.config.box_channels:
            raise StreamdetValueError(
                f"no box channel {channel!r}; channels: {self.config.box_channels}")
        j = self.config.box_channels.index(channel)
        n = len(self.config.box_channels)
        bias = self.head.bias
        assert bias is not None
        with torch.no_grad():
            bias[j::n] = value
