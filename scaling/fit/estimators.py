"""The three estimators every law here is fitted with, each a thin layer over scipy or statsmodels.

- :func:`least_squares`: nonlinear least squares (``scipy.optimize.curve_fit``)
  from each start of a grid; the lowest weighted sum of squares wins. Gadre et
  al. (2024) fit their laws this way.
- :func:`huber_log`: the Huber loss (δ = 1e-3) of log residuals, with the
  prediction written as a log-sum-exp of power-law terms, minimized by L-BFGS-B
  from a grid (Hoffmann et al. 2022, Approach 3; Besiroglu et al. 2024).
- :func:`loglinear`: ordinary least squares of log y on log x
  (``statsmodels``), for power laws such as N_opt(C) and η*(N, D).

Every estimator takes per-run weights, so a bootstrap is a reweighted refit
(see :mod:`scaling.fit.bootstrap`).
"""

from __future__ import annotations

import itertools
import warnings

import numpy as np
from scipy.optimize import OptimizeWarning, curve_fit, minimize
from threadpoolctl import threadpool_limits

from scaling.fit.fit_set import least_points

# Fits (and their bootstraps) run with one BLAS thread: the problems are tiny, and on a small machine
# OpenBLAS's idle threads spin on the cores the fit needs (measured: twice the CPU time for no gain).
one_blas_thread = threadpool_limits.wrap(limits=1, user_api="blas")


class FitError(ValueError):
    """A fit that cannot be made or did not converge; the message says why."""


class FitWarning(UserWarning):
    """A diagnostic of a fit (:mod:`scaling.fit.diagnostics`), also kept in its ``meta["diagnostics"]``."""


def least_squares(f, X, y, starts, *, weights=None, bounds=None, maxfev: int = 10_000):
    """Weighted least squares of ``f(X, *p)`` to ``y`` from each start; return the best.

    Returns ``(popt, pcov, sse, n_converged)``; ``sse`` is the weighted sum of
    squared residuals and ``pcov`` curve_fit's covariance at ``popt``. Starts
    from which curve_fit fails are skipped; a :class:`FitError` is raised when
    every start fails. Points with weight 0 are left out.
    """
    X, y = np.asarray(X, dtype=float), np.asarray(y, dtype=float)
    w = np.ones_like(y) if weights is None else np.asarray(weights, dtype=float)
    keep = w > 0
    X, y, w = X[..., keep], y[keep], w[keep]
    sigma = None if weights is None else 1.0 / np.sqrt(w)
    best, converged = None, 0
    for p0 in starts:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", (OptimizeWarning, RuntimeWarning))
            try:
                popt, pcov = curve_fit(f, X, y, p0=p0, sigma=sigma, maxfev=maxfev,
                                       **({} if bounds is None else {"bounds": bounds}))
            except (RuntimeError, ValueError):
                continue
            sse = float(np.sum(w * (f(X, *popt) - y) ** 2))
        if not np.isfinite(sse):
            continue
        converged += 1
        if best is None or sse < best[2]:
            best = (popt, pcov, sse)
    if best is None:
        raise FitError(f"the least-squares fit did not converge from any of {len(starts)} starts")
    return (*best, converged)


def lse_design(logN, logD, shared_exponent: bool = False) -> np.ndarray:
    """X, shape (3, n, p): the log of each term of L = exp(a)·N^−α + exp(b)·D^−β + exp(e) is linear in θ, z_k = X_k θ.

    ``theta`` is (a, α, b, β, e), or (a, α, b, e) when ``shared_exponent`` ties β = α.
    """
    one, zero = np.ones_like(logN, dtype=float), np.zeros_like(logN, dtype=float)
    if shared_exponent:
        terms = [(one, -logN, zero, zero), (zero, -logD, one, zero), (zero, zero, zero, one)]
    else:
        terms = [(one, -logN, zero, zero, zero), (zero, zero, one, -logD, zero), (zero, zero, zero, zero, one)]
    return np.array([np.column_stack(columns) for columns in terms])


def lse_huber_objective(theta, X, logL, weights, delta):
    """Summed Huber loss of log residuals, and its gradient, for the log prediction log Σ_k exp(X_k θ) (X: lse_design).

    The log prediction is a log-sum-exp of the terms' logs, so the fit works on
    log scales and keeps every term positive. Huber(r) = r²/2 for |r| ≤ δ, else
    δ·(|r| − δ/2), which is c²/2 + δ·(|r| − c) with c = min(|r|, δ).
    """
    Z = X @ theta
    m = Z.max(axis=0)
    T = np.exp(Z - m)
    total = T.sum(axis=0)
    r = m + np.log(total) - logL
    abs_r = np.abs(r)
    c = np.minimum(abs_r, delta)
    psi = weights * np.copysign(c, r) / total  # w·dHuber/dr, times d(log-sum-exp)/dz_k over exp(z_k − m)
    return float(weights @ (c * (0.5 * c) + delta * (abs_r - c))), (psi * T).reshape(-1) @ X.reshape(-1, X.shape[-1])


