import json
import math
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import psutil
import pytest
import torch

from scaling.train import checkpoint
from scaling.data.prepare import load_tokens, prepare
from scaling.train.flops import flops_with_attention
from scaling.train.model import Shape
from scaling.train.preemption import Stopped, stop_signals
from scaling.train.loop import FLUSH_EVERY, batch_starts, train

TRAINING = {"seq_len": 32, "batch_tokens": 128, "schedule": "cosine", "warmup_fraction": 0.1, "min_lr_ratio": 0.1,
            "cooldown_fraction": 0.2, "cooldown_shape": "linear", "ladder": False, "z_loss": 0.0, "qk_layernorm": False,
            "weight_decay": 0.1,
            "beta1": 0.9, "beta2": 0.95, "grad_clip": 1.0, "eval_tokens": 2048, "eval_every": 50,
            "curve_eval_tokens": 512, "divergence_margin": 1.0}
QUIET = {"log": lambda _: None}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(0)
    words = ["the", "cat", "sat", "on", "a", "mat", "and", "dog", "ran", "far"]
    (d / "text.txt").write_text("\n".join(" ".join(rng.choice(words, 12)) + "." for _ in range(3000)))
    prepare({"source": "files", "files": [str(d / "text.txt")], "val_fraction": 0.1}, d / "prepared")
    return d / "prepared"


def spec(lr=3e-3, seed=0, tokens=40_000, **training):
    shape = {"d_model": 16, "n_layers": 1, "n_heads": 2, "ff_ratio": 4.0, "vocab_size": 256, "seq_len": 32,
             "qk_layernorm": training.get("qk_layernorm", False)}
    return {"run_id": f"t/xs/M1_lr{lr}_s{seed}", "dataset": "t", "size": "xs", "token_multiplier": 1.0,
            "tokens": tokens, "lr": lr, "seed": seed, "training": {**TRAINING, **training}, "shape": shape}


def curve(run_dir):
    return pd.read_parquet(run_dir / "curve.parquet")["train_loss"].to_numpy()


def test_a_run_learns_and_writes_its_curve_and_metrics(data_dir, tmp_path):
    m = train(spec(), data_dir, tmp_path, **QUIET)
    c = pd.read_parquet(tmp_path / "curve.parquet")
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["status"] == "ok" and saved["val_loss"] == m["val_loss"]
    assert len(c) == m["steps"] == math.ceil(40_000 / 128)
    assert list(c["step"]) == list(range(1, m["steps"] + 1)) and c["lr"].max() == pytest.approx(3e-3, rel=0.01)
    assert m["val_loss"] < m["initial_loss"] - 1.5  # far below log(256) ≈ 5.55 on this tiny language
    assert m["flops"] == 6 * m["n_params"] * m["tokens"]
    assert m["flops_with_attention"] == flops_with_attention(Shape(**spec()["shape"]), m["tokens"])
    assert m["tokens_seen"] == m["steps"] * 128
    assert m["epochs"] == pytest.approx(m["tokens_seen"] / len(load_tokens(data_dir, "train")))
    assert m["tokens_per_s"] > 0 and m["model_flops_per_s"] > 0 and m["mfu"] is None  # no GPU peak on CPU
    assert not list(tmp_path.glob(".*.tmp")) and not (tmp_path / "ckpt").exists()


def test_batches_are_a_function_of_seed_and_step():
    a = batch_starts(3, 17, 10_000, 32, 8)
    assert np.array_equal(a, batch_starts(3, 17, 10_000, 32, 8))
    assert not np.array_equal(a, batch_starts(3, 18, 10_000, 32, 8))
    assert not np.array_equal(a, batch_starts(4, 17, 10_000, 32, 8))
    assert a.min() >= 0 and a.max() + 32 < 10_000


def test_same_seed_same_curve_and_other_seed_another(data_dir, tmp_path):
    curves = []
    for i, seed in enumerate((1, 1, 2)):
        train(spec(seed=seed, tokens=8000), data_dir, tmp_path / str(i), **QUIET)
        curves.append(curve(tmp_path / str(i)))
    assert np.array_equal(curves[0], curves[1])
    assert not np.array_equal(curves[0], curves[2])


