"""Greedy NMS, ownership and the cross-chunk merge against slow references."""

from __future__ import annotations

import itertools
import time
from functools import reduce

import numpy as np
import pytest

from streamdet.engine.boxes import box_diou, box_iou
from streamdet.engine.detections import Detections
from streamdet.engine.nms import (
    _canonical_order,
    _near_other_groups,
    _order_by_score_and_centre,
    _union_rows,
    merge,
    merge_rows,
    nms,
    nms_detections,
    owned,
    pixel_core_region,
    suppression_pairs,
)
from streamdet.errors import StreamdetValueError

KINDS = ("iou", "diou")


def _overlap(a: np.ndarray, b: np.ndarray, kind: str) -> np.ndarray:
    return box_iou(a, b) if kind == "iou" else box_diou(a, b)


def _nms_reference(boxes: np.ndarray, scores: np.ndarray, t: float, kind: str) -> list[int]:
    """Textbook greedy loop: visit by (-score, index); keep unless a kept box overlaps > t."""
    m = _overlap(boxes, boxes, kind)
    order = sorted(range(len(boxes)), key=lambda i: (-float(scores[i]), i))
    keep: list[int] = []
    for i in order:
        if all(m[k, i] <= t for k in keep):
            keep.append(i)
    return keep


def _boxes(rng: np.random.Generator, n: int, size: float = 80.0, *,
           integer: bool = False) -> np.ndarray:
    c = rng.uniform(0, size, (n, 2))
    wh = rng.uniform(2, 20, (n, 2))
    if integer:
        c, wh = np.round(c), np.round(wh)
    return np.concatenate([c - wh / 2, c + wh / 2], axis=1)


def _dets(boxes: np.ndarray, scores: np.ndarray, rng: np.random.Generator,
          chunk: int = -1) -> Detections:
    n = len(boxes)
    return Detections(
        boxes=np.asarray(boxes, np.float64),
        objectness=np.asarray(scores, np.float32),
        probability=rng.random(n).astype(np.float32),
        prior=rng.integers(0, 9, n).astype(np.int16),
        params=rng.random((n, 2)),
        param_names=("flux", "bmaj"),
        chunk=np.full(n, chunk, np.int32),
    )


def _rows(d: Detections) -> list[tuple[float, ...]]:
    """Every column of every row, as a sorted list (set equality with multiplicity)."""
    return sorted(
        (*b, float(o), float(p), int(q), int(c), *pr)
        for b, o, p, q, c, pr in zip(d.boxes.tolist(), d.objectness, d.probability, d.prior,
                                      d.chunk, d.params.tolist(), strict=True))


def _same(a: Detections, b: Detections) -> bool:
    """Exact equality of all columns, in order."""
    return (a.param_names == b.param_names and np.array_equal(a.boxes, b.boxes)
            and np.array_equal(a.objectness, b.objectness)
            and np.array_equal(a.probability, b.probability)
            and np.array_equal(a.prior, b.prior) and np.array_equal(a.chunk, b.chunk)
            and np.array_equal(a.params, b.params))


# --------------------------------------------------------------------------- nms


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("t", [0.0, 0.2, 0.5, 0.8, 1.0])
@pytest.mark.parametrize("seed", range(3))
def test_nms_matches_reference(kind: str, t: float, seed: int) -> None:
    rng = np.random.default_rng(seed)
    boxes = _boxes(rng, 150, integer=seed == 1)
    # a small set of score values: many ties, broken by index
    scores = rng.integers(0, 6, len(boxes)).astype(np.float64) / 5
    got = nms(boxes, scores, iou_threshold=t, kind=kind)
    assert got.dtype == np.int64
    assert got.tolist() == _nms_reference(boxes, scores, t, kind)


@pytest.mark.parametrize("kind", KINDS)
def test_nms_dense_clusters_match_reference(kind: str) -> None:
    rng = np.random.default_rng(42)
    centres = np.repeat(rng.uniform(0, 200, (40, 2)), 8, axis=0) + rng.normal(0, 2, (320, 2))
    wh = np.repeat(rng.uniform(5, 25, (40, 2)), 8, axis=0) * np.exp(rng.normal(0, .2, (320, 2)))
    boxes = np.concatenate([centres - wh / 2, centres + wh / 2], axis=1)
    scores = rng.random(320).astype(np.float32)
    got = nms(boxes, scores, iou_threshold=0.5, kind=kind)
    ref = _nms_reference(boxes, scores, 0.5, kind)
    assert got.tolist() == ref
    assert 40 <= len(ref) < 320  # clusters were actually suppressed


