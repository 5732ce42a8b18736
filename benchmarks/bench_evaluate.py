"""Downstream scoring speed: requests (context, choice pairs) and tokens per second.

    python benchmarks/bench_evaluate.py            # default-study sizes, 500 examples of each built-in task
    python benchmarks/bench_evaluate.py --smoke    # one size, 50 examples: checks the script runs (seconds)

Scores untrained models of the default study's shapes (speed does not depend
on the weights) on the built-in tasks made from the embedded corpus, one CPU
thread (as a pipeline job), at several batch sizes; on a GPU it uses the GPU.
Prints requests/s, scored window tokens/s and the seconds a run's evaluation
takes (the four tasks), without process start-up.
"""

from __future__ import annotations

import argparse
import time

import torch

from scaling.data.prepare import embedded_corpus
from scaling.evaluate.scoring import score_task
from scaling.train.model import GPT, Shape
from scaling.evaluate.tasks import BUILDERS, build_task
from scaling.data.tokenizer import ByteTokenizer

SHAPES = {"d32": (32, 2, 2), "d64": (64, 2, 2), "d64L3": (64, 3, 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="one size, 50 examples, to check the script runs")
    parser.add_argument("--examples", type=int, default=500)
    args = parser.parse_args()
    n = 50 if args.smoke else args.examples
    shapes = dict(list(SHAPES.items())[:1]) if args.smoke else SHAPES
    batch_sizes = (64,) if args.smoke else (16, 64, 256)
    torch.set_num_threads(1)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    text = embedded_corpus().val.decode("utf-8")
    tasks = {kind: build_task(kind, text, n, seed=0) for kind in BUILDERS}
    requests = sum(len(ex["choices"]) for examples in tasks.values() for ex in examples)
    print(f"{len(tasks)} tasks × {n} examples = {requests:,} requests, seq_len 64, device {device}")
    print(f"{'size':>6} {'batch':>6} {'requests/s':>11} {'tokens/s':>10} {'s/run':>7}")
    for name, (d, layers, heads) in shapes.items():
        model = GPT(Shape(d_model=d, n_layers=layers, n_heads=heads, seq_len=64)).to(device)
        for bs in batch_sizes:
            start = time.perf_counter()
            for examples in tasks.values():
                score_task(model, ByteTokenizer(), examples, 64, batch_size=bs, device=device)
            seconds = time.perf_counter() - start
            print(f"{name:>6} {bs:>6} {requests / seconds:>11,.0f} {requests * 64 / seconds:>10,.0f} {seconds:>7.2f}")


if __name__ == "__main__":
    main()
