"""Training stability: when a run has diverged.

A run has diverged at the first step whose training loss is NaN or infinite,
or, once warmup is over, at the first step where the median of the last
:data:`WINDOW` losses exceeds the run's initial loss (its first step's) by more
than a margin. The median lets a one-step spike pass (these small models spike on
an odd batch right after warmup and recover at the next step: d80L2 of the default
study at lr 0.01 with a 10-step warmup went 3.05 → 9.57 → 3.13), while a run
that has blown up stays above the margin for most of the window and is stopped a
few steps later. How sensitive a size is to its learning rate, across runs, is a
fit: :func:`scaling.fit.optimal_lr.sensitivity_table`.
"""

from __future__ import annotations

import math
import statistics

WINDOW = 9  # steps: the median of 9 losses stays below the margin unless 5 of them rise above it


def threshold(losses, margin: float) -> float:
    """The loss a run has diverged above: its initial loss ``losses[0]`` + ``margin`` (``divergence_margin``)."""
    return losses[0] + margin


def first_divergence(losses, first: int, done: int, warmup: int, margin: float) -> int | None:
    """The step (0-based) a run diverged at, among steps ``first`` to ``done`` − 1, from ``losses``, the run's
    losses by step (those before ``first`` already checked): the first that is NaN or infinite, or the first step
    after warmup whose loss and the :data:`WINDOW` − 1 before it (all after warmup) have a median above the
    :func:`threshold`; None if neither. Checking a run's steps in chunks finds what one check of
    them all would."""
    above = threshold(losses, margin)
    for step in range(first, done):
        if not math.isfinite(losses[step]):
            return step
        if step - WINDOW + 1 >= warmup and statistics.median(losses[step - WINDOW + 1:step + 1]) > above:
            return step
    return None