@pytest.mark.parametrize("kind, exact", [("iou", 0.5), ("diou", 0.5 - 1.0 / 32.0)])
def test_threshold_equal_is_not_suppressed(kind: str, exact: float) -> None:
    # IoU([0,0,4,4], [0,0,4,2]) = 8/16 exactly; DIoU = 0.5 - 1/32 exactly.
    boxes = np.array([[0.0, 0.0, 4.0, 4.0], [0.0, 0.0, 4.0, 2.0]])
    scores = np.array([0.9, 0.8])
    assert _overlap(boxes[:1], boxes[1:], kind)[0, 0] == exact
    assert nms(boxes, scores, iou_threshold=exact, kind=kind).tolist() == [0, 1]
    below = np.nextafter(exact, -1.0)
    assert nms(boxes, scores, iou_threshold=below, kind=kind).tolist() == [0]
    above = np.nextafter(exact, 2.0)
    assert nms(boxes, scores, iou_threshold=above, kind=kind).tolist() == [0, 1]
    # the lower-scored box goes, whichever index it has
    assert nms(boxes, scores[::-1], iou_threshold=below, kind=kind).tolist() == [1]


def test_ties_are_broken_by_index() -> None:
    boxes = np.array([[0.0, 0.0, 10.0, 10.0]] * 3 + [[50.0, 50.0, 60.0, 60.0]])
    scores = np.array([0.5, 0.7, 0.7, 0.7])
    assert nms(boxes, scores, iou_threshold=0.5).tolist() == [1, 3]


def test_chain_is_greedy() -> None:
    # a > b > c; a-b and b-c overlap above the threshold, a-c not: greedy keeps a and c.
    boxes = np.array([[0.0, 0.0, 10.0, 10.0], [4.0, 0.0, 14.0, 10.0], [8.0, 0.0, 18.0, 10.0]])
    scores = np.array([0.9, 0.8, 0.7])
    assert nms(boxes, scores, iou_threshold=0.3, kind="iou").tolist() == [0, 2]


def test_empty_and_single() -> None:
    out = nms(np.zeros((0, 4)), np.zeros(0), iou_threshold=0.5)
    assert out.shape == (0,) and out.dtype == np.int64
    assert nms([[0.0, 0.0, 1.0, 1.0]], [0.3], iou_threshold=0.5).tolist() == [0]
    e = Detections.empty(("flux",))
    assert len(nms_detections(e, iou_threshold=0.5)) == 0
    assert nms_detections(e, iou_threshold=0.5).param_names == ("flux",)


