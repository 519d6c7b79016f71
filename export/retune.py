"""Re-tune the ``purity`` preset (or the ``best`` preset, or the ``measure`` settings) of a
detector on fresh validation fields.

Training picks its presets on one validation field. The ``purity`` preset (the lowest
objectness threshold whose catalogue reaches a purity target) rests on the few false
detections left at high thresholds, so one field gives a noisy estimate; this tool pools
several simulated fields (seeds of its own, never used for training or benchmarks), picks
the threshold again (bisecting the threshold grid, each cut catalogue scored as a whole by the
official scorer) and writes a copy of the model with the new preset. The ``best`` and
``default`` presets are left as they are. With ``--bmin`` (``--bmaj``) it instead picks,
from a small grid, the ``measure.bmin_resolved`` (``bmaj_resolved``) whose catalogues at
``best`` score highest. With
``--best`` it picks the ``best`` preset again: the model's own and every global threshold
of a grid (steps of 0.05) are scored on the pooled fields, and the highest score whose
pooled purity reaches ``--min-purity`` (0.95) wins (``default`` follows ``best`` when it was
equal to it).

    python -m export.retune MODEL.onnx -o OUT.onnx --freq 560 --purity 0.993 \\
        --seeds 3000001 3000002 3000003 --size 4096 --offset 0 -0.8 --workdir DIR
        [--bmin | --bmaj | --fit-snr | --best [--min-purity 0.95]] [--grid V ...]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
from astropy.table import Table

from streamdet.catalogue.catalog import read_sdc1
from streamdet.engine.contract import Model, ModelContract, load_model
from streamdet.errors import StreamdetValueError
from streamdet.io._atomic import atomic_path, check_output

from ._data import simulated_field
from .train import _grid, _score_subset, candidate_submission

__all__ = ["Labelled", "retune_best", "retune_measure", "retune_purity"]


def _fields(workdir: str | os.PathLike[str], *, freq: int, seeds: Sequence[int], size: int,
            offset: tuple[float, float]) -> list[tuple[Path, Table]]:
    """The simulated validation fields (cached in ``workdir``) and their truth tables."""
    out = []
    for seed in seeds:
        image, truth_path = simulated_field(workdir, size=size, freq=freq, seed=int(seed),
                                            offset=offset)
        out.append((Path(image), read_sdc1(truth_path)))
    return out


Labelled = tuple[str | os.PathLike[str], str | os.PathLike[str], bool]
"""A labelled validation image: (image, SDC1 truth, score inside the SDC1 training box)."""

_Field = tuple[Path, Table, bool]


def _groups(workdir: str | os.PathLike[str], *, freq: int, seeds: Sequence[int], size: int,
            offset: tuple[float, float], images: Sequence[Labelled]) -> list[list[_Field]]:
    """The validation groups: the simulated fields pooled (when ``seeds``), then each
    labelled image on its own."""
    groups: list[list[_Field]] = []
    if seeds:
        groups.append([(image, truth, False) for image, truth in
                       _fields(workdir, freq=freq, seeds=seeds, size=size, offset=offset)])
    for image, truth, train in images:
        groups.append([(Path(image), read_sdc1(truth), bool(train))])
    if not groups:
        raise StreamdetValueError("give at least one validation seed or labelled image")
    return groups


def _relative(scores: np.ndarray) -> np.ndarray:
    """(G, C) group scores -> (C,) mean over groups of each score over the group's first
    candidate's (the reference), so that a small real image weighs as much as a pool of
    large simulated fields; with one group the order is the pooled score's."""
    ref = np.maximum(np.abs(scores[:, :1]), 1.0)
    rel: np.ndarray = (scores / ref).mean(axis=0)
    return rel


