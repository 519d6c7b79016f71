"""Train a YOLO-CIANNA-style detector on simulated SDC1-like fields (and user images).

:func:`train` runs the whole recipe in a work directory:

1. simulate (once, cached in ``DIR/fields``) ``fields`` training fields and one
   held-out validation field with the project's simulator, and read any user
   images with SDC1-format truth catalogues;
2. draw random, augmented cutouts on the fly (:class:`export._data.CutoutSampler`)
   and train with the YOLO-CIANNA targets and loss (:mod:`export._targets`);
3. every ``val_every`` steps, export the network to ONNX, run the streamdet engine
   (:func:`streamdet.engine.detect.detect`) over the validation field, convert to an SDC1
   catalogue (primary-beam corrected fluxes) and score it with the official
   ``ska_sdc`` scorer (a match-based proxy of the same metric when ``ska_sdc`` is
   not installed); choose the objectness threshold presets ``best`` (maximum
   score, one threshold per prior) and ``purity`` (lowest threshold with purity
   >= ``purity_target``); keep the best checkpoint by score;
4. write ``DIR/best.pt`` (export checkpoint with the presets in its contract) and
   ``DIR/model.onnx``.

Work directory: ``config.json``, ``log.jsonl`` (one JSON object per line, ``"kind"``
``"train"`` or ``"val"``), ``state.pt`` (resume state), ``last.pt`` and ``best.pt``
(checkpoints for ``streamdet export``), ``model.onnx``, ``fields/`` (cached simulated
fields), ``val/`` (the last validation's model and catalogue).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from astropy.table import Table
from numpy.typing import NDArray

from streamdet._progress import progress_bar
from streamdet.catalogue._scorer import quiet_scorer
from streamdet.catalogue.catalog import SDC1_COLUMNS, read_sdc1, write_sdc1
from streamdet.catalogue.outputs import to_sdc1
from streamdet.engine.contract import Model
from streamdet.engine.detect import detect
from streamdet.errors import OutputExistsError, StreamdetFileNotFoundError, StreamdetValueError
from streamdet.io.image import open_image
from streamdet.sim._population import POINTING, band, primary_beam

from ._data import (
    CutoutSampler,
    Field,
    SelectionConfig,
    _separation,
    load_field,
    simulated_field,
)
from ._targets import (
    SIZE_TO_GAUSS,
    LossWeights,
    TargetSpec,
    build_targets,
    predicted_boxes,
    yolo_loss,
)
from .model import DetectorConfig, YoloCianna
from .onnx_export import (
    SDC1_BEAM,
    SDC1_NOISE,
    band_scaled_fields,
    build_contract,
    export_onnx,
    params_with_channels,
    save_checkpoint,
)

__all__ = ["TrainConfig", "ValidationResult", "candidate_submission", "score_candidates",
           "score_catalogue", "train", "validate"]

_STATE_FORMAT = "streamdet-train-state-1"
_LOG = "log.jsonl"


# --------------------------------------------------------------------------- config
@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run (JSON round-trip: :meth:`to_dict`, :meth:`from_dict`).

    Attributes
    ----------
    name : str
        Model name written into the contract.
    freq : int
        SDC1 band of the simulated fields, MHz (560, 1400, 9200).
    width, depth, stages, kernel : int
        Network size (:class:`export.model.DetectorConfig`).
    fields : int
        Simulated training fields (0: user images only).
    field_size : int
        Side of each simulated training field, px.
    field_offsets : tuple of (dRA, dDec)
        Field centre offsets from the pointing (deg), used in turn by the training
        fields (different primary-beam attenuation).
    faint : bool
        Simulate the training and validation fields with the faint population below
        the SDC1 catalogue's turnover (:func:`streamdet.simulate`).
    band_scaled : bool
        Scale the input clip range and the faintest decodable flux with the training
        data's map noise, and the smallest decodable sizes with its beam
        (:func:`export.onnx_export.band_scaled_fields`: the band's noise and beam for
        simulated fields, the images' otherwise). At 560 MHz this gives YOLO-CIANNA's
        fixed limits exactly; ``False`` keeps those limits in every band.
    size_floor_beams : (float, float) or None
        Smallest major and minor axes the network can state, in beams (default
        YOLO-CIANNA's, 0.6 and 0.2 beams; only with ``band_scaled``).
    seed : int
        Seed of the simulations, of the network initialisation and of the sampling.
    val_size : int
        Side of the simulated validation field (seed ``seed + 1_000_003``), px.
    val_offset : (dRA, dDec)
        Its offset from the pointing (keep it clear of the SDC1 training area, which
        the scorer leaves out).
    images : tuple of (image, truth)
        User FITS/Zarr images with SDC1-format truth catalogues, trained on as well.
    pb : str or None
        Primary-beam FITS image for the user images.
    image_fraction : float or None
        Share of the training cutouts drawn from the user images (the rest from the
        simulated fields); None: every field by its area. A real image is small beside
        the simulated fields (the real SDC1 training region is 0.3 Mpix against 67), so
        by area it would hardly be seen. Ignored without both images and simulated fields.
    cutout, batch : int
        Training cutout side (px, a multiple of the stride) and cutouts per step.
    augment : bool
        Random flips and 90-degree rotations.
    snr_min, ignore_snr_min, box_factor, box_min_px, snr_ref, snr_power : float
        Selection and truth boxes (:class:`export._data.SelectionConfig`).
    ignore_iou : float
        IoU above which a non-assigned prediction of a true source is not penalised.
    obj_target : str
        ``"diou"`` ((1 + DIoU) / 2) or ``"one"``.
    shape_assign_steps : int
        Steps during which sources are assigned by prior shape (then by prediction).
    assign_obj_power : float
        Objectness power in the prediction-aware association (0: pure DIoU).
    reinject_obj, reinject_after : float, int
        Re-injection (:attr:`export._targets.TargetSpec.reinject_obj`): from step
        ``reinject_after`` on, an unselected true source that the network already
        predicts with objectness >= ``reinject_obj`` becomes a target (0: never).
    w_xy, w_wh, w_obj, w_noobj, w_param, w_prob : float
        Loss weights (:class:`export._targets.LossWeights`).
    obj_bias : float
        Initial objectness logit.
    steps, lr, weight_decay, warmup_steps, grad_clip
        AdamW with linear warm-up then cosine decay to 5 % of ``lr``.
    val_every : int
        Steps between validations (and a validation at the last step).
    val_threshold_min : float
        Lowest objectness threshold considered on validation.
    purity_target : float
        Purity of the ``purity`` threshold preset.
    checkpoint_every, log_every : int
        Steps between resume states and between log lines.
    threads : int or None
        Torch intra-op threads (default: torch's choice). On a CPU shared with other
        busy processes use 1: two spinning OpenMP threads competing with another
        process were measured 15x slower than one thread on a 2-core machine.
    device : str
        ``"auto"`` (CUDA when torch sees one), ``"cpu"`` or ``"cuda"``.
    """

    name: str = "streamdet-sdc1-560"
    freq: int = 560
    width: int = 8
    depth: int = 1
    stages: int = 4
    kernel: int = 3
    fields: int = 4
    field_size: int = 4096
    field_offsets: tuple[tuple[float, float], ...] = (
        (0.0, 0.0), (0.0, -0.7), (0.8, 0.0), (0.0, 1.0))
    faint: bool = True
    band_scaled: bool = True
    size_floor_beams: tuple[float, float] | None = None
    seed: int = 0
    val_size: int = 2048
    val_offset: tuple[float, float] = (0.0, -0.8)
    images: tuple[tuple[str, str], ...] = ()
    pb: str | None = None
    image_fraction: float | None = None
    cutout: int = 256
    batch: int = 8
    augment: bool = True
    snr_min: float = 5.0
    box_factor: float = 2.0
    box_min_px: float = 4.0
    snr_ref: float = 20.0
    snr_power: float = 0.5
    ignore_snr_min: float = 3.0
    ignore_iou: float = 0.5
    obj_target: str = "diou"
    shape_assign_steps: int = 200
    assign_obj_power: float = 1.0
    reinject_obj: float = 0.5
    reinject_after: int = 1000
    w_xy: float = 5.0
    w_wh: float = 1.0
    w_obj: float = 1.0
    w_noobj: float = 1.0
    w_param: float = 5.0
    w_prob: float = 0.5
    obj_bias: float = -4.0
    steps: int = 8000
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 100
    grad_clip: float = 10.0
    val_every: int = 500
    val_threshold_min: float = 0.05
    purity_target: float = 0.98
    checkpoint_every: int = 250
    log_every: int = 20
    threads: int | None = None
    device: str = "auto"

    def __post_init__(self) -> None:
        stride = 2 ** self.stages
        checks = [
            (self.freq in (560, 1400, 9200), f"freq must be 560, 1400 or 9200, got {self.freq}"),
            (self.fields >= 0, f"fields must be >= 0, got {self.fields}"),
            (self.fields > 0 or bool(self.images), "no training data: fields is 0 and no images"),
            (self.cutout >= stride and self.cutout % stride == 0,
             f"cutout {self.cutout} must be a positive multiple of the stride {stride}"),
            (self.field_size >= self.cutout,
             f"field_size {self.field_size} must be >= cutout {self.cutout}"),
            (self.val_size >= 64, f"val_size must be >= 64, got {self.val_size}"),
            (self.batch >= 1 and self.steps >= 1, "batch and steps must be >= 1"),
            (self.lr > 0, f"lr must be > 0, got {self.lr}"),
            (0.0 <= self.reinject_obj <= 1.0 and self.reinject_after >= 0,
             "reinject_obj must be in [0, 1] and reinject_after >= 0"),
            (0.0 <= self.ignore_snr_min <= self.snr_min,
             f"ignore_snr_min must be in [0, snr_min], got {self.ignore_snr_min}"),
            (len(self.field_offsets) >= 1, "field_offsets must not be empty"),
            (self.image_fraction is None or 0.0 <= self.image_fraction <= 1.0,
             f"image_fraction must be in [0, 1], got {self.image_fraction!r}"),
            (0.0 < self.purity_target <= 1.0, "purity_target must be in (0, 1]"),
            (0.0 <= self.val_threshold_min < 1.0, "val_threshold_min must be in [0, 1)"),
            (min(self.val_every, self.checkpoint_every, self.log_every) >= 1,
             "val_every, checkpoint_every and log_every must be >= 1"),
            (self.device in ("auto", "cpu", "cuda"),
             f"device must be auto, cpu or cuda, got {self.device!r}"),
        ]
        for ok, msg in checks:
            if not ok:
                raise StreamdetValueError(f"TrainConfig: {msg}")
        self.network()  # validates width, depth, ...

    def network(self) -> DetectorConfig:
        """The network architecture."""
        return DetectorConfig(width=self.width, depth=self.depth, stages=self.stages,
                              kernel=self.kernel)

    def selection(self) -> SelectionConfig:
        """Selection and truth-box settings."""
        return SelectionConfig(snr_min=self.snr_min, ignore_snr_min=self.ignore_snr_min,
                               box_factor=self.box_factor,
                               box_min_px=self.box_min_px, snr_ref=self.snr_ref,
                               snr_power=self.snr_power)

    def loss_weights(self) -> LossWeights:
        """Loss weights."""
        return LossWeights(xy=self.w_xy, wh=self.w_wh, obj=self.w_obj, noobj=self.w_noobj,
                           param=self.w_param, prob=self.w_prob)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-friendly dict."""
        doc: dict[str, Any] = json.loads(json.dumps(dataclasses.asdict(self)))
        return doc

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> TrainConfig:
        """Build from a dict (e.g. a JSON config); unknown keys are refused."""
        unknown = sorted(set(doc) - set(cls.__dataclass_fields__))
        if unknown:
            raise StreamdetValueError(f"unknown TrainConfig field(s) {unknown}; known: "
                                      f"{sorted(cls.__dataclass_fields__)}")
        kw = dict(doc)
        if "field_offsets" in kw:
            kw["field_offsets"] = tuple((float(a), float(b)) for a, b in kw["field_offsets"])
        if "val_offset" in kw:
            a, b = kw["val_offset"]
            kw["val_offset"] = (float(a), float(b))
        if kw.get("size_floor_beams") is not None:
            a, b = kw["size_floor_beams"]
            kw["size_floor_beams"] = (float(a), float(b))
        if "images" in kw:
            kw["images"] = tuple((str(i), str(t)) for i, t in kw["images"])
        try:
            return cls(**kw)
        except TypeError as exc:
            raise StreamdetValueError(f"bad TrainConfig: {exc}") from exc

    @classmethod
    def from_json(cls, path: str | os.PathLike[str]) -> TrainConfig:
        """Read a JSON config file (keys as the attributes; a ``"comment"`` key is ignored)."""
        p = Path(path)
        if not p.is_file():
            raise StreamdetFileNotFoundError(f"training config {str(p)!r} does not exist")
        try:
            doc = json.loads(p.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise StreamdetValueError(f"training config {str(p)!r} is not JSON: {exc}") from exc
        if not isinstance(doc, dict):
            raise StreamdetValueError(f"training config {str(p)!r} must be a JSON object")
        doc.pop("comment", None)
        return cls.from_dict(doc)


# --------------------------------------------------------------------------- scoring
@dataclass(frozen=True)
class ValidationResult:
    """One validation of the network on the held-out field.

    Attributes
    ----------
    step : int
    score : float
        SDC1 score at the ``best`` thresholds.
    purity, completeness : float
        Matched / detected, matched / truth sources (at ``best``).
    n_det, n_match : int
    thresholds : dict
        ``{"default", "best", "purity"}`` objectness presets for the contract.
    purity_score : float
        SDC1 score at the ``purity`` preset.
    purity_reached : bool
        Whether some threshold reached the purity target.
    scorer : str
        ``"ska_sdc"`` or ``"proxy"``.
    seconds : float
    """

    step: int
    score: float
    purity: float
    completeness: float
    n_det: int
    n_match: int
    thresholds: dict[str, Any]
    purity_score: float
    purity_reached: bool
    scorer: str
    seconds: float
    extra: dict[str, Any] = field(default_factory=dict)


def _official_scorer() -> Any:
    try:
        with quiet_scorer():
            from ska_sdc import Sdc1Scorer
    except Exception:  # not installed, or broken by its pkg_resources/pandas needs
        return None
    return Sdc1Scorer


def score_catalogue(sub: Table, truth: Table, freq: int, *, use_official: bool = True,
                    train: bool = False) -> tuple[float, NDArray[np.float64], str]:
    """Score an SDC1 submission and give each submitted source its contribution.

    Parameters
    ----------
    sub : astropy.table.Table
        SDC1 submission columns (:func:`streamdet.catalogue.outputs.to_sdc1`); ``id`` must be
        ``0..N-1``.
    truth : astropy.table.Table
        SDC1 truth catalogue.
    freq : int
        Band, MHz.
    use_official : bool
        Use ``ska_sdc.Sdc1Scorer`` when importable (else the proxy).
    train : bool
        Score inside the SDC1 training box too (the official scorer's ``train=True``;
        the real SDC1 region of ``benchmarks/_real.py`` lies there).

    Returns
    -------
    (score, contribution, scorer)
        The total score (``ska_sdc``: ``run(mode=0, train=train)``), a ``(N,)`` array
        with each source's score if it is matched (mean of the 7 capped terms) or -1,
        and the scorer used (``"ska_sdc"`` or ``"proxy"``).
    """
    n = len(sub)
    if n == 0:
        return 0.0, np.zeros(0), "none"
    if not np.array_equal(np.asarray(sub["id"]), np.arange(n)):
        raise StreamdetValueError("submission ids must be 0..N-1")
    scorer = _official_scorer() if use_official else None
    if scorer is None:
        score, contrib = _proxy_score(sub, truth, freq)
        return score, contrib, "proxy"
    cols = list(SDC1_COLUMNS)
    sub_df = sub[cols].to_pandas()
    truth_df = truth[cols].to_pandas()
    with quiet_scorer():
        result = scorer(sub_df, truth_df, freq).run(mode=0, train=train, detail=True)
    contrib = np.full(n, -1.0)
    scores = result.scores_df
    if scores is not None and len(scores):
        per = scores.drop(columns="id").to_numpy(np.float64).mean(axis=1)
        contrib[np.asarray(scores["id"], np.int64)] = per
    return float(result.value), contrib, "ska_sdc"


def _proxy_score(sub: Table, truth: Table, freq: int) -> tuple[float, NDArray[np.float64]]:
    """A match-based stand-in for the SDC1 metric (same terms, simpler matching).

    Each submitted source is matched to the nearest truth source within its
    beam-convolved size ``sqrt(size^2 + beam^2)`` (one submitted source per truth
    source, the nearest wins); a match scores the mean of the seven capped SDC1
    terms, every unmatched submitted source -1.
    """
    from astropy import units as u
    from astropy.coordinates import SkyCoord

    beam = 0.25 / freq * 1400.0
    n = len(sub)
    contrib = np.full(n, -1.0)
    if n == 0 or len(truth) == 0:
        return float(contrib.sum()), contrib
    t_size = np.asarray(truth["size"], np.int64)
    factor = np.array([SIZE_TO_GAUSS.get(int(c), 1.0) for c in t_size])
    t_bmaj = np.asarray(truth["b_maj"], np.float64)
    t_bmin = np.asarray(truth["b_min"], np.float64)
    conv = np.sqrt((np.maximum(t_bmaj, t_bmin) * factor) ** 2 + beam ** 2)
    cs = SkyCoord(np.asarray(sub["ra_core"]) * u.deg, np.asarray(sub["dec_core"]) * u.deg)
    ct = SkyCoord(np.asarray(truth["ra_core"]) * u.deg, np.asarray(truth["dec_core"]) * u.deg)
    idx, sep, _ = cs.match_to_catalog_sky(ct)
    sep_as = sep.arcsec
    ok = sep_as < conv[idx]
    best: dict[int, int] = {}
    for i in np.flatnonzero(ok)[np.argsort(sep_as[ok], kind="stable")]:
        best.setdefault(int(idx[i]), int(i))
    for j, i in best.items():
        size_t = 0.5 * (t_bmaj[j] + t_bmin[j])
        pos = min(1.0, 0.3 / max(sep_as[i] / math.sqrt(4 * beam ** 2 + size_t ** 2), 1e-12))
        ft = float(truth["flux"][j])
        flux = min(1.0, 0.1 / max(abs(float(sub["flux"][i]) - ft) / ft, 1e-12))
        s_code = int(sub["size"][i])
        # the submitted size converted to the truth's size convention
        conv_sub = SIZE_TO_GAUSS.get(s_code, 1.0) / SIZE_TO_GAUSS.get(int(t_size[j]), 1.0)
        bmaj = min(1.0, 0.3 / max(abs(float(sub["b_maj"][i]) * conv_sub - t_bmaj[j])
                                  / t_bmaj[j], 1e-12))
        bmin = 1.0 if t_size[j] == 1 else min(1.0, 0.3 / max(
            abs(float(sub["b_min"][i]) * conv_sub - t_bmin[j]) / t_bmin[j], 1e-12))
        dpa = abs(_fold_pa(float(sub["pa"][i])) - _fold_pa(float(truth["pa"][j])))
        pa = 1.0 if t_size[j] == 1 else min(1.0, 10.0 / max(dpa, 1e-12))
        dcf = abs(float(sub["core_frac"][i]) - float(truth["core_frac"][j])) / 0.75
        core = min(1.0, 0.05 / max(dcf, 1e-12))
        cls = 1.0 if int(sub["class"][i]) == int(truth["class"][j]) else 0.0
        contrib[i] = (pos + flux + bmaj + bmin + pa + core + cls) / 7.0
    return float(contrib.sum()), contrib


def _fold_pa(pa: float) -> float:
    """The SDC1 scorer's PA folding (kept as it is, degeneracies included)."""
    if pa > 180:
        pa -= 180
    if pa > 90:
        pa -= 90
    if pa > 45:
        pa -= 45
    if pa < -45:
        pa += 45
    return pa


