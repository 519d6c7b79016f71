"""Cube detection end to end: convert round trip, chunk invariance, bounded windows in
flight, physical outputs, the SDC2 scorer and ``streamdet detect`` on a cube."""

from __future__ import annotations

import importlib
import threading
from pathlib import Path

import numpy as np
import pytest
from _models3d import make_test_model3d
from astropy.io import fits
from astropy.wcs import WCS

import streamdet
from streamdet.catalogue.outputs import HI_REST_HZ
from streamdet.catalogue.sdc2 import SDC2_COLUMNS, read_sdc2, score_sdc2
from streamdet.cli import main
from streamdet.engine.contract import Model, load_model, normalise
from streamdet.engine.decode import decode
from streamdet.engine.detections import Detections
from streamdet.engine.nms import nms_detections
from streamdet.errors import InvalidModelError, StreamdetValueError
from streamdet.sim.simulate_cube import simulate_cube

pytest.importorskip("torch")

# the module (streamdet.engine.detect_cube, the attribute, is the function)
dc = importlib.import_module("streamdet.engine.detect_cube")

SHAPE = (96, 48, 40)        # x not a multiple of the windows: ragged edge windows


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Model:
    return load_model(make_test_model3d(tmp_path_factory.mktemp("m3") / "tiny3d.onnx"),
                      threads=1)