def hoffmann_grid(shared_exponent: bool = False) -> np.ndarray:
    """The initialization grid of Hoffmann et al. (2022), Appendix D.2, in (a, α, b, β, e) order.

    a, b ∈ {0, 5, …, 25}, α, β ∈ {0, 0.5, …, 2}, e ∈ {−1, −0.5, …, 1}: 4,500
    starts (900 with a shared exponent).
    """
    a = b = np.arange(0.0, 30.0, 5.0)
    alpha = beta = np.arange(0.0, 2.5, 0.5)
    e = np.arange(-1.0, 1.5, 0.5)
    axes = (a, alpha, b, e) if shared_exponent else (a, alpha, b, beta, e)
    return np.array(list(itertools.product(*axes)))


def huber_log(logN, logD, logL, starts, *, shared_exponent: bool = False, delta: float = 1e-3,
              weights=None, screen: int | None = 100):
    """Minimize :func:`lse_huber_objective` with L-BFGS-B (exponents ≥ 0) from the starts; return ``(theta, objective)``.

    ``screen`` runs L-BFGS-B only from the ``screen`` starts with the lowest
    objective (all starts with ``screen=None``): on the 240 Chinchilla points the
    best of Hoffmann's 4,500 starts reaches the same minimum as the full grid. The
    winner is then polished with tight tolerances, and last refined as a bootstrap
    refit is (:func:`huber_log_refit`), where that lowers the objective.
    """
    w = np.ones_like(logL) if weights is None else np.asarray(weights, dtype=float)
    args = (lse_design(logN, logD, shared_exponent), logL, w, delta)
    bounds = _exponent_bounds(shared_exponent)
    starts = np.asarray(starts, dtype=float)
    if screen is not None and len(starts) > screen:
        start_values = np.array([lse_huber_objective(s, *args)[0] for s in starts])
        starts = starts[np.argsort(start_values, kind="stable")[:screen]]
    best = None
    for s in starts:
        res = minimize(lse_huber_objective, s, args=args, jac=True, method="L-BFGS-B", bounds=bounds)
        if np.isfinite(res.fun) and (best is None or res.fun < best.fun):
            best = res
    if best is None:
        raise FitError(f"the Huber fit did not converge from any of {len(starts)} starts")
    polished = minimize(lse_huber_objective, best.x, args=args, jac=True, method="L-BFGS-B", bounds=bounds,
                        options={"ftol": 1e-15, "gtol": 1e-12, "maxiter": 10_000})
    theta, objective = (polished.x, polished.fun) if polished.fun <= best.fun else (best.x, best.fun)
    # finished as a bootstrap refit is (huber_log_refit), so that the refits do not end below the point fit
    refined = huber_log_refit(logN, logD, logL, theta, w, shared_exponent=shared_exponent, delta=delta)
    refined_objective = lse_huber_objective(refined, *args)[0]
    return (refined, float(refined_objective)) if refined_objective < objective else (theta, float(objective))


def _exponent_bounds(shared_exponent: bool) -> list:
    """L-BFGS-B bounds of (a, α, b[, β], e): the exponents are non-negative (loss does not grow with N or D)."""
    return [(None, None), (0, None), (None, None)] + ([] if shared_exponent else [(0, None)]) + [(None, None)]


