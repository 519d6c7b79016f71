"""3D boxes, NMS, ownership, merge and decode against slow pure-Python references."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from streamdet.engine.boxes import (
    box_area,
    box_diou,
    box_iou,
    box_iou_paired,
    box_ndim,
    box_volume,
    centres,
    check_boxes,
    cxcywh_to_xyxy,
    xyxy_to_cxcywh,
)
from streamdet.engine.contract import ModelContract
from streamdet.engine.decode import decode
from streamdet.engine.detections import Detections
from streamdet.engine.nms import (
    merge,
    nms,
    nms_detections,
    owned,
    pixel_core_region,
    suppression_pairs,
)
from streamdet.errors import StreamdetValueError


# --------------------------------------------------------------------------- references
def _iou_ref(a: list[float], b: list[float]) -> float:
    inter = 1.0
    for k in range(3):
        inter *= max(0.0, min(a[k + 3], b[k + 3]) - max(a[k], b[k]))
    va = math.prod(a[k + 3] - a[k] for k in range(3))
    vb = math.prod(b[k + 3] - b[k] for k in range(3))
    union = va + vb - inter
    return inter / union if union > 0 else 0.0


def _diou_ref(a: list[float], b: list[float]) -> float:
    d2 = sum((0.5 * (a[k] + a[k + 3]) - 0.5 * (b[k] + b[k + 3])) ** 2 for k in range(3))
    c2 = sum((max(a[k + 3], b[k + 3]) - min(a[k], b[k])) ** 2 for k in range(3))
    return _iou_ref(a, b) - (d2 / c2 if c2 > 0 else 0.0)


def _nms_ref(boxes: np.ndarray, scores: np.ndarray, t: float, kind: str) -> list[int]:
    """Greedy NMS, one box at a time: score descending, ties by index."""
    fn = _iou_ref if kind == "iou" else _diou_ref
    order = sorted(range(len(boxes)), key=lambda i: (-scores[i], i))
    kept: list[int] = []
    for i in order:
        if all(fn(boxes[k].tolist(), boxes[i].tolist()) <= t for k in kept):
            kept.append(i)
    return kept


def random_boxes3d(n: int, seed: int, *, extent: float = 60.0) -> tuple[np.ndarray, np.ndarray]:
    """Clustered 3D boxes (many overlaps), long along z as HI lines are; scores with ties."""
    rng = np.random.default_rng(seed)
    c = rng.uniform(0, extent, (n, 3)) * np.array([1.0, 1.0, 3.0])
    c[: n // 3] = c[0] + rng.normal(0, 2.0, (n // 3, 3))        # a dense clump
    size = rng.uniform(1.0, 8.0, (n, 3)) * np.array([1.0, 1.0, 4.0])
    boxes = np.concatenate([c - size / 2, c + size / 2], axis=1)
    scores = np.round(rng.random(n), 2)                          # ties
    return boxes, scores


# --------------------------------------------------------------------------- boxes
def test_iou_and_diou_match_the_reference() -> None:
    a, _ = random_boxes3d(40, 1)
    b, _ = random_boxes3d(30, 2)
    iou, diou = box_iou(a, b), box_diou(a, b)
    assert iou.shape == (40, 30)
    for i, j in itertools.product(range(40), range(30)):
        assert iou[i, j] == pytest.approx(_iou_ref(a[i].tolist(), b[j].tolist()), abs=1e-12)
        assert diou[i, j] == pytest.approx(_diou_ref(a[i].tolist(), b[j].tolist()), abs=1e-12)
    np.testing.assert_array_equal(box_iou_paired(a[:30], b), np.diag(iou[:30]))
    assert (iou > 0).any() and (iou == 0).any()


def test_box_conventions_and_converters() -> None:
    b = np.array([[0.0, 1.0, 2.0, 4.0, 3.0, 10.0]])
    assert box_ndim(b) == 3
    np.testing.assert_array_equal(xyxy_to_cxcywh(b), [[2.0, 2.0, 6.0, 4.0, 2.0, 8.0]])
    np.testing.assert_array_equal(cxcywh_to_xyxy(xyxy_to_cxcywh(b)), b)
    np.testing.assert_array_equal(centres(b), [[2.0, 2.0, 6.0]])
    assert box_area(b)[0] == box_volume(b)[0] == 4.0 * 2.0 * 8.0
    assert check_boxes([], ndim=3).shape == (0, 6)
    assert box_iou(np.zeros((0, 4)), b).shape == (0, 1)   # an empty side takes the other's


@pytest.mark.parametrize("bad, match", [
    (np.zeros((2, 5)), "shape"),
    (np.array([[0.0, 0, 0, 1, 1, math.nan]]), "not finite"),
    (np.array([[0.0, 0, 5, 1, 1, 4]]), "z1 < z0"),
])
def test_3d_validation(bad: np.ndarray, match: str) -> None:
    with pytest.raises(StreamdetValueError, match=match):
        check_boxes(bad)


def test_2d_and_3d_boxes_do_not_mix() -> None:
    with pytest.raises(StreamdetValueError, match="dimensionality"):
        box_iou(np.zeros((1, 4)), np.zeros((1, 6)))
    with pytest.raises(StreamdetValueError, match=r"\(N, 6\)"):
        box_volume(np.zeros((1, 4)))


# --------------------------------------------------------------------------- NMS
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("kind", ["iou", "diou"])
@pytest.mark.parametrize("t", [0.0, 0.1, 0.3, 0.6])
def test_nms3d_matches_the_slow_reference(seed: int, kind: str, t: float) -> None:
    boxes, scores = random_boxes3d(150, seed)
    got = nms(boxes, scores, iou_threshold=t, kind=kind)  # type: ignore[arg-type]
    assert got.tolist() == _nms_ref(boxes, scores, t, kind)


def test_suppression_pairs_3d_against_all_pairs() -> None:
    boxes, _ = random_boxes3d(120, 5)
    got = suppression_pairs(boxes, iou_threshold=0.05, kind="iou")
    want = [(i, j) for i in range(120) for j in range(i + 1, 120)
            if _iou_ref(boxes[i].tolist(), boxes[j].tolist()) > 0.05]
    assert [tuple(p) for p in got.tolist()] == want
    assert len(want) > 20


def test_boxes_apart_in_frequency_do_not_suppress() -> None:
    """Same sky footprint, disjoint channels: two galaxies at different redshifts."""
    boxes = np.array([[0.0, 0, 0, 4, 4, 10], [0.0, 0, 10, 4, 4, 20], [0.0, 0, 5, 4, 4, 15]])
    assert nms(boxes, [0.9, 0.8, 0.7], iou_threshold=0.3, kind="iou").tolist() == [0, 1]
    assert nms(boxes, [0.9, 0.8, 0.7], iou_threshold=0.34, kind="iou").tolist() == [0, 1, 2]


def _dets3d(boxes: np.ndarray, scores: np.ndarray, chunk: int = -1) -> Detections:
    n = len(boxes)
    return Detections(boxes=boxes, objectness=scores.astype(np.float32),
                      probability=np.ones(n, np.float32), prior=np.zeros(n, np.int16),
                      params=np.arange(n, dtype=np.float32)[:, None], param_names=("f",),
                      chunk=np.full(n, chunk, np.int32))


def test_ownership_in_3d() -> None:
    boxes = np.array([[0.0, 0, 0, 2, 2, 2], [0.0, 0, 9, 2, 2, 11], [4.0, 0, 0, 6, 2, 2]])
    d = _dets3d(boxes, np.array([0.9, 0.8, 0.7]))
    region = pixel_core_region((0, 4), (0, 8), z_range=(0, 8), image_shape=(16, 8, 8))
    assert region == (-np.inf, -np.inf, -np.inf, 3.5, np.inf, 7.5)
    assert owned(d, region).params[:, 0].tolist() == [0.0]
    with pytest.raises(StreamdetValueError, match="z_range"):
        pixel_core_region((0, 4), (0, 8), image_shape=(16, 8, 8))
    with pytest.raises(StreamdetValueError, match="region"):
        owned(d, (0.0, 0.0, 1.0, 1.0))
    assert d.centers.shape == (3, 3)
    np.testing.assert_array_equal(d.shifted(1, 2, 3).boxes[0], [1, 2, 3, 3, 4, 5])


@pytest.mark.parametrize("seed", [3, 4])
def test_merge_of_owned_chunks_equals_global_nms(seed: int) -> None:
    """Chunks own the boxes whose centre lies in their core, each NMS'd on everything it
    sees (here: all boxes); merging them in any grouping gives the global NMS."""
    boxes, scores = random_boxes3d(200, seed)
    ref = nms_detections(_dets3d(boxes, scores), iou_threshold=0.3, kind="iou")
    c = centres(boxes)
    parts = []
    edges_x, edges_z = [-np.inf, 20.0, 40.0, np.inf], [-np.inf, 90.0, np.inf]
    k = 0
    for x0, x1 in itertools.pairwise(edges_x):
        for z0, z1 in itertools.pairwise(edges_z):
            local = nms_detections(_dets3d(boxes, scores), iou_threshold=0.3, kind="iou")
            parts.append(owned(local, (x0, -np.inf, z0, x1, np.inf, z1)).with_chunk(k))
            k += 1
    assert sum(len(p) for p in parts) == len(ref)
    flat = merge(*parts, iou_threshold=0.3, kind="iou")
    tree = merge(merge(*parts[:2], iou_threshold=0.3, kind="iou"),
                 merge(*parts[2:], iou_threshold=0.3, kind="iou"), iou_threshold=0.3, kind="iou")
    backwards = merge(*parts[::-1], iou_threshold=0.3, kind="iou")
    for got in (flat, tree, backwards):
        assert sorted(got.params[:, 0].tolist()) == sorted(ref.params[:, 0].tolist())
    np.testing.assert_array_equal(flat.boxes, backwards.boxes)
    assert len(c) == 200


def test_merge_suppresses_across_chunks_and_refuses_mixed_ndim() -> None:
    a = _dets3d(np.array([[0.0, 0, 0, 4, 4, 8]]), np.array([0.9]), chunk=0)
    b = _dets3d(np.array([[0.5, 0, 0, 4.5, 4, 8]]), np.array([0.8]), chunk=1)
    got = merge(a, b, iou_threshold=0.3, kind="iou")
    assert len(got) == 1 and got.chunk.tolist() == [0]
    flat = Detections.empty(("f",))
    with pytest.raises(StreamdetValueError, match=r"(2D|3D) detections with (2D|3D)"):
        merge(flat, a, iou_threshold=0.3)
    assert Detections.empty(("f",), ndim=3).boxes.shape == (0, 6)


# --------------------------------------------------------------------------- decode
def _contract3d() -> ModelContract:
    return ModelContract.from_dict({
        "format_version": 1, "ndim": 3, "input": {"name": "image"}, "output": {"name": "grid"},
        "stride": [16, 8, 4], "receptive_field": [33, 17, 9], "priors": [[6.0, 5.0, 32.0]],
        "box_channels": ["x", "y", "z", "w", "h", "d", "obj", "flux"],
        "box_encoding": {"xy": "cell_offset", "wh": "prior_exp"},
        "params": [{"name": "line_flux_integral", "unit": "Jy Hz", "decode": "log_minmax",
                    "channels": ["flux"], "min": 1.0, "max": 100.0}],
        "normalisation": {"kind": "none"}, "tile": [64, 32, 16], "overlap": [16, 8, 4],
        "channel_hz": 30000.0,
    })


def test_decode3d_by_hand() -> None:
    c = _contract3d()
    assert c.channel_hz == 30000.0 and c.to_dict()["channel_hz"] == 30000.0
    grid = np.zeros((1, 8, 2, 3, 4), np.float32)
    # one box in cell (gz, gy, gx) = (1, 2, 3)
    grid[0, :, 1, 2, 3] = [0.25, 0.5, 0.75, 0.0, math.log(2.0), 0.0, 0.9, 0.5]
    d = decode(grid, c, threshold=0.5, origins=(100, 200, 300), chunk=7)
    assert len(d) == 1 and d.ndim == 3 and d.chunk.tolist() == [7]
    cx = (3 + 0.25) * 4 - 0.5 + 100
    cy = (2 + 0.5) * 8 - 0.5 + 200
    cz = (1 + 0.75) * 16 - 0.5 + 300
    np.testing.assert_allclose(d.boxes[0], [cx - 3, cy - 5, cz - 16, cx + 3, cy + 5, cz + 16])
    assert d.param("line_flux_integral")[0] == pytest.approx(10.0, rel=1e-6)
    assert len(decode(grid, c, threshold=0.95)) == 0
    assert decode(grid, c, threshold=0.95).boxes.shape == (0, 6)
    with pytest.raises(StreamdetValueError, match="Gz, Gy, Gx"):
        decode(grid[:, :, 0], c)


def test_decode3d_matches_the_training_reference() -> None:
    pytest.importorskip("torch")
    from export._targets3d import decode3d

    c = _contract3d()
    g = np.random.default_rng(0).random((1, 8, 3, 4, 5)).astype(np.float32)
    got = decode(g, c, threshold=0.5, origins=(8, 16, 32))
    ref = decode3d(g, c, threshold=0.5, origin=(8, 16, 32))
    o1, o2 = np.lexsort(got.boxes.T[::-1]), np.lexsort(ref["boxes"].T[::-1])
    assert len(got) == len(ref["boxes"]) > 10
    np.testing.assert_array_equal(got.boxes[o1], ref["boxes"][o2])
    np.testing.assert_allclose(got.params[o1], ref["params"][o2], rtol=1e-6)


def test_channel_hz_is_a_cube_field() -> None:
    doc = _contract3d().to_dict()
    doc.update(ndim=2, stride=[8, 4], receptive_field=[17, 9], priors=[[6.0, 5.0]],
               tile=[32, 16], overlap=[8, 4], box_channels=["x", "y", "w", "h", "obj", "flux"],
               input={"name": "image"}, output={"name": "grid"})
    with pytest.raises(StreamdetValueError, match="channel_hz"):
        ModelContract.from_dict(doc)
    doc.pop("channel_hz")
    assert "channel_hz" not in ModelContract.from_dict(doc).to_dict()
