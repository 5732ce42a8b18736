"""The over-training law, the fit result API and fitting tables of runs (synthetic data with known truth)."""

import json

import numpy as np
import pandas as pd
import pytest

from scaling.fit.bootstrap import run_weights
from scaling.fit.estimators import (FitError, hoffmann_grid, huber_log, huber_log_refit, least_squares, lse_design,
                                lse_huber_objective)
from scaling.fit.tables import (best_lr_points, default_fit_on, filters_sql, fit_dict, fit_table, fits_table, matches,
                                 parameters_table, records)
from scaling.fit.laws import overtraining_compute_form, overtraining_loss
from scaling.fit.overtraining import fit_overtraining
from scaling.fit.result import FitResult

TRUE = {"E": 1.9, "a": 450.0, "b": -0.32, "c": 1800.0}


def grid():
    N = np.array([1e7, 3e7, 1e8, 4e8, 1e7, 1e7, 3e7])
    M = np.array([20, 20, 20, 20, 80, 320, 80])
    return N, M


def noisy(seed=0, sd=0.003):
    N, M = grid()
    return N, M, overtraining_loss(N, M, **TRUE) * (1 + np.random.default_rng(seed).normal(0, sd, len(N)))


def test_the_compute_form_is_the_same_law():
    N, M = grid()
    C = 6 * N * (M * N)
    cf = overtraining_compute_form(TRUE["b"], TRUE["a"])
    compute_form = TRUE["E"] + (cf["a_prime"] * M ** cf["eta"] + TRUE["c"] * M ** -cf["eta"]) * C ** -cf["eta"]
    assert np.allclose(overtraining_loss(N, M, **TRUE), compute_form, rtol=1e-12)


@pytest.mark.parametrize("method", [pytest.param("bounded", marks=pytest.mark.slow), "gadre", "huber-log"])
def test_every_method_recovers_the_parameters_of_noiseless_data(method):
    N, M = grid()
    fit = fit_overtraining(N, M, overtraining_loss(N, M, **TRUE), method=method)
    for p, v in TRUE.items():
        assert fit.params[p] == pytest.approx(v, rel=2e-3), p
    assert fit.predict(1e9, 20)["predicted"][0] == pytest.approx(overtraining_loss(1e9, 20, **TRUE), rel=1e-5)
    assert fit.meta.get("at_bound", []) == []


def test_noisy_data_gives_standard_errors_and_intervals_that_cover_the_truth():
    fit = fit_overtraining(*noisy(), resamples=300, seed=1)
    assert all(np.isfinite(fit.stderr[p]) and fit.stderr[p] > 0 for p in TRUE)
    assert abs(fit.params["E"] - TRUE["E"]) < 4 * fit.stderr["E"]
    for p, (lo, hi) in fit.intervals.items():
        assert lo < fit.params[p] < hi, p
        assert lo < TRUE[p] < hi, p


@pytest.mark.slow
def test_the_bootstrap_is_deterministic_for_a_seed_and_changes_with_it():
    a = fit_overtraining(*noisy(), resamples=50, seed=7)
    b = fit_overtraining(*noisy(), resamples=50, seed=7)
    c = fit_overtraining(*noisy(), resamples=50, seed=8)
    assert np.array_equal(a.samples, b.samples) and np.array_equal(a.noise, b.noise)
    assert not np.array_equal(a.samples, c.samples)


@pytest.mark.slow
def test_prediction_intervals_contain_confidence_intervals_and_widen_with_level():
    fit = fit_overtraining(*noisy(), resamples=300, seed=2)
    N, M = np.array([1e9, 4e8]), np.array([20, 640])
    pred, conf = fit.predict(N, M), fit.predict(N, M, interval="confidence")
    narrow = fit.predict(N, M, level=0.5)
    assert np.allclose(pred["predicted"], overtraining_loss(N, M, **fit.params))
    assert (pred["lo"] < pred["predicted"]).all() and (pred["predicted"] < pred["hi"]).all()
    assert (pred["hi"] - pred["lo"] >= conf["hi"] - conf["lo"]).all()
    assert (narrow["hi"] - narrow["lo"] < pred["hi"] - pred["lo"]).all()


