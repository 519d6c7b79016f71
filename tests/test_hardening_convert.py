"""Crash safety of ``convert``: a kill at any point leaves a store that a re-run finishes.

Each intermediate state a killed conversion can leave is built (by hand, and by killing a
real ``convert`` process with SIGKILL at chosen and at random points); the re-run must
either resume or recreate the store, and end with exactly the content of an uninterrupted
conversion and no temporary directory beside it.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import zarr
from conftest import FitsCase, beam_cards, sky_cards, write_fits

from streamdet.errors import IncompleteStoreError, OutputExistsError
from streamdet.io.convert import convert, verify
from streamdet.io.image import info, open_image

CHUNKS = 32  # fits_2d (300 x 260) in 10 write-blocks of 32 rows, 90 chunks


def _chunk_files(store: Path) -> dict[str, bytes]:
    return {str(p.relative_to(store)): p.read_bytes()
            for p in sorted((store / "image").rglob("*")) if p.is_file()}


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _siblings(store: Path) -> list[str]:
    return sorted(p.name for p in store.parent.iterdir()
                  if p.name.startswith(f".{store.name}."))


@pytest.fixture
def reference(fits_2d: FitsCase, tmp_path: Path) -> Path:
    ref = tmp_path / "ref.zarr"
    convert(fits_2d.path, ref, chunks=CHUNKS, quiet=True)
    return ref


def _group_attrs(ref: Path) -> dict[str, object]:
    attrs = json.loads((ref / "zarr.json").read_text())["attributes"]
    return {**attrs, "streamdet_complete": False}


def _assert_finishes(fits: FitsCase, store: Path, ref: Path, *, resumed: bool | None = None
                     ) -> None:
    """Re-running the conversion completes the store, equal to the reference."""
    r = convert(fits.path, store, chunks=CHUNKS, quiet=True)
    if resumed is not None:
        assert r.resumed is resumed
    assert info(store).complete
    assert _chunk_files(store) == _chunk_files(ref)
    assert np.array_equal(open_image(store).data.values, fits.expected, equal_nan=True)
    assert verify(fits.path, store, quiet=True)
    assert not (store / "streamdet-progress.json").exists()
    assert _siblings(store) == []


# ------------------------------------------------------------------ hand-built states

def test_group_json_only_is_recreated(fits_2d: FitsCase, tmp_path: Path,
                                      reference: Path) -> None:
    """The issue's case: a store holding only the group's zarr.json (killed before the
    image array was created, by a version that built the store in place)."""
    store = tmp_path / "s.zarr"
    zarr.open_group(store, mode="w-", zarr_format=3, attributes=_group_attrs(reference))
    st = info(store)
    assert not st.complete and "run streamdet convert again" in st.summary()
    with pytest.raises(IncompleteStoreError, match="no 'image' array"):
        open_image(store, allow_incomplete=True)
    _assert_finishes(fits_2d, store, reference, resumed=False)


def test_array_without_chunks_resumes(fits_2d: FitsCase, tmp_path: Path,
                                      reference: Path) -> None:
    store = tmp_path / "s.zarr"
    shutil.copytree(reference, store, ignore=shutil.ignore_patterns("c"))
    (store / "zarr.json").write_text(json.dumps(
        {**json.loads((store / "zarr.json").read_text()), "attributes": _group_attrs(reference),
         "consolidated_metadata": None}))
    assert not info(store).complete and not (store / "image" / "c").exists()
    _assert_finishes(fits_2d, store, reference, resumed=True)


def test_array_of_another_layout_is_recreated(fits_2d: FitsCase, tmp_path: Path,
                                              reference: Path) -> None:
    store = tmp_path / "s.zarr"
    root = zarr.open_group(store, mode="w-", zarr_format=3, attributes=_group_attrs(reference))
    root.create_array("image", shape=(5, 5), dtype="float32", chunks=(5, 5))
    _assert_finishes(fits_2d, store, reference, resumed=False)


def test_partial_chunks_and_temp_files_resume(fits_2d: FitsCase, tmp_path: Path,
                                              reference: Path) -> None:
    store = tmp_path / "s.zarr"
    shutil.copytree(reference, store)
    (store / "zarr.json").write_text(json.dumps(
        {**json.loads((store / "zarr.json").read_text()), "attributes": _group_attrs(reference),
         "consolidated_metadata": None}))
    rows = sorted((store / "image" / "c").iterdir(), key=lambda p: int(p.name))
    for row in rows[4:]:  # blocks 4..9 never written
        shutil.rmtree(row)
    (store / "streamdet-progress.json").write_text(
        json.dumps({"format": 1, "total": 10, "done": [[0, 3]]}))  # block 3 written, unsaved
    (rows[0] / f"0.{'b' * 32}.partial").write_bytes(b"half a chunk")
    (store / ".streamdet-progress.json.tmp").write_text("{")
    st = info(store)
    assert (st.blocks_done, st.blocks_total) == (3, 10)
    _assert_finishes(fits_2d, store, reference, resumed=True)
    assert not list(store.rglob("*.partial")) and not list(store.rglob("*.tmp"))


@pytest.mark.parametrize("consolidated", [False, True])
def test_marker_missing_is_finished(fits_2d: FitsCase, tmp_path: Path, reference: Path,
                                    consolidated: bool) -> None:
    """Every block written, killed before (or just after) the metadata was consolidated:
    the completeness marker is missing and a re-run only finishes the store."""
    store = tmp_path / "s.zarr"
    shutil.copytree(reference, store)
    meta = json.loads((store / "zarr.json").read_text())
    if not consolidated:
        meta["consolidated_metadata"] = None
    meta["attributes"] = _group_attrs(reference)
    (store / "zarr.json").write_text(json.dumps(meta))
    (store / "streamdet-progress.json").write_text(
        json.dumps({"format": 1, "total": 10, "done": [[0, 10]]}))
    with pytest.raises(IncompleteStoreError):
        open_image(store)
    r = convert(fits_2d.path, store, chunks=CHUNKS, quiet=True)
    assert r.resumed and r.n_blocks_written == 0
    _assert_finishes_already(fits_2d, store, reference)


def _assert_finishes_already(fits: FitsCase, store: Path, ref: Path) -> None:
    assert info(store).complete and _chunk_files(store) == _chunk_files(ref)
    assert verify(fits.path, store, quiet=True)
    with pytest.raises(OutputExistsError, match="complete"):
        convert(fits.path, store, chunks=CHUNKS, quiet=True)


def test_empty_directory_is_converted_into(fits_2d: FitsCase, tmp_path: Path,
                                           reference: Path) -> None:
    store = tmp_path / "s.zarr"
    store.mkdir()
    _assert_finishes(fits_2d, store, reference, resumed=False)


@pytest.mark.parametrize("kind", ["creating", "removing"])
def test_stale_sibling_directories_are_removed(fits_2d: FitsCase, tmp_path: Path,
                                               reference: Path, kind: str) -> None:
    store = tmp_path / "s.zarr"
    stale = tmp_path / f".s.zarr.{kind}-{_dead_pid()}"
    zarr.open_group(stale, mode="w-", zarr_format=3, attributes=_group_attrs(reference))
    other = tmp_path / ".t.zarr.creating-1"  # another output's: not touched
    other.mkdir()
    _assert_finishes(fits_2d, store, reference, resumed=False)
    assert not stale.exists() and other.exists()


def test_overwrite_removes_by_renaming(fits_2d: FitsCase, tmp_path: Path,
                                       reference: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--overwrite moves the old store aside in one step before deleting it: a kill while
    deleting leaves a stale directory the next run deletes, never a half-deleted store."""
    import streamdet.io._zarrstore as zs

    store = tmp_path / "s.zarr"
    shutil.copytree(reference, store)

    def killed(path: object, *args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(zs.shutil, "rmtree", killed)
    with pytest.raises(KeyboardInterrupt):
        convert(fits_2d.path, store, chunks=CHUNKS, overwrite=True, quiet=True)
    monkeypatch.undo()
    assert not store.exists() and _siblings(store) == [f".s.zarr.removing-{os.getpid()}"]
    _assert_finishes(fits_2d, store, reference, resumed=False)


def test_failed_creation_leaves_nothing(fits_2d: FitsCase, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    store = tmp_path / "s.zarr"

    def boom(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(zarr.Group, "create_array", boom)
    with pytest.raises(OSError, match="disk full"):
        convert(fits_2d.path, store, chunks=CHUNKS, quiet=True)
    assert not store.exists() and _siblings(store) == []


# ------------------------------------------------------------------ real processes killed

_CHILD = textwrap.dedent(f"""
    import importlib, os, signal, sys, threading
    fits, store, target, n, when = sys.argv[1:6]
    n = int(n)
    mod_name, _, attr = target.partition(":")
    owner = importlib.import_module(mod_name)
    *path, name = attr.split(".")
    for part in path:
        owner = getattr(owner, part)
    real = getattr(owner, name)
    calls = [0]
    lock = threading.Lock()
    def wrapper(*args, **kwargs):  # blocks are written by several threads
        with lock:
            calls[0] += 1
            k = calls[0]
        if k == n and when == "before":
            os.kill(os.getpid(), signal.SIGKILL)
        result = real(*args, **kwargs)
        if k == n and when == "after":
            os.kill(os.getpid(), signal.SIGKILL)
        return result
    setattr(owner, name, wrapper)
    from streamdet.io.convert import convert
    convert(fits, store, chunks={CHUNKS}, quiet=True)
    sys.exit(3)  # not killed
""")

KILL_POINTS = {
    "group json written, no image array": ("zarr:Group.create_array", 1, "before"),
    "array created, no progress file": ("streamdet.io._zarrstore:save_progress", 1, "before"),
    "store whole, not yet renamed": ("streamdet.io._zarrstore:save_progress", 1, "after"),
    "three blocks written": ("streamdet.io.convert:_write_block", 3, "after"),
    "all blocks, not consolidated": ("zarr:consolidate_metadata", 1, "before"),
    "consolidated, no marker": ("zarr:consolidate_metadata", 1, "after"),
}


@pytest.mark.parametrize("point", list(KILL_POINTS))
def test_sigkill_at_each_point_recovers(fits_2d: FitsCase, tmp_path: Path, reference: Path,
                                        point: str) -> None:
    store = tmp_path / "s.zarr"
    target, n, when = KILL_POINTS[point]
    proc = subprocess.run([sys.executable, "-c", _CHILD, str(fits_2d.path), str(store),
                           target, str(n), when], capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    if store.exists():  # what info says of it is true, and it never raises a traceback
        st = info(store)
        assert not st.complete
    _assert_finishes(fits_2d, store, reference)


@pytest.fixture
def big_fits(tmp_path: Path) -> FitsCase:
    """1024 x 1024 float32, 32 write-blocks of 32 rows (~1 s to convert): long enough to
    kill part-way."""
    img = np.random.default_rng(7).normal(size=(1024, 1024)).astype(np.float32)
    path = tmp_path / "big.fits"
    header = write_fits(path, img, [*sky_cards(1024, 1024), *beam_cards()])
    return FitsCase(path, img, header)


def _n_chunks(store: Path) -> int:
    rows = store / "image" / "c"
    return sum(len(os.listdir(rows / r)) for r in os.listdir(rows)) if rows.is_dir() else 0


def _started(store: Path, before: int) -> bool:
    """The child is writing: its store is being created, or it wrote a chunk."""
    if before < 0:
        return store.exists() or any(p.name.startswith(f".{store.name}.creating-")
                                     for p in store.parent.iterdir())
    return _n_chunks(store) > before


def test_sigkill_at_random_points_recovers(big_fits: FitsCase, tmp_path: Path) -> None:
    """Kill a real `streamdet convert` at random moments after it started writing, several
    times over the same store; every re-run goes on, and the last one finishes it."""
    store = tmp_path / "s.zarr"
    cmd = [sys.executable, "-m", "streamdet", "convert", str(big_fits.path), str(store),
           "--chunks", str(CHUNKS), "--quiet"]
    rng = random.Random(18)
    killed = 0
    states: list[int] = []  # chunks on disk after each kill (-1: no store yet)
    for _ in range(5):
        before = _n_chunks(store) if store.exists() else -1
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 60
        while (not _started(store, before) and proc.poll() is None
               and time.monotonic() < deadline):
            time.sleep(0.001)
        time.sleep(rng.uniform(0.0, 0.3))
        proc.send_signal(signal.SIGKILL)
        _, err = proc.communicate(timeout=60)
        if proc.returncode == -signal.SIGKILL:
            killed += 1
        else:  # finished before the kill: start over
            assert proc.returncode == 0, err
            shutil.rmtree(store)
        states.append(_n_chunks(store) if store.exists() else -1)
        if store.exists():  # a killed store is always readable, and never complete
            assert not info(store).complete or proc.returncode == 0
    assert killed >= 3, states
    proc_final = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc_final.returncode == 0, proc_final.stderr
    assert info(store).complete and _siblings(store) == []
    assert verify(big_fits.path, store, quiet=True)


def test_issue_reproduction_kill_when_group_appears(big_fits: FitsCase, tmp_path: Path) -> None:
    """The issue's reproduction: kill as soon as a group zarr.json appears (in the store
    being built, or at the store's path), then convert again."""
    store = tmp_path / "s.zarr"
    cmd = [sys.executable, "-m", "streamdet", "convert", str(big_fits.path), str(store),
           "--chunks", str(CHUNKS), "--quiet"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while proc.poll() is None and time.monotonic() < deadline:
        if os.path.exists(store / "zarr.json") or any(
                os.path.exists(tmp_path / name / "zarr.json") for name in os.listdir(tmp_path)
                if name.startswith(".s.zarr.creating-")):
            break
    proc.kill()
    proc.wait(timeout=60)
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr
    assert info(store).complete and verify(big_fits.path, store, quiet=True)
