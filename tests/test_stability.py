import math

from scaling.train.stability import first_divergence


def test_divergence_is_a_nonfinite_loss_or_a_rise_above_initial_plus_margin_after_warmup():
    assert first_divergence([5.5, 4.0, 3.0], 0, 5.5, 1, 1.0) is None
    assert first_divergence([5.5, 6.8, 3.0], 0, 5.5, 5, 1.0) is None  # a rise during warmup is allowed
    assert first_divergence([5.5, 6.8, 3.0], 0, 5.5, 1, 1.0) == 1
    assert first_divergence([3.0, math.nan, 9.0], 40, 5.5, 0, 1.0) == 41
    assert first_divergence([3.0, math.inf], 40, 5.5, 100, 1.0) == 41
