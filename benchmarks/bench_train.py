"""Training throughput: the project's trainer against a minimal PyTorch loop, side by side, and what a train job
pays besides its loop.

For every model of the default study (workflow/config.yaml, with its training
settings) it trains the same model for the same number of steps two ways, in
one process, interleaved over several rounds:

- ``trainer``: the trainer's step loop, :func:`scaling.train.loop.train_steps`,
  with its schedule, loss buffering, divergence checks, progress log and a
  checkpoint half way (more often than the default of every 1,000 steps, so its
  cost is counted);
- ``plain``: the minimal loop, plain PyTorch as one writes it (nanoGPT's): set the
  LR, take the batch, forward, cross-entropy, backward,
  ``clip_grad_norm_(model.parameters())``, ``torch.optim.AdamW(fused=True)``, the
  trainer's optimizer implementation on every device, nothing else (no logging,
  no loss read back), so that trainer / plain is what the trainer's bookkeeping
  costs, net of what it does faster (it lists the parameters it clips once).

The plain loop takes the trainer's batches and learning rates (both pure
functions of the step), so both do the same arithmetic: the script checks that
the plain loop ends on the trainer's last loss exactly. (With other batches or
LRs the speed itself changes by a few percent on CPU, as the values change.)

Both are timed in CPU time of this process (``time.process_time``), so that
other processes on a shared machine, which take the core away, do not count;
on an idle machine, with one thread (the default, as a study's runs), it is the
wall time (with ``--threads`` n, it adds up the n threads' time). It prints tokens per CPU-second of each
(the best of several interleaved rounds), trainer / plain of the best rounds
and the min / median / max of the rounds' ratios (a round is a pair, which of
the two goes first alternating; the goal is judged on the median ratio, the
paired comparison least moved by a noisy round), the load average, and the
trainer's achieved FLOP/s (attention and output layer counted,
scaling.train.flops) against this machine's fp32 matrix-multiply peak, measured
here with the same number of threads. The goal: trainer / plain ≥ 1.0 at every size.

Then ``job``: one ``scaling train`` process per size, as the train rule starts it,
the same steps: its wall time (process start, imports, model, the final
validation on the study's ``eval_tokens`` and the outputs included) and how much of
it was not the training loop; ``served``: the same, run by a job server as in a
local study (scaling.forkserver: the imports were made once, by the server).

    python benchmarks/bench_train.py            # every default size (about 2 minutes on 2 cores)
    python benchmarks/bench_train.py --smoke    # one tiny size, a few steps (CI)

On a shared virtual machine the rounds of one size can scatter by ±20–30% even when it is idle (other
machines' work on the host), more than the difference to be measured. ``--instructions`` counts instead, exactly:
it runs the loops again under valgrind's callgrind, each at two lengths, and prints the instructions per step of
each (the difference of the two counts over the steps between them, so that building the model and the first
steps' allocations cancel) and plain / trainer, the trainer's throughput in instructions. It needs valgrind (``apt install valgrind``) and a Python built with
its symbols (pyenv's; Debian's is stripped). It took 8.5 minutes for the first two sizes below on the 2 cores;
larger sizes take longer, as their steps do: at d80L2 the default 120 + 20 steps per loop take hours, and 12 + 4
took 18.5 minutes, niced beside other work (the count of 8 steps is as exact, though what the first steps leave
uncancelled weighs 12 times more):

    python benchmarks/bench_train.py --instructions --sizes d10L1 d24L2
    python benchmarks/bench_train.py --instructions --counted 4 12 --sizes d80L2
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from snakemake.utils import validate

from scaling import forkserver
from scaling.cli import start_job_server
from scaling.study import runs as study
from scaling.data.prepare import load_tokens, prepare
from scaling.train.flops import flops_per_token
from scaling.train.model import GPT, Shape
from scaling.train.schedules import lr_at
from scaling.train.loop import batch, batch_starts, setup, train_steps

REPO = Path(__file__).resolve().parents[1]
GOAL = 1.0


def matmul_peak(threads: int, n: int = 1024, seconds: float = 1.0) -> float:
    """Best fp32 FLOP/s of an n×n matrix product on this CPU with ``threads`` threads (2n³ FLOPs each)."""
    torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    best, end = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < end:
        t = time.perf_counter()
        torch.mm(a, b)
        best = max(best, 2 * n**3 / (time.perf_counter() - t))
    return best


def plain_loop(shape: Shape, data: np.ndarray, spec: dict, steps: int) -> tuple[float, float]:
    """Tokens/s and last loss of the minimal loop: the same model, batches, LRs and (fused) AdamW, nothing else."""
    cfg = spec["training"]
    torch.manual_seed(spec["seed"])
    model = GPT(shape)
    opt = torch.optim.AdamW(model.param_groups(cfg["weight_decay"]), lr=spec["lr"],
                            betas=(cfg["beta1"], cfg["beta2"]), fused=True)
    n_seqs, T = cfg["batch_tokens"] // shape.seq_len, shape.seq_len
    t = time.process_time()
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, steps, cfg, spec["lr"])
        x, y = batch(data, batch_starts(spec["seed"], step, len(data), T, n_seqs), T)
        loss = F.cross_entropy(model(x).view(-1, shape.vocab_size), y.reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg["grad_clip"])
        opt.step()
        opt.zero_grad(set_to_none=True)
    return steps * cfg["batch_tokens"] / (time.process_time() - t), loss.item()


def trainer(spec: dict, data_dir: Path, steps: int, threads: int) -> tuple[float, float]:
    """Tokens per CPU-second of the trainer's step loop (a checkpoint half way included) and its last loss."""
    with tempfile.TemporaryDirectory() as out:
        run = setup(spec, data_dir, out, threads, compile_model=False, log=lambda _: None)
        t = time.process_time()
        stop, _ = train_steps(run, 0, 0.0, checkpoint_every=max(1, steps // 2), signalled=lambda: 0)
        cpu = time.process_time() - t
    if stop is not None:
        raise RuntimeError(f"{spec['run_id']} diverged at step {stop + 1}: lower --lr")
    return steps * spec["training"]["batch_tokens"] / cpu, float(run.losses[-1])


def job(spec: dict, data_dir: Path, threads: int, served: bool) -> tuple[float, float]:
    """Wall time of one ``scaling train`` process, as rules/train.smk starts it, and its training loop's time;
    ``served``: run by the job server, as in a local study (else the command imports everything itself)."""
    env = {k: v for k, v in os.environ.items() if served or k != forkserver.ENV}
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "scaling.cli", "train", "--spec", json.dumps(spec), "--data",
                        str(data_dir), "--out", out, "--threads", str(threads)], check=True, env=env,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wall = time.perf_counter() - start
        return wall, json.loads((Path(out) / "metrics.json").read_text())["train_s"]


COUNTED = (20, 120)  # --instructions: the two lengths of each loop (--counted), below eval_every (no validation)
COUNT_LR = 0.001  # --instructions: a rate no size diverges at in 20 steps (the count does not depend on it)
SEGMENT_END = "os_getppid"  # the C function callgrind dumps its counts before: the child calls it after each segment


def count_segments(config: dict, sizes: list[str], counted: tuple[int, int] = COUNTED) -> None:
    """Under callgrind (``--instructions``): each size's loops at both lengths, one dump of the counts after each,
    its label printed in the same order (the first dump, start-up, is labelled ``start``)."""
    if max(counted) >= config["training"]["eval_every"]:
        raise ValueError(f"the counted lengths {counted} must stay below training.eval_every, so that neither "
                         f"validates")
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp) / "data"
        prepare(next(iter(config["datasets"].values())), data_dir)
        data = load_tokens(data_dir, "train")
        spec = copy.deepcopy(study.run_spec(config, study.Run("bible", sizes[0], 20.0, COUNT_LR, 0)))
        spec["tokens"] = 5 * spec["training"]["batch_tokens"]
        plain_loop(Shape(**spec["shape"]), data, spec, 5)  # first calls allocate and pick kernels
        trainer(spec, data_dir, 5, threads=1)  # and the trainer's first imports (its checkpoint's), not counted
        print("start", flush=True)
        os.getppid()
        for size in sizes:
            spec = copy.deepcopy(study.run_spec(config, study.Run("bible", size, 20.0, COUNT_LR, 0)))
            for kind in ("trainer", "plain"):
                for steps in counted:
                    spec["tokens"] = steps * spec["training"]["batch_tokens"]
                    if kind == "trainer":
                        trainer(spec, data_dir, steps, threads=1)
                    else:
                        plain_loop(Shape(**spec["shape"]), data, spec, steps)
                    print(f"{size} {kind} {steps}", flush=True)
                    os.getppid()


