"""The detectors shipped with the package: contract, choice by band, and real detections."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from astropy.coordinates import SkyCoord

import streamdet
from streamdet.engine.contract import load_model
from streamdet.errors import InvalidModelError
from streamdet.models import bundled_models, default_model

BANDS = {560: 0.6, 1400: 0.24}


def test_bundled_models_carry_a_valid_contract() -> None:
    paths = bundled_models()
    freqs = set()
    for path in paths:
        assert path.stat().st_size <= 20 * 2**20, f"{path.name} is over 20 MB"
        c = load_model(path).contract
        assert {"default", "best", "purity"} <= set(c.thresholds)
        assert c.training, f"{path.name} does not record how it was trained"
        if c.ndim == 2:
            assert c.param_names == ("flux", "bmaj", "bmin", "pa")
            freqs.add(round(c.freq_mhz or 0))
        else:
            assert c.ndim == 3 and path.name == "sdc2_3d.onnx"
            assert {"line_flux_integral", "hi_size", "w20", "pa", "i"} <= set(c.param_names)
            assert c.pixel_scale_arcsec == pytest.approx(2.8)
    assert {560, 1400} <= freqs
    assert "sdc2_3d.onnx" in {p.name for p in paths}


@pytest.mark.parametrize("freq", sorted(BANDS))
def test_default_model_follows_the_band(freq: int) -> None:
    path = default_model(freq_hz=freq * 1e6, pixel_scale_arcsec=BANDS[freq])
    assert load_model(path).contract.freq_mhz == pytest.approx(freq)


def test_no_default_model_for_an_unknown_band() -> None:
    with pytest.raises(InvalidModelError, match="no bundled 2D model"):
        default_model(freq_hz=9.2e9, pixel_scale_arcsec=0.037)


@pytest.mark.parametrize("freq", sorted(BANDS))
def test_default_model_finds_the_bright_sources(freq: int, tmp_path: Path) -> None:
    """On a fresh simulated field, nearly every bright isolated source is detected."""
    field = tmp_path / "field.fits"
    truth = streamdet.simulate(field, size=768, freq=freq, seed=777_001 + freq,
                               offset=(0.0, -0.5), quiet=True)
    table = streamdet.detect(field)               # bundled model, chosen from the header
    assert len(table) > 0
    noise = {560: 0.38e-6, 1400: 0.101e-6}[freq]
    bright = truth[np.asarray(truth["flux"]) * np.asarray(truth["pb"]) > 50 * noise]
    assert len(bright) >= 5
    det = SkyCoord(np.asarray(table["ra"]), np.asarray(table["dec"]), unit="deg")
    true = SkyCoord(np.asarray(bright["ra_core"]), np.asarray(bright["dec_core"]), unit="deg")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, sep, _ = true.match_to_catalog_sky(det)
    beam = {560: 1.5, 1400: 0.6}[freq]
    found = np.mean(sep.arcsec < 2 * beam)
    assert found >= 0.9, f"only {found:.0%} of {len(bright)} bright sources found"
