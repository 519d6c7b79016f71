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

from streamdet._atomic import atomic_path, check_output
from streamdet.catalog import read_sdc1
from streamdet.contract import Model, ModelContract, load_model
from streamdet.errors import StreamdetValueError

from ._data import simulated_field
from .train import _grid, _score_subset, candidate_submission

__all__ = ["retune_best", "retune_measure", "retune_purity"]


def _fields(workdir: str | os.PathLike[str], *, freq: int, seeds: Sequence[int], size: int,
            offset: tuple[float, float]) -> list[tuple[Path, Table]]:
    """The simulated validation fields (cached in ``workdir``) and their truth tables."""
    out = []
    for seed in seeds:
        image, truth_path = simulated_field(workdir, size=size, freq=freq, seed=int(seed),
                                            offset=offset)
        out.append((Path(image), read_sdc1(truth_path)))
    return out


def retune_purity(model: str | os.PathLike[str], out: str | os.PathLike[str], *, freq: int,
                  seeds: Sequence[int], size: int, offset: tuple[float, float],
                  purity_target: float, workdir: str | os.PathLike[str],
                  threshold_min: float = 0.05, overwrite: bool = False) -> dict[str, float]:
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
    if not seeds:
        raise StreamdetValueError("give at least one validation seed")
    check_output(out, overwrite=overwrite)
    mdl = load_model(model)
    fields = []
    for image, truth in _fields(workdir, freq=freq, seeds=seeds, size=size, offset=offset):
        table, sub = candidate_submission(mdl, image, freq=freq, threshold_min=threshold_min)
        fields.append((np.asarray(table["objectness"], np.float64), sub, truth))

    def pooled(t: float) -> tuple[float, int]:
        """Purity and detections of the catalogues cut at ``t``, each scored as a whole
        (a candidate's match depends on which others are in the catalogue, so the
        contributions of a low-threshold run do not add up to a cut's purity)."""
        n_det = n_match = 0
        for obj, sub, truth in fields:
            _, det, match = _score_subset(sub, truth, freq, obj >= t)
            n_det, n_match = n_det + det, n_match + match
        return (n_match / n_det if n_det else 0.0), n_det

    # Purity rises with the threshold: bisect the grid for the lowest one that reaches
    # the target.
    top = max((float(obj.max()) for obj, _, _ in fields if obj.size), default=threshold_min)
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
                   overwrite: bool = False) -> dict[float, float]:
    """Choose the contract's ``measure[key]`` on pooled simulated fields.

    ``key`` is ``"bmin_resolved"``, ``"bmaj_resolved"`` or ``"fit_snr"`` (where an
    infinite grid value stands for ``None``: forced photometry only).

    For each value of ``grid``, the fields are detected with it at the ``best`` preset
    and scored as whole catalogues; the value with the highest pooled score is written
    to a copy of the model at ``out``. Parameters as :func:`retune_purity`.

    Returns
    -------
    dict
        Pooled official score for each value of ``grid``.
    """
    if key not in _MEASURE_KEYS:
        raise StreamdetValueError(f"key must be one of {_MEASURE_KEYS}, got {key!r}")
    finite = key != "fit_snr"           # fit_snr: inf stands for None (never fit)
    if not seeds or not grid or any(not 0 <= g or (finite and np.isinf(g)) for g in grid):
        raise StreamdetValueError(f"need seeds and a grid of values >= 0, got {seeds}, {grid}")
    check_output(out, overwrite=overwrite)
    mdl = load_model(model)
    best = np.asarray(mdl.contract.thresholds.get("best", mdl.contract.thresholds["default"]))
    fields = _fields(workdir, freq=freq, seeds=seeds, size=size, offset=offset)
    scores: dict[float, float] = {}
    for value in grid:
        trial = Model(mdl.path, dataclasses.replace(mdl.contract, measure={
            **mdl.contract.measure, key: _stored(value)}), threads=mdl.threads)
        total = 0.0
        for image, truth in fields:
            table, sub = candidate_submission(trial, image, freq=freq,
                                              threshold_min=float(best.min()))
            cut = _cut(table, best)
            total += _score_subset(sub, truth, freq, cut)[0]
        scores[float(value)] = total
    chosen = max(scores, key=lambda v: scores[v])
    _write_contract(model, out, dataclasses.replace(
        mdl.contract, measure={**mdl.contract.measure, key: _stored(chosen)}),
        overwrite=overwrite)
    return scores


_MEASURE_KEYS = ("bmin_resolved", "bmaj_resolved", "fit_snr")


def _stored(value: float) -> float | None:
    """A grid value as the contract stores it: infinity (never) as None."""
    return None if np.isinf(value) else float(value)


