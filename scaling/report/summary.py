"""The study's Markdown summary: each fitted law with intervals, predicted vs measured, per-task accuracy."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd

from scaling.fit.laws import overtraining_compute_form
from scaling.fit.tables import backtest_summary, best_lr_points
from scaling.report import FIGURES
from scaling.report.tables import Tables, downstream_runs, fit_parameters, law_fits, law_predictions, lr_sweep_points


def _table(df: pd.DataFrame) -> str:
    cols = list(df.columns)
    lines = ["| " + " | ".join(map(str, cols)) + " |", "|" + "---|" * len(cols)]
    for row in df.itertuples(index=False):
        lines.append("| " + " | ".join(_cell(v) for v in row) + " |")
    return "\n".join(lines)


def _cell(v) -> str:
    if v is None or v is pd.NA:
        return ""
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else "no"
    if isinstance(v, (int, np.integer)):
        return f"{v:,}"
    if isinstance(v, (float, np.floating)):
        return "" if math.isnan(v) else f"{v:.4g}"
    return str(v)


def _interval_text(lo, hi) -> str:
    return "" if pd.isna(lo) or pd.isna(hi) else f"[{lo:.4g}, {hi:.4g}]"


def _pct(level) -> str:
    return f"{level:.0%}" if pd.notna(level) else ""


def _params_table(p: pd.DataFrame, level) -> str:
    """A fit's parameters (:func:`scaling.report.tables.fit_parameters`) with standard errors and intervals."""
    return _table(pd.DataFrame({
        "parameter": p.index, "value": p["value"], "std. error": p["stderr"],
        f"{_pct(level)} interval": [_interval_text(lo, hi) for lo, hi in zip(p["lo"], p["hi"])],
    }))


def _fit_head(row, parameters: pd.DataFrame, points: str) -> list[str]:
    p = fit_parameters(parameters, row)
    out = [f"`{row['formula']}`, fitted by `{row['method']}` on {int(row['n_points'])} {points}:", "",
           _params_table(p, row.get("level")), ""]
    if row["law"] == "overtraining":
        eta = overtraining_compute_form(p.loc["b", "value"], p.loc["a", "value"])["eta"]
        out += [f"Compute exponent at fixed M: η = −b/2 = {eta:.4f}.", ""]
    at_bound = _names(row.get("at_bound"))
    if at_bound:
        out += [f"**Warning:** {', '.join(at_bound)} ended on the bound of its physical range; the fit set is too "
                "small or too noisy for this law, so treat its predictions with care.", ""]
    if row["law"] != "optimal_lr":
        out += [_calibration_text(row), ""]
    diagnostics = _names(row.get("diagnostics")) if isinstance(row.get("diagnostics"), str) else []
    if diagnostics:
        out += ["**Diagnostics:**", "", *[f"- {d}" for d in diagnostics], ""]
    return out


def _calibration_text(row) -> str:
    """How the fit's prediction intervals were made, in words."""
    cal = row.get("calibration")
    if not row.get("calibrated") or not isinstance(cal, str):
        return ("Prediction intervals are **not calibrated**: too few runs outside the fit set to test the law on, so "
                "they are the bootstrap's, which assume the law is right (see the diagnostics).")
    c = json.loads(cal)
    sources = " and ".join({"held_out": "held-out runs", "fold": "extrapolation folds of the fit set"}[s]
                           for s in c["sources"])
    unit = "%" if c["space"] == "log" else " percentage points"  # errors of log loss are relative; of error, not
    return (f"Prediction intervals are calibrated on the law's errors at {c['n_scores']} points it was not fitted on "
            f"({sources}): an error scale of {100 * c['s0']:.2g}{unit} within the fit set's range, growing by "
            f"{100 * c['kappa_up']:.2g}{unit} per decade beyond it towards larger N or M "
            f"({100 * c['kappa_down']:.2g}{unit} towards smaller), Student-t tails (ν = {c['nu']:g}).")


