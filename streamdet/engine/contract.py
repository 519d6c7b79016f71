"""The streamdet model contract: a self-describing ONNX detector, and how to run it.

A detector is one ONNX file whose ``metadata_props`` carry ``streamdet.contract``
(a JSON document: grid stride, receptive field, priors, output channels, parameter
decoding, input normalisation, suggested tiling, thresholds) and
``streamdet.format_version`` (``"1"``). See ``docs/model_contract.md``.

This module reads the contract with onnxruntime only (never torch or onnx),
validates it, and wraps the inference session in a picklable :class:`Model`.
"""

from __future__ import annotations

import json
import math
import os
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from numpy.typing import ArrayLike, NDArray

from ..errors import InvalidModelError, StreamdetValueError
from ._onnx import bound_device, open_session, read_metadata, run_session
from ._providers import parse_device

__all__ = [
    "CONTRACT_KEY",
    "DECODE_KINDS",
    "FORMAT_KEY",
    "FORMAT_VERSION",
    "Model",
    "ModelContract",
    "Normalisation",
    "ParamSpec",
    "load_model",
    "normalise",
]

CONTRACT_KEY = "streamdet.contract"
"""``metadata_props`` key of the contract JSON document."""
FORMAT_KEY = "streamdet.format_version"
"""``metadata_props`` key of the contract format version."""
FORMAT_VERSION = 1
"""The contract format version this module reads and writes."""

DECODE_KINDS: dict[str, int] = {
    "log_minmax": 1, "minmax": 1, "identity": 1, "angle_cos_sin01": 2}
"""Parameter decode kinds and the number of output channels each one reads."""

_NORMALISATION_KINDS = ("clip_tanh", "none")
_NMS_KINDS = ("diou", "iou")
# measurement defaults of a contract without them
_MEASURE: dict[str, float | bool | None] = {"bmin_resolved": 0.5, "bmaj_resolved": 0.0,
                                            "fit_snr": 0.0, "background": False,
                                            "flux_scale": 1.0}
_REQUIRED_CHANNELS = {2: ("x", "y", "w", "h", "obj"), 3: ("x", "y", "z", "w", "h", "d", "obj")}
_LAYOUTS = {2: ("NCHW", "NKHW"), 3: ("NCDHW", "NKDHW")}
_BOX_ENCODING = {"xy": "cell_offset", "wh": "prior_exp"}
_REQUIRED_FIELDS = ("format_version", "ndim", "input", "output", "stride", "receptive_field",
                    "priors", "box_channels", "box_encoding", "params", "normalisation",
                    "tile", "overlap")


# --------------------------------------------------------------------------- validation
def _fail(msg: str) -> InvalidModelError:
    return InvalidModelError(f"invalid model contract: {msg}")


def _is_number(v: object) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _number(v: object, what: str, *, positive: bool = False, finite: bool = True) -> float:
    if not _is_number(v):
        raise _fail(f"{what} must be a number, got {v!r}")
    x = float(v)  # type: ignore[arg-type]
    if finite and not math.isfinite(x):
        raise _fail(f"{what} must be finite, got {v!r}")
    if positive and not x > 0:
        raise _fail(f"{what} must be > 0, got {v!r}")
    return x


def _int(v: object, what: str, *, minimum: int | None = None) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise _fail(f"{what} must be an integer, got {v!r}")
    if minimum is not None and v < minimum:
        raise _fail(f"{what} must be >= {minimum}, got {v!r}")
    return v


def _str(v: object, what: str) -> str:
    if not isinstance(v, str):
        raise _fail(f"{what} must be a string, got {v!r}")
    return v


def _dict(v: object, what: str) -> dict[str, Any]:
    if not isinstance(v, dict):
        raise _fail(f"{what} must be a JSON object, got {v!r}")
    return v


def _list(v: object, what: str, *, length: int | None = None) -> list[Any]:
    if not isinstance(v, list | tuple):
        raise _fail(f"{what} must be a list, got {v!r}")
    if length is not None and len(v) != length:
        raise _fail(f"{what} must have {length} entries, got {len(v)}: {v!r}")
    return list(v)


def _int_axes(v: object, what: str, ndim: int, *, minimum: int) -> tuple[int, ...]:
    return tuple(_int(x, f"{what}[{i}]", minimum=minimum)
                 for i, x in enumerate(_list(v, what, length=ndim)))


def _require(doc: Mapping[str, Any], key: str, where: str) -> Any:
    if key not in doc:
        raise _fail(f"missing required field {key!r} in {where}")
    return doc[key]


