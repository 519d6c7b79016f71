"""Training data: fields (image + truth), simulated fields cached on disk, random cutouts.

A :class:`Field` is an image in Jy/beam with its truth sources in pixel coordinates
(positions from the image WCS), their primary-beam gain, Gaussian-equivalent sizes,
major-axis direction in the pixel frame and peak SNR. :class:`CutoutSampler` draws
square cutouts at random positions from the fields, normalises them as the model
contract says, applies a random flip / 90-degree rotation (moving the positions and
turning the position angles with the pixels) and returns the per-cutout truth that
:func:`export._targets.build_targets` consumes.
"""

from __future__ import annotations

import gzip
import math
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from astropy.table import Table
from astropy.wcs import WCS
from numpy.typing import NDArray

from streamdet.catalogue._pb import PrimaryBeam
from streamdet.catalogue.catalog import SDC1_COLUMNS, read_sdc1, sdc1_pa
from streamdet.engine.contract import ModelContract, normalise
from streamdet.engine.decode import encode_params
from streamdet.errors import StreamdetFileNotFoundError, StreamdetValueError, WCSMissingError
from streamdet.io.image import open_image
from streamdet.sim._population import BANDS, primary_beam
from streamdet.sim.simulate import SKY_VERSION, simulate

from ._targets import (
    CutoutTruth,
    ellipse_boxes,
    gaussian_sizes,
    pa_weight,
    peak_snr,
    snr_weight,
    visible_extent,
)

__all__ = [
    "CutoutSampler",
    "Field",
    "FieldTruth",
    "SelectionConfig",
    "augment",
    "load_field",
    "read_truth",
    "robust_rms",
    "simulated_field",
]

FloatArray = NDArray[np.float64]
_IN_MEMORY_PIXELS = 1 << 27  # images up to 128 Mpix (512 MB) are loaded whole


# --------------------------------------------------------------------------- fields
@dataclass(frozen=True)
class FieldTruth:
    """True sources of a field, in the field's pixel frame.

    Attributes
    ----------
    x, y : (N,) float64
        Position (0-based px) of the flux centroid.
    flux : (N,) float64
        True (unattenuated) flux, Jy.
    pb : (N,) float64
        Primary-beam gain at the source.
    bmaj_g, bmin_g : (N,) float64
        Gaussian-equivalent FWHM, arcsec.
    phi : (N,) float64
        Direction of the major axis in the pixel frame, radians from +x towards +y.
    core_frac : (N,) float64
    snr : (N,) float64
        Peak SNR in the map (:func:`export._targets.peak_snr`).
    """

    x: FloatArray
    y: FloatArray
    flux: FloatArray
    pb: FloatArray
    bmaj_g: FloatArray
    bmin_g: FloatArray
    phi: FloatArray
    core_frac: FloatArray
    snr: FloatArray

    def __len__(self) -> int:
        return int(self.x.size)

    def take(self, idx: NDArray[np.integer] | NDArray[np.bool_]) -> FieldTruth:
        """The subset ``idx`` of the sources."""
        return FieldTruth(**{k: getattr(self, k)[idx] for k in self.__dataclass_fields__})


@dataclass(frozen=True, eq=False)
class Field:
    """An image (Jy/beam) and its truth, ready for cutout sampling.

    Attributes
    ----------
    name : str
    pixels : (ny, nx) float32 ndarray, or a lazy (dask-backed) array
        The image.
    truth : FieldTruth
        Sources sorted by ``y``.
    pixel_arcsec, beam_arcsec : float
        Pixel side and restoring beam FWHM (geometric mean of the axes), arcsec.
    noise : float
        Map noise rms, Jy/beam.
    region : (y0, y1, x0, x1)
        Where cutouts are drawn (px, stop exclusive): the labelled part of the image.
    """

    name: str
    pixels: Any
    truth: FieldTruth
    pixel_arcsec: float
    beam_arcsec: float
    noise: float
    region: tuple[int, int, int, int]

    @property
    def shape(self) -> tuple[int, int]:
        """``(ny, nx)``."""
        return (int(self.pixels.shape[0]), int(self.pixels.shape[1]))

    def cutout(self, y0: int, x0: int, size: int) -> NDArray[np.float32]:
        """Pixels ``[y0:y0+size, x0:x0+size]`` as float32 (zeros beyond the image)."""
        ny, nx = self.shape
        out = np.zeros((size, size), np.float32)
        ya, yb = max(y0, 0), min(y0 + size, ny)
        xa, xb = max(x0, 0), min(x0 + size, nx)
        if yb > ya and xb > xa:
            out[ya - y0:yb - y0, xa - x0:xb - x0] = np.asarray(self.pixels[ya:yb, xa:xb])
        return out


