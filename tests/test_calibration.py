"""Calibrated prediction intervals (scaling.fit.calibration), and the backtests that prove them on published data.

The goal figures of the predictions issue, measured here on the shipped testbed of Gadre et al. (2024):
every held-out point of the paper's fit design on all 8 validation sets × 3 training sets, the six Figure 1
targets, and a backtest of the Chinchilla points across 1e21 FLOPs.
"""

from __future__ import annotations

import subprocess
import sys
import warnings

import numpy as np
import pandas as pd
import pytest

from scaling.testbeds import gadre
from scaling.fit.calibration import Calibration, calibrate, displacement, extrapolation_folds, fit_scale, log_inputs
from scaling.fit.tables import backtest, backtest_summary, fit_table, matches
from test_chinchilla import POINTS

VAL_SETS = ("c4_val", "openlm", "paloma_c4_en", "paloma_dolma_100_programing_languages", "paloma_falcon-refinedweb",
            "paloma_ptb", "paloma_redpajama", "val_de-en_100")


# -- the pieces -----------------------------------------------------------------------------------------------------
def test_displacement_is_zero_inside_the_fit_set_and_split_by_direction_outside():
    fit = log_inputs([1e6, 1e7, 1e6], [20, 20, 320])  # a triangle in (log N, log M)
    up, down = displacement(fit, log_inputs([3e6, 1e8, 1e6, 1e7], [40, 20, 5, 320]))
    assert up[0] == down[0] == 0  # inside
    assert up[1] == pytest.approx(1.0) and down[1] == 0  # one decade more N
    assert down[2] == pytest.approx(np.log10(4)) and up[2] == 0  # M = 5 below the fit set's M = 20
    assert up[3] > 0 and down[3] == 0  # beyond the triangle's long side, towards larger N and M


def test_the_error_model_recovers_how_errors_grow_with_distance():
    rng = np.random.default_rng(0)
    up, down = rng.uniform(0, 1.5, 3000), np.where(rng.uniform(size=3000) < 0.3, rng.uniform(0, 0.6, 3000), 0)
    s = np.sqrt(0.005**2 + (0.02 * up) ** 2 + (0.1 * down) ** 2)
    e = s * rng.standard_t(4, 3000)
    s0, k_up, k_down = np.exp(fit_scale(e, up, down))
    assert (s0, k_up, k_down) == pytest.approx((0.005, 0.02, 0.1), rel=0.15)
    cal = calibrate("log", e, up, down, ["fold"] * 3000, np.full(3000, -1), noise=0.0)
    lo, hi = cal.interval(np.ones(3000), up, down, 0.9)
    assert np.mean((np.log(lo) <= -e) & (-e <= np.log(hi))) == pytest.approx(0.9, abs=0.02)


def test_a_direction_no_score_tested_borrows_the_other_directions_growth():
    rng = np.random.default_rng(1)
    up = rng.uniform(0, 1, 200)
    e = np.sqrt(0.004**2 + (0.03 * up) ** 2) * rng.standard_normal(200)
    s0, k_up, k_down = np.exp(fit_scale(e, up, np.zeros(200)))
    assert k_down == k_up and k_up == pytest.approx(0.03, rel=0.3)


def test_beyond_the_distances_its_scores_tested_a_log_loss_error_grows_at_the_prior_rate():
    from scipy import stats
    from scaling.fit.calibration import UNTESTED_GROWTH

    rng = np.random.default_rng(3)
    up = rng.uniform(0, 0.2, 60)  # scores tested to 0.2 decades, where the law barely misses: κ↑ fits ≈ 0
    e = 0.004 * rng.standard_normal(60)
    t = stats.t.ppf(0.975, 4)
    log, linear = (calibrate(space, e, up, np.zeros(60), ["fold"] * 60, np.full(60, -1), noise=0.0)
                   for space in ("log", "linear"))
    assert log.params["kappa_up"] < 0.005 and log.max_up == pytest.approx(up.max())
    at = np.array([0.1, 3.2])
    fitted = np.sqrt(np.exp(2 * log.theta) @ np.vstack([np.ones(2), at**2, np.zeros(2)]))  # the fitted growth only
    inside, far = np.log(log.interval(np.ones(2), at, np.zeros(2), 0.95)[1])
    assert inside == pytest.approx(t * fitted[0]) and inside < 0.02  # within the tested distances: as fitted
    assert (far / t) ** 2 == pytest.approx(fitted[1] ** 2 + (UNTESTED_GROWTH["kappa_up"] * (3.2 - up.max())) ** 2)
    assert far >= t * UNTESTED_GROWTH["kappa_up"] * (3.2 - up.max())  # 3 untested decades at 0.02 each
    assert log.params["kappa_down"] < 1e-5 < linear.params["kappa_down"]  # no score went down: only a fraction borrows
    below = np.log(log.interval([1.0], [0.0], [1.0], 0.95)[1][0])  # 1 untested decade downwards (none tested)
    assert below >= t * UNTESTED_GROWTH["kappa_down"]
    assert linear.interval([1.0], [3.2], [0.0], 0.95)[1][0] - 1 < 0.1  # a fraction's error has no prior: as fitted
    assert linear.interval([1.0], [3.2], [0.0], 0.95)[1][0] - 1 < far