def _grid(lo: float) -> NDArray[np.float64]:
    return np.round(np.arange(max(lo, 0.0), 0.995, 0.01), 4)


def _choose_thresholds(obj: NDArray[np.float64], prior: NDArray[np.int64],
                       contrib: NDArray[np.float64], nbox: int, *, lo: float,
                       purity_target: float, min_count: int = 20
                       ) -> tuple[list[float], float, bool]:
    """Per-prior ``best`` thresholds and the global ``purity`` threshold.

    The score is taken as separable: keeping the detections with objectness >= t
    adds their contributions (matched score or -1), so each prior's threshold is
    chosen on its own detections (priors with fewer than ``min_count`` get the
    best global threshold).
    """
    grid = _grid(lo)
    keep = obj[None, :] >= grid[:, None]  # (T, N)
    total = (keep * contrib[None, :]).sum(axis=1)
    t_global = float(grid[int(np.argmax(total))]) if grid.size else lo
    best = []
    for k in range(nbox):
        sel = prior == k
        if sel.sum() < min_count:
            best.append(t_global)
            continue
        gain = (keep[:, sel] * contrib[None, sel]).sum(axis=1)
        best.append(float(grid[int(np.argmax(gain))]))
    matched = contrib >= 0
    n_keep = keep.sum(axis=1)
    purity = np.divide((keep & matched[None, :]).sum(axis=1), n_keep,
                       out=np.zeros(grid.size), where=n_keep > 0)
    reached = np.flatnonzero((purity >= purity_target) & (n_keep > 0))
    if reached.size:
        return best, float(grid[reached[0]]), True
    usable = np.flatnonzero(n_keep >= min(min_count, max(int(n_keep.max()), 1)))
    t_pur = float(grid[usable[np.argmax(purity[usable])]]) if usable.size else 0.99
    return best, t_pur, False


