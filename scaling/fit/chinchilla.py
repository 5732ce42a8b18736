"""The three approaches of Hoffmann et al. (2022) to compute-optimal N and D.

- Approach 3 (:func:`fit_chinchilla`): fit L(N, D) = E + A·N^−α + B·D^−β
  (:func:`scaling.fit.laws.chinchilla_loss`) by minimizing the Huber loss (δ = 1e-3)
  of log L − log L̂, with L̂ written as the log-sum-exp of the three terms, by
  L-BFGS from their grid of initializations (Appendix D.2), as Besiroglu et al.
  (2024) did when they refitted it on points reconstructed from Figure 4. The fit
  implies N_opt(C) = G·(C/6)^(β/(α+β)) and D_opt(C) = G^−1·(C/6)^(α/(α+β)),
  G = (αA/(βB))^(1/(α+β)).
- Approach 1 (:func:`approach1`): the runs on the minimum-loss envelope of loss
  vs compute; N_opt(C) and D_opt(C) are power laws fitted to them.
- Approach 2 (:func:`approach2`): per IsoFLOP budget a parabola of loss in
  log N, fitted to the runs near the budget's best (``window`` decades of N
  around its lowest loss: far from the minimum, loss vs log N is not a
  parabola), whose minimum is N_opt at that budget; then the same power laws.

The power laws N_opt = k·C^a are fitted as lines in log space with statsmodels
OLS: Student-t intervals. Those treat each budget's N_opt as exact; Approach 2
with ``resamples`` > 0 also carries the uncertainty of the minima: a bootstrap
over runs refits every parabola and then the power law, and a prediction adds
the power law's scatter of the replicate (the percentile interval of those).
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from scaling.fit.bootstrap import noise_draws, refits, robust_scale, run_weights
from scaling.fit.estimators import (FitError, FitWarning, check_data, check_distinct, hoffmann_grid, huber_log,
                                huber_log_refit, loglinear, one_blas_thread)
from scaling.fit.laws import LAWS
from scaling.fit.result import FitResult
from scaling.train.flops import flops_6nd

PARAMS = LAWS["chinchilla"].params  # E, A, alpha, B, beta
STREAM = list(LAWS).index("chinchilla")
HOFFMANN_BUDGETS = (6e18, 1e19, 3e19, 6e19, 1e20, 3e20, 6e20, 1e21, 3e21)  # their nine IsoFLOP budgets (FLOPs)
WINDOW = 0.5  # Approach 2: decades of N around a budget's lowest loss that its parabola is fitted to
FAR_FROM_OPTIMAL = 1.0  # Approach 3: a run whose D/N is over 10^1× off the fitted optimum's is far from optimal


def _from_lse(theta) -> np.ndarray:
    """(a, α, b, β, e) of exp(a)·N^−α + exp(b)·D^−β + exp(e) → (E, A, α, B, β)."""
    a, alpha, b, beta, e = theta
    return np.array([np.exp(e), np.exp(a), alpha, np.exp(b), beta])


def compute_optimal_allocation(E, A, alpha, B, beta) -> dict[str, float]:
    """Exponents and prefactor of N_opt(C) = G·(C/6)^a, D_opt(C) = G^−1·(C/6)^b implied by L(N, D) (Eq. 4)."""
    return {"a": beta / (alpha + beta), "b": alpha / (alpha + beta),
            "G": (alpha * A / (beta * B)) ** (1 / (alpha + beta))}


@one_blas_thread
def fit_chinchilla(N, D, L, *, delta: float = 1e-3, starts=None, screen: int | None = 100, resamples: int = 0,
                   seed: int = 0, scheme: str = "bayesian", weights: np.ndarray | None = None,
                   level: float = 0.95) -> FitResult:
    """Approach 3: fit L(N, D) = E + A·N^−α + B·D^−β by Huber loss on log residuals from a grid.

    ``starts`` are (log A, α, log B, β, log E) rows, default Hoffmann's 4,500;
    ``screen`` runs L-BFGS-B from the best ``screen`` of them (all with None).
    With ``resamples > 0`` a bootstrap over runs (each refit starting from the
    full-data optimum) gives standard errors (its standard deviations) and
    percentile intervals.
    """
    N, D, L = check_data(n_params=N, tokens=D, loss=L)
    check_distinct("Chinchilla", len(PARAMS), N, D, hint="add runs with other sizes or token counts")
    logs = np.log(N), np.log(D), np.log(L)
    theta, objective = huber_log(*logs, hoffmann_grid() if starts is None else starts, delta=delta, screen=screen)

    def refit(w):
        return _from_lse(huber_log_refit(*logs, theta, w, delta=delta))

    popt = _from_lse(theta)
    params = dict(zip(PARAMS, map(float, popt)))
    diagnostics = far_from_optimal(N, D, params)
    noise_sd = robust_scale(logs[2] - np.log(LAWS["chinchilla"](N, D, **params)), len(PARAMS))
    boot = refits(refit, list(zip(N, D)), len(PARAMS), resamples=resamples, seed=seed, scheme=scheme,
                  weights=weights)
    se = np.nanstd(boot[0], axis=0, ddof=1) if boot else np.full(len(PARAMS), np.nan)
    return FitResult(
        law="chinchilla", method=f"huber-log (delta={delta:g})", params=params,
        stderr=dict(zip(PARAMS, map(float, se))), n_points=len(L), objective=objective, level=level,
        interval_method="bootstrap" if boot else "none", samples=boot[0] if boot else None,
        noise=noise_draws(noise_sd, len(boot[0]), seed, STREAM) if boot else None, noise_sd=noise_sd,
        residual_space="log", meta={"compute_optimal": compute_optimal_allocation(**params),
                                    **({"diagnostics": diagnostics} if diagnostics else {})},
    )


def far_from_optimal(N, D, params: dict) -> list[str]:
    """A warning when most runs train far (over 10×) from the fitted compute-optimal tokens per parameter.

    Approach 3 fits every run equally, so a fit dominated by runs far from the
    optimum can misplace it (Besiroglu et al. 2024 found the Huber fit sensitive
    to which runs it sees); the fix is runs near the optimal D/N at each budget.
    """
    opt = compute_optimal_allocation(**params)
    C = flops_6nd(np.asarray(N, dtype=float), np.asarray(D, dtype=float))
    n_opt = opt["G"] * (C / 6) ** opt["a"]
    off = np.abs(np.log10((np.asarray(D) / np.asarray(N)) / ((C / 6) / n_opt**2)))
    share = float(np.mean(off > FAR_FROM_OPTIMAL))
    if share <= 0.5:
        return []
    message = (f"{share:.0%} of the runs train more than 10× away from the fitted compute-optimal tokens per "
               f"parameter, so they, not runs near the optimum, dominate the fit; add runs near the optimal D/N "
               f"(about {np.median((C / 6) / n_opt**2):.3g} tokens per parameter here) at each budget")
    warnings.warn(message, FitWarning)
    return [message]


def fit_power_law(x, y, *, level: float = 0.95) -> FitResult:
    """y = k·x^a by OLS of log y on log x (statsmodels); t intervals for k, a and for predictions."""
    x, y = check_data(x=x, y=y)
    check_distinct("power", 2, x)
    res = loglinear([np.log(x)], np.log(y))
    k, a = float(np.exp(res.params[0])), float(res.params[1])
    se = np.sqrt(np.diag(res.cov_params()))
    return FitResult(
        law="power_law", method="ols-log", params={"k": k, "a": a}, stderr={"k": k * se[0], "a": float(se[1])},
        n_points=len(y), objective=float(res.ssr), level=level, interval_method="t", residual_space="log",
        loglinear={"cov": res.cov_params().tolist(), "sigma": float(np.sqrt(res.scale)), "dof": float(res.df_resid)},
    )


def _optimal_laws(C, N_opt, level) -> dict[str, FitResult]:
    C, N_opt = np.asarray(C, dtype=float), np.asarray(N_opt, dtype=float)
    return {"n_opt": fit_power_law(C, N_opt, level=level), "d_opt": fit_power_law(C, C / (6 * N_opt), level=level)}


def envelope(C, L) -> np.ndarray:
    """Mask of the runs on the minimum-loss envelope: lower loss than every run with less compute."""
    C, L = np.asarray(C, dtype=float), np.asarray(L, dtype=float)
    order = np.argsort(C, kind="stable")
    best_before = np.minimum.accumulate(np.concatenate([[np.inf], L[order][:-1]]))
    mask = np.zeros(len(C), dtype=bool)
    mask[order] = L[order] < best_before
    return mask


def approach1(N, D, L, *, level: float = 0.95) -> tuple[pd.DataFrame, dict[str, FitResult]]:
    """Approach 1: the envelope runs (C = 6·N·D, N) and power laws N_opt(C), D_opt(C) fitted to them.

    Hoffmann et al. take the envelope over every checkpoint of every training
    curve; pass checkpoints (N, tokens seen, loss) to do the same, or final runs
    only, as here for data that has no curves. Intervals are OLS t intervals.
    """
    N, D, L = check_data(n_params=N, tokens=D, loss=L)
    C = flops_6nd(N, D)
    on = envelope(C, L)
    points = pd.DataFrame({"flops": C[on], "n_params": N[on], "tokens": D[on], "loss": L[on]})
    return points, _optimal_laws(points["flops"], points["n_params"], level)


def budget_suggestion(C) -> str:
    """The compute values the runs cluster at, as a --budgets value: the median C of the runs in each peak (3 or more
    runs, no fewer than either neighbour) of their count per 0.1 decade of C."""
    C = np.asarray(C, dtype=float)
    bins = np.round(np.log10(C) * 10).astype(int)
    count = {b: int(n) for b, n in zip(*np.unique(bins, return_counts=True))}
    peaks = [b for b, n in count.items() if n >= 3 and n >= count.get(b - 1, 0) and n >= count.get(b + 1, 0)]
    return ",".join(f"{np.median(C[bins == b]):.2g}" for b in sorted(peaks))


def isoflop_minima(N, D, L, budgets=HOFFMANN_BUDGETS, tolerance_dex: float = 0.1, window: float = WINDOW,
                   weights=None, quiet: bool = False) -> pd.DataFrame:
    """Per compute budget, the N at the minimum of a parabola fitted to loss vs log10 N near the budget's best.

    A run belongs to the budget nearest its C = 6·N·D in log10, if within
    ``tolerance_dex``; the parabola is fitted to the runs within ``window``
    decades of N of the budget's lowest loss (``weights``: per run, for a
    bootstrap). A budget with fewer than 3 such runs, a parabola that opens
    downwards, or a minimum outside the sizes trained at that budget is skipped
    with a warning (none with ``quiet``).
    """
    N, D, L = check_data(n_params=N, tokens=D, loss=L)
    w = np.ones_like(L) if weights is None else np.asarray(weights, dtype=float)
    logC, logB = np.log10(flops_6nd(N, D)), np.log10(np.asarray(budgets, dtype=float))
    nearest = np.abs(logC[:, None] - logB[None, :]).argmin(axis=1)
    close = np.abs(logC - logB[nearest]) <= tolerance_dex
    say = (lambda _: None) if quiet else warnings.warn
    rows = []
    for j, budget in enumerate(budgets):
        sel = close & (nearest == j) & (w > 0)
        if sel.sum():
            x_best = np.log10(N[sel][np.argmin(L[sel])])
            sel &= np.abs(np.log10(N) - x_best) <= window
        x, y = np.log10(N[sel]), L[sel]
        if sel.sum() < 3:
            say(f"IsoFLOP budget {budget:.3g}: {sel.sum()} runs within {window:g} decades of its best, a parabola "
                f"needs 3; skipped")
            continue
        c2, c1, c0 = np.polyfit(x, y, 2, w=np.sqrt(w[sel]))
        x_min = -c1 / (2 * c2) if c2 > 0 else np.nan
        if not (x.min() <= x_min <= x.max()):
            say(f"IsoFLOP budget {budget:.3g}: the parabola has no minimum inside the sizes trained; skipped")
            continue
        n_opt = 10**x_min
        rows.append({"flops": float(budget), "n_runs": int(sel.sum()), "n_opt": n_opt,
                     "d_opt": budget / (6 * n_opt), "loss_min": c0 + c1 * x_min + c2 * x_min**2})
    if len(rows) < 3 and not quiet:
        suggestion = budget_suggestion(flops_6nd(N, D))
        raise FitError(f"only {len(rows)} IsoFLOP budgets have a usable minimum; N_opt(C) needs at least 3"
                       + (f"; fix: pass the budgets the runs were trained at, e.g. --budgets {suggestion}"
                          if suggestion else "; fix: train 3 or more runs at each of 3 or more budgets"))
    return pd.DataFrame(rows, columns=["flops", "n_runs", "n_opt", "d_opt", "loss_min"])


def approach2(N, D, L, budgets=HOFFMANN_BUDGETS, *, tolerance_dex: float = 0.1, window: float = WINDOW,
              level: float = 0.95, resamples: int = 0, seed: int = 0,
              scheme: str = "bayesian") -> tuple[pd.DataFrame, dict[str, FitResult]]:
    """Approach 2: IsoFLOP minima (:func:`isoflop_minima`) and power laws N_opt(C), D_opt(C) fitted to them.

    With ``resamples`` > 0, intervals come from a bootstrap over runs (run
    weights of ``scheme``, see :mod:`scaling.fit.bootstrap`): each resample refits the parabolas and the power laws, and a
    prediction adds a draw of that resample's scatter of the minima around its
    line (see the module doc); otherwise they are OLS t intervals.
    """
    minima = isoflop_minima(N, D, L, budgets, tolerance_dex, window)
    laws = _optimal_laws(minima["flops"], minima["n_opt"], level)
    if resamples > 0:
        N, D, L = check_data(n_params=N, tokens=D, loss=L)
        samples = {"n_opt": [], "d_opt": []}
        noise = {"n_opt": [], "d_opt": []}
        rng = np.random.default_rng([seed, 1 + STREAM])
        for w in run_weights(len(L), resamples, seed, scheme):
            m = isoflop_minima(N, D, L, budgets, tolerance_dex, window, weights=w, quiet=True)
            for name, y in (("n_opt", m["n_opt"]), ("d_opt", m["d_opt"])):
                if len(m) < 3:
                    samples[name].append([np.nan, np.nan])
                    noise[name].append(0.0)
                    continue
                res = loglinear([np.log(m["flops"].to_numpy())], np.log(y.to_numpy()))
                samples[name].append([np.exp(res.params[0]), res.params[1]])
                noise[name].append(np.sqrt(res.scale) * rng.standard_t(res.df_resid))
        for name, r in laws.items():
            r.samples, r.noise = np.array(samples[name]), np.array(noise[name])
            r.interval_method = "bootstrap"
            r.stderr = dict(zip(r.stderr, np.nanstd(r.samples, axis=0, ddof=1)))
    return minima, laws
