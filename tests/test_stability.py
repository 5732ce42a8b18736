import math
import random

from scaling.train.stability import WINDOW, first_divergence

MARGIN = 1.0  # with an initial loss of 5.5: diverged once a median is above 6.5


def diverged(losses, warmup):
    """One check of every step of a run."""
    return first_divergence(losses, 0, len(losses), warmup, MARGIN)


def test_a_nonfinite_loss_is_a_divergence_at_once_even_during_warmup():
    assert diverged([5.5, 3.0, math.nan, 3.0], warmup=100) == 2
    assert diverged([5.5, 3.0, math.inf], warmup=100) == 2


def test_a_rise_that_lasts_is_a_divergence_at_the_step_where_most_of_the_window_is_above():
    losses = [5.5] + [3.0] * 9 + [9.0] * WINDOW
    # the window ending at step 9 + k holds k losses of 9.0: its median is above the margin from k = 5 on
    assert diverged(losses, warmup=1) == 9 + (WINDOW + 1) // 2
    assert diverged([5.5] + [3.0] * 20, warmup=1) is None


def test_a_one_step_spike_after_warmup_is_not_a_divergence():
    # the default study's d80L2 at lr 0.01 with a 10-step warmup (bench_train): 3.05 → 9.57 → 3.13
    losses = [5.55, 5.27, 4.99, 4.68, 4.32, 3.89, 3.5, 3.22, 3.16, 3.05, 9.57, 3.13, 3.19, 3.37, 3.24] + [3.0] * 20
    assert diverged(losses, warmup=10) is None
    assert diverged([5.5] + [3.0, 3.0, 9.0] * 10, warmup=1) is None  # every third step: at most 3 of 9
    assert diverged([5.5] + [3.0, 9.0] * 10, warmup=1) == 10  # every other step: 5 of the 9 from step 2 to 10


def test_warmup_losses_are_never_in_the_window():
    assert diverged([5.5] + [9.0] * 9 + [3.0] * 20, warmup=10) is None  # a rise during warmup is allowed
    assert diverged([5.5] + [3.0] * 9 + [9.0] * (WINDOW - 1), warmup=10) is None  # the window not yet full
    assert diverged([5.5] + [3.0] * 9 + [9.0] * WINDOW, warmup=10) == 10 + WINDOW - 1


def test_checking_a_run_in_chunks_finds_what_one_check_of_every_step_finds():
    rng = random.Random(0)
    found = set()
    for _ in range(500):
        n, warmup = rng.randint(2, 80), rng.randint(0, 12)
        losses = [5.5] + [rng.choice([3.0, 3.0, 9.0, 9.0, 9.0 if rng.random() < 0.5 else 3.0]) for _ in range(n - 1)]
        cuts = sorted(rng.sample(range(1, n), rng.randint(0, min(6, n - 1))))
        chunked = next((s for first, done in zip([0, *cuts], [*cuts, n])
                        if (s := first_divergence(losses, first, done, warmup, MARGIN)) is not None), None)
        assert chunked == diverged(losses, warmup), (losses, warmup, cuts)
        found.add(chunked is None)
    assert found == {True, False}  # both outcomes were tried