def _submission(table: Table, gain: NDArray[np.float64]) -> tuple[Table, NDArray[np.bool_]]:
    """SDC1 submission of a detection table, fluxes divided by the primary-beam gain."""
    t = table.copy(copy_data=True)
    flux = np.asarray(t["flux"], np.float64)
    t["flux"] = flux / np.where(gain > 0, gain, np.nan)
    finite = np.ones(len(t), bool)
    for name in ("ra", "dec", "flux", "bmaj", "bmin", "pa"):
        finite &= np.isfinite(np.asarray(t[name], np.float64))
    return to_sdc1(t[finite]), finite


def validate(net: YoloCianna, contract: Mapping[str, Any], image: str | os.PathLike[str],
             truth: Table, *, freq: int, workdir: str | os.PathLike[str], step: int = 0,
             threshold_min: float = 0.05, purity_target: float = 0.98,
             max_det_factor: float = 3.0) -> ValidationResult:
    """Export ``net``, run the engine on a validation image and score the catalogue.

    Parameters
    ----------
    net : YoloCianna
    contract : mapping
        Contract fields of the export (thresholds are replaced by the chosen presets).
    image : path-like
        Validation FITS image (from ``streamdet simulate``: its ``PBRA``/``PBDEC`` give
        the primary beam that corrects the fluxes).
    truth : astropy.table.Table
        Its SDC1 truth catalogue.
    freq : int
        Band, MHz.
    workdir : path-like
        Where ``model.onnx`` and ``catalogue.txt`` of this validation go (replaced).
    step : int
        Training step (for the record).
    threshold_min : float
        Lowest objectness threshold considered.
    purity_target : float
        Purity of the ``purity`` preset.
    max_det_factor : float
        At most this many detections per truth source are scored (the most confident).

    Returns
    -------
    ValidationResult
    """
    t0 = time.perf_counter()
    wd = Path(workdir)
    wd.mkdir(parents=True, exist_ok=True)
    onnx_path = wd / "model.onnx"
    fields = dict(contract)
    fields["thresholds"] = {"default": float(threshold_min)}
    export_onnx(net, onnx_path, contract=fields, overwrite=True, verify_sizes=((64, 64),))
    table, sub, contrib, scorer = score_candidates(
        onnx_path, image, truth, freq=freq, threshold_min=threshold_min,
        max_det=max(int(max_det_factor * len(truth)), 1))
    nbox = len(net.config.priors)
    obj = np.asarray(table["objectness"], np.float64) if len(table) else np.zeros(0)
    prior = np.asarray(table["prior"], np.int64) if len(table) else np.zeros(0, np.int64)
    best, t_pur, reached = _choose_thresholds(obj, prior, contrib, nbox, lo=threshold_min,
                                              purity_target=purity_target)
    keep_best = obj >= np.asarray(best)[prior] if len(table) else np.zeros(0, bool)
    score, n_det, n_match = _score_subset(sub, truth, freq, keep_best)
    keep_pur = obj >= t_pur
    pur_score = _score_subset(sub, truth, freq, keep_pur)[0]
    if len(sub):
        write_sdc1(sub[keep_best], wd / "catalogue.txt", overwrite=True)
    best_value: float | list[float] = best[0] if len(set(best)) == 1 else best
    thresholds = {"default": best_value, "best": best_value, "purity": t_pur}
    return ValidationResult(
        step=step, score=score, purity=n_match / n_det if n_det else 0.0,
        completeness=n_match / max(len(truth), 1), n_det=n_det, n_match=n_match,
        thresholds=thresholds, purity_score=pur_score, purity_reached=reached, scorer=scorer,
        seconds=time.perf_counter() - t0,
        extra={"candidates": len(table), "score_all": float(contrib.sum())})


