"""Training targets, loss and reference decoding of the 3D (HI cube) detector.

Conventions (the streamdet contract's, extended to 3D): voxel ``i`` is centred on ``i``
(0-based) along every axis; a 3D box is ``[x0, y0, z0, x1, y1, z1]`` (x the column, y the
row, z the channel); grid cell ``(gz, gy, gx)`` covers voxels
``[g * stride - 0.5, (g + 1) * stride - 0.5)`` per axis and its box has its centre at
``(g + offset) * stride - 0.5``, its size ``prior * exp(t)``. Contract lists are in input
order ``[z, y, x]`` (stride), priors ``[w, h, d]``.

The recipe (YOLO-CIANNA's, in 3D):

* **Positions** from an SDC2 truth (``ra``, ``dec``, ``central_freq``) through the cube's
  WCS (:func:`truth_voxels`).
* **Truth box**: in the sky plane the bounding box of the galaxy's beam-convolved HI disk
  (``hi_size`` major axis, ``hi_size * q`` minor with ``q`` the inclined disk's axis
  ratio, at the PA) times ``box_factor``; along frequency the line's w20 converted to
  channels at the galaxy's redshift (``w20 / (c dnu / nu)``), at least ``min_channels``.
* **Selection**: only galaxies whose matched-filter SNR (:func:`line_snr`: mean flux
  density over w20, at the peak of the beam-convolved disk, summed over the line's
  channels) reaches ``snr_min`` are targets; those between ``ignore_snr_min`` and
  ``snr_min`` are neither targets nor background (their cells and any prediction
  overlapping them carry no objectness loss); fainter ones are background.
* **Association**: one prior; a galaxy goes to the cell holding its centre, the
  brightest first when two share a cell.
* **Loss** (:func:`yolo_loss3d`): squared errors of the offsets, of ``t = ln(size /
  prior)`` and of the parameter channels on assigned cells (weighted by brightness, the
  PA by how elongated the galaxy looks); binary cross-entropy of objectness with target
  1 (or YOLO-CIANNA's ``(1 + DIoU) / 2``, ``Target3DSpec.obj_target``) on assigned
  cells, weighted 5x, and 0 elsewhere (except ignored cells).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS
from numpy.typing import NDArray

from streamdet.engine.contract import ModelContract
from streamdet.engine.decode import decode_params, encode_params
from streamdet.errors import StreamdetValueError

from ._targets import ellipse_boxes, pa_weight, snr_weight

__all__ = [
    "C_KMS",
    "CubeTruth",
    "Loss3DWeights",
    "Selection3D",
    "Target3DSpec",
    "Targets3D",
    "box_iou3d",
    "build_targets3d",
    "cube_truth_from_table",
    "decode3d",
    "disk_axis_ratio",
    "line_snr",
    "nms3d",
    "truth_boxes3d",
    "truth_voxels",
    "w20_channels",
    "yolo_loss3d",
]

FloatArray = NDArray[np.float64]

C_KMS = 299792.458
"""Speed of light, km/s."""

_Q0 = 0.15
"""Intrinsic thickness (axis ratio seen edge-on) of the simulated disks."""


# --------------------------------------------------------------------------- geometry
def truth_voxels(truth: Table, header: fits.Header) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Voxel positions of SDC2 truth rows through the cube's WCS.

    Parameters
    ----------
    truth : Table
        Columns ``ra``, ``dec`` (deg) and ``central_freq`` (Hz).
    header : astropy.io.fits.Header
        The cube's header (3 axes: RA, Dec, FREQ).

    Returns
    -------
    (x, y, z) : (N,) float64 each
        0-based column, row and channel.
    """
    wcs = WCS(header)
    if wcs.naxis != 3:
        raise StreamdetValueError(f"the cube WCS has {wcs.naxis} axes, 3 expected")
    x, y, z = wcs.all_world2pix(np.asarray(truth["ra"], np.float64),
                                np.asarray(truth["dec"], np.float64),
                                np.asarray(truth["central_freq"], np.float64), 0)
    return np.asarray(x, np.float64), np.asarray(y, np.float64), np.asarray(z, np.float64)