def test_a_point_never_sees_its_own_score():
    rng = np.random.default_rng(2)
    e = rng.normal(0, 0.01, 20)
    e[7] = 0.2  # an outlying held-out run
    cal = calibrate("log", e, np.zeros(20), np.zeros(20), ["held_out"] * 20, np.arange(20), noise=0.0)
    own = cal.interval([1.0], [0.0], [0.0], 0.95, rows=[7])
    other = cal.interval([1.0], [0.0], [0.0], 0.95, rows=[3])
    assert own[1][0] < other[1][0]  # without its own outlying score, its interval is narrower
    assert np.log(own[1][0]) < 0.2  # and so it is not covered by an interval it helped widen
    assert isinstance(cal.without_row(7), Calibration) and cal.without_row(7).n_scores == 19
    assert calibrate("log", e[:5], np.zeros(5), np.zeros(5), ["held_out"] * 5, np.arange(5), 0.0) is None


def test_folds_keep_at_least_half_the_fit_set_and_predict_the_rest():
    cuts = extrapolation_folds(np.arange(1.0, 21.0), min_train=6)
    assert cuts == [10.0, 13.0, 16.0, 19.0]  # 10..19 runs below the cut, at least one above
    assert extrapolation_folds(np.arange(1.0, 6.0), min_train=6) == []  # the paper's 5-point fit set: no folds


