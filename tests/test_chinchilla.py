"""Proof on published data: Hoffmann et al.'s (2022) three approaches on the points Epoch AI reconstructed.

The points have no license, so they are not in the project: CI clones the repo
with ``shared/`` beside it, and these tests read them from there and fail, not
skip, when they are missing.
"""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from scaling.fit.chinchilla import approach1, approach2, envelope, fit_chinchilla, fit_power_law, isoflop_minima
from scaling.fit.estimators import FitError, hoffmann_grid
from scaling.fit.laws import chinchilla_loss

POINTS = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "chinchilla" / "points.csv"


@pytest.fixture(scope="module")
def points() -> pd.DataFrame:
    assert POINTS.exists(), (f"the Chinchilla points are missing: expected {POINTS} (the repository is cloned with "
                             f"shared/ beside it; see shared/datasets/chinchilla/README.md)")
    p = pd.read_csv(POINTS)
    assert len(p) == 245 and p["epoch_excluded_outlier"].sum() == 5
    return p[~p["epoch_excluded_outlier"]]


@pytest.fixture(scope="module")
def approach3(points):
    return fit_chinchilla(points["n_params"], points["tokens"], points["loss"], resamples=200, seed=0)


def test_approach3_reaches_the_summed_huber_minimum_of_besiroglu_et_al(approach3):
    p = approach3.params
    assert p["E"] == pytest.approx(1.8172, abs=1e-4)
    assert p["A"] == pytest.approx(477.8, rel=1e-3)
    assert p["B"] == pytest.approx(2143, rel=1e-3)
    assert p["alpha"] == pytest.approx(0.3473, abs=1e-4)
    assert p["beta"] == pytest.approx(0.3672, abs=1e-4)
    assert approach3.n_points == 240


def test_the_bootstrap_interval_for_E_excludes_hoffmanns_1_69(approach3):
    lo, hi = approach3.intervals["E"]
    assert lo < approach3.params["E"] < hi
    assert lo > 1.69
    assert np.isfinite(approach3.samples).all()  # every resample refitted
    assert 0 < approach3.stderr["E"] < 0.1


def test_the_fit_implies_compute_optimal_exponents_near_one_half(approach3):
    opt = approach3.meta["compute_optimal"]
    assert opt["a"] + opt["b"] == pytest.approx(1.0)
    assert 0.45 < opt["a"] < 0.55  # β/(α+β) with Epoch's exponents: 0.51


@pytest.mark.parametrize("approach, hoffmann_a", [(approach1, 0.50), (approach2, 0.49)])
def test_approaches_1_and_2_give_n_opt_exponents_whose_intervals_hold_hoffmanns(points, approach, hoffmann_a):
    found, laws = approach(points["n_params"], points["tokens"], points["loss"])
    n_opt, d_opt = laws["n_opt"], laws["d_opt"]
    lo, hi = n_opt.intervals["a"]
    assert lo < hoffmann_a < hi and hi - lo < 0.15
    assert n_opt.params["a"] + d_opt.params["a"] == pytest.approx(1.0)  # D_opt = C / (6 N_opt)
    assert n_opt.interval_method == "t" and n_opt.loglinear["dof"] == len(found) - 2
    pred = n_opt.predict([1e21])
    assert pred["lo"][0] < pred["predicted"][0] < pred["hi"][0]


def test_approach3_recovers_known_parameters_from_noiseless_points():
    truth = {"E": 1.7, "A": 400.0, "alpha": 0.34, "B": 410.0, "beta": 0.28}
    N, D = np.meshgrid(np.geomspace(1e7, 1e10, 6), np.geomspace(1e9, 1e12, 6))
    L = chinchilla_loss(N.ravel(), D.ravel(), **truth)
    fit = fit_chinchilla(N.ravel(), D.ravel(), L, starts=hoffmann_grid()[::9])
    for k, v in truth.items():
        assert fit.params[k] == pytest.approx(v, rel=1e-3), k


def test_the_envelope_keeps_runs_better_than_every_cheaper_run():
    C = np.array([1, 2, 3, 4, 5.0])
    L = np.array([3.0, 3.1, 2.9, 2.95, 2.5])
    assert envelope(C, L).tolist() == [True, False, True, False, True]


