"""The train stage inside the workflow: a crashed job resumes when Snakemake reruns it; engine settings retrain nothing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import numpy as np
import pandas as pd
import psutil
import pytest
import torch
from snakemake.utils import validate

from conftest import REPO, SNAKEMAKE, planned, smoke_config, snakemake
from scaling.train import checkpoint
from scaling.study import runs as study
from scaling.train.loop import train

pytestmark = pytest.mark.workflow

RUN = "results/smoke/runs/bible/xs/M40_lr0.01_s0"


def test_changing_engine_settings_retrains_nothing(smoke_copy):
    config = smoke_config()
    config["engine"] = {"checkpoint_every": 7, "keep_checkpoints": True, "compile": False}
    assert planned(smoke_copy, config) == {}


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM, signal.SIGINT], ids=lambda s: s.name)
def test_a_train_job_killed_or_stopped_mid_run_resumes_when_snakemake_reruns_it(tmp_path, sig):
    config = smoke_config()
    config["engine"] = {"checkpoint_every": 100}
    (tmp_path / "study.yaml").write_text(json.dumps(config))
    smk = subprocess.Popen([*SNAKEMAKE, "--configfile", "study.yaml", "--cores", "1", f"{RUN}/metrics.json"],
                           cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                           preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    ckpt = checkpoint.path(tmp_path / RUN)
    deadline = time.monotonic() + 300
    while not ckpt.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    # the process that trains, as its lock names it: forked by the study's job server (scaling.forkserver)
    trainer = int((ckpt.parent / "lock").read_text().split(" pid ")[1])
    assert psutil.pid_exists(trainer), "the train job ended before its first checkpoint: make it longer"
    # SIGKILL: the trainer crashes; SIGTERM: it checkpoints the step in progress and stops. Either way the job fails.
    # SIGINT goes to Snakemake and its jobs together, as Ctrl-C at the terminal sends it: the same stop.
    if sig == signal.SIGINT:
        os.killpg(smk.pid, sig)
    else:
        os.kill(trainer, sig)
    assert smk.wait(timeout=120) != 0
    assert ckpt.exists() and not (tmp_path / RUN / "metrics.json").exists()
    killed_at = torch.load(ckpt, weights_only=True)["step"]
    assert killed_at % 100 == 0 if sig == signal.SIGKILL else killed_at > 100  # a periodic one, or the stop's

    snakemake(tmp_path, config, "--cores", "1", f"{RUN}/metrics.json")
    log = (tmp_path / "results/smoke/logs/train/bible/xs/M40_lr0.01_s0.log").read_text()
    earlier, this = log.split("=== this attempt ===")  # Snakemake deleted the log; the trainer replayed its lines
    assert "started: " in earlier
    if sig != signal.SIGKILL:
        assert f"{sig.name}: checkpointed at step {killed_at}/" in earlier
    assert f"resumed from its checkpoint at step {killed_at}/" in this
    metrics = json.loads((tmp_path / RUN / "metrics.json").read_text())
    assert metrics["status"] == "ok" and metrics["resumed_from_step"] == killed_at
    assert not ckpt.parent.exists()

    fresh = train(_spec(config), tmp_path / "results/smoke/data/bible", tmp_path / "fresh", log=lambda _: None)
    assert np.array_equal(pd.read_parquet(tmp_path / RUN / "curve.parquet")["train_loss"],
                          pd.read_parquet(tmp_path / "fresh" / "curve.parquet")["train_loss"])
    assert fresh["val_loss"] == metrics["val_loss"]


def _spec(config: dict) -> dict:
    """The spec of RUN, the one run trained (the smoke study's other runs are not asked for), as the workflow
    computes it (schema defaults filled)."""
    config = json.loads(json.dumps(config))
    validate(config, str(REPO / "workflow/schemas/config.schema.yaml"))
    return study.run_spec(config, next(r for r in study.runs(config) if f"results/smoke/runs/{r.id}" == RUN))


@pytest.mark.parametrize("edit, message", [
    (lambda c: c["training"].update(schedule="exponential"), "training.schedule: 'exponential' is not one of"),
    (lambda c: c["training"].update(batch_size=8), "training.batch_size: unknown key; fix: remove it, or use one of"),
    (lambda c: c["training"].update(batch_tokens=100), "training.batch_tokens: 100 is not a multiple of seq_len=64"),
    (lambda c: c["models"].append({"name": "big", "params": 10}), "models[4] (big).params"),
    (lambda c: c.update(engine={"checkpoint_every": 0}), "engine.checkpoint_every"),
])
def test_bad_training_settings_fail_before_any_job_runs(tmp_path, edit, message):
    config = smoke_config()
    edit(config)
    proc = snakemake(tmp_path, config, "--dry-run", check=False)
    assert proc.returncode != 0 and message in proc.stdout + proc.stderr
    assert not (tmp_path / "results").exists()
