"""Detectors bundled with streamdet, chosen by the image's frequency and pixel scale."""

from __future__ import annotations

import json
import math
from importlib import resources
from pathlib import Path

from ..errors import InvalidModelError

__all__ = ["bundled_models", "default_model"]

_CONTRACT_KEY = "streamdet.contract"


def _read_contract(path: Path) -> dict[str, object]:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    meta = sess.get_modelmeta().custom_metadata_map
    doc: dict[str, object] = json.loads(meta[_CONTRACT_KEY])
    return doc


def bundled_models() -> list[Path]:
    """Paths of the ONNX detectors shipped inside the package."""
    root = resources.files(__name__)
    return sorted(Path(str(p)) for p in root.iterdir() if str(p).endswith(".onnx"))


def default_model(*, freq_hz: float | None, pixel_scale_arcsec: float | None) -> Path:
    """Pick the bundled model trained nearest the image's frequency and pixel scale.

    A model fits when its pixel scale is within 25% of the image's and its frequency
    within a factor 1.5. Raises :class:`InvalidModelError` when none fits.
    """
    candidates = []
    for path in bundled_models():
        doc = _read_contract(path)
        m_scale = float(doc.get("pixel_scale_arcsec") or 0.0)  # type: ignore[arg-type]
        m_freq = float(doc.get("freq_mhz") or 0.0) * 1e6  # type: ignore[arg-type]
        if pixel_scale_arcsec is not None and m_scale and not (
                0.75 <= pixel_scale_arcsec / m_scale <= 1.25):
            continue
        if freq_hz is not None and m_freq and not (1 / 1.5 <= freq_hz / m_freq <= 1.5):
            continue
        distance = abs(math.log(freq_hz / m_freq)) if freq_hz and m_freq else 0.0
        candidates.append((distance, path))
    if not candidates:
        have = ", ".join(p.name for p in bundled_models()) or "none"
        raise InvalidModelError(
            f"no bundled model fits an image at {freq_hz} Hz with {pixel_scale_arcsec} arcsec "
            f"pixels (bundled: {have}); pass a model with --model")
    return min(candidates)[1]

