"""The optimal learning rate η*(N, D) and LR sensitivity, on synthetic sweeps with a known optimum."""

import numpy as np
import pandas as pd
import pytest

from scaling.fit.estimators import FitError, FitWarning
from scaling.fit.tables import best_lr_points, canonical, fit_table
from scaling.fit.laws import lr_sensitivity, optimal_lr
from scaling.fit.optimal_lr import fit_optimal_lr, sensitivity_table

TRUE = {"c": 20.0, "a": -0.6, "b": 0.25}
LRS = 2.0 ** np.arange(-16, 0, 0.25)  # a sweep in steps of 2^(1/4)


def sweep(ms=(10, 20, 40, 80), sizes=(1e6, 3e6, 1e7, 3e7), seed=0):
    """Runs whose loss is a parabola in log lr around η*(N, D), with noise on the optimum."""
    rng = np.random.default_rng(seed)
    rows = []
    for n in sizes:
        for m in ms:
            opt = optimal_lr(n, m * n, **TRUE) * np.exp(rng.normal(0, 0.1))
            for lr in LRS:
                loss = 3.0 + 0.05 * np.log(lr / opt) ** 2
                diverged = lr > 8 * opt
                rows.append({"dataset": "d", "size": f"n{n:g}", "n_params": n, "token_multiplier": float(m),
                             "lr": lr, "seed": 0, "status": "diverged" if diverged else "ok",
                             "val_loss": np.nan if diverged else loss, "initial_loss": 5.5})
    return pd.DataFrame(rows)


def test_the_power_law_is_recovered_with_intervals_that_hold_the_truth():
    N, M = (v.ravel() for v in np.meshgrid([1e6, 3e6, 1e7, 3e7, 1e8], [10, 20, 40, 80]))
    lr = optimal_lr(N, M * N, **TRUE) * np.exp(np.random.default_rng(0).normal(0, 0.1, len(N)))
    fit = fit_optimal_lr(N, M * N, lr)
    for p, v in TRUE.items():
        lo, hi = fit.intervals[p]
        assert lo < fit.params[p] < hi and lo < v < hi, p
    pred = fit.predict([1e9], [2e10])
    assert pred["lo"][0] < optimal_lr(1e9, 2e10, **TRUE) < pred["hi"][0]


def test_the_best_rates_of_a_sweep_give_the_exponents():
    best = best_lr_points(sweep(), ["dataset"])
    assert len(best) == 16 and (best["lr_edge"] == "").all()
    fit = fit_optimal_lr(best["n_params"], best["tokens"], best["lr"])
    assert fit.params["a"] == pytest.approx(TRUE["a"], abs=0.1)
    assert fit.params["b"] == pytest.approx(TRUE["b"], abs=0.1)
    assert fit.predict([1e8], [2e9])["predicted"][0] == pytest.approx(optimal_lr(1e8, 2e9, **TRUE), rel=0.3)


def test_fit_table_predicts_the_optimal_lr_of_every_point():
    fits, pred = fit_table("optimal_lr", sweep(), by=["dataset"])
    assert fits[0].law == "optimal_lr" and fits[0].n_points == 16
    assert (pred["role"] == "fit").all() and pred["covered"].mean() >= 0.75
    assert (pred["predicted_lr_lo"] < pred["predicted_lr"]).all()


def test_a_single_token_multiplier_cannot_separate_n_from_d():
    best = best_lr_points(sweep(ms=(20,)), [])
    with pytest.raises(FitError, match="collinear"):
        fit_optimal_lr(best["n_params"], best["tokens"], best["lr"])


def test_a_best_lr_on_the_edge_of_the_sweep_draws_a_warning():
    runs = sweep()
    runs = runs[runs["lr"] <= 2.0**-12]  # cut the sweep below every optimum
    best = best_lr_points(runs, [])
    assert (best["lr_edge"] == "high").all() and (best["lr"] == 2.0**-12).all()
    with pytest.warns(FitWarning, match=r"best learning rate of \d+ fit point\(s\) is the edge of its sweep, so η\* "
                                        r"may lie beyond it: n1e\+06 at M=10 \(lr 0.000244141: try 0.000488281\)"):
        fits, _ = fit_table("optimal_lr", runs)
    assert any("edge of its sweep" in d for d in fits[0].meta["diagnostics"])