def retune_best(model: str | os.PathLike[str], out: str | os.PathLike[str], *, freq: int,
                seeds: Sequence[int], size: int, offset: tuple[float, float],
                workdir: str | os.PathLike[str], min_purity: float = 0.95,
                grid: Sequence[float] = tuple(np.round(np.arange(0.05, 0.951, 0.05), 2)),
                overwrite: bool = False) -> dict[str, float | tuple[float, ...]]:
    """Choose the ``best`` preset on pooled simulated fields; write the model to ``out``.

    The candidates are the model's own ``best`` (a number or one per prior) and each
    global threshold of ``grid``; each cut catalogue is scored as a whole by the official
    scorer on every field. The highest pooled score among the candidates whose pooled
    purity is at least ``min_purity`` is written as ``best`` (and as ``default`` where
    ``default`` was ``best``); the other presets are kept.

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
    if not seeds:
        raise StreamdetValueError("give at least one validation seed")
    check_output(out, overwrite=overwrite)
    mdl = load_model(model)
    th = mdl.contract.thresholds
    own = np.asarray(th.get("best", th["default"]), np.float64)
    candidates: list[np.ndarray] = [own, *(np.asarray(v) for v in values)]
    lowest = min(float(own.min()), min(values))
    totals = np.zeros((len(candidates), 3))  # score, detections, matches
    for image, truth in _fields(workdir, freq=freq, seeds=seeds, size=size, offset=offset):
        table, sub = candidate_submission(mdl, image, freq=freq, threshold_min=lowest)
        for i, cand in enumerate(candidates):
            totals[i] += _score_subset(sub, truth, freq, _cut(table, cand))
    purity = np.divide(totals[:, 2], totals[:, 1], out=np.zeros(len(candidates)),
                       where=totals[:, 1] > 0)
    ok = np.flatnonzero(purity >= min_purity)
    if ok.size == 0:
        raise StreamdetValueError(f"no candidate preset reaches purity {min_purity} on the "
                                  f"fields (best {purity.max():.4f})")
    k = int(ok[np.argmax(totals[ok, 0])])
    chosen = candidates[k]
    preset: float | tuple[float, ...] = (tuple(float(v) for v in chosen) if chosen.ndim
                                         else float(chosen))
    new = {**th, "best": preset}
    if "default" in th and np.array_equal(np.asarray(th["default"]), own):
        new["default"] = preset
    _write_contract(model, out, dataclasses.replace(mdl.contract, thresholds=new),
                    overwrite=overwrite)
    return {"best": preset, "score": float(totals[k, 0]), "purity": float(purity[k]),
            "previous_score": float(totals[0, 0]), "previous_purity": float(purity[0])}


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
    ap.add_argument("--seeds", type=int, nargs="+", default=[3000001, 3000002, 3000003])
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
    mode.add_argument("--best", action="store_true",
                      help="choose the best preset (highest pooled score at --min-purity) "
                           "instead of the purity preset")
    ap.add_argument("--grid", type=float, nargs="+", default=(0.0, 0.25, 0.5, 1.0),
                    help="values tried with --bmin / --bmaj (beams) or --fit-snr "
                         "(default 0 0.25 0.5 1)")
    ap.add_argument("--min-purity", type=float, default=0.95,
                    help="pooled purity the best preset must keep (with --best)")
    args = ap.parse_args(argv)
    if args.best:
        best = retune_best(args.model, args.output, freq=args.freq, seeds=args.seeds,
                          size=args.size, offset=(args.offset[0], args.offset[1]),
                          workdir=args.workdir, min_purity=args.min_purity,
                          overwrite=args.overwrite)
        print(f"best preset -> {best['best']}: score {best['score']:.1f}, purity "
              f"{best['purity']:.4f} (the model's own: {best['previous_score']:.1f}, "
              f"{best['previous_purity']:.4f})")
        return
    if args.bmin or args.bmaj or args.fit_snr:
        key = ("bmin_resolved" if args.bmin else "bmaj_resolved" if args.bmaj
               else "fit_snr")
        scores = retune_measure(args.model, args.output, freq=args.freq, seeds=args.seeds,
                                size=args.size, offset=(args.offset[0], args.offset[1]),
                                workdir=args.workdir, key=key, grid=args.grid,
                                overwrite=args.overwrite)
        print(f"{key}: " + ", ".join(f"{v:g} -> {sc:.1f}" for v, sc in scores.items())
              + f"; chosen {max(scores, key=lambda v: scores[v]):g}")
        return
    res = retune_purity(args.model, args.output, freq=args.freq, seeds=args.seeds,
                        size=args.size, offset=(args.offset[0], args.offset[1]),
                        purity_target=args.purity, workdir=args.workdir,
                        overwrite=args.overwrite)
    print(f"purity preset {res['previous']:.3f} -> {res['purity_threshold']:.3f}: purity "
          f"{res['purity']:.4f} with {res['kept']} detections on {len(args.seeds)} fields")


if __name__ == "__main__":
    main()
