"""Export a :class:`~export.model.YoloCianna` network to a streamdet ONNX detector.

The ONNX graph is written directly from the network's layer list (batch norm
folded into the convolutions): Conv + LeakyRelu blocks, a 1x1 Conv, and the
contract's activations (Sigmoid, bounded Tanh, Where). This avoids the
deprecated TorchScript exporter and the extra dependencies of the dynamo one,
and the result is checked against PyTorch itself: :func:`export_onnx` runs
``onnx.checker``, loads the file with streamdet's own loader (contract
validation included) and compares ONNX Runtime's output with the PyTorch
forward pass on two input sizes before renaming the file into place.

``precision="fp16"`` (``streamdet export --fp16``) writes the same graph with float16
weights and compute (:func:`to_fp16`), float32 input and output through a Cast at each
end, so the engine and the contract's I/O do not change; the FP32 graph is checked
against PyTorch first, then the FP16 one against the FP32 one on the same random tiles
(the maximum absolute and relative differences of the activated grid are recorded in
the contract's ``training["fp16_check"]``, and the export refused above ``fp16_atol``).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from numpy.typing import NDArray
from onnx import TensorProto, helper, numpy_helper

from streamdet._version import __version__
from streamdet.engine.contract import ModelContract, load_model
from streamdet.errors import StreamdetError, StreamdetFileNotFoundError, StreamdetValueError
from streamdet.io._atomic import atomic_path, check_output

from .model import DetectorConfig, YoloCianna

__all__ = [
    "CHECKPOINT_FORMAT",
    "FP16_ATOL",
    "PRECISIONS",
    "Checkpoint",
    "ExportVerificationError",
    "band_scaled_fields",
    "build_contract",
    "export_onnx",
    "load_checkpoint",
    "params_with_channels",
    "save_checkpoint",
    "to_fp16",
    "to_onnx",
]

CHECKPOINT_FORMAT = "streamdet-checkpoint-1"
"""Value of the ``"format"`` key of checkpoints written by :func:`save_checkpoint`."""

MIN_OPSET = 13

PRECISIONS = ("fp32", "fp16")
"""Precisions :func:`export_onnx` writes (``precision=``)."""

FP16_ATOL = 2e-2
"""Largest absolute difference of the activated grid allowed between the FP16 and FP32
exports on the check tiles (``export_onnx(..., fp16_atol=)``).

