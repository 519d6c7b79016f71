"""Where a detector runs: ``device`` names to ONNX Runtime execution providers.

``device`` is one of

- ``"auto"`` (the default): the best accelerator present, else the CPU. The order is
  CUDA > CPU; TensorRT is never chosen automatically (see below);
- ``"cpu"``: ONNX Runtime's CPU provider;
- ``"cuda"`` / ``"cuda:K"``: the CUDA provider on GPU ``K`` (default 0), with the CPU
  provider behind it for any node CUDA has no kernel for;
- ``"tensorrt"`` / ``"tensorrt:K"``: TensorRT on GPU ``K``, then CUDA, then the CPU.

Why ``auto`` does not take TensorRT even where it is present: TensorRT compiles one
engine per input shape range before its first forward pass (tens of seconds to minutes
for a detector of this size, repeated in every worker process and whenever a tile of a
new shape, e.g. an image edge, arrives), and it may pick different kernels than CUDA, so
the first windows of a run are slow and results are not bit-identical to CUDA's. It pays
off on long runs with fixed tile shapes; ask for it with ``device="tensorrt"``.

``"cuda"`` and ``"tensorrt"`` are refused with :class:`DeviceUnavailableError` where the
provider is missing from the installed onnxruntime build (the CPU wheel ``onnxruntime``
has neither; the GPU wheel ``onnxruntime-gpu``, ``pip install "streamdet[gpu]"``, has
both, TensorRT needing the TensorRT libraries too).

A GPU index (``"cuda:1"``) pins a session to one GPU through the provider option
``device_id``, so that one worker per GPU can each take its own.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import onnxruntime as ort

from ..errors import StreamdetValueError

__all__ = [
    "CPU",
    "CUDA",
    "DEVICES",
    "TENSORRT",
    "DeviceUnavailableError",
    "available_providers",
    "device_index",
    "parse_device",
    "provider_options",
    "resolve_device",
]

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
TENSORRT = "TensorrtExecutionProvider"

DEVICES = ("auto", "cpu", "cuda", "tensorrt")
"""The device kinds ``device=`` accepts (``cuda``, ``tensorrt`` and ``auto`` take ``:K``)."""

GPU_HINT = ('install the GPU build of ONNX Runtime: pip uninstall onnxruntime && '
            'pip install "streamdet[gpu]" (onnxruntime-gpu, which needs the CUDA 12 and '
            'cuDNN 9 libraries on the machine)')
_TRT_HINT = ("onnxruntime-gpu with the TensorRT libraries (pip install tensorrt, or NVIDIA's "
             "TensorRT on the library path)")
_DEVICE_RE = re.compile(r"^(auto|cpu|cuda|tensorrt)(?::(\d+))?$")


class DeviceUnavailableError(StreamdetValueError):
    """The requested device's execution provider is missing or could not start."""


def available_providers() -> list[str]:
    """Execution providers this onnxruntime build offers (``ort.get_available_providers``)."""
    return list(ort.get_available_providers())


def parse_device(device: str) -> tuple[str, int | None]:
    """Split a device name into its kind and GPU index.

    Parameters
    ----------
    device : str
        ``"auto"``, ``"cpu"``, ``"cuda"``, ``"tensorrt"``, optionally ``":K"`` (a GPU
        index, K >= 0) after ``auto``, ``cuda`` or ``tensorrt``. Case and surrounding
        blanks are ignored.

    Returns
    -------
    kind : str
        One of :data:`DEVICES`.
    index : int or None
        The GPU index, None where none was given.

    Raises
    ------
    StreamdetValueError
        Not a device name, or ``"cpu:K"``.
    """
    if not isinstance(device, str):
        raise StreamdetValueError(f"device must be a string ({', '.join(DEVICES)}, "
                                  f"optionally cuda:K), got {device!r}")
    m = _DEVICE_RE.match(device.strip().lower())
    if m is None:
        raise StreamdetValueError(
            f"unknown device {device!r}; give one of {', '.join(DEVICES)} (a GPU index as "
            f"cuda:1 or tensorrt:1)")
    kind, index = m.group(1), m.group(2)
    if kind == "cpu" and index is not None:
        raise StreamdetValueError(f"device {device!r}: the CPU takes no index; give 'cpu'")
    return kind, None if index is None else int(index)


