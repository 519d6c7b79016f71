"""streamdet: out-of-core deep-learning source finding for SKA-scale radio data."""

from __future__ import annotations

from ._version import __version__
from .convert import ConvertReport, convert, verify
from .errors import (
    IncompleteStoreError,
    InvalidFITSError,
    InvalidModelError,
    OutputExistsError,
    StreamdetError,
    StreamdetFileNotFoundError,
    StreamdetValueError,
    WCSMissingError,
)
from .io import Image, StoreInfo, info, open_image
from .simulate import simulate

__all__ = [
    "ConvertReport",
    "Image",
    "IncompleteStoreError",
    "InvalidFITSError",
    "InvalidModelError",
    "OutputExistsError",
    "StoreInfo",
    "StreamdetError",
    "StreamdetFileNotFoundError",
    "StreamdetValueError",
    "WCSMissingError",
    "__version__",
    "convert",
    "info",
    "open_image",
    "simulate",
    "verify",
]
