"""The downstream law Err(L) = ε − k·exp(−γ·L) of Gadre et al. (2024), and its chaining to a loss law.

The paper fits it with ``scipy.optimize.curve_fit`` from curve_fit's default
start (ε = k = γ = 1), unbounded, on the runs of the loss fit plus the 1.4B
model at M = 20, and predicts a run's error from its *predicted* loss:
Err(L̂(N, M)). :func:`predict_chained` does the same, and when both fits were
bootstrapped with the same run weights (same table, same seed) it propagates
both fits' uncertainty, resample by resample, into an interval on the error.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from scaling.fit.bootstrap import noise_draws, percentile_interval, refits, robust_scale
from scaling.fit.estimators import FitError, check_data, check_distinct, least_squares, one_blas_thread
from scaling.fit.laws import LAWS, downstream_error
from scaling.fit.result import FitResult

PARAMS = LAWS["downstream"].params  # epsilon, k, gamma
STREAM = list(LAWS).index("downstream")
PAPER_START = (1.0, 1.0, 1.0)  # curve_fit's default p0, which the paper's code uses


def _law(L, epsilon, k, gamma):
    return downstream_error(L, epsilon, k, gamma)


def _refit(L, err, popt, weights) -> np.ndarray:
    """The law refitted from ``popt`` under run weights (a bootstrap resample), by least squares in a
    parametrization that stays well conditioned: Err(L) = A − B·expm1(−γ·(L − L̄))/γ, with A the error and B its
    slope at the mean loss L̄ (ε = A + B/γ, k = B·e^{γL̄}/γ). The same law and minimum; but where the fit set spans
    too little loss for the curvature to show (γ → 0, ε and k growing together), curve_fit in (ε, k, γ) crawls
    along that valley for ~500 evaluations (the smoke study's), and in (A, B, γ) converges in a few dozen."""
    centre = float(np.mean(L))

    def centred(L, A, B, gamma):
        x = L - centre
        return A - B * (np.expm1(-gamma * x) / gamma if gamma != 0 else -x)
    epsilon, k, gamma = popt
    at_centre = k * np.exp(-gamma * centre)
    A, B, gamma = least_squares(centred, L, err, [(epsilon - at_centre, gamma * at_centre, gamma)],
                                weights=weights)[0]
    return np.array([A + B / gamma, B * np.exp(gamma * centre) / gamma, gamma])


@one_blas_thread
def fit_downstream(L, err, *, starts=(PAPER_START,), resamples: int = 0, seed: int = 0, scheme: str = "bayesian",
                   weights: np.ndarray | None = None, level: float = 0.95) -> FitResult:
    """Fit Err(L) = ε − k·exp(−γ·L) by least squares (the paper's procedure); bootstrap as in :mod:`scaling.fit.bootstrap`.

    ``err`` is the average top-1 error, a fraction in [0, 1]; ``L`` the loss of
    the same runs.
    """
    (L,) = check_data(loss=L)
    (err,) = check_data(positive=False, error=err)
    if np.any((err < 0) | (err > 1)):
        raise FitError("the downstream error must be a fraction in [0, 1]; got values outside it")
    check_distinct("downstream", len(PARAMS), L, hint="fit the error law on more runs")
    popt, pcov, sse, converged = least_squares(_law, L, err, list(starts))

    boot = refits(lambda w: _refit(L, err, popt, w), list(L), len(PARAMS), resamples=resamples, seed=seed,
                  scheme=scheme, weights=weights)
    se = np.sqrt(np.clip(np.diag(pcov), 0, None)) if np.all(np.isfinite(pcov)) else np.full(len(PARAMS), np.inf)
    noise_sd = robust_scale(err - _law(L, *popt), len(PARAMS))
    return FitResult(
        law="downstream", method="gadre", params=dict(zip(PARAMS, map(float, popt))),
        stderr=dict(zip(PARAMS, map(float, se))), n_points=len(L), objective=sse, level=level,
        interval_method="bootstrap" if boot else "none", samples=boot[0] if boot else None,
        noise=noise_draws(noise_sd, len(boot[0]), seed, STREAM) if boot else None, noise_sd=noise_sd,
        meta={"starts_converged": converged},
    )


def predict_chained(loss_fit: FitResult, error_fit: FitResult, *inputs, level: float | None = None,
                    rows=None) -> pd.DataFrame:
    """Loss and downstream error at ``inputs`` (those of ``loss_fit``'s law), the error from the predicted loss.

    Columns ``predicted_loss`` and ``predicted_error``, each with a new-run
    interval (``_lo``/``_hi``) and the law's interval (``_law_lo``/``_law_hi``).
    With a calibration of the chained prediction (``error_fit.calibration``,
    see :mod:`scaling.fit.calibration`; ``rows`` as for :meth:`FitResult.predict`),
    the error interval is calibrated at the inputs' distance beyond the loss
    fit set. Otherwise, with bootstrap samples in both fits (the same number of
    resamples), resample b predicts the error as Err_b(L̂_b(x) + ε_b) + ε′_b:
    the loss under refit b plus a loss noise draw, mapped through error refit b,
    plus an error noise draw (no draws for the law's interval); the interval is
    the percentile interval of those. Without either the bounds are NaN. An
    error is a fraction: the bounds are clipped to [0, 1].
    """
    level = loss_fit.level if level is None else level
    out = pd.DataFrame()
    for kind, suffix in (("prediction", ""), ("confidence", "_law")):
        loss = loss_fit.predict(*inputs, level=level, interval=kind, rows=rows)
        out["predicted_loss"] = loss["predicted"]
        out[f"predicted_loss{suffix}_lo"], out[f"predicted_loss{suffix}_hi"] = loss["lo"], loss["hi"]
    predicted = LAWS["downstream"](out["predicted_loss"].to_numpy(), **error_fit.params)
    out["predicted_error"] = predicted
    for kind, suffix in (("prediction", ""), ("confidence", "_law")):
        lo = hi = np.full(len(out), np.nan)
        if error_fit.calibration is not None:
            lo, hi = error_fit.calibration.interval(predicted, *loss_fit.extrapolation(*inputs), level, kind, rows)
        elif loss_fit.samples is not None and error_fit.samples is not None:
            if len(loss_fit.samples) != len(error_fit.samples):
                raise ValueError("the loss and error fits were bootstrapped with different numbers of resamples")
            noise = kind == "prediction"
            losses = loss_fit.predict_samples(*inputs, noise=noise)  # resamples × points
            with np.errstate(all="ignore"):
                errors = np.stack([downstream_error(losses[b], *error_fit.samples[b]) for b in range(len(losses))])
            if noise:
                errors += error_fit.noise[:, None]
            lo, hi = percentile_interval(errors, level)
        out[f"predicted_error{suffix}_lo"], out[f"predicted_error{suffix}_hi"] = np.clip(lo, 0, 1), np.clip(hi, 0, 1)
    return out
