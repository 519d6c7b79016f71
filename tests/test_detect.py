"""The chunked detection engine against a whole-image forward pass, and its edge cases."""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path

import numpy as np
import pytest
from _models import make_test_model
from astropy.io import fits
from astropy.wcs import WCS

import streamdet
from streamdet.catalogue.outputs import NoWCSWarning
from streamdet.cli import main
from streamdet.engine._infer import refine_detections
from streamdet.engine._measure import measure_sources
from streamdet.engine._refine import refine_centres
from streamdet.engine.contract import Model, load_model, normalise
from streamdet.engine.decode import decode
from streamdet.engine.detect import _measurement, detect, detect_pixels
from streamdet.engine.detections import Detections
from streamdet.engine.nms import nms_detections
from streamdet.errors import (
    InvalidModelError,
    OutputExistsError,
    StreamdetFileNotFoundError,
    StreamdetValueError,
)

pytest.importorskip("torch")

THRESHOLD = 0.5
FIT_SNR = 1.0       # free fits for some of the test image's sources, not all


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Model:
    path = make_test_model(tmp_path_factory.mktemp("model") / "tiny.onnx")
    return load_model(path)


def forward(image: np.ndarray, model: Model, threshold: float | np.ndarray) -> Detections:
    """Every box one forward pass over the whole (stride-padded) image decodes."""
    c = model.contract
    s = c.stride[-1]
    ny, nx = image.shape
    buf = np.zeros((-(-ny // s) * s, -(-nx // s) * s), np.float32)
    buf[:ny, :nx] = normalise(image, c)
    return decode(model.run(buf[None, None]), c, threshold=threshold)


def reference(image: np.ndarray, model: Model, threshold: float = THRESHOLD,
              refine: bool = True, measure: bool = True) -> Detections:
    """Whole-image forward pass (one ONNX call), decode, peak refinement (one box per
    peak), one global NMS, Gaussian fits on the whole image."""
    c = model.contract
    dets = forward(image, model, threshold)
    if refine:
        dets = refine_detections(dets, image, origin=(0, 0))
    dets = nms_detections(dets, iou_threshold=c.nms["iou_threshold"], kind=c.nms["kind"])
    how = _measurement(c, None)
    if measure and how is not None:
        dets = measure_sources(dets, image, origin=(0, 0), beam_px=how.beam_px,
                               pixel_scale_arcsec=how.pixel_scale_arcsec,
                               bmin_resolved=how.bmin_resolved,
                               bmaj_resolved=how.bmaj_resolved, fit_snr=how.fit_snr,
                               background=how.background, flux_scale=how.flux_scale)
    return dets


def _sorted_boxes(d: Detections) -> np.ndarray:
    order = np.lexsort((d.boxes[:, 1], d.boxes[:, 0]))
    return d.boxes[order]


def _sorted_params(d: Detections) -> np.ndarray:
    return d.params[np.lexsort((d.boxes[:, 1], d.boxes[:, 0]))]


def assert_same(a: Detections, b: Detections) -> None:
    assert len(a) == len(b), (len(a), len(b))
    np.testing.assert_allclose(_sorted_boxes(a), _sorted_boxes(b), atol=1e-3)
    np.testing.assert_allclose(_sorted_params(a), _sorted_params(b), rtol=1e-6, atol=1e-12)
    np.testing.assert_allclose(np.sort(a.objectness), np.sort(b.objectness), atol=1e-5)


def field(ny: int = 1000, nx: int = 1100, seed: int = 0) -> np.ndarray:
    """Noise plus compact sources, many of them exactly on 256-px chunk borders and corners."""
    rng = np.random.default_rng(seed)
    img = rng.normal(0.0, 4e-7, (ny, nx)).astype(np.float32)
    yy, xx = np.mgrid[-6:7, -6:7]
    spots = [(rng.uniform(0, ny), rng.uniform(0, nx)) for _ in range(120)]
    borders = np.arange(256, max(ny, nx), 256)
    spots += [(float(b), rng.uniform(0, nx)) for b in borders if b < ny]
    spots += [(rng.uniform(0, ny), float(b)) for b in borders if b < nx]
    spots += [(float(by), float(bx)) for by in borders for bx in borders if by < ny and bx < nx]
    for y, x in spots:
        iy, ix = round(y), round(x)
        g = np.exp(-((yy + iy - y) ** 2 + (xx + ix - x) ** 2) / (2 * 1.2 ** 2))
        sy = slice(max(iy - 6, 0), min(iy + 7, ny))
        sx = slice(max(ix - 6, 0), min(ix + 7, nx))
        img[sy, sx] += (rng.uniform(3e-6, 6e-5) * g)[sy.start - iy + 6:sy.stop - iy + 6,
                                                      sx.start - ix + 6:sx.stop - ix + 6]
    return img


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return field()


def _sky_header(ny: int, nx: int) -> fits.Header:
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---SIN", "DEC--SIN"]
    w.wcs.crval = [0.0, -30.0]
    w.wcs.crpix = [nx / 2 + 1, ny / 2 + 1]
    w.wcs.cdelt = [-0.6 / 3600, 0.6 / 3600]
    h = w.to_header()
    h["BUNIT"] = "JY/BEAM"
    h["BMAJ"], h["BMIN"], h["BPA"] = 1.5 / 3600, 1.5 / 3600, 0.0
    return h


@pytest.fixture(scope="module")
def sky_fits(tmp_path_factory: pytest.TempPathFactory, image: np.ndarray) -> Path:
    path = tmp_path_factory.mktemp("sky") / "field.fits"
    fits.PrimaryHDU(image, header=_sky_header(*image.shape)).writeto(path)
    return path


@pytest.fixture(scope="module")
def sky_zarr(sky_fits: Path) -> Path:
    store = sky_fits.with_suffix(".zarr")
    streamdet.convert(sky_fits, store, chunks=256, quiet=True)
    return store


@pytest.mark.parametrize("chunk", [256, 512, 1024, 2048])
@pytest.mark.parametrize("extra_halo", [0, 32])
def test_chunk_invariance(image: np.ndarray, model: Model, chunk: int, extra_halo: int) -> None:
    ref = reference(image, model)
    assert len(ref) > 50
    halo = model.contract.halo[-1] + extra_halo
    got = detect_pixels(image, model=model, chunk=chunk, halo=halo, threshold=THRESHOLD)
    assert_same(got, ref)
    # every window contributed only boxes whose centre lies in its own core
    assert np.unique(got.chunk).size > (1 if chunk < 1000 else 0)


def _with_fit_snr(model: Model, fit_snr: float | None) -> Model:
    measure = {**model.contract.measure, "fit_snr": fit_snr}
    return Model(model.path, dataclasses.replace(model.contract, measure=measure),
                 threads=model.threads)


@pytest.mark.parametrize("chunk", [256, 1024])
def test_chunk_invariance_when_only_bright_sources_are_fitted(image: np.ndarray, model: Model,
                                                              chunk: int) -> None:
    """The choice of which sources get the free fit (peak SNR against the noise around
    each source) does not depend on the window a source was found in."""
    bright = _with_fit_snr(model, FIT_SNR)
    ref = reference(image, bright)
    forced = reference(image, _with_fit_snr(model, None))
    fitted = ~np.isclose(ref.param("pa"), forced.param("pa"))
    assert 20 < fitted.sum() < len(ref) - 20                  # both kinds are present
    np.testing.assert_array_equal(ref.param("flux")[~fitted], forced.param("flux")[~fitted])
    got = detect_pixels(image, model=bright, chunk=chunk, threshold=THRESHOLD)
    assert_same(got, ref)


def test_unrefined_positions_match_the_network(image: np.ndarray, model: Model) -> None:
    got = detect_pixels(image, model=model, chunk=512, threshold=THRESHOLD, refine=False,
                        measure=False)
    assert_same(got, reference(image, model, refine=False, measure=False))


def test_refinement_finds_subpixel_peaks() -> None:
    """Centres start up to 0.7 px off; refined ones land on the true sub-pixel peaks."""
    rng = np.random.default_rng(4)
    ny, nx = 200, 300
    yy, xx = np.mgrid[0:ny, 0:nx]
    true = np.column_stack([rng.uniform(10, nx - 10, 40), rng.uniform(10, ny - 10, 40)])
    true = true[np.all(np.abs(true[:, None] - true[None]).max(axis=2) + np.eye(40) * 99 > 8,
                       axis=1)]
    sigma = 2.5 / 2.3548                      # a 2.5 px FWHM beam, as at 560 MHz
    img = np.zeros((ny, nx))
    for x, y in true:
        img += np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sigma ** 2))
    start = true + rng.uniform(-0.7, 0.7, true.shape)
    got = refine_centres(img[50:, 20:], start, origin=(50, 20))
    # centres whose 5x5 neighbourhood lies in the cut-out are refined, others not
    inside = (np.rint(start[:, 1]) >= 52) & (np.rint(start[:, 0]) >= 22)
    assert inside.sum() > 10
    err = np.hypot(*(got - true)[inside].T)
    assert err.max() < 0.08, err.max()
    assert np.all(got[~inside] == start[~inside])       # no pixels: left alone
    img[np.rint(true[0, 1]).astype(int), np.rint(true[0, 0]).astype(int)] = np.nan
    assert np.all(refine_centres(img, start[:1], origin=(0, 0)) == start[:1])
    assert refine_centres(img, np.zeros((0, 2)), origin=(0, 0)).shape == (0, 2)


def test_tree_fan_in_and_tile_do_not_matter(image: np.ndarray, model: Model) -> None:
    a = detect_pixels(image, model=model, chunk=256, split_every=2, threshold=THRESHOLD)
    b = detect_pixels(image, model=model, chunk=256, split_every=16, tile=128, batch=3,
                      threshold=THRESHOLD)
    assert_same(a, b)


@pytest.mark.parametrize("shape", [(2048, 1024), (1024, 2048)])
def test_halo_strips_wait_only_along_the_walk(model: Model, shape: tuple[int, int],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Each halo strip is handed on by the window that owns the chunk (or cut just
    before its first consumer runs, by one task per chunk), and taken out of that
    task's result by its one consumer: the strips held at once are about one row of
    windows' worth along the image's shorter side (with 2 workers), however long the
    image, and however long the producer's result itself waits for its merge."""
    import dask
    import dask.array as da

    monkeypatch.setattr("os.cpu_count", lambda: 2)

    held: list[int] = []
    seen: dict[tuple[str, object], int] = {}

    def strips_of(key: str, value: object) -> dict[tuple[str, object], int]:
        if key.startswith("window-"):
            pieces = value[1]  # type: ignore[index]
        elif key.startswith("halo-"):
            pieces = value
        else:
            return {}
        return {(key, k): p[2].nbytes for k, p in pieces.items()}  # type: ignore[attr-defined]

    class Count(dask.callbacks.Callback):
        def _posttask(self, key: object, result: object, dsk: object, state: dict,
                      worker_id: object) -> None:
            strips: dict[tuple[str, object], int] = {}
            for k, v in state["cache"].items():
                strips.update(strips_of(str(k), v))
            seen.update(strips)
            held.append(sum(strips.values()))

    img = field(*shape, seed=3)
    with Count():
        got = detect_pixels(da.from_array(img, chunks=128), model=model, chunk=128,
                            threshold=THRESHOLD)
    assert len(seen) > 800                  # 128 windows, up to 8 strips each
    rows = max(shape) // 128                 # rows of windows along the walk
    assert 0 < max(held) <= 1.5 * sum(seen.values()) / rows, (max(held), sum(seen.values()))
    assert_same(got, detect_pixels(img, model=model, chunk=1024, threshold=THRESHOLD))


def test_store_and_fits_inputs(image: np.ndarray, model: Model, sky_fits: Path,
                               sky_zarr: Path) -> None:
    ref = reference(image, model)
    from_zarr = detect(sky_zarr, model=model, chunk=512, threshold=THRESHOLD)
    from_fits = detect(sky_fits, model=model, chunk=512, threshold=THRESHOLD)
    assert len(from_zarr) == len(from_fits) == len(ref)
    np.testing.assert_allclose(np.sort(from_zarr["x"]), np.sort(ref.centers[:, 0]), atol=1e-3)
    np.testing.assert_allclose(np.sort(from_fits["y"]), np.sort(ref.centers[:, 1]), atol=1e-3)
    # sky positions follow the image WCS
    w = WCS(_sky_header(*image.shape))
    ra, dec = w.pixel_to_world_values(np.asarray(from_zarr["x"]), np.asarray(from_zarr["y"]))
    np.testing.assert_allclose(np.asarray(from_zarr["ra"]), np.mod(ra, 360.0), atol=1e-9)
    np.testing.assert_allclose(np.asarray(from_zarr["dec"]), dec, atol=1e-9)


def test_pixel_catalogue_without_wcs_warns(image: np.ndarray, model: Model) -> None:
    with pytest.warns(NoWCSWarning):
        table = detect(image[:300, :300], model=model, threshold=THRESHOLD)
    assert "ra" not in table.colnames and len(table) > 0


@pytest.mark.parametrize("shape", [(40, 50), (17, 300), (300, 9)])
def test_image_smaller_than_a_tile(model: Model, shape: tuple[int, int]) -> None:
    img = field(*shape, seed=3)
    assert_same(detect_pixels(img, model=model, chunk=256, threshold=0.3),
                reference(img, model, threshold=0.3))


def test_nan_and_zero_chunks_are_skipped(image: np.ndarray, model: Model) -> None:
    assert len(detect_pixels(np.full((600, 600), np.nan, np.float32), model=model)) == 0
    assert len(detect_pixels(np.zeros((600, 600), np.float32), model=model)) == 0
    img = image.copy()
    img[:512, :512] = np.nan           # two whole 256-px windows blank
    img[600:, 700:] = 0.0
    got = detect_pixels(img, model=model, chunk=256, threshold=THRESHOLD)
    assert len(got) > 0
    assert np.all(np.isfinite(got.boxes)) and np.all(np.isfinite(got.params))
    c = got.centers
    assert not np.any((c[:, 0] < 512 - 8) & (c[:, 1] < 512 - 8))


def test_model_errors(tmp_path: Path, image: np.ndarray, model: Model) -> None:
    with pytest.raises(StreamdetFileNotFoundError, match=r"nope\.onnx"):
        detect_pixels(image, model=tmp_path / "nope.onnx")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not an onnx file")
    with pytest.raises(InvalidModelError):
        detect_pixels(image, model=bad)
    with pytest.raises(StreamdetValueError, match="3 dimensions"):
        detect_pixels(np.zeros((4, 64, 64), np.float32), model=model)
    with pytest.raises(StreamdetValueError, match="threshold"):
        detect_pixels(image, model=model, threshold=1.5)
    with pytest.raises(StreamdetValueError, match="preset"):
        detect_pixels(image, model=model, threshold="nonsense")


def test_model_without_contract(tmp_path: Path, image: np.ndarray) -> None:
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    node = helper.make_node("Identity", ["image"], ["grid"])
    graph = helper.make_graph(
        [node], "plain",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 1, "H", "W"])],
        [helper.make_tensor_value_info("grid", TensorProto.FLOAT, ["N", 1, "H", "W"])])
    path = tmp_path / "plain.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    with pytest.raises(InvalidModelError, match="contract"):
        detect_pixels(image, model=path)


