"""`snakemake --profile slurm` against a real single-node SLURM cluster (started by tests/slurm/start.sh).

The cluster has fake GPUs (gres gpu:2 on the node), so train jobs go through SLURM's GPU
scheduling, while the training inside them runs on the CPU.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import duckdb
import pandas as pd
import pytest
import yaml

from conftest import REPO, smoke_config
from scaling.study import runs as S
from scaling.study.config import load

pytestmark = [pytest.mark.slurm, pytest.mark.workflow]

SLURM_PROFILE = REPO / "profiles" / "slurm"
RUN_JOB = "smk-run"  # a run's train and evaluate jobs, one SLURM job (the profile's group `run`)


@pytest.fixture(scope="session")
def slurm():
    """A running local SLURM cluster (installed and started on first use; idempotent)."""
    proc = subprocess.run(["bash", str(REPO / "tests" / "slurm" / "start.sh")], capture_output=True, text=True)
    assert proc.returncode == 0, f"could not start the local SLURM cluster:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def snakemake_slurm(workdir: Path, config: dict, *args: str, background: bool = False):
    (workdir / "study.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--profile", str(SLURM_PROFILE),
           "--configfile", str(workdir / "study.yaml"), "--seconds-between-status-checks", "2", *args]
    if background:  # Ctrl-C must reach it as from a terminal, even if these tests were started with SIGINT ignored
        return subprocess.Popen(cmd, cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    return subprocess.run(cmd, cwd=workdir, capture_output=True, text=True)


def sacct(since: str, fields: str = "JobID,JobName%30,State,AllocTRES%60") -> list[dict]:
    out = subprocess.run(["sacct", "-X", "-P", "-n", "-S", since, "-o", fields], capture_output=True, text=True,
                         check=True).stdout
    keys = [f.split("%")[0] for f in fields.split(",")]
    return [dict(zip(keys, line.split("|"))) for line in out.splitlines() if line]


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S")


def test_smoke_study_runs_as_slurm_gpu_jobs(slurm, tmp_path):
    since = now()
    proc = snakemake_slurm(tmp_path, smoke_config())
    assert proc.returncode == 0, proc.stdout + proc.stderr
    con = duckdb.connect(str(tmp_path / "results/smoke/scaling.duckdb"), read_only=True)
    assert con.execute("SELECT count(*) FROM runs WHERE status = 'ok'").fetchone()[0] == 6
    jobs = sacct(since)
    runs = [j for j in jobs if j["JobName"] == RUN_JOB]  # each run trained and scored in one GPU job
    assert len(runs) == 6 and all(j["State"] == "COMPLETED" and "gres/gpu=1" in j["AllocTRES"] for j in runs)
    assert all("_" in j["JobID"] for j in runs)  # submitted as a job array
    assert not [j for j in jobs if j["JobName"] in ("smk-train", "smk-evaluate")]
    assert con.execute("SELECT count(DISTINCT run_id) FROM downstream").fetchone()[0] == 6
    local = ("smk-study", "smk-tasks", "smk-collect", "smk-fit", "smk-report")
    assert not [j for j in jobs if j["JobName"] in local]  # local rules


def test_a_failing_job_reports_its_log_and_the_others_complete(slurm, tmp_path):
    """A job that fails on the cluster (its dataset's token ids lie outside the vocabulary it declares: found when
    the data is prepared, since checking every token before submission would read every corpus at every start)."""
    import numpy as np

    np.save(tmp_path / "train.npy", np.arange(5000) % 300)  # ids up to 299, in a vocabulary of 256
    np.save(tmp_path / "val.npy", np.arange(500) % 200)
    config = smoke_config()
    config["downstream"] = {"tasks": {}, "task_sets": {}}  # built-in tasks need text; these are tokens
    config["datasets"]["tiny"] = {"source": "tokens", "train": str(tmp_path / "train.npy"),
                                  "val": str(tmp_path / "val.npy"), "vocab_size": 256}
    config["grid"].append({"datasets": ["tiny"], "sizes": ["xs"], "token_multipliers": [20], "learning_rates": [0.01]})
    proc = snakemake_slurm(tmp_path, config)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "outside the vocabulary [0, 256)" in out  # the job's own error, from the tail of its log
    assert "job log: " in out and "prepare" in out
    done = sorted(p.parent.name for p in (tmp_path / "results/smoke/runs/bible").glob("*/*/metrics.json"))
    assert len(done) == 6


@pytest.mark.parametrize("resources, message", [  # a run's train and evaluate jobs are one job: one partition
    (["train:slurm_partition=nosuchpartition", "evaluate:slurm_partition=nosuchpartition"], "invalid partition"),
    (["train:gpu=8"], "Requested node configuration is not available"),
])
def test_a_resource_slurm_rejects_is_reported_at_submission(slurm, tmp_path, resources, message):
    start = time.monotonic()
    proc = snakemake_slurm(tmp_path, smoke_config(), "--set-resources", *resources)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "SLURM refused the job" in out and message.lower() in out.lower()
    assert time.monotonic() - start < 120  # reported, not a hang


def test_cancelling_the_workflow_cancels_its_slurm_jobs(slurm, tmp_path):
    config = smoke_config()
    config["grid"][0]["token_multipliers"] = [2000]  # long runs
    config["fit"]["fit_on"] = [{"token_multiplier": [10, 40, 2000]}]  # six points: a fit set the loader accepts
    proc = snakemake_slurm(tmp_path, config, background=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not _queued(RUN_JOB):
        time.sleep(1)
    assert _queued(RUN_JOB), "no run's job reached the queue"
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=120)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and _queued(RUN_JOB):
        time.sleep(1)
    assert not _queued(RUN_JOB)


def _queued(name: str) -> list[str]:
    out = subprocess.run(["squeue", "-h", "-o", "%i %j"], capture_output=True, text=True, check=True).stdout
    return [line for line in out.splitlines() if line.split()[1:] == [name]]


ONE_RUN = "results/smoke/runs/bible/l/M40_lr0.01_s0"


def one_long_run(**cluster) -> dict:
    """The smoke study with one run long enough (2,790 steps, ~45 s here) to be interrupted, checkpointing often."""
    config = smoke_config()
    # the smoke grid stays planned (a fit set the loader accepts); only ONE_RUN is asked for
    config["grid"].append({"sizes": ["l"], "token_multipliers": [40], "learning_rates": [0.01]})
    config["engine"] = {"checkpoint_every": 100}
    config["cluster"] = cluster
    return config


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> tuple[dict, list]:
    """ONE_RUN of :func:`one_long_run` trained locally without interruption: its metrics and curve."""
    local = tmp_path_factory.mktemp("uninterrupted")
    (local / "study.yaml").write_text(yaml.safe_dump(one_long_run(), sort_keys=False))
    subprocess.run([sys.executable, "-m", "snakemake", f"{ONE_RUN}/metrics.json", "--snakefile", str(REPO / "Snakefile"),
                    "--cores", "1", "--configfile", str(local / "study.yaml")],
                   cwd=local, check=True, capture_output=True)
    return _run(local)


def _run(workdir: Path) -> tuple[dict, list]:
    import pandas as pd

    metrics = json.loads((workdir / ONE_RUN / "metrics.json").read_text())
    return metrics, pd.read_parquet(workdir / ONE_RUN / "curve.parquet")["train_loss"].tolist()


def _job_field(job_id: str, field: str) -> str:
    out = subprocess.run(["scontrol", "show", "job", job_id], capture_output=True, text=True).stdout
    return out.split(f" {field}=")[1].split()[0]


def _restarts(job_id: str) -> int:
    return int(_job_field(job_id, "Restarts"))


def _logged_step(log: Path) -> int:
    """The step of the training log's last progress line (0 before the first)."""
    steps = re.findall(r"\] step (\d+)/", log.read_text()) if log.exists() else []
    return int(steps[-1]) if steps else 0


