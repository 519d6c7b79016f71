"""The ``streamdet export`` subcommand (imports torch only when it runs)."""

from __future__ import annotations

import argparse
import importlib.util
from typing import Any

from streamdet.errors import StreamdetError, StreamdetValueError

from ._cianna_cli import add_cianna_arguments, run_cianna_export

__all__ = ["add_export_parser", "run_export"]

TRAIN_EXTRA_HINT = "install the train extra: pip install streamdet[train]"


def _require_train_extra() -> None:
    missing = [m for m in ("torch", "onnx") if importlib.util.find_spec(m) is None]
    if missing:
        raise StreamdetError(f"`streamdet export` needs {' and '.join(missing)}; "
                             f"{TRAIN_EXTRA_HINT}")


def run_export(args: argparse.Namespace) -> int:
    """Handle ``streamdet export``: checkpoint (or CIANNA file) -> verified ONNX detector."""
    fp16 = bool(getattr(args, "fp16", False))
    if getattr(args, "from_cianna", None) is not None:
        if fp16:
            raise StreamdetValueError("--fp16 exports a CHECKPOINT; it does not apply to "
                                      "--from-cianna")
        if args.checkpoint is not None:
            raise StreamdetValueError("give either CHECKPOINT or --from-cianna, not both")
        return run_cianna_export(args)
    if args.checkpoint is None:
        raise StreamdetValueError("streamdet export needs CHECKPOINT or --from-cianna NET.dat")
    _require_train_extra()
    try:
        from .onnx_export import export_onnx
    except ImportError as exc:
        raise StreamdetError(f"`streamdet export` could not import its dependencies ({exc}); "
                             f"{TRAIN_EXTRA_HINT}") from exc

    contract = export_onnx(args.checkpoint, args.output, opset=args.opset,
                           overwrite=args.overwrite, precision="fp16" if fp16 else "fp32")
    if not args.quiet:
        check = "ONNX Runtime output verified against PyTorch"
        if fp16:
            r = contract.training["fp16_check"]
            check = (f"FP16 weights and compute, float32 input and output; FP32 graph verified "
                     f"against PyTorch, FP16 against FP32 on {len(r['inputs'])} batches of "
                     f"random tiles: grid max abs difference {r['max_abs']:.2g}, max relative "
                     f"{r['max_rel']:.2g} (tolerance {r['atol']:g})")
        print(f"wrote {args.output} (model {contract.name!r}: stride {contract.stride[-1]} px, "
              f"receptive field {contract.receptive_field[-1]} px, halo {contract.halo[-1]} px, "
              f"{contract.nbox} priors; {check})")
    return 0


def add_export_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``export CHECKPOINT -o MODEL.onnx [--opset N] [--fp16] [--overwrite] [-q]`` to a CLI.

    Parameters
    ----------
    subparsers : argparse._SubParsersAction
        What ``ArgumentParser.add_subparsers()`` returned.

    Returns
    -------
    argparse.ArgumentParser
        The new subparser; its ``func`` default is :func:`run_export`.
    """
    p: argparse.ArgumentParser = subparsers.add_parser(
        "export", help="export a trained checkpoint to an ONNX detector (needs torch)",
        description="Export a PyTorch checkpoint written by export.save_checkpoint to one "
        "self-describing ONNX file carrying the streamdet model contract; ONNX Runtime's "
        "output is checked against PyTorch before the file is written. "
        f"Needs the train extra ({TRAIN_EXTRA_HINT}).")
    p.add_argument("checkpoint", metavar="CHECKPOINT", nargs="?", default=None,
                   help="checkpoint file (.pt) written by streamdet train / export.save_checkpoint")
    p.add_argument("-o", "--output", required=True, metavar="MODEL.onnx",
                   help="ONNX file to write")
    p.add_argument("--opset", type=int, default=17, metavar="N", help="ONNX opset (>= 13)")
    p.add_argument("--fp16", action="store_true",
                   help="float16 weights and compute (float32 input and output), for GPUs; "
                   "checked against the float32 export on random tiles, refused if the "
                   "activated grid differs by more than 0.02")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    p.add_argument("-q", "--quiet", action="store_true", help="no summary")
    add_cianna_arguments(p)
    p.set_defaults(func=run_export)
    return p
