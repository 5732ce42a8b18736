import numpy as np
import pandas as pd
import pytest

from scaling.fit import FitError, best_lr_points, default_fit_on, fit_overtraining, fit_study
from scaling.laws import overtraining_compute_form, overtraining_loss

TRUE = {"E": 1.9, "a": 450.0, "b": -0.32, "c": 1800.0}


def grid():
    N = np.array([1e7, 3e7, 1e8, 4e8, 1e7, 1e7, 3e7])
    M = np.array([20, 20, 20, 20, 80, 320, 80])
    return N, M


def test_the_compute_form_is_the_same_law():
    N, M = grid()
    C = 6 * N * (M * N)
    cf = overtraining_compute_form(TRUE["b"], TRUE["a"])
    compute_form = TRUE["E"] + (cf["a_prime"] * M ** cf["eta"] + TRUE["c"] * M ** -cf["eta"]) * C ** -cf["eta"]
    assert np.allclose(overtraining_loss(N, M, **TRUE), compute_form, rtol=1e-12)


@pytest.mark.parametrize("bounded", [True, False])
def test_fit_recovers_the_parameters_of_noiseless_data(bounded):
    N, M = grid()
    fit = fit_overtraining(N, M, overtraining_loss(N, M, **TRUE), bounded=bounded)
    for p, v in TRUE.items():
        assert fit.params[p] == pytest.approx(v, rel=1e-3), p
    assert fit.predict(1e9, 20) == pytest.approx(overtraining_loss(1e9, 20, **TRUE), rel=1e-6)
    assert fit.meta["at_bound"] == []
    assert "± " in fit.summary() and fit.to_dict()["law"] == "overtraining"


def test_noisy_data_gives_standard_errors_that_cover_the_truth():
    N, M = grid()
    L = overtraining_loss(N, M, **TRUE) * (1 + np.random.default_rng(0).normal(0, 0.003, len(N)))
    fit = fit_overtraining(N, M, L)
    assert all(np.isfinite(fit.stderr[p]) and fit.stderr[p] > 0 for p in TRUE)
    assert abs(fit.params["E"] - TRUE["E"]) < 4 * fit.stderr["E"]


@pytest.mark.parametrize("N, M, L, message", [
    ([1e7, 2e7, 3e7], [20, 20, 20], [3.0, 2.9, 2.8], "only 3 distinct"),
    ([1e7, 2e7, 3e7, 4e7, 1e7], [20, 20, 20, 20, 80], [3.0, np.nan, 2.8, 2.7, 2.9], "NaN"),
    ([1e7, 2e7, 3e7, -4e7, 1e7], [20, 20, 20, 20, 80], [3.0, 2.9, 2.8, 2.7, 2.9], "positive"),
])
def test_bad_fit_data_is_refused_with_a_reason(N, M, L, message):
    with pytest.raises(FitError, match=message):
        fit_overtraining(N, M, L)


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


def test_default_fit_set_is_m20_plus_the_smallest_model_at_its_largest_m():
    assert default_fit_on(best_lr_points(runs_table())) == [
        {"token_multiplier": 20.0}, {"size": "n10000000", "token_multiplier": 320.0}]


def test_fit_study_predicts_held_out_runs_and_targets():
    fits, pred = fit_study(runs_table(), {"targets": [{"n_params": 1e9, "token_multiplier": 20}]}, {})
    assert fits[0]["n_points"] == 5
    assert pred["role"].value_counts().to_dict() == {"fit": 5, "held_out": 2, "target": 1}
    held = pred[pred["role"] == "held_out"]
    assert (held["rel_error"] < 1e-3).all()
    target = pred[pred["role"] == "target"].iloc[0]
    assert target["predicted_loss"] == pytest.approx(overtraining_loss(1e9, 20, **TRUE), rel=1e-3)
    assert np.isnan(target["measured_loss"])