def huber_log_refit(logN, logD, logL, theta, weights, *, shared_exponent: bool = False, delta: float = 1e-3):
    """:func:`huber_log` refitted from its solution ``theta`` under run weights ``weights`` (a bootstrap resample).

    L-BFGS-B from ``theta`` on the same objective with its default tolerances, instead of :func:`huber_log`'s polish
    to ``ftol = 1e-15``, posed so that those tolerances are sane and few steps reach them:

    - the log inputs are centred (the intercepts become those at the mean N and D, no longer nearly collinear with
      the exponents), and the objective is in units of its value at ``theta`` (L-BFGS-B's ``ftol`` is absolute below
      1, and a Huber loss of log residuals is ~1e-6);
    - the parameters are whitened by the Gauss–Newton matrix at ``theta`` with equal weights, G = Jᵀ·J·mean(w), J the
      log residuals' derivatives (equal weights, so that runs a resample weights 0 still count and G stays regular):
      θ = θ₀ + S·u with Sᵀ·G·S = I (but in directions G hardly curves, below), so that the objective curves about as
      much in every direction of u. Whitened, the exponents' bounds no longer bound single variables, so this refit
      is unbounded; one that ends with a negative exponent is redone with the bounds, unwhitened, and a fit whose
      exponent is on its bound (0) is refitted so from the start.

    On the Figure 1 fit set of Gadre et al. a refit takes ~33 objective evaluations (~50 unwhitened, ~190 polished);
    its objective is within 0.4% of the polished refit's, and below it where the polish stopped short
    (benchmarks/bench_fit.py prints both). On the smoke study's fit set, whose E the runs do not identify, unwhitened
    refits stopped short in 13 of 1,000 resamples (objective up to 85% above the whitened refit's there).
    """
    centre_N, centre_D = float(np.mean(logN)), float(np.mean(logD))
    beta = 1 if shared_exponent else 3  # where the exponent of D is in theta
    x0 = np.array(theta, dtype=float)
    x0[0] -= x0[1] * centre_N  # the intercepts at the mean N and D
    x0[2] -= x0[beta] * centre_D
    X = lse_design(np.asarray(logN) - centre_N, np.asarray(logD) - centre_D, shared_exponent)
    w = np.asarray(weights, dtype=float)
    start = lse_huber_objective(x0, X, logL, w, delta)[0]
    if start == 0:  # every run weighted 0, or the law through every point: nothing to refit
        return np.array(theta, dtype=float)
    w = w / start  # the objective in units of its value at theta
    args = (X, logL, w, delta)
    Z = X @ x0
    share = np.exp(Z - Z.max(axis=0))
    J = np.einsum("kn,knp->np", share / share.sum(axis=0), X)  # d(log prediction)/dθ: each term's share times X_k
    eig, V = np.linalg.eigh(J.T @ J * w.mean())
    # a direction G hardly curves (a term too small to matter at any point, e.g. E → 0) is scaled as if it curved a
    # millionth as much as the most curved: less, and L-BFGS-B's steps along it ran far and ended higher. Along such
    # a direction the objective is flat, so where a refit ends on it (the log of that E) depends on this floor.
    S = V / np.sqrt(np.maximum(eig, eig.max() * 1e-6))

    def whitened(u):
        value, grad = lse_huber_objective(x0 + S @ u, *args)
        return value, S.T @ grad

    bounds = _exponent_bounds(shared_exponent)

    def at_bound(x):  # an exponent on or below its bound
        return any(low is not None and value <= low for value, (low, _) in zip(x, bounds))

    x = None if at_bound(x0) else x0 + S @ minimize(whitened, np.zeros(len(x0)), jac=True, method="L-BFGS-B").x
    if x is None or at_bound(x):  # redone with the bounds, unwhitened
        x = minimize(lse_huber_objective, x0, args=args, jac=True, method="L-BFGS-B", bounds=bounds).x
    x[0] += x[1] * centre_N  # back to the intercepts at N = D = 1
    x[2] += x[beta] * centre_D
    return x


def loglinear(log_x, log_y, weights=None):
    """OLS (or WLS) of log y on [1, log x₁, …]: a power law y = k·Πxⱼ^aⱼ; returns the statsmodels result.

    Raises :class:`FitError` when the design is rank deficient (e.g. N and D
    perfectly collinear because every run has the same M) or leaves no residual
    degree of freedom.
    """
    import statsmodels.api as sm

    X = sm.add_constant(np.column_stack([np.asarray(v, dtype=float) for v in np.atleast_2d(log_x)]),
                        has_constant="add")
    if np.linalg.matrix_rank(X) < X.shape[1]:
        raise FitError("the inputs of the power law are collinear (e.g. N and D with a single token "
                       "multiplier), so its exponents cannot be told apart; vary the inputs independently")
    if len(log_y) <= X.shape[1]:
        raise FitError(f"a power law with {X.shape[1]} coefficients needs more than {X.shape[1]} points, "
                       f"got {len(log_y)}")
    model = sm.OLS(log_y, X) if weights is None else sm.WLS(log_y, X, weights=weights)
    return model.fit()


def check_data(positive: bool = True, **columns) -> list[np.ndarray]:
    """The columns as float arrays, after checking they are finite (and positive), naming what is wrong."""
    arrays = [np.atleast_1d(np.asarray(v, dtype=float)) for v in columns.values()]
    if len({len(a) for a in arrays}) > 1:
        raise FitError(f"{', '.join(columns)} have different lengths: {[len(a) for a in arrays]}")
    for name, a in zip(columns, arrays):
        bad = np.flatnonzero(~np.isfinite(a))
        if len(bad):
            raise FitError(f"the fit data contain NaN or infinite values in {name} (rows {bad[:5].tolist()}); "
                           f"drop those runs or fix their measurements")
        if positive and np.any(a <= 0):
            rows = np.flatnonzero(a <= 0)[:5].tolist()
            raise FitError(f"{name} must be positive, but rows {rows} are not")
    return arrays


def check_distinct(law: str, n_params: int, *keys, needed: int | None = None, hint: str = "") -> int:
    """The number of distinct points (rows of ``keys``); a :class:`FitError` when it is below ``needed``."""
    needed = least_points(n_params) if needed is None else needed
    distinct = len(set(zip(*(np.asarray(k).tolist() for k in keys))))
    if distinct < needed:
        raise FitError(f"the {law} law has {n_params} parameters but the fit set has only {distinct} distinct "
                       f"points; it needs at least {needed}" + (f": {hint}" if hint else ""))
    return distinct
