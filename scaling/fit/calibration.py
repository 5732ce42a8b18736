"""Prediction intervals calibrated on the law's own out-of-sample errors.

A law fitted to a handful of runs nearly interpolates them (the over-training
law has 4 parameters and is often fitted on 5 points), so neither its residuals
nor a bootstrap over its runs says how wrong it is elsewhere: on the testbed of
Gadre et al. (2024), the bootstrap's spread at a held-out point is uncorrelated
with the error there (Spearman ρ ≈ 0), and its "95%" intervals covered 35% of
the held-out points. What a prediction's error mostly is, is the law's misfit,
and that grows the further the prediction extrapolates beyond the runs it was
fitted on. This module measures that growth on the data itself.

**Scores.** An out-of-sample error ``e = ŷ − y`` (of log loss, or of a
fraction such as downstream error) of a point the fit did not see, with the
point's displacement from the fit set: the distance, in decades of the law's
inputs (log10 N and log10 M or D), from the convex hull of the fit set's
inputs, split into the part that goes beyond it upwards (``up``: larger N, M or
D) and downwards (``down``). Scores come from the runs of the study that are
measured but not in the fit set, and from *extrapolation folds* of the fit set
(refit on its cheaper runs, predict its dearer ones, see :func:`scaling.fit.tables`).

**Error model.** The errors are modelled as Student-t with ν = 4 (Lange, Little
& Taylor 1989: a robust default, so that a few badly-fitted runs widen the
tails instead of every interval) and a scale that grows with distance,

    s(up, down)² = s₀² + (κ↑·up)² + (κ↓·down)²,

fitted by maximum likelihood: s₀ is the error inside the fit set's range, κ↑
and κ↓ how much it grows per decade beyond it (under-training, M below the fit
set's, behaves differently from over-training and from larger N). A point's
interval is ŷ·exp(± t₄,q·s) (log space) or ŷ ± t₄,q·s. A score of a point
that is itself predicted is left out of that point's error model (leave-one-out), so
no interval has seen the value it is judged against; a downstream error law's
own fit set (which may be wider than the loss law's) gives no error score.

**Beyond the scores' reach.** The scores test distances up to the farthest of
them (``max_up``, ``max_down``); a prediction farther out extrapolates the fitted
growth where no score was. There the error of a log loss also grows at the
prior rate κ⁰ of :data:`UNTESTED_GROWTH`, as an independent term:

    s² += (κ↑⁰·(up − max_up)₊)² + (κ↓⁰·(down − max_down)₊)²

(a direction no score tested has κ ≈ 0 and only this growth). Without it,
scores tested to 0.2 decades that fit κ↑ ≈ 0 gave a "95%" interval of ±2.4% at
3.5 decades beyond (the two smallest IsoFLOP budgets of the Chinchilla points
predicting 1e24 FLOPs; ``benchmarks/plan.py``). The backtests of the README's
calibration table predict within the tested distances nearly everywhere: their
figures are the same with the term but for the Figure 1 targets' median
half-width (2.87% → 2.88%); ``benchmarks/calibration.py`` also backtests it
across seven splits of the Chinchilla points. Errors of a fraction (the
downstream law's) have no such prior and no term: an untested direction
borrows the other's κ, as before.

Backtests that decided this (the paper's fit design, all 8 validation sets × 3
training sets of the Gadre testbed, 712 held-out points, 95% intervals, one
error model per validation set while exploring; README, "Calibration"): normal
errors covered 92.3% (median half-width 6.6%), t with ν = 4 94.9% (7.5%), ν = 2
98.7% (10.1%); one distance for both directions (hull distance) covered 94% but
at 7–17% half-width on the Figure 1 targets instead of 3–4%. One model per fit,
what is used, covers 94.0% at 6.9%. The bootstrap with resampled residuals, the
previous default, covered 35%.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import optimize, stats

NU = 4.0  # degrees of freedom of the error model's Student-t (Lange, Little & Taylor 1989)
MAX_FOLDS = 4  # extrapolation folds of a fit set (each a refit of the law)
MIN_SCORES = 8  # fewer out-of-sample errors than this: no calibration (the intervals say so)
_LOG_BOUNDS = [(np.log(1e-6), np.log(10.0))] * 3  # s₀, κ↑, κ↓ (errors of log loss or fractions: never above 10)
# Growth per decade of a log loss's error beyond the distances the scores tested (see the module doc): rounded up
# from the C4-loss fits of the Gadre et al. testbed (κ↑ 0–0.02, κ↓ 0.07–0.09 per decade; README, "Calibration").
UNTESTED_GROWTH = {"kappa_up": 0.02, "kappa_down": 0.08}


def untested_variance(up, down, max_up: float, max_down: float) -> np.ndarray:
    """(κ↑⁰·(up − max_up)₊)² + (κ↓⁰·(down − max_down)₊)²: the variance a log-loss error adds beyond the tested
    distances ``max_up`` and ``max_down``, at the rates of :data:`UNTESTED_GROWTH`."""
    beyond_up = np.clip(np.asarray(up, dtype=float) - max_up, 0, None)
    beyond_down = np.clip(np.asarray(down, dtype=float) - max_down, 0, None)
    return (UNTESTED_GROWTH["kappa_up"] * beyond_up) ** 2 + (UNTESTED_GROWTH["kappa_down"] * beyond_down) ** 2


def log_inputs(*inputs) -> np.ndarray:
    """The law's inputs as rows of log10 values, the space in which distances are measured (decades)."""
    return np.column_stack([np.log10(np.asarray(x, dtype=float)) for x in inputs])


