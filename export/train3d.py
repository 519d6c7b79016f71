"""Train the 3D (HI cube) detector on simulated SDC2-like cubes, and measure it.

Data: ``n_cubes`` noiseless cubes simulated with :func:`streamdet.sim.simulate_cube.simulate_cube`
(different seeds, spread over the SDC2 band), cached in the work directory as float16
``.npy`` files in units of the noise rms (2 bytes a voxel) with their truth. Each training
crop (``crop`` = D x H x W voxels, 256 x 64 x 64 by default) is cut from a cube (centred
near a target galaxy with probability ``p_galaxy``, else anywhere), its signal and line
fluxes boosted by a random factor (log-uniform in [1, 8]) for 3/4 of the crops (more
distinct targets: a cube holds few galaxies above the detection limit), flipped at random
along x, y and frequency (the PA follows: ``-pa``, ``180 - pa``, ``pa + 180``), and given
fresh Gaussian noise correlated on the beam scale, as the simulator's
(:class:`streamdet.sim.simulate_cube.ChannelNoise`), so no two crops share their noise.

Measure (:func:`evaluate_cube`): the network runs over a whole held-out cube simulated
*with* its noise by the simulator, in windows with a halo (only the core cells of each
window are kept, so the result equals a whole-cube pass), boxes above a threshold go
through a 3D NMS, and each detection is matched to at most one truth galaxy (the
brightest unmatched one whose box holds the detection's centre). Reported: recall of
the brightest 20 % of the truth by line flux and of the target galaxies, purity, and the
recall that the same number of detections placed at random would get (chance).
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from astropy.io import fits
from astropy.table import Table
from numpy.typing import NDArray

from streamdet.engine.contract import ModelContract, normalise
from streamdet.errors import StreamdetValueError
from streamdet.sim._beam import noise_kernel, separable_correlate
from streamdet.sim.simulate_cube import (
    SDC2_BEAM_ARCSEC,
    SDC2_NOISE,
    SDC2_PIXEL_ARCSEC,
    simulate_cube,
)

from ._targets3d import (
    CubeTruth,
    Loss3DWeights,
    Selection3D,
    Target3DSpec,
    build_targets3d,
    cube_truth_from_table,
    decode3d,
    nms3d,
    yolo_loss3d,
)
from .model3d import Detector3DConfig, YoloCianna3D, build_contract3d, save_checkpoint3d

__all__ = [
    "CropSampler3D",
    "SimCube",
    "Train3DConfig",
    "beam_noise",
    "evaluate_cube",
    "load_sim_cube",
    "load_train3d_config",
    "match_detections",
    "predict_cube",
    "train3d",
]

_N_SDC2_CHANNELS = 6668


# --------------------------------------------------------------------------- data
@dataclass
class SimCube:
    """A simulated cube for training: noiseless voxels in noise units and its truth.

    Attributes
    ----------
    data : (nz, ny, nx) float16 array (memory-mapped)
        Voxels / ``noise`` (the galaxies only).
    noise : float
        Noise rms per channel the cube is meant to be seen with, Jy/beam.
    header : fits.Header
        The cube's FITS header (WCS, beam).
    truth : CubeTruth
        Every galaxy of the sky model, in voxels.
    """

    data: NDArray[np.float16]
    noise: float
    header: fits.Header
    truth: CubeTruth


def load_sim_cube(directory: str | os.PathLike[str], *, shape: tuple[int, int, int],
                  seed: int, channel_offset: int, contract: ModelContract,
                  selection: Selection3D, noise: float = SDC2_NOISE) -> SimCube:
    """Simulate (once; then read from ``directory``) a noiseless training cube.

    Parameters
    ----------
    directory : path-like
        Cache directory: ``cube3d-s{seed}-o{offset}-{nz}x{ny}x{nx}.npy``, ``.hdr`` and
        ``.truth.ecsv``.
    shape : (nz, ny, nx)
    seed : int
    channel_offset : int
        First channel, counted from 950 MHz in 30 kHz channels.
    contract : ModelContract
    selection : Selection3D
    noise : float
        Noise rms per channel, Jy/beam (sets the SNRs and the unit of the data).

    Returns
    -------
    SimCube
    """
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    nz, ny, nx = shape
    stem = d / f"cube3d-s{seed}-o{channel_offset}-{nz}x{ny}x{nx}"
    npy, hdr, tru = (stem.with_suffix(s) for s in (".npy", ".hdr", ".truth.ecsv"))
    if not (npy.exists() and hdr.exists() and tru.exists()):
        fits_path = stem.with_suffix(".fits")
        table = simulate_cube(fits_path, shape=shape, seed=seed, channel_offset=channel_offset,
                              noise=0.0, overwrite=True)
        with fits.open(fits_path, memmap=True) as hdul:
            header = hdul[0].header.copy()
            src = hdul[0].data
            out = np.lib.format.open_memmap(str(npy) + ".part", mode="w+", dtype=np.float16,
                                            shape=shape)
            for z0 in range(0, nz, 64):
                out[z0:z0 + 64] = (np.asarray(src[z0:z0 + 64], np.float32) / noise).astype(
                    np.float16)
            out.flush()
            del out
        os.replace(str(npy) + ".part", npy)
        header.totextfile(hdr, overwrite=True)
        keep = [c for c in table.colnames if table[c].ndim == 1]
        Table({c: table[c] for c in keep}).write(tru, format="ascii.ecsv", overwrite=True)
        fits_path.unlink()
    header = fits.Header.fromtextfile(hdr)
    table = Table.read(tru, format="ascii.ecsv")
    truth = cube_truth_from_table(table, header, contract, noise=noise, selection=selection)
    return SimCube(data=np.load(npy, mmap_mode="r"), noise=noise, header=header, truth=truth)


def beam_noise(rng: np.random.Generator, shape: tuple[int, int, int], *,
               beam_sigma_px: float) -> NDArray[np.float32]:
    """Unit-rms Gaussian noise ``(D, H, W)``, correlated on the beam in each plane.

    The same filter as :class:`streamdet.sim.simulate_cube.ChannelNoise` (a Gaussian of
    sigma ``beam_sigma_px / sqrt(2)``, so the autocorrelation is the beam), channels
    independent.
    """
    k, m = noise_kernel(beam_sigma_px)
    k32 = k.astype(np.float32)
    d, h, w = shape
    white = rng.standard_normal((d, h + 2 * m, w + 2 * m), dtype=np.float32)
    out: NDArray[np.float32] = np.ascontiguousarray(separable_correlate(white, k32, k32, m))
    out *= np.float32(1.0 / float(np.sum(k * k)))
    return out


class CropSampler3D:
    """Random training crops with fresh noise, flips, and their truths.

    Parameters
    ----------
    cubes : sequence of SimCube
    crop : (D, H, W)
        Crop shape, voxels (multiples of the stride).
    contract : ModelContract
        For the input normalisation and the parameter order.
    selection : Selection3D
    p_galaxy : float
        Probability that a crop is placed around a galaxy that is (or, boosted, can be) a
        target.
    boost_max : float
        Largest flux boost: with probability ``p_boost`` a crop's signal, its galaxies'
        line fluxes and SNRs are multiplied by a factor drawn log-uniformly in
        ``[1, boost_max]`` (1: no boost). A simulated cube holds few galaxies above the
        detection limit (~1 % of the sky model), so boosting fainter ones (with their
        real sizes, widths and shapes) multiplies the distinct targets seen in training.
    p_boost : float
        Share of boosted crops.
    """

    def __init__(self, cubes: Sequence[SimCube], *, crop: tuple[int, int, int],
                 contract: ModelContract, selection: Selection3D, p_galaxy: float = 0.75,
                 boost_max: float = 1.0, p_boost: float = 0.0) -> None:
        if boost_max < 1.0 or not 0.0 <= p_boost <= 1.0:
            raise StreamdetValueError(f"boost_max {boost_max} must be >= 1 and p_boost "
                                      f"{p_boost} in [0, 1]")
        self.cubes = list(cubes)
        self.crop = crop
        self.contract = contract
        self.selection = selection
        self.p_galaxy = p_galaxy
        self.boost_max = boost_max
        self.p_boost = p_boost
        self.targets = [np.nonzero(c.truth.snr >= selection.snr_min)[0] for c in self.cubes]
        self.boostable = [np.nonzero(c.truth.snr * boost_max >= selection.snr_min)[0]
                          for c in self.cubes]
        self._pa = contract.param_names.index("pa") if "pa" in contract.param_names else None
        names = contract.param_names
        self._flux = names.index("line_flux_integral") if "line_flux_integral" in names else None
        beam = SDC2_BEAM_ARCSEC / (2.0 * math.sqrt(2.0 * math.log(2.0)))
        self.beam_sigma_px = beam / SDC2_PIXEL_ARCSEC

    def _origin(self, rng: np.random.Generator, k: int, boosted: bool
                ) -> tuple[int, int, int]:
        cube = self.cubes[k]
        nz, ny, nx = cube.data.shape
        d, h, w = self.crop
        tg = self.boostable[k] if boosted else self.targets[k]
        if tg.size and rng.random() < self.p_galaxy:
            cx, cy, cz = cube.truth.centres[int(rng.choice(tg))]
            x0 = int(np.floor(cx + 0.5)) - int(rng.integers(0, w))
            y0 = int(np.floor(cy + 0.5)) - int(rng.integers(0, h))
            z0 = int(np.floor(cz + 0.5)) - int(rng.integers(0, d))
        else:
            x0, y0, z0 = (int(rng.integers(0, n - s + 1)) for n, s in
                          ((nx, w), (ny, h), (nz, d)))
        return (min(max(z0, 0), nz - d), min(max(y0, 0), ny - h), min(max(x0, 0), nx - w))

    def sample(self, rng: np.random.Generator, batch: int
               ) -> tuple[NDArray[np.float32], list[CubeTruth]]:
        """A batch: normalised crops ``(B, 1, D, H, W)`` float32 and their truths (crop voxels)."""
        d, h, w = self.crop
        xs = np.empty((batch, 1, d, h, w), np.float32)
        truths = []
        for b in range(batch):
            k = int(rng.integers(len(self.cubes)))
            cube = self.cubes[k]
            boosted = self.boost_max > 1.0 and rng.random() < self.p_boost
            z0, y0, x0 = self._origin(rng, k, boosted)
            sig = np.asarray(cube.data[z0:z0 + d, y0:y0 + h, x0:x0 + w], np.float32)
            gain = float(np.exp(rng.uniform(0.0, np.log(self.boost_max)))) if boosted else 1.0
            if gain != 1.0:
                sig *= np.float32(gain)
            sig += beam_noise(rng, (d, h, w), beam_sigma_px=self.beam_sigma_px)
            tr = cube.truth.shifted(x0, y0, z0)
            c = tr.centres
            inside = np.all((c > -0.5) & (c < np.array([w, h, d]) - 0.5), axis=1)
            tr = tr.take(inside)
            flips = rng.random(3) < 0.5
            boxes, params = tr.boxes.copy(), tr.params.copy()
            snr, flux = tr.snr * gain, tr.flux * gain
            if self._flux is not None:
                params[:, self._flux] *= gain
            for axis, (flip, n) in enumerate(zip(flips, (w, h, d), strict=True)):
                if not flip:
                    continue
                sig = np.flip(sig, axis=2 - axis)
                lo, hi = boxes[:, axis].copy(), boxes[:, axis + 3].copy()
                boxes[:, axis], boxes[:, axis + 3] = n - 1 - hi, n - 1 - lo
                if self._pa is not None:
                    pa = params[:, self._pa]
                    params[:, self._pa] = np.mod((-pa, 180.0 - pa, pa + 180.0)[axis], 360.0)
            xs[b, 0] = normalise(sig * np.float32(cube.noise), self.contract)
            truths.append(CubeTruth(boxes, params, snr, tr.pa_w, flux))
        return xs, truths


# --------------------------------------------------------------------------- inference
def predict_cube(net: YoloCianna3D, cube: NDArray[np.floating], contract: ModelContract, *,
                 window: tuple[int, int, int] = (256, 128, 128), threshold: float = 0.3,
                 iou: float | None = None) -> dict[str, NDArray[np.float64]]:
    """Detections of ``net`` on a whole cube, by windows with a halo, then 3D NMS.

    Parameters
    ----------
    net : YoloCianna3D
        In eval mode.
    cube : (nz, ny, nx) float
        Jy/beam (normalised here with the contract); each side a multiple of the stride.
    contract : ModelContract
    window : (D, H, W)
        Core of each window, voxels (multiples of the stride); the halo
        (``contract.halo``) is read around it.
    threshold : float
        Objectness threshold.
    iou : float, optional
        NMS IoU threshold (default: the contract's).

    Returns
    -------
    dict
        As :func:`export._targets3d.decode3d`, in cube voxels, after NMS.
    """
    stride = contract.stride
    shape = cube.shape
    if any(n % s for n, s in zip(shape, stride, strict=True)):
        raise StreamdetValueError(f"cube shape {shape} must be multiples of the stride {stride}")
    halo = contract.halo
    parts: list[dict[str, NDArray[np.float64]]] = []
    starts = [range(0, n, c) for n, c in zip(shape, window, strict=True)]
    with torch.no_grad():
        for z0 in starts[0]:
            for y0 in starts[1]:
                for x0 in starts[2]:
                    core0 = (z0, y0, x0)
                    core1 = tuple(min(a + c, n) for a, c, n in zip(core0, window, shape,
                                                                   strict=True))
                    r0 = tuple(max(0, a - hh) for a, hh in zip(core0, halo, strict=True))
                    r1 = tuple(min(n, b + hh) for b, hh, n in zip(core1, halo, shape,
                                                                  strict=True))
                    block = np.asarray(cube[r0[0]:r1[0], r0[1]:r1[1], r0[2]:r1[2]])
                    x = normalise(block, contract)[None, None]
                    xt = torch.from_numpy(x).contiguous(memory_format=torch.channels_last_3d)
                    g = net(xt).numpy()[0]
                    c0 = [(a - r) // s for a, r, s in zip(core0, r0, stride, strict=True)]
                    c1 = [(b - r) // s for b, r, s in zip(core1, r0, stride, strict=True)]
                    g = g[:, c0[0]:c1[0], c0[1]:c1[1], c0[2]:c1[2]]
                    parts.append(decode3d(g, contract, threshold=threshold,
                                          origin=(x0, y0, z0)))
    out = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    keep = nms3d(out["boxes"], out["obj"],
                 float(contract.nms["iou_threshold"]) if iou is None else iou)
    return {k: v[keep] for k, v in out.items()}


def match_detections(det_boxes: NDArray[np.float64], det_scores: NDArray[np.float64],
                     truth: CubeTruth) -> NDArray[np.int64]:
    """One-to-one matching: per detection the truth row it found, or -1.

    Detections in decreasing score each take the brightest (by line flux) unmatched truth
    galaxy whose box holds the detection's centre.
    """
    centres = 0.5 * (det_boxes[:, :3] + det_boxes[:, 3:])
    out = np.full(len(centres), -1, np.int64)
    taken = np.zeros(len(truth), bool)
    order = np.argsort(-truth.flux, kind="stable")
    tb = truth.boxes[order]
    for k in np.argsort(-det_scores, kind="stable"):
        c = centres[k]
        ok = np.all((tb[:, :3] <= c) & (c <= tb[:, 3:]), axis=1) & ~taken[order]
        hit = np.nonzero(ok)[0]
        if hit.size:
            j = int(order[hit[0]])
            out[k] = j
            taken[j] = True
    return out


def evaluate_cube(net: YoloCianna3D, cube_path: str | os.PathLike[str], truth: Table,
                  contract: ModelContract, *, noise: float = SDC2_NOISE,
                  selection: Selection3D | None = None,
                  thresholds: Sequence[float] = (0.3, 0.5, 0.7), seed: int = 0,
                  window: tuple[int, int, int] = (256, 128, 128)) -> dict[str, Any]:
    """Recall and purity of ``net`` on a held-out simulated cube (with noise).

    Parameters
    ----------
    net : YoloCianna3D
    cube_path : path-like
        FITS cube written by :func:`streamdet.sim.simulate_cube.simulate_cube`.
    truth : Table
        Its truth (SDC2 columns).
    contract : ModelContract
    noise : float
        The cube's noise rms, Jy/beam (for the SNRs).
    selection : Selection3D, optional
    thresholds : sequence of float
        Objectness thresholds to report.
    seed : int
        Seed of the chance baseline.
    window : (D, H, W)
        Inference window core.

    Returns
    -------
    dict
        Per threshold: ``n_det``, ``n_match``, ``purity``, ``recall_bright20``
        (brightest 20 % of the truth by line flux), ``recall_bright05`` (5 %),
        ``recall_targets`` (SNR >= snr_min), ``chance_bright20``, ``chance_bright05`` and
        ``chance_targets`` (the same number of boxes, of the detections' sizes, at
        uniformly random centres), ``param_errors_median`` (median absolute errors of
        the matched detections: dex for line flux, HI size and w20, deg for PA and
        inclination); plus the counts of the truth.
    """
    sel = Selection3D() if selection is None else selection
    was = net.training
    net.eval()
    with fits.open(cube_path, memmap=True) as hdul:
        header = hdul[0].header
        data = np.asarray(hdul[0].data, np.float32)
        tr = cube_truth_from_table(truth, header, contract, noise=noise, selection=sel)
    shape = data.shape
    lim = np.array([shape[2], shape[1], shape[0]]) - 0.5
    c = tr.centres
    inside = np.all((c > -0.5) & (c < lim), axis=1)
    tr = tr.take(inside)
    n = len(tr)
    rank = np.argsort(-tr.flux, kind="stable")
    bright = np.zeros(n, bool)
    bright[rank[: max(1, round(0.2 * n))]] = True
    bright5 = np.zeros(n, bool)
    bright5[rank[: max(1, round(0.05 * n))]] = True
    targets = tr.snr >= sel.snr_min
    t0 = time.perf_counter()
    det = predict_cube(net, data, contract, threshold=min(thresholds), window=window)
    seconds = time.perf_counter() - t0
    rng = np.random.default_rng(seed)
    names = contract.param_names
    res: dict[str, Any] = {"n_truth": n, "n_bright20": int(bright.sum()),
                           "n_targets": int(targets.sum()), "predict_s": seconds,
                           "bright20_flux_min": float(tr.flux[bright].min()) if n else None,
                           "thresholds": {}}
    for thr in thresholds:
        keep = det["obj"] >= thr
        boxes, scores, params = det["boxes"][keep], det["obj"][keep], det["params"][keep]
        m = match_detections(boxes, scores, tr)
        found = np.zeros(n, bool)
        found[m[m >= 0]] = True
        size = boxes[:, 3:] - boxes[:, :3]
        rc = rng.uniform(-0.5, 1.0, (len(boxes), 3)) * (lim + 0.5)
        rc = np.clip(rc, -0.5, lim)
        rnd = np.concatenate([rc - size / 2, rc + size / 2], axis=1)
        mr = match_detections(rnd, rng.random(len(rnd)), tr)
        found_r = np.zeros(n, bool)
        found_r[mr[mr >= 0]] = True
        errs: dict[str, float] = {}
        hit = np.nonzero(m >= 0)[0]
        if hit.size:
            truth_p = tr.params[m[hit]]
            for j, name in enumerate(names):
                a, b = params[hit, j], truth_p[:, j]
                if name == "pa":
                    e = np.abs((a - b + 180.0) % 360.0 - 180.0)
                elif name in ("line_flux_integral", "hi_size", "w20"):
                    e = np.abs(np.log10(a / b))  # dex
                else:
                    e = np.abs(a - b)
                errs[name] = float(np.median(e))
        res["thresholds"][str(thr)] = {
            "n_det": len(boxes), "n_match": int((m >= 0).sum()),
            "purity": float((m >= 0).mean()) if len(boxes) else None,
            "recall_bright20": float(found[bright].mean()) if bright.any() else None,
            "recall_bright05": float(found[bright5].mean()) if bright5.any() else None,
            "recall_targets": float(found[targets].mean()) if targets.any() else None,
            "chance_bright05": float(found_r[bright5].mean()) if bright5.any() else None,
            "chance_bright20": float(found_r[bright].mean()) if bright.any() else None,
            "chance_targets": float(found_r[targets].mean()) if targets.any() else None,
            "param_errors_median": errs,
        }
    net.train(was)
    return res


# --------------------------------------------------------------------------- training
@dataclass(frozen=True)
class Train3DConfig:
    """A 3D training run.

    Attributes
    ----------
    network : dict
        :class:`~export.model3d.Detector3DConfig` fields.
    selection : dict
        :class:`~export._targets3d.Selection3D` fields.
    loss : dict
        :class:`~export._targets3d.Loss3DWeights` fields.
    n_cubes : int
        Noiseless training cubes.
    cube_shape : (nz, ny, nx)
        Their shape.
    seed : int
        Seed of the cubes (``seed + k``), of the crops and of the weights.
    crop : (D, H, W)
        Training crop, voxels.
    batch, steps, lr, warmup : int, int, float, int
        Batch size, optimiser steps (Adam, cosine decay after a linear warm-up).
    max_seconds : float
        Stop after this much wall time (0: no limit).
    p_galaxy : float
        Share of crops placed around a target galaxy.
    boost_max, p_boost : float
        Flux-boost augmentation (:class:`CropSampler3D`).
    obj_bias : float
        Initial objectness logit.
    obj_target : str
        ``"one"`` or ``"diou"`` (:class:`~export._targets3d.Target3DSpec`).
    threads : int
        torch threads.
    log_every : int
        Steps between log lines.
    """

    network: dict[str, Any] = field(default_factory=dict)
    selection: dict[str, Any] = field(default_factory=dict)
    loss: dict[str, Any] = field(default_factory=dict)
    n_cubes: int = 8
    cube_shape: tuple[int, int, int] = (1024, 512, 512)
    seed: int = 0
    crop: tuple[int, int, int] = (256, 64, 64)
    batch: int = 4
    steps: int = 1900
    lr: float = 2e-3
    warmup: int = 50
    max_seconds: float = 0.0
    p_galaxy: float = 0.9
    boost_max: float = 8.0
    p_boost: float = 0.75
    obj_bias: float = -5.0
    obj_target: str = "one"
    threads: int = 2
    log_every: int = 25

    def to_dict(self) -> dict[str, Any]:
        """Plain, JSON-friendly dict."""
        return json.loads(json.dumps(asdict(self)))

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> Train3DConfig:
        """From a dict (e.g. ``configs/sdc2.json``); ``comment`` is ignored, other unknown
        keys are refused."""
        kw = {k: v for k, v in doc.items() if k != "comment"}
        unknown = sorted(set(kw) - set(cls.__dataclass_fields__))
        if unknown:
            raise StreamdetValueError(f"unknown Train3DConfig field(s) {unknown}")
        for key in ("cube_shape", "crop"):
            if key in kw:
                kw[key] = tuple(int(v) for v in kw[key])
        return cls(**kw)


def load_train3d_config(path: str | os.PathLike[str]) -> Train3DConfig:
    """Read a :class:`Train3DConfig` from a JSON file (e.g. ``configs/sdc2.json``)."""
    with open(path, encoding="utf-8") as fh:
        return Train3DConfig.from_dict(json.load(fh))


def _lr(cfg: Train3DConfig, step: int) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    frac = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * (0.05 + 0.95 * 0.5 * (1.0 + math.cos(math.pi * min(frac, 1.0))))


def _offsets(n: int, nz: int) -> list[int]:
    """Channel offsets of ``n`` cubes of ``nz`` channels spread over the SDC2 band."""
    top = max(0, _N_SDC2_CHANNELS - nz)
    return [round(top * k / max(1, n - 1)) for k in range(n)]


def train3d(config: Train3DConfig, workdir: str | os.PathLike[str], *,
            cubes: Sequence[SimCube] | None = None, quiet: bool = True
            ) -> tuple[YoloCianna3D, list[dict[str, Any]]]:
    """Train a 3D detector on crops of simulated cubes.

    Parameters
    ----------
    config : Train3DConfig
    workdir : path-like
        Cache of the cubes, ``train3d.jsonl`` (the log), ``net3d.pt`` (the checkpoint).
    cubes : sequence of SimCube, optional
        Training cubes (default: simulate or read ``config.n_cubes`` of them).
    quiet : bool
        Do not print the log lines.

    Returns
    -------
    (net, log)
        The trained network (eval mode) and the log records (``step``, ``loss``,
        its parts, ``lr``, ``seconds``).
    """
    wd = Path(workdir)
    wd.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    net = YoloCianna3D(Detector3DConfig.from_dict(config.network))
    net.set_output_bias("obj", config.obj_bias)
    contract = build_contract3d(net)
    sel = Selection3D(**config.selection)
    spec = Target3DSpec(contract=contract, wh_bound=net.config.wh_bound,
                        signed_channels=net.config.signed_channels,
                        obj_target=config.obj_target, weights=Loss3DWeights(**config.loss))
    if cubes is None:
        cubes = [load_sim_cube(wd, shape=config.cube_shape, seed=config.seed + k,
                               channel_offset=off, contract=contract, selection=sel)
                 for k, off in enumerate(_offsets(config.n_cubes, config.cube_shape[0]))]
    sampler = CropSampler3D(cubes, crop=config.crop, contract=contract, selection=sel,
                            p_galaxy=config.p_galaxy, boost_max=config.boost_max,
                            p_boost=config.p_boost)
    grid = tuple(c // s for c, s in zip(config.crop, contract.stride, strict=True))
    net = net.to(memory_format=torch.channels_last_3d)  # type: ignore[call-overload]
    net.train()
    opt = torch.optim.Adam(net.parameters(), lr=config.lr)
    rng = np.random.default_rng(config.seed + 12345)
    log: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    logf = wd / "train3d.jsonl"
    with open(logf, "a", encoding="utf-8") as fh:
        for step in range(config.steps):
            if config.max_seconds and time.perf_counter() - t0 > config.max_seconds:
                break
            for g in opt.param_groups:
                g["lr"] = _lr(config, step)
            x, truths = sampler.sample(rng, config.batch)
            targets = build_targets3d(truths, grid, spec, sel)  # type: ignore[arg-type]
            xt = torch.from_numpy(x).contiguous(memory_format=torch.channels_last_3d)
            loss, parts = yolo_loss3d(net.raw(xt), targets, spec)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), 10.0)
            opt.step()
            rec = {"step": step, "loss": float(loss.detach()), **parts,
                   "n_pos": int(targets.pos.sum()), "lr": _lr(config, step),
                   "seconds": time.perf_counter() - t0}
            log.append(rec)
            if step % config.log_every == 0 or step == config.steps - 1:
                fh.write(json.dumps(rec) + "\n")
                fh.flush()
                if not quiet:
                    print(json.dumps({k: round(v, 4) if isinstance(v, float) else v
                                      for k, v in rec.items()}), flush=True)
    net.eval()
    save_checkpoint3d(net, wd / "net3d.pt", contract={
        "training": {"config": net.config.to_dict(), "train3d": config.to_dict(),
                     "steps_done": len(log)}})
    return net, log
