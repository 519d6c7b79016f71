"""Read networks saved by CIANNA (``save(..., bin=1)`` binary and ``bin=0`` text files).

The format (CIANNA V-1.0, ``save_network`` in ``src/auxil.c`` and the per-layer
``*_save`` routines) is a header of the four input dimensions ``W, H, D, C`` followed
by one record per layer, each starting with its type letter:

``C`` convolution
    ``nb_filters``, ``f_size[3]``, ``stride[3]``, ``padding[3]``, ``int_padding[3]``,
    input shape ``[4]`` (x, y, z, channels), dropout rate, bias value (the constant
    fed to the bias weight), activation string (40 bytes in binary); a ``YOLO``
    activation carries ``nb_box nb_class nb_param fit_dim class_softmax``, the priors
    (all widths, all heights, all depths) and six ``(slope, max, min)`` rows; then
    ``nb_filters`` filters of ``f_x * f_y * f_z * C + 1`` floats (x fastest, then y,
    z, input channel; the bias weight last).
``N`` group normalisation
    type string (``GN``), ``group_size``, ``set_off``, activation string, then
    ``nb_group`` gammas and ``nb_group`` betas.

Binary files are little-endian ``int32``/``float32`` with fixed 40-byte strings; text
files print the same fields (``%g`` weights, one filter per line). This module only
reads: the graph is built by :mod:`export._cianna_onnx`. Pooling (``P``), dense
(``D``) and local response normalisation (``L``) records are refused, as are
activations other than ``RELU``, ``LIN`` and ``YOLO``.
"""

from __future__ import annotations

import math
import re
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from streamdet.errors import InvalidModelError

__all__ = [
    "Activation",
    "CiannaNetwork",
    "ConvLayer",
    "NormLayer",
    "YoloSpec",
    "read_cianna",
]

_LAYER_NAMES = {"C": "convolution", "N": "normalisation", "P": "pooling", "D": "dense",
                "L": "local response normalisation", "M": "merge"}
_MAX_DIM = 1 << 20
_MAX_FILTERS = 1 << 16
_MAX_KERNEL = 1 << 10
_STR_LEN = 40
_FLOAT = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|[-+]?(?:nan|inf)"
_HEADER_TEXT = re.compile(r"^\s*(\d+)x(\d+)x(\d+)x(\d+)\s*$")
_CONV_TEXT = re.compile(
    r"^C(\d+)f(\d+)x(\d+)x(\d+)\.(\d+)x(\d+)x(\d+)s(\d+)x(\d+)x(\d+)p(\d+)x(\d+)x(\d+)"
    rf"ip(\d+)x(\d+)x(\d+)x(\d+)idim({_FLOAT})d({_FLOAT})b(\S+)\s*$")
_CONV_GROUPS_TEXT = re.compile(r"^C\d+f\d+g\d+x")
_NORM_TEXT = re.compile(r"^N\s+(\S+)\s+S(-?\d+)_O(-?\d+)(\S+)\s*$")


# --------------------------------------------------------------------------- records
@dataclass(frozen=True)
class Activation:
    """A CIANNA activation: ``RELU`` (saturated leaky ReLU), ``LIN`` or ``YOLO``.

    CIANNA's ``RELU_S<s>_L<l>`` is ``l * x`` for ``x <= 0``, ``x`` up to the saturation
    ``s`` and ``s + l * (x - s)`` beyond it.

    Attributes
    ----------
    kind : str
        ``"RELU"``, ``"LIN"`` or ``"YOLO"``.
    saturation, leak : float
        ``RELU`` parameters (defaults 800 and 0.05, CIANNA's).
    text : str
        The activation string as saved.
    """

    kind: str
    saturation: float = 800.0
    leak: float = 0.05
    text: str = ""


@dataclass(frozen=True)
class YoloSpec:
    """The YOLO settings saved with the last convolution.

    Attributes
    ----------
    nb_box, nb_class, nb_param : int
        Boxes per cell, classes and regressed parameters per box.
    fit_dim : int
        Number of fitted spatial dimensions (2 for images: x, y and w, h).
    class_softmax : int
        1 when classes use a softmax (not supported by the importer), 0 for sigmoids.
    priors : (nb_box, 3) float64
        Prior sizes ``(w, h, d)`` in input pixels.
    slopes : (6, 3) float64
        ``(slope, max, min)`` of the position, size, probability, objectness, class
        and parameter activations, in that order.
    """

    nb_box: int
    nb_class: int
    nb_param: int
    fit_dim: int
    class_softmax: int
    priors: NDArray[np.float64]
    slopes: NDArray[np.float64]

    @property
    def box_size(self) -> int:
        """Output channels per box: ``8 + nb_class + nb_param``."""
        return 8 + self.nb_class + self.nb_param