def instructions(sizes: list[str], counted: tuple[int, int] = COUNTED) -> int:
    """Run :func:`count_segments` under callgrind and print each size's instructions per step."""
    with tempfile.TemporaryDirectory() as tmp:
        child = subprocess.run(
            ["valgrind", "--tool=callgrind", f"--dump-before={SEGMENT_END}*", f"--callgrind-out-file={tmp}/cg",
             sys.executable, __file__, "--count-segments", "--counted", *map(str, counted), "--sizes", *sizes],
            env={**os.environ, "OPENBLAS_NUM_THREADS": "1"},  # numpy's idle BLAS thread spins under valgrind
            capture_output=True, text=True)
        if child.returncode:
            raise RuntimeError(f"callgrind failed:\n{child.stderr[-2000:]}")
        labels = child.stdout.split("\n")[:-1]
        if Path(f"{tmp}/cg.{len(labels) + 1}").exists():
            raise RuntimeError(f"more dumps than segments: something else called {SEGMENT_END}")
        if not Path(f"{tmp}/cg.{len(labels)}").exists():
            raise RuntimeError(f"callgrind wrote no dump per segment: {sys.executable} has no symbol {SEGMENT_END} "
                               f"(a stripped Python); use one built with its symbols, e.g. pyenv's")
        counts = [int(next(line.split()[1] for line in Path(f"{tmp}/cg.{i}").read_text().splitlines()
                           if line.startswith("summary:"))) for i in range(1, len(labels) + 1)]
    count = dict(zip(labels, counts))
    short, long = counted
    print(f"instructions per step (callgrind; {long} steps less {short}, at lr {COUNT_LR})\n")
    print(f"{'size':>6} | {'trainer':>12} {'plain':>12} | {'plain/trainer':>13}")
    for size in sizes:
        t, p = ((count[f"{size} {k} {long}"] - count[f"{size} {k} {short}"]) / (long - short)
                for k in ("trainer", "plain"))
        print(f"{size:>6} | {t:>12,.0f} {p:>12,.0f} | {p / t:>13.4f}")
    return 0


