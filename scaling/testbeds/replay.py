"""A study that plans itself, replayed on a testbed whose every run is measured: training a run is a look-up.

:func:`replay` runs the declarative loop of ``scaling plan`` on a table of
outcomes: fit the law on the runs known so far (:func:`scaling.fit.tables.fit_table`,
calibrated where there are enough out-of-sample errors), propose a batch
(:func:`scaling.fit.plan.plan`), "train" it by reading its losses from the
table, refit, and again, until the budget is spent or no affordable run narrows
the targets' intervals. Each round plans a batch for the whole budget left and
trains its first runs, as much compute as has been spent so far (or the first
run, if dearer): the study at most doubles its compute per round unless one run
is worth more, and the planner sees a refitted law before it commits the rest.
:func:`random_design` is the baseline of equal budget.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from scaling.fit.estimators import FitError
from scaling.fit.plan import Planner, plan
from scaling.fit.tables import canonical, fit_table
from scaling.fit.result import FitResult
from scaling.train.flops import flops_6nd


def current_fit(law: str, known: pd.DataFrame, method: str = "huber-log") -> FitResult | None:
    """The law fitted on every known run (with its calibration where it has one), or None when it cannot be."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fits, _ = fit_table(law, known, fit_on="TRUE", method=method)
    except FitError:
        return None
    return fits[0]


def replay(law: str, outcomes: pd.DataFrame, start: np.ndarray, targets: pd.DataFrame, budget: float,
           method: str = "huber-log") -> pd.DataFrame:
    """The runs of ``outcomes`` a planned study trains, from the ``start`` rows, within ``budget`` FLOPs in all
    (the start's compute included): the known rows, with ``round`` (0 for the start) in the order trained."""
    outcomes = canonical(outcomes).assign(round=0)
    known, pool = outcomes[start], outcomes[~start]
    spent, rounds = float(known["flops"].sum()), 0
    while True:
        planner = Planner.from_fit(law, current_fit(law, known, method))
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
