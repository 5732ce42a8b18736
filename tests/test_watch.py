"""What a person watching a run sees: the training log's header, and the curve in TensorBoard (engine.tensorboard)."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from scaling.study import config as C
from scaling.study.runs import ConfigError, engine_args
from scaling.train.loop import train
from test_train import data_dir, spec  # noqa: F401  (data_dir is a fixture)


def test_the_training_log_opens_with_a_header_of_the_run_its_budget_and_settings(data_dir, tmp_path):  # noqa: F811
    lines = []
    m = train(spec(), data_dir, tmp_path, log=lines.append)
    run = m["run_id"]
    assert lines[0] == (f"[{run}] run {run}: N = {m['n_params']:,} parameters (d_model 16, n_layers 1, n_heads 2), "
                        f"D = 40,000 tokens (M = 1), {m['steps']:,} steps of 128 tokens, lr 0.003, seed 0")
    assert lines[1] == f"[{run}] device: cpu × 1, 1 thread(s) each, fp32"
    assert json.loads(lines[2].removeprefix(f"[{run}] training: ")) == spec()["training"]
    assert lines[3] == f"[{run}] started: {m['steps']} steps on cpu"


def test_engine_tensorboard_adds_the_flag_and_needs_its_package(monkeypatch):
    config = {"engine": {"checkpoint_every": 10, "keep_checkpoints": False, "compile": True, "tensorboard": True}}
    assert engine_args(config, "results/s")[-2:] == ["--tensorboard", "results/s/tensorboard"]
    config["engine"]["tensorboard"] = False
    assert "--tensorboard" not in engine_args(config, "results/s")
    config["engine"]["tensorboard"] = True
    monkeypatch.setattr(C.importlib.util, "find_spec", lambda name: None)  # as without the optional extra
    with pytest.raises(ConfigError, match=r"engine.tensorboard: .* fix: pip install -e '.\[tensorboard\]'"):
        C.check_engine(config)


def test_the_curve_goes_to_tensorboard_step_by_step_with_the_final_validation_loss(data_dir, tmp_path):  # noqa: F811
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    m = train(spec(), data_dir, tmp_path / "run", log=lambda _: None, tensorboard=tmp_path / "tb")
    events = EventAccumulator(str(tmp_path / "tb" / m["run_id"]), size_guidance={"scalars": 0}).Reload()
    curve = pd.read_parquet(tmp_path / "run" / "curve.parquet")
    loss = events.Scalars("train_loss")
    assert [e.step for e in loss] == list(curve["step"])
    assert [e.value for e in loss] == pytest.approx(list(curve["train_loss"]), rel=1e-6)  # stored as float32
    assert [e.value for e in events.Scalars("lr")] == pytest.approx(list(curve["lr"]), rel=1e-6)
    (val,) = events.Scalars("val_loss")
    assert val.step == m["steps"] and val.value == pytest.approx(m["val_loss"], rel=1e-6)