def retune_purity(model: str | os.PathLike[str], out: str | os.PathLike[str], *, freq: int,
                  seeds: Sequence[int], size: int, offset: tuple[float, float],
                  purity_target: float, workdir: str | os.PathLike[str],
                  threshold_min: float = 0.05, images: Sequence[Labelled] = (),
                  overwrite: bool = False) -> dict[str, float]:
    """Choose the ``purity`` preset on pooled simulated fields; write the model to ``out``.

    Parameters
    ----------
    model : path-like
        ONNX detector with a streamdet contract.
    out : path-like
        Where the re-tuned copy goes (written atomically).
    freq : int
        Band of the validation fields, MHz.
    seeds, size, offset
        Simulated validation fields: one per seed, ``size`` px square, centred
        ``offset`` (dRA, dDec) deg from the SDC1 field centre.
    purity_target : float
        Purity the preset must reach on the pooled fields, in (0, 1].
    workdir : path-like
        Cache of the simulated fields.
    threshold_min : float
        Lowest objectness threshold considered.
    images : sequence of (image, truth, train)
        Labelled validation images (such as the real SDC1 validation region), each a
        group of its own: the preset must reach the target on the pooled simulated
        fields and on each image.
    overwrite : bool
        Replace an existing ``out``.

    Returns
    -------
    dict
        ``purity`` threshold chosen, the purity reached on the pooled fields, the number
        of detections kept there, and the previous threshold.
    """
    if not 0.0 < purity_target <= 1.0:
        raise StreamdetValueError(f"purity target {purity_target} must be in (0, 1]")
    check_output(out, overwrite=overwrite)
    mdl = load_model(model)
    groups = []
    for group in _groups(workdir, freq=freq, seeds=seeds, size=size, offset=offset,
                         images=images):
        members = []
        for image, truth, train in group:
            table, sub = candidate_submission(mdl, image, freq=freq,
                                              threshold_min=threshold_min)
            members.append((np.asarray(table["objectness"], np.float64), sub, truth, train))
        groups.append(members)
    fields = [m for g in groups for m in g]

    def pooled(t: float) -> tuple[float, int]:
        """The lowest purity of the groups' catalogues cut at ``t`` (each catalogue scored
        as a whole: a candidate's match depends on which others are in it, so the
        contributions of a low-threshold run do not add up to a cut's purity), and the
        detections kept."""
        worst, kept = 1.0, 0
        for group in groups:
            n_det = n_match = 0
            for obj, sub, truth, train in group:
                _, det, match = _score_subset(sub, truth, freq, obj >= t, train=train)
                n_det, n_match = n_det + det, n_match + match
            worst = min(worst, n_match / n_det if n_det else 0.0)
            kept += n_det
        return worst, kept

    # Purity rises with the threshold: bisect the grid for the lowest one that reaches
    # the target.
    top = max((float(obj.max()) for obj, _, _, _ in fields if obj.size),
              default=threshold_min)
    grid = _grid(threshold_min)
    grid = grid[grid <= top] if (grid <= top).any() else grid[:1]
    lo, hi = 0, len(grid) - 1
    purity, kept = pooled(float(grid[hi]))
    if purity < purity_target or kept == 0:
        raise StreamdetValueError(f"no threshold reaches purity {purity_target} on the fields")
    while lo < hi:
        mid = (lo + hi) // 2
        p_mid, k_mid = pooled(float(grid[mid]))
        if p_mid >= purity_target and k_mid > 0:
            hi, purity, kept = mid, p_mid, k_mid
        else:
            lo = mid + 1
    t_pur = float(grid[hi])

    previous = mdl.contract.thresholds.get("purity")
    _write_contract(model, out, dataclasses.replace(
        mdl.contract, thresholds={**mdl.contract.thresholds, "purity": t_pur}),
        overwrite=overwrite)
    return {"purity_threshold": t_pur, "purity": purity, "kept": kept,
            "previous": float(previous) if isinstance(previous, int | float) else float("nan")}


