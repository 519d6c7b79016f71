"""A column container for decoded detections, shared by decoding, NMS and merging."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ..errors import StreamdetValueError

__all__ = ["Detections"]


@dataclass(frozen=True)
class Detections:
    """Detections of one tile, chunk or image, column by column.

    Attributes
    ----------
    boxes : (N, 4) or (N, 6) float64
        Boxes in 0-based pixel coordinates of the full image or cube (the centre of
        pixel ``i`` is at ``i``): ``[x0, y0, x1, y1]`` for an image, spanning
        x0 <= x < x1 and y0 <= y < y1; ``[x0, y0, z0, x1, y1, z1]`` for a cube (z the
        channel). See :mod:`streamdet.engine.boxes`; :attr:`ndim` is 2 or 3.
    objectness : (N,) float32
        Objectness in [0, 1]; the NMS and threshold score.
    probability : (N,) float32
        Detection probability in [0, 1].
    prior : (N,) int16
        Index of the box prior (anchor) that produced the detection.
    params : (N, P) float
        Decoded physical parameters, in the order of ``param_names`` (float32 from the
        decoder; any float dtype is accepted).
    param_names : tuple of str
        Names of the ``P`` parameter columns (e.g. ``("flux", "bmaj", "bmin", "pa")``).
    chunk : (N,) int32
        Index of the chunk of origin (-1 if unknown).
    """

    boxes: NDArray[np.float64]
    objectness: NDArray[np.float32]
    probability: NDArray[np.float32]
    prior: NDArray[np.int16]
    params: NDArray[np.floating]
    param_names: tuple[str, ...] = ()
    chunk: NDArray[np.int32] = field(default_factory=lambda: np.zeros(0, np.int32))

    def __post_init__(self) -> None:
        n = self.boxes.shape[0]
        if self.boxes.ndim != 2 or self.boxes.shape[1] not in (4, 6):
            raise StreamdetValueError(
                f"boxes must have shape (N, 4) or (N, 6), got {self.boxes.shape}")
        if self.chunk.shape[0] != n:
            object.__setattr__(self, "chunk", np.full(n, -1, np.int32))
        for name in ("objectness", "probability", "prior", "chunk"):
            arr = getattr(self, name)
            if arr.shape != (n,):
                raise StreamdetValueError(f"{name} must have shape ({n},), got {arr.shape}")
        if self.params.shape != (n, len(self.param_names)):
            raise StreamdetValueError(
                f"params must have shape ({n}, {len(self.param_names)}), got {self.params.shape}")

    def __len__(self) -> int:
        return int(self.boxes.shape[0])

    @property
    def ndim(self) -> int:
        """Spatial dimensionality of the boxes: 2 (image) or 3 (cube)."""
        return int(self.boxes.shape[1]) // 2

    @classmethod
    def empty(cls, param_names: Sequence[str] = (), *, ndim: int = 2) -> Detections:
        """Return an empty set of detections with the given parameter columns.

        Parameters
        ----------
        param_names : sequence of str
            Parameter columns.
        ndim : {2, 3}
            Dimensionality of the (absent) boxes: ``(0, 4)`` or ``(0, 6)``.
        """
        names = tuple(param_names)
        if ndim not in (2, 3):
            raise StreamdetValueError(f"ndim must be 2 or 3, got {ndim!r}")
        return cls(
            boxes=np.zeros((0, 2 * ndim), np.float64),
            objectness=np.zeros(0, np.float32),
            probability=np.zeros(0, np.float32),
            prior=np.zeros(0, np.int16),
            params=np.zeros((0, len(names)), np.float32),
            param_names=names,
            chunk=np.zeros(0, np.int32),
        )

    @classmethod
    def concat(cls, parts: Sequence[Detections]) -> Detections:
        """Concatenate detections that share the same parameter columns."""
        return cls.gather(parts, slice(None))

    @classmethod
    def gather(cls, parts: Sequence[Detections], index: NDArray[np.intp] | slice, *,
               consume: bool = False, after_column: Callable[[], object] | None = None
               ) -> Detections:
        """Rows ``index`` of the concatenation of ``parts``, without building it whole.

        Equal to ``Detections.concat(parts).take(index)``; the union is materialised
        one column at a time.

        Parameters
        ----------
        parts : sequence of Detections
            Sharing the same ``param_names``; a ``list`` when ``consume``.
        index : (M,) int or slice
            Rows of the concatenation, in output order.
        consume : bool
            Empty the list ``parts`` and drop each part's column as soon as the output
            column is built, so that the parts and the result are never both held
            whole (when nothing else references the parts).
        after_column : callable, optional
            Called after each column is built (and, with ``consume``, the parts'
            column dropped), e.g. to hand freed memory back to the system.
        """
        if not parts:
            return cls.empty()
        names = parts[0].param_names
        ndim = parts[0].ndim
        for p in parts[1:]:
            if p.param_names != names:
                raise StreamdetValueError(
                    f"cannot concatenate detections with params {p.param_names} and {names}")
            if p.ndim != ndim:
                raise StreamdetValueError(
                    f"cannot concatenate {p.ndim}D detections with {ndim}D ones")
        fields = ("boxes", "objectness", "probability", "prior", "params", "chunk")
        store = {name: [getattr(p, name) for p in parts] for name in fields}
        if consume:
            if not isinstance(parts, list):
                raise StreamdetValueError("consume=True needs the parts in a list")
            parts.clear()
        if isinstance(index, slice):
            def column(name: str) -> NDArray[Any]:
                return np.concatenate(store[name])[index]
        else:
            # Each output row is read straight from its part: no union of a column is
            # built (the root merge of a 16384^2 image gathers ~3.5e5 rows).
            located = _locate([len(b) for b in store["boxes"]], index)

            def column(name: str) -> NDArray[Any]:
                return _take_rows(store[name], located)

        built: dict[str, NDArray[Any]] = {}
        for name in fields:
            built[name] = column(name)
            if consume:
                del store[name]
            if after_column is not None:
                after_column()
        return cls(boxes=built["boxes"], objectness=built["objectness"],
                   probability=built["probability"], prior=built["prior"],
                   params=built["params"], param_names=names, chunk=built["chunk"])

    def take(self, index: NDArray[np.intp] | NDArray[np.bool_]) -> Detections:
        """Return the detections selected by an integer or boolean index."""
        return Detections(
            boxes=self.boxes[index],
            objectness=self.objectness[index],
            probability=self.probability[index],
            prior=self.prior[index],
            params=self.params[index],
            param_names=self.param_names,
            chunk=self.chunk[index],
        )

    def shifted(self, dx: float, dy: float, dz: float | None = None) -> Detections:
        """Return a copy with boxes translated by ``(dx, dy)`` pixels (3D: ``(dx, dy, dz)``)."""
        if (dz is None) != (self.ndim == 2):
            raise StreamdetValueError(
                f"shifting {self.ndim}D detections needs {self.ndim} offsets")
        step = [dx, dy] if dz is None else [dx, dy, dz]
        return Detections(
            boxes=self.boxes + np.array(step + step, np.float64),
            objectness=self.objectness,
            probability=self.probability,
            prior=self.prior,
            params=self.params,
            param_names=self.param_names,
            chunk=self.chunk,
        )

    def with_chunk(self, chunk: int) -> Detections:
        """Return a copy whose chunk of origin is ``chunk`` for every row."""
        return Detections(
            boxes=self.boxes, objectness=self.objectness, probability=self.probability,
            prior=self.prior, params=self.params, param_names=self.param_names,
            chunk=np.full(len(self), chunk, np.int32),
        )

    @property
    def centers(self) -> NDArray[np.float64]:
        """(N, ndim) float64 box centres ``(x, y)`` (3D: ``(x, y, z)``) in pixels."""
        d = self.ndim
        out: NDArray[np.float64] = 0.5 * (self.boxes[:, :d] + self.boxes[:, d:])
        return out

    def param(self, name: str) -> NDArray[np.floating]:
        """Return the column of parameter ``name``."""
        try:
            return self.params[:, self.param_names.index(name)]
        except ValueError:
            raise StreamdetValueError(
                f"no parameter {name!r}; have {self.param_names}") from None


Located = list[tuple[NDArray[np.intp], NDArray[np.intp]]]
"""Per part: the output positions of its rows and their indices within it."""


def _locate(lengths: Sequence[int], index: ArrayLike) -> Located:
    """Where rows ``index`` of a concatenation of parts of ``lengths`` rows come from."""
    offsets = np.cumsum([0, *lengths])
    index = np.asarray(index, np.intp)
    which = np.searchsorted(offsets, index, side="right") - 1
    located = []
    for k in range(len(lengths)):
        at = np.flatnonzero(which == k)
        located.append((at, index[at] - offsets[k]))
    return located


def _take_rows(arrays: Sequence[NDArray[Any]], located: Located) -> NDArray[Any]:
    """The located rows of the concatenation of ``arrays``, without building it."""
    n = sum(len(at) for at, _ in located)
    out = np.empty((n, *arrays[0].shape[1:]), np.result_type(*arrays))
    for (at, local), a in zip(located, arrays, strict=True):
        out[at] = a[local]
    return out