def w20_channels(w20_kms: FloatArray, freq_hz: FloatArray, channel_hz: float) -> FloatArray:
    """Line width in channels: ``w20 / (c dnu / nu)`` at the observed frequency ``nu``.

    Parameters
    ----------
    w20_kms : (N,) float
        Line width at 20 % of the peak, km/s.
    freq_hz : (N,) float
        Observed (central) frequency, Hz.
    channel_hz : float
        Channel width, Hz.

    Returns
    -------
    (N,) float64
        Width, channels.
    """
    kms_per_channel = C_KMS * float(channel_hz) / np.asarray(freq_hz, np.float64)
    return np.asarray(w20_kms, np.float64) / kms_per_channel


def disk_axis_ratio(inc_deg: FloatArray) -> FloatArray:
    """Apparent minor / major axis of a thick disk: ``sqrt(cos^2 i + (q0 sin i)^2)``."""
    i = np.radians(np.asarray(inc_deg, np.float64))
    return np.sqrt(np.cos(i) ** 2 + (_Q0 * np.sin(i)) ** 2)


def line_snr(flux_jy_hz: FloatArray, hi_size: FloatArray, inc_deg: FloatArray,
             w20_ch: FloatArray, *, beam_arcsec: float, channel_hz: float,
             noise: float) -> FloatArray:
    """Matched-filter SNR of galaxies in a cube.

    The mean flux density over the line ``S = F / (w20_ch x dnu)`` (Jy), at the peak of
    the beam-convolved disk (major ``hi_size``, minor ``q x hi_size``: ``S theta^2 / (A B)``
    Jy/beam), summed over the ``w20_ch`` channels of independent noise ``noise``:
    ``peak sqrt(w20_ch) / noise``.

    Parameters
    ----------
    flux_jy_hz : (N,) float
        Integrated line flux, Jy Hz.
    hi_size : (N,) float
        HI major axis, arcsec.
    inc_deg : (N,) float
        Inclination, deg.
    w20_ch : (N,) float
        Line width, channels (:func:`w20_channels`).
    beam_arcsec : float
        Restoring beam FWHM, arcsec.
    channel_hz : float
        Channel width, Hz.
    noise : float
        Noise rms per channel, Jy/beam.

    Returns
    -------
    (N,) float64
    """
    if not (beam_arcsec > 0 and channel_hz > 0 and noise > 0):
        raise StreamdetValueError("beam_arcsec, channel_hz and noise must be > 0")
    n = np.maximum(np.asarray(w20_ch, np.float64), 1.0)
    s = np.asarray(flux_jy_hz, np.float64) / (n * channel_hz)
    t2 = beam_arcsec ** 2
    a = np.asarray(hi_size, np.float64)
    b = a * disk_axis_ratio(inc_deg)
    peak = s * t2 / np.sqrt((a ** 2 + t2) * (b ** 2 + t2))
    out: FloatArray = peak * np.sqrt(n) / noise
    return out


