"""streamdet.io: open_image (Zarr store or FITS, lazily), Image helpers, info."""

from __future__ import annotations

import importlib
import pickle
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import pytest
import zarr
from conftest import FitsCase

from streamdet.errors import (
    IncompleteStoreError,
    StreamdetFileNotFoundError,
    StreamdetValueError,
)
from streamdet.io.convert import convert
from streamdet.io.image import Image, info, open_image

io_mod = importlib.import_module("streamdet.io.image")
conv_mod = importlib.import_module("streamdet.io.convert")


@pytest.mark.parametrize("name", ["fits_2d", "fits_sdc1", "fits_cube", "fits_int16",
                                  "fits_quirks"])
def test_open_fits_lazily(name: str, request: pytest.FixtureRequest) -> None:
    case: FitsCase = request.getfixturevalue(name)
    img = open_image(case.path, chunks=48)
    assert isinstance(img.data.data, da.Array) and img.complete
    assert img.shape == case.expected.shape
    assert img.data.data.chunksize[-2:] == (48, 48)
    assert np.array_equal(img.data.values, case.expected, equal_nan=True)
    part = img.data[..., 50:70, 10:30].values
    assert np.array_equal(part, case.expected[..., 50:70, 10:30], equal_nan=True)


def test_fits_reads_only_the_blocks_asked(fits_2d: FitsCase,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[Any] = []
    real = io_mod.read_block

    def counting(img: Any, region: Any) -> Any:
        calls.append(region)
        return real(img, region)

    monkeypatch.setattr(io_mod, "read_block", counting)
    img = open_image(fits_2d.path, chunks=100)
    assert calls == []  # opening reads no pixels
    value = float(img.data[150, 120].values)
    assert calls == [((100, 200), (100, 200))]
    assert value == fits_2d.expected[150, 120]


def test_fits_graph_pickles(fits_cube: FitsCase) -> None:
    """FITS-backed arrays can be shipped to distributed workers."""
    arr = open_image(fits_cube.path).data.data
    again = pickle.loads(pickle.dumps(arr))
    assert np.array_equal(again.compute(), fits_cube.expected, equal_nan=True)
    assert open_image(fits_cube.path).data.data.name == arr.name  # deterministic


def test_open_store(fits_cube: FitsCase, tmp_path: Path) -> None:
    convert(fits_cube.path, tmp_path / "c.zarr", chunks=(4, 32, 32), quiet=True)
    img = open_image(tmp_path / "c.zarr")
    assert isinstance(img, Image) and isinstance(img.data.data, da.Array)
    assert img.data.data.chunksize == (4, 32, 32)  # the store's chunks by default
    assert open_image(tmp_path / "c.zarr", chunks=64).data.data.chunksize == (4, 64, 64)
    assert open_image(tmp_path / "c.zarr", chunks=(20, 70, 90)).data.data.numblocks == (1, 1, 1)
    assert img.wcs is not None and img.wcs.naxis == 3
    cel = img.celestial_wcs
    assert cel is not None and cel.naxis == 2
    assert img.pixel_scale_arcsec == pytest.approx(2.8, rel=1e-9)
    assert img.beam_arcsec == pytest.approx((1.5, 1.2, 30.0))
    assert img.wcs.array_shape == (20, 70, 90)
    with pytest.raises(StreamdetValueError, match="chunks"):
        open_image(tmp_path / "c.zarr", chunks=(4, 32))


def test_fits_and_store_agree(fits_sdc1: FitsCase, tmp_path: Path) -> None:
    convert(fits_sdc1.path, tmp_path / "s.zarr", quiet=True)
    a, b = open_image(fits_sdc1.path), open_image(tmp_path / "s.zarr")
    assert (a.beam, a.freq_hz, a.bunit, a.dims) == (b.beam, b.freq_hz, b.bunit, b.dims)
    assert a.wcs is not None and b.wcs is not None
    for attr in ("crval", "crpix", "cdelt", "pc"):
        np.testing.assert_array_equal(getattr(a.wcs.wcs, attr), getattr(b.wcs.wcs, attr))
    assert a.header == b.header
    assert np.array_equal(a.data.values, b.data.values, equal_nan=True)


def test_incomplete_store(fits_2d: FitsCase, tmp_path: Path,
                          monkeypatch: pytest.MonkeyPatch) -> None:
    real = conv_mod._write_block
    count = [0]

    def crash(array: Any, img: Any, region: Any) -> None:
        count[0] += 1
        if count[0] > 2:
            raise KeyboardInterrupt
        real(array, img, region)

    monkeypatch.setattr(conv_mod, "_write_block", crash)
    store = tmp_path / "i.zarr"
    with pytest.raises(KeyboardInterrupt):
        convert(fits_2d.path, store, chunks=64, quiet=True)
    zattrs = zarr.open_group(store, mode="r").attrs
    assert zattrs["streamdet_complete"] is False
    with pytest.raises(IncompleteStoreError, match=r"i\.zarr.*incomplete \(\d/5 blocks"):
        open_image(store)
    img = open_image(store, allow_incomplete=True)
    assert not img.complete
    values = img.data.values
    assert np.isnan(values[-1]).all()  # block 4 was never written
    assert np.array_equal(values[:64], fits_2d.expected[:64], equal_nan=True)


def test_info_store_and_fits(fits_sdc1: FitsCase, fits_cube: FitsCase, tmp_path: Path) -> None:
    convert(fits_sdc1.path, tmp_path / "s.zarr", chunks=64, shard=128, quiet=True)
    st = info(tmp_path / "s.zarr")
    assert st.kind == "zarr" and st.complete and st.shape == (200, 230)
    assert (st.chunks, st.shards, st.codec) == ((64, 64), (128, 128), "zstd")
    assert st.dims == ("y", "x") and st.dtype == "float32" and st.freq_hz == 5.6e8
    assert st.has_celestial_wcs and st.source == str(fits_sdc1.path.resolve())
    text = st.summary()
    for piece in ("complete", "200 x 230 float32 (y, x)", "chunks    64x64, shards 128x128",
                  "RA---SIN/DEC--SIN", "0.6\" x 0.6\"", "beam      1.5\" x 1.2\" PA 30 deg",
                  "560 MHz", "JY/BEAM"):
        assert piece in text, piece
    ft = info(fits_cube.path)
    assert ft.kind == "fits" and ft.shape == (20, 70, 90) and ft.chunks is None
    assert "spectral FREQ 9.5e+08 Hz" in ft.summary()
    assert ft.stored_bytes == fits_cube.path.stat().st_size


def test_info_and_open_errors(tmp_path: Path) -> None:
    with pytest.raises(StreamdetFileNotFoundError, match=r"nothing\.zarr"):
        info(tmp_path / "nothing.zarr")
    with pytest.raises(StreamdetFileNotFoundError, match=r"nothing\.zarr"):
        open_image(tmp_path / "nothing.zarr")
    (tmp_path / "plain").mkdir()
    with pytest.raises(StreamdetValueError, match="not a Zarr v3 store"):
        info(tmp_path / "plain")
    zarr.open_group(tmp_path / "other.zarr", mode="w").create_array("x", shape=(3,),
                                                                     dtype="f4")
    with pytest.raises(StreamdetValueError, match="not one written by streamdet"):
        open_image(tmp_path / "other.zarr")
