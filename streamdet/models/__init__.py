"""Detectors bundled with streamdet, chosen by the image's frequency and pixel scale."""

from __future__ import annotations

import json
import math
import warnings
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import InvalidModelError, StreamdetWarning

if TYPE_CHECKING:
    from ..engine.contract import Model

__all__ = ["FREQ_FACTOR", "SCALE_TOLERANCE", "ModelFitWarning", "bundled_models",
           "check_model_fits", "default_model"]

#: A model fits an image when their frequencies are within this factor of each other...
FREQ_FACTOR = 1.5
#: ... and their pixel scales within this fraction.
SCALE_TOLERANCE = 0.25


class ModelFitWarning(StreamdetWarning):
    """A model runs on an image of another band or pixel scale than it was made for."""

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


def default_model(*, freq_hz: float | None, pixel_scale_arcsec: float | None,
                  ndim: int = 2) -> Path:
    """Pick the bundled model trained nearest the image's frequency and pixel scale.

    Parameters
    ----------
    freq_hz : float or None
        The image's (2D) or the cube's central (3D) frequency, Hz; None: not compared.
    pixel_scale_arcsec : float or None
        The image's pixel scale, arcsec; None: not compared.
    ndim : {2, 3}
        2 for images, 3 for cubes: a model of the other dimensionality never fits.

    Returns
    -------
    Path
        A model fits when it has ``ndim`` dimensions, its pixel scale is within 25% of the
        image's and its frequency within a factor 1.5; the nearest in frequency is taken.

    Raises
    ------
    InvalidModelError
        When none fits.
    """
    candidates = []
    for path in bundled_models():
        doc = _read_contract(path)
        if int(doc.get("ndim", 2)) != ndim:  # type: ignore[call-overload]
            continue
        m_scale = float(doc.get("pixel_scale_arcsec") or 0.0)  # type: ignore[arg-type]
        m_freq = float(doc.get("freq_mhz") or 0.0) * 1e6  # type: ignore[arg-type]
        if pixel_scale_arcsec is not None and m_scale and not (
                1 - SCALE_TOLERANCE <= pixel_scale_arcsec / m_scale <= 1 + SCALE_TOLERANCE):
            continue
        if freq_hz is not None and m_freq and not (
                1 / FREQ_FACTOR <= freq_hz / m_freq <= FREQ_FACTOR):
            continue
        distance = abs(math.log(freq_hz / m_freq)) if freq_hz and m_freq else 0.0
        candidates.append((distance, path))
    if not candidates:
        have = ", ".join(p.name for p in bundled_models()) or "none"
        raise InvalidModelError(
            f"no bundled {ndim}D model fits an image at {freq_hz} Hz with "
            f"{pixel_scale_arcsec} arcsec pixels (bundled: {have}); pass a model with --model")
    return min(candidates)[1]


def check_model_fits(model: Model, *, freq_hz: float | None,
                     pixel_scale_arcsec: float | None) -> bool:
    """Warn (:class:`ModelFitWarning`) when ``model`` was made for another band or pixel
    scale than the image's: frequencies more than :data:`FREQ_FACTOR` apart, or pixel
    scales more than :data:`SCALE_TOLERANCE` apart (the rule :func:`default_model`
    picks by). Unknown values (the image's or the contract's) are not compared.

    Returns
    -------
    bool
        True when the model fits (no warning).
    """
    c = model.contract
    problems = []
    if freq_hz and c.freq_mhz and not (
            1 / FREQ_FACTOR <= freq_hz / (c.freq_mhz * 1e6) <= FREQ_FACTOR):
        problems.append(f"made for {c.freq_mhz:g} MHz but the image is at "
                        f"{freq_hz / 1e6:g} MHz (more than a factor {FREQ_FACTOR:g} apart)")
    if pixel_scale_arcsec and c.pixel_scale_arcsec and not (
            1 - SCALE_TOLERANCE <= pixel_scale_arcsec / c.pixel_scale_arcsec
            <= 1 + SCALE_TOLERANCE):
        problems.append(f"made for {c.pixel_scale_arcsec:g} arcsec pixels but the image has "
                        f"{pixel_scale_arcsec:g} arcsec (more than {SCALE_TOLERANCE:.0%} "
                        "apart)")
    if problems:
        warnings.warn(f"model {str(model.path)!r} ({c.name}) was {' and '.join(problems)}: "
                      "its detections and fluxes may be poor; use a model of the image's band "
                      "(the default picks one)", ModelFitWarning, stacklevel=2)
    return not problems
