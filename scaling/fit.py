"""Fitting the over-training law to a study's runs.

Procedure (Gadre et al. 2024, Appendix): nonlinear least squares on loss with
``scipy.optimize.curve_fit`` from each start of a grid of 128 initializations,
a, c ∈ {1e2, 3e2, 1e3, 3e3}, b ∈ {−0.1, −0.3}, E ∈ {0, 1, 2, 10}; the fit with
the smallest sum of squared residuals wins. Standard errors come from the
covariance curve_fit estimates at that optimum.

Each (dataset, size, M) point is represented by its best learning rate: the
lowest validation loss over the LR grid, after averaging seeds. Diverged runs
are left out.
"""

from __future__ import annotations

import itertools
import json
import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy.optimize import OptimizeWarning, curve_fit

from scaling.laws import overtraining_compute_form, overtraining_loss

PARAMS = ("E", "a", "b", "c")
GADRE_STARTS = [
    {"E": E, "a": a, "b": b, "c": c}
    for a, c, b, E in itertools.product((1e2, 3e2, 1e3, 3e3), (1e2, 3e2, 1e3, 3e3), (-0.1, -0.3), (0, 1, 2, 10))
]


class FitError(ValueError):
    """A fit that cannot be made or did not converge; the message says why."""


@dataclass
class OvertrainingFit:
    """A fitted over-training law: parameters, standard errors, and predictions."""

    params: dict[str, float]
    stderr: dict[str, float]
    n_points: int
    sse: float
    meta: dict = field(default_factory=dict)

    def predict(self, N, M) -> np.ndarray:
        return overtraining_loss(N, M, *(self.params[p] for p in PARAMS))

    def to_dict(self) -> dict:
        return {
            "law": "overtraining",
            "formula": "L(N, M) = E + a*N^b + c*6^(b/2)*(M*N)^b",
            "params": self.params,
            "stderr": self.stderr,
            "compute_form": overtraining_compute_form(self.params["b"], self.params["a"]),
            "n_points": self.n_points,
            "sse": self.sse,
            **self.meta,
        }

    def summary(self) -> str:
        rows = [f"{p:>3} = {self.params[p]: .6g} ± {self.stderr[p]:.3g}" for p in PARAMS]
        return f"over-training law on {self.n_points} points, SSE {self.sse:.3g}\n" + "\n".join(rows)


# Physical ranges: loss falls with N and D towards a non-negative floor.
BOUNDS = ([0.0, 0.0, -np.inf, 0.0], [np.inf, np.inf, 0.0, np.inf])


def fit_overtraining(N, M, L, starts=GADRE_STARTS, bounded: bool = True) -> OvertrainingFit:
    """Fit L(N, M) (see :func:`scaling.laws.overtraining_loss`) by least squares from every start.

    ``bounded`` (the default) keeps E, a, c ≥ 0 and b ≤ 0, so a fit to noisy or
    too-few points cannot bend the law upwards; a parameter that ends on its
    bound is listed in ``meta["at_bound"]``. ``bounded=False`` is the paper's
    unconstrained Levenberg–Marquardt fit.
    """
    N, M, L = (np.asarray(v, dtype=float) for v in (N, M, L))
    if not (np.all(np.isfinite(N)) and np.all(np.isfinite(M)) and np.all(np.isfinite(L))):
        raise FitError("the fit data contain NaN or infinite values")
    if np.any(N <= 0) or np.any(M <= 0) or np.any(L <= 0):
        raise FitError("N, M and loss must all be positive")
    distinct = len(set(zip(N, M)))
    if distinct < len(PARAMS) + 1:
        raise FitError(
            f"the over-training law has {len(PARAMS)} parameters but the fit set has only {distinct} distinct "
            f"(N, M) points; it needs at least {len(PARAMS) + 1}: add model sizes at M = 20 or widen fit.fit_on"
        )

    def f(x, E, a, b, c):
        return overtraining_loss(x[0], x[1], E, a, b, c)

    best = None
    for start in starts:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", (OptimizeWarning, RuntimeWarning))
            try:
                popt, pcov = curve_fit(f, np.vstack([N, M]), L, p0=[start[p] for p in PARAMS], maxfev=10_000,
                                       **({"bounds": BOUNDS} if bounded else {}))
            except (RuntimeError, ValueError):
                continue
            sse = float(np.sum((f(np.vstack([N, M]), *popt) - L) ** 2))
        if np.isfinite(sse) and (best is None or sse < best[0]):
            best = (sse, popt, pcov)
    if best is None:
        raise FitError(f"the fit did not converge from any of {len(starts)} starts")
    sse, popt, pcov = best
    se = np.sqrt(np.clip(np.diag(pcov), 0, None)) if np.all(np.isfinite(pcov)) else np.full(len(PARAMS), np.inf)
    params = dict(zip(PARAMS, map(float, popt)))
    at_bound = [
        p for p, lo, hi in zip(PARAMS, *BOUNDS)
        if bounded and any(np.isfinite(x) and abs(params[p] - x) <= 1e-6 * (1 + abs(x)) for x in (lo, hi))
    ]
    return OvertrainingFit(params, dict(zip(PARAMS, map(float, se))), len(L), sse, {"at_bound": at_bound})


