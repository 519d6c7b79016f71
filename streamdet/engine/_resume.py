"""Per-window results persisted beside an output, so an interrupted run can resume.

A run of ``detect`` onto ``CATALOGUE`` keeps, in ``.CATALOGUE.parts/`` beside it:

- ``fingerprint.json``: what the results depend on (see :func:`fingerprint`): the
  streamdet version, the SHA-256 of the model file's bytes, the device, the input's
  identity (path, shape, chunks, dtype, the SHA-256 of its header and of three of its
  storage chunks: the first, the middle and the last), and every option that changes
  the detections of a window;
- ``window-K.npz``: the detections of window ``K`` (plain NumPy arrays, no pickle),
  each written to a temporary name (``.window-K.npz.PID-THREAD.tmp``), flushed to disk
  and renamed into place, so a part that exists is whole, whoever killed the writer;
- ``merge-L-K.npz``: on a cluster, the partial catalogues of the tree reduction (written
  atomically, not flushed: never resumed from), so that the workers do not hold them
  in memory until the merge above runs (:class:`PartRef`).

:class:`Parts` opens that directory: with ``resume`` it keeps the parts whose
fingerprint matches and refuses (:class:`PartsMismatchError`) those of another model,
input or setting; without ``resume`` it removes whatever is there first (the old
directory renamed away, then deleted) and starts afresh. The writer of the catalogue
removes the directory once the catalogue is written, unless asked to keep it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import threading
from pathlib import Path
from typing import Any

import numpy as np

from .._version import __version__
from ..errors import StreamdetError, StreamdetValueError
from .detections import Detections

__all__ = ["FINGERPRINT", "PartRef", "PartWriter", "Parts", "PartsError", "PartsMismatchError",
           "fingerprint", "input_identity", "parts_dir", "remove_parts"]

FINGERPRINT = "fingerprint.json"
_PREFIX, _SUFFIX = "window-", ".npz"
_MERGE = "merge-"


class PartsMismatchError(StreamdetValueError):
    """Persisted parts were made with another model, input or setting than this run's."""


class PartsError(StreamdetError, OSError):
    """A persisted part cannot be read or written."""


def parts_dir(output: str | os.PathLike[str]) -> Path:
    """The parts directory of an output: ``.NAME.parts`` beside it."""
    p = Path(output)
    return p.parent / f".{p.name}.parts"


