import pytest

from scaling.train import schedules as S

PEAK, STEPS, WARMUP, R = 1e-2, 110, 10, 0.1


@pytest.mark.parametrize("schedule", [S.cosine, S.linear, S.constant])
def test_warmup_is_linear_from_peak_over_warmup_to_the_peak(schedule):
    assert schedule(0, STEPS, WARMUP, PEAK, R) == pytest.approx(1e-3)
    assert schedule(4, STEPS, WARMUP, PEAK, R) == pytest.approx(5e-3)
    assert schedule(9, STEPS, WARMUP, PEAK, R) == pytest.approx(PEAK)
    assert schedule(WARMUP, STEPS, WARMUP, PEAK, R) == pytest.approx(PEAK)


def test_cosine_is_half_way_at_the_middle_and_ends_at_the_final_lr():
    assert S.cosine(60, STEPS, WARMUP, PEAK, R) == pytest.approx(PEAK * (0.1 + 0.9 * 0.5))
    assert S.cosine(35, STEPS, WARMUP, PEAK, R) == pytest.approx(PEAK * (0.1 + 0.9 * 0.5 * (1 + 2 ** -0.5)))
    assert S.cosine(110, STEPS, WARMUP, PEAK, R) == pytest.approx(PEAK * R)


def test_linear_decays_in_equal_steps_to_the_final_lr():
    assert S.linear(35, STEPS, WARMUP, PEAK, R) == pytest.approx(PEAK * (1 - 0.9 * 0.25))
    assert S.linear(60, STEPS, WARMUP, PEAK, R) == pytest.approx(PEAK * 0.55)
    assert S.linear(110, STEPS, WARMUP, PEAK, R) == pytest.approx(PEAK * R)


def test_constant_stays_at_the_peak():
    assert {S.constant(s, STEPS, WARMUP, PEAK, R) for s in range(WARMUP, STEPS)} == {PEAK}


def test_wsd_is_constant_then_cools_down_linearly_over_the_last_fraction():
    # 110 steps, cooldown 0.2: the last 22 steps (88 → 110) decay from the peak to R·peak
    assert S.wsd(5, STEPS, WARMUP, PEAK, R, 0.2) == pytest.approx(6e-3)
    assert S.wsd(50, STEPS, WARMUP, PEAK, R, 0.2) == pytest.approx(PEAK)
    assert S.wsd(88, STEPS, WARMUP, PEAK, R, 0.2) == pytest.approx(PEAK)
    assert S.wsd(99, STEPS, WARMUP, PEAK, R, 0.2) == pytest.approx(PEAK * (1 - 0.9 * 0.5))
    assert S.wsd(110, STEPS, WARMUP, PEAK, R, 0.2) == pytest.approx(PEAK * R)


@pytest.mark.parametrize("name", S.SCHEDULES)
def test_after_warmup_no_schedule_ever_rises(name):
    training = {"schedule": name, "warmup_fraction": WARMUP / STEPS, "min_lr_ratio": R, "cooldown_fraction": 0.3,
                "cooldown_shape": "linear"}
    lrs = [S.lr_at(s, STEPS, training, PEAK) for s in range(STEPS)]
    assert max(lrs) == pytest.approx(PEAK) and lrs[WARMUP - 1] == pytest.approx(PEAK)
    assert all(a >= b for a, b in zip(lrs[WARMUP:], lrs[WARMUP + 1:]))
    assert lrs[-1] == pytest.approx(PEAK) if name == "constant" else lrs[-1] < PEAK


def test_no_warmup_starts_at_the_peak():
    training = {"schedule": "cosine", "warmup_fraction": 0.0, "min_lr_ratio": R, "cooldown_fraction": 0.2}
    assert S.lr_at(0, STEPS, training, PEAK) == pytest.approx(PEAK)


def test_wsd_1_sqrt_cooldown_drops_faster_at_first_and_ends_at_the_final_lr():
    # 110 steps, cooldown 0.2: the last 22 steps; half-way through them (step 99) √½ of the drop is made
    assert S.wsd(88, STEPS, WARMUP, PEAK, R, 0.2, "1-sqrt") == pytest.approx(PEAK)
    assert S.wsd(99, STEPS, WARMUP, PEAK, R, 0.2, "1-sqrt") == pytest.approx(PEAK * (1 - 0.9 * 0.5 ** 0.5))
    assert S.wsd(110, STEPS, WARMUP, PEAK, R, 0.2, "1-sqrt") == pytest.approx(PEAK * R)
    assert all(S.wsd(s, STEPS, WARMUP, PEAK, R, 0.2, "1-sqrt") < S.wsd(s, STEPS, WARMUP, PEAK, R, 0.2)
               for s in range(89, 110))


def test_warmup_steps_replace_the_fraction_for_runs_of_every_length():
    training = {"schedule": "wsd", "warmup_fraction": 0.5, "min_lr_ratio": R, "cooldown_fraction": 0.2,
                "cooldown_shape": "linear"}
    assert [S.warmup_length(training, s) for s in (10, STEPS, 1000)] == [5, 55, 500]  # half of each run
    assert S.lr_at(4, STEPS, training, PEAK) == pytest.approx(PEAK * 5 / 55)
    fixed = {**training, "warmup_steps": WARMUP}
    assert [S.warmup_length(fixed, s) for s in (10, STEPS, 1000)] == [WARMUP] * 3
    assert S.lr_at(4, STEPS, fixed, PEAK) == pytest.approx(PEAK * 5 / WARMUP)
    assert S.lr_at(WARMUP, STEPS, fixed, PEAK) == PEAK
    # so a short and a long WSD run have the same LR until the short one's cooldown starts
    short, long = 50, 500
    assert all(S.lr_at(s, short, fixed, PEAK) == S.lr_at(s, long, fixed, PEAK)
               for s in range(S.cooldown_start(short, 0.2)))
    assert S.lr_at(1, short, training, PEAK) != S.lr_at(1, long, training, PEAK)
    none = {**training, "warmup_steps": 0}
    assert S.warmup_length(none, STEPS) == 0 and S.lr_at(0, STEPS, none, PEAK) == PEAK