def score_candidates(model: str | os.PathLike[str] | Model, image: str | os.PathLike[str],
                     truth: Table, *, freq: int, threshold_min: float,
                     max_det: int | None = None) -> tuple[Table, Table, NDArray[np.float64], str]:
    """Detect at a low threshold and score every candidate with the SDC1 scorer.

    Parameters
    ----------
    model : path-like or Model
        ONNX detector.
    image : path-like
        Simulated FITS image (its ``PBRA``/``PBDEC`` give the primary beam that corrects
        the fluxes).
    truth : astropy.table.Table
        Its SDC1 truth catalogue.
    freq : int
        Band, MHz.
    threshold_min : float
        Objectness threshold of the detection run.
    max_det : int, optional
        Keep at most this many candidates (the most confident).

    Returns
    -------
    table : astropy.table.Table
        The candidates with finite catalogue values.
    sub : astropy.table.Table
        Their SDC1 submission, fluxes divided by the primary beam (same rows).
    contrib : (N,) float64
        Each candidate's contribution to the score (matched score, or -1).
    scorer : str
        Which scorer ran.
    """
    table, sub = candidate_submission(model, image, freq=freq, threshold_min=threshold_min,
                                      max_det=max_det)
    _, contrib, scorer = score_catalogue(sub, truth, freq)
    return table, sub, contrib, scorer


