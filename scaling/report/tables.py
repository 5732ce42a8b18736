"""A finished study's tables, and the views of them that its figures and summary draw on.

:class:`Tables` reads ``runs``, ``downstream`` (may have no rows), ``fits`` (one
row per fitted law: ``overtraining``, ``downstream``, ``optimal_lr``) and
``predictions`` (one row per predicted point, column ``law``) from
``results/<study>/tables/``, conformed to :mod:`scaling.store.schema`.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from scaling.fit.tables import canonical
from scaling.fit.laws import LAWS
from scaling.fit.optimal_lr import best_lr_grid
from scaling.store.schema import read_table


@dataclass(frozen=True)
class Tables:
    """The tables a report is made from (pandas frames, conformed to :mod:`scaling.store.schema`)."""

    runs: pd.DataFrame
    downstream: pd.DataFrame
    fits: pd.DataFrame
    predictions: pd.DataFrame

    @classmethod
    def read(cls, directory: str | Path) -> "Tables":
        """``runs``, ``downstream``, ``fits`` and ``predictions`` from ``directory/<table>.parquet``."""
        d = Path(directory)
        return cls(*(read_table(d / f"{t}.parquet", t).to_pandas() for t in ("runs", "downstream", "fits",
                                                                              "predictions")))


# -- selecting from the tables ------------------------------------------------------------------------------------
def law_fits(fits: pd.DataFrame, law: str) -> pd.DataFrame:
    """The rows of ``fits`` for ``law``; for ``overtraining``, the study's own loss fit (no ``task``)."""
    rows = fits[fits["law"] == law]
    if law == "overtraining" and "task" in rows:
        rows = rows[rows["task"].isna()]
    return rows


def law_predictions(pred: pd.DataFrame, law: str) -> pd.DataFrame:
    return pred[pred["law"] == law]


def params(row, law: str) -> dict[str, float]:
    """The fitted parameters of a ``fits`` row, by the law's parameter names."""
    return {p: float(row[p]) for p in LAWS[law].params}


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
    """The best learning rate of every (dataset, N, D) trained at two or more rates, with ``edge``.

    ``edge`` is ``high`` or ``low`` when the best rate is the largest or smallest
    rate that trained (the optimum may lie beyond the sweep), else empty;
    the same points and edge test as the optimal-LR fit (:func:`scaling.fit.optimal_lr.best_lr_grid`).
    """
    ok = canonical(runs)
    if ok.empty or "lr" not in ok:
        return pd.DataFrame(columns=["dataset", "n_params", "tokens", "token_multiplier", "lr", "n_lrs", "edge"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the figure marks those points instead
        best = best_lr_grid(ok, ["dataset"])
    best = best[best["n_lrs"] >= 2].reset_index(drop=True)
    top = ok.groupby(["dataset", "n_params", "tokens"])["lr"].max()
    is_top = [np.isclose(r.lr, top[(r.dataset, r.n_params, r.tokens)]) for r in best.itertuples()]
    best["edge"] = np.where(best["lr_at_edge"], np.where(is_top, "high", "low"), "")
    return best