def retune_measure(model: str | os.PathLike[str], out: str | os.PathLike[str], *, freq: int,
                   seeds: Sequence[int], size: int, offset: tuple[float, float],
                   workdir: str | os.PathLike[str], key: str = "bmin_resolved",
                   grid: Sequence[float] = (0.0, 0.25, 0.5, 1.0),
                   images: Sequence[Labelled] = (),
                   overwrite: bool = False) -> dict[float, float]:
    """Choose the contract's ``measure[key]`` on pooled simulated fields.

    ``key`` is ``"bmin_resolved"``, ``"bmaj_resolved"``, ``"fit_snr"`` (where an
    infinite grid value stands for ``None``: forced photometry only), ``"background"``
    (grid 0 / 1: off / on) or ``"flux_scale"`` (the maps' flux per unit of sky flux,
    grid values > 0).

    For each value of ``grid``, the fields are detected with it at the ``best`` preset
    and scored as whole catalogues; the value with the highest pooled score (with
    labelled ``images``: the highest mean over the groups of each group's score relative
    to its score at the first grid value) is written to a copy of the model at ``out``.
    Parameters as :func:`retune_purity`.

    Returns
    -------
    dict
        Pooled official score for each value of ``grid`` (summed over the groups).
    """
    if key not in _MEASURE_KEYS:
        raise StreamdetValueError(f"key must be one of {_MEASURE_KEYS}, got {key!r}")
    finite = key != "fit_snr"           # fit_snr: inf stands for None (never fit)
    if not grid or any(not 0 <= g or (finite and np.isinf(g)) for g in grid):
        raise StreamdetValueError(f"need a grid of values >= 0, got {grid}")
    if key == "flux_scale" and any(g <= 0 for g in grid):
        raise StreamdetValueError(f"flux_scale needs a grid of values > 0, got {grid}")
    check_output(out, overwrite=overwrite)
    mdl = load_model(model)
    best = np.asarray(mdl.contract.thresholds.get("best", mdl.contract.thresholds["default"]))
    groups = _groups(workdir, freq=freq, seeds=seeds, size=size, offset=offset, images=images)
    table_of = np.zeros((len(groups), len(grid)))
    for j, value in enumerate(grid):
        trial = Model(mdl.path, dataclasses.replace(mdl.contract, measure={
            **mdl.contract.measure, key: _stored(value, key)}), threads=mdl.threads)
        for g, group in enumerate(groups):
            for image, truth, train in group:
                table, sub = candidate_submission(trial, image, freq=freq,
                                                  threshold_min=float(best.min()))
                table_of[g, j] += _score_subset(sub, truth, freq, _cut(table, best),
                                                train=train)[0]
    scores = {float(v): float(table_of[:, j].sum()) for j, v in enumerate(grid)}
    chosen = float(grid[int(np.argmax(_relative(table_of)))])
    _write_contract(model, out, dataclasses.replace(
        mdl.contract, measure={**mdl.contract.measure, key: _stored(chosen, key)}),
        overwrite=overwrite)
    return scores


_MEASURE_KEYS = ("bmin_resolved", "bmaj_resolved", "fit_snr", "background", "flux_scale")


def _stored(value: float, key: str = "") -> float | bool | None:
    """A grid value as the contract stores it: infinity (never) as None, ``background``
    as a boolean (0: off, anything else: on)."""
    if key == "background":
        return bool(value)
    return None if np.isinf(value) else float(value)


