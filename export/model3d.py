"""A YOLO-CIANNA-style fully convolutional 3D detector for HI cubes (SDC2), and its ONNX export.

Layout: the input is a normalised cube ``(N, 1, D, H, W)`` (D channels along frequency,
H rows, W columns; the seed's crops are 256 x 64 x 64 voxels). An optional stem block at full
resolution (off by default: it is the costliest layer on a CPU), then
``len(stage_strides)`` stages, each a strided block followed by
``depth`` stride-1 blocks, a head block, and a 1x1x1 output convolution with
``nbox * len(box_channels)`` channels. A block is either one ``(kz, k, k)`` convolution
or (``separable=True``, the default) a ``(1, k, k)`` convolution in the sky plane then
a ``(kz, 1, 1)`` convolution along frequency, each with batch norm and a leaky ReLU:
about a third of the multiply-adds of the full 3D kernel, and as local. Train with
``torch.channels_last_3d`` tensors on a CPU: the backward pass of ``Conv3d`` is ~8x
faster in that layout (1.6 s against 10 s per step of 4 crops of 256 x 64 x 64 on 2
cores). The default
strides ``(2, 2, 2), (2, 2, 2), (2, 2, 2), (2, 1, 1)`` (z, y, x) give the seed's cells of
16 channels x 8 x 8 pixels.

Every convolution has 'same' zero padding (``kernel // 2``), so the network is fully
convolutional and its receptive field follows from the layer list per axis
(:func:`export.model.receptive_field`). Batch norm is folded into the convolutions at
export; no normalisation uses statistics of the whole input.

Activations (applied by the graph, as the streamdet contract wants): the size channels
``w, h, d`` are ``t`` with size = prior x exp(t), bounded as
``wh_bound * tanh(raw / wh_bound)``; the ``signed_channels`` (``pa_cos`` by default: the
cosine of a position angle of period 360 deg, which lies in [-1, 1]) go through a tanh;
every other channel (x, y, z offsets in the cell, objectness, parameters) through a
sigmoid.

The contract this module writes (:func:`build_contract3d`, :func:`export_onnx3d`) is
the streamdet format version 1 with ``ndim: 3``: spatial lists in input order
``[z, y, x]`` (stride, receptive field, tile, overlap), priors ``[w, h, d]`` (px, px,
channels), box channels ``x, y, z, w, h, d, obj`` and the parameters of
:data:`SDC2_PARAMS`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from numpy.typing import NDArray
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from streamdet._version import __version__
from streamdet.engine.contract import ModelContract, load_model
from streamdet.errors import StreamdetError, StreamdetValueError
from streamdet.io._atomic import atomic_path, check_output

from .model import fold_batchnorm, receptive_field
from .onnx_export import _contract_with_overrides, _plain

__all__ = [
    "DEFAULT_BOX_CHANNELS_3D",
    "DEFAULT_PRIORS_3D",
    "SDC2_NORMALISATION",
    "SDC2_PARAMS",
    "Block3D",
    "Detector3DConfig",
    "Export3DVerificationError",
    "FusedConv3D",
    "YoloCianna3D",
    "build_contract3d",
    "export_onnx3d",
    "load_checkpoint3d",
    "save_checkpoint3d",
    "to_onnx3d",
]

DEFAULT_PRIORS_3D: tuple[tuple[float, float, float], ...] = ((6.0, 6.0, 32.0),)
"""The one box prior ``(w, h, d)``: 6 px x 6 px x 32 channels (a barely resolved galaxy
of w20 ~ 280 km/s at 1 GHz)."""

DEFAULT_BOX_CHANNELS_3D: tuple[str, ...] = (
    "x", "y", "z", "w", "h", "d", "obj",
    "flux", "hi_size", "w20", "pa_cos", "pa_sin", "incl")
"""Channels of one box, in output order."""

SDC2_PARAMS: tuple[dict[str, Any], ...] = (
    {"name": "line_flux_integral", "unit": "Jy Hz", "decode": "log_minmax",
     "channels": ["flux"], "min": 1.0, "max": 1000.0},
    {"name": "hi_size", "unit": "arcsec", "decode": "log_minmax", "channels": ["hi_size"],
     "min": 1.0, "max": 100.0},
    {"name": "w20", "unit": "km/s", "decode": "log_minmax", "channels": ["w20"],
     "min": 20.0, "max": 1000.0},
    {"name": "pa", "unit": "deg", "decode": "angle_cos_sin01",
     "channels": ["pa_cos", "pa_sin"], "period": 360.0},
    {"name": "i", "unit": "deg", "decode": "minmax", "channels": ["incl"],
     "min": 0.0, "max": 90.0},
)
"""SDC2 parameter decoding: names as the SDC2 catalogue columns. ``pa`` is the kinematic
position angle (of the receding half of the major axis, north through east), period
360 deg: ``pa_cos`` carries ``cos(pa)`` in [-1, 1] (a tanh channel), ``pa_sin``
``(sin(pa) + 1) / 2``."""

SDC2_NOISE = 30e-6
"""Noise rms per channel (Jy/beam) the normalisation below is set for
(:data:`streamdet.sim.simulate_cube.SDC2_NOISE`)."""

SDC2_NORMALISATION: dict[str, Any] = {
    "kind": "clip_tanh", "clip_min": -4.0 * SDC2_NOISE, "clip_max": 16.0 * SDC2_NOISE,
    "tanh_scale": 2.0}
"""Input normalisation: clip to [-4, 16] sigma, rescale to [0, 1], ``tanh(2 x)``. HI
voxels are rarely above a few sigma, so the noise is kept (not clipped at 0 as in SDC1);
the blank level (0 Jy/beam) maps to 0.38."""

_SIZE_CHANNELS = ("w", "h", "d")
_REQUIRED = ("x", "y", "z", "w", "h", "d", "obj")
CHECKPOINT_FORMAT_3D = "streamdet-checkpoint3d-1"

Axes3 = tuple[int, int, int]


@dataclass(frozen=True)
class Detector3DConfig:
    """Architecture of a :class:`YoloCianna3D` network.

    Attributes
    ----------
    width : int
        Filters of the stem and of the first stage; stage ``k`` has
        ``min(width * 2**k, max_channels)``.
    depth : int
        Stride-1 blocks per stage after its strided block.
    stage_strides : tuple of (sz, sy, sx)
        Strides of the stages, ``(z, y, x)``; the grid stride is their product per axis.
    kernel : int
        Odd kernel size in the sky plane (y, x).
    kernel_z : int
        Odd kernel size along frequency.
    separable : bool
        Each block is a ``(1, k, k)`` then a ``(kz, 1, 1)`` convolution (True) or one
        ``(kz, k, k)`` convolution (False).
    max_channels : int
        Cap on the number of filters.
    priors : tuple of (w, h, d)
        Box priors: px, px, channels.
    box_channels : tuple of str
        Channels of one box; must contain x, y, z, w, h, d and obj.
    signed_channels : tuple of str
        Channels activated by a tanh (values in [-1, 1]) instead of a sigmoid.
    norm : str
        ``"batch"`` or ``"none"``.
    negative_slope : float
        Leaky ReLU slope.
    wh_bound : float
        Bound of the size channels ``t`` (``wh_bound * tanh(raw / wh_bound)``); 0: unbounded.
    stem : bool
        Start with a stride-1 block at full resolution (``width`` filters). Off by
        default: at 256 x 64 x 64 voxels it costs more than the rest of the network on a
        CPU; the first stage's strided block then reads the input directly.
    """

    width: int = 8
    depth: int = 1
    stage_strides: tuple[Axes3, ...] = ((2, 2, 2), (2, 2, 2), (2, 2, 2), (2, 1, 1))
    kernel: int = 3
    kernel_z: int = 3
    separable: bool = True
    max_channels: int = 64
    priors: tuple[tuple[float, float, float], ...] = DEFAULT_PRIORS_3D
    box_channels: tuple[str, ...] = DEFAULT_BOX_CHANNELS_3D
    signed_channels: tuple[str, ...] = ("pa_cos",)
    norm: str = "batch"
    negative_slope: float = 0.1
    wh_bound: float = 4.0
    stem: bool = False

    def __post_init__(self) -> None:
        for name in ("width", "max_channels"):
            if getattr(self, name) < 1:
                raise StreamdetValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.depth < 0:
            raise StreamdetValueError(f"depth must be >= 0, got {self.depth}")
        for name in ("kernel", "kernel_z"):
            k = getattr(self, name)
            if k < 1 or k % 2 == 0:
                raise StreamdetValueError(f"{name} must be odd and positive, got {k}")
        if not self.stage_strides or any(len(s) != 3 or min(s) < 1 for s in self.stage_strides):
            raise StreamdetValueError(
                f"stage_strides must be (sz, sy, sx) triples >= 1, got {self.stage_strides}")
        if not self.priors or any(len(p) != 3 or min(p) <= 0 for p in self.priors):
            raise StreamdetValueError(f"priors must be (w, h, d) triples > 0, got {self.priors}")
        missing = [c for c in _REQUIRED if c not in self.box_channels]
        if missing or len(set(self.box_channels)) != len(self.box_channels):
            raise StreamdetValueError(
                f"box_channels {self.box_channels} must be unique and contain {_REQUIRED}")
        bad = [c for c in self.signed_channels
               if c not in self.box_channels or c in _SIZE_CHANNELS]
        if bad:
            raise StreamdetValueError(f"signed_channels {bad} must be non-size box channels")
        if self.norm not in ("batch", "none"):
            raise StreamdetValueError(f"norm must be 'batch' or 'none', got {self.norm!r}")
        if self.wh_bound < 0:
            raise StreamdetValueError(f"wh_bound must be >= 0, got {self.wh_bound}")

    @property
    def stride(self) -> Axes3:
        """Grid stride ``(z, y, x)``: channels, px, px."""
        return (math.prod(s[0] for s in self.stage_strides),
                math.prod(s[1] for s in self.stage_strides),
                math.prod(s[2] for s in self.stage_strides))

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
        d["stage_strides"] = [list(s) for s in self.stage_strides]
        d["priors"] = [list(p) for p in self.priors]
        d["box_channels"] = list(self.box_channels)
        d["signed_channels"] = list(self.signed_channels)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Detector3DConfig:
        """Inverse of :meth:`to_dict`; unknown keys are refused."""
        unknown = sorted(set(d) - set(cls.__dataclass_fields__))
        if unknown:
            raise StreamdetValueError(f"unknown Detector3DConfig field(s) {unknown}")
        kw = dict(d)
        if "stage_strides" in kw:
            kw["stage_strides"] = tuple(tuple(int(v) for v in s) for s in kw["stage_strides"])
        if "priors" in kw:
            kw["priors"] = tuple(tuple(float(v) for v in p) for p in kw["priors"])
        for key in ("box_channels", "signed_channels"):
            if key in kw:
                kw[key] = tuple(kw[key])
        return cls(**kw)


@dataclass(frozen=True)
class FusedConv3D:
    """One 3D convolution with batch norm folded in, as numpy arrays (for ONNX export).

    Attributes
    ----------
    weight : (C_out, C_in, kz, ky, kx) float32
    bias : (C_out,) float32
    stride, padding : (z, y, x) int
    negative_slope : float or None
        Leaky ReLU slope after the convolution; None for no activation.
    """

    weight: NDArray[np.float32]
    bias: NDArray[np.float32]
    stride: Axes3
    padding: Axes3
    negative_slope: float | None


class _Conv(nn.Module):
    """Conv3d ('same' zero padding) + optional batch norm + leaky ReLU."""

    def __init__(self, c_in: int, c_out: int, kernel: Axes3, stride: Axes3, *, norm: str,
                 negative_slope: float) -> None:
        super().__init__()
        self.kernel, self.stride = kernel, stride
        self.padding: Axes3 = (kernel[0] // 2, kernel[1] // 2, kernel[2] // 2)
        self.negative_slope = negative_slope
        self.conv = nn.Conv3d(c_in, c_out, kernel, stride, padding=self.padding,
                              bias=norm != "batch")
        self.norm: nn.Module = nn.BatchNorm3d(c_out) if norm == "batch" else nn.Identity()
        self.act = nn.LeakyReLU(negative_slope)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.act(self.norm(self.conv(x)))
        return out

    def fused(self) -> FusedConv3D:
        """Weights with the (inference-mode) batch norm folded in."""
        w, b = fold_batchnorm(self.conv, self.norm)
        return FusedConv3D(weight=w, bias=b, stride=self.stride, padding=self.padding,
                           negative_slope=self.negative_slope)


class Block3D(nn.Module):
    """A separable ``(1, k, k)`` + ``(kz, 1, 1)`` block, or one ``(kz, k, k)`` convolution.

    Parameters
    ----------
    c_in, c_out : int
        Channels.
    stride : (sz, sy, sx)
        Strides (the sky-plane convolution takes sy, sx; the spectral one sz).
    kernel, kernel_z : int
        Kernel sizes in the sky plane and along frequency.
    separable : bool
    norm : str
    negative_slope : float
    """

    def __init__(self, c_in: int, c_out: int, stride: Axes3, *, kernel: int, kernel_z: int,
                 separable: bool, norm: str, negative_slope: float) -> None:
        super().__init__()
        kw = {"norm": norm, "negative_slope": negative_slope}
        if separable:
            self.convs = nn.ModuleList([
                _Conv(c_in, c_out, (1, kernel, kernel), (1, stride[1], stride[2]), **kw),  # type: ignore[arg-type]
                _Conv(c_out, c_out, (kernel_z, 1, 1), (stride[0], 1, 1), **kw)])  # type: ignore[arg-type]
        else:
            self.convs = nn.ModuleList([
                _Conv(c_in, c_out, (kernel_z, kernel, kernel), stride, **kw)])  # type: ignore[arg-type]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv in self.convs:
            x = conv(x)
        return x


class YoloCianna3D(nn.Module):
    """YOLO-CIANNA-style 3D detector; ``forward`` returns the contract's activated grid.

    Parameters
    ----------
    config : Detector3DConfig, optional
        Architecture (default: width 8, four stages, cells of 16 x 8 x 8 voxels).

    Notes
    -----
    ``forward(x)``: ``x`` (N, 1, D, H, W) normalised voxels, D, H, W multiples of
    ``config.stride`` (z, y, x); returns (N, nbox * len(box_channels), D / sz, H / sy,
    W / sx).
    """

    def __init__(self, config: Detector3DConfig | None = None) -> None:
        super().__init__()
        cfg = Detector3DConfig() if config is None else config
        self.config = cfg
        kw = {"kernel": cfg.kernel, "kernel_z": cfg.kernel_z, "separable": cfg.separable,
              "norm": cfg.norm, "negative_slope": cfg.negative_slope}
        blocks = [Block3D(1, cfg.width, (1, 1, 1), **kw)] if cfg.stem else []  # type: ignore[arg-type]
        c = cfg.width if cfg.stem else 1
        for k, stride in enumerate(cfg.stage_strides):
            c_out = min(cfg.width * 2 ** k, cfg.max_channels)
            blocks.append(Block3D(c, c_out, stride, **kw))  # type: ignore[arg-type]
            c = c_out
            blocks += [Block3D(c, c, (1, 1, 1), **kw)  # type: ignore[arg-type]
                       for _ in range(cfg.depth)]
        blocks.append(Block3D(c, c, (1, 1, 1), **kw))  # type: ignore[arg-type]
        self.features = nn.Sequential(*blocks)
        self.head = nn.Conv3d(c, cfg.n_outputs, 1)
        names = list(cfg.box_channels) * cfg.nbox
        size = torch.tensor([n in _SIZE_CHANNELS for n in names]).view(1, -1, 1, 1, 1)
        signed = torch.tensor([n in cfg.signed_channels for n in names]).view(1, -1, 1, 1, 1)
        self.register_buffer("_size_mask", size, persistent=False)
        self.register_buffer("_signed_mask", signed, persistent=False)

    # ----------------------------------------------------------------- geometry
    def convs(self) -> list[_Conv]:
        """Every convolution before the output layer, in order."""
        return [c for block in self.features for c in block.convs]  # type: ignore[union-attr]

    def layer_geometry(self, axis: int) -> list[tuple[int, int, int]]:
        """``(kernel, stride, padding)`` of every layer along ``axis`` (0 z, 1 y, 2 x)."""
        return [(c.kernel[axis], c.stride[axis], c.padding[axis]) for c in self.convs()] + [
            (1, 1, 0)]

    @property
    def receptive_field(self) -> Axes3:
        """Receptive field of one output cell ``(z, y, x)``: channels, px, px."""
        r = [receptive_field(self.layer_geometry(a))[0] for a in range(3)]
        return (r[0], r[1], r[2])

    # ----------------------------------------------------------------- forward
    def raw(self, x: torch.Tensor) -> torch.Tensor:
        """Pre-activation outputs (logits and raw size channels), for training losses."""
        out: torch.Tensor = self.head(self.features(x))
        return out

    def activate(self, z: torch.Tensor) -> torch.Tensor:
        """Apply the contract's activations to raw outputs ``z`` (N, K, Gz, Gy, Gx)."""
        b = self.config.wh_bound
        size = b * torch.tanh(z / b) if b > 0 else z
        size_mask: torch.Tensor = self._size_mask  # type: ignore[assignment]
        signed_mask: torch.Tensor = self._signed_mask  # type: ignore[assignment]
        return torch.where(size_mask, size,
                           torch.where(signed_mask, torch.tanh(z), torch.sigmoid(z)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activate(self.raw(x))

    # ----------------------------------------------------------------- export helpers
    def fused_layers(self) -> list[FusedConv3D]:
        """Every convolution with batch norm folded, the output layer last (no activation)."""
        layers = [c.fused() for c in self.convs()]
        bias = self.head.bias
        assert bias is not None
        layers.append(FusedConv3D(weight=self.head.weight.detach().float().numpy().copy(),
                                  bias=bias.detach().float().numpy().copy(),
                                  stride=(1, 1, 1), padding=(0, 0, 0), negative_slope=None))
        return layers

    def masks(self) -> tuple[NDArray[np.bool_], NDArray[np.bool_]]:
        """``(K,)`` masks of the size channels and of the signed (tanh) channels."""
        size: torch.Tensor = self._size_mask  # type: ignore[assignment]
        signed: torch.Tensor = self._signed_mask  # type: ignore[assignment]
        return size.view(-1).cpu().numpy().copy(), signed.view(-1).cpu().numpy().copy()

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


# --------------------------------------------------------------------------- contract

def build_contract3d(model: YoloCianna3D, overrides: Mapping[str, Any] | None = None
                     ) -> ModelContract:
    """The ``ndim: 3`` contract of ``model``: derived fields, SDC2 defaults, then overrides.

    Derived (cannot be overridden with another value): ``format_version`` 1, ``ndim`` 3,
    ``input`` ``image`` (NCDHW), ``output`` ``grid`` (NKDHW), ``stride`` and
    ``receptive_field`` ``[z, y, x]``, ``priors`` ``[[w, h, d]]``, ``box_channels``,
    ``box_encoding``. Defaults: :data:`SDC2_PARAMS` (those whose channels the network
    has), :data:`SDC2_NORMALISATION`, tile ``[512, 128, 128]``, overlap twice the halo
    (capped below the tile), the SDC2 pixel (2.8"), beam (7") and band centre (1050
    MHz), IoU NMS at 0.3, thresholds ``{"default": 0.5}``.
    """
    cfg = model.config
    stride = list(cfg.stride)
    rf = list(model.receptive_field)
    derived: dict[str, Any] = {
        "format_version": 1, "ndim": 3,
        "input": {"name": "image", "layout": "NCDHW"},
        "output": {"name": "grid", "layout": "NKDHW"},
        "stride": stride, "receptive_field": rf,
        "priors": [list(p) for p in cfg.priors], "box_channels": list(cfg.box_channels),
        "box_encoding": {"xy": "cell_offset", "wh": "prior_exp"},
    }
    tile = [max(512, 2 * stride[0]), max(128, 2 * stride[1]), max(128, 2 * stride[2])]
    halo = [-(-math.ceil(r / 2) // s) * s for r, s in zip(rf, stride, strict=True)]
    overlap = [min(2 * h, t - s) for h, t, s in zip(halo, tile, stride, strict=True)]
    params = [p for p in SDC2_PARAMS if all(c in cfg.box_channels for c in p["channels"])]
    doc: dict[str, Any] = {
        "name": "yolo-cianna-3d-streamdet", "description": "", **derived,
        "params": _plain(params), "normalisation": dict(SDC2_NORMALISATION),
        "tile": tile, "overlap": overlap,
        "pixel_scale_arcsec": 2.8, "beam_arcsec": [7.0, 7.0], "freq_mhz": 1050.0,
        "nms": {"kind": "iou", "iou_threshold": 0.3},
        "thresholds": {"default": 0.5},
        "training": {"config": cfg.to_dict()},
    }
    return _contract_with_overrides(doc, derived, overrides)


def to_onnx3d(model: YoloCianna3D, contract: ModelContract, *, opset: int = 17
              ) -> onnx.ModelProto:
    """The ONNX graph of ``model`` (batch norm folded) carrying ``contract``.

    Input ``image`` (N, 1, D, H, W), output ``grid`` (N, K, Gz, Gy, Gx), float32, with
    dynamic N, D, H, W.
    """
    nodes: list[onnx.NodeProto] = []
    inits: list[onnx.TensorProto] = []
    x = contract.input_name
    for i, layer in enumerate(model.fused_layers()):
        inits += [numpy_helper.from_array(layer.weight, f"conv{i}.weight"),
                  numpy_helper.from_array(layer.bias, f"conv{i}.bias")]
        y = f"conv{i}"
        nodes.append(helper.make_node(
            "Conv", [x, f"conv{i}.weight", f"conv{i}.bias"], [y], name=y,
            kernel_shape=list(layer.weight.shape[2:]), strides=list(layer.stride),
            pads=list(layer.padding) * 2, dilations=[1, 1, 1], group=1))
        if layer.negative_slope is not None:
            nodes.append(helper.make_node("LeakyRelu", [y], [f"act{i}"], name=f"act{i}",
                                          alpha=float(layer.negative_slope)))
            y = f"act{i}"
        x = y
    z = x
    size_mask, signed_mask = model.masks()
    inits += [numpy_helper.from_array(size_mask.reshape(1, -1, 1, 1, 1), "size_mask"),
              numpy_helper.from_array(signed_mask.reshape(1, -1, 1, 1, 1), "signed_mask")]
    nodes += [helper.make_node("Sigmoid", [z], ["sigmoid"], name="sigmoid"),
              helper.make_node("Tanh", [z], ["tanh"], name="tanh"),
              helper.make_node("Where", ["signed_mask", "tanh", "sigmoid"], ["unit"],
                               name="signed")]
    size = z
    bound = model.config.wh_bound
    if bound > 0:
        inits.append(numpy_helper.from_array(np.array(bound, np.float32), "wh_bound"))
        nodes += [helper.make_node("Div", [z, "wh_bound"], ["size_scaled"], name="size_div"),
                  helper.make_node("Tanh", ["size_scaled"], ["size_tanh"], name="size_tanh"),
                  helper.make_node("Mul", ["size_tanh", "wh_bound"], ["size"], name="size_mul")]
        size = "size"
    nodes.append(helper.make_node("Where", ["size_mask", size, "unit"],
                                  [contract.output_name], name="activate"))
    graph = helper.make_graph(
        nodes, "streamdet_yolo_cianna_3d",
        [helper.make_tensor_value_info(contract.input_name, TensorProto.FLOAT,
                                       ["N", 1, "D", "H", "W"])],
        [helper.make_tensor_value_info(contract.output_name, TensorProto.FLOAT,
                                       ["N", contract.n_channels, "Gz", "Gy", "Gx"])],
        initializer=inits)
    opsets = [helper.make_opsetid("", opset)]
    proto = helper.make_model(graph, opset_imports=opsets, producer_name="streamdet-export",
                              producer_version=__version__,
                              ir_version=helper.find_min_ir_version_for(opsets))
    proto.doc_string = contract.description
    helper.set_model_props(proto, contract.to_metadata())
    return proto


class Export3DVerificationError(StreamdetError, RuntimeError):
    """ONNX Runtime's output of an exported 3D detector differs from PyTorch's."""


def _verify(model: YoloCianna3D, path: Path, sizes: Sequence[Axes3], *, seed: int,
            rtol: float, atol: float) -> float:
    """Compare ONNX Runtime with PyTorch on batches of 2 per size; return the max abs error."""
    rng = np.random.default_rng(seed)
    mdl = load_model(path, ndim=3, providers=["CPUExecutionProvider"])
    worst = 0.0
    for shape in sizes:
        if any(n % s or n <= 0 for n, s in zip(shape, model.config.stride, strict=True)):
            raise StreamdetValueError(f"verification size {shape} must be positive multiples "
                                      f"of the stride {model.config.stride}")
        x = rng.random((2, 1, *shape)).astype(np.float32)
        with torch.no_grad():
            ref = model(torch.from_numpy(x)).numpy().astype(np.float64)
        got = mdl.run(x).astype(np.float64)
        if got.shape != ref.shape:
            raise Export3DVerificationError(
                f"ONNX output shape {got.shape} differs from PyTorch's {ref.shape}")
        err = np.abs(got - ref)
        bad = err > atol + rtol * np.abs(ref)
        if bad.any():
            raise Export3DVerificationError(
                f"ONNX Runtime output differs from PyTorch on input {x.shape}: "
                f"{int(bad.sum())} of {bad.size} values beyond rtol={rtol}, atol={atol} "
                f"(max abs difference {float(err.max()):.3g})")
        worst = max(worst, float(err.max()))
    return worst


def export_onnx3d(model: YoloCianna3D | str | os.PathLike[str],
                  out_path: str | os.PathLike[str], *,
                  contract: Mapping[str, Any] | None = None, opset: int = 17,
                  overwrite: bool = False,
                  verify_sizes: Sequence[Axes3] = ((64, 32, 32), (128, 48, 40)),
                  rtol: float = 1e-3, atol: float = 1e-4, seed: int = 0) -> ModelContract:
    """Export a 3D network (or a :func:`save_checkpoint3d` file) to a verified ONNX detector.

    Parameters
    ----------
    model : YoloCianna3D or path-like
        The network or a checkpoint (its stored contract fields are applied first).
    out_path : path-like
        ONNX file to write (atomically: nothing is left on failure).
    contract : mapping, optional
        Contract fields to set (``name``, ``thresholds``, ``params``, ...); see
        :func:`build_contract3d`.
    opset : int
        ONNX opset.
    overwrite : bool
        Replace an existing file.
    verify_sizes : sequence of (D, H, W)
        Input sizes (multiples of the stride) on which ONNX Runtime must reproduce the
        PyTorch forward pass (batches of 2 random cubes).
    rtol, atol : float
        Tolerances of that comparison.
    seed : int
        Seed of the verification inputs.

    Returns
    -------
    ModelContract
        The contract in the file (read back with :func:`streamdet.engine.contract.load_model`,
        ``ndim=3``).

    Raises
    ------
    Export3DVerificationError
        ONNX Runtime and PyTorch disagree (the file is not written).
    """
    stored: dict[str, Any] = {}
    if isinstance(model, YoloCianna3D):
        net = model
    else:
        net, stored = load_checkpoint3d(model)
    check_output(out_path, overwrite=overwrite)
    was_training = net.training
    net.eval()
    try:
        spec = build_contract3d(net, {**stored, **dict(contract or {})})
        proto = to_onnx3d(net, spec, opset=opset)
        onnx.checker.check_model(proto, full_check=True)
        with atomic_path(out_path, overwrite=overwrite) as tmp:
            onnx.save_model(proto, tmp)
            _verify(net, Path(tmp), verify_sizes, seed=seed, rtol=rtol, atol=atol)
    finally:
        net.train(was_training)
    return spec


# --------------------------------------------------------------------------- checkpoints
def save_checkpoint3d(model: YoloCianna3D, path: str | os.PathLike[str], *,
                      contract: Mapping[str, Any] | None = None) -> None:
    """Save weights, architecture and contract fields (``torch.load(weights_only=True)`` safe)."""
    with atomic_path(path, overwrite=True) as tmp:
        torch.save({"format": CHECKPOINT_FORMAT_3D, "config": model.config.to_dict(),
                    "state_dict": model.state_dict(), "contract": _plain(dict(contract or {}))},
                   tmp)


def load_checkpoint3d(path: str | os.PathLike[str]) -> tuple[YoloCianna3D, dict[str, Any]]:
    """Read a :func:`save_checkpoint3d` file: the network (eval mode) and its contract fields."""
    doc = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(doc, dict) or doc.get("format") != CHECKPOINT_FORMAT_3D:
        raise StreamdetValueError(f"{os.fspath(path)!r} is not a 3D streamdet checkpoint")
    net = YoloCianna3D(Detector3DConfig.from_dict(doc["config"]))
    net.load_state_dict(doc["state_dict"])
    net.eval()
    return net, dict(doc.get("contract", {}))
