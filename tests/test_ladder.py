"""The ladder's plan and compute (scaling/train/ladder.py), and how a study expands into trunks and branches."""

from __future__ import annotations

import pytest
import torch

from scaling.io import spec_json
from scaling.study import runs as S
from scaling.train import ladder
from scaling.train.schedules import lr_at

from conftest import smoke_config
from test_study import filled

BUDGETS = (20, 40, 80, 160, 320)


def test_branches_start_each_runs_cooldown_and_the_trunk_ends_at_the_last():
    p = ladder.plan([m * 1000 for m in BUDGETS], batch_tokens=100, cooldown_fraction=0.2)
    assert p.steps == (200, 400, 800, 1600, 3200)
    assert p.branch_steps == (160, 320, 640, 1280, 2560)
    assert p.trunk_steps == 2560
    assert p.segments == ((0, 160), (160, 320), (320, 640), (640, 1280), (1280, 2560))


def test_the_ladder_costs_380_of_620_from_scratch_with_20_percent_cooldowns():
    p = ladder.plan([m * 1000 for m in BUDGETS], batch_tokens=100, cooldown_fraction=0.2)
    assert p.total_steps() == 2560 + 0.2 * 6200
    assert p.total_steps() / sum(p.steps) == pytest.approx(380 / 620)
    assert sum(p.spent_steps()) == pytest.approx(p.total_steps())
    # the shortest run shares its one segment with all five; the longest pays alone for the last
    assert p.spent_steps()[0] == pytest.approx(160 / 5 + 40)
    assert p.spent_steps()[-1] == pytest.approx(160 / 5 + 160 / 4 + 320 / 3 + 640 / 2 + 1280 + 640)
    ten = ladder.plan([m * 1000 for m in BUDGETS], batch_tokens=100, cooldown_fraction=0.1)
    assert ten.total_steps() / sum(ten.steps) == pytest.approx((0.9 * 320 + 0.1 * 620) / 620)  # 0.565


def test_budgets_that_round_to_one_branch_point_make_one_segment():
    p = ladder.plan([1000, 1001, 4000], batch_tokens=100, cooldown_fraction=0.5)
    assert p.steps == (10, 11, 40) and p.branch_steps == (5, 5, 20)
    assert p.segments == ((0, 5), (5, 20)) and ladder.sharers(p.branch_steps) == (3, 1)
    assert sum(p.spent_steps()) == pytest.approx(p.total_steps()) == 20 + 5 + 6 + 20


def ladder_config(**training):
    config = filled(smoke_config())
    config["training"].update(schedule="wsd", ladder=True, warmup_steps=2, **training)
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
    assert spec["ladder"] == {"trunk": "bible/xs/trunk_lr0.01_s0", "branch_step": plan.branch_steps[1]}
    trunk = ladder.trunk_spec(spec)
    assert trunk == ladder.trunk_spec(S.run_spec(config, group[2]))  # the same trunk for every M
    assert "tokens" not in trunk and "token_multiplier" not in trunk
    steps, b = plan.steps[1], plan.branch_steps[1]
    # before the branch step the LR is the constant peak, as in the trunk; then it cools down to the end
    assert lr_at(0, steps, spec["training"], 0.01) == pytest.approx(0.01 / 2)  # warmup_steps = 2 for every M
    assert {lr_at(s, steps, spec["training"], 0.01) for s in range(2, b)} == {0.01}
    assert lr_at(steps - 1, steps, spec["training"], 0.01) < 0.01 * 0.2


def test_each_train_job_is_sized_by_the_steps_it_trains():
    config = ladder_config()
    group, plan = S.ladders(config)["bible/xs/trunk_lr0.01_s0"]
    batch = config["training"]["batch_tokens"]
    for run, steps, b in zip(group, plan.steps, plan.branch_steps):
        assert ladder.job_tokens(S.run_spec(config, run)) == (steps - b) * batch  # its cooldown
    segments = [v for k, v in S.trunk_segments(config).items() if k.startswith("bible/xs/")]
    assert sum(ladder.job_tokens(v) for v in segments) == plan.trunk_steps * batch
    scratch = filled(smoke_config())
    assert ladder.job_tokens(S.run_spec(scratch, group[0])) == S.run_tokens(scratch, group[0])


