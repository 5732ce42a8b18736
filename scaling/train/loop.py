"""Train one run: a GPT of a given shape on D = M·N tokens.

The recipe (everything in the run's spec): AdamW with decoupled weight decay
(Loshchilov & Hutter 2019), the study's learning-rate schedule
(:mod:`scaling.train.schedules`), gradient clipping, optional z-loss and qk-layernorm
(Wortsman et al. 2023), and steps of ``batch_tokens`` tokens: batch_tokens /
seq_len windows of seq_len + 1 tokens drawn uniformly from the training array.
The windows of step s are a pure function of (seed, s), :func:`batch_starts`.

The engine (nothing in it changes a result on one device):

- **Checkpoints** every ``checkpoint_every`` steps (:mod:`scaling.train.checkpoint`);
  a restarted run resumes from the last one and produces the same per-step
  losses, bit for bit on CPU, as a run that was never interrupted.
- **Preemption** (:mod:`scaling.train.preemption`): on SIGTERM or SIGUSR2 the run
  finishes the step in progress, checkpoints there and raises ``Stopped``, so a
  rerun loses no step. DDP processes must stop at the same step, so they act on
  the signal at the next loss read below (at most :data:`FLUSH_EVERY` steps on).
- **Losses** stay on the device and are read every :data:`FLUSH_EVERY` steps,
  at checkpoints and at log lines, so the GPU is not synchronized every step.
- **Divergence** (:mod:`scaling.train.stability`): the run stops at the first loss
  that is NaN/inf or, after warmup, where the median of the last few losses is above the
  initial loss + ``divergence_margin`` (a one-step spike passes), records
  ``status = "diverged"`` and still exits successfully.
- **Progress**: a log line every :data:`LOG_EVERY_S` seconds with step/total,
  loss, tokens/s, ETA, and on a GPU the MFU (:mod:`scaling.train.flops`); the log opens
  with a header, and the curve can go to TensorBoard too (:mod:`scaling.train.watch`).
- **GPU**: bf16 autocast, TF32 matmuls, fused AdamW, ``torch.compile``
  (on CPU they are slower here, so CPU runs use fp32, eager mode and fused AdamW).
- **DDP** when started as several processes (:mod:`scaling.train.distributed`): every
  process draws the same global batch and trains on its slice, so the data and
  the gradient are those of one process and only summation order differs.

- **Validation curve**: every ``eval_every`` steps the validation loss on
  ``curve_eval_tokens`` tokens (evenly spaced windows, as the final one), so a
  few % of the training time by default.
- **Ladder** (:mod:`scaling.train.ladder`): a trunk segment starts from the
  trunk's checkpoint at its first step and writes one at its end, and its
  record (its own job's time); a run of the ladder starts from the trunk's
  checkpoint at its branch step and trains its cooldown, and its metrics time
  that job alone (its trunk's wall time up to its branch is ``trunk_wall_s``).
  Either resumes from its own checkpoints like any run.

Outputs, each written atomically: ``curve.parquet`` (per step: step, tokens,
lr, train_loss, and val_loss every ``eval_every`` steps), ``model.pt`` (the final weights and shape) and then
``metrics.json`` (spec, sizes, both FLOP counts, final
losses, status, epochs, timing, device).

:func:`train` reads top to bottom: :func:`setup`, :func:`resume`, the step loop
(:func:`train_steps`), :func:`final_validation`, then the outputs (:func:`write_curve`,
:func:`record`, :func:`save_model`).
"""

from __future__ import annotations

import contextlib
import math
import platform
import shutil
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Callable

import numpy as np
import pyarrow as pa
import torch

from scaling.train import checkpoint, ladder
from scaling.data.prepare import load_tokens
from scaling.train.distributed import World
from scaling.train.flops import flops_6nd, flops_per_token, flops_with_attention, gpu_peak_flops
from scaling.io import atomic_path, spec_digest, write_json, write_parquet
from scaling.train.model import GPT, Shape, lm_loss
from scaling.train.shapes import count_params
from scaling.train.preemption import Stopped
from scaling.train.schedules import constant, lr_at, warmup_length
from scaling.train.stability import WINDOW, first_divergence, threshold
from scaling.train.watch import CurveLog, log_header

