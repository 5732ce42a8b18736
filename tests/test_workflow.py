"""The pipeline end to end on the smoke study: outputs, staleness, bad input."""

from __future__ import annotations

import ast
import base64
import json
import subprocess
import sys
from collections import Counter

import duckdb
import pytest

from conftest import planned, smoke_config, snakemake
from scaling.train.flops import planned_tokens

pytestmark = pytest.mark.workflow

RESULTS = "results/smoke"


def test_full_run_produces_every_table_figure_and_database(finished_smoke):
    out = finished_smoke / RESULTS
    for rel in ("summary.md", "figures/loss_vs_compute.png", "figures/loss_vs_lr.png", "fit/overtraining.json"):
        assert (out / rel).stat().st_size > 0, rel
    con = duckdb.connect(str(out / "scaling.duckdb"), read_only=True)
    runs = con.sql("SELECT * FROM runs").df()
    n_runs = 6  # 4 sizes at M=20 + the smallest at M=10 and 40
    assert len(runs) == n_runs and set(runs["status"]) == {"ok"}
    for col in ("dataset", "size", "n_params", "n_params_nonembed", "tokens", "token_multiplier", "lr", "seed",
                "flops", "val_loss", "final_train_loss", "status"):
        assert col in runs.columns, col
    assert (runs["n_params_nonembed"] < runs["n_params"]).all()
    assert (runs["tokens"] == planned_tokens(runs["n_params"], runs["token_multiplier"])).all()  # as the fits derive D
    # every run logged every step, and learned something
    steps = con.sql("SELECT run_id, count(*) n, max(step) s FROM curves GROUP BY run_id").df()
    assert len(steps) == n_runs and (steps["n"] == steps["s"]).all()
    assert (runs["val_loss"] < runs["initial_loss"] - 1.0).all()
    fits = con.sql("SELECT law, n_points FROM fits ORDER BY law").df()
    assert fits.to_dict("list") == {"law": ["downstream", "overtraining"], "n_points": [5, 5]}
    for law in ("overtraining", "downstream"):
        pred = con.execute("SELECT role, count(*) n FROM predictions WHERE law = ? GROUP BY role", [law]).df()
        assert pred.set_index("role")["n"].to_dict() == {"fit": 5, "held_out": 1, "target": 1}, law
    assert json.loads((out / "fit/optimal_lr.json").read_text())["skipped"]  # the smoke grid sweeps no LR
    # every job ran in the study's job server (scaling.forkserver), forked rather than started afresh; on a machine
    # with a GPU there is none
    from scaling.study.config import has_gpu

    if has_gpu():
        assert not (out / "logs/forkserver.log").exists()
        return
    lines = [line for line in (out / "logs/forkserver.log").read_text().splitlines() if " pid " in line]
    assert Counter(line.split(": ")[1] for line in lines) == {  # prepare and tasks import little: not served
        "scaling train": n_runs, "scaling evaluate": n_runs, "scaling collect": 1, "scaling fit-study": 1,
        "scaling database": 1, "scaling report": 1}
    assert all(": exit 0 in " in line for line in lines)


def test_every_run_is_scored_on_its_tasks_and_task_set(finished_smoke):
    con = duckdb.connect(str(finished_smoke / RESULTS / "scaling.duckdb"), read_only=True)
    rows = con.sql("SELECT * FROM downstream").df()
    assert len(rows) == 6 * 3  # 6 runs × (2 tasks + the set `core`)
    tasks = rows[rows["kind"] == "task"]
    assert set(tasks["task"]) == {"spelling", "next_word"} and (tasks["n_examples"] == 100).all()
    assert (tasks["random_baseline_accuracy"] == 0.25).all()
    assert (tasks["accuracy"] == tasks["accuracy_norm"]).all() and tasks["accuracy_raw"].between(0, 1).all()
    core = rows[rows["kind"] == "average"].set_index("run_id")["accuracy"].sort_index()
    assert core.to_numpy() == pytest.approx(tasks.groupby("run_id")["accuracy"].mean().sort_index().to_numpy())
    # spelling is the easy task: the best of these tiny models beats chance on it, and beats the worst
    loss = con.sql("SELECT run_id, val_loss FROM runs").df().set_index("run_id")["val_loss"]
    spelling = tasks[tasks["task"] == "spelling"].set_index("run_id")["accuracy"]
    assert spelling[loss.idxmin()] > max(0.5, spelling[loss.idxmax()])