@pytest.mark.parametrize("kwargs, match", [
    ({"iou_threshold": -0.1}, r"\[0, 1\]"),
    ({"iou_threshold": 1.5}, r"\[0, 1\]"),
    ({"iou_threshold": float("nan")}, r"\[0, 1\]"),
    ({"iou_threshold": 0.5, "kind": "giou"}, "unknown NMS kind"),
])
def test_bad_arguments(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(StreamdetValueError, match=match):
        nms([[0.0, 0.0, 1.0, 1.0]], [0.5], **kwargs)  # type: ignore[arg-type]


def test_bad_scores() -> None:
    with pytest.raises(StreamdetValueError, match="shape"):
        nms([[0.0, 0.0, 1.0, 1.0]], [0.5, 0.2], iou_threshold=0.5)
    with pytest.raises(StreamdetValueError, match="not finite"):
        nms([[0.0, 0.0, 1.0, 1.0]], [np.nan], iou_threshold=0.5)


def test_nms_detections_keeps_rows_aligned() -> None:
    rng = np.random.default_rng(5)
    d = _dets(_boxes(rng, 200), rng.random(200), rng)
    keep = nms(d.boxes, d.objectness, iou_threshold=0.4, kind="diou")
    out = nms_detections(d, iou_threshold=0.4, kind="diou")
    assert _same(out, d.take(keep))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("t", [0.0, 0.3, 0.7])
def test_suppression_pairs_brute_force(kind: str, t: float) -> None:
    rng = np.random.default_rng(9)
    boxes = _boxes(rng, 250, size=120.0, integer=True)
    boxes[::17, 2] = boxes[::17, 0]  # some zero-width boxes
    m = _overlap(boxes, boxes, kind)
    iu = np.triu_indices(len(boxes), 1)
    ref = np.stack(iu, axis=1)[m[iu] > t]
    np.testing.assert_array_equal(suppression_pairs(boxes, iou_threshold=t, kind=kind), ref)


def test_speed_scales_to_large_sets() -> None:
    rng = np.random.default_rng(0)
    n = 100_000
    c = np.repeat(rng.uniform(0, 16384, (n // 5, 2)), 5, axis=0) + rng.normal(0, 2, (n, 2))
    wh = rng.uniform(6, 24, (n, 2))
    boxes = np.concatenate([c - wh / 2, c + wh / 2], axis=1)
    scores = rng.random(n)
    t0 = time.perf_counter()
    keep = nms(boxes, scores, iou_threshold=0.5)
    elapsed = time.perf_counter() - t0
    assert n // 5 <= len(keep) < n
    assert elapsed < 5.0, f"NMS of {n} boxes took {elapsed:.2f} s"


# ------------------------------------------------------------------ ownership


def test_owned_is_half_open() -> None:
    rng = np.random.default_rng(1)
    cx = np.array([10.0, 20.0, 19.999, 15.0, 15.0])
    cy = np.array([15.0, 15.0, 15.0, 10.0, 20.0])
    boxes = np.stack([cx - 1, cy - 1, cx + 1, cy + 1], axis=1)
    d = _dets(boxes, np.ones(5), rng)
    got = owned(d, (10.0, 10.0, 20.0, 20.0))
    np.testing.assert_array_equal(got.centers, d.centers[[0, 2, 3]])


def test_owned_partitions_the_image() -> None:
    rng = np.random.default_rng(2)
    ny, nx = 100, 130
    n = 2000
    c = np.column_stack([rng.uniform(-0.5, nx - 0.5, n), rng.uniform(-0.5, ny - 0.5, n)])
    c[:50] = np.round(c[:50]) - 0.5  # centres exactly on pixel (and core) edges
    c[50:60] = [-0.5, -0.5]
    c[60:70] = [nx - 0.5, ny - 0.5]  # decoded centres can reach the far edge
    boxes = np.concatenate([c - 2, c + 2], axis=1)
    d = _dets(boxes, rng.random(n), rng)
    d.params[:, 0] = np.arange(n)  # row id
    counts = np.zeros(n, int)
    for xa in range(0, nx, 32):
        for ya in range(0, ny, 32):
            region = pixel_core_region((xa, min(xa + 32, nx)), (ya, min(ya + 32, ny)),
                                       image_shape=(ny, nx))
            np.add.at(counts, owned(d, region).params[:, 0].astype(int), 1)
    assert np.all(counts == 1)


def test_pixel_core_region() -> None:
    assert pixel_core_region((32, 64), (0, 32), image_shape=(96, 64)) == (
        31.5, -np.inf, np.inf, 31.5)
    with pytest.raises(StreamdetValueError, match="outside image"):
        pixel_core_region((0, 65), (0, 32), image_shape=(96, 64))
    with pytest.raises(StreamdetValueError, match="region"):
        owned(Detections.empty(), (0.0, 0.0, 1.0))
    with pytest.raises(StreamdetValueError, match="region"):
        owned(Detections.empty(), (2.0, 0.0, 1.0, 1.0))


# ---------------------------------------------------------------------- merge


def _field(seed: int, size: int = 192, nsrc: int = 120) -> Detections:
    """Clustered detections, as a detector makes them: several boxes per source."""
    rng = np.random.default_rng(seed)
    per = rng.integers(1, 6, nsrc)
    c = np.repeat(rng.uniform(0, size, (nsrc, 2)), per, axis=0)
    wh = np.repeat(rng.uniform(4, 16, (nsrc, 2)), per, axis=0)
    c = c + rng.normal(0, 1.5, c.shape)
    wh = wh * np.exp(rng.normal(0, 0.15, wh.shape))
    c = np.clip(c, -0.5, size - 0.5)
    boxes = np.concatenate([c - wh / 2, c + wh / 2], axis=1)
    return _dets(boxes, rng.random(len(boxes)), rng)


def _chunked(d: Detections, *, size: int, core: int, halo: int, t: float,
             kind: str) -> list[Detections]:
    """Per-chunk NMS over core + halo, then keep what the chunk owns."""
    parts = []
    for k, (ya, xa) in enumerate(itertools.product(range(0, size, core), repeat=2)):
        xb, yb = min(xa + core, size), min(ya + core, size)
        c = d.centers
        seen = ((c[:, 0] >= xa - halo - 0.5) & (c[:, 0] < xb + halo - 0.5)
                & (c[:, 1] >= ya - halo - 0.5) & (c[:, 1] < yb + halo - 0.5))
        local = nms_detections(d.take(seen), iou_threshold=t, kind=kind).with_chunk(k)
        parts.append(owned(local, pixel_core_region((xa, xb), (ya, yb),
                                                    image_shape=(size, size))))
    return parts


def _strip_chunk(d: Detections) -> Detections:
    return Detections(boxes=d.boxes, objectness=d.objectness, probability=d.probability,
                      prior=d.prior, params=d.params, param_names=d.param_names)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("seed", range(3))
def test_merge_tree_equals_global_nms(kind: str, seed: int) -> None:
    size, t = 192, 0.4
    d = _field(seed, size)
    expect = nms_detections(d, iou_threshold=t, kind=kind)
    for core in (48, 64, 96):
        parts = _chunked(d, size=size, core=core, halo=40, t=t, kind=kind)
        assert sum(len(p) for p in parts) == len(expect)
        flat = merge(*parts, iou_threshold=t, kind=kind)
        assert _rows(_strip_chunk(flat)) == _rows(_strip_chunk(expect))
        # trees of different fan-in and grouping give the same result, and so do merges
        # that take each part as resolved (its pairs not compared again), as the engine's
        for split in (2, 3, 4):
            for resolved in (False, True):
                level = parts
                while len(level) > 1:
                    level = [merge(*level[i:i + split], iou_threshold=t, kind=kind,
                                   resolved=resolved)
                             for i in range(0, len(level), split)]
                assert _same(level[0], flat)
        rev = reduce(lambda a, b: merge(b, a, iou_threshold=t, kind=kind), parts[::-1])
        assert _same(rev, flat)


@pytest.mark.parametrize("sizes", [(0,), (5, 0, 7), (40, 1, 23)])
def test_gather_equals_concat_then_take(sizes: tuple[int, ...]) -> None:
    rng = np.random.default_rng(sum(sizes))
    parts = [_dets(_boxes(rng, n), rng.random(n), rng, chunk=k) for k, n in enumerate(sizes)]
    total = sum(sizes)
    for index in (np.arange(0), rng.permutation(total)[: total // 2], np.arange(total)[::-1],
                  rng.integers(0, max(total, 1), total)):  # repeats too
        assert _same(Detections.gather(parts, index), Detections.concat(parts).take(index))
    with pytest.raises(StreamdetValueError, match="params"):
        Detections.gather([parts[0], Detections.empty(("flux",))], np.arange(0))


@pytest.mark.parametrize("sizes", [(0,), (5, 0, 7), (40, 1, 23)])
def test_consuming_gather_empties_the_parts_and_equals_gather(sizes: tuple[int, ...]) -> None:
    rng = np.random.default_rng(7 + sum(sizes))
    parts = [_dets(_boxes(rng, n), rng.random(n), rng, chunk=k) for k, n in enumerate(sizes)]
    index = rng.permutation(sum(sizes))[: sum(sizes) // 2]
    expect = Detections.gather(parts, index)
    calls: list[int] = []
    work = list(parts)
    got = Detections.gather(work, index, consume=True, after_column=lambda: calls.append(1))
    assert _same(got, expect)
    assert work == []             # the caller's list no longer references the parts
    assert len(calls) == 6        # once per column: boxes, scores x2, prior, params, chunk
    with pytest.raises(StreamdetValueError, match="list"):
        Detections.gather(tuple(parts), index, consume=True)


def test_merge_rows_is_what_merge_gathers() -> None:
    rng = np.random.default_rng(11)
    parts = [nms_detections(_dets(_boxes(rng, 80, 60.0), rng.random(80), rng, chunk=k),
                            iou_threshold=0.4) for k in range(3)]
    rows = merge_rows(parts, iou_threshold=0.4)
    assert rows.dtype == np.intp and len(np.unique(rows)) == len(rows)
    assert 0 < len(rows) < sum(len(p) for p in parts)   # some cross-part suppression
    assert _same(Detections.concat(parts).take(rows), merge(*parts, iou_threshold=0.4))
    assert merge_rows([], iou_threshold=0.4).shape == (0,)


def test_merge_is_order_independent() -> None:
    rng = np.random.default_rng(4)
    parts = [nms_detections(_dets(_boxes(rng, 60, 50.0), rng.random(60), rng, chunk=k),
                            iou_threshold=0.5) for k in range(4)]
    # exact score ties across parts, and duplicated positions
    parts[1] = _dets(parts[0].boxes, parts[0].objectness, rng, chunk=1)
    ref = merge(*parts, iou_threshold=0.5)
    for perm in itertools.permutations(range(4)):
        got = merge(*(parts[i] for i in perm), iou_threshold=0.5)
        assert _same(got, ref)
    # the order is canonical: objectness descending, then centre x
    o = ref.objectness.astype(np.float64)
    assert np.all(np.diff(o) <= 0)
    ties = np.diff(o) == 0
    assert np.all(np.diff(ref.centers[:, 0])[ties] >= 0)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("layout", ["blocks", "interleaved"])
def test_merge_equals_grouped_nms_of_the_union(kind: str, layout: str) -> None:
    # merge only runs NMS on boxes near another group's extent: same result as a grouped
    # NMS of the whole canonically ordered union, whether the groups are compact blocks
    # (as chunks are) or spread over each other.
    rng = np.random.default_rng(11)
    for t in (0.0, 0.3, 0.6):
        parts = []
        for k in range(6):
            b = _boxes(rng, 80, 60.0)
            if layout == "blocks":
                b += 55.0 * np.array([k % 3, k // 3, k % 3, k // 3])
            parts.append(_dets(b, rng.random(80), rng, chunk=k))
        d = Detections.concat(parts)
        d = d.take(_canonical_order(d))
        keep = nms(d.boxes, d.objectness, iou_threshold=t, kind=kind, groups=d.chunk)
        expect = d.take(np.sort(keep))
        got = merge(*parts, iou_threshold=t, kind=kind)
        assert _same(got, expect)
        assert len(got) < len(d)          # the groups did interact


def test_near_other_groups_flags_every_cross_group_overlap() -> None:
    rng = np.random.default_rng(5)
    b = _boxes(rng, 300, 200.0)
    g = (b[:, 0] // 50).astype(np.int64) + 10 * (b[:, 1] // 50).astype(np.int64)
    near = _near_other_groups(b, g)
    iou = box_iou(b, b)
    cross = (iou > 0) & (g[:, None] != g[None, :])
    assert np.all(near[cross.any(axis=1)])
    assert 0 < near.sum() < len(b)        # a superset, but not everything
    assert not _near_other_groups(b, np.zeros(len(b), np.int64)).any()
    assert _near_other_groups(b[:0], g[:0]).shape == (0,)


def _has_chain(d: Detections, t: float, kind: str) -> bool:
    m = _overlap(d.boxes, d.boxes, kind) > t
    np.fill_diagonal(m, False)
    s = d.objectness.astype(np.float64)
    n = len(d)
    for b in range(n):
        above = [a for a in range(n) if m[a, b] and (s[a], -a) > (s[b], -b)]
        below = [c for c in range(n) if m[b, c] and (s[c], -c) < (s[b], -b)]
        if above and below:
            return True
    return False


@pytest.mark.parametrize("kind", KINDS)
def test_merge_associative_without_chains(kind: str) -> None:
    t, checked = 0.3, 0
    for seed in range(40):
        rng = np.random.default_rng(seed)
        parts = [nms_detections(_dets(_boxes(rng, 6, 40.0), rng.random(6), rng, chunk=k),
                                iou_threshold=t, kind=kind) for k in range(3)]
        a, b, c = parts
        union = Detections.concat(parts)
        if _has_chain(merge(union, iou_threshold=1.0, kind=kind), t, kind):
            continue
        checked += 1
        left = merge(merge(a, b, iou_threshold=t, kind=kind), c, iou_threshold=t, kind=kind)
        right = merge(a, merge(b, c, iou_threshold=t, kind=kind), iou_threshold=t, kind=kind)
        flat = merge(a, b, c, iou_threshold=t, kind=kind)
        assert _same(left, flat) and _same(right, flat)
        assert _rows(flat) == _rows(nms_detections(union, iou_threshold=t, kind=kind))
    assert checked >= 10


def test_merge_chain_across_three_parts_is_the_known_limit() -> None:
    rng = np.random.default_rng(0)
    boxes = np.array([[0.0, 0.0, 10.0, 10.0], [4.0, 0.0, 14.0, 10.0], [8.0, 0.0, 18.0, 10.0]])
    a, b, c = (_dets(boxes[k:k + 1], [0.9 - 0.1 * k], rng, chunk=k) for k in range(3))
    t = 0.3
    # merge never depends on the order of its arguments ...
    flat = merge(a, b, c, iou_threshold=t, kind="iou")
    assert _same(flat, merge(c, a, b, iou_threshold=t, kind="iou"))
    assert flat.boxes.tolist() == boxes[[0, 2]].tolist()  # global greedy NMS: a and c
    # ... but with a chain a > b > c spread over three parts the grouping matters:
    left = merge(merge(a, b, iou_threshold=t, kind="iou"), c, iou_threshold=t, kind="iou")
    right = merge(a, merge(b, c, iou_threshold=t, kind="iou"), iou_threshold=t, kind="iou")
    assert left.boxes.tolist() == boxes[[0, 2]].tolist()
    assert right.boxes.tolist() == boxes[[0]].tolist()


def test_merge_edge_cases() -> None:
    assert len(merge(iou_threshold=0.5)) == 0
    e = Detections.empty(("flux", "bmaj"))
    out = merge(e, e, iou_threshold=0.5)
    assert len(out) == 0 and out.param_names == ("flux", "bmaj")
    rng = np.random.default_rng(0)
    d = _dets(_boxes(rng, 10), rng.random(10), rng)
    assert _rows(merge(d, e, iou_threshold=1.0)) == _rows(d)
    with pytest.raises(StreamdetValueError, match="cannot concatenate"):
        merge(d, Detections.empty(("flux",)), iou_threshold=0.5)
    with pytest.raises(StreamdetValueError, match=r"\[0, 1\]"):
        merge(d, iou_threshold=2.0)


@pytest.mark.parametrize("seed", range(6))
def test_score_and_centre_order_equals_a_full_lexsort(seed: int) -> None:
    """One sort on the score, then only the tied runs by centre: the same order as a
    lexsort on (objectness desc, centre x, centre y), with many ties (few distinct
    scores, integer centres), and None exactly when all three keys tie."""
    rng = np.random.default_rng(seed)
    n = 500
    boxes = np.round(_boxes(rng, n, 30.0)) if seed % 2 else _boxes(rng, n)
    scores = rng.choice(rng.random(40).astype(np.float32), n) if seed < 4 else \
        rng.random(n).astype(np.float32)
    cx, cy = 0.5 * (boxes[:, 0] + boxes[:, 2]), 0.5 * (boxes[:, 1] + boxes[:, 3])
    ref = np.lexsort((cy, cx, -scores.astype(np.float64)))
    full_tie = np.any((np.diff(scores[ref]) == 0) & (np.diff(cx[ref]) == 0)
                      & (np.diff(cy[ref]) == 0))
    got = _order_by_score_and_centre(boxes, scores)
    if full_tie:
        assert got is None
    else:
        assert got is not None and np.array_equal(got, ref)
    # the same through a row accessor over parts (what merge_rows uses)
    cut = [0, 123, 124, 400, n]
    rows = _union_rows([boxes[a:b] for a, b in itertools.pairwise(cut)])
    idx = rng.permutation(n)
    np.testing.assert_array_equal(rows(idx), boxes[idx])
    via = _order_by_score_and_centre(rows, scores)
    assert (via is None) == (got is None)
    if got is not None:
        assert via is not None and np.array_equal(via, got)
