"""`scaling status`: the planned grid against what is on disk."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time

import pytest
import yaml

from scaling.study import status as T
from scaling.study import runs as S
from scaling.testbeds import synthetic


def test_every_state_is_counted_per_size_and_multiplier_with_compute(tmp_path):
    config = synthetic.study_config("st", 2, [10, 20], [0.01, 0.02, 0.04])  # 12 runs
    results = tmp_path / "results" / "st"
    runs = S.runs(config)
    log = lambda r: results / "logs" / "train" / f"{r.id}.log"  # noqa: E731
    states = {}
    for r in runs[:3]:
        synthetic.write_run(results, config, r, 20)
        states[r.id] = "done"
    synthetic.write_run(results, config, runs[3], 20, diverged=True)
    states[runs[3].id] = "diverged"
    for r, text, age, state in [
        (runs[4], "[run] step 5/20 loss 3.1\n", 0, "running"),
        (runs[5], "Traceback (most recent call last):\nRuntimeError: out of memory\n", 0, "failed"),
        (runs[6], "[run] step 5/20 loss 3.1\n", 3600, "failed"),  # killed: its log went quiet an hour ago
    ]:
        log(r).parent.mkdir(parents=True, exist_ok=True)
        log(r).write_text(text)
        os.utime(log(r), (time.time() - age, time.time() - age))
        states[r.id] = state
    per_run = T.grid(config, tmp_path / "results", stale_after=120).set_index("run_id")
    expected = {r.id: states.get(r.id, "not_started") for r in runs}
    assert per_run["state"].to_dict() == expected

    metrics = {r.id: json.loads((results / "runs" / r.id / "metrics.json").read_text()) for r in runs[:4]}
    spent = sum(m["flops"] for m in list(metrics.values())[:3]) + \
        metrics[runs[3].id]["flops"] * metrics[runs[3].id]["tokens_seen"] / metrics[runs[3].id]["tokens"]
    sizes = S.model_sizes(config)
    left = sum(6.0 * sizes[r.size] * S.run_spec(config, r)["tokens"] for r in runs[4:])
    assert abs(per_run["flops_spent"].sum() - spent) <= 1e-9 * spent
    assert abs(per_run["flops_left"].sum() - left) <= 1e-9 * left

    table = T.summarize(per_run.reset_index())
    assert len(table) == 4  # 2 sizes × 2 multipliers
    assert (table[list(T.STATES)].sum(axis=1) == 3).all()  # 3 learning rates each
    assert table[list(T.STATES)].sum().to_dict() == {s: list(expected.values()).count(s) for s in T.STATES}


@pytest.mark.slow
def test_scaling_status_prints_the_grid_from_the_study_config(tmp_path):
    config = synthetic.study_config("st", 1, [20], [0.01, 0.02])
    synthetic.write_run(tmp_path / "results" / "st", config, S.runs(config)[0], 10)
    path = tmp_path / "study.yaml"
    # only what a user writes: the schema's defaults (training, fit, seeds) are filled in as by snakemake
    path.write_text(yaml.safe_dump({k: config[k] for k in ("study", "datasets", "models", "grid")}))
    proc = subprocess.run([sys.executable, "-m", "scaling.cli", "status", "--configfile", str(path), "--runs"],
                          cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "2 runs planned; 1 done, 0 running, 0 failed, 0 diverged, 1 not started" in proc.stdout
    assert re.search(r"^bible/d16/M20_lr0.02_s0 +not_started$", proc.stdout, re.M)


@pytest.mark.slow
def test_scaling_status_explains_a_bad_config(tmp_path):
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump({"study": "x", "datasets": {"d": {"source": "embedded"}},
                                    "models": [{"d_model": 8, "n_layers": 1, "n_heads": 2}],
                                    "grid": [{"sizes": ["nope"], "token_multipliers": [20], "learning_rates": [0.1]}]}))
    proc = subprocess.run([sys.executable, "-m", "scaling.cli", "status", "--configfile", str(path)],
                          cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode != 0 and "grid[0].sizes[0]: unknown size 'nope'" in proc.stderr


def test_on_a_ladder_each_run_costs_its_share_of_the_trunk_and_its_cooldown(tmp_path):
    config = synthetic.study_config("st", 2, [10, 20, 40], [0.01])
    config["training"].update(schedule="wsd", ladder=True, cooldown_fraction=0.2, batch_tokens=512)
    per_run = T.grid(config, tmp_path / "results")
    sizes, plans = S.model_sizes(config), S.ladders(config)
    assert per_run["state"].eq("not_started").all() and len(plans) == 2
    scratch = sum(6.0 * sizes[r.size] * S.run_spec(config, r)["tokens"] for r in S.runs(config))
    ladder = sum(6.0 * sizes[r.size] * S.run_spec(config, r)["tokens"] * spent / steps
                 for group, plan in plans.values() for r, spent, steps in zip(group, plan.spent_steps(), plan.steps))
    assert per_run["flops_left"].sum() == pytest.approx(ladder) and ladder < 0.8 * scratch