def robust_rms(values: NDArray[np.floating]) -> float:
    """Noise rms from the median absolute deviation (1.4826 MAD) of the finite values."""
    v = np.asarray(values, np.float64).ravel()
    v = v[np.isfinite(v)]
    if v.size == 0:
        raise StreamdetValueError("cannot estimate the noise: no finite pixels")
    return float(1.4826 * np.median(np.abs(v - np.median(v))))


def _north_angle(wcs: WCS, ra: FloatArray, dec: FloatArray, x: FloatArray, y: FloatArray,
                 pixel_arcsec: float) -> FloatArray:
    """Direction of local north in the pixel frame (radians from +x) at each source."""
    step = pixel_arcsec / 3600.0
    xn, yn = wcs.world_to_pixel_values(ra, np.minimum(dec + step, 90.0))
    return np.asarray(np.arctan2(np.asarray(yn) - y, np.asarray(xn) - x), np.float64)


def _separation(ra: FloatArray, dec: FloatArray, ra0: float, dec0: float) -> FloatArray:
    d1, d0 = np.radians(dec), math.radians(dec0)
    hav = (np.sin(0.5 * (d1 - d0)) ** 2
           + np.cos(d1) * math.cos(d0) * np.sin(0.5 * np.radians(ra - ra0)) ** 2)
    return np.degrees(2.0 * np.arcsin(np.sqrt(np.clip(hav, 0.0, 1.0))))


def read_truth(path: str | os.PathLike[str]) -> Table:
    """Read a truth catalogue: the SDC1 submission format, or the SDC1 training-set format.

    The training-set files of the challenge (``TrainingSet_B1_v2_ML.txt``, optionally
    gzipped) start with ``COLUMNn:`` description lines and a free-text header, then
    15 columns: the 12 SDC1 columns, ``SELECTION`` (1 if the source was injected
    into the map), ``x`` and ``y``. Rows with ``SELECTION`` 0 are dropped.

    Returns
    -------
    astropy.table.Table
        The 12 SDC1 columns (:func:`streamdet.catalogue.catalog.read_sdc1` types).
    """
    p = Path(path)
    if not p.is_file():
        raise StreamdetFileNotFoundError(f"truth catalogue {str(p)!r} does not exist")
    if p.suffix != ".gz":
        try:
            return read_sdc1(p)
        except StreamdetValueError:
            pass
    opener = gzip.open if p.suffix == ".gz" else open
    rows: list[list[float]] = []
    with opener(p, "rt", encoding="utf-8") as fh:
        for line in fh:
            parts = line.split()
            if not parts or parts[0].upper().startswith("COLUMN"):
                continue
            try:
                values = [float(v) for v in parts]
            except ValueError:
                continue  # header line
            if len(values) not in (12, 15):
                raise StreamdetValueError(f"{str(p)!r}: a data line has {len(values)} fields; "
                                          "expected 12 (SDC1) or 15 (SDC1 training set)")
            rows.append(values)
    ncol = {len(r) for r in rows}
    if len(ncol) > 1:
        raise StreamdetValueError(f"{str(p)!r}: data lines have {sorted(ncol)} fields")
    data = np.asarray(rows, np.float64).reshape(len(rows), -1) if rows else np.zeros((0, 12))
    if data.shape[1] == 15:
        data = data[data[:, 12] > 0]
    out = Table()
    for j, name in enumerate(SDC1_COLUMNS):
        col = data[:, j]
        out[name] = col.astype(np.int64) if name in ("id", "size", "class") else col
    return out


