"""Downstream scoring: what the pipeline's evaluate job pays for a default-study run, and the scoring speed.

    python benchmarks/bench_evaluate.py            # default-study sizes, 500 examples of each built-in task
    python benchmarks/bench_evaluate.py --smoke    # one size, 50 examples: checks the script runs (seconds)

For each model of the default study (``workflow/config.yaml``: its shapes and window; untrained weights:
speed does not depend on them), on the four built-in tasks made from the embedded corpus, one CPU
thread as a pipeline job (on a GPU it uses the GPU):

- ``job``: the wall time of ``scaling evaluate`` as the evaluate rule runs it,
  process start, imports, loading the model and the tasks included; ``served``:
  the same, run by a job server as in a local study (scaling.forkserver: the
  imports were made once, by the server);
- ``scoring``: the four tasks' scoring alone, in this process (requests/s and
  seconds; the best of ``--repeats``).

Goal (issue 16): scoring a default-study run's tasks in at most 2 s.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from scaling import forkserver
from scaling.cli import start_job_server
from scaling.data.prepare import embedded_corpus, load_tokenizer, prepare
from scaling.evaluate.scoring import score_task
from scaling.evaluate.tasks import BUILDERS, Window, build_task, write_task
from scaling.io import write_json
from scaling.study import runs as S
from scaling.study.config import load
from scaling.train.loop import save_model
from scaling.train.model import GPT

DEFAULT_STUDY = Path(__file__).resolve().parents[1] / "workflow/config.yaml"
GOAL_S = 2.0


def job_seconds(run: Path, data: Path, tasks: dict[str, Path], batch_size: int, served: bool) -> float:
    """Wall time of one ``scaling evaluate`` process on ``run``, as rules/evaluate.smk starts it; ``served``: run by
    the job server, as in a local study (else the command imports everything itself)."""
    cmd = [sys.executable, "-m", "scaling.cli", "evaluate", "--run", str(run), "--data", str(data),
           "--tasks", json.dumps({k: {"path": str(p)} for k, p in tasks.items()}), "--task-sets", "{}",
           "--batch-size", str(batch_size), "--threads", "1"]
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL,
                   env={k: v for k, v in os.environ.items() if served or k != forkserver.ENV})
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="one size, 50 examples, to check the script runs")
    parser.add_argument("--examples", type=int, default=500)
    parser.add_argument("--batch-size", type=int, default=64, help="the study's downstream.batch_size (default 64)")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    n = 50 if args.smoke else args.examples
    config = load([DEFAULT_STUDY])
    dataset = next(iter(config["datasets"]))
    shapes = {S.model_name(m): S.model_shape(config, dataset, S.model_name(m)) for m in config["models"]}
    shapes = dict(list(shapes.items())[:1]) if args.smoke else shapes
    seq_len = config["training"]["seq_len"]
    torch.set_num_threads(1)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        prepare({"source": "embedded"}, tmp / "data")
        text = embedded_corpus().val.decode("utf-8")
        tokenizer = load_tokenizer(tmp / "data")
        window = Window(seq_len, tokenizer.encode)
        tasks = {kind: build_task(kind, text, n, seed=0, window=window) for kind in BUILDERS}
        paths = {kind: tmp / "tasks" / f"{kind}.jsonl" for kind in tasks}
        for kind, examples in tasks.items():
            write_task(paths[kind], examples)
        requests = sum(len(ex["choices"]) for examples in tasks.values() for ex in examples)
        print(f"{len(tasks)} tasks × {n} examples = {requests:,} requests, seq_len {seq_len}, batch {args.batch_size}, "
              f"device {device}")
        start_job_server(str(tmp / "forkserver.log"), wait=True)
        print(f"{'size':>6} {'requests/s':>11} {'scoring s':>10} {'job s':>7} {'served':>7}")
        for name, shape in shapes.items():
            model = GPT(shape).to(device)
            seconds = []
            for _ in range(args.repeats):
                start = time.perf_counter()
                for examples in tasks.values():
                    score_task(model, tokenizer, examples, seq_len, batch_size=args.batch_size, device=device)
                seconds.append(time.perf_counter() - start)
            run = tmp / "runs" / name
            save_model(run / "model.pt", shape, model)
            write_json(run / "metrics.json", {"run_id": name, "status": "ok"})
            job, served = (min(job_seconds(run, tmp / "data", paths, args.batch_size, served)
                               for _ in range(args.repeats)) for served in (False, True))
            best = min(seconds)
            verdict = "" if args.smoke else f"  goal scoring <= {GOAL_S:g} s: {'met' if best <= GOAL_S else 'MISSED'}"
            print(f"{name:>6} {requests / best:>11,.0f} {best:>10.2f} {job:>7.2f} {served:>7.2f}{verdict}")


if __name__ == "__main__":
    main()