def default_study() -> dict:
    config = yaml.safe_load((REPO / "workflow/config.yaml").read_text())
    validate(config, str(REPO / "workflow/schemas/config.schema.yaml"))
    return config


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="one tiny size, a few steps: checks the script runs")
    parser.add_argument("--steps", type=int, default=200, help="steps per measurement")
    parser.add_argument("--rounds", type=int, default=7, help="interleaved rounds (pairs); the best and the median "
                        "ratio are printed")
    parser.add_argument("--lr", type=float, default=0.01, help="peak LR (the one every size of the default study "
                        "trains at)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (a study's runs use 1)")
    parser.add_argument("--sizes", nargs="+", help="only these sizes of the default study (default: all)")
    parser.add_argument("--instructions", action="store_true", help="count instructions per step under valgrind")
    parser.add_argument("--counted", type=int, nargs=2, default=COUNTED, metavar=("SHORT", "LONG"),
                        help="--instructions: the two loop lengths whose difference is counted (fewer for large "
                        "sizes, whose steps take minutes under valgrind)")
    parser.add_argument("--count-segments", action="store_true", help=argparse.SUPPRESS)  # the counted child
    args = parser.parse_args(argv)
    config = default_study()
    models = [m for m in config["models"] if not args.sizes or study.model_name(m) in args.sizes]
    models = models[:1] if args.smoke else models
    if args.count_segments:
        return count_segments(config, [study.model_name(m) for m in models], tuple(args.counted))
    if args.instructions:
        return instructions([study.model_name(m) for m in models], tuple(args.counted))
    steps, rounds = (20, 1) if args.smoke else (args.steps, args.rounds)

    peak = matmul_peak(args.threads, seconds=0.2 if args.smoke else 1.0)
    print(f"torch {torch.__version__}, {args.threads} thread(s); measured fp32 matmul peak {peak / 1e9:.1f} GFLOP/s")
    print(f"{steps} steps of each size's batch_tokens per measurement, best of {rounds} round(s); "
          f"tokens per CPU-second\n")
    header = (f"{'size':>6} {'N':>9} | {'trainer':>9} {'plain':>9} tok/CPU-s | {'/plain':>6} "
              f"{'rounds min/median/max':>21} | {'GFLOP/s':>7} {'of peak':>7} | {'job s':>6} {'not loop':>8} "
              f"| {'served':>6} {'not loop':>8}")
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(header + "\n" + "-" * len(header))
    ratios = []
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp) / "data"
        prepare(next(iter(config["datasets"].values())), data_dir)
        data = load_tokens(data_dir, "train")
        start_job_server(str(Path(tmp) / "forkserver.log"), wait=True)
        for model in models:
            name = study.model_name(model)
            spec = copy.deepcopy(study.run_spec(config, study.Run("bible", name, 20.0, args.lr, 0)))
            spec["tokens"] = steps * spec["training"]["batch_tokens"]
            shape = Shape(**spec["shape"])
            plain_loop(shape, data, spec, 5)  # warm up: first calls allocate and pick kernels
            runs = {"trainer": [], "plain": []}
            for r in range(rounds):  # each round a pair; which goes first alternates, so a drift favours neither
                for kind in ("trainer", "plain") if r % 2 == 0 else ("plain", "trainer"):
                    runs[kind].append(trainer(spec, data_dir, steps, args.threads) if kind == "trainer"
                                      else plain_loop(shape, data, spec, steps))
            if runs["trainer"][0][1] != runs["plain"][0][1]:
                raise RuntimeError(f"{name}: the trainer and the plain loop did different work (last losses "
                                   f"{runs['trainer'][0][1]!r} and {runs['plain'][0][1]!r})")
            t, p = (max(rate for rate, _ in runs[k]) for k in ("trainer", "plain"))
            per_round = [a / b for (a, _), (b, _) in zip(runs["trainer"], runs["plain"])]
            achieved = t * flops_per_token(shape)
            ratios.append(np.median(per_round))
            n = sum(x.numel() for x in GPT(shape).parameters())
            jobs = [f"{wall:>6.2f} {wall - loop_s:>8.2f}" for wall, loop_s in
                    (job(spec, data_dir, args.threads, served) for served in (False, True))]
            print(f"{name:>6} {n:>9,} | {t:>9,.0f} {p:>9,.0f}           | {t / p:>6.3f} "
                  f"{min(per_round):>9.3f}/{np.median(per_round):.3f}/{max(per_round):.3f} | "
                  f"{achieved / 1e9:>7.2f} {achieved / peak:>7.1%} | {' | '.join(jobs)}")
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    met = all(r >= GOAL for r in ratios)
    print(f"\ngoal trainer/plain ≥ {GOAL} (the median of the rounds' ratios): {'met' if met else 'NOT met'} at "
          f"{sum(r >= GOAL for r in ratios)}/{len(ratios)} sizes (min {min(ratios):.3f})"
          + (" [smoke: too few steps to judge]" if args.smoke else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
