"""matplotlib pieces of :mod:`streamdet.catalogue.plot`: colour-bar ticks that never overlap, tick
labels in sensible units, and a legend key for the restoring beam drawn at the image's scale.

Imported only when a figure is made (matplotlib is optional).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np
from matplotlib.legend_handler import HandlerBase
from matplotlib.patches import Ellipse
from matplotlib.ticker import Locator, MaxNLocator
from matplotlib.transforms import Affine2DBase, Transform
from numpy.typing import NDArray

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.legend import Legend

__all__ = ["BeamKeyHandler", "SpacedTicks", "brightness_scale", "format_tick"]

#: Tick grids tried, coarse to fine: the coarse step over these (each divides the last).
_DIVISORS = (1, 2, 10, 20, 100, 200)


def brightness_scale(vmin: float, vmax: float, unit: str) -> tuple[float, str]:
    """Factor and unit for tick labels of a brightness in ``unit`` (Jy/beam, Jy/pixel).

    Parameters
    ----------
    vmin, vmax : float
        Display limits, in ``unit``.
    unit : str
        The image unit as labelled (``"Jy/beam"``, ``"Jy/pixel"``; anything else is
        kept as it is, factor 1).

    Returns
    -------
    factor, label : float, str
        Values times ``factor`` are in ``label`` (uJy, mJy or Jy of the same kind), so
        that the larger limit lies between 1 and 1000.
    """
    if not unit.startswith("Jy/"):
        return 1.0, unit
    top = max(abs(vmin), abs(vmax))
    per = unit[2:]
    if 0 < top < 1e-3:
        return 1e6, "\u00b5Jy" + per
    if 0 < top < 1.0:
        return 1e3, "mJy" + per
    return 1.0, unit


def format_tick(value: float, factor: float, span: float) -> str:
    """A tick label: ``value * factor`` with the digits the tick spacing needs, no ``-0``."""
    if span > 0 and abs(value) < 1e-9 * span:
        return "0"
    return f"{float(f'{value * factor:.6g}'):g}"


class SpacedTicks(Locator):
    """Nice tick values whose labels keep at least ``gap`` font sizes apart on the axis.

    The positions are measured at draw time through the axis's own transform (a colour
    bar of an asinh or log stretch crowds equal steps at one end): the ticks of a coarse
    grid (``MaxNLocator``, 3 intervals) are taken first, then those of finer grids (the
    coarse step over 2, 10, 20, 100, 200) that fall where there is room, at most
    ``max_ticks`` in all.

    Parameters
    ----------
    fontsize : float
        Font size of the tick labels, points.
    gap : float
        Smallest distance between two ticks, in font sizes (2: labels a line high
        keep a line's height clear of each other).
    max_ticks : int
        Upper bound on the number of ticks.
    """

    def __init__(self, fontsize: float, gap: float = 2.0, max_ticks: int = 9) -> None:
        self.fontsize = float(fontsize)
        self.gap = float(gap)
        self.max_ticks = int(max_ticks)

    def __call__(self) -> Any:
        if self.axis is None:
            return []
        vmin, vmax = self.axis.get_view_interval()
        return self.tick_values(float(vmin), float(vmax))

    def _positions(self, values: NDArray[np.float64], lo: float, hi: float
                   ) -> tuple[NDArray[np.float64], float]:
        """Display positions (pixels along the axis) and the smallest allowed distance."""
        axis: Any = self.axis
        ax = getattr(axis, "axes", None)
        if ax is not None:
            figure = ax.get_figure(root=True)
            dpi = float(figure.dpi) if figure is not None else 100.0
            along = 1 if getattr(axis, "axis_name", "y") == "y" else 0
            pts = np.zeros((len(values), 2))
            pts[:, along] = values
            with np.errstate(all="ignore"):
                pos = np.asarray(ax.transData.transform(pts), np.float64)[:, along]
            if np.all(np.isfinite(pos)):
                return pos, self.gap * self.fontsize * dpi / 72.0
        # no axis to measure: spread linearly over a nominal 300 pixels
        pos = (values - lo) / (hi - lo) * 300.0
        return pos, self.gap * self.fontsize * 100.0 / 72.0

    def tick_values(self, vmin: float, vmax: float) -> Any:
        """Tick values between ``vmin`` and ``vmax`` (see the class)."""
        lo, hi = sorted((vmin, vmax))
        if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
            return np.array([lo]) if math.isfinite(lo) else np.zeros(0)
        tol = 1e-9 * (hi - lo)
        coarse = np.asarray(MaxNLocator(nbins=3, steps=[1, 2, 2.5, 5, 10]).tick_values(lo, hi),
                            np.float64)
        top = float(np.diff(coarse).max()) if coarse.size > 1 else hi - lo
        chosen: list[float] = []
        chosen_pos: list[float] = []
        for divisor in _DIVISORS:  # each step divides the coarser ones: no 2-4-5 mixtures
            step = top / divisor
            grid = np.arange(math.ceil((lo - tol) / step), math.floor((hi + tol) / step) + 1,
                             dtype=np.float64) * step
            if grid.size == 0 or grid.size > 1000:
                continue
            pos, min_sep = self._positions(grid, lo, hi)
            for v, p in zip(grid.tolist(), pos.tolist(), strict=True):
                if len(chosen) >= self.max_ticks:
                    break
                if any(abs(v - c) <= tol for c in chosen):
                    continue
                if all(abs(p - q) >= min_sep for q in chosen_pos):
                    chosen.append(v)
                    chosen_pos.append(p)
        return np.array(sorted(chosen), np.float64)


class _KeyTransform(Affine2DBase):
    """The linear part of ``data`` (data units -> display pixels), centred on the display
    point of ``anchor_xy`` under ``anchor``: a shape in data units, drawn at the image's
    scale wherever the legend puts it. Recomputed whenever either transform changes."""

    def __init__(self, data: Transform, anchor: Transform, anchor_xy: tuple[float, float]
                 ) -> None:
        super().__init__()
        self._data = data
        self._anchor = anchor
        self._xy = anchor_xy
        self.set_children(data, anchor)
        self._mtx: NDArray[np.float64] | None = None

    def get_matrix(self) -> Any:
        invalid: int = getattr(self, "_invalid", 1)
        if invalid or self._mtx is None:
            m = np.array(self._data.get_affine().get_matrix(), np.float64, copy=True)
            cx, cy = self._anchor.transform(np.array([self._xy], np.float64))[0]
            m[0, 2], m[1, 2] = cx, cy
            self._mtx = m
            self._inverted = None
            self._invalid = 0
        return self._mtx


class BeamKeyHandler(HandlerBase):
    """Legend handler drawing the restoring beam as the very ellipse drawn on the image.

    The key has the beam patch's width, height and angle in data (pixel) units and is
    drawn through the axes' data scale, so it matches the image's beam in display units
    whatever the figure's layout and size.

    Parameters
    ----------
    beam : matplotlib.patches.Ellipse
        The beam patch drawn on ``ax`` (data coordinates).
    ax : matplotlib.axes.Axes
        The image axes.
    room : (float, float)
        Width and height (points) the key's box needs; a key larger than a line of
        text widens and heightens its own box only (the other entries keep theirs).
    """

    def __init__(self, beam: Ellipse, ax: Axes, room: tuple[float, float] = (0.0, 0.0)
                 ) -> None:
        super().__init__()
        self.beam = beam
        self.ax = ax
        self.room = (float(room[0]), float(room[1]))

    def legend_artist(self, legend: Legend, orig_handle: Any, fontsize: float,
                      handlebox: Any) -> Any:
        width, height = self.room
        if width > handlebox.width:
            handlebox.width = width
        if height > handlebox.height:  # centred on the middle of the label's line
            handlebox.height = height
            handlebox.ydescent = 0.5 * height - 0.3 * fontsize
        return super().legend_artist(legend, orig_handle, fontsize, handlebox)

    def create_artists(self, legend: Legend, orig_handle: Any, xdescent: float,
                       ydescent: float, width: float, height: float, fontsize: float,
                       trans: Transform) -> list[Any]:
        b = self.beam
        key = Ellipse((0.0, 0.0), b.width, b.height, angle=b.angle,
                      facecolor=b.get_facecolor(), edgecolor=b.get_edgecolor(),
                      linewidth=b.get_linewidth())
        centre = (0.5 * width - xdescent, 0.5 * height - ydescent)
        key.set_transform(_KeyTransform(self.ax.transData, trans, centre))
        return [key]
