"""streamdet.io.convert / verify: FITS -> Zarr v3 round trips, sharding, codecs, restart,
verification and bad input (API and CLI)."""

from __future__ import annotations

import gzip
import importlib
import json
import os
import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xarray as xr
import zarr
from astropy.io import fits
from astropy.wcs import WCS
from conftest import FitsCase, sky_cards, write_fits

from streamdet.cli import main
from streamdet.errors import (
    IncompleteStoreError,
    InvalidFITSError,
    OutputExistsError,
    StreamdetFileNotFoundError,
    StreamdetValueError,
)
from streamdet.io.convert import DEFAULT_CHUNKS_CUBE, convert, verify
from streamdet.io.image import NoCelestialWCSWarning, info, open_image

# the module itself (``streamdet.io.convert`` is also the name of the function the package exports)
conv_mod = importlib.import_module("streamdet.io.convert")


def _original_wcs(header: fits.Header, axes: list[int]) -> WCS:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return WCS(header).sub(axes)


def _chunk_files(store: Path) -> dict[str, bytes]:
    root = store / "image" / "c"
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


# ----------------------------------------------------------------------------- round trips

@pytest.mark.parametrize("name", ["fits_2d", "fits_sdc1", "fits_cube", "fits_int16",
                                  "fits_quirks"])
