"""The learning rate: the best rate per (N, D) of a sweep, a power law η*(N, D), and LR sensitivity.

- :func:`best_lr_grid`: per (group, N, D), the rate of the sweep with the
  lowest seed-averaged loss, and whether it lies on the edge of the sweep (then
  the true optimum may lie beyond it, and the point only bounds η*).
- :func:`fit_optimal_lr`: η*(N, D) = c·N^a·D^b (:func:`scaling.fit.laws.optimal_lr`)
  by OLS of log η* on log N and log D (statsmodels), with t intervals.
- :func:`sensitivity_table`: the LR sensitivity of Wortsman et al. (2023)
  (:func:`scaling.fit.laws.lr_sensitivity`) of each sweep, diverged runs
  counted at their initial loss.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from scaling.fit.estimators import check_data, check_distinct, loglinear
from scaling.fit.laws import LAWS, lr_sensitivity
from scaling.fit.result import FitResult

PARAMS = LAWS["optimal_lr"].params  # c, a, b


def best_lr_grid(runs: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """One row per (group, N, D): the best ``lr`` (seeds averaged), its ``loss``, the sweep's size and edge flag.

    ``runs`` must have n_params, tokens, lr and loss columns, ``ok`` runs only
    (see :func:`scaling.fit.tables.canonical`).
    """
    keys = [c for c in by if c in runs] + ["n_params", "tokens"]
    per_lr = runs.groupby(keys + ["lr"], as_index=False).agg(
        loss=("loss", "mean"), token_multiplier=("token_multiplier", "first"),
        **({"size": ("size", "first")} if "size" in runs and "size" not in keys else {}))
    rows = []
    for key, g in per_lr.groupby(keys):
        best = g.loc[g["loss"].idxmin()]
        at_edge = len(g) > 1 and best["lr"] in (g["lr"].min(), g["lr"].max())
        rows.append({**best.to_dict(), "n_lrs": len(g), "lr_at_edge": bool(at_edge)})
    out = pd.DataFrame(rows)
    edge = out[out["lr_at_edge"]]
    if len(edge):
        warnings.warn(f"{len(edge)} of {len(out)} (N, D) points have their best learning rate at the edge of the "
                      f"sweep; widen the sweep there, since η* may lie beyond it")
    return out


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
