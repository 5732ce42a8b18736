"""Fitting laws to tables of runs: rows, fit set and targets stated as data; one fit per group.

A table has one row per run. Columns used, by name:

- ``n_params`` (N), ``tokens`` (D) and/or ``token_multiplier`` (M = D/N; either
  of D and M is derived from the other, D = M·N rounded to a whole token as a
  study plans it: :func:`scaling.train.flops.planned_tokens`), ``loss`` (or
  ``val_loss``, as in a study's ``runs`` table), ``error`` (downstream law),
  ``lr`` and ``seed``;
- ``status``: when present, only ``ok`` runs are used;
- any other columns (``dataset``, ``size``, ``model`` …) can be used to group
  (``by``) and to choose rows, and are carried into the predictions.

Rows sharing (group, size, N, M) are one point (two models of the same N are
two points; a table without ``size``: (group, N, M)): the learning rate with
the lowest loss after averaging seeds (a no-op for tables with one run per
point), for every law (:func:`best_lr_points`).

The fit set (``fit_on``) is a DuckDB SQL condition, or a list of column filters
as in a study's ``fit.fit_on`` (a point is in the fit set when it matches any
filter). Every point is predicted: role ``fit`` if in the fit set, else
``held_out``; ``targets`` add points to predict, trained or not (role
``target``); a backtest's points beyond its cut have role ``test``
(:func:`backtest`). Each prediction has the interval of a new run
(``predicted_*_lo/hi``, with ``half_width`` and whether it ``covered`` the
measured value) and of the law (``predicted_*_law_lo/hi``), calibrated on the
law's errors at the points it was not fitted on where there are enough
(:mod:`scaling.fit.calibration`), and its relative error ``rel_error`` =
predicted / measured − 1. :func:`backtest_summary` aggregates them.
"""

from __future__ import annotations

import copy
import hashlib
import json
import warnings
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

from scaling.fit.bootstrap import robust_scale, run_weights
from scaling.fit.calibration import calibrate, displacement, extrapolation_folds, log_inputs
from scaling.fit.chinchilla import fit_chinchilla
from scaling.fit.diagnostics import diagnose
from scaling.fit.downstream import fit_downstream, predict_chained
from scaling.fit import fit_set
from scaling.fit.estimators import FitError, FitWarning
from scaling.train.flops import flops_6nd, planned_tokens
from scaling.fit.laws import LAWS, overtraining_compute_form
from scaling.fit.optimal_lr import fit_optimal_lr
from scaling.fit.overtraining import fit_overtraining
from scaling.fit.result import FitResult

TABLE_LAWS = ("overtraining", "downstream", "chinchilla", "optimal_lr")

ID_COLUMNS = ("dataset", "size", "model", "run_name")


# -- reading and choosing rows ----------------------------------------------------------------------------------
def read_rows(paths, *, where: str | None = None, query: str | None = None, table: str = "runs") -> pd.DataFrame:
    """Rows from CSV, Parquet or DuckDB files, chosen by DuckDB SQL.

    Each file is a view named after its stem (``models.csv`` → ``models``); the
    first is also ``data``; a ``.duckdb`` file's ``table`` is used (a study's
    ``runs``). ``where`` filters ``data``; ``query`` is a whole ``SELECT`` over
    the views instead (for joins).
    """
    con = duckdb.connect()
    for i, path in enumerate(map(Path, paths)):
        if not path.exists():
            raise FileNotFoundError(f"--data: {path} does not exist")
        name = "".join(ch if ch.isalnum() else "_" for ch in path.stem)
        if path.suffix in (".duckdb", ".db"):
            con.execute(f"ATTACH '{path}' AS db{i} (READ_ONLY)")
            source = f"db{i}.{table}"
        elif path.suffix == ".parquet":
            source = f"read_parquet('{path}')"
        elif path.suffix in (".csv", ".tsv", ".txt"):
            source = f"read_csv_auto('{path}')"
        else:
            raise ValueError(f"--data: {path}: use a .csv, .parquet or .duckdb file")
        con.execute(f"CREATE VIEW {name} AS SELECT * FROM {source}")
        if i == 0:
            con.execute(f"CREATE VIEW data AS SELECT * FROM {name}")
    sql = query or "SELECT * FROM data" + (f" WHERE {where}" if where else "")
    try:
        return con.execute(sql).df()
    except duckdb.Error as e:
        raise ValueError(f"SQL error in {sql!r}: {e}") from None


