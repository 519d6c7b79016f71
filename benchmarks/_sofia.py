"""SoFiA-2, the SDC2 reference finder, as a benchmark peer: run it, convert its catalogue.

SoFiA-2 (Westmeier et al. 2021, MNRAS 506, 3962; GPL-3) is not on PyPI: it is built from
``../shared/peers/SoFiA-2`` by ``../shared/peers/build_sofia2.sh OUT`` (outside the
repository; never committed) and run as a separate program on a parameter file written
here. Nothing of its code is used.

Settings (:data:`SDC2_SETTINGS`): Team SoFiA's for the SKA SDC2 (third place), as the
issue gives them: the S+C finder with smoothing kernels XY 0/3/6 px and Z 0/3/7/15/31
channels, threshold 3.8 (MAD of the negative fluxes), the linker with radius 2 and
minimum size 3 (in x, y and z), reliability filtering on (``reliability.threshold``,
default 0.1, Team SoFiA's; ``fmin`` 15, SoFiA's default), physical parameterisation
(``f_sum`` in Jy Hz, ``w20`` in Hz).

The reliability threshold only removes sources after linking and before
parameterisation: a run at threshold ``r0`` holds every source of a run at ``r >= r0``,
with the same parameters and its ``rel`` column, so :func:`to_sdc2` with ``min_rel=r``
gives the catalogue of the run at ``r`` without running SoFiA again (checked by
``tests/test_sdc2.py`` when the binary is present).

Conversion to the SDC2 format (:func:`to_sdc2`):

* ``ra``, ``dec`` from SoFiA's flux-weighted centroid ``x``, ``y`` through the cube's
  celestial WCS; ``central_freq`` from the centroid channel ``z`` through the spectral
  axis (``CRVAL3 + (z + 1 - CRPIX3) CDELT3``).
* ``line_flux_integral`` = ``f_sum`` (Jy Hz with ``parameter.physical``).
* ``w20`` (km/s) = ``c w20_Hz / central_freq``: the line-of-sight velocity of
  :mod:`streamdet.sim.simulate_cube` (a galaxy's emission at ``f_sys (1 - v / c)``).
* ``hi_size`` (arcsec): ``ell_maj`` is twice the sigma of the moment-0 map's major axis
  (pixels); FWHM = ``sqrt(2 ln 2) ell_maj`` x pixel, the beam FWHM removed in quadrature
  (0 when unresolved).
* ``i`` from the deconvolved axis ratio ``q`` of ``ell_maj``, ``ell_min``:
  ``cos^2 i = (q^2 - q0^2) / (1 - q0^2)`` with an intrinsic thickness ``q0`` = 0.2
  (an unresolved major axis gives 60 deg, the median of random orientations).
* ``pa`` from SoFiA's kinematic PA ``kin_pa`` (0-360 deg, east of north, towards the
  side of the disk at the upper end of the channel range): on a frequency axis that
  increases along the channels that side approaches, so the SDC2 PA (the receding
  side) is ``kin_pa + 180``; where SoFiA could not measure ``kin_pa`` (-1) the
  moment-0 ellipse's ``ell_pa`` is used.

Time and memory: :func:`run_sofia` reports the wall time of the ``sofia`` process and
its peak RSS (``ru_maxrss`` of that child, from ``os.wait4``).
"""

from __future__ import annotations

import math
import os
import resource
import shutil
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS

from streamdet.catalogue.sdc2 import SDC2_COLUMNS
from streamdet.errors import StreamdetError, StreamdetValueError

__all__ = [
    "SDC2_SETTINGS",
    "SofiaRun",
    "find_sofia",
    "parameter_file",
    "read_sofia_catalogue",
    "run_sofia",
    "to_sdc2",
]

C_KMS = 299792.458
#: Exit status of SoFiA-2 when no (reliable) source is left: an empty catalogue.
ERR_NO_SRC_FOUND = 8
#: Where the build script is asked to put SoFiA-2 by default.
DEFAULT_BUILD = Path("/work/peers/sofia2/sofia")
BUILD_SCRIPT = Path(__file__).resolve().parents[2] / "shared" / "peers" / "build_sofia2.sh"

