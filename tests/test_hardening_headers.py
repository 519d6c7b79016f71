"""Bad headers: a clear StreamdetError naming the keyword, never a traceback, nothing written.

The fuzzer mutates 1-4 random cards of a valid SDC1-like 4-axis header (64 x 64 float32
data; a card's value replaced by an edge number, a wrong type or junk, or the card
deleted) and runs ``info``, ``open_image`` and ``convert`` through the API (3,000 cases
in all, ~45 s): each must succeed
or raise a :class:`~streamdet.errors.StreamdetError` (a ``ValueError``), warn only with
:class:`~streamdet.errors.StreamdetWarning`, and a failed conversion must leave no output.
"""

from __future__ import annotations

import shutil
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamdet.cli import main
from streamdet.errors import StreamdetError, StreamdetWarning
from streamdet.io.convert import convert
from streamdet.io.image import info, open_image

N = 64
BLOCK = 2880
DATA = np.random.default_rng(18).normal(0.0, 1e-4, (N, N)).astype(">f4").tobytes()

# (keyword, value as written in the card); strings quoted, numbers and logicals bare
VALID: list[tuple[str, str]] = [
    ("SIMPLE", "T"), ("BITPIX", "-32"), ("NAXIS", "4"), ("NAXIS1", str(N)),
    ("NAXIS2", str(N)), ("NAXIS3", "1"), ("NAXIS4", "1"), ("EXTEND", "T"),
    ("BSCALE", "1.0"), ("BZERO", "0.0"), ("BUNIT", "'JY/BEAM'"), ("BTYPE", "'Intensity'"),
    ("BMAJ", "4.1666667E-04"), ("BMIN", "4.1666667E-04"), ("BPA", "0.0"),
    ("EQUINOX", "2000.0"), ("RADESYS", "'FK5'"),
    ("CTYPE1", "'RA---SIN'"), ("CRVAL1", "0.0"), ("CDELT1", "-1.6666667E-04"),
    ("CRPIX1", "33.0"), ("CUNIT1", "'deg'"),
    ("CTYPE2", "'DEC--SIN'"), ("CRVAL2", "-30.0"), ("CDELT2", "1.6666667E-04"),
    ("CRPIX2", "33.0"), ("CUNIT2", "'deg'"),
    ("CTYPE3", "'FREQ'"), ("CRVAL3", "5.6E+08"), ("CDELT3", "1.0E+06"), ("CRPIX3", "1.0"),
    ("CUNIT3", "'Hz'"),
    ("CTYPE4", "'STOKES'"), ("CRVAL4", "1.0"), ("CDELT4", "1.0"), ("CRPIX4", "1.0"),
    ("CUNIT4", "''"), ("RESTFRQ", "5.6E+08"), ("SPECSYS", "'TOPOCENT'"),
]
KEYS = [k for k, _ in VALID]

# values a fuzzer of headers tries: the findings, edge numbers, wrong types, junk
SPECIAL = [
    "0", "1", "-1", "2", "-64", "64", "-32", "16", "8", "65", "1000000", "-1E300", "1E300",
    "99999999999999999999", "-99999999999999999999", "0.0", "-0.0", "1.5", "-0.5", "1E-300",
    "NAN", "INF", "-INF", "nan", "inf", "T", "F", "'abc'", "''", "'  '", "'RA---TAN'",
    "'DEC--TAN'", "'GLON-CAR'", "'FREQ'", "'VELO-LSR'", "'STOKES'", "'deg'", "'Hz'",
    "'JY/BEAM'", "abc", "", "'unterminated", "1.0.0", "--1", "1.0D+03", "(1.0, 2.0)",
    "100.0", "-91.0", "90.0", "360.0", "'arcsec'", "'m/s'", "'VRAD'", "'WAVE'", "'ZOPT'",
    "'RA---XXX'", "'LINEAR'", "'RA---SIN'", "'DEC--SIN'", "'GLAT-CAR'", "'RA---TAN-SIP'",
    "'ICRS'", "'XYZ'", "'BARYCENT'",
]
DELETE = "<delete>"


def _numbers() -> st.SearchStrategy[str]:
    return st.one_of(
        st.integers(-(2**64), 2**64).map(str),
        st.floats(allow_nan=True, allow_infinity=True).map(lambda v: f"{v:.8E}".upper()),
    )


