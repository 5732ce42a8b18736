"""Downstream evaluation: multiple-choice tasks scored by the log-likelihood of each choice.

For an example with context c and choices x_1 … x_K, the model scores choice k
by its log-likelihood as a continuation of the context,

    ℓ_k = Σ_{t ∈ x_k} log p(t | c, x_k,<t),

and picks argmax_k ℓ_k (``accuracy_raw``) or argmax_k ℓ_k / |x_k|, with |x_k| the
choice's length in bytes (``accuracy_norm``): the ``acc`` and ``acc_norm`` of
lm-evaluation-harness (Gao et al. 2021). A task reports both; its ``metric``
(default ``acc_norm``) names the headline ``accuracy``. When context and choice
exceed the model's window, the context is cut from the left.

Requests (context, choice pairs) are scored in batches: each is the last
``seq_len + 1`` tokens of context + choice, right-padded; one forward pass per
batch gives the log-probabilities of every choice token (computed at the choice's
positions only).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from scaling.io import read_metrics
from scaling.data.prepare import load_tokenizer
from scaling.io import write_json
from scaling.train.model import GPT, Shape
from scaling.evaluate import harness
from scaling.evaluate.tasks import random_baseline, read_task


@torch.inference_mode()
def loglikelihoods(model: torch.nn.Module, requests: list[tuple[np.ndarray, np.ndarray]], seq_len: int,
                   batch_size: int = 64, device: torch.device | str = "cpu") -> np.ndarray:
    """Σ log p(continuation | context) for each (context ids, continuation ids) request, in nats.

    ``model`` maps (B, T) token ids to (B, T, V) logits, T ≤ ``seq_len``. A
    continuation longer than ``seq_len`` tokens cannot be scored and raises. Of a
    :class:`~scaling.train.model.GPT`, only the continuation's positions go
    through the output layer and the softmax (a choice is a few tokens of a
    ``seq_len`` window): the same scores as the whole window's logits, for less work.
    """
    out = np.empty(len(requests))
    # longest first, so each batch pads little
    order = sorted(range(len(requests)), key=lambda i: -(len(requests[i][0]) + len(requests[i][1])))
    model.eval()
    for b in range(0, len(order), batch_size):
        idx = order[b : b + batch_size]
        windows = []
        for i in idx:
            ctx, cont = requests[i]
            if not 0 < len(cont) <= seq_len or len(ctx) == 0:
                raise ValueError(f"request {i}: the context must be non-empty and the continuation 1 … {seq_len} "
                                 f"tokens long (got {len(ctx)} and {len(cont)})")
            windows.append((np.concatenate([ctx, cont])[-(seq_len + 1):].astype(np.int64), len(cont)))
        x = torch.zeros(len(idx), max(len(w) for w, _ in windows) - 1, dtype=torch.long)
        rows, cols, targets = [], [], []  # the continuation's positions, and the tokens they predict
        for j, (w, n) in enumerate(windows):
            x[j, : len(w) - 1] = torch.from_numpy(w[:-1])
            rows += [j] * n
            cols += range(len(w) - 1 - n, len(w) - 1)
            targets.append(w[-n:])
        rows, cols = torch.tensor(rows, device=device), torch.tensor(cols, device=device)
        x = x.to(device)
        logits = model.output(model.hidden(x)[rows, cols]) if isinstance(model, GPT) else model(x)[rows, cols]
        token_logp = F.log_softmax(logits.float(), dim=-1).gather(
            -1, torch.from_numpy(np.concatenate(targets)).to(device)[:, None]).squeeze(-1)
        sums = torch.zeros(len(idx), dtype=torch.float64, device=device).index_add_(0, rows, token_logp.double())
        out[idx] = sums.cpu().numpy()
    return out


def score_task(model: torch.nn.Module, tokenizer, examples: list[dict], seq_len: int, batch_size: int = 64,
               device: torch.device | str = "cpu") -> dict:
    """Top-1 accuracy of ``model`` on a task, raw (``acc``) and byte-length-normalized (``acc_norm``)."""
    requests = []
    for ex in examples:
        ctx = tokenizer.encode(ex["context"].encode("utf-8"))
        requests += [(ctx, tokenizer.encode(choice.encode("utf-8"))) for choice in ex["choices"]]
    ll = loglikelihoods(model, requests, seq_len, batch_size, device)
    right_raw, right_norm, start = [], [], 0
    for ex in examples:
        k = len(ex["choices"])
        scores = ll[start : start + k]
        lengths = np.array([len(c.encode("utf-8")) for c in ex["choices"]])
        right_raw.append(int(np.argmax(scores)) == ex["gold"])
        right_norm.append(int(np.argmax(scores / lengths)) == ex["gold"])
        start += k
    return {"acc": float(np.mean(right_raw)), "acc_norm": float(np.mean(right_norm)), "n_examples": len(examples),
            "random_baseline_accuracy": random_baseline(examples)}


def load_model(path: str | Path, device: torch.device | str = "cpu") -> GPT:
    """A trained run's final model (``model.pt``, written by :func:`scaling.train.loop.train`)."""
    state = torch.load(path, map_location=device, weights_only=True)
    model = GPT(Shape(**state["shape"])).to(device)
    model.load_state_dict(state["model"])
    return model.eval()