@dataclass(frozen=True)
class ConvLayer:
    """A convolution record.

    Attributes
    ----------
    index : int
        Position in the network (0-based).
    nb_filters : int
        Output channels.
    f_size, stride, padding, int_padding : tuple of int
        Per axis ``(x, y, z)``.
    in_shape : tuple of int
        Input shape ``(x, y, z, channels)`` as saved.
    dropout : float
        Dropout rate (AVG_MODEL inference scales the pre-activation by ``1 - rate``).
    bias_value : float
        Constant multiplied by each filter's bias weight.
    activation : Activation
    weights : (nb_filters, f_x * f_y * f_z * channels + 1) float32
        Filters as saved (x fastest, then y, z, input channel; bias weight last).
    yolo : YoloSpec or None
        YOLO settings, on the output layer only.
    """

    index: int
    nb_filters: int
    f_size: tuple[int, int, int]
    stride: tuple[int, int, int]
    padding: tuple[int, int, int]
    int_padding: tuple[int, int, int]
    in_shape: tuple[int, int, int, int]
    dropout: float
    bias_value: float
    activation: Activation
    weights: NDArray[np.float32]
    yolo: YoloSpec | None = None

    @property
    def flat_size(self) -> int:
        """Floats per filter: ``f_x * f_y * f_z * channels + 1``."""
        fx, fy, fz = self.f_size
        return fx * fy * fz * self.in_shape[3] + 1


@dataclass(frozen=True)
class NormLayer:
    """A group normalisation record.

    Attributes
    ----------
    index : int
        Position in the network (0-based).
    kind : str
        Normalisation type (``"GN"``).
    group_size : int
        Channels per group.
    set_off : int
        Number of trailing groups left unnormalised.
    activation : Activation
    gamma, beta : (nb_group,) float32
        Per-group scale and offset.
    """

    index: int
    kind: str
    group_size: int
    set_off: int
    activation: Activation
    gamma: NDArray[np.float32]
    beta: NDArray[np.float32]


Layer = ConvLayer | NormLayer


@dataclass(frozen=True)
class CiannaNetwork:
    """A CIANNA network read from a save file.

    Attributes
    ----------
    in_dims : tuple of int
        Input dimensions ``(W, H, D, C)`` the network was saved with.
    layers : tuple of ConvLayer or NormLayer
    path : pathlib.Path
        The file read.
    fmt : str
        ``"binary"`` or ``"text"``.
    """

    in_dims: tuple[int, int, int, int]
    layers: tuple[Layer, ...]
    path: Path
    fmt: str

    @property
    def yolo(self) -> YoloSpec:
        """YOLO settings of the output layer."""
        last = self.layers[-1]
        assert isinstance(last, ConvLayer) and last.yolo is not None
        return last.yolo


# --------------------------------------------------------------------------- helpers
def _f32(text: str) -> float:
    """A decimal rounded to float32, as CIANNA reads it."""
    return float(np.float32(float(text)))


def _bad(path: Path, msg: str) -> InvalidModelError:
    return InvalidModelError(f"{str(path)!r}: {msg}")


def _parse_activation(text: str, path: Path, where: str) -> Activation:
    kind = text.split("_", 1)[0]
    if kind == "RELU":
        sat = re.search(rf"_S({_FLOAT})", text)
        leak = re.search(rf"_L({_FLOAT})", text)
        act = Activation("RELU", float(sat.group(1)) if sat else 800.0,
                         float(leak.group(1)) if leak else 0.05, text)
        if not (math.isfinite(act.saturation) and math.isfinite(act.leak)):
            raise _bad(path, f"{where}: bad activation parameters in {text!r}")
        return act
    if kind in ("LIN", "YOLO"):
        return Activation(kind, text=text)
    if kind in ("LOGI", "SMAX"):
        raise _bad(path, f"{where}: activation {text!r} is not supported by the CIANNA "
                   f"importer (supported: RELU, LIN, YOLO)")
    raise _bad(path, f"{where}: unknown activation {text!r}; not a CIANNA network file?")


