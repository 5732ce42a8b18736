"""Bootstrap over runs: refit a law under random run weights; intervals from the refits.

Each resample gives every run a random weight with mean 1 and variance 1 and
refits the law with those weights, starting from the fit to the full data:

- ``bayesian`` (default): Exp(1) weights, Rubin's (1981) Bayesian bootstrap,
  the smooth version of resampling runs with replacement. Every run keeps a
  positive weight, so a law fitted on few runs (the over-training law has 4
  parameters and is fitted on 5) never loses the points it needs.
- ``poisson``: Poisson(1) counts, the Poisson bootstrap (Hanley & MacGibbon
  2006), which approximates resampling runs with replacement. A resample that
  leaves fewer distinct points than the law needs is counted as failed.

Weights are drawn per row of the data from the seed, so two laws fitted on the
same table with the same seed (a loss law and the downstream law chained to it)
see the same weight for the same run, and a chained prediction propagates both
fits' uncertainty jointly. Results depend only on the seed.

A prediction interval adds, to the law's prediction under each refit, one
draw of run noise at a robust scale of the fit's residuals (:func:`robust_scale`).
These intervals describe the law's parameter uncertainty under the assumption
that the law is right; where the study has runs to test it on, predictions use
intervals calibrated on the law's out-of-sample errors instead
(:mod:`scaling.fit.calibration`).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import warnings
from concurrent.futures import ProcessPoolExecutor

import numpy as np

SCHEMES = ("bayesian", "poisson")
_WEIGHTS_STREAM = 0
_processes = 1  # how many processes refit the resamples (see :func:`processes`)
_task = None  # in a forked refitting process: (refit, weights) of its replicate


def run_weights(n_runs: int, resamples: int, seed: int, scheme: str = "bayesian") -> np.ndarray:
    """A (resamples × n_runs) matrix of run weights, a pure function of its arguments."""
    if scheme not in SCHEMES:
        raise ValueError(f"unknown bootstrap scheme {scheme!r}; use one of {SCHEMES}")
    rng = np.random.default_rng([seed, _WEIGHTS_STREAM])
    if scheme == "bayesian":
        return rng.standard_exponential((resamples, n_runs))
    return rng.poisson(1.0, (resamples, n_runs)).astype(float)


@contextlib.contextmanager
def processes(n: int):
    """Within this block, :func:`replicate` splits the resamples over ``n`` forked processes (the fit stage gets its
    job's threads this way). The samples are the same as with one: each resample's refit depends only on its
    weights."""
    global _processes
    previous, _processes = _processes, max(1, int(n))
    try:
        yield
    finally:
        _processes = previous


def _set_task(refit, weights) -> None:
    """A forked refitting process's task (fork passes the closure ``refit`` without pickling it)."""
    global _task
    _task = (refit, weights)


def _refit_rows(rows, task=None) -> list:
    """The refit of each of ``rows`` of the weights of ``task`` (default: this process's), or None where it raised."""
    refit, weights = task or _task
    out = []
    for i in rows:
        try:
            out.append(np.asarray(refit(weights[i]), dtype=float))
        except (ValueError, RuntimeError, FloatingPointError):
            out.append(None)
    return out


def replicate(refit, weights: np.ndarray, n_params: int, distinct_ok) -> np.ndarray:
    """``refit(w)`` for each row ``w`` of ``weights``: a (resamples × n_params) array.

    ``distinct_ok(w)`` says whether the points with positive weight still
    determine the law; a resample where it is false, or where the refit raises or
    returns non-finite values, is a row of NaN. More than 10% failed resamples
    draw a warning. Inside :func:`processes`, the rows are split over forked processes
    (a process that dies raises ``BrokenProcessPool``).
    """
    out = np.full((len(weights), n_params), np.nan)
    rows = [i for i, w in enumerate(weights) if distinct_ok(w)]
    if _processes > 1 and len(rows) > 1:
        with ProcessPoolExecutor(_processes, mp_context=multiprocessing.get_context("fork"), initializer=_set_task,
                                 initargs=(refit, weights)) as pool:
            thetas = [t for part in pool.map(_refit_rows, np.array_split(rows, _processes)) for t in part]
    else:
        thetas = _refit_rows(rows, (refit, weights))
    for i, theta in zip(rows, thetas):
        if theta is not None and np.all(np.isfinite(theta)):
            out[i] = theta
    failed = int(np.isnan(out[:, 0]).sum())
    if failed > 0.1 * len(out):
        warnings.warn(f"{failed} of {len(out)} bootstrap resamples failed (too few distinct points with "
                      f"positive weight, or no convergence); the intervals rest on the rest")
    return out


def robust_scale(residuals, n_params: int) -> float:
    """Run-to-run noise estimated from a fit's residuals, robustly: the MAD scale (``statsmodels.robust.mad``,
    consistent with the standard deviation for normal errors), inflated by √(n/(n−p)) for the parameters fitted.

    A robust scale, like the Huber fit itself, is not dominated by a few runs that
    fit badly (resampling raw residuals let two outlying runs set every interval's
    width). An exact fit (n ≤ p) leaves no residual to learn the noise from: 0.
    """
    from statsmodels.robust.scale import mad

    r = np.asarray(residuals, dtype=float)
    n = len(r)
    if n <= n_params:
        return 0.0
    return float(mad(r) * np.sqrt(n / (n - n_params)))


def noise_draws(sd: float, resamples: int, seed: int, stream: int) -> np.ndarray:
    """One normal draw of run noise with standard deviation ``sd`` per resample; ``stream`` separates laws."""
    return sd * np.random.default_rng([seed, 1 + stream]).standard_normal(resamples)


def percentile_interval(samples: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    """The equal-tailed percentile interval of each column, ignoring failed (NaN) resamples."""
    tail = 100 * (1 - level) / 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanpercentile(samples, tail, axis=0), np.nanpercentile(samples, 100 - tail, axis=0)


def refits(refit, point_keys, n_params: int, *, resamples: int = 0, seed: int = 0, scheme: str = "bayesian",
           weights: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray] | None:
    """The bootstrap of one fit: ``(samples, weights)``, or None when there is nothing to resample.

    ``weights`` (resamples × runs), when given, overrides ``resamples``/``seed``/``scheme``:
    that is how a chained law reuses the run weights of the law it is chained to.
    A resample is refitted only if the runs with positive weight still make
    ``n_params + 1`` distinct points (``point_keys``: one key per run).
    """
    if weights is None:
        if resamples <= 0:
            return None
        weights = run_weights(len(point_keys), resamples, seed, scheme)
    keys = np.asarray([hash(k) for k in point_keys])
    samples = replicate(refit, weights, n_params, lambda w: len(np.unique(keys[w > 0])) > n_params)
    return samples, weights
