"""The study's Markdown summary: the result in words first (the fitted laws, whether the fit identified their
parameters, the held-out largest run, the diagnostics), then each fitted law with intervals, predicted vs
measured, per-task accuracy."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd

from scaling.fit.calibration import UNTESTED_GROWTH
from scaling.fit.diagnostics import IDENTIFIED, identified
from scaling.fit.laws import overtraining_compute_form
from scaling.fit.stage import UNFITTED_ERROR_FIX, chance_error
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

    def growth(kappa: str, tested: str, other: str, direction: str) -> str:
        if c[tested] > 0:
            return f"{100 * c[kappa]:.2g}{unit} per decade towards {direction} N or M (tested to {c[tested]:.2g} decades)"
        borrowed = c["space"] != "log" and c[other] > 0  # fit_scale: a fraction's untested direction borrows
        return f"untested towards {direction}" + (f" (taken as the other's, {100 * c[kappa]:.2g}{unit})" if borrowed
                                                  else "")
    beyond = (f" Beyond the tested distances the error also grows at the prior {100 * UNTESTED_GROWTH['kappa_up']:g}% "
              f"(larger) and {100 * UNTESTED_GROWTH['kappa_down']:g}% (smaller) per decade."
              if c["space"] == "log" else "")
    return (f"Prediction intervals are calibrated on the law's errors at {c['n_scores']} points it was not fitted on "
            f"({sources}): an error scale of {100 * c['s0']:.2g}{unit} within the fit set's range, growing beyond it "
            f"by {growth('kappa_up', 'max_up', 'max_down', 'larger')}, "
            f"{growth('kappa_down', 'max_down', 'max_up', 'smaller')}; "
            f"Student-t tails (ν = {c['nu']:g}).{beyond}")


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


# -- the result in words ---------------------------------------------------------------------------------------------
def identification(p: pd.DataFrame) -> tuple[list[str], dict[str, float], list[str]]:
    """A fit's parameters (:func:`scaling.report.tables.fit_parameters`) split by
    :func:`scaling.fit.diagnostics.identified`: the identified, the others with their standard error as a share of
    their value, and those without a standard error."""
    known = p["stderr"].notna() & np.isfinite(p["stderr"])
    ok = [name for name in p.index[known] if identified(p.loc[name, "value"], p.loc[name, "stderr"])]
    loose = {name: p.loc[name, "stderr"] / abs(p.loc[name, "value"]) for name in p.index[known] if name not in ok}
    return ok, loose, list(p.index[~known])


def _identification_text(p: pd.DataFrame) -> str:
    ok, loose, unknown = identification(p)
    if not loose and not unknown:
        return f"Every parameter is identified (standard error below {IDENTIFIED:.0%} of its value)."
    out = [f"Identified (standard error below {IDENTIFIED:.0%} of its value): {', '.join(ok) or 'none'}."]
    if loose:
        out.append("**Not identified**: " + ", ".join(f"{name} (standard error {share:.0%} of its value)"
                                                      for name, share in loose.items()) + ".")
    if unknown:
        out.append(f"No standard error for {', '.join(unknown)} (a fit without bootstrap): not checked.")
    return " ".join(out)


def _law_text(label: str, row, parameters: pd.DataFrame, points: str) -> str:
    """One fitted law in a paragraph: its formula, its parameters ± standard errors, which ones are identified."""
    p = fit_parameters(parameters, row)
    values = ", ".join(f"{name} = {v:.4g}" + ("" if pd.isna(se) else f" ± {se:.2g}")
                       for name, v, se in zip(p.index, p["value"], p["stderr"]))
    return (f"**{label}.** `{row['formula']}`, fitted on {int(row['n_points'])} {points}: {values} (value ± standard "
            f"error). {_identification_text(p)}")


def _held_out_text(pred: pd.DataFrame, q: str, level) -> str:
    """The prediction of the held-out run of largest compute (``q``: loss or error), its interval, the measurement,
    the relative error and whether the interval covers it; then how every held-out run fared."""
    prefix = "" if q == "loss" else "error_"
    role = pred[f"{prefix}role"] if f"{prefix}role" in pred else pred["role"]
    held = pred[(role == "held_out") & pred[f"measured_{q}"].notna()]
    if held.empty:
        return (f"No run was held out from this law's fit, so its {q} predictions are untested: leave the largest run "
                f"out of `fit_on` to test them.")
    h = held.sort_values(["flops", "n_params"]).iloc[-1]
    name = h["size"] if isinstance(h.get("size"), str) else f"N = {h['n_params']:.3g}"
    far = (f", {h['compute_ratio']:.2g}× the fit set's largest compute"
           if q == "loss" and pd.notna(h.get("compute_ratio")) else "")
    lo, hi = h.get(f"predicted_{q}_lo"), h.get(f"predicted_{q}_hi")
    interval = "" if pd.isna(lo) or pd.isna(hi) else f" ({_pct(level)} interval {_interval_text(lo, hi)})"
    covered = h.get(f"{prefix}covered")
    verdict = ("" if pd.isna(covered) else
               ", **inside** its interval" if bool(covered) else ", **outside** its interval")
    which = "Held-out run" if len(held) == 1 else "Held-out run of largest compute"
    out = (f"{which} {name} (N = {int(h['n_params']):,}, M = {h['token_multiplier']:g}{far}): predicted "
           f"{q} {h[f'predicted_{q}']:.4g}{interval}, measured {h[f'measured_{q}']:.4g}, relative error "
           f"{100 * h[f'{prefix}rel_error']:+.3g}%{verdict}.")
    if len(held) > 1 and len(agg := backtest_summary(pred, q=q, roles=("held_out",))):
        a = agg.iloc[0]
        out += (f" Over all {a['n']} held-out runs: {round(a['coverage'] * a['n'])} of {a['n']} inside their "
                f"intervals, mean |relative error| {100 * a['mean_abs_rel_error']:.2g}%.")
    return out


def _ceiling_text(epsilon: float, chance: float) -> str:
    """The downstream law's ceiling ε (its error at infinite loss) against the error of random guessing."""
    if not np.isfinite(chance):
        return f"Ceiling ε = {epsilon:.3g}; the error of chance is unknown, so it is not checked."
    if epsilon >= chance:
        return (f"Ceiling ε = {epsilon:.3g} is at or above the error of chance ({chance:.3g}): a model that knows "
                f"nothing does no better than guessing, as it should.")
    return (f"Ceiling ε = {epsilon:.3g} is **below** the error of chance ({chance:.3g}): the law says a model that "
            f"knows nothing beats guessing, so it is wrong at high loss.")