# --------------------------------------------------------------------------- pieces
@dataclass(frozen=True)
class ParamSpec:
    """How one physical parameter is decoded from the output channels.

    Attributes
    ----------
    name : str
        Parameter name (a column of :class:`~streamdet.engine.detections.Detections` ``params``).
    unit : str
        Physical unit of the decoded value (e.g. ``"Jy"``, ``"arcsec"``, ``"deg"``).
    decode : str
        One of :data:`DECODE_KINDS`: ``"log_minmax"``, ``"minmax"``, ``"identity"``,
        ``"angle_cos_sin01"``.
    channels : tuple of str
        Box channels read (one, or two for ``angle_cos_sin01``: cos then sin).
    min, max : float or None
        Range of ``log_minmax`` and ``minmax``.
    period : float or None
        Period of ``angle_cos_sin01`` in degrees (180 for an ellipse PA), in (0, 360].
    """

    name: str
    unit: str
    decode: str
    channels: tuple[str, ...]
    min: float | None = None
    max: float | None = None
    period: float | None = None

    @classmethod
    def from_dict(cls, doc: object, *, where: str = "params") -> ParamSpec:
        """Build and validate a spec from its JSON object; raise :class:`InvalidModelError`."""
        d = _dict(doc, where)
        name = _str(_require(d, "name", where), f"{where}.name")
        where = f"params[{name!r}]"
        kind = _str(_require(d, "decode", where), f"{where}.decode")
        if kind not in DECODE_KINDS:
            raise _fail(f"unknown decode kind {kind!r} in {where}; "
                        f"known kinds: {sorted(DECODE_KINDS)}")
        channels = tuple(_str(c, f"{where}.channels[{i}]") for i, c in
                         enumerate(_list(_require(d, "channels", where), f"{where}.channels",
                                         length=DECODE_KINDS[kind])))
        unit = _str(d.get("unit", ""), f"{where}.unit")
        lo = hi = period = None
        if kind in ("log_minmax", "minmax"):
            lo = _number(_require(d, "min", where), f"{where}.min", positive=kind == "log_minmax")
            hi = _number(_require(d, "max", where), f"{where}.max", positive=kind == "log_minmax")
            if not hi > lo:
                raise _fail(f"{where}: max {hi} must be greater than min {lo}")
        elif kind == "angle_cos_sin01":
            period = _number(_require(d, "period", where), f"{where}.period", positive=True)
            if period > 360:
                raise _fail(f"{where}.period {period} must be in (0, 360] degrees")
        return cls(name=name, unit=unit, decode=kind, channels=channels, min=lo, max=hi,
                   period=period)

    def to_dict(self) -> dict[str, Any]:
        """JSON object of this spec."""
        d: dict[str, Any] = {"name": self.name, "unit": self.unit, "decode": self.decode,
                             "channels": list(self.channels)}
        if self.min is not None:
            d["min"] = self.min
        if self.max is not None:
            d["max"] = self.max
        if self.period is not None:
            d["period"] = self.period
        return d


@dataclass(frozen=True)
class Normalisation:
    """Input normalisation applied to Jy/beam pixels before the model.

    Attributes
    ----------
    kind : str
        ``"clip_tanh"`` (clip to [clip_min, clip_max], rescale to [0, 1],
        ``tanh(tanh_scale * x)``) or ``"none"``.
    clip_min, clip_max : float or None
        Clip range, Jy/beam (``clip_tanh`` only).
    tanh_scale : float or None
        Scale inside the tanh (``clip_tanh`` only).
    """

    kind: str
    clip_min: float | None = None
    clip_max: float | None = None
    tanh_scale: float | None = None

    @classmethod
    def from_dict(cls, doc: object) -> Normalisation:
        """Build and validate from the JSON object; raise :class:`InvalidModelError`."""
        d = _dict(doc, "normalisation")
        kind = _str(_require(d, "kind", "normalisation"), "normalisation.kind")
        if kind not in _NORMALISATION_KINDS:
            raise _fail(f"unknown normalisation kind {kind!r}; known: {list(_NORMALISATION_KINDS)}")
        if kind == "none":
            return cls(kind="none")
        lo = _number(_require(d, "clip_min", "normalisation"), "normalisation.clip_min")
        hi = _number(_require(d, "clip_max", "normalisation"), "normalisation.clip_max")
        if not hi > lo:
            raise _fail(f"normalisation.clip_max {hi} must be greater than clip_min {lo}")
        scale = _number(_require(d, "tanh_scale", "normalisation"), "normalisation.tanh_scale",
                        positive=True)
        return cls(kind=kind, clip_min=lo, clip_max=hi, tanh_scale=scale)

    def to_dict(self) -> dict[str, Any]:
        """JSON object of this normalisation."""
        if self.kind == "none":
            return {"kind": "none"}
        return {"kind": self.kind, "clip_min": self.clip_min, "clip_max": self.clip_max,
                "tanh_scale": self.tanh_scale}


Threshold = float | tuple[float, ...]