def test_trunk_segments_chain_from_step_0_to_the_last_branch_point():
    config = ladder_config()
    segments = {k: v for k, v in S.trunk_segments(config).items() if k.startswith("bible/xs/")}
    _, plan = S.ladders(config)["bible/xs/trunk_lr0.01_s0"]
    assert [v["segment"] for v in segments.values()] == [list(s) for s in plan.segments]
    assert list(segments) == [f"bible/xs/trunk_lr0.01_s0/step{end}" for _, end in plan.segments]


def test_changing_only_the_cooldown_keeps_every_trunk_segment_and_changes_every_run():
    config = ladder_config()
    before = S.trunk_segments(config)
    runs = {r.id: spec_json(S.run_spec(config, r)) for r in S.runs(config)}
    config["training"].update(cooldown_shape="1-sqrt", min_lr_ratio=0.0)
    assert S.trunk_segments(config) == before
    assert all(spec_json(S.run_spec(config, r)) != runs[r.id] for r in S.runs(config))
    config["training"].update(cooldown_fraction=0.3)  # moves the branch points: other segments
    assert not set(S.trunk_segments(config)) & set(before)


def test_adding_a_longer_run_extends_the_trunk_and_changes_no_earlier_segment():
    config = ladder_config()
    before = S.trunk_segments(config)
    config["grid"][1]["token_multipliers"].append(80)
    after = S.trunk_segments(config)
    assert set(before) < set(after) and all(after[k] == v for k, v in before.items())


# -- the trainer: trunk segments and branches ------------------------------------------------------------------------
import json  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402
import signal  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from scaling.train import checkpoint  # noqa: E402
from scaling.train.loop import train  # noqa: E402
from test_train import QUIET, cli_train, data_dir, spec, wait_for_checkpoint  # noqa: E402,F401 (a fixture)

SHORT, LONG = 50, 150  # steps of the two runs of the test ladder, 128 tokens each
WSD = {"schedule": "wsd", "cooldown_fraction": 0.2, "warmup_steps": 5}


def branch_spec(steps: int, **change) -> dict:
    """A run of the test ladder: WSD, 5 steps of warmup, branching at 80 % of its own steps."""
    p = ladder.plan([128 * SHORT, 128 * LONG], 128, 0.2)
    b = p.branch_steps[p.steps.index(steps)]
    sp = spec(tokens=128 * steps, **WSD, ladder=True, **change)
    return {**sp, "run_id": f"t/xs/M{steps}_lr0.003_s0", "ladder": {"trunk": "t/xs/trunk_lr0.003_s0", "branch_step": b}}


def segment_spec(first: int, end: int) -> dict:
    return {**ladder.trunk_spec(branch_spec(SHORT)), "segment": [first, end]}


def curve_of(run_dir) -> pd.DataFrame:
    return pd.read_parquet(run_dir / "curve.parquet")


@pytest.fixture(scope="module")
def trunk(data_dir, tmp_path_factory):
    """The test ladder's trunk, trained in its two segments (0–40, 40–120): its directory."""
    out = tmp_path_factory.mktemp("trunk")
    train(segment_spec(0, 40), data_dir, out, **QUIET)
    train(segment_spec(40, 120), data_dir, out, start_from=out / "step40.pt", **QUIET)
    return out


def test_each_branch_is_bit_for_bit_the_wsd_run_of_its_length_from_scratch(data_dir, trunk, tmp_path):
    assert not (trunk / "step40").exists() and not (trunk / "step120").exists()  # segments' work removed
    for steps, b in ((SHORT, 40), (LONG, 120)):  # from scratch with the same training.warmup_steps
        branched = train(branch_spec(steps), data_dir, tmp_path / f"b{steps}", start_from=trunk / f"step{b}.pt",
                         **QUIET)
        scratch = train(spec(tokens=128 * steps, **WSD), data_dir, tmp_path / f"s{steps}", **QUIET)
        pd.testing.assert_frame_equal(curve_of(tmp_path / f"b{steps}"), curve_of(tmp_path / f"s{steps}"))
        assert branched["val_loss"] == scratch["val_loss"]
        assert branched["trunk"] == "t/xs/trunk_lr0.003_s0" and branched["branch_step"] == b
        assert branched["resumed_from_step"] == b and scratch["trunk"] is None
        # its time is its own job's, the cooldown's; its trunk's up to its branch point is counted apart
        assert branched["tokens_per_s"] == pytest.approx((steps - b) * 128 / branched["train_s"])
        assert branched["trunk_wall_s"] == json.loads((trunk / f"step{b}.json").read_text())["trunk_wall_s"]
        assert scratch["trunk_wall_s"] is None