def truth_boxes3d(x: FloatArray, y: FloatArray, z: FloatArray, hi_size: FloatArray,
                  inc_deg: FloatArray, pa_deg: FloatArray, w20_ch: FloatArray, *,
                  beam_arcsec: float, pixel_arcsec: float, box_factor: float = 1.5,
                  min_px: float = 3.0, min_channels: float = 4.0
                  ) -> tuple[FloatArray, FloatArray]:
    """3D truth boxes of galaxies, and the weight of their PA targets.

    Parameters
    ----------
    x, y, z : (N,) float
        Centre, voxels.
    hi_size, inc_deg, pa_deg : (N,) float
        HI major axis (arcsec), inclination and kinematic PA (deg, north through east;
        north is +y and east -x in an SDC2 cube).
    w20_ch : (N,) float
        Line width, channels.
    beam_arcsec, pixel_arcsec : float
        Beam FWHM and pixel side, arcsec.
    box_factor : float
        Sky-plane box = bounding box of the beam-convolved disk's axes times this.
    min_px, min_channels : float
        Smallest box side in the sky plane (px) and along frequency (channels).

    Returns
    -------
    boxes : (N, 6) float64
        ``[x0, y0, z0, x1, y1, z1]``.
    pa_w : (N,) float64
        PA weight in [0, 1] (:func:`export._targets.pa_weight` of the convolved axes).
    """
    t2 = beam_arcsec ** 2
    a = np.asarray(hi_size, np.float64)
    b = a * disk_axis_ratio(inc_deg)
    major = np.maximum(box_factor * np.sqrt(a ** 2 + t2) / pixel_arcsec, min_px)
    minor = np.maximum(box_factor * np.sqrt(b ** 2 + t2) / pixel_arcsec, min_px)
    phi = np.radians(90.0 + np.asarray(pa_deg, np.float64))
    sky = ellipse_boxes(np.asarray(x, np.float64), np.asarray(y, np.float64), major, minor,
                        phi)
    hd = 0.5 * np.maximum(np.asarray(w20_ch, np.float64), min_channels)
    zz = np.asarray(z, np.float64)
    boxes = np.stack([sky[:, 0], sky[:, 1], zz - hd, sky[:, 2], sky[:, 3], zz + hd], axis=1)
    return boxes, pa_weight(major, minor)


@dataclass(frozen=True)
class Selection3D:
    """Which galaxies are targets and how their boxes are made.

    Attributes
    ----------
    snr_min : float
        :func:`line_snr` a galaxy needs to be a target.
    ignore_snr_min : float
        :func:`line_snr` from which a non-target galaxy is ignored (not background).
    box_factor, min_px, min_channels : float
        See :func:`truth_boxes3d`.
    snr_ref, snr_power : float
        Per-galaxy weight of the box and parameter losses ``min(snr / snr_ref, 1) ** power``.
    """

    snr_min: float = 4.0
    ignore_snr_min: float = 2.0
    box_factor: float = 1.5
    min_px: float = 3.0
    min_channels: float = 4.0
    snr_ref: float = 20.0
    snr_power: float = 0.5


@dataclass
class CubeTruth:
    """Galaxies of a cube (or crop) in voxels, with their targets.

    Attributes
    ----------
    boxes : (N, 6) float64
        ``[x0, y0, z0, x1, y1, z1]``, voxels.
    params : (N, P) float64
        Physical values in the order of the contract's parameters.
    snr : (N,) float64
        :func:`line_snr`.
    pa_w : (N,) float64
        PA weight.
    flux : (N,) float64
        Line flux, Jy Hz (for brightness rankings).
    """

    boxes: FloatArray
    params: FloatArray
    snr: FloatArray
    pa_w: FloatArray
    flux: FloatArray

    def __len__(self) -> int:
        return int(self.boxes.shape[0])

    @property
    def centres(self) -> FloatArray:
        """(N, 3) ``(x, y, z)`` centres, voxels."""
        return 0.5 * (self.boxes[:, :3] + self.boxes[:, 3:])

    def take(self, idx: NDArray[np.integer] | NDArray[np.bool_]) -> CubeTruth:
        """Rows ``idx``."""
        return CubeTruth(self.boxes[idx], self.params[idx], self.snr[idx], self.pa_w[idx],
                         self.flux[idx])

    def shifted(self, dx: float, dy: float, dz: float) -> CubeTruth:
        """The same galaxies with positions minus ``(dx, dy, dz)`` (a crop's origin)."""
        off = np.array([dx, dy, dz, dx, dy, dz], np.float64)
        return CubeTruth(self.boxes - off, self.params, self.snr, self.pa_w, self.flux)


_PARAM_COLUMNS = {"line_flux_integral": "line_flux_integral", "hi_size": "hi_size",
                  "w20": "w20", "pa": "pa", "i": "i"}


