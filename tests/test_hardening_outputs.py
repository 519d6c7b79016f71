"""Outputs that never destroy data (issue 18, items 3, 2 and 4).

``--overwrite`` replaces only a regular file: never a directory, a device, pipe or
socket, nor an input of the command; one writer per output (a second ``detect`` onto the
same catalogue is refused at once); one temporary name per output, and the temporary
files of a killed writer removed by the next one.
"""

from __future__ import annotations

import importlib
import os
import signal
import socket
import stat
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from astropy.table import Table
from conftest import FitsCase

from streamdet.catalogue.catalog import read_sdc1
from streamdet.catalogue.outputs import write_catalogue, write_regions
from streamdet.cli import main
from streamdet.errors import OutputExistsError, OutputLockedError, StreamdetValueError
from streamdet.io import _atomic
from streamdet.io._atomic import atomic_path, check_output, remove_stale_temps, temp_path, writing
from streamdet.io._lock import lock_path, read_owner
from streamdet.io.convert import convert
from streamdet.io.image import info

ROOT = Path(__file__).resolve().parents[1]
# the module (streamdet.detect, streamdet.engine.detect: the function)
DETECT = importlib.import_module("streamdet.engine.detect")


def sky_table(n: int = 6, seed: int = 0) -> Table:
    """A small catalogue as detect returns it (sky positions and shapes)."""
    rng = np.random.default_rng(seed)
    x, y = rng.uniform(10, 200, n), rng.uniform(10, 180, n)
    return Table({"x": x, "y": y, "ra": rng.uniform(0.0, 0.02, n),
                  "dec": rng.uniform(-30.02, -30.0, n), "flux": rng.uniform(1e-4, 1e-3, n),
                  "bmaj": rng.uniform(1.5, 3.0, n), "bmin": rng.uniform(1.0, 1.5, n),
                  "pa": rng.uniform(0, 180, n), "x0": x - 2, "y0": y - 2, "x1": x + 2,
                  "y1": y + 2})


def _never_detect(*args: object, **kwargs: object) -> Table:
    raise AssertionError("detect ran although the output was refused")


