"""streamdet: out-of-core deep-learning source finding for SKA-scale radio data."""

from __future__ import annotations

from ._version import __version__
from .contract import Model, ModelContract, load_model
from .convert import ConvertReport, convert, verify
from .detect import detect
from .detections import Detections
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
from .io import Image, StoreInfo, info, open_image
from .score import ScoreResult, score
from .simulate import simulate

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
    "info",
    "load_model",
    "open_image",
    "score",
    "simulate",
    "verify",
]
