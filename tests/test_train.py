import json
import math

import numpy as np
import pandas as pd
import pytest

from scaling.data import prepare
from scaling.train import lr_at, train

TRAINING = {"seq_len": 32, "batch_size": 4, "warmup_fraction": 0.1, "min_lr_ratio": 0.1, "weight_decay": 0.1,
            "beta1": 0.9, "beta2": 0.95, "grad_clip": 1.0, "eval_tokens": 2048, "divergence_margin": 1.0}


def test_schedule_warms_up_linearly_then_decays_by_cosine_to_the_floor():
    peak, steps, warmup = 1e-2, 110, 10
    assert lr_at(0, steps, warmup, peak, 0.1) == pytest.approx(1e-3)
    assert lr_at(9, steps, warmup, peak, 0.1) == pytest.approx(peak)
    assert lr_at(10, steps, warmup, peak, 0.1) == pytest.approx(peak)
    assert lr_at(60, steps, warmup, peak, 0.1) == pytest.approx(peak * (0.1 + 0.9 * 0.5))
    assert lr_at(110, steps, warmup, peak, 0.1) == pytest.approx(peak * 0.1)
    lrs = [lr_at(s, steps, warmup, peak, 0.1) for s in range(warmup, steps)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(0)
    words = ["the", "cat", "sat", "on", "a", "mat", "and", "dog", "ran", "far"]
    (d / "text.txt").write_text("\n".join(" ".join(rng.choice(words, 12)) + "." for _ in range(3000)))
    prepare({"source": "files", "files": [str(d / "text.txt")], "val_fraction": 0.1}, d / "prepared")
    return d / "prepared"


def spec(lr=3e-3, seed=0, tokens=40_000):
    return {"run_id": f"t/xs/M1_lr{lr}_s{seed}", "dataset": "t", "size": "xs", "token_multiplier": 1.0,
            "tokens": tokens, "lr": lr, "seed": seed, "training": TRAINING,
            "shape": {"d_model": 16, "n_layers": 1, "n_heads": 2, "ff_ratio": 4.0, "vocab_size": 256, "seq_len": 32}}


def test_a_run_learns_and_writes_its_curve_and_metrics(data_dir, tmp_path):
    m = train(spec(), data_dir, tmp_path, log=lambda _: None)
    curve = pd.read_parquet(tmp_path / "curve.parquet")
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["status"] == "ok" and saved["val_loss"] == m["val_loss"]
    assert len(curve) == m["steps"] == math.ceil(40_000 / (4 * 32))
    assert list(curve["step"]) == list(range(1, m["steps"] + 1))
    assert m["val_loss"] < m["initial_loss"] - 1.5  # far below log(256) ≈ 5.55 on this tiny language
    assert m["flops"] == 6 * m["n_params"] * m["tokens"]
    assert not list(tmp_path.glob(".*.tmp"))  # atomic writes leave no temp files


def test_same_seed_same_curve_and_other_seed_another(data_dir, tmp_path):
    curves = []
    for i, seed in enumerate((1, 1, 2)):
        train(spec(seed=seed, tokens=8000), data_dir, tmp_path / str(i), log=lambda _: None)
        curves.append(pd.read_parquet(tmp_path / str(i) / "curve.parquet")["train_loss"].to_numpy())
    assert np.array_equal(curves[0], curves[1])
    assert not np.array_equal(curves[0], curves[2])


def test_a_diverging_run_stops_early_and_says_so(data_dir, tmp_path):
    m = train(spec(lr=100.0), data_dir, tmp_path, log=lambda _: None)
    assert m["status"] == "diverged"
    assert m["diverged_step"] < m["steps"]
    assert math.isnan(m["val_loss"])
    assert len(pd.read_parquet(tmp_path / "curve.parquet")) == m["diverged_step"]
