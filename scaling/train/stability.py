"""Training stability: when a run has diverged.

A run has diverged at the first step whose training loss is NaN or infinite,
or, once warmup is over, exceeds the run's initial loss (its first step's)
by more than a margin. How sensitive a size is to its learning rate, across
runs, is a fit: :func:`scaling.fit.optimal_lr.sensitivity_table`.
"""

from __future__ import annotations

import math


def first_divergence(losses, first_step: int, initial: float, warmup: int, margin: float) -> int | None:
    """The step (0-based) of the first diverged loss in ``losses``, which are the losses of steps
    ``first_step``, ``first_step`` + 1, …; None if none has diverged."""
    for i, loss in enumerate(losses):
        step = first_step + i
        if not math.isfinite(loss) or (step >= warmup and loss > initial + margin):
            return step
    return None