def cube_truth_from_table(truth: Table, header: fits.Header, contract: ModelContract, *,
                          noise: float, selection: Selection3D | None = None) -> CubeTruth:
    """Voxel boxes, parameters and SNRs of an SDC2 truth catalogue on a cube.

    Parameters
    ----------
    truth : Table
        SDC2 truth columns (``ra dec hi_size line_flux_integral central_freq pa i w20``).
    header : fits.Header
        The cube's header (WCS; ``BMAJ`` deg and ``CDELT`` give the beam, pixel and
        channel width).
    contract : ModelContract
        The 3D contract (its ``param_names`` must be SDC2 truth columns).
    noise : float
        Noise rms per channel, Jy/beam.
    selection : Selection3D, optional

    Returns
    -------
    CubeTruth
        Every row of ``truth``.
    """
    sel = Selection3D() if selection is None else selection
    x, y, z = truth_voxels(truth, header)
    pixel = abs(float(header["CDELT2"])) * 3600.0
    beam = float(header["BMAJ"]) * 3600.0
    channel_hz = abs(float(header["CDELT3"]))
    col = {c: np.asarray(truth[c], np.float64) for c in
           ("hi_size", "line_flux_integral", "central_freq", "pa", "i", "w20")}
    wch = w20_channels(col["w20"], col["central_freq"], channel_hz)
    boxes, pa_w = truth_boxes3d(x, y, z, col["hi_size"], col["i"], col["pa"], wch,
                                beam_arcsec=beam, pixel_arcsec=pixel,
                                box_factor=sel.box_factor, min_px=sel.min_px,
                                min_channels=sel.min_channels)
    snr = line_snr(col["line_flux_integral"], col["hi_size"], col["i"], wch,
                   beam_arcsec=beam, channel_hz=channel_hz, noise=noise)
    unknown = [n for n in contract.param_names if n not in _PARAM_COLUMNS]
    if unknown:
        raise StreamdetValueError(f"parameters {unknown} are not SDC2 truth columns")
    params = np.stack([col[_PARAM_COLUMNS[n]] for n in contract.param_names], axis=1) \
        if contract.params else np.zeros((len(x), 0))
    return CubeTruth(boxes=boxes, params=params, snr=snr, pa_w=pa_w,
                     flux=col["line_flux_integral"])


# --------------------------------------------------------------------------- boxes
def box_iou3d(a: FloatArray, b: FloatArray) -> FloatArray:
    """IoU of every pair of 3D boxes: ``(N, 6)`` x ``(M, 6)`` -> ``(N, M)``."""
    a = np.asarray(a, np.float64).reshape(-1, 6)
    b = np.asarray(b, np.float64).reshape(-1, 6)
    lo = np.maximum(a[:, None, :3], b[None, :, :3])
    hi = np.minimum(a[:, None, 3:], b[None, :, 3:])
    inter = np.prod(np.clip(hi - lo, 0.0, None), axis=2)
    va = np.prod(np.clip(a[:, 3:] - a[:, :3], 0.0, None), axis=1)
    vb = np.prod(np.clip(b[:, 3:] - b[:, :3], 0.0, None), axis=1)
    union = va[:, None] + vb[None, :] - inter
    out: FloatArray = np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)
    return out


def nms3d(boxes: FloatArray, scores: FloatArray, iou_threshold: float) -> NDArray[np.int64]:
    """Greedy NMS of 3D boxes by score; indices kept, best first (a slow reference)."""
    order = np.argsort(-np.asarray(scores, np.float64), kind="stable")
    keep: list[int] = []
    alive = np.ones(order.size, bool)
    for k in range(order.size):
        if not alive[k]:
            continue
        keep.append(int(order[k]))
        rest = np.nonzero(alive[k + 1:])[0] + k + 1
        if rest.size:
            iou = box_iou3d(boxes[order[k]][None], boxes[order[rest]])[0]
            alive[rest[iou > iou_threshold]] = False
    return np.array(keep, np.int64)


def _torch_boxes(cxyz: torch.Tensor, size: torch.Tensor) -> torch.Tensor:
    return torch.cat([cxyz - size / 2, cxyz + size / 2], dim=-1)


