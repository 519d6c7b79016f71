"""streamdet: out-of-core deep-learning source finding for SKA-scale radio data.

The public names are imported lazily, on first use (``streamdet.convert`` loads zarr and
astropy, ``streamdet.detect`` dask and ONNX Runtime, ``streamdet.simulate`` scipy), so
``import streamdet`` and the command line's ``--help`` / ``--version`` stay fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._lazy import lazy_names
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
    from .catalogue.score import ScoreResult, score
    from .engine.contract import Model, ModelContract, load_model
    from .engine.detect import detect
    from .engine.detect_cube import detect_cube
    from .engine.detections import Detections
    from .io.convert import ConvertReport, convert, verify
    from .io.image import Image, StoreInfo, info, open_image
    from .sim.simulate import simulate
    from .sim.simulate_cube import simulate_cube

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
    "Model": "engine.contract", "ModelContract": "engine.contract",
    "load_model": "engine.contract",
    "ConvertReport": "io.convert", "convert": "io.convert", "verify": "io.convert",
    "detect": "engine.detect", "detect_cube": "engine.detect_cube",
    "Detections": "engine.detections",
    "Image": "io.image", "StoreInfo": "io.image", "info": "io.image", "open_image": "io.image",
    "ScoreResult": "catalogue.score", "score": "catalogue.score",
    "simulate": "sim.simulate", "simulate_cube": "sim.simulate_cube",
}
lazy_names(__name__, _LAZY)