VALUES = st.one_of(st.sampled_from(SPECIAL), _numbers(), st.just(DELETE))
MUTATIONS = st.lists(st.tuples(st.sampled_from(KEYS), VALUES), min_size=1, max_size=4)


def _card(key: str, value: str) -> str:
    text = f"{key:<8}= {value:>20}" if not value.startswith("'") else f"{key:<8}= {value:<20}"
    return f"{text:<80}"[:80]


def write_header_fits(path: Path, mutations: Sequence[tuple[str, str]] = ()) -> None:
    """The valid header with ``mutations`` applied (a value written bare or quoted as given,
    or the card deleted), then the 64 x 64 float32 data."""
    cards = dict(VALID)
    for key, value in mutations:
        if value == DELETE:
            cards.pop(key, None)
        else:
            cards[key] = value
    text = "".join(_card(k, v) for k, v in cards.items()) + f"{'END':<80}"
    head = text.encode("ascii")
    head += b" " * (-len(head) % BLOCK)
    path.write_bytes(head + DATA + b"\0" * (-len(DATA) % BLOCK))


def _leftovers(out: Path) -> list[str]:
    return sorted(p.name for p in out.parent.iterdir()
                  if p.name == out.name or p.name.startswith(f".{out.name}."))


def _call(fn: Callable[[], Any], what: str, mutations: object) -> bool:
    """Run one API call: True on success, False on a StreamdetError; anything else fails."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            fn()
            ok = True
        except StreamdetError as exc:
            assert isinstance(exc, ValueError), f"{what} {mutations}: {exc!r} not a ValueError"
            assert str(exc) and "\n" not in str(exc), f"{what} {mutations}: {exc!r}"
            ok = False
        except Exception as exc:  # the failure this test looks for
            raise AssertionError(f"{what} with {mutations} raised "
                                 f"{type(exc).__name__}: {exc}") from exc
    bad = [w for w in caught if not issubclass(w.category, StreamdetWarning)]
    assert not bad, f"{what} with {mutations} warned {[str(w.message) for w in bad]}"
    return ok


def check_header(workdir: Path, mutations: Sequence[tuple[str, str]]) -> None:
    """The whole contract for one mutated header."""
    src = workdir / "in.fits"
    out = workdir / "out.zarr"
    for leftover in workdir.iterdir():
        if leftover != src:
            shutil.rmtree(leftover) if leftover.is_dir() else leftover.unlink()
    write_header_fits(src, mutations)
    _call(lambda: info(src), "info", mutations)
    _call(lambda: open_image(src), "open_image", mutations)
    if _call(lambda: convert(src, out, quiet=True), "convert", mutations):
        _call(lambda: info(out), "info(store)", mutations)
        _call(lambda: open_image(out).data[:2, :2].values, "open_image(store)", mutations)
    else:
        assert _leftovers(out) == [], f"convert with {mutations} left {_leftovers(out)}"


# ------------------------------------------------------------------------- the fuzzer

READ_EXAMPLES = 2000  # info + open_image of the FITS file (~10 ms a case)
FULL_EXAMPLES = 1000  # the same, then convert, info and open_image of the store (~40 ms)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("headers")


@settings(max_examples=READ_EXAMPLES, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(mutations=MUTATIONS)
def test_fuzz_mutated_headers_read(workdir: Path, mutations: list[tuple[str, str]]) -> None:
    src = workdir / "read.fits"
    write_header_fits(src, mutations)
    _call(lambda: info(src), "info", mutations)
    _call(lambda: open_image(src), "open_image", mutations)


@settings(max_examples=FULL_EXAMPLES, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(mutations=MUTATIONS)
def test_fuzz_mutated_headers_convert(workdir: Path, mutations: list[tuple[str, str]]) -> None:
    check_header(workdir, mutations)


def test_valid_header_converts(tmp_path: Path) -> None:
    write_header_fits(tmp_path / "in.fits")
    r = convert(tmp_path / "in.fits", tmp_path / "out.zarr", quiet=True)
    assert r.shape == (N, N) and r.has_celestial_wcs and r.beam is not None


# ---------------------------------------------------------------- the findings

FINDINGS: dict[str, tuple[list[tuple[str, str]], str]] = {
    "non-numeric BSCALE": ([("BSCALE", "'abc'")], "BSCALE = 'abc' is not a finite number"),
    "non-numeric BZERO": ([("BZERO", "'deg'")], "BZERO = 'deg' is not a finite number"),
    "negative NAXIS3": ([("NAXIS3", "-1")], "NAXIS3 = -1 is not an integer >= 0"),
    "negative GCOUNT": ([("GCOUNT", "-1")], "GCOUNT = -1 is not an integer >= 0"),
    "GCOUNT 2": ([("GCOUNT", "2")], "GCOUNT = 2 in an image HDU"),
    "NAXIS1 -1E300": ([("NAXIS1", "-1E300")], "NAXIS1 = -1e+300 is not an integer"),
    "NAXIS1 = NAXIS2 = -64": ([("NAXIS1", "-64"), ("NAXIS2", "-64")],
                              "NAXIS1 = -64 is not an integer >= 0"),
    "huge NAXIS3": ([("NAXIS3", "-2273185404480494677")], "NAXIS3 = -2273185404480494677"),
    "BMAJ INF": ([("BMAJ", "INF")], "BMAJ = INF cannot be parsed"),
    "BSCALE NAN": ([("BSCALE", "NAN")], "BSCALE = NAN cannot be parsed"),
    "BSCALE 0": ([("BSCALE", "0")], "BSCALE = 0.0 would make every pixel equal BZERO"),
    "BZERO 1E300": ([("BZERO", "1E300")], "BZERO = 1e+300 is beyond the float32 range"),
    "BMAJ 0": ([("BMAJ", "0")], "BMAJ = 0 is not a beam size"),
    "BMIN negative": ([("BMIN", "-1E-4")], "BMIN = -0.0001 is not a beam size"),
    "CDELT1 NaN": ([("CDELT1", "NAN")], "CDELT1 = NAN cannot be parsed"),
    "CDELT1 quoted NaN": ([("CDELT1", "'NaN'")], "CDELT1 = 'NaN' is not a finite number"),
    "CDELT1 0": ([("CDELT1", "0.0")], "CDELT1 = 0.0 makes a pixel of zero size"),
    "CDELT2 1E300": ([("CDELT2", "1E300")], "CDELT2 = 1e+300"),
    "CTYPE1 a number": ([("CTYPE1", "5")], "CTYPE1 = 5 is not a string"),
    "BITPIX text": ([("BITPIX", "'abc'")], "BITPIX = 'abc' is not an integer"),
}


@pytest.mark.parametrize("name", list(FINDINGS))
def test_bad_header_refused_by_name(name: str, tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    mutations, message = FINDINGS[name]
    src, out = tmp_path / "in.fits", tmp_path / "out.zarr"
    write_header_fits(src, mutations)
    for fn in (lambda: info(src), lambda: open_image(src), lambda: convert(src, out)):
        with pytest.raises(StreamdetError) as exc:
            fn()
        assert isinstance(exc.value, ValueError) and message in str(exc.value)
    assert _leftovers(out) == []
    for argv in (["convert", str(src), str(out), "--quiet"], ["info", str(src)]):
        assert main(argv) == 1
        captured = capsys.readouterr()
        lines = captured.err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"streamdet {argv[0]}: error: ")
        assert message in lines[0] and captured.out == ""
    assert _leftovers(out) == []


def test_float64_data_beyond_float32_become_inf(tmp_path: Path) -> None:
    """Not a header problem: float64 pixels beyond the float32 range are stored as +-inf,
    without a numpy overflow warning (warnings are errors in this suite)."""
    from conftest import sky_cards, write_fits

    raw = np.zeros((8, 8))
    raw[0, 0], raw[0, 1], raw[0, 2] = 1e300, -1e300, 1.5
    write_fits(tmp_path / "f64.fits", raw, sky_cards(8, 8))
    convert(tmp_path / "f64.fits", tmp_path / "out.zarr", quiet=True)
    got = open_image(tmp_path / "out.zarr").data.values
    assert got[0, 0] == np.inf and got[0, 1] == -np.inf and got[0, 2] == 1.5