# -- the testbed of Gadre et al. --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def paper_design():
    """Every validation set × training set fitted as in Figure 1, every other run predicted (no bootstrap needed)."""
    runs = pd.concat([gadre.load_runs(val_set=v).assign(val_set=v) for v in VAL_SETS], ignore_index=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fits, pred = fit_table("overtraining", runs, fit_on=gadre.LOSS_FIT_ON, by=["dataset", "val_set"])
    return fits, pred[pred["role"] == "held_out"]


@pytest.mark.slow
def test_the_new_run_intervals_cover_88_to_98_percent_of_every_held_out_point(paper_design):
    fits, held = paper_design
    assert len(fits) == 24 and all(f.calibrated for f in fits) and len(held) == 712
    agg = backtest_summary(held).iloc[0]
    per_set = backtest_summary(held, ["val_set"])
    print(f"\nall 24 groups: {agg['n']} points, coverage {100 * agg['coverage']:.1f}%, median half-width "
          f"{100 * agg['median_half_width']:.2f}%, mean |rel. error| {100 * agg['mean_abs_rel_error']:.2f}%")
    print(per_set[["val_set", "n", "coverage", "median_half_width", "mean_abs_rel_error"]].to_string(index=False))
    assert 0.88 <= agg["coverage"] <= 0.98
    assert (per_set["coverage"] >= 0.85).all()  # no validation set is left uncovered to pay for the others
    # The goal's median half-width of 3% is out of reach on this design (next test); this guards what is reached.
    assert agg["median_half_width"] <= 0.075


@pytest.mark.slow
def test_no_interval_on_these_predictions_can_cover_88_percent_at_3_percent_half_width(paper_design):
    """Why the goal's 3% is out of reach: even an oracle that knew, in hindsight, how badly the law misses in each
    cell of the design (size × M) and in each validation set × training set (a log-additive model of |error| fitted
    to the very errors it is judged on) needs a median half-width above 3% to cover 88% of the points. That is the
    best of one family of interval widths, not a proof for all; but no interval that must be set before seeing the
    errors can know more than this one is told. The point predictions are the paper's (the three fitting methods
    agree to 0.01%), so a sharper interval would need better predictions, not a better interval method."""
    import statsmodels.formula.api as smf

    _, held = paper_design
    df = held.assign(log_err=np.log(held["rel_error"].abs() + 1e-4),
                     cell=held["model"] + "@" + held["token_multiplier"].astype(str),
                     group=held["val_set"] + "/" + held["dataset"])
    model = smf.ols("log_err ~ C(cell) + C(group)", df).fit()
    slack = np.quantile(df["log_err"] - model.fittedvalues, 0.88)
    oracle = np.exp(model.fittedvalues + slack)
    assert np.mean(df["rel_error"].abs() <= oracle) >= 0.88
    print(f"\noracle: median half-width {100 * np.median(oracle):.2f}% at 88% coverage")
    assert np.median(oracle) > 0.03


@pytest.mark.slow
def test_the_figure1_targets_are_covered_with_sharp_intervals():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, pred = fit_table("overtraining", gadre.load_runs(), fit_on=gadre.LOSS_FIT_ON, by=["dataset"])
    six = pred[matches(pred, gadre.TARGETS)]
    print("\n" + six[["dataset", "model", "token_multiplier", "measured_loss", "predicted_loss", "predicted_loss_lo",
                      "predicted_loss_hi", "rel_error", "covered"]].to_string(index=False))
    assert len(six) == 6
    assert six["rel_error"].abs().mean() <= 0.0142  # no worse than the huber-log point predictions before
    assert six["covered"].sum() >= 5
    assert six["half_width"].median() <= 0.04


# -- Chinchilla ------------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_a_backtest_across_1e21_flops_of_the_chinchilla_points():
    points = pd.read_csv(POINTS)
    points = points[~points["epoch_excluded_outlier"]]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fits, pred = backtest("chinchilla", points, split=1e21)
    test = pred[pred["role"] == "test"]
    agg = backtest_summary(pred, roles=("test",)).iloc[0]
    print(f"\nfit on {fits[0].n_points} points below 1e21 FLOPs, predict {agg['n']} above (up to "
          f"{agg['max_compute_ratio']:.3g}×): coverage {100 * agg['coverage']:.1f}%, median half-width "
          f"{100 * agg['median_half_width']:.2f}%, mean |rel. error| {100 * agg['mean_abs_rel_error']:.2f}%")
    assert (test["flops"] > 1e21).all() and (pred.loc[pred["role"] == "fit", "flops"] <= 1e21).all()
    assert fits[0].calibrated and set(fits[0].calibration.source) == {"fold"}  # never the test points
    assert 0.85 <= agg["coverage"] <= 1.0 and agg["median_half_width"] < 0.03


# -- the command ------------------------------------------------------------------------------------------------------
def scaling(*args, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "scaling.cli", *args], capture_output=True, text=True, cwd=cwd)


@pytest.mark.slow
def test_scaling_backtest_prints_each_test_point_and_the_aggregate(tmp_path):
    proc = scaling("backtest", "chinchilla", "--data", str(POINTS), "--where", "NOT epoch_excluded_outlier",
                   "--split", "1e21", "--bootstrap", "0", "--predictions", str(tmp_path / "p.parquet"))
    assert proc.returncode == 0, proc.stderr
    assert "backtest (95% intervals of a new run):" in proc.stdout
    assert "loss: 23 points, coverage" in proc.stdout and "calibrated" in proc.stdout
    pred = pd.read_parquet(tmp_path / "p.parquet")
    assert (pred["role"] == "test").sum() == 23


@pytest.mark.slow
@pytest.mark.parametrize("args, message", [
    (["--split", "1e17"], "only 0 point(s) have flops at most the cut"),
    (["--split", "1e23"], "no point has flops above the cut"),
    (["--order", "nope"], "--order nope: the data have no such column; fix: use one of"),
    (["--train-fraction", "1.5"], "--train-fraction 1.5: fix: give a fraction between 0 and 1"),
])
def test_a_backtest_that_cannot_be_made_says_why_and_what_to_change(args, message):
    proc = scaling("backtest", "chinchilla", "--data", str(POINTS), "--bootstrap", "0", *args)
    assert proc.returncode != 0 and message in proc.stderr and "Traceback" not in proc.stderr
    assert proc.stderr.count("\n") == 1