def _check_dims(path: Path, in_dims: tuple[int, ...]) -> tuple[int, int, int, int]:
    if len(in_dims) != 4 or not all(0 < d <= _MAX_DIM for d in in_dims):
        raise _bad(path, f"not a CIANNA network file (input dimensions {in_dims} are not "
                   f"four positive sizes)")
    w, h, d, c = in_dims
    if d != 1:
        raise _bad(path, f"the network takes 3D inputs ({w}x{h}x{d}); only 2D image networks "
                   f"are supported")
    if c != 1:
        raise _bad(path, f"the network takes {c} input channels; streamdet images have 1")
    return (w, h, d, c)


def _check_conv(path: Path, layer: ConvLayer, expected: tuple[int, int, int, int]) -> None:
    where = f"layer {layer.index} (convolution)"
    sizes = (*layer.f_size, *layer.stride, *layer.padding, *layer.int_padding)
    if not 0 < layer.nb_filters <= _MAX_FILTERS or not all(0 <= v <= _MAX_KERNEL
                                                            for v in sizes):
        raise _bad(path, f"{where}: implausible sizes (filters {layer.nb_filters}, kernel "
                   f"{layer.f_size}, stride {layer.stride}, padding {layer.padding}); "
                   f"not a CIANNA network file or a corrupted one")
    if min(layer.f_size) < 1 or min(layer.stride) < 1:
        raise _bad(path, f"{where}: kernel {layer.f_size} and stride {layer.stride} must be "
                   f">= 1; not a CIANNA network file or a corrupted one")
    if tuple(layer.in_shape) != expected:
        raise _bad(path, f"{where}: saved input shape {layer.in_shape} does not follow from "
                   f"the previous layers {expected}; a corrupted file, or one saved by a "
                   f"CIANNA version other than V-1.0 (e.g. with grouped convolutions)?")
    if not (math.isfinite(layer.dropout) and 0.0 <= layer.dropout < 1.0
            and math.isfinite(layer.bias_value)):
        raise _bad(path, f"{where}: bad dropout rate {layer.dropout} or bias value "
                   f"{layer.bias_value}; corrupted file?")