def test_stabilizers_change_the_run_and_it_still_learns(data_dir, tmp_path):
    base = train(spec(tokens=8000), data_dir, tmp_path / "base", **QUIET)
    stable = train(spec(tokens=8000, z_loss=1e-4, qk_layernorm=True, schedule="wsd"), data_dir, tmp_path / "s", **QUIET)
    assert stable["n_params"] == base["n_params"] + 4 * 8  # two LayerNorms over a head of width 8
    assert stable["qk_layernorm"] and not base["qk_layernorm"]
    assert stable["val_loss"] < stable["initial_loss"] - 1.0
    lr = pd.read_parquet(tmp_path / "s" / "curve.parquet")["lr"]
    assert lr.iloc[len(lr) // 2] == pytest.approx(3e-3)  # wsd: still at the peak half way


def test_a_diverging_run_stops_early_and_says_so(data_dir, tmp_path):
    m = train(spec(lr=100.0), data_dir, tmp_path, **QUIET)
    assert m["status"] == "diverged"
    assert m["diverged_step"] < m["steps"]
    assert math.isnan(m["val_loss"])
    c = curve(tmp_path)
    assert len(c) == m["diverged_step"]
    assert not np.isfinite(c[-1]) or c[-1] > c[0] + 1.0


def cli_train(sp, data_dir, out, *flags, processes=1):
    """``scaling train`` in a subprocess (under torchrun when more than one process)."""
    torchrun = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes)]
    return subprocess.Popen([sys.executable, *(torchrun if processes > 1 else []), "-m", "scaling.cli", "train",
                             "--spec", json.dumps(sp), "--data", str(data_dir), "--out", str(out), *flags],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            # Ctrl-C reaches it as from a terminal, even if these tests were started with SIGINT ignored
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def wait_for_checkpoint(proc, out):
    """Wait until the run in ``proc`` has written its first checkpoint; fail if it ended first."""
    deadline = time.monotonic() + 120
    while not checkpoint.path(out).exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.001)
    assert proc.poll() is None, "the run ended before its first checkpoint: make it longer"


@pytest.mark.slow
def test_a_run_killed_mid_way_resumes_to_exactly_the_uninterrupted_losses(data_dir, tmp_path):
    sp = spec(tokens=128 * 600)
    reference = train(sp, data_dir, tmp_path / "reference", **QUIET)

    out = tmp_path / "killed"
    proc = cli_train(sp, data_dir, out, "--checkpoint-every", "50")
    ckpt = checkpoint.path(out)
    wait_for_checkpoint(proc, out)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = torch.load(ckpt, weights_only=True)["step"]
    assert 0 < killed_at < reference["steps"] and not (out / "metrics.json").exists()

    proc = cli_train(sp, data_dir, out, "--checkpoint-every", "50")
    log = proc.communicate(timeout=300)[0]
    assert proc.returncode == 0, log
    assert f"resumed from its checkpoint at step {killed_at}/" in log
    resumed = json.loads((out / "metrics.json").read_text())
    assert np.array_equal(curve(out), curve(tmp_path / "reference"))  # bit for bit
    assert resumed["val_loss"] == reference["val_loss"] and resumed["resumed_from_step"] == killed_at
    assert not ckpt.parent.exists()  # a finished run's checkpoint is removed unless kept


@pytest.mark.slow
def test_a_second_process_told_to_train_a_run_in_progress_stops_and_names_the_first(data_dir, tmp_path):
    sp = spec(tokens=128 * 100_000)  # minutes: it is still training when the second process has come and gone
    first = cli_train(sp, data_dir, tmp_path, "--checkpoint-every", "50")
    wait_for_checkpoint(first, tmp_path)
    second = cli_train(sp, data_dir, tmp_path, "--checkpoint-every", "50")
    log = second.communicate(timeout=120)[0]
    assert second.returncode == 1 and "another process (" in log and f"pid {first.pid}) is training this run" in log
    assert first.poll() is None  # undisturbed
    first.send_signal(signal.SIGTERM)
    assert "SIGTERM: checkpointed at step" in first.communicate(timeout=60)[0]