# --------------------------------------------------------------------------- contract
@dataclass(frozen=True)
class ModelContract:
    """The validated ``streamdet.contract`` of a detector (format version 1).

    Spatial tuples are per axis in input order (y, x), or (z, y, x) in 3D.

    Attributes
    ----------
    ndim : int
        Spatial dimensionality (2 for images, 3 for cubes).
    stride : tuple of int
        Grid stride per axis, px: the output grid is the input shape divided by it.
    receptive_field : tuple of int
        Receptive field of one output cell per axis, px.
    priors : tuple of tuple of float
        ``(nbox, ndim)`` box priors in px: ``(w, h)`` (3D: ``(w, h, d)``).
    box_channels : tuple of str
        Channel names of one box; output channel ``k = box * len(box_channels) + j``.
    params : tuple of ParamSpec
        Decoded physical parameters.
    normalisation : Normalisation
        Input normalisation.
    tile, overlap : tuple of int
        Suggested inference tile and overlap, px.
    name, description : str
        Free text.
    input_name, output_name : str
        ONNX input and output tensor names.
    box_encoding : dict
        ``{"xy": "cell_offset", "wh": "prior_exp"}`` (the only encoding of version 1).
    pixel_scale_arcsec : float or None
        Pixel scale the model was trained for.
    beam_arcsec : tuple of float or None
        Restoring beam ``(bmaj, bmin)`` FWHM the model was trained for.
    freq_mhz : float or None
        Observing frequency the model was trained for (3D: the band centre).
    channel_hz : float or None
        3D only: the channel width the model was trained for, Hz (SDC2: 30 kHz); a
        cube of another channel width is still run, with a warning, since the
        line widths the model sees in channels then differ. Written to the contract
        document only when set (2D contracts are unchanged).
    nms : dict
        ``{"kind": "diou" | "iou", "iou_threshold": float}``.
    measure : dict
        ``{"bmin_resolved": float, "bmaj_resolved": float, "fit_snr": float | None,
        "background": bool, "flux_scale": float}``: every source's flux is measured by
        forced photometry with the network's shape (above the local median with
        ``background``), divided by ``flux_scale`` (the map's flux per unit of sky flux
        on the maps the model was made for; 1 by default);
        from a peak of ``fit_snr`` times the noise (0: every source; None: none) a free
        Gaussian fit replaces flux and PA, and the network's minor (major) axis where
        the deconvolved one is at least ``bmin_resolved`` (``bmaj_resolved``) times the
        beam's minor (major) axis (0: always). Chosen per model on validation fields:
        the network's own sizes, learnt from the population, beat a fit on faint or
        barely resolved sources.
    thresholds : dict
        Objectness threshold presets (``"default"`` always present): a float, or a
        tuple with one float per prior.
    training : dict
        Free-form provenance.
    format_version : int
        Always 1.
    """

    ndim: int
    stride: tuple[int, ...]
    receptive_field: tuple[int, ...]
    priors: tuple[tuple[float, ...], ...]
    box_channels: tuple[str, ...]
    params: tuple[ParamSpec, ...]
    normalisation: Normalisation
    tile: tuple[int, ...]
    overlap: tuple[int, ...]
    name: str = "unnamed"
    description: str = ""
    input_name: str = "image"
    output_name: str = "grid"
    box_encoding: dict[str, str] = field(default_factory=lambda: dict(_BOX_ENCODING),
                                         hash=False)
    pixel_scale_arcsec: float | None = None
    beam_arcsec: tuple[float, float] | None = None
    freq_mhz: float | None = None
    channel_hz: float | None = None
    nms: dict[str, Any] = field(default_factory=lambda: {"kind": "diou", "iou_threshold": 0.5},
                                hash=False)
    measure: dict[str, Any] = field(default_factory=lambda: dict(_MEASURE), hash=False)
    thresholds: dict[str, Threshold] = field(default_factory=lambda: {"default": 0.5},
                                             hash=False)
    training: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)
    format_version: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        # Canonical container types (a contract may be built directly, with lists), then
        # the cross-field checks (from_dict has already validated the JSON types).
        canon = object.__setattr__
        for name in ("stride", "receptive_field", "tile", "overlap"):
            canon(self, name, tuple(int(v) for v in getattr(self, name)))
        canon(self, "priors", tuple(tuple(float(v) for v in p) for p in self.priors))
        canon(self, "box_channels", tuple(self.box_channels))
        canon(self, "params", tuple(self.params))
        if self.beam_arcsec is not None:
            canon(self, "beam_arcsec", tuple(float(v) for v in self.beam_arcsec))
        canon(self, "thresholds", {k: tuple(float(x) for x in v) if isinstance(v, list | tuple)
                                   else v for k, v in self.thresholds.items()})
        _validate(self)

    # ----------------------------------------------------------------- derived values
    @property
    def nbox(self) -> int:
        """Number of boxes (priors) per grid cell."""
        return len(self.priors)

    @property
    def n_channels(self) -> int:
        """Number of output channels ``K = nbox * len(box_channels)``."""
        return self.nbox * len(self.box_channels)

    @property
    def param_names(self) -> tuple[str, ...]:
        """Names of the decoded parameters, in order."""
        return tuple(p.name for p in self.params)

    @property
    def param_channels(self) -> tuple[str, ...]:
        """Box channels read by the parameters, in parameter order."""
        return tuple(c for p in self.params for c in p.channels)

    @property
    def priors_array(self) -> NDArray[np.float64]:
        """``(nbox, ndim)`` float64 priors, px."""
        return np.array(self.priors, np.float64).reshape(self.nbox, self.ndim)

    @property
    def halo(self) -> tuple[int, ...]:
        """Context to read around a region, per axis, px.

        ``ceil(R / 2)`` rounded up to a multiple of the stride: with it, a fully
        convolutional model gives on every cell of a region the same output as a
        whole-image forward pass.
        """
        return tuple(-(-math.ceil(r / 2) // s) * s
                     for r, s in zip(self.receptive_field, self.stride, strict=True))

    def channel_index(self, name: str) -> int:
        """Index ``j`` of channel ``name`` within one box."""
        try:
            return self.box_channels.index(name)
        except ValueError:
            raise StreamdetValueError(
                f"model has no box channel {name!r}; channels: {self.box_channels}") from None

    def output_channel(self, box: int, name: str) -> int:
        """Output channel ``k`` of channel ``name`` of box ``box``."""
        if not 0 <= box < self.nbox:
            raise StreamdetValueError(f"box {box} is outside [0, {self.nbox})")
        return box * len(self.box_channels) + self.channel_index(name)

    def threshold_values(self, preset: str = "default") -> NDArray[np.float64]:
        """``(nbox,)`` objectness thresholds of a preset (``"default"``, ``"best"``, ...)."""
        if preset not in self.thresholds:
            raise StreamdetValueError(
                f"threshold preset {preset!r} is not in the model; "
                f"it has {sorted(self.thresholds)}")
        return np.broadcast_to(np.asarray(self.thresholds[preset], np.float64),
                               (self.nbox,)).copy()

    # ----------------------------------------------------------------- (de)serialisation
    @classmethod
    def from_dict(cls, doc: object) -> ModelContract:
        """Build and validate a contract from its JSON document (a dict).

        Raises
        ------
        InvalidModelError
            Naming the missing or bad field.
        """
        d = _dict(doc, "the contract")
        for key in _REQUIRED_FIELDS:
            _require(d, key, "the contract")
        version = d["format_version"]
        if version != FORMAT_VERSION or isinstance(version, bool):
            raise _fail(f"format_version {version!r} is not supported (this streamdet reads "
                        f"version {FORMAT_VERSION})")
        ndim = _int(d["ndim"], "ndim")
        if ndim not in _LAYOUTS:
            raise _fail(f"ndim {ndim} is not supported (2 or 3)")
        in_layout, out_layout = _LAYOUTS[ndim]
        inp = _dict(d["input"], "input")
        out = _dict(d["output"], "output")
        input_name = _str(_require(inp, "name", "input"), "input.name")
        output_name = _str(_require(out, "name", "output"), "output.name")
        if inp.get("layout", in_layout) != in_layout:
            raise _fail(f"input.layout {inp.get('layout')!r} must be {in_layout!r} for ndim {ndim}")
        if out.get("layout", out_layout) != out_layout:
            raise _fail(f"output.layout {out.get('layout')!r} must be {out_layout!r} "
                        f"for ndim {ndim}")
        stride = _int_axes(d["stride"], "stride", ndim, minimum=1)
        rf = _int_axes(d["receptive_field"], "receptive_field", ndim, minimum=1)
        priors_raw = _list(d["priors"], "priors")
        if not priors_raw:
            raise _fail("priors is empty; a model needs at least one box prior")
        priors = tuple(
            tuple(_number(v, f"priors[{i}][{a}]", positive=True)
                  for a, v in enumerate(_list(p, f"priors[{i}]", length=ndim)))
            for i, p in enumerate(priors_raw))
        channels = tuple(_str(c, f"box_channels[{i}]")
                         for i, c in enumerate(_list(d["box_channels"], "box_channels")))
        enc = _dict(d["box_encoding"], "box_encoding")
        for key, value in _BOX_ENCODING.items():
            got = _require(enc, key, "box_encoding")
            if got != value:
                raise _fail(f"unknown box_encoding.{key} {got!r}; version {FORMAT_VERSION} "
                            f"knows only {value!r}")
        params = tuple(ParamSpec.from_dict(p, where=f"params[{i}]")
                       for i, p in enumerate(_list(d["params"], "params")))
        norm = Normalisation.from_dict(d["normalisation"])
        tile = _int_axes(d["tile"], "tile", ndim, minimum=1)
        overlap = _int_axes(d["overlap"], "overlap", ndim, minimum=0)
        beam = d.get("beam_arcsec")
        beam_t = None if beam is None else tuple(
            _number(b, f"beam_arcsec[{i}]", positive=True)
            for i, b in enumerate(_list(beam, "beam_arcsec", length=2)))
        pix = d.get("pixel_scale_arcsec")
        freq = d.get("freq_mhz")
        channel = d.get("channel_hz")
        nms = {"kind": "diou", "iou_threshold": 0.5, **_dict(d.get("nms", {}), "nms")}
        measure = {**_MEASURE, **_dict(d.get("measure", {}), "measure")}
        thresholds_doc = _dict(d.get("thresholds", {"default": 0.5}), "thresholds")
        thresholds: dict[str, Threshold] = {}
        for key, value in thresholds_doc.items():
            if isinstance(value, list | tuple):
                thresholds[key] = tuple(_number(v, f"thresholds[{key!r}][{i}]")
                                        for i, v in enumerate(value))
            else:
                thresholds[key] = _number(value, f"thresholds[{key!r}]")
        return cls(
            ndim=ndim, stride=stride, receptive_field=rf, priors=priors, box_channels=channels,
            params=params, normalisation=norm, tile=tile, overlap=overlap,
            name=_str(d.get("name", "unnamed"), "name"),
            description=_str(d.get("description", ""), "description"),
            input_name=input_name, output_name=output_name, box_encoding=dict(enc),
            pixel_scale_arcsec=None if pix is None else _number(pix, "pixel_scale_arcsec",
                                                                positive=True),
            beam_arcsec=beam_t,  # type: ignore[arg-type]
            freq_mhz=None if freq is None else _number(freq, "freq_mhz", positive=True),
            channel_hz=None if channel is None else _number(channel, "channel_hz",
                                                            positive=True),
            nms=dict(nms), measure=measure, thresholds=thresholds,
            training=_dict(d.get("training", {}), "training"))

    def to_dict(self) -> dict[str, Any]:
        """The contract as its JSON document (a dict)."""
        in_layout, out_layout = _LAYOUTS[self.ndim]
        doc = {
            "format_version": self.format_version,
            "name": self.name,
            "description": self.description,
            "ndim": self.ndim,
            "input": {"name": self.input_name, "layout": in_layout},
            "output": {"name": self.output_name, "layout": out_layout},
            "stride": list(self.stride),
            "receptive_field": list(self.receptive_field),
            "priors": [list(p) for p in self.priors],
            "box_channels": list(self.box_channels),
            "box_encoding": dict(self.box_encoding),
            "params": [p.to_dict() for p in self.params],
            "normalisation": self.normalisation.to_dict(),
            "tile": list(self.tile),
            "overlap": list(self.overlap),
            "pixel_scale_arcsec": self.pixel_scale_arcsec,
            "beam_arcsec": None if self.beam_arcsec is None else list(self.beam_arcsec),
            "freq_mhz": self.freq_mhz,
            "nms": dict(self.nms),
            "measure": dict(self.measure),
            "thresholds": {k: list(v) if isinstance(v, tuple) else v
                           for k, v in self.thresholds.items()},
            "training": dict(self.training),
        }
        if self.channel_hz is not None:
            doc["channel_hz"] = self.channel_hz
        return doc

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, str], *, source: str = "model") -> ModelContract:
        """Read the contract from ONNX ``metadata_props`` (``custom_metadata_map``).

        Parameters
        ----------
        metadata : mapping of str to str
            The model's metadata properties.
        source : str
            Name of the model, used in error messages.

        Raises
        ------
        InvalidModelError
            No ``streamdet.contract`` key, bad JSON, or an invalid contract.
        """
        if CONTRACT_KEY not in metadata:
            raise InvalidModelError(
                f"{source} carries no streamdet contract (metadata key {CONTRACT_KEY!r} is "
                f"missing; metadata keys: {sorted(metadata)}); export it with "
                f"`streamdet export` or add the contract to its metadata_props")
        version = metadata.get(FORMAT_KEY)
        if version is not None and version != str(FORMAT_VERSION):
            raise InvalidModelError(
                f"{source}: {FORMAT_KEY} {version!r} is not supported (this streamdet reads "
                f"version {FORMAT_VERSION})")
        try:
            doc = json.loads(metadata[CONTRACT_KEY])
        except json.JSONDecodeError as exc:
            raise InvalidModelError(
                f"{source}: metadata {CONTRACT_KEY!r} is not valid JSON ({exc})") from None
        try:
            return cls.from_dict(doc)
        except InvalidModelError as exc:
            raise InvalidModelError(f"{source}: {exc}") from None

    def to_metadata(self) -> dict[str, str]:
        """The ``metadata_props`` entries that carry this contract."""
        return {CONTRACT_KEY: json.dumps(self.to_dict(), sort_keys=False),
                FORMAT_KEY: str(FORMAT_VERSION)}


