"""Exceptions raised by streamdet.

Every error subclasses both :class:`StreamdetError` and the matching built-in
exception, so callers can catch either.
"""

from __future__ import annotations

__all__ = [
    "IncompleteStoreError",
    "InvalidFITSError",
    "InvalidModelError",
    "OutputExistsError",
    "OutputLockedError",
    "StreamdetError",
    "StreamdetFileNotFoundError",
    "StreamdetValueError",
    "StreamdetWarning",
    "WCSMissingError",
]


class StreamdetError(Exception):
    """Base class of every error raised by streamdet."""


class StreamdetWarning(UserWarning):
    """Base class of the warnings streamdet emits."""


class StreamdetValueError(StreamdetError, ValueError):
    """An argument or an input has a bad value."""


class StreamdetFileNotFoundError(StreamdetError, FileNotFoundError):
    """An input file or store does not exist."""


class OutputExistsError(StreamdetError, FileExistsError):
    """The output exists and ``overwrite`` was not given."""


class OutputLockedError(StreamdetError, RuntimeError):
    """Another writer holds the output's lock (a store or file being written)."""


class InvalidFITSError(StreamdetValueError):
    """A file is not FITS, is truncated, or holds no usable image HDU."""


class IncompleteStoreError(StreamdetValueError):
    """A Zarr store was not written to the end (an interrupted conversion)."""


class WCSMissingError(StreamdetValueError):
    """An image has no celestial WCS where one is needed."""


class InvalidModelError(StreamdetValueError):
    """An ONNX model is missing, unreadable, or does not carry a valid contract."""
