"""Running the detection graph on a Dask cluster: start or join one, one ONNX Runtime
session per worker process, GPUs per worker, and a clear error when the workers are gone.

- :func:`open_client`: a ``distributed.LocalCluster`` of N worker processes on this
  machine (loopback only), or a client of an existing scheduler (an address or a
  scheduler file); with ``gpus``, one worker per GPU, each pinned to its own.
- :class:`SharedModel`: a :class:`~streamdet.engine.contract.Model` that pickles to a reference
  resolved, on the process that unpickles it, through a per-process cache
  (:func:`worker_model`): however often the model is shipped between workers, each
  process opens one ONNX Runtime session per model file and setting, once.
- :func:`compute`: computes one key of a graph on the cluster and gathers only its
  result; while waiting it watches the workers and raises :class:`NoWorkersError`
  (naming the scheduler) when none has been left for ``worker_timeout`` seconds, and
  turns the cluster's own failures (a task that killed its workers too often, a lost
  scheduler) into :class:`ClusterError`. Lost workers are otherwise the scheduler's
  business: it recomputes what they held on the others (every task of the graph is
  pure: the same inputs give the same bytes, part files included).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from distributed.diagnostics.plugin import SchedulerPlugin, WorkerPlugin

from ..errors import StreamdetError, StreamdetValueError
from .contract import Model, load_model

__all__ = ["ClusterError", "GPUPlugin", "NoWorkersError", "SharedModel", "WindowCounter",
           "compute",
           "describe", "open_client", "parse_gpus", "shared_model", "total_threads",
           "worker_memory", "worker_model"]


class ClusterError(StreamdetError, RuntimeError):
    """The Dask cluster failed the run (unreachable scheduler, workers killed by a task)."""


class NoWorkersError(ClusterError):
    """Every worker of the cluster is gone (none came back within the timeout)."""


# ----------------------------------------------------------------- one session per process

_CACHE: dict[tuple[Any, ...], SharedModel] = {}
_CACHE_LOCK = threading.Lock()
_ASSIGNED_GPU: int | None = None  # set on a worker by GPUPlugin


class SharedModel(Model):
    """A model whose pickled form is a reference into the unpickling process's cache.

    Unpickled on a worker, it resolves through :func:`worker_model`: the process's one
    instance for that file (path, size, mtime) and setting, whose ONNX Runtime session
    is created once and shared by every task and thread of the process.
    """

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return worker_model, (model_spec(self),)


def model_spec(model: Model, device: str | None = None) -> tuple[Any, ...]:
    """What identifies a model's session: file (resolved path, size, mtime), providers,
    threads, device (``device``, else the model's), dimensionality."""
    path = Path(model.path).resolve()
    try:
        st = path.stat()
        stamp: tuple[int, int] = (st.st_size, st.st_mtime_ns)
    except OSError:
        stamp = (-1, -1)
    return (str(path), stamp, model.providers, model.threads,
            model.device if device is None else device, model.contract.ndim)


def _pinned(device: str) -> str:
    """``device`` on this worker's GPU (set by :class:`GPUPlugin`), where it names a GPU
    kind without an index."""
    if _ASSIGNED_GPU is None or ":" in device:
        return device
    kind = device.strip().lower()
    if kind == "auto":
        kind = "cuda"
    if kind in ("cuda", "tensorrt"):
        return f"{kind}:{_ASSIGNED_GPU}"
    return device


def worker_model(spec: tuple[Any, ...]) -> SharedModel:
    """This process's model for ``spec`` (see :func:`model_spec`), opened on first use.

    Parameters
    ----------
    spec : tuple
        ``(path, (size, mtime_ns), providers, threads, device, ndim)``.
    """
    path, _stamp, providers, threads, device, ndim = spec
    device = _pinned(device)
    key = (*spec[:4], device, ndim)
    with _CACHE_LOCK:
        found = _CACHE.get(key)
        if found is None:
            m = load_model(path, ndim=ndim, providers=providers, threads=threads, device=device)
            found = SharedModel(m.path, m.contract, providers=providers, threads=threads,
                                session=m.session, device=device,
                                device_description=m.device_description)
            _CACHE[key] = found
        return found


def shared_model(model: Model, *, device: str | None = None) -> SharedModel:
    """``model`` as a :class:`SharedModel` (on ``device``, else the model's): passed to
    tasks, each worker resolves it to its one cached session (the copy here opens none
    unless it is run)."""
    return SharedModel(model.path, model.contract, providers=model.providers,
                       threads=model.threads, device=model.device if device is None else device)


def shared(model: Model, *, device: str | None = None) -> tuple[Any, ...]:
    """The task that gives each worker its own session of ``model`` (on ``device``, else
    the model's): ``(worker_model, spec)``, run where it is needed."""
    return (worker_model, model_spec(model, device))


def _assigned_gpu() -> int | None:
    """This process's GPU from :class:`GPUPlugin` (for tests, through ``client.run``)."""
    return _ASSIGNED_GPU


def _cache_size() -> int:
    """Sessions held by this process's cache (for tests, through ``client.run``)."""
    return len(_CACHE)


# ----------------------------------------------------------------------------- GPUs

def parse_gpus(text: str | Sequence[int] | None) -> list[int] | None:
    """GPU indices of ``--gpus``: ``"all"`` (every GPU ``nvidia-smi`` lists, or those of
    ``CUDA_VISIBLE_DEVICES``), ``"0,1"``, or None.

    Raises
    ------
    StreamdetValueError
        A malformed list, or ``"all"`` where no GPU is found.
    """
    if text is None:
        return None
    if not isinstance(text, str):
        return [int(g) for g in text]
    text = text.strip().lower()
    if text == "all":
        found = _visible_gpus()
        if not found:
            raise StreamdetValueError(
                "--gpus all: no GPU found (nvidia-smi lists none and CUDA_VISIBLE_DEVICES is "
                "unset); give GPU indices (--gpus 0,1) or leave --gpus out to run on the CPU")
        return found
    try:
        gpus = [int(g) for g in text.split(",") if g.strip()]
    except ValueError:
        gpus = []
    if not gpus or any(g < 0 for g in gpus) or len(set(gpus)) != len(gpus):
        raise StreamdetValueError(f"--gpus {text!r}: give 'all' or distinct GPU indices such "
                                  f"as 0,1")
    return gpus


def _visible_gpus() -> list[int]:
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return list(range(len([g for g in env.split(",") if g.strip()])))
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return []
    try:
        out = subprocess.run([exe, "-L"], capture_output=True, text=True, timeout=20,
                             check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return list(range(sum(1 for line in out.splitlines() if line.startswith("GPU "))))


class GPUPlugin(WorkerPlugin):
    """Pins each worker of a local cluster to one GPU: worker ``k`` (its name) takes
    ``gpus[k % len(gpus)]``; a model whose device names a GPU kind without an index
    (``cuda``, ``tensorrt``; ``auto`` becomes ``cuda``) then runs there.

    Registered as a ``distributed.WorkerPlugin`` by :func:`open_client`.
    """

    name = "streamdet-gpus"

    def __init__(self, gpus: Sequence[int]) -> None:
        self.gpus = [int(g) for g in gpus]

    def setup(self, worker: Any) -> None:
        """Record this worker's GPU in its process."""
        global _ASSIGNED_GPU
        try:
            k = int(worker.name)
        except (TypeError, ValueError):
            k = sum(map(ord, str(worker.name)))
        _ASSIGNED_GPU = self.gpus[k % len(self.gpus)]

    def teardown(self, worker: Any) -> None:
        """Forget this worker's GPU (the plugin was removed)."""
        global _ASSIGNED_GPU
        _ASSIGNED_GPU = None


# ----------------------------------------------------------------------------- clients

def _has_dashboard() -> bool:
    try:
        import bokeh  # noqa: F401  (the dashboard needs it)
    except ImportError:
        return False
    return True


@contextlib.contextmanager
def open_client(*, workers: int | None = None, scheduler: str | os.PathLike[str] | None = None,
                gpus: Sequence[int] | None = None, threads_per_worker: int | None = None,
                timeout: float = 60.0) -> Iterator[Any]:
    """A Dask client on a new local cluster of processes, or on an existing scheduler.

    Parameters
    ----------
    workers : int, optional
        Start a ``distributed.LocalCluster`` of this many worker processes (loopback
        only; each under a nanny, which restarts it if it dies), each with
        ``threads_per_worker`` threads (default: the cores divided among the workers,
        at least 1). With ``gpus`` and no ``workers``: one worker per GPU.
    scheduler : str or path, optional
        Join an existing cluster instead: a scheduler address (``tcp://host:8786``) or a
        scheduler file (JSON, as ``dask scheduler --scheduler-file`` writes).
    gpus : sequence of int, optional
        GPU indices; worker ``k`` of a local cluster takes ``gpus[k % len(gpus)]``.
    timeout : float
        Seconds to wait for the scheduler to answer.

    Yields
    ------
    distributed.Client or None
        None when neither ``workers``, ``scheduler`` nor ``gpus`` is given (the caller
        then runs in this process).

    Raises
    ------
    ClusterError
        The scheduler cannot be reached; both ``workers`` and ``scheduler`` given.
    """
    if workers is None and scheduler is None and not gpus:
        yield None
        return
    if workers is not None and scheduler is not None:
        raise StreamdetValueError("give either --workers (a new local cluster) or --scheduler "
                                  "(an existing one), not both")
    if workers is not None and workers < 1:
        raise StreamdetValueError(f"--workers {workers} must be >= 1")
    import distributed

    if scheduler is not None:
        target = os.fspath(scheduler)
        is_file = target.endswith(".json") or os.path.isfile(target)
        try:
            client = (distributed.Client(scheduler_file=target, timeout=timeout)
                      if is_file else distributed.Client(target, timeout=timeout))
        except (OSError, TimeoutError, ValueError) as exc:
            what = f"scheduler file {target!r}" if is_file else f"scheduler {target!r}"
            raise ClusterError(f"cannot reach the Dask {what}: {exc}") from exc
        with client:
            if gpus:
                client.register_plugin(GPUPlugin(gpus))
            yield client
        return
    n = workers if workers is not None else len(gpus or ())
    cores = os.cpu_count() or 1
    tpw = threads_per_worker or max(1, cores // n)
    cluster = distributed.LocalCluster(n_workers=n, threads_per_worker=tpw, processes=True,
                                       host="127.0.0.1",
                                       # a free port: the scheduler's HTTP server
                                       # (dashboard, health) never clashes with another
                                       dashboard_address="127.0.0.1:0")
    try:
        with distributed.Client(cluster, timeout=timeout) as client:
            if gpus:
                client.register_plugin(GPUPlugin(gpus))
            yield client
    finally:
        cluster.close()


def describe(client: Any) -> str:
    """One line: the scheduler, the workers and threads, and the dashboard."""
    info = client.nthreads()
    link = getattr(client, "dashboard_link", None) if _has_dashboard() else None
    dash = f"dashboard {link}" if link else "dashboard unavailable (install bokeh)"
    return (f"Dask scheduler {client.scheduler.address}: {len(info)} workers, "
            f"{sum(info.values())} threads; {dash}")


def total_threads(client: Any) -> int:
    """Threads of every worker of the cluster now."""
    return int(sum(client.nthreads().values()))


def worker_memory(client: Any) -> float | None:
    """The smallest worker memory limit per thread, bytes (None where none is set)."""
    try:
        workers = client.scheduler_info(n_workers=-1)["workers"]
    except TypeError:  # older distributed: no n_workers argument
        workers = client.scheduler_info()["workers"]
    per = [w["memory_limit"] / max(1, w["nthreads"]) for w in workers.values()
           if w.get("memory_limit")]
    return min(per) if per else None


class WindowCounter(SchedulerPlugin):
    """Counts, on the scheduler, the distinct keys with a prefix that reached memory
    (the windows of one run: what the client's progress bar shows)."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.name = f"streamdet-progress-{prefix}"
        self.done: set[str] = set()

    def transition(self, key: Any, start: str, finish: str, *args: Any, **kwargs: Any
                   ) -> None:
        """Record a window key that has just been computed."""
        if finish == "memory" and isinstance(key, str) and key.startswith(self.prefix):
            self.done.add(key)


def _count(dask_scheduler: Any, name: str) -> int:
    plugin = dask_scheduler.plugins.get(name)
    return len(plugin.done) if plugin is not None else 0


def _forget(dask_scheduler: Any, name: str) -> None:
    dask_scheduler.plugins.pop(name, None)


def _address(client: Any) -> str:
    try:
        return str(client.scheduler.address)
    except AttributeError:
        return "(unknown address)"


def compute(client: Any, graph: Any, *, worker_timeout: float = 120.0,
            poll: float = 0.5, progress: tuple[str, int] | None = None,
            quiet: bool | None = True) -> Any:
    """Compute one ``Delayed`` on the cluster and gather only its result.

    Parameters
    ----------
    client : distributed.Client
    graph : dask.delayed.Delayed
        The root of the graph.
    worker_timeout : float
        Seconds without any worker after which the run is abandoned (a lost worker is
        otherwise replaced: by its nanny, or by the others taking its tasks).
    poll : float
        Seconds between checks of the workers.
    progress : (str, int), optional
        A key prefix and how many keys have it: a progress bar of those computed (the
        windows), unless ``quiet``.
    quiet : bool or None
        ``False`` or ``None`` shows the bar on a terminal.

    Raises
    ------
    NoWorkersError
        No worker for ``worker_timeout`` seconds.
    ClusterError
        A task killed the workers that ran it too often (``distributed``'s
        ``KilledWorker``), or the scheduler went away.
    """
    import distributed

    from .._progress import progress_bar

    address = _address(client)
    bar = None
    if progress is not None and not quiet:
        bar = progress_bar(total=progress[1], desc="detect", unit="window", quiet=quiet)
        if bar.disable:
            bar = None
        else:
            counter = WindowCounter(progress[0])
            client.register_plugin(counter)
    future = client.compute(graph)
    alone_since: float | None = None
    try:
        while True:
            try:
                distributed.wait(future, timeout=poll)
                break
            except TimeoutError:
                pass
            if bar is not None:
                with contextlib.suppress(Exception):
                    bar.update(client.run_on_scheduler(_count, name=counter.name) - bar.n)
            try:
                n = len(client.nthreads())
            except OSError as exc:
                raise ClusterError(f"lost the Dask scheduler {address}: {exc}") from exc
            if n:
                alone_since = None
                continue
            alone_since = alone_since or time.monotonic()
            if time.monotonic() - alone_since > worker_timeout:
                raise NoWorkersError(
                    f"every Dask worker of the scheduler {address} is gone (none for "
                    f"{worker_timeout:.0f} s); start workers for it, or run without "
                    f"--scheduler/--workers; rerun with --resume to keep the finished windows")
        try:
            return future.result()
        except distributed.client.FutureCancelledError as exc:
            raise ClusterError(f"the run was cancelled on the Dask scheduler {address}: "
                               f"{exc}") from exc
        except distributed.scheduler.KilledWorker as exc:
            raise ClusterError(
                f"a task killed every worker that ran it on the Dask scheduler {address} "
                f"({exc}); the workers may lack memory: use fewer threads per worker or a "
                f"smaller --chunk; rerun with --resume to keep the finished windows") from exc
        except distributed.comm.CommClosedError as exc:
            raise ClusterError(f"lost the Dask scheduler {address}: {exc}") from exc
    finally:
        with contextlib.suppress(Exception):
            future.cancel()
        if bar is not None:
            bar.close()
            with contextlib.suppress(Exception):
                client.run_on_scheduler(_forget, name=counter.name)
