"""Training stability: when a run has diverged, and how sensitive a model size is to its learning rate.

A run has diverged at the first step whose training loss is NaN or infinite,
or, once warmup is over, exceeds the run's initial loss (its first step's)
by more than a margin.

LR sensitivity (Wortsman et al. 2023; the formula is :func:`scaling.laws.lr_sensitivity`)
is summarized here per model size from a table of runs: seeds of one learning
rate are averaged after a diverged run is counted at the initial loss. The
sweep should be the same grid of learning rates for every size (evenly spaced
in log η, as theirs) to compare sizes.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from scaling import laws


def first_divergence(losses, first_step: int, initial: float, warmup: int, margin: float) -> int | None:
    """The step (0-based) of the first diverged loss in ``losses``, which are the losses of steps
    ``first_step``, ``first_step`` + 1, …; None if none has diverged."""
    for i, loss in enumerate(losses):
        step = first_step + i
        if not math.isfinite(loss) or (step >= warmup and loss > initial + margin):
            return step
    return None


def lr_sensitivity(runs: pd.DataFrame, by: str | list[str] = "size") -> pd.DataFrame:
    """The LR sensitivity of each group of ``runs`` (default: each model size).

    ``runs`` has one row per run with columns ``lr``, ``val_loss``, ``status``
    ('ok' or 'diverged') and ``initial_loss``, plus the grouping columns. Seeds
    of one learning rate are averaged first; ℓ₀ is the mean initial loss of the
    group. Returns the grouping columns, ``lr_sensitivity``, ``best_lr``,
    ``best_loss``, ``n_lrs`` and ``n_diverged``.
    """
    by = [by] if isinstance(by, str) else list(by)
    rows = []
    for key, g in runs.groupby(by, sort=True):
        initial = float(g["initial_loss"].mean())
        ok = (g["status"] == "ok") & np.isfinite(g["val_loss"])
        capped = np.where(ok, np.minimum(g["val_loss"], initial), initial)
        per_lr = pd.Series(capped, index=g["lr"].to_numpy()).groupby(level=0).mean()
        best = float(per_lr.min())
        rows.append({
            **dict(zip(by, key if isinstance(key, tuple) else (key,))),
            "lr_sensitivity": laws.lr_sensitivity(per_lr, initial),
            "best_lr": float(per_lr.idxmin()),
            "best_loss": best,
            "n_lrs": len(per_lr),
            "n_diverged": int((~ok).sum()),
        })
    return pd.DataFrame(rows)