#: Team SoFiA's SDC2 settings (parameter-file keys and values).
SDC2_SETTINGS: dict[str, str] = {
    "pipeline.verbose": "false",
    "pipeline.pedantic": "true",
    "flag.auto": "false",
    "contsub.enable": "false",
    "scaleNoise.enable": "false",
    "scfind.enable": "true",
    "scfind.kernelsXY": "0, 3, 6",
    "scfind.kernelsZ": "0, 3, 7, 15, 31",
    "scfind.threshold": "3.8",
    "scfind.replacement": "2.0",
    "scfind.statistic": "mad",
    "scfind.fluxRange": "negative",
    "threshold.enable": "false",
    "linker.radiusXY": "2",
    "linker.radiusZ": "2",
    "linker.minSizeXY": "3",
    "linker.minSizeZ": "3",
    "linker.maxSizeXY": "0",
    "linker.maxSizeZ": "0",
    "linker.keepNegative": "false",
    "reliability.enable": "true",
    "reliability.threshold": "0.1",
    "reliability.scaleKernel": "0.4",
    "reliability.fmin": "15.0",
    "reliability.plot": "false",
    "dilation.enable": "false",
    "parameter.enable": "true",
    "parameter.wcs": "true",
    "parameter.physical": "true",
    "parameter.prefix": "SoFiA",
    "parameter.offset": "false",
    "output.writeCatASCII": "true",
    "output.writeCatXML": "false",
    "output.writeCatSQL": "false",
    "output.writeNoise": "false",
    "output.writeFiltered": "false",
    "output.writeMask": "false",
    "output.writeMask2d": "false",
    "output.writeRawMask": "false",
    "output.writeMoments": "false",
    "output.writeCubelets": "false",
    "output.overwrite": "true",
}


def find_sofia(path: str | os.PathLike[str] | None = None) -> Path | None:
    """The SoFiA-2 binary: ``path``, else ``$SOFIA2``, else :data:`DEFAULT_BUILD`, else
    ``sofia`` on ``PATH``; None when there is none (build it with the shared script)."""
    candidates: list[str | os.PathLike[str]] = []
    if path is not None:
        candidates.append(path)
    else:
        if os.environ.get("SOFIA2"):
            candidates.append(os.environ["SOFIA2"])
        candidates.append(DEFAULT_BUILD)
        found = shutil.which("sofia")
        if found:
            candidates.append(found)
    for cand in candidates:
        p = Path(cand)
        if p.is_file() and os.access(p, os.X_OK):
            return p
    return None


