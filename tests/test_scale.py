"""Scale out (issue 15): a local cluster of processes gives the single-process catalogue
exactly, a worker killed mid-run changes nothing, a run with no worker left fails clearly,
and an interrupted run resumes from its per-window parts, computing only the missing
windows; parts of another model or option are refused.

Small on purpose (CI has 2 cores): one simulated 1024^2 store with 256^2 chunks, the
bundled 560 MHz model, one two-worker process cluster (loopback, no dashboard) shared by
the cluster tests.
"""

from __future__ import annotations

import importlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from astropy.table import Table

import streamdet
from streamdet.cli import main
from streamdet.engine._cluster import NoWorkersError, _cache_size
from streamdet.engine._resume import FINGERPRINT, PartsMismatchError, parts_dir
from streamdet.engine.detect import _auto_chunk, detect
from streamdet.models import default_model

distributed = pytest.importorskip("distributed")
# the module (the package attribute streamdet.engine.detect is the function)
detect_module = importlib.import_module("streamdet.engine.detect")

CHUNK = 256          # 16 windows
SMALL_CHUNK = 128    # 64 windows: long enough a run to kill or interrupt mid-way


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("scale")
    streamdet.simulate(d / "field.fits", size=1024, seed=11, quiet=True)
    streamdet.convert(d / "field.fits", d / "field.zarr", chunks=256, quiet=True)
    return d / "field.zarr"


@pytest.fixture(scope="module")
def reference(store: Path) -> Table:
    """The catalogue computed the ordinary way: one process, threads."""
    return detect(store, chunk=CHUNK)


@pytest.fixture(scope="module")
def reference_small(store: Path) -> Table:
    return detect(store, chunk=SMALL_CHUNK)


@pytest.fixture(scope="module")
def client() -> Iterator[Any]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # cluster start-up chatter is not ours to judge
        cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                           host="127.0.0.1", dashboard_address="127.0.0.1:0")
        c = distributed.Client(cluster)
    try:
        yield c
    finally:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            c.close()
            cluster.close()


def assert_same_table(a: Table, b: Table) -> None:
    """Every column equal, bit for bit (NaN equal to NaN), same order and dtypes."""
    assert a.colnames == b.colnames
    assert len(a) == len(b) > 0
    for name in a.colnames:
        x, y = np.asarray(a[name]), np.asarray(b[name])
        assert x.dtype == y.dtype, name
        assert np.array_equal(x, y, equal_nan=x.dtype.kind == "f"), name


def _worker_pids(client: Any) -> dict[str, int]:
    return dict(client.run(os.getpid))


def _wait_workers(client: Any, n: int, timeout: float = 60.0) -> None:
    t0 = time.monotonic()
    while len(client.nthreads()) < n:
        assert time.monotonic() - t0 < timeout, "the nanny did not restart the worker"
        time.sleep(0.1)


# --- a local cluster of processes --------------------------------------------------------

def test_process_cluster_equals_single_process(store: Path, reference: Table,
                                               client: Any) -> None:
    _wait_workers(client, 2)
    with distributed.get_task_stream(client) as ts:
        got = detect(store, chunk=CHUNK, client=client)
    assert_same_table(got, reference)
    # windows in flight bounded: window p starts only once window p - 2 x threads (in the
    # walk's order) has finished
    img = streamdet.open_image(store)
    model = streamdet.load_model(default_model(freq_hz=560e6, pixel_scale_arcsec=0.6))
    cfg = detect_module._configure(model.contract, (256, 256), chunk=CHUNK, halo=None,
                                   tile=None, batch=None, threshold=None, iou_threshold=None,
                                   split_every=4)
    walk = [w.index for w in detect_module.plan(img.data.data, model, cfg)[0]]
    span: dict[int, tuple[float, float]] = {}
    for task in ts.data:
        key = str(task["key"])
        if key.startswith("window-"):
            (run,) = [s for s in task["startstops"] if s["action"] == "compute"]
            span[int(key.rsplit("-", 1)[1])] = (run["start"], run["stop"])
    assert sorted(span) == sorted(walk)
    inflight = 2 * 2
    for p in range(inflight, len(walk)):
        assert span[walk[p]][0] >= span[walk[p - inflight]][1]
    # one ONNX Runtime session per worker process, whatever the number of tasks
    sessions = client.run(_cache_size)
    assert set(sessions.values()) <= {0, 1} and sum(sessions.values()) >= 1
    # nothing of the run stays on the cluster: only the catalogue came back
    assert not client.who_has()