@pytest.mark.parametrize("preempt", [
    ["scancel", "--signal=USR2"],  # SLURM's warning signal: submitit stops the command and requeues the job
    ["scontrol", "requeue"],  # SLURM requeues the job itself: SIGTERM to every process, SIGKILL KillWait s later
])
def test_a_preempted_job_is_requeued_and_resumes_to_the_same_result_losing_no_step(slurm, tmp_path, preempt,
                                                                                   uninterrupted):
    config = one_long_run()
    config["engine"] = {"checkpoint_every": 1_000_000}  # none on schedule: a checkpoint can only be the preemption's
    slurm_dir = tmp_path / "slurm"
    slurm_dir.mkdir()
    proc = snakemake_slurm(slurm_dir, config, f"{ONE_RUN}/metrics.json", background=True)
    log = slurm_dir / "results/smoke/logs/train/bible/l/M40_lr0.01_s0.log"
    passed = random.Random(" ".join(preempt)).randrange(300, 1000)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not (_logged_step(log) >= passed and _queued(RUN_JOB)):
        time.sleep(0.1)
    reached = _logged_step(log)
    assert reached >= passed, "the run never got that far"
    job_id = _queued(RUN_JOB)[0].split()[0]
    signalled = time.time()
    subprocess.run([*preempt, job_id], check=True)
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out
    assert _restarts(job_id) >= 1
    if preempt[0] == "scancel":  # the plugin requeues the job once its run has checkpointed, not after its grace
        attempts = subprocess.run(["sacct", "-D", "-X", "-P", "-n", "-j", job_id, "-o", "State,End"],
                                  capture_output=True, text=True, check=True).stdout.splitlines()
        ended = next(datetime.fromisoformat(a.split("|")[1]) for a in attempts if a.startswith("REQUEUED"))
        assert ended.timestamp() - signalled < 30, (attempts, signalled)
    metrics, curve = _run(slurm_dir)
    stopped_at = metrics["resumed_from_step"]
    assert stopped_at and stopped_at >= reached  # the step it had reached when preempted, or a later one
    earlier, this = log.read_text().split("=== this attempt ===")
    assert f"SIGTERM: checkpointed at step {stopped_at}/" in earlier
    assert f"resumed from its checkpoint at step {stopped_at}/" in this
    reference, reference_curve = uninterrupted  # the engine settings change no result
    assert metrics["val_loss"] == reference["val_loss"]
    assert curve == reference_curve


