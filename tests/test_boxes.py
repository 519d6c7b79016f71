"""Box utilities against slow pure-Python references."""

from __future__ import annotations

import math

import numpy as np
import pytest

from streamdet.engine.boxes import (
    box_area,
    box_diou,
    box_diou_paired,
    box_iou,
    box_iou_paired,
    check_boxes,
    cxcywh_to_xyxy,
    xyxy_to_cxcywh,
)
from streamdet.errors import StreamdetValueError


def _iou_py(a: list[float], b: list[float]) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _diou_py(a: list[float], b: list[float]) -> float:
    d2 = ((a[0] + a[2]) / 2 - (b[0] + b[2]) / 2) ** 2 + ((a[1] + a[3]) / 2 - (b[1] + b[3]) / 2) ** 2
    c2 = (max(a[2], b[2]) - min(a[0], b[0])) ** 2 + (max(a[3], b[3]) - min(a[1], b[1])) ** 2
    return _iou_py(a, b) - (d2 / c2 if c2 > 0 else 0.0)


def _random_boxes(rng: np.random.Generator, n: int, *, integer: bool = False) -> np.ndarray:
    c = rng.uniform(0, 60, (n, 2))
    wh = rng.uniform(0, 25, (n, 2))
    wh[rng.random(n) < 0.15, 0] = 0.0  # zero width
    wh[rng.random(n) < 0.15, 1] = 0.0  # zero height
    if integer:
        c, wh = np.round(c), np.round(wh)
    b = np.concatenate([c - wh / 2, c + wh / 2], axis=1)
    if n > 3:
        b[1] = b[0]  # an identical pair
        b[3] = [5.0, 5.0, 5.0, 5.0]  # a point
        b[2] = [5.0, 5.0, 5.0, 5.0]  # the same point again
    return b


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("integer", [False, True])
def test_iou_and_diou_match_python_reference(seed: int, integer: bool) -> None:
    rng = np.random.default_rng(seed)
    a = _random_boxes(rng, 40, integer=integer)
    b = _random_boxes(rng, 31, integer=integer)
    iou = box_iou(a, b)
    diou = box_diou(a, b)
    assert iou.shape == diou.shape == (40, 31)
    for i in range(len(a)):
        for j in range(len(b)):
            ai, bj = a[i].tolist(), b[j].tolist()
            assert iou[i, j] == pytest.approx(_iou_py(ai, bj), abs=1e-12)
            assert diou[i, j] == pytest.approx(_diou_py(ai, bj), abs=1e-12)
    assert np.all((iou >= 0) & (iou <= 1))
    assert np.all((diou >= -1) & (diou <= iou + 1e-15))  # -1: two distinct points


def test_self_overlap_and_symmetry() -> None:
    rng = np.random.default_rng(7)
    a = _random_boxes(rng, 25)
    iou = box_iou(a, a)
    np.testing.assert_array_equal(iou, iou.T)
    area = box_area(a)
    np.testing.assert_array_equal(np.diag(iou)[area > 0], 1.0)
    np.testing.assert_array_equal(np.diag(iou)[area == 0], 0.0)  # documented convention
    d = box_diou(a, a)
    np.testing.assert_allclose(d, d.T, atol=1e-15)
    np.testing.assert_array_equal(np.diag(d)[area > 0], 1.0)


def test_paired_equals_diagonal() -> None:
    rng = np.random.default_rng(3)
    a, b = _random_boxes(rng, 30), _random_boxes(rng, 30)
    np.testing.assert_array_equal(box_iou_paired(a, b), np.diag(box_iou(a, b)))
    np.testing.assert_array_equal(box_diou_paired(a, b), np.diag(box_diou(a, b)))
    with pytest.raises(StreamdetValueError, match="same shape"):
        box_iou_paired(a, b[:5])


def test_area_and_converters_against_reference() -> None:
    rng = np.random.default_rng(11)
    a = _random_boxes(rng, 50)
    area = box_area(a)
    for k, row in enumerate(a.tolist()):
        assert area[k] == pytest.approx((row[2] - row[0]) * (row[3] - row[1]), abs=1e-12)
    cw = xyxy_to_cxcywh(a)
    for k, row in enumerate(a.tolist()):
        assert cw[k].tolist() == pytest.approx(
            [(row[0] + row[2]) / 2, (row[1] + row[3]) / 2, row[2] - row[0], row[3] - row[1]])
    np.testing.assert_allclose(cxcywh_to_xyxy(cw), a, atol=1e-12)
    assert cw.dtype == np.float64 and area.dtype == np.float64


def test_known_values() -> None:
    a = [[0.0, 0.0, 4.0, 4.0]]
    b = [[0.0, 0.0, 4.0, 2.0], [2.0, 2.0, 6.0, 6.0], [10.0, 10.0, 12.0, 12.0]]
    iou = box_iou(a, b)[0]
    assert iou.tolist() == [0.5, 4.0 / 28.0, 0.0]
    diou = box_diou(a, b)[0]
    assert diou[0] == 0.5 - 1.0 / 32.0
    assert diou[1] == pytest.approx(4.0 / 28.0 - 8.0 / 72.0)
    assert diou[2] == pytest.approx(-(2 * 9.0**2) / (2 * 12.0**2))


@pytest.mark.parametrize("func", [box_iou, box_diou])
def test_empty_in_empty_out(func: object) -> None:
    f = func  # type: ignore[assignment]
    b = np.array([[0.0, 0.0, 1.0, 1.0]])
    assert f(np.zeros((0, 4)), b).shape == (0, 1)
    assert f(b, np.zeros((0, 4))).shape == (1, 0)
    assert f(np.zeros((0, 4)), []).shape == (0, 0)
    assert box_area(np.zeros((0, 4))).shape == (0,)
    assert xyxy_to_cxcywh(np.zeros((0, 4))).shape == (0, 4)
    assert cxcywh_to_xyxy([]).shape == (0, 4)


@pytest.mark.parametrize("bad, match", [
    (np.zeros((3, 3)), "shape"),
    (np.zeros((2, 4, 1)), "shape"),
    (np.array([[0.0, 0.0, math.nan, 1.0]]), "not finite"),
    (np.array([[0.0, 0.0, 1.0, math.inf]]), "not finite"),
    (np.array([[0.0, 0.0, 1.0, 1.0], [2.0, 0.0, 1.0, 1.0]]), "row 1 has x1 < x0"),
])
def test_validation(bad: np.ndarray, match: str) -> None:
    with pytest.raises(StreamdetValueError, match=match):
        box_iou(bad, np.zeros((0, 4)))
    with pytest.raises(StreamdetValueError, match=match):
        check_boxes(bad)


def test_negative_size_refused_by_cxcywh() -> None:
    with pytest.raises(StreamdetValueError, match="negative width"):
        cxcywh_to_xyxy([[1.0, 1.0, -1.0, 2.0]])