@pytest.mark.slow
@pytest.mark.parametrize("table, args, message", [
    ("n_params,tokens,val\n1,2,3\n", [], "the data have no loss column (loss or val_loss); fix: name it with --loss"),
    ("n_params,tokens,loss\n", [], "no rows in"),
    ("n_params,tokens,loss\n1e6,2e7,nan\n2e6,4e7,3.0\n3e6,6e7,2.9\n4e6,8e7,2.8\n5e6,1e8,2.7\n6e6,1.2e8,2.6\n",
     ["--fit-on", "TRUE"], "NaN or infinite values in loss"),
    ("n_params,tokens,loss\n1,2,3\n", ["--bootstrap", "-5"], "-5 is negative"),
    ("n_params,tokens,loss\n1,2,3\n", ["--loss", "nope"], "--loss nope: no such column; fix: use one of"),
])
def test_scaling_fit_refuses_bad_tables_in_one_line(tmp_path, table, args, message):
    (tmp_path / "runs.csv").write_text(table)
    proc = scaling("fit", "overtraining", "--data", str(tmp_path / "runs.csv"), *args)
    assert proc.returncode != 0 and message in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr


# -- run noise, folds and the two intervals in fit_table ---------------------------------------------------------------
def seeded_runs(seeds=3, noise=0.004, misfit=0.0) -> pd.DataFrame:
    """Runs of the over-training law at 6 sizes × 4 multipliers, each with ``seeds`` seeds of log-normal run noise,
    and a misfit of the law growing with N (relative, ``misfit`` per decade above 1e7)."""
    from scaling.fit.laws import overtraining_loss

    rng = np.random.default_rng(0)
    rows = []
    for n in (1e7, 2e7, 4e7, 1e8, 2e8, 4e8):
        for m in (10, 20, 40, 80):
            law = overtraining_loss(n, m, 1.9, 450.0, -0.32, 1800.0) * (1 + misfit * np.log10(n / 1e7))
            rows += [{"dataset": "d", "n_params": n, "token_multiplier": float(m), "seed": s, "lr": 0.01,
                      "loss": law * np.exp(rng.normal(0, noise))} for s in range(seeds)]
    return pd.DataFrame(rows)


def test_seeds_set_the_run_noise_and_the_law_interval_is_narrower_than_a_new_runs():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fits, pred = fit_table("overtraining", seeded_runs(), fit_on="token_multiplier IN (20, 80)", by=["dataset"])
    cal = fits[0].calibration
    assert cal is not None and cal.noise == pytest.approx(0.004, rel=0.25) and cal.seeds == 3
    held = pred[pred["role"] == "held_out"]
    law = held["predicted_loss_law_hi"] - held["predicted_loss_law_lo"]
    run = held["predicted_loss_hi"] - held["predicted_loss_lo"]
    assert (law < run).all() and (held["half_width"] > 0.004 * 1.9).all()  # a new run's interval holds its noise


@pytest.mark.slow
def test_extrapolation_folds_calibrate_a_fit_set_without_held_out_runs():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fits, pred = fit_table("overtraining", seeded_runs(seeds=1, misfit=0.01), fit_on="TRUE", by=["dataset"],
                               targets=[{"n_params": 4e9, "token_multiplier": 20}])
    cal = fits[0].calibration
    assert cal is not None and set(cal.source) == {"fold"} and cal.params["kappa_up"] > 0
    target = pred[pred["role"] == "target"].iloc[0]
    inner = pred[pred["role"] == "fit"]["half_width"].median()
    assert target["extrapolation_up"] == pytest.approx(1.0) and target["half_width"] > inner  # wider, further out