@pytest.fixture
def no_detect(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(DETECT, "detect", _never_detect)


@pytest.fixture
def fake_detect(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(DETECT, "detect", lambda *a, **k: sky_table())


def _refused(argv: list[str], capsys: pytest.CaptureFixture[str], *words: str) -> str:
    """Run the CLI: it must fail with one line naming ``words``, and no traceback."""
    rc = main(argv)
    err = capsys.readouterr().err
    assert rc == 1, err
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith("streamdet ") and "Traceback" not in err
    for w in words:
        assert w in err, err
    return err


def _hidden(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.startswith("."))


# ------------------------------------------------------------- item 3: what is replaced

@pytest.mark.parametrize("overwrite", [[], ["--overwrite"]], ids=["plain", "overwrite"])
@pytest.mark.parametrize("option", ["-o", "--regions"])
def test_a_directory_is_never_replaced(fits_2d: FitsCase, tmp_path: Path, no_detect: None,
                                       capsys: pytest.CaptureFixture[str], option: str,
                                       overwrite: list[str]) -> None:
    results = tmp_path / "results"
    results.mkdir()
    (results / "precious.txt").write_text("keep me")
    argv = (["detect", str(fits_2d.path), "-o", str(results), "--format", "ecsv"]
            if option == "-o" else
            ["detect", str(fits_2d.path), "-o", str(tmp_path / "c.ecsv"), "--regions",
             str(results)])
    _refused([*argv, *overwrite], capsys, str(results), "directory")
    assert (results / "precious.txt").read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == [fits_2d.path.name, "results"]


def test_the_input_fits_is_never_replaced(fits_2d: FitsCase, tmp_path: Path,
                                          no_detect: None,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    before = fits_2d.path.read_bytes()
    _refused(["detect", str(fits_2d.path), "-o", str(fits_2d.path), "--overwrite"], capsys,
             str(fits_2d.path), "is the input")
    link = tmp_path / "link.fits"  # a link to the input, or the input under another name
    link.symlink_to(fits_2d.path)
    _refused(["detect", str(fits_2d.path), "-o", str(link), "--overwrite"], capsys,
             "is the input")
    _refused(["detect", str(link), "-o", str(fits_2d.path), "--overwrite"], capsys,
             "is the input")
    assert fits_2d.path.read_bytes() == before and link.is_symlink()
    # the primary beam and the model are inputs too
    pb = tmp_path / "pb.fits"
    pb.write_bytes(before)
    _refused(["detect", str(fits_2d.path), "-o", str(pb), "--pb", str(pb), "--overwrite"],
             capsys, "is the input")
    _refused(["detect", str(fits_2d.path), "-o", str(tmp_path / "c.txt"), "--regions", str(pb),
              "--pb", str(pb), "--overwrite"], capsys, "is the input")
    assert pb.read_bytes() == before
    assert _hidden(tmp_path) == []


def test_the_input_store_is_never_replaced(fits_2d: FitsCase, tmp_path: Path, no_detect: None,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    store = tmp_path / "in.zarr"
    convert(fits_2d.path, store, chunks=128, quiet=True)
    files = sorted(str(p.relative_to(store)) for p in store.rglob("*"))
    for extra in ([], ["--overwrite"]):
        _refused(["detect", str(store), "-o", str(store), "--format", "ecsv", *extra], capsys,
                 str(store), "is the input")
    assert sorted(str(p.relative_to(store)) for p in store.rglob("*")) == files
    assert info(store).complete


def _device_node(path: Path) -> None:
    os.mknod(path, 0o600 | stat.S_IFCHR, os.makedev(1, 3))  # a copy of /dev/null's node


def test_devices_pipes_and_sockets_are_never_replaced(fits_2d: FitsCase, tmp_path: Path,
                                                      no_detect: None,
                                                      capsys: pytest.CaptureFixture[str]
                                                      ) -> None:
    fifo = tmp_path / "pipe.txt"
    os.mkfifo(fifo)
    sock_path = tmp_path / "sock.txt"
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(sock_path))
    specials = {fifo: "named pipe", sock_path: "socket"}
    node = tmp_path / "full.txt"
    if os.geteuid() == 0:  # as root: a device node of our own (never one under /dev)
        _device_node(node)
        specials[node] = "device"
    try:
        for path, kind in specials.items():
            for option in ("-o", "--regions"):
                argv = ["detect", str(fits_2d.path), "-o", str(path), "--overwrite"]
                if option == "--regions":
                    argv = ["detect", str(fits_2d.path), "-o", str(tmp_path / "c.txt"),
                            "--regions", str(path), "--overwrite"]
                _refused(argv, capsys, str(path), kind, "never replaced")
            with pytest.raises(OutputExistsError, match=kind):
                write_catalogue(sky_table(), path, overwrite=True)
            with pytest.raises(OutputExistsError, match=kind):
                write_regions(sky_table(), path, overwrite=True)
        assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
        assert stat.S_ISSOCK(os.lstat(sock_path).st_mode)
        if node in specials:
            assert stat.S_ISCHR(os.lstat(node).st_mode)
    finally:
        sock.close()
    assert not (tmp_path / "c.txt").exists() and _hidden(tmp_path) == []


def test_a_regular_file_is_replaced_with_overwrite(fits_2d: FitsCase, tmp_path: Path,
                                                   fake_detect: None,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    out, reg = tmp_path / "cat.txt", tmp_path / "cat.reg"
    out.write_text("old")
    reg.write_text("old")
    _refused(["detect", str(fits_2d.path), "-o", str(out), "--regions", str(reg), "-q"],
             capsys, str(out), "exists")
    assert main(["detect", str(fits_2d.path), "-o", str(out), "--regions", str(reg), "-q",
                 "--overwrite"]) == 0
    assert len(read_sdc1(out)) == len(sky_table())
    assert reg.read_text().startswith("# Region file format: DS9")
    assert _hidden(tmp_path) == []
    # a link is replaced by the file (what it pointed to is left alone)
    other = tmp_path / "other.txt"
    other.write_text("elsewhere")
    link = tmp_path / "link.txt"
    link.symlink_to(other)
    assert main(["detect", str(fits_2d.path), "-o", str(link), "-q", "--overwrite"]) == 0
    assert not link.is_symlink() and other.read_text() == "elsewhere"


def test_regions_and_catalogue_must_differ(fits_2d: FitsCase, tmp_path: Path, no_detect: None,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cat.ecsv"
    _refused(["detect", str(fits_2d.path), "-o", str(out), "--regions", str(out)], capsys,
             "--regions", str(out))
    assert not out.exists()


def test_the_api_refuses_directories(tmp_path: Path) -> None:
    d = tmp_path / "d"
    d.mkdir()
    (d / "keep").write_text("x")
    for write in (write_catalogue, write_regions):
        with pytest.raises(OutputExistsError, match="is a directory"):
            write(sky_table(), d, overwrite=True)
    with pytest.raises(OutputExistsError, match="is a directory"):
        with atomic_path(d, overwrite=True) as tmp:
            tmp.write_text("never")
    assert (d / "keep").read_text() == "x" and _hidden(tmp_path) == []
    with pytest.raises(StreamdetValueError, match="is the input"):
        check_output(d / "keep", overwrite=True, inputs=[d / "keep"])
    # a store's writer decides about its directory itself
    assert check_output(d, overwrite=True, store=True) == d


def test_convert_still_replaces_its_own_store(fits_2d: FitsCase, tmp_path: Path) -> None:
    store = tmp_path / "s.zarr"
    convert(fits_2d.path, store, chunks=128, quiet=True)
    with pytest.raises(OutputExistsError):
        convert(fits_2d.path, store, chunks=128, quiet=True)
    convert(fits_2d.path, store, chunks=64, quiet=True, overwrite=True)
    assert info(store).complete and info(store).chunks[-1] == 64
    fifo = tmp_path / "f.zarr"
    os.mkfifo(fifo)
    with pytest.raises(OutputExistsError, match="named pipe"):
        convert(fits_2d.path, fifo, quiet=True, overwrite=True)
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)


# ------------------------------------------------------ item 2: one writer per output

_SLOW_DETECT = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    sys.path.insert(0, sys.argv[1])
    import importlib
    from test_hardening_outputs import sky_table
    release = Path(sys.argv[2])

    def slow(*args, **kwargs):
        print("detecting", flush=True)
        while not release.exists():
            time.sleep(0.01)
        return sky_table(9, seed=1)

    importlib.import_module("streamdet.engine.detect").detect = slow
    from streamdet.cli import main
    sys.exit(main(sys.argv[3:]))
""")


def _start_detect(argv: list[str], release: Path) -> subprocess.Popen[str]:
    """A CLI ``detect`` in another process whose detection waits for ``release``."""
    return subprocess.Popen([sys.executable, "-c", _SLOW_DETECT, str(ROOT / "tests"),
                             str(release), *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=ROOT)


@pytest.mark.parametrize("second", [[], ["--overwrite"]], ids=["same", "overwrite"])
def test_second_detect_onto_one_catalogue_is_refused_at_once(
        fits_2d: FitsCase, tmp_path: Path, no_detect: None,
        capsys: pytest.CaptureFixture[str], second: list[str]) -> None:
    out, release = tmp_path / "cat.txt", tmp_path / "release"
    first = _start_detect(["detect", str(fits_2d.path), "-o", str(out), "-q"], release)
    try:
        assert first.stdout is not None and first.stdout.readline().strip() == "detecting"
        owner = read_owner(lock_path(out))
        assert owner is not None and owner.pid == first.pid  # held while it detects
        t0 = time.monotonic()
        err = _refused(["detect", str(fits_2d.path), "-o", str(out), "-q", *second], capsys,
                       f"pid {first.pid}", "being written")
        assert time.monotonic() - t0 < 2.0 and "lock file" in err
        assert first.poll() is None
    finally:
        release.touch()
        _, first_err = first.communicate(timeout=120)
    assert first.returncode == 0, first_err
    assert len(read_sdc1(out)) == 9  # the first writer's catalogue, whole
    assert _hidden(tmp_path) == []


def test_regions_of_a_running_detect_are_locked_too(fits_2d: FitsCase, tmp_path: Path,
                                                    no_detect: None,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    out, reg, release = tmp_path / "a.txt", tmp_path / "a.reg", tmp_path / "release"
    first = _start_detect(["detect", str(fits_2d.path), "-o", str(out), "--regions", str(reg),
                           "-q"], release)
    try:
        assert first.stdout is not None and first.stdout.readline().strip() == "detecting"
        _refused(["detect", str(fits_2d.path), "-o", str(tmp_path / "b.txt"), "--regions",
                  str(reg), "-q"], capsys, str(reg), f"pid {first.pid}")
    finally:
        release.touch()
        first.communicate(timeout=120)
    assert first.returncode == 0 and reg.is_file()
    assert not (tmp_path / "b.txt").exists()


def test_a_file_that_appears_meanwhile_is_not_replaced(tmp_path: Path) -> None:
    out = tmp_path / "cat.txt"
    with pytest.raises(OutputExistsError, match="appeared while it was being written"):
        with atomic_path(out) as tmp:
            tmp.write_text("mine")
            out.write_text("theirs")  # another program, which takes no lock
    assert out.read_text() == "theirs" and _hidden(tmp_path) == []


def test_writing_is_reentrant_in_its_thread_only(tmp_path: Path) -> None:
    out = tmp_path / "cat.ecsv"
    errors: list[BaseException] = []

    def other_thread() -> None:
        try:
            write_catalogue(sky_table(), out, format="ecsv", overwrite=True)
        except BaseException as exc:
            errors.append(exc)

    with writing(out):
        with writing(out):  # the command's lock, then the writer's: no deadlock
            write_catalogue(sky_table(), out, format="ecsv")
        t = threading.Thread(target=other_thread)
        t.start()
        t.join()
    assert len(errors) == 1 and isinstance(errors[0], OutputLockedError)
    assert len(Table.read(out, format="ascii.ecsv")) == len(sky_table())
    assert not lock_path(out).exists()


# ---------------------------------------------------- item 4: temporary files, killed

_SLOW_WRITE = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, sys.argv[1])
    import streamdet.catalogue.outputs as outputs
    from test_hardening_outputs import sky_table

    slices = outputs._row_slices

    def slow(n, rows):
        for i, part in enumerate(slices(n, 1)):  # one row at a time
            yield part
            if i == 0:
                print("writing", flush=True)
                time.sleep(60)

    outputs._row_slices = slow
    kind, path = sys.argv[2], sys.argv[3]
    if kind == "regions":
        outputs.write_regions(sky_table(50), path)
    else:
        outputs.write_catalogue(sky_table(50), path, format=kind)
""")


@pytest.mark.parametrize("kind,name", [("sdc1", "cat.txt"), ("ecsv", "cat.ecsv"),
                                       ("fits", "cat.fits"), ("parquet", "cat.parquet"),
                                       ("regions", "cat.reg")])
def test_killed_writer_leaves_one_temp_which_the_next_removes(tmp_path: Path, kind: str,
                                                              name: str) -> None:
    if kind == "parquet":
        pytest.importorskip("pyarrow")
    out = tmp_path / name
    proc = subprocess.Popen([sys.executable, "-c", _SLOW_WRITE, str(ROOT / "tests"), kind,
                             str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=ROOT)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "writing"
        temp = temp_path(out, proc.pid)
        # one temporary name for the output (no nested temporaries), and the lock
        assert _hidden(tmp_path) == sorted([temp.name, f".{name}.lock"])
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
    assert not out.exists() and temp.exists()  # what a SIGKILL leaves
    if kind == "regions":
        write_regions(sky_table(50), out)
    else:
        write_catalogue(sky_table(50), out, format=kind)  # type: ignore[arg-type]
    assert _hidden(tmp_path) == []  # the stale temporary and lock are gone
    if kind == "sdc1":
        assert len(read_sdc1(out)) == 50


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_stale_temp_rules(tmp_path: Path) -> None:
    """Removed: this output's temporaries whose pid is dead, and old ones named as by
    earlier versions; kept: a live writer's, young legacy ones, other outputs'."""
    out = tmp_path / "cat.txt"
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        dead = _dead_pid()
        old = time.time() - 2 * _atomic.LEGACY_TEMP_AGE_S
        gone = [temp_path(out, dead), tmp_path / ".cat.txt.abcd_123.tmp",
                tmp_path / "..cat.txt.k2j4h5g6.tmp.zz81yq0p.tmp"]
        kept = [temp_path(out, live.pid), tmp_path / ".cat.txt.young123.tmp",
                temp_path(tmp_path / "other.txt", dead), tmp_path / ".cat.txt.lockx",
                tmp_path / ".cat.txt.12.tmp.bak", tmp_path / ".cat.txt.x.y.tmp"]
        for p in gone + kept:
            p.write_text("partial")
        for p in gone[1:]:
            os.utime(p, (old, old))
        stale_dir = temp_path(out, _dead_pid())  # a writer may have written a directory
        stale_dir.mkdir()
        (stale_dir / "part").write_text("x")
        assert sorted(remove_stale_temps(out)) == sorted([*gone, stale_dir])
        assert all(p.exists() for p in kept)
        write_catalogue(sky_table(), out)
        assert all(p.exists() for p in kept)
    finally:
        live.kill()
        live.wait()


def test_the_same_output_twice_in_one_thread_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "cat.txt"
    with atomic_path(out) as tmp:
        tmp.write_text("first")
        with pytest.raises(StreamdetValueError, match="already being written"):
            with atomic_path(out):
                pass  # pragma: no cover
    assert out.read_text() == "first" and _hidden(tmp_path) == []
