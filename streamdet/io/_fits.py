"""Private FITS helpers: locate an image HDU without reading its data, read blocks of it.

The data section of a FITS image HDU is one contiguous big-endian array whose offset and
length follow from the headers. :func:`scan_fits` walks the headers (reading only them)
and checks that the file holds the whole data section; :func:`read_block` reads one
rectangular block with ``readinto`` at computed offsets (no memory map, so the page cache
never counts towards the resident set) and returns native float32 with BSCALE/BZERO
applied and BLANK pixels set to NaN. :func:`sky_metadata` interprets the header: the
celestial (and, for cubes, spectral) WCS, the restoring beam, the frequency and BUNIT.

Every card streamdet interprets is checked before use (:func:`scan_fits`): a card that
cannot be parsed, a value of the wrong type, a negative axis length, BSCALE = 0 or non-
finite scaling, a non-positive or non-finite beam, a non-finite WCS number or a zero or
absurd celestial pixel raises :class:`~streamdet.errors.InvalidFITSError` naming the
keyword and its value.

Axes: FITS axes 1 and 2 are x and y. Degenerate (length-1) axes beyond them are dropped;
at most one longer axis may remain, which becomes the leading ``freq`` axis.
"""

from __future__ import annotations

import io
import math
import os
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS
from numpy.typing import NDArray

from ..errors import InvalidFITSError, StreamdetFileNotFoundError, StreamdetValueError

__all__ = [
    "FitsImage",
    "SkyMeta",
    "read_block",
    "scan_fits",
    "sky_metadata",
    "wcs_from_cards",
    "wcs_to_cards",
]

_BLOCK = 2880
_RAW_DTYPES: dict[int, np.dtype[Any]] = {
    8: np.dtype("u1"), 16: np.dtype(">i2"), 32: np.dtype(">i4"), 64: np.dtype(">i8"),
    -32: np.dtype(">f4"), -64: np.dtype(">f8")}
_CONVERT_STEP = 1 << 20  # elements converted at a time (bounds float64 temporaries to 8 MiB)
_AIPS_BEAM = re.compile(r"BMAJ\s*=\s*([-+0-9.EeDd]+)\s+BMIN\s*=\s*([-+0-9.EeDd]+)"
                        r"\s+BPA\s*=\s*([-+0-9.EeDd]+)")

_F32_MAX = float(np.finfo(np.float32).max)
# cards streamdet interprets: one that cannot be parsed is refused by name
_USED = re.compile(
    r"^(SIMPLE|XTENSION|BITPIX|NAXIS[0-9]*|PCOUNT|GCOUNT|GROUPS|ZIMAGE|BSCALE|BZERO|BLANK"
    r"|BUNIT|BMAJ|BMIN|BPA|WCSAXES[A-Z]?|(CRVAL|CRPIX|CDELT|CROTA|CTYPE|CUNIT)[0-9]+[A-Z]?"
    r"|(PC|CD|PV|PS)[0-9]+_[0-9]+[A-Z]?|(LONPOLE|LATPOLE|RESTFRQ|RESTFREQ|RESTWAV|EQUINOX"
    r"|EPOCH|MJD-OBS|RADESYS|RADECSYS|SPECSYS)[A-Z]?)$")
_WCS_REAL = re.compile(r"^((CRVAL|CRPIX|CDELT|CROTA)[0-9]+|(PC|CD|PV)[0-9]+_[0-9]+|LONPOLE"
                       r"|LATPOLE|RESTFRQ|RESTFREQ|RESTWAV|EQUINOX|EPOCH|MJD-OBS)[A-Z]?$")
_WCS_TEXT = re.compile(r"^((CTYPE|CUNIT)[0-9]+|PS[0-9]+_[0-9]+|RADESYS|RADECSYS|SPECSYS)"
                       r"[A-Z]?$")

Region = tuple[tuple[int, int], ...]


def _show(value: Any) -> str:
    """A card value as it reads in a header: strings quoted, numbers as numbers."""
    if isinstance(value, str):
        return f"'{value}'"
    if isinstance(value, bool):
        return "T" if value else "F"
    return repr(value) if not isinstance(value, float | np.floating) else repr(float(value))


def _bad(path: Path, index: int, key: str, value: str, why: str) -> InvalidFITSError:
    return InvalidFITSError(f"{str(path)!r}: HDU {index}: {key} = {value} {why}")


