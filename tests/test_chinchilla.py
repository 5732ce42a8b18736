"""Proof on published data: Hoffmann et al.'s (2022) three approaches on the points Epoch AI reconstructed.

The points have no license, so they are not in the project: CI clones the repo
with ``shared/`` beside it, and these tests read them from there and fail, not
skip, when they are missing.
"""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from scaling.chinchilla import approach1, approach2, envelope, fit_chinchilla, fit_power_law
from scaling.estimators import FitError, hoffmann_grid
from scaling.laws import chinchilla_loss

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