def filters_sql(filters: list[dict]) -> str:
    """A list of column filters ({column: value or [values]}, any filter matching) as one SQL condition."""
    def literal(v):
        return "'" + v.replace("'", "''") + "'" if isinstance(v, str) else repr(float(v))

    def one(flt):
        terms = [f'"{col}" IN ({", ".join(map(literal, v if isinstance(v, list) else [v]))})'
                 for col, v in flt.items()]
        return "(" + " AND ".join(terms) + ")"
    return " OR ".join(map(one, filters)) if filters else "FALSE"


def matches(frame: pd.DataFrame, condition: str | list[dict]) -> np.ndarray:
    """Boolean mask of the rows of ``frame`` meeting a SQL condition (or a list of filters)."""
    sql = filters_sql(condition) if isinstance(condition, list) else condition
    con = duckdb.connect()
    con.register("data", frame.reset_index(drop=True).assign(_row=np.arange(len(frame))))
    try:
        rows = con.execute(f"SELECT _row FROM data WHERE {sql}").fetchnumpy()["_row"]
    except duckdb.Error as e:
        raise ValueError(f"cannot evaluate the condition {sql!r}: {e}") from None
    mask = np.zeros(len(frame), dtype=bool)
    mask[rows.astype(int)] = True
    return mask


def groups(frame: pd.DataFrame, by: list[str]):
    """``(group, rows, label)`` for each group of ``frame`` by the columns ``by`` (one group of all rows without
    any): ``group`` is {column: value}, ``label`` the text that names it in messages (empty for all rows)."""
    for key, rows in (frame.groupby(by, sort=True) if by else [((), frame)]):
        group = dict(zip(by, key if isinstance(key, tuple) else (key,)))
        yield group, rows, ", ".join(f"{k}={v}" for k, v in group.items())


def canonical(runs: pd.DataFrame, *, loss: str | None = None, error: str | None = None,
              ok_only: bool = True) -> pd.DataFrame:
    """The table with ``loss``, ``tokens``, ``token_multiplier`` and ``flops`` columns (``ok`` runs only)."""
    df = runs.copy()
    if ok_only and "status" in df:
        df = df[df["status"] == "ok"]
    if loss:
        df["loss"] = df[loss]
    elif "loss" not in df and "val_loss" in df:
        df["loss"] = df["val_loss"]
    if error:
        df["error"] = df[error]
    if "n_params" not in df:
        raise FitError("the data have no n_params column (N, the parameter count of each run)")
    if "tokens" not in df and "token_multiplier" in df:
        df["tokens"] = planned_tokens(df["n_params"], df["token_multiplier"])
    if "token_multiplier" not in df and "tokens" in df:
        df["token_multiplier"] = df["tokens"] / df["n_params"]
    for col in ("n_params", "tokens"):
        bad = np.flatnonzero(~np.isfinite(df[col].to_numpy(dtype=float))) if col in df else []
        if len(bad):
            raise FitError(f"{col} is missing or not finite in {len(bad)} row(s) (rows {bad[:5].tolist()}); fix: "
                           f"drop those runs (--where) or fill in the column")
    if "tokens" in df:
        df["flops"] = flops_6nd(df["n_params"], df["tokens"])
    return df.reset_index(drop=True)


