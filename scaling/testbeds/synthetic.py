"""Synthetic finished runs in the project's run format, for the collect benchmark and the tests.

A synthetic run leaves on disk what :func:`scaling.train.loop.train` leaves —
``curve.parquet`` and then ``metrics.json``, each written atomically, with the
same fields — but its losses come from the over-training law plus a
learning-rate penalty and noise, not from training, so a study of thousands of
runs takes seconds to make.
"""

from __future__ import annotations

import math
import zlib
from pathlib import Path

import numpy as np
import pandas as pd

from scaling.study import runs as S
from scaling.io import spec_digest, write_json, write_parquet
from scaling.fit.laws import overtraining_loss
from scaling.train.flops import flops_6nd


def study_config(name: str, n_sizes: int, multipliers: list[float], learning_rates: list[float],
                 seeds: list[int] = (0,)) -> dict:
    """A study of ``n_sizes`` models (d_model 16, 24, …; 2 layers) over one grid block, defaults filled."""
    models = [{"name": f"d{16 + 8 * i}", "d_model": 16 + 8 * i, "n_layers": 2, "n_heads": 2} for i in range(n_sizes)]
    return {
        "study": name, "title": name,
        "datasets": {"bible": {"source": "embedded"}},
        "models": models,
        "training": {"seq_len": 64, "batch_tokens": 512, "warmup_fraction": 0.05, "min_lr_ratio": 0.1,
                     "weight_decay": 0.1, "beta1": 0.9, "beta2": 0.95, "grad_clip": 1.0,
                     "eval_tokens": 65536, "divergence_margin": 1.0},
        "grid": [{"sizes": [m["name"] for m in models], "token_multipliers": list(multipliers),
                  "learning_rates": list(learning_rates), "seeds": list(seeds)}],
        "fit": {"targets": []},
    }


def write_run(results: str | Path, config: dict, run: S.Run, n_steps: int, diverged: bool = False) -> Path:
    """Write one finished synthetic run under ``results/runs/<run_id>/``; return its metrics.json path."""
    spec = S.run_spec(config, run)
    n = S.model_sizes(config)[run.size]
    rng = np.random.default_rng(zlib.crc32(run.id.encode()))
    val = float(overtraining_loss(n, run.token_multiplier, 1.5, 60.0, -0.3, 400.0)
                + 0.05 * math.log(run.lr / 0.01) ** 2 + rng.normal(0, 0.01))
    initial = math.log(256)
    done = max(1, n_steps // 3) if diverged else n_steps
    step = np.arange(1, done + 1)
    tokens_per_step = config["training"]["batch_tokens"]
    loss = val + (initial - val) * np.exp(-step / (0.1 * n_steps)) + rng.normal(0, 0.02, done)
    if diverged:
        loss[-1] = initial + 2.0
    out = Path(results) / "runs" / run.id
    write_parquet(out / "curve.parquet", pd.DataFrame({
        "step": step, "tokens": step * tokens_per_step,
        "lr": run.lr * np.minimum(1.0, step / (0.05 * n_steps)), "train_loss": loss,
    }))
    shape = spec["shape"]
    wall = 1e-6 * n * done * tokens_per_step
    write_json(out / "metrics.json", {
        **{k: spec[k] for k in ("run_id", "dataset", "size", "token_multiplier", "lr", "seed")},
        "spec_digest": spec_digest(spec), **shape,
        "n_params": n, "n_params_nonembed": n - (shape["vocab_size"] + shape["seq_len"]) * shape["d_model"],
        "tokens": spec["tokens"], "tokens_seen": done * tokens_per_step, "epochs": done * tokens_per_step / 7.6e6,
        "steps": n_steps, "flops": flops_6nd(n, spec["tokens"]), "initial_loss": initial,
        "final_train_loss": float(loss[-max(1, done // 100):].mean()),
        "val_loss": float("nan") if diverged else val, "status": "diverged" if diverged else "ok",
        "diverged_step": done if diverged else None, "wall_s": wall, "tokens_per_s": done * tokens_per_step / wall,
        "device": "cpu", "threads": 1, "host": "synthetic", "torch": "none", "python": "3",
        "training": spec["training"],
    })
    return out / "metrics.json"