def candidate_submission(model: str | os.PathLike[str] | Model, image: str | os.PathLike[str],
                         *, freq: int, threshold_min: float, max_det: int | None = None
                         ) -> tuple[Table, Table]:
    """Detect at a low threshold; the candidates and their SDC1 submission (same rows).

    Parameters and returns as :func:`score_candidates`, without the scoring.
    """
    table = detect(image, model=model, threshold=float(threshold_min), quiet=True)
    if max_det is not None and len(table) > max_det:
        order = np.argsort(-np.asarray(table["objectness"], np.float64), kind="stable")
        table = table[np.sort(order[:max_det])]
    header = open_image(image).header
    if len(table):
        ra0 = float(header.get("PBRA", POINTING[0]))
        dec0 = float(header.get("PBDEC", POINTING[1]))
        gain = primary_beam(_separation(np.asarray(table["ra"], np.float64),
                                        np.asarray(table["dec"], np.float64), ra0, dec0), freq)
        sub, finite = _submission(table, gain)
        table = table[finite]
    else:
        sub = Table()
    return table, sub


def _score_subset(sub: Table, truth: Table, freq: int, keep: NDArray[np.bool_], *,
                  train: bool = False) -> tuple[float, int, int]:
    """Official score, detections and matches of the rows ``keep`` of a submission."""
    if not keep.any():
        return 0.0, 0, 0
    part = sub[keep]
    part["id"] = np.arange(len(part), dtype=np.int64)
    score, contrib, _ = score_catalogue(part, truth, freq, train=train)
    return score, len(part), int((contrib >= 0).sum())