def best_lr_points(runs: pd.DataFrame, by: list[str] | None = None, value: str = "loss") -> pd.DataFrame:
    """One row per (group, size, N, M), or (group, N, M) without a ``size`` column: the learning rate with the
    lowest seed-averaged ``value``. Two models of the same N (another shape, or a ``params:`` size resolved to
    it) stay two points: their losses differ, and a mean of them is neither's.

    Works on a study's ``runs`` table as is (``val_loss`` read as the loss).
    With seeds, ``seeds`` counts them and ``loss_seed_sd`` (of log loss) and
    ``error_seed_sd`` are their standard deviations at the best rate (NaN with
    one seed): the run-to-run noise. ``n_lrs`` counts the rates tried and
    ``lr_edge`` is ``high`` or ``low`` when the best is the largest or smallest of
    two or more (the optimum may lie beyond the sweep), else empty.
    """
    df = canonical(runs)
    if "lr" not in df:
        return df
    by = [c for c in (by if by is not None else ["dataset"]) if c in df]
    keys = by + ["n_params", "token_multiplier"] + (["size"] if "size" in df and "size" not in by else [])
    numeric = [c for c in df.select_dtypes("number").columns if c not in keys + ["lr", "seed"]]
    carried = [c for c in df.columns if c not in keys + ["lr"] + numeric + ["seed"]]
    agg = {**{c: "mean" for c in numeric}, **{c: "first" for c in carried}}
    if "seed" in df:
        agg["seed"] = "count"
        df = df.assign(loss_seed_sd=np.log(df["loss"]), **({"error_seed_sd": df["error"]} if "error" in df else {}))
        agg.update({c: "std" for c in ("loss_seed_sd", "error_seed_sd") if c in df})
    per_lr = df.groupby(keys + ["lr"], as_index=False, dropna=False).agg(agg)
    if "seed" in per_lr:
        per_lr = per_lr.rename(columns={"seed": "seeds"})
    sweep = per_lr.groupby(keys, dropna=False)["lr"]
    per_lr = per_lr.assign(n_lrs=sweep.transform("size"), _lo=sweep.transform("min"), _hi=sweep.transform("max"))
    best = per_lr.loc[per_lr.groupby(keys, dropna=False)[value].idxmin()]
    edge = np.where(best["lr"] == best["_hi"], "high", np.where(best["lr"] == best["_lo"], "low", ""))
    best = best.assign(lr_edge=np.where(best["n_lrs"] >= 2, edge, "")).drop(columns=["_lo", "_hi"])
    return best.sort_values(keys).reset_index(drop=True)


def default_fit_on(points: pd.DataFrame) -> list[dict]:
    """:func:`scaling.fit.fit_set.default_fit_on` of a table of points."""
    return fit_set.default_fit_on(points.to_dict("records"))


# -- fitting a table ------------------------------------------------------------------------------------------------
def loss_law(law: str) -> str:
    """The law that predicts the loss: the downstream law chains the over-training law."""
    return "overtraining" if law == "downstream" else law


def law_inputs(law: str) -> tuple[str, ...]:
    """The columns a law predicts from (the downstream law: those of the loss law it is chained to)."""
    return LAWS[loss_law(law)].inputs


def _reused(cache: dict | None, make, *parts):
    """``make()``, made once per distinct ``parts`` (arrays and values) in ``cache``, and a copy of it each time (the
    caller completes its result: calibration, meta); without a cache, ``make()``."""
    if cache is None:
        return make()
    key = hashlib.sha256(b"".join(repr(p.shape).encode() + np.ascontiguousarray(p).tobytes()
                                  if isinstance(p, np.ndarray) else repr(p).encode() + b"\0"
                                  for p in parts)).hexdigest()
    if key not in cache:
        cache[key] = make()
    return copy.deepcopy(cache[key])


def _fit_one(law, pts, mask, error_mask, *, method, resamples, seed, scheme, level, cache=None):
    """The fit(s) of one group: {"loss": FitResult} (+ "error" for downstream, or {"lr": …}).

    ``cache`` (see :func:`fit_table`) holds over-training fits already made to the same points with the same run
    weights: the downstream law's chained loss fit is the over-training law's fit, not a second bootstrap of it.
    """
    fit = pts[mask]
    if law == "optimal_lr":
        return {"lr": fit_optimal_lr(fit["n_params"], fit["tokens"], fit["lr"], level=level)}
    # one bootstrap weight per run of the group, so the downstream law's two fits share their runs' weights
    w = run_weights(len(pts), resamples, seed, scheme) if resamples > 0 else None

    def boot(rows):
        return {"weights": None if w is None else w[:, rows], "seed": seed, "level": level}
    if law == "chinchilla":
        out = {"loss": fit_chinchilla(fit["n_params"], fit["tokens"], fit["loss"], **boot(mask))}
    else:
        data = [fit[c].to_numpy(dtype=float) for c in ("n_params", "token_multiplier", "loss")]
        out = {"loss": _reused(cache, lambda: fit_overtraining(*data, method=method, **boot(mask)),
                               *data, method, seed, level, np.zeros(0) if w is None else w[:, mask])}
    if law == "downstream":
        err = pts[error_mask]
        out["error"] = fit_downstream(err["loss"], err["error"], **boot(error_mask))
    fit_inputs = log_inputs(*(fit[c] for c in law_inputs(law)))
    for r in out.values():
        r.fit_inputs = fit_inputs
    return out


