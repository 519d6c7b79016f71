"""The ``streamdet`` command line: a thin layer over the Python API."""

from __future__ import annotations

import argparse
import os
import pathlib
import re
import sys
import warnings
from collections.abc import Callable, Sequence
from typing import Any

from ._version import __version__
from .errors import StreamdetError, StreamdetValueError

__all__ = ["main"]

Handler = Callable[[argparse.Namespace], int]


_CUBE_ONLY = ("shape", "channel_offset", "freq_start", "centre", "cube_noise", "continuum",
              "no_galaxies", "slab_channels")
_IMAGE_ONLY = ("size", "freq", "offset", "pb", "sidelobes", "no_faint", "no_zero_mean",
               "noise_scale", "agn_fraction")


def _given(args: argparse.Namespace, names: Sequence[str]) -> list[str]:
    """The options among ``names`` given a value (defaults are None or False)."""
    return ["--" + n.replace("_", "-") for n in names if getattr(args, n) not in (None, False)]


def _cmd_simulate(args: argparse.Namespace) -> int:
    if args.cube:
        return _simulate_cube(args)
    wrong = _given(args, _CUBE_ONLY)
    if wrong:
        raise StreamdetValueError(f"{', '.join(wrong)} {'applies' if len(wrong) == 1 else 'apply'}"
                                  " only with --cube")
    args.size = 2048 if args.size is None else args.size
    args.freq = 560 if args.freq is None else args.freq
    args.offset = (0.0, 0.0) if args.offset is None else args.offset
    args.noise_scale = 1.0 if args.noise_scale is None else args.noise_scale
    return _simulate_image(args)


def _simulate_cube(args: argparse.Namespace) -> int:
    from .sim.simulate_cube import SDC2_NOISE, simulate_cube

    wrong = _given(args, _IMAGE_ONLY)
    if wrong:
        raise StreamdetValueError(f"{', '.join(wrong)} {'does' if len(wrong) == 1 else 'do'} "
                                  "not apply to a cube (--cube)")
    noise = SDC2_NOISE if args.cube_noise is None else args.cube_noise
    shape = (256, 64, 64) if args.shape is None else tuple(args.shape)
    truth = simulate_cube(
        args.output, truth=args.truth, shape=shape, seed=args.seed,
        channel_offset=0 if args.channel_offset is None else args.channel_offset,
        freq_start=args.freq_start,
        centre=(180.0, -30.0) if args.centre is None else (args.centre[0], args.centre[1]),
        noise=0.0 if args.no_noise else noise, continuum=args.continuum,
        galaxies=not args.no_galaxies, slab_channels=args.slab_channels,
        overwrite=args.overwrite, quiet=args.quiet or None)
    if not args.quiet:
        nz, ny, nx = shape
        print(f"wrote {args.output} ({nx}x{ny}x{nz} voxels, {len(truth)} galaxies)"
              + (f" and truth {args.truth}" if args.truth else ""))
    return 0


def _simulate_image(args: argparse.Namespace) -> int:
    from .io._atomic import check_output
    from .sim.simulate import simulate

    if args.pb:
        from .sim.simulate import write_primary_beam

        check_output(args.pb, overwrite=args.overwrite)
    truth = simulate(
        args.output,
        truth=args.truth,
        size=args.size,
        freq=args.freq,
        seed=args.seed,
        offset=(args.offset[0], args.offset[1]),
        noise=not args.no_noise,
        sidelobes=args.sidelobes,
        faint=not args.no_faint,
        zero_mean=not args.no_zero_mean,
        noise_scale=args.noise_scale,
        agn_fraction=args.agn_fraction,
        overwrite=args.overwrite,
        quiet=args.quiet or None,
    )
    if args.pb:
        write_primary_beam(args.pb, freq=args.freq, overwrite=args.overwrite)
    if not args.quiet:
        print(f"wrote {args.output} ({args.size}x{args.size}, {args.freq} MHz, "
              f"{len(truth)} sources)" + (f" and truth {args.truth}" if args.truth else ""))
    return 0


def _cmd_convert(args: argparse.Namespace) -> int:
    from .io.convert import convert

    report = convert(
        args.input,
        args.output,
        chunks=args.chunks,
        shard=args.shard,
        codec=args.codec,
        hdu=args.hdu,
        overwrite=args.overwrite,
        verify=args.verify,
        quiet=args.quiet or None,
    )
    if not args.quiet:
        print(report.summary())
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    from .io.image import info

    print(info(args.store).summary())
    return 0


