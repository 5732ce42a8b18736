"""Downstream evaluation: multiple-choice tasks scored by the log-likelihood of each choice.

For an example with context c and choices x_1 … x_K, the model scores choice k
by its log-likelihood as a continuation of the context,

    ℓ_k = Σ_{t ∈ x_k} log p(t | c, x_k,<t),

and picks argmax_k ℓ_k (``accuracy_raw``) or argmax_k ℓ_k / |x_k|, with |x_k| the
choice's length in bytes (``accuracy_norm``): the ``acc`` and ``acc_norm`` of
lm-evaluation-harness (Gao et al. 2021). A task reports both; its ``metric``
(default ``acc_norm``) names the headline ``accuracy``. When context and choice
exceed the model's window, the context is cut from the left.

Each request (context, choice) is scored on its window, the last ``seq_len + 1``
tokens of context + choice: the context is cut to its last ``seq_len + 1 − |x_k|``
tokens and sits at positions 0, 1, …. Requests whose cut contexts are equal (the
choices of an example, when their lengths are equal or the whole context fits)
are packed into one sequence: the cut context once, then each choice's tokens
but its last, each choice at the positions it has in its own window (restarting
where the context ends), under a tree mask: a choice's tokens attend to the
context and to their own earlier tokens only. Every token then sees exactly what
it sees in its own window, at the same position, so the scores are those of one
window per request (to float rounding), for a fraction of the work: an example's
context goes through the transformer once instead of once per choice. Only the
scored positions (the context's last token and the choices') go through the
output layer and the softmax. Packed sequences of at most ``2 · seq_len``
tokens are batched ``batch_size`` requests at a time, longest first, right-padded
(a pad attends to itself and the context, so no row of the mask is empty).
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

    ``model`` maps token ids (B, T), positions (B, T) and an attention mask
    (B, 1, T, T) to (B, T, V) logits, T ≤ ``2 · seq_len``, as a
    :class:`~scaling.train.model.GPT` does. Requests with equal window contexts
    are packed (module docstring), whatever examples they come from. A
    continuation longer than ``seq_len`` tokens cannot be scored and raises.
    """
    conts, groups = [], {}  # each request's continuation; each window context's bytes → its requests
    for i, (ctx, cont) in enumerate(requests):
        if not 0 < len(cont) <= seq_len or len(ctx) == 0:
            raise ValueError(f"request {i}: the context must be non-empty and the continuation 1 … {seq_len} "
                             f"tokens long (got {len(ctx)} and {len(cont)})")
        conts.append(np.asarray(cont, dtype=np.int64))
        groups.setdefault(np.asarray(ctx[-(seq_len + 1 - len(cont)):], dtype=np.int64).tobytes(), []).append(i)
    contexts, members = [np.frombuffer(key, dtype=np.int64) for key in groups], list(groups.values())
    group_of = {i: g for g, group in enumerate(members) for i in group}
    # longest packed sequence first, so each batch pads little
    packed_len = [len(ctx) + sum(len(conts[i]) - 1 for i in group) for ctx, group in zip(contexts, members)]
    order = [i for g in np.argsort(packed_len, kind="stable")[::-1] for i in members[g]]
    out = np.empty(len(requests))
    model.eval()
    for b in range(0, len(order), batch_size):
        rows, lengths = [], []  # each packed sequence's (group, requests), and its length
        for i in order[b : b + batch_size]:
            g, n = group_of[i], len(conts[i]) - 1
            if rows and rows[-1][0] == g and lengths[-1] + n <= 2 * seq_len:
                rows[-1][1].append(i)
                lengths[-1] += n
            else:
                rows.append((g, [i]))
                lengths.append(len(contexts[g]) + n)
        T = max(lengths)
        x, pos = np.zeros((len(rows), T), dtype=np.int64), np.zeros((len(rows), T), dtype=np.int64)
        segment = np.full((len(rows), T), -1)  # 0: the context, k: the row's k-th choice, -1: padding
        scored, rows_at, cols_at, owner = [], [], [], []  # each scored position, and the request it belongs to
        for r, (g, row) in enumerate(rows):
            c = end = len(contexts[g])
            x[r, :c], pos[r, :c], segment[r, :c] = contexts[g], np.arange(c), 0
            for k, i in enumerate(row, 1):
                n = len(conts[i])
                x[r, end : end + n - 1], pos[r, end : end + n - 1] = conts[i][:-1], np.arange(c, c + n - 1)
                segment[r, end : end + n - 1] = k
                rows_at += [r] * n
                cols_at += [c - 1, *range(end, end + n - 1)]
                owner += [len(scored)] * n
                scored.append(i)
                end += n - 1
        seg = torch.from_numpy(segment).to(device)
        mask = ((seg[:, None, :] == 0) | (seg[:, None, :] == seg[:, :, None])).tril()[:, None]
        x, pos = torch.from_numpy(x).to(device), torch.from_numpy(pos).to(device)
        rows_at, cols_at = torch.tensor(rows_at, device=device), torch.tensor(cols_at, device=device)
        if isinstance(model, GPT):
            logits = model.output(model.hidden(x, pos, mask)[rows_at, cols_at])
        else:
            logits = model(x, pos, mask)[rows_at, cols_at]
        targets = torch.from_numpy(np.concatenate([conts[i] for i in scored])).to(device)
        token_logp = F.log_softmax(logits.float(), dim=-1).gather(-1, targets[:, None]).squeeze(-1)
        sums = torch.zeros(len(scored), dtype=torch.float64, device=device).index_add_(
            0, torch.tensor(owner, device=device), token_logp.double())
        out[scored] = sums.cpu().numpy()
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