def displacement(fit_points: np.ndarray, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(up, down)``: how far each of ``points`` lies beyond the convex hull of ``fit_points``, in decades.

    Both are rows of log10 inputs (:func:`log_inputs`). The displacement is the
    point minus its nearest point of the hull (non-negative least squares over
    convex weights); ``up`` is the length of its positive part (larger inputs),
    ``down`` of its negative part. Points inside the hull have (0, 0).
    """
    fit_points, points = np.atleast_2d(fit_points), np.atleast_2d(points)
    # min ‖q − Pᵀw‖ over w ≥ 0 with Σw = 1, the constraint as a heavily weighted extra row
    A = np.vstack([fit_points.T, np.full(len(fit_points), 1e6)])
    up, down = np.zeros(len(points)), np.zeros(len(points))
    for i, q in enumerate(points):
        w, _ = optimize.nnls(A, np.append(q, 1e6))
        v = q - fit_points.T @ (w / w.sum())
        v[np.abs(v) < 1e-9] = 0.0
        up[i], down[i] = np.linalg.norm(np.clip(v, 0, None)), np.linalg.norm(np.clip(v, None, 0))
    return up, down


def extrapolation_folds(order, min_train: int, max_folds: int = MAX_FOLDS) -> list[float]:
    """Cuts of a fit set's ``order`` values (its runs' compute) for extrapolation folds.

    A fold refits the law on the runs at or below its cut and predicts the fit
    set's runs above it, as a backtest of the real prediction would. Like the
    real fit, a fold keeps at least half the fit set's distinct values (and
    ``min_train``) below its cut, and one above; up to ``max_folds`` cuts,
    spread evenly over the possible ones. None when the fit set is too small.
    """
    distinct = np.unique(np.asarray(order, dtype=float))
    last = len(distinct) - 1  # at least one value above the cut
    first = max(min_train, int(np.ceil(len(distinct) / 2)))
    if last < first:
        return []
    ks = np.unique(np.linspace(first, last, min(max_folds, last - first + 1)).round().astype(int))
    return [float(distinct[k - 1]) for k in ks]


def _terms(theta, up, down) -> np.ndarray:
    """The three terms of s² (rows: s₀², (κ↑·up)², (κ↓·down)²), one column per point."""
    return np.exp(2 * np.asarray(theta))[:, None] * np.vstack([np.ones_like(up), up**2, down**2])


def _neg_log_likelihood(theta, e, up, down):
    """−log L of the errors under t_ν(0, s) (up to a constant), and its gradient in θ = log(s₀, κ↑, κ↓)."""
    terms = _terms(theta, up, down)
    s2 = terms.sum(axis=0)
    nll = 0.5 * np.sum((NU + 1) * np.log1p(e**2 / (NU * s2)) + np.log(s2))
    dnll_ds2 = 0.5 * (1 - (NU + 1) * e**2 / (NU * s2 + e**2)) / s2
    return float(nll), 2 * terms @ dnll_ds2


def fit_scale(errors, up, down, start=None, borrow: bool = True) -> np.ndarray:
    """log(s₀, κ↑, κ↓) maximizing the Student-t likelihood of ``errors`` (see the module doc).

    A direction no score extrapolates in leaves its κ undetermined. With
    ``borrow`` (errors of a fraction) it takes the other direction's (the same
    growth per decade), or ≈ 0 when neither was tested; without (errors of a log
    loss, whose untested distances grow at the prior rate of
    :func:`untested_variance` instead) it is ≈ 0, so that no growth is counted
    twice. The diagnostics flag predictions beyond the distances the scores had.
    """
    e, up, down = (np.asarray(v, dtype=float) for v in (errors, up, down))
    tested = [bool(np.any(up > 0)), bool(np.any(down > 0))]
    inside = (up == 0) & (down == 0)
    s0 = np.median(np.abs(e[inside] if inside.any() else e))
    x0 = np.log([max(s0, 1e-5), 0.02, 0.02]) if start is None else np.asarray(start, dtype=float)
    free = [0] + [1 + i for i in range(2) if tested[i]]

    def full(x) -> np.ndarray:
        """θ from the free parameters: an untested κ copies the tested one (``borrow``), or is ≈ 0."""
        theta = x0.copy()
        theta[free] = x
        if borrow and any(tested):
            theta[1:] = np.where(tested, theta[1:], theta[1 + tested.index(True)])
        else:
            theta[1:] = np.where(tested, theta[1:], _LOG_BOUNDS[1][0])
        return theta

    def objective(x):
        nll, grad = _neg_log_likelihood(full(x), e, up, down)
        return nll, grad[free]  # an untested κ multiplies no score's distance: its own gradient is 0
    res = optimize.minimize(objective, x0[free], jac=True, method="L-BFGS-B", bounds=[_LOG_BOUNDS[i] for i in free])
    return full(res.x)


@dataclass
class Calibration:
    """Out-of-sample errors of one law's predictions of one quantity, and the error model fitted to them.

    ``space`` is ``log`` (errors are log ŷ − log y) or ``linear`` (ŷ − y).
    ``row`` is, for each score, the predicted row it was measured at (−1 for
    a fold's score), so that row's interval leaves it out. ``noise`` is the
    run-to-run standard deviation of one run (seeds, else the fit's robust
    residual scale), ``seeds`` the number of seeds behind a score (their
    harmonic mean) and ``n_fit`` the number of points the law was fitted on.
    """

    space: str
    errors: np.ndarray
    up: np.ndarray
    down: np.ndarray
    source: list[str]
    row: np.ndarray
    noise: float = 0.0
    seeds: float = 1.0
    n_fit: int = 1
    theta: np.ndarray = field(default=None)
    _loo: dict = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self):
        self.errors, self.up, self.down, self.row = (np.asarray(v, dtype=float) for v in
                                                     (self.errors, self.up, self.down, self.row))
        if self.theta is None:
            self.theta = fit_scale(self.errors, self.up, self.down, borrow=self.space != "log")

    @property
    def n_scores(self) -> int:
        return len(self.errors)

    @property
    def max_up(self) -> float:
        """The farthest distance upwards a score tested (decades)."""
        return float(self.up.max(initial=0.0))

    @property
    def max_down(self) -> float:
        """The farthest distance downwards a score tested (decades)."""
        return float(self.down.max(initial=0.0))

    @property
    def params(self) -> dict[str, float]:
        s0, k_up, k_down = np.exp(self.theta)
        return {"s0": float(s0), "kappa_up": float(k_up), "kappa_down": float(k_down)}

    def without_row(self, row: int) -> "Calibration":
        """The error model refitted without the score(s) measured at predicted row ``row``."""
        keep = self.row != row
        if keep.all():
            return self
        if row not in self._loo:
            theta = fit_scale(self.errors[keep], self.up[keep], self.down[keep], start=self.theta,
                              borrow=self.space != "log")
            self._loo[row] = Calibration(self.space, self.errors[keep], self.up[keep], self.down[keep],
                                         [s for s, k in zip(self.source, keep) if k], self.row[keep], self.noise,
                                         self.seeds, self.n_fit, theta=theta)
        return self._loo[row]

    def scale(self, up, down, interval: str = "prediction") -> np.ndarray:
        """The t_ν scale of the error at displacement (up, down): of a new run, or of the law (``confidence``).

        The scores are errors of measured points, each a mean over ``seeds``
        runs; the law's own error is what their run noise leaves of the fitted
        scale, and a new run adds one run's noise. (A standard deviation σ is a
        t_ν scale of σ·√((ν−2)/ν).) The law's scale never falls below that of a
        mean over the fit set's runs, noise/√n_fit. Beyond the tested distances a log loss's error also grows at
        the prior rate (:func:`untested_variance`).
        """
        total2 = np.exp(2 * self.theta) @ np.vstack([np.ones_like(up), up**2, down**2])
        if self.space == "log":
            total2 = total2 + untested_variance(up, down, self.max_up, self.max_down)
        noise2 = self.noise**2 * (NU - 2) / NU
        law2 = np.maximum(total2 - noise2 / self.seeds, noise2 / self.n_fit)
        return np.sqrt(law2 if interval == "confidence" else law2 + noise2)

    def interval(self, predicted, up, down, level: float, interval: str = "prediction", rows=None):
        """``(lo, hi)`` around ``predicted`` at displacements (up, down); ``rows`` (one id per point, −1 for none)
        leaves each point's own score out of its error model."""
        y, up, down = (np.atleast_1d(np.asarray(v, dtype=float)) for v in (predicted, up, down))
        rows = np.full(len(y), -1) if rows is None else np.asarray(rows)
        half = np.empty_like(y)
        for r in np.unique(rows):
            at = rows == r
            model = self if r < 0 else self.without_row(int(r))
            half[at] = stats.t.ppf(0.5 + level / 2, NU) * model.scale(up[at], down[at], interval)
        if self.space == "log":
            return y * np.exp(-half), y * np.exp(half)
        return y - half, y + half

    def to_dict(self) -> dict:
        return {"space": self.space, "nu": NU, **self.params, "noise": self.noise, "seeds": self.seeds,
                "n_fit": self.n_fit, "n_scores": self.n_scores, "sources": sorted(set(self.source)),
                "max_up": self.max_up, "max_down": self.max_down,
                "scores": {"errors": self.errors.tolist(), "up": self.up.tolist(), "down": self.down.tolist(),
                           "source": list(self.source), "row": self.row.astype(int).tolist()},
                "theta": self.theta.tolist()}

    @classmethod
    def from_dict(cls, d: dict) -> "Calibration":
        s = d["scores"]
        return cls(d["space"], s["errors"], s["up"], s["down"], s["source"], s["row"], d["noise"], d["seeds"],
                   d["n_fit"], theta=np.asarray(d["theta"], dtype=float))


def calibrate(space: str, errors, up, down, source, row, noise: float, seeds: float = 1.0,
              n_fit: int = 1) -> Calibration | None:
    """The error model of these scores, or None when there are fewer than :data:`MIN_SCORES` finite ones."""
    e, up, down, row = (np.asarray(v, dtype=float) for v in (errors, up, down, row))
    ok = np.isfinite(e)
    if ok.sum() < MIN_SCORES:
        return None
    return Calibration(space, e[ok], up[ok], down[ok], [s for s, k in zip(source, ok) if k], row[ok],
                       float(noise) if np.isfinite(noise) else 0.0, float(seeds), int(n_fit))
