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
  the hull nearer the target shrinks it. A fit without a calibration (too few
  runs) uses :data:`PRIOR_ERROR_MODEL`. With one, the error model is the one the
  fit stage is expected to calibrate on S (:meth:`Planner.expected_error_model`):
  the fit stage refits it on S's own extrapolation folds, so a run S adds is
  scored by every fold whose cut it lies above. Its expected score there is
  λ·sd_f, at its displacement beyond the fold's training runs: sd_f is the
  linearized standard deviation of the fold's prediction (the Fisher term below,
  for the fold's runs), and λ how far the current folds' measured errors exceed
  theirs (the ratio of their root mean squares, as a t₄ scale): the misfit the
  Fisher term omits, measured on the runs trained, like the dispersion
  parameter of a quasi-likelihood (McCullagh & Nelder 1989, §9.2). The current
  scores plus these expected ones are refitted by
  :func:`scaling.fit.calibration.fit_scale`. A run far beyond the folds' runs,
  or one that the folds' narrow range extrapolates badly to, raises the
  expected κ↑; a cheap run that widens the folds' range lowers it.
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
inside the hull; beyond it, the misfit term is what the calibration tests and
the Fisher term what a design the calibration never saw changes.

**The batch.** The objective is the mean half-width over the targets;
:func:`plan` builds the batch greedily (Krause & Guestrin 2005, "A note on the
budgeted maximization of submodular functions"):
once by the largest reduction per FLOP among the candidates the budget still
affords, once by the largest reduction, and keeps the batch that ends narrower.
Every candidate is scored again at each step (not lazily, as CELF would,
Leskovec et al. 2007): the expected recalibration can make a run's gain grow
once others are in.
For a submodular objective the better of the two is within (1 − 1/e)/2 of the
best batch; the width is not proven submodular, so the guarantee is a guide,
not a theorem, here. The batch is chosen for the whole budget (so a cheap run
is bought only if it still helps once the dear ones are in) and proposed
cheapest first, each row with the expected half-widths of the design so far:
a study that trains it in order and refits between rounds (sequential design,
Chernoff 1959, "Sequential design of experiments") learns the law's misfit
from the cheap runs before it commits the dear ones.

On the Chinchilla points (``benchmarks/plan.py``, a study replayed in rounds,
its candidates the runs within 10× of the target's D/N = 20) the 95% half-width
at 1e24 FLOPs stays below 10% from 1.2e21 FLOPs on; the uniform IsoFLOP grid's
from 4.6e21 (4.4e21 over the same near-optimal runs). The swings it avoids are
the recalibration's: folds fitted on the two smallest budgets miss the runs of
the next ones by 2–5% (most the IsoFLOP edges, D/N ≈ 1.5–2.4, where the law
misfits), and κ↑ jumps to 0.02–0.05 per decade until the folds train on three
budgets. With every run a candidate, the planner buys such edge runs and stays
below only from 6.1e21; without the expected recalibration, from 4.8e21.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from scaling.fit.calibration import NU, Calibration, displacement, extrapolation_folds, fit_scale, log_inputs
from scaling.fit.estimators import FitError
from scaling.fit.fit_set import fold_points
from scaling.fit.laws import LAWS
from scaling.fit.result import FitResult
from scaling.fit.tables import fit_table
from scaling.train.flops import flops_6nd, planned_tokens

# The error model used when the current runs are too few to calibrate one: rounded up from the C4-loss fits of the
# Gadre et al. testbed (s₀ 0.007–0.010, κ↑ 0–0.02, κ↓ 0.07–0.09 per decade; README, "Calibration").
PRIOR_ERROR_MODEL = {"s0": 0.01, "kappa_up": 0.02, "kappa_down": 0.08}
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
    calibration: Calibration | None = None  # the current fit's out-of-sample errors, refitted on a grown design

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
        if fit.calibration is not None:
            error_model, noise = fit.calibration.params, fit.calibration.noise
        else:
            error_model = dict(PRIOR_ERROR_MODEL)
            noise = fit.noise_sd if fit.n_points >= 2 * n_params and fit.residual_space == "log" else np.nan
        noise = float(noise) if np.isfinite(noise) and noise > 0 else PRIOR_NOISE
        return cls(law, dict(fit.params), error_model, noise, level, calibration=fit.calibration)

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

    def half_widths(self, design: np.ndarray, targets: np.ndarray, known: int | None = None) -> np.ndarray:
        """Each target's expected relative half-width (of a new run's interval) after a fit on ``design``.

        Both are rows of raw law inputs, (N, M) or (N, D); the first ``known`` rows of ``design`` (default all) are
        the runs the current calibration was measured on, the others runs the design would add.
        """
        known = len(design) if known is None else known
        return self._widths(design, self.gradients(design), targets, self.gradients(targets), known)

    def _widths(self, design, J, targets, g, known: int) -> np.ndarray:
        """:meth:`half_widths` with the gradients of the design (``J``) and of the targets (``g``) given."""
        up, down = displacement(log_inputs(*design.T), log_inputs(*targets.T))
        m = self.error_model if known == len(design) else self.expected_error_model(design, J, known)
        misfit = m["s0"] ** 2 + (m["kappa_up"] * up) ** 2 + (m["kappa_down"] * down) ** 2
        parameters = np.einsum("ij,jk,ik->i", g, np.linalg.inv(self._information(J)), g)
        return np.sinh(stats.t.ppf(0.5 + self.level / 2, NU) * np.sqrt(misfit + parameters))

    def _information(self, J: np.ndarray) -> np.ndarray:
        """The Fisher information of a fit on runs with gradients ``J``, with the prior's precision."""
        return J.T @ J / self.noise**2 + np.eye(J.shape[1]) / self.prior_sd**2

    def _folds(self, design: np.ndarray) -> list[np.ndarray]:
        """The training masks of the extrapolation folds the fit stage makes of ``design`` (cut by compute)."""
        n, x = design.T
        flops = flops_6nd(n, x if LAWS[self.law].inputs[1] == "tokens" else planned_tokens(n, x))
        cuts = extrapolation_folds(flops, fold_points(self.law))  # as scaling.fit.tables calibrates
        return [flops <= cut for cut in cuts]

    def _fold_sd(self, J: np.ndarray, train: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """The linearized standard deviation of a fold's log prediction at ``rows``, the fold fitted on ``train``."""
        return np.sqrt(np.einsum("ij,jk,ik->i", J[rows], np.linalg.inv(self._information(J[train])), J[rows]))

    def expected_error_model(self, design: np.ndarray, J: np.ndarray, known: int) -> dict[str, float]:
        """The error model the fit stage is expected to calibrate on ``design``, whose first ``known`` rows are
        the current runs: the current scores, plus one expected score per added run and fold that predicts it
        (see the module doc). Without a calibration with fold scores: the current error model."""
        cal = self.calibration
        folds = cal is not None and np.any(np.asarray(cal.source) == "fold")
        if not folds:
            return self.error_model
        # λ: the current folds' measured errors over their linearized sd (the misfit the Fisher term omits)
        now = [(train, ~train) for train in self._folds(design[:known])]
        sd = np.concatenate([self._fold_sd(J[:known], t, r) for t, r in now]) if now else np.zeros(0)
        measured = cal.errors[np.asarray(cal.source) == "fold"]
        inflation = np.sqrt(np.mean(measured**2) * (NU - 2) / NU / np.mean(sd**2)) if len(sd) else 1.0
        X, added = log_inputs(*design.T), np.arange(len(design)) >= known
        errors, up, down = [cal.errors], [cal.up], [cal.down]
        for train in self._folds(design):
            rows = added & ~train
            if rows.any():
                u, d = displacement(X[train], X[rows])
                errors.append(inflation * self._fold_sd(J, train, rows))
                up.append(u)
                down.append(d)
        s0, k_up, k_down = np.exp(fit_scale(*map(np.concatenate, (errors, up, down))))
        return {"s0": float(s0), "kappa_up": float(k_up), "kappa_down": float(k_down)}


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
    half-width; ``(candidate index, half-widths after it)`` per step, until none affordable reduces it. Every
    candidate is scored again at each step, not lazily (CELF): with the expected recalibration a run's gain can
    grow once others are in (the folds train on more budgets), so an earlier gain does not bound a later one."""
    J, G, g = planner.gradients(design), planner.gradients(candidates), planner.gradients(targets)
    known, chosen, steps, spent = len(design), set(), [], 0.0
    current = planner._widths(design, J, targets, g, known).mean()
    while True:
        best = None
        for i in range(len(candidates)):
            if i in chosen or spent + cost[i] > budget:
                continue
            widths = planner._widths(np.vstack([design, candidates[i]]), np.vstack([J, G[i]]), targets, g, known)
            gain = (current - widths.mean()) / (cost[i] if per_flop else 1.0)
            if gain > 0 and (best is None or gain > best[0]):
                best = (gain, i, widths)
        if best is None:
            return steps
        _, i, widths = best
        chosen.add(i)
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
    widths = [planner.half_widths(np.vstack([design, pool[chosen[:k + 1]]]), T, len(design))
              for k in range(len(chosen))]
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