def test_worker_killed_mid_run(store: Path, reference_small: Table, client: Any,
                               tmp_path: Path) -> None:
    """SIGKILL a worker process once the first windows are done: the nanny restarts it,
    the scheduler recomputes what it held, the catalogue is the same."""
    _wait_workers(client, 2)
    parts = tmp_path / "parts"
    total = (1024 // SMALL_CHUNK) ** 2
    killed: dict[str, Any] = {}

    def killer() -> None:
        t0 = time.monotonic()
        while time.monotonic() - t0 < 60:
            done = len(list(parts.glob("window-*.npz"))) if parts.is_dir() else 0
            if done >= 2:
                busy = [w for w, keys in client.processing().items() if keys]
                pids = _worker_pids(client)
                victim = busy[0] if busy else next(iter(pids))
                killed.update(worker=victim, pid=pids[victim], done_before=done)
                os.kill(pids[victim], signal.SIGKILL)
                return
            time.sleep(0.005)

    thread = threading.Thread(target=killer)
    thread.start()
    got = detect(store, chunk=SMALL_CHUNK, client=client, parts=parts)
    thread.join()
    assert killed, "no worker was killed"
    assert killed["done_before"] < total      # it died mid-run
    assert_same_table(got, reference_small)
    _wait_workers(client, 2)
    assert killed["pid"] not in _worker_pids(client).values()  # a new process took over


def test_every_worker_gone_is_a_clear_error(store: Path, tmp_path: Path) -> None:
    """The only worker is taken away mid-run (its spec removed: no nanny brings it back):
    a clear error naming the scheduler, not a hang."""
    parts = tmp_path / "parts"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                                      host="127.0.0.1",
                                      dashboard_address="127.0.0.1:0") as cluster, \
                distributed.Client(cluster) as c:

            def remove_all() -> None:
                t0 = time.monotonic()
                while time.monotonic() - t0 < 60:
                    if parts.is_dir() and any(parts.glob("window-*.npz")):
                        break
                    time.sleep(0.005)
                cluster.scale(0)

            thread = threading.Thread(target=remove_all)
            thread.start()
            try:
                with pytest.raises(NoWorkersError, match=r"every Dask worker of the scheduler "
                                   r"tcp://127\.0\.0\.1:[0-9]+ is gone") as info:
                    detect(store, chunk=SMALL_CHUNK, client=c, parts=parts,
                           worker_timeout=1.0)
            finally:
                thread.join()
    assert isinstance(info.value, streamdet.StreamdetError)
    assert isinstance(info.value, RuntimeError)
    assert any(parts.glob("window-*.npz"))  # what was done is kept for --resume


