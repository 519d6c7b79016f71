"""Progress bars: tqdm on a terminal, silent otherwise."""

from __future__ import annotations

import sys
from typing import Any

from tqdm.auto import tqdm

__all__ = ["progress_bar"]


def progress_bar(*, total: int, desc: str, unit: str = "it", quiet: bool | None = None,
                 **kwargs: Any) -> tqdm:
    """Return a tqdm bar, disabled when ``quiet`` or when stderr is not a terminal.

    Parameters
    ----------
    total : int
        Number of steps.
    desc : str
        Label shown before the bar.
    unit : str
        Unit of one step.
    quiet : bool or None
        ``True`` disables the bar; ``None`` shows it only on a terminal.
    """
    disable = bool(quiet) if quiet is not None else not sys.stderr.isatty()
    return tqdm(total=total, desc=desc, unit=unit, disable=disable, leave=False, **kwargs)
