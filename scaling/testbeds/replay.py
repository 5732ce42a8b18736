"""A study that plans itself, replayed on a testbed whose every run is measured: training a run is a look-up.

:func:`replay` runs the declarative loop of ``scaling plan`` on a table of
outcomes: fit the law on the runs known so far (:func:`scaling.fit.tables.fit_table`,
calibrated where there are enough out-of-sample errors), propose a batch
(:func:`scaling.fit.plan.plan`), "train" it by reading its losses from the
table, refit, and again, until the budget is spent or no affordable run narrows
the targets' intervals. Each round plans a batch for the whole budget left and
trains its first runs (the batch is proposed cheapest first), as much compute as
has been spent so far (or the first run, if dearer): the study at most doubles
its compute per round, and the planner sees a refitted law before it commits the rest.
:func:`random_design` is the baseline of equal budget, :func:`predict_targets` how a design fares, and
:func:`gadre_setup` and :func:`chinchilla_setup` the two testbeds as such studies (``benchmarks/plan.py``), with
:func:`compute_to_stay_below` the measure of the second.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from scaling.fit.chinchilla import HOFFMANN_BUDGETS
from scaling.fit.plan import Planner, current_fit, law_inputs, plan
from scaling.fit.tables import canonical, fit_table, matches
from scaling.testbeds import gadre
from scaling.train.flops import flops_6nd


def replay(law: str, outcomes: pd.DataFrame, start: np.ndarray, targets: pd.DataFrame, budget: float,
           method: str = "huber-log", cache: dict | None = None) -> pd.DataFrame:
    """The runs of ``outcomes`` a planned study trains, from the ``start`` rows, within ``budget`` FLOPs in all
    (the start's compute included): the known rows, with ``round`` (0 for the start) in the order trained.
    ``cache`` (see :func:`scaling.fit.tables.fit_table`) keeps the fits of one round, and of its folds, for the
    next: pass the same dict to :func:`predict_targets` to reuse them there."""
    cache = {} if cache is None else cache
    outcomes = canonical(outcomes).assign(round=0)
    known, pool = outcomes[start], outcomes[~start]
    spent, rounds = float(known["flops"].sum()), 0
    while True:
        planner = Planner.from_fit(law, current_fit(law, known, method=method, cache=cache))
        proposals = plan(planner, known, pool, targets, budget - spent)
        if proposals.empty:
            return known.reset_index(drop=True)
        proposals = proposals[proposals["cumulative_cost"] <= max(spent, proposals["cost"].iloc[0])]
        rounds += 1
        chosen = set(zip(proposals["n_params"], proposals["tokens"]))
        taken = np.array([k in chosen for k in zip(pool["n_params"], pool["tokens"])])
        known = pd.concat([known, pool[taken].assign(round=rounds)])
        pool = pool[~taken]
        spent = float(known["flops"].sum())


def rounds(known: pd.DataFrame) -> list[pd.DataFrame]:
    """The designs of a :func:`replay`'s study after each of its rounds (the start first)."""
    return [known[known["round"] <= r] for r in range(int(known["round"].max()) + 1)]


def random_design(outcomes: pd.DataFrame, start: np.ndarray, budget: float, seed: int) -> pd.DataFrame:
    """The start rows plus runs of ``outcomes`` drawn in a random order (``seed``), each kept while the budget (the
    start's compute included) affords it."""
    outcomes = canonical(outcomes)
    spent = float(outcomes.loc[start, "flops"].sum())
    keep = start.copy()
    for i in np.random.default_rng(seed).permutation(np.flatnonzero(~start)):
        cost = float(flops_6nd(outcomes["n_params"].iloc[i], outcomes["tokens"].iloc[i]))
        if spent + cost <= budget:
            keep[i], spent = True, spent + cost
    return outcomes[keep].reset_index(drop=True)


def gadre_setup(runs: pd.DataFrame):
    """The Gadre et al. testbed as a study that plans itself, per training set: ``(dataset, candidates, start,
    targets, paper)``: the runs at M ≥ 20 (the over-trained regime the law is for) that are not Figure 1
    targets, the mask of the two smallest sizes at M = 20 among them, the targets, and the paper's five fit runs."""
    for dataset, g in canonical(runs).groupby("dataset"):
        g = g.reset_index(drop=True)
        is_target = matches(g, gadre.TARGETS)
        pool = g[~is_target & (g["token_multiplier"] >= 20)].reset_index(drop=True)
        smallest = np.sort(pool["n_params"].unique())[:2]
        start = (pool["n_params"].isin(smallest) & (pool["token_multiplier"] == 20)).to_numpy()
        yield dataset, pool, start, g[is_target], g[matches(g, gadre.LOSS_FIT_ON)]


def chinchilla_setup(points: pd.DataFrame, target_flops: float = 1e24):
    """The Chinchilla points (Epoch AI's reconstruction) as a study that plans itself: ``(points, start, grid,
    target)``: the points without Epoch AI's outliers, the mask of the runs on the two smallest IsoFLOP budgets of
    Hoffmann et al. (within 0.1 decade of 6e18 and 1e19 FLOPs), the uniform grid's designs (those budgets plus
    the next ones in order, one design per budget added) and the target, a compute-optimal model (D = 20·N) at
    ``target_flops``."""
    points = canonical(points[~points["epoch_excluded_outlier"]].reset_index(drop=True))
    n = np.sqrt(target_flops / 120)  # C = 6·N·D with D = 20·N
    log_c, log_b = np.log10(points["flops"].to_numpy()), np.log10(HOFFMANN_BUDGETS)
    nearest = np.abs(log_c[:, None] - log_b[None, :]).argmin(axis=1)
    on_budget = np.abs(log_c - log_b[nearest]) <= 0.1
    grid = [points[on_budget & (nearest <= k)] for k in range(1, len(log_b))]
    return points, on_budget & (nearest <= 1), grid, pd.DataFrame({"n_params": [n], "tokens": [20 * n]})


def compute_to_stay_below(designs: list[pd.DataFrame], widths: list[float], limit: float) -> float:
    """The compute of the first of ``designs`` (grown in order) after which every half-width is below ``limit``;
    inf when the last is not."""
    below = [i for i in range(len(widths)) if max(widths[i:]) < limit]
    return float(designs[below[0]]["flops"].sum()) if below else np.inf


def predict_targets(known: pd.DataFrame, targets: pd.DataFrame, law: str = "overtraining",
                    cache: dict | None = None) -> pd.DataFrame:
    """The targets predicted by the law fitted on ``known`` only, with their 95% intervals and, where ``targets``
    has a loss, its relative error and coverage.

    The intervals are the fit's calibrated ones where the runs give enough out-of-sample errors; otherwise the
    interval the planner expected of the design (:meth:`scaling.fit.plan.Planner.half_widths`: the prior error
    model and the fit's parameter variance), with ``calibrated`` False. The fit stage's own fallback, a bootstrap
    over so few runs, is no interval to plan toward: it covered 35% of held-out points (:mod:`scaling.fit.calibration`).
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fits, pred = fit_table(law, known, fit_on="TRUE", targets=targets[["n_params", "tokens"]].to_dict("records"),
                               cache=cache)
    pred = pred[pred["role"] == "target"].reset_index(drop=True)
    if not pred["calibrated"].any():  # one fit: its targets are calibrated alike
        expected = Planner.from_fit(law, fits[0]).half_widths(law_inputs(law, known), law_inputs(law, targets))
        half = np.arcsinh(expected)  # t·s, of log loss
        pred["predicted_loss_lo"] = pred["predicted_loss"] * np.exp(-half)
        pred["predicted_loss_hi"] = pred["predicted_loss"] * np.exp(half)
        pred["half_width"] = expected
    if "loss" in targets:
        measured = targets["loss"].to_numpy()
        pred = pred.assign(measured_loss=measured, rel_error=pred["predicted_loss"] / measured - 1,
                           covered=(pred["predicted_loss_lo"] <= measured) & (measured <= pred["predicted_loss_hi"]))
    return pred