def parameter_file(cube: str | os.PathLike[str], outdir: str | os.PathLike[str], *,
                   name: str = "sofia", reliability_threshold: float = 0.1,
                   threads: int = 0, overrides: Mapping[str, str] | None = None) -> Path:
    """Write a SoFiA-2 parameter file running :data:`SDC2_SETTINGS` on ``cube``.

    Parameters
    ----------
    cube : str or os.PathLike
        FITS cube (RA, Dec, FREQ).
    outdir : str or os.PathLike
        Directory for the parameter file and SoFiA's outputs (created).
    name : str
        Base name of the outputs (``NAME_cat.txt``) and of the file (``NAME.par``).
    reliability_threshold : float
        ``reliability.threshold``, in [0, 1].
    threads : int
        ``pipeline.threads`` (0: all cores).
    overrides : mapping of str to str, optional
        Further parameter-file settings, replacing those of :data:`SDC2_SETTINGS`.

    Returns
    -------
    pathlib.Path
        The parameter file.
    """
    if not 0.0 <= float(reliability_threshold) <= 1.0:
        raise StreamdetValueError(f"reliability threshold must be in [0, 1], got "
                                  f"{reliability_threshold!r}")
    out = Path(outdir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    settings = dict(SDC2_SETTINGS)
    settings.update({
        "pipeline.threads": str(int(threads)),
        "input.data": str(Path(cube).resolve()),
        "reliability.threshold": repr(float(reliability_threshold)),
        "output.directory": str(out),
        "output.filename": name,
    })
    settings.update(overrides or {})
    par = out / f"{name}.par"
    par.write_text("".join(f"{k:<28s} = {v}\n" for k, v in settings.items()), encoding="ascii")
    return par


def read_sofia_catalogue(path: str | os.PathLike[str]) -> Table:
    """Read SoFiA-2's plain-text catalogue (``NAME_cat.txt``) into a table.

    The column names are the ``#`` header row that starts with ``name``; the source
    name (which holds a space) is dropped, every other column is float64 (``id`` and
    ``flag`` int64). A catalogue without data rows gives an empty table.
    """
    names: list[str] | None = None
    rows: list[list[str]] = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if line.startswith("#"):
                parts = line[1:].split()
                if parts[:2] == ["name", "id"]:
                    names = parts
                continue
            if line.strip():
                rows.append(line.split())
    if names is None:
        raise StreamdetValueError(f"{str(path)!r} is not a SoFiA-2 catalogue (no column row)")
    numeric = names[1:]
    k = len(numeric)
    values = np.array([r[-k:] for r in rows], dtype=np.float64).reshape(-1, k)
    out = Table()
    for j, col in enumerate(numeric):
        out[col] = values[:, j].astype(np.int64) if col in ("id", "flag") else values[:, j]
    return out


@dataclass(frozen=True)
class SofiaRun:
    """One SoFiA-2 run.

    Attributes
    ----------
    catalogue : astropy.table.Table
        SoFiA's raw catalogue (empty when it found no reliable source).
    seconds : float
        Wall time of the ``sofia`` process.
    rss_mb : float
        Its peak resident memory, MB (``ru_maxrss``).
    returncode : int
        Its exit status (0, or 8 for no source).
    log : pathlib.Path
        Its standard output and error.
    settings : dict of str to str
        The parameter file's settings.
    """

    catalogue: Table
    seconds: float
    rss_mb: float
    returncode: int
    log: Path
    settings: dict[str, str] = field(default_factory=dict)


def run_sofia(cube: str | os.PathLike[str], workdir: str | os.PathLike[str], *,
              reliability_threshold: float = 0.1, threads: int = 0,
              sofia: str | os.PathLike[str] | None = None, name: str = "sofia",
              overrides: Mapping[str, str] | None = None,
              timeout: float | None = None) -> SofiaRun:
    """Run SoFiA-2 with Team SoFiA's SDC2 settings on a FITS cube.

    Parameters
    ----------
    cube : str or os.PathLike
        FITS cube.
    workdir : str or os.PathLike
        Directory for the parameter file, the log and SoFiA's outputs.
    reliability_threshold : float
        ``reliability.threshold``.
    threads : int
        ``pipeline.threads`` (0: all cores).
    sofia : str or os.PathLike, optional
        The binary (default: :func:`find_sofia`).
    name : str
        Base name of the outputs.
    overrides : mapping, optional
        Further parameter-file settings.
    timeout : float, optional
        Seconds after which the process is killed (:class:`StreamdetError`).

    Returns
    -------
    SofiaRun

    Raises
    ------
    StreamdetError
        No binary; SoFiA failed (the message holds the end of its log) or timed out.
    """
    binary = find_sofia(sofia)
    if binary is None:
        raise StreamdetError("SoFiA-2 binary not found: build it with "
                             f"bash {BUILD_SCRIPT} {DEFAULT_BUILD.parent} (or pass its path)")
    par = parameter_file(cube, workdir, name=name, reliability_threshold=reliability_threshold,
                         threads=threads, overrides=overrides)
    out = par.parent
    cat_path = out / f"{name}_cat.txt"
    cat_path.unlink(missing_ok=True)
    log = out / f"{name}.log"
    with open(log, "wb") as fh:
        t0 = time.perf_counter()
        proc = subprocess.Popen([str(binary), str(par)], stdout=fh, stderr=subprocess.STDOUT,
                                cwd=out)
        status, usage = _wait(proc, timeout)
        seconds = time.perf_counter() - t0
    code = os.waitstatus_to_exitcode(status)
    if code not in (0, ERR_NO_SRC_FOUND):
        tail = log.read_text(encoding="utf-8", errors="replace")[-2000:]
        raise StreamdetError(f"SoFiA-2 exited with status {code}; end of {log}:\n{tail}")
    if code == 0 and cat_path.is_file():
        cat = read_sofia_catalogue(cat_path)
    else:
        cat = Table({c: np.zeros(0) for c in ("x", "y", "z", "f_sum", "w20", "ell_maj",
                                              "ell_min", "ell_pa", "kin_pa", "rel")})
    settings = dict(line.split("=", 1) for line in par.read_text(encoding="ascii").splitlines())
    return SofiaRun(catalogue=cat, seconds=seconds, rss_mb=usage.ru_maxrss / 1024.0,
                    returncode=code, log=log,
                    settings={k.strip(): v.strip() for k, v in settings.items()})


def _wait(proc: subprocess.Popen[bytes],
          timeout: float | None) -> tuple[int, resource.struct_rusage]:
    """Wait for ``proc`` with ``os.wait4`` (its own rusage), killing it after ``timeout``."""
    deadline = None if timeout is None else time.monotonic() + float(timeout)
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG if deadline is not None else 0)
        if pid == proc.pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            return status, usage
        if deadline is not None and time.monotonic() > deadline:
            proc.kill()
            os.wait4(proc.pid, 0)
            proc.returncode = -9
            raise StreamdetError(f"SoFiA-2 ran past {timeout} s and was killed")
        time.sleep(0.2)


