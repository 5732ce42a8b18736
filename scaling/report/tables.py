"""A finished study's tables, and the views of them that its figures and summary draw on.

:class:`Tables` reads ``runs``, ``downstream`` (may have no rows), ``fits`` (one
row per fitted law: ``overtraining``, ``downstream``, ``optimal_lr``),
``parameters`` (one row per fitted law × parameter) and ``predictions`` (one
row per predicted point, column ``law``) from ``results/<study>/tables/``,
conformed to :mod:`scaling.store.schema`.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

import pandas as pd

from scaling.fit.laws import LAWS
from scaling.fit.tables import best_lr_points
from scaling.store.schema import read_table


@dataclass(frozen=True)
class Tables:
    """The tables a report is made from (pandas frames, conformed to :mod:`scaling.store.schema`)."""

    runs: pd.DataFrame
    downstream: pd.DataFrame
    fits: pd.DataFrame
    parameters: pd.DataFrame
    predictions: pd.DataFrame

    @classmethod
    def read(cls, directory: str | Path) -> "Tables":
        """Each table from ``directory/<table>.parquet``."""
        d = Path(directory)
        return cls(*(read_table(d / f"{t.name}.parquet", t.name).to_pandas() for t in fields(cls)))


# -- selecting from the tables ------------------------------------------------------------------------------------
def law_fits(fits: pd.DataFrame, law: str) -> pd.DataFrame:
    """The rows of ``fits`` for ``law``; for ``overtraining``, the study's own loss fit (no ``task``)."""
    rows = fits[fits["law"] == law]
    if law == "overtraining" and "task" in rows:
        rows = rows[rows["task"].isna()]
    return rows


def law_predictions(pred: pd.DataFrame, law: str) -> pd.DataFrame:
    return pred[pred["law"] == law]


def fit_parameters(parameters: pd.DataFrame, fit) -> pd.DataFrame:
    """The rows of ``parameters`` of one ``fits`` row (the same law, dataset and task), indexed by parameter in the
    law's order: ``value``, ``stderr``, ``lo``, ``hi``."""
    rows = parameters[(parameters["law"] == fit["law"]) & (parameters["dataset"] == fit["dataset"])]
    task = fit.get("task")
    rows = rows[rows["task"].isna() if pd.isna(task) else rows["task"] == task]
    return rows.set_index("parameter").reindex(list(LAWS[fit["law"]].params))


def params(parameters: pd.DataFrame, fit) -> dict[str, float]:
    """The fitted values of one ``fits`` row's parameters, by the law's parameter names."""
    return fit_parameters(parameters, fit)["value"].astype(float).to_dict()


def downstream_runs(runs: pd.DataFrame, downstream: pd.DataFrame) -> pd.DataFrame:
    """Downstream rows of ``ok`` runs joined to their run, with ``error`` = 1 − accuracy and ``chance_error``."""
    keep = [c for c in ("run_id", "dataset", "size", "n_params", "token_multiplier", "lr", "val_loss", "flops")
            if c in runs]
    own = downstream.drop(columns=[c for c in keep if c != "run_id" and c in downstream])  # the run's, not its own
    df = own.merge(runs.loc[runs["status"] == "ok", keep], on="run_id")
    if "kind" not in df:
        df["kind"] = "task"
    return df.assign(error=1 - df["accuracy"], chance_error=1 - df["random_baseline_accuracy"])


def lr_sweep_points(runs: pd.DataFrame) -> pd.DataFrame:
    """The best-LR points of every (dataset, size, N, M) trained at two or more rates: the points, with their edge flag
    ``lr_edge``, that the fits use (:func:`scaling.fit.tables.best_lr_points`)."""
    best = best_lr_points(runs)
    return best[best["n_lrs"] >= 2].reset_index(drop=True)
