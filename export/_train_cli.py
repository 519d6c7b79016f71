"""The ``streamdet train`` subcommand (imports torch only when it runs)."""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
from pathlib import Path
from typing import Any

from streamdet.errors import StreamdetError, StreamdetValueError

__all__ = ["add_train_parser", "run_train"]

TRAIN_EXTRA_HINT = "install the train extra: pip install streamdet[train]"


def _config(args: argparse.Namespace) -> Any:
    from .train import TrainConfig

    config = TrainConfig.from_json(args.config) if args.config else TrainConfig()
    images, truths = list(args.image or []), list(args.truth or [])
    if len(images) != len(truths):
        raise StreamdetValueError(
            f"--image and --truth must come in pairs; got {len(images)} image(s) and "
            f"{len(truths)} truth catalogue(s)")
    for path in (*images, *truths, *([args.pb] if args.pb else [])):
        if not Path(path).exists():
            raise StreamdetValueError(f"training input {path!r} does not exist")
    overrides: dict[str, Any] = {}
    if images:
        overrides["images"] = (*config.images, *((str(Path(i).resolve()), str(Path(t).resolve()))
                                                 for i, t in zip(images, truths, strict=True)))
    for name in ("steps", "fields", "seed", "device", "threads", "batch"):
        value = getattr(args, name)
        if value is not None:
            overrides[name] = value
    if args.pb:
        overrides["pb"] = str(Path(args.pb).resolve())
    return dataclasses.replace(config, **overrides) if overrides else config


def run_train(args: argparse.Namespace) -> int:
    """Handle ``streamdet train``: train in the work directory, export its best model; return 0."""
    missing = [m for m in ("torch", "onnx") if importlib.util.find_spec(m) is None]
    if missing:
        raise StreamdetError(f"`streamdet train` needs {' and '.join(missing)}; "
                             f"{TRAIN_EXTRA_HINT}")
    try:
        from .train import train
    except ImportError as exc:
        raise StreamdetError(f"`streamdet train` could not import its dependencies ({exc}); "
                             f"{TRAIN_EXTRA_HINT}") from exc
    config = _config(args)
    best = train(config, args.workdir, resume=args.resume, quiet=True if args.quiet else None)
    if not args.quiet:
        vals = [json.loads(line) for line in
                (Path(args.workdir) / "log.jsonl").read_text(encoding="utf-8").splitlines()
                if '"kind": "val"' in line]
        top = max(vals, key=lambda r: r["score"]) if vals else None
        what = (f"best validation score {top['score']:.1f} at step {top['step']} "
                f"(purity {top['purity']:.3f}, scorer {top['scorer']})" if top else
                "no validation")
        print(f"trained {config.steps} steps in {args.workdir}: {what}; "
              f"checkpoint {best}, model {Path(args.workdir) / 'model.onnx'}")
    return 0


def add_train_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``train --workdir DIR [--config C] [--steps N] [--resume] [--image I --truth T]...``.

    Parameters
    ----------
    subparsers : argparse._SubParsersAction
        What ``ArgumentParser.add_subparsers()`` returned.

    Returns
    -------
    argparse.ArgumentParser
        The new subparser; its ``func`` default is :func:`run_train`.
    """
    p: argparse.ArgumentParser = subparsers.add_parser(
        "train", help="train a detector on simulated fields and/or labelled images (needs torch)",
        description="Train a YOLO-CIANNA-style detector: simulated SDC1-like fields (cached in "
        "the work directory) and any FITS images with SDC1-format truth catalogues; validate "
        "with the SDC1 score on a held-out simulated field, keep the best checkpoint "
        "(DIR/best.pt) and export it (DIR/model.onnx) with 'best' and 'purity' objectness "
        f"threshold presets. Needs the train extra ({TRAIN_EXTRA_HINT}).")
    p.add_argument("--workdir", required=True, metavar="DIR",
                   help="work directory (fields, log.jsonl, checkpoints, model.onnx)")
    p.add_argument("--config", metavar="CONFIG.json",
                   help="training config (JSON object of TrainConfig fields, e.g. "
                   "configs/sdc1_560.json); default: the built-in defaults")
    p.add_argument("--steps", type=int, default=None, metavar="N", help="training steps")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in DIR from its last saved state")
    p.add_argument("--image", action="append", metavar="IMG.fits",
                   help="labelled training image (repeat; each with a --truth)")
    p.add_argument("--truth", action="append", metavar="TRUTH.txt",
                   help="SDC1-format truth catalogue of the matching --image")
    p.add_argument("--pb", metavar="PB.fits", help="primary beam of the --image files")
    p.add_argument("--fields", type=int, default=None, metavar="N",
                   help="simulated training fields (0: train on --image only)")
    p.add_argument("--batch", type=int, default=None, metavar="N", help="cutouts per step")
    p.add_argument("--seed", type=int, default=None, metavar="S", help="random seed")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default=None,
                   help="torch device (default: CUDA when available)")
    p.add_argument("--threads", type=int, default=None, metavar="N", help="torch CPU threads")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar or summary")
    p.set_defaults(func=run_train)
    return p