def test_round_trip_data(name: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    case: FitsCase = request.getfixturevalue(name)
    chunks = (8, 32, 32) if case.expected.ndim == 3 else 64
    report = convert(case.path, tmp_path / "out.zarr", chunks=chunks, quiet=True)
    img = open_image(tmp_path / "out.zarr")
    got = img.data.values
    assert got.dtype == np.float32 and got.dtype.isnative
    assert img.dims == (("freq", "y", "x") if case.expected.ndim == 3 else ("y", "x"))
    np.testing.assert_array_equal(np.isnan(got), np.isnan(case.expected))
    assert np.array_equal(got, case.expected, equal_nan=True)
    assert report.shape == case.expected.shape
    assert report.bytes_in == case.expected.size * abs(case.header["BITPIX"]) // 8
    assert report.n_chunks_written == len(_chunk_files(tmp_path / "out.zarr"))
    assert report.n_chunks_skipped == 0 and not report.resumed


@pytest.mark.parametrize("name", ["fits_2d", "fits_sdc1", "fits_quirks"])
def test_float_data_match_astropy(name: str, request: pytest.FixtureRequest,
                                  tmp_path: Path) -> None:
    """An independent reader (astropy, big-endian aware) gives the same pixels."""
    case: FitsCase = request.getfixturevalue(name)
    convert(case.path, tmp_path / "out.zarr", chunks=64, quiet=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = np.squeeze(fits.getdata(case.path)).astype(np.float32)
    assert np.array_equal(open_image(tmp_path / "out.zarr").data.values, ref, equal_nan=True)


def test_int16_scaling_matches_astropy(fits_int16: FitsCase, tmp_path: Path) -> None:
    convert(fits_int16.path, tmp_path / "out.zarr", chunks=64, quiet=True)
    got = open_image(tmp_path / "out.zarr").data.values
    ref = fits.getdata(fits_int16.path).astype(np.float64)  # astropy applies BSCALE/BZERO/BLANK
    np.testing.assert_array_equal(np.isnan(got), np.isnan(ref))
    np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize(("name", "axes"), [("fits_2d", [1, 2]), ("fits_sdc1", [1, 2]),
                                            ("fits_quirks", [1, 2]), ("fits_cube", [1, 2, 3])])
def test_round_trip_wcs(name: str, axes: list[int], request: pytest.FixtureRequest,
                        tmp_path: Path) -> None:
    case: FitsCase = request.getfixturevalue(name)
    convert(case.path, tmp_path / "out.zarr", quiet=True)
    got = open_image(tmp_path / "out.zarr").wcs
    ref = _original_wcs(case.header, axes)
    assert got is not None and got.naxis == len(axes)
    for attr in ("crval", "crpix", "cdelt", "pc"):
        np.testing.assert_array_equal(getattr(got.wcs, attr), getattr(ref.wcs, attr))
    assert list(got.wcs.ctype) == list(ref.wcs.ctype)
    rng = np.random.default_rng(0)
    pix = rng.uniform(0, 60, (10, len(axes)))
    np.testing.assert_allclose(got.wcs_pix2world(pix, 0), ref.wcs_pix2world(pix, 0),
                               rtol=0, atol=1e-10)
    # the reference pixel maps to the reference value (CRPIX is 1-based)
    crpix0 = np.asarray(case.header["CRPIX1"]) - 1, np.asarray(case.header["CRPIX2"]) - 1
    ra, dec = got.celestial.wcs_pix2world([[crpix0[0], crpix0[1]]], 0)[0]
    assert ra % 360 == pytest.approx(case.header["CRVAL1"] % 360, abs=1e-12)
    assert dec == pytest.approx(case.header["CRVAL2"], abs=1e-12)


def test_sky_metadata_kept(fits_sdc1: FitsCase, fits_quirks: FitsCase, fits_cube: FitsCase,
                           tmp_path: Path) -> None:
    r = convert(fits_sdc1.path, tmp_path / "a.zarr", quiet=True)
    img = open_image(tmp_path / "a.zarr")
    assert img.freq_hz == 5.6e8 and r.freq_hz == 5.6e8
    assert img.beam == (fits_sdc1.header["BMAJ"], fits_sdc1.header["BMIN"], 30.0)
    assert img.bunit == "JY/BEAM" and img.data.attrs["units"] == "JY/BEAM"
    assert img.pixel_scale_arcsec == pytest.approx(0.6, rel=1e-9)
    assert img.header["CTYPE4"] == "STOKES" and img.header["NAXIS"] == 4
    convert(fits_quirks.path, tmp_path / "b.zarr", quiet=True)  # no warning may leak
    assert open_image(tmp_path / "b.zarr").freq_hz == 1.4e9
    convert(fits_cube.path, tmp_path / "c.zarr", quiet=True)
    cube = open_image(tmp_path / "c.zarr")
    assert cube.freq_hz is None
    np.testing.assert_allclose(cube.data["freq"].values, 9.5e8 + 3e4 * np.arange(20), rtol=1e-12)
    assert cube.data["freq"].attrs["units"] == "Hz"


def test_xarray_open_zarr_shows_dims(fits_cube: FitsCase, tmp_path: Path) -> None:
    convert(fits_cube.path, tmp_path / "c.zarr", quiet=True)
    ds = xr.open_zarr(tmp_path / "c.zarr")  # consolidated: no warning
    assert ds["image"].dims == ("freq", "y", "x")
    assert ds["image"].dtype == np.float32
    assert "freq" in ds.coords and ds.attrs["streamdet_complete"] is True
    assert np.array_equal(ds["image"].values, fits_cube.expected, equal_nan=True)


def test_casa_axis_order_cube(tmp_path: Path) -> None:
    """RA, DEC, STOKES (1), FREQ (n): the FREQ axis (FITS axis 4) becomes ``freq``."""
    cube = np.random.default_rng(9).normal(size=(6, 1, 30, 40)).astype(np.float32)
    cards = [*sky_cards(40, 30), ("CTYPE3", "STOKES"), ("CRVAL3", 1.0), ("CDELT3", 1.0),
             ("CRPIX3", 1.0), ("CTYPE4", "FREQ"), ("CRVAL4", 1.0e9), ("CDELT4", 1.0e6),
             ("CRPIX4", 1.0)]
    header = write_fits(tmp_path / "casa.fits", cube, cards)
    convert(tmp_path / "casa.fits", tmp_path / "casa.zarr", chunks=(2, 16, 16), quiet=True)
    img = open_image(tmp_path / "casa.zarr")
    assert img.dims == ("freq", "y", "x")
    assert np.array_equal(img.data.values, cube[:, 0])
    ref = _original_wcs(header, [1, 2, 4])
    assert img.wcs is not None and list(img.wcs.wcs.ctype) == ["RA---SIN", "DEC--SIN", "FREQ"]
    np.testing.assert_array_equal(img.wcs.wcs.crval, ref.wcs.crval)
    np.testing.assert_allclose(img.data["freq"].values, 1e9 + 1e6 * np.arange(6), rtol=1e-12)


# ----------------------------------------------------------------------- layout, sharding

def test_default_and_clipped_layout() -> None:
    layout = conv_mod._layout
    assert layout((5000, 3000), None, None)[0] == (1024, 1024)
    assert layout((300, 260), None, None)[0] == (300, 260)
    assert layout((100, 500, 500), None, None)[0] == tuple(
        min(c, n) for c, n in zip(DEFAULT_CHUNKS_CUBE, (100, 500, 500), strict=True))
    assert layout((10, 500, 500), 128, None)[0] == (10, 128, 128)
    chunks, shards, block = layout((5000, 3000), 256, 1024)
    assert (chunks, shards) == ((256, 256), (1024, 1024))
    assert block[0] == 1024 and block[1] % 1024 == 0  # whole shards only
    # a shard larger than the image is clipped to a multiple of the chunk
    assert layout((300, 260), 64, 512)[1] == (320, 320)
    with pytest.raises(StreamdetValueError, match="multiple"):
        layout((300, 260), 64, 96)
    with pytest.raises(StreamdetValueError, match="positive"):
        layout((300, 260), 0, None)
    with pytest.raises(StreamdetValueError, match="axes"):
        layout((300, 260), (8, 64, 64), None)


def test_cube_default_is_the_documented_one() -> None:
    """docs/cube_chunks.md states the cube default that convert uses (and measures it)."""
    doc = (Path(__file__).parents[1] / "docs" / "cube_chunks.md").read_text()
    found = re.search(r"Default cube chunks: \*{0,2}(\d+) x (\d+) x (\d+)", doc)
    assert found is not None
    assert tuple(int(v) for v in found.groups()) == DEFAULT_CHUNKS_CUBE
    text = " x ".join(map(str, DEFAULT_CHUNKS_CUBE))
    assert text in (conv_mod.__doc__ or "") and text in (convert.__doc__ or "")


def test_cube_write_blocks_group_narrow_chunks() -> None:
    """Cube write-blocks join chunks along x up to 16 MiB (fewer, longer FITS reads)."""
    chunks, shards, block = conv_mod._layout((1024, 512, 512), (256, 64, 64), None)
    assert (chunks, shards, block) == ((256, 64, 64), None, (256, 64, 256))
    assert conv_mod._layout((1024, 512, 512), (64, 256, 256), None)[2] == (64, 256, 256)
    assert conv_mod._layout((8, 40, 50), (4, 16, 16), None)[2] == (4, 16, 64)  # 4 chunks: all x


def test_cube_round_trip_default_chunks(tmp_path: Path) -> None:
    """A seeded simulated cube, converted with the default cube chunks (several chunks
    along every axis, partial edge chunks), holds exactly the FITS voxels as astropy reads
    them, bit for bit."""
    from streamdet.sim.simulate_cube import simulate_cube

    fz, fy, fx = DEFAULT_CHUNKS_CUBE
    shape = (2 * fz + 37, 2 * fy + 11, fx + 23)
    simulate_cube(tmp_path / "c.fits", shape=shape, seed=5, channel_offset=2000)
    report = convert(tmp_path / "c.fits", tmp_path / "c.zarr", quiet=True)
    assert report.chunks == DEFAULT_CHUNKS_CUBE
    arr = zarr.open_group(tmp_path / "c.zarr", mode="r")["image"]
    assert isinstance(arr, zarr.Array) and arr.chunks == DEFAULT_CHUNKS_CUBE
    got = np.asarray(arr[...])
    with fits.open(tmp_path / "c.fits", memmap=False) as hdul:
        ref = np.asarray(hdul[0].data).astype(np.float32)  # big-endian -> native
    assert got.shape == ref.shape == shape and got.dtype == np.float32
    assert np.isfinite(ref).all() and ref.std() > 0
    np.testing.assert_array_equal(got.view(np.uint32), ref.view(np.uint32))
    assert np.array_equal(open_image(tmp_path / "c.zarr").data.values, ref)
    assert verify(tmp_path / "c.fits", tmp_path / "c.zarr", quiet=True)


def test_blocks_cover_array_once() -> None:
    grid = conv_mod._Grid((300, 260), (64, 128))
    cover = np.zeros((300, 260), int)
    for i in range(grid.n):
        (y0, y1), (x0, x1) = grid.region(i)
        cover[y0:y1, x0:x1] += 1
    assert grid.n == 15 and (cover == 1).all()


@pytest.mark.parametrize("shard", [64, 128])
def test_sharded_conversion(fits_2d: FitsCase, tmp_path: Path, shard: int,
                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(conv_mod, "_BLOCK_BYTES", 1)  # one shard per block: many writers
    r = convert(fits_2d.path, tmp_path / "s.zarr", chunks=32, shard=shard, quiet=True,
                verify=True)
    assert r.shards == (shard, shard) and r.verified
    arr = zarr.open_group(tmp_path / "s.zarr", mode="r")["image"]
    assert isinstance(arr, zarr.Array)
    assert arr.shards == (shard, shard) and arr.chunks == (32, 32)
    assert np.array_equal(arr[...], fits_2d.expected, equal_nan=True)
    # every shard is one file (c/i/j); inner chunks are not separate files
    assert len(_chunk_files(tmp_path / "s.zarr")) == (-(-300 // shard)) * (-(-260 // shard))


@pytest.mark.parametrize("codec", ["zstd", "blosc", "none"])
def test_codecs(fits_2d: FitsCase, tmp_path: Path, codec: str) -> None:
    r = convert(fits_2d.path, tmp_path / "c.zarr", chunks=128, codec=codec, quiet=True)
    arr = zarr.open_group(tmp_path / "c.zarr", mode="r")["image"]
    assert isinstance(arr, zarr.Array)
    names = [type(c).__name__ for c in arr.compressors]
    assert names == {"zstd": ["ZstdCodec"], "blosc": ["BloscCodec"], "none": []}[codec]
    assert np.array_equal(open_image(tmp_path / "c.zarr").data.values, fits_2d.expected,
                          equal_nan=True)
    assert info(tmp_path / "c.zarr").codec == codec == r.codec
    if codec == "none":  # uncompressed chunks hold the raw little-endian floats
        assert r.bytes_stored >= fits_2d.expected.nbytes
    with pytest.raises(StreamdetValueError, match="lz4"):
        convert(fits_2d.path, tmp_path / "bad.zarr", codec="lz4")


# -------------------------------------------------------------------------------- restart

class _Crash(RuntimeError):
    pass


def _crash_after(monkeypatch: pytest.MonkeyPatch, k: int) -> dict[str, int]:
    """Make the k+1-th block write raise; count the writes that succeeded."""
    real = conv_mod._write_block
    count = {"calls": 0, "ok": 0}

    def flaky(array: Any, img: Any, region: Any) -> None:
        count["calls"] += 1
        if count["calls"] == k + 1:
            raise _Crash("simulated crash")
        real(array, img, region)
        count["ok"] += 1

    monkeypatch.setattr(conv_mod, "_write_block", flaky)
    return count


def test_restart_resumes_and_matches(fits_2d: FitsCase, tmp_path: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    store = tmp_path / "r.zarr"
    first = _crash_after(monkeypatch, 4)
    with pytest.raises(_Crash):
        convert(fits_2d.path, store, chunks=32, quiet=True)
    assert 4 <= first["ok"] < 10  # 10 strips of 32 rows; the others may have finished
    st = info(store)
    assert not st.complete and st.blocks_done == first["ok"] and st.blocks_total == 10
    assert "INCOMPLETE" in st.summary()
    with pytest.raises(IncompleteStoreError, match="incomplete"):
        open_image(store)
    with pytest.raises(IncompleteStoreError):
        verify(fits_2d.path, store)
    partial = next((store / "image" / "c").rglob("*")).parent / f"0.{'a' * 32}.partial"
    partial.write_bytes(b"left by a killed writer")

    monkeypatch.undo()
    counting = _crash_after(monkeypatch, 10**9)
    r = convert(fits_2d.path, store, chunks=32, quiet=True)
    assert counting["ok"] == 10 - first["ok"]  # exactly the blocks not done before
    assert r.resumed and r.n_blocks_written == counting["ok"] and r.n_blocks == 10
    assert r.n_chunks_skipped == first["ok"] * 9 and r.n_chunks_written + r.n_chunks_skipped == 90
    assert not partial.exists()
    assert info(store).complete and not (store / "streamdet-progress.json").exists()

    monkeypatch.undo()
    convert(fits_2d.path, tmp_path / "ref.zarr", chunks=32, quiet=True)
    assert _chunk_files(store) == _chunk_files(tmp_path / "ref.zarr")
    assert np.array_equal(open_image(store).data.values, fits_2d.expected, equal_nan=True)
    assert verify(fits_2d.path, store, quiet=True)


def test_rerun_rules(fits_2d: FitsCase, tmp_path: Path,
                     monkeypatch: pytest.MonkeyPatch) -> None:
    store = tmp_path / "r.zarr"
    _crash_after(monkeypatch, 2)
    with pytest.raises(_Crash):
        convert(fits_2d.path, store, chunks=32, quiet=True)
    monkeypatch.undo()
    with pytest.raises(StreamdetValueError, match=r"other parameters \(chunks \[32, 32\] vs "
                                                  r"\[64, 64\]\)"):
        convert(fits_2d.path, store, chunks=64, quiet=True)
    with pytest.raises(StreamdetValueError, match="codec"):
        convert(fits_2d.path, store, chunks=32, codec="none", quiet=True)
    os.utime(fits_2d.path, ns=(0, 0))  # the source changed since
    with pytest.raises(StreamdetValueError, match="source"):
        convert(fits_2d.path, store, chunks=32, quiet=True)
    r = convert(fits_2d.path, store, chunks=64, overwrite=True, quiet=True)
    assert not r.resumed and r.n_chunks_skipped == 0
    with pytest.raises(OutputExistsError, match="complete"):
        convert(fits_2d.path, store, chunks=64, quiet=True)
    assert convert(fits_2d.path, store, overwrite=True, quiet=True).chunks == (300, 260)


def test_existing_outputs(fits_2d: FitsCase, tmp_path: Path) -> None:
    some_file = tmp_path / "file.zarr"
    some_file.write_text("precious")
    with pytest.raises(OutputExistsError, match=r"file\.zarr"):
        convert(fits_2d.path, some_file, quiet=True)
    assert some_file.read_text() == "precious"
    some_dir = tmp_path / "dir"
    some_dir.mkdir()
    (some_dir / "keep.txt").write_text("precious")
    with pytest.raises(OutputExistsError):
        convert(fits_2d.path, some_dir, quiet=True)
    with pytest.raises(StreamdetValueError, match="not a Zarr store"):
        convert(fits_2d.path, some_dir, overwrite=True, quiet=True)
    assert (some_dir / "keep.txt").read_text() == "precious"
    with pytest.raises(StreamdetValueError, match="does not exist"):
        convert(fits_2d.path, tmp_path / "missing" / "out.zarr", quiet=True)
    with pytest.raises(StreamdetValueError, match="input file"):
        convert(fits_2d.path, fits_2d.path, overwrite=True, quiet=True)
    assert fits_2d.path.exists()


# --------------------------------------------------------------------------------- verify

def test_verify_detects_corruption(fits_2d: FitsCase, tmp_path: Path) -> None:
    store = tmp_path / "v.zarr"
    r = convert(fits_2d.path, store, chunks=64, verify=True, quiet=True)
    assert r.verified is True
    assert verify(fits_2d.path, store, quiet=True) is True
    chunk_dir = store / "image" / "c"
    a, b = chunk_dir / "2" / "1", chunk_dir / "0" / "0"
    good = a.read_bytes()
    a.write_bytes(b.read_bytes())  # a valid chunk, in the wrong place
    with pytest.raises(StreamdetValueError, match=r"block 2 \(y 128:192, x 0:260\) differs"):
        verify(fits_2d.path, store, quiet=True)
    a.write_bytes(b"\x00garbage" * 10)
    with pytest.raises(StreamdetValueError, match=r"block 2 .* cannot be read"):
        verify(fits_2d.path, store, quiet=True)
    a.write_bytes(good)
    (chunk_dir / "4" / "3").unlink()  # a lost chunk reads as NaN
    with pytest.raises(StreamdetValueError, match=r"block 4 \(y 256:300"):
        verify(fits_2d.path, store, quiet=True)


def test_convert_verify_failure_is_repaired_by_rerun(fits_2d: FitsCase, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    real = conv_mod._write_block
    store = tmp_path / "v.zarr"

    def wrong_once(array: Any, img: Any, region: Any) -> None:
        real(array, img, region)
        if region[0][0] == 64:  # block 1: store something else
            array[region[0][0]:region[0][1], :] = 0.0

    monkeypatch.setattr(conv_mod, "_write_block", wrong_once)
    with pytest.raises(StreamdetValueError, match=r"block 1 \(y 64:128"):
        convert(fits_2d.path, store, chunks=64, verify=True, quiet=True)
    assert not info(store).complete
    monkeypatch.undo()
    r = convert(fits_2d.path, store, chunks=64, verify=True, quiet=True)
    assert r.n_blocks_written == 1 and r.verified
    assert np.array_equal(open_image(store).data.values, fits_2d.expected, equal_nan=True)


def test_verify_other_file(fits_2d: FitsCase, fits_int16: FitsCase, tmp_path: Path) -> None:
    convert(fits_2d.path, tmp_path / "v.zarr", quiet=True)
    with pytest.raises(StreamdetValueError, match="shape"):
        verify(fits_int16.path, tmp_path / "v.zarr")


# ------------------------------------------------------------------------------ bad input

def _bad_inputs(tmp_path: Path) -> dict[str, tuple[Path, type[Exception], str]]:
    """name -> (input path, API error, text the message must contain)."""
    img = np.zeros((40, 50), np.float32)
    text = tmp_path / "notes.fits"
    text.write_text("this is not FITS\n" * 300)
    write_fits(tmp_path / "trunc.fits", img, sky_cards(50, 40), truncate=3000)
    raw = (tmp_path / "trunc.fits").read_bytes()
    (tmp_path / "trunc_header.fits").write_bytes(raw[:1000])
    gz = tmp_path / "img.fits.gz"
    write_fits(tmp_path / "ok.fits", img, sky_cards(50, 40))
    gz.write_bytes(gzip.compress((tmp_path / "ok.fits").read_bytes()))
    write_fits(tmp_path / "oned.fits", np.zeros(100, np.float32))
    write_fits(tmp_path / "stokes.fits", np.zeros((4, 10, 12), np.float32),
               [*sky_cards(12, 10), ("CTYPE3", "STOKES")])
    write_fits(tmp_path / "twoaxes.fits", np.zeros((2, 3, 10, 12), np.float32))
    fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU.from_columns(
        [fits.Column(name="a", format="E", array=np.zeros(3))])]).writeto(tmp_path / "table.fits")
    return {
        "missing": (tmp_path / "nope.fits", StreamdetFileNotFoundError, "does not exist"),
        "not_fits": (text, InvalidFITSError, "not a FITS file"),
        "truncated": (tmp_path / "trunc.fits", InvalidFITSError, "truncated"),
        "truncated_header": (tmp_path / "trunc_header.fits", InvalidFITSError, "header"),
        "gzip": (gz, InvalidFITSError, "gzip"),
        "one_d": (tmp_path / "oned.fits", InvalidFITSError, "1-D"),
        "stokes": (tmp_path / "stokes.fits", InvalidFITSError, "Stokes"),
        "two_extra_axes": (tmp_path / "twoaxes.fits", InvalidFITSError, "non-degenerate"),
        "no_image": (tmp_path / "table.fits", InvalidFITSError, "no image HDU"),
    }


BAD = ["missing", "not_fits", "truncated", "truncated_header", "gzip", "one_d", "stokes",
       "two_extra_axes", "no_image"]


@pytest.mark.parametrize("name", BAD)
def test_bad_input_api(name: str, tmp_path: Path) -> None:
    path, error, text = _bad_inputs(tmp_path)[name]
    out = tmp_path / "out.zarr"
    with pytest.raises(error, match=text) as exc:
        convert(path, out, quiet=True)
    assert path.name in str(exc.value)
    assert not out.exists()  # nothing that looks complete, nor anything at all
    with pytest.raises(error, match=text):
        open_image(path)


@pytest.mark.parametrize("name", BAD)
def test_bad_input_cli(name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path, _error, text = _bad_inputs(tmp_path)[name]
    assert main(["convert", str(path), str(tmp_path / "out.zarr"), "-q"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("streamdet convert: error:")
    assert text in err and path.name in err
    assert not (tmp_path / "out.zarr").exists()


def test_hdu_selection(tmp_path: Path) -> None:
    data = np.arange(12 * 10, dtype=np.float32).reshape(12, 10)
    header = fits.Header(sky_cards(10, 12))
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(data, header),
                  fits.ImageHDU(data * 2, header)]).writeto(tmp_path / "multi.fits")
    r = convert(tmp_path / "multi.fits", tmp_path / "a.zarr", quiet=True)
    assert r.hdu == 1
    assert np.array_equal(open_image(tmp_path / "a.zarr").data.values, data)
    convert(tmp_path / "multi.fits", tmp_path / "b.zarr", hdu=2, quiet=True)
    assert np.array_equal(open_image(tmp_path / "b.zarr").data.values, data * 2)
    assert verify(tmp_path / "multi.fits", tmp_path / "b.zarr")  # HDU taken from the store
    with pytest.raises(InvalidFITSError, match="HDU 0 holds no data"):
        convert(tmp_path / "multi.fits", tmp_path / "c.zarr", hdu=0, quiet=True)
    with pytest.raises(InvalidFITSError, match="has no HDU 5"):
        convert(tmp_path / "multi.fits", tmp_path / "c.zarr", hdu=5, quiet=True)
    assert not (tmp_path / "c.zarr").exists()


def test_no_celestial_wcs_warns(fits_nowcs: FitsCase, tmp_path: Path) -> None:
    with pytest.warns(NoCelestialWCSWarning, match="no celestial WCS"):
        r = convert(fits_nowcs.path, tmp_path / "n.zarr", quiet=True)
    assert not r.has_celestial_wcs
    st = info(tmp_path / "n.zarr")
    assert st.complete and not st.has_celestial_wcs and "no celestial WCS" in st.summary()
    img = open_image(tmp_path / "n.zarr")
    assert img.wcs is None and img.pixel_scale_arcsec is None
    assert np.array_equal(img.data.values, fits_nowcs.expected)


def test_cli_convert_and_info(fits_sdc1: FitsCase, fits_nowcs: FitsCase, tmp_path: Path,
                              capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "o.zarr"
    assert main(["convert", str(fits_sdc1.path), str(out), "--chunks", "64", "--shard", "128",
                 "--codec", "blosc", "--verify"]) == 0
    captured = capsys.readouterr()
    assert "64x64" in captured.out and "128x128" in captured.out and "verified" in captured.out
    assert main(["info", str(out)]) == 0
    text = capsys.readouterr().out
    assert "complete" in text and "200 x 230" in text and "RA---SIN/DEC--SIN" in text
    assert "560 MHz" in text and "blosc" in text
    assert main(["convert", str(fits_sdc1.path), str(out), "-q"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "exists" in err and "o.zarr" in err
    assert main(["convert", str(fits_sdc1.path), str(out), "-q", "--chunks", "32",
                 "--shard", "48"]) == 1
    assert "multiple" in capsys.readouterr().err
    with pytest.warns(NoCelestialWCSWarning, match="nowcs.fits"):  # shown once by the CLI
        assert main(["convert", str(fits_nowcs.path), str(tmp_path / "n.zarr"), "-q"]) == 0
    assert main(["info", str(tmp_path / "n.zarr")]) == 0
    assert "no celestial WCS" in capsys.readouterr().out


def test_progress_file_is_small_runs(fits_2d: FitsCase, tmp_path: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    _crash_after(monkeypatch, 3)
    with pytest.raises(_Crash):
        convert(fits_2d.path, tmp_path / "p.zarr", chunks=32, quiet=True)
    data = json.loads((tmp_path / "p.zarr" / "streamdet-progress.json").read_text())
    done = {i for a, b in data["done"] for i in range(a, b)}
    assert data["total"] == 10 and len(done) >= 3 and len(data["done"]) <= len(done)
