"""Decoding raw grids into detections, and the parameter encoders."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from streamdet.engine.contract import ModelContract
from streamdet.engine.decode import decode, decode_params, encode_params
from streamdet.engine.detections import Detections
from streamdet.errors import StreamdetValueError

CHANNELS = ["x", "y", "w", "h", "prob", "obj", "z", "flux", "size", "tilt", "pa_cos", "pa_sin"]


def make_contract(*, stride: tuple[int, int] = (16, 8), channels: list[str] | None = None,
                  priors: list[list[float]] | None = None) -> ModelContract:
    """A contract with a non-square stride, non-square priors and every decode kind."""
    return ModelContract.from_dict({
        "format_version": 1, "ndim": 2,
        "input": {"name": "image"}, "output": {"name": "grid"},
        "stride": list(stride), "receptive_field": [99, 99],
        "priors": priors or [[6, 6], [12, 9], [9, 12]],
        "box_channels": channels or CHANNELS,
        "box_encoding": {"xy": "cell_offset", "wh": "prior_exp"},
        "params": [
            {"name": "flux", "unit": "Jy", "decode": "log_minmax", "channels": ["flux"],
             "min": 1.97e-6, "max": 2e-3},
            {"name": "size", "unit": "arcsec", "decode": "minmax", "channels": ["size"],
             "min": -2.0, "max": 30.0},
            {"name": "tilt", "unit": "", "decode": "identity", "channels": ["tilt"]},
            {"name": "pa", "unit": "deg", "decode": "angle_cos_sin01",
             "channels": ["pa_cos", "pa_sin"], "period": 180},
        ],
        "normalisation": {"kind": "none"},
        "tile": [256, 256], "overlap": [0, 0],
        "thresholds": {"default": 0.6},
    })


# --------------------------------------------------------------------------- reference
def ref_param(spec: Any, values: list[float]) -> float:
    if spec.decode == "log_minmax":
        v = min(max(values[0], 0.0), 1.0)
        return math.exp(math.log(spec.min) + v * (math.log(spec.max) - math.log(spec.min)))
    if spec.decode == "minmax":
        return spec.min + values[0] * (spec.max - spec.min)
    if spec.decode == "identity":
        return values[0]
    c, s = values
    theta = math.degrees(math.atan2(2 * s - 1, c)) % spec.period
    return theta if theta < spec.period else 0.0


def ref_decode(grid: np.ndarray, c: ModelContract, thr: list[float],
               origins: list[tuple[float, float]]) -> list[tuple[Any, ...]]:
    """Slow per-cell decoder written from the spec, one Python loop per axis."""
    nch = len(c.box_channels)
    col = {name: j for j, name in enumerate(c.box_channels)}
    sy, sx = c.stride
    rows = []
    for n in range(grid.shape[0]):
        for gy in range(grid.shape[2]):
            for gx in range(grid.shape[3]):
                for b in range(c.nbox):
                    v = {name: float(grid[n, b * nch + j, gy, gx]) for name, j in col.items()}
                    if not v["obj"] >= thr[b]:
                        continue
                    pw, ph = c.priors[b]
                    cx = (gx + v["x"]) * sx - 0.5 + origins[n][0]
                    cy = (gy + v["y"]) * sy - 0.5 + origins[n][1]
                    w = pw * math.exp(v["w"])
                    h = ph * math.exp(v["h"])
                    params = [ref_param(p, [v[ch] for ch in p.channels]) for p in c.params]
                    rows.append((cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2, v["obj"],
                                 v.get("prob", 1.0), b, *params))
    return rows


def as_rows(d: Detections) -> np.ndarray:
    return np.column_stack([d.boxes, d.objectness, d.probability, d.prior, d.params])


def sort_rows(a: np.ndarray) -> np.ndarray:
    return a[np.lexsort(a[:, :4].T[::-1])]


def assert_rows_close(got: Detections, ref: list[Any]) -> None:
    """Boxes and scores to 1e-9; the float32 parameters to their rounding (6e-8)."""
    rows, expect = sort_rows(as_rows(got)), sort_rows(np.array(ref))
    np.testing.assert_allclose(rows[:, :7], expect[:, :7], rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(rows[:, 7:], expect[:, 7:], rtol=6e-8, atol=1e-30)


def random_grid(c: ModelContract, n: int, gy: int, gx: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    grid = rng.random((n, c.n_channels, gy, gx)).astype(np.float32)
    nch = len(c.box_channels)
    for b in range(c.nbox):  # size channels are unbounded t values
        for name in ("w", "h"):
            grid[:, b * nch + c.channel_index(name)] = rng.normal(0, 0.7, (n, gy, gx))
    # Params a little outside [0, 1] exercise the log_minmax clipping.
    j = c.channel_index("flux")
    grid[:, j::nch] = rng.uniform(-0.2, 1.2, (n, c.nbox, gy, gx))
    return grid


# --------------------------------------------------------------------------- decode
@pytest.mark.parametrize(("threshold", "origins", "seed"), [
    (None, None, 0),
    (0.25, [(512.0, 1024.0)], 1),
    ([0.9, 0.1, 0.5], [(0.0, 0.0), (480.0, 16.0), (-32.0, 960.0)], 2),
    (np.array([0.0, 1.0, 0.75]), [(7.0, 3.0), (100.0, 200.0), (33.0, 44.0)], 3),
])
def test_decode_matches_per_cell_reference(threshold: Any, origins: Any, seed: int) -> None:
    c = make_contract()
    n = 1 if origins is None or len(origins) == 1 else len(origins)
    grid = random_grid(c, n, 5, 7, seed)
    got = decode(grid, c, threshold=threshold, origins=None if origins is None else
                 np.asarray(origins if len(origins) > 1 else origins[0]))
    thr = list(np.broadcast_to(c.threshold_values() if threshold is None else threshold, 3))
    ref = ref_decode(grid, c, [float(t) for t in thr], origins or [(0.0, 0.0)])
    assert len(got) == len(ref) > 0
    assert got.param_names == ("flux", "size", "tilt", "pa")
    assert got.boxes.dtype == np.float64 and got.objectness.dtype == np.float32
    assert got.prior.dtype == np.int16 and np.all(got.chunk == -1)
    assert got.params.dtype == np.float32         # parameters: float32, rounded once
    assert_rows_close(got, ref)


def test_decode_threshold_per_prior_selects_per_prior() -> None:
    c = make_contract()
    grid = random_grid(c, 2, 6, 6, 5)
    d = decode(grid, c, threshold=[1.0, 0.0, 1.0])  # keeps only prior 1, every cell
    assert set(d.prior.tolist()) == {1}
    assert len(d) == 2 * 6 * 6 - int(np.sum(grid[:, 12 + 5] >= 1.0))


def test_decode_no_prob_channel_and_square_stride() -> None:
    channels = [ch for ch in CHANNELS if ch != "prob"]
    c = make_contract(stride=(16, 16), channels=channels)
    grid = random_grid(c, 1, 4, 4, 7)
    d = decode(grid[0], c, threshold=0.5, origins=(64.0, 32.0), chunk=3)
    ref = ref_decode(grid, c, [0.5] * 3, [(64.0, 32.0)])
    assert_rows_close(d, ref)
    assert np.all(d.probability == 1.0) and np.all(d.chunk == 3)


def test_decode_cell_geometry() -> None:
    """A box at the centre of cell (gy, gx) = (2, 3) with t = 0 is the prior, centred there."""
    c = make_contract(stride=(16, 8))
    grid = np.zeros((1, c.n_channels, 4, 5), np.float32)
    nch = len(c.box_channels)
    b = 2
    grid[0, b * nch + c.channel_index("x"), 2, 3] = 0.5
    grid[0, b * nch + c.channel_index("y"), 2, 3] = 0.5
    grid[0, b * nch + c.channel_index("obj"), 2, 3] = 0.9
    d = decode(grid, c, threshold=0.5, origins=(100.0, 1000.0))
    assert len(d) == 1
    # Cell x 3 covers pixels 24..31 (stride 8): centre 27.5; y 2 covers 32..47: centre 39.5.
    cx, cy = 100 + 27.5, 1000 + 39.5
    np.testing.assert_allclose(d.boxes[0], [cx - 4.5, cy - 6, cx + 4.5, cy + 6])


def test_decode_empty() -> None:
    c = make_contract()
    grid = random_grid(c, 2, 3, 3, 9)
    nch = len(c.box_channels)
    grid[:, c.channel_index("obj")::nch] = 0.1
    d = decode(grid, c, threshold=0.5)
    assert len(d) == 0 and d.param_names == c.param_names and d.params.shape == (0, 4)
    d0 = decode(np.zeros((0, c.n_channels, 3, 3), np.float32), c)
    assert len(d0) == 0 and d0.param_names == c.param_names
    d1 = decode(np.zeros((1, c.n_channels, 0, 4), np.float32), c)
    assert len(d1) == 0


def test_decode_refuses_bad_input() -> None:
    c = make_contract()
    with pytest.raises(StreamdetValueError, match="grid must have shape"):
        decode(np.zeros((1, c.n_channels - 1, 2, 2)), c)
    with pytest.raises(StreamdetValueError, match="one value per prior"):
        decode(np.zeros((1, c.n_channels, 2, 2)), c, threshold=[0.5, 0.5])
    with pytest.raises(StreamdetValueError, match="origins"):
        decode(np.zeros((2, c.n_channels, 2, 2)), c, origins=np.zeros((3, 2)))


# --------------------------------------------------------------------------- parameters
def test_encode_decode_round_trip() -> None:
    c = make_contract()
    rng = np.random.default_rng(11)
    m = 500
    values = np.column_stack([
        np.exp(rng.uniform(np.log(1.97e-6), np.log(2e-3), m)),   # flux, Jy
        rng.uniform(-2.0, 30.0, m),                                # size
        rng.normal(0, 5, m),                                       # identity
        rng.uniform(0, 180, m),                                    # PA in [0, 180)
    ])
    enc = encode_params(values, c)
    assert enc.shape == (m, 5)
    assert np.all((enc[:, [0, 1, 3, 4]] >= 0) & (enc[:, [0, 1, 3, 4]] <= 1))
    np.testing.assert_allclose(decode_params(enc, c), values, rtol=1e-10, atol=1e-9)
    # Independent check of the encodings.
    np.testing.assert_allclose(
        enc[:, 0], (np.log(values[:, 0]) - np.log(1.97e-6)) / (np.log(2e-3) - np.log(1.97e-6)))
    np.testing.assert_allclose(enc[:, 1], (values[:, 1] + 2) / 32)
    pa = np.radians(values[:, 3])
    sign = np.where(values[:, 3] >= 90, -1.0, 1.0)  # PA in [90, 180) is encoded as PA - 180
    np.testing.assert_allclose(enc[:, 3], sign * np.cos(pa), atol=1e-12)
    np.testing.assert_allclose(enc[:, 4], (sign * np.sin(pa) + 1) / 2, atol=1e-12)


def test_pa_periodicity() -> None:
    c = make_contract()
    rng = np.random.default_rng(12)
    pa = rng.uniform(-720, 720, 400)
    pa = np.concatenate([pa, [0.0, 90.0, -90.0, 180.0, 179.999999, -1e-12, 360.0]])
    values = np.zeros((pa.size, 4))
    values[:, 0], values[:, 1] = 1e-4, 1.0
    values[:, 3] = pa
    enc = encode_params(values, c)
    shifted = values.copy()
    shifted[:, 3] += 180.0
    np.testing.assert_allclose(encode_params(shifted, c), enc, atol=1e-9)
    out = decode_params(enc, c)[:, 3]
    assert np.all((out >= 0) & (out < 180))
    diff = np.abs((out - pa + 90) % 180 - 90)  # circular difference modulo 180
    assert diff.max() < 1e-8
    # An angle a hair below 0 must wrap into [0, 180), not round up to 180 itself.
    tiny = decode_params(np.array([[0.5, 0.5, 0.0, 1.0, np.nextafter(0.5, 0.0)]]), c)[0, 3]
    assert 0.0 <= tiny < 180.0 and min(tiny, 180.0 - tiny) < 1e-12


def test_log_minmax_clips_out_of_range() -> None:
    c = make_contract()
    values = np.array([[1e-9, 0.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0]])
    enc = encode_params(values, c)
    np.testing.assert_array_equal(enc[:, 0], [0.0, 1.0])
    dec = decode_params(np.array([[-0.5, 0.0, 0.0, 1.0, 0.5], [1.5, 0.0, 0.0, 1.0, 0.5]]), c)
    np.testing.assert_allclose(dec[:, 0], [1.97e-6, 2e-3])


def test_params_refuse_bad_shape() -> None:
    c = make_contract()
    with pytest.raises(StreamdetValueError, match="shape"):
        encode_params(np.zeros((3, 3)), c)
    with pytest.raises(StreamdetValueError, match="shape"):
        decode_params(np.zeros((3, 4)), c)
