"""The window planner: one N-dimensional planner for images (2D) and cubes (3D)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from streamdet.engine._plan import plan_windows
from streamdet.errors import StreamdetValueError


@pytest.mark.parametrize(("shape", "core", "halo", "stride"), [
    ((40, 56), 16, 8, 8),
    ((33, 64), (8, 24), (0, 8), (1, 8)),
    ((48, 20, 36), (16, 8, 12), (16, 4, 0), (16, 4, 4)),
    ((8, 8, 8), 8, 8, 8),
])
def test_cores_partition_the_area_and_regions_are_cores_plus_halo(
        shape: tuple[int, ...], core: int | tuple[int, ...], halo: int | tuple[int, ...],
        stride: int | tuple[int, ...]) -> None:
    n = len(shape)
    bounds = tuple(v for s in shape for v in (0, s))
    windows = plan_windows(bounds, core=core, halo=halo, stride=stride, limit=bounds)
    # every pixel of the area is in exactly one core
    owner = np.zeros(shape, np.int64)
    for w in windows:
        owner[tuple(slice(w.core[2 * a], w.core[2 * a + 1]) for a in range(n))] += 1
        assert w.ndim == n
        assert w.core_pixels == np.prod([w.core[2 * a + 1] - w.core[2 * a] for a in range(n)])
    assert (owner == 1).all()
    # reference: each axis cut on its own, then every combination, last axis fastest
    cores = (core,) * n if isinstance(core, int) else core
    halos = (halo,) * n if isinstance(halo, int) else halo
    spans = [[(lo, min(lo + c, s)) for lo in range(0, s, c)]
             for s, c in zip(shape, cores, strict=True)]
    expected = list(itertools.product(*spans))
    assert [w.index for w in windows] == list(range(len(expected)))
    for w, want in zip(windows, expected, strict=True):
        assert w.core == tuple(v for span in want for v in span)
        grown = tuple(max(0, lo - h) if k == 0 else min(s, hi + h)
                      for (lo, hi), h, s in zip(want, halos, shape, strict=True) for k in (0, 1))
        assert w.region == grown
        assert w.region_shape == tuple(grown[2 * a + 1] - grown[2 * a] for a in range(n))


def test_sizes_off_the_stride_are_refused() -> None:
    b = (0, 64, 0, 64, 0, 64)
    with pytest.raises(StreamdetValueError, match="chunk size 12 must be a positive multiple"):
        plan_windows(b, core=(16, 12, 16), halo=0, stride=8, limit=b)
    with pytest.raises(StreamdetValueError, match="halo 4 must be a non-negative multiple"):
        plan_windows(b, core=16, halo=(8, 8, 4), stride=8, limit=b)
    with pytest.raises(StreamdetValueError, match="one integer or 3"):
        plan_windows(b, core=(16, 16), halo=0, stride=8, limit=b)
    with pytest.raises(StreamdetValueError, match="pairs of the same axes"):
        plan_windows(b, core=16, halo=0, stride=8, limit=b[:4])
