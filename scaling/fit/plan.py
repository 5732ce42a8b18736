"""Which runs to train next: the candidate runs that most shrink the targets' prediction intervals per FLOP.

A study predicts a few targets (a 7B model at M = 20, a 1.4B model at M = 640)
from cheaper runs. This module chooses, from candidate runs (sizes × token
multipliers a study allows), the ones whose training would most narrow the
targets' intervals per FLOP spent, within a budget. It is optimal experimental
design (Atkinson, Donev & Tobias 2007, *Optimum Experimental Designs, with SAS*;
Chaloner & Verdinelli 1995, "Bayesian experimental design: a review") applied to
a scaling law, with the prediction error of the calibrated intervals of
:mod:`scaling.fit.calibration` as the criterion.

**The expected interval of a design.** For a design S (the runs the law would be
fitted on), a target's relative half-width is sinh(t₄,q·s) with

    s(S)² = s₀² + (κ↑·up_S)² + (κ↓·down_S)²  +  gᵀ (JₛᵀJₛ/σ² + I/τ²)⁻¹ g.

- The first three terms are the calibrated error model of the law's misfit
  (:class:`scaling.fit.calibration.Calibration`), at the target's displacement
  beyond the convex hull of S in decades of N and M (or D): a run that brings
  the hull nearer the target shrinks it. They come from the current fit's
  calibration; a fit without one (too few runs) uses :data:`PRIOR_ERROR_MODEL`.
  As in the calibration, the part of the displacement beyond the distances its
  scores tested adds the prior growth
  (:func:`scaling.fit.calibration.untested_variance`), with the current
  calibration's tested distances.
- The last is the variance of the law's log prediction from the noise of the
  runs, linearized (the Gauss–Newton / Fisher information of the fit): J holds
  ∂ log L/∂ log|θⱼ| at each run of S, g at the target, σ is one run's noise in log
  loss, and the prior precision I/τ² (a weak Gaussian prior on log|θ|, the
  Bayesian design of Chaloner & Verdinelli) keeps it finite when S cannot yet
  determine the law. Minimizing this term for one target is c-optimality
  (Elfving 1952; Atkinson et al., ch. 10); a run with leverage on the
  extrapolation (a larger N, a longer M) shrinks it most. θ is the current fit's,
  or :data:`PRIOR_PARAMS` when the runs cannot be fitted yet.

The two parts are added as independent errors. The calibration's s₀ was
measured on fits that also had parameter error, so the sum is conservative
inside the hull; beyond it, the misfit term is what the calibration tested and
the Fisher term what a design the calibration never saw changes.

**The batch.** The objective is the mean half-width over the targets;
:func:`plan` builds the batch greedily (Krause & Guestrin 2005, "A note on the
budgeted maximization of submodular functions"; Leskovec et al. 2007, CELF):
once by the largest reduction per FLOP among the candidates the budget still
affords, once by the largest reduction, and keeps the batch that ends narrower.
For a submodular objective the better of the two is within (1 − 1/e)/2 of the
best batch; the width is not proven submodular, so the guarantee is a guide,
not a theorem, here. The batch is chosen for the whole budget (so a cheap run
is bought only if it still helps once the dear ones are in) and proposed
cheapest first, each row with the expected half-widths of the design so far:
a study that trains it in order and refits between rounds (sequential design,
Chernoff 1959, "Sequential design of experiments") learns the law's misfit
from the cheap runs before it commits the dear ones. The order matters because
the interval the fit stage reports is recalibrated on each design's own
extrapolation folds, and this criterion holds the current error model fixed:
on the Chinchilla points (``benchmarks/plan.py``), proposed in the order chosen,
the first rounds bought single large runs far beyond the rest, the refitted
error model grew (κ↑ 0 → 0.036 per decade, from fold errors of 3–4% that the
linearized parameter variance puts at 0.5%), and the reported width stayed at
12–30% up to 2e22 FLOPs (cheapest first: below 10% from 5e21; both measured
before the calibration's growth beyond its tested distances, with which the
planned design stays below 10% from 9.2e21 and the uniform grid from 6.8e22,
README "Which runs to train next"). That misfit is
the data's, not the design's noise, so modelling the recalibration through the
Fisher term does not foresee it; the order lets the study measure it cheaply.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from scaling.fit.calibration import NU, UNTESTED_GROWTH, displacement, log_inputs, untested_variance
from scaling.fit.estimators import FitError
from scaling.fit.laws import LAWS
from scaling.fit.result import FitResult
from scaling.fit.tables import fit_table
from scaling.train.flops import flops_6nd, planned_tokens

# The error model used when the current runs are too few to calibrate one: rounded up from the C4-loss fits of the
# Gadre et al. testbed (s₀ 0.007–0.010; the growth per decade, κ↑ and κ↓, is the calibration's prior growth).
PRIOR_ERROR_MODEL = {"s0": 0.01, **UNTESTED_GROWTH}
# σ of one run's log loss when the fit has too few residuals to measure it: twice the robust residual scale of the
# Gadre et al. testbed's fits (0.1%), since a fit on few runs absorbs part of their noise.
PRIOR_NOISE = 0.002
PRIOR_SD = 1.0  # τ: prior standard deviation of each log|θⱼ| (a factor of e)
# θ when the runs cannot be fitted yet: Hoffmann et al. (2022), Eq. 2 fit (for the over-training law with the
# exponents tied at their mean, 0.31, and c = B·6^(−b/2) so that the data term is B·D^−0.31).
PRIOR_PARAMS = {
    "chinchilla": {"E": 1.69, "A": 406.4, "alpha": 0.34, "B": 410.7, "beta": 0.28},
    "overtraining": {"E": 1.69, "a": 406.4, "b": -0.31, "c": 410.7 * 6.0 ** (0.31 / 2)},
}
PLAN_LAWS = tuple(PRIOR_PARAMS)


@dataclass
class Planner:
    """The expected prediction interval of a law fitted on a design (see the module doc)."""

    law: str
    params: dict[str, float]
    error_model: dict[str, float]
    noise: float
    level: float = 0.95
    prior_sd: float = PRIOR_SD
    # The error model's tested distances (up, down): beyond them the misfit also grows at the calibration's prior
    # rate (untested_variance). The prior error model grows at that rate from the start, so it has tested "all".
    tested: tuple[float, float] = (np.inf, np.inf)

    @classmethod
    def from_fit(cls, law: str, fit: FitResult | None, level: float = 0.95) -> "Planner":
        """The planner of the current fit: its parameters, its calibration (else the prior) and its run noise.

        The noise is the calibration's (seeds, or the fit's robust residual scale), else the fit's residual
        scale when the fit has at least twice as many points as parameters, else :data:`PRIOR_NOISE`.
        """
        if law not in PLAN_LAWS:
            raise ValueError(f"plan: the {law} law cannot be planned for; use one of {PLAN_LAWS}")
        if fit is None:
            return cls(law, dict(PRIOR_PARAMS[law]), dict(PRIOR_ERROR_MODEL), PRIOR_NOISE, level)
        n_params = len(LAWS[law].params)
        calibration, tested = fit.calibration, {}
        if calibration is not None:
            assert calibration.space == "log", "the planned laws' calibrations are of log loss"
            error_model, noise = calibration.params, calibration.noise
            tested = {"tested": (calibration.max_up, calibration.max_down)}
        else:
            error_model = dict(PRIOR_ERROR_MODEL)
            noise = fit.noise_sd if fit.n_points >= 2 * n_params and fit.residual_space == "log" else np.nan
        noise = float(noise) if np.isfinite(noise) and noise > 0 else PRIOR_NOISE
        return cls(law, dict(fit.params), error_model, noise, level, **tested)

    def gradients(self, inputs: np.ndarray) -> np.ndarray:
        """∂ log L/∂ log|θⱼ| at each row of ``inputs`` (raw law inputs, one column each): central differences."""
        names = LAWS[self.law].params
        base = np.array([self.params[p] for p in names], dtype=float)
        out = np.empty((len(inputs), len(names)))
        h = 1e-5
        for j in range(len(names)):
            up, down = base.copy(), base.copy()
            up[j], down[j] = base[j] * np.exp(h), base[j] * np.exp(-h)
            f = [np.log(LAWS[self.law](*inputs.T, **dict(zip(names, theta)))) for theta in (up, down)]
            out[:, j] = (f[0] - f[1]) / (2 * h)
        return out

    def half_widths(self, design: np.ndarray, targets: np.ndarray) -> np.ndarray:
        """Each target's expected relative half-width (of a new run's interval) after a fit on ``design``.

        Both are rows of raw law inputs, (N, M) or (N, D).
        """
        return self._widths(design, self.gradients(design), targets, self.gradients(targets))

    def _widths(self, design, J, targets, g) -> np.ndarray:
        """:meth:`half_widths` with the gradients of the design (``J``) and of the targets (``g``) given."""
        up, down = displacement(log_inputs(*design.T), log_inputs(*targets.T))
        m = self.error_model
        misfit = m["s0"] ** 2 + (m["kappa_up"] * up) ** 2 + (m["kappa_down"] * down) ** 2
        misfit = misfit + untested_variance(up, down, *self.tested)
        information = J.T @ J / self.noise**2 + np.eye(J.shape[1]) / self.prior_sd**2
        parameters = np.einsum("ij,jk,ik->i", g, np.linalg.inv(information), g)
        return np.sinh(stats.t.ppf(0.5 + self.level / 2, NU) * np.sqrt(misfit + parameters))


def current_fit(law: str, points: pd.DataFrame, fit_on="TRUE", method: str = "huber-log",
                cache: dict | None = None) -> FitResult | None:
    """The law fitted on ``points`` (its fit set ``fit_on``; calibrated on the rest and on extrapolation folds where
    there are enough, as the fit stage does), or None when they cannot determine it yet. ``cache``: that of
    :func:`scaling.fit.tables.fit_table`, shared by fits of designs that grow (their folds repeat)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return fit_table(law, points, fit_on=fit_on, method=method, cache=cache)[0][0]
    except FitError:
        return None


