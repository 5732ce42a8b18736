"""lm-evaluation-harness tasks in a study (scaling.evaluate.harness): checked before any job, scored offline.

The task of tests/data/harness is in the harness's own YAML format, and its documents are in the project's JSONL
task format too, so the same examples are scored by the harness (on the run's transformers export) and by the
built-in scorer (on model.pt): on byte-level runs and ASCII text the two must agree exactly.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from scaling.study import runs as S
from scaling.study.config import load

from conftest import REPO, planned, smoke_config, snakemake
from test_export import make_run
from scaling.train.model import Shape

TASKS = REPO / "tests" / "data" / "harness"
JSONL = TASKS / "tiny_choice.jsonl"


def harness_study(tmp: Path, **task) -> Path:
    config = smoke_config()
    config["downstream"]["tasks"]["tiny"] = {"harness": "tiny_choice", "include": str(TASKS), **task}
    path = tmp / "study.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def task_yaml(tmp: Path, **changes) -> Path:
    """A copy of the test task's YAML in its own directory, with ``changes`` (None removes a key)."""
    cfg = yaml.safe_load((TASKS / "tiny_choice.yaml").read_text())
    cfg["dataset_kwargs"]["data_files"]["test"] = str(JSONL)
    cfg.update(changes)
    (tmp / "tasks").mkdir()
    (tmp / "tasks" / "t.yaml").write_text(yaml.safe_dump({k: v for k, v in cfg.items() if v is not None}))
    return tmp / "tasks"


@pytest.fixture(autouse=True)
def in_the_repository(monkeypatch):
    monkeypatch.chdir(REPO)  # the task's data_files are relative to the directory snakemake runs in


def test_a_harness_task_is_accepted_and_passed_to_the_evaluate_rule(tmp_path):
    config = load([harness_study(tmp_path, metric="acc")])
    assert S.task_files(config, "results/smoke", "bible")["tiny"] == {"harness": "tiny_choice", "include": str(TASKS),
                                                                       "metric": "acc"}
    assert S.harness_files(config) == sorted(str(p) for p in TASKS.iterdir())


@pytest.mark.parametrize("task, field, message", [
    ({"harness": "hellaswag"}, "downstream.tasks.tiny.harness", "no task 'hellaswag' in the task YAML files of"),
    ({"include": "no/such/dir"}, "downstream.tasks.tiny.harness", "no directory 'no/such/dir'"),
    ({"metric": "acc", "include": None}, "downstream.tasks.tiny", "`harness` (the task's name) and `include`"),
    ({"path": str(JSONL)}, "downstream.tasks.tiny", "give exactly one of"),
    ({"harness": "../x"}, "downstream.tasks.tiny.harness", "does not match"),
    ({"include": "."}, "downstream.tasks.tiny.include", "every file under it would become an input"),
    ({"include": ".."}, "downstream.tasks.tiny.include", "one above it"),
    ({"include": "results/smoke"}, "downstream.tasks.tiny.include", "in `results/`"),
    ({"include": ".venv"}, "downstream.tasks.tiny.include", "hidden"),
])
def test_a_bad_harness_task_is_named_with_the_fix(tmp_path, task, field, message):
    path = harness_study(tmp_path, **task)
    config = yaml.safe_load(path.read_text())
    config["downstream"]["tasks"]["tiny"] = {k: v for k, v in config["downstream"]["tasks"]["tiny"].items()
                                             if v is not None}
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(S.ConfigError) as e:
        load([path])
    assert str(e.value).startswith(field) and message in str(e.value) and "fix:" in str(e.value), str(e.value)
    if "hellaswag" in message:
        assert "tasks there: ['tiny_choice']" in str(e.value)


@pytest.mark.parametrize("changes, message", [
    ({"dataset_path": "Rowan/hellaswag", "dataset_kwargs": None}, "nothing is downloaded"),
    ({"dataset_kwargs": {"data_files": {"test": "no/such.jsonl"}}}, "'no/such.jsonl' matches no file"),
    ({"output_type": "generate_until"}, "use a multiple_choice task"),
    ({"metric_list": [{"metric": "acc"}]}, "not acc_norm"),
])
def test_a_harness_task_that_would_download_or_gives_no_accuracy_is_refused(tmp_path, changes, message):
    with pytest.raises(S.ConfigError) as e:
        load([harness_study(tmp_path, include=str(task_yaml(tmp_path, **changes)))])
    assert str(e.value).startswith("downstream.tasks.tiny.harness: task 'tiny_choice'") and message in str(e.value)