@pytest.fixture(scope="module")
def long_run(data_dir, tmp_path_factory):
    """A run of 2,000 steps (a few seconds) trained without interruption: its spec and directory."""
    sp = spec(tokens=128 * 2000)
    out = tmp_path_factory.mktemp("uninterrupted")
    train(sp, data_dir, out, **QUIET)
    return sp, out


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGUSR2, signal.SIGINT], ids=lambda s: s.name)
def test_a_signalled_run_checkpoints_the_step_in_progress_and_resumes_to_the_same_losses(data_dir, long_run,
                                                                                          tmp_path, sig):
    sp, reference = long_run
    passed = int(np.random.default_rng(int(sig)).integers(1000, 1500))  # its only periodic checkpoint
    out = tmp_path / "signalled"
    proc = cli_train(sp, data_dir, out, "--checkpoint-every", str(passed))
    wait_for_checkpoint(proc, out)  # the run has passed step `passed`
    proc.send_signal(sig)
    log = proc.communicate(timeout=120)[0]
    assert proc.returncode == 128 + sig, log
    stopped_at = torch.load(checkpoint.path(out), weights_only=True)["step"]
    # the step in progress when the signal came is kept: no step is lost
    assert torch.load(checkpoint.previous_path(out), weights_only=True)["step"] == passed < stopped_at < 2000
    assert f"{sig.name}: checkpointed at step {stopped_at}/2000" in log
    assert not (out / "metrics.json").exists()

    proc = cli_train(sp, data_dir, out, "--checkpoint-every", str(passed))
    log = proc.communicate(timeout=300)[0]
    assert proc.returncode == 0, log
    earlier, this = log.split("=== this attempt ===")
    assert f"{sig.name}: checkpointed at step {stopped_at}/2000" in earlier  # the earlier attempt's lines, replayed
    assert f"resumed from its checkpoint at step {stopped_at}/2000" in this
    assert np.array_equal(curve(out), curve(reference))  # bit for bit
    resumed, uninterrupted = (json.loads((d / "metrics.json").read_text()) for d in (out, reference))
    assert resumed["val_loss"] == uninterrupted["val_loss"] and resumed["resumed_from_step"] == stopped_at


def test_a_first_ctrl_c_is_recorded_and_a_second_interrupts_at_once():
    # as at a terminal, even if these tests were started with SIGINT ignored
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with stop_signals() as signalled:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.01)  # the handler runs between bytecodes
            assert signalled() == signal.SIGINT
            with pytest.raises(KeyboardInterrupt):
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(1)
    finally:
        signal.signal(signal.SIGINT, previous)


def test_a_run_stops_after_the_step_in_progress_when_signalled(data_dir, tmp_path):
    def signalled() -> int:  # SIGTERM from the moment the checkpoint of step 40 exists (a real signal: the test above)
        return signal.SIGTERM if checkpoint.path(tmp_path).exists() else 0

    with pytest.raises(Stopped) as stopped:
        train(spec(tokens=8000), data_dir, tmp_path, checkpoint_every=40, signalled=signalled, **QUIET)
    assert stopped.value.exit_status == 128 + signal.SIGTERM
    assert torch.load(checkpoint.path(tmp_path), weights_only=True)["step"] == 41  # not at the next loss read
    assert not (tmp_path / "metrics.json").exists()


@pytest.mark.parametrize("truncated", [["last"], ["last", "prev"]])
def test_an_unreadable_checkpoint_falls_back_to_the_previous_one_or_starts_over(data_dir, tmp_path, truncated):
    sp = spec(tokens=8000)
    first = train(sp, data_dir, tmp_path / "first", checkpoint_every=20, **QUIET)
    out = tmp_path / "run"
    train(sp, data_dir, out, checkpoint_every=20, keep_checkpoints=True, **QUIET)  # last: the final step; prev: 60
    (out / "metrics.json").unlink()
    for name in truncated:
        p = out / "ckpt" / f"{name}.pt"
        p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
    lines = []
    again = train(sp, data_dir, out, log=lines.append)
    assert any(f"checkpoint {out / 'ckpt' / 'last.pt'} is unreadable" in line for line in lines)
    if truncated == ["last"]:
        assert any("falling back to the previous checkpoint" in line for line in lines)
        assert again["resumed_from_step"] == 60
    else:
        assert any("no readable checkpoint: starting over" in line for line in lines)
        assert again["resumed_from_step"] is None
    assert np.array_equal(curve(out), curve(tmp_path / "first")) and again["val_loss"] == first["val_loss"]


def test_a_kept_checkpoint_makes_a_rerun_reproduce_the_run_without_training(data_dir, tmp_path):
    sp = spec(tokens=8000)
    first = train(sp, data_dir, tmp_path, checkpoint_every=20, keep_checkpoints=True, **QUIET)
    assert torch.load(checkpoint.path(tmp_path), weights_only=True)["step"] == first["steps"]
    (tmp_path / "metrics.json").unlink()
    lines = []
    again = train(sp, data_dir, tmp_path, keep_checkpoints=True, log=lines.append)
    assert any(f"at step {first['steps']}/{first['steps']}" in line for line in lines)
    assert again["val_loss"] == first["val_loss"] and again["final_train_loss"] == first["final_train_loss"]


