"""The ladder's plan and compute (scaling/train/ladder.py), and how a study expands into trunks and branches."""

from __future__ import annotations

import pytest

from scaling.study import runs as S
from scaling.train import ladder
from scaling.train.schedules import lr_at

from conftest import smoke_config
from test_study import filled

BUDGETS = (20, 40, 80, 160, 320)


def test_branches_start_each_runs_cooldown_and_the_trunk_ends_at_the_last():
    p = ladder.plan([m * 1000 for m in BUDGETS], batch_tokens=100, cooldown_fraction=0.2, warmup_fraction=0.05)
    assert p.steps == (200, 400, 800, 1600, 3200)
    assert p.branch_steps == (160, 320, 640, 1280, 2560)
    assert p.warmup_steps == 10  # 5 % of the shortest run
    assert p.trunk_steps == 2560
    assert p.segments == ((0, 160), (160, 320), (320, 640), (640, 1280), (1280, 2560))


def test_the_ladder_costs_380_of_620_from_scratch_with_20_percent_cooldowns():
    p = ladder.plan([m * 1000 for m in BUDGETS], batch_tokens=100, cooldown_fraction=0.2, warmup_fraction=0.05)
    assert p.total_steps() == 2560 + 0.2 * 6200
    assert p.total_steps() / sum(p.steps) == pytest.approx(380 / 620)
    assert sum(p.spent_steps()) == pytest.approx(p.total_steps())
    # the shortest run shares its one segment with all five; the longest pays alone for the last
    assert p.spent_steps()[0] == pytest.approx(160 / 5 + 40)
    assert p.spent_steps()[-1] == pytest.approx(160 / 5 + 160 / 4 + 320 / 3 + 640 / 2 + 1280 + 640)
    ten = ladder.plan([m * 1000 for m in BUDGETS], batch_tokens=100, cooldown_fraction=0.1, warmup_fraction=0.05)
    assert ten.total_steps() / sum(ten.steps) == pytest.approx((0.9 * 320 + 0.1 * 620) / 620)  # 0.565


def test_budgets_that_round_to_one_branch_point_make_one_segment():
    p = ladder.plan([1000, 1001, 4000], batch_tokens=100, cooldown_fraction=0.5, warmup_fraction=0.0)
    assert p.steps == (10, 11, 40) and p.branch_steps == (5, 5, 20)
    assert p.segments == ((0, 5), (5, 20))
    assert sum(p.spent_steps()) == pytest.approx(p.total_steps()) == 20 + 5 + 6 + 20


def ladder_config(**training):
    config = filled(smoke_config())
    config["training"].update(schedule="wsd", ladder=True, **training)
    return config


def test_a_study_has_one_trunk_per_dataset_size_lr_and_seed():
    config = ladder_config()
    plans = S.ladders(config)
    assert set(plans) == {"bible/xs/trunk_lr0.01_s0", "bible/s/trunk_lr0.01_s0", "bible/m/trunk_lr0.01_s0",
                          "bible/l/trunk_lr0.01_s0"}
    group, plan = plans["bible/xs/trunk_lr0.01_s0"]
    assert [r.token_multiplier for r in group] == [10, 20, 40] and len(plan.steps) == 3
    assert S.ladders(filled(smoke_config())) == {}  # no ladder: every run from scratch


def test_a_branch_spec_names_its_trunk_and_branch_step_and_its_lr_is_the_from_scratch_wsd_lr():
    config = ladder_config()
    group, plan = S.ladders(config)["bible/xs/trunk_lr0.01_s0"]
    spec = S.run_spec(config, group[1])
    assert spec["ladder"] == {"trunk": "bible/xs/trunk_lr0.01_s0", "warmup_steps": plan.warmup_steps,
                              "branch_step": plan.branch_steps[1]}
    trunk = ladder.trunk_spec(spec)
    assert trunk == ladder.trunk_spec(S.run_spec(config, group[2]))  # the same trunk for every M
    assert "tokens" not in trunk and "token_multiplier" not in trunk
    steps, b = plan.steps[1], plan.branch_steps[1]
    # before the branch step the LR is the constant peak, as in the trunk; then it cools down to the end
    assert {lr_at(s, steps, spec["training"], 0.01, plan.warmup_steps) for s in range(plan.warmup_steps, b)} == {0.01}
    assert lr_at(steps - 1, steps, spec["training"], 0.01, plan.warmup_steps) < 0.01 * 0.2


def test_trunk_segments_chain_from_step_0_to_the_last_branch_point():
    config = ladder_config()
    segments = {k: v for k, v in S.trunk_segments(config).items() if k.startswith("bible/xs/")}
    _, plan = S.ladders(config)["bible/xs/trunk_lr0.01_s0"]
    assert [v["segment"] for v in segments.values()] == [list(s) for s in plan.segments]
    assert list(segments) == [f"bible/xs/trunk_lr0.01_s0/step{end}" for _, end in plan.segments]


def test_adding_a_longer_run_extends_the_trunk_and_changes_no_earlier_segment():
    config = ladder_config()
    before = S.trunk_segments(config)
    config["grid"][1]["token_multipliers"].append(80)
    after = S.trunk_segments(config)
    assert set(before) < set(after) and all(after[k] == v for k, v in before.items())
