"""Fitting the over-training law L(N, M) of Gadre et al. (2024) (see :func:`scaling.fit.laws.overtraining_loss`).

Three methods, all from the same fit set:

- ``huber-log`` (default): Chinchilla's Approach 3 applied to this law:
  the Huber loss (δ = 1e-3) of log L − log L̂, with L̂ = exp(log a)·N^−α +
  exp(log c′)·D^−α + exp(log E) as a log-sum-exp, minimized by L-BFGS-B (α ≥ 0)
  from Hoffmann et al.'s grid with the exponents tied (α = −b; c′ = c·6^(b/2)).
  Every term stays positive, and a run that fits badly weighs linearly, not
  quadratically.
- ``gadre``: the paper's procedure (Appendix; ``scaling/fit/laws.py`` of
  mlfoundations/scaling): unconstrained least squares on loss with
  ``scipy.optimize.curve_fit`` from each of 128 starts, a, c ∈ {1e2, 3e2, 1e3,
  3e3}, b ∈ {−0.1, −0.3}, E ∈ {0, 1, 2, 10}; the lowest sum of squares wins.
- ``bounded``: the same, constrained to E, a, c ≥ 0 and b ≤ 0.

A parameter that ends on its bound is listed in ``meta["at_bound"]``. On the
paper's testbed (C4 validation loss; the 1.4B over-trained and 6.9B runs of
all three training sets, fitted as in Figure 1) the mean relative error of the
six loss predictions is 1.42% for ``huber-log`` and 1.48% for ``gadre`` and
``bounded`` (which find the same optimum there); see tests/test_gadre.py.
"""

from __future__ import annotations

import itertools

import numpy as np

from scaling.fit.bootstrap import noise_draws, refits, robust_scale
from scaling.fit.estimators import (FitError, check_data, check_distinct, hoffmann_grid, huber_log, huber_log_refit,
                                least_squares, one_blas_thread)
from scaling.fit.laws import LAWS, overtraining_loss
from scaling.fit.result import FitResult

PARAMS = LAWS["overtraining"].params  # E, a, b, c
METHODS = ("huber-log", "gadre", "bounded")
GADRE_STARTS = [
    (E, a, b, c)
    for a, c, b, E in itertools.product((1e2, 3e2, 1e3, 3e3), (1e2, 3e2, 1e3, 3e3), (-0.1, -0.3), (0, 1, 2, 10))
]
# Physical ranges: loss falls with N and D towards a non-negative floor.
BOUNDS = ([0.0, 0.0, -np.inf, 0.0], [np.inf, np.inf, 0.0, np.inf])
STREAM = list(LAWS).index("overtraining")  # separates this law's residual draws from other laws'


def _law(X, E, a, b, c):
    return overtraining_loss(X[0], X[1], E, a, b, c)


def _from_lse(theta) -> np.ndarray:
    """(a, α, b, e) of the log-sum-exp form exp(a)·N^−α + exp(b)·D^−α + exp(e) → (E, a, b, c)."""
    log_a, alpha, log_cd, e = theta
    return np.array([np.exp(e), np.exp(log_a), -alpha, np.exp(log_cd) * 6.0 ** (alpha / 2)])


@one_blas_thread
def fit_overtraining(N, M, L, *, method: str = "huber-log", resamples: int = 0, seed: int = 0,
                     scheme: str = "bayesian", weights: np.ndarray | None = None, level: float = 0.95,
                     starts=GADRE_STARTS) -> FitResult:
    """Fit L(N, M) = E + a·N^b + c·6^(b/2)·(M·N)^b to runs with N parameters, M tokens per parameter, loss L.

    ``method`` is ``huber-log``, ``gadre`` or ``bounded`` (see the module doc);
    ``starts`` are the (E, a, b, c) starts of the least-squares methods.
    With ``resamples > 0`` (or a ``weights`` matrix, see
    :func:`scaling.fit.bootstrap.refits`) a bootstrap over runs gives percentile
    intervals for the parameters and for predictions; each refit starts from the
    fit to all runs. Standard errors are curve_fit's (least-squares methods) or the
    bootstrap's standard deviation (``huber-log``).
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r} for the over-training law; use one of {METHODS}")
    N, M, L = check_data(n_params=N, token_multiplier=M, loss=L)
    check_distinct("over-training", len(PARAMS), N, M,
                   hint=f"fix: add model sizes at M = {', '.join(f'{m:g}' for m in sorted(set(M)))} (the fit set's) "
                        f"or widen the fit set (fit.fit_on)")
    X = np.vstack([N, M])
    bounds = BOUNDS if method == "bounded" else None
    meta: dict = {}
    if method == "huber-log":
        logs = np.log(N), np.log(N * M), np.log(L)
        theta, objective = huber_log(*logs, hoffmann_grid(shared_exponent=True), shared_exponent=True)
        popt = _from_lse(theta)

        def refit(w):
            return _from_lse(huber_log_refit(*logs, theta, w, shared_exponent=True))
    else:
        popt, pcov, objective, converged = least_squares(_law, X, L, starts, bounds=bounds)
        meta["starts_converged"] = converged

        def refit(w):
            return least_squares(_law, X, L, [popt], weights=w, bounds=bounds)[0]

    params = dict(zip(PARAMS, map(float, popt)))
    fitted = _law(X, *popt)
    log_space = method == "huber-log"
    noise_sd = robust_scale(np.log(L) - np.log(fitted) if log_space else L - fitted, len(PARAMS))
    boot = refits(refit, list(zip(N, M)), len(PARAMS), resamples=resamples, seed=seed, scheme=scheme,
                  weights=weights)
    if log_space:
        se = np.nanstd(boot[0], axis=0, ddof=1) if boot else np.full(len(PARAMS), np.nan)
    elif np.all(np.isfinite(pcov)):
        se = np.sqrt(np.clip(np.diag(pcov), 0, None))
    else:
        se = np.full(len(PARAMS), np.inf)
    if method != "gadre":
        meta["at_bound"] = [p for p, lo, hi in zip(PARAMS, *BOUNDS)
                            if any(np.isfinite(x) and abs(params[p] - x) <= 1e-6 * (1 + abs(x)) for x in (lo, hi))]
    if not np.isfinite(objective):
        raise FitError("the over-training fit did not converge (non-finite objective)")
    return FitResult(
        law="overtraining", method=method, params=params, stderr=dict(zip(PARAMS, map(float, se))),
        n_points=len(L), objective=float(objective), level=level,
        interval_method="bootstrap" if boot else "none",
        samples=boot[0] if boot else None,
        noise=noise_draws(noise_sd, len(boot[0]), seed, STREAM) if boot else None, noise_sd=noise_sd,
        residual_space="log" if log_space else "linear", meta=meta,
    )
