"""The downstream law Err(L) = ε − k·exp(−γL) and its chaining to the over-training loss law."""

import numpy as np
import pytest

from scaling.fit.bootstrap import run_weights
from scaling.fit.downstream import fit_downstream, predict_chained
from scaling.fit.estimators import FitError
from scaling.fit.laws import downstream_error, overtraining_loss
from scaling.fit.overtraining import fit_overtraining
from test_fit import TRUE, noisy

ERR = {"epsilon": 0.85, "k": 20.0, "gamma": 1.6}  # near the paper's fits: ~0.47 error at loss 2.4


def test_the_error_law_is_recovered_from_the_papers_start():
    L = np.linspace(2.4, 4.5, 8)
    fit = fit_downstream(L, downstream_error(L, **ERR))
    for p, v in ERR.items():
        assert fit.params[p] == pytest.approx(v, rel=1e-4), p


@pytest.mark.parametrize("err, message", [
    ([0.5, 0.6, 1.2, 0.7, 0.8], "fraction in \\[0, 1\\]"),
    ([0.5, 0.6, np.nan, 0.7, 0.8], "NaN .* in error"),
])
def test_bad_error_data_is_refused(err, message):
    with pytest.raises(FitError, match=message):
        fit_downstream([2.5, 2.7, 2.9, 3.1, 3.3], err)


def test_a_chained_prediction_and_its_interval_hold_the_true_error_of_an_unseen_model():
    N, M, L = noisy()
    err = downstream_error(L, **ERR) + np.random.default_rng(1).normal(0, 0.003, len(L))
    w = run_weights(len(L), 300, seed=5)  # one weight per run, shared by both fits
    loss_fit = fit_overtraining(N, M, L, method="gadre", weights=w, seed=5)
    error_fit = fit_downstream(L, err, weights=w, seed=5)
    target = ([4e9], [20])
    chained = predict_chained(loss_fit, error_fit, *target)
    true_loss = overtraining_loss(4e9, 20, **TRUE)
    assert chained["predicted_error"][0] == pytest.approx(downstream_error(chained["predicted_loss"][0],
                                                                           **error_fit.params))
    assert chained["predicted_loss_lo"][0] < true_loss < chained["predicted_loss_hi"][0]
    assert chained["predicted_error_lo"][0] < downstream_error(true_loss, **ERR) < chained["predicted_error_hi"][0]
    again = predict_chained(loss_fit, error_fit, *target)
    assert again.equals(chained)
    with pytest.raises(ValueError, match="different numbers of resamples"):
        predict_chained(loss_fit, fit_downstream(L, err, resamples=10), *target)