def _conv_out(shape: tuple[int, int, int, int], layer: ConvLayer, path: Path
              ) -> tuple[int, int, int, int]:
    out = []
    for n, f, s, p, ip in zip(shape[:3], layer.f_size, layer.stride, layer.padding,
                              layer.int_padding, strict=True):
        span = n + (n - 1) * ip + 2 * p - f
        if span < 0:
            raise _bad(path, f"layer {layer.index} (convolution): kernel {layer.f_size} is "
                       f"larger than its padded input {shape[:3]}")
        out.append(span // s + 1)
    return (out[0], out[1], out[2], layer.nb_filters)


def _yolo_from_values(ints: list[int], floats: NDArray[np.float64], path: Path,
                      where: str) -> YoloSpec:
    nb_box, nb_class, nb_param, fit_dim, softmax = ints
    floats = floats.astype(np.float32).astype(np.float64)  # as CIANNA holds them
    priors = floats[:3 * nb_box].reshape(3, nb_box).T.copy()
    slopes = floats[3 * nb_box:].reshape(6, 3).copy()
    if not np.all(np.isfinite(priors)) or not np.all(np.isfinite(slopes)):
        raise _bad(path, f"{where}: non-finite YOLO priors or slopes")
    return YoloSpec(nb_box, nb_class, nb_param, fit_dim, softmax, priors, slopes)


def _check_yolo_ints(ints: list[int], path: Path, where: str) -> None:
    nb_box, nb_class, nb_param, fit_dim, softmax = ints
    if not (0 < nb_box <= 4096 and 0 <= nb_class <= 4096 and 0 <= nb_param <= 4096
            and 0 <= fit_dim <= 3 and softmax in (0, 1)):
        raise _bad(path, f"{where}: implausible YOLO settings (nb_box {nb_box}, nb_class "
                   f"{nb_class}, nb_param {nb_param}, fit_dim {fit_dim}, class_softmax "
                   f"{softmax}); corrupted file?")


# --------------------------------------------------------------------------- binary
class _Bytes:
    """A cursor over the bytes of a binary save file; running out is a truncation."""

    def __init__(self, data: bytes, path: Path) -> None:
        self.data = data
        self.pos = 0
        self.path = path

    def take(self, n: int, what: str) -> bytes:
        if self.pos + n > len(self.data):
            raise _bad(self.path, f"truncated CIANNA file: {what} needs {n} bytes at offset "
                       f"{self.pos}, only {len(self.data) - self.pos} left")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def ints(self, n: int, what: str) -> list[int]:
        return list(struct.unpack(f"<{n}i", self.take(4 * n, what)))

    def floats(self, n: int, what: str) -> NDArray[np.float32]:
        return np.frombuffer(self.take(4 * n, what), dtype="<f4").astype(np.float32)

    def string(self, what: str) -> str:
        raw = self.take(_STR_LEN, what).split(b"\0", 1)[0]
        try:
            text = raw.decode("ascii")
        except UnicodeDecodeError:
            text = ""
        if not text or not text.isprintable():
            raise _bad(self.path, f"{what} at offset {self.pos - _STR_LEN} is not a CIANNA "
                       f"name string ({raw[:16]!r}); not a CIANNA network file?")
        return text


def _read_binary(data: bytes, path: Path) -> CiannaNetwork:
    cur = _Bytes(data, path)
    in_dims = _check_dims(path, tuple(cur.ints(4, "the input dimensions")))
    shape = (in_dims[0], in_dims[1], in_dims[2], in_dims[3])
    layers: list[Layer] = []
    while cur.pos < len(data):
        i = len(layers)
        letter = chr(data[cur.pos])
        cur.pos += 1
        if letter == "C":
            layer = _read_binary_conv(cur, i, shape, path)
            shape = _conv_out(shape, layer, path)
        elif letter == "N":
            layer_n = _read_binary_norm(cur, i, shape, path)
            layers.append(layer_n)
            continue
        elif letter in _LAYER_NAMES:
            raise _bad(path, f"layer {i}: {_LAYER_NAMES[letter]} layers ({letter!r}) are not "
                       f"supported by the CIANNA importer (supported: convolution 'C', group "
                       f"normalisation 'N')")
        else:
            raise _bad(path, f"layer {i} at offset {cur.pos - 1}: unknown layer type "
                       f"{letter!r}; not a CIANNA network file?")
        layers.append(layer)
    return CiannaNetwork(in_dims, tuple(layers), path, "binary")


def _read_binary_conv(cur: _Bytes, i: int, shape: tuple[int, int, int, int],
                      path: Path) -> ConvLayer:
    where = f"layer {i} (convolution)"
    head = cur.ints(17, f"{where} header")
    dropout, bias = (float(v) for v in cur.floats(2, f"{where} header"))
    act = _parse_activation(cur.string(f"{where} activation"), path, where)
    yolo = None
    if act.kind == "YOLO":
        ints = cur.ints(5, f"{where} YOLO settings")
        _check_yolo_ints(ints, path, where)
        vals = cur.floats(3 * ints[0] + 18, f"{where} YOLO priors and slopes")
        yolo = _yolo_from_values(ints, vals.astype(np.float64), path, where)
    layer = ConvLayer(
        index=i, nb_filters=head[0], f_size=(head[1], head[2], head[3]),
        stride=(head[4], head[5], head[6]), padding=(head[7], head[8], head[9]),
        int_padding=(head[10], head[11], head[12]),
        in_shape=(head[13], head[14], head[15], head[16]), dropout=dropout, bias_value=bias,
        activation=act, weights=np.zeros((0, 0), np.float32), yolo=yolo)
    _check_conv(path, layer, shape)
    w = cur.floats(layer.nb_filters * layer.flat_size, f"{where} weights")
    return _with_weights(layer, w.reshape(layer.nb_filters, layer.flat_size), path)


def _read_binary_norm(cur: _Bytes, i: int, shape: tuple[int, int, int, int],
                      path: Path) -> NormLayer:
    where = f"layer {i} (normalisation)"
    kind = cur.string(f"{where} type")
    group_size, set_off = cur.ints(2, f"{where} header")
    act = _parse_activation(cur.string(f"{where} activation"), path, where)
    n_group = _norm_groups(path, i, kind, group_size, set_off, shape)
    gamma = cur.floats(n_group, f"{where} gamma")
    beta = cur.floats(n_group, f"{where} beta")
    return NormLayer(i, kind, group_size, set_off, act, gamma, beta)


def _norm_groups(path: Path, i: int, kind: str, group_size: int, set_off: int,
                 shape: tuple[int, int, int, int]) -> int:
    where = f"layer {i} (normalisation)"
    if i == 0:
        raise _bad(path, f"{where}: a normalisation cannot be the first layer")
    if kind != "GN":
        raise _bad(path, f"{where}: normalisation type {kind!r} is not supported (only "
                   f"group normalisation 'GN')")
    channels = shape[3]
    if not 0 < group_size <= channels or channels % group_size:
        raise _bad(path, f"{where}: group size {group_size} does not divide the {channels} "
                   f"channels of its input")
    n_group = channels // group_size
    if not 0 <= set_off <= n_group:
        raise _bad(path, f"{where}: set-off {set_off} is outside [0, {n_group}] groups")
    return n_group


def _with_weights(layer: ConvLayer, w: NDArray[np.float32], path: Path) -> ConvLayer:
    if not np.all(np.isfinite(w)):
        raise _bad(path, f"layer {layer.index} (convolution): non-finite weights")
    return ConvLayer(layer.index, layer.nb_filters, layer.f_size, layer.stride, layer.padding,
                     layer.int_padding, layer.in_shape, layer.dropout, layer.bias_value,
                     layer.activation, np.ascontiguousarray(w, np.float32), layer.yolo)


# --------------------------------------------------------------------------- text
class _Lines:
    """A cursor over the lines of a text save file."""

    def __init__(self, text: str, path: Path) -> None:
        self.lines = text.splitlines()
        self.pos = 0
        self.path = path

    def header(self) -> str | None:
        """Next non-blank line (a layer header), or None at the end."""
        while self.pos < len(self.lines) and not self.lines[self.pos].strip():
            self.pos += 1
        if self.pos == len(self.lines):
            return None
        self.pos += 1
        return self.lines[self.pos - 1].strip()

    def numbers(self, n: int, what: str) -> NDArray[np.float64]:
        """The next ``n`` numbers, across lines, stopping at a layer header."""
        out: list[float] = []
        while len(out) < n:
            if self.pos == len(self.lines) or self.lines[self.pos][:1].isupper():
                raise _bad(self.path, f"truncated CIANNA file: {what} needs {n} numbers, "
                           f"found {len(out)} before line {self.pos + 1}")
            for tok in self.lines[self.pos].split():
                try:
                    out.append(float(tok))
                except ValueError:
                    raise _bad(self.path, f"line {self.pos + 1}: {tok!r} is not a number "
                               f"({what}); not a CIANNA network file?") from None
            self.pos += 1
        if len(out) != n:
            raise _bad(self.path, f"{what}: expected {n} numbers, the record holds "
                       f"{len(out)} (line {self.pos})")
        return np.array(out, np.float64)


def _read_text(text: str, path: Path) -> CiannaNetwork:
    cur = _Lines(text, path)
    first = cur.header()
    m = _HEADER_TEXT.match(first or "")
    if m is None:
        raise _bad(path, "not a CIANNA network file (no 'WxHxDxC' header line)")
    in_dims = _check_dims(path, tuple(int(g) for g in m.groups()))
    shape = in_dims
    layers: list[Layer] = []
    while (line := cur.header()) is not None:
        i = len(layers)
        letter = line[0]
        if letter == "C":
            layer = _read_text_conv(cur, line, i, shape, path)
            shape = _conv_out(shape, layer, path)
            layers.append(layer)
        elif letter == "N":
            layers.append(_read_text_norm(cur, line, i, shape, path))
        elif letter in _LAYER_NAMES:
            raise _bad(path, f"layer {i} (line {cur.pos}): {_LAYER_NAMES[letter]} layers "
                       f"({letter!r}) are not supported by the CIANNA importer (supported: "
                       f"convolution 'C', group normalisation 'N')")
        else:
            raise _bad(path, f"layer {i} (line {cur.pos}): unknown layer type {letter!r} in "
                       f"{line[:40]!r}; not a CIANNA network file?")
    return CiannaNetwork(in_dims, tuple(layers), path, "text")


def _read_text_conv(cur: _Lines, line: str, i: int, shape: tuple[int, int, int, int],
                    path: Path) -> ConvLayer:
    where = f"layer {i} (convolution, line {cur.pos})"
    m = _CONV_TEXT.match(line)
    if m is None:
        if _CONV_GROUPS_TEXT.match(line):
            raise _bad(path, f"{where}: grouped convolutions (a newer CIANNA save format) "
                       f"are not supported; save the network with CIANNA V-1.0")
        raise _bad(path, f"{where}: malformed convolution record {line[:60]!r}")
    g = m.groups()
    v = [int(x) for x in g[:17]]
    act = _parse_activation(g[19], path, where)
    yolo = None
    if act.kind == "YOLO":
        ints = [int(x) for x in cur.numbers(5, f"{where} YOLO settings")]
        _check_yolo_ints(ints, path, where)
        vals = cur.numbers(3 * ints[0] + 18, f"{where} YOLO priors and slopes")
        yolo = _yolo_from_values(ints, vals, path, where)
    layer = ConvLayer(
        index=i, nb_filters=v[0], f_size=(v[1], v[2], v[3]), stride=(v[4], v[5], v[6]),
        padding=(v[7], v[8], v[9]), int_padding=(v[10], v[11], v[12]),
        in_shape=(v[13], v[14], v[15], v[16]), dropout=_f32(g[17]), bias_value=_f32(g[18]),
        activation=act, weights=np.zeros((0, 0), np.float32), yolo=yolo)
    _check_conv(path, layer, shape)
    w = cur.numbers(layer.nb_filters * layer.flat_size, f"{where} weights")
    return _with_weights(layer, w.astype(np.float32).reshape(layer.nb_filters,
                                                             layer.flat_size), path)


def _read_text_norm(cur: _Lines, line: str, i: int, shape: tuple[int, int, int, int],
                    path: Path) -> NormLayer:
    where = f"layer {i} (normalisation, line {cur.pos})"
    m = _NORM_TEXT.match(line)
    if m is None:
        raise _bad(path, f"{where}: malformed normalisation record {line[:60]!r}")
    kind, group_size, set_off, activ = m.group(1), int(m.group(2)), int(m.group(3)), m.group(4)
    act = _parse_activation(activ, path, where)
    n_group = _norm_groups(path, i, kind, group_size, set_off, shape)
    gamma = cur.numbers(n_group, f"{where} gamma").astype(np.float32)
    beta = cur.numbers(n_group, f"{where} beta").astype(np.float32)
    return NormLayer(i, kind, group_size, set_off, act, gamma, beta)


# --------------------------------------------------------------------------- entry point
def _is_text(data: bytes) -> bool:
    head = data[:64].split(b"\n", 1)[0]
    try:
        return _HEADER_TEXT.match(head.decode("ascii")) is not None
    except UnicodeDecodeError:
        return False


def read_cianna(path: str | Path) -> CiannaNetwork:
    """Read a CIANNA network save file, binary or text (detected from its first bytes).

    Parameters
    ----------
    path : path-like
        File written by CIANNA's ``save`` (``bin=1`` or ``bin=0``).

    Returns
    -------
    CiannaNetwork

    Raises
    ------
    InvalidModelError
        Not a CIANNA network, truncated, an unsupported layer or activation, or a
        network whose last layer is not a YOLO convolution.
    """
    p = Path(path)
    data = p.read_bytes()
    if not data:
        raise _bad(p, "empty file; not a CIANNA network file")
    if _is_text(data):
        try:
            text = data.decode("ascii")
        except UnicodeDecodeError:
            raise _bad(p, "text save file holds non-ASCII bytes; corrupted?") from None
        net = _read_text(text, p)
    else:
        net = _read_binary(data, p)
    _check_network(net)
    return net


def _check_network(net: CiannaNetwork) -> None:
    path = net.path
    if not net.layers:
        raise _bad(path, "the file holds no layer (truncated CIANNA file?)")
    yolo_layers = [ly.index for ly in net.layers
                   if isinstance(ly, ConvLayer) and ly.activation.kind == "YOLO"]
    last = net.layers[-1]
    if not isinstance(last, ConvLayer) or last.yolo is None:
        raise _bad(path, f"the last layer (layer {last.index}) is not a YOLO convolution; "
                   f"only YOLO-CIANNA detectors can be imported (truncated file?)")
    if yolo_layers != [last.index]:
        raise _bad(path, f"YOLO activation on layers {yolo_layers}; only the last layer may "
                   f"carry it")
    y = last.yolo
    if last.nb_filters != y.nb_box * y.box_size:
        raise _bad(path, f"layer {last.index}: {last.nb_filters} filters do not match the YOLO "
                   f"settings ({y.nb_box} boxes x (8 + {y.nb_class} classes + {y.nb_param} "
                   f"parameters))")