def test_after_a_full_run_there_is_nothing_to_do(finished_smoke):
    assert planned(finished_smoke, smoke_config()) == {}


def test_snakemake_records_a_run_s_spec_and_paths_as_its_params_and_nothing_else(finished_smoke):
    """Snakemake reruns a job whose recorded params differ from its rule's, so a param added to or removed from the
    train or evaluate rule retrains (or rescores) every run of every finished study: this pins what is recorded,
    so that such a change is made knowingly. Params computed from a job's input (``start``, ``hf``) are not
    recorded; a constant in their place would be, and would make every finished run stale."""
    def recorded(path):  # Snakemake's record of the job that wrote an output (.snakemake/metadata/<base64 path>)
        name = base64.urlsafe_b64encode(str(path.relative_to(finished_smoke)).encode()).decode()
        record = json.loads((finished_smoke / ".snakemake" / "metadata" / name).read_text())
        return record["rule"], [ast.literal_eval(p) for p in record["params"]]

    run_dir = next((finished_smoke / RESULTS / "runs").glob("*/*/*/metrics.json")).parent
    run_id = str(run_dir.relative_to(finished_smoke / RESULTS / "runs"))
    data = f"{RESULTS}/data/{run_id.split('/')[0]}"
    rule, params = recorded(run_dir / "metrics.json")
    assert rule == "train" and len(params) == 4, params
    spec = [p for p in params if p.startswith("{")]
    assert len(spec) == 1 and json.loads(spec[0])["run_id"] == run_id
    assert sorted(set(params) - set(spec)) == sorted([run_id, data, f"{RESULTS}/runs/{run_id}"])
    rule, params = recorded(run_dir / "downstream.json")
    study = json.loads((finished_smoke / RESULTS / "study.json").read_text())  # the checked study, defaults filled
    assert rule == "evaluate" and len(params) == 5, params
    assert study["downstream"]["batch_size"] in params and data in params and f"{RESULTS}/runs/{run_id}" in params
    assert sum(isinstance(p, str) and p.startswith("{") for p in params) == 2  # the tasks' and task sets' JSON


def test_adding_a_learning_rate_trains_only_the_new_runs(smoke_copy):
    config = smoke_config()
    config["grid"][0]["learning_rates"].append(0.02)
    assert planned(smoke_copy, config) == {
        "train": 4, "evaluate": 4, "collect": 1, "fit": 1, "database": 1, "report": 1, "all": 1,
    }


def test_adding_a_model_size_trains_it_and_refits(smoke_copy):
    config = smoke_config()
    config["models"].append({"name": "xl", "d_model": 32, "n_layers": 3, "n_heads": 2})
    config["grid"][0]["sizes"].append("xl")
    assert planned(smoke_copy, config) == {
        "train": 1, "evaluate": 1, "collect": 1, "fit": 1, "database": 1, "report": 1, "all": 1,
    }
    before = (smoke_copy / RESULTS / "runs/bible/l/M20_lr0.01_s0/metrics.json").stat().st_mtime_ns
    snakemake(smoke_copy, config, "--cores", "2")
    assert planned(smoke_copy, config) == {}
    assert (smoke_copy / RESULTS / "runs/bible/l/M20_lr0.01_s0/metrics.json").stat().st_mtime_ns == before
    con = duckdb.connect(str(smoke_copy / RESULTS / "scaling.duckdb"), read_only=True)
    assert con.execute("SELECT count(*) FROM runs WHERE size = 'xl'").fetchone()[0] == 1
    assert con.execute("SELECT n_points FROM fits WHERE law = 'overtraining'").fetchone()[0] == 6


