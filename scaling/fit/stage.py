"""The pipeline's fit stage: every law a study's runs support, with the study's `fit` settings.

- ``overtraining``: the loss law L(N, M) of Gadre et al. (2024), per dataset,
  on the study's ``fit.fit_on`` (:mod:`scaling.fit.overtraining`).
- ``downstream``: when runs were scored on downstream tasks, the error law
  Err(L) = ε − k·exp(−γ·L) on the same fit set, fitted to the average top-1
  error of ``fit.downstream_task``, and chained to the loss law to predict the
  error of held-out runs and targets from their predicted loss
  (:mod:`scaling.fit.downstream`); ``error_at_measured_loss`` is the error law
  alone, at the measured loss, which separates its miss from the loss law's.
- ``optimal_lr``: η*(N, D) = c·N^a·D^b on the (N, D) points swept over 3 or
  more learning rates, when they vary N and D independently
  (:mod:`scaling.fit.optimal_lr`); otherwise the reason it was skipped.

Each law gets ``<out>/<law>.json`` (fits, predictions, or ``skipped`` and why);
the fits, their parameters and the predictions of all laws go to one
``fits``, one ``parameters`` and one ``predictions`` table, and how each law
fared on the runs it was not fitted on (coverage of its intervals, their width,
its errors) to the ``backtest`` table.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pandas as pd

from scaling.fit.estimators import FitError
from scaling.fit.tables import backtest_summary, fit_dict, fit_table, fits_table, parameters_table, records
from scaling.io import write_json
from scaling.store.schema import empty, write_table

UNFITTED_ERROR_FIX = ("score the runs on more examples (downstream.examples) or on tasks these models beat chance "
                      "on, or train larger models")  # what a downstream law that cannot be fitted needs

SWEEP = "n_lrs >= 3"  # the points whose best learning rate is measured, not just the one rate tried


def with_error(runs: pd.DataFrame, downstream: pd.DataFrame, task: str) -> pd.DataFrame:
    """The runs that were scored on ``task`` (a task or task set), with ``error`` = 1 − its accuracy."""
    scores = downstream.loc[downstream["task"] == task, ["run_id", "accuracy"]]
    if scores.empty:
        raise FitError(f"no run has a downstream score for {task!r}; fix: set fit.downstream_task to a task or "
                       f"task set of the study's `downstream` section")
    return runs.merge(scores.assign(error=1.0 - scores["accuracy"]).drop(columns="accuracy"), on="run_id")


def chance_error(downstream: pd.DataFrame, task: str) -> float | None:
    """The error of guessing on ``task`` (a task or task set): 1 − its random-baseline accuracy."""
    if "random_baseline_accuracy" not in downstream:
        return None
    rows = downstream.loc[downstream["task"] == task, "random_baseline_accuracy"].dropna()
    return None if rows.empty else float(1 - rows.mean())


def fit_study(runs: pd.DataFrame, downstream: pd.DataFrame, fit: dict, sizes: dict, task: str | None,
              ) -> dict[str, tuple[list[dict], pd.DataFrame, str | None]]:
    """{law: (fits, predictions, why it was skipped or None)} for overtraining, downstream and optimal_lr."""
    common = {"targets": fit.get("targets", []), "by": ["dataset"], "sizes": sizes, "resamples": fit["bootstrap"],
              "seed": fit["seed"], "scheme": fit["scheme"], "level": fit["level"]}
    cache: dict = {}  # the downstream law's chained loss fits are the over-training law's: made once
    out = {}
    try:
        results, pred = fit_table("overtraining", runs, fit_on=fit.get("fit_on"), method=fit["method"], cache=cache,
                                  **common)
    except FitError as e:  # the study's point: its failure fails the stage
        raise FitError(f"the study's loss law, the over-training law, cannot be fitted: {e}"
                       + ("" if "fix:" in str(e) else "; fix: look for failed or diverged runs in the fit set "
                          "(scaling status), or widen the fit set (fit.fit_on)")) from None
    out["overtraining"] = ([fit_dict(r) for r in results], pred, None)
    out["downstream"] = (([], pd.DataFrame(), "the study scores no downstream tasks") if task is None else
                         fit_downstream_law(runs, downstream, task, fit, common, cache))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the study's single-rate points are left out on purpose
            results, pred = fit_table("optimal_lr", runs, fit_on=SWEEP, **common)
        out["optimal_lr"] = ([fit_dict(r) for r in results], pred.assign(predicted_loss=float("nan")), None)
    except FitError as e:
        out["optimal_lr"] = ([], pd.DataFrame(), str(e))
    return out


def fit_downstream_law(runs: pd.DataFrame, downstream: pd.DataFrame, task: str, fit: dict, common: dict,
                       cache: dict) -> tuple[list[dict], pd.DataFrame, str | None]:
    """The downstream law of ``task`` on each dataset: (fits, predictions, why it was not fitted on some or None).

    A dataset whose error law cannot be fitted (too few distinct points, or least squares that does not converge,
    as on errors near chance that do not yet fall with loss) is left out with the reason: the loss law and
    everything else are fitted without it.
    """
    fits, preds, failed = [], [], []
    for ds, ds_runs in with_error(runs, downstream, task).groupby("dataset", sort=True):
        try:
            results, pred = fit_table("downstream", ds_runs, fit_on=fit.get("fit_on"), method=fit["method"],
                                      chance_error=chance_error(downstream, task), cache=cache, **common)
        except FitError as e:
            failed.append(f"the downstream law (the error on {task!r}) on dataset {ds!r} was not fitted: {e}; "
                          f"{_error_range(ds_runs, downstream, task)}; fix: {UNFITTED_ERROR_FIX}; the other laws "
                          f"are fitted without it")
            continue
        # one dataset: one error law (its chained loss fit is the over-training fit, kept there)
        error_fit = next(r for r in results if r.law == "downstream")
        fits.append({**fit_dict(error_fit), "task": task})
        # the error law alone, at the measured loss, without the loss law's miss
        preds.append(pred.assign(task=task, error_at_measured_loss=error_fit.value(pred["measured_loss"])))
    return fits, pd.concat(preds, ignore_index=True) if preds else pd.DataFrame(), "; ".join(failed) or None


def _error_range(runs: pd.DataFrame, downstream: pd.DataFrame, task: str) -> str:
    """The range of the runs' error on ``task``, against guessing's, for a message."""
    chance = chance_error(downstream[downstream["run_id"].isin(runs["run_id"])], task)
    return (f"the runs' error is {runs['error'].min():.2f} to {runs['error'].max():.2f}"
            + ("" if chance is None else f", against {chance:.2f} by guessing"))


def backtest_table(fitted: dict) -> pd.DataFrame:
    """How each law's predictions fared on the points it was not fitted on, per dataset (see
    :func:`scaling.fit.tables.backtest_summary`): the loss of the over-training law, the error of the downstream law.
    With no such point (every run fitted on) it has no rows, but the table's columns."""
    summaries = (backtest_summary(pred, ["dataset"], q=q).assign(law=law)
                 for law, q in (("overtraining", "loss"), ("downstream", "error"))
                 if len(pred := fitted[law][1]) and f"measured_{q}" in pred)
    parts = [s for s in summaries if len(s)]
    return pd.concat(parts, ignore_index=True) if parts else empty("backtest").to_pandas()


def write_fits(fitted: dict, out_dir: str | Path, fits_path: str | Path, parameters_path: str | Path,
               predictions_path: str | Path, backtest_path: str | Path) -> None:
    """``<out_dir>/<law>.json`` for each law, and the ``fits``, ``parameters``, ``predictions`` and ``backtest``
    tables of all."""
    for law, (fits, pred, skipped) in fitted.items():
        write_json(Path(out_dir) / f"{law}.json", {"law": law, "fits": fits, "predictions": records(pred),
                                                    "skipped": skipped})
    every_fit = [f for fits, _, _ in fitted.values() for f in fits]
    write_table(fits_path, "fits", fits_table(every_fit))
    write_table(parameters_path, "parameters", parameters_table(every_fit))
    write_table(predictions_path, "predictions",
                pd.concat([p for _, p, _ in fitted.values() if len(p)], ignore_index=True))
    write_table(backtest_path, "backtest", backtest_table(fitted))