def test_a_power_law_needs_three_distinct_points():
    with pytest.raises(FitError, match="only 2 distinct"):
        fit_power_law([1e20, 1e21, 1e21], [1e9, 3e9, 3e9])


def test_approach2_fits_each_parabola_near_its_minimum():
    """Far from the minimum loss against log N is not a parabola: runs 1.5 decades out would pull the minimum."""
    n = np.geomspace(1e7, 1e11, 25)
    C = 1e20
    x = np.log10(n) - 9.0
    L = 2.5 + 0.1 * x**2 + 0.05 * np.where(x < 0, x**4, 0)  # quadratic near 1e9, steeper far to the left
    minima = isoflop_minima(n, C / (6 * n), L, budgets=(C,), window=0.5, quiet=True)
    wide = isoflop_minima(n, C / (6 * n), L, budgets=(C,), window=3.0, quiet=True)
    near, far = (abs(np.log10(m["n_opt"].iloc[0] / 1e9)) for m in (minima, wide))
    assert near < 0.015 and far > 4 * near  # the whole sweep misplaces the minimum
    assert minima["n_runs"].iloc[0] < wide["n_runs"].iloc[0]


def test_too_few_budgets_suggest_the_budgets_the_runs_were_trained_at(points):
    with pytest.raises(FitError, match=r"only 0 IsoFLOP budgets .* fix: pass the budgets the runs were trained at, "
                                       r"e\.g\. --budgets ") as refused:
        approach2(points["n_params"], points["tokens"], points["loss"], budgets=(1e17, 1e25))
    suggested = [float(b) for b in str(refused.value).split("--budgets ")[1].split(",")]
    minima, _ = approach2(points["n_params"], points["tokens"], points["loss"], budgets=suggested)
    assert len(minima) >= 6  # the suggestion works


def test_approach2_intervals_carry_the_uncertainty_of_the_minima(points):
    _, plain = approach2(points["n_params"], points["tokens"], points["loss"])
    _, boot = approach2(points["n_params"], points["tokens"], points["loss"], resamples=200, seed=0)
    assert boot["n_opt"].interval_method == "bootstrap" and np.isfinite(boot["n_opt"].samples).all()
    lo, hi = boot["n_opt"].intervals["a"]
    assert lo < boot["n_opt"].params["a"] < hi and lo < 0.49 < hi
    p = boot["n_opt"].predict([3e21])
    assert p["lo"][0] < p["predicted"][0] < p["hi"][0]
    assert plain["n_opt"].params == boot["n_opt"].params  # the same fit, other intervals


def test_approach3_warns_when_far_from_optimal_runs_dominate():
    truth = {"E": 1.7, "A": 400.0, "alpha": 0.34, "B": 410.0, "beta": 0.28}
    N = np.geomspace(1e7, 1e9, 12)
    D = 1e4 * N  # 10,000 tokens per parameter: far over-trained, everywhere
    with pytest.warns(UserWarning, match="train more than 10× away from the fitted compute-optimal"):
        fit = fit_chinchilla(np.r_[N, N * 3], np.r_[D, D * 2], chinchilla_loss(np.r_[N, N * 3], np.r_[D, D * 2],
                                                                              **truth), starts=hoffmann_grid()[::9])
    assert fit.meta["diagnostics"]


@pytest.mark.slow
def test_approaches_1_and_2_fit_each_group(tmp_path, points):
    import subprocess
    import sys

    both = pd.concat([points.assign(corpus="a"), points.assign(corpus="b", loss=points["loss"] * 1.01)])
    both.to_csv(tmp_path / "two.csv", index=False)
    for approach in ("1", "2"):
        proc = subprocess.run([sys.executable, "-m", "scaling.cli", "fit", "chinchilla", "--approach", approach,
                               "--data", str(tmp_path / "two.csv"), "--by", "corpus", "--bootstrap", "20", "--json"],
                              capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
        import json

        doc = json.loads(proc.stdout)
        assert sorted(f["group"]["corpus"] for f in doc["fits"]) == ["a", "a", "b", "b"]
        assert {p["corpus"] for p in doc["points"]} == {"a", "b"}