def _raw_text(card: fits.Card) -> str:
    """The value text of a card as written (for a card that cannot be parsed)."""
    image = str(getattr(card, "_image", None) or "")
    text = image[10:] if image[8:10] == "= " else image[8:]
    return text.split(" /")[0].strip() or "(no value)"


def _is_real(value: Any) -> bool:
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(
        value, bool | np.bool_)


def _is_int(value: Any) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool | np.bool_)


def _check_parsable(header: fits.Header, path: Path, index: int) -> None:
    """Refuse a card streamdet interprets whose value cannot be parsed (``NAN``, ``INF``,
    unquoted text...); let astropy fix the others (they are only kept)."""
    for card in header.cards:
        try:
            card.value  # noqa: B018 - raises VerifyError on an unparsable card
        except Exception:
            if _USED.match(card.keyword):
                raise _bad(path, index, card.keyword, _raw_text(card),
                           "cannot be parsed (not a FITS number, string or logical)") from None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        header.tostring()  # fixes the other unparsable cards in place, silently


def _int_card(header: fits.Header, key: str, default: int | None, path: Path, index: int, *,
              minimum: int = 0) -> int:
    value = header.get(key, default)
    if value is None:
        raise InvalidFITSError(f"{str(path)!r}: HDU {index}: the {key} card is missing")
    if not _is_int(value) or value < minimum:
        raise _bad(path, index, key, _show(value), f"is not an integer >= {minimum}")
    return int(value)


def _real_card(header: fits.Header, key: str, default: float, path: Path, index: int) -> float:
    value = header.get(key, default)
    if not _is_real(value) or not math.isfinite(float(value)):
        raise _bad(path, index, key, _show(value), "is not a finite number")
    return float(value)


@dataclass(frozen=True)
class FitsImage:
    """Where an image HDU's pixels lie in a FITS file, and how to decode them.

    Attributes
    ----------
    path : pathlib.Path
        The FITS file.
    hdu : int
        Index of the HDU (0 = primary).
    header : astropy.io.fits.Header
        The HDU's full header.
    bitpix : int
        FITS BITPIX (8, 16, 32, 64, -32, -64).
    data_offset : int
        Byte offset of the data section in the file.
    naxes : tuple of int
        NAXIS1..NAXISn (FITS order: x first).
    shape : tuple of int
        Output shape, ``(ny, nx)`` or ``(nfreq, ny, nx)``.
    dims : tuple of str
        ``("y", "x")`` or ``("freq", "y", "x")``.
    extra_axis : int or None
        FITS axis number (1-based, >= 3) kept as ``freq``; None for an image.
    bscale, bzero : float
        Linear scaling: value = bzero + bscale * raw.
    blank : int or None
        Raw value of blank pixels (integer data only).
    file_size : int
        Size of the file in bytes when scanned.
    mtime_ns : int
        Modification time of the file when scanned (ns).
    """

    path: Path
    hdu: int
    header: fits.Header
    bitpix: int
    data_offset: int
    naxes: tuple[int, ...]
    shape: tuple[int, ...]
    dims: tuple[str, ...]
    extra_axis: int | None
    bscale: float
    bzero: float
    blank: int | None
    file_size: int
    mtime_ns: int

    @property
    def raw_dtype(self) -> np.dtype[Any]:
        """Big-endian dtype of the data on disk."""
        return _RAW_DTYPES[self.bitpix]

    @property
    def scaled(self) -> bool:
        """True when BSCALE/BZERO are not the identity."""
        return self.bscale != 1.0 or self.bzero != 0.0


@dataclass(frozen=True)
class SkyMeta:
    """What the header says about the sky.

    Attributes
    ----------
    wcs : astropy.wcs.WCS or None
        Celestial WCS (x, y), plus the spectral axis for a cube (x, y, freq); None when the
        header has no celestial WCS.
    beam : tuple of float or None
        Restoring beam (bmaj, bmin, bpa) in degrees.
    freq_hz : float or None
        Frequency of a 2-D image (from a degenerate FREQ axis), Hz.
    bunit : str or None
        BUNIT, e.g. ``"JY/BEAM"``.
    channels : ndarray or None
        World coordinate of each plane of a cube along a spectral axis, ``(nfreq,)``.
    channel_unit : str or None
        Unit of ``channels`` (``"Hz"`` for FREQ).
    problem : str or None
        Why there is no celestial WCS, when there is none.
    """

    wcs: WCS | None
    beam: tuple[float, float, float] | None
    freq_hz: float | None
    bunit: str | None
    channels: NDArray[np.float64] | None = None
    channel_unit: str | None = None
    problem: str | None = None