def to_sdc2(raw: Table, header: fits.Header, *, min_rel: float | None = None,
            q0: float = 0.2) -> Table:
    """Convert a SoFiA-2 catalogue to the SDC2 submission columns.

    Parameters
    ----------
    raw : astropy.table.Table
        :func:`read_sofia_catalogue`'s table (``x``, ``y``, ``z``, ``f_sum``, ``w20``,
        ``ell_maj``, ``ell_min``, ``ell_pa``, ``kin_pa`` and, for ``min_rel``, ``rel``).
    header : astropy.io.fits.Header
        The cube's header (celestial and spectral WCS, BMAJ/BMIN).
    min_rel : float, optional
        Keep only sources of reliability ``rel >= min_rel`` (what a SoFiA run at that
        ``reliability.threshold`` keeps).
    q0 : float
        Intrinsic axis ratio of an edge-on disk, for the inclination.

    Returns
    -------
    astropy.table.Table
        Columns :data:`streamdet.catalogue.sdc2.SDC2_COLUMNS` (``id`` from 0), as the module
        docstring describes.
    """
    keep = np.ones(len(raw), bool)
    if min_rel is not None and len(raw):
        keep &= np.asarray(raw["rel"], np.float64) >= float(min_rel)
    t = raw[keep]
    n = len(t)
    wcs = WCS(header).celestial
    x = np.asarray(t["x"], np.float64)
    y = np.asarray(t["y"], np.float64)
    z = np.asarray(t["z"], np.float64)
    if n:
        ra, dec = wcs.all_pix2world(x, y, 0)
    else:
        ra = dec = np.zeros(0)
    freq = float(header["CRVAL3"]) + (z + 1.0 - float(header.get("CRPIX3", 1.0))) \
        * float(header["CDELT3"])
    pix = abs(float(header["CDELT2"])) * 3600.0
    bmaj = float(header["BMAJ"]) * 3600.0
    bmin = float(header.get("BMIN", header["BMAJ"])) * 3600.0
    beam = math.sqrt(bmaj * bmin)
    fwhm = math.sqrt(2.0 * math.log(2.0)) * pix
    maj = np.sqrt(np.clip((np.asarray(t["ell_maj"], np.float64) * fwhm) ** 2 - beam ** 2,
                          0.0, None))
    mnr = np.sqrt(np.clip((np.asarray(t["ell_min"], np.float64) * fwhm) ** 2 - beam ** 2,
                          0.0, None))
    with np.errstate(invalid="ignore", divide="ignore"):
        q = np.where(maj > 0, mnr / np.where(maj > 0, maj, 1.0), np.nan)
        cos2 = np.clip((q ** 2 - q0 ** 2) / (1.0 - q0 ** 2), 0.0, 1.0)
        inc = np.where(np.isfinite(q), np.degrees(np.arccos(np.sqrt(cos2))), 60.0)
    kin = np.asarray(t["kin_pa"], np.float64)
    flip = 180.0 if float(header["CDELT3"]) > 0 else 0.0
    pa = np.where(kin >= 0.0, kin + flip, np.asarray(t["ell_pa"], np.float64))
    pa = np.mod(pa, 360.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        w20 = C_KMS * np.asarray(t["w20"], np.float64) / freq
    out = Table({
        "id": np.arange(n, dtype=np.int64),
        "ra": np.mod(np.asarray(ra, np.float64), 360.0),
        "dec": np.asarray(dec, np.float64),
        "hi_size": maj,
        "line_flux_integral": np.asarray(t["f_sum"], np.float64),
        "central_freq": freq,
        "pa": pa,
        "i": inc,
        "w20": np.nan_to_num(w20, nan=0.0, posinf=0.0, neginf=0.0),
    })
    assert tuple(out.colnames) == SDC2_COLUMNS
    return out