# --------------------------------------------------------------------------- training
def _device(name: str) -> torch.device:
    if name == "cuda" or (name == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise StreamdetValueError("device 'cuda' requested but torch sees no CUDA GPU")
        return torch.device("cuda")
    return torch.device("cpu")


def _lr(config: TrainConfig, step: int) -> float:
    """Learning rate of step ``step`` (0-based): linear warm-up, cosine decay to 5 %."""
    if step < config.warmup_steps:
        return config.lr * (0.1 + 0.9 * step / max(config.warmup_steps, 1))
    span = max(config.steps - config.warmup_steps, 1)
    frac = min((step - config.warmup_steps) / span, 1.0)
    return config.lr * (0.05 + 0.95 * 0.5 * (1.0 + math.cos(math.pi * frac)))


def _contract_fields(config: TrainConfig, fields: Sequence[Field],
                     extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    if config.fields > 0:
        b = band(config.freq)
        scale, beam, noise = b.pixel_arcsec, b.beam_fwhm_arcsec, b.noise
    else:
        scale, beam = fields[0].pixel_arcsec, fields[0].beam_arcsec
        noise = float(np.median([f.noise for f in fields]))
    scaled = (band_scaled_fields(noise, beam, size_floor_beams=config.size_floor_beams)
              if config.band_scaled else band_scaled_fields(SDC1_NOISE, SDC1_BEAM))
    scaled["params"] = params_with_channels(scaled["params"], config.network().box_channels)
    return {
        **scaled,
        "name": config.name,
        "description": (f"YOLO-CIANNA-style detector for {config.freq} MHz SDC1-like images "
                        f"({scale} arcsec pixels, {beam} arcsec beam), trained by "
                        "`streamdet train`"),
        "pixel_scale_arcsec": scale, "beam_arcsec": [beam, beam],
        "freq_mhz": float(config.freq),
        "training": {"config": config.to_dict(), "network": config.network().to_dict(),
                     **dict(extra or {})},
    }


def _log(path: Path, record: Mapping[str, Any]) -> None:
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(record, sort_keys=True) + "\n")


def _load_fields(config: TrainConfig, wd: Path, quiet: bool | None) -> list[Field]:
    fields = []
    for i in range(config.fields):
        offset = config.field_offsets[i % len(config.field_offsets)]
        img, tru = simulated_field(wd / "fields", size=config.field_size, freq=config.freq,
                                   seed=config.seed + i, offset=offset, faint=config.faint,
                                   quiet=quiet)
        fields.append(load_field(img, tru, name=f"sim{i}"))
    for img_path, truth_path in config.images:
        fields.append(load_field(img_path, truth_path, pb=config.pb))
    return fields


def _field_shares(config: TrainConfig, fields: Sequence[Field]) -> list[float] | None:
    """Sampling weight of each field (simulated ones first, then the user images), or None
    (by area) without ``image_fraction``: the images share ``image_fraction`` by area
    among themselves, the simulated fields the rest."""
    if config.image_fraction is None or not config.images or config.fields == 0:
        return None
    n_sim = config.fields
    area = [float((f.region[1] - f.region[0]) * (f.region[3] - f.region[2])) for f in fields]
    sim, img = sum(area[:n_sim]), sum(area[n_sim:])
    frac = float(config.image_fraction)
    return [a / sim * (1.0 - frac) for a in area[:n_sim]] + [a / img * frac for a in area[n_sim:]]


def _save_state(path: Path, net: YoloCianna, opt: torch.optim.Optimizer, step: int,
                rng: np.random.Generator, best: Mapping[str, Any], config: TrainConfig) -> None:
    from streamdet.io._atomic import atomic_path

    doc = {"format": _STATE_FORMAT, "step": step, "model": net.state_dict(),
           "optimizer": opt.state_dict(), "rng": json.dumps(rng.bit_generator.state),
           "torch_rng": torch.get_rng_state(), "best": json.dumps(dict(best)),
           "config": json.dumps(config.to_dict())}
    with atomic_path(path, overwrite=True) as tmp:
        torch.save(doc, tmp)


def train(config: TrainConfig, workdir: str | os.PathLike[str], *, resume: bool = False,
          quiet: bool | None = None) -> Path:
    """Train a detector as ``config`` says, in ``workdir``; return the best checkpoint.

    Parameters
    ----------
    config : TrainConfig
    workdir : path-like
        Work directory (created). A new run refuses a directory that already holds a
        run (``state.pt`` or ``log.jsonl``) unless ``resume``.
    resume : bool
        Continue from ``workdir/state.pt`` (network, optimiser, step, random states,
        best score); ``config`` may change ``steps`` and the validation settings, not
        the network.
    quiet : bool or None
        ``True`` hides the progress bar; ``None`` shows it on a terminal.

    Returns
    -------
    pathlib.Path
        ``workdir/best.pt``; ``workdir/model.onnx`` is its ONNX export (with the
        validation threshold presets in its contract).

    Raises
    ------
    OutputExistsError
        ``workdir`` holds a run and ``resume`` is false.
    StreamdetFileNotFoundError
        ``resume`` without a ``state.pt``.
    """
    wd = Path(workdir)
    wd.mkdir(parents=True, exist_ok=True)
    state_path, log_path = wd / "state.pt", wd / _LOG
    if not resume and (state_path.exists() or log_path.exists()):
        raise OutputExistsError(f"work directory {str(wd)!r} holds a training run; resume it "
                                "(--resume) or choose another directory")
    if resume and not state_path.exists():
        raise StreamdetFileNotFoundError(f"cannot resume: {str(state_path)!r} does not exist")
    (wd / "config.json").write_text(json.dumps(config.to_dict(), indent=2) + "\n",
                                    encoding="utf-8")
    if config.threads:
        torch.set_num_threads(int(config.threads))
    device = _device(config.device)
    torch.manual_seed(config.seed)

    fields = _load_fields(config, wd, quiet)
    val_img, val_tru = simulated_field(wd / "fields", size=config.val_size, freq=config.freq,
                                       seed=config.seed + 1_000_003, offset=config.val_offset,
                                       faint=config.faint, quiet=quiet)
    val_truth = read_sdc1(val_tru)

    net = YoloCianna(config.network())
    net.set_output_bias("obj", config.obj_bias)
    base_fields = _contract_fields(config, fields)
    contract = build_contract(net, base_fields)
    spec = TargetSpec(priors=tuple((float(w), float(h)) for w, h in net.config.priors),
                      stride=net.config.stride, box_channels=net.config.box_channels,
                      param_channels=contract.param_channels, wh_bound=net.config.wh_bound,
                      ignore_iou=config.ignore_iou, obj_target=config.obj_target,
                      assign_obj_power=config.assign_obj_power,
                      reinject_obj=config.reinject_obj, weights=config.loss_weights())
    spec_before = dataclasses.replace(spec, reinject_obj=0.0)  # no re-injection yet
    sampler = CutoutSampler(fields, size=config.cutout, contract=contract,
                            selection=config.selection(), augment=config.augment,
                            share=_field_shares(config, fields))
    net.to(device)
    opt = torch.optim.AdamW(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    rng = np.random.default_rng([config.seed, 1])
    step = 0
    best: dict[str, Any] = {"score": -math.inf, "step": -1}
    if resume:
        state = torch.load(state_path, map_location="cpu", weights_only=True)
        if not isinstance(state, dict) or state.get("format") != _STATE_FORMAT:
            raise StreamdetValueError(f"{str(state_path)!r} is not a training state")
        try:
            net.load_state_dict(state["model"])
        except RuntimeError as exc:
            raise StreamdetValueError(f"cannot resume: the network of {str(state_path)!r} "
                                      f"differs from the config's: {exc}") from exc
        opt.load_state_dict(state["optimizer"])
        step = int(state["step"])
        rng.bit_generator.state = json.loads(state["rng"])
        torch.set_rng_state(state["torch_rng"])
        best = json.loads(state["best"])
        best["score"] = float(best["score"])

    val_dir = wd / "val"
    sums: dict[str, float] = {}
    n_sum = 0
    t_log = time.perf_counter()
    bar = progress_bar(total=config.steps, desc="train", unit="step", quiet=quiet,
                       initial=min(step, config.steps))
    try:
        while step < config.steps:
            lr = _lr(config, step)
            for group in opt.param_groups:
                group["lr"] = lr
            images, truths = sampler.sample(rng, config.batch)
            net.train()
            raw = net.raw(torch.from_numpy(images).to(device))
            with torch.no_grad():
                act = net.activate(raw).float().cpu().numpy()
            obj = act.reshape(act.shape[0], spec.nbox, spec.nch, *act.shape[2:])[
                :, :, spec.index("obj")]
            targets = build_targets(predicted_boxes(act, spec), truths,
                                    spec if step >= config.reinject_after else spec_before,
                                    prediction_aware=step >= config.shape_assign_steps,
                                    pred_obj=obj, rng=rng)
            loss, parts = yolo_loss(raw, targets, spec)
            if not torch.isfinite(loss):
                raise StreamdetValueError(f"training diverged at step {step + 1}: loss {loss}")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if config.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(net.parameters(), config.grad_clip)
            opt.step()
            step += 1
            bar.update(1)
            for k, v in {"loss": float(loss.detach()), **parts, "n_pos": targets.n_pos,
                         "n_ignored": targets.n_ignored,
                         "n_unassigned": targets.n_unassigned,
                         "n_reinjected": targets.n_reinjected}.items():
                sums[k] = sums.get(k, 0.0) + float(v)
            n_sum += 1
            if step % config.log_every == 0 or step == config.steps:
                now = time.perf_counter()
                rec: dict[str, Any] = {k: v / n_sum for k, v in sums.items()}
                rec.update(kind="train", step=step, lr=lr, steps_per_s=n_sum / (now - t_log),
                           time=time.time())
                _log(log_path, rec)
                bar.set_postfix_str(f"loss {rec['loss']:.3g}", refresh=False)
                sums, n_sum, t_log = {}, 0, now
            if step % config.val_every == 0 or step == config.steps:
                vnet = net if device.type == "cpu" else copy.deepcopy(net).cpu()
                res = validate(vnet, base_fields, val_img, val_truth, freq=config.freq,
                               workdir=val_dir, step=step,
                               threshold_min=config.val_threshold_min,
                               purity_target=config.purity_target)
                _log(log_path, {"kind": "val", "time": time.time(), **dataclasses.asdict(res)})
                if res.score > best["score"]:
                    best = {"score": res.score, "step": step, "thresholds": res.thresholds,
                            "purity": res.purity, "purity_score": res.purity_score}
                    extra = {"step": step, "val_score": res.score, "val_purity": res.purity,
                             "val_field": {"size": config.val_size, "offset": config.val_offset,
                                           "seed": config.seed + 1_000_003},
                             "scorer": res.scorer}
                    fields_best = {**_contract_fields(config, fields, extra),
                                   "thresholds": res.thresholds}
                    save_checkpoint(vnet, wd / "best.pt", contract=fields_best, overwrite=True)
                t_log = time.perf_counter()
            if step % config.checkpoint_every == 0 or step == config.steps:
                save_checkpoint(net, wd / "last.pt", contract=base_fields, overwrite=True)
                _save_state(state_path, net, opt, step, rng, best, config)
    finally:
        bar.close()
    best_path = wd / "best.pt"
    if not best_path.exists():  # resumed after the last step without a best checkpoint
        save_checkpoint(net, best_path, contract=base_fields, overwrite=True)
    export_onnx(best_path, wd / "model.onnx", overwrite=True)
    return best_path
