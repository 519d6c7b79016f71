"""The ``streamdet plot`` subcommand: image regions with catalogues, and catalogue diagnostics.

matplotlib is imported only when the command runs (``pip install 'streamdet[plot]'``).
"""

from __future__ import annotations

import argparse
from typing import Any

from ..errors import StreamdetValueError
from ..io._atomic import check_output
from .score import SDC1_FREQS

# defaults of streamdet.catalogue.plot, repeated so that --help does not import matplotlib
MAX_MARKERS = 2000
TRUTH_SNR = 5.0

__all__ = ["add_plot_parser", "run_plot"]


def _figsize(values: list[float] | None) -> tuple[float, float] | None:
    return None if values is None else (values[0], values[1])


_REGION_ONLY = ("max_markers", "min_objectness", "truth_snr", "noise")


def _run_diagnostics(args: argparse.Namespace) -> int:
    from .plot import diagnostics_figure

    if args.truth is None:
        raise StreamdetValueError("--diagnostics needs the truth catalogue: -t TRUTH.txt")
    for name in ("catalogue", "region", "center", "size", "channel"):
        if getattr(args, name) is not None:
            flag = "--" + name if name != "catalogue" else "-c/--catalogue"
            raise StreamdetValueError(f"{flag} is for image plots, not with --diagnostics")
    for name in _REGION_ONLY:
        if getattr(args, name) is not None:
            flag = "--" + name.replace("_", "-")
            raise StreamdetValueError(f"{flag} is for image plots, not with --diagnostics")
    df = diagnostics_figure(args.diagnostics, args.truth, freq=args.freq, image=args.image,
                            thresholds=args.thresholds, radius_arcsec=args.match_radius,
                            train=args.train, title=args.title,
                            figsize=_figsize(args.figsize) or (15.0, 9.0), dpi=args.dpi)
    out = df.save(args.output, overwrite=args.overwrite)
    if not args.quiet:
        band = "given" if df.band_source == "given" else f"from {df.band_source}"
        print(f"wrote {out} (diagnostics of {args.diagnostics} against {args.truth}, "
              f"{df.freq} MHz, {band})")
    return 0


def _run_region(args: argparse.Namespace) -> int:
    from .plot import region_figure

    if args.image is None:
        raise StreamdetValueError("give IMAGE (a Zarr store or FITS file), or --diagnostics "
                                  "CATALOGUE")
    if (args.center is None) != (args.size is None):
        raise StreamdetValueError("--center RA DEC and --size ARCSEC go together")
    if args.size is not None and not 1 <= len(args.size) <= 2:
        raise StreamdetValueError(f"--size takes one side or WIDTH HEIGHT in arcsec, got "
                                  f"{len(args.size)} values")
    if args.freq is not None:
        raise StreamdetValueError("--freq is for --diagnostics; an image plot takes the band "
                                  "from the image")
    markers = {k: getattr(args, k) for k in _REGION_ONLY if getattr(args, k) is not None}
    rf = region_figure(args.image, catalogue=args.catalogue, truth=args.truth,
                       region=args.region, center=args.center, size=args.size,
                       channel=args.channel, stretch=args.stretch,
                       percentiles=tuple(args.percentiles), vmin=args.vmin, vmax=args.vmax,
                       cmap=args.cmap, title=args.title, figsize=_figsize(args.figsize),
                       dpi=args.dpi, max_side=args.max_side, apparent=not args.intrinsic,
                       **markers)
    out = rf.save(args.output, overwrite=args.overwrite)
    if not args.quiet:
        r = rf.region
        parts = [f"x {r.x0}:{r.x1}, y {r.y0}:{r.y1}" + (" (cut to the image)" if r.clipped
                                                       else "")]
        if rf.step > 1:
            parts.append(f"block mean {rf.step}x{rf.step}")
        for key in ("detections", "truth"):
            if key in rf.selections:
                parts.append(rf.selections[key].label(key))
        print(f"wrote {out} ({', '.join(parts)})")
    return 0


def run_plot(args: argparse.Namespace) -> int:
    """Handle ``streamdet plot``: a region figure, or ``--diagnostics``."""
    from .plot import _figure_format

    _figure_format(args.output)
    check_output(args.output, overwrite=args.overwrite)
    if args.diagnostics is not None:
        return _run_diagnostics(args)
    return _run_region(args)