def _torch_iou_diou(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """IoU and DIoU of paired boxes ``(..., 6)``."""
    lo = torch.maximum(a[..., :3], b[..., :3])
    hi = torch.minimum(a[..., 3:], b[..., 3:])
    inter = (hi - lo).clamp(min=0).prod(-1)
    va = (a[..., 3:] - a[..., :3]).clamp(min=0).prod(-1)
    vb = (b[..., 3:] - b[..., :3]).clamp(min=0).prod(-1)
    iou = inter / (va + vb - inter).clamp(min=1e-9)
    ca = (a[..., :3] + a[..., 3:]) / 2
    cb = (b[..., :3] + b[..., 3:]) / 2
    enc = torch.maximum(a[..., 3:], b[..., 3:]) - torch.minimum(a[..., :3], b[..., :3])
    d2 = ((ca - cb) ** 2).sum(-1)
    c2 = (enc ** 2).sum(-1).clamp(min=1e-9)
    return iou, iou - d2 / c2


# --------------------------------------------------------------------------- targets
@dataclass(frozen=True)
class Loss3DWeights:
    """Weights of the loss terms (sums over the batch divided by its size).

    ``obj`` weighs the objectness of assigned cells (one or two per crop of 1024 cells),
    ``noobj`` that of background cells.
    """

    xyz: float = 5.0
    size: float = 1.0
    obj: float = 5.0
    noobj: float = 1.0
    param: float = 5.0


@dataclass(frozen=True)
class Target3DSpec:
    """What :func:`build_targets3d` and :func:`yolo_loss3d` need to know of the network.

    Attributes
    ----------
    contract : ModelContract
        The 3D contract (stride ``[z, y, x]``, one prior ``[w, h, d]``, channels, params).
    wh_bound : float
        Bound of the size channels; targets are clipped inside it.
    signed_channels : tuple of str
        Channels activated by a tanh (the others but sizes by a sigmoid).
    ignore_iou : float
        A non-assigned prediction whose IoU with a target or ignored galaxy's box exceeds
        this carries no objectness loss.
    obj_target : str
        Objectness target of assigned cells: ``"one"`` (1), or ``"diou"`` (``(1 + DIoU) /
        2`` of the prediction and the truth, YOLO-CIANNA's). With one prior and few
        targets per crop, ``"diou"`` lets a short CPU training settle on objectness ~0
        everywhere (poor early boxes give targets ~0.2 that a near-zero objectness
        satisfies cheaply); ``"one"`` does not.
    weights : Loss3DWeights
    """

    contract: ModelContract
    wh_bound: float = 4.0
    signed_channels: tuple[str, ...] = ("pa_cos",)
    ignore_iou: float = 0.3
    obj_target: str = "one"
    weights: Loss3DWeights = field(default_factory=Loss3DWeights)

    def __post_init__(self) -> None:
        if self.contract.ndim != 3 or self.contract.nbox != 1:
            raise StreamdetValueError("Target3DSpec needs a 3D contract with one prior")
        if self.obj_target not in ("one", "diou"):
            raise StreamdetValueError(f"obj_target must be 'one' or 'diou', got "
                                      f"{self.obj_target!r}")

    @property
    def stride_xyz(self) -> FloatArray:
        """Stride ``(sx, sy, sz)``."""
        sz, sy, sx = self.contract.stride
        return np.array([sx, sy, sz], np.float64)

    @property
    def prior_xyz(self) -> FloatArray:
        """Prior ``(w, h, d)``."""
        return np.asarray(self.contract.priors[0], np.float64)

    def index(self, name: str) -> int:
        """Channel index of ``name``."""
        return self.contract.channel_index(name)


@dataclass
class Targets3D:
    """Dense targets of a batch, grid ``(B, Gz, Gy, Gx)``.

    Attributes
    ----------
    pos : (B, Gz, Gy, Gx) float32
        1 on assigned cells.
    offset : (B, 3, Gz, Gy, Gx) float32
        Target ``x, y, z`` offsets in the cell.
    t : (B, 3, Gz, Gy, Gx) float32
        Target ``ln(size / prior)`` of ``w, h, d``.
    params : (B, Q, Gz, Gy, Gx) float32
        Target parameter channels (``contract.param_channels`` order).
    param_weight : (B, Q, Gz, Gy, Gx) float32
    box_weight : (B, Gz, Gy, Gx) float32
        Brightness weight of assigned cells.
    boxes : (B, Gz, Gy, Gx, 6) float32
        Truth box of assigned cells, voxels of the crop.
    noobj : (B, Gz, Gy, Gx) float32
        1 where a non-assigned cell is background (not ignored by centre).
    others : list of (M_b, 6) float32
        Per sample, boxes of every target and ignored galaxy (IoU-based ignore).
    """

    pos: NDArray[np.float32]
    offset: NDArray[np.float32]
    t: NDArray[np.float32]
    params: NDArray[np.float32]
    param_weight: NDArray[np.float32]
    box_weight: NDArray[np.float32]
    boxes: NDArray[np.float32]
    noobj: NDArray[np.float32]
    others: list[NDArray[np.float32]]


def build_targets3d(truths: Sequence[CubeTruth], grid: tuple[int, int, int],
                    spec: Target3DSpec, selection: Selection3D) -> Targets3D:
    """Dense targets of a batch of crops.

    Parameters
    ----------
    truths : sequence of CubeTruth
        Per crop, its galaxies in crop voxels (centres inside the crop; others are
        dropped).
    grid : (Gz, Gy, Gx)
        Output grid of the crops.
    spec : Target3DSpec
    selection : Selection3D

    Returns
    -------
    Targets3D
    """
    gz_n, gy_n, gx_n = grid
    b_n = len(truths)
    q = len(spec.contract.param_channels)
    shape = (b_n, gz_n, gy_n, gx_n)
    pos = np.zeros(shape, np.float32)
    offset = np.zeros((b_n, 3, *grid), np.float32)
    tt = np.zeros((b_n, 3, *grid), np.float32)
    params = np.zeros((b_n, q, *grid), np.float32)
    pweight = np.zeros((b_n, q, *grid), np.float32)
    bweight = np.zeros(shape, np.float32)
    boxes = np.zeros((*shape, 6), np.float32)
    noobj = np.ones(shape, np.float32)
    others: list[NDArray[np.float32]] = []
    stride = spec.stride_xyz
    prior = spec.prior_xyz
    lim = np.array([gx_n, gy_n, gz_n])
    bound = 0.99 * spec.wh_bound if spec.wh_bound > 0 else np.inf
    pa_cols = [j for j, c in enumerate(spec.contract.param_channels) if c.startswith("pa_")]
    for b, tr in enumerate(truths):
        keep = tr.snr >= selection.ignore_snr_min
        tr = tr.take(keep)
        c = tr.centres
        u = (c + 0.5) / stride
        cell = np.floor(u).astype(np.int64)
        inside = np.all((cell >= 0) & (cell < lim), axis=1)
        others.append(tr.boxes.astype(np.float32))
        target = inside & (tr.snr >= selection.snr_min)
        for k in np.nonzero(inside & ~target)[0]:
            gx, gy, gz = cell[k]
            noobj[b, gz, gy, gx] = 0.0
        idx = np.nonzero(target)[0]
        idx = idx[np.argsort(-tr.snr[idx], kind="stable")]
        enc = encode_params(tr.params[idx], spec.contract) if idx.size else np.zeros((0, q))
        wgt = snr_weight(tr.snr[idx], ref=selection.snr_ref, power=selection.snr_power)
        for n, k in enumerate(idx):
            gx, gy, gz = cell[k]
            if pos[b, gz, gy, gx]:
                continue  # a brighter galaxy has this cell
            pos[b, gz, gy, gx] = 1.0
            noobj[b, gz, gy, gx] = 0.0
            offset[b, :, gz, gy, gx] = u[k] - cell[k]
            size = tr.boxes[k, 3:] - tr.boxes[k, :3]
            tt[b, :, gz, gy, gx] = np.clip(np.log(size / prior), -bound, bound)
            params[b, :, gz, gy, gx] = enc[n]
            pw = np.ones(q, np.float32)
            pw[pa_cols] = tr.pa_w[k]
            pweight[b, :, gz, gy, gx] = pw * wgt[n]
            bweight[b, gz, gy, gx] = wgt[n]
            boxes[b, gz, gy, gx] = tr.boxes[k]
    return Targets3D(pos=pos, offset=offset, t=tt, params=params, param_weight=pweight,
                     box_weight=bweight, boxes=boxes, noobj=noobj, others=others)


def _pred_boxes(offset: torch.Tensor, size_t: torch.Tensor, spec: Target3DSpec
                ) -> torch.Tensor:
    """(B, Gz, Gy, Gx, 6) predicted boxes in crop voxels from offsets and ``t`` (B, 3, ...)."""
    _, _, gz_n, gy_n, gx_n = offset.shape
    dev = offset.device
    gz, gy, gx = torch.meshgrid(torch.arange(gz_n, device=dev), torch.arange(gy_n, device=dev),
                                torch.arange(gx_n, device=dev), indexing="ij")
    cell = torch.stack([gx, gy, gz]).to(offset.dtype)[None]
    stride = torch.tensor(spec.stride_xyz, dtype=offset.dtype, device=dev).view(1, 3, 1, 1, 1)
    prior = torch.tensor(spec.prior_xyz, dtype=offset.dtype, device=dev).view(1, 3, 1, 1, 1)
    centre = (cell + offset) * stride - 0.5
    size = prior * torch.exp(size_t)
    return _torch_boxes(centre.permute(0, 2, 3, 4, 1), size.permute(0, 2, 3, 4, 1))


def yolo_loss3d(raw: torch.Tensor, targets: Targets3D, spec: Target3DSpec
                ) -> tuple[torch.Tensor, dict[str, float]]:
    """The training loss of a batch.

    Parameters
    ----------
    raw : (B, C, Gz, Gy, Gx) tensor
        Pre-activation output (:meth:`export.model3d.YoloCianna3D.raw`).
    targets : Targets3D
    spec : Target3DSpec

    Returns
    -------
    (loss, parts)
        Scalar loss (sums over the batch / B) and its weighted terms ``xyz``, ``size``,
        ``obj``, ``noobj``, ``param`` as floats.
    """
    dev = raw.device
    b_n = raw.shape[0]

    def t(a: NDArray[np.generic]) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a)).to(dev)

    w = spec.weights
    ixyz = [spec.index(c) for c in ("x", "y", "z")]
    isize = [spec.index(c) for c in ("w", "h", "d")]
    off = torch.sigmoid(raw[:, ixyz])
    bound = spec.wh_bound
    size = bound * torch.tanh(raw[:, isize] / bound) if bound > 0 else raw[:, isize]
    pos, bw = t(targets.pos), t(targets.box_weight)
    l_xyz = (((off - t(targets.offset)) ** 2).sum(1) * bw).sum()
    l_size = (((size - t(targets.t)) ** 2).sum(1) * bw).sum()
    l_param = raw.new_zeros(())
    chans = spec.contract.param_channels
    if chans:
        idx = [spec.index(c) for c in chans]
        z = raw[:, idx]
        signed = torch.tensor([c in spec.signed_channels for c in chans], device=dev)
        p = torch.where(signed.view(1, -1, 1, 1, 1), torch.tanh(z), torch.sigmoid(z))
        l_param = ((p - t(targets.params)) ** 2 * t(targets.param_weight)).sum()
    pred = _pred_boxes(off.detach(), size.detach(), spec)
    _, diou = _torch_iou_diou(pred, t(targets.boxes))
    hit = (1.0 + diou) / 2.0 if spec.obj_target == "diou" else torch.ones_like(diou)
    obj_t = torch.where(pos > 0, hit, torch.zeros_like(diou)).clamp(0, 1)
    # IoU-based ignore: a background cell whose box overlaps any galaxy worth finding
    noobj = t(targets.noobj).clone()
    for b, other in enumerate(targets.others):
        if other.shape[0] == 0:
            continue
        ob = t(other)
        ious, _ = _torch_iou_diou(pred[b].reshape(-1, 1, 6), ob[None])
        noobj[b].view(-1)[ious.max(dim=1).values > spec.ignore_iou] = 0.0
    logit = raw[:, spec.index("obj")]
    bce = F.binary_cross_entropy_with_logits(logit, obj_t, reduction="none")
    l_obj = (bce * pos).sum()
    l_noobj = (bce * noobj).sum()
    parts = {"xyz": w.xyz * l_xyz / b_n, "size": w.size * l_size / b_n,
             "obj": w.obj * l_obj / b_n, "noobj": w.noobj * l_noobj / b_n,
             "param": w.param * l_param / b_n}
    loss = parts["xyz"] + parts["size"] + parts["obj"] + parts["noobj"] + parts["param"]
    return loss, {k: float(v.detach()) for k, v in parts.items()}


