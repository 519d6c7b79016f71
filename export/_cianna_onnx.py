"""Build the ONNX graph of a CIANNA network read by :mod:`export._cianna_format`.

The graph reproduces CIANNA's inference forward pass (``raw_output=1``,
``drop_mode="AVG_MODEL"``) with plain ``onnx.helper`` nodes:

* convolution: ``Conv`` whose weights are CIANNA's filters reshaped to
  ``(M, C, f_y, f_x)`` and whose bias is the bias weight times the layer's bias
  value; a layer with dropout rate ``r`` is scaled by ``1 - r`` before its
  activation (CIANNA's AVG_MODEL inference), folded into weights and bias;
* ``RELU_S<s>_L<l>``: ``LeakyRelu(l)`` followed by ``r - (1 - l) * relu(r - s)``,
  i.e. ``s + l * (x - s)`` above the saturation ``s``;
* group normalisation: per image and group of channels, ``(x - mean) /
  sqrt(var + eps)`` (population variance, ``eps`` = 1e-3 as in CIANNA) times the
  group's gamma plus its beta; the last ``set_off`` groups pass through;
* YOLO output: per channel ``u = clip(slope * x, lo, hi)``, then a sigmoid for
  positions, probability, objectness and classes (``lo, hi = -max, -min`` of
  CIANNA's ``(slope, max, min)`` rows, which clips ``-slope * x`` to
  ``[min, max]`` before ``1 / (1 + exp(.))``) and nothing for sizes and
  parameters (``lo, hi = min, max``); unfitted dimensions are the constants CIANNA
  writes (0.5 for positions, 0 for sizes).

Input ``(N, 1, H, W)``: CIANNA's images are flattened with x fastest (``W`` is
CIANNA's first dimension), which is NumPy's row-major ``(y, x)``, so no
transposition is needed. Output ``(N, nb_box * (8 + nb_class + nb_param), H / s,
W / s)``: CIANNA's raw output layout.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
from numpy.typing import NDArray
from onnx import TensorProto, helper, numpy_helper

from streamdet.errors import InvalidModelError

from ._cianna_format import Activation, CiannaNetwork, ConvLayer, NormLayer, YoloSpec

__all__ = ["GN_EPS", "build_graph", "grid_stride", "receptive_field", "yolo_channel_tables"]

GN_EPS = 1e-3
"""CIANNA's group normalisation epsilon (``naiv_norm_layer.c``)."""


def _conv_layers(net: CiannaNetwork) -> list[ConvLayer]:
    return [ly for ly in net.layers if isinstance(ly, ConvLayer)]


def _check_conv_geometry(net: CiannaNetwork, layer: ConvLayer) -> None:
    where = f"{str(net.path)!r}: layer {layer.index} (convolution)"
    if layer.f_size[2] != 1 or layer.stride[2] != 1 or layer.padding[2] != 0:
        raise InvalidModelError(
            f"{where}: depth kernel {layer.f_size[2]}, stride {layer.stride[2]}, padding "
            f"{layer.padding[2]}; only 2D convolutions (1, 1, 0) are supported")
    if any(layer.int_padding):
        raise InvalidModelError(
            f"{where}: internal padding {layer.int_padding} (transposed convolution) is not "
            f"supported")
    for axis, f, s, p in zip("xy", layer.f_size, layer.stride, layer.padding, strict=False):
        if 2 * p != f - s:
            raise InvalidModelError(
                f"{where}: kernel {f}, stride {s}, padding {p} along {axis} does not map an "
                f"input of n cells of the stride onto n/stride outputs (streamdet needs "
                f"2 * padding = kernel - stride for tiles of any size)")


def grid_stride(net: CiannaNetwork) -> tuple[int, int]:
    """Grid stride ``(s_y, s_x)``, px: the product of the convolution strides."""
    sy = sx = 1
    for layer in _conv_layers(net):
        sx *= layer.stride[0]
        sy *= layer.stride[1]
    return sy, sx


def receptive_field(net: CiannaNetwork) -> tuple[int, int]:
    """Receptive field ``(r_y, r_x)`` of one output cell through the convolutions, px.

    Group normalisation is ignored: its statistics span the whole input tile.
    """
    out = []
    for axis in (1, 0):
        r, jump = 1, 1
        for layer in _conv_layers(net):
            r += (layer.f_size[axis] - 1) * jump
            jump *= layer.stride[axis]
        out.append(r)
    return out[0], out[1]


