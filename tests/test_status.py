"""`scaling status`: the planned grid against what is on disk."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import time

import pytest
import yaml

from scaling.study import status as T
from scaling.io import spec_digest
from scaling.study import runs as S
from scaling.study.config import load
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
    # trained before the study's warmup changed: snakemake retrains it, so nothing of it counts as done
    synthetic.write_run(results, {**config, "training": {**config["training"], "warmup_fraction": 0.1}}, runs[7], 20)
    states[runs[7].id] = "stale"
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
    sizes = S.model_sizes(config)
    planned = {r.id: 6.0 * sizes[r.size] * S.run_spec(config, r)["tokens"] for r in runs}
    # the running run and the killed one logged step 5 of 20: a quarter of their compute is spent
    logged = planned[runs[4].id] / 4 + planned[runs[6].id] / 4
    spent = sum(m["flops"] for m in list(metrics.values())[:3]) + logged + \
        metrics[runs[3].id]["flops"] * metrics[runs[3].id]["tokens_seen"] / metrics[runs[3].id]["tokens"]
    left = sum(planned[r.id] for r in runs[4:]) - logged  # the stale run's compute among them
    assert abs(per_run["flops_spent"].sum() - spent) <= 1e-9 * spent
    assert abs(per_run["flops_left"].sum() - left) <= 1e-9 * left

    table = T.summarize(per_run.reset_index())
    assert len(table) == 4  # 2 sizes × 2 multipliers
    assert (table[list(T.STATES)].sum(axis=1) == 3).all()  # 3 learning rates each
    assert table[list(T.STATES)].sum().to_dict() == {s: list(expected.values()).count(s) for s in T.STATES}


@pytest.mark.slow
def test_scaling_status_prints_the_grid_from_the_study_config(tmp_path):
    config = synthetic.study_config("st", 1, [20], [0.01, 0.02])
    path = tmp_path / "study.yaml"
    # only what a user writes: the schema's defaults (training, fit, seeds) are filled in as by snakemake
    path.write_text(yaml.safe_dump({k: config[k] for k in ("study", "datasets", "models", "grid")}))
    loaded = load([path], fittable=False)
    synthetic.write_run(tmp_path / "results" / "st", loaded, S.runs(loaded)[0], 10)
    status = lambda: subprocess.run([sys.executable, "-m", "scaling.cli", "status", "--configfile", str(path),  # noqa
                                     "--runs"], cwd=tmp_path, capture_output=True, text=True)
    proc = status()
    assert proc.returncode == 0, proc.stderr
    assert "2 runs planned; 1 done, 0 running, 0 failed, 0 diverged, 0 stale, 1 not started" in proc.stdout
    assert re.search(r"^bible/d16/M20_lr0.02_s0 +not_started$", proc.stdout, re.M) and "stale:" not in proc.stdout

    # the study changes a setting every run trains with: the finished run is stale, and the report says why
    path.write_text(yaml.safe_dump({**yaml.safe_load(path.read_text()), "training": {"schedule": "wsd"}}))
    proc = status()
    assert "2 runs planned; 0 done, 0 running, 0 failed, 0 diverged, 1 stale, 1 not started" in proc.stdout
    assert re.search(r"^bible/d16/M20_lr0.01_s0 +stale$", proc.stdout, re.M)
    assert "1 stale: finished, but on a spec the study has changed since; snakemake retrains them" in proc.stdout


@pytest.mark.slow
def test_scaling_status_explains_a_bad_config(tmp_path):
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump({"study": "x", "datasets": {"d": {"source": "embedded"}},
                                    "models": [{"d_model": 8, "n_layers": 1, "n_heads": 2}],
                                    "grid": [{"sizes": ["nope"], "token_multipliers": [20], "learning_rates": [0.1]}]}))
    proc = subprocess.run([sys.executable, "-m", "scaling.cli", "status", "--configfile", str(path)],
                          cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode != 0 and "grid[0].sizes[0]: unknown size 'nope'" in proc.stderr


def _study(tmp_path):
    """A synthetic study of 6 runs and its results folder."""
    config = synthetic.study_config("pr", 3, [10, 20], [0.01])
    return config, S.runs(config), tmp_path / "results" / "pr"


def _metrics(results, run) -> dict:
    return json.loads((results / "runs" / run.id / "metrics.json").read_text())


def test_progress_of_a_finished_study_counts_every_token_and_flop_and_has_nothing_left(tmp_path):
    config, runs, results = _study(tmp_path)
    for i, r in enumerate(runs):
        synthetic.write_run(results, config, r, 20, diverged=i == 0)
    p = T.progress(T.grid(config, tmp_path / "results"))
    tokens = {r.id: S.run_spec(config, r)["tokens"] for r in runs}
    m = {r.id: _metrics(results, r) for r in runs}
    diverged = m[runs[0].id]["tokens_seen"] / tokens[runs[0].id]  # the share it trained before it stopped
    assert (p["runs"], p["finished"], p["running"], p["left"], p["failed"]) == (6, 6, 0, 0, 0)
    assert p["tokens"] == sum(tokens.values())
    assert p["tokens_done"] == sum(tokens.values()) - tokens[runs[0].id] + round(tokens[runs[0].id] * diverged)
    flops = sum(x["flops"] for x in m.values()) - m[runs[0].id]["flops"] * (1 - diverged)
    assert p["flops_done"] == pytest.approx(flops, rel=1e-12) and p["flops"] == p["flops_done"]
    per_job = p["flops_done"] / sum(x["wall_s"] for x in m.values())
    assert p["flops_per_s_per_job"] == pytest.approx(per_job, rel=1e-12) and p["eta_s"] == 0.0

    out = io.StringIO()  # not a terminal: no screen clearing; a finished study is printed once and the watch ends
    T.watch(config, "study 'pr' (study.yaml)", tmp_path / "results", 120, 3600, out)
    text = out.getvalue()
    assert text.startswith("\nstudy 'pr' (study.yaml) at ") and "\033" not in text
    assert "runs: 6 finished, 0 running, 0 left (0 failed) of 6" in text and "ETA 0s" in text
    assert f"tokens: {p['tokens_done']:,} of {p['tokens']:,}" in text


def test_progress_of_a_half_finished_study_measures_throughput_and_the_eta(tmp_path):
    config, runs, results = _study(tmp_path)
    for r in runs[:2]:
        synthetic.write_run(results, config, r, 20)
    log = results / "logs" / "train" / f"{runs[2].id}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text(f"[{runs[2].id}] run …\n[{runs[2].id}] step 10/40 loss 3.2000 1,234 tok/s ETA 30s\n")
    tokens = {r.id: S.run_spec(config, r)["tokens"] for r in runs}
    sizes = S.model_sizes(config)
    planned = {r.id: 6.0 * sizes[r.size] * tokens[r.id] for r in runs}
    m = [_metrics(results, r) for r in runs[:2]]

    p = T.progress(T.grid(config, tmp_path / "results"))
    assert (p["finished"], p["running"], p["left"], p["failed"]) == (2, 1, 3, 0)
    assert p["tokens_done"] == tokens[runs[0].id] + tokens[runs[1].id] + round(tokens[runs[2].id] / 4)
    done = m[0]["flops"] + m[1]["flops"] + planned[runs[2].id] / 4
    assert p["flops_done"] == pytest.approx(done, rel=1e-12)
    left = sum(planned[r.id] for r in runs[2:]) - planned[runs[2].id] / 4
    per_job = (m[0]["flops"] + m[1]["flops"]) / (m[0]["wall_s"] + m[1]["wall_s"])  # the finished runs' speed
    assert p["flops_per_s"] == pytest.approx(per_job, rel=1e-12)  # one run training now
    assert p["eta_s"] == pytest.approx(left / per_job, rel=1e-9)
    text = T.progress_text(p)
    assert "runs: 2 finished, 1 running, 3 left (0 failed) of 6" in text
    assert f"compute: {done:.3g} of {done + left:.3g} FLOPs ({done / (done + left):.1%})" in text

    for r in runs[:2]:  # before any run finished, the speed is the running runs' tokens/s from their logs
        (results / "runs" / r.id / "metrics.json").unlink()
    p = T.progress(T.grid(config, tmp_path / "results"))
    assert p["flops_per_s"] == pytest.approx(6.0 * sizes[runs[2].size] * 1234, rel=1e-12)
    log.write_text(f"[{runs[2].id}] run …\n")  # nothing measured yet: no ETA, and the text says why
    p = T.progress(T.grid(config, tmp_path / "results"))
    assert p["eta_s"] is None and "ETA unknown until a run reports its speed" in T.progress_text(p)


def test_scaling_sql_and_status_use_the_same_study_and_say_which(tmp_path, monkeypatch, capsys):
    from scaling.cli import main
    from scaling.store.collect import collect
    from scaling.store.database import build_database

    monkeypatch.chdir(tmp_path)
    for name, n_sizes in (("mine", 5), ("newer", 2)):  # the other study's database is written last
        config = synthetic.study_config(name, n_sizes, [20], [0.01, 0.02])  # mine: five sizes, as the loss law needs
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump({k: config[k] for k in ("study", "datasets", "models",
                                                                                        "grid")}))
        config = load([tmp_path / f"{name}.yaml"], fittable=False)  # the runs of the study as a user declares it
        paths = [synthetic.write_run(f"results/{name}", config, r, 10) for r in S.runs(config)]
        collect(paths, f"results/{name}/tables")
        build_database(f"results/{name}/tables", f"results/{name}/scaling.duckdb")

    main(["sql", "--configfile", "mine.yaml", "--csv", "SELECT count(*) AS n FROM runs"])
    out, err = capsys.readouterr()
    assert out.split() == ["n", "10"] and err == "study 'mine' (mine.yaml): results/mine/scaling.duckdb\n"
    main(["status", "--configfile", "mine.yaml"])
    assert capsys.readouterr().out.startswith("study 'mine' (mine.yaml): 10 runs planned; 10 done")
    main(["status", "--configfile", "mine.yaml", "--watch", "0.01"])  # a finished study: one block, then it ends
    assert capsys.readouterr().out.startswith("\nstudy 'mine' (mine.yaml) at ")

    (tmp_path / "other.yaml").write_text("study: absent\n")
    with pytest.raises(SystemExit, match=r"results/absent/scaling.duckdb does not exist: run `snakemake --cores 2 "
                                         r"--configfile other.yaml` .* \(studies with a database: mine, newer\)"):
        main(["sql", "--configfile", "other.yaml", "SELECT 1"])


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


def _ladder(tmp_path):
    """A synthetic ladder study: one trunk of three segments, runs at M = 10, 20, 40; its plan and results folder."""
    config = synthetic.study_config("ld", 1, [10, 20, 40], [0.01])
    config["training"].update(schedule="wsd", ladder=True, cooldown_fraction=0.2, batch_tokens=512, warmup_steps=2)
    (trunk, (group, plan)), = S.ladders(config).items()
    return config, trunk, group, plan, tmp_path / "results" / "ld"


def _scratch(config, run) -> float:
    return 6.0 * S.model_sizes(config)[run.size] * S.run_spec(config, run)["tokens"]


def _write(path, text: str, age: float = 0.0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    os.utime(path, (time.time() - age, time.time() - age))


def test_on_a_ladder_a_run_waiting_on_its_training_trunk_runs_and_one_whose_segment_failed_failed(tmp_path):
    config, trunk, group, plan, results = _ladder(tmp_path)
    (_, first), (_, second), _ = plan.segments
    log = lambda end: results / "logs" / "trunk" / trunk / f"step{end}.log"  # noqa: E731
    _write(log(first), f"[{trunk}] step 5/{first} loss 3.1 2,000 tok/s ETA 9s\n")
    per_run = T.grid(config, tmp_path / "results")
    assert per_run["state"].eq("running").all()  # every run branches after the first segment
    p = T.progress(per_run)
    assert p["running"] == 3 and p["jobs_running"] == 1  # one job trains: the segment, shared by the three
    assert p["flops_per_s"] == pytest.approx(6.0 * S.model_sizes(config)[group[0].size] * 2000)
    per_step = {r.id: _scratch(config, r) / steps for r, steps in zip(group, plan.steps)}
    assert per_run["flops_spent"].sum() == pytest.approx(sum(per_step.values()) * 5 / 3)  # its 5 steps, in thirds

    _write(results / "trunks" / trunk / f"step{first}.json", json.dumps({"status": "ok", "wall_s": 10.0}))
    _write(log(second), "Traceback (most recent call last):\nRuntimeError: out of memory\n")
    per_run = T.grid(config, tmp_path / "results").set_index("run_id")
    assert per_run["state"].to_dict() == {group[0].id: "not_started", group[1].id: "failed", group[2].id: "failed"}
    p = T.progress(per_run.reset_index())
    assert (p["failed"], p["running"], p["jobs_running"]) == (2, 0, 0)
    # the first run's share of the finished segment is spent, and its model has seen that segment's steps
    assert per_run.loc[group[0].id, "flops_spent"] == pytest.approx(per_step[group[0].id] * first / 3)
    assert per_run.loc[group[0].id, "tokens_done"] == round(S.run_spec(config, group[0])["tokens"] * first
                                                           / plan.steps[0])
    assert per_run.loc[group[0].id, "job_s"] == pytest.approx(10.0 / 3)  # its share of the segment's job


def test_on_a_ladder_a_segment_trained_on_another_spec_makes_it_the_later_segments_and_their_runs_stale(tmp_path):
    config, trunk, group, plan, results = _ladder(tmp_path)
    segments = S.trunk_segments(config)
    record = lambda key, spec: _write(results / "trunks" / f"{key}.json", json.dumps(  # noqa: E731
        {"status": "ok", "wall_s": 1.0, "spec_digest": spec_digest(spec)}))
    for key, spec in segments.items():
        record(key, spec)
    for r in group:
        _write(results / "runs" / r.id / "metrics.json",
               json.dumps({"status": "ok", "wall_s": 1.0, "spec_digest": spec_digest(S.run_spec(config, r))}))
    per_run = T.grid(config, tmp_path / "results")
    assert per_run["state"].eq("done").all() and per_run["flops_left"].sum() == 0

    first = next(iter(segments))  # every run branches after it
    record(first, {**segments[first], "seed": 1})
    per_run = T.grid(config, tmp_path / "results")
    assert per_run["state"].eq("stale").all()
    assert per_run["flops_spent"].sum() == 0  # the whole trunk trains again, and every cooldown
    assert per_run["flops_left"].sum() == pytest.approx(sum(
        _scratch(config, r) * spent / steps for r, spent, steps in zip(group, plan.spent_steps(), plan.steps)))


def test_on_a_ladder_the_eta_counts_the_time_of_each_trunk_segment_once(tmp_path):
    config, trunk, group, plan, results = _ladder(tmp_path)
    walls = {end: 10.0 * (i + 1) for i, (_, end) in enumerate(plan.segments)}
    for end, wall in walls.items():
        _write(results / "trunks" / trunk / f"step{end}.json", json.dumps({"status": "ok", "wall_s": wall}))
    _write(results / "runs" / group[0].id / "metrics.json", json.dumps({"status": "ok", "wall_s": 4.0}))
    per_run = T.grid(config, tmp_path / "results")
    p = T.progress(per_run)
    # measured: the trunk's three jobs, each once (in its runs' shares), and the first run's cooldown
    per_step = [_scratch(config, r) / steps for r, steps in zip(group, plan.steps)]
    trunk = sum(per_step[i] * (end - first) / sum(1 for b in plan.branch_steps if b >= end)
                for first, end in plan.segments for i, b in enumerate(plan.branch_steps) if end <= b)
    cooldown = per_step[0] * (plan.steps[0] - plan.branch_steps[0])
    assert per_run["job_s"].sum() == pytest.approx(sum(walls.values()) + 4.0)
    assert p["flops_per_s_per_job"] == pytest.approx((trunk + cooldown) / (sum(walls.values()) + 4.0), rel=1e-9)
    # compute left: the other two cooldowns, at the measured speed of one job (none is running)
    left = sum(per_step[i] * (plan.steps[i] - plan.branch_steps[i]) for i in (1, 2))
    assert p["flops"] - p["flops_done"] == pytest.approx(left, rel=1e-9)
    assert p["eta_s"] == pytest.approx(left / p["flops_per_s_per_job"], rel=1e-9)
