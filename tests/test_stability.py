import math

from scaling.train.stability import WINDOW, first_divergence

INITIAL, MARGIN = 5.5, 1.0  # diverged: a median above 6.5


def test_a_nonfinite_loss_is_a_divergence_at_once_even_during_warmup():
    assert first_divergence([3.0, math.nan, 3.0], 40, INITIAL, 100, MARGIN) == 41
    assert first_divergence([3.0, math.inf], 40, INITIAL, 0, MARGIN) == 41


def test_a_rise_that_lasts_past_the_median_of_the_window_is_a_divergence_at_the_step_it_is_seen():
    losses = [3.0] * 10 + [9.0] * WINDOW
    # the window ending at step 9 + k holds k losses of 9.0: its median is above the margin from k = 5 on
    assert first_divergence(losses, 0, INITIAL, 0, MARGIN) == 9 + (WINDOW + 1) // 2
    assert first_divergence([3.0] * 20, 0, INITIAL, 1, MARGIN) is None


def test_a_one_step_spike_after_warmup_is_not_a_divergence():
    # the default study's d80L2 at lr 0.01 with a 10-step warmup (bench_train): 3.05 → 9.57 → 3.13
    losses = [5.55, 5.27, 4.99, 4.68, 4.32, 3.89, 3.5, 3.22, 3.16, 3.05, 9.57, 3.13, 3.19, 3.37, 3.24] + [3.0] * 20
    assert first_divergence(losses, 0, 5.55, 10, MARGIN) is None
    assert first_divergence([3.0, 3.0, 9.0] * 10, 0, INITIAL, 0, MARGIN) is None  # every third step: 3 of 9
    assert first_divergence([3.0, 9.0] * 10, 0, INITIAL, 0, MARGIN) == 9  # every other step: 5 of the 9 to step 9


def test_warmup_losses_are_not_in_the_window():
    # a rise during warmup is allowed; after it the window must fill with post-warmup losses first
    losses = [9.0] * 10 + [3.0] * 20
    assert first_divergence(losses, 0, INITIAL, 10, MARGIN) is None
    assert first_divergence([9.0] * (WINDOW - 1), 10, INITIAL, 10, MARGIN) is None  # a window not yet full
    assert first_divergence([9.0] * WINDOW, 10, INITIAL, 10, MARGIN) == 10 + WINDOW - 1


def test_a_rise_across_two_chunks_is_seen_when_the_previous_chunk_s_end_is_passed():
    losses = [3.0] * 30 + [9.0] * 4 + [9.0] * 4  # two chunks, 30–33 and 34–37; the rise starts at step 30
    back = 34 - (WINDOW - 1)
    assert first_divergence(losses[30:34], 30, INITIAL, 0, MARGIN) is None
    assert first_divergence(losses[back:38], back, INITIAL, 0, MARGIN) == 34  # 5 of the 9 ending there are 9.0