def test_a_fit_survives_json_and_predicts_the_same_after():
    fit = fit_overtraining(*noisy(), method="gadre", resamples=40, seed=3)
    back = FitResult.from_dict(json.loads(fit.to_json()))
    assert back.params == fit.params and back.stderr == fit.stderr and back.intervals == fit.intervals
    pd.testing.assert_frame_equal(back.predict([1e9], [20]), fit.predict([1e9], [20]))
    table = fit.summary()
    assert list(table["parameter"]) == ["E", "a", "b", "c"] and {"stderr", "95% lo", "95% hi"} <= set(table)
    assert "gadre" in str(fit) and "Gadre et al. 2024" in str(fit)


@pytest.mark.parametrize("N, M, L, message", [
    ([1e7, 2e7, 3e7], [20, 20, 20], [3.0, 2.9, 2.8], "only 3 distinct"),
    ([1e7, 2e7, 3e7, 4e7, 1e7], [20, 20, 20, 20, 80], [3.0, np.nan, 2.8, 2.7, 2.9], "NaN .* in loss"),
    ([1e7, 2e7, 3e7, -4e7, 1e7], [20, 20, 20, 20, 80], [3.0, 2.9, 2.8, 2.7, 2.9], "n_params must be positive"),
    ([1e7, 2e7, 3e7, 4e7, 1e7], [20, 20, 20, 20, 0], [3.0, 2.9, 2.8, 2.7, 2.9], "token_multiplier must be positive"),
    ([1e7, 2e7, 3e7, 4e7, 1e7], [20, 20, 20, 20, 80], [3.0, 2.9, 0.0, 2.7, 2.9], "loss must be positive"),
])
def test_bad_fit_data_is_refused_with_a_reason(N, M, L, message):
    with pytest.raises(FitError, match=message):
        fit_overtraining(N, M, L)


def test_a_fit_that_converges_from_no_start_says_so():
    with pytest.raises(FitError, match="did not converge from any of 2 starts"):
        least_squares(lambda x, p: np.full_like(x, np.nan), np.arange(5.0), np.ones(5), [(1.0,), (2.0,)])


def test_an_unknown_method_is_refused():
    with pytest.raises(ValueError, match="unknown method 'lm'"):
        fit_overtraining(*noisy(), method="lm")


def runs_table():
    rows = []
    N, M = grid()
    for n, m in zip(N, M):
        for lr, penalty in ((1e-3, 0.05), (3e-3, 0.0), (1e-2, 0.02)):
            rows.append({"dataset": "d", "size": f"n{int(n)}", "n_params": int(n), "token_multiplier": float(m),
                         "lr": lr, "seed": 0, "status": "ok", "flops": 6 * n * n * m,
                         "val_loss": overtraining_loss(n, m, **TRUE) + penalty})
    rows.append({**rows[0], "lr": 3e-2, "status": "diverged", "val_loss": np.nan})
    return pd.DataFrame(rows)


def test_each_point_is_its_best_learning_rate_and_diverged_runs_are_skipped():
    points = best_lr_points(runs_table())
    assert len(points) == 7 and set(points["lr"]) == {3e-3}
    assert np.allclose(points["loss"], overtraining_loss(points["n_params"], points["token_multiplier"], **TRUE))


def test_default_fit_set_is_m20_plus_the_smallest_model_at_its_largest_m():
    assert default_fit_on(best_lr_points(runs_table())) == [
        {"token_multiplier": 20.0}, {"size": "n10000000", "token_multiplier": 320.0}]


def test_filters_and_sql_choose_the_same_rows():
    points = best_lr_points(runs_table())
    filters = [{"token_multiplier": 20}, {"size": ["n10000000", "n30000000"], "token_multiplier": 80}]
    sql = "token_multiplier = 20 OR (size IN ('n10000000', 'n30000000') AND token_multiplier = 80)"
    assert filters_sql(filters).count(" OR ") == 1
    assert np.array_equal(matches(points, filters), matches(points, sql))
    assert matches(points, sql).sum() == 6
    with pytest.raises(ValueError, match="nope"):
        matches(points, "nope = 1")