def retune_best(model: str | os.PathLike[str], out: str | os.PathLike[str], *, freq: int,
                seeds: Sequence[int], size: int, offset: tuple[float, float],
                workdir: str | os.PathLike[str], min_purity: float = 0.95,
                grid: Sequence[float] = tuple(np.round(np.arange(0.05, 0.951, 0.05), 2)),
                images: Sequence[Labelled] = (),
                overwrite: bool = False) -> dict[str, float | tuple[float, ...]]:
    """Choose the ``best`` preset on pooled simulated fields; write the model to ``out``.

    The candidates are the model's own ``best`` (a number or one per prior) and each
    global threshold of ``grid``; each cut catalogue is scored as a whole by the official
    scorer on every field. The highest pooled score among the candidates whose pooled
    purity is at least ``min_purity`` is written as ``best`` (and as ``default`` where
    ``default`` was ``best``); the other presets are kept. With labelled ``images``
    (each a group of its own beside the pooled simulated fields), every group must keep
    ``min_purity`` and the candidates are ranked by the mean over the groups of each
    group's score relative to its score at the model's own preset.

    Parameters
    ----------
    model, out : path-like
        The ONNX detector and where its re-tuned copy goes (atomically).
    freq, seeds, size, offset, workdir
        The simulated validation fields, as :func:`retune_purity`.
    min_purity : float
        Pooled purity the preset must keep, in (0, 1].
    grid : sequence of float
        Global objectness thresholds tried, in (0, 1).
    images : sequence of (image, truth, train)
        Labelled validation images, as :func:`retune_purity`.
    overwrite : bool
        Replace an existing ``out``.

    Returns
    -------
    dict
        ``best`` (the chosen preset), ``score`` and ``purity`` (pooled, at it), and
        ``previous_score`` and ``previous_purity`` (at the model's own preset).

    Raises
    ------
    StreamdetValueError
        Bad ``min_purity``, ``grid`` or ``seeds``, or no candidate reaches ``min_purity``.
    """
    if not 0.0 < min_purity <= 1.0:
        raise StreamdetValueError(f"min_purity {min_purity} must be in (0, 1]")
    values = [float(v) for v in grid]
    if not values or not all(0.0 < v < 1.0 for v in values):
        raise StreamdetValueError(f"grid thresholds must lie in (0, 1), got {list(grid)}")
    check_output(out, overwrite=overwrite)
    mdl = load_model(model)
    th = mdl.contract.thresholds
    own = np.asarray(th.get("best", th["default"]), np.float64)
    candidates: list[np.ndarray] = [own, *(np.asarray(v) for v in values)]
    lowest = min(float(own.min()), min(values))
    groups = _groups(workdir, freq=freq, seeds=seeds, size=size, offset=offset, images=images)
    per = np.zeros((len(groups), len(candidates), 3))  # score, detections, matches
    for g, group in enumerate(groups):
        for image, truth, train in group:
            table, sub = candidate_submission(mdl, image, freq=freq, threshold_min=lowest)
            for i, cand in enumerate(candidates):
                per[g, i] += _score_subset(sub, truth, freq, _cut(table, cand), train=train)
    group_purity = np.divide(per[:, :, 2], per[:, :, 1], out=np.zeros(per.shape[:2]),
                             where=per[:, :, 1] > 0)
    totals = per.sum(axis=0)
    purity = np.divide(totals[:, 2], totals[:, 1], out=np.zeros(len(candidates)),
                       where=totals[:, 1] > 0)
    worst = group_purity.min(axis=0)
    ok = np.flatnonzero(worst >= min_purity)
    if ok.size == 0:
        raise StreamdetValueError(f"no candidate preset reaches purity {min_purity} on the "
                                  f"fields (best {worst.max():.4f})")
    k = int(ok[np.argmax(_relative(per[:, :, 0])[ok])])
    chosen = candidates[k]
    preset: float | tuple[float, ...] = (tuple(float(v) for v in chosen) if chosen.ndim
                                         else float(chosen))
    new = {**th, "best": preset}
    if "default" in th and np.array_equal(np.asarray(th["default"]), own):
        new["default"] = preset
    _write_contract(model, out, dataclasses.replace(mdl.contract, thresholds=new),
                    overwrite=overwrite)
    return {"best": preset, "score": float(totals[k, 0]), "purity": float(purity[k]),
            "previous_score": float(totals[0, 0]), "previous_purity": float(purity[0]),
            "group_scores": tuple(float(v) for v in per[:, k, 0]),
            "group_purity": tuple(float(v) for v in group_purity[:, k])}


def _cut(table: Table, threshold: np.ndarray) -> np.ndarray:
    """Rows of a candidate table at or above an objectness threshold (global or per prior)."""
    obj = np.asarray(table["objectness"], np.float64)
    return obj >= (threshold[np.asarray(table["prior"])] if threshold.ndim else float(threshold))