def add_plot_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``plot`` to a CLI.

    ``streamdet plot IMAGE [-c CATALOGUE] [-t TRUTH] [--region X0 Y0 X1 Y1 | --center RA
    DEC --size ARCSEC] [--max-markers N] [--truth-snr K] -o OUT.png`` and ``streamdet plot
    [IMAGE] --diagnostics CATALOGUE.ecsv -t TRUTH.txt [--freq F] -o OUT.png`` (the band
    from ``--freq``, IMAGE's header or the catalogue's, required where none says).

    Parameters
    ----------
    subparsers : argparse._SubParsersAction
        What ``ArgumentParser.add_subparsers()`` returned.

    Returns
    -------
    argparse.ArgumentParser
        The new subparser; its ``func`` default is :func:`run_plot`.
    """
    p: argparse.ArgumentParser = subparsers.add_parser(
        "plot", help="draw an image region with catalogues, or catalogue diagnostics",
        description="Draw a region of an image (read lazily) on RA/Dec axes with detections "
        "and truth overlaid, or (--diagnostics) the official score and purity against the "
        "objectness threshold, parameter residuals of matched sources and source counts. "
        "Needs matplotlib (pip install 'streamdet[plot]').")
    p.add_argument("image", nargs="?", default=None, metavar="IMAGE",
                   help="Zarr store or FITS image; with --diagnostics, the image the "
                   "catalogue was made from (its header gives the band)")
    p.add_argument("-o", "--output", required=True, metavar="OUT.png",
                   help="figure to write (.png, .pdf or .svg)")
    p.add_argument("-c", "--catalogue", metavar="CATALOGUE",
                   help="detections to overlay (SDC1 .txt, or .ecsv/.fits/.parquet table)")
    p.add_argument("-t", "--truth", metavar="TRUTH",
                   help="truth catalogue (SDC1 .txt or a table); required with --diagnostics")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--region", type=float, nargs=4, metavar=("X0", "Y0", "X1", "Y1"),
                       help="region in pixels, 0-based, X1/Y1 exclusive (default: whole image)")
    where.add_argument("--center", type=float, nargs=2, metavar=("RA", "DEC"),
                       help="region centre in degrees (with --size)")
    p.add_argument("--size", type=float, nargs="+", metavar="ARCSEC",
                   help="region side, or WIDTH HEIGHT, in arcsec (with --center)")
    p.add_argument("--channel", type=int, metavar="K", help="plane of a cube")
    p.add_argument("--stretch", choices=("asinh", "linear", "log"), default="asinh",
                   help="display stretch")
    p.add_argument("--percentiles", type=float, nargs=2, default=(0.5, 99.9),
                   metavar=("LOW", "HIGH"), help="display limits as percentiles of the pixels")
    p.add_argument("--vmin", type=float, help="lower display limit (Jy/beam)")
    p.add_argument("--vmax", type=float, help="upper display limit (Jy/beam)")
    p.add_argument("--cmap", default="gray", help="matplotlib colour map")
    p.add_argument("--intrinsic", action="store_true",
                   help="draw the catalogue sizes as they are (default: convolved with the "
                   "restoring beam, as sources appear in the image)")
    p.add_argument("--max-side", type=int, default=2048, metavar="N",
                   help="show larger regions as block means of at most N pixels a side "
                   "(default: %(default)s)")
    p.add_argument("--max-markers", type=int, default=None, metavar="N",
                   help=f"draw at most N sources of each catalogue in the region, the "
                   f"brightest (by flux, else objectness); the legend says so; 0 draws all "
                   f"(default: {MAX_MARKERS})")
    p.add_argument("--min-objectness", type=float, default=None, metavar="T",
                   help="draw only detections with objectness >= T")
    p.add_argument("--truth-snr", type=float, default=None, metavar="K",
                   help="draw only true sources whose expected peak (flux, size convolved "
                   "with the beam) is >= K times the noise (1.4826 MAD of the pixels, or "
                   f"--noise); 0 draws all (default: {TRUTH_SNR:g})")
    p.add_argument("--noise", type=float, default=None, metavar="SIGMA",
                   help="noise in Jy/beam for --truth-snr (default: measured on the pixels)")
    p.add_argument("--diagnostics", metavar="CATALOGUE",
                   help="plot diagnostics of a full streamdet table (.ecsv/.fits/.parquet with "
                   "objectness) against -t TRUTH instead of an image")
    p.add_argument("--freq", type=int, default=None, choices=SDC1_FREQS,
                   help="band in MHz of --diagnostics (scorer, default match radius); default: "
                   "from IMAGE's header, else the catalogue's (freq_hz, which detect "
                   "writes); required where nothing says (SDC1 text files carry no band)")
    p.add_argument("--thresholds", type=int, default=12, metavar="N",
                   help="number of objectness thresholds scored")
    p.add_argument("--match-radius", type=float, metavar="ARCSEC",
                   help="match radius of the residuals (default: the band's beam FWHM)")
    p.add_argument("--train", action="store_true",
                   help="score inside the SDC1 training box instead of outside it")
    p.add_argument("--title", help="figure title")
    p.add_argument("--figsize", type=float, nargs=2, metavar=("W", "H"),
                   help="figure size in inches")
    p.add_argument("--dpi", type=float, default=100.0, help="dots per inch")
    p.add_argument("--overwrite", action="store_true", help="replace an existing figure")
    p.add_argument("-q", "--quiet", action="store_true", help="no summary")
    p.set_defaults(func=run_plot)
    return p