def _greedy(planner: Planner, design: np.ndarray, candidates: np.ndarray, cost: np.ndarray, targets: np.ndarray,
            budget: float, per_flop: bool) -> list[tuple[int, np.ndarray]]:
    """Greedy batch: repeatedly the affordable candidate with the largest (per-FLOP) reduction of the mean
    half-width; ``(candidate index, half-widths after it)`` per step, until none affordable reduces it."""
    J, G, g = planner.gradients(design), planner.gradients(candidates), planner.gradients(targets)
    chosen, steps, spent = [], [], 0.0
    current = planner._widths(design, J, targets, g).mean()
    while True:
        best = None
        for i in range(len(candidates)):
            if i in chosen or spent + cost[i] > budget:
                continue
            widths = planner._widths(np.vstack([design, candidates[i]]), np.vstack([J, G[i]]), targets, g)
            gain = (current - widths.mean()) / (cost[i] if per_flop else 1.0)
            if gain > 0 and (best is None or gain > best[0]):
                best = (gain, i, widths)
        if best is None:
            return steps
        _, i, widths = best
        chosen.append(i)
        steps.append((i, widths))
        design, J = np.vstack([design, candidates[i]]), np.vstack([J, G[i]])
        spent, current = spent + cost[i], widths.mean()


def plan(planner: Planner, known: pd.DataFrame, candidates: pd.DataFrame, targets: pd.DataFrame,
         budget: float) -> pd.DataFrame:
    """The runs to train next: one row per proposed candidate, cheapest first (see the module doc).

    ``known``, ``candidates`` and ``targets`` have ``n_params`` and ``token_multiplier`` (or ``tokens``) columns;
    ``candidates`` also ``cost`` (FLOPs, every learning rate of its sweep counted; default 6·N·D) and whatever
    names it (``size``, ``lr`` …), which is carried. Candidates at a known (N, M) are skipped. Each row adds
    ``cumulative_cost``, the expected half-width of each target after it (``half_width_<i>``, targets in
    order) and their ``mean_half_width``. The attribute ``before`` of the result holds the half-widths now.
    """
    if known.empty:
        raise ValueError("plan: the design has no run; give the runs the law will be fitted on (planned or trained)")

    def X(frame):
        return law_inputs(planner.law, frame)
    candidates = _with_inputs(candidates)
    if "cost" not in candidates:
        candidates = candidates.assign(cost=flops_6nd(candidates["n_params"], candidates["tokens"]))
    seen = set(map(tuple, np.round(X(known), 6)))
    fresh = candidates[np.array([tuple(x) not in seen for x in np.round(X(candidates), 6)], dtype=bool)]
    fresh = fresh.reset_index(drop=True)
    design, pool, T = X(known), X(fresh), X(targets)
    cost = fresh["cost"].to_numpy(dtype=float)
    batches = [_greedy(planner, design, pool, cost, T, budget, per_flop) for per_flop in (True, False)]
    steps = min(batches, key=lambda s: (s[-1][1].mean() if s else np.inf, sum(cost[i] for i, _ in s)))
    chosen = sorted((i for i, _ in steps), key=lambda i: cost[i])  # cheapest first
    widths = [planner.half_widths(np.vstack([design, pool[chosen[:k + 1]]]), T) for k in range(len(chosen))]
    rows = fresh.iloc[chosen].reset_index(drop=True)
    rows["cumulative_cost"] = rows["cost"].cumsum()
    for t in range(len(T)):
        rows[f"half_width_{t}"] = [w[t] for w in widths]
    rows["mean_half_width"] = [w.mean() for w in widths]
    rows.attrs["before"] = planner.half_widths(design, T)
    return rows