def device_index(device: str) -> int | None:
    """The GPU index of ``device`` (``"cuda:1"`` -> 1), None where none is given."""
    return parse_device(device)[1]


def _missing(kind: str, provider: str, have: Sequence[str]) -> DeviceUnavailableError:
    hint = GPU_HINT if kind == "cuda" else f"{GPU_HINT}; TensorRT also needs {_TRT_HINT}"
    return DeviceUnavailableError(
        f"device {kind!r} needs ONNX Runtime's {provider}, which this onnxruntime "
        f"{ort.__version__} build lacks (it has {list(have)}); {hint}. "
        f"Use device 'auto' or 'cpu' to run on the CPU")


def resolve_device(device: str = "auto") -> tuple[list[str], str]:
    """The execution providers of a device, and a one-line description of the choice.

    Looks only at the providers the installed onnxruntime offers (no session, no GPU
    call): a CUDA provider that is present but cannot start (no driver, missing CUDA
    libraries) is detected when the session is created
    (:func:`streamdet.engine._onnx.make_session`).

    Parameters
    ----------
    device : str
        See :func:`parse_device`.

    Returns
    -------
    providers : list of str
        Provider names in order of preference, the CPU provider last.
    description : str
        E.g. ``"CPUExecutionProvider (auto: no CUDA provider in this onnxruntime build)"``
        or ``"CUDAExecutionProvider on GPU 1 (device cuda:1)"``.

    Raises
    ------
    DeviceUnavailableError
        ``cuda`` or ``tensorrt`` and its provider is missing (the message names it and
        how to install it).
    StreamdetValueError
        Not a device name.
    """
    kind, index = parse_device(device)
    have = available_providers()
    gpu = f" on GPU {0 if index is None else index}"
    if kind == "cpu":
        return [CPU], f"{CPU} (device cpu)"
    if kind == "cuda":
        if CUDA not in have:
            raise _missing(kind, CUDA, have)
        return [CUDA, CPU], f"{CUDA}{gpu} (device {device.strip().lower()})"
    if kind == "tensorrt":
        if TENSORRT not in have:
            raise _missing(kind, TENSORRT, have)
        chain = [TENSORRT, CUDA, CPU] if CUDA in have else [TENSORRT, CPU]
        return chain, (f"{TENSORRT}{gpu} (device {device.strip().lower()}; nodes it cannot "
                       f"take fall back to {', '.join(chain[1:])})")
    # auto
    if CUDA in have:
        trt = "; TensorRT present but only used with device 'tensorrt'" if TENSORRT in have \
            else ""
        return [CUDA, CPU], f"{CUDA}{gpu} (auto: CUDA provider present{trt})"
    if TENSORRT in have:  # a build with TensorRT but no CUDA provider: not taken by auto
        return [CPU], (f"{CPU} (auto: no CUDA provider in this onnxruntime build; "
                       f"TensorRT is only used with device 'tensorrt')")
    return [CPU], f"{CPU} (auto: no CUDA provider in this onnxruntime build)"


def provider_options(providers: Sequence[str], device_id: int | None) -> list[dict[str, str]]:
    """ONNX Runtime provider options pinning the GPU providers to GPU ``device_id``.

    Parameters
    ----------
    providers : sequence of str
        Provider names.
    device_id : int or None
        GPU index; None leaves every provider's options empty (GPU 0).

    Returns
    -------
    list of dict
        One options dict per provider (``{"device_id": "K"}`` for CUDA and TensorRT).
    """
    if device_id is None:
        return [{} for _ in providers]
    if isinstance(device_id, bool) or not isinstance(device_id, int) or device_id < 0:
        raise StreamdetValueError(f"device_id must be a non-negative integer, got {device_id!r}")
    return [{"device_id": str(device_id)} if p in (CUDA, TENSORRT) else {} for p in providers]
