"""Helpers shared by the callers of the official ``ska_sdc`` scorers (SDC1 and SDC2)."""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator, Mapping

__all__ = ["quiet_scorer", "summary_text"]


@contextlib.contextmanager
def quiet_scorer() -> Iterator[None]:
    """Keep the scorer's logging and deprecation chatter off the user's screen.

    ``ska_sdc`` calls ``logging.basicConfig`` and logs at INFO: a null handler on an
    unconfigured root logger makes that ``basicConfig`` a no-op, and INFO is disabled
    while the scorer runs; its warnings are ignored. Everything is restored on exit.
    """
    root = logging.getLogger()
    added = None
    if not root.handlers:  # basicConfig does nothing when the root logger has a handler
        added = logging.NullHandler()
        root.addHandler(added)
    previous = logging.root.manager.disable
    logging.disable(logging.INFO)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(previous)
        if added is not None:
            root.removeHandler(added)


def summary_text(*, score: float, n_det: int, n_match: int, n_false: int, purity: float,
                 acc_pc: float, accuracy: Mapping[str, float], key_width: int) -> str:
    """A score result as text, one quantity per line, then each term's mean accuracy
    (its name left-aligned in ``key_width`` characters)."""
    lines = [
        f"score      {score:.2f}",
        f"N_det      {n_det}",
        f"N_match    {n_match}",
        f"N_false    {n_false}",
        f"purity     {purity:.4f}",
        f"accuracy   {acc_pc:.2f} %",
    ]
    lines += [f"  {k:<{key_width}s} {v:.4f}" for k, v in accuracy.items()]
    return "\n".join(lines)