def best_lr_points(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per (dataset, size, M): the LR with the lowest seed-averaged validation loss."""
    ok = runs[runs["status"] == "ok"]
    keys = ["dataset", "size", "n_params", "token_multiplier"]
    per_lr = ok.groupby(keys + ["lr"], as_index=False).agg(
        val_loss=("val_loss", "mean"), flops=("flops", "first"), seeds=("seed", "count")
    )
    best = per_lr.loc[per_lr.groupby(keys)["val_loss"].idxmin()]
    return best.sort_values(["dataset", "n_params", "token_multiplier"]).reset_index(drop=True)


def default_fit_on(points: pd.DataFrame) -> list[dict]:
    """Every M = 20 point plus the smallest model at its largest M (the paper's choice, scaled down)."""
    smallest = points.loc[points["n_params"].idxmin()]
    largest_m = points.loc[points["size"] == smallest["size"], "token_multiplier"].max()
    return [{"token_multiplier": 20.0}, {"size": smallest["size"], "token_multiplier": float(largest_m)}]


def in_fit_set(points: pd.DataFrame, fit_on: list[dict]) -> pd.Series:
    mask = pd.Series(False, index=points.index)
    for flt in fit_on:
        match = pd.Series(True, index=points.index)
        for col, value in flt.items():
            match &= points[col].isin(value if isinstance(value, list) else [value])
        mask |= match
    return mask


def fit_study(runs: pd.DataFrame, fit_config: dict, sizes: dict[str, int]) -> tuple[list[dict], pd.DataFrame]:
    """Fit each dataset of a study; return the fits and one prediction row per point.

    ``sizes`` maps model names to parameter counts (for targets named by size).
    Prediction rows have role ``fit`` (in the fit set), ``held_out`` (measured,
    not fitted on) or ``target`` (asked for in ``fit.targets``).
    """
    points = best_lr_points(runs)
    fits, rows = [], []
    for dataset, pts in points.groupby("dataset"):
        pts = pts.reset_index(drop=True)
        fit_on = fit_config.get("fit_on") or default_fit_on(pts)
        mask = in_fit_set(pts, fit_on)
        result = fit_overtraining(pts.loc[mask, "n_params"], pts.loc[mask, "token_multiplier"], pts.loc[mask, "val_loss"])
        result.meta.update(dataset=dataset, fit_on=fit_on)
        if result.meta["at_bound"]:
            warnings.warn(f"{dataset}: the fitted {result.meta['at_bound']} ended on a bound; "
                          f"the fit set may be too small or too noisy for the law")
        fits.append(result.to_dict())
        for i, p in pts.iterrows():
            rows.append({
                "dataset": dataset, "size": p["size"], "n_params": int(p["n_params"]),
                "token_multiplier": p["token_multiplier"], "lr": p["lr"],
                "role": "fit" if mask[i] else "held_out", "measured_loss": p["val_loss"],
            })
        for t in fit_config.get("targets", []):
            n = sizes[t["size"]] if "size" in t else int(t["n_params"])
            measured = pts[(pts["n_params"] == n) & (pts["token_multiplier"] == t["token_multiplier"])]
            rows.append({
                "dataset": dataset, "size": t.get("size"), "n_params": n,
                "token_multiplier": float(t["token_multiplier"]), "lr": np.nan, "role": "target",
                "measured_loss": measured["val_loss"].iloc[0] if len(measured) else np.nan,
            })
    pred = pd.DataFrame(rows)
    if len(pred):
        by_ds = {f["dataset"]: f for f in fits}
        pred["predicted_loss"] = [
            overtraining_loss(r.n_params, r.token_multiplier, *(by_ds[r.dataset]["params"][p] for p in PARAMS))
            for r in pred.itertuples()
        ]
        pred["rel_error"] = (pred["predicted_loss"] - pred["measured_loss"]).abs() / pred["measured_loss"]
        pred["tokens"] = pred["n_params"] * pred["token_multiplier"]
        pred["flops"] = 6.0 * pred["n_params"] * pred["tokens"]
        pred.insert(0, "law", "overtraining")
    return fits, pred


def fits_table(fits: list[dict]) -> pd.DataFrame:
    """One row per fit: parameters and standard errors as columns, the rest as JSON."""
    return pd.DataFrame([
        {
            "law": f["law"], "dataset": f["dataset"], "formula": f["formula"], "n_points": f["n_points"],
            "sse": f["sse"],
            **{p: f["params"][p] for p in PARAMS},
            **{f"{p}_stderr": f["stderr"][p] for p in PARAMS},
            "eta": f["compute_form"]["eta"],
            "fit_on": json.dumps(f["fit_on"]),
        }
        for f in fits
    ])