def _parse_threshold(text: str | None) -> float | str | list[float] | None:
    if text is None:
        return None
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        return text
    return values[0] if len(values) == 1 else values


_FORMATS = {".txt": "sdc1", ".dat": "sdc1", ".ecsv": "ecsv", ".fits": "fits", ".fit": "fits",
            ".parquet": "parquet"}


def _catalogue_format(output: str, given: str | None) -> str:
    """The format of a catalogue: ``--format``, else from the extension (which must be
    known: nothing is written in a format the name does not say)."""
    if given:
        return given
    from pathlib import Path

    suffix = Path(output).suffix.lower()
    if suffix not in _FORMATS:
        known = ", ".join(f"{s} ({f})" for s, f in _FORMATS.items())
        raise StreamdetValueError(
            f"cannot tell the catalogue format of {output!r} from its extension "
            f"{suffix or '(none)'!r}: known extensions are {known}; or pass --format")
    return _FORMATS[suffix]


def _cmd_detect(args: argparse.Namespace) -> int:
    import contextlib
    from pathlib import Path

    from .io._atomic import check_output, writing

    fmt = _catalogue_format(args.output, args.format)
    outputs = [args.output] + ([args.regions] if args.regions else [])
    if args.regions and Path(args.regions).resolve() == Path(args.output).resolve():
        raise StreamdetValueError(f"--regions {args.regions!r} is the catalogue -o "
                                  f"{args.output!r}; name another file")
    inputs = [p for p in (args.input, args.pb, args.model) if p]
    for out in outputs:  # before the locks: a missing directory says so, not the lock file
        check_output(out, overwrite=args.overwrite, inputs=inputs)
    with contextlib.ExitStack() as stack:
        # One writer per output for the whole run: a second detect onto the same
        # catalogue is refused at once, not after its detection (or silently replaced).
        for out in outputs:
            stack.enter_context(writing(out))
        for out in outputs:  # again, under the locks
            check_output(out, overwrite=args.overwrite, inputs=inputs)
        return _detect_locked(args, fmt)


def _parts_of(args: argparse.Namespace) -> pathlib.Path:
    """The per-window parts directory beside ``args.output``; says what --resume finds."""
    from .engine._resume import parts_dir

    parts = parts_dir(args.output)
    if args.resume and not args.quiet:
        kept = len(list(parts.glob("window-*.npz"))) if parts.is_dir() else 0
        print(f"streamdet detect: resuming from {kept} finished windows in {parts}"
              if kept else f"streamdet detect: --resume: no finished windows in {parts}; "
              f"computing every window", file=sys.stderr)
    return parts


def _say_parts_kept(parts: pathlib.Path) -> None:
    if parts.is_dir() and any(parts.glob("window-*.npz")):
        print(f"streamdet detect: the finished windows are kept in {parts}; run the "
              f"same command with --resume to compute only the others", file=sys.stderr)


def _cluster_of(args: argparse.Namespace) -> tuple[Any, str | None, list[int] | None]:
    """``--workers`` / ``--scheduler`` / ``--gpus`` / ``--device``: the cluster to open (a
    context giving the client, or None), the device, the GPUs."""
    import contextlib

    scale_out = args.workers is not None or args.scheduler is not None or args.gpus
    cluster: Any = contextlib.nullcontext()
    gpus = None
    if scale_out:  # distributed is imported only then
        from .engine._cluster import open_client, parse_gpus

        if args.gpus and args.scheduler:
            raise StreamdetValueError(
                "--gpus starts a local cluster of one worker per GPU; the workers of an "
                "existing cluster (--scheduler) own their GPUs (dask-cuda pins one to each): "
                "pass --device cuda instead")
        gpus = parse_gpus(args.gpus)
        cluster = open_client(workers=args.workers, scheduler=args.scheduler, gpus=gpus,
                              timeout=args.worker_timeout)
    device = _detect_device(args.device, gpus)
    if device is not None and args.scheduler is None:
        from .engine._providers import resolve_device

        resolve_device(device)  # this machine runs it: a missing provider is said at once
    return cluster, device, gpus