def test_the_diagnostics_name_what_is_wrong_and_the_runs_that_fix_it():
    from scaling.fit.diagnostics import diagnose
    from scaling.fit.result import FitResult

    runs = seeded_runs(seeds=1)
    sweep = pd.concat([runs, runs.assign(lr=0.005, loss=runs["loss"] * 1.05)])  # best lr 0.01: the sweep's top
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fits, pred = fit_table("overtraining", sweep, fit_on="token_multiplier = 20 OR (n_params = 1e7 AND "
                               "token_multiplier = 80)", by=["dataset"],
                               targets=[{"n_params": 1e11, "token_multiplier": 20}])
    found = " | ".join(fits[0].meta["diagnostics"])
    assert "7 fit points for 4 parameters" in found and "add 1 or more runs" in found
    assert "edge of its sweep" in found and "(lr 0.01: try 0.02)" in found
    assert "extrapolate beyond what was tested" in found and "add runs between the fit set and them" in found
    assert "below the fitted irreducible loss" not in found and "not identified" not in found
    assert "more than once" not in found  # seeded_runs train under one epoch
    points = pred.assign(loss=pred["measured_loss"])
    fit = pred["role"] == "fit"
    largest = points["n_params"] == points.loc[fit, "n_params"].max()
    repeated = points.assign(epochs=np.where(largest, 2.5, 0.5))
    found = " | ".join(diagnose(fits[0], repeated, fit, pred))
    assert f"{int((fit & largest).sum())} fit point(s) see their training data more than once" in found
    assert "(2.5 epochs)" in found and "give the dataset more text" in found
    low_e = FitResult(**{**fits[0].__dict__, "params": {**fits[0].params, "E": 10.0}})
    assert any("below the fitted irreducible loss E = 10" in d for d in diagnose(low_e, points, pred["role"] == "fit",
                                                                                 pred))
    error_law = FitResult("downstream", "gadre", {"epsilon": 0.6, "k": 2.0, "gamma": 0.5},
                          {"epsilon": 0.3, "k": 5.0, "gamma": 0.1}, 10, 0.0)
    found = diagnose(error_law, points, pred["role"] == "fit", pred.iloc[:0], chance_error=0.75)
    assert any("ceiling ε = 0.6 is below the error of chance (0.75)" in d for d in found)
    # identified: standard error below half the value (gamma, 20%); epsilon at 50% is not, nor k at 250%
    assert any(d.startswith("epsilon, k not identified (standard error 50% of the value or more)") for d in found)


@pytest.mark.slow
def test_the_error_laws_own_fit_set_is_never_scored_as_held_out():
    """Figure 1's error law is fitted on the loss fit set plus the 1.4B model at M = 20: that run is in sample for
    the error, so it gives the error's calibration no score and counts in no held-out aggregate of the error."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fits, pred = fit_table("downstream", gadre.load_runs(), fit_on=gadre.LOSS_FIT_ON,
                               error_fit_on=gadre.ERROR_FIT_ON, by=["dataset"])
    rpj = pred[pred["dataset"] == "rpj"].reset_index(drop=True)
    one_b = rpj.index[(rpj["model"] == "open_lm_1b") & (rpj["token_multiplier"] == 20)][0]
    assert rpj.loc[one_b, "role"] == "held_out" and rpj.loc[one_b, "error_role"] == "fit"
    error_law = next(f for f in fits if f.law == "downstream" and f.meta["group"] == {"dataset": "rpj"})
    assert one_b not in error_law.calibration.row and error_law.calibration.n_fit == 6
    loss_law = next(f for f in fits if f.law == "overtraining" and f.meta["group"] == {"dataset": "rpj"})
    assert one_b in loss_law.calibration.row  # for the loss it is held out
    errors = backtest_summary(pred, ["dataset"], q="error").set_index("dataset")
    assert errors.loc["rpj", "n"] == (rpj["error_role"] == "held_out").sum() == (rpj["role"] == "held_out").sum() - 1


def test_the_law_interval_never_collapses_when_run_noise_explains_the_misfit():
    e = np.random.default_rng(3).normal(0, 0.01, 40)
    cal = calibrate("log", e, np.zeros(40), np.zeros(40), ["fold"] * 40, np.full(40, -1), noise=0.02, n_fit=16)
    lo, hi = cal.interval([3.0], [0.0], [0.0], 0.95, "confidence")
    assert 0 < np.log(hi[0] / 3.0) < np.log(cal.interval([3.0], [0.0], [0.0], 0.95)[1][0] / 3.0)