def _diagnostics_text(ds: str, fit, parameters: pd.DataFrame, pred: pd.DataFrame, runs: pd.DataFrame) -> str:
    """The loss law's diagnostics in plain words: how closely it fits its points, whether a measured loss lies
    below its floor E, the sweep edges, whether its intervals are calibrated."""
    fitted = pred[(pred["role"] == "fit") & pred["rel_error"].notna()]
    n_params = len(fit_parameters(parameters, fit))
    out = [f"The loss law fits its {int(fit['n_points'])} points within {100 * fitted['rel_error'].abs().max():.2g}% "
           f"(largest |relative error|)" if len(fitted) else "The loss law has no fitted point to check"]
    if int(fit["n_points"]) < 2 * n_params:
        out[-1] += (f", but with {int(fit['n_points'])} points for {n_params} parameters it nearly interpolates them, "
                    f"so a close fit says little")
    out[-1] += "."
    E = fit_parameters(parameters, fit).loc["E", "value"]
    below = pred[pred["measured_loss"] < E]
    if len(below):
        low = below.loc[below["measured_loss"].idxmin()]
        out.append(f"Its floor E = {E:.4g} lies above a measured loss ({low['measured_loss']:.4g}, {low['size']} at "
                   f"M = {low['token_multiplier']:g}): the law cannot hold there.")
    sweeps = lr_sweep_points(runs[runs["dataset"] == ds])
    edges = sweeps[sweeps["lr_edge"] != ""]
    if sweeps.empty:
        out.append("No learning-rate sweep, so whether each run's rate is near its best is not checked.")
    elif edges.empty:
        out.append(f"Every learning-rate sweep ({len(sweeps)}) has its best rate inside, not at an edge.")
    else:
        side = {"high": "highest", "low": "lowest"}
        where = ", ".join(f"{r['size']} at M = {r['token_multiplier']:g} ({side[r['lr_edge']]} rate tried)"
                          for _, r in edges.iterrows())
        out.append(f"The best learning rate is at the edge of its sweep for {len(edges)} of {len(sweeps)} sweeps: "
                   f"{where}; their losses may be too high.")
    out.append("Its prediction intervals are calibrated on points it was not fitted on." if fit.get("calibrated") else
               "Its prediction intervals are **not calibrated**: they assume the law is right.")
    return " ".join(out)


def _chance_error(runs: pd.DataFrame, downstream: pd.DataFrame, ds: str, task) -> float:
    """The error of random guessing on a dataset's task set (:func:`scaling.fit.stage.chance_error`; NaN when the
    tables do not say)."""
    if downstream.empty:
        return float("nan")
    error = chance_error(downstream[downstream["run_id"].isin(runs.loc[runs["dataset"] == ds, "run_id"])], task)
    return float("nan") if error is None else error