def load_field(image: str | os.PathLike[str], truth: str | os.PathLike[str], *,
               pb: str | os.PathLike[str] | None = None, noise: float | None = None,
               name: str | None = None) -> Field:
    """Read a FITS (or Zarr) image and its SDC1-format truth catalogue into a :class:`Field`.

    Parameters
    ----------
    image : path-like
        2-D image in Jy/beam with a celestial WCS and a restoring beam (BMAJ/BMIN).
    truth : path-like
        Truth catalogue in the SDC1 format, or an SDC1 training-set file
        (:func:`read_truth`); positions (``ra_cent``, ``dec_cent``) go to pixels through
        the image WCS.
    pb : path-like, optional
        Primary-beam FITS image: gain at each source. Without it, an image written by
        ``streamdet simulate`` (header ``PBRA``/``PBDEC``) gets the simulator's beam;
        any other image gain 1 (the truth fluxes are taken as apparent).
    noise : float, optional
        Map noise rms, Jy/beam; default the simulator's ``SIMNOISE`` header value, else
        a robust (MAD) estimate from the pixels.
    name : str, optional
        Label (default: the image file name).

    Returns
    -------
    Field
        Cutouts are drawn within the bounding box of the truth positions (the labelled
        part of the image).

    Raises
    ------
    WCSMissingError
        The image has no celestial WCS.
    StreamdetValueError
        Not a 2-D image, no beam, no truth source inside the image.
    """
    img = open_image(image)
    if len(img.shape) != 2:
        raise StreamdetValueError(f"training image {os.fspath(image)!r} has shape {img.shape}; "
                                  "a 2-D image is needed")
    wcs = img.celestial_wcs
    if wcs is None:
        raise WCSMissingError(f"training image {os.fspath(image)!r} has no celestial WCS")
    beam = img.beam_arcsec
    scale = img.pixel_scale_arcsec
    if beam is None or scale is None:
        raise StreamdetValueError(f"training image {os.fspath(image)!r} has no restoring beam "
                                  "(BMAJ/BMIN header cards)")
    beam_fwhm = math.sqrt(beam[0] * beam[1])
    ny, nx = img.shape
    pixels: Any = img.data.data
    if ny * nx <= _IN_MEMORY_PIXELS:
        pixels = np.asarray(pixels.compute(), np.float32)

    cat = read_truth(truth)
    ra = np.asarray(cat["ra_cent"], np.float64)
    dec = np.asarray(cat["dec_cent"], np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e.g. points beyond the projection's domain
        px, py = wcs.world_to_pixel_values(ra, dec)
    px, py = np.asarray(px, np.float64), np.asarray(py, np.float64)
    inside = (np.isfinite(px) & np.isfinite(py) & (px >= -0.5) & (px < nx - 0.5)
              & (py >= -0.5) & (py < ny - 0.5))
    if not inside.any():
        raise StreamdetValueError(f"no source of truth catalogue {os.fspath(truth)!r} lies "
                                  f"inside image {os.fspath(image)!r}")
    cat = cat[inside]
    ra, dec, px, py = ra[inside], dec[inside], px[inside], py[inside]

    header = img.header
    freq_mhz = round((img.freq_hz or 0.0) / 1e6)
    if pb is not None:
        gain = PrimaryBeam.from_fits(pb).response(ra, dec, outside="nearest")
    elif "PBRA" in header and "PBDEC" in header and freq_mhz in BANDS:
        gain = primary_beam(_separation(ra, dec, float(header["PBRA"]),
                                        float(header["PBDEC"])), freq_mhz)
    else:
        gain = np.ones(ra.size)
    gain = np.nan_to_num(np.asarray(gain, np.float64), nan=0.0)

    if noise is None:
        sim_noise = float(header.get("SIMNOISE", 0.0) or 0.0)
        if sim_noise > 0:
            noise = sim_noise
        else:
            cy, cx, h = ny // 2, nx // 2, 1024
            block = np.asarray(img.data.data[max(cy - h, 0):cy + h, max(cx - h, 0):cx + h])
            noise = robust_rms(block)
    if not noise > 0:
        raise StreamdetValueError(f"noise rms must be > 0, got {noise}")

    bmaj_g, bmin_g = gaussian_sizes(np.asarray(cat["b_maj"]), np.asarray(cat["b_min"]),
                                    np.asarray(cat["size"]))
    north = _north_angle(wcs, ra, dec, px, py, scale)
    # the truth's PA is in the SDC1 convention (sdc1_pa), the network's east of north
    phi = north + np.radians(sdc1_pa(np.asarray(cat["pa"], np.float64)))
    flux = np.asarray(cat["flux"], np.float64)
    core = np.asarray(cat["core_frac"], np.float64)
    snr = peak_snr(flux, bmaj_g, bmin_g, core, gain, beam_arcsec=beam_fwhm, noise=float(noise))
    truth_sources = FieldTruth(x=px, y=py, flux=flux, pb=gain, bmaj_g=bmaj_g, bmin_g=bmin_g,
                               phi=phi, core_frac=core, snr=snr)
    truth_sources = truth_sources.take(np.argsort(py, kind="stable"))
    region = (max(math.floor(py.min()), 0), min(math.ceil(py.max()) + 1, ny),
              max(math.floor(px.min()), 0), min(math.ceil(px.max()) + 1, nx))
    return Field(name=name or Path(image).name, pixels=pixels, truth=truth_sources,
                 pixel_arcsec=float(scale), beam_arcsec=beam_fwhm, noise=float(noise),
                 region=region)


def simulated_field(directory: str | os.PathLike[str], *, size: int, freq: int, seed: int,
                    offset: tuple[float, float] = (0.0, 0.0), faint: bool = True,
                    quiet: bool | None = True) -> tuple[Path, Path]:
    """Simulate an SDC1-like field (image and truth) once, cached in ``directory``.

    ``faint`` is :func:`streamdet.simulate`'s (the faint population, on by default).

    Returns
    -------
    (image, truth) : tuple of Path
        ``sim_{freq}_{size}_s{seed}_{dra}_{ddec}[_faint]_sky{SKY_VERSION}.fits`` and
        ``.truth.txt``; reused when both exist.
    """
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    stem = (f"sim_{freq}_{size}_s{seed}_{offset[0]:+.3f}_{offset[1]:+.3f}"
            + ("_faint" if faint else "") + f"_sky{SKY_VERSION}")
    image, truth = d / f"{stem}.fits", d / f"{stem}.truth.txt"
    if not (image.is_file() and truth.is_file()):
        simulate(image, truth=truth, size=size, freq=freq, seed=seed,
                 offset=(float(offset[0]), float(offset[1])), faint=faint, overwrite=True,
                 quiet=quiet)
    return image, truth


# --------------------------------------------------------------------------- augmentation
def augment(image: NDArray[np.float32], x: FloatArray, y: FloatArray, phi: FloatArray, *,
            flip_x: bool, flip_y: bool, rot: int
            ) -> tuple[NDArray[np.float32], FloatArray, FloatArray, FloatArray]:
    """Flip and rotate an image by multiples of 90 degrees, with points and directions.

    The image is flipped left-right (``flip_x``: column ``x -> W - 1 - x``), then
    up-down (``flip_y``), then turned ``rot`` times by :func:`numpy.rot90` (each turn:
    ``(x, y) -> (y, W - 1 - x)``). A direction at angle ``phi`` (radians from +x
    towards +y) becomes ``pi - phi``, ``-phi`` and ``phi - pi/2`` respectively.

    Returns
    -------
    (image, x, y, phi)
        Contiguous image and transformed coordinates (``phi`` not reduced).
    """
    img = image
    x = np.asarray(x, np.float64).copy()
    y = np.asarray(y, np.float64).copy()
    phi = np.asarray(phi, np.float64).copy()
    if flip_x:
        img = img[:, ::-1]
        x = (img.shape[1] - 1) - x
        phi = math.pi - phi
    if flip_y:
        img = img[::-1, :]
        y = (img.shape[0] - 1) - y
        phi = -phi
    for _ in range(int(rot) % 4):
        w = img.shape[1]
        img = np.rot90(img)
        x, y = y, (w - 1) - x
        phi = phi - 0.5 * math.pi
    return np.ascontiguousarray(img), x, y, phi


# --------------------------------------------------------------------------- sampling
@dataclass(frozen=True)
class SelectionConfig:
    """Which sources are targets and how their boxes and weights are made.

    Attributes
    ----------
    snr_min : float
        Peak SNR a source needs to be a target (the others are ignored).
    ignore_snr_min : float
        Peak SNR a source needs to define an ignore region at all; fainter ones (the
        faint population is mostly below the noise) are background, as noise peaks
        are. It also bounds the cost of the targets: the IoU of every prediction
        with every such source of a cutout.
    box_factor : float
        Truth box = bounding box of the beam-convolved ellipse at this many FWHM.
    box_min_px : float
        Smallest truth box side, px.
    snr_ref, snr_power : float
        Per-source loss weight ``min(snr / snr_ref, 1) ** snr_power``.
    """

    snr_min: float = 5.0
    ignore_snr_min: float = 3.0
    box_factor: float = 2.0
    box_min_px: float = 4.0
    snr_ref: float = 20.0
    snr_power: float = 0.5


_PARAM_VALUES = ("flux", "bmaj", "bmin", "pa")


class CutoutSampler:
    """Random, augmented training cutouts with their truth.

    Parameters
    ----------
    fields : sequence of Field
        Drawn with probability proportional to their sampling area.
    size : int
        Cutout side, px.
    contract : ModelContract
        Normalisation and parameter encoding (``params`` named among flux, bmaj, bmin, pa).
    selection : SelectionConfig
    augment : bool
        Random flips and 90-degree rotations.
    margin : int
        Sources up to this far outside a cutout still define ignore regions.
    share : sequence of float, optional
        Probability of drawing each field (normalised); default: by sampling area.
    """

    def __init__(self, fields: Sequence[Field], *, size: int, contract: ModelContract,
                 selection: SelectionConfig, augment: bool = True, margin: int = 32,
                 share: Sequence[float] | None = None) -> None:
        if not fields:
            raise StreamdetValueError("no training field")
        unknown = [n for n in contract.param_names if n not in _PARAM_VALUES]
        if unknown:
            raise StreamdetValueError(f"cannot make targets for parameter(s) {unknown}; known: "
                                      f"{list(_PARAM_VALUES)}")
        self.fields = list(fields)
        self.size = int(size)
        self.contract = contract
        self.selection = selection
        self.augment = augment
        self.margin = int(margin)
        areas = []
        for f in self.fields:
            y0, y1, x0, x1 = f.region
            areas.append(max(y1 - y0, 1) * max(x1 - x0, 1))
        if share is not None:
            w = np.asarray(share, np.float64)
            if w.shape != (len(self.fields),) or not np.all(np.isfinite(w)) or np.any(w < 0) \
                    or w.sum() <= 0:
                raise StreamdetValueError(f"share must hold {len(self.fields)} non-negative "
                                          f"weights, not all zero; got {list(share)!r}")
            areas = list(w)
        self._p = np.asarray(areas, np.float64) / float(sum(areas))
        q = len(contract.param_channels)
        self._pa_cols = np.zeros(q, bool)
        col = 0
        for spec in contract.params:
            n = len(spec.channels)
            if spec.name == "pa":
                self._pa_cols[col:col + n] = True
            col += n

    def _origin(self, rng: np.random.Generator, field: Field) -> tuple[int, int]:
        y0, y1, x0, x1 = field.region
        s = self.size
        oy = int(rng.integers(y0, max(y1 - s, y0) + 1))
        ox = int(rng.integers(x0, max(x1 - s, x0) + 1))
        return oy, ox

    def cutout(self, field: Field, oy: int, ox: int, *, flip_x: bool = False,
               flip_y: bool = False, rot: int = 0) -> tuple[NDArray[np.float32], CutoutTruth]:
        """One normalised cutout at ``(oy, ox)`` with the given augmentation, and its truth."""
        s, m = self.size, self.margin
        pix = normalise(field.cutout(oy, ox, s), self.contract)
        t = field.truth
        lo = int(np.searchsorted(t.y, oy - m, side="left"))
        hi = int(np.searchsorted(t.y, oy + s + m, side="left"))
        idx = lo + np.flatnonzero((t.x[lo:hi] >= ox - m) & (t.x[lo:hi] < ox + s + m)
                                  & (t.snr[lo:hi] >= self.selection.ignore_snr_min))
        src = t.take(idx)
        img, x, y, phi = augment(pix, src.x - ox, src.y - oy, src.phi, flip_x=flip_x,
                                 flip_y=flip_y, rot=rot)
        return img, self._truth(field, src, x, y, phi)

    def _truth(self, field: Field, src: FieldTruth, x: FloatArray, y: FloatArray,
               phi: FloatArray) -> CutoutTruth:
        sel_cfg = self.selection
        s = self.size
        major, minor = visible_extent(src.bmaj_g, src.bmin_g, beam_arcsec=field.beam_arcsec,
                                      pixel_arcsec=field.pixel_arcsec,
                                      factor=sel_cfg.box_factor, min_px=sel_cfg.box_min_px)
        boxes = ellipse_boxes(x, y, major, minor, phi)
        inside = (x >= -0.5) & (x < s - 0.5) & (y >= -0.5) & (y < s - 0.5)
        selected = inside & (src.snr >= sel_cfg.snr_min)
        values = {"flux": src.flux * src.pb, "bmaj": src.bmaj_g, "bmin": src.bmin_g,
                  "pa": np.degrees(phi) - 90.0}
        table = np.stack([values[n] for n in self.contract.param_names], axis=1) \
            if self.contract.params else np.zeros((len(src), 0))
        params = encode_params(table, self.contract)
        pw = np.ones_like(params)
        if self._pa_cols.any():
            pw[:, self._pa_cols] = pa_weight(major, minor)[:, None]
        weight = snr_weight(src.snr, ref=sel_cfg.snr_ref, power=sel_cfg.snr_power)
        return CutoutTruth(boxes=boxes, selected=selected, params=params, param_weight=pw,
                           weight=weight, snr=src.snr.copy())

    def sample(self, rng: np.random.Generator, batch: int
               ) -> tuple[NDArray[np.float32], list[CutoutTruth]]:
        """A batch of random cutouts.

        Returns
        -------
        images : (batch, 1, size, size) float32
            Normalised pixels.
        truths : list of CutoutTruth
        """
        images = np.empty((batch, 1, self.size, self.size), np.float32)
        truths = []
        for i in range(batch):
            field = self.fields[int(rng.choice(len(self.fields), p=self._p))]
            oy, ox = self._origin(rng, field)
            flips = rng.integers(0, 2, size=2) if self.augment else (0, 0)
            rot = int(rng.integers(0, 4)) if self.augment else 0
            img, truth = self.cutout(field, oy, ox, flip_x=bool(flips[0]),
                                     flip_y=bool(flips[1]), rot=rot)
            images[i, 0] = img
            truths.append(truth)
        return images, truths