def test_each_trunk_segment_records_its_own_jobs_time_and_the_trunks_so_far(trunk):
    first, second = (json.loads((trunk / f"step{end}.json").read_text()) for end in (40, 120))
    assert first["segment"] == [0, 40] and second["segment"] == [40, 120]
    assert first["status"] == second["status"] == "ok" and second["diverged_step"] is None
    assert 0 < first["train_s"] <= first["wall_s"] and 0 < second["train_s"] <= second["wall_s"]
    assert first["trunk_wall_s"] == first["wall_s"]
    assert second["trunk_wall_s"] == pytest.approx(first["wall_s"] + second["wall_s"])
    assert torch.load(trunk / "step120.pt", weights_only=True)["trunk_wall_s"] == second["trunk_wall_s"]


def test_a_branch_refuses_the_checkpoint_of_another_trunk_or_step(data_dir, trunk, tmp_path):
    with pytest.raises(ValueError, match="fix: delete it"):
        train(branch_spec(SHORT), data_dir, tmp_path / "a", start_from=trunk / "step120.pt", **QUIET)
    with pytest.raises(ValueError, match="not the checkpoint of t/xs/trunk_lr0.003_s0 after 40"):
        train(branch_spec(SHORT, weight_decay=0.0), data_dir, tmp_path / "b", start_from=trunk / "step40.pt",
              **QUIET)
    with pytest.raises(ValueError, match="fix: give it"):
        train(branch_spec(SHORT), data_dir, tmp_path / "c", **QUIET)


def test_a_diverged_trunk_ends_its_later_segments_and_its_runs_as_diverged(data_dir, tmp_path):
    first = {**ladder.trunk_spec(branch_spec(SHORT, lr=100.0)), "segment": [0, 40]}
    second = {**first, "segment": [40, 120]}
    train(first, data_dir, tmp_path, **QUIET)
    diverged = torch.load(tmp_path / "step40.pt", weights_only=True)["diverged_step"]
    assert 0 < diverged <= 40
    train(second, data_dir, tmp_path, start_from=tmp_path / "step40.pt", **QUIET)
    assert torch.load(tmp_path / "step120.pt", weights_only=True)["diverged_step"] == diverged
    assert json.loads((tmp_path / "step120.json").read_text())["status"] == "diverged"
    m = train(branch_spec(LONG, lr=100.0), data_dir, tmp_path / "run", start_from=tmp_path / "step120.pt", **QUIET)
    assert m["status"] == "diverged" and m["diverged_step"] == diverged and math.isnan(m["val_loss"])
    assert len(curve_of(tmp_path / "run")) == diverged
    assert m["tokens_per_s"] is None  # its job trained no step


def kill_at_first_checkpoint(sp, data_dir, out, work, *flags) -> int:
    """Start ``scaling train`` of ``sp``, SIGKILL it once it has checkpointed in ``work``; the step it had done."""
    proc = cli_train(sp, data_dir, out, "--checkpoint-every", "7", *flags)
    wait_for_checkpoint(proc, work)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    return torch.load(checkpoint.path(work), weights_only=True)["step"]


def finish(sp, data_dir, out, *flags) -> str:
    proc = cli_train(sp, data_dir, out, "--checkpoint-every", "7", *flags)
    log = proc.communicate(timeout=300)[0]
    assert proc.returncode == 0, log
    return log


