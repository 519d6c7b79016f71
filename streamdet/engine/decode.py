"""Decode raw detector outputs into detections, and encode parameters for training.

The output grid of a 2D detector is ``(N, K, Gy, Gx)`` (3D: ``(N, K, Gz, Gy, Gx)``) with
``K = nbox * C`` and
channel ``k = box * C + j`` (``C = len(contract.box_channels)``). A box of cell
``(gy, gx)`` decodes to (streamdet's xyxy convention, pixel ``i`` centred on ``i``)::

    cx = (gx + x) * stride_x - 0.5 + x0        w = prior_w * exp(t_w)
    cy = (gy + y) * stride_y - 0.5 + y0        h = prior_h * exp(t_h)
    box = [cx - w/2, cy - h/2, cx + w/2, cy + h/2]

where ``(x0, y0)`` is the origin of the tile in the full image. A 3D detector (a cube:
z the channel) decodes the same way along its third axis, from the ``z`` and ``d``
channels, ``stride_z`` and the prior's third size::

    cz = (gz + z) * stride_z - 0.5 + z0        d = prior_d * exp(t_d)
    box = [cx - w/2, cy - h/2, cz - d/2, cx + w/2, cy + h/2, cz + d/2]
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ..errors import StreamdetValueError
from .contract import ModelContract, ParamSpec
from .detections import Detections

__all__ = ["decode", "decode_params", "encode_params", "resolve_thresholds"]

_T_MAX = 50.0
"""``|t|`` beyond which size channels are clipped before ``exp`` (avoids overflow)."""


# --------------------------------------------------------------------------- parameters
def _decode_one(spec: ParamSpec, v: NDArray[np.float64]) -> NDArray[np.float64]:
    """Decode one parameter from its ``(M, len(spec.channels))`` channel values."""
    if spec.decode == "log_minmax":
        assert spec.min is not None and spec.max is not None
        lo, hi = np.log(spec.min), np.log(spec.max)
        out: NDArray[np.float64] = np.exp(lo + np.clip(v[:, 0], 0.0, 1.0) * (hi - lo))
        return out
    if spec.decode == "minmax":
        assert spec.min is not None and spec.max is not None
        return spec.min + v[:, 0] * (spec.max - spec.min)
    if spec.decode == "identity":
        return v[:, 0].copy()
    if spec.decode == "angle_cos_sin01":
        assert spec.period is not None
        theta = np.degrees(np.arctan2(2.0 * v[:, 1] - 1.0, v[:, 0]))
        theta = np.mod(theta, spec.period)
        # np.mod(-tiny, P) rounds to P itself; keep the result in [0, P).
        theta[theta >= spec.period] -= spec.period
        return theta
    raise StreamdetValueError(f"unknown decode kind {spec.decode!r} of parameter {spec.name!r}")


def _encode_one(spec: ParamSpec, value: NDArray[np.float64]) -> NDArray[np.float64]:
    """Encode one physical parameter ``(M,)`` into its ``(M, len(spec.channels))`` channels."""
    if spec.decode == "log_minmax":
        assert spec.min is not None and spec.max is not None
        lo, hi = np.log(spec.min), np.log(spec.max)
        v = (np.log(np.clip(value, spec.min, spec.max)) - lo) / (hi - lo)
        return np.clip(v, 0.0, 1.0)[:, None]
    if spec.decode == "minmax":
        assert spec.min is not None and spec.max is not None
        return ((value - spec.min) / (spec.max - spec.min))[:, None]
    if spec.decode == "identity":
        return value[:, None].copy()
    if spec.decode == "angle_cos_sin01":
        assert spec.period is not None
        half = spec.period / 2.0
        t = np.radians(np.mod(value + half, spec.period) - half)
        return np.stack([np.cos(t), (np.sin(t) + 1.0) / 2.0], axis=1)
    raise StreamdetValueError(f"unknown decode kind {spec.decode!r} of parameter {spec.name!r}")


def decode_params(values: ArrayLike, contract: ModelContract) -> NDArray[np.float64]:
    """Decode parameter channels into physical values.

    Parameters
    ----------
    values : (M, Q) array
        Channel values in the order of ``contract.param_channels``.
    contract : ModelContract

    Returns
    -------
    (M, P) float64
        Physical values in the order of ``contract.param_names``, in their units.
    """
    v = np.asarray(values, np.float64)
    q = len(contract.param_channels)
    if v.ndim != 2 or v.shape[1] != q:
        raise StreamdetValueError(
            f"parameter channel values must have shape (M, {q}) "
            f"({contract.param_channels}), got {v.shape}")
    out = np.empty((v.shape[0], len(contract.params)), np.float64)
    col = 0
    for i, spec in enumerate(contract.params):
        n = len(spec.channels)
        out[:, i] = _decode_one(spec, v[:, col:col + n])
        col += n
    return out


def encode_params(values: ArrayLike, contract: ModelContract) -> NDArray[np.float64]:
    """Encode physical parameters into the channel values a model should output.

    The inverse of :func:`decode_params` (up to clipping to each ``log_minmax``
    range and the period of angles): use it to build training targets.

    Parameters
    ----------
    values : (M, P) array
        Physical values in the order of ``contract.param_names``, in their units.
    contract : ModelContract

    Returns
    -------
    (M, Q) float64
        Channel values in the order of ``contract.param_channels``.
    """
    v = np.asarray(values, np.float64)
    p = len(contract.params)
    if v.ndim != 2 or v.shape[1] != p:
        raise StreamdetValueError(
            f"parameter values must have shape (M, {p}) ({contract.param_names}), got {v.shape}")
    cols = [_encode_one(spec, v[:, i]) for i, spec in enumerate(contract.params)]
    if not cols:
        return np.zeros((v.shape[0], 0), np.float64)
    return np.concatenate(cols, axis=1)


# --------------------------------------------------------------------------- boxes
def resolve_thresholds(threshold: float | ArrayLike | None,
                       contract: ModelContract) -> NDArray[np.float64]:
    """Per-prior objectness thresholds ``(nbox,)`` from a scalar, an array or None (default)."""
    if threshold is None:
        return contract.threshold_values("default")
    t = np.asarray(threshold, np.float64)
    if t.ndim == 0:
        t = np.full(contract.nbox, float(t))
    if t.shape != (contract.nbox,):
        raise StreamdetValueError(
            f"threshold must be a scalar or one value per prior ({contract.nbox}), "
            f"got shape {t.shape}")
    if np.any(np.isnan(t)):
        raise StreamdetValueError(f"threshold {t} contains NaN")
    return t


def _origins(origins: ArrayLike | None, n: int, ndim: int = 2) -> NDArray[np.float64]:
    if origins is None:
        return np.zeros((n, ndim), np.float64)
    o = np.asarray(origins, np.float64)
    if o.shape == (ndim,):
        o = np.broadcast_to(o, (n, ndim))
    if o.shape != (n, ndim):
        axes = "(x0, y0)" if ndim == 2 else "(x0, y0, z0)"
        raise StreamdetValueError(
            f"origins must have shape ({ndim},) or ({n}, {ndim}) as {axes} per tile, "
            f"got {o.shape}")
    return o


_POSITION = ("x", "y", "z")
_SIZE = ("w", "h", "d")


def decode(grid: ArrayLike, contract: ModelContract, *,
           threshold: float | ArrayLike | None = None, origins: ArrayLike | None = None,
           chunk: int = -1) -> Detections:
    """Turn raw outputs of a 2D or 3D detector into detections in full-image pixels.

    Parameters
    ----------
    grid : (N, K, Gy, Gx) or (K, Gy, Gx) float array; 3D (N, K, Gz, Gy, Gx) or (K, Gz, Gy, Gx)
        Activated model outputs of ``N`` tiles (``K = contract.n_channels``); any
        sub-grid (e.g. a tile's core cells) with matching ``origins``.
    contract : ModelContract
        The model's contract (``ndim`` 2 or 3).
    threshold : float or (nbox,) array, optional
        Keep boxes whose objectness is >= threshold (one value, or one per prior);
        default: the contract's ``"default"`` preset.
    origins : (ndim,) or (N, ndim) array, optional
        Pixel coordinates ``(x0, y0)`` (3D: ``(x0, y0, z0)``, z the channel) in the full
        image of the grid's first cell corner (cell ``(0, 0)`` covers pixels
        ``[x0, x0 + stride_x)``) for each tile; default 0.
    chunk : int
        Chunk index stored in the detections (-1: unknown).

    Returns
    -------
    Detections
        Boxes (px; ``(M, 4)`` xyxy, 3D ``(M, 6)`` ``[x0, y0, z0, x1, y1, z1]``; the
        3D cell decoding is the 2D one per axis, with ``z``/``d`` channels and the
        prior's third size along z), objectness, probability (1 if the model has no
        ``prob`` channel), prior index and decoded parameters (``contract.param_names``).
    """
    nd = contract.ndim
    if nd not in (2, 3):
        raise StreamdetValueError(f"decode handles 2D and 3D detectors; this one is {nd}D")
    g = np.asarray(grid)
    if g.ndim == nd + 1:
        g = g[None]
    k = contract.n_channels
    if g.ndim != nd + 2 or g.shape[1] != k:
        axes = "Gy, Gx" if nd == 2 else "Gz, Gy, Gx"
        raise StreamdetValueError(
            f"grid must have shape (N, {k}, {axes}) ({contract.nbox} priors x "
            f"{len(contract.box_channels)} channels), got {np.shape(grid)}")
    n = g.shape[0]
    cells = g.shape[2:]                                  # (Gy, Gx) or (Gz, Gy, Gx)
    thr = resolve_thresholds(threshold, contract)
    org = _origins(origins, n, nd)
    names = contract.param_names
    nbox, nch = contract.nbox, len(contract.box_channels)
    g5 = g.reshape(n, nbox, nch, *cells)

    j_obj = contract.channel_index("obj")
    obj = g5[:, :, j_obj]
    keep = obj >= thr.reshape((1, nbox) + (1,) * nd)
    found = np.nonzero(keep)
    tile, box = found[0], found[1]
    # cell index per axis in x, y(, z) order
    cell = found[:1:-1]
    if tile.size == 0:
        return Detections.empty(names, ndim=nd).with_chunk(chunk)

    at: tuple[Any, ...] = (tile, box, slice(None), *found[2:])
    vals = g5[at].astype(np.float64)  # (M, C)
    stride = contract.stride[::-1]                       # (sx, sy[, sz])
    priors = contract.priors_array
    centre = []
    half = []
    for a in range(nd):
        pos = contract.channel_index(_POSITION[a])
        size = contract.channel_index(_SIZE[a])
        centre.append((cell[a] + vals[:, pos]) * stride[a] - 0.5 + org[tile, a])
        half.append(0.5 * priors[box, a] * np.exp(np.clip(vals[:, size], -_T_MAX, _T_MAX)))
    boxes = np.stack([c - h for c, h in zip(centre, half, strict=True)]
                     + [c + h for c, h in zip(centre, half, strict=True)], axis=1)

    if "prob" in contract.box_channels:
        prob = vals[:, contract.channel_index("prob")].astype(np.float32)
    else:
        prob = np.ones(tile.size, np.float32)
    pidx = [contract.channel_index(c) for c in contract.param_channels]
    # float32: 7 significant digits are ample for fluxes, sizes and angles, and the
    # catalogue is held for the whole run (16 bytes a row less with 4 parameters)
    params = decode_params(vals[:, pidx], contract).astype(np.float32)
    return Detections(
        boxes=boxes,
        objectness=obj[found].astype(np.float32),
        probability=prob,
        prior=box.astype(np.int16),
        params=params,
        param_names=names,
        chunk=np.full(tile.size, chunk, np.int32),
    )
