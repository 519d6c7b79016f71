"""ONNX Runtime helpers: execution providers, session creation, metadata.

The only module of streamdet that creates ``onnxruntime.InferenceSession`` objects.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import onnxruntime as ort

from .errors import InvalidModelError, StreamdetFileNotFoundError, StreamdetValueError

__all__ = ["available_providers", "default_providers", "make_session", "read_metadata"]

_CPU = "CPUExecutionProvider"
_CUDA = "CUDAExecutionProvider"


def available_providers() -> list[str]:
    """Execution providers this onnxruntime build offers."""
    return list(ort.get_available_providers())


def default_providers() -> list[str]:
    """``["CUDAExecutionProvider", "CPUExecutionProvider"]`` when CUDA is available, else CPU."""
    return [_CUDA, _CPU] if _CUDA in available_providers() else [_CPU]


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
                 threads: int | None = None) -> ort.InferenceSession:
    """Create an ONNX Runtime session for the model file ``path``.

    Parameters
    ----------
    path : path-like
        ONNX file.
    providers : sequence of str, optional
        Execution providers in order of preference; default :func:`default_providers`.
    threads : int, optional
        Intra-op threads of one forward pass (``intra_op_num_threads``); default lets
        onnxruntime use every core.

    Returns
    -------
    onnxruntime.InferenceSession

    Raises
    ------
    StreamdetFileNotFoundError
        ``path`` does not exist.
    InvalidModelError
        The file is not a model onnxruntime can load.
    """
    p = os.fspath(path)
    if not os.path.isfile(p):
        raise StreamdetFileNotFoundError(f"model file {p!r} does not exist")
    if threads is not None and (not isinstance(threads, int) or threads < 1):
        raise StreamdetValueError(f"threads must be a positive integer, got {threads!r}")
    chosen = _check_providers(default_providers() if providers is None else providers)
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
        return ort.InferenceSession(p, sess_options=opts, providers=chosen)
    except Exception as exc:  # onnxruntime raises several unrelated exception types
        raise InvalidModelError(f"{p!r} is not a valid ONNX model, or ONNX Runtime cannot "
                                f"load it with providers {chosen}: {exc}") from exc


def read_metadata(session: ort.InferenceSession) -> dict[str, str]:
    """Return the model's ``metadata_props`` as a ``{key: value}`` dict."""
    return dict(session.get_modelmeta().custom_metadata_map)