def _detect_locked(args: argparse.Namespace, fmt: str) -> int:
    from .catalogue.outputs import write_catalogue, write_regions
    from .engine._resume import remove_parts
    from .engine.detect import detect
    from .errors import WCSMissingError
    from .io.image import open_image

    image = open_image(args.input)
    if len(image.shape) == 3:
        return _detect_cube_locked(args, fmt, image)
    if fmt == "sdc2":
        raise StreamdetValueError(f"{args.input} is an image (shape {image.shape}): the SDC2 "
                                  "format is for cube catalogues; choose sdc1, ecsv, fits or "
                                  "parquet")
    if args.window is not None:
        raise StreamdetValueError("--window is for cubes; for an image give --chunk")
    if fmt == "sdc1" and image.celestial_wcs is None:
        raise WCSMissingError(f"{args.input} has no celestial WCS: an SDC1 catalogue needs "
                              "RA/Dec; choose --format ecsv, fits or parquet for pixel "
                              "positions")
    cluster, device, gpus = _cluster_of(args)
    parts = _parts_of(args)
    with cluster as client:
        if not args.quiet:
            if client is not None:
                from .engine._cluster import describe

                print(f"streamdet detect: {describe(client)}", file=sys.stderr)
            print(f"streamdet detect: device {_device_line(device, client, gpus)}",
                  file=sys.stderr)
        try:
            table = detect(
                image,
                model=args.model,
                chunk=args.chunk,
                halo=args.halo,
                batch=args.batch,
                threads=args.threads,
                threshold=_parse_threshold(args.threshold),
                pb=args.pb,
                refine=not args.no_refine,
                measure=not args.no_measure,
                client=client,
                device=device,
                parts=parts,
                resume=args.resume,
                worker_timeout=args.worker_timeout,
                quiet=args.quiet or None,
            )
        except (KeyboardInterrupt, StreamdetError):
            _say_parts_kept(parts)
            raise
    if image.freq_hz is not None:  # the band, for score
        table.meta.setdefault("freq_hz", float(image.freq_hz))
    write_catalogue(table, args.output, format=fmt,  # type: ignore[arg-type]
                    overwrite=args.overwrite)
    if args.regions:
        write_regions(table, args.regions, overwrite=args.overwrite)
    if not args.keep_parts:
        remove_parts(parts)
    if not args.quiet:
        print(f"{len(table)} sources -> {args.output} ({fmt})"
              + (f", regions -> {args.regions}" if args.regions else "")
              + (f", per-window parts kept in {parts}" if args.keep_parts else ""))
    return 0


# options of detect that the cube path does not take (yet), with their defaults
_NOT_FOR_CUBES = (("chunk", None, "--chunk (give --window Z,Y,X)"), ("batch", None, "--batch"),
                  ("pb", None, "--pb"), ("regions", None, "--regions"),
                  ("no_refine", False, "--no-refine"))


def _parse_axes(text: str | None, what: str) -> tuple[int, int, int] | None:
    """``Z,Y,X`` (or one N for all three) as three integers."""
    if text is None:
        return None
    try:
        vals = [int(v) for v in text.split(",")]
    except ValueError:
        vals = []
    if len(vals) == 1:
        vals *= 3
    if len(vals) != 3 or min(vals) < 1:
        raise StreamdetValueError(f"{what} must be Z,Y,X (three positive integers) or one "
                                  f"integer, got {text!r}")
    return (vals[0], vals[1], vals[2])


