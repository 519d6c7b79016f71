"""Import networks trained with YOLO-CIANNA into streamdet ONNX detectors.

CIANNA (github.com/Deyht/CIANNA) saves a trained network as a binary (``bin=1``,
the format of published models) or text (``bin=0``) file. :func:`import_cianna`
reads either, rebuilds the network as an ONNX graph with ``onnx.helper`` (no
torch) that reproduces CIANNA's raw inference output (``raw_output=1``,
``drop_mode="AVG_MODEL"``), and writes it with the streamdet model contract.

The contract's box channels are CIANNA's, in CIANNA's order: ``x, y, z, w, h, d,
prob, obj``, then the classes and the parameters; the engine ignores ``z`` and
``d``. ``w, h`` are CIANNA's size terms ``t`` (size = prior * exp(t)), so the
standard ``prior_exp`` encoding applies. What a save file does not hold (input
normalisation, parameter decoding, pixel scale, tiling, thresholds) comes from a
preset and keyword overrides; ``preset="sdc1-cianna2024"`` reproduces the
published SDC1 configuration of Cornu et al. (2024).

Coordinates: CIANNA places pixel ``i`` over ``[i, i + 1)``; streamdet centres it on
``i``, so a box decoded by streamdet is CIANNA's shifted by -0.5 px on both axes.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from streamdet._version import __version__
from streamdet.engine.contract import ModelContract, load_model
from streamdet.errors import StreamdetFileNotFoundError, StreamdetValueError
from streamdet.io._atomic import atomic_path, check_output

from ._cianna_format import CiannaNetwork, ConvLayer, read_cianna
from ._cianna_onnx import GN_EPS, build_graph, grid_stride, receptive_field

__all__ = ["PRESETS", "SDC1_CIANNA2024", "cianna_contract", "import_cianna"]

_SDC1_LN_LIMITS = {"flux": (-13.13647296682373, -6.214608098422191),
                   "bmaj": (-0.10536051565782628, 4.0943445622221004),
                   "bmin": (-1.2039728043259361, 3.4011973816621555)}
"""ln limits of YOLO-CIANNA's SDC1 parameter normalisation (CIANNA's
``examples/SKAO_SDC1/train_cat_norm_lims.txt``): flux [1.972e-6, 2e-3] Jy, bmaj
[0.9, 60] arcsec, bmin [0.3, 30] arcsec."""

SDC1_CIANNA2024: dict[str, Any] = {
    "name": "yolo-cianna-sdc1-2024",
    "description": "YOLO-CIANNA SDC1 560 MHz configuration (Cornu et al. 2024): 9 priors, "
                   "5 parameters (ln flux, ln bmaj, ln bmin min-max normalised, cos PA, "
                   "(sin PA + 1)/2), clip + tanh(3x) input normalisation, 512 px tiles.",
    "param_channels": ["flux", "bmaj", "bmin", "pa_cos", "pa_sin"],
    "params": [
        {"name": name, "unit": unit, "decode": "log_minmax", "channels": [name],
         "min": float(f"{np.exp(_SDC1_LN_LIMITS[name][0]):.12g}"),
         "max": float(f"{np.exp(_SDC1_LN_LIMITS[name][1]):.12g}")}
        for name, unit in (("flux", "Jy"), ("bmaj", "arcsec"), ("bmin", "arcsec"))
    ] + [{"name": "pa", "unit": "deg", "decode": "angle_cos_sin01",
          "channels": ["pa_cos", "pa_sin"], "period": 180.0}],
    "normalisation": {"kind": "clip_tanh", "clip_min": 4e-7, "clip_max": 4e-5,
                      "tanh_scale": 3.0},
    "tile": [512, 512],
    "overlap": [32, 32],
    "pixel_scale_arcsec": 0.6,
    "beam_arcsec": [1.5, 1.5],
    "freq_mhz": 560.0,
    "nms": {"kind": "diou", "iou_threshold": 0.5},
    "thresholds": {
        # Per-prior objectness thresholds tuned on the SDC1 scorer for the published
        # model (CIANNA's SDC1 example): best score ("YOLO-CIANNA-ref") and purity
        # ("YOLO-CIANNA-alt").
        "default": [0.2314, 0.1449, 0.2602, 0.1289, 0.2454, 0.2183, 0.0602, 0.0677, 0.0536],
        "best": [0.2314, 0.1449, 0.2602, 0.1289, 0.2454, 0.2183, 0.0602, 0.0677, 0.0536],
        "purity": [0.6102, 0.5424, 0.6441, 0.4407, 0.6271, 0.6102, 0.7119, 0.7288, 0.88],
    },
    "training": {"reference": "Cornu et al. 2024, YOLO-CIANNA SDC1 (zenodo.org/records/"
                              "12801421)",
                 "preset_requires": {"nb_box": 9, "nb_class": 0, "nb_param": 5}},
}
"""Preset ``"sdc1-cianna2024"``: the published YOLO-CIANNA SDC1 configuration."""

PRESETS: dict[str, dict[str, Any]] = {"sdc1-cianna2024": SDC1_CIANNA2024}
"""Contract presets by name."""

_SETTABLE = ("name", "description", "params", "normalisation", "tile", "overlap",
             "pixel_scale_arcsec", "beam_arcsec", "freq_mhz", "nms", "thresholds", "training",
             "param_channels", "class_channels")
_DERIVED = ("format_version", "ndim", "input", "output", "stride", "receptive_field",
            "priors", "box_channels", "box_encoding")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _layer_summary(net: CiannaNetwork) -> list[str]:
    out = []
    for ly in net.layers:
        if isinstance(ly, ConvLayer):
            fx, fy, _ = ly.f_size
            out.append(f"conv {fx}x{fy}/{ly.stride[0]} pad {ly.padding[0]} -> {ly.nb_filters} "
                       f"{ly.activation.text}" + (f" dropout {ly.dropout:g}" if ly.dropout
                                                   else ""))
        else:
            out.append(f"group norm (group size {ly.group_size}, set-off {ly.set_off}) "
                       f"{ly.activation.text}")
    return out


def _channel_names(given: object, n: int, prefix: str, what: str) -> list[str]:
    if given is None:
        return [f"{prefix}{i}" for i in range(n)]
    if not isinstance(given, list | tuple) or not all(isinstance(c, str) for c in given):
        raise StreamdetValueError(f"{what} must be a list of {n} names, got {given!r}")
    if len(given) != n:
        raise StreamdetValueError(f"{what} {list(given)} must name the network's {n} "
                                  f"channels")
    return list(given)


def cianna_contract(net: CiannaNetwork, *, preset: str | None = None,
                    **overrides: Any) -> ModelContract:
    """The streamdet contract of a CIANNA network.

    Parameters
    ----------
    net : CiannaNetwork
        A network read by :func:`export._cianna_format.read_cianna`.
    preset : str, optional
        A key of :data:`PRESETS` (``"sdc1-cianna2024"``).
    **overrides
        Contract fields (``name``, ``description``, ``params``, ``normalisation``,
        ``tile``, ``overlap``, ``pixel_scale_arcsec``, ``beam_arcsec``, ``freq_mhz``,
        ``nms``, ``thresholds``, ``training``; the last two update the preset's
        entries), and ``param_channels`` / ``class_channels``: names of the network's
        parameter and class channels.

    Returns
    -------
    ModelContract

    Raises
    ------
    StreamdetValueError
        Unknown preset or field, a preset that does not fit the network, or a derived
        field set to another value.
    InvalidModelError
        The resulting contract is invalid.
    """
    y = net.yolo
    base: dict[str, Any] = {}
    if preset is not None:
        if preset not in PRESETS:
            raise StreamdetValueError(f"unknown CIANNA preset {preset!r}; known: "
                                      f"{sorted(PRESETS)}")
        base = json.loads(json.dumps(PRESETS[preset]))
        need = base.get("training", {}).get("preset_requires", {})
        have = {"nb_box": y.nb_box, "nb_class": y.nb_class, "nb_param": y.nb_param}
        if any(have[k] != v for k, v in need.items()):
            raise StreamdetValueError(
                f"preset {preset!r} needs a network with {need}; {str(net.path)!r} has "
                f"{have}; give the contract fields explicitly instead")
    for key in overrides:
        if key not in _SETTABLE and key not in _DERIVED:
            raise StreamdetValueError(f"unknown contract field {key!r}; settable fields: "
                                      f"{list(_SETTABLE)}")
    doc = {**base, **json.loads(json.dumps(overrides))}
    for key in ("thresholds", "training"):  # merged: overrides update the preset's entries
        if isinstance(overrides.get(key), dict) and key in base:
            doc[key] = {**base[key], **json.loads(json.dumps(overrides[key]))}

    param_ch = _channel_names(doc.pop("param_channels", None), y.nb_param, "param",
                              "param_channels")
    class_ch = _channel_names(doc.pop("class_channels", None), y.nb_class, "class",
                              "class_channels")
    box_channels = ["x", "y", "z", "w", "h", "d", "prob", "obj", *class_ch, *param_ch]
    sy, sx = grid_stride(net)
    ry, rx = receptive_field(net)
    has_gn = any(not isinstance(ly, ConvLayer) for ly in net.layers)
    derived: dict[str, Any] = {
        "format_version": 1, "ndim": 2,
        "input": {"name": "image", "layout": "NCHW"},
        "output": {"name": "grid", "layout": "NKHW"},
        "stride": [sy, sx], "receptive_field": [ry, rx],
        "priors": [[float(w), float(h)] for w, h, _ in y.priors],
        "box_channels": box_channels,
        "box_encoding": {"xy": "cell_offset", "wh": "prior_exp"},
    }
    for key in _DERIVED:
        if key in doc and doc[key] != derived[key]:
            raise StreamdetValueError(
                f"contract field {key!r} is derived from the CIANNA network "
                f"({derived[key]!r}) and cannot be set to {doc[key]!r}")
    tile = [max(s, -(-n // s) * s) for n, s in ((net.in_dims[1], sy), (net.in_dims[0], sx))]
    training = {
        "importer": f"streamdet {__version__} export.cianna",
        "cianna_file": net.path.name, "cianna_format": net.fmt,
        "cianna_sha256": _sha256(net.path),
        "cianna_input_dims": list(net.in_dims), "layers": _layer_summary(net),
        "yolo": {"nb_box": y.nb_box, "nb_class": y.nb_class, "nb_param": y.nb_param,
                 "fit_dim": y.fit_dim,
                 "slopes_max_min": {name: [float(v) for v in row] for name, row in
                                    zip(("position", "size", "probability", "objectness",
                                         "class", "parameter"), y.slopes, strict=True)}},
        "inference": "CIANNA raw_output=1, drop_mode AVG_MODEL",
        "preset": preset,
    }
    if has_gn:
        training["group_norm"] = (
            f"group normalisation (eps {GN_EPS:g}) normalises over each whole input tile: "
            f"outputs depend weakly on the tile beyond the receptive field, so chunked and "
            f"whole-image inference agree only approximately")
    out: dict[str, Any] = {
        "name": net.path.stem, "description": f"YOLO-CIANNA network imported from "
                                              f"{net.path.name}",
        "params": [{"name": c, "unit": "", "decode": "identity", "channels": [c]}
                   for c in param_ch],
        "normalisation": {"kind": "none"},
        "tile": tile, "overlap": [min(2 * sy, tile[0] - sy), min(2 * sx, tile[1] - sx)],
        "pixel_scale_arcsec": None, "beam_arcsec": None, "freq_mhz": None,
        "nms": {"kind": "diou", "iou_threshold": 0.5},
        "thresholds": {"default": 0.5},
        **doc, **derived,
    }
    out["training"] = {**training, **dict(doc.get("training") or {})}
    return ModelContract.from_dict(json.loads(json.dumps(out)))


def import_cianna(path: str | os.PathLike[str], out_onnx: str | os.PathLike[str], *,
                  preset: str | None = None, overwrite: bool = False, opset: int = 17,
                  **overrides: Any) -> Path:
    """Convert a CIANNA save file into a streamdet ONNX detector.

    Parameters
    ----------
    path : path-like
        CIANNA network file, binary or text (detected from its content).
    out_onnx : path-like
        ONNX file to write (atomically: nothing is left behind on failure).
    preset : str, optional
        Contract preset (``"sdc1-cianna2024"``: the published SDC1 configuration).
    overwrite : bool
        Replace an existing output.
    opset : int
        ONNX opset, 13 to 17.
    **overrides
        Contract fields; see :func:`cianna_contract`.

    Returns
    -------
    pathlib.Path
        ``out_onnx``.

    Raises
    ------
    StreamdetFileNotFoundError
        ``path`` does not exist.
    InvalidModelError
        Not a CIANNA network, a truncated file, or an unsupported layer or activation.
    StreamdetValueError
        Bad preset or contract fields.
    OutputExistsError
        ``out_onnx`` exists and ``overwrite`` is false.
    """
    src = Path(path)
    if not src.is_file():
        raise StreamdetFileNotFoundError(f"CIANNA network file {str(src)!r} does not exist")
    check_output(out_onnx, overwrite=overwrite)
    net = read_cianna(src)
    contract = cianna_contract(net, preset=preset, **overrides)
    proto = build_graph(net, input_name=contract.input_name,
                        output_name=contract.output_name, opset=opset,
                        producer_version=__version__, metadata=contract.to_metadata(),
                        doc=contract.description)
    onnx.checker.check_model(proto, full_check=True)
    with atomic_path(out_onnx, overwrite=overwrite) as tmp:
        onnx.save_model(proto, tmp)
        load_model(tmp, ndim=2, providers=["CPUExecutionProvider"])  # contract + dry run
    return Path(out_onnx)

