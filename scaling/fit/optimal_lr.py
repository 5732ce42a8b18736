"""The learning rate: a power law η*(N, D) fitted to the best rates of sweeps, and LR sensitivity.

The best rate of each (N, D) and whether it lies on the edge of its sweep (then
the true optimum may lie beyond it, and the point only bounds η*) are
:func:`scaling.fit.tables.best_lr_points`, the points of every law.

- :func:`fit_optimal_lr`: η*(N, D) = c·N^a·D^b (:func:`scaling.fit.laws.optimal_lr`)
  by OLS of log η* on log N and log D (statsmodels), with t intervals.
- :func:`sensitivity_table`: the LR sensitivity of Wortsman et al. (2023)
  (:func:`scaling.fit.laws.lr_sensitivity`) of each sweep, diverged runs
  counted at their initial loss.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from scaling.fit.estimators import check_data, check_distinct, loglinear
from scaling.fit.laws import LAWS, lr_sensitivity
from scaling.fit.result import FitResult

PARAMS = LAWS["optimal_lr"].params  # c, a, b


def fit_optimal_lr(N, D, lr, *, level: float = 0.95) -> FitResult:
    """η*(N, D) = c·N^a·D^b by OLS in log space; t intervals for c, a, b and for predictions.

    Needs at least 4 distinct (N, D) points that vary N and D independently
    (more than one token multiplier); otherwise a :class:`FitError` says so.
    """
    N, D, lr = check_data(n_params=N, tokens=D, lr=lr)
    check_distinct("optimal-LR", len(PARAMS), N, D, hint="sweep the learning rate at more (N, D) points")
    res = loglinear([np.log(N), np.log(D)], np.log(lr))
    cov = res.cov_params()
    se = np.sqrt(np.diag(cov))
    c = float(np.exp(res.params[0]))
    return FitResult(
        law="optimal_lr", method="ols-log", params={"c": c, "a": float(res.params[1]), "b": float(res.params[2])},
        stderr={"c": c * se[0], "a": float(se[1]), "b": float(se[2])}, n_points=len(lr), objective=float(res.ssr),
        level=level, interval_method="t", residual_space="log",
        loglinear={"cov": np.asarray(cov).tolist(), "sigma": float(np.sqrt(res.scale)), "dof": float(res.df_resid)},
    )


def sensitivity_table(runs: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """The LR sensitivity (:func:`scaling.fit.laws.lr_sensitivity`) of each group of ``runs`` by the columns ``by``
    (e.g. the dataset, N and D: one learning-rate sweep each).

    ``runs``: every run of the sweeps (any status), with ``lr``, ``loss`` and
    ``initial_loss`` columns (see :func:`scaling.fit.tables.canonical`). Each
    run's loss is capped at the group's mean initial loss ℓ₀, a diverged run
    counting at ℓ₀, before the seeds of a rate are averaged (so one diverged seed
    costs its share, not the whole rate). Returns the ``by`` columns,
    ``lr_sensitivity``, ``best_lr``, ``best_loss``, ``n_lrs`` and ``n_diverged``.
    """
    by = [c for c in by if c in runs]
    ok = (runs["status"] == "ok") & np.isfinite(runs["loss"]) if "status" in runs else np.isfinite(runs["loss"])
    rows = []
    for key, g in runs.assign(_ok=ok).groupby(by, sort=True):
        initial = float(g["initial_loss"].mean())
        capped = np.where(g["_ok"], np.minimum(g["loss"], initial), initial)
        per_lr = pd.Series(capped, index=g["lr"].to_numpy()).groupby(level=0).mean()
        rows.append({**dict(zip(by, key if isinstance(key, tuple) else (key,))),
                     "lr_sensitivity": lr_sensitivity(per_lr, initial), "best_lr": float(per_lr.idxmin()),
                     "best_loss": float(per_lr.min()), "n_lrs": len(per_lr), "n_diverged": int((~g["_ok"]).sum())})
    return pd.DataFrame(rows)
