"""One writer per output: the lock helper, and two `convert`s racing for one store."""

from __future__ import annotations

import errno
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import FitsCase, beam_cards, sky_cards, write_fits

import streamdet.io._lock as lock_mod
from streamdet.cli import main
from streamdet.errors import OutputLockedError, StreamdetError, StreamdetValueError
from streamdet.io._lock import lock_path, output_lock, read_owner
from streamdet.io.convert import convert, verify
from streamdet.io.image import info


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _stale_record(lock: Path, pid: int, host: str | None = None) -> None:
    lock.write_text(json.dumps({"pid": pid, "host": host or socket.gethostname(),
                                "since": time.time() - 60, "command": "streamdet convert"}))


# --------------------------------------------------------------------------- the helper

def test_lock_file_names_its_holder_and_is_removed(tmp_path: Path) -> None:
    out = tmp_path / "s.zarr"
    lock = lock_path(out)
    assert lock == tmp_path.resolve() / ".s.zarr.lock"
    with output_lock(out) as held:
        assert held.path == lock and not held.took_over and held.uses_flock
        owner = read_owner(lock)
        assert owner is not None
        assert (owner.pid, owner.host) == (os.getpid(), socket.gethostname())
        assert owner.since is not None and abs(owner.since - time.time()) < 60
        assert not out.exists()  # the lock never creates the output
    assert not lock.exists()
    with output_lock(out):  # free again
        pass


def test_second_writer_refused_at_once(tmp_path: Path) -> None:
    out = tmp_path / "cat.txt"
    with output_lock(out):
        t0 = time.monotonic()
        with pytest.raises(OutputLockedError, match=rf"being written by pid {os.getpid()} "
                                                    rf"on host {socket.gethostname()}") as exc:
            with output_lock(out):
                pass  # pragma: no cover
        assert time.monotonic() - t0 < 1.0
        assert isinstance(exc.value, StreamdetError) and "\n" not in str(exc.value)
        with output_lock(tmp_path / "other.txt"):  # other outputs are independent
            pass
    assert not lock_path(out).exists()


def test_second_writer_in_another_thread_refused(tmp_path: Path) -> None:
    out = tmp_path / "s.zarr"
    errors: list[BaseException] = []

    def second() -> None:
        try:
            with output_lock(out):
                pass  # pragma: no cover
        except BaseException as exc:
            errors.append(exc)

    with output_lock(out):
        t = threading.Thread(target=second)
        t.start()
        t.join()
    assert len(errors) == 1 and isinstance(errors[0], OutputLockedError)


def test_same_output_through_a_symlinked_directory(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link").symlink_to(real)
    with output_lock(real / "s.zarr"), pytest.raises(OutputLockedError):
        with output_lock(tmp_path / "link" / "s.zarr"):
            pass  # pragma: no cover


def test_stale_lock_of_a_dead_process_is_taken_over(tmp_path: Path) -> None:
    out = tmp_path / "s.zarr"
    _stale_record(lock_path(out), _dead_pid())
    with output_lock(out) as held:
        assert held.took_over
        owner = read_owner(held.path)
        assert owner is not None and owner.pid == os.getpid()
    assert not held.path.exists()


_HOLDER = textwrap.dedent("""
    import sys, time
    from streamdet.io._lock import output_lock
    with output_lock(sys.argv[1]):
        print("held", flush=True)
        time.sleep(60)
""")


def test_lock_of_a_live_process_then_killed(tmp_path: Path) -> None:
    """A live holder in another process is refused by pid; once it is SIGKILLed (no
    clean-up at all) its lock is stale and the next writer takes it over."""
    out = tmp_path / "s.zarr"
    proc = subprocess.Popen([sys.executable, "-c", _HOLDER, str(out)], stdout=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
        with pytest.raises(OutputLockedError, match=f"pid {proc.pid} "):
            with output_lock(out):
                pass  # pragma: no cover
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
    assert lock_path(out).exists()  # left behind by the killed holder
    with output_lock(out) as held:
        assert held.took_over


def test_without_flock_the_file_is_the_lock(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """On a file system without flock: exclusive creation; a live pid (or another host's)
    refused, a dead pid on this host taken over."""
    def no_flock(fd: int, op: int) -> None:
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(lock_mod.fcntl, "flock", no_flock)
    out = tmp_path / "s.zarr"
    with output_lock(out) as held:
        assert not held.uses_flock
        with pytest.raises(OutputLockedError, match=f"pid {os.getpid()}"):
            with output_lock(out):
                pass  # pragma: no cover
    assert not held.path.exists()
    _stale_record(held.path, _dead_pid())
    with output_lock(out) as again:
        assert again.took_over
    _stale_record(held.path, _dead_pid(), host="some-other-host")
    with pytest.raises(OutputLockedError, match="on host some-other-host"):
        with output_lock(out):
            pass  # pragma: no cover


def test_lock_in_a_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(StreamdetValueError, match="lock file"):
        with output_lock(tmp_path / "missing" / "s.zarr"):
            pass  # pragma: no cover


# ------------------------------------------------------------------ convert races

@pytest.fixture
def big_fits(tmp_path: Path) -> FitsCase:
    img = np.random.default_rng(8).normal(size=(1024, 1024)).astype(np.float32)
    path = tmp_path / "big.fits"
    header = write_fits(path, img, [*sky_cards(1024, 1024), *beam_cards()])
    return FitsCase(path, img, header)


def _start_convert(fits: Path, store: Path) -> subprocess.Popen[str]:
    """A `streamdet convert` process, returned once it holds the store's lock."""
    proc = subprocess.Popen([sys.executable, "-m", "streamdet", "convert", str(fits),
                             str(store), "--chunks", "32", "--quiet"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        owner = read_owner(lock_path(store))
        if owner is not None and owner.pid == proc.pid:
            return proc
        time.sleep(0.002)
    _, err = proc.communicate()
    pytest.fail(f"convert never held the lock (exit {proc.returncode}): {err}")


@pytest.mark.parametrize("second", [[], ["--overwrite"]], ids=["same", "overwrite"])
def test_second_convert_on_one_store_is_refused(big_fits: FitsCase, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str],
                                                second: list[str]) -> None:
    store = tmp_path / "s.zarr"
    first = _start_convert(big_fits.path, store)
    try:
        t0 = time.monotonic()
        rc = main(["convert", str(big_fits.path), str(store), "--chunks", "32", "--quiet",
                   *second])
        elapsed = time.monotonic() - t0
        err = capsys.readouterr().err
        still_running = first.poll() is None
    finally:
        _, first_err = first.communicate(timeout=120)
    assert rc == 1 and elapsed < 2.0
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith("streamdet convert: error: ") and f"pid {first.pid}" in err
    assert "Traceback" not in err
    assert still_running  # refused while the first was writing, not after it
    assert first.returncode == 0, first_err
    assert info(store).complete and verify(big_fits.path, store, quiet=True)
    assert not lock_path(store).exists()


def test_convert_takes_over_a_killed_writers_lock(big_fits: FitsCase, tmp_path: Path) -> None:
    store = tmp_path / "s.zarr"
    first = _start_convert(big_fits.path, store)
    first.send_signal(signal.SIGKILL)
    first.communicate()
    assert lock_path(store).exists()
    convert(big_fits.path, store, chunks=32, quiet=True)
    assert info(store).complete and verify(big_fits.path, store, quiet=True)
    assert not lock_path(store).exists()