@pytest.mark.slow
def test_a_killed_trunk_segment_and_a_killed_branch_resume_to_the_uninterrupted_results(data_dir, trunk, tmp_path):
    out = tmp_path / "trunk"
    train(segment_spec(0, 40), data_dir, out, **QUIET)
    seg = segment_spec(40, 120)
    killed = kill_at_first_checkpoint(seg, data_dir, out, out / "step120", "--start-from", str(out / "step40.pt"))
    assert 40 < killed < 120 and not (out / "step120.pt").exists()
    log = finish(seg, data_dir, out, "--start-from", str(out / "step40.pt"))
    assert f"resumed from its checkpoint at step {killed}/120" in log
    again, before = (torch.load(d / "step120.pt", weights_only=True) for d in (out, trunk))
    assert np.array_equal(again["losses"], before["losses"]) and np.array_equal(again["val_losses"],
                                                                                before["val_losses"], equal_nan=True)
    assert all(torch.equal(again["model"][k], v) for k, v in before["model"].items())

    sp, run = branch_spec(LONG), tmp_path / "branch"
    reference = train(sp, data_dir, tmp_path / "reference", start_from=trunk / "step120.pt", **QUIET)
    killed = kill_at_first_checkpoint(sp, data_dir, run, run, "--start-from", str(out / "step120.pt"))
    assert 120 < killed < LONG
    log = finish(sp, data_dir, run, "--start-from", str(out / "step120.pt"))
    assert f"resumed from its checkpoint at step {killed}/{LONG}" in log
    pd.testing.assert_frame_equal(curve_of(run), curve_of(tmp_path / "reference"))
    assert json.loads((run / "metrics.json").read_text())["val_loss"] == reference["val_loss"]


# -- the workflow ----------------------------------------------------------------------------------------------------
from conftest import planned, snakemake  # noqa: E402
from scaling.study.config import load  # noqa: E402


@pytest.mark.workflow
def test_a_ladder_study_trains_each_trunk_once_a_cooldown_change_retrains_no_trunk_and_a_larger_m_extends_it(
        tmp_path):
    config = smoke_config()
    config["training"].update(schedule="wsd", ladder=True, warmup_steps=2)
    # one trunk, five cooldowns: the five (N, M) points the loader asks of a fit set
    config["grid"] = [{"sizes": ["xs"], "token_multipliers": [5, 6, 7, 8, 10], "learning_rates": [0.01]}]
    config["fit"] = {"fit_on": [{"size": "xs"}]}
    config["downstream"] = {}
    assert planned(tmp_path, config) == {"prepare": 1, "trunk_segment": 5, "train": 5, "collect": 1,
                                         "fit": 1, "database": 1, "report": 1, "all": 1}
    snakemake(tmp_path, config, "--cores", "1", "results/smoke/tables/collect.json")
    runs = pd.read_parquet(tmp_path / "results/smoke/tables/runs.parquet").sort_values("steps")
    _, p = S.ladders(load([tmp_path / "study.yaml"]))["bible/xs/trunk_lr0.01_s0"]
    assert list(runs["branch_step"]) == list(p.branch_steps) and set(runs["trunk"]) == {"bible/xs/trunk_lr0.01_s0"}
    assert runs["flops_spent"].sum() / runs["flops"].sum() == pytest.approx(p.total_steps() / sum(p.steps), rel=1e-3)
    trunk = tmp_path / "results/smoke/trunks/bible/xs/trunk_lr0.01_s0"
    first, end = p.branch_steps[0], p.branch_steps[-1]
    assert (trunk / f"step{first}.pt").exists() and (trunk / f"step{end}.pt").exists()  # kept, for the changes below
    records = [json.loads((trunk / f"step{b}.json").read_text()) for b in p.branch_steps]
    assert list(runs["trunk_wall_s"]) == [r["trunk_wall_s"] for r in records]  # each run: its trunk's time so far

    config["training"]["cooldown_shape"] = "1-sqrt"  # the cooldowns change, the trunk does not
    assert planned(tmp_path, config) == {"train": 5, "collect": 1, "fit": 1, "database": 1, "report": 1, "all": 1}
    snakemake(tmp_path, config, "--cores", "1", "results/smoke/tables/collect.json")
    config["grid"][0]["token_multipliers"].append(20)
    assert planned(tmp_path, config) == {"trunk_segment": 1, "train": 1, "collect": 1, "fit": 1, "database": 1,
                                         "report": 1, "all": 1}
    snakemake(tmp_path, config, "--cores", "1", "results/smoke/tables/collect.json")
    _, p = S.ladders(load([tmp_path / "study.yaml"]))["bible/xs/trunk_lr0.01_s0"]
    assert (trunk / f"step{p.trunk_steps}.pt").exists()
    assert not {"trunk_segment", "train"} & set(planned(tmp_path, config))  # nothing retrains