def _validate(c: ModelContract) -> None:
    """Cross-field checks of a contract; raise :class:`InvalidModelError`."""
    if c.ndim not in _LAYOUTS:
        raise _fail(f"ndim {c.ndim} is not supported (2 or 3)")
    for name in ("stride", "receptive_field", "tile", "overlap"):
        value = getattr(c, name)
        if len(value) != c.ndim:
            raise _fail(f"{name} {value} must have {c.ndim} entries (ndim {c.ndim})")
    if any(s < 1 for s in c.stride) or any(r < 1 for r in c.receptive_field):
        raise _fail(f"stride {c.stride} and receptive_field {c.receptive_field} must be >= 1")
    if not c.priors or any(len(p) != c.ndim or not all(v > 0 for v in p) for p in c.priors):
        raise _fail(f"priors {c.priors} must be a non-empty list of {c.ndim} positive sizes")
    if len(set(c.box_channels)) != len(c.box_channels):
        raise _fail(f"box_channels {c.box_channels} has duplicate names")
    missing = [ch for ch in _REQUIRED_CHANNELS[c.ndim] if ch not in c.box_channels]
    if missing:
        raise _fail(f"box_channels {list(c.box_channels)} lacks required channel(s) {missing}")
    names = [p.name for p in c.params]
    if len(set(names)) != len(names):
        raise _fail(f"parameter names {names} are not unique")
    for p in c.params:
        if p.decode not in DECODE_KINDS:
            raise _fail(f"unknown decode kind {p.decode!r} of parameter {p.name!r}")
        unknown = [ch for ch in p.channels if ch not in c.box_channels]
        if unknown:
            raise _fail(f"parameter {p.name!r} reads channel(s) {unknown} that are not in "
                        f"box_channels {list(c.box_channels)}")
    for t, o, s in zip(c.tile, c.overlap, c.stride, strict=True):
        if t % s:
            raise _fail(f"tile {c.tile} must be a multiple of the stride {c.stride}")
        if not 0 <= o < t:
            raise _fail(f"overlap {c.overlap} must be in [0, tile {c.tile})")
    kind = c.nms.get("kind")
    if kind not in _NMS_KINDS:
        raise _fail(f"unknown nms.kind {kind!r}; known: {list(_NMS_KINDS)}")
    iou = c.nms.get("iou_threshold")
    if not isinstance(iou, int | float) or isinstance(iou, bool) or not 0 < float(iou) <= 1:
        raise _fail(f"nms.iou_threshold {iou!r} must be a number in (0, 1]")
    def finite_nonnegative(v: object) -> bool:
        return _is_number(v) and 0 <= float(v) < math.inf  # type: ignore[arg-type]

    for key in ("bmin_resolved", "bmaj_resolved"):
        resolved = c.measure.get(key)
        if not finite_nonnegative(resolved):
            raise _fail(f"measure.{key} {resolved!r} must be a finite number >= 0")
    fit_snr = c.measure.get("fit_snr")
    if fit_snr is not None and not finite_nonnegative(fit_snr):
        raise _fail(f"measure.fit_snr {fit_snr!r} must be a finite number >= 0, or null "
                    "(forced photometry only)")
    background = c.measure.get("background", False)
    if not isinstance(background, bool):
        raise _fail(f"measure.background {background!r} must be true or false")
    flux_scale = c.measure.get("flux_scale", 1.0)
    if not (finite_nonnegative(flux_scale) and float(flux_scale) > 0):
        raise _fail(f"measure.flux_scale {flux_scale!r} must be a finite number > 0")
    if c.channel_hz is not None and c.ndim != 3:
        raise _fail(f"channel_hz is a cube (ndim 3) field; this contract has ndim {c.ndim}")
    if c.channel_hz is not None and not (_is_number(c.channel_hz) and
                                         0 < float(c.channel_hz) < math.inf):
        raise _fail(f"channel_hz {c.channel_hz!r} must be a finite number > 0, Hz")
    if "default" not in c.thresholds:
        raise _fail(f"thresholds {sorted(c.thresholds)} must contain a 'default' preset")
    for key, value in c.thresholds.items():
        values = value if isinstance(value, tuple) else (value,)
        if isinstance(value, tuple) and len(value) != c.nbox:
            raise _fail(f"thresholds[{key!r}] has {len(value)} values; give one value or "
                        f"one per prior ({c.nbox})")
        if not all(0.0 <= v <= 1.0 for v in values):
            raise _fail(f"thresholds[{key!r}] {value} must lie in [0, 1]")