def _point_predictions(law, result, pts) -> dict[str, np.ndarray]:
    """The law's point predictions of ``pts``: {"loss": …} (+ "error", from the predicted loss)."""
    inputs = [pts[c] for c in law_inputs(law)]
    out = {"loss": result["loss"].predict(*inputs)["predicted"].to_numpy()}
    if law == "downstream":
        out["error"] = LAWS["downstream"](out["loss"], **result["error"].params)
    return out


def _errors(q: str, predicted, measured) -> np.ndarray:
    """Out-of-sample errors in the space the law's intervals live in: of log loss, of the error fraction."""
    predicted, measured = np.asarray(predicted, dtype=float), np.asarray(measured, dtype=float)
    return np.log(predicted / measured) if q == "loss" else predicted - measured


def run_noise(pts: pd.DataFrame, q: str) -> tuple[float, float] | None:
    """``(sd, seeds)``: the seed-to-seed standard deviation of one run's ``q`` (log loss, or error), pooled over the
    points of ``pts`` with two or more seeds (weighted by their degrees of freedom), and the harmonic mean of their
    seed counts (the noise of a mean of k runs is sd/√k); None when no point has two seeds."""
    col = f"{q}_seed_sd"
    if col not in pts or "seeds" not in pts:
        return None
    several = pts[(pts["seeds"] >= 2) & pts[col].notna()]
    if several.empty:
        return None
    dof = several["seeds"] - 1
    return float(np.sqrt((dof * several[col] ** 2).sum() / dof.sum())), float(len(pts) / (1 / pts["seeds"]).sum())


def _fit_noise(law, result, pts, mask, q: str) -> float:
    """The robust scale of the fit's own residuals, in the calibration's space (log loss, or the error)."""
    fit = result[q]
    if fit.residual_space == ("log" if q == "loss" else "linear"):
        return fit.noise_sd
    return robust_scale(_errors(q, _point_predictions(law, result, pts[mask])[q], pts.loc[mask, q]), len(fit.params))


def _calibrations(law, pts, mask, error_mask, test, result, *, method, level, cache=None) -> dict:
    """The calibration of each predicted quantity of one group (see :mod:`scaling.fit.calibration`), or None each.

    Scores: every measured point that is neither in the fit set nor a
    backtest's test point, predicted by the fit (``held_out``), and every
    fit-set point beyond the cut of an extrapolation fold, predicted by a refit
    on the fit-set points at or below it (``fold``).
    """
    quantities = ["loss"] + (["error"] if law == "downstream" else [])
    inputs = log_inputs(*(pts[c] for c in law_inputs(law)))
    flops = pts["flops"].to_numpy()
    scores = {q: [] for q in quantities}

    def score(fitted, train, rows, source):
        predicted = _point_predictions(law, fitted, pts[rows])
        up, down = displacement(inputs[train], inputs[rows])
        row = np.flatnonzero(rows) if source == "held_out" else -1  # a held-out point's interval leaves it out
        for q in quantities:
            scores[q].append(pd.DataFrame({"error": _errors(q, predicted[q], pts.loc[rows, q]), "up": up,
                                           "down": down, "source": source, "row": row}))
    if (~mask & ~test).any():
        score(result, mask, ~mask & ~test, "held_out")
        if law == "downstream":  # the error law's own fit set is not out of sample for the error
            scores["error"][-1] = scores["error"][-1][~error_mask[~mask & ~test]]
    for cut in extrapolation_folds(flops[mask], fit_set.fold_points(loss_law(law))):
        train = mask & (flops <= cut)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                fold = _fit_one(law, pts, train, None if error_mask is None else error_mask & (flops <= cut),
                                method=method, resamples=0, seed=0, scheme="bayesian", level=level, cache=cache)
        except (FitError, ValueError):
            continue
        score(fold, train, mask & ~train, "fold")
    out = {}
    for q in quantities:
        s = pd.concat(scores[q], ignore_index=True) if scores[q] else None
        noise = run_noise(pts[~test], q) or (_fit_noise(law, result, pts, mask, q), 1.0)
        fitted = int((mask if q == "loss" else error_mask).sum())
        out[q] = None if s is None else calibrate("log" if q == "loss" else "linear", s["error"], s["up"], s["down"],
                                                  s["source"].tolist(), s["row"], *noise, fitted)
    return out