def _sha256_file(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _jsonable(value: Any) -> Any:
    """Plain JSON values for a fingerprint (tuples -> lists, dataclasses -> dicts)."""
    import dataclasses

    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return value


def input_identity(arr: Any, *, path: str | os.PathLike[str] | None,
                   header: str | None) -> dict[str, Any]:
    """What identifies an input image, cheaply: its path, shape, chunks and dtype, the
    SHA-256 of its header and of three of its storage chunks (first, middle, last).

    Parameters
    ----------
    arr : dask.array.Array
        The (y, x) pixels.
    path : path-like or None
        The store or file (None for an in-memory array).
    header : str or None
        The header as text, where the image has one.
    """
    import dask

    nb = arr.numblocks
    total = int(np.prod(nb))
    picks = sorted({0, total // 2, total - 1}) if total else []
    h = hashlib.sha256()
    for flat in picks:
        idx = np.unravel_index(flat, nb)
        block = arr.blocks[tuple(int(i) for i in idx)]
        values = np.ascontiguousarray(dask.compute(block, scheduler="sync")[0])
        h.update(repr((tuple(int(i) for i in idx), values.shape, str(values.dtype))).encode())
        h.update(values.tobytes())
    return {
        "path": None if path is None else str(Path(path).resolve()),
        "shape": [int(n) for n in arr.shape],
        "chunks": [int(c) for c in arr.chunksize],
        "dtype": str(arr.dtype),
        "header_sha256": None if header is None
        else hashlib.sha256(header.encode("utf-8", "replace")).hexdigest(),
        "chunks_sha256": h.hexdigest(),
    }


def fingerprint(*, model_path: str | os.PathLike[str], device: str,
                input_id: dict[str, Any], options: Any) -> dict[str, Any]:
    """The fingerprint of a run's per-window results (a JSON-able dict).

    Parameters
    ----------
    model_path : path-like
        The ONNX file: its bytes are hashed (its name is not what counts).
    device : str
        Where the model runs (CPU and GPU results may differ in the last bits).
    input_id : dict
        :func:`input_identity` of the image.
    options : any
        Every setting that changes a window's detections (the resolved ``DetectConfig``).
    """
    return {"format": 1, "streamdet": __version__, "model_sha256": _sha256_file(model_path),
            "device": device, "input": _jsonable(input_id), "options": _jsonable(options)}


def _differences(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _differences(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}")
    return out


def _remove_tree(path: Path) -> None:
    """Remove a directory: renamed away first, so no half-removed one keeps its name."""
    if not path.exists() and not path.is_symlink():
        return
    if path.is_symlink() or not path.is_dir():
        raise PartsError(f"{path} is in the way of the parts directory and is not one; "
                         f"remove it")
    doomed = path.with_name(f"{path.name}.removing-{os.getpid()}")
    os.replace(path, doomed)
    shutil.rmtree(doomed, ignore_errors=True)


def remove_parts(directory: str | os.PathLike[str]) -> None:
    """Remove a parts directory (renamed away, then deleted); nothing if there is none."""
    _remove_tree(Path(directory))


class PartWriter:
    """Writes and reads the parts of one directory; small and picklable (sent to workers).

    Parameters
    ----------
    directory : path-like
        The parts directory (it must exist when parts are written).
    """

    __slots__ = ("directory",)

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return PartWriter, (os.fspath(self.directory),)

    def path(self, index: int) -> Path:
        """The part file of window ``index``."""
        return self.directory / f"{_PREFIX}{int(index)}{_SUFFIX}"

    def save(self, index: int, dets: Detections) -> None:
        """Write the detections of window ``index`` atomically (temporary, fsync, rename).

        Idempotent: a window recomputed (after a worker was lost) writes the same bytes.
        """
        self._write(self.path(index), dets, durable=True)

    def load(self, index: int) -> Detections:
        """The detections of window ``index`` as saved."""
        return self._read(self.path(index))

    def save_merged(self, name: str, dets: Detections) -> PartRef:
        """Write a partial result of the tree reduction (``merge-NAME.npz``) and return a
        reference to it.

        Atomic (temporary, rename) but not flushed to disk: a merge is never resumed
        from (only windows are), it only keeps the partial catalogues of a run on disk
        rather than in the workers' memory until the merge above them runs.
        """
        target = self.directory / f"{_MERGE}{name}{_SUFFIX}"
        self._write(target, dets, durable=False)
        return PartRef(self, target.name)

    def ref(self, index: int) -> PartRef:
        """A reference to the part of window ``index``."""
        return PartRef(self, self.path(index).name)

    def _write(self, target: Path, dets: Detections, *, durable: bool) -> None:
        tmp = target.with_name(f".{target.name}.{os.getpid()}-{threading.get_ident()}.tmp")
        try:
            with open(tmp, "wb") as f:
                np.savez(f, boxes=dets.boxes, objectness=dets.objectness,
                         probability=dets.probability, prior=dets.prior, params=dets.params,
                         chunk=dets.chunk, param_names=np.array(dets.param_names, dtype=str))
                if durable:
                    f.flush()
                    os.fsync(f.fileno())
            os.replace(tmp, target)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise PartsError(f"cannot write the part {target}: {exc}") from exc

    def _read(self, target: Path) -> Detections:
        try:
            with np.load(target, allow_pickle=False) as z:
                return Detections(boxes=z["boxes"], objectness=z["objectness"],
                                  probability=z["probability"], prior=z["prior"],
                                  params=z["params"],
                                  param_names=tuple(str(n) for n in z["param_names"]),
                                  chunk=z["chunk"])
        except (OSError, ValueError, KeyError) as exc:
            raise PartsError(f"cannot read the part {target} ({exc}); remove it (or the "
                             f"whole directory {self.directory}) and resume again") from exc


class PartRef:
    """A reference to detections persisted in a parts directory: what a task of the
    graph returns instead of the detections themselves, so that neither the worker
    that made them nor the scheduler holds them until their consumer runs.

    Parameters
    ----------
    writer : PartWriter
        The parts directory.
    name : str
        The file's name in it.
    """

    __slots__ = ("name", "writer")

    def __init__(self, writer: PartWriter, name: str) -> None:
        self.writer, self.name = writer, name

    def __reduce__(self) -> tuple[Any, tuple[PartWriter, str]]:
        return PartRef, (self.writer, self.name)

    def __sizeof__(self) -> int:
        return 200

    def load(self) -> Detections:
        """The detections it refers to."""
        return self.writer._read(self.writer.directory / self.name)


class Parts:
    """The parts directory of one run: opened, checked against the run's fingerprint.

    Parameters
    ----------
    directory : path-like
        See :func:`parts_dir`.
    fingerprint : dict
        This run's :func:`fingerprint`.
    resume : bool
        Keep the parts already there (refused unless their fingerprint is this run's);
        without, any existing parts directory is removed and a fresh one made.

    Raises
    ------
    PartsMismatchError
        ``resume`` and the directory's fingerprint differs (the message names what).
    """

    def __init__(self, directory: str | os.PathLike[str], fingerprint: dict[str, Any], *,
                 resume: bool) -> None:
        self.directory = Path(directory)
        self.fingerprint = fingerprint
        self.writer = PartWriter(self.directory)
        stamp = self.directory / FINGERPRINT
        if resume and self.directory.is_dir() and stamp.is_file():
            try:
                old = json.loads(stamp.read_text())
            except (OSError, ValueError) as exc:
                raise PartsMismatchError(
                    f"cannot read the fingerprint of the parts in {self.directory} ({exc}); "
                    f"run without --resume to start afresh") from exc
            diff = _differences(old, json.loads(json.dumps(fingerprint)))
            if diff:
                raise PartsMismatchError(
                    f"the parts in {self.directory} were made by another run: it differs in "
                    f"{', '.join(diff)}; resume with the same model, input and options, or run "
                    f"without --resume to start afresh (the parts are then replaced)")
            self._clean_temps()
            return
        _remove_tree(self.directory)  # without resume: what is there is replaced
        self.directory.mkdir(parents=True)
        tmp = stamp.with_name(f".{FINGERPRINT}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(fingerprint, indent=1, sort_keys=True))
        os.replace(tmp, stamp)

    def _clean_temps(self) -> None:
        for p in self.directory.glob(".*.tmp"):
            p.unlink(missing_ok=True)

    def done(self) -> set[int]:
        """Indices of the windows whose part is there."""
        out = set()
        for p in self.directory.glob(f"{_PREFIX}*{_SUFFIX}"):
            stem = p.name[len(_PREFIX):-len(_SUFFIX)]
            if stem.isdigit():
                out.add(int(stem))
        return out

    def remove(self) -> None:
        """Remove the directory and every part in it."""
        _remove_tree(self.directory)
