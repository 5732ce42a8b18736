"""The fit set: the default choice of the points a law is fitted on, and how many distinct points a law needs.

Both are facts the fit uses (:mod:`scaling.fit.tables`, :func:`scaling.fit.estimators.check_distinct`) and the
study loader checks before any run trains (:func:`scaling.study.config.check_fittable`), so this module imports
nothing heavier than :mod:`scaling.fit.laws`: the loader runs at every parse of the Snakefile.
"""

from __future__ import annotations

from scaling.fit.laws import LAWS


def least_points(n_params: int) -> int:
    """The fewest distinct points a law of ``n_params`` parameters is fitted on: one more than its parameters, so
    the fit leaves a residual to estimate the runs' noise from."""
    return n_params + 1


def points_needed(law: str) -> int:
    """:func:`least_points` of a law of :data:`scaling.fit.laws.LAWS`."""
    return least_points(len(LAWS[law].params))


def fold_points(law: str) -> int:
    """The fewest distinct compute values an extrapolation fold of the calibration refits ``law`` on
    (:func:`scaling.fit.calibration.extrapolation_folds`): one more than a fit of it needs, so that the fold's own
    fit is not at its least."""
    return points_needed(law) + 1


def default_fit_on(points: list[dict]) -> list[dict]:
    """Every M = 20 point plus the smallest model at its largest M (the paper's choice, scaled down), as fit.fit_on
    filters; of two models of the smallest N, the one trained at the larger M. ``points``: one mapping per point
    with ``n_params``, ``token_multiplier`` and, when known, ``size`` (which then names the model; else its N does)."""
    smallest = min(points, key=lambda p: (p["n_params"], -p["token_multiplier"]))  # the first of equals
    first = {"size": smallest["size"]} if "size" in smallest else {"n_params": float(smallest["n_params"])}
    return [{"token_multiplier": 20.0}, {**first, "token_multiplier": float(smallest["token_multiplier"])}]