def _targets(targets, group: dict, sizes: dict, pts: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for t in targets:
        if any(k in t and t[k] != v for k, v in group.items()):
            continue
        if "size" in t:
            known = pts.loc[pts["size"] == t["size"], "n_params"] if "size" in pts else pd.Series(dtype=float)
            if t["size"] not in sizes and not len(known):
                raise FitError(f"target size {t['size']!r} is neither a model of the study nor in the data")
            n = float(sizes[t["size"]]) if t["size"] in sizes else float(known.iloc[0])
        else:
            n = float(t["n_params"])
        m = float(t["token_multiplier"]) if "token_multiplier" in t else float(t["tokens"]) / n
        rows.append({**group, "size": t.get("size"), "n_params": n, "token_multiplier": m})
    return pd.DataFrame(rows)


def _measure(targets: pd.DataFrame, pts: pd.DataFrame, columns) -> pd.DataFrame:
    """The measured values of the points that match a target's (N, M), and its size when it names one (NaN for
    untrained targets), and ``_row``, the matching point's row (−1 for none)."""
    def matching(t) -> np.ndarray:
        at = np.isclose(pts["n_params"], t.n_params) & np.isclose(pts["token_multiplier"], t.token_multiplier)
        if isinstance(t.size, str) and "size" in pts:  # that model, not another of its N
            at &= (pts["size"] == t.size).to_numpy()
        return np.flatnonzero(at)
    same = [matching(t) for t in targets.itertuples()]
    for col in columns:
        targets[col] = [pts[col].iloc[rows].mean() if len(rows) and col in pts else np.nan for rows in same]
    targets["_row"] = [int(rows[0]) if len(rows) else -1 for rows in same]
    return targets


def fit_table(law: str, runs: pd.DataFrame, *, fit_on: str | list[dict] | None = None,
              error_fit_on: str | list[dict] | None = None, targets: list[dict] = (), by: list[str] | None = None,
              sizes: dict | None = None, method: str = "huber-log", resamples: int = 0, seed: int = 0,
              scheme: str = "bayesian", level: float = 0.95, test: str | list[dict] | None = None,
              calibrate_intervals: bool = True, chance_error: float | None = None, cache: dict | None = None,
              ) -> tuple[list[FitResult], pd.DataFrame]:
    """Fit ``law`` to each group of ``runs``; return the fits and one prediction row per point and target.

    ``law``: ``overtraining``, ``downstream`` (the over-training loss law on
    ``fit_on`` chained to the error law on ``error_fit_on``, default ``fit_on``),
    ``chinchilla`` or ``optimal_lr``. ``fit_on`` defaults to
    :func:`default_fit_on` for laws of N and M, and to every point otherwise.
    ``test`` (a condition) marks a backtest's test points: never fitted on,
    never used to calibrate, predicted with role ``test``. Each fit's ``meta``
    holds its group and fit set.

    With ``calibrate_intervals`` (the default) the loss and error intervals are
    calibrated on the group's out-of-sample errors when it has enough
    (:mod:`scaling.fit.calibration`); otherwise they are the bootstrap's. Each
    fit's ``meta["diagnostics"]`` lists what :func:`scaling.fit.diagnostics.diagnose`
    found (``chance_error``: the downstream error of guessing, for its check).

    ``cache``, a dict shared by calls on the same runs (the fit stage's over-training and downstream laws), makes
    each over-training fit (with its bootstrap, and those of the calibration's folds) once: the same points and run
    weights give the same fit.
    """
    if law not in TABLE_LAWS:
        raise ValueError(f"unknown law {law!r}; use one of {TABLE_LAWS}")
    by = [c for c in (by or []) if c in runs]
    sizes = sizes or {}
    points = best_lr_points(runs, by)
    if law == "downstream" and "error" not in points:
        raise FitError("the downstream law needs an error column (average top-1 error per run)")
    fits, predictions = [], []
    for group, pts, label in groups(points, by):
        pts = pts.reset_index(drop=True)
        is_test = matches(pts, test) if test is not None else np.zeros(len(pts), dtype=bool)
        cond = fit_on if fit_on is not None else (default_fit_on(pts[~is_test])
                                                  if law in ("overtraining", "downstream") else "TRUE")
        mask = matches(pts, cond) & ~is_test
        error_mask = (matches(pts, error_fit_on if error_fit_on is not None else cond) & ~is_test
                      if law == "downstream" else None)
        if not mask.any():
            raise FitError(f"no point{f' ({label})' if label else ''} is in the fit set {cond!r}")
        result = _fit_one(law, pts, mask, error_mask, method=method, resamples=resamples, seed=seed, scheme=scheme,
                          level=level, cache=cache)
        if calibrate_intervals and law != "optimal_lr":
            for q, cal in _calibrations(law, pts, mask, error_mask, is_test, result, method=method, level=level,
                                        cache=cache).items():
                result[q].calibration = cal
        for r in result.values():
            r.meta.update(group=group, fit_on=cond, **({"error_fit_on": error_fit_on or cond}
                                                       if r.law == "downstream" else {}))
            if r.meta.get("at_bound"):
                warnings.warn(f"{label or 'fit'}: the fitted {r.meta['at_bound']} ended on a bound; "
                              f"the fit set may be too small or too noisy for the law", FitWarning)
        fits.extend(result.values())
        carried = [c for c in (*by, *ID_COLUMNS, "n_params", "token_multiplier", "tokens", "lr") if c in pts]
        measured = pts[carried].loc[:, ~pd.Index(carried).duplicated()].copy()
        measured["role"] = np.select([mask, is_test], ["fit", "test"], "held_out")
        measured["_row"] = np.arange(len(pts))
        for col in ("loss", "error"):
            if col in pts:
                measured[f"measured_{col}"] = pts[col]
        if law == "optimal_lr":
            measured["measured_lr"] = pts["lr"]
        tgt = _targets(targets, group, sizes, pts)
        if len(tgt):
            tgt = _measure(tgt, pts, [c for c in ("loss", "error") if c in pts]).rename(
                columns={"loss": "measured_loss", "error": "measured_error"})
            tgt["role"] = "target"
        p = _predict(law, result, pd.concat([measured, tgt], ignore_index=True))
        fitted_flops = flops_6nd(pts.loc[mask, "n_params"], pts.loc[mask, "tokens"]).max()
        p = p.assign(compute_ratio=p["flops"] / fitted_flops)
        if law == "downstream":  # the error law's own fit set is no held-out point of the error
            p["error_role"] = np.where(np.r_[error_mask, np.zeros(len(p) - len(pts), dtype=bool)], "fit", p["role"])
        for name, r in result.items():
            r.meta["diagnostics"] = r.meta.get("diagnostics", []) + diagnose(
                r, pts, error_mask if name == "error" else mask, p, chance_error)
            for message in r.meta["diagnostics"]:
                warnings.warn(f"{label or r.law}: {r.law} law: {message}", FitWarning)
        predictions.append(p)
    pred = pd.concat(predictions, ignore_index=True)
    pred["n_params"] = pred["n_params"].round().astype("int64")
    pred.insert(0, "law", law)
    return fits, pred


def _with_interval(rows: pd.DataFrame, name: str, p: pd.DataFrame, law: pd.DataFrame | None = None) -> None:
    rows[f"predicted_{name}"] = p["predicted"].to_numpy()
    rows[f"predicted_{name}_lo"] = p["lo"].to_numpy()
    rows[f"predicted_{name}_hi"] = p["hi"].to_numpy()
    if law is not None:
        rows[f"predicted_{name}_law_lo"] = law["lo"].to_numpy()
        rows[f"predicted_{name}_law_hi"] = law["hi"].to_numpy()


def _score(rows: pd.DataFrame, name: str, prefix: str) -> None:
    """``rel_error`` = predicted/measured − 1, ``half_width`` (of the new-run interval, relative to the prediction)
    and ``covered``, with ``prefix``."""
    measured, predicted = rows[f"measured_{name}"], rows[f"predicted_{name}"]
    rows[f"{prefix}rel_error"] = predicted / measured - 1
    lo, hi = rows[f"predicted_{name}_lo"], rows[f"predicted_{name}_hi"]
    rows[f"{prefix}half_width"] = (hi - lo) / 2 / predicted
    covered = pd.array((lo <= measured) & (measured <= hi), dtype="boolean")
    covered[(measured.isna() | lo.isna()).to_numpy()] = pd.NA
    rows[f"{prefix}covered"] = covered


def _predict(law: str, result: dict[str, FitResult], rows: pd.DataFrame) -> pd.DataFrame:
    rows = rows.copy()
    planned = planned_tokens(rows["n_params"], rows["token_multiplier"])  # a target's D
    rows["tokens"] = rows["tokens"].fillna(planned) if "tokens" in rows else planned
    rows["flops"] = flops_6nd(rows["n_params"], rows["tokens"])
    at = rows.pop("_row").to_numpy() if "_row" in rows else None
    if law == "optimal_lr":
        _with_interval(rows, "lr", result["lr"].predict(rows["n_params"], rows["tokens"]))
        _score(rows, "lr", "")
        return rows
    inputs = [rows[c] for c in law_inputs(law)]
    loss = result["loss"]
    up, down = loss.extrapolation(*inputs)
    rows["extrapolation_up"], rows["extrapolation_down"] = up, down
    if law == "downstream":
        chained = predict_chained(loss, result["error"], *inputs, rows=at)
        for col in chained:
            rows[col] = chained[col].to_numpy()
    else:
        _with_interval(rows, "loss", loss.predict(*inputs, rows=at),
                       loss.predict(*inputs, interval="confidence", rows=at))
    rows["calibrated"] = loss.calibrated
    if "measured_loss" not in rows:
        rows["measured_loss"] = np.nan
    _score(rows, "loss", "")
    if law == "downstream":
        rows["error_calibrated"] = result["error"].calibrated
        _score(rows, "error", "error_")
    return rows


def backtest(law: str, runs: pd.DataFrame, *, order: str = "flops", split: float | None = None,
             train_fraction: float | None = None, fit_on: str | list[dict] | None = None, by: list[str] | None = None,
             **kwargs) -> tuple[list[FitResult], pd.DataFrame]:
    """Fit ``law`` on the points whose ``order`` (compute, by default) is at most a cut, predict the rest.

    The cut is ``split``, or else the ``train_fraction`` quantile (default ½) of
    each group's distinct ``order`` values. The points above it are the test
    points (role ``test``): the fit and its calibration never see them.
    ``fit_on`` narrows the fit set within the points below the cut (default:
    all of them); the others below it are held out and calibrate the intervals.
    Other arguments as for :func:`fit_table`.
    """
    df = canonical(runs)  # adds flops = 6·N·D
    if order not in df:
        raise FitError(f"--order {order}: the data have no such column; fix: use one of {sorted(map(str, df))}")
    if split is not None and train_fraction is not None:
        raise FitError("give --split or --train-fraction, not both")
    fraction = 0.5 if train_fraction is None else train_fraction
    if not 0 < fraction < 1:
        raise FitError(f"--train-fraction {fraction:g}: fix: give a fraction between 0 and 1")
    by = [c for c in (by or []) if c in runs]
    needed = len(LAWS["overtraining" if law == "downstream" else law].params) + 1
    parts = []
    for _, g, label in groups(df, by):
        values = np.unique(g[order].dropna().to_numpy(dtype=float))
        cut = split if split is not None else values[max(0, int(np.ceil(fraction * len(values))) - 1)]
        label = f" ({label})" if label else ""
        train, test = g[g[order] <= cut], g[g[order] > cut]
        n_train = len(train.drop_duplicates(["n_params", "tokens"]))
        if test.empty:
            raise FitError(f"no point{label} has {order} above the cut {cut:.4g} (largest: {values.max():.4g}); fix: "
                           f"lower --split or --train-fraction")
        if n_train < needed:
            raise FitError(f"only {n_train} point(s){label} have {order} at most the cut {cut:.4g}, and the {law} law "
                           f"needs at least {needed}; fix: raise --split or --train-fraction")
        parts.append(g.assign(_test=g[order] > cut))
    return fit_table(law, pd.concat(parts), fit_on="TRUE" if fit_on is None else fit_on, by=by, test="_test",
                     **kwargs)


def backtest_summary(pred: pd.DataFrame, by: list[str] = (), roles=("held_out", "test"), q: str = "loss",
                     ) -> pd.DataFrame:
    """Per group: how the predictions of points the fit did not see fared (a backtest's aggregate line).

    ``n``, ``coverage`` (the share of measured values inside the new-run
    interval, at the fit's nominal level), ``median_half_width`` (relative),
    ``mean_abs_rel_error`` and ``median_abs_rel_error`` (of predicted/measured − 1),
    ``max_compute_ratio`` (C over the fit set's largest C) and ``calibrated``.
    """
    prefix = "" if q in ("loss", "lr") else "error_"
    role = pred[f"{prefix}role"] if f"{prefix}role" in pred else pred["role"]
    p = pred[role.isin(roles) & pred[f"measured_{q}"].notna()]
    by = [c for c in by if c in p]
    rows = []
    for group, g, _ in groups(p, by):
        if g.empty:
            continue
        rel = g[f"{prefix}rel_error"].abs()
        rows.append({**group, "quantity": q, "n": len(g),
                     "coverage": float(g[f"{prefix}covered"].astype(float).mean()),
                     "median_half_width": float(g[f"{prefix}half_width"].median()),
                     "mean_abs_rel_error": float(rel.mean()), "median_abs_rel_error": float(rel.median()),
                     "max_compute_ratio": float(g["compute_ratio"].max()) if "compute_ratio" in g else np.nan,
                     "calibrated": bool(g.get(f"{prefix}calibrated", pd.Series([False])).all())})
    return pd.DataFrame(rows)


# -- output ----------------------------------------------------------------------------------------------------------
def fit_dict(fit: FitResult) -> dict:
    """A fit as JSON-ready dict, with the group's columns (e.g. ``dataset``) at the top level."""
    d = fit.to_dict()
    d.update(d.get("group", {}))
    if fit.law == "overtraining":
        d["compute_form"] = overtraining_compute_form(fit.params["b"], fit.params["a"])
    return d


def _fit_key(f: dict) -> dict:
    """The columns that name a fit: its law, its group (e.g. the dataset), and its task or quantity if it has one."""
    return {"law": f["law"], **f.get("group", {}), **{k: f[k] for k in ("task", "quantity") if k in f}}


def fits_table(fits: list[dict]) -> pd.DataFrame:
    """One row per fit: what was fitted, how and how well (its parameters: :func:`parameters_table`)."""
    rows = []
    for f in fits:
        cal = f.get("calibration")
        rows.append({
            **_fit_key(f), "formula": f["formula"], "method": f["method"], "n_points": f["n_points"],
            "objective": f["objective"], "level": f["level"], "fit_on": json.dumps(f.get("fit_on")),
            "at_bound": json.dumps(f.get("at_bound") or []),
            "calibrated": bool(f.get("calibrated")),
            "calibration": None if not cal else json.dumps({k: v for k, v in cal.items() if k not in
                                                            ("scores", "theta")}),
            "diagnostics": json.dumps(f.get("diagnostics") or []),
        })
    return pd.DataFrame(rows)


def parameters_table(fits: list[dict]) -> pd.DataFrame:
    """One row per fit × parameter of its law: value, standard error and interval at the fit's level, named by the
    columns that name the fit in :func:`fits_table`."""
    return pd.DataFrame([{**_fit_key(f), "parameter": p, "value": f["params"][p], "stderr": f["stderr"][p],
                          "lo": f["interval"][p][0], "hi": f["interval"][p][1]}
                         for f in fits for p in LAWS[f["law"]].params])


def records(table: pd.DataFrame) -> list[dict]:
    """The rows of a table as JSON-ready dicts, missing values as None."""
    return table.astype(object).where(table.notna(), None).to_dict(orient="records")
