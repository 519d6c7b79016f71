"""Catalogues: detection tables, SDC1 / SDC2 files, scoring and diagnostic plots.

``to_table`` and ``cube_table`` turn detections into sky catalogues, written by
``write_catalogue`` and ``write_regions``; ``score`` scores an SDC1 catalogue and
``score_sdc2`` an SDC2 one; ``plot_diagnostics`` and ``plot_region`` draw them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_names

if TYPE_CHECKING:
    from .catalog import read_sdc1, write_sdc1
    from .outputs import cube_table, to_sdc1, to_table, write_catalogue, write_regions
    from .plot import plot_diagnostics, plot_region
    from .score import ScoreResult, score
    from .sdc2 import Sdc2Result, read_sdc2, score_sdc2, write_sdc2

__all__ = [
    "ScoreResult",
    "Sdc2Result",
    "cube_table",
    "plot_diagnostics",
    "plot_region",
    "read_sdc1",
    "read_sdc2",
    "score",
    "score_sdc2",
    "to_sdc1",
    "to_table",
    "write_catalogue",
    "write_regions",
    "write_sdc1",
    "write_sdc2",
]

# public name -> the submodule defining it
_LAZY = {
    "cube_table": "outputs",
    "to_sdc1": "outputs",
    "to_table": "outputs",
    "write_catalogue": "outputs",
    "write_regions": "outputs",
    "read_sdc1": "catalog",
    "write_sdc1": "catalog",
    "Sdc2Result": "sdc2",
    "read_sdc2": "sdc2",
    "score_sdc2": "sdc2",
    "write_sdc2": "sdc2",
    "ScoreResult": "score",
    "score": "score",
    "plot_diagnostics": "plot",
    "plot_region": "plot",
}
lazy_names(__name__, _LAZY)
