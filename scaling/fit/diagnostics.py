"""Fit diagnostics that speak up: what is wrong with a fit or its predictions, and which runs would fix it.

:func:`diagnose` checks one fitted law against the points of its group and its
predictions. Each finding is one sentence that ends with the fix: the runs to
add. The checks:

- a parameter whose standard error is half its value or more (not identified by the fit set, :data:`IDENTIFIED`);
- fewer than two fit points per parameter;
- a measured loss below the fitted irreducible loss E (loss laws);
- a fit point trained on its data more than once (loss laws: the law counts every token as fresh);
- an error-law ceiling ε below the error of chance (downstream law);
- a fit point whose best learning rate is the edge of its sweep (loss laws: its loss may be too high;
  the optimal-LR law: η* may lie beyond it);
- intervals not calibrated on any run outside the fit set;
- predictions that extrapolate beyond the distances the calibration tested, in
  either direction (or, uncalibrated, more than :data:`FAR` times beyond the
  fitted compute).

Standard errors come from the bootstrap for Huber fits: without it (``resamples=0``)
they are NaN, and the identifiability check has nothing to test.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from scaling.fit.calibration import MIN_SCORES, UNTESTED_GROWTH
from scaling.fit.laws import LAWS
from scaling.fit.result import FitResult

FAR = 10.0  # an uncalibrated prediction beyond FAR × the fit set's largest compute is flagged


def _point(row) -> str:
    name = row.get("size") if isinstance(row.get("size"), str) else row.get("model")
    label = name if isinstance(name, str) else f"N={row['n_params']:.3g}"
    return f"{label} at M={row['token_multiplier']:g}"


def _fix_identifiability(law: str) -> str:
    if law == "downstream":
        return "add runs whose losses spread wider (smaller and larger models) to the error law's fit set"
    if law in ("overtraining", "chinchilla"):
        return ("add fit runs that vary N and D independently: more sizes at a second token multiplier "
                "(e.g. every fit size at M = 20 and M = 80)")
    return "add points that vary the inputs independently"


IDENTIFIED = 0.5
"""A parameter is identified when its standard error is below this share of its magnitude: its 95% interval then
excludes zero and spans less than a factor of ~3 around it, so the fit set pins it down."""


def identified(value: float, stderr: float) -> bool:
    """Whether a parameter is identified: its standard error below :data:`IDENTIFIED` of its magnitude."""
    return stderr < IDENTIFIED * abs(value)


def diagnose(fit: FitResult, points: pd.DataFrame, fit_mask, predictions: pd.DataFrame,
             chance_error: float | None = None) -> list[str]:
    """The findings about ``fit``, fitted on ``points[fit_mask]`` of its group, and its ``predictions`` (one row
    per point, with ``role``, ``compute_ratio`` and ``extrapolation_up``)."""
    law, p = fit.law, LAWS[fit.law].params
    out = []
    # a power law's prefactor is fitted in log space, where its standard error says how far log N = 0 is: not checked
    checked = [name for name in p if not (fit.interval_method == "t" and name == p[0])]
    loose = [name for name in checked if np.isfinite(fit.stderr[name])
             and not identified(fit.params[name], fit.stderr[name])]
    if loose:
        out.append(f"{', '.join(loose)} not identified (standard error {IDENTIFIED:.0%} of the value or more): the "
                   f"fit set cannot tell the law's terms apart; {_fix_identifiability(law)}")
    if fit.n_points < 2 * len(p):
        out.append(f"{fit.n_points} fit points for {len(p)} parameters (fewer than two per parameter): the fit "
                   f"nearly interpolates them; add {2 * len(p) - fit.n_points} or more runs to the fit set")
    fitted = points[np.asarray(fit_mask)]
    if law in ("overtraining", "chinchilla") and "loss" in points:
        below = points[points["loss"] < fit.params["E"]]
        if len(below):
            out.append(f"{len(below)} measured loss(es) below the fitted irreducible loss E = {fit.params['E']:.4g} "
                       f"(lowest {below['loss'].min():.4g}): the fit set cannot pin E down; add larger models or "
                       f"longer runs to the fit set")
    if law in ("overtraining", "chinchilla") and "epochs" in fitted:
        repeated = fitted[fitted["epochs"] > 1].sort_values("epochs", ascending=False)
        if len(repeated):
            worst = ", ".join(f"{_point(r)} ({r['epochs']:.2g} epochs)" for _, r in repeated.head(3).iterrows())
            out.append(f"{len(repeated)} fit point(s) see their training data more than once ({worst}): the law "
                       f"counts every token as fresh, and a repeated one is worth less (nearly as much up to about "
                       f"4 epochs, Muennighoff et al. 2023, arXiv 2305.16264); give the dataset more text, or "
                       f"train those sizes at a smaller M")
    if law in ("overtraining", "chinchilla", "optimal_lr") and "lr_edge" in fitted:
        edge = fitted[fitted["lr_edge"].isin(["high", "low"])]
        if len(edge):
            beyond = ", ".join(f"{_point(r)} (lr {r['lr']:g}: try {r['lr'] * (2 if r['lr_edge'] == 'high' else 0.5):g})"
                               for _, r in edge.iterrows())
            cost = "η* may lie beyond it" if law == "optimal_lr" else "their loss may be too high"
            out.append(f"the best learning rate of {len(edge)} fit point(s) is the edge of its sweep, so {cost}: "
                       f"{beyond}; extend the sweep there")
    if law == "downstream" and chance_error is not None and fit.params["epsilon"] < chance_error:
        out.append(f"the error law's ceiling ε = {fit.params['epsilon']:.3g} is below the error of chance "
                   f"({chance_error:.3g}): the law says a model that knows nothing beats guessing; add runs of "
                   f"higher loss (smaller or shorter) and lower loss to the error law's fit set")
    if law == "optimal_lr":
        return out
    cal = fit.calibration
    unseen = predictions[predictions["role"] != "fit"]
    if cal is None:
        measured = int(unseen.get("measured_loss", pd.Series(dtype=float)).notna().sum())
        out.append(f"intervals not calibrated: fewer than {MIN_SCORES} errors of the law at points it was not "
                   f"fitted on ({measured} measured run(s) outside the fit set, and the fit set too small for "
                   f"enough extrapolation folds), so the intervals assume the law is right (they cover parameter "
                   f"uncertainty and run noise only); measure at least {max(MIN_SCORES - measured, 1)} more runs "
                   f"outside the fit set (other M at the fit sizes) to calibrate them")
        far = unseen[unseen["compute_ratio"] > FAR]
    else:
        up, down = cal.max_up, cal.max_down
        far = unseen[(unseen["extrapolation_up"] > up + 1e-9) | (unseen["extrapolation_down"] > down + 1e-9)]
    if len(far):
        worst = far.loc[far["compute_ratio"].idxmax()]
        beyond = ("treat their intervals as a lower bound" if cal is None or cal.space != "log" else
                  "beyond the tested distances their intervals assume the error grows at a prior rate "
                  f"(κ↑ {UNTESTED_GROWTH['kappa_up']:g}, κ↓ {UNTESTED_GROWTH['kappa_down']:g} per decade of "
                  "log loss), which no run of this fit has checked")
        tested = ("" if cal is None else
                  f" (its calibration tested distances up to {up:.2g} decades beyond the fit set towards larger "
                  f"N or M and {down:.2g} towards smaller; these go up to {far['extrapolation_up'].max():.2g} and "
                  f"{far['extrapolation_down'].max():.2g})")
        out.append(f"{len(far)} prediction(s) extrapolate beyond what was tested{tested}, up to "
                   f"{worst['compute_ratio']:.3g}× the largest fitted compute ({_point(worst)}): "
                   f"{beyond}; add runs between the fit set and them")
    return out