# --------------------------------------------------------------------------- decoding
def decode3d(grid: NDArray[np.floating], contract: ModelContract, *, threshold: float = 0.5,
             origin: tuple[float, float, float] = (0.0, 0.0, 0.0)
             ) -> dict[str, NDArray[np.float64]]:
    """Decode an activated 3D grid (the reference that ``streamdet.engine.decode`` needs for 3D).

    Parameters
    ----------
    grid : (K, Gz, Gy, Gx) or (1, K, Gz, Gy, Gx) float
        Activated output of one window.
    contract : ModelContract
        The 3D contract.
    threshold : float
        Keep boxes with objectness >= threshold.
    origin : (x0, y0, z0)
        Voxel of the full cube at the window's first cell corner.

    Returns
    -------
    dict
        ``boxes`` (M, 6) ``[x0, y0, z0, x1, y1, z1]`` voxels, ``obj`` (M,), ``prior``
        (M,), ``params`` (M, P) physical values in ``contract.param_names`` order.
    """
    g = np.asarray(grid, np.float64)
    if g.ndim == 5:
        g = g[0]
    nch = len(contract.box_channels)
    nbox = contract.nbox
    if g.ndim != 4 or g.shape[0] != nbox * nch:
        raise StreamdetValueError(f"grid must have shape ({nbox * nch}, Gz, Gy, Gx), "
                                  f"got {np.shape(grid)}")
    g5 = g.reshape(nbox, nch, *g.shape[1:])
    obj = g5[:, contract.channel_index("obj")]
    box, gz, gy, gx = np.nonzero(obj >= threshold)
    vals = g5[box, :, gz, gy, gx]
    sz, sy, sx = contract.stride
    ci = {c: contract.channel_index(c) for c in ("x", "y", "z", "w", "h", "d")}
    cx = (gx + vals[:, ci["x"]]) * sx - 0.5 + origin[0]
    cy = (gy + vals[:, ci["y"]]) * sy - 0.5 + origin[1]
    cz = (gz + vals[:, ci["z"]]) * sz - 0.5 + origin[2]
    pri = contract.priors_array[box]
    half = 0.5 * pri * np.exp(np.clip(vals[:, [ci["w"], ci["h"], ci["d"]]], -50, 50))
    centre = np.stack([cx, cy, cz], axis=1)
    pidx = [contract.channel_index(c) for c in contract.param_channels]
    return {"boxes": np.concatenate([centre - half, centre + half], axis=1),
            "obj": obj[box, gz, gy, gx], "prior": box.astype(np.int64),
            "params": decode_params(vals[:, pidx], contract)}


def param_index(contract: ModelContract) -> Mapping[str, int]:
    """Column of each parameter name in decoded ``params``."""
    return {n: i for i, n in enumerate(contract.param_names)}