def test_runs_without_a_transformers_export_or_the_harness_installed_are_refused(tmp_path, monkeypatch):
    config = smoke_config()
    config["training"]["qk_layernorm"] = True
    config["downstream"]["tasks"]["tiny"] = {"harness": "tiny_choice", "include": str(TASKS)}
    (tmp_path / "qk.yaml").write_text(yaml.safe_dump(config))
    with pytest.raises(S.ConfigError, match=r"^downstream\.tasks\.tiny\.harness: .* training\.qk_layernorm .* fix:"):
        load([tmp_path / "qk.yaml"])
    monkeypatch.setitem(sys.modules, "lm_eval.tasks", None)  # as if the harness extra were not installed
    with pytest.raises(S.ConfigError, match=r"harness: lm-evaluation-harness is not installed; fix: pip install -e "
                                            r"\"\.\[harness\]\""):
        load([harness_study(tmp_path)])


@pytest.mark.workflow
def test_snakemake_stops_on_an_unknown_harness_task_before_any_job(tmp_path):
    config = smoke_config()
    config["downstream"]["tasks"]["tiny"] = {"harness": "tiny_choise", "include": str(TASKS)}
    proc = snakemake(tmp_path, config, "--dry-run", check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "error in the study: downstream.tasks.tiny.harness: no task 'tiny_choise'" in out
    assert "Job stats" not in out and not (tmp_path / "results").exists()


@pytest.mark.slow
def test_the_harness_scores_a_run_offline_as_the_built_in_scorer_does(tmp_path):
    run, _ = make_run(tmp_path, Shape(d_model=32, n_layers=2, n_heads=4, seq_len=64))
    (run / "metrics.json").write_text(json.dumps({"run_id": "bible/xs/M20_lr0.01_s0", "status": "ok"}))
    tasks = {"ours": {"path": str(JSONL), "metric": "acc"},
             "theirs": {"harness": "tiny_choice", "include": str(TASKS), "metric": "acc"}}
    home = tmp_path / "home"
    home.mkdir()
    env = {**os.environ, "HOME": str(home), "XDG_CACHE_HOME": str(home / ".cache")}
    for key in ("HF_HOME", "HF_DATASETS_CACHE", "HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        env.pop(key, None)
    cmd = [sys.executable, "-m", "scaling.cli", "evaluate", "--run", str(run),
           "--data", str(run.parents[3] / "data/bible"), "--tasks", json.dumps(tasks),
           "--task-sets", json.dumps({"both": ["ours", "theirs"]}), "--batch-size", "8"]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    assert proc.returncode == 1 and "fix: give its directory (scaling export" in proc.stderr  # no export, no harness
    subprocess.run([sys.executable, "-m", "scaling.cli", "export", str(run), str(run / "hf")], cwd=REPO, env=env,
                   check=True, capture_output=True)
    proc = subprocess.run([*cmd, "--hf", str(run / "hf")], cwd=REPO, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    out = json.loads((run / "downstream.json").read_text())["tasks"]
    assert out["theirs"] == out["ours"]  # acc, acc_norm (ASCII: per character = per byte), n, baseline
    assert out["ours"]["n_examples"] == 20 and 0.25 < out["ours"]["random_baseline_accuracy"] < 0.5
    assert not list(home.rglob("*")) and not list(run.glob(".harness*"))  # no cache outside the run, none left


@pytest.mark.workflow
def test_a_study_with_a_harness_task_gets_its_rows_in_the_downstream_table(smoke_copy):
    out = snakemake(smoke_copy, smoke_config(), "--dry-run", "exports").stdout  # the target, without harness tasks
    assert re.search(r"^export\s+6\s*$", out, re.M) and not re.search(r"^(train|evaluate)\s", out, re.M), out
    shutil.copytree(TASKS, smoke_copy / "tests" / "data" / "harness")
    config = smoke_config()
    config["downstream"]["tasks"].update(tiny={"harness": "tiny_choice", "include": "tests/data/harness"},
                                         same={"path": "tests/data/harness/tiny_choice.jsonl"})
    jobs = planned(smoke_copy, config)
    assert jobs.get("train") is None and jobs["export"] == jobs["evaluate"] == 6
    snakemake(smoke_copy, config, "--cores", "2")
    rows = pd.read_parquet(smoke_copy / "results/smoke/tables/downstream.parquet").set_index(["run_id", "task"])
    tiny, same = rows.xs("tiny", level="task"), rows.xs("same", level="task")
    assert len(tiny) == 6 and tiny["accuracy"].notna().all() and (tiny["n_examples"] == 20).all()
    columns = ["accuracy", "accuracy_raw", "accuracy_norm", "n_examples", "random_baseline_accuracy"]
    pd.testing.assert_frame_equal(tiny[columns], same[columns])
    assert planned(smoke_copy, config) == {}
    assert all((smoke_copy / "results/smoke/runs" / r.id / "hf/model.safetensors").is_file()
               for r in S.runs(config))