def test_lr_sensitivity_follows_wortsman_et_al():
    assert lr_sensitivity([3.0, 3.0, 3.0], initial_loss=5.0) == 0.0
    # mean over the sweep of min(L, L0) − min L; a diverged run (NaN) counts at L0
    assert lr_sensitivity([3.2, 3.0, 3.4, np.nan], initial_loss=5.0) == pytest.approx((0.2 + 0 + 0.4 + 2.0) / 4)
    assert lr_sensitivity([3.0, 9.0], initial_loss=5.0) == pytest.approx(1.0)


def test_sensitivity_table_counts_diverged_runs_at_their_initial_loss():
    runs = sweep(sizes=(1e6,), ms=(20,))
    table = sensitivity_table(canonical(runs, ok_only=False), ["dataset", "n_params", "tokens"])
    row = table.iloc[0]
    ok = runs["status"] == "ok"
    expected = np.mean(np.minimum(np.where(ok, runs["val_loss"], 5.5), 5.5) - runs.loc[ok, "val_loss"].min())
    assert row["lr_sensitivity"] == pytest.approx(expected) and row["n_lrs"] == len(LRS)


# -- LR sensitivity (Wortsman et al. 2023) ---------------------------------------------------------------------------
def size_sensitivity(runs, by="size"):
    return sensitivity_table(runs.rename(columns={"val_loss": "loss"}), [by] if isinstance(by, str) else by)


def two_sizes():
    # two sizes over the same LR grid; size "b" has a diverged run at the largest LR
    rows = [("a", 1e-3, 3.2, "ok"), ("a", 3e-3, 3.0, "ok"), ("a", 1e-2, 3.1, "ok"),
            ("b", 1e-3, 2.9, "ok"), ("b", 3e-3, 2.6, "ok"), ("b", 1e-2, np.nan, "diverged"),
            ("b", 3e-3, 2.8, "ok")]  # a second seed of b at 3e-3
    return pd.DataFrame([{"size": s, "lr": lr, "val_loss": v, "status": st, "initial_loss": 5.5}
                         for s, lr, v, st in rows])


def test_lr_sensitivity_is_the_mean_gap_to_the_best_with_diverged_runs_at_the_initial_loss():
    out = size_sensitivity(two_sizes()).set_index("size")
    assert out.loc["a", "lr_sensitivity"] == pytest.approx(((3.2 - 3.0) + 0 + (3.1 - 3.0)) / 3)
    # b: seeds averaged (3e-3 → 2.7), the diverged run counts as 5.5
    assert out.loc["b", "lr_sensitivity"] == pytest.approx(((2.9 - 2.7) + 0 + (5.5 - 2.7)) / 3)
    assert out.loc["b", "best_lr"] == 3e-3 and out.loc["b", "best_loss"] == pytest.approx(2.7)
    assert out.loc["b", "n_diverged"] == 1 and out.loc["a", "n_lrs"] == 3


def test_a_run_that_ends_worse_than_it_began_is_capped_at_the_initial_loss():
    runs = two_sizes()
    runs.loc[0, "val_loss"] = 9.0
    a = size_sensitivity(runs).set_index("size").loc["a", "lr_sensitivity"]
    assert a == pytest.approx(((5.5 - 3.0) + 0 + 0.1) / 3)


def test_lr_sensitivity_groups_by_several_columns():
    runs = pd.concat([two_sizes().assign(dataset="x"), two_sizes().assign(dataset="y", val_loss=lambda d: d.val_loss + 1)])
    out = size_sensitivity(runs, by=["dataset", "size"])
    assert len(out) == 4 and set(out["dataset"]) == {"x", "y"}