@pytest.fixture(scope="module")
def cube(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    d = tmp_path_factory.mktemp("cube")
    simulate_cube(d / "c.fits", truth=d / "truth.txt", shape=SHAPE, seed=4,
                  channel_offset=3000)
    streamdet.convert(d / "c.fits", d / "c.zarr", chunks=(32, 16, 16), quiet=True)
    return d / "c.fits", d / "c.zarr", d / "truth.txt"


def reference(data: np.ndarray, model: Model, threshold: float = 0.5) -> Detections:
    """One forward pass over the whole stride-padded cube, decode, one global 3D NMS."""
    c = model.contract
    padded = [-(-n // s) * s for n, s in zip(data.shape, c.stride, strict=True)]
    buf = np.zeros(padded, np.float32)
    buf[:data.shape[0], :data.shape[1], :data.shape[2]] = normalise(data, c)
    dets = decode(model.run(buf[None, None]), c, threshold=threshold)
    return nms_detections(dets, iou_threshold=c.nms["iou_threshold"], kind=c.nms["kind"])


def _sorted(d: Detections) -> tuple[np.ndarray, np.ndarray]:
    o = np.lexsort(d.boxes.T[::-1])
    return d.boxes[o], d.params[o]


def assert_same(a: Detections, b: Detections) -> None:
    assert len(a) == len(b), (len(a), len(b))
    (ba, pa), (bb, pb) = _sorted(a), _sorted(b)
    np.testing.assert_allclose(ba, bb, atol=1e-3)
    np.testing.assert_allclose(pa, pb, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.sort(a.objectness), np.sort(b.objectness), atol=1e-5)


def test_cube_round_trip_through_convert(cube: tuple[Path, Path, Path], model: Model) -> None:
    fits_path, store, _ = cube
    img = streamdet.open_image(store)
    assert img.shape == SHAPE and img.dims == ("freq", "y", "x")
    data = fits.getdata(fits_path)
    np.testing.assert_array_equal(np.asarray(img.data), data)
    a = streamdet.detect_cube(store, model=model, workers=2)
    b = streamdet.detect_cube(fits_path, model=model, workers=2)
    assert len(a) > 20
    for name in SDC2_COLUMNS:
        np.testing.assert_array_equal(a[name], b[name])


@pytest.mark.parametrize("window, split_every", [((32, 16, 16), 2), ((48, 24, 32), 8),
                                                 ((16, 48, 8), 3)])
def test_chunk_invariance(cube: tuple[Path, Path, Path], model: Model,
                          window: tuple[int, int, int], split_every: int) -> None:
    fits_path, store, _ = cube
    data = fits.getdata(fits_path).astype(np.float32)
    ref = reference(data, model)
    whole = dc.detect_cube_voxels(store, model=model, window=SHAPE, workers=1)
    assert np.unique(whole.chunk).size == 1
    assert_same(whole, ref)
    got = dc.detect_cube_voxels(store, model=model, window=window, split_every=split_every,
                                workers=2)
    assert_same(got, ref)
    assert np.unique(got.chunk).size > 4          # many windows contributed
    assert len(ref) > 20


def test_windows_in_flight_are_bounded(cube: tuple[Path, Path, Path], model: Model,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    _, store, _ = cube
    lock = threading.Lock()
    state = {"now": 0, "peak": 0, "calls": 0}
    inner = dc.detect_window3d

    def counted(*args: object, **kwargs: object) -> Detections:
        with lock:
            state["now"] += 1
            state["calls"] += 1
            state["peak"] = max(state["peak"], state["now"])
        try:
            return inner(*args, **kwargs)  # type: ignore[arg-type]
        finally:
            with lock:
                state["now"] -= 1

    monkeypatch.setattr(dc, "detect_window3d", counted)
    dc.detect_cube_voxels(store, model=model, window=(32, 16, 16), workers=2)
    assert state["calls"] == 3 * 3 * 3
    assert 1 <= state["peak"] <= 2


def test_physical_columns_follow_the_wcs(cube: tuple[Path, Path, Path], model: Model) -> None:
    fits_path, store, _ = cube
    tab = streamdet.detect_cube(store, model=model, workers=2)
    assert tuple(tab.colnames[:len(SDC2_COLUMNS)]) == SDC2_COLUMNS
    w = WCS(fits.getheader(fits_path))
    ra, dec, freq = w.all_pix2world(tab["x"], tab["y"], tab["z"], 0)
    np.testing.assert_allclose(tab["ra"], np.mod(ra, 360), atol=1e-9)
    np.testing.assert_allclose(tab["dec"], dec, atol=1e-9)
    np.testing.assert_allclose(tab["central_freq"], freq, rtol=1e-12)
    np.testing.assert_allclose(tab["redshift"], HI_REST_HZ / freq - 1, rtol=1e-12)
    assert np.all((tab["central_freq"] > 950e6) & (tab["central_freq"] < 1150e6))
    assert tab["line_flux_integral"].unit.is_equivalent("Jy Hz")
    assert np.all((tab["pa"] >= 0) & (tab["pa"] < 360))
    assert np.all((tab["i"] >= 0) & (tab["i"] <= 90))
    assert np.all(tab["w20"] >= 20) and np.all(tab["hi_size"] >= 1)
    assert tab.meta["ndim"] == 3
    assert tab.meta["window"] == [96, 48, 40]      # the default, clipped to the cube


def test_sdc2_output_is_scored_by_the_official_scorer(cube: tuple[Path, Path, Path],
                                                       model: Model, tmp_path: Path) -> None:
    pytest.importorskip("ska_sdc")
    _, store, truth = cube
    tab = streamdet.detect_cube(store, model=model, workers=2)
    out = tmp_path / "cat.txt"
    streamdet.catalogue.outputs.write_catalogue(tab, out, format="sdc2")
    back = read_sdc2(out)
    assert len(back) == len(tab) and tuple(back.colnames) == SDC2_COLUMNS
    res = score_sdc2(out, truth)
    assert res.n_det == len(tab)
    # random weights: (almost) every detection is false, and the scorer says so
    assert np.isfinite(res.score) and res.n_match + res.n_false == res.n_det
    assert res.score <= res.n_match - res.n_false + 1e-9


def test_cli_detect_on_a_cube(cube: tuple[Path, Path, Path], model: Model, tmp_path: Path,
                              capsys: pytest.CaptureFixture[str]) -> None:
    _, store, _ = cube
    out = tmp_path / "cat.txt"
    assert main(["detect", str(store), "-o", str(out), "--model", str(model.path),
                 "--window", "32,16,16", "-q"]) == 0
    got = read_sdc2(out)                 # .txt on a cube: the SDC2 format
    api = streamdet.detect_cube(store, model=model, workers=2)
    assert len(got) == len(api)
    np.testing.assert_allclose(np.sort(got["central_freq"]), np.sort(api["central_freq"]),
                               rtol=1e-9)
    raw = tmp_path / "raw.txt"           # --no-measure: the network's own parameters
    assert main(["detect", str(store), "-o", str(raw), "--model", str(model.path),
                 "--no-measure", "-q"]) == 0
    net = streamdet.detect_cube(store, model=model, workers=2, measure=False)
    assert api.meta["measured"] and not net.meta["measured"]
    assert len(net) == len(api) > 0      # the measurement changes parameters, not detections
    for name in ("pa", "line_flux_integral", "hi_size"):
        np.testing.assert_allclose(np.sort(read_sdc2(raw)[name]), np.sort(net[name]),
                                   rtol=1e-5)
        assert not np.allclose(np.sort(api[name]), np.sort(net[name]))
    ecsv = tmp_path / "cat.ecsv"
    assert main(["detect", str(store), "-o", str(ecsv), "--model", str(model.path), "-q"]) == 0
    assert "redshift" in streamdet.catalogue.outputs.Table.read(ecsv).colnames
    capsys.readouterr()
    assert main(["detect", str(store), "-o", str(tmp_path / "x.txt"), "--model",
                 str(model.path), "--format", "sdc1"]) == 1
    assert "SDC1 format is for images" in capsys.readouterr().err
    assert main(["detect", str(store), "-o", str(tmp_path / "y.txt"), "--model",
                 str(model.path), "--pb", str(out)]) == 1
    assert "--pb is not available for cube detection" in capsys.readouterr().err
    assert not (tmp_path / "x.txt").exists() and not (tmp_path / "y.txt").exists()


def test_a_cube_needs_a_3d_model(cube: tuple[Path, Path, Path], model: Model) -> None:
    from streamdet.models import default_model

    _, store, _ = cube
    # no bundled 3D model fits 0.6" pixels; a 2D model never serves a cube
    with pytest.raises(InvalidModelError, match="no bundled 3D model"):
        default_model(freq_hz=1.05e9, pixel_scale_arcsec=0.6, ndim=3)
    with pytest.raises(InvalidModelError, match="2D detector but a 3D one is needed"):
        streamdet.detect_cube(store, model=default_model(freq_hz=560e6,
                                                         pixel_scale_arcsec=0.6))
    with pytest.raises(StreamdetValueError, match="window"):
        dc.detect_cube_voxels(np.zeros((8, 8, 8), np.float32), model=model, window=(0, 4, 4))
    with pytest.raises(StreamdetValueError, match="3 axes"):
        dc.detect_cube_voxels(np.zeros((8, 8), np.float32), model=model)


def test_cube_resume(cube: tuple[Path, Path, Path], model: Model, tmp_path: Path,
                     monkeypatch: pytest.MonkeyPatch,
                     capsys: pytest.CaptureFixture[str]) -> None:
    """Per-window parts: a resumed run computes only the windows whose part is missing
    (counted) and gives the uninterrupted catalogue exactly; another option is refused;
    the CLI removes the parts once the catalogue is written, unless --keep-parts."""
    from streamdet.engine._resume import PartsMismatchError, parts_dir

    _, store, _ = cube
    opts: dict[str, object] = {"model": model, "window": (32, 16, 16), "threshold": 0.3}
    full = streamdet.detect_cube(store, **opts)
    parts = tmp_path / "parts"
    first = streamdet.detect_cube(store, parts=parts, **opts)
    files = sorted(parts.glob("window-*.npz"))
    n_windows = len(dc.plan_cube(SHAPE, dc.configure(model.contract, SHAPE, window=(32, 16, 16)),
                                 model.contract.stride))
    assert len(files) == n_windows == 27
    for f in files[::4]:            # an interrupted run: 7 windows never finished
        f.unlink()
    calls: list[int] = []
    real = dc.detect_window3d

    def counting(reader: object, window: object, *args: object) -> object:
        calls.append(window.index)  # type: ignore[attr-defined]
        return real(reader, window, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(dc, "detect_window3d", counting)
    resumed = streamdet.detect_cube(store, parts=parts, resume=True, **opts)
    assert len(calls) == len(files[::4]) == 7
    for t in (first, resumed):
        assert len(t) == len(full) > 0
        for name in full.colnames:
            np.testing.assert_array_equal(np.asarray(t[name]), np.asarray(full[name]))
    with pytest.raises(PartsMismatchError, match="threshold"):
        streamdet.detect_cube(store, parts=parts, resume=True, **{**opts, "threshold": 0.4})
    with pytest.raises(StreamdetValueError, match="resume needs parts"):
        streamdet.detect_cube(store, resume=True, **opts)
    monkeypatch.undo()
    out = tmp_path / "c.ecsv"
    argv = ["detect", str(store), "-o", str(out), "--model", str(model.path),
            "--window", "32,16,16", "--threshold", "0.3"]
    assert main([*argv, "--keep-parts"]) == 0
    assert len(list(parts_dir(out).glob("window-*.npz"))) == 27
    assert main([*argv, "--overwrite", "--resume"]) == 0
    assert "resuming from 27 finished windows" in capsys.readouterr().err
    assert not parts_dir(out).exists()
    np.testing.assert_array_equal(np.asarray(streamdet.catalogue.outputs.Table.read(out)["ra"]),
                                  np.asarray(full["ra"]))


def test_default_3d_model_finds_the_bright_galaxies(tmp_path: Path) -> None:
    """The bundled 3D model (no --model) on a fresh simulated SDC2-like cube at the 2000 h
    noise: most of the brightest galaxies of the truth are found and most detections are
    real galaxies (the scorer's purity too)."""
    truth = simulate_cube(tmp_path / "c.fits", shape=(1024, 320, 320), seed=20261204,
                          channel_offset=5600)
    cat = streamdet.detect_cube(tmp_path / "c.fits")
    assert cat.meta["model_name"] == "streamdet-sdc2-3d"
    x, y, z = (np.asarray(cat[c], float) for c in ("x", "y", "z"))
    half_d = np.asarray(cat["box_d"], float) / 2
    tx, ty, tz = (np.asarray(truth[c], float) for c in ("x", "y", "channel"))
    flux = np.asarray(truth["line_flux_integral"], float)
    found = np.zeros(len(truth), bool)
    used = np.zeros(len(cat), bool)
    for j in np.argsort(-flux):     # brightest first, one detection each, within a beam
        hit = np.nonzero((np.hypot(x - tx[j], y - ty[j]) <= 3.0)
                         & (np.abs(z - tz[j]) <= half_d) & ~used)[0]
        if hit.size:
            found[j] = used[hit[0]] = True
    inside = (tx > 8) & (tx < 311) & (ty > 8) & (ty < 311)
    bright = inside & (flux >= 50.0)
    assert bright.sum() >= 4
    assert found[bright].mean() >= 0.5, (found[bright].sum(), bright.sum())
    assert used.mean() >= 0.6, (used.sum(), len(cat))
    r = score_sdc2(streamdet.catalogue.sdc2.to_sdc2(cat), truth)
    assert r.purity >= 0.8 and r.score > 0
