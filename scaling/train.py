"""Train one run: a GPT of a given shape on D = M·N tokens.

AdamW with decoupled weight decay (Loshchilov & Hutter 2019), a linear warmup
then cosine decay to ``min_lr_ratio``·peak (as Gadre et al. 2024 train their
testbed), gradient clipping, and batches of ``batch_size`` windows of
``seq_len`` + 1 tokens drawn uniformly from the training array by a generator
seeded with the run's seed.

Outputs, each written atomically: ``curve.parquet`` (per step: step, tokens,
lr, train_loss) and then ``metrics.json`` (the run's spec, sizes, FLOPs, final
losses, status, timing). A run whose loss becomes NaN/inf, or exceeds its
initial loss by ``divergence_margin`` after warmup, stops early with
``status = "diverged"`` and still exits successfully.
"""

from __future__ import annotations

import math
import platform
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from scaling.data import load_tokens
from scaling.io import write_json, write_parquet
from scaling.model import GPT, Shape, count_params


def lr_at(step: int, steps: int, warmup: int, peak: float, min_ratio: float) -> float:
    """Learning rate at ``step`` (0-based): linear warmup over ``warmup`` steps, then cosine to min_ratio·peak.

    lr(s) = peak·(s+1)/warmup for s < warmup, else
    peak·(r + (1−r)·½(1 + cos(π·(s−warmup)/(steps−warmup)))) with r = min_ratio.
    """
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return peak * (min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress)))


def training_flops(n_params: int, tokens: int) -> float:
    """C ≈ 6·N·D (Kaplan et al. 2020): forward 2·N·D plus backward 4·N·D."""
    return 6.0 * n_params * tokens


def batch(data: np.ndarray, starts: np.ndarray, seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and next-token targets for windows beginning at ``starts``."""
    window = torch.from_numpy(data[starts[:, None] + np.arange(seq_len + 1)].astype(np.int64))
    return window[:, :-1], window[:, 1:]


@torch.no_grad()
def evaluate(model: GPT, data: np.ndarray, seq_len: int, n_tokens: int, device: str, batch_size: int = 64) -> float:
    """Mean loss (nats/token) over evenly spaced windows covering ~``n_tokens`` of ``data``."""
    n_windows = max(1, min(math.ceil(n_tokens / seq_len), (len(data) - 1) // seq_len))
    starts = np.linspace(0, len(data) - seq_len - 1, n_windows).astype(np.int64)
    model.eval()
    total = 0.0
    for i in range(0, n_windows, batch_size):
        x, y = batch(data, starts[i : i + batch_size], seq_len)
        _, loss = model(x.to(device), y.to(device))
        total += loss.item() * len(x)
    model.train()
    return total / n_windows


def train(spec: dict, data_dir: str | Path, out_dir: str | Path, threads: int = 1, log=print) -> dict:
    """Train the run described by ``spec`` (see :func:`scaling.study.run_spec`) and write its outputs."""
    t0 = time.perf_counter()
    out = Path(out_dir)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.set_num_threads(threads)
    torch.manual_seed(spec["seed"])
    cfg = spec["training"]
    shape = Shape(**spec["shape"])
    sizes = count_params(shape)
    model = GPT(shape).to(device)
    assert sum(p.numel() for p in model.parameters()) == sizes["n_params"]

    seq_len, bsz = shape.seq_len, cfg["batch_size"]
    steps = max(1, math.ceil(spec["tokens"] / (bsz * seq_len)))
    warmup = round(cfg["warmup_fraction"] * steps)
    opt = torch.optim.AdamW(
        model.param_groups(cfg["weight_decay"]), lr=spec["lr"], betas=(cfg["beta1"], cfg["beta2"])
    )
    train_data, val_data = load_tokens(data_dir, "train"), load_tokens(data_dir, "val")
    for name, data in (("train", train_data), ("validation", val_data)):
        if len(data) < seq_len + 2:
            raise ValueError(
                f"the {name} split of {data_dir} has {len(data)} tokens, fewer than one window of seq_len + 1 = "
                f"{seq_len + 1}; fix: give the dataset more text or a larger val_fraction"
            )
    rng = np.random.default_rng(spec["seed"])

    losses, lrs = np.full(steps, np.nan), np.zeros(steps)
    status, stop_step, initial = "ok", None, None
    last_log = time.perf_counter()
    for step in range(steps):
        lr = lr_at(step, steps, warmup, spec["lr"], cfg["min_lr_ratio"])
        for group in opt.param_groups:
            group["lr"] = lr
        x, y = batch(train_data, rng.integers(0, len(train_data) - seq_len - 1, bsz), seq_len)
        _, loss = model(x.to(device), y.to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg["grad_clip"] > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg["grad_clip"])
        opt.step()
        losses[step], lrs[step] = loss.item(), lr
        initial = losses[0]
        if not math.isfinite(losses[step]) or (
            step >= warmup and losses[step] > initial + cfg["divergence_margin"]
        ):
            status, stop_step = "diverged", step
            log(f"[{spec['run_id']}] diverged at step {step}: loss {losses[step]:.4g} (initial {initial:.4g})")
            break
        if time.perf_counter() - last_log > 5 or step == steps - 1:
            last_log = time.perf_counter()
            elapsed = last_log - t0
            rate = (step + 1) * bsz * seq_len / elapsed
            eta = (steps - step - 1) * bsz * seq_len / rate
            log(f"[{spec['run_id']}] step {step + 1}/{steps} loss {losses[step]:.4f} "
                f"{rate:,.0f} tok/s ETA {eta:.0f}s")

    done = steps if stop_step is None else stop_step + 1
    val_loss = evaluate(model, val_data, seq_len, cfg["eval_tokens"], device) if status == "ok" else float("nan")
    if status == "ok" and not math.isfinite(val_loss):
        status = "diverged"
    tail = losses[max(0, done - max(1, done // 100)) : done]
    wall = time.perf_counter() - t0
    tokens_seen = done * bsz * seq_len

    write_parquet(out / "curve.parquet", pd.DataFrame({
        "step": np.arange(1, done + 1),
        "tokens": np.arange(1, done + 1) * bsz * seq_len,
        "lr": lrs[:done],
        "train_loss": losses[:done],
    }))
    metrics = {
        **{k: spec[k] for k in ("run_id", "dataset", "size", "token_multiplier", "lr", "seed")},
        **shape.to_dict(),
        **sizes,
        "tokens": spec["tokens"],
        "tokens_seen": tokens_seen,
        "epochs": tokens_seen / len(train_data),
        "steps": steps,
        "flops": training_flops(sizes["n_params"], spec["tokens"]),
        "initial_loss": float(initial),
        "final_train_loss": float(np.mean(tail)),
        "val_loss": float(val_loss),
        "status": status,
        "diverged_step": None if stop_step is None else int(stop_step + 1),
        "wall_s": wall,
        "tokens_per_s": tokens_seen / wall,
        "device": device,
        "threads": threads,
        "host": platform.node(),
        "torch": torch.__version__,
        "python": sys.version.split()[0],
        "training": cfg,
    }
    write_json(out / "metrics.json", metrics)
    log(f"[{spec['run_id']}] {status}: val_loss {val_loss:.4f} in {wall:.1f}s")
    return metrics