def _write_contract(model: str | os.PathLike[str], out: str | os.PathLike[str],
                    contract: ModelContract, *, overwrite: bool) -> None:
    """Write a copy of ``model`` whose metadata carries ``contract`` (atomically)."""
    proto = onnx.load(str(model))
    entries = contract.to_metadata()
    for prop in proto.metadata_props:
        if prop.key in entries:
            prop.value = entries[prop.key]
    with atomic_path(out, overwrite=overwrite) as tmp:
        onnx.save(proto, str(tmp))
        load_model(tmp)                       # the copy still carries a valid contract


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", type=Path)
    ap.add_argument("-o", "--output", type=Path, required=True)
    ap.add_argument("--freq", type=int, choices=(560, 1400, 9200), required=True)
    ap.add_argument("--purity", type=float, default=0.99)
    ap.add_argument("--seeds", type=int, nargs="*", default=[3000001, 3000002, 3000003],
                    help="simulated validation fields (none: only the --image files)")
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--offset", type=float, nargs=2, default=(0.0, -0.8), metavar=("DRA", "DDEC"))
    ap.add_argument("--workdir", type=Path, default=Path("retune_fields"))
    ap.add_argument("--overwrite", action="store_true")
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--bmin", action="store_true",
                      help="choose measure.bmin_resolved (at the best preset) instead of the "
                           "purity preset")
    mode.add_argument("--bmaj", action="store_true",
                      help="choose measure.bmaj_resolved (at the best preset) instead of the "
                           "purity preset")
    mode.add_argument("--fit-snr", action="store_true",
                      help="choose measure.fit_snr (at the best preset): the peak SNR from "
                           "which shapes are fitted (grid value inf: never)")
    mode.add_argument("--background", action="store_true",
                      help="choose measure.background (grid 0 1: forced photometry above "
                           "zero or above the local median)")
    mode.add_argument("--flux-scale", action="store_true",
                      help="choose measure.flux_scale (at the best preset): the maps' flux "
                           "per unit of sky flux, by which measured fluxes are divided")
    mode.add_argument("--best", action="store_true",
                      help="choose the best preset (highest pooled score at --min-purity) "
                           "instead of the purity preset")
    ap.add_argument("--grid", type=float, nargs="+", default=(0.0, 0.25, 0.5, 1.0),
                    help="values tried with --bmin / --bmaj (beams), --fit-snr or "
                         "--background (0 1) (default 0 0.25 0.5 1)")
    ap.add_argument("--min-purity", type=float, default=0.95,
                    help="pooled purity the best preset must keep (with --best)")
    ap.add_argument("--image", action="append", default=[], metavar="IMG.fits",
                    help="labelled validation image (repeat; each with a --truth), a group "
                         "of its own beside the pooled simulated fields")
    ap.add_argument("--truth", action="append", default=[], metavar="TRUTH.txt")
    ap.add_argument("--in-train-box", action="store_true",
                    help="the --image files lie in the SDC1 training box (score them with "
                         "the scorer's train=True; the real SDC1 region does)")
    args = ap.parse_args(argv)
    if len(args.image) != len(args.truth):
        ap.error("--image and --truth must come in pairs")
    images = [(i, t, bool(args.in_train_box)) for i, t in zip(args.image, args.truth,
                                                               strict=True)]
    if args.best:
        best = retune_best(args.model, args.output, freq=args.freq, seeds=args.seeds,
                          size=args.size, offset=(args.offset[0], args.offset[1]),
                          workdir=args.workdir, min_purity=args.min_purity,
                          images=images, overwrite=args.overwrite)
        print(f"best preset -> {best['best']}: score {best['score']:.1f}, purity "
              f"{best['purity']:.4f} (the model's own: {best['previous_score']:.1f}, "
              f"{best['previous_purity']:.4f}); per group (simulated pool, then each "
              f"image): scores {best['group_scores']}, purity {best['group_purity']}")
        return
    if args.bmin or args.bmaj or args.fit_snr or args.background or args.flux_scale:
        key = ("bmin_resolved" if args.bmin else "bmaj_resolved" if args.bmaj
               else "fit_snr" if args.fit_snr else "background" if args.background
               else "flux_scale")
        scores = retune_measure(args.model, args.output, freq=args.freq, seeds=args.seeds,
                                size=args.size, offset=(args.offset[0], args.offset[1]),
                                workdir=args.workdir, key=key, grid=args.grid,
                                images=images, overwrite=args.overwrite)
        print(f"{key}: " + ", ".join(f"{v:g} -> {sc:.1f}" for v, sc in scores.items())
              + f"; chosen {max(scores, key=lambda v: scores[v]):g}")
        return
    res = retune_purity(args.model, args.output, freq=args.freq, seeds=args.seeds,
                        size=args.size, offset=(args.offset[0], args.offset[1]),
                        purity_target=args.purity, workdir=args.workdir,
                        images=images, overwrite=args.overwrite)
    print(f"purity preset {res['previous']:.3f} -> {res['purity_threshold']:.3f}: purity "
          f"{res['purity']:.4f} with {res['kept']} detections on {len(args.seeds)} fields")


if __name__ == "__main__":
    main()
