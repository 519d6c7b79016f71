"""Dense fields: the keep/drop decision of a box must not depend on its window, and no
source is listed twice.

The fields hold close pairs (1-3 px apart, closer than the beam), sources on window
borders and corners, and bright blends; each chunked run is compared with one forward
pass over the whole image (``test_detect.reference``), over many seeds, window sizes
256-2048 and two halos.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from _models import make_test_model
from astropy.io import fits
from test_detect import THRESHOLD, assert_same, forward, reference

from streamdet.engine._refine import refine_centres
from streamdet.engine.contract import Model, load_model
from streamdet.engine.detect import detect_pixels, resolve_threshold
from streamdet.engine.detections import Detections

pytest.importorskip("torch")

WINDOWS = (256, 512, 1024, 2048)


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Model:
    return load_model(make_test_model(tmp_path_factory.mktemp("model") / "tiny.onnx"))


def dense_field(seed: int, ny: int = 640, nx: int = 700) -> np.ndarray:
    """Noise, isolated sources, close pairs (1-3 px) and sources on 256-px borders/corners."""
    rng = np.random.default_rng(seed)
    img = rng.normal(0.0, 4e-7, (ny, nx))
    yy, xx = np.mgrid[0:ny, 0:nx]
    spots: list[tuple[float, float]] = []
    for _ in range(60):                                     # close pairs
        y, x = rng.uniform(4, ny - 4), rng.uniform(4, nx - 4)
        d, a = rng.uniform(1.0, 3.0), rng.uniform(0, np.pi)
        spots += [(y, x), (y + d * np.sin(a), x + d * np.cos(a))]
    borders = np.arange(256, max(ny, nx), 256)
    for b in borders:                                       # on borders, pairs across them
        if b < ny:
            x = rng.uniform(0, nx)
            spots += [(float(b), x), (b + rng.uniform(-2.5, 2.5), x + rng.uniform(-2, 2))]
        if b < nx:
            y = rng.uniform(0, ny)
            spots += [(y, float(b)), (y + rng.uniform(-2, 2), b + rng.uniform(-2.5, 2.5))]
    spots += [(float(by) + rng.uniform(-1.5, 1.5), float(bx) + rng.uniform(-1.5, 1.5))
              for by in borders for bx in borders if by < ny and bx < nx]
    spots += [(rng.uniform(0, ny), rng.uniform(0, nx)) for _ in range(80)]
    sigma = 1.2
    for y, x in spots:
        iy, ix = round(y), round(x)
        sy = slice(max(iy - 7, 0), min(iy + 8, ny))
        sx = slice(max(ix - 7, 0), min(ix + 8, nx))
        g = np.exp(-((yy[sy, sx] - y) ** 2 + (xx[sy, sx] - x) ** 2) / (2 * sigma ** 2))
        img[sy, sx] += rng.uniform(3e-6, 6e-5) * g
    return img.astype(np.float32)


def coincident(d: Detections, tol: float = 1e-6) -> int:
    """Number of detections that share their centre (within ``tol`` px) with another."""
    c = d.centers
    order = np.lexsort((c[:, 1], c[:, 0]))
    s = c[order]
    same = np.all(np.abs(s[1:] - s[:-1]) <= tol, axis=1)
    return int(np.count_nonzero(same))


@pytest.mark.parametrize("seed", range(8))
def test_keep_or_drop_does_not_depend_on_the_window(model: Model, seed: int) -> None:
    rng = np.random.default_rng(1000 + seed)
    img = dense_field(seed)
    ref = reference(img, model, measure=False)
    assert len(ref) > 100
    halo = model.contract.halo[-1] + int(rng.choice([0, 32]))
    for chunk in rng.choice(WINDOWS, size=2, replace=False):
        got = detect_pixels(img, model=model, chunk=int(chunk), halo=halo,
                            threshold=THRESHOLD, measure=False)
        assert_same(got, ref)


def test_chunking_with_measurement_on_a_dense_field(model: Model) -> None:
    img = dense_field(99)
    ref = reference(img, model)
    for chunk in (256, 1024):
        assert_same(detect_pixels(img, model=model, chunk=chunk, threshold=THRESHOLD), ref)


@pytest.fixture(scope="module")
def bundled() -> Model:
    from streamdet.models import default_model

    return load_model(default_model(freq_hz=560e6, pixel_scale_arcsec=0.6))


def simulated(tmp: Path, seed: int, size: int = 1024) -> np.ndarray:
    """A confused simulated 560 MHz field (the faint population included), Jy/beam."""
    import streamdet

    path = tmp / f"field_{seed}.fits"
    streamdet.simulate(path, size=size, freq=560, seed=seed, offset=(0.0, -0.5), quiet=True)
    return np.asarray(fits.getdata(path), np.float32).reshape(size, size)


def _raw_refined(img: np.ndarray, model: Model, threshold: np.ndarray) -> np.ndarray:
    """Refined centres of every decoded box, before any de-duplication or NMS."""
    return refine_centres(img, forward(img, model, threshold).centers, origin=(0, 0))


@pytest.mark.parametrize("seed", [11, 12, 13])
def test_no_source_is_listed_twice(bundled: Model, seed: int, tmp_path: Path) -> None:
    """The bundled model's boxes of one source (two priors or cells) are often refined
    onto one image peak; the catalogue keeps one of them, whatever the chunking, and
    the whole-image reference agrees."""
    img = simulated(tmp_path, seed)
    best = resolve_threshold(bundled.contract, "best")
    raw = _raw_refined(img, bundled, best)
    order = np.lexsort((raw[:, 1], raw[:, 0]))
    shared = int(np.count_nonzero(np.all(np.diff(raw[order], axis=0) == 0, axis=1)))
    assert shared > 20                       # the case arises on every such field
    ref = reference(img, bundled, threshold=best)
    assert coincident(ref) == 0
    for chunk in (256, 512, 2048):
        got = detect_pixels(img, model=bundled, chunk=chunk, threshold=best)
        assert len(got) > 1000
        assert coincident(got) == 0
        assert_same(got, ref)


@pytest.mark.parametrize("seed", range(21, 31))
def test_bundled_model_keeps_the_same_boxes_in_any_window(bundled: Model, seed: int,
                                                         tmp_path: Path) -> None:
    """Close pairs of real-looking sources, whose refined boxes come within the NMS
    threshold of each other, are kept or dropped as in the whole-image pass, whichever
    windows they fall in (windows 256-2048, two halos)."""
    rng = np.random.default_rng(seed)
    img = simulated(tmp_path, seed, size=768)
    best = resolve_threshold(bundled.contract, "best")
    ref = reference(img, bundled, threshold=best, measure=False)
    halo = bundled.contract.halo[-1] + int(rng.choice([0, 32]))
    for chunk in rng.choice(WINDOWS, size=2, replace=False):
        got = detect_pixels(img, model=bundled, chunk=int(chunk), halo=halo, threshold=best,
                            measure=False)
        assert_same(got, ref)