def test_a_checkpoint_of_another_spec_is_not_resumed_from(data_dir, tmp_path):
    train(spec(tokens=8000, weight_decay=0.0), data_dir, tmp_path, keep_checkpoints=True, **QUIET)
    lines = []
    m = train(spec(tokens=8000), data_dir, tmp_path, log=lines.append)
    assert not any("resumed" in line for line in lines) and m["resumed_from_step"] is None
    assert np.array_equal(curve(tmp_path), curve_of(spec(tokens=8000), data_dir, tmp_path / "fresh"))


def curve_of(sp, data_dir, out):
    train(sp, data_dir, out, **QUIET)
    return curve(out)


@pytest.mark.slow
def test_ddp_over_two_cpu_processes_trains_on_the_same_batches_as_one(data_dir, tmp_path):
    sp = spec(tokens=128 * 60)
    single = curve_of(sp, data_dir, tmp_path / "one")
    proc = cli_train(sp, data_dir, tmp_path / "two", processes=2)
    log = proc.communicate(timeout=300)[0]
    assert proc.returncode == 0, log
    metrics = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert metrics["world_size"] == 2
    two = curve(tmp_path / "two")
    # the same data and gradients; only the order of floating-point sums differs
    assert len(two) == len(single) and np.allclose(two, single, rtol=1e-5, atol=0)


def test_a_run_trains_on_bpe_tokens_with_the_vocabulary_in_its_shape(data_dir, tmp_path):
    prepare({"source": "files", "files": [str(data_dir.parent / "text.txt")], "val_fraction": 0.1,
             "tokenizer": "bpe", "vocab_size": 300}, tmp_path / "bpe")
    sp = spec(tokens=8000)
    sp["shape"]["vocab_size"] = 300
    m = train(sp, tmp_path / "bpe", tmp_path / "run", **QUIET)
    assert m["status"] == "ok" and m["vocab_size"] == 300
    assert m["initial_loss"] == pytest.approx(math.log(300), abs=0.2)
    assert m["val_loss"] < m["initial_loss"] - 1.0


@pytest.mark.slow
def test_ddp_processes_stop_at_the_same_step_when_one_is_signalled(data_dir, tmp_path):
    sp = spec(tokens=128 * 600)
    proc = cli_train(sp, data_dir, tmp_path / "reference", processes=2)
    log = proc.communicate(timeout=300)[0]
    assert proc.returncode == 0, log
    passed = int(np.random.default_rng(2).integers(200, 400))
    out = tmp_path / "two"
    proc = cli_train(sp, data_dir, out, "--checkpoint-every", str(passed), processes=2)
    wait_for_checkpoint(proc, out)
    rank1 = [p for p in psutil.Process(proc.pid).children() if p.environ().get("RANK") == "1"]
    rank1[0].send_signal(signal.SIGTERM)  # rank 0 never gets it: the processes agree at the next loss read
    log = proc.communicate(timeout=300)[0]
    assert proc.returncode != 0 and "exitcode  : 143" in log, log
    stopped_at = torch.load(checkpoint.path(out), weights_only=True)["step"]
    assert stopped_at > passed and (stopped_at - passed) % FLUSH_EVERY == 0
    assert f"SIGTERM: checkpointed at step {stopped_at}/600" in log

    proc = cli_train(sp, data_dir, out, "--checkpoint-every", str(passed), processes=2)
    log = proc.communicate(timeout=300)[0]
    assert proc.returncode == 0, log
    assert f"resumed from its checkpoint at step {stopped_at}/600" in log
    assert np.array_equal(curve(out), curve(tmp_path / "reference"))


def test_the_curve_has_a_validation_loss_every_eval_every_steps(data_dir, tmp_path):
    m = train(spec(tokens=128 * 200), data_dir, tmp_path, **QUIET)
    c = pd.read_parquet(tmp_path / "curve.parquet")
    evaluated = c.dropna(subset="val_loss")
    assert list(evaluated["step"]) == [50, 100, 150, 200]
    assert pq.read_table(tmp_path / "curve.parquet").column("val_loss").null_count == 200 - 4  # null, not NaN
    assert evaluated["val_loss"].is_monotonic_decreasing
    assert evaluated["val_loss"].iloc[-1] == pytest.approx(m["val_loss"], abs=0.1)  # fewer tokens than the final one