def test_chunk_from_the_cluster() -> None:
    # one process: as before (whole storage chunks, >= 1024 px)
    assert _auto_chunk(256, halo=32, tile=512, stride=8, shape=(1024, 1024), nthreads=None,
                       memory_per_thread=None) == 1024
    # 8 threads: at least two windows each
    c = _auto_chunk(256, halo=32, tile=256, stride=8, shape=(2048, 2048), nthreads=8,
                    memory_per_thread=None)
    assert (-(-2048 // c)) ** 2 >= 16 and c % 8 == 0
    # a thread's share of the memory bounds the window
    c = _auto_chunk(2048, halo=32, tile=256, stride=8, shape=(32768, 32768), nthreads=4,
                    memory_per_thread=100e6)
    assert (c + 64) ** 2 * detect_module.WINDOW_BYTES_PER_PX <= 50e6 and c >= 256


# --- resume ------------------------------------------------------------------------------

class _Interrupt(RuntimeError):
    pass


def _counting(monkeypatch: pytest.MonkeyPatch, *, fail_after: int | None = None
              ) -> list[int]:
    """Count the windows actually computed (calls of detect_window); with ``fail_after``,
    every call after that many raises, as an interrupted run."""
    calls: list[int] = []
    lock = threading.Lock()
    real = detect_module.detect_window

    def wrapper(data: Any, window: Any, *args: Any, **kwargs: Any) -> Any:
        with lock:
            calls.append(window.index)
            n = len(calls)
        if fail_after is not None and n > fail_after:
            raise _Interrupt("interrupted")
        return real(data, window, *args, **kwargs)

    monkeypatch.setattr(detect_module, "detect_window", wrapper)
    return calls


def _settled(parts: Path) -> set[str]:
    """The part files once no more appear (threads still running finish their window)."""
    seen: set[str] = set()
    for _ in range(50):
        now = {p.name for p in parts.glob("window-*.npz")}
        if now == seen:
            return now
        seen = now
        time.sleep(0.1)
    return seen


def test_interrupt_then_resume(store: Path, reference_small: Table, tmp_path: Path,
                               monkeypatch: pytest.MonkeyPatch) -> None:
    parts = tmp_path / "parts"
    with monkeypatch.context() as m:
        _counting(m, fail_after=10)
        with pytest.raises(_Interrupt):
            detect(store, chunk=SMALL_CHUNK, parts=parts)
    before = _settled(parts)
    k = len(before)
    total = 64
    assert 0 < k < total
    # one part damaged (a disk that lost it): that window is computed again
    damaged = sorted(before)[0]
    (parts / damaged).write_bytes(b"not a part")
    kept = before - {damaged}
    stamps = {n: (parts / n).stat().st_mtime_ns for n in kept}
    calls = _counting(monkeypatch)
    got = detect(store, chunk=SMALL_CHUNK, parts=parts, resume=True)
    assert_same_table(got, reference_small)
    assert len(calls) == total - k + 1              # only the missing (and damaged) windows
    assert {f"window-{i}.npz" for i in calls} & before == {damaged}
    assert {n: (parts / n).stat().st_mtime_ns for n in kept} == stamps  # reused as is
    assert len(list(parts.glob("window-*.npz"))) == total
    # resumed again: nothing left to compute
    calls.clear()
    assert_same_table(detect(store, chunk=SMALL_CHUNK, parts=parts, resume=True),
                      reference_small)
    assert calls == []


def test_resume_refuses_another_option_or_model(store: Path, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    parts = tmp_path / "parts"
    with monkeypatch.context() as m:
        _counting(m, fail_after=3)
        with pytest.raises(_Interrupt):
            detect(store, chunk=SMALL_CHUNK, parts=parts)
    _settled(parts)
    with pytest.raises(PartsMismatchError, match=r"options\.threshold"):
        detect(store, chunk=SMALL_CHUNK, parts=parts, resume=True, threshold=0.9)
    with pytest.raises(PartsMismatchError, match=r"options\.chunk"):
        detect(store, chunk=CHUNK, parts=parts, resume=True)
    onnx = pytest.importorskip("onnx")
    proto = onnx.load(str(default_model(freq_hz=560e6, pixel_scale_arcsec=0.6)))
    proto.doc_string = "the same network, other bytes"
    other = tmp_path / "other.onnx"
    onnx.save(proto, str(other))
    with pytest.raises(PartsMismatchError, match="model_sha256"):
        detect(store, model=other, chunk=SMALL_CHUNK, parts=parts, resume=True)
    # without resume the old parts are replaced, not mixed in
    detect(store, chunk=SMALL_CHUNK, parts=parts, threshold=0.9)
    stamp = json.loads((parts / FINGERPRINT).read_text())
    assert stamp["options"]["threshold"] == 0.9


# --- the command line --------------------------------------------------------------------

def _cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_workers(store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    one, two = tmp_path / "one.ecsv", tmp_path / "two.ecsv"
    code, _, _ = _cli(["detect", str(store), "-o", str(one), "--chunk", str(CHUNK), "-q"],
                      capsys)
    assert code == 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        code, _, err = _cli(["detect", str(store), "-o", str(two), "--chunk", str(CHUNK),
                               "--workers", "2"], capsys)
    assert code == 0, err
    assert "Dask scheduler tcp://127.0.0.1:" in err and "2 workers" in err
    assert "dashboard" in err
    a, b = Table.read(one), Table.read(two)
    del a.meta["date"], b.meta["date"]
    assert_same_table(a, b)
    assert a.meta == b.meta
    assert not parts_dir(two).exists()   # parts removed once the catalogue is written


def test_cli_killed_then_resume(store: Path, reference_small: Table, tmp_path: Path,
                                capsys: pytest.CaptureFixture[str],
                                monkeypatch: pytest.MonkeyPatch) -> None:
    """SIGKILL a detect command once parts appear, then --resume: the catalogue of an
    uninterrupted run, with only the missing windows computed."""
    out = tmp_path / "cat.ecsv"
    parts = parts_dir(out)
    cmd = [sys.executable, "-m", "streamdet", "detect", str(store), "-o", str(out),
           "--chunk", str(SMALL_CHUNK), "-q", "--threads", "1"]
    proc = subprocess.Popen(cmd)
    try:
        t0 = time.monotonic()
        while time.monotonic() - t0 < 120:
            if parts.is_dir() and len(list(parts.glob("window-*.npz"))) >= 3:
                break
            if proc.poll() is not None:
                pytest.fail(f"detect ended (rc {proc.returncode}) before it could be killed")
            time.sleep(0.002)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not out.exists()
    k = len({p.name for p in parts.glob("window-*.npz")})
    assert 0 < k < 64
    # another option with --resume: refused, naming it; the parts stay
    code, _, err = _cli(["detect", str(store), "-o", str(out), "--chunk", str(SMALL_CHUNK),
                         "--threshold", "0.8", "--resume"], capsys)
    assert code == 1 and "options.threshold" in err and "--resume" in err
    assert len(list(parts.glob("window-*.npz"))) == k
    calls = _counting(monkeypatch)
    code, _, err = _cli(["detect", str(store), "-o", str(out), "--chunk", str(SMALL_CHUNK),
                         "--resume", "--keep-parts", "-q"], capsys)
    assert code == 0, err
    assert len(calls) == 64 - k
    got = Table.read(out)
    ref = reference_small.copy()
    for t in (got, ref):
        t.meta.pop("date", None)
    got.meta.pop("freq_hz", None)
    assert_same_table(got, ref)
    assert len(list(parts.glob("window-*.npz"))) == 64   # kept, as asked
    # the same command without --keep-parts (and --overwrite) removes them at the end
    code, _, err = _cli(["detect", str(store), "-o", str(out), "--chunk", str(SMALL_CHUNK),
                         "--resume", "--overwrite", "-q"], capsys)
    assert code == 0, err
    assert len(calls) == 64 - k                          # everything was reused
    assert not parts.exists()


def test_cli_joins_a_scheduler(store: Path, reference: Table, client: Any, tmp_path: Path,
                               capsys: pytest.CaptureFixture[str]) -> None:
    """--scheduler by address and by scheduler file: the catalogue of one process."""
    _wait_workers(client, 2)
    address = client.scheduler.address
    sched_file = tmp_path / "scheduler.json"
    sched_file.write_text(json.dumps({"type": "Scheduler", "address": address}))
    for i, target in enumerate((address, str(sched_file))):
        out = tmp_path / f"joined{i}.ecsv"
        code, _, err = _cli(["detect", str(store), "-o", str(out), "--chunk", str(CHUNK),
                             "--scheduler", target], capsys)
        assert code == 0, err
        assert f"Dask scheduler {address}: 2 workers" in err
        got = Table.read(out)
        ref = reference.copy()
        for t in (got, ref):
            t.meta.pop("date", None)
        got.meta.pop("freq_hz", None)
        assert_same_table(got, ref)
    assert client.status == "running"   # the cluster is the user's: left as it was


def test_cli_cluster_refusals(store: Path, tmp_path: Path,
                              capsys: pytest.CaptureFixture[str]) -> None:
    out = str(tmp_path / "c.ecsv")
    code, _, err = _cli(["detect", str(store), "-o", out, "--scheduler", "tcp://127.0.0.1:9",
                         "--worker-timeout", "1"], capsys)
    assert code == 1 and "cannot reach the Dask scheduler 'tcp://127.0.0.1:9'" in err
    code, _, err = _cli(["detect", str(store), "-o", out, "--gpus", "0", "--device", "cpu"],
                        capsys)
    assert code == 1 and "--device cpu" in err
    code, _, err = _cli(["detect", str(store), "-o", out, "--gpus", "0,0"], capsys)
    assert code == 1 and "distinct GPU indices" in err
    code, _, err = _cli(["detect", str(store), "-o", out, "--gpus", "0",
                         "--scheduler", "tcp://127.0.0.1:9"], capsys)
    assert code == 1 and "--device cuda instead" in err
    code, _, err = _cli(["detect", str(store), "-o", out, "--workers", "2",
                         "--scheduler", "tcp://127.0.0.1:9"], capsys)
    assert code == 1 and "not both" in err
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        # said at once, before any cluster starts
        t0 = time.monotonic()
        code, _, err = _cli(["detect", str(store), "-o", out, "--gpus", "0"], capsys)
        assert code == 1 and "CUDAExecutionProvider" in err and "streamdet[gpu]" in err
        assert time.monotonic() - t0 < 5
    assert not Path(out).exists() and not parts_dir(out).exists()


def test_gpus_assigned_one_per_worker(client: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """--gpus: each worker of a local cluster records its own GPU, and a model asked for
    on 'cuda' (or 'auto') there opens on that index (no GPU needed to check the plan)."""
    from streamdet.engine import _cluster

    _wait_workers(client, 2)
    client.register_plugin(_cluster.GPUPlugin([3, 5]))
    try:
        got = client.run(_cluster._assigned_gpu)
        names = {w["name"]: addr for addr, w in client.scheduler_info()["workers"].items()}
        assert {got[names[k]] for k in names} == {3, 5}
        assert all(got[names[k]] == [3, 5][int(k) % 2] for k in names)
    finally:
        client.unregister_worker_plugin(_cluster.GPUPlugin.name)
    assert set(client.run(_cluster._assigned_gpu).values()) == {None}
    monkeypatch.setattr(_cluster, "_ASSIGNED_GPU", 1)
    assert _cluster._pinned("cuda") == "cuda:1"
    assert _cluster._pinned("auto") == "cuda:1"
    assert _cluster._pinned("tensorrt") == "tensorrt:1"
    assert _cluster._pinned("cuda:0") == "cuda:0"
    assert _cluster._pinned("cpu") == "cpu"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    assert _cluster.parse_gpus("all") == [0, 1]
    assert _cluster.parse_gpus("1,0") == [1, 0]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    with pytest.raises(streamdet.StreamdetError, match="no GPU found"):
        _cluster.parse_gpus("all")


# --------------------------------------------------------------------------- cubes
def test_cube_on_a_cluster(tmp_path: Path, client: Any,
                           capsys: pytest.CaptureFixture[str]) -> None:
    """A cube's catalogue on the two-process cluster equals the single-process one exactly
    (windows and the 3D tree reduction on the workers, one session per worker per model),
    through the API and through ``streamdet detect --scheduler``."""
    pytest.importorskip("torch")
    from _models3d import make_test_model3d

    from streamdet.sim.simulate_cube import simulate_cube

    model = make_test_model3d(tmp_path / "tiny3d.onnx")
    simulate_cube(tmp_path / "c.fits", shape=(96, 48, 40), seed=4, channel_offset=3000)
    streamdet.convert(tmp_path / "c.fits", tmp_path / "c.zarr", chunks=(32, 16, 16),
                      quiet=True)
    opts: dict[str, Any] = {"model": model, "window": (32, 16, 16), "threshold": 0.3}
    here = streamdet.detect_cube(tmp_path / "c.zarr", **opts)
    there = streamdet.detect_cube(tmp_path / "c.zarr", client=client, **opts)
    assert_same_table(here, there)
    sessions = client.run(_cache_size)
    assert set(sessions.values()) <= {0, 1, 2} and sum(sessions.values()) >= 1
    assert not client.who_has()
    address = client.scheduler.address
    out = tmp_path / "cube.ecsv"
    assert main(["detect", str(tmp_path / "c.zarr"), "-o", str(out), "--model", str(model),
                 "--window", "32,16,16", "--threshold", "0.3", "--scheduler", address]) == 0
    assert "Dask" in capsys.readouterr().err
    assert_same_table(here, Table.read(out))
