"""The real SDC1 pixels in ../shared/data/sdc1/real, split into a training and a validation region.

``B1_1000h_west.fits`` is 520 x 957 px (x, y) of the real 560 MHz 1000 h SDC1 image (not
primary-beam corrected) and ``B1_1000h_west_truth.txt`` the real truth of its area
(every embedded source). The split is along y (rows, 0-based):

* training region: rows ``0 .. 599`` (520 x 600 px, 63% of the area);
* a guard band: rows ``600 .. 619`` (12 arcsec; no pixel of it is used by either);
* validation region: rows ``620 .. 956`` (520 x 337 px).

Each region becomes its own FITS file (the same header, CRPIX shifted, 4 axes kept) and
its own truth, the rows whose centroid (``ra_cent``, ``dec_cent``) falls in it. A source
that straddles a cut is in the truth of the region holding its centroid; its pixels on
the other side are cut off in both files, so the validation score never sees a pixel
that training saw. The validation region lies inside the scorer's training box: score
it with ``train=True``.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS, FITSFixedWarning

__all__ = ["REAL_DIR", "REGIONS", "real_region", "real_regions"]

#: Where the real data lives (next to the repository, as laid out for the developers).
REAL_DIR = Path(os.environ.get("STREAMDET_REAL_DIR",
                               Path(__file__).resolve().parents[2] / "shared" / "data"
                               / "sdc1" / "real"))
IMAGE, TRUTH = "B1_1000h_west.fits", "B1_1000h_west_truth.txt"
#: Row ranges [y0, y1) of the regions.
REGIONS = {"train": (0, 600), "val": (620, 957)}


def _read() -> tuple[np.ndarray, fits.Header]:
    path = REAL_DIR / IMAGE
    if not path.exists():
        raise FileNotFoundError(f"real SDC1 data not found: {path} (set STREAMDET_REAL_DIR)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")              # BLANK on float data
        with fits.open(path) as hdul:
            return np.asarray(hdul[0].data), hdul[0].header.copy()


def real_region(name: str, workdir: str | os.PathLike[str]) -> tuple[Path, Path, int]:
    """Write one region's image and truth into ``workdir``; returns (image, truth, n_true)."""
    if name not in REGIONS:
        raise ValueError(f"unknown region {name!r}; expected one of {sorted(REGIONS)}")
    y0, y1 = REGIONS[name]
    out = Path(workdir)
    out.mkdir(parents=True, exist_ok=True)
    image, truth = out / f"real_{name}.fits", out / f"real_{name}.truth.txt"
    data, header = _read()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        wcs = WCS(header).celestial
    lines = (REAL_DIR / TRUTH).read_text().splitlines()
    head, rows = lines[0], [ln for ln in lines[1:] if ln.strip()]
    cols = head.split()
    ra = np.array([float(r.split()[cols.index("ra_cent")]) for r in rows])
    dec = np.array([float(r.split()[cols.index("dec_cent")]) for r in rows])
    x, y = wcs.all_world2pix(np.mod(ra, 360.0), dec, 0)
    nx = data.shape[-1]
    keep = (y >= y0 - 0.5) & (y < y1 - 0.5) & (x >= -0.5) & (x < nx - 0.5)
    if not (image.exists() and truth.exists()):
        h = header.copy()
        h["CRPIX2"] = float(h["CRPIX2"]) - y0
        h.pop("BLANK", None)
        h["HISTORY"] = f"streamdet benchmark: rows {y0}:{y1} ({name} region)"
        fits.PrimaryHDU(np.ascontiguousarray(data[..., y0:y1, :]), header=h).writeto(
            image, overwrite=True)
        truth.write_text("\n".join([head, *(r for r, k in zip(rows, keep, strict=True) if k)])
                         + "\n")
    return image, truth, int(keep.sum())


def real_regions(workdir: str | os.PathLike[str]) -> dict[str, tuple[Path, Path, int]]:
    """Both regions (see :func:`real_region`)."""
    return {name: real_region(name, workdir) for name in REGIONS}