def _detect_cube_locked(args: argparse.Namespace, fmt: str, image: Any) -> int:
    """``streamdet detect`` on a cube: the 3D path (:func:`streamdet.detect_cube`)."""
    from .catalogue.outputs import write_catalogue
    from .engine.detect_cube import detect_cube

    refused = [flag for name, default, flag in _NOT_FOR_CUBES
               if getattr(args, name, default) not in (default, [])]
    if refused:
        raise StreamdetValueError(f"{args.input} is a cube: {', '.join(refused)} "
                                  f"{'is' if len(refused) == 1 else 'are'} not available for "
                                  "cube detection")
    if fmt == "sdc1":
        if args.format:
            raise StreamdetValueError(f"{args.input} is a cube: the SDC1 format is for images; "
                                      "choose --format sdc2, ecsv, fits or parquet")
        fmt = "sdc2"        # .txt / .dat name a cube's SDC2 submission
    window = _parse_axes(args.window, "--window")
    cluster, device, gpus = _cluster_of(args)
    with cluster as client:
        if not args.quiet:
            print(f"streamdet detect: cube {tuple(image.shape)} (channels, y, x)",
                  file=sys.stderr)
            if client is not None:
                from .engine._cluster import describe

                print(f"streamdet detect: {describe(client)}", file=sys.stderr)
                print(f"streamdet detect: device {_device_line(device, client, gpus)}",
                      file=sys.stderr)
        parts = _parts_of(args)
        try:
            table = detect_cube(image, model=args.model, window=window, halo=args.halo,
                                threshold=_parse_threshold(args.threshold),
                                threads=args.threads, device=device or "auto", client=client,
                                worker_timeout=args.worker_timeout, parts=parts,
                                resume=args.resume, measure=not args.no_measure)
        except (KeyboardInterrupt, StreamdetError):
            _say_parts_kept(parts)
            raise
    write_catalogue(table, args.output, format=fmt,  # type: ignore[arg-type]
                    overwrite=args.overwrite)
    if not args.keep_parts:
        from .engine._resume import remove_parts

        remove_parts(parts)
    if not args.quiet:
        print(f"{len(table)} sources -> {args.output} ({fmt})")
    return 0


def _detect_device(device: str | None, gpus: list[int] | None) -> str | None:
    """``--device``, with ``--gpus``: a GPU kind (``auto`` becomes ``cuda``; ``cpu``
    refused)."""
    if not gpus:
        return device
    kind = (device or "auto").strip().lower()
    if kind == "cpu":
        raise StreamdetValueError("--gpus runs one worker per GPU: it cannot go with "
                                  "--device cpu (leave --gpus out to run on the CPU)")
    if ":" in kind:
        raise StreamdetValueError(f"--gpus assigns the GPUs itself: give --device "
                                  f"{kind.split(':')[0]} without an index")
    return "cuda" if kind == "auto" else kind


def _device_line(device: str | None, client: Any, gpus: list[int] | None) -> str:
    """What runs the model, in words (the workers' choice where a cluster runs it)."""
    from .engine._providers import resolve_device

    if client is not None:
        where = f" on GPUs {','.join(map(str, gpus))}, one per worker" if gpus else ""
        return f"{device or 'auto'}{where}, chosen by each worker"
    return resolve_device(device or "auto")[1]


def _cmd_score(args: argparse.Namespace) -> int:
    if args.sdc2:
        wrong = _given(args, ("freq", "train"))
        if wrong:
            raise StreamdetValueError(f"{', '.join(wrong)} {'does' if len(wrong) == 1 else 'do'}"
                                      " not apply to SDC2 scoring (--sdc2)")
        from .catalogue.sdc2 import score_sdc2

        print(score_sdc2(args.catalogue, args.truth).summary())
        return 0
    from .catalogue.score import score

    result = score(args.catalogue, args.truth, freq=args.freq, train=args.train)
    print(result.summary())
    return 0


PLOT_HELP = "draw an image region with catalogues, or catalogue diagnostics"  # as _plot_cli's


def _command(argv: Sequence[str]) -> str | None:
    """The subcommand named in ``argv`` (the first word that is not an option: the options
    before it, ``-h`` and ``--version``, take no value), or None."""
    return next((a for a in argv if not a.startswith("-")), None)


class _HelpFormatter(argparse.HelpFormatter):
    """Shows an option's default in its help, unless the help already speaks of it."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        if (action.option_strings and "default" not in text.lower()
                and default is not None and default is not False
                and default != argparse.SUPPRESS and action.nargs != 0):
            shown = (" ".join(map(str, default)) if isinstance(default, list | tuple)
                     else "%(default)s")
            text += f" (default: {shown})"
        return text


class _Parser(argparse.ArgumentParser):
    """The parser of streamdet and its subcommands: defaults shown in --help."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)


