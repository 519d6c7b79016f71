"""Input and output: FITS images and cubes, their Zarr stores, and safe writes.

``open_image`` opens a FITS file or a Zarr store (2D image or 3D cube) as an
:class:`Image`; ``convert`` writes a FITS file into a chunked Zarr store and ``verify``
checks one. Outputs of every stage are written under a lock, atomically (``_atomic``,
``_lock``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_names

if TYPE_CHECKING:
    from .convert import DEFAULT_CHUNKS_CUBE, DEFAULT_CHUNKS_IMAGE, ConvertReport, convert, verify
    from .image import Image, NoCelestialWCSWarning, StoreInfo, info, open_image

__all__ = [
    "DEFAULT_CHUNKS_CUBE",
    "DEFAULT_CHUNKS_IMAGE",
    "ConvertReport",
    "Image",
    "NoCelestialWCSWarning",
    "StoreInfo",
    "convert",
    "info",
    "open_image",
    "verify",
]

# public name -> the submodule defining it
_LAZY = {
    "Image": "image",
    "NoCelestialWCSWarning": "image",
    "StoreInfo": "image",
    "info": "image",
    "open_image": "image",
    "ConvertReport": "convert",
    "DEFAULT_CHUNKS_CUBE": "convert",
    "DEFAULT_CHUNKS_IMAGE": "convert",
    "convert": "convert",
    "verify": "convert",
}
lazy_names(__name__, _LAZY)