FLUSH_EVERY = 32
LOG_EVERY_S = 5.0


def batch_starts(seed: int, step: int, n_tokens: int, seq_len: int, n_seqs: int) -> np.ndarray:
    """Start offsets of the ``n_seqs`` windows of step ``step``: uniform over the array, seeded by (seed, step)."""
    return np.random.default_rng([seed, step]).integers(0, n_tokens - seq_len, n_seqs)


def batch(data: np.ndarray, starts: np.ndarray, seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and next-token targets for windows beginning at ``starts``."""
    window = torch.from_numpy(data[starts[:, None] + np.arange(seq_len + 1)].astype(np.int64))
    return window[:, :-1], window[:, 1:]


def precision(device: torch.device):
    """The autocast context of a device: bf16 on CUDA, none (fp32) on CPU."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


@torch.no_grad()
def validation_loss(model: GPT, data: np.ndarray, seq_len: int, n_tokens: int, device: torch.device,
             batch_size: int = 64) -> float:
    """Mean loss (nats/token) over evenly spaced windows covering ~``n_tokens`` of ``data``."""
    n_windows = max(1, min(math.ceil(n_tokens / seq_len), (len(data) - 1) // seq_len))
    starts = np.linspace(0, len(data) - seq_len - 1, n_windows).astype(np.int64)
    model.eval()
    total = 0.0
    for i in range(0, n_windows, batch_size):
        x, y = batch(data, starts[i : i + batch_size], seq_len)
        with precision(device):
            loss, _ = lm_loss(model(x.to(device)), y.to(device))
        total += loss.item() * len(x)
    model.train()
    return total / n_windows


def save_model(path: Path, shape: Shape, model: GPT) -> None:
    """The final weights and shape (``model.pt``, what evaluation loads), written atomically."""
    with atomic_path(path) as tmp:
        torch.save({"shape": shape.to_dict(), "model": {k: v.cpu() for k, v in model.state_dict().items()}}, tmp)


@dataclass
class Training:
    """One run being trained: what the parts of :func:`train` share (made by :func:`setup`)."""

    spec: dict
    out: Path
    world: World
    device: torch.device
    model: GPT
    opt: torch.optim.Optimizer
    train_data: np.ndarray
    val_data: np.ndarray
    steps: int  # optimizer steps of the whole run (of a trunk segment: to its end)
    warmup_steps: int
    losses: np.ndarray  # per step, NaN until read from the device
    val_losses: np.ndarray  # per step, NaN but every ``eval_every`` steps
    say: Callable[[str], None]  # a log line: rank 0's, kept across attempts (checkpoint.journal); others' dropped
    threads: int
    compiled: bool  # torch.compile, on a GPU only
    peak: float | None  # the GPU's peak FLOP/s, for the MFU
    curves: CurveLog | None = None  # the run's curve in TensorBoard (engine.tensorboard), rank 0's
    trunk_wall_s: float = 0.0  # a ladder's run or segment: the wall time of its trunk's segment jobs before it
    lock: IO | None = None  # rank 0's claim on the run (checkpoint.claim), released when train returns

    @property
    def cfg(self) -> dict:
        return self.spec["training"]

    @property
    def shape(self) -> Shape:
        return self.model.shape

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    @property
    def run_id(self) -> str:
        return self.spec["run_id"]

    @property
    def segment(self) -> tuple[int, int] | None:
        """(first step, end step) of a ladder's trunk segment; None for a run."""
        return tuple(self.spec["segment"]) if "segment" in self.spec else None

    def lr(self, step: int) -> float:
        """The LR of a step: a trunk's is constant after warmup, a run's follows its schedule."""
        if self.segment:
            return constant(step, self.steps, self.warmup_steps, self.spec["lr"], final_ratio=1.0)  # never decays
        return lr_at(step, self.steps, self.cfg, self.spec["lr"])


def train(spec: dict, data_dir: str | Path, out_dir: str | Path, threads: int = 1, checkpoint_every: int = 1000,
          keep_checkpoints: bool = False, compile_model: bool = True, log=print,
          signalled: Callable[[], int] = lambda: 0, start_from: str | Path | None = None,
          tensorboard: str | Path | None = None) -> dict | None:
    """Train the run described by ``spec`` (see :func:`scaling.study.runs.run_spec`) and write its outputs.

    Returns the metrics (None on the processes of a DDP run other than rank 0).
    ``signalled`` returns the stop signal received so far, or 0
    (:func:`scaling.train.preemption.stop_signals`); after one, the run checkpoints
    and raises :class:`~scaling.train.preemption.Stopped` instead. With ``tensorboard``, a folder, the run's curve
    also goes to ``tensorboard/<run_id>/`` (:mod:`scaling.train.watch`).

    A ladder's run (a spec with ``ladder``) starts from its trunk's checkpoint at its branch step, the file
    ``start_from``; a trunk segment (a spec with ``segment``, :func:`scaling.study.runs.trunk_segments`) from
    the previous segment's, and writes its own, ``<out_dir>/step<end>.pt``, and its record ``step<end>.json``
    (:func:`end_segment`) instead of a run's outputs.
    """
    t0 = time.perf_counter()
    run = setup(spec, data_dir, out_dir, threads, compile_model, log)
    with run.lock or contextlib.nullcontext():  # the claim on the run ends with this call
        log_header(run)
        start, prior_s, stop = resume(run, start_from)
        run.curves = CurveLog(tensorboard, run, start) if tensorboard and run.world.main else None
        train_s = prior_s
        if stop is None:
            stop, train_s = train_steps(run, start, prior_s, checkpoint_every, signalled)
        if not run.world.main:
            run.world.stop()
            return None
        if run.segment:
            return end_segment(run, stop, train_s, wall_s=prior_s + time.perf_counter() - t0)

        done = run.steps if stop is None else stop + 1
        status, val_loss = final_validation(run, stop)
        write_curve(run, done)
        if run.curves:
            run.curves.close(run, done, val_loss)
        metrics = record(run, done, stop, status, val_loss, start, train_s, wall_s=prior_s + time.perf_counter() - t0)
        save_model(run.out / "model.pt", run.shape, run.model)
        write_json(run.out / "metrics.json", metrics)
        run.say(f"[{run.run_id}] {status}: val_loss {val_loss:.4f} in {metrics['wall_s']:.1f}s")
        if keep_checkpoints and status == "ok":
            if start < run.steps:
                save_checkpoint(run, done, train_s)
        else:
            checkpoint.remove(run.out)
        run.world.stop()
        return metrics


def setup(spec: dict, data_dir: str | Path, out_dir: str | Path, threads: int, compile_model: bool,
          log: Callable[[str], None]) -> Training:
    """The device and process group, the model (seeded), its optimizer and the token arrays; refuses a batch that
    does not split over the processes and a split shorter than one window."""
    world = World.from_env()
    device = world.device()
    cuda = device.type == "cuda"
    torch.set_num_threads(threads)
    world.start(device)
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    out, cfg, shape = Path(out_dir), spec["training"], Shape(**spec["shape"])
    lock, claimed = None, None
    if world.main:
        try:
            lock = checkpoint.claim(work_dir(spec, out), log)
        except checkpoint.Claimed as e:
            claimed = e
    if world.max(int(claimed is not None)):  # every process of a DDP run stops, not rank 0 alone
        raise claimed or checkpoint.Claimed("rank 0 found this run being trained by another process")
    say = checkpoint.journal(work_dir(spec, out), log) if world.main else (lambda _: None)

    torch.manual_seed(spec["seed"])
    model = GPT(shape).to(device)
    opt = torch.optim.AdamW(model.param_groups(cfg["weight_decay"]), lr=spec["lr"],
                            betas=(cfg["beta1"], cfg["beta2"]), fused=True)
    n_seqs = cfg["batch_tokens"] // shape.seq_len
    if n_seqs % world.size:
        raise ValueError(f"{n_seqs} sequences per step do not split over {world.size} processes; "
                         f"fix: make the size's batch_tokens (models[].batch_tokens, else training.batch_tokens) / "
                         f"seq_len a multiple of the number of processes")
    steps = spec["segment"][1] if "segment" in spec else ladder.run_steps(spec["tokens"], cfg["batch_tokens"])
    if ("segment" in spec or "ladder" in spec) and cfg.get("warmup_steps") is None:
        raise ValueError(f"{spec['run_id']} is of a ladder, whose trunk and runs share one warmup; fix: set "
                         f"training.warmup_steps")
    train_data, val_data = load_tokens(data_dir, "train"), load_tokens(data_dir, "val")
    for name, data in (("train", train_data), ("validation", val_data)):
        if len(data) < shape.seq_len + 2:
            raise ValueError(
                f"the {name} split of {data_dir} has {len(data)} tokens, fewer than one window of seq_len + 1 = "
                f"{shape.seq_len + 1}; fix: give the dataset more text or a larger val_fraction"
            )
    return Training(spec=spec, out=out, world=world, device=device, model=model, opt=opt, train_data=train_data,
                    val_data=val_data, steps=steps, warmup_steps=warmup_length(cfg, steps),
                    losses=np.full(steps, np.nan), val_losses=np.full(steps, np.nan), say=say, threads=threads,
                    compiled=cuda and compile_model,
                    peak=gpu_peak_flops(torch.cuda.get_device_name(device)) if cuda else None, lock=lock)


def work_dir(spec: dict, out: Path) -> Path:
    """Where a run keeps its checkpoints while it trains: its directory, or a trunk segment's own beside the
    segment's output (``<out>/step<end>/``)."""
    return out / f"step{spec['segment'][1]}" if "segment" in spec else out


def start_state(run: Training, start_from: str | Path | None) -> dict | None:
    """The trunk checkpoint a ladder's run or trunk segment starts from (None for a run from scratch or a first
    segment): checked to be of its trunk at its start step."""
    if run.segment:
        trunk, step = {k: v for k, v in run.spec.items() if k != "segment"}, run.segment[0]
    elif "ladder" in run.spec:
        trunk, step = ladder.trunk_spec(run.spec), run.spec["ladder"]["branch_step"]
    else:
        return None
    if step == 0:
        return None
    if start_from is None:
        raise ValueError(f"{run.run_id} starts from its trunk's checkpoint at step {step}; fix: give it (start_from)")
    return checkpoint.read(start_from, trunk, step)


def resume(run: Training, start_from: str | Path | None = None) -> tuple[int, float, int | None]:
    """Load the run's newest readable checkpoint, else the trunk checkpoint it starts from, if any, into the model,
    optimizer, RNGs and curves; return the steps done, this job's training time so far (0, 0.0 for a fresh start or
    a trunk's checkpoint: the trunk's time is its segments', ``trunk_wall_s``) and the (0-based) step its trunk
    diverged at (None if it did not)."""
    state = checkpoint.load(work_dir(run.spec, run.out), run.spec, run.say)
    whence, prior_s = "its checkpoint", state["train_s"] if state else 0.0
    if state is None and (state := start_state(run, start_from)) is not None:
        whence, prior_s = f"its trunk's checkpoint {start_from}", 0.0
    if state is None:
        run.say(f"[{run.run_id}] started: {run.steps} steps on {run.device.type}")
        return 0, 0.0, None
    run.model.load_state_dict(state["model"])
    run.opt.load_state_dict(state["optimizer"])
    torch.set_rng_state(state["rng"])
    if run.cuda and state.get("cuda_rng") is not None:
        torch.cuda.set_rng_state(state["cuda_rng"], run.device)
    start, done = state["step"], len(state["losses"])  # fewer than the steps when the trunk diverged
    run.trunk_wall_s = state.get("trunk_wall_s", 0.0)
    run.losses[:done] = state["losses"].numpy()
    run.val_losses[:done] = state["val_losses"].numpy()
    run.say(f"[{run.run_id}] resumed from {whence} at step {start}/{run.steps}")
    diverged = state.get("diverged_step")
    return start, prior_s, None if diverged is None else diverged - 1


def checkpoint_state(run: Training, done: int, train_s: float) -> dict:
    """Everything :func:`resume` loads, after ``done`` steps."""
    return {
        "spec": run.spec, "step": done, "model": run.model.state_dict(), "optimizer": run.opt.state_dict(),
        "losses": torch.from_numpy(run.losses[:done].copy()),
        "val_losses": torch.from_numpy(run.val_losses[:done].copy()), "train_s": train_s,
        "trunk_wall_s": run.trunk_wall_s,
        "rng": torch.get_rng_state(), "cuda_rng": torch.cuda.get_rng_state(run.device) if run.cuda else None,
    }


def save_checkpoint(run: Training, done: int, train_s: float) -> None:
    """Checkpoint the run after ``done`` steps."""
    checkpoint.save(work_dir(run.spec, run.out), checkpoint_state(run, done, train_s))


def end_segment(run: Training, stop: int | None, train_s: float, wall_s: float) -> dict:
    """A trunk segment's outputs: the trunk's checkpoint at the segment's end, ``step<end>.pt``, of the trunk's spec,
    and then the segment's record, ``step<end>.json``: its status and its own job's wall and training time, the
    trunk's time counted once (the checkpoint carries the trunk's wall time so far, ``trunk_wall_s``, to the runs
    branching from it).

    A trunk that diverged still writes both, with the losses up to the step it diverged at and that step as
    ``diverged_step``, so that its later segments and its runs end at once, each recording the divergence.
    """
    end = run.segment[1]
    done = end if stop is None else stop + 1
    diverged = None if stop is None else stop + 1
    state = {**checkpoint_state(run, done, train_s), "spec": {k: v for k, v in run.spec.items() if k != "segment"},
             "step": end, "diverged_step": diverged, "trunk_wall_s": run.trunk_wall_s + wall_s}
    checkpoint.write(run.out / f"step{end}.pt", state)
    segment = {"run_id": run.run_id, "spec_digest": spec_digest(run.spec), "segment": list(run.segment),
               "status": "ok" if stop is None else "diverged",
               "diverged_step": diverged, "wall_s": wall_s, "train_s": train_s,
               "trunk_wall_s": state["trunk_wall_s"]}
    write_json(run.out / f"step{end}.json", segment)
    if run.curves:
        run.curves.close(run, done, float("nan"))
    run.say(f"[{run.run_id}] " + (f"checkpointed at step {end}" if stop is None else
                                  f"diverged at step {stop + 1}: its runs will record it"))
    shutil.rmtree(work_dir(run.spec, run.out), ignore_errors=True)  # its checkpoints and kept log lines
    run.world.stop()
    return segment


def train_steps(run: Training, start: int, prior_s: float, checkpoint_every: int,
                signalled: Callable[[], int]) -> tuple[int | None, float]:
    """Steps ``start`` to the end; return the step the run diverged at (None if it did not) and its training time.

    The losses are read at steps every process agrees on (DDP averages them across processes): every
    :data:`FLUSH_EVERY` steps, at checkpoints, at the end, and after a stop signal (one process: at once; DDP: at
    the next read, so that all stop at the same step), which checkpoints and raises ``Stopped``.
    """
    spec, cfg, model, opt, world, device = run.spec, run.cfg, run.model, run.opt, run.world, run.device
    data, steps, losses = run.train_data, run.steps, run.losses
    seq_len, n_seqs = run.shape.seq_len, cfg["batch_tokens"] // run.shape.seq_len
    local = slice(world.rank * n_seqs // world.size, (world.rank + 1) * n_seqs // world.size)
    params = list(model.parameters())  # clipped every step: listed once, not found by a walk of the modules
    net = torch.compile(model) if run.compiled else model
    if world.size > 1:
        net = torch.nn.parallel.DistributedDataParallel(net, device_ids=[device.index] if run.cuda else None)

    pending: list[torch.Tensor] = []
    loop_t0 = last_log = time.perf_counter()
    for step in range(start, steps):
        for group in opt.param_groups:
            group["lr"] = run.lr(step)
        x, y = batch(data, batch_starts(spec["seed"], step, len(data), seq_len, n_seqs)[local], seq_len)
        with precision(device):
            ce, objective = lm_loss(net(x.to(device, non_blocking=True)), y.to(device, non_blocking=True),
                                    cfg["z_loss"])
        objective.backward()
        if cfg["grad_clip"] > 0:
            torch.nn.utils.clip_grad_norm_(params, cfg["grad_clip"])
        opt.step()
        opt.zero_grad(set_to_none=True)
        pending.append(ce.detach())

        done = step + 1  # the losses are read only at steps every process agrees on (see above)
        if cfg["eval_every"] and done % cfg["eval_every"] == 0 and world.main:
            run.val_losses[step] = validation_loss(model, run.val_data, seq_len, cfg["curve_eval_tokens"], device)
        ckpt_now = done % checkpoint_every == 0 and done < steps
        if not (len(pending) == FLUSH_EVERY or ckpt_now or done == steps or (world.size == 1 and signalled())):
            continue
        first = done - len(pending)
        losses[first:done] = world.mean(torch.stack(pending).float()).cpu().numpy()
        pending.clear()
        stop = first_divergence(losses, first, done, run.warmup_steps, cfg["divergence_margin"])
        if stop is not None:
            why = ("" if not math.isfinite(losses[stop]) else
                   f", the median of its last {WINDOW} above {threshold(losses, cfg['divergence_margin']):.4g}")
            run.say(f"[{run.run_id}] diverged at step {stop + 1}: loss {losses[stop]:.4g}{why}")
            return stop, prior_s + time.perf_counter() - loop_t0
        signum = world.max(signalled()) if done < steps else 0
        if (ckpt_now or signum) and world.main:
            if run.curves:  # TensorBoard holds every step the checkpoint holds: a resumed run adds the rest once
                run.curves.add(run, done)
            save_checkpoint(run, done, prior_s + time.perf_counter() - loop_t0)
        if signum:
            run.say(f"[{run.run_id}] {signal.Signals(signum).name}: checkpointed at step {done}/{steps}; stopping "
                    f"(a rerun resumes here)")
            world.stop()
            raise Stopped(signum)
        if time.perf_counter() - last_log > LOG_EVERY_S or done == steps:
            last_log = time.perf_counter()
            log_progress(run, start, done, last_log - loop_t0)
    return None, prior_s + time.perf_counter() - loop_t0


def log_progress(run: Training, start: int, done: int, elapsed: float) -> None:
    """A progress line: step/total, loss, tokens/s, the MFU on a GPU, ETA."""
    cfg, steps = run.cfg, run.steps
    rate = (done - start) * cfg["batch_tokens"] / elapsed
    mfu = f" MFU {rate * flops_per_token(run.shape) / (run.peak * run.world.size):.1%}" if run.peak else ""
    run.say(f"[{run.run_id}] step {done}/{steps} loss {run.losses[done - 1]:.4f} {rate:,.0f} tok/s{mfu} "
            f"ETA {(steps - done) * cfg['batch_tokens'] / rate:.0f}s")
    if run.curves:
        run.curves.add(run, done)


def final_validation(run: Training, stop: int | None) -> tuple[str, float]:
    """The run's status and validation loss: ``diverged`` (NaN) if it stopped early, or its validation loss is not
    finite or above the initial loss + ``divergence_margin`` (a run that blew up in its last steps, too few for
    the median of :func:`first_divergence`); else ``ok``."""
    if stop is not None:
        return "diverged", float("nan")
    val_loss = validation_loss(run.model, run.val_data, run.shape.seq_len, run.cfg["eval_tokens"], run.device)
    if not val_loss <= threshold(run.losses, run.cfg["divergence_margin"]):  # NaN compares False
        return "diverged", float("nan")
    return "ok", val_loss


def write_curve(run: Training, done: int) -> None:
    """``curve.parquet``: step, tokens, learning rate, training loss of every step done, and the validation loss
    every ``eval_every`` steps (NaN at the others); a ladder's run's include its trunk's, to its branch step."""
    write_parquet(run.out / "curve.parquet", pa.table({
        "step": np.arange(1, done + 1),
        "tokens": np.arange(1, done + 1) * run.cfg["batch_tokens"],
        "lr": [run.lr(s) for s in range(done)],
        "train_loss": pa.array(run.losses[:done], from_pandas=True),  # NaN (not measured) as null, as in pandas
        "val_loss": pa.array(run.val_losses[:done], from_pandas=True),
    }))


def record(run: Training, done: int, stop: int | None, status: str, val_loss: float, start: int, train_s: float,
           wall_s: float) -> dict:
    """The run's ``metrics.json``: its spec and the spec's digest, sizes, both FLOP counts, final losses, status,
    epochs, timing, device."""
    spec, cfg, shape = run.spec, run.cfg, run.shape
    sizes = count_params(shape)
    tokens_seen = done * cfg["batch_tokens"]
    ladder_run = spec.get("ladder", {})
    trained = max(0, done - ladder_run.get("branch_step", 0)) * cfg["batch_tokens"]  # by this job: a cooldown's own
    # the time of lost work (after a crash's last checkpoint) is not counted; a branch of a diverged trunk trains none
    tokens_per_s = trained / train_s if train_s > 0 else None
    achieved = tokens_per_s and tokens_per_s * flops_per_token(shape)
    tail = run.losses[max(0, done - max(1, done // 100)) : done]
    return {
        **{k: spec[k] for k in ("run_id", "dataset", "size", "token_multiplier", "lr", "seed")},
        "spec_digest": spec_digest(spec),
        **shape.to_dict(),
        **sizes,
        "tokens": spec["tokens"],
        "tokens_seen": tokens_seen,
        "epochs": tokens_seen / len(run.train_data),
        "steps": run.steps,
        "batch_tokens": cfg["batch_tokens"],
        "flops": flops_6nd(sizes["n_params"], spec["tokens"]),
        "flops_with_attention": flops_with_attention(shape, spec["tokens"]),
        "initial_loss": float(run.losses[0]),
        "final_train_loss": float(np.mean(tail)),
        "val_loss": float(val_loss),
        "status": status,
        "diverged_step": None if stop is None else int(stop + 1),
        "resumed_from_step": start or None,
        "trunk": ladder_run.get("trunk"),
        "branch_step": ladder_run.get("branch_step"),
        "wall_s": wall_s,
        "train_s": train_s,
        "trunk_wall_s": run.trunk_wall_s if ladder_run else None,
        "tokens_per_s": tokens_per_s,
        "model_flops_per_s": achieved,
        "mfu": achieved / (run.peak * run.world.size) if run.peak and achieved else None,
        "device": torch.cuda.get_device_name(run.device) if run.cuda else "cpu",
        "world_size": run.world.size,
        "precision": "bf16-autocast" if run.cuda else "fp32",
        "compiled": run.compiled,
        "threads": run.threads,
        "host": platform.node(),
        "torch": torch.__version__,
        "python": sys.version.split()[0],
        "training": cfg,
    }