def test_changing_fit_settings_reruns_only_fit_and_report(smoke_copy):
    config = smoke_config()
    config["fit"]["targets"].append({"n_params": 1e6, "token_multiplier": 20})
    assert planned(smoke_copy, config) == {"fit": 1, "database": 1, "report": 1, "all": 1}


def test_changing_the_tasks_reevaluates_and_refits_but_retrains_nothing(smoke_copy):
    config = smoke_config()
    config["downstream"]["tasks"]["word_order"] = {"builtin": "word_order"}
    assert planned(smoke_copy, config) == {"tasks": 1, "evaluate": 6, "collect": 1, "fit": 1, "database": 1,
                                           "report": 1, "all": 1}
    config = smoke_config()
    config["fit"]["downstream_task"] = "spelling"
    assert planned(smoke_copy, config) == {"fit": 1, "database": 1, "report": 1, "all": 1}


def test_changing_the_title_retrains_nothing(smoke_copy):
    config = smoke_config()
    config["title"] = "Another title"
    assert planned(smoke_copy, config) == {"report": 1, "all": 1}


def test_changing_a_training_setting_retrains_every_run(smoke_copy):
    config = smoke_config()
    config["training"]["weight_decay"] = 0.0
    assert planned(smoke_copy, config)["train"] == 6


def test_changing_the_window_rebuilds_the_tasks_their_contexts_fit(smoke_copy):
    config = smoke_config()
    config["training"]["seq_len"] = 32  # the built-in tasks' contexts are cut to fit it
    jobs = planned(smoke_copy, config)
    assert jobs["train"] == 6 and jobs["tasks"] == len(config["downstream"]["tasks"]) and jobs["evaluate"] == 6


@pytest.mark.parametrize("edit, field", [
    (lambda c: c.update(colour="blue"), "colour"),
    (lambda c: c["grid"][1]["token_multipliers"].append(-20), "token_multipliers"),
    (lambda c: c.update(grid=[]), "grid"),
    (lambda c: c["grid"][0]["learning_rates"].append(0), "learning_rates"),
    (lambda c: c["datasets"].update(mine={"source": "files", "files": ["no/such/*.txt"]}), "datasets.mine.files"),
    (lambda c: c["grid"][0]["sizes"].append("huge"), "grid[0].sizes[4]"),
    (lambda c: c["downstream"]["task_sets"]["core"].append("hellaswag"), "downstream.task_sets.core[2]"),
    (lambda c: c["downstream"]["tasks"].update(mine={"path": "no/such.jsonl"}), "downstream.tasks.mine.path"),
    (lambda c: c["downstream"]["tasks"].update(mine={"builtin": "cloze"}), "downstream.tasks.mine.builtin"),
    (lambda c: c["fit"].update(downstream_task="nope"), "fit.downstream_task"),
])
def test_bad_config_fails_before_any_job_runs(tmp_path, edit, field):
    config = smoke_config()
    edit(config)
    proc = snakemake(tmp_path, config, "--dry-run", check=False)
    assert proc.returncode != 0
    assert field in proc.stdout + proc.stderr
    assert not (tmp_path / "results").exists()


def test_a_diverging_run_is_recorded_and_the_workflow_goes_on(tmp_path):
    config = smoke_config()
    config["grid"].append({"sizes": ["l"], "token_multipliers": [20], "learning_rates": [50.0]})
    config["engine"] = {"forkserver": False}  # and every job its own process, as without a job server
    snakemake(tmp_path, config, "--cores", "2")
    assert not (tmp_path / RESULTS / "logs/forkserver.log").exists()
    con = duckdb.connect(str(tmp_path / RESULTS / "scaling.duckdb"), read_only=True)
    status, step = con.execute("SELECT status, diverged_step FROM runs WHERE lr = 50").fetchone()
    assert status == "diverged" and step >= 1
    fit = json.loads((tmp_path / RESULTS / "fit/overtraining.json").read_text())
    assert fit["fits"][0]["n_points"] == 5  # the diverged run is not a point