def _names(value) -> list[str]:
    """A list of names given as a list, an array, a JSON list or a comma-separated string (None: none)."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            value = value.split(",")
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return []
    return [str(v).strip() for v in np.atleast_1d(value) if str(v).strip()]


def _predictions(p: pd.DataFrame, q: str, level) -> pd.DataFrame:
    """Predicted vs measured ``q`` (loss, error or lr) of held-out points and targets, one row each."""
    p = p[p["error_role" if q == "error" and "error_role" in p else "role"] != "fit"]
    rel = "rel_error" if q in ("loss", "lr") else "error_rel_error"
    cov = "covered" if q in ("loss", "lr") else "error_covered"
    out = pd.DataFrame({"size": p["size"], "N": p["n_params"], "M": p["token_multiplier"],
                        "role": p["role"].str.replace("_", " ")})
    if q == "error":
        out["predicted loss"] = p["predicted_loss"]
    out[f"predicted {q}"] = p[f"predicted_{q}"]
    out[f"{_pct(level)} interval"] = [_interval_text(lo, hi) for lo, hi in
                                      zip(p.get(f"predicted_{q}_lo", np.nan * p[f"predicted_{q}"]),
                                          p.get(f"predicted_{q}_hi", np.nan * p[f"predicted_{q}"]))]
    out[f"measured {q}"] = p[f"measured_{q}"]
    out["rel. error (%)"] = 100 * p[rel] if rel in p else np.nan
    out["covered"] = [None if pd.isna(v) else bool(v) for v in p[cov]] if cov in p else None
    if q == "error" and "error_at_measured_loss" in p:  # the error law alone, without the loss law's miss
        out["error law at measured loss"] = p["error_at_measured_loss"]
    return out


def _section(title: str, fits: pd.DataFrame, parameters: pd.DataFrame, pred: pd.DataFrame, q: str, points: str,
             note: str) -> list[str]:
    out = []
    for _, row in fits.iterrows():
        task = row.get("task") if "task" in fits else None
        heading = f"{title} on `{row['dataset']}`" + (f", task set `{task}`" if isinstance(task, str) else "")
        out += [f"## {heading}", "", *_fit_head(row, parameters, points)]
        p = pred[pred["dataset"] == row["dataset"]]
        if isinstance(task, str) and "task" in p:
            p = p[p["task"] == task]
        table = _predictions(p, q, row.get("level"))
        if len(table):
            out += [f"Predicted vs measured {note} of held-out points and targets ({_pct(row.get('level'))} "
                    f"intervals of a new run; relative error = predicted / measured − 1):", "", _table(table), ""]
        if q != "lr" and len(agg := backtest_summary(p, q=q)):
            a = agg.iloc[0]
            out += [f"On the {a['n']} measured points it was not fitted on, {100 * a['coverage']:.0f}% fall inside "
                    f"their {_pct(row.get('level'))} intervals (median half-width {100 * a['median_half_width']:.2g}%); "
                    f"mean |relative error| {100 * a['mean_abs_rel_error']:.2g}%.", ""]
    return out


def accuracy_table(runs: pd.DataFrame, downstream: pd.DataFrame) -> pd.DataFrame:
    """Top-1 accuracy (%) per task (rows; task-set averages last) of each best-LR (size, M) (columns).

    The best-LR run of a (dataset, size, M) is the rate with the lowest
    seed-averaged validation loss; its accuracy is averaged over seeds.
    """
    df = downstream_runs(runs, downstream)
    best = best_lr_points(runs)[["dataset", "size", "n_params", "token_multiplier", "lr"]]
    df = df.merge(best, on=["dataset", "size", "n_params", "token_multiplier", "lr"])
    several = df["dataset"].nunique() > 1
    df["column"] = [f"{d + ': ' if several else ''}{s} M={m:g}" for d, s, m in
                    zip(df["dataset"], df["size"], df["token_multiplier"])]
    df["row"] = np.where(df["kind"] == "average", "average: " + df["task"], df["task"])
    order = df.sort_values(["dataset", "n_params", "token_multiplier"])["column"].unique()
    table = df.pivot_table(index="row", columns="column", values="accuracy", aggfunc="mean")[order] * 100
    chance = df.groupby("row")["random_baseline_accuracy"].mean() * 100
    table.insert(0, "chance", chance)
    kinds = df.groupby("row")["kind"].first()
    table = table.loc[sorted(table.index, key=lambda r: (kinds[r] == "average", r))]
    return table.rename_axis(index="task", columns=None).reset_index()


def _compute(runs: pd.DataFrame) -> str:
    """The study's training compute; on a ladder, what it spent and what training every run from scratch costs."""
    scratch = runs["flops"].sum()
    if runs["trunk"].isna().all():
        return f"{scratch:.3g} FLOPs of training"
    spent = runs["flops_spent"].sum()
    return (f"{spent:.3g} FLOPs of training on a ladder, {spent / scratch:.3f}× the {scratch:.3g} of training every "
            f"run from scratch")


