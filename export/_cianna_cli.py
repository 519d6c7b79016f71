"""Command-line options of ``streamdet export --from-cianna`` (needs onnx, not torch).

``add_cianna_arguments`` adds the options to the ``export`` subparser and
``run_cianna_export`` handles them::

    streamdet export --from-cianna NET.dat -o MODEL.onnx [--preset sdc1-cianna2024]
        [--name NAME] [--param-channels a,b,c] [--contract FIELDS.json]
        [--pixel-scale ARCSEC] [--beam BMAJ BMIN] [--freq-mhz MHZ]
        [--tile PX] [--overlap PX] [--threshold T[,T...]] [--opset N] [--overwrite] [-q]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
from pathlib import Path
from typing import Any

from streamdet.errors import StreamdetError, StreamdetFileNotFoundError, StreamdetValueError

__all__ = ["add_cianna_arguments", "cianna_overrides", "run_cianna_export"]

_PRESET_NAMES = ("sdc1-cianna2024",)


def add_cianna_arguments(parser: argparse.ArgumentParser, *, with_output: bool = False
                         ) -> argparse.ArgumentParser:
    """Add the ``--from-cianna`` options to ``parser`` (the ``export`` subparser).

    Parameters
    ----------
    parser : argparse.ArgumentParser
        Parser to extend; it is expected to define ``-o/--output``, ``--opset``,
        ``--overwrite`` and ``-q/--quiet`` already (the ``export`` subparser does).
    with_output : bool
        Also add those four options (for a standalone parser).

    Returns
    -------
    argparse.ArgumentParser
        ``parser``.
    """
    if with_output:
        parser.add_argument("-o", "--output", required=True, metavar="MODEL.onnx",
                            help="ONNX file to write")
        parser.add_argument("--opset", type=int, default=17, metavar="N",
                            help="ONNX opset (13 to 17 for CIANNA networks)")
        parser.add_argument("--overwrite", action="store_true",
                            help="replace an existing output")
        parser.add_argument("-q", "--quiet", action="store_true", help="no summary")
    g = parser.add_argument_group(
        "CIANNA import", "Convert a network saved by CIANNA (YOLO-CIANNA, binary or text "
        "save file) into an ONNX detector; needs onnx only (no torch). What the save file "
        "does not hold comes from --preset and the options below.")
    g.add_argument("--from-cianna", metavar="NET.dat", default=None,
                   help="CIANNA network file (save(..., bin=1) or bin=0) to import")
    g.add_argument("--preset", choices=_PRESET_NAMES, default=None,
                   help="contract preset: sdc1-cianna2024 = the published YOLO-CIANNA SDC1 "
                   "configuration (normalisation, parameters, 512 px tiles, thresholds)")
    g.add_argument("--contract", metavar="FIELDS.json", default=None,
                   help="JSON object of contract fields (name, params, normalisation, tile, "
                   "overlap, thresholds, nms, param_channels, ...); options below win")
    g.add_argument("--name", default=None, help="model name")
    g.add_argument("--param-channels", metavar="A,B,...", default=None,
                   help="names of the network's parameter channels, comma-separated")
    g.add_argument("--pixel-scale", type=float, metavar="ARCSEC", default=None,
                   help="pixel scale the network was trained for")
    g.add_argument("--beam", type=float, nargs=2, metavar=("BMAJ", "BMIN"), default=None,
                   help="restoring beam FWHM (arcsec) the network was trained for")
    g.add_argument("--freq-mhz", type=float, metavar="MHZ", default=None,
                   help="observing frequency the network was trained for")
    g.add_argument("--tile", type=int, metavar="PX", default=None,
                   help="suggested inference tile side")
    g.add_argument("--overlap", type=int, metavar="PX", default=None,
                   help="suggested tile overlap")
    g.add_argument("--threshold", metavar="T[,T...]", default=None,
                   help="default objectness threshold: one value or one per prior")
    return parser


def _floats(text: str, what: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",")]
    except ValueError:
        raise StreamdetValueError(f"{what} {text!r} must be numbers separated by commas"
                                  ) from None


def cianna_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """Contract fields given by the ``--from-cianna`` options (``--contract`` first)."""
    fields: dict[str, Any] = {}
    if args.contract is not None:
        path = Path(args.contract)
        if not path.is_file():
            raise StreamdetFileNotFoundError(f"contract fields file {str(path)!r} does not "
                                             f"exist")
        try:
            doc = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise StreamdetValueError(f"{str(path)!r} is not valid JSON: {exc}") from None
        if not isinstance(doc, dict):
            raise StreamdetValueError(f"{str(path)!r} must hold a JSON object of contract "
                                      f"fields")
        fields.update(doc)
    if args.name is not None:
        fields["name"] = args.name
    if args.param_channels is not None:
        fields["param_channels"] = [c.strip() for c in args.param_channels.split(",")]
    if args.pixel_scale is not None:
        fields["pixel_scale_arcsec"] = args.pixel_scale
    if args.beam is not None:
        fields["beam_arcsec"] = list(args.beam)
    if args.freq_mhz is not None:
        fields["freq_mhz"] = args.freq_mhz
    if args.tile is not None:
        fields["tile"] = [args.tile, args.tile]
    if args.overlap is not None:
        fields["overlap"] = [args.overlap, args.overlap]
    if args.threshold is not None:
        values = _floats(args.threshold, "--threshold")
        thresholds = dict(fields.get("thresholds") or {})
        thresholds["default"] = values[0] if len(values) == 1 else values
        fields["thresholds"] = thresholds
    return fields


def run_cianna_export(args: argparse.Namespace) -> int:
    """Handle ``streamdet export --from-cianna``: CIANNA save file -> ONNX; return 0."""
    if importlib.util.find_spec("onnx") is None:
        raise StreamdetError("`streamdet export --from-cianna` needs the onnx package; "
                             "install the train extra: pip install streamdet[train]")
    from streamdet.engine.contract import load_model

    from .cianna import import_cianna

    out = import_cianna(args.from_cianna, args.output, preset=args.preset,
                        overwrite=bool(getattr(args, "overwrite", False)),
                        opset=int(getattr(args, "opset", 17)), **cianna_overrides(args))
    if not getattr(args, "quiet", False):
        c = load_model(out, providers=["CPUExecutionProvider"]).contract
        fmt = c.training.get("cianna_format", "?")
        print(f"wrote {out} (model {c.name!r} from CIANNA {fmt} file {args.from_cianna}: "
              f"stride {c.stride[-1]} px, receptive field {c.receptive_field[-1]} px, halo "
              f"{c.halo[-1]} px, {c.nbox} priors, parameters {list(c.param_names)})")
    return 0
