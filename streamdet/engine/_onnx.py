"""ONNX Runtime helpers: execution providers, session creation, forward passes, metadata.

The only module of streamdet that creates ``onnxruntime.InferenceSession`` objects.
Devices (``"auto"``, ``"cpu"``, ``"cuda:1"``...) are resolved to providers by
:mod:`streamdet.engine._providers`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import onnxruntime as ort
from numpy.typing import NDArray

from ..errors import InvalidModelError, StreamdetFileNotFoundError, StreamdetValueError
from ._providers import (
    CUDA,
    TENSORRT,
    DeviceUnavailableError,
    available_providers,
    parse_device,
    provider_options,
    resolve_device,
)

__all__ = ["available_providers", "bound_device", "default_providers", "make_session",
           "open_session", "read_metadata", "run_session"]


def default_providers() -> list[str]:
    """The providers of ``device="auto"``: CUDA then CPU when CUDA is available, else CPU."""
    return resolve_device("auto")[0]


def _choose(providers: Sequence[str] | None, device: str | None
            ) -> tuple[list[str], list[dict[str, str]], str, str | None]:
    """Providers, their options, a description and the device kind asked for (or None)."""
    if providers is not None:
        if device is not None and (parse_device(device) != ("auto", None)):
            raise StreamdetValueError(
                f"give either providers ({list(providers)}) or device ({device!r}), not both")
        chosen = _check_providers(providers)
        return chosen, [{} for _ in chosen], f"{chosen[0]} (providers given: {chosen})", None
    kind, index = parse_device("auto" if device is None else device)
    chosen, description = resolve_device("auto" if device is None else device)
    return chosen, provider_options(chosen, index), description, kind


def _check_providers(providers: Sequence[str]) -> list[str]:
    have = available_providers()
    chosen = list(providers)
    if not chosen:
        raise StreamdetValueError("providers is empty; give at least one execution provider")
    missing = [p for p in chosen if p not in have]
    if missing:
        raise StreamdetValueError(
            f"execution provider(s) {missing} not available in this onnxruntime build; "
            f"available: {have}")
    return chosen


def make_session(path: str | os.PathLike[str], *, providers: Sequence[str] | None = None,
                 threads: int | None = None, device: str | None = None
                 ) -> ort.InferenceSession:
    """Create an ONNX Runtime session for the model file ``path``.

    :func:`open_session` without the description.
    """
    return open_session(path, providers=providers, threads=threads, device=device)[0]


def open_session(path: str | os.PathLike[str], *, providers: Sequence[str] | None = None,
                 threads: int | None = None, device: str | None = None
                 ) -> tuple[ort.InferenceSession, str]:
    """Create an ONNX Runtime session for the model file ``path`` on a device.

    Parameters
    ----------
    path : path-like
        ONNX file.
    providers : sequence of str, optional
        Execution providers in order of preference (no provider options). Given
        together with a ``device`` other than ``"auto"``, refused.
    threads : int, optional
        Intra-op threads of one forward pass (``intra_op_num_threads``); default lets
        onnxruntime use every core.
    device : str, optional
        ``"auto"`` (the default, also for None), ``"cpu"``, ``"cuda[:K]"``,
        ``"tensorrt[:K]"``; see :mod:`streamdet.engine._providers`.

    Returns
    -------
    session : onnxruntime.InferenceSession
    description : str
        One line: the provider that runs the model first, and why it was chosen; notes a
        fallback to the CPU where ``auto`` found a GPU provider that could not start.

    Raises
    ------
    StreamdetFileNotFoundError
        ``path`` does not exist.
    DeviceUnavailableError
        ``cuda``/``tensorrt`` asked for and its provider is missing from this onnxruntime
        build, or present but could not start (ONNX Runtime fell back to the CPU).
    StreamdetValueError
        Bad ``threads`` or ``device``; both ``providers`` and ``device`` given.
    InvalidModelError
        The file is not a model onnxruntime can load.
    """
    p = os.fspath(path)
    if not os.path.isfile(p):
        raise StreamdetFileNotFoundError(f"model file {p!r} does not exist")
    if threads is not None and (not isinstance(threads, int) or threads < 1):
        raise StreamdetValueError(f"threads must be a positive integer, got {threads!r}")
    chosen, options, description, kind = _choose(providers, device)
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Idle intra-op threads sleep instead of spinning: the engine's other threads
    # (reading, decompressing, decoding) share the same cores between forward passes.
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    # Memory patterns pre-plan one block per input shape; tiles come in several shapes
    # (image edges), so the planned blocks pile up in the arena (~400 MB for 4 tiles of
    # 672^2 against ~250 MB without, at the same speed).
    opts.enable_mem_pattern = False
    if threads is not None:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    try:
        session = ort.InferenceSession(p, sess_options=opts, providers=chosen,
                                       provider_options=options)
    except Exception as exc:  # onnxruntime raises several unrelated exception types
        raise InvalidModelError(f"{p!r} is not a valid ONNX model, or ONNX Runtime cannot "
                                f"load it with providers {chosen}: {exc}") from exc
    active = list(session.get_providers())
    if active and active[0] != chosen[0]:
        # onnxruntime-gpu falls back silently when the CUDA provider cannot start
        # (no driver, missing CUDA/cuDNN libraries): refuse where a GPU was asked for.
        if kind in ("cuda", "tensorrt"):
            libs = "CUDA 12 / cuDNN 9" + (" / TensorRT" if kind == "tensorrt" else "")
            raise DeviceUnavailableError(
                f"device {device!r}: ONNX Runtime offers {chosen[0]} but could not start it "
                f"and fell back to {active[0]} (is there a GPU, its driver, and the {libs} "
                f"libraries onnxruntime-gpu {ort.__version__} needs?)")
        description = (f"{active[0]} ({description.split(' (', 1)[-1].rstrip(')')}; "
                       f"{chosen[0]} could not start, fell back to {active[0]})")
    return session, description


def bound_device(session: ort.InferenceSession) -> tuple[str, int] | None:
    """Where to bind a session's input and output: ``("cuda", K)``, or None (the CPU).

    A session whose first active provider is CUDA or TensorRT takes its tensors on GPU
    ``K`` (its ``device_id`` option) through I/O binding; any other runs plainly.
    """
    active = session.get_providers()
    if not active or active[0] not in (CUDA, TENSORRT):
        return None
    options = session.get_provider_options().get(active[0], {})
    return "cuda", int(options.get("device_id", 0) or 0)


def run_session(session: ort.InferenceSession, input_name: str, output_name: str,
                x: NDArray[np.float32], *, bind: tuple[str, int] | None = None
                ) -> NDArray[np.float32]:
    """One forward pass of a single-input, single-output model.

    Parameters
    ----------
    session : onnxruntime.InferenceSession
    input_name, output_name : str
        Graph input and output names.
    x : (N, 1, *spatial) float32, C-contiguous
        The input batch, host memory.
    bind : ("cuda", K), optional
        With a GPU session (see :func:`bound_device`): copy ``x`` once onto GPU ``K`` as
        an ``OrtValue``, bind it and let ONNX Runtime allocate the output on the same
        GPU (``session.io_binding()``), then copy the output back. Without: plain
        ``session.run``, which stages both through host buffers of its own.

    Returns
    -------
    (N, K, *grid) float32 array
        The output, host memory.
    """
    if bind is None:
        out = session.run([output_name], {input_name: x})[0]
        return np.asarray(out, np.float32)
    kind, index = bind
    binding = session.io_binding()
    binding.bind_ortvalue_input(input_name, ort.OrtValue.ortvalue_from_numpy(x, kind, index))
    binding.bind_output(output_name, kind, index)
    session.run_with_iobinding(binding)
    return np.asarray(binding.copy_outputs_to_cpu()[0], np.float32)


def read_metadata(session: ort.InferenceSession) -> dict[str, str]:
    """Return the model's ``metadata_props`` as a ``{key: value}`` dict."""
    return dict(session.get_modelmeta().custom_metadata_map)
