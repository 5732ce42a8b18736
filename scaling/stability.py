"""Training stability: when a run has diverged, and how sensitive a model size is to its learning rate.

A run has diverged at the first step whose training loss is NaN or infinite,
or, once warmup is over, exceeds the run's initial loss (its first step's)
by more than a margin.

LR sensitivity (Wortsman et al. 2023, "Small-scale proxies for large-scale
Transformer training instabilities", §3.1): for one model size trained at
learning rates η in a sweep, with final losses ℓ(η), initial loss ℓ₀ and best
loss ℓ* = min_η ℓ(η),

    sensitivity = E_η[ min(ℓ(η), ℓ₀) − ℓ* ],

the mean over the sweep's learning rates of the gap to the best, where a
diverged run (or one that ends worse than it began) counts as ℓ₀. It is 0 when
every learning rate is as good as the best and grows as more of the sweep
fails; the sweep should be the same grid of learning rates for every size
(evenly spaced in log η, as theirs) to compare sizes.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd


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
            "lr_sensitivity": float((per_lr - best).mean()),
            "best_lr": float(per_lr.idxmin()),
            "best_loss": best,
            "n_lrs": len(per_lr),
            "n_diverged": int((~ok).sum()),
        })
    return pd.DataFrame(rows)