def _data_nbytes(header: fits.Header, *, primary: bool, path: Path, index: int) -> int:
    _check_parsable(header, path, index)
    bitpix = _int_card(header, "BITPIX", None, path, index, minimum=-64)
    if bitpix not in _RAW_DTYPES:
        raise _bad(path, index, "BITPIX", str(bitpix), "is not a FITS value (8, 16, 32, 64, "
                   "-32 or -64)")
    naxis = _int_card(header, "NAXIS", None, path, index)
    if naxis > 999:
        raise _bad(path, index, "NAXIS", str(naxis), "is more than 999")
    if naxis == 0:
        return 0
    sizes = [_int_card(header, f"NAXIS{i}", None, path, index) for i in range(1, naxis + 1)]
    if primary and header.get("GROUPS", False) and sizes[0] == 0:
        sizes = sizes[1:]
    gcount = _int_card(header, "GCOUNT", 1, path, index)
    pcount = _int_card(header, "PCOUNT", 0, path, index)
    return abs(bitpix) // 8 * gcount * (pcount + math.prod(sizes))


def _iter_hdus(f: IO[bytes], path: Path) -> Iterator[tuple[int, fits.Header, int, int]]:
    """Yield ``(index, header, data_offset, data_nbytes)`` of each HDU, reading headers only."""
    offset = 0
    index = 0
    size = os.fstat(f.fileno()).st_size
    while True:
        if index and offset >= size:
            return  # the end of the file (an absurd data size of the HDU before included)
        f.seek(offset)
        first = f.read(80)
        if index == 0:
            if first[:2] == b"\x1f\x8b":
                raise InvalidFITSError(f"{str(path)!r} is gzip-compressed; streaming needs an "
                                       "uncompressed FITS file (gunzip it first)")
            if not first.startswith(b"SIMPLE  ="):
                raise InvalidFITSError(f"{str(path)!r} is not a FITS file (no SIMPLE card)")
        elif not first.startswith(b"XTENSION"):
            return  # end of file, or trailing bytes that are not an extension
        f.seek(offset)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                header = fits.Header.fromfile(f, endcard=True, padding=True)
            data_offset = f.tell()
            nbytes = _data_nbytes(header, primary=index == 0, path=path, index=index)
        except InvalidFITSError:
            raise
        except (OSError, ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
            raise InvalidFITSError(f"{str(path)!r}: HDU {index} has an unreadable or truncated "
                                   f"header ({exc})") from None
        yield index, header, data_offset, nbytes
        offset = data_offset + -(-nbytes // _BLOCK) * _BLOCK
        index += 1


def _hdu_kind(header: fits.Header, index: int) -> str:
    if index == 0:
        return "random groups" if header.get("GROUPS", False) else "image"
    xt = str(header.get("XTENSION", "")).strip().upper()
    if xt == "IMAGE":
        return "image"
    if xt == "BINTABLE" and header.get("ZIMAGE", False):
        return "compressed image"
    return xt.lower() or "unknown"


def scan_fits(path: str | os.PathLike[str], *, hdu: int | None = None) -> FitsImage:
    """Locate the image HDU of a FITS file and check that its data are all there.

    Parameters
    ----------
    path : path-like
        FITS file (uncompressed).
    hdu : int, optional
        HDU index; default: the first HDU that holds image data.

    Returns
    -------
    FitsImage

    Raises
    ------
    StreamdetFileNotFoundError
        The file does not exist.
    InvalidFITSError
        Not FITS, truncated, no image HDU, 1-D data, or unsupported axes.
    """
    p = Path(path)
    if not p.exists():
        raise StreamdetFileNotFoundError(f"input {str(p)!r} does not exist")
    if p.is_dir():
        raise InvalidFITSError(f"{str(p)!r} is a directory, not a FITS file")
    if hdu is not None and (isinstance(hdu, bool) or int(hdu) != hdu or hdu < 0):
        raise StreamdetValueError(f"hdu must be an integer >= 0, got {hdu!r}")
    st = p.stat()
    found: tuple[int, fits.Header, int, int] | None = None
    kinds: list[str] = []
    with open(p, "rb") as f:
        for index, header, offset, nbytes in _iter_hdus(f, p):
            kind = _hdu_kind(header, index)
            kinds.append(kind)
            if hdu is not None:
                if index == hdu:
                    if kind != "image":
                        raise InvalidFITSError(f"{str(p)!r}: HDU {hdu} is not an image HDU "
                                               f"({kind})")
                    if nbytes == 0:
                        raise InvalidFITSError(f"{str(p)!r}: HDU {hdu} holds no data (NAXIS=0)")
                    found = (index, header, offset, nbytes)
                    break
            elif kind == "image" and nbytes > 0:
                found = (index, header, offset, nbytes)
                break
    if found is None:
        if hdu is not None:
            raise InvalidFITSError(f"{str(p)!r} has no HDU {hdu} (it has {len(kinds)})")
        hint = ("; tile-compressed images are not supported (decompress with funpack first)"
                if "compressed image" in kinds else "")
        raise InvalidFITSError(f"{str(p)!r} has no image HDU with data "
                               f"(HDUs: {', '.join(kinds) or 'none'}){hint}")
    index, header, offset, nbytes = found
    img = _describe(p, index, header, offset, st)  # its cards checked first, by name
    if offset + nbytes > st.st_size:
        raise InvalidFITSError(f"{str(p)!r} is truncated: HDU {index} needs {nbytes} data bytes "
                               f"from offset {offset} but the file ends {st.st_size - offset} "
                               "bytes after it")
    return img


def _describe(p: Path, index: int, header: fits.Header, offset: int,
              st: os.stat_result) -> FitsImage:
    bitpix = int(header["BITPIX"])
    naxes = tuple(int(header[f"NAXIS{i}"]) for i in range(1, int(header["NAXIS"]) + 1))
    for key, want in (("GCOUNT", 1), ("PCOUNT", 0)):
        if key in header and header[key] != want:
            raise _bad(p, index, key, _show(header[key]), f"in an image HDU (must be {want})")
    if len(naxes) < 2:
        raise InvalidFITSError(f"{str(p)!r}: HDU {index} holds 1-D data (NAXIS={len(naxes)}, "
                               f"shape {naxes}); need an image (2-D) or a cube (3-D)")
    extra = [i + 1 for i, n in enumerate(naxes) if i >= 2 and n > 1]
    if len(extra) > 1:
        raise InvalidFITSError(f"{str(p)!r}: HDU {index} has {len(extra)} non-degenerate axes "
                               f"beyond x and y (NAXISn = {naxes}); only one (freq) is supported")
    extra_axis = extra[0] if extra else None
    if extra_axis is not None:
        ctype = str(header.get(f"CTYPE{extra_axis}", "")).strip().upper()
        if ctype == "STOKES":
            raise InvalidFITSError(f"{str(p)!r}: HDU {index} has {naxes[extra_axis - 1]} Stokes "
                                   "planes; extract one Stokes parameter first")
    shape: tuple[int, ...] = (naxes[1], naxes[0])
    dims: tuple[str, ...] = ("y", "x")
    if extra_axis is not None:
        shape = (naxes[extra_axis - 1], *shape)
        dims = ("freq", *dims)
    bscale, bzero = _scaling(header, p, index, bitpix)
    blank_card = header.get("BLANK") if bitpix > 0 else None  # BLANK on float data: ignored
    if blank_card is not None and not _is_int(blank_card):
        raise _bad(p, index, "BLANK", _show(blank_card), "is not an integer")
    blank = int(blank_card) if blank_card is not None else None
    _check_sky_cards(header, p, index, extra_axis)
    return FitsImage(path=p, hdu=index, header=header, bitpix=bitpix, data_offset=offset,
                     naxes=naxes, shape=shape, dims=dims, extra_axis=extra_axis, bscale=bscale,
                     bzero=bzero, blank=blank, file_size=st.st_size, mtime_ns=st.st_mtime_ns)


def _scaling(header: fits.Header, p: Path, index: int, bitpix: int) -> tuple[float, float]:
    """BSCALE and BZERO, checked: finite, BSCALE not 0, scaled values within float32."""
    bscale = _real_card(header, "BSCALE", 1.0, p, index)
    bzero = _real_card(header, "BZERO", 0.0, p, index)
    if bscale == 0.0:
        raise _bad(p, index, "BSCALE", _show(bscale), "would make every pixel equal BZERO")
    if bitpix > 0:  # the largest scaled value of the integer type must fit float32
        raw_max = 255.0 if bitpix == 8 else 2.0 ** (bitpix - 1)
        if abs(bzero) + abs(bscale) * raw_max > _F32_MAX:
            raise _bad(p, index, "BSCALE", f"{_show(bscale)} with BZERO = {_show(bzero)}",
                       f"scales {bitpix}-bit integers beyond the float32 range")
    for key, value in (("BSCALE", bscale), ("BZERO", bzero)):
        if abs(value) > _F32_MAX:
            raise _bad(p, index, key, _show(value), "is beyond the float32 range")
    return bscale, bzero


def _check_sky_cards(header: fits.Header, p: Path, index: int, extra_axis: int | None) -> None:
    """WCS numbers finite, WCS texts and BUNIT strings, no zero CDELT on a kept axis, beam
    cards sane (by name)."""
    for card in header.cards:
        key, value = card.keyword, card.value
        if _WCS_REAL.match(key) and (not _is_real(value) or not math.isfinite(float(value))):
            raise _bad(p, index, key, _show(value), "is not a finite number")
        if (_WCS_TEXT.match(key) or key == "BUNIT") and not isinstance(value, str):
            raise _bad(p, index, key, _show(value), "is not a string")
    if not any(re.match(r"^CD[0-9]+_[0-9]+$", k) for k in header):  # CDELT not overridden
        for axis in (1, 2) if extra_axis is None else (1, 2, extra_axis):
            key = f"CDELT{axis}"
            if key in header and header[key] == 0:
                what = "a pixel" if axis < 3 else "a channel"
                raise _bad(p, index, key, _show(header[key]), f"makes {what} of zero size")
    _beam(header, p, index)


def _read_exact(f: io.RawIOBase, offset: int, buf: memoryview, path: Path) -> None:
    f.seek(offset)
    done = 0
    while done < len(buf):
        n = f.readinto(buf[done:])
        if not n:
            raise InvalidFITSError(f"{str(path)!r} is truncated: no data at byte "
                                   f"{offset + done}")
        done += n


def read_block(img: FitsImage, region: Region) -> NDArray[np.float32]:
    """Read one block of an image or cube as native float32.

    Parameters
    ----------
    img : FitsImage
        From :func:`scan_fits`.
    region : tuple of (start, stop)
        One pair per output axis (``img.dims`` order), 0-based, stop exclusive.

    Returns
    -------
    ndarray, float32, shape ``[stop - start for each axis]``
        BSCALE/BZERO applied, BLANK pixels (integer data) and NaN as NaN.
    """
    if len(region) != len(img.shape):
        raise StreamdetValueError(f"region {region} does not match shape {img.shape}")
    for (a, b), n in zip(region, img.shape, strict=True):
        if not 0 <= a <= b <= n:
            raise StreamdetValueError(f"region {region} lies outside shape {img.shape}")
    planes = range(*region[0]) if len(region) == 3 else range(1)
    (y0, y1), (x0, x1) = region[-2], region[-1]
    ny, nx = img.shape[-2], img.shape[-1]
    raw = np.empty((len(planes), y1 - y0, x1 - x0), dtype=img.raw_dtype)
    if raw.size:
        isz = raw.itemsize
        rows = raw.view(np.uint8)
        with open(img.path, "rb", buffering=0) as f:
            for i, plane in enumerate(planes):
                base = img.data_offset + plane * ny * nx * isz
                if x0 == 0 and x1 == nx:  # whole rows: one contiguous read per plane
                    _read_exact(f, base + y0 * nx * isz, memoryview(rows[i]).cast("B"), img.path)
                else:
                    for j, y in enumerate(range(y0, y1)):
                        _read_exact(f, base + (y * nx + x0) * isz, memoryview(rows[i, j]),
                                    img.path)
    out = _to_float32(raw, img)
    return out.reshape(tuple(b - a for a, b in region))


def _to_float32(raw: NDArray[Any], img: FitsImage) -> NDArray[np.float32]:
    if img.bitpix == -32 and not img.scaled:
        if not raw.dtype.isnative:
            raw.byteswap(inplace=True)
            raw = raw.view(raw.dtype.newbyteorder("="))
        return raw
    out = np.empty(raw.shape, np.float32)
    src = raw.reshape(-1)
    dst = out.reshape(-1)
    with np.errstate(over="ignore"):  # float64 beyond float32 becomes +-inf, as a cast does
        _convert_into(src, dst, img)
    return out


def _convert_into(src: NDArray[Any], dst: NDArray[np.float32], img: FitsImage) -> None:
    for s in range(0, src.size, _CONVERT_STEP):
        piece = src[s:s + _CONVERT_STEP]
        if img.scaled:
            vals = piece.astype(np.float64)
            vals *= img.bscale
            vals += img.bzero
            dst[s:s + _CONVERT_STEP] = vals
        else:
            dst[s:s + _CONVERT_STEP] = piece
        if img.blank is not None:
            dst[s:s + _CONVERT_STEP][piece == img.blank] = np.nan


def _header_wcs(header: fits.Header) -> WCS:
    """The header's full WCS, with astropy's fix-up warnings silenced and no pixel shape
    (a 2-axis image may carry 4 WCS axes: a shape of 2 would break ``WCS.sub``)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        wcs = WCS(header)
    wcs.pixel_shape = None
    return wcs


def wcs_to_cards(wcs: WCS) -> dict[str, Any]:
    """WCS as a JSON-able mapping of FITS header cards, numbers at full double precision.

    ``WCS.to_header`` prints about 14 significant digits; the numeric cards it writes are
    replaced by the exact values of the ``wcsprm`` (JSON keeps doubles exactly), so the
    WCS rebuilt by :func:`wcs_from_cards` equals this one.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hdr = wcs.to_header()
    w = wcs.wcs
    exact: dict[str, float] = {"LONPOLE": w.lonpole, "LATPOLE": w.latpole,
                               "RESTFRQ": w.restfrq, "RESTWAV": w.restwav}
    pc, cdelt = w.get_pc(), w.get_cdelt()
    for i in range(wcs.naxis):
        exact[f"CRPIX{i + 1}"] = w.crpix[i]
        exact[f"CRVAL{i + 1}"] = w.crval[i]
        exact[f"CDELT{i + 1}"] = cdelt[i]
        for j in range(wcs.naxis):
            exact[f"PC{i + 1}_{j + 1}"] = pc[i, j]
    for i, m, value in w.get_pv():
        exact[f"PV{i}_{m}"] = value
    cards: dict[str, Any] = {}
    for card in hdr.cards:
        value = exact.get(card.keyword, card.value)
        if isinstance(value, float | np.floating):
            value = float(value)
            if not math.isfinite(value):
                continue
        if isinstance(value, bool | int | float | str):
            cards[card.keyword] = value
    return cards


def wcs_from_cards(cards: dict[str, Any], *, shape: tuple[int, ...] | None = None) -> WCS:
    """Rebuild a WCS from :func:`wcs_to_cards` output; ``shape`` (numpy order) sets its size."""
    header = fits.Header()
    for key, value in cards.items():
        header[key] = value
    wcs = _header_wcs(header)
    if shape is not None and len(shape) == wcs.naxis:
        wcs.array_shape = shape
    return wcs


def _beam(header: fits.Header, p: Path, index: int) -> tuple[float, float, float] | None:
    """The restoring beam (deg): BMAJ/BMIN/BPA, else the last AIPS CLEAN line in HISTORY.

    Raises
    ------
    InvalidFITSError
        BMAJ or BMIN not a positive number below 180 deg, BPA not finite (a lone BMAJ
        or BMIN is checked, then ignored).
    """
    sizes = {}
    for key in ("BMAJ", "BMIN"):
        if key in header:
            value = header[key]
            if not _is_real(value) or not 0.0 < float(value) < 180.0:
                raise _bad(p, index, key, _show(value), "is not a beam size (a number of "
                           "degrees > 0 and < 180)")
            sizes[key] = float(value)
    bpa = _real_card(header, "BPA", 0.0, p, index)
    if len(sizes) == 2:
        return (sizes["BMAJ"], sizes["BMIN"], bpa)
    found: tuple[float, float, float] | None = None
    for line in header.get("HISTORY", []):  # AIPS: "CLEAN BMAJ= 1.3E-04 BMIN= ... BPA= ..."
        m = _AIPS_BEAM.search(str(line))
        if m:
            try:
                vals = [float(v.replace("D", "E").replace("d", "e")) for v in m.groups()]
            except ValueError:
                continue
            if 0.0 < vals[0] < 180.0 and 0.0 < vals[1] < 180.0 and math.isfinite(vals[2]):
                found = (vals[0], vals[1], vals[2])
    return found


def _check_pixel_scale(header: fits.Header, wcs: WCS, p: Path, index: int) -> None:
    """Refuse a celestial pixel of zero size, a singular or non-finite pixel matrix, or a
    pixel larger than 180 deg, naming the cards that set it."""
    matrix_keys = [k for k in header if re.match(r"^(CD|PC)[12]_[12]$", k)]
    try:
        with np.errstate(all="ignore"):
            m = np.asarray(wcs.celestial.pixel_scale_matrix, dtype=np.float64)
            det = float(np.linalg.det(m))
            scales = np.sqrt((m * m).sum(axis=0))
        ok = bool(np.isfinite(m).all() and math.isfinite(det) and det != 0.0
                  and (scales <= 180.0).all())
    except Exception:  # wcslib refuses some matrices outright
        ok = False
    if not ok:
        cards = ", ".join(f"{k} = {_show(header[k])}"
                          for k in ["CDELT1", "CDELT2", *matrix_keys] if k in header)
        raise InvalidFITSError(f"{str(p)!r}: HDU {index}: the celestial pixel scale "
                               f"({cards or 'no CDELT/CD cards'}) is not usable: it must be "
                               "finite, not singular, and at most 180 deg a pixel")


def sky_metadata(img: FitsImage) -> SkyMeta:
    """Celestial/spectral WCS, beam, frequency and BUNIT of an image HDU.

    Raises
    ------
    InvalidFITSError
        The celestial axes are not FITS axes 1 and 2.
    """
    header = img.header
    bunit_card = header.get("BUNIT")
    bunit = (str(bunit_card).strip() or None) if bunit_card is not None else None
    beam = _beam(header, img.path, img.hdu)
    try:
        full = _header_wcs(header)
    except Exception as exc:  # astropy raises many types on malformed WCS cards
        return SkyMeta(wcs=None, beam=beam, freq_hz=None, bunit=bunit,
                       problem=f"the WCS cards cannot be parsed ({exc})")
    lng, lat, spec = int(full.wcs.lng), int(full.wcs.lat), int(full.wcs.spec)
    wcs: WCS | None = None
    problem: str | None = None
    if lng >= 0 and lat >= 0:
        if {lng, lat} != {0, 1}:
            raise InvalidFITSError(f"{str(img.path)!r}: the celestial axes are FITS axes "
                                   f"{lng + 1} and {lat + 1}; streamdet needs them as axes 1 "
                                   "and 2")
        keep = [1, 2] if img.extra_axis is None else [1, 2, img.extra_axis]
        wcs = full.sub(keep)
        wcs.array_shape = img.shape
        _check_pixel_scale(header, wcs, img.path, img.hdu)
    else:
        problem = "no celestial WCS (no RA/Dec axes among the CTYPE cards)"
    freq_hz: float | None = None
    channels: NDArray[np.float64] | None = None
    channel_unit: str | None = None
    if spec >= 0 and spec not in (lng, lat):
        spectral = full.sub([spec + 1])
        ctype = str(full.wcs.ctype[spec]).upper()
        if img.extra_axis == spec + 1:
            pix = np.arange(img.shape[0], dtype=np.float64)[:, None]
            channels = np.asarray(spectral.wcs_pix2world(pix, 0)[:, 0], dtype=np.float64)
            channel_unit = str(spectral.wcs.cunit[0]) or None
        elif ctype.startswith("FREQ"):
            freq_hz = float(spectral.wcs_pix2world([[0.0]], 0)[0][0])
    return SkyMeta(wcs=wcs, beam=beam, freq_hz=freq_hz, bunit=bunit, channels=channels,
                   channel_unit=channel_unit, problem=problem)