# --------------------------------------------------------------------------- model
class Model:
    """A detector: its contract, its file, and a lazily created ONNX Runtime session.

    Pickles by path and device (sessions cannot be pickled): an unpickled copy (e.g. on
    a Dask worker) creates its own session on first use, on the device it names, so
    ``device="cuda:1"`` pins every copy to GPU 1.

    Parameters
    ----------
    path : path-like
        ONNX file.
    contract : ModelContract
        Its validated contract.
    providers : sequence of str, optional
        Execution providers, in order (overrides ``device``; refused together with a
        ``device`` other than ``"auto"``).
    threads : int, optional
        ONNX Runtime intra-op threads.
    session : onnxruntime.InferenceSession, optional
        An existing session for this file (not pickled).
    device : str
        ``"auto"`` (CUDA where onnxruntime has it, else the CPU), ``"cpu"``,
        ``"cuda"``, ``"cuda:K"``, ``"tensorrt"``, ``"tensorrt:K"``; see
        :func:`streamdet.engine._providers.resolve_device`.
    device_description : str, optional
        The description that came with ``session``.
    """

    def __init__(self, path: str | os.PathLike[str], contract: ModelContract, *,
                 providers: Sequence[str] | None = None, threads: int | None = None,
                 session: ort.InferenceSession | None = None, device: str = "auto",
                 device_description: str | None = None) -> None:
        kind_index = parse_device(device)
        if providers is not None and kind_index != ("auto", None):
            raise StreamdetValueError(
                f"give either providers ({list(providers)}) or device ({device!r}), not both")
        self.path = Path(path)
        self.contract = contract
        self.providers: tuple[str, ...] | None = None if providers is None else tuple(providers)
        self.threads = threads
        self.device = device
        self._session = session
        self._description = device_description
        self._bind: tuple[str, int] | None = None if session is None else bound_device(session)
        self._lock = threading.Lock()

    @property
    def session(self) -> ort.InferenceSession:
        """The ONNX Runtime session, created on first use and cached."""
        if self._session is None:
            with self._lock:
                if self._session is None:
                    session, self._description = open_session(
                        self.path, providers=self.providers, threads=self.threads,
                        device=self.device)
                    self._bind = bound_device(session)
                    self._session = session
        return self._session

    def with_device(self, device: str) -> Model:
        """A copy of this model for another device, its session not yet created.

        The session is made on first use where the copy runs (e.g. on a Dask worker
        with ``device=f"cuda:{k}"`` for its GPU ``k``), so the caller's machine needs
        no GPU. Explicit ``providers`` are dropped for ``device``.

        Parameters
        ----------
        device : str
            See :func:`load_model`.

        Returns
        -------
        Model
            Same path, contract and threads; ``device`` as given.
        """
        return Model(self.path, self.contract, threads=self.threads, device=device)

    @property
    def active_providers(self) -> tuple[str, ...]:
        """The providers the session runs with, in order (creates the session)."""
        return tuple(self.session.get_providers())

    @property
    def device_description(self) -> str:
        """One line: the provider running the model and why (creates the session).

        E.g. ``"CPUExecutionProvider (auto: no CUDA provider in this onnxruntime
        build)"`` or ``"CUDAExecutionProvider on GPU 1 (device cuda:1)"``.
        """
        session = self.session
        if self._description is None:  # a session handed in without its description
            self._description = f"{session.get_providers()[0]} (session given)"
        return self._description

    @property
    def io_binding(self) -> bool:
        """Whether forward passes bind input and output on the GPU (CUDA or TensorRT)."""
        _ = self.session
        return self._bind is not None

    @property
    def precision(self) -> str:
        """The precision of the model's weights and compute: ``"fp32"`` or ``"fp16"``.

        Read from the contract's ``training["precision"]`` (``streamdet export --fp16``
        writes ``"fp16"``); the input and output stay float32 either way.
        """
        return str(self.contract.training.get("precision", "fp32"))

    @property
    def uses_gpu(self) -> bool:
        """Whether the session runs on an accelerator (its first provider is not the CPU)."""
        return bool(self.session.get_providers()[0] != "CPUExecutionProvider")

    @property
    def default_batch(self) -> int:
        """Tiles per forward pass when none is given: 1 on CPU, 8 on an accelerator.

        On CPU a larger batch brings no speed (the convolutions already keep a core
        busy on one tile) and multiplies the activation memory; a GPU needs several
        tiles per call to be kept busy.
        """
        return 8 if self.uses_gpu else 1

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path, "contract": self.contract, "providers": self.providers,
                "threads": self.threads, "device": self.device}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.path = state["path"]
        self.contract = state["contract"]
        self.providers = state["providers"]
        self.threads = state["threads"]
        self.device = state.get("device", "auto")
        self._session = None
        self._description = None
        self._bind = None
        self._lock = threading.Lock()

    def __dask_tokenize__(self) -> tuple[Any, ...]:
        try:
            st = self.path.stat()
            stamp: tuple[int, int] = (st.st_size, st.st_mtime_ns)
        except OSError:
            stamp = (-1, -1)
        return ("streamdet.Model", str(self.path.resolve()), stamp, self.providers, self.threads,
                self.device)

    def __repr__(self) -> str:
        return (f"Model({str(self.path)!r}, name={self.contract.name!r}, "
                f"ndim={self.contract.ndim}, stride={self.contract.stride}, "
                f"nbox={self.contract.nbox}, device={self.device!r})")

    def output_shape(self, input_shape: Sequence[int]) -> tuple[int, ...]:
        """Output shape ``(N, K, *grid)`` for an input of shape ``(N, 1, *spatial)``."""
        spatial = tuple(input_shape[2:])
        return (int(input_shape[0]), self.contract.n_channels,
                *(n // s for n, s in zip(spatial, self.contract.stride, strict=True)))

    def run(self, batch: ArrayLike) -> NDArray[np.float32]:
        """Run a forward pass.

        Parameters
        ----------
        batch : (N, 1, H, W) float32
            Normalised tiles (see :func:`normalise`); H and W multiples of the stride.
            3D models take (N, 1, D, H, W).

        Returns
        -------
        (N, K, H / stride_y, W / stride_x) float32
            Activated outputs, ``K = contract.n_channels``.
        """
        x = np.ascontiguousarray(batch, dtype=np.float32)
        c = self.contract
        if x.ndim != c.ndim + 2 or x.shape[1] != 1:
            axes = "H, W" if c.ndim == 2 else "D, H, W"
            raise StreamdetValueError(f"batch must have shape (N, 1, {axes}), got {x.shape}")
        bad = [n for n, s in zip(x.shape[2:], c.stride, strict=True) if n % s or n == 0]
        if bad:
            raise StreamdetValueError(
                f"batch spatial shape {x.shape[2:]} must be positive multiples of the model "
                f"stride {c.stride}")
        session = self.session
        out = run_session(session, c.input_name, c.output_name, x, bind=self._bind)
        expected = self.output_shape(x.shape)
        if out.shape != expected:
            raise InvalidModelError(
                f"model {str(self.path)!r} returned shape {out.shape} for input {x.shape}; "
                f"the contract implies {expected}")
        return out


def _check_io(session: ort.InferenceSession, contract: ModelContract, source: str) -> None:
    """Check the graph's inputs and outputs against the contract (shapes, names)."""
    rank = contract.ndim + 2
    inputs = session.get_inputs()
    outputs = {o.name: o for o in session.get_outputs()}
    if len(inputs) != 1 or inputs[0].name != contract.input_name:
        raise InvalidModelError(
            f"{source}: the contract's input {contract.input_name!r} does not match the graph "
            f"inputs {[i.name for i in inputs]} (a single image input is required)")
    if contract.output_name not in outputs:
        raise InvalidModelError(
            f"{source}: the contract's output {contract.output_name!r} is not among the graph "
            f"outputs {sorted(outputs)}")
    inp, out = inputs[0], outputs[contract.output_name]
    if len(inp.shape) != rank or len(out.shape) != rank:
        raise InvalidModelError(
            f"{source}: the graph's input/output ranks {len(inp.shape)}/{len(out.shape)} do not "
            f"match the contract's ndim {contract.ndim} (rank {rank} expected)")
    if inp.type != "tensor(float)":
        raise InvalidModelError(f"{source}: input type {inp.type} must be tensor(float)")
    k = out.shape[1]
    if isinstance(k, int) and k != contract.n_channels:
        raise InvalidModelError(
            f"{source}: output has {k} channels but the contract implies "
            f"{contract.nbox} priors x {len(contract.box_channels)} box channels = "
            f"{contract.n_channels}")
    # A dry run on two cells per axis checks the dynamic shape and the channel count.
    probe = np.zeros((1, 1, *(2 * s for s in contract.stride)), np.float32)
    try:
        got = session.run([contract.output_name], {contract.input_name: probe})[0].shape
    except Exception as exc:  # onnxruntime raises several unrelated exception types
        raise InvalidModelError(
            f"{source}: a forward pass on an input of shape {probe.shape} failed (input axes "
            f"N, H, W must be dynamic): {exc}") from exc
    want = (1, contract.n_channels, *([2] * contract.ndim))
    if tuple(got) != want:
        raise InvalidModelError(
            f"{source}: output shape {tuple(got)} for an input of shape {probe.shape} does not "
            f"match the contract, which implies {want} (stride {contract.stride}, "
            f"{contract.nbox} priors x {len(contract.box_channels)} box channels)")


def load_model(path: str | os.PathLike[str], *, ndim: int | None = None,
               providers: Sequence[str] | None = None, threads: int | None = None,
               device: str = "auto") -> Model:
    """Open an ONNX detector and validate its contract.

    Parameters
    ----------
    path : path-like
        ONNX file carrying the streamdet contract.
    ndim : int, optional
        Required spatial dimensionality (2 for images); refused if the model differs.
    providers : sequence of str, optional
        Execution providers in order (takes precedence over ``device``; refused
        together with a ``device`` other than ``"auto"``).
    threads : int, optional
        ONNX Runtime intra-op threads.
    device : str
        ``"auto"`` (default: CUDA where this onnxruntime build has it, else the CPU;
        TensorRT only when asked), ``"cpu"``, ``"cuda"``, ``"cuda:K"`` (GPU K),
        ``"tensorrt"``, ``"tensorrt:K"``. The choice is in
        :attr:`Model.device_description`.

    Returns
    -------
    Model

    Raises
    ------
    StreamdetFileNotFoundError
        ``path`` does not exist.
    DeviceUnavailableError
        ``cuda``/``tensorrt`` and the provider is missing from this onnxruntime build
        (the message says how to install it) or could not start.
    StreamdetValueError
        Unknown ``device``; ``providers`` with a ``device`` other than ``"auto"``.
    InvalidModelError
        Not an ONNX model, no or invalid contract, wrong ``ndim``, or graph inputs and
        outputs inconsistent with the contract.
    """
    source = f"model {os.fspath(path)!r}"
    session, description = open_session(path, providers=providers, threads=threads,
                                         device=device)
    contract = ModelContract.from_metadata(read_metadata(session), source=source)
    if ndim is not None and contract.ndim != ndim:
        raise InvalidModelError(
            f"{source} is a {contract.ndim}D detector but a {ndim}D one is needed")
    _check_io(session, contract, source)
    return Model(path, contract, providers=providers, threads=threads, session=session,
                 device=device, device_description=description)


def normalise(data: ArrayLike, contract: ModelContract | Normalisation, *,
              out: NDArray[np.float32] | None = None) -> NDArray[np.float32]:
    """Normalise Jy/beam pixels as the model expects.

    Parameters
    ----------
    data : array_like, Jy/beam
        Pixels, any shape and float dtype (big-endian accepted).
    contract : ModelContract or Normalisation
        The model's contract (or its normalisation).
    out : float32 array, same shape, optional
        Where to write the result (may not share memory with ``data``); default: a new array.

    Returns
    -------
    float32 array, same shape (``out`` when given)
        ``clip_tanh``: ``tanh(scale * (clip(x, lo, hi) - lo) / (hi - lo))``, in [0, tanh(scale)];
        ``none``: the values unchanged. NaN (and, for ``none``, +-inf) become 0.
    """
    norm = contract.normalisation if isinstance(contract, ModelContract) else contract
    src = np.asarray(data)
    if out is None:
        x = np.array(src, dtype=np.float32, copy=True)
    else:
        if out.shape != src.shape or out.dtype != np.float32:
            raise StreamdetValueError(f"out must be float32 of shape {src.shape}, got "
                                      f"{out.dtype} {out.shape}")
        x = out
        x[...] = src
    if norm.kind == "none":
        x[~np.isfinite(x)] = 0.0
        return x
    assert norm.clip_min is not None and norm.clip_max is not None
    assert norm.tanh_scale is not None
    lo = np.float32(norm.clip_min)
    hi = np.float32(norm.clip_max)
    factor = np.float32(norm.tanh_scale / (norm.clip_max - norm.clip_min))
    # fmax/fmin (unlike clip) replace NaN by the other operand: NaN -> lo -> 0.
    np.fmax(x, lo, out=x)
    np.fmin(x, hi, out=x)
    x -= lo
    x *= factor
    np.tanh(x, out=x)
    return x