def test_fit_table_predicts_held_out_runs_and_targets_with_intervals():
    fits, pred = fit_table("overtraining", runs_table(), targets=[{"n_params": 1e9, "token_multiplier": 20}],
                           by=["dataset"], resamples=100)
    assert len(fits) == 1 and fits[0].n_points == 5 and fits[0].meta["group"] == {"dataset": "d"}
    assert pred["role"].value_counts().to_dict() == {"fit": 5, "held_out": 2, "target": 1}
    held = pred[pred["role"] == "held_out"]
    assert (held["rel_error"].abs() < 1e-3).all() and held["covered"].all()
    target = pred[pred["role"] == "target"].iloc[0]
    assert target["predicted_loss"] == pytest.approx(overtraining_loss(1e9, 20, **TRUE), rel=1e-3)
    # noise-free runs: the interval is as narrow as rounding, and holds the prediction to within it
    lo, hi = target["predicted_loss_lo"] / (1 + 1e-12), target["predicted_loss_hi"] * (1 + 1e-12)
    assert lo <= target["predicted_loss"] <= hi
    assert np.isnan(target["measured_loss"]) and pd.isna(target["covered"])
    table = fits_table([fit_dict(f) for f in fits])
    assert table.loc[0, "dataset"] == "d" and table.loc[0, "n_points"] == 5 and "E" not in table
    params = parameters_table([fit_dict(f) for f in fits]).set_index("parameter")
    assert list(params.index) == ["E", "a", "b", "c"] and (params["law"] == "overtraining").all()
    rounding = 1e-9 * params["value"].abs()  # exact data: every refit lands on the law, to rounding
    assert (params["dataset"] == "d").all() and (params["lo"] <= params["value"] + rounding).all()
    assert (params["value"] <= params["hi"] + rounding).all() and params.loc["E", "value"] == fits[0].params["E"]
    assert json.loads(json.dumps(records(pred)))[-1]["covered"] is None


def test_a_bootstrap_refit_keeps_the_exponents_non_negative_where_the_best_fit_lies_on_the_bound():
    """The refit is whitened and unbounded; where that ends below an exponent's bound (here: loss grows with N, so the
    best exponent of N is 0 and an unbounded refit takes it to about −0.005), it is redone with the bounds. A fit on
    the bound is refitted with the bounds from the start; one just off it ends below it, unbounded."""
    N = np.array([1e7, 3e7, 1e8, 3e8, 1e9, 1e7, 1e8, 1e9])
    D = N * np.array([20, 20, 20, 20, 20, 80, 80, 80])
    L = 2.0 + 400 * D ** -0.3 + 0.2 * (N / 1e7) ** 0.05
    logs = np.log(N), np.log(D), np.log(L)
    theta, _ = huber_log(*logs, hoffmann_grid(), screen=20)
    assert theta[1] == 0
    X = lse_design(*logs[:2])
    off = theta + [0, 1e-3, 0, 0, 0]
    for start in (theta, off):
        for w in run_weights(len(L), 5, seed=0):
            refit = huber_log_refit(*logs, start, w)
            assert refit[1] == 0 and refit[3] > 0.25
            objective = [lse_huber_objective(x, X, logs[2], w, 1e-3)[0] for x in (refit, start)]
            assert objective[0] <= objective[1]


def test_a_fit_set_that_matches_nothing_is_refused():
    with pytest.raises(FitError, match="no point .* is in the fit set"):
        fit_table("overtraining", runs_table(), fit_on="token_multiplier = 7", by=["dataset"])


def test_a_bootstrap_refit_reaches_the_minimum_a_full_polished_fit_reaches():
    """huber_log_refit (default tolerances on the centred, rescaled objective) against huber_log from the same start
    (polished to ftol = 1e-15), on the Figure 1 fit set of Gadre et al. under bootstrap weights."""
    from scaling.testbeds import gadre

    runs = gadre.load_runs()
    rpj = runs[runs["dataset"] == "rpj"].reset_index(drop=True)
    fs = rpj[matches(rpj, gadre.LOSS_FIT_ON)]
    N, M, L = (fs[c].to_numpy(dtype=float) for c in ("n_params", "token_multiplier", "loss"))
    logs = np.log(N), np.log(N * M), np.log(L)
    theta, objective = huber_log(*logs, hoffmann_grid(shared_exponent=True), shared_exponent=True)
    X = lse_design(*logs[:2], shared_exponent=True)
    assert lse_huber_objective(huber_log_refit(*logs, theta, np.ones(len(L)), shared_exponent=True), X, logs[2],
                               np.ones(len(L)), 1e-3)[0] == pytest.approx(objective, rel=1e-9)
    for w in run_weights(len(L), 20, seed=1):
        refit = huber_log_refit(*logs, theta, w, shared_exponent=True)
        polished = huber_log(*logs, [theta], shared_exponent=True, weights=w, screen=None)[0]
        f_refit, f_polished = (lse_huber_objective(x, X, logs[2], w, 1e-3)[0] for x in (refit, polished))
        assert f_refit <= f_polished * (1 + 1e-2)