class _Graph:
    """Accumulates nodes and initialisers with unique names."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []

    def const(self, name: str, value: NDArray[np.generic] | float) -> str:
        arr = np.asarray(value)
        if arr.dtype.kind == "f":
            arr = arr.astype(np.float32)
        self.inits.append(numpy_helper.from_array(arr, name))
        return name

    def op(self, kind: str, inputs: list[str], name: str, **attrs: Any) -> str:
        self.nodes.append(helper.make_node(kind, inputs, [name], name=name, **attrs))
        return name


def _activation(g: _Graph, x: str, act: Activation, tag: str) -> str:
    if act.kind == "LIN":
        return x
    if act.kind != "RELU":  # YOLO is handled by _yolo
        raise InvalidModelError(f"{tag}: activation {act.text!r} is not supported here")
    r = g.op("LeakyRelu", [x], f"{tag}.leaky", alpha=float(act.leak))
    over = g.op("Relu", [g.op("Sub", [r, g.const(f"{tag}.sat", act.saturation)],
                              f"{tag}.minus_sat")], f"{tag}.over")
    cut = g.op("Mul", [over, g.const(f"{tag}.one_minus_leak", 1.0 - act.leak)], f"{tag}.cut")
    return g.op("Sub", [r, cut], f"{tag}.out")


def _conv(g: _Graph, x: str, layer: ConvLayer) -> str:
    tag = f"L{layer.index}.conv"
    fx, fy, _ = layer.f_size
    m, c = layer.nb_filters, layer.in_shape[3]
    w = layer.weights[:, :-1].reshape(m, c, 1, fy, fx)[:, :, 0].astype(np.float32)
    b = (layer.weights[:, -1] * np.float32(layer.bias_value)).astype(np.float32)
    if layer.dropout > 0.01:  # CIANNA's AVG_MODEL inference: pre-activation * (1 - rate)
        keep = np.float32(1.0) - np.float32(layer.dropout)
        w, b = w * keep, b * keep
    px, py = layer.padding[0], layer.padding[1]
    y = g.op("Conv", [x, g.const(f"{tag}.weight", w), g.const(f"{tag}.bias", b)], tag,
             kernel_shape=[fy, fx], strides=[layer.stride[1], layer.stride[0]],
             pads=[py, px, py, px], dilations=[1, 1], group=1)
    if layer.activation.kind == "YOLO":
        assert layer.yolo is not None
        return _yolo(g, y, layer.yolo, f"L{layer.index}.yolo")
    return _activation(g, y, layer.activation, f"L{layer.index}.act")


def _norm(g: _Graph, x: str, layer: NormLayer, channels: int) -> str:
    tag = f"L{layer.index}.gn"
    n_group = channels // layer.group_size
    shape = g.op("Shape", [x], f"{tag}.shape")
    grouped = g.op("Reshape", [x, g.const(f"{tag}.grouped_shape",
                                          np.array([0, n_group, -1], np.int64))],
                   f"{tag}.grouped")
    mean = g.op("ReduceMean", [grouped], f"{tag}.mean", axes=[2], keepdims=1)
    dev = g.op("Sub", [grouped, mean], f"{tag}.dev")
    var = g.op("ReduceMean", [g.op("Mul", [dev, dev], f"{tag}.dev2")], f"{tag}.var",
               axes=[2], keepdims=1)
    std = g.op("Sqrt", [g.op("Add", [var, g.const(f"{tag}.eps", GN_EPS)], f"{tag}.var_eps")],
               f"{tag}.std")
    normed = g.op("Reshape", [g.op("Div", [dev, std], f"{tag}.normed_grouped"), shape],
                  f"{tag}.normed")
    gamma = np.repeat(layer.gamma, layer.group_size).reshape(1, channels, 1, 1)
    beta = np.repeat(layer.beta, layer.group_size).reshape(1, channels, 1, 1)
    y = g.op("Add", [g.op("Mul", [normed, g.const(f"{tag}.gamma", gamma)], f"{tag}.scaled"),
                     g.const(f"{tag}.beta", beta)], f"{tag}.affine")
    if layer.set_off:
        keep = np.repeat(np.arange(n_group) < n_group - layer.set_off, layer.group_size)
        y = g.op("Where", [g.const(f"{tag}.normalised_channels",
                                   keep.reshape(1, channels, 1, 1)), y, x], f"{tag}.out")
    return _activation(g, y, layer.activation, f"L{layer.index}.act")


def yolo_channel_tables(spec: YoloSpec) -> dict[str, NDArray[np.generic]]:
    """Per-channel ``(1, K, 1, 1)`` tables of the YOLO activation.

    Returns
    -------
    dict
        ``slope``, ``lo``, ``hi`` (float32), ``sigmoid`` and ``fixed`` (bool) and
        ``fixed_value`` (float32): ``out = fixed ? fixed_value : (sigmoid ? sigmoid(u) :
        u)`` with ``u = clip(slope * x, lo, hi)``.
    """
    c = spec.box_size
    sm = spec.slopes
    slope, lo, hi = np.ones(c), np.zeros(c), np.zeros(c)
    sig, fixed, value = np.zeros(c, bool), np.zeros(c, bool), np.zeros(c)

    def sigmoid_rows(j: slice | int, row: int) -> None:
        slope[j], lo[j], hi[j], sig[j] = sm[row, 0], -sm[row, 1], -sm[row, 2], True

    def linear_rows(j: slice | int, row: int) -> None:
        slope[j], lo[j], hi[j] = sm[row, 0], sm[row, 2], sm[row, 1]

    for d in range(3):
        sigmoid_rows(d, 0)
        linear_rows(3 + d, 1)
        if d >= spec.fit_dim:  # unfitted dimension: cell centre, prior size
            fixed[d], value[d] = True, 0.5
            fixed[3 + d], value[3 + d] = True, 0.0
    sigmoid_rows(6, 2)
    sigmoid_rows(7, 3)
    sigmoid_rows(slice(8, 8 + spec.nb_class), 4)
    linear_rows(slice(8 + spec.nb_class, c), 5)
    n = spec.nb_box

    def tile(v: NDArray[np.generic]) -> NDArray[np.generic]:
        return np.tile(v, n).reshape(1, n * c, 1, 1)

    return {"slope": tile(slope.astype(np.float32)), "lo": tile(lo.astype(np.float32)),
            "hi": tile(hi.astype(np.float32)), "sigmoid": tile(sig), "fixed": tile(fixed),
            "fixed_value": tile(value.astype(np.float32))}


def _yolo(g: _Graph, x: str, spec: YoloSpec, tag: str) -> str:
    t = yolo_channel_tables(spec)
    u = g.op("Mul", [x, g.const(f"{tag}.slope", t["slope"])], f"{tag}.scaled")
    u = g.op("Max", [u, g.const(f"{tag}.lo", t["lo"])], f"{tag}.clip_lo")
    u = g.op("Min", [u, g.const(f"{tag}.hi", t["hi"])], f"{tag}.clip_hi")
    s = g.op("Sigmoid", [u], f"{tag}.sigmoid")
    y = g.op("Where", [g.const(f"{tag}.is_sigmoid", t["sigmoid"]), s, u], f"{tag}.activated")
    if bool(t["fixed"].any()):
        y = g.op("Where", [g.const(f"{tag}.is_fixed", t["fixed"]),
                          g.const(f"{tag}.fixed_value", t["fixed_value"]), y], f"{tag}.fixed")
    return y


def build_graph(net: CiannaNetwork, *, input_name: str = "image", output_name: str = "grid",
                opset: int = 17, producer_version: str = "",
                metadata: dict[str, str] | None = None, doc: str = "") -> onnx.ModelProto:
    """The ONNX model of ``net``: input ``(N, 1, H, W)``, output ``(N, K, H/s, W/s)``.

    Parameters
    ----------
    net : CiannaNetwork
    input_name, output_name : str
        Tensor names.
    opset : int
        ONNX opset, 13 to 17 (``ReduceMean`` takes its axes as an attribute).
    producer_version : str
        Recorded in the model.
    metadata : dict of str, optional
        ``metadata_props`` (the streamdet contract).
    doc : str
        Model doc string.

    Raises
    ------
    InvalidModelError
        A layer the graph cannot express (3D, transposed or misaligned convolutions,
        softmax classes).
    """
    if not 13 <= opset <= 17:
        raise InvalidModelError(f"opset {opset} must be in [13, 17] for the CIANNA importer")
    y = net.yolo
    if y.class_softmax:
        raise InvalidModelError(
            f"{str(net.path)!r}: softmax classes (class_softmax=1) are not supported; the "
            f"importer handles sigmoid classes only")
    g = _Graph()
    x = input_name
    channels = 1
    for layer in net.layers:
        if isinstance(layer, ConvLayer):
            _check_conv_geometry(net, layer)
            x = _conv(g, x, layer)
            channels = layer.nb_filters
        else:
            x = _norm(g, x, layer, channels)
    g.nodes.append(helper.make_node("Identity", [x], [output_name], name="output"))
    k = y.nb_box * y.box_size
    graph = helper.make_graph(
        g.nodes, "cianna_yolo",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, ["N", 1, "H", "W"])],
        [helper.make_tensor_value_info(output_name, TensorProto.FLOAT, ["N", k, "Gy", "Gx"])],
        initializer=g.inits)
    opsets = [helper.make_opsetid("", opset)]
    proto = helper.make_model(graph, opset_imports=opsets, producer_name="streamdet-cianna",
                              producer_version=producer_version,
                              ir_version=helper.find_min_ir_version_for(opsets))
    proto.doc_string = doc
    if metadata:
        helper.set_model_props(proto, dict(metadata))
    return proto