def cpu_minutes(runs: pd.DataFrame) -> float:
    """The study's training time, one CPU (or device) per job: every run's job, and on a ladder each trunk once, its
    runs' largest ``trunk_wall_s`` (that of the run branching last, whose trunk time covers every segment)."""
    trunks = runs.dropna(subset=["trunk"]).groupby("trunk")["trunk_wall_s"].max().sum() if "trunk" in runs else 0.0
    return (runs["wall_s"].sum() + trunks) / 60


def summary_markdown(title: str, study: str, t: Tables, figures_dir: str | None = None) -> str:
    """The study's summary: runs, each fitted law with intervals, predicted vs measured, per-task accuracy."""
    runs, pred = t.runs, t.predictions
    counts = runs["status"].value_counts().to_dict()
    out = [f"# {title}", "", f"Study `{study}`: {len(runs)} runs "
           f"({', '.join(f'{v} {k}' for k, v in sorted(counts.items()))}), "
           f"{_compute(runs)}, {cpu_minutes(runs):.1f} CPU-minutes.", ""]
    if figures_dir is not None:
        out += ["Figures (PNG; SVG beside them): " + ", ".join(
            f"[{title}]({figures_dir}/{name}.png)" for name, (title, _) in FIGURES.items()) + ".", ""]
    out += _section("Over-training law", law_fits(t.fits, "overtraining"), t.parameters,
                    law_predictions(pred, "overtraining"), "loss", "best-LR points", "validation loss")
    out += _section("Downstream error law", law_fits(t.fits, "downstream"), t.parameters,
                    law_predictions(pred, "downstream"), "error", "runs",
                    "average top-1 error (predicted from the predicted loss)")
    if t.downstream.empty:
        out += ["## Downstream tasks", "", "No downstream tasks in this study.", ""]
    else:
        out += ["## Downstream accuracy per task", "",
                "Top-1 accuracy (%) of the best-learning-rate run of each (size, M); `chance` is random guessing.",
                "", _table(accuracy_table(runs, t.downstream)), ""]
    out += _optimal_lr_section(runs, t.fits, t.parameters, pred)
    return "\n".join(out) + "\n"


def _optimal_lr_section(runs: pd.DataFrame, fits: pd.DataFrame, parameters: pd.DataFrame,
                        pred: pd.DataFrame) -> list[str]:
    lr_fits = law_fits(fits, "optimal_lr")
    best = lr_sweep_points(runs)
    if best.empty and lr_fits.empty:
        return ["## Optimal learning rate", "", "No learning-rate sweep in this study.", ""]
    out = _section("Optimal learning rate", lr_fits, parameters, law_predictions(pred, "optimal_lr"), "lr",
                   "best learning rates", "best learning rate")
    if lr_fits.empty:
        out += ["## Optimal learning rate", "", "No η*(N, D) law was fitted: the sweep does not separate N from D "
                "(it needs best rates at two or more token multipliers).", ""]
    if best.empty:
        return out
    out += ["Best learning rate per (size, M) of the sweep; `edge`: the best rate is the sweep's highest or lowest, "
            "so η* may lie beyond it.", "", _table(pd.DataFrame({
                "dataset": best["dataset"], "size": best["size"], "N": best["n_params"].astype("int64"),
                "M": best["token_multiplier"], "best lr": best["lr"], "rates tried": best["n_lrs"].astype("int64"),
                "loss": best["loss"], "edge": best["lr_edge"]})), ""]
    return out