Every grid value is a sigmoid (offsets, objectness, parameters in [0, 1]) or a bounded
size logit ``wh_bound * tanh(z / wh_bound)``. float16 keeps 11 significant bits (a
relative rounding of 4.9e-4 per weight and per activation), and the roundings through
the stacked convolutions add up to ~1e-3 on a sigmoid output. Measured on the check
tiles of :func:`export_onnx`: 5e-5 on the tests' small random network and 1.4e-3 on a
560 MHz training checkpoint with ONNX Runtime's CPU provider (which, lacking float16
kernels for most ops, computes between Casts it inserts, so only the weights are
rounded), 2.3e-3 for the same checkpoint computed in float16 throughout (PyTorch
``half()``, as a GPU does); 2e-2, ten times that, of a sigmoid is 0.02 of a
cell in position (0.3 px at stride 16), ~2% in the decoded flux or size, and moves only
sources within 0.02 of the objectness threshold. A larger difference means the network
overflows or underflows float16 somewhere (activations above 65504), and the export is
refused.
"""

_FP16_OPS = frozenset({"Conv", "LeakyRelu", "Relu", "Sigmoid", "Tanh", "Div", "Mul", "Add",
                       "Sub", "Where", "Identity"})

SDC1_PARAMS: tuple[dict[str, Any], ...] = (
    {"name": "flux", "unit": "Jy", "decode": "log_minmax", "channels": ["flux"],
     "min": 1.97e-6, "max": 2e-3},
    {"name": "bmaj", "unit": "arcsec", "decode": "log_minmax", "channels": ["bmaj"],
     "min": 0.9, "max": 60.0},
    {"name": "bmin", "unit": "arcsec", "decode": "log_minmax", "channels": ["bmin"],
     "min": 0.3, "max": 30.0},
    {"name": "pa", "unit": "deg", "decode": "angle_cos_sin01", "channels": ["pa_cos", "pa_sin"],
     "period": 180.0},
)
"""SDC1 parameter decoding (YOLO-CIANNA's normalisation limits)."""

SDC1_NORMALISATION: dict[str, Any] = {
    "kind": "clip_tanh", "clip_min": 4e-7, "clip_max": 4e-5, "tanh_scale": 3.0}

SDC1_NOISE = 3.8e-7
"""Map noise (Jy/beam) of the 560 MHz SDC1 image that the limits above were set for."""

SDC1_BEAM = 1.5
"""Restoring beam FWHM (arcsec) of that image."""


def band_scaled_fields(noise: float, beam_arcsec: float, *,
                       size_floor_beams: tuple[float, float] | None = None) -> dict[str, Any]:
    """Contract ``normalisation`` and ``params`` for an image of given noise and beam.

    YOLO-CIANNA's limits were set for the 560 MHz SDC1 map (noise
    :data:`SDC1_NOISE`, beam :data:`SDC1_BEAM`): the clip range is 1.05-105 x that
    noise and the faintest decodable flux 5.2 x it; the smallest decodable major and
    minor axes are 0.6 and 0.2 beams. Here they scale with ``noise`` and
    ``beam_arcsec``, so that the network sees the same signal-to-noise range and can
    state the same sizes relative to the beam in any band (at 1.4 GHz, noise
    0.10 uJy/beam, the fixed 0.4 uJy/beam floor clips everything below 4 sigma, and the
    fixed 0.9 arcsec floor on the major axis is 1.5 beams). The largest decodable
    flux and sizes stay. The SDC1 noise and beam give the SDC1 values exactly.

    Parameters
    ----------
    noise : float
        Map noise rms, Jy/beam (> 0).
    beam_arcsec : float
        Restoring beam FWHM, arcsec (> 0).
    size_floor_beams : (float, float), optional
        Smallest decodable major and minor axes, in beams, instead of the SDC1
        (0.6, 0.2): most sources of an SKA sky are far smaller than the beam, and a
        network can only state an unresolved source's size (learnt from the
        population) down to its floor.

    Returns
    -------
    dict
        ``{"normalisation": {...}, "params": [...]}``, for :func:`build_contract`.
    """
    for name, value in (("noise", noise), ("beam_arcsec", beam_arcsec)):
        if not (math.isfinite(value) and value > 0):
            raise StreamdetValueError(f"{name} must be a finite positive number, got {value!r}")
    # (x * 1.0 == x exactly, so the SDC1 noise and beam reproduce the SDC1 limits.)
    r_noise, r_beam = noise / SDC1_NOISE, beam_arcsec / SDC1_BEAM
    norm = dict(SDC1_NORMALISATION)
    norm["clip_min"] = SDC1_NORMALISATION["clip_min"] * r_noise
    norm["clip_max"] = SDC1_NORMALISATION["clip_max"] * r_noise
    params = [dict(p) for p in SDC1_PARAMS]
    scale = {"flux": r_noise, "bmaj": r_beam, "bmin": r_beam}
    floor = {p["name"]: p["min"] * scale[p["name"]] for p in params if p["name"] in scale}
    if size_floor_beams is not None:
        a, b = (float(v) for v in size_floor_beams)
        if not (0 < b <= a < 10):
            raise StreamdetValueError(f"size_floor_beams must be 0 < minor <= major < 10 beams, "
                                      f"got {size_floor_beams!r}")
        floor.update(bmaj=a * beam_arcsec, bmin=b * beam_arcsec)
    for p in params:
        if p["name"] in floor:
            p["min"] = min(floor[p["name"]], 0.5 * p["max"])
    return {"normalisation": norm, "params": params}


def params_with_channels(params: Sequence[Mapping[str, Any]], box_channels: Sequence[str]
                         ) -> list[dict[str, Any]]:
    """The parameters of ``params`` whose channels are all among ``box_channels``."""
    return [dict(p) for p in params if all(c in box_channels for c in p["channels"])]

_DERIVED = ("format_version", "ndim", "input", "output", "stride", "receptive_field", "priors",
            "box_channels", "box_encoding")


class ExportVerificationError(StreamdetError, RuntimeError):
    """The exported ONNX model does not reproduce the PyTorch network."""


# --------------------------------------------------------------------------- checkpoints
@dataclass(frozen=True)
class Checkpoint:
    """A loaded checkpoint: the network (eval mode) and its stored contract fields."""

    model: YoloCianna
    contract: dict[str, Any]


def save_checkpoint(model: YoloCianna, path: str | os.PathLike[str], *,
                    contract: Mapping[str, Any] | None = None,
                    overwrite: bool = False) -> Path:
    """Write ``{"format", "config", "state_dict", "contract"}`` with ``torch.save`` (atomic).

    Parameters
    ----------
    model : YoloCianna
    path : path-like
        Output file (conventionally ``.pt``).
    contract : mapping, optional
        Contract fields to embed at export (name, thresholds, training, pixel scale...).
    overwrite : bool
        Replace an existing file.
    """
    doc = {"format": CHECKPOINT_FORMAT, "config": model.config.to_dict(),
           "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
           "contract": json.loads(json.dumps(dict(contract or {})))}
    with atomic_path(path, overwrite=overwrite) as tmp:
        torch.save(doc, tmp)
    return Path(path)


def load_checkpoint(path: str | os.PathLike[str]) -> Checkpoint:
    """Read a checkpoint written by :func:`save_checkpoint` (``weights_only`` loading).

    Raises
    ------
    StreamdetFileNotFoundError
        No such file.
    StreamdetValueError
        Not a streamdet checkpoint, or its weights do not fit its config.
    """
    p = Path(path)
    if not p.is_file():
        raise StreamdetFileNotFoundError(f"checkpoint {str(p)!r} does not exist")
    try:
        doc = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises pickle, zip and runtime errors alike
        raise StreamdetValueError(f"{str(p)!r} is not a readable checkpoint: {exc}") from exc
    if not isinstance(doc, dict) or doc.get("format") != CHECKPOINT_FORMAT:
        raise StreamdetValueError(
            f"{str(p)!r} is not a streamdet checkpoint (expected a dict with "
            f"format {CHECKPOINT_FORMAT!r})")
    for key in ("config", "state_dict"):
        if key not in doc:
            raise StreamdetValueError(f"checkpoint {str(p)!r} lacks {key!r}")
    model = YoloCianna(DetectorConfig.from_dict(doc["config"]))
    try:
        model.load_state_dict(doc["state_dict"])
    except RuntimeError as exc:
        raise StreamdetValueError(
            f"checkpoint {str(p)!r}: weights do not fit its config: {exc}") from exc
    model.eval()
    return Checkpoint(model=model, contract=dict(doc.get("contract") or {}))


# --------------------------------------------------------------------------- contract
def _plain(value: Any) -> Any:
    return json.loads(json.dumps(value))


def _contract_with_overrides(doc: dict[str, Any], derived: Mapping[str, Any],
                            overrides: Mapping[str, Any] | None) -> ModelContract:
    """The contract of ``doc`` (derived fields and defaults) with ``overrides`` applied;
    a derived field (:data:`_DERIVED`) may only be overridden with its own value."""
    doc = dict(doc)
    for key, value in _plain(dict(overrides or {})).items():
        if key in _DERIVED and value != derived[key]:
            raise StreamdetValueError(
                f"contract field {key!r} is derived from the network ({derived[key]!r}) and "
                f"cannot be set to {value!r}")
        doc[key] = value
    return ModelContract.from_dict(_plain(doc))


def build_contract(model: YoloCianna, overrides: Mapping[str, Any] | None = None
                   ) -> ModelContract:
    """The contract of ``model``: fields derived from the network, defaults, then overrides.

    Derived fields (``ndim``, ``stride``, ``receptive_field``, ``priors``,
    ``box_channels``, ``input``, ``output``, ``box_encoding``, ``format_version``)
    cannot be overridden with a different value. Defaults: SDC1 parameters (those
    whose channels the network has) and normalisation, tile 512, overlap 32,
    thresholds ``{"default": 0.5}``, DIoU NMS at 0.5, measurement with ``fit_snr`` 20
    above the local median (``background``).
    """
    cfg = model.config
    s = cfg.stride
    r = model.receptive_field
    derived: dict[str, Any] = {
        "format_version": 1, "ndim": 2,
        "input": {"name": "image", "layout": "NCHW"},
        "output": {"name": "grid", "layout": "NKHW"},
        "stride": [s, s], "receptive_field": [r, r],
        "priors": [list(p) for p in cfg.priors], "box_channels": list(cfg.box_channels),
        "box_encoding": {"xy": "cell_offset", "wh": "prior_exp"},
    }
    doc: dict[str, Any] = {
        "name": "yolo-cianna-streamdet", "description": "", **derived,
        "params": params_with_channels(SDC1_PARAMS, cfg.box_channels),
        "normalisation": dict(SDC1_NORMALISATION),
        "tile": [512, 512], "overlap": [32, 32],
        "pixel_scale_arcsec": None, "beam_arcsec": None, "freq_mhz": None,
        "nms": {"kind": "diou", "iou_threshold": 0.5},
        "thresholds": {"default": 0.5},
        # forced photometry, the free fit from a peak of 20 sigma (retune --fit-snr
        # chose 20 and 50 for the bundled models; a contract without the field fits all)
        "measure": {"bmin_resolved": 0.5, "bmaj_resolved": 0.0, "fit_snr": 20.0,
                    "background": True},
        "training": {"config": cfg.to_dict()},
    }
    return _contract_with_overrides(doc, derived, overrides)


# --------------------------------------------------------------------------- ONNX graph
def to_onnx(model: YoloCianna, contract: ModelContract, *, opset: int = 17) -> onnx.ModelProto:
    """Build the ONNX graph of ``model`` (batch norm folded) carrying ``contract``.

    Input ``image`` (N, 1, H, W) and output ``grid`` (N, K, Gy, Gx), float32, with
    dynamic N, H, W.
    """
    latest = onnx.defs.onnx_opset_version()
    if not MIN_OPSET <= opset <= latest:
        raise StreamdetValueError(f"opset {opset} must be in [{MIN_OPSET}, {latest}]")
    nodes: list[onnx.NodeProto] = []
    inits: list[onnx.TensorProto] = []
    x = contract.input_name
    for i, layer in enumerate(model.fused_layers()):
        k = int(layer.weight.shape[-1])
        inits += [numpy_helper.from_array(layer.weight, f"conv{i}.weight"),
                  numpy_helper.from_array(layer.bias, f"conv{i}.bias")]
        y = f"conv{i}"
        nodes.append(helper.make_node(
            "Conv", [x, f"conv{i}.weight", f"conv{i}.bias"], [y], name=y,
            kernel_shape=[k, k], strides=[layer.stride] * 2, pads=[layer.padding] * 4,
            dilations=[1, 1], group=1))
        if layer.negative_slope is not None:
            nodes.append(helper.make_node("LeakyRelu", [y], [f"act{i}"], name=f"act{i}",
                                          alpha=float(layer.negative_slope)))
            y = f"act{i}"
        x = y
    z = x
    mask = model.size_mask().reshape(1, -1, 1, 1)
    inits.append(numpy_helper.from_array(mask, "size_mask"))
    nodes.append(helper.make_node("Sigmoid", [z], ["sigmoid"], name="sigmoid"))
    bound = model.config.wh_bound
    size = z
    if bound > 0:
        inits.append(numpy_helper.from_array(np.array(bound, np.float32), "wh_bound"))
        nodes += [helper.make_node("Div", [z, "wh_bound"], ["size_scaled"], name="size_div"),
                  helper.make_node("Tanh", ["size_scaled"], ["size_tanh"], name="size_tanh"),
                  helper.make_node("Mul", ["size_tanh", "wh_bound"], ["size"], name="size_mul")]
        size = "size"
    nodes.append(helper.make_node("Where", ["size_mask", size, "sigmoid"],
                                  [contract.output_name], name="activate"))
    k_out = contract.n_channels
    graph = helper.make_graph(
        nodes, "streamdet_yolo_cianna",
        [helper.make_tensor_value_info(contract.input_name, TensorProto.FLOAT,
                                       ["N", 1, "H", "W"])],
        [helper.make_tensor_value_info(contract.output_name, TensorProto.FLOAT,
                                       ["N", k_out, "Gy", "Gx"])],
        initializer=inits)
    opsets = [helper.make_opsetid("", opset)]
    proto = helper.make_model(graph, opset_imports=opsets, producer_name="streamdet-export",
                              producer_version=__version__,
                              ir_version=helper.find_min_ir_version_for(opsets))
    proto.doc_string = contract.description
    helper.set_model_props(proto, contract.to_metadata())
    return proto


def to_fp16(proto: onnx.ModelProto) -> onnx.ModelProto:
    """The float16 version of a float32 detector graph written by :func:`to_onnx`.

    Every float32 initializer (weights, biases, constants) becomes float16 and every
    node computes in float16; a ``Cast`` after the graph input and one before the
    graph output keep the input and output float32, so the file is used exactly like
    the float32 one (metadata, names and shapes unchanged).

    Parameters
    ----------
    proto : onnx.ModelProto
        One float32 input and one float32 output; only element-wise ops, ``Conv`` and
        ``Where`` (those of :func:`to_onnx`).

    Returns
    -------
    onnx.ModelProto
        A new model; ``proto`` is not modified.

    Raises
    ------
    StreamdetValueError
        An op outside that set (whose float attributes or inputs could need float32),
        or a weight beyond float16's range (|w| > 65504).
    """
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    g = out.graph
    if len(g.input) != 1 or len(g.output) != 1:
        raise StreamdetValueError("to_fp16 needs a graph with one input and one output")
    other = sorted({n.op_type for n in g.node} - _FP16_OPS)
    if other:
        raise StreamdetValueError(f"to_fp16 does not convert the op(s) {other}; it handles "
                                  f"{sorted(_FP16_OPS)}")
    for t in g.initializer:
        if t.data_type != TensorProto.FLOAT:
            continue
        w = numpy_helper.to_array(t)
        big = float(np.abs(w).max()) if w.size else 0.0
        if not np.isfinite(big) or big > float(np.finfo(np.float16).max):
            raise StreamdetValueError(f"initializer {t.name!r} (max |w| {big:.3g}) does not "
                                      f"fit in float16")
        t.CopyFrom(numpy_helper.from_array(w.astype(np.float16), t.name))
    src, dst = g.input[0].name, g.output[0].name
    src16, dst16 = f"{src}__fp16", f"{dst}__fp16"
    for node in g.node:
        node.input[:] = [src16 if i == src else i for i in node.input]
        node.output[:] = [dst16 if o == dst else o for o in node.output]
    nodes = [helper.make_node("Cast", [src], [src16], name="cast_input_fp16",
                              to=TensorProto.FLOAT16),
             *g.node,
             helper.make_node("Cast", [dst16], [dst], name="cast_output_fp32",
                              to=TensorProto.FLOAT)]
    del g.node[:]
    g.node.extend(nodes)
    del g.value_info[:]
    return out


# --------------------------------------------------------------------------- verification
def _torch_forward(model: YoloCianna, x: NDArray[np.float32]) -> NDArray[np.float32]:
    with torch.no_grad():
        out: NDArray[np.float32] = model(torch.from_numpy(x)).numpy()
    return out


def _ort_forward(path: Path, x: NDArray[np.float32]) -> NDArray[np.float32]:
    mdl = load_model(path, ndim=2, providers=["CPUExecutionProvider"])
    return mdl.run(x)


def _check_inputs(sizes: Sequence[tuple[int, int]], stride: int, seed: int
                  ) -> list[NDArray[np.float32]]:
    """Batches of 2 random tiles, one per size: sparse bright pixels on a faint background."""
    rng = np.random.default_rng(seed)
    out = []
    for h, w in sizes:
        if h % stride or w % stride or h <= 0 or w <= 0:
            raise StreamdetValueError(
                f"verification size {(h, w)} must be positive multiples of the stride {stride}")
        # like normalised sky
        out.append((rng.random((2, 1, h, w)) ** 4).astype(np.float32))
    return out


def _verify(model: YoloCianna, path: Path, inputs: Sequence[NDArray[np.float32]], *,
            rtol: float, atol: float) -> list[NDArray[np.float32]]:
    """Check ONNX Runtime against PyTorch on ``inputs``; return ONNX Runtime's outputs."""
    outs = []
    for x in inputs:
        ref = _torch_forward(model, x)
        got = _ort_forward(path, x)
        if got.shape != ref.shape:
            raise ExportVerificationError(
                f"ONNX output shape {got.shape} differs from PyTorch's {ref.shape} for input "
                f"{x.shape}")
        err = np.abs(got.astype(np.float64) - ref)
        bad = err > atol + rtol * np.abs(ref)
        if bad.any():
            raise ExportVerificationError(
                f"ONNX Runtime output differs from PyTorch on input {x.shape}: "
                f"{int(bad.sum())} of {bad.size} values beyond rtol={rtol}, atol={atol} "
                f"(max abs difference {float(err.max()):.3g})")
        outs.append(got)
    return outs


def _fp16_difference(path: Path, inputs: Sequence[NDArray[np.float32]],
                     refs: Sequence[NDArray[np.float32]], atol: float) -> dict[str, Any]:
    """Compare the FP16 file at ``path`` with the FP32 outputs ``refs``; refuse above atol.

    Returns ``{"max_abs", "mean_abs", "max_rel", "atol", "inputs"}``: differences of the
    activated grid over every value (relative ones where the FP32 value is >= 0.01).
    """
    max_abs = mean_sum = 0.0
    max_rel = 0.0
    count = 0
    for x, ref in zip(inputs, refs, strict=True):
        got = _ort_forward(path, x)
        if got.shape != ref.shape:
            raise ExportVerificationError(
                f"FP16 output shape {got.shape} differs from FP32's {ref.shape} for input "
                f"{x.shape}")
        err = np.abs(got.astype(np.float64) - ref)
        if not np.isfinite(err).all():
            raise ExportVerificationError(
                f"the FP16 model gives non-finite values on input {x.shape} (float16 "
                f"overflow); export it in fp32")
        max_abs = max(max_abs, float(err.max()))
        mean_sum += float(err.sum())
        count += err.size
        big = np.abs(ref) >= 0.01
        if big.any():
            max_rel = max(max_rel, float((err[big] / np.abs(ref[big])).max()))
    report = {"max_abs": max_abs, "mean_abs": mean_sum / max(count, 1), "max_rel": max_rel,
              "atol": atol, "inputs": [list(x.shape) for x in inputs]}
    if max_abs > atol:
        raise ExportVerificationError(
            f"the FP16 export differs from the FP32 one by up to {max_abs:.3g} on the "
            f"activated grid (relative {max_rel:.3g}), above the tolerance {atol:g}: export "
            f"this network in fp32 (or raise fp16_atol knowingly)")
    return report


def export_onnx(model: YoloCianna | str | os.PathLike[str], out_path: str | os.PathLike[str], *,
                contract: Mapping[str, Any] | None = None, opset: int = 17,
                overwrite: bool = False,
                verify_sizes: Sequence[tuple[int, int]] = ((128, 128), (256, 192)),
                rtol: float = 1e-3, atol: float = 1e-4, seed: int = 0,
                precision: str = "fp32", fp16_atol: float = FP16_ATOL) -> ModelContract:
    """Export a network or a checkpoint to a verified streamdet ONNX detector.

    Parameters
    ----------
    model : YoloCianna or path-like
        The network, or a checkpoint written by :func:`save_checkpoint` (its stored
        contract fields are applied before ``contract``).
    out_path : path-like
        ONNX file to write (atomically: nothing is left behind on failure).
    contract : mapping, optional
        Contract fields to set (``name``, ``description``, ``thresholds``, ``params``,
        ``normalisation``, ``tile``, ``overlap``, ``pixel_scale_arcsec``,
        ``beam_arcsec``, ``freq_mhz``, ``nms``, ``training``); see :func:`build_contract`.
    opset : int
        ONNX opset (>= 13).
    overwrite : bool
        Replace an existing file.
    verify_sizes : sequence of (H, W)
        Input sizes (px, multiples of the stride) on which ONNX Runtime must reproduce
        the PyTorch forward pass (batch of 2).
    rtol, atol : float
        Tolerances of that comparison.
    seed : int
        Seed of the verification inputs.
    precision : {"fp32", "fp16"}
        ``"fp16"``: float16 weights and compute, float32 input and output
        (:func:`to_fp16`); the FP32 graph is verified against PyTorch, then the FP16
        graph against the FP32 one on the same tiles. The contract records
        ``training["precision"] = "fp16"`` and the differences found
        (``training["fp16_check"]``: ``max_abs``, ``mean_abs``, ``max_rel`` of the
        activated grid, ``atol``, ``inputs``).
    fp16_atol : float
        Largest absolute FP16 - FP32 difference of the activated grid accepted; see
        :data:`FP16_ATOL`.

    Returns
    -------
    ModelContract
        The contract embedded in the file.

    Raises
    ------
    ExportVerificationError
        ONNX Runtime and PyTorch disagree, or the FP16 graph and the FP32 one by more
        than ``fp16_atol`` (the file is not written).
    """
    if precision not in PRECISIONS:
        raise StreamdetValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if not (math.isfinite(fp16_atol) and fp16_atol > 0):
        raise StreamdetValueError(f"fp16_atol must be a finite positive number, got "
                                  f"{fp16_atol!r}")
    stored: dict[str, Any] = {}
    if isinstance(model, YoloCianna):
        net = model
    else:
        ckpt = load_checkpoint(model)
        net, stored = ckpt.model, ckpt.contract
    check_output(out_path, overwrite=overwrite)
    was_training = net.training
    net.eval()
    try:
        spec = build_contract(net, {**stored, **dict(contract or {})})
        proto = to_onnx(net, spec, opset=opset)
        onnx.checker.check_model(proto, full_check=True)
        inputs = _check_inputs(verify_sizes, net.config.stride, seed)
        with atomic_path(out_path, overwrite=overwrite) as tmp:
            onnx.save_model(proto, tmp)
            refs = _verify(net, tmp, inputs, rtol=rtol, atol=atol)
            if precision == "fp16":
                half = to_fp16(proto)
                onnx.checker.check_model(half, full_check=True)
                onnx.save_model(half, tmp)
                report = _fp16_difference(tmp, inputs, refs, fp16_atol)
                spec = dataclasses.replace(spec, training={
                    **spec.training, "precision": "fp16", "fp16_check": report})
                del half.metadata_props[:]
                helper.set_model_props(half, spec.to_metadata())
                onnx.save_model(half, tmp)
                load_model(tmp, ndim=2, providers=["CPUExecutionProvider"])  # final contract
    finally:
        net.train(was_training)
    return spec