def evaluate_run(run_dir: str | Path, data_dir: str | Path, tasks: dict[str, dict], task_sets: dict[str, list[str]],
                 batch_size: int = 64, threads: int = 1, hf_dir: str | Path | None = None) -> dict:
    """Score a finished run on ``tasks``; write ``downstream.json``.

    A task is {"path": JSONL, "metric": …}, scored here, or {"harness": task,
    "include": directory, "metric": …}, an lm-evaluation-harness task scored by
    the harness on the run's transformers export in ``hf_dir``
    (:mod:`scaling.evaluate.harness`).

    Each task gets ``accuracy`` (its metric's value), ``accuracy_raw``,
    ``accuracy_norm``, ``n_examples`` and ``random_baseline_accuracy``; each task
    set the unweighted mean of its tasks' accuracies and baselines. A diverged
    run is not scored (its file says so and has no tasks). An unreadable
    ``metrics.json`` raises :class:`scaling.io.RunFileError`, naming it and the fix.
    """
    torch.set_num_threads(threads)
    run_dir = Path(run_dir)
    metrics = read_metrics(run_dir / "metrics.json", required={"run_id": False, "status": False})
    result: dict = {"run_id": metrics["run_id"], "status": metrics["status"], "tasks": {}, "task_sets": {}}
    if metrics["status"] == "ok":
        own = {name: task for name, task in tasks.items() if "path" in task}
        harnessed = {name: task for name, task in tasks.items() if "harness" in task}
        if harnessed and hf_dir is None:
            raise ValueError(f"harness tasks {sorted(harnessed)} are scored on the run's transformers export; fix: "
                             f"give its directory (scaling export {run_dir} DIR)")
        scores = {}
        if own:
            device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
            model, tokenizer = load_model(run_dir / "model.pt", device), load_tokenizer(data_dir)
            for name, task in own.items():
                scores[name] = score_task(model, tokenizer, read_task(task["path"]), model.shape.seq_len, batch_size,
                                          device)
        if harnessed:
            scores.update(harness.score_tasks(hf_dir, harnessed, run_dir, batch_size))
        for name, task in tasks.items():
            s, metric = scores[name], task.get("metric", "acc_norm")
            result["tasks"][name] = {"accuracy": s[metric], "accuracy_raw": s["acc"], "accuracy_norm": s["acc_norm"],
                                     "metric": metric, "n_examples": s["n_examples"],
                                     "random_baseline_accuracy": s["random_baseline_accuracy"]}
        for name, members in task_sets.items():
            rows = [result["tasks"][t] for t in members]
            result["task_sets"][name] = {
                "tasks": list(members),
                "accuracy": float(np.mean([r["accuracy"] for r in rows])),
                "random_baseline_accuracy": float(np.mean([r["random_baseline_accuracy"] for r in rows])),
            }
    write_json(run_dir / "downstream.json", result)
    return result