def test_scaling_sql_reads_the_studys_database_and_refuses_writes(finished_smoke):
    cli = [sys.executable, "-m", "scaling.cli", "sql", "--configfile", "study.yaml"]
    ok = subprocess.run([*cli, "SELECT count(*) AS n FROM runs"], cwd=finished_smoke, capture_output=True, text=True)
    assert ok.returncode == 0 and ok.stdout.split() == ["n", "6"]
    assert ok.stderr == "study 'smoke' (study.yaml): results/smoke/scaling.duckdb\n"
    bad = subprocess.run([*cli, "DELETE FROM runs"], cwd=finished_smoke, capture_output=True, text=True)
    assert bad.returncode != 0 and "read-only" in bad.stderr
    typo = subprocess.run([*cli, "SELECT nope FROM runs"], cwd=finished_smoke, capture_output=True, text=True)
    assert typo.returncode != 0 and "nope" in typo.stderr


def test_scaling_fit_downstream_task_on_the_database_matches_the_fit_stage(finished_smoke):
    db = finished_smoke / RESULTS / "scaling.duckdb"
    cli = [sys.executable, "-m", "scaling.cli", "fit", "downstream", "--data", str(db), "--bootstrap", "0"]
    proc = subprocess.run([*cli, "--task", "core", "--json"], capture_output=True, text=True, cwd=finished_smoke)
    assert proc.returncode == 0, proc.stderr
    error_fit = next(f for f in json.loads(proc.stdout)["fits"] if f["law"] == "downstream")
    con = duckdb.connect(str(db), read_only=True)
    stage = dict(con.execute("SELECT parameter, value FROM parameters WHERE law = 'downstream'").fetchall())
    assert stage.keys() == error_fit["params"].keys() == {"epsilon", "k", "gamma"}
    assert error_fit["params"] == pytest.approx(stage, rel=1e-6)
    proc = subprocess.run([*cli, "--task", "nope"], capture_output=True, text=True, cwd=finished_smoke)
    assert proc.returncode != 0 and "no run has a downstream score for 'nope'" in proc.stderr


def test_a_run_trained_here_on_the_cpu_asks_for_no_gpu(tmp_path):
    from scaling.study.config import has_gpu

    proc = snakemake(tmp_path, smoke_config(), "--dry-run", "--cores", "2")
    rule, jobs, gpus = None, 0, []
    for line in (proc.stdout + proc.stderr).splitlines():
        if line.startswith("rule "):
            rule = line[5:].rstrip(":")
            jobs += rule in ("train", "evaluate")
        elif line.strip().startswith("resources:") and rule in ("train", "evaluate"):
            gpus.append(line.split("gpu=")[1].split(",")[0] if "gpu=" in line else None)
    assert jobs == 12 and len(gpus) == jobs  # the smoke study's 6 runs, each trained and scored, each stating its GPUs
    assert set(gpus) == ({"1"} if has_gpu() else {"0"})


def test_runs_are_scored_before_train_jobs_that_wait_for_a_core(tmp_path):
    """Tasks and evaluate jobs outrank every train job, so a run is scored as soon as it has trained, while the
    others train, and the study does not end on all of its scoring at once."""
    proc = snakemake(tmp_path, smoke_config(), "--dry-run", "--cores", "2")
    priority, rule = {}, None
    for line in (proc.stdout + proc.stderr).splitlines():
        if line.startswith(("rule ", "localrule ")):
            rule = line.split()[1].rstrip(":")
            priority.setdefault(rule, []).append(0)  # Snakemake prints a job's priority only when it is not 0
        elif line.strip().startswith("priority:"):
            priority[rule][-1] = int(line.split(":")[1])
    # (export, the third scoring rule, has no job here: the smoke study has no harness task)
    assert len(priority["train"]) == len(priority["evaluate"]) == 6 and len(priority["tasks"]) == 2
    assert min(priority["tasks"] + priority["evaluate"]) > max(priority["train"]) > 0