def test_a_job_reaching_its_time_limit_is_warned_requeued_and_completes(slurm, tmp_path):
    # a run of 3–6 min on this machine (M = 320), asked for 10 min: SLURM's warning would come 90 s before that
    config = one_long_run(min_runtime_minutes=10, train_flops_per_second=1e15)
    config["grid"][-1]["token_multipliers"] = [320]
    run = ONE_RUN.replace("M40", "M320")
    proc = snakemake_slurm(tmp_path, config, f"{run}/metrics.json", "--submitit-signal-delay-s", "90",
                           "--submitit-max-requeues", "10", background=True)
    log = tmp_path / "results/smoke/logs/train/bible/l/M320_lr0.01_s0.log"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not (_logged_step(log) > 0 and _queued(RUN_JOB)):
        time.sleep(0.5)
    assert _logged_step(log) > 0, "the run never started training"
    job_id = _queued(RUN_JOB)[0].split()[0]
    # its limit drawn in to 2 min past the minute it is in: the end falls within the warning's 90 s (+ SLURM's up
    # to 60 s early) but after SLURM's next time-limit check, at most a minute away, which sends SIGUSR2 while the
    # run, still far from done (it reported its first step only), trains on
    ran = _job_field(job_id, "RunTime")  # [days-]hours:minutes:seconds
    minutes = int(ran.split(":")[-2]) + 60 * int(ran.split(":")[-3].split("-")[-1])  # under a day
    subprocess.run(["scontrol", "update", f"JobId={job_id}", f"TimeLimit={minutes + 2}"], check=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and _restarts(job_id) < 1:
        time.sleep(0.5)
    assert _restarts(job_id) == 1, "SLURM did not warn the job, or submitit did not requeue it"
    # the requeued job waits before it starts again (tests/slurm: cred_expire); it gets back its 10 minutes
    subprocess.run(["scontrol", "update", f"JobId={job_id}", "TimeLimit=10"], check=True)
    out, _ = proc.communicate(timeout=900)
    assert proc.returncode == 0, out
    metrics = json.loads((tmp_path / run / "metrics.json").read_text())
    assert metrics["status"] == "ok" and metrics["resumed_from_step"] > 0
    assert "SIGTERM: checkpointed at step" in log.read_text()


def test_a_ladder_trains_its_trunk_segments_and_cooldowns_as_slurm_jobs_each_with_its_own_time_limit(slurm, tmp_path):
    config = smoke_config()
    config["training"].update(schedule="wsd", ladder=True, warmup_steps=2)
    # one trunk, five cooldowns: the five (N, M) points the loader asks of a fit set
    config["grid"] = [{"sizes": ["xs"], "token_multipliers": [5, 10, 20, 30, 40], "learning_rates": [0.01]}]
    config["fit"] = {"fit_on": [{"size": "xs"}]}
    config["downstream"] = {}
    study = tmp_path / "study.yaml"
    study.write_text(yaml.safe_dump(config, sort_keys=False))
    specs = S.Specs(load([study]))
    segments, runs = list(S.trunk_segments(specs.config, specs.plans).values()), [specs[r] for r in specs.runs]
    # a throughput that gives the largest job 6 minutes: the others, shorter, get fewer (at least 3)
    config["cluster"] = {"train_flops_per_second": 2.0 * max(map(S.job_flops, segments + runs)) / (6 * 60),
                         "min_runtime_minutes": 3}
    study.write_text(yaml.safe_dump(config, sort_keys=False))
    checked = load([study])
    expect = {"smk-trunk_segment": sorted(S.train_runtime_minutes(checked, s) for s in segments),
              RUN_JOB: sorted(S.train_runtime_minutes(checked, s) for s in runs)}
    assert len(set(expect["smk-trunk_segment"] + expect[RUN_JOB])) > 1  # the limits differ, so the check can fail
    since = now()
    proc = snakemake_slurm(tmp_path, config, "results/smoke/tables/collect.json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    jobs = sacct(since, "JobID,JobName%30,State,Timelimit")
    for name, minutes in expect.items():
        ours = [j for j in jobs if j["JobName"] == name]
        assert all(j["State"] == "COMPLETED" for j in ours), ours
        limits = sorted(int(h) * 60 + int(m) for h, m, _ in (j["Timelimit"].split(":") for j in ours))
        assert limits == minutes, (name, limits, minutes)
    table = pd.read_parquet(tmp_path / "results/smoke/tables/runs.parquet")
    assert set(table["trunk"]) == {"bible/xs/trunk_lr0.01_s0"} and (table["status"] == "ok").all()
    # each job's warning (the profile's 120 s) comes no earlier than half its limit, even 60 s early
    scripts = [p.read_text() for p in tmp_path.glob(".snakemake/submitit/**/*_submission.sh")]
    warned = [(int(re.search(r"--time=(\d+)", t)[1]), int(re.search(r"--signal=USR2@(\d+)", t)[1])) for t in scripts]
    assert len(warned) >= 6 and all(m * 60 - (s + 60) >= m * 30 and s <= 120 for m, s in warned), warned