def _build_parser(command: str | None = "plot") -> argparse.ArgumentParser:
    """The parser; ``command`` is the subcommand that will be parsed (only its arguments
    need to be complete: ``plot``'s are added only for it)."""
    parser = _Parser(
        prog="streamdet",
        description="Out-of-core deep-learning source finding for SKA-scale radio images.",
    )
    parser.add_argument("--version", action="version", version=f"streamdet {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True,
                                parser_class=_Parser)

    p = sub.add_parser("simulate", help="simulate an SDC1-like continuum field (or, --cube, an "
                       "SDC2-like HI cube) and its truth",
                       description="Write a synthetic SKA SDC1-like continuum image (FITS) and, "
                       "optionally, its truth catalogue in the SDC1 submission format; with "
                       "--cube, an SDC2-like HI cube and its truth in the SDC2 format.")
    p.add_argument("output", metavar="OUT.fits", help="FITS image (or cube) to write")
    p.add_argument("--truth", metavar="TRUTH.txt",
                   help="truth catalogue to write (SDC1 format; SDC2 with --cube)")
    p.add_argument("--size", type=int, default=None, metavar="N",
                   help="image side in pixels (default: 2048)")
    p.add_argument("--freq", type=int, default=None, choices=(560, 1400, 9200),
                   help="band in MHz, sets pixel scale, beam and noise (default: 560)")
    p.add_argument("--seed", type=int, default=0, metavar="S", help="random seed")
    p.add_argument("--offset", type=float, nargs=2, default=None, metavar=("DRA", "DDEC"),
                   help="field centre offset from (RA 0, Dec -30) in degrees (default: 0.0 0.0)")
    p.add_argument("--pb", metavar="PB.fits",
                   help="also write the primary beam applied (for detect --pb)")
    p.add_argument("--no-noise", action="store_true", help="leave out the noise")
    p.add_argument("--sidelobes", action="store_true",
                   help="add sidelobes/negative bowls around the brightest sources")
    p.add_argument("--no-faint", action="store_true",
                   help="leave out the faint population below the SDC1 catalogue's turnover "
                        "(about 90%% of the sources, most of them undetectable)")
    p.add_argument("--no-zero-mean", action="store_true",
                   help="keep the sky's mean brightness (an interferometer's map, and the "
                        "default, has it taken out)")
    p.add_argument("--noise-scale", type=float, default=None, metavar="F",
                   help="multiply the map noise by F, 1: a 1000 h SDC1 map (default: 1.0)")
    p.add_argument("--agn-fraction", type=float, default=None, metavar="F",
                   help="share of AGN among the catalogue population's sources (default: "
                        "the population's own, ~2%%)")
    c = p.add_argument_group("HI cube (--cube)")
    c.add_argument("--cube", action="store_true",
                   help="an SDC2-like HI cube (2.8\" pixels, 7\" beam, 30 kHz channels from "
                        "950 MHz) of rotating disks from a physical population")
    c.add_argument("--shape", type=int, nargs=3, default=None, metavar=("NZ", "NY", "NX"),
                   help="cube shape, channels then pixels (default 256 64 64)")
    c.add_argument("--channel-offset", type=int, default=None, metavar="K",
                   help="first channel, in 30 kHz channels from 950 MHz (default 0)")
    c.add_argument("--freq-start", type=float, default=None, metavar="HZ",
                   help="frequency of the first channel, Hz (instead of --channel-offset)")
    c.add_argument("--centre", type=float, nargs=2, default=None, metavar=("RA", "DEC"),
                   help="cube centre, deg (default 180 -30)")
    c.add_argument("--cube-noise", type=float, default=None, metavar="JY",
                   help="noise per channel, Jy/beam (default 3e-5; --no-noise for none)")
    c.add_argument("--continuum", action="store_true",
                   help="add continuum point sources with power-law spectra (not in the truth)")
    c.add_argument("--no-galaxies", action="store_true",
                   help="noise (and continuum) only, an empty truth")
    c.add_argument("--slab-channels", type=int, default=None, metavar="N",
                   help="channels rendered and written at a time (the bytes do not depend on it)")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar or summary")
    p.set_defaults(func=_cmd_simulate)

    p = sub.add_parser("convert", help="convert a FITS image or cube to chunked Zarr (streaming)",
                       description="Stream a FITS image or cube into a chunked, compressed Zarr v3 "
                       "store, keeping the header, WCS and beam. Restartable.")
    p.add_argument("input", metavar="IN.fits", help="FITS file to read")
    p.add_argument("output", metavar="OUT.zarr", help="Zarr store to write")
    p.add_argument("--chunks", type=int, default=None, metavar="N",
                   help="spatial chunk side in pixels (default 1024 for images, 256 for cubes)")
    p.add_argument("--shard", type=int, default=None, metavar="N",
                   help="spatial shard side in pixels (a multiple of --chunks); "
                   "default no sharding")
    p.add_argument("--codec", choices=("zstd", "blosc", "none"), default="zstd",
                   help="compression codec")
    p.add_argument("--hdu", type=int, default=None, metavar="K",
                   help="HDU index (default: the first HDU with image data)")
    p.add_argument("--verify", action="store_true",
                   help="check the Zarr content against the FITS data, block by block")
    p.add_argument("--overwrite", action="store_true", help="replace an existing store")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar or summary")
    p.set_defaults(func=_cmd_convert)

    p = sub.add_parser("detect", help="detect sources in a Zarr store or FITS image or cube",
                       description="Run an ONNX detector over an image or an HI cube of any "
                       "size, chunk by chunk, and write a catalogue in sky coordinates (a "
                       "cube, with a 3D model: RA/Dec, central frequency, line flux, HI size, "
                       "w20, PA, inclination; --format sdc2).")
    p.add_argument("input", metavar="INPUT",
                   help="Zarr store from convert, or a FITS image or cube")
    p.add_argument("-o", "--output", required=True, metavar="CATALOGUE",
                   help="catalogue to write")
    p.add_argument("--model", metavar="M.onnx",
                   help="ONNX detector with the streamdet contract (default: bundled model)")
    p.add_argument("--format", choices=("sdc1", "sdc2", "ecsv", "fits", "parquet"),
                   default=None,
                   help="catalogue format (default from the extension: .txt or .dat sdc1, "
                   "for a cube sdc2; .ecsv, .fits or .fit, .parquet; another extension needs "
                   "--format)")
    p.add_argument("--regions", metavar="OUT.reg", help="also write a DS9/CARTA region file")
    p.add_argument("--chunk", type=int, default=None, metavar="N",
                   help="window side in px (default: a multiple of the storage chunk)")
    p.add_argument("--window", default=None, metavar="Z,Y,X",
                   help="cubes: window core in channels, px, px (default 256,128,128; the "
                   "catalogue does not depend on it)")
    p.add_argument("--halo", type=int, default=None, metavar="N",
                   help="context around windows in px (default: the model's receptive field)")
    p.add_argument("--batch", type=int, default=None, metavar="N",
                   help="tiles per model call (default: 1 on CPU, 8 on a GPU)")
    p.add_argument("--threads", type=int, default=None, metavar="N",
                   help="ONNX Runtime threads per forward pass (default: 1, with one pass "
                   "per core in flight)")
    p.add_argument("--pb", metavar="PB.fits", help="primary beam image to correct fluxes")
    p.add_argument("--no-refine", action="store_true",
                   help="keep the network's positions (default: move each detection onto the "
                   "sub-pixel image peak)")
    p.add_argument("--no-measure", action="store_true",
                   help="keep the network's flux and shape (default: measure on the image: "
                   "forced photometry with the network's shape for every source, and an "
                   "elliptical Gaussian fit, deconvolved by the beam, from the model's "
                   "measure.fit_snr; on a cube: line flux, kinematic PA and HI size from "
                   "a mask of the voxels)")
    p.add_argument("--threshold", default=None, metavar="T",
                   help="objectness threshold: a number, one per prior (comma-separated), or a "
                   "preset of the model (default, best, purity)")
    p.add_argument("--device", default=None, metavar="D",
                   help="where the model runs: auto (the best provider present), cpu, cuda, "
                   "tensorrt, or cuda:K / tensorrt:K for GPU K (default: auto)")
    g = p.add_argument_group("scale out", "default: this process, one thread per core")
    g.add_argument("--workers", type=int, default=None, metavar="N",
                   help="run on a local Dask cluster of N worker processes (threads per "
                   "worker: the cores divided among them); the dashboard is printed")
    g.add_argument("--scheduler", default=None, metavar="ADDRESS",
                   help="join an existing Dask cluster: a scheduler address "
                   "(tcp://host:8786) or a scheduler file (.json); the workers must see "
                   "the input and the model at the same paths")
    g.add_argument("--gpus", default=None, metavar="all|0,1",
                   help="a local cluster of one worker per GPU, each pinned to its own "
                   "(with --workers N, worker k takes the k-th GPU in turn); implies "
                   "--device cuda unless tensorrt is asked")
    g.add_argument("--worker-timeout", type=float, default=120.0, metavar="S",
                   help="give up when the scheduler cannot be reached, or the cluster has "
                   "had no worker, for S seconds")
    g = p.add_argument_group("resume", "each finished window is kept in .CATALOGUE.parts/ "
                             "beside the catalogue until the catalogue is written")
    g.add_argument("--resume", action="store_true",
                   help="reuse the windows an interrupted run of the same command kept, "
                   "and compute only the others (refused where the model, input or an "
                   "option differs); without it, kept windows are replaced")
    g.add_argument("--keep-parts", action="store_true",
                   help="keep the per-window parts after the catalogue is written")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar or summary")
    p.set_defaults(func=_cmd_detect)

    p = sub.add_parser("score", help="score an SDC1 (or, --sdc2, SDC2) catalogue with the "
                       "official SKA scorer",
                       description="Score a catalogue (SDC1 text, or the ECSV / FITS / Parquet "
                       "table detect writes) against a truth catalogue with the official "
                       "ska-sdc scorer (pip install 'streamdet[score]').")
    p.add_argument("catalogue", metavar="CATALOGUE",
                   help="submitted catalogue: SDC1 text (.txt, .dat), or detect's full table "
                   "(.ecsv, .fits, .parquet)")
    p.add_argument("truth", metavar="TRUTH", help="truth catalogue (SDC1 format)")
    p.add_argument("--freq", type=int, default=None, choices=(560, 1400, 9200),
                   help="band, MHz (default: the band the catalogue was made at, from its "
                   "header or that of the image it names; required for SDC1 text files, "
                   "which carry none)")
    p.add_argument("--train", action="store_true",
                   help="score inside the SDC1 training box instead of outside it")
    p.add_argument("--sdc2", action="store_true",
                   help="score an SDC2 (HI cube) catalogue against an SDC2 truth with "
                        "ska_sdc's Sdc2Scorer")
    p.set_defaults(func=_cmd_score)

    p = sub.add_parser("info", help="describe a Zarr store written by convert",
                       description="Print whether a store is complete, its shape, chunks, WCS "
                       "and beam.")
    p.add_argument("store", metavar="STORE.zarr", help="Zarr store (or FITS file)")
    p.set_defaults(func=_cmd_info)

    if command == "plot":  # its module imports the scorer's tables: only when it runs
        from .catalogue._plot_cli import add_plot_parser

        add_plot_parser(sub)
    else:  # listed in the help; its arguments are never parsed in this run
        sub.add_parser("plot", help=PLOT_HELP, add_help=False)

    from export._cli import add_export_parser

    add_export_parser(sub)

    from export._train_cli import add_train_parser

    add_train_parser(sub)
    return parser


