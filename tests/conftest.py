"""Shared fixtures: small seeded FITS files written byte by byte (header cards + big-endian
data + padding), so every quirk (BLANK on float data, CTYPE3/4 on a 2-axis image, BSCALE/
BZERO on integers, truncation) is exactly what the test asks for."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from astropy.io import fits
from numpy.typing import NDArray

BLOCK = 2880


@dataclass(frozen=True)
class FitsCase:
    """A FITS file written for a test and what reading it must give."""

    path: Path
    expected: NDArray[np.float32]  # (y, x) or (freq, y, x), native float32
    header: fits.Header


def sky_cards(nx: int, ny: int, *, pixel_deg: float = 1.6667e-4) -> list[tuple[str, Any]]:
    """Celestial WCS cards of an SDC1-like field (SIN projection at RA 0, Dec -30)."""
    return [("CTYPE1", "RA---SIN"), ("CRVAL1", 0.0), ("CDELT1", -pixel_deg),
            ("CRPIX1", nx / 2 + 1.0), ("CUNIT1", "deg"),
            ("CTYPE2", "DEC--SIN"), ("CRVAL2", -30.0), ("CDELT2", pixel_deg),
            ("CRPIX2", ny / 2 + 1.0), ("CUNIT2", "deg")]


def beam_cards() -> list[tuple[str, Any]]:
    """Restoring beam 1.5" x 1.2" at PA 30 deg, Jy/beam."""
    return [("BMAJ", 1.5 / 3600), ("BMIN", 1.2 / 3600), ("BPA", 30.0), ("BUNIT", "JY/BEAM")]


def write_fits(path: Path, raw: NDArray[Any], cards: Sequence[tuple[str, Any]] = (), *,
               naxes: Sequence[int] | None = None, truncate: int = 0) -> fits.Header:
    """Write a one-HDU FITS file by hand.

    ``raw`` is written in C order as big-endian bytes of its own kind (BITPIX from its
    dtype); ``naxes`` (NAXIS1..n) defaults to ``raw.shape`` reversed; ``truncate`` drops
    that many bytes from the end (padding included). Returns the header as written (values
    as formatted in the file).
    """
    bitpix = {np.dtype("u1"): 8, np.dtype("i2"): 16, np.dtype("i4"): 32,
              np.dtype("f4"): -32, np.dtype("f8"): -64}[raw.dtype.newbyteorder("=")]
    axes = list(naxes) if naxes is not None else list(raw.shape[::-1])
    header = fits.Header()
    header["SIMPLE"] = True
    header["BITPIX"] = bitpix
    header["NAXIS"] = len(axes)
    for i, n in enumerate(axes, start=1):
        header[f"NAXIS{i}"] = n
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for key, value in cards:
            header[key] = value
    data = raw.astype(raw.dtype.newbyteorder(">")).tobytes()
    blob = header.tostring().encode("ascii") + data + b"\0" * (-len(data) % BLOCK)
    path.write_bytes(blob[:len(blob) - truncate])
    return fits.Header.fromstring(header.tostring())  # as a reader of the file sees it


def _noise(rng: np.random.Generator, shape: tuple[int, ...]) -> NDArray[np.float32]:
    img = rng.normal(0.0, 4e-7, shape).astype(np.float32)
    flat = img.reshape(-1)
    flat[rng.choice(flat.size, 40, replace=False)] += np.float32(1e-3)
    return img


@pytest.fixture
def fits_2d(tmp_path: Path) -> FitsCase:
    """300 x 260 float32 image with NaNs, celestial WCS, beam, BUNIT."""
    rng = np.random.default_rng(1)
    img = _noise(rng, (300, 260))
    img[5:9, 7:20] = np.nan
    path = tmp_path / "img2d.fits"
    header = write_fits(path, img, [*sky_cards(260, 300), *beam_cards()])
    return FitsCase(path, img, header)


@pytest.fixture
def fits_sdc1(tmp_path: Path) -> FitsCase:
    """SDC1-style 4-axis image (RA---SIN, DEC--SIN, FREQ, STOKES), last two of length 1."""
    rng = np.random.default_rng(2)
    img = _noise(rng, (200, 230))
    path = tmp_path / "sdc1.fits"
    cards = [*sky_cards(230, 200, pixel_deg=0.6 / 3600), *beam_cards(),
             ("CTYPE3", "FREQ"), ("CRVAL3", 5.6e8), ("CDELT3", 1e6), ("CRPIX3", 1.0),
             ("CUNIT3", "Hz"), ("CTYPE4", "STOKES"), ("CRVAL4", 1.0), ("CDELT4", 1.0),
             ("CRPIX4", 1.0)]
    header = write_fits(path, img.reshape(1, 1, 200, 230), cards)
    return FitsCase(path, img, header)


@pytest.fixture
def fits_cube(tmp_path: Path) -> FitsCase:
    """20 x 70 x 90 float32 cube, FREQ axis (950 MHz + 30 kHz channels)."""
    rng = np.random.default_rng(3)
    cube = _noise(rng, (20, 70, 90))
    cube[3, 10:12, 50:60] = np.nan
    path = tmp_path / "cube.fits"
    cards = [*sky_cards(90, 70, pixel_deg=2.8 / 3600), *beam_cards(),
             ("CTYPE3", "FREQ"), ("CRVAL3", 9.5e8), ("CDELT3", 3e4), ("CRPIX3", 1.0),
             ("CUNIT3", "Hz")]
    header = write_fits(path, cube, cards)
    return FitsCase(path, cube, header)


@pytest.fixture
def fits_int16(tmp_path: Path) -> FitsCase:
    """int16 image with BSCALE/BZERO and BLANK."""
    rng = np.random.default_rng(4)
    raw = rng.integers(-32768, 32767, (130, 150), dtype=np.int16)
    raw[raw == -32768] = 0
    raw[rng.random(raw.shape) < 0.02] = -32768
    bscale, bzero = 3.0e-6, 0.01
    expected = (raw.astype(np.float64) * bscale + bzero).astype(np.float32)
    expected[raw == -32768] = np.nan
    path = tmp_path / "int16.fits"
    header = write_fits(path, raw, [*sky_cards(150, 130), ("BSCALE", bscale),
                                    ("BZERO", bzero), ("BLANK", -32768)])
    return FitsCase(path, expected, header)


@pytest.fixture
def fits_quirks(tmp_path: Path) -> FitsCase:
    """SDC1 cutout quirks: NAXIS=2 with CTYPE3/CTYPE4 cards, BLANK on float data, NaNs."""
    rng = np.random.default_rng(5)
    img = _noise(rng, (90, 110))
    img[rng.random(img.shape) < 0.01] = np.nan
    path = tmp_path / "quirks.fits"
    cards = [*sky_cards(110, 90), *beam_cards(), ("CTYPE3", "FREQ"), ("CRVAL3", 1.4e9),
             ("CDELT3", 1e6), ("CRPIX3", 1.0), ("CTYPE4", "STOKES"), ("CRVAL4", 1.0),
             ("CDELT4", 1.0), ("CRPIX4", 1.0), ("BLANK", -1)]
    header = write_fits(path, img, cards)
    return FitsCase(path, img, header)


@pytest.fixture
def fits_nowcs(tmp_path: Path) -> FitsCase:
    """float32 image without any WCS cards."""
    img = np.random.default_rng(6).normal(size=(40, 50)).astype(np.float32)
    path = tmp_path / "nowcs.fits"
    header = write_fits(path, img)
    return FitsCase(path, img, header)
