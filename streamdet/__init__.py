"""streamdet: out-of-core deep-learning source finding for SKA-scale radio data.

The public names are imported lazily, on first use (``streamdet.convert`` loads zarr and
astropy, ``streamdet.detect`` dask and ONNX Runtime, ``streamdet.simulate`` scipy), so
``import streamdet`` and the command line's ``--help`` / ``--version`` stay fast.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

from ._version import __version__
from .errors import (
    IncompleteStoreError,
    InvalidFITSError,
    InvalidModelError,
    OutputExistsError,
    OutputLockedError,
    StreamdetError,
    StreamdetFileNotFoundError,
    StreamdetValueError,
    StreamdetWarning,
    WCSMissingError,
)

if TYPE_CHECKING:
    from .contract import Model, ModelContract, load_model
    from .convert import ConvertReport, convert, verify
    from .detect import detect
    from .detect_cube import detect_cube
    from .detections import Detections
    from .io import Image, StoreInfo, info, open_image
    from .score import ScoreResult, score
    from .simulate import simulate
    from .simulate_cube import simulate_cube

__all__ = [
    "ConvertReport",
    "Detections",
    "Image",
    "IncompleteStoreError",
    "InvalidFITSError",
    "InvalidModelError",
    "Model",
    "ModelContract",
    "OutputExistsError",
    "OutputLockedError",
    "ScoreResult",
    "StoreInfo",
    "StreamdetError",
    "StreamdetFileNotFoundError",
    "StreamdetValueError",
    "StreamdetWarning",
    "WCSMissingError",
    "__version__",
    "convert",
    "detect",
    "detect_cube",
    "info",
    "load_model",
    "open_image",
    "score",
    "simulate",
    "simulate_cube",
    "verify",
]

# public name -> the submodule defining it
_LAZY = {
    "Model": "contract", "ModelContract": "contract", "load_model": "contract",
    "ConvertReport": "convert", "convert": "convert", "verify": "convert",
    "detect": "detect", "detect_cube": "detect_cube", "Detections": "detections",
    "Image": "io", "StoreInfo": "io", "info": "io", "open_image": "io",
    "ScoreResult": "score", "score": "score", "simulate": "simulate",
    "simulate_cube": "simulate_cube",
}
# functions named like their submodule: ``streamdet.convert`` is the function, as it always
# was, even once the submodule ``streamdet.convert`` has been imported
_SHADOWED = frozenset(name for name, module in _LAZY.items() if name == module)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(__all__) | {k for k in globals() if k.startswith("__")})


class _Package(types.ModuleType):
    """The package module: importing a submodule named like one of its functions (which
    binds the submodule as an attribute of the package) keeps the function there."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _SHADOWED and isinstance(value, types.ModuleType):
            value = getattr(value, name)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
