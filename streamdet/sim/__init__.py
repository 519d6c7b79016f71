"""Simulation: SDC1-like continuum skies (2D) and SDC2-like HI cubes (3D), with their truth.

``simulate`` draws a sky from the SDC1 population and renders it into a FITS image;
``simulate_cube`` does the same for HI galaxies in a frequency cube.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_names

if TYPE_CHECKING:
    from .simulate import simulate, write_primary_beam
    from .simulate_cube import cube_truth, simulate_cube, write_truth

__all__ = [
    "cube_truth",
    "simulate",
    "simulate_cube",
    "write_primary_beam",
    "write_truth",
]

# public name -> the submodule defining it
_LAZY = {
    "simulate": "simulate",
    "write_primary_beam": "simulate",
    "cube_truth": "simulate_cube",
    "simulate_cube": "simulate_cube",
    "write_truth": "simulate_cube",
}
lazy_names(__name__, _LAZY)