def result_section(t: Tables) -> list[str]:
    """The study's result in plain words, for the top of the summary: per dataset, the loss law and whether its
    parameters are identified, the held-out largest run, the downstream law against chance, the diagnostics."""
    out = ["## Result", ""]
    ot, ds_fits = law_fits(t.fits, "overtraining"), law_fits(t.fits, "downstream")
    if ot.empty:
        return out + ["No over-training law was fitted (see the fit log).", ""]
    for _, fit in ot.iterrows():
        ds = fit["dataset"]
        pred = law_predictions(t.predictions, "overtraining")
        pred = pred[pred["dataset"] == ds]
        out += [_law_text(f"Loss law on `{ds}`", fit, t.parameters, "best-LR points"), "",
                _held_out_text(pred, "loss", fit.get("level")), ""]
        for _, dfit in ds_fits[ds_fits["dataset"] == ds].iterrows():
            task = dfit.get("task") if isinstance(dfit.get("task"), str) else None
            dpred = law_predictions(t.predictions, "downstream")
            dpred = dpred[(dpred["dataset"] == ds) & ((dpred["task"] == task) if task and "task" in dpred else True)]
            epsilon = fit_parameters(t.parameters, dfit).loc["epsilon", "value"]
            out += [_law_text(f"Downstream law on `{ds}`" + (f", task set `{task}`" if task else ""), dfit,
                              t.parameters, "runs") + " " + _ceiling_text(epsilon, _chance_error(
                                  t.runs, t.downstream, ds, task)), "",
                    _held_out_text(dpred, "error", dfit.get("level")), ""]
        if ds_fits[ds_fits["dataset"] == ds].empty and (why := _not_fitted_text(ds, t.runs, t.downstream)):
            out += [why, ""]
        out += ["**Diagnostics.** " + _diagnostics_text(ds, fit, t.parameters, pred, t.runs)
                + " Details under each law below.", ""]
    return out


def _not_fitted_text(ds: str, runs: pd.DataFrame, downstream: pd.DataFrame) -> str | None:
    """Why a dataset scored on downstream tasks has no downstream law, in words: its fit failed (the fit stage
    recorded the reason in fit/downstream.json), and how the runs' accuracy on each task set stands to chance.
    None for a dataset whose runs were scored on no task (a pre-tokenized one has no text tasks): nothing failed."""
    if "run_id" not in downstream:
        return None
    scores = downstream[downstream["run_id"].isin(runs.loc[runs["dataset"] == ds, "run_id"])]
    if scores.empty:
        return None
    sets = scores[scores["kind"] == "average"]
    ranges = [f"{g['accuracy'].min():.0%} to {g['accuracy'].max():.0%} on `{task}`"
              + (f" (guessing: {g['random_baseline_accuracy'].mean():.0%})"
                 if g["random_baseline_accuracy"].notna().any() else "")
              for task, g in sets.groupby("task")]
    return (f"**The downstream law was not fitted** on `{ds}`: its fit to the runs' errors failed "
            f"(fit/downstream.json and logs/fit.log say why)"
            + (f"; the runs' accuracy is {', '.join(ranges)}" if ranges else "")
            + f". The error law needs errors that fall with loss: {UNFITTED_ERROR_FIX}. The loss law above does not "
            "depend on it.")


def cpu_minutes(runs: pd.DataFrame) -> float:
    """The study's training time, one CPU (or device) per job: every run's job, and on a ladder each trunk once, its
    runs' largest ``trunk_wall_s`` (that of the run branching last, whose trunk time covers every segment)."""
    trunks = runs.dropna(subset=["trunk"]).groupby("trunk")["trunk_wall_s"].max().sum() if "trunk" in runs else 0.0
    return (runs["wall_s"].sum() + trunks) / 60


def summary_markdown(title: str, study: str, t: Tables, figures_dir: str | None = None) -> str:
    """The study's summary: runs, the result in words, each fitted law with intervals, predicted vs measured,
    per-task accuracy."""
    runs, pred = t.runs, t.predictions
    counts = runs["status"].value_counts().to_dict()
    out = [f"# {title}", "", f"Study `{study}`: {len(runs)} runs "
           f"({', '.join(f'{v} {k}' for k, v in sorted(counts.items()))}), "
           f"{_compute(runs)}, {cpu_minutes(runs):.1f} CPU-minutes.", ""]
    if figures_dir is not None:
        out += ["Figures (PNG; SVG beside them): " + ", ".join(
            f"[{title}]({figures_dir}/{name}.png)" for name, (title, _) in FIGURES.items()) + ".", ""]
    out += result_section(t)
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