def law_inputs(law: str, frame: pd.DataFrame) -> np.ndarray:
    """The rows of ``frame`` (``n_params`` and ``token_multiplier`` or ``tokens``) as the law's raw inputs."""
    return _with_inputs(frame)[list(LAWS[law].inputs)].to_numpy(dtype=float)


def _with_inputs(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with both ``tokens`` and ``token_multiplier`` (one from the other, as a study plans D = M·N)."""
    frame = frame.copy()
    if "tokens" not in frame:
        frame["tokens"] = planned_tokens(frame["n_params"], frame["token_multiplier"])
    if "token_multiplier" not in frame:
        frame["token_multiplier"] = frame["tokens"] / frame["n_params"]
    return frame


def learning_rates(n_params: float, tokens: float, runs: pd.DataFrame, count: int,
                   optimal_lr: FitResult | None = None) -> list[float]:
    """``count`` learning rates to sweep at (N, D), a factor of 2 apart around the expected best.

    The centre is the fitted optimal-LR law's η*(N, D) (:func:`scaling.fit.laws.optimal_lr`) where there is one,
    else the best rate of the known point nearest in log N and log D (``runs``: best-LR points with ``lr``).
    Rounded to two significant digits. An empty list when nothing is known about the rate.
    """
    if optimal_lr is not None:
        centre = float(optimal_lr.predict([n_params], [tokens])["predicted"].iloc[0])
    elif "lr" in runs and runs["lr"].notna().any():
        r = runs[runs["lr"].notna()]
        dist = np.hypot(np.log10(r["n_params"] / n_params), np.log10(r["tokens"] / tokens))
        centre = float(r["lr"].iloc[int(np.argmin(dist.to_numpy()))])
    else:
        return []
    offsets = np.arange(count) - (count - 1) / 2
    return [float(f"{centre * 2.0 ** k:.2g}") for k in offsets]
