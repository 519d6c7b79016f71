"""The detection engine: plan, infer, decode, suppress, merge and measure, in 2D and 3D.

``detect`` finds sources in an image and ``detect_cube`` in an HI cube, chunk by chunk
through a dask graph; ``load_model`` opens an ONNX model with its contract; the boxes,
:class:`Detections`, decoding and NMS / merge stages are shared by both.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_names

if TYPE_CHECKING:
    from .contract import Model, ModelContract, load_model
    from .decode import decode
    from .detect import DetectConfig, detect, detect_pixels
    from .detect_cube import CubeConfig, detect_cube, detect_cube_voxels
    from .detections import Detections
    from .nms import merge, nms, nms_detections

__all__ = [
    "CubeConfig",
    "DetectConfig",
    "Detections",
    "Model",
    "ModelContract",
    "decode",
    "detect",
    "detect_cube",
    "detect_cube_voxels",
    "detect_pixels",
    "load_model",
    "merge",
    "nms",
    "nms_detections",
]

# public name -> the submodule defining it
_LAZY = {
    "Model": "contract",
    "ModelContract": "contract",
    "load_model": "contract",
    "DetectConfig": "detect",
    "detect": "detect",
    "detect_pixels": "detect",
    "CubeConfig": "detect_cube",
    "detect_cube": "detect_cube",
    "detect_cube_voxels": "detect_cube",
    "Detections": "detections",
    "decode": "decode",
    "merge": "nms",
    "nms": "nms",
    "nms_detections": "nms",
}
lazy_names(__name__, _LAZY)
