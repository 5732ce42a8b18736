"""The bootstrap over runs: weights, failed resamples, shared weights for chained laws."""

import os
from concurrent.futures.process import BrokenProcessPool

import numpy as np
import pytest

from scaling.fit.bootstrap import noise_draws, processes, replicate, robust_scale, run_weights
from scaling.fit.overtraining import fit_overtraining
from test_fit import noisy


@pytest.mark.parametrize("scheme", ["bayesian", "poisson"])
def test_run_weights_have_mean_and_variance_one_and_depend_only_on_the_seed(scheme):
    w = run_weights(50, 2000, seed=3, scheme=scheme)
    assert w.shape == (2000, 50) and (w >= 0).all()
    assert w.mean() == pytest.approx(1, abs=0.02) and w.var() == pytest.approx(1, abs=0.05)
    assert np.array_equal(w, run_weights(50, 2000, seed=3, scheme=scheme))
    assert not np.array_equal(w, run_weights(50, 2000, seed=4, scheme=scheme))


def test_the_weight_of_a_run_does_not_depend_on_how_many_runs_follow_it():
    """So a law fitted on a subset of a table sees the same weights as any other law on that table."""
    assert np.array_equal(run_weights(10, 5, seed=1)[:, :4], run_weights(10, 5, seed=1)[:, :4])
    assert (run_weights(10, 5, seed=1) > 0).all()


def test_an_unknown_scheme_is_refused():
    with pytest.raises(ValueError, match="unknown bootstrap scheme 'jackknife'"):
        run_weights(5, 5, 0, "jackknife")


def test_poisson_resamples_that_leave_too_few_points_fail_and_are_counted():
    N, M, L = noisy()
    with pytest.warns(UserWarning, match="bootstrap resamples failed"):
        fit = fit_overtraining(N[:5], M[:5], L[:5], method="gadre", resamples=200, scheme="poisson")
    failed = np.isnan(fit.samples).all(axis=1)
    # Poisson(1) counts: a resample keeps all 5 points with probability (1 − e^−1)^5 ≈ 10%
    assert 0.8 < failed.mean() < 0.97
    assert np.isfinite(fit.intervals["E"]).all()


def test_run_noise_is_a_robust_scale_that_two_outlying_runs_do_not_set():
    rng = np.random.default_rng(0)
    r = rng.normal(0, 0.01, 40)
    clean = robust_scale(r, 4)
    assert clean == pytest.approx(0.01 * np.sqrt(40 / 36), rel=0.3)
    r[:2] = [0.5, -0.4]  # two runs that fit badly: the standard deviation grows 12-fold, the robust scale barely
    assert np.std(r) > 10 * clean and robust_scale(r, 4) < 1.3 * clean
    assert robust_scale(r[:4], 4) == 0.0  # an exact fit leaves nothing to learn the noise from
    draws = noise_draws(0.02, 20_000, seed=0, stream=1)
    assert draws.std() == pytest.approx(0.02, rel=0.02) and np.array_equal(draws, noise_draws(0.02, 20_000, 0, 1))


def test_resamples_refitted_in_forked_processes_are_the_serial_ones_and_failures_stay_failures():
    calls = []

    def refit(w):
        calls.append(1)  # counted in this process only: the forked processes' calls do not come back
        if w[0] > 2:
            raise RuntimeError("no convergence")
        return [w.sum(), w[0] * 3]

    weights = run_weights(6, 40, seed=3)
    with pytest.warns(UserWarning, match="8 of 40 bootstrap resamples failed"):
        serial = replicate(refit, weights, 2, lambda w: w[1] < 2.5)
    assert len(calls) == 40 - int((weights[:, 1] >= 2.5).sum())
    with processes(3), pytest.warns(UserWarning, match="8 of 40 bootstrap resamples failed"):
        forked = replicate(refit, weights, 2, lambda w: w[1] < 2.5)
    assert len(calls) == 40 - int((weights[:, 1] >= 2.5).sum())  # none refitted here: all in the 3 processes
    np.testing.assert_array_equal(forked, serial)
    failed = (weights[:, 0] > 2) | (weights[:, 1] >= 2.5)
    assert failed.any() and np.isnan(serial[failed]).all() and not np.isnan(serial[~failed]).any()


def test_a_refitting_process_that_dies_fails_the_bootstrap_instead_of_hanging():
    def refit(w):
        os._exit(1)  # killed (out of memory, a crash in a library): its resamples never come back

    with processes(2), pytest.raises(BrokenProcessPool):
        replicate(refit, run_weights(3, 4, seed=0), 1, lambda w: True)