#: An API keyword followed by its option in parentheses, as errors name both:
#: "pass overwrite=True (--overwrite)" reads "pass --overwrite" on the command line.
_API_AND_OPTION = re.compile(r"\b[a-z_]+=\S+ \((--[a-z][a-z-]*(?: [^()]*)?)\)")


def cli_message(text: str) -> str:
    """An error message for command-line users: options named, not API keywords."""
    return _API_AND_OPTION.sub(r"\1", text)


def _silence_stdout() -> None:
    """Point stdout at /dev/null: the reader of a pipe went away (``| head``), and the
    interpreter's last flush must not fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):  # no file descriptor (captured): nothing to do
        pass


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status (0 on success, 1 on error, 130 when
    interrupted, 141 when the reader of stdout went away)."""
    try:
        try:
            return _main(argv)
        finally:
            sys.stdout.flush()  # here, not at exit: a closed pipe is reported below
    except BrokenPipeError:
        _silence_stdout()
        return 141  # as a shell reports a command ended by SIGPIPE


def _main(argv: Sequence[str] | None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = _build_parser(_command(argv))
    args = parser.parse_args(argv)
    handler: Handler = args.func
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("default")
            return handler(args)
    except StreamdetError as exc:
        print(f"streamdet {args.command}: error: {cli_message(str(exc))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"streamdet {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