def test_distributed_client(image: np.ndarray, model: Model) -> None:
    distributed = pytest.importorskip("distributed")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # cluster start-up chatter is not ours to judge
        with distributed.Client(processes=False, n_workers=1, threads_per_worker=2,
                                dashboard_address=None) as client:
            got = detect_pixels(image, model=model, chunk=512, threshold=THRESHOLD,
                                client=client)
    assert_same(got, reference(image, model))


# --- the command line ---------------------------------------------------------------------

def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_no_measure_keeps_the_network_values(sky_zarr: Path, model: Model,
                                                 tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    from astropy.table import Table

    tables = {}
    for flag in ([], ["--no-measure"]):
        out = tmp_path / f"cat{len(flag)}.ecsv"
        code, _, err = _run(["detect", str(sky_zarr), "-o", str(out), "--model",
                             str(model.path), "--threshold", "0.5", "--quiet", *flag], capsys)
        assert code == 0, err
        tables[bool(flag)] = Table.read(out, format="ascii.ecsv")
    for measure in (True, False):
        api = detect(sky_zarr, model=model, threshold=THRESHOLD, measure=measure)
        got = tables[not measure]
        for name in ("flux", "bmaj", "pa"):
            np.testing.assert_allclose(np.sort(np.asarray(got[name])),
                                       np.sort(np.asarray(api[name])), rtol=1e-6)
    assert not np.allclose(np.sort(np.asarray(tables[False]["flux"])),
                           np.sort(np.asarray(tables[True]["flux"])), rtol=1e-3)


@pytest.mark.parametrize("fmt", ["ecsv", "fits", "parquet"])
def test_cli_table_formats(fmt: str, sky_zarr: Path, model: Model, tmp_path: Path,
                           capsys: pytest.CaptureFixture[str]) -> None:
    if fmt == "parquet":
        pytest.importorskip("pyarrow")
    from astropy.table import Table

    out = tmp_path / f"cat.{fmt}"
    reg = tmp_path / "cat.reg"
    code, _, err = _run(["detect", str(sky_zarr), "-o", str(out), "--model",
                              str(model.path), "--regions", str(reg), "--threshold", "0.5",
                              "--quiet"], capsys)
    assert code == 0, err
    table = Table.read(out, format={"ecsv": "ascii.ecsv", "fits": "fits",
                                    "parquet": "parquet"}[fmt])
    expected = detect(sky_zarr, model=model, threshold=THRESHOLD)
    assert len(table) == len(expected) > 0
    np.testing.assert_allclose(np.sort(np.asarray(table["ra"])),
                               np.sort(np.asarray(expected["ra"])), rtol=0, atol=1e-9)
    from regions import Regions

    assert len(Regions.read(reg, format="ds9")) == len(expected)


def test_cli_sdc1_and_scorer(sky_zarr: Path, model: Model, tmp_path: Path,
                             capsys: pytest.CaptureFixture[str]) -> None:
    from streamdet.catalogue.catalog import read_sdc1

    out = tmp_path / "cat.txt"
    code, _, err = _run(["detect", str(sky_zarr), "-o", str(out), "--model", str(model.path),
                         "--threshold", "0.5", "-q"], capsys)
    assert code == 0, err
    sub = read_sdc1(out)
    assert len(sub) > 0
    assert np.all(np.isfinite(np.asarray(sub["flux"])))
    ska_sdc = pytest.importorskip("ska_sdc")
    truth = sub.to_pandas()
    scorer = ska_sdc.Sdc1Scorer(sub.to_pandas(), truth, 560)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = scorer.run(mode=0, train=False)
    # train=False drops submissions inside the SDC1 training box (RA -0.6723..0, Dec
    # -29.9400..-29.4061); everything else reaches the scorer.
    ra = np.asarray(sub["ra_core"])
    ra = np.where(ra > 180.0, ra - 360.0, ra)
    dec = np.asarray(sub["dec_core"])
    in_box = (ra > -0.6723) & (ra < 0.0) & (dec > -29.9400) & (dec < -29.4061)
    assert result.n_det == int(np.sum(~in_box)) > 0
    assert np.isfinite(result.value)


def test_cli_refuses_sdc1_without_wcs(tmp_path: Path, model: Model,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "nowcs.fits"
    fits.PrimaryHDU(field(300, 300, seed=5)).writeto(path)
    out = tmp_path / "cat.txt"
    code, _, err = _run(["detect", str(path), "-o", str(out), "--model", str(model.path),
                         "-q"], capsys)
    assert code == 1 and "WCS" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_cli_output_errors(sky_zarr: Path, model: Model, tmp_path: Path,
                           capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cat.ecsv"
    out.write_text("precious")
    code, _, err = _run(["detect", str(sky_zarr), "-o", str(out), "--model", str(model.path),
                         "-q"], capsys)
    assert code == 1 and "exists" in err
    assert out.read_text() == "precious"
    code, _, err = _run(["detect", str(sky_zarr), "-o", str(tmp_path / "no" / "cat.ecsv"),
                         "--model", str(model.path), "-q"], capsys)
    assert code == 1 and "does not exist" in err
    code, _, err = _run(["detect", str(tmp_path / "missing.zarr"), "-o", str(tmp_path / "c.ecsv"),
                         "--model", str(model.path), "-q"], capsys)
    assert code == 1 and "missing.zarr" in err
    with pytest.raises(OutputExistsError):
        from streamdet.catalogue.outputs import write_catalogue

        write_catalogue(detect(sky_zarr, model=model), out, format="ecsv")


