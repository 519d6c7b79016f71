"""Training targets of the YOLO-CIANNA-style detector: truth boxes, selection, association, loss.

Conventions (as in the streamdet contract): pixel ``i`` is centred on ``i`` (0-based),
boxes are ``[x0, y0, x1, y1]`` in px, grid cell ``(gy, gx)`` covers pixels
``[g * stride - 0.5, (g + 1) * stride - 0.5)`` and a box of that cell has its centre
at ``(g + offset) * stride - 0.5``. Angles ``phi`` are the direction of a source's
major axis in the pixel frame, radians from +x towards +y (x the column, y the row).

The recipe (adapted from YOLO-CIANNA, Cornu et al. 2024):

* **Truth box**: the bounding box of the source's beam-convolved ellipse at
  ``box_factor`` x its FWHM (:func:`visible_extent`, :func:`ellipse_boxes`), the
  source sizes first converted to Gaussian FWHM with the SDC1 scorer's factors
  (:data:`SIZE_TO_GAUSS`).
* **Selection**: only sources whose beam-convolved, primary-beam attenuated peak
  reaches ``snr_min`` x the noise rms (:func:`peak_snr`) are targets; the others
  are "ignore" sources.
* **Association** (:func:`build_targets`): each selected source goes to a prior of
  the cell holding its centre; the prior whose *current prediction* has the best
  DIoU with the truth box wins (early in training: the prior whose shape best
  matches the truth box). Sources of one cell are served brightest first, each
  taking a prior no brighter source took.
* **Objectness**: ``(1 + DIoU) / 2`` (prediction vs truth) for the assigned prior;
  0 for every other prior, except that a prediction overlapping any true box
  (selected or not) with IoU above ``ignore_iou`` is not penalised.
* **Loss** (:func:`yolo_loss`): squared error of the cell offsets, of the size
  channels ``t = ln(size / prior)`` and of the parameter channels (targets from
  :func:`streamdet.engine.decode.encode_params`) on assigned priors only, weighted per
  term and per source (brightness); binary cross-entropy of objectness (and of the
  ``prob`` channel on assigned priors).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray

from streamdet.engine.boxes import box_diou_paired, box_iou, box_iou_paired
from streamdet.errors import StreamdetValueError

__all__ = [
    "SIZE_TO_GAUSS",
    "CutoutTruth",
    "LossWeights",
    "TargetSpec",
    "Targets",
    "build_targets",
    "ellipse_boxes",
    "gaussian_sizes",
    "pa_weight",
    "peak_snr",
    "predicted_boxes",
    "prior_shape_iou",
    "snr_weight",
    "visible_extent",
    "yolo_loss",
]

FloatArray = NDArray[np.float64]

SIZE_TO_GAUSS: dict[int, float] = {1: 2.355 / 5.0, 2: 1.0, 3: math.sqrt(2.0)}
"""Factor from an SDC1 size (1 LAS, 2 Gaussian FWHM, 3 exponential scale length) to a
Gaussian FWHM, as the SDC1 scorer converts them (``ska_sdc`` constants)."""

_PA_AXIS_RATIO = 0.1
"""Axis ratio excess ``A/B - 1`` (beam-convolved axes) at which the PA gets full weight."""


# --------------------------------------------------------------------------- sources
def gaussian_sizes(bmaj: FloatArray, bmin: FloatArray,
                   size: NDArray[np.integer]) -> tuple[FloatArray, FloatArray]:
    """Convert SDC1 sizes to Gaussian FWHM (arcsec) with :data:`SIZE_TO_GAUSS`.

    Parameters
    ----------
    bmaj, bmin : (N,) float
        Major and minor sizes, arcsec, in the meaning of ``size``.
    size : (N,) int
        SDC1 size code (1, 2 or 3); any other code is taken as 2 (Gaussian).

    Returns
    -------
    (bmaj_g, bmin_g) : (N,) float64 each
        Gaussian-equivalent FWHM, arcsec, ``bmin_g <= bmaj_g``.
    """
    code = np.asarray(size)
    factor = np.ones(code.shape, np.float64)
    for k, f in SIZE_TO_GAUSS.items():
        factor[code == k] = f
    a = np.asarray(bmaj, np.float64) * factor
    b = np.asarray(bmin, np.float64) * factor
    return np.maximum(a, b), np.minimum(a, b)


def peak_snr(flux: FloatArray, bmaj_g: FloatArray, bmin_g: FloatArray, core_frac: FloatArray,
             pb: FloatArray, *, beam_arcsec: float, noise: float) -> FloatArray:
    """Peak signal-to-noise ratio of sources in a restored, primary-beam attenuated map.

    An elliptical Gaussian of integrated flux ``S`` and FWHM ``(a, b)`` convolved with a
    circular Gaussian beam of FWHM ``theta`` peaks at ``S theta^2 / (A B)`` Jy/beam with
    ``A = sqrt(a^2 + theta^2)``, ``B = sqrt(b^2 + theta^2)``; a point core of flux
    ``f_core S`` peaks at ``f_core S``. The peak is the larger of the two, times the
    primary-beam gain.

    Parameters
    ----------
    flux : (N,) float
        True (unattenuated) integrated flux, Jy.
    bmaj_g, bmin_g : (N,) float
        Gaussian FWHM of the source, arcsec (:func:`gaussian_sizes`).
    core_frac : (N,) float
        Fraction of the flux in a point core.
    pb : (N,) float
        Primary-beam gain at each source.
    beam_arcsec : float
        Restoring beam FWHM, arcsec (geometric mean of the axes for an elliptical beam).
    noise : float
        Map noise rms, Jy/beam.

    Returns
    -------
    (N,) float64
        Peak / noise.
    """
    if not (beam_arcsec > 0 and noise > 0):
        raise StreamdetValueError(f"beam_arcsec {beam_arcsec} and noise {noise} must be > 0")
    f = np.asarray(flux, np.float64) * np.asarray(pb, np.float64)
    cf = np.clip(np.asarray(core_frac, np.float64), 0.0, 1.0)
    t2 = beam_arcsec ** 2
    a2 = np.asarray(bmaj_g, np.float64) ** 2 + t2
    b2 = np.asarray(bmin_g, np.float64) ** 2 + t2
    extended = f * (1.0 - cf) * t2 / np.sqrt(a2 * b2)
    return np.maximum(extended, f * cf) / noise


def visible_extent(bmaj_g: FloatArray, bmin_g: FloatArray, *, beam_arcsec: float,
                   pixel_arcsec: float, factor: float, min_px: float
                   ) -> tuple[FloatArray, FloatArray]:
    """Full major and minor extent (px) of sources as they appear in the map.

    ``factor x sqrt(size^2 + beam^2)`` per axis (the beam-convolved FWHM), at least
    ``min_px``.

    Returns
    -------
    (major_px, minor_px) : (N,) float64 each
    """
    t2 = beam_arcsec ** 2
    major = factor * np.sqrt(np.asarray(bmaj_g, np.float64) ** 2 + t2) / pixel_arcsec
    minor = factor * np.sqrt(np.asarray(bmin_g, np.float64) ** 2 + t2) / pixel_arcsec
    return np.maximum(major, min_px), np.maximum(minor, min_px)


def ellipse_boxes(cx: FloatArray, cy: FloatArray, major: FloatArray, minor: FloatArray,
                  phi: FloatArray) -> FloatArray:
    """Bounding boxes (xyxy, px) of ellipses with full axes ``major``, ``minor`` at angle ``phi``.

    The half-width is ``sqrt(a^2 cos^2 phi + b^2 sin^2 phi)``, the half-height
    ``sqrt(a^2 sin^2 phi + b^2 cos^2 phi)`` (``a``, ``b`` the semi-axes).

    Returns
    -------
    (N, 4) float64
    """
    a = 0.5 * np.asarray(major, np.float64)
    b = 0.5 * np.asarray(minor, np.float64)
    c, s = np.cos(phi), np.sin(phi)
    hw = np.sqrt((a * c) ** 2 + (b * s) ** 2)
    hh = np.sqrt((a * s) ** 2 + (b * c) ** 2)
    return np.stack([cx - hw, cy - hh, cx + hw, cy + hh], axis=-1)


def pa_weight(major: FloatArray, minor: FloatArray) -> FloatArray:
    """Weight of the PA target: 0 for a round (beam-convolved) source, 1 once
    ``major / minor - 1 >= 0.1``."""
    ratio = np.asarray(major, np.float64) / np.maximum(np.asarray(minor, np.float64), 1e-12)
    return np.clip((ratio - 1.0) / _PA_AXIS_RATIO, 0.0, 1.0)


def snr_weight(snr: FloatArray, *, ref: float, power: float) -> FloatArray:
    """Brightness weight of the box and parameter losses: ``min(snr / ref, 1) ** power``."""
    if power == 0:
        return np.ones(np.shape(snr), np.float64)
    return np.clip(np.asarray(snr, np.float64) / ref, 1e-6, 1.0) ** power


# --------------------------------------------------------------------------- specification
@dataclass(frozen=True)
class LossWeights:
    """Weights of the loss terms (sums over the batch divided by its size).

    Attributes
    ----------
    xy, wh : float
        Squared error of the cell offsets and of ``t = ln(size / prior)``.
    obj, noobj : float
        Cross-entropy of objectness on assigned priors and on the other (not ignored) ones.
    param : float
        Squared error of the parameter channels.
    prob : float
        Cross-entropy of the ``prob`` channel (target 1) on assigned priors.
    """

    xy: float = 5.0
    wh: float = 1.0
    obj: float = 1.0
    noobj: float = 1.0
    param: float = 5.0
    prob: float = 0.5


@dataclass(frozen=True)
class TargetSpec:
    """What :func:`build_targets` and :func:`yolo_loss` need to know of the network.

    Attributes
    ----------
    priors : tuple of (w, h)
        Box priors, px.
    stride : int
        Grid cell, px.
    box_channels : tuple of str
        Channels of one box (must hold x, y, w, h, obj).
    param_channels : tuple of str
        Channels of the parameters, in :func:`streamdet.engine.decode.encode_params` order.
    wh_bound : float
        Bound of the size channels (0: unbounded); targets are clipped inside it.
    ignore_iou : float
        A non-assigned prediction whose IoU with a true box exceeds this is not penalised.
    obj_target : str
        ``"diou"``: ``(1 + DIoU) / 2``; ``"one"``: 1.
    assign_obj_power : float
        Prediction-aware association ranks the priors of a cell by
        ``(1 + DIoU) / 2 * obj ** assign_obj_power``: 0 is pure DIoU (YOLO-CIANNA);
        > 0 favours the prior that is already confident, which breaks the symmetry
        between identical priors (as task-aligned assignment does).
    reinject_obj : float
        Re-injection (YOLO-CIANNA's self-learning): a true source inside the cutout that
        the selection left out becomes a target when a prediction of its own cell
        overlaps it by more than ``ignore_iou`` with objectness >= ``reinject_obj``
        (0: off). The network is then taught the faint sources it can already find,
        rather than left unsupervised on them.
    weights : LossWeights
    """

    priors: tuple[tuple[float, float], ...]
    stride: int
    box_channels: tuple[str, ...]
    param_channels: tuple[str, ...]
    wh_bound: float = 4.0
    ignore_iou: float = 0.5
    obj_target: str = "diou"
    assign_obj_power: float = 0.0
    reinject_obj: float = 0.0
    weights: LossWeights = LossWeights()

    def __post_init__(self) -> None:
        missing = [c for c in ("x", "y", "w", "h", "obj", *self.param_channels)
                   if c not in self.box_channels]
        if missing:
            raise StreamdetValueError(f"box_channels {self.box_channels} lack {missing}")
        if self.obj_target not in ("diou", "one"):
            raise StreamdetValueError(f"obj_target must be 'diou' or 'one', got "
                                      f"{self.obj_target!r}")
        if self.assign_obj_power < 0:
            raise StreamdetValueError(
                f"assign_obj_power must be >= 0, got {self.assign_obj_power}")
        if not 0.0 < self.ignore_iou <= 1.0:
            raise StreamdetValueError(f"ignore_iou must be in (0, 1], got {self.ignore_iou}")
        if not 0.0 <= self.reinject_obj <= 1.0:
            raise StreamdetValueError(
                f"reinject_obj must be in [0, 1] (0: off), got {self.reinject_obj}")

    @property
    def nbox(self) -> int:
        """Priors per cell."""
        return len(self.priors)

    @property
    def nch(self) -> int:
        """Channels per box."""
        return len(self.box_channels)

    def index(self, name: str) -> int:
        """Index of a channel within one box."""
        return self.box_channels.index(name)

    @property
    def priors_array(self) -> FloatArray:
        """``(nbox, 2)`` priors, px."""
        return np.asarray(self.priors, np.float64).reshape(-1, 2)


@dataclass(frozen=True)
class CutoutTruth:
    """True sources of one training cutout, in cutout pixels (after augmentation).

    Attributes
    ----------
    boxes : (N, 4) float64
        Truth boxes, xyxy px (all sources near the cutout, selected or not).
    selected : (N,) bool
        Visible sources whose centre lies in the cutout: the targets. The others
        only define ignore regions.
    params : (N, Q) float64
        Encoded parameter targets (``TargetSpec.param_channels`` order).
    param_weight : (N, Q) float64
        Per-channel weights of the parameter loss (e.g. 0 for the PA of round sources).
    weight : (N,) float64
        Per-source weight of the box and parameter losses.
    snr : (N,) float64
        Peak SNR (association order: brightest first).
    """

    boxes: FloatArray
    selected: NDArray[np.bool_]
    params: FloatArray
    param_weight: FloatArray
    weight: FloatArray
    snr: FloatArray

    def __post_init__(self) -> None:
        n = self.boxes.shape[0]
        if self.boxes.shape != (n, 4):
            raise StreamdetValueError(f"boxes must be (N, 4), got {self.boxes.shape}")
        for name in ("selected", "weight", "snr"):
            if getattr(self, name).shape != (n,):
                raise StreamdetValueError(f"{name} must have shape ({n},), got "
                                          f"{getattr(self, name).shape}")
        if self.params.shape[0] != n or self.param_weight.shape != self.params.shape:
            raise StreamdetValueError(
                f"params {self.params.shape} and param_weight {self.param_weight.shape} must "
                f"be (N={n}, Q)")

    @classmethod
    def empty(cls, q: int) -> CutoutTruth:
        """A cutout without sources (``q`` parameter channels)."""
        z = np.zeros(0, np.float64)
        return cls(boxes=np.zeros((0, 4)), selected=np.zeros(0, bool), params=np.zeros((0, q)),
                   param_weight=np.zeros((0, q)), weight=z, snr=z.copy())


@dataclass(frozen=True)
class Targets:
    """Dense training targets of a batch on the output grid (B, nbox, ..., Gy, Gx).

    Attributes
    ----------
    pos : (B, nbox, Gy, Gx) bool
        Assigned priors.
    obj : (B, nbox, Gy, Gx) float32
        Objectness target.
    obj_weight : (B, nbox, Gy, Gx) float32
        Objectness loss weight (0 where ignored).
    xy, wh : (B, nbox, 2, Gy, Gx) float32
        Cell offset and ``t = ln(size / prior)`` targets (assigned priors).
    box_weight : (B, nbox, Gy, Gx) float32
        Per-source weight of the box loss (0 off assigned priors).
    params, param_weight : (B, nbox, Q, Gy, Gx) float32
        Parameter targets and weights (0 off assigned priors).
    n_pos, n_ignored, n_unassigned : int
        Assigned priors; priors whose objectness is ignored; selected sources left
        without a free prior.
    n_reinjected : int
        Unselected sources made targets by re-injection (:attr:`TargetSpec.reinject_obj`).
    """

    pos: NDArray[np.bool_]
    obj: NDArray[np.float32]
    obj_weight: NDArray[np.float32]
    xy: NDArray[np.float32]
    wh: NDArray[np.float32]
    box_weight: NDArray[np.float32]
    params: NDArray[np.float32]
    param_weight: NDArray[np.float32]
    n_pos: int
    n_ignored: int
    n_unassigned: int
    n_reinjected: int = 0


# --------------------------------------------------------------------------- association
def predicted_boxes(activated: NDArray[np.floating], spec: TargetSpec) -> FloatArray:
    """Boxes (xyxy, px) of every prior of an activated output grid.

    Parameters
    ----------
    activated : (B, nbox * C, Gy, Gx) array
        Contract-activated network output.
    spec : TargetSpec

    Returns
    -------
    (B, nbox, Gy, Gx, 4) float64
    """
    b, _, gy_n, gx_n = activated.shape
    g = np.asarray(activated, np.float64).reshape(b, spec.nbox, spec.nch, gy_n, gx_n)
    s = spec.stride
    gx = np.arange(gx_n, dtype=np.float64)[None, None, None, :]
    gy = np.arange(gy_n, dtype=np.float64)[None, None, :, None]
    cx = (gx + g[:, :, spec.index("x")]) * s - 0.5
    cy = (gy + g[:, :, spec.index("y")]) * s - 0.5
    pr = spec.priors_array
    hw = 0.5 * pr[None, :, 0, None, None] * np.exp(np.clip(g[:, :, spec.index("w")], -50, 50))
    hh = 0.5 * pr[None, :, 1, None, None] * np.exp(np.clip(g[:, :, spec.index("h")], -50, 50))
    return np.stack([cx - hw, cy - hh, cx + hw, cy + hh], axis=-1)


def prior_shape_iou(truth_wh: FloatArray, priors: FloatArray) -> FloatArray:
    """IoU of truth boxes and prior boxes sharing their centre.

    Parameters
    ----------
    truth_wh : (N, 2) float
    priors : (P, 2) float

    Returns
    -------
    (N, P) float64
    """
    tw, th = truth_wh[:, 0:1], truth_wh[:, 1:2]
    pw, ph = priors[None, :, 0], priors[None, :, 1]
    inter = np.minimum(tw, pw) * np.minimum(th, ph)
    out: FloatArray = inter / (tw * th + pw * ph - inter)
    return out


def _max_iou(pred: FloatArray, truth: Sequence[FloatArray], *, block: int = 8) -> FloatArray:
    """Largest IoU of each prediction with the truth boxes of its cutout.

    The grid is walked in ``block`` x ``block`` cells (all priors together); each
    block is compared only with the truth boxes that intersect the bounding box of
    its predictions, since every other truth box has IoU 0 with all of them. The
    result equals the dense all-pairs computation; its cost grows with the sources
    near each block rather than with all the sources of the cutout.

    Parameters
    ----------
    pred : (B, nbox, Gy, Gx, 4) float
        Predicted boxes on the output grid, xyxy.
    truth : sequence of B (N_b, 4) float arrays
    block : int
        Side of a block, in grid cells.

    Returns
    -------
    (B, nbox * Gy * Gx) float64
        In the order of ``pred.reshape(B, -1, 4)``; 0 where a cutout has no truth box.
    """
    b_n, nbox, gy_n, gx_n, _ = pred.shape
    out = np.zeros((b_n, nbox, gy_n, gx_n))
    for b, t in enumerate(truth):
        if t.shape[0] == 0:
            continue
        tb = np.asarray(t, np.float64)
        for y0 in range(0, gy_n, block):
            for x0 in range(0, gx_n, block):
                p = np.asarray(pred[b, :, y0:y0 + block, x0:x0 + block], np.float64)
                shape = p.shape[:3]
                p = p.reshape(-1, 4)
                near = np.flatnonzero((tb[:, 0] < p[:, 2].max()) & (tb[:, 2] > p[:, 0].min())
                                      & (tb[:, 1] < p[:, 3].max()) & (tb[:, 3] > p[:, 1].min()))
                if near.size == 0:
                    continue
                out[b, :, y0:y0 + block, x0:x0 + block] = box_iou(p, tb[near]).max(
                    axis=1).reshape(shape)
    return out.reshape(b_n, -1)


def build_targets(pred_boxes: FloatArray, truths: Sequence[CutoutTruth], spec: TargetSpec, *,
                  prediction_aware: bool, pred_obj: NDArray[np.floating] | None = None,
                  rng: np.random.Generator | None = None) -> Targets:
    """Associate true sources with priors and build the dense targets of a batch.

    Parameters
    ----------
    pred_boxes : (B, nbox, Gy, Gx, 4) float
        Current predictions (:func:`predicted_boxes`), cutout px.
    truths : sequence of B CutoutTruth
        True sources of each cutout.
    spec : TargetSpec
    prediction_aware : bool
        Choose the prior by the DIoU of its current prediction with the truth box
        (times its objectness to the power ``spec.assign_obj_power``); False: by the
        IoU of the prior's shape with the truth box (early training).
    pred_obj : (B, nbox, Gy, Gx) float, optional
        Current objectness (needed when ``spec.assign_obj_power > 0``).
    rng : numpy.random.Generator, optional
        Breaks ties between identical priors at random (shape association); without
        it the first free prior wins.

    Returns
    -------
    Targets
    """
    b_n, nbox, gy_n, gx_n, _ = pred_boxes.shape
    if len(truths) != b_n or nbox != spec.nbox:
        raise StreamdetValueError(
            f"{len(truths)} truths for a batch of {b_n}; {nbox} priors in the grid, "
            f"{spec.nbox} in the spec")
    q = len(spec.param_channels)
    s = spec.stride
    shape = (b_n, nbox, gy_n, gx_n)
    pos = np.zeros(shape, bool)
    obj = np.zeros(shape, np.float32)
    obj_w = np.full(shape, spec.weights.noobj, np.float32)
    xy = np.zeros((b_n, nbox, 2, gy_n, gx_n), np.float32)
    wh = np.zeros_like(xy)
    box_w = np.zeros(shape, np.float32)
    params = np.zeros((b_n, nbox, q, gy_n, gx_n), np.float32)
    param_w = np.zeros_like(params)
    priors = spec.priors_array
    bound = 0.98 * spec.wh_bound if spec.wh_bound > 0 else np.inf
    n_ignored = n_unassigned = 0

    max_iou = _max_iou(pred_boxes, [t.boxes for t in truths])
    n_reinjected = 0
    for b, truth in enumerate(truths):
        ignored = (max_iou[b] > spec.ignore_iou).reshape(nbox, gy_n, gx_n)
        sel = np.flatnonzero(truth.selected)
        if spec.reinject_obj > 0 and pred_obj is not None:
            extra = _reinjected(pred_boxes[b], pred_obj[b], truth, spec)
            n_reinjected += extra.size
            sel = np.union1d(sel, extra)
        tb = truth.boxes[sel]
        cx = 0.5 * (tb[:, 0] + tb[:, 2])
        cy = 0.5 * (tb[:, 1] + tb[:, 3])
        gx = np.clip(np.floor((cx + 0.5) / s).astype(np.int64), 0, gx_n - 1)
        gy = np.clip(np.floor((cy + 0.5) / s).astype(np.int64), 0, gy_n - 1)
        cand = pred_boxes[b][:, gy, gx].transpose(1, 0, 2)  # (n, nbox, 4)
        n = sel.size
        if n == 0:
            obj_w[b][ignored] = 0.0
            n_ignored += int(ignored.sum())
            continue
        diou = box_diou_paired(cand.reshape(-1, 4),
                               np.repeat(tb, nbox, axis=0)).reshape(n, nbox)
        twh = np.stack([tb[:, 2] - tb[:, 0], tb[:, 3] - tb[:, 1]], axis=1)
        if prediction_aware:
            score = (1.0 + diou) / 2.0
            if spec.assign_obj_power > 0:
                if pred_obj is None:
                    raise StreamdetValueError("assign_obj_power > 0 needs pred_obj")
                conf = np.clip(pred_obj[b][:, gy, gx].T, 1e-6, 1.0)  # (n, nbox)
                score = score * conf ** spec.assign_obj_power
        else:
            score = prior_shape_iou(twh, priors)
            if rng is not None:  # identical priors: spread the sources over them
                score = score + 1e-9 * rng.random(score.shape)
        order = np.argsort(-truth.snr[sel], kind="stable")
        taken: dict[tuple[int, int], NDArray[np.bool_]] = {}
        for i in order:
            key = (int(gy[i]), int(gx[i]))
            free = taken.setdefault(key, np.ones(nbox, bool))
            if not free.any():
                n_unassigned += 1
                continue
            k = int(np.argmax(np.where(free, score[i], -np.inf)))
            free[k] = False
            j, yy, xx = sel[i], gy[i], gx[i]
            pos[b, k, yy, xx] = True
            obj[b, k, yy, xx] = (1.0 + diou[i, k]) / 2.0 if spec.obj_target == "diou" else 1.0
            xy[b, k, 0, yy, xx] = (cx[i] + 0.5) / s - xx
            xy[b, k, 1, yy, xx] = (cy[i] + 0.5) / s - yy
            wh[b, k, :, yy, xx] = np.clip(np.log(twh[i] / priors[k]), -bound, bound)
            box_w[b, k, yy, xx] = truth.weight[j]
            params[b, k, :, yy, xx] = truth.params[j]
            param_w[b, k, :, yy, xx] = truth.param_weight[j] * truth.weight[j]
        ign = ignored & ~pos[b]
        obj_w[b][ign] = 0.0
        obj_w[b][pos[b]] = spec.weights.obj
        n_ignored += int(ign.sum())
    return Targets(pos=pos, obj=obj, obj_weight=obj_w, xy=xy, wh=wh, box_weight=box_w,
                   params=params, param_weight=param_w, n_pos=int(pos.sum()),
                   n_ignored=n_ignored, n_unassigned=n_unassigned, n_reinjected=n_reinjected)


def _reinjected(pred: FloatArray, obj: FloatArray, truth: CutoutTruth, spec: TargetSpec
                ) -> NDArray[np.int64]:
    """Indices of the unselected sources of one cutout that re-injection makes targets.

    Parameters
    ----------
    pred : (nbox, Gy, Gx, 4) float
        Predicted boxes, xyxy px.
    obj : (nbox, Gy, Gx) float
        Predicted objectness.
    truth : CutoutTruth
    spec : TargetSpec

    Returns
    -------
    (K,) int64
        Sources outside the selection, whose centre lies in the grid, for which a prior
        of their cell predicts an overlapping box (IoU > ``ignore_iou``) with objectness
        >= ``reinject_obj``.
    """
    gy_n, gx_n = pred.shape[1:3]
    s = spec.stride
    tb = truth.boxes
    cx = 0.5 * (tb[:, 0] + tb[:, 2])
    cy = 0.5 * (tb[:, 1] + tb[:, 3])
    gx = np.floor((cx + 0.5) / s).astype(np.int64)
    gy = np.floor((cy + 0.5) / s).astype(np.int64)
    cand = np.flatnonzero(~truth.selected & (gx >= 0) & (gx < gx_n) & (gy >= 0) & (gy < gy_n))
    if cand.size == 0:
        return cand
    nbox = pred.shape[0]
    p = pred[:, gy[cand], gx[cand]].transpose(1, 0, 2)  # (K, nbox, 4)
    iou = box_iou_paired(p.reshape(-1, 4), np.repeat(tb[cand], nbox, axis=0)).reshape(
        cand.size, nbox)
    conf = np.asarray(obj[:, gy[cand], gx[cand]], np.float64).T  # (K, nbox)
    found = np.any((iou > spec.ignore_iou) & (conf >= spec.reinject_obj), axis=1)
    return cand[found]


# --------------------------------------------------------------------------- loss
def yolo_loss(raw: torch.Tensor, targets: Targets, spec: TargetSpec
              ) -> tuple[torch.Tensor, dict[str, float]]:
    """The training loss of a batch.

    Parameters
    ----------
    raw : (B, nbox * C, Gy, Gx) tensor
        Pre-activation network output (``YoloCianna.raw``).
    targets : Targets
        From :func:`build_targets`.
    spec : TargetSpec

    Returns
    -------
    (loss, parts)
        The scalar loss (sums over the batch divided by B) and its weighted terms
        ``xy``, ``wh``, ``obj``, ``param``, ``prob`` as floats.
    """
    b_n, _, gy_n, gx_n = raw.shape
    z = raw.view(b_n, spec.nbox, spec.nch, gy_n, gx_n)
    dev = raw.device

    def t(a: NDArray[np.generic]) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a)).to(dev)

    w = spec.weights
    pos = t(targets.pos)
    box_w = t(targets.box_weight)
    ix, iy, iw, ih = (spec.index(c) for c in ("x", "y", "w", "h"))
    xy = torch.sigmoid(z[:, :, [ix, iy]])
    l_xy = ((xy - t(targets.xy)) ** 2 * box_w[:, :, None]).sum()
    if spec.wh_bound > 0:
        size = spec.wh_bound * torch.tanh(z[:, :, [iw, ih]] / spec.wh_bound)
    else:
        size = z[:, :, [iw, ih]]
    l_wh = ((size - t(targets.wh)) ** 2 * box_w[:, :, None]).sum()
    l_obj = (F.binary_cross_entropy_with_logits(z[:, :, spec.index("obj")], t(targets.obj),
                                                reduction="none") * t(targets.obj_weight)).sum()
    l_param = raw.new_zeros(())
    if spec.param_channels:
        idx = [spec.index(c) for c in spec.param_channels]
        p = torch.sigmoid(z[:, :, idx])
        l_param = ((p - t(targets.params)) ** 2 * t(targets.param_weight)).sum()
    l_prob = raw.new_zeros(())
    if "prob" in spec.box_channels:
        logit = z[:, :, spec.index("prob")]
        l_prob = (F.binary_cross_entropy_with_logits(logit, torch.ones_like(logit),
                                                     reduction="none") * pos).sum()
    parts = {"xy": w.xy * l_xy / b_n, "wh": w.wh * l_wh / b_n, "obj": l_obj / b_n,
             "param": w.param * l_param / b_n, "prob": w.prob * l_prob / b_n}
    loss = parts["xy"] + parts["wh"] + parts["obj"] + parts["param"] + parts["prob"]
    return loss, {k: float(v.detach()) for k, v in parts.items()}
