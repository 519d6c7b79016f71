"""Training-side tools of streamdet: the PyTorch detector and its ONNX export.

Needs the ``train`` extra (``pip install streamdet[train]``: torch and onnx).
Importing this package does not import torch; its names load on first access.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "Checkpoint",
    "DetectorConfig",
    "ExportVerificationError",
    "YoloCianna",
    "build_contract",
    "export_onnx",
    "load_checkpoint",
    "receptive_field",
    "save_checkpoint",
]

_WHERE = {
    "DetectorConfig": "model",
    "YoloCianna": "model",
    "receptive_field": "model",
    "Checkpoint": "onnx_export",
    "ExportVerificationError": "onnx_export",
    "build_contract": "onnx_export",
    "export_onnx": "onnx_export",
    "load_checkpoint": "onnx_export",
    "save_checkpoint": "onnx_export",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        module = importlib.import_module(f".{_WHERE[name]}", __name__)
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
